"""Capacity search: the highest arrival rate at which a deployment still meets its SLO."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hwmodels.errors import ClusterSimError
from simulator.serving.config import ServingConfig, TraceArrivals
from simulator.serving.result import ServingResult
from simulator.serving.simulate import simulate_serving


def _at_rate(cfg: ServingConfig, rate: float, profile: Any) -> ServingResult:
    arrivals = cfg.workload.arrivals.model_copy(update={"rate_per_s": rate})
    data = cfg.model_dump()
    data["workload"]["arrivals"] = arrivals.model_dump()
    return simulate_serving(data, profile)


def max_rate(
    cfg: ServingConfig,
    *,
    attainment: float = 0.9,
    rel_tol: float = 0.03,
    profile: Any = None,
    progress: Callable[[float, ServingResult], None] | None = None,
) -> tuple[float, ServingResult]:
    """Binary-search the arrival rate (requests/s) at which ``attainment`` of requests meet the SLO.

    The arrival process keeps its shape (Poisson, gamma burstiness, a rescaled trace); only its mean
    rate changes. Returns the highest passing rate and its result.
    """
    if not 0 < attainment <= 1:
        raise ClusterSimError(f"attainment must be in (0, 1], got {attainment}")
    arrivals = cfg.workload.arrivals
    start = arrivals.rate_per_s if arrivals.rate_per_s else 1.0
    if isinstance(arrivals, TraceArrivals) and arrivals.rate_per_s is None:
        start = 1.0

    def ok(rate: float) -> tuple[bool, ServingResult]:
        res = _at_rate(cfg, rate, profile)
        if progress:
            progress(rate, res)
        return res.slo_attainment >= attainment, res

    lo, hi = 0.0, start
    best: ServingResult | None = None
    passed, res = ok(hi)
    while passed:  # grow until the SLO breaks
        lo, best = hi, res
        hi *= 2.0
        passed, res = ok(hi)
        if hi > 1e6:
            raise ClusterSimError("the SLO holds at any arrival rate; check slo and the workload size")
    while hi - lo > rel_tol * hi:
        if best is None and hi < start / 64:
            break  # not even 1/64 of the starting rate passes: the SLO is out of reach
        mid = (lo + hi) / 2.0
        passed, res = ok(mid)
        if passed:
            lo, best = mid, res
        else:
            hi = mid
    if best is None:
        raise ClusterSimError(
            f"no arrival rate above {lo:.3g}/s meets the SLO at {attainment:.0%} attainment; relax slo.ttft_s/tpot_s"
        )
    return lo, best
