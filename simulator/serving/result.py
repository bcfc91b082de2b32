"""ServingResult: latency percentiles, throughput, goodput, KV use, and the per-request table."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from simulator.core.timeline import Timeline


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
    completed_requests: int
    duration_s: float = Field(description="first arrival to last completion")
    throughput_requests_per_s: float
    throughput_tokens_per_s: float = Field(description="output tokens per second")
    goodput_requests_per_s: float = Field(description="requests per second that met both SLO limits")
    slo_attainment: float
    ttft_s: Percentiles
    tpot_s: Percentiles
    e2e_s: Percentiles
    queue_s: Percentiles
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
    cost_per_million_output_tokens_usd: float = 0.0
    power: dict[str, Any] = Field(default_factory=dict, description="mode, avg_gpu_power_w, limit, sm_clock_mhz")
    requests_table: list[dict[str, Any]] = Field(default_factory=list, exclude=True, repr=False)
    kv_occupancy: list[tuple[float, int, float]] = Field(default_factory=list, exclude=True, repr=False)
    timeline: Timeline | None = Field(default=None, exclude=True, repr=False)

    @property
    def requests(self) -> Any:
        """Per-request table (pandas DataFrame): arrival, lengths, TTFT, TPOT, e2e, queueing, replica."""
        import pandas as pd

        return pd.DataFrame(self.requests_table)

    def kv_occupancy_frame(self) -> Any:
        """KV occupancy over time per replica (time_s, replica, used fraction)."""
        import pandas as pd

        return pd.DataFrame(self.kv_occupancy, columns=["time_s", "replica", "kv_used_fraction"])

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (the per-request table, KV occupancy and timeline left out)."""
        return json.loads(self.model_dump_json())


def build_result(
    cfg: Any, engine: Any, seqs: list, memory: dict[str, float], profile_kind: str, energy: dict[str, Any]
) -> ServingResult:
    """Reduce the engine's per-request and per-iteration records to a :class:`ServingResult`."""
    arrival = np.array([s.req.arrival_s for s in seqs])
    first = np.array([s.first_token_s for s in seqs])
    done = np.array([s.done_s for s in seqs])
    out = np.array([s.req.output_tokens for s in seqs])
    start = np.array([s.start_s if s.start_s is not None else s.first_token_s for s in seqs])
    ttft, e2e = first - arrival, done - arrival
    multi = out > 1
    tpot = np.where(multi, (done - first) / np.maximum(out - 1, 1), np.nan)
    span = float(done.max() - arrival.min()) or 1e-12
    met = (ttft <= cfg.slo.ttft_s) & (np.nan_to_num(tpot, nan=0.0) <= cfg.slo.tpot_s)
    recs = engine.records
    batch = np.array([r.decodes for r in recs if r.decodes]) if recs else np.array([])
    kv = [rep.kv for rep in engine.replicas]
    lookups = sum(k.lookups_tokens for k in kv)
    return ServingResult(
        model=cfg.model.name,
        gpu=cfg.gpu,
        num_gpus=cfg.num_gpus,
        profile=profile_kind,
        policy=cfg.batching.kind,
        completed_requests=len(seqs),
        duration_s=span,
        throughput_requests_per_s=len(seqs) / span,
        throughput_tokens_per_s=float(out.sum()) / span,
        goodput_requests_per_s=float(met.sum()) / span,
        slo_attainment=float(met.mean()),
        ttft_s=percentiles(ttft),
        tpot_s=percentiles(tpot[multi]),
        e2e_s=percentiles(e2e),
        queue_s=percentiles(np.maximum(start - arrival, 0.0)),
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
        requests_table=_request_table(seqs, ttft, tpot, e2e, start - arrival, met),
        kv_occupancy=[(r.end, r.replica, r.kv_used / r.kv_total) for r in recs],
        timeline=Timeline(_iteration_events(recs)),
        **energy,
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


def _request_table(
    seqs: list, ttft: np.ndarray, tpot: np.ndarray, e2e: np.ndarray, queue: np.ndarray, met: np.ndarray
) -> list[dict[str, Any]]:
    """One row per request: its lengths, replica, latencies (s), preemptions, cached tokens and SLO verdict."""
    return [
        {
            "id": s.req.id,
            "arrival_s": s.req.arrival_s,
            "prompt_tokens": s.req.prompt_tokens,
            "output_tokens": s.req.output_tokens,
            "kv_prompt_tokens": s.prompt,
            "session": s.req.session,
            "turn": s.req.turn,
            "replica": s.replica,
            "ttft_s": float(t),
            "tpot_s": float(p),
            "e2e_s": float(e),
            "queue_s": float(q),
            "preemptions": s.preemptions,
            "cached_tokens": s.cached_tokens,
            "met_slo": bool(ok),
        }
        for s, t, p, e, q, ok in zip(seqs, ttft, tpot, e2e, queue, met, strict=True)
    ]


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
