"""simulate_training: config -> chunk costs -> pipeline engine -> gradient sync -> metrics.

Only one pipeline is simulated (DP replicas are symmetric); after its forward/backward phase each
rank reduces its gradients over the DP group bucket by bucket (overlapped with the last backward
when ``training.overlap_grad_reduce``), steps the optimizer and, with ZeRO-1/2, gathers the
updated parameters. The step ends when the slowest rank is done.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from hwmodels.catalogue import get_gpu, get_link
from hwmodels.errors import ClusterSimError
from hwmodels.profile import Profile, load_profile
from simulator.compression import collective_for, compression_compute_s, dp_comm_time
from simulator.core.config import RunConfig, load_config
from simulator.core.contention import nic_sharing_factor, overlap_interference_s
from simulator.core.costs import comm_time, optimizer_step_time
from simulator.core.device_memory import usable_memory_bytes
from simulator.core.timeline import Timeline
from simulator.core.variability import Goodput, Stretch, gc_stall_s, goodput, replica_wait_s, step_stretch
from simulator.energy.accounting import footprint, gpu_energy_j, hottest_window_w
from simulator.training import offload, param_server
from simulator.training.engine import PipelineEngine, PipelineRun, RankStats
from simulator.training.memory import FRAGMENTATION_FRACTION, memory_breakdown
from simulator.training.plan import (
    COMM_KINDS,
    ChunkCost,
    Groups,
    chunk_costs,
    grad_comm_bytes,
    traced_optimizer_s,
)
from simulator.training.result import MemoryReport, TrainingResult
from simulator.training.schedules import Layout, make_layout

#: Adam step HBM traffic per parameter: fp32 grad read (4), master/exp_avg/exp_avg_sq read+write
#: (24) and the 16-bit weight written back (2).
ADAM_BYTES_PER_PARAM = 30.0
#: Parameter tensors of one transformer layer (q, k, v, o, gate, up, down, two norms), for the kernel
#: launches of optimizers that loop over tensors (``stack.optimizer.launches_per_tensor``).
PARAM_TENSORS_PER_LAYER = 9


@dataclass
class RankTail:
    """A rank's step after its pipeline phase: gradient sync, optimizer step, parameter gather."""

    pipeline_end: float
    dp_end: float = 0.0
    optimizer_s: float = 0.0
    gather_s: float = 0.0
    replica_wait_s: float = 0.0  # waiting at the gradient sync for the slowest data-parallel replica
    gc_s: float = 0.0  # host garbage-collection pauses the step waits for (variability.gc_stall_s)
    host_s: float = 0.0  # exposed host-side optimizer step (CPU Adam, weights back over PCIe; training.offload)
    host_step: offload.OptimizerStep | None = None  # that step's CPU, PCIe and NVMe seconds
    interference_s: float = 0.0  # compute slowed by the SMs that overlapped gradient-sync kernels take
    events: list[tuple] = field(default_factory=list)

    @property
    def end(self) -> float:
        """When this rank's step is done: after its gradient sync (which waits for the slowest replica),
        optimizer step and parameter gather."""
        last = max(self.pipeline_end + self.interference_s, self.dp_end)
        return last + self.replica_wait_s + self.gc_s + self.optimizer_s + self.host_s + self.gather_s

    @property
    def exposed_dp_s(self) -> float:
        """DP communication seconds not hidden under the pipeline phase (the parameter gather and the wait
        for the slowest replica included)."""
        return max(0.0, self.dp_end - self.pipeline_end) + self.replica_wait_s + self.gather_s


def rank_positions(layout: Layout, rank: int) -> list[int]:
    """Route positions (model chunks) held by ``rank``, by local chunk index."""
    if layout.dual:
        return [rank, layout.pp - 1 - rank]
    return [c * layout.pp + rank for c in range(layout.vpp)]


def _bucket_events(
    cfg: RunConfig,
    rank: int,
    stats: RankStats,
    chunks: list[ChunkCost],
    positions: list[int],
    groups: Groups,
    shared: float = 1.0,
) -> tuple[float, list[tuple]]:
    """DP gradient reduction, bucket by bucket as each chunk's last gradients appear; a bucket that starts
    inside the pipeline phase takes ``shared`` times longer (its NIC carries the pipeline's traffic too)."""
    p, t = cfg.parallel, cfg.training
    per_bucket = max(t.bucket_mparams * 1e6, 1e6 * p.dp)
    gbytes = grad_comm_bytes(t.precision)
    kind = "all_reduce" if p.zero == 0 else "reduce_scatter"
    clock, events = 0.0, []
    ready_list: list[tuple[float, float, int, int, int]] = []
    spec = t.compression
    if spec is not None:
        kind = f"compressed {collective_for(spec)}"
    for local, pos in enumerate(positions):
        start, end = stats.grad_done.get(local, (stats.last_end_s, stats.last_end_s))
        if not t.overlap_grad_reduce:
            start = end = stats.last_end_s
        n = max(1, math.ceil(chunks[pos].params / per_bucket))
        if p.dp_mode == "parameter_server":  # push to CPU servers, pull the sums (simulator.training.param_server)
            kind = "push_pull"
            secs = param_server.push_pull_s(cfg, chunks[pos].params * gbytes / n, groups.grad, groups.algorithm)
        elif spec is None:
            secs = comm_time(kind, chunks[pos].params * gbytes / n, groups.grad, groups.algorithm)
        else:  # average over the compression schedule, compressing each bucket's share
            secs = dp_comm_time(
                spec, chunks[pos].params / n, groups.grad, dense_bytes_per_elem=gbytes, algorithm=groups.algorithm
            )
        ready_list += [(start + (i + 1) / n * (end - start), secs, local, i, n) for i in range(n)]
    for ready, secs, local, i, n in sorted(ready_list):
        clock = max(clock, ready)
        secs = secs * shared if clock < stats.last_end_s else secs
        events.append((clock, clock + secs, rank, "dp", f"grad {kind} {i + 1}/{n}", "DP", -1, local))
        clock += secs
    return clock, events


def _pipeline_nic_share(
    cfg: RunConfig, stats: RankStats, chunks: list[ChunkCost], positions: list[int], groups: Groups
) -> float:
    """Share of ``stats``' pipeline phase during which its own inter-node traffic (pipeline sends, expert
    all-to-all, context-parallel exchange) occupies the rank's NIC."""
    window = stats.last_end_s - (stats.first_start_s or 0.0)
    if window <= 0:
        return 0.0
    busy = sum(stats.comm_s.get(k, 0.0) for k, g in (("ep", groups.ep), ("cp", groups.cp)) if g.spans_nodes)
    if cfg.parallel.pp > 1 and groups.pp.spans_nodes:
        t = cfg.training
        num_mb = t.global_batch // (t.micro_batch * cfg.parallel.dp)
        busy += 2 * num_mb * len(positions) * comm_time("send_recv", chunks[0].send_bytes, groups.pp)
    return min(1.0, busy / window)


def profile_sms(cfg: RunConfig) -> int:
    """Streaming multiprocessors of the run's GPU."""
    return get_gpu(cfg.cluster.gpu).sms


def _overlapped_s(events: list[tuple], pipeline_end: float) -> float:
    """Seconds of the gradient-sync events that run before ``pipeline_end`` (under the pipeline's compute)."""
    return sum(max(0.0, min(e[1], pipeline_end) - e[0]) for e in events)


def param_gather_exposed_s(ag_s: list[float], compute_s: list[float], slack_s: float, chained: bool) -> float:
    """Seconds the next step's first forward waits for the ZeRO-1/2 parameter all-gather, bucket by bucket.

    Bucket ``k``'s layers may start only once its all-gather is done (Megatron DDP's forward pre-hook
    ``finish_param_sync``). ``chained``: the pre-hook of bucket ``k`` dispatches bucket ``k+1``'s gather
    (``next_param_gather_bucket_group``), so a gather never starts before the previous bucket's compute;
    otherwise all gathers are dispatched at the step start (``align_param_gather``, Megatron's default with
    interleaving). ``compute_s[k]`` is the forward work that runs on bucket ``k`` before bucket ``k+1`` is
    needed; ``slack_s`` the rank's idle time before its first forward (pipeline fill), under which gathers run.
    """
    if len(ag_s) != len(compute_s):
        raise ClusterSimError("param_gather_exposed_s: one compute time per bucket is needed")
    ag_end, start, compute_end = 0.0, 0.0, slack_s
    for a, c in zip(ag_s, compute_s, strict=True):
        ag_end = (max(ag_end, start) if chained else ag_end) + a
        start = max(compute_end, ag_end)
        compute_end = start + c
    return max(0.0, compute_end - slack_s - sum(compute_s))


def _first_forward_gather_s(
    cfg: RunConfig, stats: RankStats, chunks: list[ChunkCost], positions: list[int], groups: Groups
) -> float:
    """Exposed parameter all-gather of one rank under the first forward of the step (ZeRO-1/2, overlapped)."""
    p, t = cfg.parallel, cfg.training
    per_bucket = max(t.bucket_mparams * 1e6, 1e6 * p.dp)
    # interleaved 1F1B runs pp micro-batches through a chunk before the next chunk needs its parameters
    repeats = min(p.pp, max(1, t.global_batch // (t.micro_batch * p.dp))) if len(positions) > 1 else 1
    ag_s: list[float] = []
    compute_s: list[float] = []
    for pos in positions:
        ck = chunks[pos]
        n = max(1, math.ceil(ck.params / per_bucket))
        fwd = ck.forward.total_s
        ag_s += [comm_time("all_gather", 2.0 * ck.params / n, groups.grad, groups.algorithm)] * n
        compute_s += [fwd / n] * (n - 1) + [fwd / n + (repeats - 1) * fwd]
    slack = stats.first_start_s or 0.0
    return param_gather_exposed_s(ag_s, compute_s, slack, chained=len(positions) == 1)


def _rank_tail(
    cfg: RunConfig,
    rank: int,
    stats: RankStats,
    chunks: list[ChunkCost],
    layout: Layout,
    groups: Groups,
    profile: Profile,
    comm: bool,
) -> RankTail:
    """What ``rank`` does after its pipeline phase: DP and tied-embedding gradient sync, compression,
    optimizer step and (ZeRO-1/2) parameter gather, with their timeline events."""
    p, t = cfg.parallel, cfg.training
    positions = rank_positions(layout, rank)
    tail = RankTail(pipeline_end=stats.last_end_s, dp_end=stats.last_end_s)
    if comm and p.zero < 3 and p.dp * p.cp > 1:
        busy = _pipeline_nic_share(cfg, stats, chunks, positions, groups) if groups.grad.spans_nodes else 0.0
        shared = nic_sharing_factor(busy)
        tail.dp_end, tail.events = _bucket_events(cfg, rank, stats, chunks, positions, groups, shared)
        tail.interference_s = overlap_interference_s(
            cfg.training.comm_sms, profile_sms(cfg), _overlapped_s(tail.events, stats.last_end_s)
        )
    if comm and p.pp > 1 and cfg.model.tied_embeddings and rank in (0, p.pp - 1):
        # first and last stage hold copies of the tied word embedding: sum their gradients
        emb = cfg.model.vocab_size * cfg.model.hidden_size / p.tp * grad_comm_bytes(t.precision)
        secs = comm_time("all_reduce", emb, groups.pp, groups.algorithm)
        start = max(tail.dp_end, stats.last_end_s)
        tail.events.append((start, start + secs, rank, "dp", "embedding grad all_reduce", "DP", -1, 0))
        tail.dp_end = start + secs
    if comm and p.dp * p.cp > 1:
        segments = 2 * layout.num_microbatches * len(positions) * max(1, sum(len(chunks[q].layers) for q in positions))
        tail.replica_wait_s = replica_wait_s(cfg.variability, stats.busy_s, segments, p.dp * p.cp)
    params = sum(chunks[pos].params for pos in positions)
    if comm and t.compression is not None and p.dp * p.cp > 1:  # compress + decompress before the optimizer
        extra = compression_compute_s(t.compression, params, profile, grad_comm_bytes(t.precision), dp_size=p.dp)
        start = max(tail.dp_end, stats.last_end_s)
        tail.events.append((start, start + extra, rank, "compute", "gradient (de)compression", "DP", -1, 0))
        tail.dp_end = start + extra
    shard = params / (p.dp * p.cp) if p.zero >= 1 else params
    opt = cfg.stack.optimizer
    tensors = PARAM_TENSORS_PER_LAYER * cfg.model.num_layers / p.pp
    traced = traced_optimizer_s(cfg, profile) if cfg.stack.traced else None
    synced = max(tail.pipeline_end + tail.interference_s, tail.dp_end) + tail.replica_wait_s
    if comm:  # like the replica wait, a wait for other ranks
        _gc_wait(cfg, tail, rank, synced)
    opt_start = synced + tail.gc_s
    if t.offload.optimizer != "none":  # ZeRO-Offload: CPU Adam, weights back over PCIe (simulator.training.offload)
        host = tail.host_step = offload.optimizer_step(t.offload, cfg.cluster, shard)
        window = stats.last_end_s - (stats.first_start_s or 0.0)
        tail.host_s = offload.exposed_optimizer_s(cfg, host, window)
        start = opt_start + tail.host_s - host.total_s  # with delayed update it began during this step
        tail.events.append((start, start + host.cpu_s, rank, "host", "CPU Adam", "OPT", -1, 0))
        if host.h2d_s:
            tail.events.append((start, start + host.h2d_s, rank, "pcie", "weights to GPU", "OPT", -1, 0))
        if host.nvme_s:
            tail.events.append((start, start + host.nvme_s, rank, "nvme", "optimizer swap", "OPT", -1, 0))
    elif traced is not None:  # the recorded optimizer kernels, shrunk with the ZeRO shard
        tail.optimizer_s = traced * shard / max(params, 1.0)
    else:
        tail.optimizer_s = optimizer_step_time(profile, opt.bytes_per_param * shard, opt.launches_per_tensor * tensors)
    if t.offload.optimizer == "none":
        tail.events.append((opt_start, opt_start + tail.optimizer_s, rank, "compute", "optimizer step", "OPT", -1, 0))
    if comm and p.zero in (1, 2) and p.dp * p.cp > 1:
        _param_gather(cfg, tail, rank, stats, chunks, positions, groups, opt_start + tail.optimizer_s + tail.host_s)
    return tail


def _gc_wait(cfg: RunConfig, tail: RankTail, rank: int, start: float) -> None:
    """Charge the expected wait on garbage-collection pauses from ``start`` (the gradient sync's end, before the
    optimizer), with its timeline event."""
    tail.gc_s = gc_pause_s(cfg)
    if tail.gc_s > 0:
        tail.events.append((start, start + tail.gc_s, rank, "host", "garbage-collection pauses", "OPT", -1, 0))


def _param_gather(
    cfg: RunConfig,
    tail: RankTail,
    rank: int,
    stats: RankStats,
    chunks: list[ChunkCost],
    positions: list[int],
    groups: Groups,
    start: float,
) -> None:
    """ZeRO-1/2: the updated parameters' all-gather, whole after the optimizer, or (overlap_param_gather) the
    part the next step's first forward cannot hide (stack ``param_gather_window``)."""
    label = "param all_gather"
    if not cfg.training.overlap_param_gather:
        params = sum(chunks[pos].params for pos in positions)
        tail.gather_s = comm_time("all_gather", 2.0 * params, groups.grad, groups.algorithm)
    elif cfg.stack.param_gather_window == "first_forward":
        tail.gather_s = _first_forward_gather_s(cfg, stats, chunks, positions, groups)
        label = "param all_gather (exposed under the first forward)"
    if tail.gather_s > 0:
        tail.events.append((start, start + tail.gather_s, rank, "dp", label, "DP", -1, 0))


def _bubble_fraction(run: PipelineRun) -> float:
    """Idle time of the ranks inside the pipeline phase relative to their busy time (mean over ranks).

    For 1F1B with uniform stages this is (pp-1)/m; interleaving divides it by vpp.
    """
    span = run.end_s - min(r.first_start_s or 0.0 for r in run.ranks)
    busy = [r.busy_s for r in run.ranks]
    idle = [span - b for b in busy]
    return sum(idle) / sum(busy) if sum(busy) > 0 else 0.0


def _memory(cfg: RunConfig, run: PipelineRun, layout: Layout) -> tuple[MemoryReport, bool]:
    """Memory of the fullest pipeline rank (GB), and whether it fits the GPU's usable memory."""
    capacity = usable_memory_bytes(cfg.cluster.gpu)
    copies = 1.0  # memory_breakdown already holds both DualPipe chunks of a rank (memory.rank_layers)
    best = None
    for rank, st in enumerate(run.ranks):
        mem = memory_breakdown(cfg, rank, st.peak_inflight, flash_attention=cfg.training.flash_attention)
        state = mem.weights + mem.gradients + mem.optimizer
        total = mem.total
        if best is None or total > best[0]:
            best = (total, rank, mem, state * (copies - 1.0), st.peak_inflight)
    assert best is not None
    total, rank, mem, static, inflight = best
    gb = 1e9
    tiers = _host_tiers(cfg, run)
    report = MemoryReport(
        peak=total / gb,
        weights=mem.weights * copies / gb,
        gradients=mem.gradients * copies / gb,
        optimizer=mem.optimizer * copies / gb,
        activations=mem.activations / gb,
        buffers=mem.buffers / gb,
        fragmentation=(mem.fragmentation + static * FRAGMENTATION_FRACTION) / gb,
        compression=mem.compression / gb,
        capacity=capacity / gb,
        stage=rank,
        inflight_microbatches=inflight,
        **{k: v / gb for k, v in tiers.items()},
    )
    host_fits = tiers["host"] <= tiers["host_capacity"] and tiers["nvme"] <= tiers["nvme_capacity"]
    return report, total <= capacity and host_fits


def _host_tiers(cfg: RunConfig, run: PipelineRun) -> dict[str, float]:
    """Bytes per GPU offloaded to host memory and NVMe (the fullest rank), and each tier's capacity per GPU
    (the node's shared by its GPUs); zeros when nothing is offloaded."""
    if not cfg.training.offload.any:
        return {"host": 0.0, "nvme": 0.0, "host_capacity": 0.0, "nvme_capacity": 0.0}
    flash = cfg.training.flash_attention
    mems = [memory_breakdown(cfg, r, st.peak_inflight, flash_attention=flash) for r, st in enumerate(run.ranks)]
    rates = offload.host_rates(cfg.cluster)
    return {
        "host": max(m.host for m in mems),
        "nvme": max(m.nvme for m in mems),
        "host_capacity": rates.host_bytes,
        "nvme_capacity": rates.nvme_bytes,
    }


@dataclass
class _Step:
    """One simulated step at given stage clocks: the pipeline, the rank tails and the energy inputs."""

    chunks: list[ChunkCost]
    run: PipelineRun
    tails: list[RankTail]
    layout: Layout
    ratios: list[float]  # clock / max clock per pipeline stage

    @cached_property
    def end(self) -> float:
        """When the slowest rank finishes its step, seconds."""
        return max(tail.end for tail in self.tails)


def _stage_ratios(cfg: RunConfig, prof: Profile) -> list[float]:
    """Configured SM clock of each pipeline stage as a fraction of the GPU's maximum clock."""
    pw, f_max = cfg.power, prof.power.max_sm_clock_mhz
    clocks = pw.stage_clocks_mhz or [pw.sm_clock_mhz or f_max] * cfg.parallel.pp
    return [min(1.0, c / f_max) for c in clocks]


def _stage_of_positions(layout: Layout) -> dict[int, int]:
    """Pipeline rank that runs each route position."""
    return {pos: rank for rank in range(layout.pp) for pos in rank_positions(layout, rank)}


def _costs_at(cfg: RunConfig, prof: Profile, cluster: Any, layout: Layout, ratios: list[float], comm: bool):
    """Chunk costs with each chunk priced at its stage's clock (one costing per distinct clock), compute
    stretched by the expected slowest rank where ranks synchronise (:func:`stretch_of`)."""
    stage = _stage_of_positions(layout)
    factor = stretch_of(cfg).compute
    by_ratio = {
        r: chunk_costs(
            cfg, prof.model_copy(update={"clock_ratio": r}), cluster, num_chunks=layout.positions, include_comm=comm
        )
        for r in sorted(set(ratios))
    }
    return [by_ratio[ratios[stage[pos]]][pos].stretched(factor) for pos in range(layout.positions)]


def gc_pause_s(cfg: RunConfig) -> float:
    """Expected seconds per step ``cfg`` waits on ranks' garbage-collection pauses (variability.gc_stall_s)."""
    p = cfg.parallel
    return gc_stall_s(
        cfg.variability,
        num_gpus=cfg.cluster.num_gpus,
        tp=p.tp,
        pp=p.pp,
        cp=p.cp,
        ep=p.ep,
        zero=p.zero,
        aligned=cfg.stack.gc_aligned,
    )


def stretch_of(cfg: RunConfig) -> Stretch:
    """How synchronisation stretches ``cfg``'s compute: slowest GPU of the job, slowest rank per layer."""
    p = cfg.parallel
    return step_stretch(cfg.variability, num_gpus=cfg.cluster.num_gpus, tp=p.tp, cp=p.cp, ep=p.ep, pp=p.pp, dp=p.dp)


def _simulate(cfg: RunConfig, prof: Profile, cluster: Any, ratios: list[float], comm: bool) -> _Step:
    """Run the pipeline engine and every rank's tail at the stage clock ``ratios``."""
    p, t = cfg.parallel, cfg.training
    num_mb = t.global_batch // (t.micro_batch * p.dp)
    layout = make_layout(p.schedule, p.pp, p.vpp, num_mb)
    groups = Groups.of(cfg, cluster)
    chunks = _costs_at(cfg, prof, cluster, layout, ratios, comm)
    p2p = comm_time("send_recv", chunks[0].send_bytes, groups.pp) if comm and p.pp > 1 else 0.0
    run = PipelineEngine(layout, chunks, p.schedule, p2p).run()
    tails = [
        _rank_tail(cfg, r, st, chunks, layout, groups, prof.model_copy(update={"clock_ratio": ratios[r]}), comm)
        for r, st in enumerate(run.ranks)
    ]
    return _Step(chunks, run, tails, layout, ratios)


def _mb_per_position(cfg: RunConfig, layout: Layout) -> float:
    """Micro-batches that pass through each chunk in a step (DualPipe sends half each way)."""
    num_mb = cfg.training.global_batch // (cfg.training.micro_batch * cfg.parallel.dp)
    return num_mb / 2.0 if layout.dual else float(num_mb)


def _rank_work(cfg: RunConfig, step: _Step, rank: int, prof: Profile) -> tuple[float, float, float]:
    """(busy s, math work s at full peak, HBM work s at full bandwidth) of one GPU of pipeline ``rank``."""
    num_mb = _mb_per_position(cfg, step.layout)
    positions = rank_positions(step.layout, rank)
    tail = step.tails[rank]
    tensor = num_mb * sum(step.chunks[pos].tensor_s for pos in positions)
    hbm = num_mb * sum(step.chunks[pos].hbm_s for pos in positions) + tail.optimizer_s
    busy = step.run.ranks[rank].busy_s + tail.optimizer_s
    return min(busy, step.end), tensor, hbm


def _gpu_energy(cfg: RunConfig, step: _Step, prof: Profile) -> list[float]:
    """Energy per GPU of each pipeline rank over the step (J)."""
    return [
        gpu_energy_j(prof.power, step.end, *_rank_work(cfg, step, r, prof), step.ratios[r])
        for r in range(cfg.parallel.pp)
    ]


def _throttle(cfg: RunConfig, prof: Profile, cluster: Any, step: _Step, limit: float, comm: bool) -> list[float]:
    """Stage clocks scaled down until the hottest GPU's power over its busiest ``power.limit_window_s`` fits ``limit``.

    Each trial prices the chunks at the lower clock and stretches the step by the critical rank's
    extra compute (the engine is re-run once, at the answer)."""
    p = cfg.parallel
    num_mb = _mb_per_position(cfg, step.layout)
    base_work = [_rank_work(cfg, step, r, prof) for r in range(p.pp)]

    def compute_s(chunks: list[ChunkCost], rank: int) -> float:
        pos = rank_positions(step.layout, rank)
        return num_mb * sum(
            chunks[i].forward.compute_s + chunks[i].backward.compute_s + chunks[i].weight.compute_s for i in pos
        )

    base_compute = [compute_s(step.chunks, r) for r in range(p.pp)]

    def hottest(scale: float) -> float:
        ratios = [r * scale for r in step.ratios]
        chunks = _costs_at(cfg, prof, cluster, step.layout, ratios, comm)
        extra = [compute_s(chunks, r) - base_compute[r] for r in range(p.pp)]
        end = step.end + max(extra)
        window = cfg.power.limit_window_s
        hot = 0.0
        for r, w in enumerate(base_work):
            busy = min(end, w[0] + extra[r])
            energy = gpu_energy_j(prof.power, end, busy, w[1], w[2], ratios[r])
            hot = max(hot, hottest_window_w(prof.power, end, busy, energy, window))
        return hot

    lo = prof.power.lowest_clock_mhz / prof.power.max_sm_clock_mhz / max(step.ratios)
    if hottest(lo) > limit:
        raise ClusterSimError(
            f"power.power_limit_w={limit:.0f} W cannot be met even at {prof.power.lowest_clock_mhz:.0f} MHz; raise it"
        )
    scale = _highest_fitting_scale(hottest, limit, lo)
    return [r * scale for r in step.ratios]


def _highest_fitting_scale(power_at: Any, limit: float, lo: float, hi: float = 1.0) -> float:
    """The largest clock scale in [lo, hi] whose power fits ``limit`` (``power_at(lo)`` fits): regula falsi with the
    Illinois correction on the monotone power curve, stopping within 0.05% of the limit (about 1 MHz) -- a handful
    of pricings where bisection took fourteen."""
    p_lo, p_hi = power_at(lo), power_at(hi)
    if p_hi <= limit:
        return hi
    w_lo, w_hi = p_lo - limit, p_hi - limit  # secant weights (Illinois halves the end that stays)
    side = 0
    for _ in range(30):
        if p_lo >= limit * (1.0 - 5e-4) or hi - lo < 1e-5:
            break
        s = hi - w_hi * (hi - lo) / (w_hi - w_lo)
        s = min(max(s, lo + 1e-3 * (hi - lo)), hi - 1e-3 * (hi - lo))
        p_s = power_at(s)
        if p_s > limit:
            hi, p_hi, w_hi = s, p_s, p_s - limit
            w_lo = w_lo / 2.0 if side == 1 else w_lo
            side = 1
        else:
            lo, p_lo, w_lo = s, p_s, p_s - limit
            w_hi = w_hi / 2.0 if side == -1 else w_hi
            side = -1
    return lo


def simulate_training(
    config: RunConfig | dict[str, Any] | str | Path,
    profile: Profile | str | None = None,
    *,
    overrides: list[str] | None = None,
    include_comm: bool = True,
) -> TrainingResult:
    """Simulate one training step of ``config`` and return its metrics, energy and timeline.

    ``profile`` picks the hardware profile (default: the GPU's calibrated profile when shipped,
    else its datasheet profile). ``include_comm=False`` makes every transfer free, which isolates
    the schedule (used to check bubble fractions against theory). In ``modelled`` energy mode a
    step whose average power exceeds the power limit is re-simulated at the clock that fits.
    """
    cfg, prof, cluster = _resolve(config, profile, overrides)
    step, per_rank, throttled, limit = _step_within_power(cfg, prof, cluster, include_comm)
    p, t, m = cfg.parallel, cfg.training, cfg.model
    run, tails = step.run, step.tails
    num_mb = t.global_batch // (t.micro_batch * p.dp)
    stepsecs = step.end
    critical = max(range(p.pp), key=lambda r: tails[r].end)
    tokens = t.global_batch * t.seq_len
    memory, fits = _memory(cfg, run, step.layout)
    events = run.events + [e for tail in tails for e in tail.events]
    energy = _energy_fields(cfg, step, prof, cluster, tokens, throttled, limit, per_rank)
    ttt_days = _time_to_train(cfg, tokens, stepsecs, energy)  # also adds the whole run's totals to energy
    good = _goodput(cfg, cluster)
    return TrainingResult(
        model=m.name,
        gpu=cluster.gpu.id,
        num_gpus=cluster.num_gpus,
        profile=prof.kind,
        schedule=p.schedule,
        num_microbatches=num_mb,
        step_time_s=stepsecs,
        pipeline_time_s=run.end_s,
        **_rates(cfg, step, prof, cluster.num_gpus, num_mb),
        bubble_fraction=_bubble_fraction(run),
        exposed_comm_s=_exposed_comm(step, critical),
        optimizer_s=tails[critical].optimizer_s + tails[critical].host_s,
        offload_s=_offload_report(cfg, tails[critical]),
        memory_per_gpu_gb=memory,
        fits_in_memory=fits,
        time_to_train_days=ttt_days,
        time_to_train_wall_days=None if ttt_days is None else ttt_days / max(good.fraction, 1e-9),
        sync_stretch=stretch_of(cfg).compute,
        gc_pause_s=tails[critical].gc_s,
        goodput=good,
        timeline=Timeline(tuple(sorted(events))),
        **energy,
    )


def _resolve(
    config: RunConfig | dict[str, Any] | str | Path, profile: Profile | str | None, overrides: list[str] | None
) -> tuple[RunConfig, Profile, Any]:
    """The validated config, its hardware profile (less any SMs reserved for communication) and cluster."""
    cfg = (
        config
        if isinstance(config, RunConfig) and not overrides
        else load_config(config.model_dump() if isinstance(config, RunConfig) else config, overrides)
    )
    prof = load_profile(profile, gpu=cfg.cluster.gpu)
    cluster = cfg.cluster.resolve()
    t = cfg.training
    if t.comm_sms:
        prof = prof.at(sm_fraction=(cluster.gpu.sms - t.comm_sms) / cluster.gpu.sms)
    return cfg, prof, cluster


def _step_within_power(
    cfg: RunConfig, prof: Profile, cluster: Any, include_comm: bool
) -> tuple[_Step, list[float], bool, float]:
    """The step at the configured clocks, re-simulated at lower clocks when ``modelled`` power exceeds
    the limit: (step, GPU J per pipeline rank, throttled, power limit W)."""
    step = _simulate(cfg, prof, cluster, _stage_ratios(cfg, prof), include_comm)
    limit = cfg.power.power_limit_w or prof.power.power_limit_w
    throttled = False
    per_rank = _gpu_energy(cfg, step, prof)
    if cfg.power.mode == "modelled" and _hottest_w(cfg, step, prof, per_rank) > limit * 1.005:
        step = _simulate(cfg, prof, cluster, _throttle(cfg, prof, cluster, step, limit, include_comm), include_comm)
        per_rank, throttled = _gpu_energy(cfg, step, prof), True
    return step, per_rank, throttled, limit


def _hottest_w(cfg: RunConfig, step: _Step, prof: Profile, per_rank: list[float]) -> float:
    """Average power of the hottest GPU over its busiest ``power.limit_window_s`` (what the power limit holds)."""
    return max(
        hottest_window_w(prof.power, step.end, _rank_work(cfg, step, r, prof)[0], e, cfg.power.limit_window_s)
        for r, e in enumerate(per_rank)
    )


#: Bytes per parameter a checkpoint holds: bf16 weights (2) + fp32 master weights and Adam moments (12), the
#: model and distributed-optimizer state Megatron-LM saves.
CHECKPOINT_BYTES_PER_PARAM = 14.0


def _goodput(cfg: RunConfig, cluster: Any) -> Goodput:
    """Goodput of a long run of ``cfg``: checkpoint stalls and failures at the configured MTBF."""
    nbytes = CHECKPOINT_BYTES_PER_PARAM * cfg.model.total_params
    host = get_link(cluster.gpu.pcie).effective_bandwidth_bytes_per_s
    d2h_s = nbytes / cluster.num_gpus / host  # every GPU copies its shard to host memory at once
    return goodput(cfg.variability, cluster.num_gpus, cluster.num_nodes, nbytes, d2h_s)


def _offload_report(cfg: RunConfig, tail: RankTail) -> dict[str, float]:
    """The critical rank's host-side optimizer step by stream, and how much of it the step waits for."""
    h = tail.host_step
    if h is None:
        return {}
    return {"cpu_adam_s": h.cpu_s, "weights_h2d_s": h.h2d_s, "nvme_swap_s": h.nvme_s, "exposed_s": tail.host_s}


def _exposed_comm(step: _Step, critical: int) -> dict[str, float]:
    """Communication seconds the critical rank could not hide, by kind (PP waits and DP tail included)."""
    crit = step.run.ranks[critical]
    exposed = {k: 0.0 for k in COMM_KINDS}
    exposed.update({k: v for k, v in crit.comm_s.items()})
    exposed["pp"] = crit.pp_wait_s
    exposed["dp"] = exposed.get("dp", 0.0) + step.tails[critical].exposed_dp_s
    return exposed


def _rates(cfg: RunConfig, step: _Step, prof: Profile, num_gpus: int, num_mb: int) -> dict[str, float]:
    """Throughput fields of the result: tokens/s (total, per GPU), TFLOP/s per GPU, MFU and HFU."""
    p, t, m = cfg.parallel, cfg.training, cfg.model
    stepsecs = step.end
    tokens = t.global_batch * t.seq_len
    model_flops = m.flops_per_token(t.seq_len, training=True) * tokens
    recompute_flops = sum(c.recompute_flops for c in step.chunks) * num_mb * p.tp * p.cp * p.dp
    peak = prof.peak_flops(t.precision)
    return dict(
        tokens_per_s=tokens / stepsecs,
        tokens_per_s_per_gpu=tokens / stepsecs / num_gpus,
        tflops_per_gpu=model_flops / stepsecs / num_gpus / 1e12,
        mfu=model_flops / stepsecs / num_gpus / peak,
        hfu=(model_flops + recompute_flops) / stepsecs / num_gpus / peak,
    )


def _time_to_train(cfg: RunConfig, tokens: float, stepsecs: float, energy: dict[str, Any]) -> float | None:
    """Days to train on ``training.tokens`` (None when unset); adds the whole run's MWh, tCO2e and
    cost to ``energy``."""
    t = cfg.training
    steps_multiplier = t.compression.steps_multiplier if t.compression is not None else 1.0
    if not t.tokens:
        return None
    steps = t.tokens / tokens * steps_multiplier
    energy.update(
        total_mwh=energy["energy_j"]["facility"] * steps / 3.6e9,
        total_tco2e=sum(energy["kgco2e"].values()) * steps / 1e3,
        total_cost_usd=energy["cost_usd"] * steps,
    )
    return t.tokens / (tokens / stepsecs) / 86400.0 * steps_multiplier


def _energy_fields(
    cfg: RunConfig,
    step: _Step,
    prof: Profile,
    cluster: Any,
    tokens: float,
    throttled: bool,
    limit: float,
    per_rank: list[float],
) -> dict[str, Any]:
    """Energy (per step), carbon and cost fields of the result; ``per_rank`` is each pipeline rank's
    modelled GPU energy (J)."""
    secs, n = step.end, cluster.num_gpus
    replicas = n / cfg.parallel.pp  # every pipeline rank stands for this many GPUs
    if cfg.power.mode == "tdp":
        gpu_j, node_j = n * cluster.gpu.tdp_w * secs, 0.0
        avg_w = cluster.gpu.tdp_w
        per_rank = [cluster.gpu.tdp_w * secs] * cfg.parallel.pp
    else:
        gpu_j = sum(per_rank) * replicas
        node_j = cluster.node.host_power_w * n / cluster.gpus_per_node * secs  # the job's share of its nodes
        avg_w = max(per_rank) / secs
    facility = (gpu_j + node_j) * cfg.site.pue
    gpu_hours = n * secs / 3600.0
    kg, usd = footprint(facility, gpu_hours, cluster.gpu.id, cluster.gpus_per_node, cfg.site)
    f_max = prof.power.max_sm_clock_mhz
    return dict(
        energy_j={"gpu": gpu_j, "node": node_j, "facility": facility},
        energy_per_token_j=facility / tokens,
        kgco2e=kg,
        cost_usd=usd,
        power={
            "mode": cfg.power.mode,
            "avg_gpu_power_w": avg_w,
            "power_limit_w": limit,
            "sm_clock_mhz": [r * f_max for r in step.ratios],
            "gpu_j_per_rank": per_rank,
            "throttled": throttled,
        },
    )
