"""Extension by registry: a new pipeline schedule and a new batching policy, each defined only here.

Nothing outside this file is edited, yet the config accepts them, the engines run them, and the app
lists them (its option lists read the registries).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field
from streamlit.testing.v1 import AppTest

from simulator import simulate_training
from simulator.serving import simulate_serving
from simulator.serving.policies import BATCHING_POLICIES, BatchingPolicy, register_batching
from simulator.training.schedules import SCHEDULES, Layout, Schedule, Task, register_schedule

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TRAIN = {
    "model": "llama3.2-1b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 8, "node": "dgx-h100"},
    "parallel": {"tp": 1, "pp": 4, "dp": 2, "schedule": "1f1b"},
    "training": {"seq_len": 2048, "global_batch": 16, "micro_batch": 1},
}
SERVE = {
    "model": "llama3-8b",
    "gpu": "h100-sxm5-80gb",
    "batching": {"kind": "continuous"},
    "workload": {
        "num_requests": 40,
        "arrivals": {"kind": "poisson", "rate_per_s": 4.0},
        "lengths": {"kind": "fixed", "prompt_tokens": 512, "output_tokens": 32},
    },
}


class OneAtATime(Schedule):
    """Toy schedule: each micro-batch goes forward and backward through the pipeline before the next."""

    name = "toy-one-at-a-time"

    def order(self, layout: Layout, rank: int) -> list[Task]:
        return [t for mb in range(layout.num_microbatches) for t in (("F", mb, rank), ("B", mb, rank))]

    def inflight(self, rank: int, pp: int, vpp: int, m: int, weight: float) -> float:
        return weight


class Serial(BatchingPolicy):
    """Toy policy: one request at a time (continuous batching with a batch of one)."""

    kind: Literal["toy-serial"] = "toy-serial"
    max_num_batched_tokens: int = Field(default=8192, gt=0)

    def next_batch(self, engine, rep):
        return engine.continuous_batch(rep, 1, self.max_num_batched_tokens)


@pytest.fixture
def toy_schedule() -> Iterator[str]:
    register_schedule(OneAtATime)
    yield OneAtATime.name
    SCHEDULES.pop(OneAtATime.name)


@pytest.fixture
def toy_policy() -> Iterator[str]:
    register_batching(Serial)
    yield "toy-serial"
    BATCHING_POLICIES.pop("toy-serial")


def test_a_registered_schedule_runs_in_the_engine(toy_schedule: str) -> None:
    base = simulate_training(TRAIN)
    toy = simulate_training({**TRAIN, "parallel": {**TRAIN["parallel"], "schedule": toy_schedule}})
    # no pipelining: every micro-batch crosses all four stages alone, so the step is much longer
    assert toy.step_time_s > 1.5 * base.step_time_s
    assert toy.memory_per_gpu_gb.peak < base.memory_per_gpu_gb.peak  # one micro-batch in flight


def test_registries_refuse_duplicates(toy_schedule: str, toy_policy: str) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_schedule(OneAtATime)
    with pytest.raises(ValueError, match="already registered"):
        register_batching(Serial)


def test_a_registered_batching_policy_runs_in_the_engine(toy_policy: str) -> None:
    base = simulate_serving(SERVE)
    toy = simulate_serving({**SERVE, "batching": {"kind": toy_policy}})
    assert toy.completed_requests == base.completed_requests == 40
    assert toy.policy == toy_policy
    assert toy.ttft_s.p99 > base.ttft_s.p99  # requests queue behind each other


def test_unknown_names_are_one_line_errors() -> None:
    from hwmodels.errors import ClusterSimError

    with pytest.raises(ClusterSimError, match="unknown pipeline schedule 'nope'; use one of: gpipe"):
        simulate_training({**TRAIN, "parallel": {**TRAIN["parallel"], "schedule": "nope"}})
    with pytest.raises(ClusterSimError, match="not a batching policy; use one of: static"):
        simulate_serving({**SERVE, "batching": {"kind": "nope"}})


def test_the_app_lists_registered_schedules_and_policies(toy_schedule: str, toy_policy: str) -> None:
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    assert toy_schedule in at.selectbox(key="tr_schedule").options
    at.switch_page("views/serving.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert toy_policy in at.selectbox(key="sv_kind").options
