"""Synchronous-step variability: a step ends when the slowest rank ends.

clustersim simulates one representative pipeline, so the ranks it stands for are identical. Real ranks
are not: every GPU runs at its own speed (manufacturing and power-management variation, persistent over a
run) and every stretch of work between two synchronisations varies a little (kernel-time and host noise,
transient). Where ranks synchronise, everyone waits for the slowest, so the expected cost is an *order
statistic*: the expected maximum of ``n`` draws. This module computes those expectations (no sampling)
and the goodput of a long run under failures and checkpoints.

Where ranks wait for each other in a training step, and what this model charges there:

* **persistent GPU speed** (``gpu_speed_cv``): a tensor-parallel group waits for its slowest member at
  every layer, a pipeline runs at its slowest stage and the gradient sync waits for the slowest replica,
  so the whole job runs at the speed of its slowest GPU: compute is stretched by
  ``1 + cv * E[max of N standard normals]`` over the job's N GPUs (``N = 1``: no stretch).
* **transient jitter** (``sync_jitter_cv``): the compute between two collectives of a TP (or CP/EP) group
  varies independently per rank and segment; each segment costs the expected maximum over the group:
  compute is stretched by ``1 + cv * E[max of g]`` for the group size ``g``. At the gradient sync the
  replicas' accumulated noise (relative spread ``cv / sqrt(segments)``) adds ``E[max of dp]`` of it.
* **a slow node** (``slow_nodes``, ``slow_node_factor``): its GPUs run that much slower; the job runs
  at the slower of it and the persistent spread.
* **host pauses** (``gc_pause_s``, ``gc_interval_steps``): Python's automatic garbage collector stops a
  rank's host thread for a full collection now and then; no new kernels start meanwhile, so the ranks
  coupled to it (its tensor- and pipeline-parallel peers, every micro-batch) wait too. Within a replica
  the pauses of its ranks add up; at the gradient sync the job waits for the replica that paused most:
  the expected maximum of ``dp`` Poisson counts (:func:`gc_stall_s`). Frameworks that collect on every
  rank at the same step (``gc_aligned`` stacks: torchtitan's ``gc_freq``, Megatron's ``--manual-gc``,
  NeMo's ``gc_interval``) pay one pause per interval instead.

Sources for the defaults: :data:`GPU_SPEED_CV` (Sinha et al., SC'22), :data:`MTBF_GPU_HOURS` and
:data:`CHECKPOINT_WRITE_GBPS_PER_NODE` (Llama 3, arXiv 2407.21783, sec. 3.3.4 and 3.3.1), :data:`GC_PAUSE_S`
(Lin et al., OSDI'25); :data:`SYNC_JITTER_CV`, :data:`RESTART_S` and :data:`GC_INTERVAL_STEPS` are estimates
(see their comments; docs/research/stragglers-at-scale.md).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy import integrate, stats

__all__ = [
    "CHECKPOINT_WRITE_GBPS_PER_NODE",
    "GC_INTERVAL_STEPS",
    "GC_PAUSE_S",
    "GPU_SPEED_CV",
    "MTBF_GPU_HOURS",
    "RESTART_S",
    "SYNC_JITTER_CV",
    "Goodput",
    "VariabilitySpec",
    "expected_max_normal",
    "expected_max_poisson",
    "gc_stall_s",
    "goodput",
    "Stretch",
    "monte_carlo_max",
    "replica_wait_s",
    "slowest_factor",
    "step_stretch",
]

#: Persistent GPU-to-GPU speed spread (coefficient of variation) of identical GPUs in one cluster. Sinha et
#: al., "Not All GPUs Are Created Equal", SC'22 (arXiv 2208.11035): "8% (max 22%) average performance
#: variation" across the GPUs of each of five clusters, with outliers up to 1.5x slower than the median.
#: Read as the span of the non-outlier GPUs (Tukey whiskers, about +-2.7 sigma of a normal over thousands of
#: GPUs): sigma = 8% / 5.4 ~= 1.5%. Production runs screen out the 1.5x outliers (Llama 3 sec. 3.3.4 and
#: MegaScale, arXiv 2402.15627, detect and evict stragglers), so no outlier tail is modelled here; a slow
#: node that stays in the job is the ``slow_nodes`` option.
GPU_SPEED_CV = 0.015

#: Transient spread of the compute between two synchronisations of a group (kernel-time and host noise).
#: An ESTIMATE (1%): no published per-segment figure was found; ``clustersim calibrate`` records the
#: inter-quartile range of every repeated kernel (calibration/report.py), which measures it on a given box.
SYNC_JITTER_CV = 0.01

#: GPU-hours between unexpected job interruptions, per GPU. Llama 3 (arXiv 2407.21783, sec. 3.3.4, Table 5):
#: 419 unexpected interruptions in a 54-day snapshot on 16,384 H100: 54 x 24 x 16,384 / 419 = 50,676.
MTBF_GPU_HOURS = 54 * 24 * 16384 / 419

#: Checkpoint write bandwidth per node, GB/s. Llama 3 (sec. 3.3.1): Tectonic "supports 2 TB/s of sustainable
#: throughput" for the 16K-GPU (2,048-node) job: ~1 GB/s per node.
CHECKPOINT_WRITE_GBPS_PER_NODE = 2000.0 / 2048.0

#: Seconds from an interruption to training again (detect, reschedule, load the checkpoint, warm up). An
#: ESTIMATE (10 min); Llama 3 reports "higher than 90% effective training time" with automated recovery,
#: which this default, its MTBF and a Young-optimal checkpoint interval reproduce for 405B on 16K GPUs.
RESTART_S = 600.0

#: Seconds one full automatic garbage collection holds up a rank's host thread (and so the GPU once its
#: queue of launched kernels drains). Lin et al., "Understanding Stragglers in Large Model Training Using
#: What-if Analysis" (OSDI'25, arXiv 2505.05713, sec. 5): "Once triggered, GC can take 100s of
#: milliseconds, and during this period the user program is paused and new kernels cannot be started";
#: the low end is taken (pauses also grow as a run goes on, which this does not model).
GC_PAUSE_S = 0.1

#: Training steps between one rank's full automatic collections. An ESTIMATE (no source measures it), kept
#: consistent with the two published gains from collecting on all ranks at once: torchtitan PR #148 ("~1.5% per
#: iter" on 512-GPU FSDP, where every rank's pause stalls all: 512 / 1000 x 0.1 s is 1.5% of a 3.4 s step; the
#: PR gives no step time) and Lin et al. (+12.6% on a 128-DP-rank job collecting on all ranks every 500 steps,
#: so the automatic collections came more often than that on some rank of each step). Megatron launch scripts
#: set manual intervals of 10-1,000 steps.
GC_INTERVAL_STEPS = 1000.0


class VariabilitySpec(BaseModel):
    """What makes real ranks differ, and how often a run fails (the ``variability:`` config section)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    gpu_speed_cv: float = Field(
        default=GPU_SPEED_CV, ge=0, le=0.2, description="persistent GPU-to-GPU speed spread (coefficient of variation)"
    )
    sync_jitter_cv: float = Field(
        default=SYNC_JITTER_CV,
        ge=0,
        le=0.2,
        description="transient spread of the compute between two synchronisations of a group",
    )
    slow_nodes: int = Field(default=0, ge=0, description="nodes that run slower than the rest (stragglers)")
    slow_node_factor: float = Field(default=1.0, ge=1.0, le=10.0, description="how much slower a slow node runs")
    degraded_link_factor: float = Field(
        default=1.0, gt=0, le=1.0, description="bandwidth fraction left on one degraded NIC/link of the job"
    )
    mtbf_gpu_hours: float = Field(default=MTBF_GPU_HOURS, gt=0, description="GPU-hours between interruptions")
    restart_s: float = Field(default=RESTART_S, ge=0, description="seconds lost to each restart (besides lost work)")
    checkpoint_interval_s: float | None = Field(
        default=None, gt=0, description="seconds of training between checkpoints; default: Young's optimum"
    )
    checkpoint_write_gbps_per_node: float = Field(
        default=CHECKPOINT_WRITE_GBPS_PER_NODE, gt=0, description="checkpoint write bandwidth per node, GB/s"
    )
    async_checkpoint: bool = Field(
        default=False, description="copy to host and write in the background: only the device-to-host copy stalls"
    )
    gc_pause_s: float = Field(
        default=GC_PAUSE_S, ge=0, le=60, description="seconds a full automatic garbage collection stops a rank's host"
    )
    gc_interval_steps: float = Field(
        default=GC_INTERVAL_STEPS, ge=1, le=1e9, description="training steps between one rank's full collections"
    )


@lru_cache(maxsize=4096)
def expected_max_normal(n: int) -> float:
    """E[max of ``n`` i.i.d. standard normals] (0 for n = 1), by quadrature of n x phi(x) Phi(x)^(n-1)."""
    if n < 1:
        raise ValueError(f"need n >= 1 draws, got {n}")
    if n == 1:
        return 0.0

    def density(x: float) -> float:
        return x * n * math.exp(stats.norm.logpdf(x) + (n - 1) * stats.norm.logcdf(x))

    lo, hi = -8.0, 9.0
    peak = float(stats.norm.ppf(1.0 - 1.0 / (n + 1)))  # the maximum's mode sits near here
    value = sum(integrate.quad(density, a, b, limit=200)[0] for a, b in ((lo, peak), (peak, hi)))
    return float(value)


def slowest_factor(n: int, cv: float) -> float:
    """Expected slowest of ``n`` ranks whose times are 1 + cv Z (Z standard normal): 1 + cv E[max]."""
    return 1.0 + cv * expected_max_normal(max(1, int(n)))


def monte_carlo_max(n: int, cv: float, trials: int, seed: int = 0) -> float:
    """Brute-force check of :func:`slowest_factor`: the mean over ``trials`` of the max of ``n`` draws."""
    rng = np.random.default_rng(seed)
    total, left = 0.0, trials
    chunk = max(1, 4_000_000 // max(n, 1))
    while left > 0:
        k = min(chunk, left)
        total += float((1.0 + cv * rng.standard_normal((k, n))).max(axis=1).sum())
        left -= k
    return total / trials


class Goodput(BaseModel):
    """Useful share of wall time for a long run under failures and checkpoints (Young/Daly, first order)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fraction: float = Field(description="useful training time / wall time, 0-1")
    job_mtbf_h: float = Field(description="hours between interruptions of the whole job")
    checkpoint_s: float = Field(description="seconds the training stalls for each checkpoint")
    checkpoint_interval_s: float = Field(description="seconds of training between checkpoints")
    lost_to_checkpoints: float = Field(description="share of wall time spent writing checkpoints")
    lost_to_failures: float = Field(description="share of wall time lost to restarts and recomputed work")


def goodput(spec: VariabilitySpec, num_gpus: int, num_nodes: int, checkpoint_bytes: float, d2h_s: float) -> Goodput:
    """Goodput of a run on ``num_gpus`` GPUs whose checkpoint holds ``checkpoint_bytes`` (all ranks together).

    A checkpoint stalls training for the write (``checkpoint_bytes`` over every node's write bandwidth), or
    only for the device-to-host copy ``d2h_s`` when asynchronous. Each failure loses the restart time plus,
    on average, half a checkpoint interval of work. Interval default: Young's optimum sqrt(2 x stall x MTBF).
    """
    mtbf_s = spec.mtbf_gpu_hours * 3600.0 / max(1, num_gpus)
    write_s = checkpoint_bytes / (num_nodes * spec.checkpoint_write_gbps_per_node * 1e9)
    stall = d2h_s if spec.async_checkpoint else write_s
    interval = spec.checkpoint_interval_s or max(1.0, math.sqrt(2.0 * max(stall, 1e-6) * mtbf_s))
    period = interval + stall
    ckpt = stall / period
    fail = min(1.0, (spec.restart_s + period / 2.0) / mtbf_s)
    fraction = max(0.0, (1.0 - ckpt) * (1.0 - fail))
    return Goodput(
        fraction=fraction,
        job_mtbf_h=mtbf_s / 3600.0,
        checkpoint_s=stall,
        checkpoint_interval_s=interval,
        lost_to_checkpoints=ckpt,
        lost_to_failures=fail * (1.0 - ckpt),
    )


class Stretch(BaseModel):
    """How much synchronisation stretches a step's compute, and the replicas' wait at the gradient sync."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu: float = Field(description="slowest GPU of the job (persistent spread, slow nodes): compute x this")
    jitter: float = Field(description="expected slowest rank of each in-layer synchronising group: compute x this")
    layer_group: int = Field(description="ranks that synchronise inside a layer (tp x max(cp, ep))")
    dp_replicas: int = Field(description="replicas that meet at the gradient sync")

    @property
    def compute(self) -> float:
        """Total stretch of compute time."""
        return self.gpu * self.jitter


def step_stretch(spec: VariabilitySpec, *, num_gpus: int, tp: int, cp: int, ep: int, pp: int, dp: int) -> Stretch:
    """The compute stretch of a step on ``num_gpus`` GPUs whose layers synchronise ``tp x max(cp, ep)`` ranks.

    Without an in-layer group (tp = cp = ep = 1) a pipeline still couples each stage to its neighbour per
    micro-batch (a receive waits for the send): pairs of ranks, E[max of 2].
    """
    gpu = slowest_factor(num_gpus, spec.gpu_speed_cv)
    if spec.slow_nodes > 0:
        gpu = max(gpu, spec.slow_node_factor)
    group = min(num_gpus, tp * max(cp, ep))
    sync = group if group > 1 else (2 if pp > 1 else 1)
    return Stretch(
        gpu=gpu, jitter=slowest_factor(sync, spec.sync_jitter_cv), layer_group=group, dp_replicas=max(1, dp * cp)
    )


@lru_cache(maxsize=4096)
def expected_max_poisson(mean: float, n: int) -> float:
    """E[max of ``n`` i.i.d. Poisson(``mean``) counts]: the sum over k >= 0 of P(max > k) = 1 - F(k)^n."""
    if n < 1 or mean < 0:
        raise ValueError(f"need n >= 1 draws and mean >= 0, got n={n}, mean={mean}")
    if mean == 0:
        return 0.0
    if n == 1:
        return float(mean)
    # below mean - 10 sd every count is (to 1e-12) exceeded by the maximum: start the sum there
    k = max(0, int(mean - 10.0 * math.sqrt(mean)))
    total = float(k)
    while True:
        tail = -math.expm1(n * float(stats.poisson.logcdf(k, mean)))  # P(max > k), accurate when tiny
        if tail < 1e-12 and k > mean:
            return total
        total += tail
        k += 1


def gc_stall_s(
    spec: VariabilitySpec, *, num_gpus: int, tp: int, pp: int, cp: int, ep: int, zero: int, aligned: bool
) -> float:
    """Expected seconds per step a job on ``num_gpus`` GPUs stalls on host garbage-collection pauses.

    The ranks that wait for each other within a step (tensor, context, expert and pipeline peers; with ZeRO-3
    the whole job, whose parameter gathers couple every layer) form a replica. Unaligned, each rank pauses
    ``gc_pause_s`` once every ``gc_interval_steps`` steps at its own time, a replica's pauses add up, and the
    job waits for the replica that paused most: the expected maximum of the replicas' Poisson counts.
    ``aligned``: every rank collects at the same step, one pause per interval for the whole job."""
    if spec.gc_pause_s <= 0:
        return 0.0
    if aligned:
        return spec.gc_pause_s / spec.gc_interval_steps
    coupled = num_gpus if zero == 3 else max(1, min(num_gpus, pp * tp * cp * ep))
    mean = coupled / spec.gc_interval_steps
    return spec.gc_pause_s * expected_max_poisson(mean, max(1, num_gpus // coupled))


def replica_wait_s(spec: VariabilitySpec, busy_s: float, segments: int, replicas: int) -> float:
    """Expected wait at the gradient sync for the slowest of ``replicas`` whose ``busy_s`` of compute is the sum
    of ``segments`` independent stretches (relative spread ``cv / sqrt(segments)``)."""
    if replicas <= 1 or busy_s <= 0:
        return 0.0
    return busy_s * spec.sync_jitter_cv / math.sqrt(max(1, segments)) * expected_max_normal(replicas)
