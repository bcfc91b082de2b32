"""The serving engine's fast path: quiet decode runs advanced at once give exactly the one-by-one results."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest

from simulator.serving import engine as engine_mod
from simulator.serving import simulate_serving
from simulator.serving.engine import IterationLog, IterationRecord, _Environment
from simulator.serving.iteration import iteration_model
from simulator.serving.policies import BATCHING_POLICIES
from simulator.serving.result import REQUEST_COLUMNS

LENGTHS = {"kind": "lognormal", "prompt_median": 400, "prompt_sigma": 0.8, "output_median": 120, "output_sigma": 0.8}
BASE: dict[str, Any] = {
    "model": "llama3-8b",
    "gpu": "h100-sxm5-80gb",
    "batching": {"kind": "continuous", "max_num_seqs": 64},
    "workload": {"num_requests": 250, "arrivals": {"kind": "poisson", "rate_per_s": 12.0}, "lengths": LENGTHS},
}


def variant(**over: Any) -> dict[str, Any]:
    """BASE with top-level keys replaced and ``workload__key`` keys set inside the workload."""
    cfg = copy.deepcopy(BASE)
    for key, value in over.items():
        if key.startswith("workload__"):
            cfg["workload"][key.removeprefix("workload__")] = value
        else:
            cfg[key] = value
    return cfg


CASES = {
    "continuous": variant(),
    "burst_preempting": variant(
        workload__arrivals={"kind": "concurrency", "max_concurrency": 250},
        kv={"gpu_memory_utilization": 0.3},
        batching={"kind": "continuous", "max_num_seqs": 256},
    ),
    "chunked_vllm": variant(batching={"kind": "chunked", "max_num_seqs": 32, "token_budget": 512}),
    "sglang_retract": variant(stack="sglang", batching={"kind": "prefill_first", "max_num_seqs": 48}),
    "two_replicas_sessions": variant(
        replicas=2,
        router="kv_aware",
        kv={"prefix_caching": True, "host_gb": 20},
        workload__sessions={"turns": 3},
    ),
    "closed_loop": variant(workload__arrivals={"kind": "concurrency", "max_concurrency": 16}),
    "disaggregated": variant(batching={"kind": "disaggregated", "prefill_replicas": 1, "decode_replicas": 1}),
}


def observed(res: Any) -> tuple:
    """Everything a serving result shows: its summary, per-request rows, KV occupancy and timeline."""
    return res.to_dict(), res.requests_table, res.kv_occupancy, res.timeline.events


@pytest.mark.parametrize("name", list(CASES))
def test_fast_path_matches_one_iteration_at_a_time(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = simulate_serving(CASES[name])
    for cls in BATCHING_POLICIES.values():  # every policy schedules each iteration itself
        monkeypatch.setattr(cls, "quiet_decode", lambda self, engine, rep: False)
    slow = simulate_serving(CASES[name])
    assert observed(fast) == observed(slow)


def test_fast_path_takes_most_decode_iterations(monkeypatch: pytest.MonkeyPatch) -> None:
    scheduled = 0
    run_iteration = engine_mod.ServingEngine._run_iteration

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal scheduled
        scheduled += 1
        return run_iteration(self, *args, **kwargs)

    monkeypatch.setattr(engine_mod.ServingEngine, "_run_iteration", counting)
    res = simulate_serving(CASES["continuous"])
    assert scheduled < 0.5 * res.iterations  # the rest were advanced in quiet runs


def test_environment_timeout_at_fires_at_exactly_the_time() -> None:
    env = _Environment()
    seen: list[float] = []
    when = 0.1 + 0.2  # not 0.3: a relative timeout from another `now` could round elsewhere

    def proc() -> Any:
        yield env.timeout(0.1)
        yield env.timeout_at(when)
        seen.append(env.now)

    env.process(proc())
    env.run()
    assert seen == [when]


def test_peek_except_skips_only_the_given_event() -> None:
    env = _Environment()
    assert env.peek_except(None) == math.inf
    first = env.timeout(1.0)
    env.timeout(3.0)
    env.timeout(2.0)
    assert env.peek_except(None) == 1.0
    assert env.peek_except(first) == 2.0
    assert env.peek_except(env.timeout(5.0)) == 1.0


def test_iteration_log_columns_and_records() -> None:
    log = IterationLog()
    log.append(0, 0.0, 0.5, 128, 0, 10, 100)
    log.append(1, 0.5, 0.75, 0, 7, 12, 100)
    assert len(log) == 2
    assert list(log)[1] == IterationRecord(1, 0.5, 0.75, 0, 7, 12, 100)
    assert np.array_equal(log.column("decodes"), [0, 7])
    assert log.column("end").dtype == np.float64


def test_result_tables_are_built_from_columns() -> None:
    res = simulate_serving(CASES["continuous"])
    frame = res.requests
    assert list(frame.columns) == list(REQUEST_COLUMNS) and len(frame) == res.completed_requests
    assert res.requests_table[3] == frame.iloc[3].to_dict()
    assert isinstance(res.requests_table[0]["id"], int) and isinstance(res.requests_table[0]["met_slo"], bool)
    assert len(res.kv_occupancy) == len(res.timeline) == res.iterations
    occupancy = res.kv_occupancy_frame()
    assert occupancy["kv_used_fraction"].between(0, 1).all()
    assert res.timeline.events[-1][1] == pytest.approx(occupancy["time_s"].iloc[-1])


@pytest.mark.parametrize("model", ["llama3-8b", "mixtral-8x7b"])
def test_decode_step_shortcuts_equal_the_general_model(model: str) -> None:
    im = iteration_model(model, "h100-sxm5-80gb", tp=2)
    rng = np.random.default_rng(0)
    for decodes, mean in zip(rng.integers(1, 300, 40), rng.integers(1, 5000, 40), strict=True):
        n, context = int(decodes), int(decodes * mean)
        assert im.decode_step_s(n, context) == im.iteration_s((), n, context, n, True)
        # a neighbouring context mostly shares the memo entry (same KV pages per sequence): still the same time
        assert im.decode_step_s(n, context + n) == im.iteration_s((), n, context + n, n, True)
        assert im.decode_work_totals(n, context) == im.work_totals([], n, context)
