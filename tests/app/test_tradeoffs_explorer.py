"""The trade-off explorer (issue #18): knobs from the config schema, objectives with directions, the Pareto
front over any pair, unit-formatted table, and over-cap sweeps through the sweep engine."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import pandas as pd
import pytest
import simulator.app.plans as plans
from pydantic import BaseModel, Field
from simulator.app import charts, objectives
from simulator.app.views import tradeoffs
from streamlit.testing.v1 import AppTest

from hwmodels.errors import ClusterSimError
from simulator.search.sweep.knobs import config_knobs, schema_knobs, value_at
from simulator.serving.policies import BATCHING_POLICIES
from simulator.training.schedules import schedule_names
from tests.fixtures.app_pages import assert_page_clean

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "views" / "tradeoffs.py")
SMALL_TRAIN = {
    "model": "llama3.2-1b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 8},
    "parallel": {"tp": 1, "pp": 2, "dp": 4, "zero": 1},
    "training": {"seq_len": 2048, "global_batch": 32, "micro_batch": 1, "tokens": 1e10},
}


# ---- the schema walk ----------------------------------------------------------------------------------


class _Zipf(BaseModel):
    kind: Literal["zipf"] = "zipf"
    exponent: float = Field(ge=0)


class _Uniform(BaseModel):
    kind: Literal["uniform"] = "uniform"


class _Gamma(BaseModel):
    kind: Literal["gamma"] = "gamma"
    exponent: float = Field(default=1.0, ge=0)
    path: str = "x.csv"  # a file path: never a knob


class _Inner(BaseModel):
    ratio: float | None = Field(default=None, gt=0, le=1)
    method: Literal["a", "b"] = "a"


class _Toy(BaseModel):
    tp: int = Field(default=1, gt=0)
    on: bool = False
    inner: _Inner | None = None
    source: _Zipf | _Uniform | _Gamma = _Uniform()
    tags: list[str] = []  # lists are not knobs
    note: str = ""  # free text without a registry is not a knob


def test_schema_walk_of_a_toy_model_follows_types_unions_and_bounds() -> None:
    knobs = {k.path: k for k in schema_knobs(_Toy)}
    assert list(knobs) == ["tp", "on", "inner.ratio", "inner.method", "source.kind", "source.exponent"]
    assert knobs["tp"].type == "int" and knobs["tp"].gt == 0 and knobs["tp"].default == 1
    assert knobs["on"].choices == (False, True)
    ratio = knobs["inner.ratio"]
    assert (ratio.type, ratio.gt, ratio.le, ratio.optional) == ("float", 0, 1, True)
    assert knobs["inner.method"].choices == ("a", "b")
    assert knobs["source.kind"].choices == ("zipf", "uniform", "gamma") and knobs["source.kind"].default == "uniform"
    # a field of two variants needs either of their kinds
    assert knobs["source.exponent"].when == (("source.kind", ("zipf", "gamma")),)
    assert knobs["source.exponent"].name == "exponent" and knobs["source.kind"].name == "kind"


def test_knob_values_are_checked_and_parsed() -> None:
    ratio = next(k for k in schema_knobs(_Toy) if k.path == "inner.ratio")
    assert ratio.parse("0.01, 0.5, none, 0.5") == [0.01, 0.5, None]
    with pytest.raises(ClusterSimError, match=r"inner.ratio=2 is out of range \(> 0, <= 1\)"):
        ratio.check(2)
    tp = next(k for k in schema_knobs(_Toy) if k.path == "tp")
    with pytest.raises(ClusterSimError, match="whole number"):
        tp.check(1.5)
    with pytest.raises(ClusterSimError, match="not a number"):
        tp.parse("four")
    assert tp.suggest(4) == [2, 4, 8]


def test_config_schemas_expose_every_trade_off_of_the_issue() -> None:
    train, serve = config_knobs("training"), config_knobs("serving")
    for path in (
        "training.compression.sparsify",
        "training.compression.fraction",
        "training.compression.quantize",
        "training.compression.error_feedback",
        "training.compression.steps_multiplier",
        "training.precision",
        "parallel.zero",
        "training.recompute",
        "parallel.schedule",
        "parallel.vpp",
        "parallel.cp",
        "parallel.ep",
        "moe_routing.source.exponent",
        "moe_routing.capacity_factor",
        "power.sm_clock_mhz",
        "power.power_limit_w",
    ):
        assert path in train, path
    for path in (
        "batching.kind",
        "batching.max_num_seqs",
        "kv.dtype",
        "weight_dtype",
        "replicas",
        "power.sm_clock_mhz",
    ):
        assert path in serve, path
    assert set(train["parallel.schedule"].choices) == set(schedule_names())  # from the registry
    assert set(serve["batching.kind"].choices) == set(BATCHING_POLICIES)
    assert train["moe_routing.source.exponent"].when == (("moe_routing.source.kind", ("zipf",)),)
    assert not [p for p in {**train, **serve} if p.endswith(("path", "traced"))]  # file paths never come from a sweep
    assert value_at({"a": {"b": 3}}, "a.b") == 3 and value_at({"a": 1}, "a.b") is None


# ---- objectives and the Pareto front ------------------------------------------------------------------


def test_pareto_mask_follows_each_objective_direction() -> None:
    pts = [[1.0, 10.0], [2.0, 20.0], [3.0, 15.0], [float("nan"), 99.0]]
    # min x, max y: 1 and 2 trade off, 3 is beaten by 2; a missing value is never on the front
    assert objectives.pareto_mask(pts, ["min", "max"]) == [True, True, False, False]
    assert objectives.pareto_mask(pts, ["min", "min"]) == [True, False, False, False]
    assert objectives.pareto_mask(pts, ["min", "max"], eligible=[True, False, True, True]) == [True, False, True, False]
    with pytest.raises(ValueError, match="min or max"):
        objectives.pareto_mask(pts, ["min", "up"])


def test_objectives_read_flat_result_rows() -> None:
    row = {"cost_usd": 30.0, "tokens_per_s": 1.5e5, "step_time_s": 20.0, "total_tco2e": None}
    cols = objectives.objective_columns("training", row)
    assert cols["cost_per_million_tokens_usd"] == pytest.approx(30.0 / (1.5e5 * 20.0) * 1e6)
    assert math.isnan(cols["tco2e_to_train"]) and math.isnan(cols["energy_per_token_j"])
    obj = objectives.OBJECTIVES["serving"]["ttft_p99_s"]
    assert obj.direction == "min" and obj.value({"ttft_s_p99": 0.2}) == 0.2
    assert objectives.OBJECTIVES["serving"]["goodput_requests_per_s"].direction == "max"


def test_tradeoff_chart_draws_the_front_and_a_colour_scale() -> None:
    df = pd.DataFrame(
        {"label": ["a", "b", "c"], "e": [1.0, 2.0, float("nan")], "t": [3.0, 1.0, 2.0], "c": [5.0, 6.0, 7.0]}
    )
    fig = charts.tradeoff_chart(df, "e", "t", [True, True, False], color="c", titles={"e": "energy"})
    plans_trace, front = fig.data
    assert front.name == "Pareto front" and list(front.x) == [1.0, 2.0] and list(front.customdata) == [0, 1]
    assert list(plans_trace.customdata) == [0, 1]  # the row without an energy value is left out
    assert plans_trace.marker.showscale and fig.layout.xaxis.title.text == "energy"
    with pytest.raises(ValueError, match="no column 'zz'"):
        charts.tradeoff_chart(df, "e", "zz", [True, True, False])


def test_engine_backend_follows_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(tradeoffs.WORKERS_ENV, "3")
    monkeypatch.delenv(tradeoffs.RAY_ENV, raising=False)
    assert tradeoffs.engine_backend() == ("local", None, 3)
    monkeypatch.setenv(tradeoffs.RAY_ENV, "auto")
    assert tradeoffs.engine_backend() == ("ray", "auto", 3)
    monkeypatch.setenv(tradeoffs.WORKERS_ENV, "many")
    with pytest.raises(ClusterSimError, match="whole number"):
        tradeoffs.engine_backend()


# ---- the page -----------------------------------------------------------------------------------------


def _page(**state: object) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["training_cfg"] = SMALL_TRAIN
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def _figure(at: AppTest) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def test_energy_per_token_axis_draws_its_front() -> None:
    at = _page(to_training_knobs=["tp", "pp"], to_training_vals_tp=[1, 2], to_training_vals_pp=[1, 2, 4])
    assert_page_clean(at)
    at.selectbox(key="to_training_x").set_value("energy_per_token_j").run()
    at.selectbox(key="to_training_color").set_value("cost_per_million_tokens_usd").run()
    assert_page_clean(at)
    fig = _figure(at)
    assert [t["name"] for t in fig["data"]] == ["plans", "Pareto front"]
    assert fig["layout"]["xaxis"]["title"]["text"].startswith("energy per token (J)")
    table = at.dataframe[-1].value
    # the front is the energy-vs-memory Pareto set of the plans that fit
    expect = objectives.pareto_mask(
        table[["energy_per_token_j", "peak_memory_gb"]].to_numpy().tolist(), ["min", "min"], table["fits"].tolist()
    )
    assert table["on_front"].tolist() == expect and any(expect)
    assert json.loads(at.query_params["sweep"])["x"] == "energy_per_token_j"


def test_a_schema_knob_sweeps_and_moves_the_objective() -> None:
    at = _page(
        to_training_knobs=["sparsify", "fraction"],
        to_training_vals_sparsify=["topk"],
        to_training_vals_fraction=[0.01, 0.5],
    )
    assert_page_clean(at)
    table = at.dataframe[-1].value.set_index("fraction")
    assert list(table.index) == [0.01, 0.5] and set(table["sparsify"]) == {"topk"}
    # top-k at 1% sends less over the DP collective than at 50% (values plus indices)
    assert table.loc[0.01, "exposed_dp_s"] < table.loc[0.5, "exposed_dp_s"]
    assert table.loc[0.01, "step_time_s"] != table.loc[0.5, "step_time_s"]
    # a value typed into the picker is parsed and checked against the schema's bounds
    at.multiselect(key="to_training_vals_fraction").set_value([0.01, "2"]).run()
    assert any("out of range" in w.value for w in at.warning)
    assert at.session_state["to_training_vals_fraction"] == [0.01]


def test_an_over_cap_sweep_runs_through_the_sweep_engine(monkeypatch) -> None:
    monkeypatch.setattr(plans, "MAX_SWEEP", 2)
    monkeypatch.setenv(tradeoffs.WORKERS_ENV, "1")
    monkeypatch.delenv(tradeoffs.RAY_ENV, raising=False)
    at = _page(
        to_training_knobs=["recompute", "zero"],
        to_training_vals_recompute=["selective", "full"],
        to_training_vals_zero=[0, 1],
    )
    assert any("at most 2 plans" in w.value for w in at.warning) and not at.dataframe
    at.button(key="to_engine_run").click().run()
    assert_page_clean(at)
    table = at.dataframe[-1].value
    assert len(table) == 4 and {"recompute", "zero"} <= set(table.columns)
    full, sel = (table[table["recompute"] == r]["step_time_s"].mean() for r in ("full", "selective"))
    assert full > sel  # full recompute re-runs the forward pass
    inline = _page(to_training_knobs=["recompute"], to_training_vals_recompute=["full"]).dataframe[-1].value
    row = table[(table["recompute"] == "full") & (table["zero"] == 1)]
    assert row["step_time_s"].iloc[0] == pytest.approx(inline["step_time_s"].iloc[0])  # same plan, same answer


def test_a_link_restores_knobs_by_path_and_the_axes() -> None:
    link = {
        "mode": "training",
        "knobs": {"parallel.tp": [1, 2], "training.precision": ["bf16", "fp8", "fp4"]},
        "x": "tokens_per_s",
        "y": "tco2e_to_train",
        "color": "mfu",
    }
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["training_cfg"] = SMALL_TRAIN
    at.query_params["sweep"] = json.dumps(link)
    at.run()
    assert_page_clean(at)
    assert at.session_state["to_training_vals_precision"] == ["bf16", "fp8"]  # fp4 is not a precision
    assert at.selectbox(key="to_training_y").value == "tco2e_to_train"
    spec = json.loads(at.query_params["sweep"])
    assert spec["knobs"] == {"tp": [1, 2], "precision": ["bf16", "fp8"]} and spec["color"] == "mfu"


def test_table_columns_carry_their_units() -> None:
    df = pd.DataFrame(
        {"step_time_s": [1.0], "mfu": [0.5], "peak_memory_gb": [40.0], "cost_per_million_tokens_usd": [2.0]}
    )
    cfg = tradeoffs.column_config("training", df)
    fmt = {k: v["type_config"]["format"] for k, v in cfg.items() if v["type_config"]["type"] == "number"}
    assert fmt == {
        "step_time_s": "%.4g s",
        "mfu": "percent",
        "peak_memory_gb": "%.1f GB",
        "cost_per_million_tokens_usd": "$%.4g",
    }
    assert cfg["mfu"]["label"] == "MFU"


def test_the_sweep_engine_reports_progress_per_point() -> None:
    from simulator.search.sweep import sweep

    seen: list[tuple[int, int]] = []
    base = {**SMALL_TRAIN, "parallel": {**SMALL_TRAIN["parallel"], "dp": "auto"}}
    frame = sweep(base, {"parallel.tp": [1, 3, 2]}, progress=False, on_progress=lambda d, t: seen.append((d, t)))
    assert list(frame["status"]) == ["ok", "invalid", "ok"]  # tp=3 does not divide 8 GPUs: pruned, still counted
    assert sorted(seen) == [(1, 3), (2, 3), (3, 3)]
