"""ServingResult: latency percentiles, throughput, goodput, KV use, and the per-request table.

Latency percentiles, throughput, goodput and SLO attainment are measured over the steady-state window
that :mod:`simulator.serving.steady` finds (warm-up and cool-down removed); counts, duration, energy
and cost stay whole-run.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from simulator.core.timeline import Timeline
from simulator.serving.steady import Analysis, SteadyState, SteadyStateSpec, analyze


class Percentiles(BaseModel):
    """mean / p50 / p90 / p99 of a latency, seconds."""

    model_config = ConfigDict(frozen=True)
    mean: float
    p50: float
    p90: float
    p99: float


def percentiles(values: np.ndarray) -> Percentiles:
    """Mean, p50, p90 and p99 of ``values`` (seconds); all zero for an empty array."""
    if values.size == 0:
        return Percentiles(mean=0.0, p50=0.0, p90=0.0, p99=0.0)
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return Percentiles(mean=float(values.mean()), p50=float(p50), p90=float(p90), p99=float(p99))


class ServingResult(BaseModel):
    """What a serving simulation tells the user."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    model: str
    gpu: str
    num_gpus: int
    profile: str
    policy: str
    completed_requests: int = Field(description="requests simulated (whole run)")
    output_tokens: int = Field(default=0, description="whole run: output tokens generated")
    duration_s: float = Field(description="whole run: first arrival to last completion, s")
    throughput_requests_per_s: float = Field(description="measurement window: requests completed per second")
    throughput_tokens_per_s: float = Field(description="measurement window: output tokens completed per second")
    throughput_tokens_per_s_per_gpu: float = Field(default=0.0, description="throughput_tokens_per_s per GPU")
    goodput_requests_per_s: float = Field(
        description="measurement window: requests per second completed in it that met every SLO (DistServe)"
    )
    slo_attainment: float = Field(description="measurement window: share of its requests meeting every SLO")
    ttft_s: Percentiles = Field(description="measurement window: time to first token, s")
    tpot_s: Percentiles = Field(description="measurement window: time per output token after the first, s")
    e2e_s: Percentiles = Field(description="measurement window: arrival to last token, s")
    queue_s: Percentiles = Field(description="measurement window: arrival to first scheduling, s")
    steady: SteadyState | None = Field(
        default=None, description="stability verdict, measurement window and confidence intervals"
    )
    preemptions: int
    kv_peak_utilization: float
    kv_blocks_per_replica: int
    kv_memory_gb: dict[str, float]
    prefix_hit_rate: float
    mean_batch_size: float
    max_admitted: int = Field(description="most requests one replica held at once, swapped-out ones included")
    batch_size_histogram: dict[str, int]
    gpu_busy_fraction: float
    iterations: int
    energy_j: dict[str, float] = Field(default_factory=dict, description="whole run: gpu, node, facility (x PUE), J")
    energy_per_token_j: float = Field(default=0.0, description="facility energy per output token, J")
    kgco2e: dict[str, float] = Field(default_factory=dict, description="whole run: operational, embodied, kgCO2e")
    cost_usd: float = Field(default=0.0, description="whole run: GPU-hours x $/GPU-hour")
    cost_per_million_output_tokens_usd: float = Field(
        default=0.0, description="whole run (drain included); steady.cost_per_million_output_tokens_usd is the window's"
    )
    power: dict[str, Any] = Field(default_factory=dict, description="mode, avg_gpu_power_w, limit, sm_clock_mhz")
    timeline: Timeline | None = Field(default=None, exclude=True, repr=False)
    # per-request columns and the engine's iteration log (arrays, not a Python object per row: a run can have
    # millions of iterations)
    _requests: dict[str, np.ndarray] = PrivateAttr(default_factory=dict)
    _iterations: Any = PrivateAttr(default=None)

    @property
    def requests(self) -> Any:
        """Per-request table (pandas DataFrame): arrival, lengths, TTFT, TPOT, e2e, queueing, replica."""
        import pandas as pd

        return pd.DataFrame(self._requests, columns=list(REQUEST_COLUMNS) if self._requests else None)

    @property
    def requests_table(self) -> list[dict[str, Any]]:
        """The per-request table as one dict per request (see :attr:`requests`)."""
        cols = {k: v.tolist() for k, v in self._requests.items()}
        return [dict(zip(cols, row, strict=True)) for row in zip(*cols.values(), strict=True)]

    @property
    def kv_occupancy(self) -> list[tuple[float, int, float]]:
        """(time_s, replica, used fraction) at the end of every iteration."""
        occ = self._kv_columns()
        return list(zip(*(occ[k].tolist() for k in KV_OCCUPANCY_COLUMNS), strict=True))

    def kv_occupancy_frame(self) -> Any:
        """KV occupancy over time per replica (time_s, replica, used fraction)."""
        import pandas as pd

        return pd.DataFrame(self._kv_columns(), columns=list(KV_OCCUPANCY_COLUMNS))

    def _kv_columns(self) -> dict[str, np.ndarray]:
        recs = self._iterations
        if recs is None:
            return {k: np.array([]) for k in KV_OCCUPANCY_COLUMNS}
        return {
            "time_s": recs.column("end"),
            "replica": recs.column("replica").astype(np.int64),
            "kv_used_fraction": recs.column("kv_used") / recs.column("kv_total"),
        }

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (the per-request table, KV occupancy and timeline left out)."""
        return json.loads(self.model_dump_json())


def build_result(
    cfg: Any,
    engine: Any,
    seqs: list,
    memory: dict[str, float],
    profile_kind: str,
    energy: dict[str, Any],
    *,
    requested: int | None = None,
) -> ServingResult:
    """Reduce the engine's per-request and per-iteration records to a :class:`ServingResult`.

    Latency, throughput and goodput figures come from the steady-state window; ``requested`` is the
    request count the user asked for when the run was extended beyond it.
    """
    n = len(seqs)
    arrival = np.fromiter((s.req.arrival_s for s in seqs), float, n)
    first = np.fromiter((s.first_token_s for s in seqs), float, n)
    done = np.fromiter((s.done_s for s in seqs), float, n)
    out = np.fromiter((s.req.output_tokens for s in seqs), np.int64, n)
    start = np.fromiter((s.start_s if s.start_s is not None else s.first_token_s for s in seqs), float, n)
    ttft, e2e = first - arrival, done - arrival
    multi = out > 1
    tpot = np.where(multi, (done - first) / np.maximum(out - 1, 1), np.nan)
    span = float(done.max() - arrival.min()) or 1e-12
    met = (ttft <= cfg.slo.ttft_s) & (np.nan_to_num(tpot, nan=0.0) <= cfg.slo.tpot_s)
    order = np.argsort(arrival, kind="stable")
    an = analyze(arrival[order], done[order], ttft[order], tpot[order], met[order], cfg.steady_state)
    win = np.zeros(len(seqs), dtype=bool)
    win[order[an.window.lo : an.window.hi]] = True
    t0, t1 = an.window.start_s, an.window.end_s
    if not win.all() and t1 > t0:
        finished = (done >= t0) & (done <= t1)  # completions inside the window's time span
        w_span = t1 - t0
    else:  # too short to cut: the whole run, drain included
        finished, w_span = np.ones(len(seqs), dtype=bool), span
    tokens_per_s = float(out[finished].sum()) / w_span
    recs = engine.records
    decodes = recs.column("decodes")
    batch = decodes[decodes > 0]
    kv = [rep.kv for rep in engine.replicas]
    lookups = sum(k.lookups_tokens for k in kv)
    usd_per_gpu_s = float(energy.get("cost_usd", 0.0)) / (cfg.num_gpus * span)
    steady = _steady(an, cfg.steady_state, arrival.min(), requested or len(seqs), len(seqs))
    steady = steady.model_copy(
        update={
            "throughput_tokens_per_s_per_gpu": tokens_per_s / cfg.num_gpus,
            "cost_per_million_output_tokens_usd": usd_per_gpu_s * cfg.num_gpus / max(tokens_per_s, 1e-12) * 1e6,
        }
    )
    result = ServingResult(
        model=cfg.model.name,
        gpu=cfg.gpu,
        num_gpus=cfg.num_gpus,
        profile=profile_kind,
        policy=cfg.batching.kind,
        completed_requests=len(seqs),
        output_tokens=int(out.sum()),
        duration_s=span,
        throughput_requests_per_s=float(finished.sum()) / w_span,
        throughput_tokens_per_s=tokens_per_s,
        throughput_tokens_per_s_per_gpu=tokens_per_s / cfg.num_gpus,
        goodput_requests_per_s=float((finished & met).sum()) / w_span,
        slo_attainment=float(met[win].mean()),
        ttft_s=percentiles(ttft[win]),
        tpot_s=percentiles(tpot[win & multi]),
        e2e_s=percentiles(e2e[win]),
        queue_s=percentiles(np.maximum(start - arrival, 0.0)[win]),
        steady=steady,
        preemptions=engine.preemptions,
        kv_peak_utilization=max(k.peak_used / k.gpu_blocks for k in kv),
        kv_blocks_per_replica=kv[0].gpu_blocks,
        kv_memory_gb=memory,
        prefix_hit_rate=(sum(k.hits_tokens for k in kv) / lookups) if lookups else 0.0,
        mean_batch_size=float(batch.mean()) if batch.size else 0.0,
        max_admitted=engine.max_admitted,
        batch_size_histogram=_batch_histogram(batch),
        gpu_busy_fraction=float(np.mean([rep.busy_s for rep in engine.replicas]) / span),
        iterations=len(recs),
        timeline=IterationTimeline(recs),
        **energy,
    )
    result._requests = _request_columns(seqs, arrival, out, ttft, tpot, e2e, start - arrival, met, win)
    result._iterations = recs
    return result


def _steady(an: Analysis, spec: SteadyStateSpec, origin: float, requested: int, simulated: int) -> SteadyState:
    """The result's steady-state section from an :class:`Analysis` (times from the first arrival)."""
    w = an.window
    return SteadyState(
        stable=an.stable,
        verdict=an.verdict,
        queue_growth_per_s=an.system.slope,
        queue_growth_se=an.system.se,
        ttft_growth_s_per_s=an.ttft.slope,
        ttft_growth_se=an.ttft.se,
        warmup_s=w.start_s - origin,
        warmup_requests=w.lo,
        window_start_s=w.start_s - origin,
        window_end_s=w.end_s - origin,
        window_requests=w.hi - w.lo,
        confidence=spec.confidence,
        ttft_ci_s=an.ttft_ci,
        tpot_ci_s=an.tpot_ci,
        e2e_ci_s=an.e2e_ci,
        slo_attainment_ci=an.attainment_ci,
        rel_half_width=an.rel_half_width,
        target_rel_half_width=spec.target_rel_half_width,
        precision_reached=an.rel_half_width <= spec.target_rel_half_width,
        requested_requests=requested,
        extended_to_requests=simulated,
        max_requests=max(spec.max_requests, requested),
        throughput_tokens_per_s_per_gpu=0.0,
    )


#: Decode batch-size buckets of the histogram, inclusive; 10**9 stands for "and above".
_BATCH_BUCKETS = [(1, 1), (2, 4), (5, 8), (9, 16), (17, 32), (33, 64), (65, 128), (129, 256), (257, 10**9)]


def _batch_histogram(batch: np.ndarray) -> dict[str, int]:
    """Iterations per decode batch-size bucket ("1-1", "2-4", ..., "257+"), empty buckets left out."""
    hist: dict[str, int] = {}
    for lo, hi in _BATCH_BUCKETS:
        n = int(((batch >= lo) & (batch <= hi)).sum()) if batch.size else 0
        if n:
            hist[f"{lo}-{hi}" if hi < 10**9 else f"{lo}+"] = n
    return hist


#: Columns of :meth:`ServingResult.kv_occupancy_frame`.
KV_OCCUPANCY_COLUMNS = ("time_s", "replica", "kv_used_fraction")

#: Columns of the per-request table, in order.
REQUEST_COLUMNS = (
    "id",
    "arrival_s",
    "prompt_tokens",
    "output_tokens",
    "kv_prompt_tokens",
    "session",
    "turn",
    "replica",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "queue_s",
    "preemptions",
    "cached_tokens",
    "met_slo",
    "in_window",
)


def _request_columns(
    seqs: list,
    arrival: np.ndarray,
    out: np.ndarray,
    ttft: np.ndarray,
    tpot: np.ndarray,
    e2e: np.ndarray,
    queue: np.ndarray,
    met: np.ndarray,
    window: np.ndarray,
) -> dict[str, np.ndarray]:
    """The per-request table's columns: lengths, replica, latencies (s), preemptions, cached tokens, SLO verdict
    and whether the request lies in the steady-state measurement window."""
    n = len(seqs)

    def ints(get: Any) -> np.ndarray:
        return np.fromiter(map(get, seqs), np.int64, n)

    cols = {
        "id": ints(lambda s: s.req.id),
        "arrival_s": arrival,
        "prompt_tokens": ints(lambda s: s.req.prompt_tokens),
        "output_tokens": out,
        "kv_prompt_tokens": ints(lambda s: s.prompt),
        "session": ints(lambda s: s.req.session),
        "turn": ints(lambda s: s.req.turn),
        "replica": ints(lambda s: s.replica),
        "ttft_s": ttft,
        "tpot_s": tpot,
        "e2e_s": e2e,
        "queue_s": queue,
        "preemptions": ints(lambda s: s.preemptions),
        "cached_tokens": ints(lambda s: s.cached_tokens),
        "met_slo": met,
        "in_window": window,
    }
    return {k: cols[k] for k in REQUEST_COLUMNS}


class IterationTimeline(Timeline):
    """The engine's iterations as a :class:`Timeline` whose events are built on first use (a long run has
    millions of iterations; most callers only want the metrics)."""

    def __init__(self, records: Any) -> None:
        object.__setattr__(self, "_records", records)

    @cached_property
    def events(self) -> tuple[tuple, ...]:  # type: ignore[override]
        """The iterations' events (see :func:`_iteration_events`)."""
        return _iteration_events(self._records)

    def __len__(self) -> int:
        return len(self._records)


def _iteration_events(recs: list) -> tuple[tuple, ...]:
    """Timeline events of the engine's iterations: one compute interval per iteration, named by its token mix."""
    return tuple(
        (
            r.start,
            r.end,
            r.replica,
            "compute",
            f"iter p{r.prefill_tokens} d{r.decodes}",
            "prefill"
            if r.prefill_tokens and not r.decodes
            else ("decode" if r.decodes and not r.prefill_tokens else "mixed"),
            -1,
            0,
        )
        for r in recs
    )
