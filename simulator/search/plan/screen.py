"""The closed-form screen: every candidate plan's step time and peak memory, without simulating it.

Per-layer phase costs come from :func:`simulator.training.plan.chunk_costs` once per distinct (tp, sp, cp, ep,
micro-batch, recompute) and are reused by every plan sharing them; a plan's stages are prefix sums of them.
The step time follows the schedule's bubble (``m S + (sum S - S_max)/v`` for 1F1B-like schedules, from the
schedule registry's ``screen_time``), the DP gradient buckets' exposure and the optimizer; the per-GPU peak
memory calls :mod:`simulator.training.memory`'s own functions over per-layer arrays (a test pins the two
together), and plans that do not fit are pruned as "out of memory".

A :class:`Screen` holds one search's :class:`SearchContext` and its memo tables as instance attributes, so
two searches in one process share nothing; :meth:`Screen.task` enumerates, prunes and screens every
candidate of one (tp, cp) pair.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from hwmodels.profile import Profile
from hwmodels.topology import Cluster, ClusterSpec, CommGroup
from simulator.core.config import ParallelSpec, RunConfig, TrainingSpec
from simulator.core.costs import CommAlgorithm, comm_time, optimizer_step_time
from simulator.core.device_memory import usable_memory_bytes
from simulator.core.host_tiers import OffloadSpec
from simulator.core.variability import VariabilitySpec, gc_stall_s, step_stretch
from simulator.energy.accounting import PowerSpec, SiteSpec
from simulator.models import ModelSpec
from simulator.moe.routing import MoERouting
from simulator.search.plan.space import (
    OFFLOAD_SPECS,
    R_BATCH,
    R_OOM,
    R_SP,
    R_ZERO,
    PlanKey,
    SearchSpace,
    ep_options,
    ep_rule,
    micro_batches,
    offload_rule,
    options,
    pipeline_rule,
    schedule_rule,
    schedule_variants,
)
from simulator.stacks import DEFAULT_STACK, StackSpec, get_stack
from simulator.training import memory as M
from simulator.training import offload as O
from simulator.training.plan import chunk_costs, chunk_layers, grad_comm_bytes, layer_host_s
from simulator.training.schedules import StageAggregate, get_schedule
from simulator.training.simulate import PARAM_TENSORS_PER_LAYER

#: A screened plan: (step seconds, peak memory bytes, key); tuples sort by time, then memory, then key.
Screened = tuple[float, float, PlanKey]
#: The variability every plan runs with (SearchContext.run_config sets none, so the default).
_VARIABILITY = VariabilitySpec()


@dataclass
class SearchContext:
    """Everything the screen and the simulations of one search need: pickled once per worker process."""

    model: ModelSpec
    cluster_spec: ClusterSpec
    training: TrainingSpec
    moe_routing: MoERouting
    power: PowerSpec
    site: SiteSpec
    seed: int
    profile: Profile  # what simulate_training gets
    space: SearchSpace
    keep: int  # screened plans per task returned to the parent (the fastest)
    stack: StackSpec = field(default_factory=lambda: get_stack(DEFAULT_STACK))  # named in every plan's config
    cluster: Cluster = field(init=False)
    algorithm: CommAlgorithm = field(init=False)  # the collective rule every plan runs (ParallelSpec's default)
    capacity: float = field(init=False)
    screen_profile: Profile = field(init=False)  # the profile at the job's SM share and clock

    def __post_init__(self) -> None:
        self.cluster = self.cluster_spec.resolve()
        self.algorithm = CommAlgorithm.of(ParallelSpec().collective_algorithm, self.cluster)
        self.capacity = usable_memory_bytes(self.cluster_spec.gpu)
        sms = self.cluster.gpu.sms
        prof = (
            self.profile.at(sm_fraction=(sms - self.training.comm_sms) / sms)
            if self.training.comm_sms
            else self.profile
        )
        self.screen_profile = prof.at(sm_clock_mhz=self.power.sm_clock_mhz) if self.power.sm_clock_mhz else prof

    @property
    def num_gpus(self) -> int:
        """GPUs of the cluster every plan splits."""
        return self.cluster_spec.num_gpus

    def run_config(self, key: PlanKey | tuple, **training: Any) -> RunConfig:
        """The validated config of a plan (``training`` overrides the base's fields); a key without its offload
        element offloads nothing."""
        tp, pp, dp, cp, ep, sp, vpp, zero, schedule, mb, recompute = key[:11]
        par = ParallelSpec(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, sp=sp, vpp=vpp, zero=zero, schedule=schedule)
        update = {"micro_batch": mb, "recompute": recompute, "offload": offload_spec(key), **training}
        train = self.training.model_copy(update=update)
        return RunConfig(
            model=self.model,
            cluster=self.cluster_spec,
            parallel=par,
            stack=self.stack,
            training=train,
            moe_routing=self.moe_routing,
            power=self.power,
            site=self.site,
            seed=self.seed,
        )


@lru_cache(maxsize=8)
def _offload_of(name: str) -> OffloadSpec:
    return OffloadSpec(**OFFLOAD_SPECS[name])


def offload_spec(key: PlanKey | tuple) -> OffloadSpec:
    """The ``training.offload`` of a plan key (none for a key without its offload element)."""
    return _offload_of(key[11] if len(key) > 11 else "none")


# ---- per-layer costs, stage sums and per-rank memory parts --------------------------------------------


@dataclass(frozen=True)
class _LayerTable:
    """Prefix sums of per-layer phase seconds (layer 0 carries the embedding, the last layer the head)."""

    f: np.ndarray  # forward, compute + blocking comm
    fc: np.ndarray  # forward blocking comm
    b: np.ndarray  # input-gradient backward incl. recomputation
    bc: np.ndarray
    w: np.ndarray  # weight-gradient backward
    params: np.ndarray  # parameters held by one rank (DP gradient volume)
    send_bytes: float
    host_s: float = 0.0  # eager host time to issue one layer's forward (plan.layer_host_s)


def _prefix(values: Iterable[float]) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.fromiter(values, dtype=float))])


@dataclass(frozen=True)
class _Stages:
    """One plan's chunks (model order), how they map onto pipeline ranks, and their aggregates."""

    f: np.ndarray
    fc: np.ndarray
    b: np.ndarray
    bc: np.ndarray
    w: np.ndarray
    params: np.ndarray
    rank: np.ndarray  # pipeline rank of each chunk
    n: int  # pipeline ranks
    v: int  # chunks per rank (vpp; 2 for dualpipe)
    dual: bool
    send_bytes: float
    edge_chunks: tuple[tuple[int, ...], tuple[int, ...]]  # chunks of the first and of the last rank
    agg: StageAggregate


def _aggregate(
    st_f: np.ndarray,
    st_b: np.ndarray,
    f: np.ndarray,
    b: np.ndarray,
    w: np.ndarray,
    comm: np.ndarray,
    rank: np.ndarray,
    pp: int,
    v: int,
    dual: bool,
) -> StageAggregate:
    if dual:
        work = f + b + w
        comm = comm + (f - st_f) + (b - st_b)  # ZeRO-3's exposed gathers are communication the pairs hide too
        hidden = np.minimum(comm, f + b - comm)
        pair_work, pair_hidden = 0.5 * (work + work[::-1]), 0.5 * (hidden + hidden[::-1])
        return StageAggregate(0.0, 0.0, 0.0, 0.0, float(f.mean()), 0.0, pair_work, pair_hidden)
    fr = np.bincount(rank, f, minlength=pp)
    br = np.bincount(rank, b, minlength=pp)
    wr = np.bincount(rank, w, minlength=pp)
    s = fr + br + wr
    return StageAggregate(
        smax=float(s.max()),
        ssum=float(s.sum()),
        fb_mean=float((fr + br).mean()),
        w_mean=float(wr.mean()),
        f_mean=float(f.mean()),
        drain=float((br + wr)[:-1].sum()) / v,
    )


@dataclass(frozen=True)
class _Rep:
    """A pipeline rank whose memory can be the peak: the layers it holds (memory.rank_layers: with DualPipe
    both of its chunks), its own stage's layers (memory.stage_layers: ZeRO-3's prefetch buffer), and whether
    it holds the first chunk (embedding) or the last (final norm, head, MTP): with DualPipe ranks 0 and pp-1
    hold both ends. ``weight``: its chunk's in-flight weight (the engine's layers / (num_layers / pp)); with
    DualPipe ``dual`` lists (rank, own chunk's weight, mirror chunk's weight) of every rank it stands for."""

    rank: int
    layers: np.ndarray
    stage: np.ndarray
    first: bool
    last: bool
    weight: float
    dual: tuple[tuple[int, float, float], ...] = ()


@dataclass(frozen=True)
class _RankStatic:
    """Bytes of weights + gradients + optimizer state at each ZeRO stage, and buffers, on one rank."""

    static: tuple[float, float, float, float]
    buffers: tuple[float, float]  # zero < 3, zero == 3 (prefetched layers)
    rank: int
    weight: float  # in-flight weight of its chunk (_Rep.weight)
    dual: tuple[tuple[int, float, float], ...]  # DualPipe: (rank, own weight, mirror weight) of its ranks
    parts: tuple[tuple[float, float, float], ...] = ()  # (weights, gradients, optimizer) at each ZeRO stage
    zero3_capped: float = 0.0  # ZeRO-3 buffers with offloaded weights (offload.gathered_layer_cap)
    compression: float = 0.0  # gradient-compression state (memory.compression_state_bytes), in ``static`` too


@dataclass(frozen=True)
class _RankActs:
    """Activation bytes of one rank: per in-flight micro-batch, the once-per-rank working set, the output layer."""

    per_mb: float
    transient: float
    out_layer: float


# ---- the screen: one search's context and memo tables ---------------------------------------------


@dataclass
class _Memo:
    """The screen's memo tables, each keyed by the plan dimensions its values depend on."""

    layers: dict[tuple, _LayerTable] = field(default_factory=dict)
    stages: dict[tuple, _Stages] = field(default_factory=dict)
    acts: dict[tuple, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    rank_layers: dict[tuple, tuple[_Rep, ...]] = field(default_factory=dict)
    params: dict[tuple, np.ndarray] = field(default_factory=dict)
    statics: dict[tuple, tuple[_RankStatic, ...]] = field(default_factory=dict)
    act_parts: dict[tuple, tuple[_RankActs, ...]] = field(default_factory=dict)
    groups: dict[tuple[int, int], CommGroup] = field(default_factory=dict)
    comm: dict[tuple, float] = field(default_factory=dict)
    optimizer: dict[tuple[float, float], float] = field(default_factory=dict)


class Screen:
    """The closed-form screen of one search: its context and memo tables (per-layer costs, activations,
    stage sums, collective times), all instance attributes.

    The in-process search makes its own; each worker process makes one in the pool initializer. Nothing is
    shared between two Screens, so searches in one process do not see each other's tables.
    """

    def __init__(self, ctx: SearchContext) -> None:
        self.ctx = ctx
        self.memo = _Memo()

    def task(self, task: tuple[int, int]) -> TaskOut:
        """Enumerate, prune and screen every candidate with this (tp, cp)."""
        return _TaskWalk(self, *task).run()

    # -- collectives and the optimizer step, memoised --

    def _group(self, size: int, stride: int) -> CommGroup:
        key = (size, stride)
        g = self.memo.groups.get(key)
        if g is None:
            g = self.memo.groups[key] = self.ctx.cluster.comm_group(size, stride=stride)
        return g

    def _comm(self, kind: str, nbytes: float, size: int, stride: int) -> float:
        key = (kind, nbytes, size, stride)
        t = self.memo.comm.get(key)
        if t is None:
            t = self.memo.comm[key] = comm_time(kind, nbytes, self._group(size, stride), self.ctx.algorithm)
        return t

    def _optimizer_step(self, nbytes: float, launches: float = 0.0) -> float:
        t = self.memo.optimizer.get((nbytes, launches))
        if t is None:
            t = self.memo.optimizer[(nbytes, launches)] = optimizer_step_time(self.ctx.screen_profile, nbytes, launches)
        return t

    # -- per-layer costs and stage sums --

    def _layer_table(self, tp: int, sp: bool, cp: int, ep: int, mb: int, recompute: str) -> _LayerTable:
        """Per-layer costs from chunk_costs (one chunk per layer), without the per-chunk non-linear terms
        (host floor, ZeRO-3 gathers), which the stage sums add back."""
        key = (tp, sp, cp, ep, mb, recompute)
        table = self.memo.layers.get(key)
        if table is not None:
            return table
        ctx = self.ctx
        dp = ctx.num_gpus // (tp * cp)
        cfg = ctx.run_config(
            (tp, 1, dp, cp, ep, sp, 1, 0, "1f1b", mb, recompute),
            global_batch=mb * dp,
            host_s_per_layer=0.0,
            host_s_per_kernel=0.0,
        )
        host = ctx.run_config((tp, 1, dp, cp, ep, sp, 1, 0, "1f1b", mb, recompute), global_batch=mb * dp)
        layers = ctx.model.num_layers
        if ctx.model.moe is None and layers > 3:
            # dense layers all cost the same: cost a 3-layer copy (embedding layer, a middle layer, head layer)
            # and repeat its middle layer, which saves the per-layer loop of chunk_costs for every table
            small = cfg.model_copy(update={"model": cfg.model.model_copy(update={"num_layers": 3})})
            chunks = chunk_costs(small, ctx.screen_profile, ctx.cluster, num_chunks=3)
            chunks = [chunks[0]] + [chunks[1]] * (layers - 2) + [chunks[2]]
        else:
            chunks = chunk_costs(cfg, ctx.screen_profile, ctx.cluster, num_chunks=layers)
        # the wait for the slowest rank, as simulate_training charges it (pipelined: a tp = cp = ep = 1 plan
        # without pipeline stages is the only one this over-charges, by sync_jitter_cv x E[max of 2])
        p = cfg.parallel
        factor = step_stretch(cfg.variability, num_gpus=ctx.num_gpus, tp=tp, cp=cp, ep=ep, pp=2, dp=p.dp).compute
        chunks = [c.stretched(factor) for c in chunks]
        table = _LayerTable(
            f=_prefix(c.forward.total_s for c in chunks),
            fc=_prefix(sum(c.forward.comm_s.values()) for c in chunks),
            b=_prefix(c.backward.total_s for c in chunks),
            bc=_prefix(sum(c.backward.comm_s.values()) for c in chunks),
            w=_prefix(c.weight.total_s for c in chunks),
            params=_prefix(c.params for c in chunks),
            send_bytes=chunks[0].send_bytes,
            host_s=layer_host_s(host),
        )
        self.memo.layers[key] = table
        return table

    def _stages(
        self, layers: _LayerTable, key: tuple, pp: int, vpp: int, dual: bool, host_s: float, full: bool
    ) -> _Stages:
        skey = (key, pp, vpp, dual)
        st = self.memo.stages.get(skey)
        if st is not None:
            return st
        slices = chunk_layers(self.ctx.model.num_layers, pp if dual else pp * vpp)
        lo = np.array([s[0] for s in slices])
        hi = np.array([s[-1] + 1 for s in slices])
        count = hi - lo

        def part(prefix: np.ndarray) -> np.ndarray:
            return prefix[hi] - prefix[lo]

        host = count * host_s  # eager-framework host floor per chunk (plan._host_bound)
        f = np.maximum(part(layers.f), host)
        b = np.maximum(part(layers.b), host * (2.0 if full else 1.0))
        w = np.maximum(part(layers.w), host)
        fc, bc = part(layers.fc), part(layers.bc)
        idx = np.arange(len(slices))
        rank = idx if dual else idx % pp
        edges = tuple(tuple(int(c) for c in np.flatnonzero(rank == r)) for r in (0, pp - 1))
        st = _Stages(
            f=f,
            fc=fc,
            b=b,
            bc=bc,
            w=w,
            params=part(layers.params),
            rank=rank,
            n=pp,
            v=2 if dual else vpp,
            dual=dual,
            send_bytes=layers.send_bytes,
            edge_chunks=edges,  # type: ignore[arg-type]
            agg=_aggregate(f, b, f, b, w, fc + bc, rank, pp, 2 if dual else vpp, dual),
        )
        self.memo.stages[skey] = st
        return st

    # -- step time --

    def _zero3(
        self, st: _Stages, dp_cp: int, tp: int, recompute: str, off: OffloadSpec
    ) -> tuple[np.ndarray, np.ndarray]:
        """Forward/backward with ZeRO-3's exposed parameter gathers and gradient reduce-scatters
        (plan._zero3_exposure, per chunk), the gathers no faster than offloaded weights come back."""
        t = self.ctx.training
        gbytes = grad_comm_bytes(t.precision)
        cluster = self.ctx.cluster_spec
        ag = np.array(
            [
                max(self._comm("all_to_all", 2.0 * p, dp_cp, tp), O.param_fetch_s(off, cluster, float(p), dp_cp))
                for p in st.params
            ]
        )
        rs = np.array([self._comm("all_to_all", gbytes * p, dp_cp, tp) for p in st.params])
        f = st.f + np.maximum(0.0, ag - st.f)
        bw = st.b + st.w
        b_ag = self.ctx.stack.zero3_backward_gathers(recompute) * ag
        exposed = np.maximum(0.0, b_ag + rs - bw) if t.overlap_grad_reduce else np.maximum(0.0, b_ag - bw) + rs
        return f, st.b + exposed

    def _rank_tail(self, st: _Stages, side: int, end: float, key: PlanKey) -> float:
        """When the first (``side`` 0) or last (1) rank finishes its step: DP gradient buckets after its last
        backwards, the tied-embedding all-reduce, the optimizer and ZeRO-1/2's parameter gather
        (simulate._rank_tail in closed form)."""
        ctx = self.ctx
        tp, pp, dp, cp, _, _, _, zero, schedule, _, _ = key[:11]
        t, model = ctx.training, ctx.model
        mine = st.edge_chunks[side]
        params = float(sum(st.params[c] for c in mine))
        dp_cp = dp * cp
        gbytes = grad_comm_bytes(t.precision)
        clock = end
        if zero < 3 and dp_cp > 1:
            kind = "all_reduce" if zero == 0 else "reduce_scatter"
            per_bucket = max(t.bucket_mparams * 1e6, 1e6 * dp)
            split = get_schedule(schedule).split_weight
            queue = -math.inf
            # local chunk k's gradients are complete about k x pp backwards before the rank's end (interleaved
            # cool-down runs the chunks' backwards in groups of pp, the last chunk first)
            for k in range(len(mine) - 1, -1, -1):
                c = mine[k]
                d = float(st.w[c] if split else st.b[c] + st.w[c])
                done = end if split else end - k * pp * d
                n = max(1, math.ceil(st.params[c] / per_bucket))
                s = self._comm(kind, float(st.params[c]) * gbytes / n, dp_cp, tp)
                if t.overlap_grad_reduce:
                    queue = max(queue + n * s, done - d + d / n + n * s, done + s)
                else:
                    queue = max(queue, end) + n * s
            clock = max(queue, end)
        if pp > 1 and model.tied_embeddings:
            emb = model.vocab_size * model.hidden_size / tp * gbytes
            clock += self._comm("all_reduce", emb, 2, tp * cp * dp)
        shard = params / dp_cp if zero >= 1 else params
        opt = self.ctx.stack.optimizer
        off = offload_spec(key)
        if off.optimizer != "none":  # the CPU step with its copies (simulate._rank_tail, no delayed update)
            clock += O.optimizer_step(off, ctx.cluster_spec, shard).total_s
        else:
            clock += self._optimizer_step(
                opt.bytes_per_param * shard, opt.launches_per_tensor * PARAM_TENSORS_PER_LAYER * model.num_layers / pp
            )
        if zero in (1, 2) and dp_cp > 1 and not t.overlap_param_gather:
            clock += self._comm("all_gather", 2.0 * params, dp_cp, tp)
        return clock

    def _step_estimate(self, st: _Stages, key: PlanKey, m: int) -> float:
        """Closed-form step time of a plan, seconds."""
        tp, pp, dp, cp, _, _, vpp, zero, schedule, _, recompute = key[:11]
        agg = st.agg
        off = offload_spec(key)
        f, b = st.f, st.b
        if zero == 3 and (dp * cp > 1 or off.params != "none"):
            f, b = self._zero3(st, dp * cp, tp, recompute, off)
        if off.optimizer != "none":  # the backward holds the gradients' copy to the host (plan._finish_phases)
            rate = O.host_rates(self.ctx.cluster_spec).pcie_bytes_s
            d2h = np.array([O.grad_d2h_bytes_of(off, float(p), m, zero, dp * cp) for p in st.params])
            b = np.maximum(b, d2h / rate)
        if f is not st.f or b is not st.b:
            agg = _aggregate(st.f, st.b, f, b, st.w, st.fc + st.bc, st.rank, pp, st.v, st.dual)
        p2p = self._comm("send_recv", st.send_bytes, 2, tp * cp * dp) if pp > 1 else 0.0
        total, early = get_schedule(schedule).screen_time(agg, pp, st.v, m, p2p)
        end = self._rank_tail(st, 0, total, key)
        if pp > 1:
            end = max(end, self._rank_tail(st, 1, total - early, key))
        # host garbage-collection pauses, as simulate_training charges them (plans run the default variability)
        gc = gc_stall_s(
            _VARIABILITY,
            num_gpus=self.ctx.num_gpus,
            tp=tp,
            pp=pp,
            cp=cp,
            ep=key[4],
            zero=zero,
            aligned=self.ctx.stack.gc_aligned,
        )
        return end + gc

    # -- memory (the memory model's functions over per-layer arrays) --

    def _rank_reps(self, pp: int, vpp: int, dual: bool) -> tuple[_Rep, ...]:
        """The pipeline ranks whose memory can be the peak, with their layers (memory.rank_layers).

        Ranks holding the same mix of dense and MoE layers differ only in how many micro-batches they keep,
        which falls with the rank in every schedule but DualPipe; so the first rank of each mix is enough, plus
        the first and last rank (embedding, head). With DualPipe (rank r holds stages r and pp-1-r) the count
        depends on both chunks' sizes and m, so a mix (also of its own stage, which sizes ZeRO-3's prefetch
        buffer) keeps every rank's chunk weights and the estimate takes the largest count among them.
        """
        key = (pp, vpp, dual)
        hit = self.memo.rank_layers.get(key)
        if hit is None:
            model = self.ctx.model
            chunks = chunk_layers(model.num_layers, pp * vpp)
            kinds = np.array([model.is_moe_layer(i) for i in range(model.num_layers)], dtype=bool)
            stage = [np.array([i for v in range(vpp) for i in chunks[r + v * pp]], dtype=int) for r in range(pp)]
            held = [np.concatenate([stage[r], stage[pp - 1 - r]]) if dual else stage[r] for r in range(pp)]
            unit = model.num_layers / pp
            weight = [len(stage[r]) / unit for r in range(pp)]

            def mix(layers: np.ndarray) -> tuple[int, int]:
                moe = int(kinds[layers].sum())
                return len(layers) - moe, moe

            groups: dict[tuple, list[int]] = {}
            for r in range(pp):
                edge = r in (0, pp - 1)  # the first and last stand alone
                groups.setdefault((-1, r) if edge else (mix(held[r]), mix(stage[r])), []).append(r)
            hit = self.memo.rank_layers[key] = tuple(
                _Rep(
                    r,
                    held[r],
                    stage[r],
                    first=r == 0 or (dual and r == pp - 1),
                    last=r == pp - 1 or (dual and r == 0),
                    weight=weight[r],
                    dual=tuple((x, weight[x], weight[pp - 1 - x]) for x in g) if dual else (),
                )
                for r, g in sorted((g[0], g) for g in groups.values())
            )
        return hit

    def _layer_params(self) -> np.ndarray:
        """Per layer: (dense parameters, routed-expert parameters)."""
        hit = self.memo.params.get(())
        if hit is None:
            model = self.ctx.model
            routed = model.routed_expert_params / model.num_moe_layers if model.num_moe_layers else 0.0
            rows = []
            for i in range(model.num_layers):
                experts = routed if model.is_moe_layer(i) else 0.0
                rows.append((model.params_per_layer(i) - experts, experts))
            hit = self.memo.params[()] = np.array(rows, dtype=float)
        return hit

    def _static_parts(
        self, tp: int, pp: int, dp: int, cp: int, ep: int, vpp: int, mb: int, dual: bool
    ) -> tuple[_RankStatic, ...]:
        """memory.static_memory of the representative ranks (:meth:`_rank_reps`), at every ZeRO stage, from the
        memory model's own functions (sharded_states, buffer_bytes) over per-layer parameter arrays: a rank's
        layers (both DualPipe chunks, whose two copies of each stage ZeRO shards over twice the replicas), the
        embedding on the first, head, MTP modules and a word-embedding copy on the last (memory._stage_params),
        Adam state at memory.optimizer_bytes_per_param."""
        key = (tp, pp, dp, cp, ep, vpp, mb, dual)
        hit = self.memo.statics.get(key)
        if hit is not None:
            return hit
        ctx = self.ctx
        model, t = ctx.model, ctx.training
        h = model.hidden_size
        lp = self._layer_params()
        expert_split = min(tp * ep, tp * dp * cp)
        copies = 2 if dual else 1
        reps = (copies * dp * cp, copies * tp * dp * cp / expert_split)
        optimizer = M.MASTER_BYTES + 2 * M.MOMENT_BYTES[t.optimizer_moment_dtype]
        optimizer += M.EMA_BYTES if t.ema == "gpu" else 0.0
        fp8 = t.precision == "fp8"
        mtp_dense = mtp_experts = 0.0
        if model.mtp_depth:  # memory._mtp_params: one layer like the last, a 2h x h projection and three norms
            mtp_dense = model.mtp_depth * (lp[-1, 0] / tp + (2 * h * h + 3 * h) / tp)
            mtp_experts = model.mtp_depth * lp[-1, 1] / expert_split
        sbh = (t.seq_len / cp) * mb * h
        buffers = M.buffer_bytes(tp=tp, pp=pp, dp=dp, cp=cp, sbh=sbh)
        out = []
        for rep in self._rank_reps(pp, vpp, dual):
            dense = float(lp[rep.layers, 0].sum()) / tp
            experts = float(lp[rep.layers, 1].sum()) / expert_split
            edges = 0.0
            if rep.first:
                edges += model.embedding_params()
            if rep.last:
                edges += model.output_params()
                dense += mtp_dense
                experts += mtp_experts
                if (model.tied_embeddings or model.mtp_depth) and not rep.first:
                    edges += model.vocab_size * h
            par = M.StageParams(dense, experts, edges / tp)
            parts = tuple(
                M.sharded_states(par, *reps, zero=zero, fp8=fp8, optimizer_bytes=optimizer) for zero in range(4)
            )
            comp = M.compression_state_bytes(t.compression, dp * cp, par)
            static = tuple(sum(p) + comp for p in parts)
            biggest = float((lp[rep.stage, 0] / tp + lp[rep.stage, 1] / expert_split).max())
            zero3 = M.buffer_bytes(tp=tp, pp=pp, dp=dp, cp=cp, sbh=sbh, zero3_layer_params=biggest)
            capped = min(biggest, O.MAX_LIVE_PARAMS / M.ZERO3_PREFETCH_LAYERS)
            out.append(
                _RankStatic(
                    static,  # type: ignore[arg-type]
                    (buffers, zero3),
                    rep.rank,
                    rep.weight,
                    rep.dual,
                    parts=parts,
                    zero3_capped=M.buffer_bytes(tp=tp, pp=pp, dp=dp, cp=cp, sbh=sbh, zero3_layer_params=capped),
                    compression=comp,
                )
            )
        hit = self.memo.statics[key] = tuple(out)
        return hit

    def _act_parts(
        self, tp: int, sp: bool, cp: int, mb: int, recompute: str, pp: int, vpp: int, dual: bool
    ) -> tuple[_RankActs, ...]:
        """memory.activation_bytes_per_microbatch and transient_activation_bytes of the representative ranks:
        per in-flight micro-batch the mean over the rank's layers times num_layers / pp (the engine's in-flight
        unit), the embedding dropout mask on the first rank (with dropout), the output layer (with MTP's
        modules) on the last."""
        key = (tp, sp, cp, mb, recompute, pp, vpp, dual)
        hit = self.memo.act_parts.get(key)
        if hit is not None:
            return hit
        ctx = self.ctx
        model, t = ctx.model, ctx.training
        h = model.hidden_size
        keep, work = self._activations(tp, sp, cp, mb, recompute)
        tokens = (t.seq_len / cp) * mb
        unit = model.num_layers / pp
        head = M.output_layer_bytes(tokens, h, model.vocab_size, tp, sp)
        out_layer = head
        if model.mtp_depth:  # memory._output_layer_activations
            proj = 2 * M.ACT_BYTES * tokens * h / (tp if sp else 1)
            out_layer = head + model.mtp_depth * (head + float(keep[-1]) + proj)
        mask = M.embedding_mask_bytes(tokens * h, tp, sp) if t.dropout else 0.0
        out = []
        for rep in self._rank_reps(pp, vpp, dual):
            per_mb = float(keep[rep.layers].sum()) / len(rep.layers) * unit + (mask if rep.first else 0.0)
            transient = float(work[rep.layers].max()) if recompute != "none" else 0.0
            out.append(_RankActs(per_mb, transient, out_layer if rep.last else 0.0))
        hit = self.memo.act_parts[key] = tuple(out)
        return hit

    def _activations(self, tp: int, sp: bool, cp: int, mb: int, recompute: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-layer activation bytes kept per micro-batch, and the recompute working set per layer
        (memory._layer_activations: with the training's dropout, recompute_modules and cache dtype)."""
        key = (tp, sp, cp, mb, recompute)
        hit = self.memo.acts.get(key)
        if hit is not None:
            return hit
        t = self.ctx.training
        model, seq = self.ctx.model, t.seq_len // cp
        kinds: dict[bool, tuple[float, float]] = {}
        keep, work = [], []
        for i in range(model.num_layers):
            moe = model.is_moe_layer(i)
            if moe not in kinds:
                args = {
                    "tp": tp,
                    "sp": sp,
                    "flash_attention": t.flash_attention,
                    "dropout": t.dropout,
                    "layer": i,
                    "recompute_modules": t.recompute_modules,
                    "cache_dtype": t.activation_cache_dtype,
                }
                kept = model.activation_bytes_per_layer(seq, mb, recompute=recompute, **args)
                full = model.activation_bytes_per_layer(seq, mb, recompute="none", **args)
                kinds[moe] = (kept, full - kept if recompute != "none" else 0.0)
            keep.append(kinds[moe][0])
            work.append(kinds[moe][1])
        hit = self.memo.acts[key] = (np.array(keep), np.array(work))
        return hit

    def _memory_estimate(
        self, statics: tuple[_RankStatic, ...], acts: tuple[_RankActs, ...], key: PlanKey, m: int
    ) -> float:
        """Peak bytes per GPU over the pipeline ranks that can hold the most (simulate._memory)."""
        pp, vpp, zero, schedule, recompute = key[1], key[6], key[7], key[8], key[10]
        sched = get_schedule(schedule)
        gpipe, dual = sched.all_forwards_first, sched.dual
        ctx = self.ctx
        ratio = M.fragmentation_ratio(
            recompute=recompute, zero=zero, moe=ctx.model.is_moe, expandable_segments=ctx.training.expandable_segments
        )
        half = m // 2
        peak = 0.0
        for s, a in zip(statics, acts, strict=True):
            per_mb = a.per_mb + (a.out_layer if gpipe else 0.0)
            transient = a.transient + (0.0 if gpipe else a.out_layer)
            if dual:
                # DualPipe.inflight per direction, each at its own chunk's weight (the engine weighs a chunk by
                # its layers / (num_layers / pp)): rank r keeps min(pp - r, m/2) micro-batches of its own
                # chunk and min(r + 1, m/2) of chunk pp-1-r, the reverse direction's
                inflight = max(min(pp - r, half) * own + min(r + 1, half) * mirror for r, own, mirror in s.dual)
            else:
                inflight = sched.inflight(s.rank, pp, vpp, m, 1.0 if sched.interleaved else s.weight)
            held = inflight * per_mb + transient
            state, buffers = self._placed(s, zero, key[2] * key[3], offload_spec(key))
            peak = max(peak, M.peak_bytes(state, buffers, held, ratio=ratio))
        return peak

    def _placed(self, s: _RankStatic, zero: int, dp_cp: int, off: OffloadSpec) -> tuple[float, float]:
        """GPU bytes of a rank's model states and buffers under the plan's offload (memory.static_memory through
        offload.place_states); infinite when the offloaded states overflow the host memory per GPU."""
        if not off.any:
            return s.static[zero], s.buffers[zero == 3]
        t = self.ctx.training
        opt_bpp = M.MASTER_BYTES + 2 * M.MOMENT_BYTES[t.optimizer_moment_dtype] + (M.EMA_BYTES if t.ema == "gpu" else 0)
        bucket = M.GRAD_BYTES * M.DDP_BUCKET_MIN_ELEMENTS
        placed = O.place_states(off, dp_cp, *s.parts[zero], opt_bpp, bucket)
        if placed.host > O.host_rates(self.ctx.cluster_spec).host_bytes:
            return math.inf, 0.0
        buffers = (s.zero3_capped if off.params != "none" else s.buffers[1]) if zero == 3 else s.buffers[0]
        return placed.weights + placed.gradients + placed.optimizer + s.compression, buffers + placed.extra_buffers


# ---- enumeration (one task per (tp, cp)) ---------------------------------------------------------


@dataclass
class TaskOut:
    """What one (tp, cp) task found: prune counts, the feasible count, its fastest plans and memory front."""

    candidates: int = 0
    feasible: int = 0
    pruned: dict[str, int] = field(default_factory=dict)
    best: list[Screened] = field(default_factory=list)  # (step s, memory bytes, key)
    front: list[Screened] = field(default_factory=list)

    def prune(self, reason: str, n: int) -> None:
        """Count ``n`` candidates pruned for ``reason``."""
        if n:
            self.pruned[reason] = self.pruned.get(reason, 0) + n
            self.candidates += n


class _TaskWalk:
    """The loop nest of one (tp, cp) task, a method per level: pp, then ep and micro-batch, then sp and
    recompute, then (schedule, vpp), then ZeRO. A level's rule that fails prunes, counted, the whole subtree
    below it; the leaves are screened for memory, then time."""

    def __init__(self, screen: Screen, tp: int, cp: int) -> None:
        self.screen, self.ctx, self.tp, self.cp = screen, screen.ctx, tp, cp
        space, model = self.ctx.space, self.ctx.model
        self.variants = schedule_variants(space, model.num_layers)
        self.eps = ep_options(space, model)
        self.per_zero = len(space.offload)  # candidates under one ZeRO stage
        self.per_sp = len(space.zero) * self.per_zero * len(self.variants) * len(space.recompute)  # under one sp
        self.leaf = self.per_sp * len(space.sp)  # candidates under one (tp, pp, cp, ep, micro-batch)
        self.out = TaskOut()
        self.found: list[Screened] = []

    def run(self) -> TaskOut:
        """Walk every pp; keep the fastest plans and the time/memory front."""
        n, tp, cp = self.ctx.num_gpus, self.tp, self.cp
        base_pp = n // (tp * cp) if n % (tp * cp) == 0 else 1
        for pp in options(self.ctx.space.pp, base_pp):
            self._pipeline(pp)
        self.found.sort()
        self.out.best = self.found[: self.ctx.keep]
        self.out.front = front_2d(self.found)
        return self.out

    def _pipeline(self, pp: int) -> None:
        ctx, tp, cp = self.ctx, self.tp, self.cp
        n, model = ctx.num_gpus, ctx.model
        dp = n // (tp * pp * cp) if n % (tp * pp * cp) == 0 else 1
        mbs = micro_batches(ctx.space, ctx.training.global_batch, dp)
        reason = pipeline_rule(model, n, ctx.training.seq_len, tp, pp, cp)
        if reason:
            self.out.prune(reason, len(self.eps) * len(mbs) * self.leaf)
            return
        for ep in self.eps:
            reason = ep_rule(model, n, tp, dp, cp, ep)
            if reason:
                self.out.prune(reason, len(mbs) * self.leaf)
                continue
            for mb in mbs:
                self._micro_batch(pp, dp, ep, mb)

    def _micro_batch(self, pp: int, dp: int, ep: int, mb: int) -> None:
        gb, space = self.ctx.training.global_batch, self.ctx.space
        if gb % (mb * dp):
            self.out.prune(R_BATCH, self.leaf)
            return
        m = gb // (mb * dp)
        for sp in space.sp:
            if sp and self.tp == 1:
                self.out.prune(R_SP, self.per_sp)
                continue
            for recompute in space.recompute:
                self._schedules((self.tp, sp, self.cp, ep, mb, recompute), pp, dp, m)

    def _schedules(self, lkey: tuple[int, bool, int, int, int, str], pp: int, dp: int, m: int) -> None:
        """Every (schedule, vpp) of one (tp, sp, cp, ep, micro-batch, recompute) on ``pp`` stages."""
        screen = self.screen
        tp, sp, cp, ep, mb, recompute = lkey
        table = None
        for schedule, vpp in self.variants:
            reason = schedule_rule(schedule, pp, vpp, m, self.ctx.model.num_layers)
            if reason:
                self.out.prune(reason, len(self.ctx.space.zero) * self.per_zero)
                continue
            if table is None:
                table = screen._layer_table(*lkey)
            dual = get_schedule(schedule).dual
            st = screen._stages(table, lkey, pp, vpp, dual, table.host_s, recompute == "full")
            statics = screen._static_parts(tp, pp, dp, cp, ep, vpp, mb, dual)
            acts = screen._act_parts(tp, sp, cp, mb, recompute, pp, vpp, dual)
            for zero in self.ctx.space.zero:
                for off in self.ctx.space.offload:
                    key: PlanKey = (tp, pp, dp, cp, ep, sp, vpp, zero, schedule, mb, recompute, off)
                    self._leaf(st, statics, acts, key, m)

    def _leaf(
        self, st: _Stages, statics: tuple[_RankStatic, ...], acts: tuple[_RankActs, ...], key: PlanKey, m: int
    ) -> None:
        """One candidate: pruned as a duplicate or out of memory, else screened."""
        dp, cp, zero = key[2], key[3], key[7]
        weights_off = "params" in OFFLOAD_SPECS[key[11]]
        if zero and dp * cp == 1 and not (zero == 3 and weights_off):  # one replica: ZeRO-3 can still offload weights
            self.out.prune(R_ZERO, 1)
            return
        reason = offload_rule(key[11], zero, dp * cp)
        if reason:
            self.out.prune(reason, 1)
            return
        mem = self.screen._memory_estimate(statics, acts, key, m)
        if mem > self.ctx.capacity:
            self.out.prune(R_OOM, 1)
            return
        self.out.candidates += 1
        self.out.feasible += 1
        self.found.append((self.screen._step_estimate(st, key, m), mem, key))


def front_2d(points: Sequence[Screened]) -> list[Screened]:
    """Plans no other plan beats on both screened time and memory (``points`` sorted by time)."""
    front, best_mem = [], math.inf
    for p in points:
        if p[1] < best_mem:
            front.append(p)
            best_mem = p[1]
    return front
