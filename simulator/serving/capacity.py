"""Capacity search: the highest arrival rate at which a deployment still meets its SLO.

Each probe is a steady-state run, judged on confidence bounds, so the answer does not depend on how
many requests were asked for beyond ``steady_state.min_requests`` (docs/serving-steady-state.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hwmodels.errors import ClusterSimError
from simulator.serving.config import ServingConfig, TraceArrivals, load_serving_config
from simulator.serving.result import ServingResult
from simulator.serving.simulate import simulate_steady
from simulator.serving.steady import Interval

Outcome = Literal["pass", "fail", "inconclusive"]


class BelowRate(ClusterSimError):
    """The capacity search's first probe, at the rate asked as a floor, failed: the capacity is below it."""

    def __init__(self, rate: float) -> None:
        super().__init__(f"the SLO is missed at {rate:.3g} requests/s, the least rate asked of this deployment")
        self.rate = rate


class Probe(BaseModel):
    """One rate the search simulated: its outcome on the confidence bounds and the run behind it."""

    model_config = ConfigDict(frozen=True)
    rate_per_s: float
    outcome: Outcome = Field(description="pass: stable and attainment CI low >= target; fail: unstable or CI high < it")
    stable: bool
    slo_attainment: float
    slo_attainment_ci: Interval
    requests: int = Field(description="requests simulated (after any extension)")


class Capacity(BaseModel):
    """The highest arrival rate meeting the SLO on its confidence bound, with the interval the search left."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    rate_per_s: float = Field(description="highest probed rate that passes: stable, attainment CI low >= target")
    interval: Interval = Field(description="[rate_per_s, lowest probed rate that fails: unstable or CI high < target]")
    attainment: float = Field(description="share of requests that must meet the SLO")
    requests: int = Field(description="requests per probe before extension: max(requested, steady_state.min_requests)")
    probes: list[Probe]
    result: ServingResult | None = Field(default=None, exclude=True, repr=False, description="the run at rate_per_s")


def judge(res: ServingResult, attainment: float) -> Outcome:
    """Outcome (pass, fail or inconclusive) of one steady-state run against ``attainment`` on the confidence bounds."""
    steady = res.steady
    if steady is None or not steady.stable:
        return "fail"
    ci = steady.slo_attainment_ci
    if ci.low >= attainment:
        return "pass"
    return "fail" if ci.high < attainment else "inconclusive"


def _at_rate(cfg: ServingConfig, rate: float) -> ServingConfig:
    data = cfg.model_dump()
    data["workload"]["arrivals"] = {**data["workload"]["arrivals"], "rate_per_s": rate}
    return load_serving_config(data)


def find_capacity(
    cfg: ServingConfig,
    *,
    attainment: float = 0.9,
    rel_tol: float = 0.03,
    profile: Any = None,
    progress: Callable[[float, ServingResult], None] | None = None,
    at_least: float | None = None,
) -> Capacity:
    """Search the arrival rate (requests/s) at which ``attainment`` of requests meet the SLO.

    Every probe is a steady-state run of max(``workload.num_requests``, ``steady_state.min_requests``)
    requests. A rate passes when the run is stable and the lower confidence bound of its SLO
    attainment reaches ``attainment``; it fails when the run is unstable (overload) or the upper bound
    misses it; otherwise it is inconclusive. Two bisections, to ``rel_tol``, find the highest pass
    (the capacity) and the lowest fail (the top of its interval). While that interval is wider than
    ``steady_state.target_rel_half_width`` on either side of the capacity, the lowest inconclusive
    probe inside it is re-run with twice the requests (up to ``max_requests``) and the bisections go
    on, spending at most ``max_requests`` requests on such re-runs. The arrival process keeps its
    shape (Poisson, gamma burstiness, a rescaled trace); only its mean rate changes.

    ``at_least``: a caller that only needs capacities of at least this rate (a deployment search that
    has a cheaper plan otherwise) gets :class:`BelowRate` after one run there when it fails; when it does not,
    the search runs as without it (same probes, same answer).
    """
    if not 0 < attainment <= 1:
        raise ClusterSimError(f"attainment must be in (0, 1], got {attainment}")
    arrivals = cfg.workload.arrivals
    start = arrivals.rate_per_s if arrivals.rate_per_s else 1.0
    if isinstance(arrivals, TraceArrivals) and arrivals.rate_per_s is None:
        start = 1.0
    spec = cfg.steady_state
    requests = max(cfg.workload.num_requests, spec.min_requests)
    budget = max(requests, spec.max_requests)
    probes: dict[float, tuple[Outcome, ServingResult]] = {}
    asked: dict[float, int] = {}  # requests asked of each probe's latest run (a trace may hold fewer)

    def probe(rate: float, n: int = requests) -> Outcome:
        if asked.get(rate, 0) < n:
            res = simulate_steady(_at_rate(cfg, rate), profile, enough=lambda _: True, start=n)
            probes[rate], asked[rate] = (judge(res, attainment), res), n
            if progress:
                progress(rate, res)
        return probes[rate][0]

    if at_least is not None:
        _floor_check(cfg, at_least, attainment, requests, profile)
    _bracket(probe, probes, start, attainment)
    extra = 0  # requests spent on extensions; at most one budget (max_requests) per search
    while True:
        best, fail = _bisect(probe, probes, rel_tol)
        if fail - best <= 2.0 * spec.target_rel_half_width * best:
            break
        pending = [r for r, (o, _) in probes.items() if o == "inconclusive" and best < r < fail and asked[r] < budget]
        if not pending:
            break
        r = min(pending)
        n = min(2 * asked[r], budget)
        if extra + n > budget:
            break
        extra += n
        probe(r, n)
    rows = [
        Probe(
            rate_per_s=r,
            outcome=o,
            stable=bool(res.steady and res.steady.stable),
            slo_attainment=res.slo_attainment,
            slo_attainment_ci=res.steady.slo_attainment_ci if res.steady else Interval(low=0.0, high=1.0),
            requests=res.completed_requests,
        )
        for r, (o, res) in sorted(probes.items())
    ]
    return Capacity(
        rate_per_s=best,
        interval=Interval(low=best, high=fail),
        attainment=attainment,
        requests=requests,
        probes=rows,
        result=probes[best][1],
    )


def _floor_check(cfg: ServingConfig, at_least: float, attainment: float, requests: int, profile: Any) -> None:
    """Raise :class:`BelowRate` when a run at ``at_least`` fails. The run is not one of the search's probes, so
    a search that passes this check finds the same capacity as one that never asked (the answer does not depend
    on where a bisection starts)."""
    if not at_least > 0:
        raise ClusterSimError(f"at_least={at_least} must be a positive rate")
    res = simulate_steady(_at_rate(cfg, at_least), profile, enough=lambda _: True, start=requests)
    if judge(res, attainment) == "fail":
        raise BelowRate(at_least)


def _lowest_fail(probes: dict[float, tuple[Outcome, Any]]) -> float:
    return min(r for r, (o, _) in probes.items() if o == "fail")


def _bracket(
    probe: Callable[[float], Outcome], probes: dict[float, tuple[Outcome, Any]], start: float, attainment: float
) -> None:
    """Probe upward by doubling until a rate fails, and downward by halving until one passes below it."""
    rate = start
    while probe(rate) == "pass":  # grow until the SLO breaks on its bound
        rate *= 2.0
        if rate > 1e6:
            raise ClusterSimError("the SLO holds at any arrival rate; check slo and the workload size")
    while probe(rate) != "fail":  # ... and until it certainly breaks
        rate *= 2.0
        if rate > 1e6:
            raise ClusterSimError("no arrival rate certainly misses the SLO; check slo and the workload size")
    rate = start
    while not any(o == "pass" and r < _lowest_fail(probes) for r, (o, _) in probes.items()):
        rate = min(rate, _lowest_fail(probes)) / 2.0
        if rate < start / 64 or (rate * 2 in probes and probe(rate) == "fail" and _no_gain(probes, rate)):
            raise ClusterSimError(
                f"no arrival rate above {rate:.3g}/s meets the SLO at {attainment:.0%} attainment (on the "
                "confidence bound; halving the load does not help); relax slo.ttft_s/tpot_s"
            )
        probe(rate)


def _no_gain(probes: dict[float, tuple[Outcome, Any]], rate: float) -> bool:
    """True when a stable run at ``rate`` meets the SLO no more often than at twice the rate: latency is
    not load-bound, so lower rates will not reach the target either."""
    low, high = probes[rate][1].steady, probes[2 * rate][1].steady
    return bool(low and high and low.stable and high.stable) and (
        low.slo_attainment_ci.high <= high.slo_attainment_ci.high + 0.01
    )


def _bisect(
    probe: Callable[[float], Outcome], probes: dict[float, tuple[Outcome, Any]], rel_tol: float
) -> tuple[float, float]:
    """Bisect the pass boundary, then the fail boundary, to ``rel_tol``; return (highest pass, lowest fail)."""
    while True:
        fail = _lowest_fail(probes)
        best = max(r for r, (o, _) in probes.items() if o == "pass" and r < fail)
        not_pass = min(r for r, (o, _) in probes.items() if o != "pass" and r > best)
        not_fail = max(r for r, (o, _) in probes.items() if o != "fail" and r < fail)
        if not_pass - best > rel_tol * not_pass:
            probe(0.5 * (best + not_pass))
        elif fail - not_fail > rel_tol * fail:
            probe(0.5 * (not_fail + fail))
        else:
            return best, fail


def max_rate(
    cfg: ServingConfig,
    *,
    attainment: float = 0.9,
    rel_tol: float = 0.03,
    profile: Any = None,
    progress: Callable[[float, ServingResult], None] | None = None,
) -> tuple[float, ServingResult]:
    """(capacity in requests/s, the run at it): :func:`find_capacity` without the interval and probes."""
    cap = find_capacity(cfg, attainment=attainment, rel_tol=rel_tol, profile=profile, progress=progress)
    assert cap.result is not None
    return cap.rate_per_s, cap.result
