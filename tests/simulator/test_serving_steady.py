"""Serving steady state (#16): warm-up removal, overload detection, intervals, run-length-free capacity.

The capacity acceptance test compares 500 requested (the search runs its minimum, 2,000 per probe) with
5,000 requested; a 20,000-request search of the bundled example takes about 55 s of CPU (every probe is
20,000 requests), too slow for the suite. Measured by hand: 500 -> 13.0 [13.0, 13.75] req/s (5.5 s),
5,000 -> 12.75 [12.75, 13.5] (16 s), 20,000 -> 12.5 [12.5, 13.0] (55 s); docs/serving-steady-state.md,
section 6. The whole module takes ~45 s on a 2-CPU box.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from simulator.core.config import read_yaml
from simulator.core.resources import example_path
from simulator.search.plan_serve import plan_serving
from simulator.serving import load_serving_config, simulate_serving
from simulator.serving.capacity import Capacity, find_capacity
from simulator.serving.steady import SteadyStateSpec, analyze, mser5, trend

EXAMPLE = read_yaml(example_path("serve-llama3-8b-h100.yaml"))

#: A cheap workload (short prompts and answers: few engine iterations per request) at a moderate load.
FAST: dict[str, Any] = {
    "model": "llama3-8b",
    "gpu": "h100-sxm5-80gb",
    "batching": {"kind": "continuous", "max_num_seqs": 256, "max_num_batched_tokens": 8192},
    "power": {"mode": "tdp"},
    "workload": {
        "num_requests": 2000,
        "arrivals": {"kind": "poisson", "rate_per_s": 60.0},
        "lengths": {
            "kind": "lognormal",
            "prompt_median": 128,
            "prompt_sigma": 0.6,
            "output_median": 16,
            "output_sigma": 0.6,
            "max_prompt": 4096,
            "max_output": 512,
        },
    },
    "slo": {"ttft_s": 0.5, "tpot_s": 0.05},
}


def _with(cfg: dict[str, Any], **workload: Any) -> dict[str, Any]:
    return {**cfg, "workload": {**cfg["workload"], **workload}}


def _rate(cfg: dict[str, Any], rate: float, n: int, **extra: Any) -> dict[str, Any]:
    arrivals = {**cfg["workload"]["arrivals"], "rate_per_s": rate}
    return {**_with(cfg, arrivals=arrivals, num_requests=n), **extra}


# ---- unit tests on synthetic series ----------------------------------------------------------------------


def test_mser5_removes_a_known_warmup_and_keeps_a_stationary_series() -> None:
    rng = np.random.default_rng(7)
    warm = 300
    x = rng.normal(0.0, 1.0, 3000)
    x[:warm] += 8.0 * np.exp(-np.arange(warm) / 60.0)  # a transient that has decayed by request 300
    cut = mser5(x)
    assert 100 <= cut <= 2 * warm, cut
    assert x[cut:].mean() == pytest.approx(0.0, abs=0.1)
    assert mser5(rng.normal(0.0, 1.0, 3000)) <= 300  # nothing much to remove from a stationary series
    assert mser5(np.ones(12)) == 0 and mser5(np.arange(3.0)) == 0


def test_trend_slope_and_standard_error() -> None:
    rng = np.random.default_rng(3)
    x = np.arange(20.0)
    t = trend(x, 0.5 * x + rng.normal(0.0, 0.3, 20))
    assert t.slope == pytest.approx(0.5, abs=3 * t.se) and t.p_value < 1e-6
    flat = trend(x, rng.normal(0.0, 0.3, 20))
    assert abs(flat.slope) < 3 * flat.se and flat.p_value > 0.01


def _queue(arrival: np.ndarray, service_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One FIFO server: (start, done) of each request."""
    start, done = np.empty_like(arrival), np.empty_like(arrival)
    free = 0.0
    for i, (a, s) in enumerate(zip(arrival, service_s, strict=True)):
        start[i] = max(a, free)
        done[i] = free = start[i] + s
    return start, done


def test_stationary_queue_is_stable_and_a_growing_one_is_not() -> None:
    rng = np.random.default_rng(11)
    n, rate = 6000, 10.0
    arrival = np.cumsum(rng.exponential(1.0 / rate, n))
    spec = SteadyStateSpec()
    tpot = np.full(n, 0.01)
    for mu, stable in ((14.0, True), (8.0, False)):  # service rate above / below the arrival rate
        start, done = _queue(arrival, rng.exponential(1.0 / mu, n))
        ttft = start - arrival + 0.01
        met = ttft <= 1.0
        an = analyze(arrival, done, ttft, tpot, met, spec)
        assert an.stable is stable, an.verdict
        if not stable:  # the queue grows at arrival rate - service rate = 2 requests/s
            assert an.system.slope == pytest.approx(rate - mu, rel=0.15)
            assert an.ttft.slope == pytest.approx((rate - mu) / mu, rel=0.2)  # waiting grows 2/8 s per s
        else:
            assert abs(an.system.slope) < 3 * an.system.se + 1e-3
            assert an.window.lo < n // 4 and an.window.hi > n * 0.9


def test_warmup_is_removed_from_the_window() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    arrival = np.cumsum(rng.exponential(0.1, n))
    done = arrival + rng.exponential(0.2, n)
    ttft = rng.exponential(0.05, n)
    ttft[:400] += 2.0 * np.exp(-np.arange(400) / 80.0)  # slow first requests (cold caches, say)
    an = analyze(arrival, done, ttft, np.full(n, 0.01), ttft <= 1.0, SteadyStateSpec())
    assert an.stable and 150 <= an.window.lo <= 800
    assert an.ttft_ci.mean.contains(0.05)


# ---- the acceptance tests of issue #16 -------------------------------------------------------------------


@pytest.fixture(scope="module")
def capacity_500() -> tuple[Capacity, float]:
    t0 = time.process_time()
    cap = find_capacity(load_serving_config(_with(EXAMPLE, num_requests=500)))
    return cap, time.process_time() - t0


def test_capacity_does_not_depend_on_the_requested_run_length(capacity_500: tuple[Capacity, float]) -> None:
    short, short_s = capacity_500
    t0 = time.process_time()
    long = find_capacity(load_serving_config(_with(EXAMPLE, num_requests=5000)))
    long_s = time.process_time() - t0
    print(
        f"\ncapacity of the bundled example: 500 requested -> {short.rate_per_s:.3f} req/s "
        f"[{short.interval.low:.3f}, {short.interval.high:.3f}] ({len(short.probes)} probes, {short_s:.1f} s CPU); "
        f"5,000 requested -> {long.rate_per_s:.3f} [{long.interval.low:.3f}, {long.interval.high:.3f}] "
        f"({len(long.probes)} probes, {long_s:.1f} s CPU)"
    )
    assert short.requests == 2000 and long.requests == 5000  # the minimum, then what was asked for
    assert all(p.requests >= 2000 for p in short.probes)
    # both intervals [highest pass, lowest fail] hold the capacity, so they overlap, and the two answers
    # differ by less than the wider interval
    assert max(short.interval.low, long.interval.low) <= min(short.interval.high, long.interval.high)
    width = max(short.interval.high - short.interval.low, long.interval.high - long.interval.low)
    assert abs(short.rate_per_s - long.rate_per_s) <= width


@pytest.mark.parametrize("requested", [500, 5000])
def test_twenty_percent_above_capacity_is_unstable(capacity_500: tuple[Capacity, float], requested: int) -> None:
    rate = 1.2 * capacity_500[0].rate_per_s
    steady = simulate_serving(_rate(EXAMPLE, rate, requested), extend=True)  # a steady-state run (--steady)
    s = steady.steady
    print(
        f"\n{requested} requested at {rate:.2f} req/s: stable={s.stable} after {s.extended_to_requests} requests, "
        f"system grows {s.queue_growth_per_s:.2f} +- {s.queue_growth_se:.2f} req/s, TTFT "
        f"{s.ttft_growth_s_per_s:.3f} +- {s.ttft_growth_se:.3f} s/s"
    )
    assert s.stable is False and s.queue_growth_per_s > 0 and s.ttft_growth_s_per_s > 0
    assert s.extended_to_requests == max(requested, 2000)  # overload stops the run at once
    plain = simulate_serving(_rate(EXAMPLE, rate, requested)).steady  # exactly the requested requests
    print(f"plain run of {plain.extended_to_requests}: stable={plain.stable}, grows {plain.queue_growth_per_s:.2f}/s")
    assert plain.stable is False and plain.extended_to_requests == requested


def test_plan_serve_deployment_meets_the_slo_in_a_long_run() -> None:
    rate = 150.0
    budget = {"steady_state": {"max_requests": 20000}}
    best, plans = plan_serving(
        {**FAST, **budget}, rate_per_s=rate, tps=[1], policies=("continuous",), max_num_seqs=(256,)
    )
    sim = best.simulated
    print(
        f"\nplan at {rate} req/s: TP{best.tp} x {best.replicas} replicas, capacity "
        f"{best.replica_capacity_per_s:.1f} req/s per replica {best.replica_capacity_interval}, margin "
        f"{best.margin:.2f}x; confirmation ({sim['requests']} requests): attainment {sim['slo_attainment']:.3f} "
        f"{sim['slo_attainment_ci']}"
    )
    assert best.margin >= 1.0 and sim["stable"] and sim["requests"] >= 20000
    assert sim["slo_attainment_ci"][0] >= 0.9
    deployed = {**FAST, "tp": best.tp, "replicas": best.replicas, "seed": 1}  # an independent 20,000-request run
    deployed["batching"] = {**FAST["batching"], "kind": best.policy, "max_num_seqs": best.max_num_seqs}
    check = simulate_serving(_rate(deployed, rate, 20000))
    print(f"independent 20,000-request run: attainment {check.slo_attainment:.3f}, stable {check.steady.stable}")
    assert check.steady.stable and check.slo_attainment >= 0.9


def test_percentile_intervals_cover_the_long_run_value() -> None:
    truth = simulate_serving(_rate(FAST, 60.0, 40000, seed=10**6))
    assert truth.steady.stable
    names = [(m, q) for m in ("ttft", "tpot", "e2e") for q in ("p50", "p90", "p99")]
    hits = dict.fromkeys(names, 0)
    for seed in range(50):
        r = simulate_serving(_rate(FAST, 60.0, 2000, seed=seed))
        for m, q in names:
            iv = getattr(getattr(r.steady, f"{m}_ci_s"), q)
            hits[m, q] += iv.contains(getattr(getattr(truth, f"{m}_s"), q))
    print("\ncoverage of 50 runs (95% CIs): " + ", ".join(f"{m} {q} {k}/50" for (m, q), k in hits.items()))
    assert sum(hits.values()) >= 0.9 * 50 * len(names)  # pooled over the nine percentiles
    assert min(hits.values()) >= 42  # and none far off (each is a binomial count of 50)
