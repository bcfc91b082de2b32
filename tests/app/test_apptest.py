"""The Streamlit app driven headless with AppTest: every page renders on its defaults, widgets
re-run the simulation, bad input is an inline message (never an exception), and the URL holds
the configuration. AppTest does not render Plotly; tests/app/test_charts.py checks the figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
MAIN = str(REPO / "app" / "main.py")
TRACES = REPO / "tests" / "data" / "traces"
TIMEOUT = 120

SMALL_TRAIN = {
    "model": "llama3.2-1b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 8, "node": "dgx-h100"},
    "parallel": {"tp": 1, "pp": 2, "dp": 4, "cp": 1, "ep": 1, "sp": False, "vpp": 1, "zero": 1, "schedule": "1f1b"},
    "training": {"seq_len": 2048, "global_batch": 32, "micro_batch": 1, "recompute": "selective", "precision": "bf16"},
}


def _app(page: str | None = None, **params: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.query_params.update(params)
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    return at


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


# ---- training ------------------------------------------------------------------------------------


def test_training_defaults_render_and_fill_the_url() -> None:
    at = _app()
    _clean(at)
    assert at.title[0].value == "Training planner"
    m = _metrics(at)
    assert {"step time", "tokens/s", "MFU", "memory per GPU", "pipeline bubble"} <= set(m)
    assert m["step time"].endswith(" s")
    assert not _errors(at)
    cfg = json.loads(at.query_params["train"])
    assert cfg["model"] == "gpt3-175b" and cfg["parallel"]["tp"] == 8 and cfg["cluster"]["num_gpus"] == 1024
    labels = {b.label for b in at.get("download_button")}
    assert {"download config (YAML)", "download results (JSON)", "download metrics (CSV)"} <= labels


def test_training_widget_change_reruns_and_changes_metrics() -> None:
    at = _app()
    before = _metrics(at)
    at.number_input(key="tr_pp").set_value(16).run()
    _clean(at)
    after = _metrics(at)
    assert after["step time"] != before["step time"]
    assert after["memory per GPU"] != before["memory per GPU"]
    parallel = json.loads(at.query_params["train"])["parallel"]
    assert parallel["pp"] == 16 and parallel["dp"] == 8  # dp derived: 1024 / (8 * 16)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("tr_tp", 64, "does not divide num_attention_heads=96"),  # 1024 / 64 / 8 is whole, heads are not
        ("tr_tp", 3, "does not divide num_gpus=1024"),
        ("tr_global_batch", 1000, "is not divisible by micro_batch*dp"),
    ],
)
def test_training_invalid_plan_is_an_inline_error(key: str, value: int, message: str) -> None:
    at = _app()
    at.number_input(key=key).set_value(value).run()
    _clean(at)
    errors = _errors(at)
    assert errors and message in errors[0]
    assert "step time" not in _metrics(at)
    at.number_input(key=key).set_value(8 if key == "tr_tp" else 1536).run()  # and the app keeps working
    _clean(at)
    assert not _errors(at) and "step time" in _metrics(at)


def test_training_oom_plan_is_a_warning_with_results() -> None:
    at = _app()
    at.number_input(key="tr_pp").set_value(1).run()  # GPT-3 on tp=8 alone: 175B / 8 does not fit
    _clean(at)
    assert not _errors(at)
    assert any("does not fit in memory" in w.value for w in at.warning)
    assert "step time" in _metrics(at)
    assert any(m.label == "memory per GPU" and m.delta.startswith("does not fit") for m in at.metric)


def test_training_plan_b_compares() -> None:
    at = _app()
    at.checkbox(key="tr_b_on").check().run()
    _clean(at)
    assert sum(m.label == "step time" for m in at.metric) == 2
    table = at.dataframe[0].value
    assert list(table.columns) == ["metric", "A", "B", "difference", "change"]
    assert json.loads(at.query_params["b"])["pp"] == 4  # B starts as A with half the stages
    at.number_input(key="tr_b_tp").set_value(5).run()  # a bad plan B: error, plan A still shown
    _clean(at)
    assert _errors(at) and sum(m.label == "step time" for m in at.metric) == 1


def test_training_url_reproduces_a_plan() -> None:
    at = _app(train=json.dumps(SMALL_TRAIN), b=json.dumps({"pp": 1, "tp": 2}))
    _clean(at)
    assert at.session_state["tr_model"] == "llama3.2-1b"
    assert at.session_state["tr_num_gpus"] == 8 and at.session_state["tr_pp"] == 2
    assert at.session_state["tr_b_on"] and at.session_state["tr_b_tp"] == 2
    assert sum(m.label == "step time" for m in at.metric) == 2
    assert json.loads(at.query_params["train"])["model"] == "llama3.2-1b"
    bad = _app(train="{not json")
    _clean(bad)
    assert any("not valid JSON" in w.value for w in bad.warning)
    assert "step time" in _metrics(bad)  # falls back to the defaults


def test_training_hf_config_upload_and_malformed_upload() -> None:
    at = _app(train=json.dumps(SMALL_TRAIN))
    hf = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_attention_heads": 32,
        "num_hidden_layers": 16,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
    }
    at.file_uploader(key="tr_model_file").upload("my-model.json", json.dumps(hf).encode(), "application/json").run()
    _clean(at)
    assert at.session_state["tr_model"].startswith("custom")
    assert json.loads(at.query_params["train"])["model"]["hidden_size"] == 2048
    assert "step time" in _metrics(at)
    at.file_uploader(key="tr_model_file").upload("broken.json", b"{oops", "application/json").run()
    _clean(at)
    assert any("not valid JSON" in e for e in _errors(at))


# ---- serving -------------------------------------------------------------------------------------


def test_serving_defaults_and_rate_change() -> None:
    at = _app("serving")
    _clean(at)
    assert at.title[0].value == "Serving planner"
    m = _metrics(at)
    assert {"TTFT p50 / p99", "throughput", "goodput", "SLO attainment", "KV peak"} <= set(m)
    assert "capacity at SLO (90% attainment)" in m
    cfg = json.loads(at.query_params["serve"])
    assert cfg["model"] == "llama3-8b" and cfg["workload"]["num_requests"] == 300
    assert "train" not in at.query_params  # one page's config never leaks into another's link
    at.number_input(key="sv_rate").set_value(2.0).run()
    _clean(at)
    assert _metrics(at)["throughput"] != m["throughput"]


def test_serving_policy_change_and_invalid_tp() -> None:
    at = _app("serving")
    before = _metrics(at)
    at.selectbox(key="sv_kind").set_value("static").run()
    _clean(at)
    assert at.number_input(key="sv_b_static_batch_size").value == 8  # the policy's own knobs appear
    assert _metrics(at)["TTFT p50 / p99"] != before["TTFT p50 / p99"]
    assert json.loads(at.query_params["serve"])["batching"]["kind"] == "static"
    at.number_input(key="sv_tp").set_value(3).run()
    _clean(at)
    assert any("tp=3 does not divide num_attention_heads=32" in e for e in _errors(at))


def test_serving_trace_upload() -> None:
    at = _app("serving")
    data = (TRACES / "vidur_tiny.csv").read_bytes()
    at.file_uploader(key="sv_trace_file").upload("vidur_tiny.csv", data, "text/csv").run()
    _clean(at)
    assert at.session_state["sv_arrivals"] == "trace" and at.session_state["sv_lengths"] == "trace"
    at.selectbox(key="sv_trace_preset").set_value("vidur").run()
    _clean(at)
    assert not _errors(at), _errors(at)
    assert "throughput" in _metrics(at)
    assert json.loads(at.query_params["serve"])["workload"]["trace"]["preset"] == "vidur"


# ---- trade-offs and hardware ---------------------------------------------------------------------


def test_tradeoffs_sweep_and_open_a_plan_in_the_planner() -> None:
    at = _app("tradeoffs")
    _clean(at)
    m = _metrics(at)
    assert m["plans simulated"] == "12" and int(m["on the Pareto front"]) >= 1
    assert json.loads(at.query_params["sweep"])["knobs"]["tp"] == [4, 8]
    picked = at.selectbox(key="to_pick_training").value
    at.button(key="to_open_training").click().run()
    _clean(at)
    assert at.title[0].value == "Training planner"
    plan = json.loads(at.query_params["train"])
    assert plan["parallel"]["tp"] == at.session_state["tr_tp"]
    assert isinstance(picked, int) and "step time" in _metrics(at)


def test_tradeoffs_serving_sweep() -> None:
    at = _app("tradeoffs")
    at.radio(key="to_mode").set_value("serving").run()
    _clean(at)
    assert _metrics(at)["plans simulated"] == "6"
    at.multiselect(key="to_serving_vals_max_num_seqs").set_value([]).run()
    _clean(at)
    assert "plans simulated" not in _metrics(at)  # nothing to sweep: a hint, not a crash


def test_hardware_page() -> None:
    at = _app("hardware")
    _clean(at)
    assert at.title[0].value == "Hardware"
    assert {"bf16 dense peak", "memory", "profile"} <= set(_metrics(at))
    catalogue = at.dataframe[-1].value
    assert "sources" in catalogue.columns and "h100-sxm5-80gb" in set(catalogue["id"])
    assert any("MAPE" in c.value for c in at.caption)  # measured H100 points are compared
    at.selectbox(key="hw_gpu").set_value("t4-16gb").run()
    _clean(at)
    assert _metrics(at)["memory"] == "16 GiB" and at.query_params["gpu"] == "t4-16gb"


def _on(page: str, **params: str) -> AppTest:
    """Open ``page`` with exactly ``params`` in the URL (as a shared link would)."""
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    at.switch_page(f"views/{page}.py")
    at.query_params.clear()
    at.query_params.update(params)
    return at.run()


def test_unusable_link_values_are_reset_with_a_warning() -> None:
    bad_train = {"parallel": {"schedule": "foo", "zero": 7}, "training": {"seq_len": "abc"}, "model": "nope"}
    at = _on("training", train=json.dumps(bad_train), b=json.dumps({"tp": "x"}))
    _clean(at)
    warnings = " ".join(w.value for w in at.warning)
    assert "invalid zero, schedule, seq_len" in warnings and "'nope' is not a preset" in warnings
    assert at.session_state["tr_schedule"] == "1f1b" and "step time" in _metrics(at)
    bad_serve = {"batching": {"kind": "bogus"}, "tp": "x", "kv": {"gpu_memory_utilization": 5}}
    at = _on("serving", serve=json.dumps(bad_serve))
    _clean(at)
    assert "invalid tp, kind, gpu_memory_utilization" in " ".join(w.value for w in at.warning)
    assert at.session_state["sv_kind"] == "continuous" and "throughput" in _metrics(at)
    good = {"batching": {"kind": "chunked", "token_budget": 1024}, "tp": 2}
    at = _on("serving", serve=json.dumps(good))
    _clean(at)
    assert not at.warning and at.session_state["sv_b_chunked_token_budget"] == 1024
    at = _on("tradeoffs", sweep=json.dumps({"mode": "training", "knobs": {"tp": [3, 8], "bogus": [1]}}))
    _clean(at)
    assert _metrics(at)["plans simulated"] == "1"  # tp=3 is not offered; unknown knobs are ignored
    at = _on("hardware", gpu="nope")
    _clean(at)
    assert at.warning and _metrics(at)["memory"] == "80 GiB"
