"""Serving deployment search: cheapest shape meeting the SLO at a target rate, simulated."""

from __future__ import annotations

import pytest

from hwmodels.errors import ClusterSimError
from simulator.core.config import read_yaml
from simulator.core.resources import example_path
from simulator.search.plan_serve import plan_serving

BASE = read_yaml(example_path("serve-llama3-8b-h100.yaml"))


def test_cheapest_plan_meets_the_slo_and_scales_replicas_with_the_rate() -> None:
    kw = dict(tps=[1], policies=("continuous",), max_num_seqs=(256,), requests=100)
    base = {**BASE, "steady_state": {"max_requests": 4000}}  # a shorter confirmation run keeps the test fast
    low, plans = plan_serving(base, rate_per_s=2.0, **kw)
    cap = plans[0].replica_capacity_per_s
    high, _ = plan_serving(base, rate_per_s=2.5 * cap, **kw)
    print(
        f"replica capacity {cap:.1f} req/s; 2 req/s -> {low.replicas} replica(s); {2.5 * cap:.1f} req/s -> "
        f"{high.replicas} replicas, ${high.usd_per_hour:.2f}/h, ${high.usd_per_million_output_tokens:.2f}/M tokens"
    )
    assert low.replicas == 1 and high.replicas >= 3
    assert high.usd_per_hour == pytest.approx(low.usd_per_hour * high.num_gpus / low.num_gpus)
    for plan in (low, high):
        assert plan.simulated["slo_attainment"] >= 0.9  # the reported plan was simulated at the target rate
        assert plan.simulated["stable"] and plan.simulated["slo_attainment_ci"][0] >= 0.9 and plan.margin >= 1.0
        assert plan.usd_per_million_output_tokens > 0


def test_impossible_slo_is_a_one_line_error() -> None:
    strict = {**BASE, "slo": {"ttft_s": 1e-4, "tpot_s": 1e-5}}
    with pytest.raises(ClusterSimError, match="meets the SLO"):
        plan_serving(strict, rate_per_s=1.0, tps=[1], policies=("continuous",), max_num_seqs=(64,), requests=60)
    with pytest.raises(ClusterSimError, match="positive"):
        plan_serving(BASE, rate_per_s=0.0)


def test_pruned_search_finds_the_exhaustive_answer_and_the_burst_bound_holds() -> None:
    from simulator.search.plan_serve import _shape, throughput_bound

    kw = dict(tps=[1, 2], policies=("continuous",), max_num_seqs=(256,), requests=100)
    base = {**BASE, "steady_state": {"max_requests": 3000}}
    every_best, every = plan_serving(base, rate_per_s=1.0, exhaustive=True, **kw)
    best, searched = plan_serving(base, rate_per_s=1.0, **kw)
    assert (best.tp, best.replicas, best.usd_per_hour) == (every_best.tp, every_best.replicas, every_best.usd_per_hour)
    assert len(searched) < len(every)  # the TP2 replica costs more than the one-GPU answer: not searched
    for plan in every:  # the burst bound is above every capacity the steady-state search found
        shape = _shape(base, plan.tp, plan.policy, plan.max_num_seqs)
        assert throughput_bound(shape) >= plan.replica_capacity_per_s


def test_a_rate_no_shape_can_reach_is_refused_without_capacity_searches() -> None:
    import time

    t0 = time.process_time()
    with pytest.raises(ClusterSimError, match="more than 4,096 replicas"):
        plan_serving(BASE, rate_per_s=1e76, tps=[1, 2], requests=100)
    print(f"\nrefused in {time.process_time() - t0:.2f} s CPU")


@pytest.mark.parametrize("rate", [20.0, 44.4])  # 44.4: TP2's need (22.2) lies inside its capacity interval
def test_branch_and_bound_probes_only_shapes_that_could_win_and_agrees_with_the_exhaustive_search(rate: float) -> None:
    import simulator.serving.capacity as capacity

    kw = dict(tps=[1, 2], policies=("continuous",), max_num_seqs=(64, 256), requests=100)
    base = {**BASE, "steady_state": {"max_requests": 3000}}
    every_best, every = plan_serving(base, rate_per_s=rate, exhaustive=True, **kw)
    below: dict[tuple[int, int], float] = {}
    real = capacity.find_capacity

    def counting(cfg, **k):
        try:
            return real(cfg, **k)
        except capacity.BelowRate as e:
            below[(cfg.tp, cfg.batching.max_num_seqs)] = e.rate
            raise

    capacity.find_capacity, saved = counting, capacity.find_capacity
    try:
        best, searched = plan_serving(base, rate_per_s=rate, **kw)
    finally:
        capacity.find_capacity = saved
    print(
        f"\nexhaustive: {len(every)} shapes; branch and bound: {len(searched)} searched, {best.pruned_shapes} left out"
    )
    assert (best.tp, best.policy, best.max_num_seqs, best.replicas) == (
        every_best.tp,
        every_best.policy,
        every_best.max_num_seqs,
        every_best.replicas,
    )
    assert best.pruned_shapes >= 1 and len(searched) < len(every)
    for plan in searched:  # a shape searched in full gets the capacity the exhaustive search found (same probes)
        twin = next(p for p in every if (p.tp, p.max_num_seqs) == (plan.tp, plan.max_num_seqs))
        assert plan.replica_capacity_per_s == twin.replica_capacity_per_s
    capacity_of = {(p.tp, p.max_num_seqs): p.replica_capacity_per_s for p in every}
    for shape, rate in below.items():  # a shape left out by its probe has less capacity than the probe's rate
        assert capacity_of[shape] < rate * 1.03  # (the bisection's tolerance)


def test_find_capacity_stops_at_once_below_the_rate_asked_as_a_floor() -> None:
    from simulator.serving import load_serving_config
    from simulator.serving.capacity import BelowRate, find_capacity

    cfg = load_serving_config({**BASE, "workload": {**BASE["workload"], "num_requests": 100}})
    with pytest.raises(BelowRate) as err:
        find_capacity(cfg, at_least=1e4)
    assert err.value.rate == 1e4 and "1e+04" in str(err.value)
