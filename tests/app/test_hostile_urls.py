"""Hostile links to every page (issue #17): the app refuses or caps each one with a one-line message, fast,
without a traceback, and never reads a server file or shows its contents."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import simulator.app.common as common
from streamlit.testing.v1 import AppTest

from simulator.models import get_model

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60
#: What a page may cost on a hostile link (the acceptance bound is 20 s).
FAST_S = 15.0
PASSWD_LINE = "root:x:0:0"
SERVE = {
    "model": "llama3.2-1b",
    "gpu": "h100-sxm5-80gb",
    "workload": {
        "num_requests": 20,
        "arrivals": {"kind": "trace"},
        "lengths": {"kind": "trace"},
        "trace": {"path": "/etc/passwd", "format": "csv"},
    },
}
MOE_ZERO = {
    "model": "mixtral-8x7b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 8},
    "parallel": {"tp": 1, "pp": 1, "dp": 8, "ep": 8},
    "training": {"seq_len": 2048, "global_batch": 8, "micro_batch": 1},
    "moe_routing": {"source": {"kind": "trace", "path": "/dev/zero"}},
}


#: 10^12 GPUs with tp8 pp8 (the default plan's) and a batch that divides evenly: only the GPU count is absurd.
HUGE_CLUSTER = {
    "cluster": {"num_gpus": 10**12},
    "parallel": {"dp": 15625 * 10**6},
    "training": {"global_batch": 15625 * 10**6},
}


def _page(page: str, **params: str) -> tuple[AppTest, float]:
    """``page`` opened with exactly ``params`` in the URL, and the seconds that took."""
    at = AppTest.from_file(str(REPO / "app" / "views" / f"{page}.py"), default_timeout=TIMEOUT)
    at.query_params.update(params)
    start = time.perf_counter()
    at.run()
    return at, time.perf_counter() - start


def _messages(at: AppTest) -> list[str]:
    return [e.value for e in at.error] + [w.value for w in at.warning] + [i.value for i in at.info]


def _text(at: AppTest) -> str:
    """Everything the page shows as text (messages, captions, markdown, metrics)."""
    parts = _messages(at) + [c.value for c in at.caption] + [m.value for m in at.markdown]
    return "\n".join(parts + [f"{m.label} {m.value}" for m in at.metric])


def assert_refused(at: AppTest, seconds: float, *needles: str) -> list[str]:
    assert not at.exception, [e.value for e in at.exception]
    assert seconds < FAST_S, seconds
    msgs = _messages(at)
    for needle in needles:
        assert any(needle in m for m in msgs), (needle, msgs)
    for m in msgs:
        assert "\n" not in m and "Traceback" not in m, m
    return msgs


# ---- /power: the custom config is cleaned like the other pages' ------------------------------------------------


@pytest.mark.parametrize("columns", [None, {"arrival_s": "root:x:0:0:root:/root:/bin/bash"}])
def test_power_custom_config_cannot_read_a_server_trace(columns) -> None:
    cfg = json.loads(json.dumps(SERVE))
    if columns:
        cfg["workload"]["trace"]["columns"] = columns
    at, s = _page("power", power=json.dumps({"workload": "custom", "config": cfg}))
    assert_refused(at, s, "may only name uploaded files")
    assert PASSWD_LINE not in _text(at).replace(str(columns), "")
    assert at.session_state["pw_workload"] != "custom"  # the defaults are shown instead


def test_power_routing_trace_dev_zero_and_model_paths_are_refused() -> None:
    at, s = _page("power", power=json.dumps({"workload": "custom", "config": MOE_ZERO}))
    assert_refused(at, s, "may only name uploaded files")
    shown = []
    for model in ("/etc/passwd", "/etc/no-such-file.json"):
        cfg = {**MOE_ZERO, "model": model}
        del cfg["moe_routing"]
        at, s = _page("power", power=json.dumps({"workload": "custom", "config": cfg}))
        msgs = " ".join(assert_refused(at, s, "is a file path"))
        shown.append(msgs.replace("passwd", "X").replace("no-such-file.json", "X"))
    assert shown[0] == shown[1]  # same answer whether the file exists or not


def test_power_deep_link_is_a_one_line_warning() -> None:
    at, s = _page("power", power='{"a":' * 3000 + "1" + "}" * 3000)
    assert_refused(at, s, "nests deeper")


# ---- /training ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("train", "needle"),
    [
        ({"training": {"global_batch": 153600}}, "micro-batches per step"),
        ({"training": {"global_batch": 10**12}}, "over the limit"),
        (HUGE_CLUSTER, "GPUs"),
    ],
)
def test_training_links_beyond_the_caps_are_refused(train: dict, needle: str) -> None:
    at, s = _page("training", train=json.dumps(train))
    assert_refused(at, s, needle)


def test_training_inline_model_with_a_million_layers_is_refused() -> None:
    model = get_model("llama3.2-1b").model_dump(mode="json") | {"num_layers": 10**6, "name": "huge"}
    at, s = _page("training", train=json.dumps({"model": model}))
    assert_refused(at, s, "model layers")


# ---- /serving ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("serve", "needle"),
    [
        ({"workload": {"num_requests": 10**9}}, "num_requests"),
        ({"replicas": 10**9}, "GPUs"),
        ({"workload": {"lengths": {"kind": "fixed", "prompt_tokens": 128, "output_tokens": 100000}}}, "output tokens"),
    ],
)
def test_serving_links_beyond_the_caps_are_refused(serve: dict, needle: str) -> None:
    at, s = _page("serving", serve=json.dumps(serve))
    assert_refused(at, s, needle)


def test_serving_link_to_a_server_trace_is_refused() -> None:
    at, s = _page("serving", serve=json.dumps(SERVE))
    assert_refused(at, s, "may only name uploaded files")
    assert PASSWD_LINE not in _text(at)


# ---- /tradeoffs and /hardware -----------------------------------------------------------------------------------


def test_tradeoffs_and_hardware_survive_hostile_links() -> None:
    too_many = {"mode": "training", "knobs": {"tp": [1, 2, 4, 8], "pp": [1, 2, 4, 8, 16], "micro_batch": [1, 2, 4, 8]}}
    at, s = _page("tradeoffs", sweep=json.dumps(too_many))
    assert_refused(at, s, "at most 64 plans")
    at, s = _page("tradeoffs", sweep='{"mode": "training", "knobs": {"tp": NaN}}')
    assert_refused(at, s, "not valid JSON")
    at, s = _page("hardware", gpu="/etc/passwd")
    assert not at.exception and s < FAST_S and PASSWD_LINE not in _text(at)


# ---- the per-session time budget --------------------------------------------------------------------------------


def test_a_spent_session_budget_stops_new_simulations(monkeypatch) -> None:
    monkeypatch.setattr(common, "SESSION_BUDGET_S", 0.0)
    at, s = _page("serving", serve=json.dumps({"workload": {"num_requests": 21}}))
    assert_refused(at, s, "simulation time")
