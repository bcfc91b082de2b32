"""Steady state of a serving run: warm-up removal, overload detection and confidence intervals.

A serving simulation starts empty and stops when its last request finishes, so its first requests see
a light load (warm-up) and its last ones a draining system (cool-down). Figures are therefore measured
over a *window*: requests in arrival order after the warm-up that MSER-5 finds (White 1997), ending
early enough that the requests in it finished while arrivals still came. Overload is detected with a
trend test on the requests in the system over time and on TTFT by arrival order (least-squares slope
of batch means with its standard error). Means get batch-means confidence intervals; each percentile
gets one from batch means of the indicator "at or below the estimate" (so the interval is a pair of
empirical quantiles) -- no random numbers, so the same run gives the same interval.
Pure numpy/scipy: the inputs are per-request arrays, so this module knows nothing of SimPy or the engine.
See docs/serving-steady-state.md for the method and references.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats

from hwmodels.errors import ClusterSimError

_STRICT = ConfigDict(frozen=True, extra="forbid")
QUANTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0}
"""The percentiles a result reports, by name."""


# ---- config ----------------------------------------------------------------------------------------
class SteadyStateSpec(BaseModel):
    """How a serving run is judged: the precision wanted and the request budget to reach it."""

    model_config = _STRICT
    target_rel_half_width: float = Field(
        default=0.1, gt=0, le=1, description="wanted CI half-width of each percentile, as a share of the estimate"
    )
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="confidence level of every interval")
    batches: int = Field(default=20, ge=5, le=200, description="batches for batch means and the trend test")
    min_requests: int = Field(
        default=2000, gt=0, description="fewest requests of a steady-state run (capacity search, plan serve)"
    )
    max_requests: int = Field(
        default=20000, gt=0, description="request budget of an extension; plan serve confirms with this many"
    )
    extend: bool = Field(
        default=False,
        description="re-simulate with twice the requests (up to max_requests) while the intervals are wider than "
        "the target; the capacity search and plan serve always do",
    )

    @model_validator(mode="after")
    def _check(self) -> SteadyStateSpec:
        if self.max_requests < self.min_requests:
            raise ClusterSimError(
                f"steady_state.max_requests={self.max_requests} must be >= min_requests={self.min_requests}"
            )
        return self


# ---- result ----------------------------------------------------------------------------------------
class Interval(BaseModel):
    """A confidence interval [low, high] in the unit of its estimate."""

    model_config = ConfigDict(frozen=True)
    low: float
    high: float

    def contains(self, value: float) -> bool:
        """True when ``value`` lies in [low, high]."""
        return self.low <= value <= self.high


class LatencyCI(BaseModel):
    """Confidence intervals of a latency's mean, p50, p90 and p99, seconds."""

    model_config = ConfigDict(frozen=True)
    mean: Interval
    p50: Interval
    p90: Interval
    p99: Interval


class SteadyState(BaseModel):
    """Whether a serving run reached a steady state, the window its figures come from, and their intervals."""

    model_config = ConfigDict(frozen=True)
    stable: bool = Field(description="false when the waiting queue or TTFT grows: the offered rate is overload")
    verdict: str = Field(description="one line: why the run is (un)stable")
    queue_growth_per_s: float = Field(
        description="slope of the requests in the system (waiting or running) over time, requests/s"
    )
    queue_growth_se: float = Field(description="standard error of queue_growth_per_s, requests/s")
    ttft_growth_s_per_s: float = Field(description="slope of TTFT by arrival time, s per s")
    ttft_growth_se: float = Field(description="standard error of ttft_growth_s_per_s, s per s")
    warmup_s: float = Field(description="arrival time (from the first arrival) where the window starts, s")
    warmup_requests: int = Field(description="requests removed as warm-up (MSER-5)")
    window_start_s: float = Field(description="arrival time of the window's first request, s from the first arrival")
    window_end_s: float = Field(description="arrival time of the window's last request, s from the first arrival")
    window_requests: int = Field(description="requests in the measurement window")
    confidence: float = Field(description="confidence level of every interval")
    ttft_ci_s: LatencyCI
    tpot_ci_s: LatencyCI
    e2e_ci_s: LatencyCI
    slo_attainment_ci: Interval
    rel_half_width: float = Field(description="widest CI half-width of a TTFT/TPOT/E2E percentile, share of it")
    target_rel_half_width: float
    precision_reached: bool = Field(description="rel_half_width <= target_rel_half_width")
    requested_requests: int = Field(description="requests the config asked for")
    extended_to_requests: int = Field(description="requests actually simulated (> requested when extended)")
    max_requests: int = Field(description="the request budget of an extension")
    throughput_tokens_per_s_per_gpu: float = Field(description="window output tokens per second per GPU")
    cost_per_million_output_tokens_usd: float = Field(
        default=0.0, description="GPU-hours x price at the window's output rate, $ per million output tokens"
    )


# ---- statistics --------------------------------------------------------------------------------------
def mser5(series: np.ndarray, batch: int = 5) -> int:
    """Observations to drop as warm-up by MSER-5 (White 1997): the truncation minimising the marginal
    standard error of the remaining mean, searched over the first half of the batch means of 5."""
    x = np.asarray(series, dtype=float)
    m = x.size // batch
    if m < 4:
        return 0
    z = x[: m * batch].reshape(m, batch).mean(axis=1)
    z = z - z.mean()  # centred, so the running sums below do not cancel
    if np.ptp(z) <= 1e-12 * max(1.0, float(np.abs(x).max())):
        return 0  # a constant series has no warm-up
    tail_n = np.arange(m, 0, -1, dtype=float)  # batches left after dropping d = 0..m-1
    tail_sum = np.cumsum(z[::-1])[::-1]
    tail_sq = np.cumsum((z * z)[::-1])[::-1]
    ss = tail_sq - tail_sum**2 / tail_n  # sum of squared deviations of the tail
    half = m // 2
    mser = np.maximum(ss[: half + 1], 0.0) / tail_n[: half + 1] ** 2
    return int(np.flatnonzero(mser <= mser.min() * (1 + 1e-9))[0]) * batch  # the first of equal minima


@dataclass(frozen=True)
class Trend:
    """Least-squares slope of batch means against time, with its standard error and one-sided p-value."""

    slope: float
    se: float
    p_value: float


def trend(x: np.ndarray, y: np.ndarray) -> Trend:
    """Slope of ``y`` on ``x`` (already batch means, so roughly independent), its s.e. and P(slope <= 0)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    k = x.size
    if k < 3 or np.ptp(x) <= 0:
        return Trend(0.0, 0.0, 1.0)
    xc = x - x.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ (y - y.mean())) / sxx
    resid = y - y.mean() - slope * xc
    se = float(np.sqrt(max(resid @ resid, 0.0) / (k - 2) / sxx))
    if se <= 0:
        return Trend(slope, 0.0, 0.0 if slope > 0 else 1.0)
    return Trend(slope, se, float(stats.t.sf(slope / se, k - 2)))


def batch_means(values: np.ndarray, batches: int) -> np.ndarray:
    """Means of ``batches`` consecutive, near-equal batches of ``values``."""
    return np.array([b.mean() for b in np.array_split(np.asarray(values, float), batches)])


MIN_BATCHES = 5
"""Fewest batches a batch-means interval is built from (merging correlated batches stops here)."""


def independent_batch_means(values: np.ndarray, batches: int) -> np.ndarray:
    """Batch means of ``values``, merged pairwise while neighbouring means are correlated.

    A lag-1 autocorrelation of the batch means above 1.645 / sqrt(k) (the 95% point of its null
    distribution) says the batches are too short for the series' memory -- a heavily loaded system
    wanders for minutes -- so batches are doubled (down to MIN_BATCHES), as in Fishman's LBATCH rule.
    """
    v = np.asarray(values, float)
    k = batches
    while True:
        bm = batch_means(v, k)
        c = bm - bm.mean()
        denom = float(c @ c)
        r1 = float(c[:-1] @ c[1:]) / denom if denom > 0 else 0.0
        if k // 2 < MIN_BATCHES or r1 <= 1.645 / np.sqrt(k):
            return bm
        k //= 2


def mean_ci(values: np.ndarray, batches: int, confidence: float) -> Interval:
    """CI of the mean of ``values`` (arrival order) by batch means: mean +- t x s.d.(batch means) / sqrt(k),
    with correlated neighbouring batches merged first (:func:`independent_batch_means`)."""
    v = np.asarray(values, float)
    if v.size < 2 * batches:
        return Interval(low=float(v.min(initial=0.0)), high=float(v.max(initial=0.0)))
    bm = independent_batch_means(v, batches)
    k = bm.size
    half = float(stats.t.ppf(0.5 + confidence / 2, k - 1) * bm.std(ddof=1) / np.sqrt(k))
    return Interval(low=float(v.mean()) - half, high=float(v.mean()) + half)


def quantile_ci(values: np.ndarray, q: float, batches: int, confidence: float) -> Interval:
    """CI of the ``q``-th percentile of ``values`` (arrival order) by batch means of an indicator.

    The share of values at or below the estimate is a mean, so batch means give its standard error
    s despite autocorrelation; the interval is the empirical quantiles at p -+ t x s (never narrower
    than for independent values). Distribution-free, so it stays honest for skewed tails like p99.
    """
    v = np.asarray(values, float)
    if v.size < 2 * batches:
        return Interval(low=float(v.min(initial=0.0)), high=float(v.max(initial=0.0)))
    p = q / 100.0
    centre = np.percentile(v, q)
    bm = independent_batch_means((v <= centre).astype(float), batches)
    k = bm.size
    t = float(stats.t.ppf(0.5 + confidence / 2, k - 1))
    h = t * max(float(bm.std(ddof=1)) / np.sqrt(k), np.sqrt(p * (1 - p) / v.size))
    lo, hi = np.percentile(v, [100.0 * max(p - h, 0.0), 100.0 * min(p + h, 1.0)])
    return Interval(low=float(min(lo, centre)), high=float(max(hi, centre)))


def latency_ci(values: np.ndarray, batches: int, confidence: float) -> LatencyCI:
    """Intervals of the mean, p50, p90 and p99 of one latency (arrival order), seconds."""
    return LatencyCI(
        mean=mean_ci(values, batches, confidence),
        **{name: quantile_ci(values, q, batches, confidence) for name, q in QUANTILES.items()},
    )


def in_system_means(arrival: np.ndarray, done: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Time-average number of requests in the system (arrived, not finished) over each interval of ``edges``."""
    a, b = edges[:-1, None], edges[1:, None]

    def area(times: np.ndarray) -> np.ndarray:  # integral over [a, b] of #{times <= t}
        return np.clip(b - times[None, :], 0.0, b - a).sum(axis=1)

    return (area(arrival) - area(done)) / np.maximum((b - a)[:, 0], 1e-12)


# ---- analysis -------------------------------------------------------------------------------------------
MATERIAL_GROWTH = 0.5
"""A trend counts as overload when it adds at least this share of the series' mean over the window."""
MIN_REQUESTS_TO_TEST = 20
"""Below this many requests a run is reported as measured whole, untested for growth."""


@dataclass(frozen=True)
class Window:
    """Arrival-sorted requests ``lo:hi`` and the arrival times [start_s, end_s] a result is measured on."""

    lo: int
    hi: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyze` finds in one run: the window, the verdict, the growth trends and the intervals."""

    window: Window
    stable: bool
    verdict: str
    system: Trend  # requests in the system over time, requests/s
    ttft: Trend  # TTFT by arrival time, s per s
    ttft_ci: LatencyCI
    tpot_ci: LatencyCI
    e2e_ci: LatencyCI
    attainment_ci: Interval
    rel_half_width: float


def measurement_window(arrival: np.ndarray, done: np.ndarray, series: list[np.ndarray]) -> Window:
    """The window of arrival-sorted requests: after the warm-up, before the cool-down.

    The cool-down cut ends the window one p99 end-to-end latency before the last arrival, so nearly
    all its requests finished while arrivals still came (keeping at least half of the requests). The
    warm-up is the largest MSER-5 truncation of ``series`` (per-request, arrival order) before that cut.
    """
    n = arrival.size
    cut = arrival[-1] - float(np.percentile(done - arrival, 99))
    hi = min(n, max(int(np.searchsorted(arrival, cut, side="right")), n // 2, 2))
    lo = min(max(mser5(s[:hi]) for s in series), hi - 2)
    return Window(lo, hi, float(arrival[lo]), float(arrival[hi - 1]))


def _growth(t: Trend, span: float, mean: float, alpha: float) -> bool:
    """A significant (one-sided ``alpha``) and material (>= MATERIAL_GROWTH x mean over ``span``) rise."""
    return t.p_value < alpha and t.slope * span >= MATERIAL_GROWTH * max(mean, 1e-12)


def stability(
    arrival: np.ndarray, done: np.ndarray, ttft: np.ndarray, lo: int, batches: int, confidence: float
) -> tuple[bool, Trend, Trend, str]:
    """Trend tests from request ``lo`` to the last arrival: requests in the system over time, and TTFT by
    arrival. Overload when either grows significantly and materially; returns (stable, system, ttft, why)."""
    t0, t1 = float(arrival[lo]), float(arrival[-1])
    k = min(batches, (arrival.size - lo) // 5)
    flat = Trend(0.0, 0.0, 1.0)
    if t1 <= t0 or k < 3:
        return True, flat, flat, "too few requests after the warm-up to test for growth"
    edges = np.linspace(t0, t1, k + 1)
    system = in_system_means(arrival, done, edges)
    st = trend(0.5 * (edges[:-1] + edges[1:]), system)
    tt = trend(batch_means(arrival[lo:], k), batch_means(ttft[lo:], k))
    alpha, span = 1.0 - confidence, t1 - t0
    if _growth(st, span, float(system.mean()), alpha) or _growth(tt, span, float(ttft[lo:].mean()), alpha):
        why = (
            f"overload: requests in the system grow {st.slope:.3g}/s and TTFT {tt.slope:.3g} s/s "
            f"(one-sided p {min(st.p_value, tt.p_value):.2g})"
        )
        return False, st, tt, why
    return True, st, tt, "no significant growth of the requests in the system or of TTFT after the warm-up"


def rel_half_width(cis: list[tuple[LatencyCI, float, float, float]]) -> float:
    """Widest half-width of a p50/p90/p99 interval as a share of its estimate (``cis``: ci, p50, p90, p99)."""
    worst = 0.0
    for ci, *estimates in cis:
        for name, est in zip(QUANTILES, estimates, strict=True):
            iv: Interval = getattr(ci, name)
            if est > 0:
                worst = max(worst, (iv.high - iv.low) / 2.0 / est)
    return worst


def analyze(
    arrival: np.ndarray, done: np.ndarray, ttft: np.ndarray, tpot: np.ndarray, met: np.ndarray, spec: SteadyStateSpec
) -> Analysis:
    """Window, stability verdict and intervals of one run; arrays are per request, sorted by arrival
    (``tpot`` NaN for one-token answers, ``met`` whether a request met every SLO)."""
    n = arrival.size
    b, conf = spec.batches, spec.confidence
    if n < MIN_REQUESTS_TO_TEST:
        window = Window(0, n, float(arrival[0]), float(arrival[-1]))
        flat = Trend(0.0, 0.0, 1.0)
        stable, st, tt, why = True, flat, flat, f"{n} requests are too few to test for growth"
    else:
        in_system = np.arange(n) - np.searchsorted(np.sort(done), arrival, side="left")  # seen by each arrival
        fill = float(np.nanmean(tpot)) if np.isfinite(tpot).any() else 0.0
        window = measurement_window(arrival, done, [in_system, ttft, np.where(np.isnan(tpot), fill, tpot)])
        stable, st, tt, why = stability(arrival, done, ttft, window.lo, b, conf)
    sl = slice(window.lo, window.hi)
    tp = tpot[sl][~np.isnan(tpot[sl])]
    cis = [latency_ci(ttft[sl], b, conf), latency_ci(tp, b, conf), latency_ci(done[sl] - arrival[sl], b, conf)]
    samples = [ttft[sl], tp, done[sl] - arrival[sl]]
    widths = [
        (ci, *(np.percentile(v, list(QUANTILES.values())) if v.size else (0.0, 0.0, 0.0)))
        for ci, v in zip(cis, samples, strict=True)
    ]
    return Analysis(
        window=window,
        stable=stable,
        verdict=why,
        system=st,
        ttft=tt,
        ttft_ci=cis[0],
        tpot_ci=cis[1],
        e2e_ci=cis[2],
        attainment_ci=_clip01(mean_ci(met[sl].astype(float), b, conf)),
        rel_half_width=rel_half_width(widths),
    )


def _clip01(iv: Interval) -> Interval:
    return Interval(low=max(0.0, iv.low), high=min(1.0, iv.high))
