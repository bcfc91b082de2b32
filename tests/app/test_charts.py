"""The app's chart builders and config helpers, on small real simulation results.

AppTest does not render Plotly, so the figures are checked here: trace names, bar geometry and
the numbers they carry must match the result they were built from.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from simulator.app import charts, plans
from simulator.app.views.tradeoffs import _selected_row, front_mask

from hwmodels.errors import ClusterSimError
from hwmodels.profile import datasheet_profile
from simulator.serving import simulate_serving
from simulator.training import simulate_training

SMALL_TRAIN = {
    "model": "llama3.2-1b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 8},
    "parallel": {"tp": 1, "pp": 2, "dp": 4},
    "training": {"seq_len": 2048, "global_batch": 32, "micro_batch": 1},
}
SMALL_SERVE = {
    "model": "llama3.2-1b",
    "gpu": "h100-sxm5-80gb",
    "replicas": 2,
    "batching": {"kind": "continuous", "max_num_seqs": 32},
    "workload": {
        "num_requests": 120,
        "arrivals": {"kind": "poisson", "rate_per_s": 20.0},
        "lengths": {"kind": "lognormal", "prompt_median": 512, "output_median": 64},
    },
    "slo": {"ttft_s": 0.5, "tpot_s": 0.05},
}


@pytest.fixture(scope="module")
def train():
    return simulate_training(SMALL_TRAIN)


@pytest.fixture(scope="module")
def train_zb():
    cfg = plans.deep_merge(SMALL_TRAIN, {"parallel": {"schedule": "zero-bubble", "tp": 2, "dp": 2}})
    return simulate_training(cfg)


@pytest.fixture(scope="module")
def serve():
    return simulate_serving(SMALL_SERVE)


# ---- training charts -----------------------------------------------------------------------------


def _bars(fig: go.Figure) -> dict[str, go.Bar]:
    return {t.name: t for t in fig.data}


def test_gantt_has_one_bar_per_event_grouped_by_category(train) -> None:
    fig = charts.pipeline_gantt(train.timeline)
    bars = _bars(fig)
    assert {"forward", "backward", "optimizer", "comm pp", "comm dp"} <= set(bars)
    assert len(bars) == len(fig.data)  # one trace per category
    assert sum(len(t.x) for t in fig.data) == len(train.timeline.events)
    assert all(t.orientation == "h" for t in fig.data)
    assert set(np.concatenate([list(t.y) for t in fig.data])) == {"rank 0", "rank 1"}
    # bars span exactly the events: base = start, base + x = end
    fwd = [e for e in train.timeline.events if e[3] == "compute" and e[5] == "F"]
    assert sorted(bars["forward"].base) == pytest.approx(sorted(e[0] for e in fwd))
    ends = np.add(bars["forward"].base, bars["forward"].x)
    assert sorted(ends) == pytest.approx(sorted(e[1] for e in fwd))
    assert "bubble" in fig.layout.annotations[0].text
    assert fig.layout.xaxis.type != "date"


def test_gantt_limits_ranks_and_shows_weight_phase(train, train_zb) -> None:
    fig = charts.pipeline_gantt(train.timeline, max_ranks=1)
    assert set(np.concatenate([list(t.y) for t in fig.data])) == {"rank 0"}
    assert "first 1 of 2" in fig.layout.title.text
    zb = _bars(charts.pipeline_gantt(train_zb.timeline))
    assert "weight" in zb and "comm tp" in zb
    assert charts.event_category("tp", "F") == "comm tp"
    assert charts.event_category("compute", "W") == "weight"


def test_memory_bar_stacks_the_report_under_the_capacity_line(train) -> None:
    mem = train.memory_per_gpu_gb
    fig = charts.memory_bar(mem)
    assert [t.name for t in fig.data] == list(charts.MEMORY_PARTS)
    for t in fig.data:
        assert t.y[0] == pytest.approx(getattr(mem, t.name))
    assert fig.layout.barmode == "stack"
    assert fig.layout.shapes[0].y0 == pytest.approx(mem.capacity)
    side = charts.memory_bar({"A": mem, "B": mem.model_dump()})
    assert len(side.data[0].x) == 2 and side.data[0].x[0].startswith("A")


def test_comm_breakdown_single_and_grouped(train) -> None:
    fig = charts.comm_breakdown(train.exposed_comm_s)
    assert len(fig.data) == 1
    got = dict(zip(fig.data[0].x, fig.data[0].y, strict=True))
    for kind, secs in train.exposed_comm_s.items():
        assert got[kind] == pytest.approx(secs)
    grouped = charts.comm_breakdown({"A": train.exposed_comm_s, "B": {"dp": 1.0}})
    assert [t.name for t in grouped.data] == ["A", "B"]
    assert dict(zip(grouped.data[1].x, grouped.data[1].y, strict=True))["dp"] == 1.0


def test_compare_table_differences(train, train_zb) -> None:
    df = charts.compare_table(train, train_zb)
    assert list(df.columns) == ["metric", "A", "B", "difference", "change"]
    row = df.set_index("metric").loc["step time (s)"]
    assert row["A"] == pytest.approx(train.step_time_s)
    assert row["B"] == pytest.approx(train_zb.step_time_s)
    assert row["difference"] == pytest.approx(train_zb.step_time_s - train.step_time_s)
    same = charts.compare_table(train, train)
    assert (same["difference"] == 0).all()
    assert "time to train (days)" not in set(df["metric"])  # no token budget -> no row


# ---- serving charts ------------------------------------------------------------------------------


def test_latency_percentiles_in_ms(serve) -> None:
    fig = charts.latency_percentiles(serve)
    assert [t.name for t in fig.data] == ["TTFT", "TPOT", "E2E"]
    assert list(fig.data[0].x) == ["mean", "p50", "p90", "p99"]
    assert fig.data[0].y[3] == pytest.approx(serve.ttft_s.p99 * 1e3)
    assert fig.data[2].y[1] == pytest.approx(serve.e2e_s.p50 * 1e3)


def test_kv_occupancy_one_line_per_replica(serve) -> None:
    fig = charts.kv_occupancy(serve)
    assert [t.name for t in fig.data] == ["replica 0", "replica 1"]
    top = max(float(np.max(t.y)) for t in fig.data)
    assert top == pytest.approx(serve.kv_peak_utilization * 100, rel=1e-6)
    small = charts.kv_occupancy(serve, max_points=10)
    assert all(len(t.x) <= 10 for t in small.data)


def test_batch_sizes_count_every_iteration(serve) -> None:
    fig = charts.batch_sizes(serve)
    assert {t.name for t in fig.data} <= {"decode", "mixed", "prefill"}
    assert sum(len(t.x) for t in fig.data) == serve.iterations
    df = charts.iteration_batches(serve.timeline)
    assert df.loc[df["decodes"] > 0, "decodes"].mean() == pytest.approx(serve.mean_batch_size)
    fallback = charts.batch_sizes(serve.model_copy(update={"timeline": None}))
    assert list(fallback.data[0].x) == list(serve.batch_size_histogram)


def test_latency_vs_rate_marks_the_knee_and_slo() -> None:
    points = [
        {"rate_per_s": r, "ttft_p50_s": 0.1 * r, "ttft_p99_s": 0.2 * r, "slo_attainment": a}
        for r, a in [(1.0, 1.0), (2.0, 0.95), (4.0, 0.5)]
    ]
    knee = plans.knee_rate(points)
    assert knee == 2.0
    fig = charts.latency_vs_rate(points, 0.5, knee)
    names = [t.name for t in fig.data]
    assert names[:3] == ["TTFT p50", "TTFT p99", "SLO attainment"]
    knee_trace = fig.data[names.index("knee")]
    assert list(knee_trace.x) == [2.0] and knee_trace.y[0] == pytest.approx(0.4)
    assert any(s.y0 == 0.5 and s.y1 == 0.5 for s in fig.layout.shapes)  # the SLO line
    none = charts.latency_vs_rate(points, 0.01, plans.knee_rate(points, attainment=1.01))
    assert "knee" not in [t.name for t in none.data]


# ---- trade-offs and hardware ---------------------------------------------------------------------


def test_pareto_chart_draws_all_points_and_the_front() -> None:
    df = pd.DataFrame({"label": list("abcd"), "t": [3.0, 1.0, 2.0, 4.0], "m": [10.0, 30.0, 20.0, 40.0]})
    from simulator.search.pareto import pareto_front

    mask = pareto_front(df[["t", "m"]].to_numpy().tolist(), [True, True])
    assert mask == [True, True, True, False]
    fig = charts.pareto_chart(df, "t", "m", mask)
    allp, front = fig.data
    assert allp.name == "plans" and len(allp.x) == 4 and list(allp.customdata) == [0, 1, 2, 3]
    assert list(front.x) == [1.0, 2.0, 3.0]  # sorted along x
    assert list(front.customdata) == [1, 2, 0]
    with pytest.raises(ValueError):
        charts.pareto_chart(df, "t", "m", [True])


def test_front_mask_ignores_plans_that_do_not_fit() -> None:
    df = pd.DataFrame({"step_time_s": [1.0, 2.0, 3.0], "peak_memory_gb": [90.0, 50.0, 60.0], "fits": [0, 1, 1]})
    df["fits"] = df["fits"].astype(bool)
    assert front_mask("training", df) == [False, True, False]


def test_selected_row_reads_customdata() -> None:
    assert _selected_row({"selection": {"points": [{"customdata": 3}]}}) == 3
    assert _selected_row({"selection": {"points": [{"customdata": [5]}]}}) == 5
    assert _selected_row({"selection": {"points": []}}) is None
    assert _selected_row(None) is None


def test_efficiency_curves_with_and_without_measurements(h100_kernels) -> None:
    prof = datasheet_profile("h100-sxm5-80gb")
    fig = charts.efficiency_curves(prof, h100_kernels)
    names = [t.name for t in fig.data]
    assert "measured bf16" in names and "datasheet profile bf16 (M=N=K)" in names
    measured = fig.data[names.index("measured bf16")]
    rows = [r for r in h100_kernels["gemm"] if r["dtype"] == "bfloat16"]
    assert len(measured.x) == len(rows)
    assert measured.y[0] == pytest.approx(rows[0]["tflops"] / prof.peak_tflops["bf16"])
    line = fig.data[names.index("datasheet profile bf16 (M=N=K)")]
    assert 0 < min(line.y) < max(line.y) <= 1.0
    assert fig.layout.xaxis.type == "log"
    bare = charts.efficiency_curves(datasheet_profile("t4-16gb"), None)
    assert [t.name for t in bare.data] == ["datasheet profile fp16 (M=N=K)"]  # T4 has no bf16 units


# ---- config helpers ------------------------------------------------------------------------------


def test_training_variants_rederive_dp_and_label() -> None:
    base = plans.default_training()
    out = plans.training_variants(base, {"tp": [4, 8], "pp": [8, 16]})
    assert len(out) == 4
    label, values, cfg = out[3]
    assert label == "tp=8 pp=16" and values == {"tp": 8, "pp": 16}
    assert cfg["parallel"]["dp"] == 1024 // 128
    (_, _, vpp_cfg), *_ = plans.training_variants(base, {"vpp": [2]})
    assert vpp_cfg["parallel"]["schedule"] == "interleaved"
    _, _, bad = plans.training_variants(base, {"tp": [3]})[0]
    assert bad["parallel"]["dp"] == base["parallel"]["dp"]  # left for validation to report


def test_serving_variants_switch_policy_and_limit() -> None:
    base = plans.default_serving()
    out = plans.serving_variants(base, {"batching": ["static", "chunked"], "max_num_seqs": [16]})
    assert out[0][2]["batching"] == {"kind": "static", "batch_size": 16}
    assert out[1][2]["batching"] == {"kind": "chunked", "max_num_seqs": 16}


def test_small_helpers() -> None:
    assert plans.deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}
    assert plans.from_json(plans.to_json({"x": [1, 2]})) == {"x": [1, 2]}
    assert plans.derive_dp(1024, 8, 8) == 16
    with pytest.raises(ClusterSimError, match="does not divide num_gpus"):
        plans.derive_dp(1024, 3, 8)
    with pytest.raises(ClusterSimError, match="not valid JSON"):
        plans.parse_upload(b"{nope", "config.json")
    with pytest.raises(ClusterSimError, match="UTF-8"):
        plans.parse_upload(b"\xff\xfe", "config.json")
    assert plans.rates_around(8.0)[2] == 8.0
    assert plans.at_rate(plans.default_serving(), 3.0)["workload"]["num_requests"] == plans.CURVE_REQUESTS
    assert plans.load_measurements("h100-sxm5-80gb")["gemm"]
    assert plans.load_measurements("t4-16gb") is None


@pytest.mark.parametrize(
    "text",
    [
        '{"stack": {"base": "pytorch-eager", "traced": "/etc/some.json"}}',
        '{"model": "llama3-8b", "x": [{"traced": "a.json"}]}',
    ],
)
def test_url_and_upload_configs_cannot_name_a_server_trace_file(text: str) -> None:
    with pytest.raises(ClusterSimError, match="reads a file on the server"):
        plans.from_json(text, "URL parameter 'train'")
    with pytest.raises(ClusterSimError, match="reads a file on the server"):
        plans.parse_upload(text.encode(), "cfg.json")
