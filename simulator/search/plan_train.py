"""Training plan search: every parallel plan of a model on a cluster, screened in closed form, the best simulated.

``clustersim plan train MODEL --gpus N --gpu TYPE`` answers "how should I split this job?" (issue #9). A
simulation costs 0.05-1 s, and the space -- TP, PP, DP, CP, EP, virtual stages, schedule, micro-batch, ZeRO
stage, recompute, sequence parallelism -- holds about 1.5 million candidates for GPT-3 on 1,024 GPUs, so the
search runs in three steps:

1. **Enumerate** every candidate and prune the impossible ones with the integer rules of
   :class:`simulator.core.config.RunConfig` and the schedules (each pruned candidate is counted under its reason;
   a rule that fails high in the loop nest counts its whole subtree). Duplicates -- sequence parallelism
   without TP, ZeRO without data parallelism, a schedule without a pipeline -- are pruned too, counted.
2. **Screen** every remaining candidate in closed form. Per-layer phase costs come from
   :func:`simulator.training.plan.chunk_costs` once per distinct (tp, sp, cp, ep, micro-batch, recompute) and
   are reused by every plan sharing them; a plan's stages are prefix sums of them. The step time follows the
   schedule's bubble (``m S + (sum S - S_max)/v`` for 1F1B-like schedules), the DP gradient buckets' exposure
   and the optimizer; the per-GPU peak memory mirrors :mod:`simulator.training.memory` term by term (a test
   pins the two together), and plans that do not fit are pruned as "out of memory".
3. **Simulate** the ``top_k`` fastest screened plans plus the screen's time/memory Pareto front with
   :func:`simulator.training.simulate_training`; every plan reported was simulated. What the screen leaves
   out -- power-cap throttling, gradient compression, the exact DualPipe pairing -- only the simulation sees.

The work is split over processes by (tp, cp), so no two workers build the same layer costs, and every order
is sorted on a plan key, so results do not depend on the number of workers.
"""

from __future__ import annotations

import heapq
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np
from pydantic import ValidationError

from hwmodels.errors import ClusterSimError, first_validation_error
from hwmodels.profile import Profile, load_profile
from hwmodels.topology import Cluster, ClusterSpec, CommGroup
from simulator.core.config import ParallelSpec, RunConfig, TrainingSpec, apply_overrides
from simulator.core.costs import comm_time
from simulator.core.device_memory import usable_memory_bytes
from simulator.energy.accounting import PowerSpec, SiteSpec
from simulator.models import ModelSpec, get_model
from simulator.moe.routing import MoERouting
from simulator.search.pareto import pareto_front
from simulator.training import TrainingResult, simulate_training
from simulator.training import memory as M
from simulator.training.plan import chunk_costs, chunk_layers, grad_comm_bytes
from simulator.training.schedules import StageAggregate, get_schedule, schedule_names
from simulator.training.simulate import ADAM_BYTES_PER_PARAM

SCHEDULES: tuple[str, ...] = schedule_names()  # the registry, in registration order
RECOMPUTE: tuple[str, ...] = get_args(TrainingSpec.model_fields["recompute"].annotation)

# Prune reasons (keys of PlanSearchResult.pruned).
R_WORLD = "tp*pp*cp does not divide num_gpus"
R_TP_HEADS = "tp does not divide the attention heads"
R_TP_KV = "tp and the kv heads do not divide one another"
R_CP_SEQ = "cp does not divide seq_len"
R_PP_LAYERS = "pp*vpp exceeds num_layers"
R_EP = "ep does not divide the experts or dp*cp*tp"
R_EP_FIT = "the ep group (stride tp*cp) does not fit in num_gpus"
R_BATCH = "global_batch not divisible by micro_batch*dp"
R_SP = "duplicate: sp needs tp > 1"
R_PIPE = "duplicate: a pipeline schedule needs pp > 1"
R_ZERO = "duplicate: zero needs dp*cp > 1"
R_VPP_LAYERS = "interleaving needs num_layers divisible by pp*vpp"
R_OOM = "out of memory"

#: Screened Pareto plans slower than this many times the fastest are not simulated (few would trade that much
#: time for memory, and their long pipelines take the longest to simulate).
PARETO_MAX_SLOWDOWN = 1.5

#: ... nor those whose pipeline has more tasks (forward, backward, weight-gradient per micro-batch and chunk)
#: than this, which takes the engine seconds.
PARETO_MAX_TASKS = 20_000

#: (tp, pp, dp, cp, ep, sp, vpp, zero, schedule, micro_batch, recompute): the order every tie is broken in.
PlanKey = tuple[int, int, int, int, int, bool, int, int, str, int, str]


def divisors(n: int) -> tuple[int, ...]:
    """Positive divisors of ``n`` in increasing order."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return tuple(sorted(set(small + [n // d for d in small])))


@dataclass(frozen=True)
class SearchSpace:
    """The values each plan dimension may take; ``None`` means every value the cluster and model allow.

    Defaults: tp, pp, cp over the divisors of the GPU count (dp is what remains), ep over the divisors of the
    routed experts (1 for dense models), micro-batch over the divisors of the per-replica batch, vpp over the
    divisors >= 2 of the layer count (interleaved schedule only).
    """

    tp: tuple[int, ...] | None = None
    pp: tuple[int, ...] | None = None
    cp: tuple[int, ...] | None = None
    ep: tuple[int, ...] | None = None
    micro_batch: tuple[int, ...] | None = None
    vpp: tuple[int, ...] | None = None
    schedule: tuple[str, ...] = SCHEDULES
    zero: tuple[int, ...] = (0, 1, 2, 3)
    recompute: tuple[str, ...] = RECOMPUTE
    sp: tuple[bool, ...] = (False, True)

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "cp", "ep", "micro_batch", "vpp"):
            values = getattr(self, name)
            if values is None:
                continue
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ClusterSimError(f"search space {name}={list(values)} must list positive integers")
            object.__setattr__(self, name, tuple(sorted(set(values))))  # a value listed twice counts once
        for name in ("schedule", "zero", "recompute", "sp"):
            object.__setattr__(self, name, tuple(dict.fromkeys(getattr(self, name))))
        if self.vpp is not None and min(self.vpp) < 2:
            raise ClusterSimError(f"search space vpp={list(self.vpp)}: interleaving degrees start at 2")
        checks = [("schedule", SCHEDULES), ("recompute", RECOMPUTE), ("zero", (0, 1, 2, 3)), ("sp", (False, True))]
        for name, allowed in checks:
            values = getattr(self, name)
            bad = [v for v in values if v not in allowed]
            if not values or bad:
                raise ClusterSimError(
                    f"search space {name}={list(values)}: choose from {', '.join(str(a) for a in allowed)}"
                )

    @classmethod
    def parse(cls, items: Iterable[str]) -> SearchSpace:
        """Build a space from ``key=v1,v2`` strings (the CLI's ``--space``), e.g. ``tp=4,8`` or ``sp=true``."""
        fields: dict[str, Any] = {}
        names = {f for f in cls.__dataclass_fields__}
        aliases = {"mb": "micro_batch", "micro-batch": "micro_batch"}
        for item in items:
            if "=" not in item:
                raise ClusterSimError(f"--space {item!r} is not key=v1,v2 (e.g. --space tp=4,8)")
            key, text = (s.strip() for s in item.split("=", 1))
            key = aliases.get(key, key)
            if key not in names:
                raise ClusterSimError(
                    f"--space {key!r} is not a plan dimension; use one of: {', '.join(sorted(names))}"
                )
            parts = [p.strip() for p in text.split(",") if p.strip()]
            try:
                if key in ("schedule", "recompute"):
                    values: tuple[Any, ...] = tuple(parts)
                elif key == "sp":
                    values = tuple({"true": True, "false": False, "1": True, "0": False}[p.lower()] for p in parts)
                else:
                    values = tuple(int(p) for p in parts)
            except (KeyError, ValueError):
                raise ClusterSimError(f"--space {item!r}: values must be integers (sp: true/false)") from None
            fields[key] = values
        return cls(**fields)


# ---- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanResult:
    """A simulated plan: its parallel and training settings, the simulation, and what the screen predicted."""

    parallel: ParallelSpec
    training: TrainingSpec
    config: RunConfig  # the whole config that was simulated (``clustersim train`` takes its model_dump)
    result: TrainingResult
    screen_step_s: float
    screen_memory_gb: float
    screen_rank: int  # position in the screen's time order among the feasible plans (0 = fastest)

    @property
    def energy_j(self) -> float | None:
        """Energy per step, J, when the result reports one (facility energy of a breakdown), else None."""
        value = getattr(self.result, "energy_j", None)
        if isinstance(value, dict):
            value = value.get("facility", sum(value.values())) if value else None
        return float(value) if value is not None else None

    def label(self) -> str:
        """Short human description: 'TP8 PP12 DP16 interleaved/2 mb1 ZeRO-1 selective SP'."""
        p, t = self.parallel, self.training
        parts = [f"TP{p.tp}", f"PP{p.pp}", f"DP{p.dp}"]
        parts += [f"CP{p.cp}"] if p.cp > 1 else []
        parts += [f"EP{p.ep}"] if p.ep > 1 else []
        parts += [p.schedule + (f"/{p.vpp}" if p.vpp > 1 else ""), f"mb{t.micro_batch}", f"ZeRO-{p.zero}"]
        parts += [t.recompute] + (["SP"] if p.sp else [])
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """``parallel``, ``training``, every TrainingResult field, and the screen's estimates."""
        return {
            "plan": self.label(),
            "parallel": self.parallel.model_dump(),
            "training": self.training.model_dump(mode="json"),
            **self.result.to_dict(),
            "screen": {
                "step_time_s": self.screen_step_s,
                "memory_gb": self.screen_memory_gb,
                "rank": self.screen_rank,
            },
        }


@dataclass
class PlanSearchResult:
    """What a plan search found, and how much of the space it looked at."""

    model: str
    gpu: str
    num_gpus: int
    global_batch: int
    seq_len: int
    best: list[PlanResult]
    pareto: list[PlanResult]
    simulated: list[PlanResult]
    candidates: int
    feasible: int
    pruned: dict[str, int]
    screen_s: float
    simulate_s: float
    wall_s: float
    workers: int

    @property
    def plans_evaluated(self) -> int:
        """Candidates screened: evaluated in closed form or pruned with a reason (every candidate of the space)."""
        return self.candidates

    @property
    def plans_per_second(self) -> float:
        """Candidates per second of the search's wall time (screening and simulation together)."""
        return self.candidates / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def plans_simulated(self) -> int:
        return len(self.simulated)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``best``, ``pareto``, ``plans_evaluated``, ``plans_per_second`` and the counts."""
        return {
            "model": self.model,
            "gpu": self.gpu,
            "num_gpus": self.num_gpus,
            "global_batch": self.global_batch,
            "seq_len": self.seq_len,
            "best": [p.to_dict() for p in self.best],
            "pareto": [p.to_dict() for p in self.pareto],
            "plans_evaluated": self.plans_evaluated,
            "plans_per_second": self.plans_per_second,
            "plans_per_second_per_worker": self.plans_per_second / self.workers,
            "plans_feasible": self.feasible,
            "plans_simulated": self.plans_simulated,
            "pruned": dict(self.pruned),
            "screen_s": self.screen_s,
            "simulate_s": self.simulate_s,
            "wall_s": self.wall_s,
            "workers": self.workers,
        }


# ---- the search context (one per process) ------------------------------------------------------


@dataclass
class _Context:
    """Everything a worker needs, pickled once per process."""

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
    cluster: Cluster = field(init=False)
    capacity: float = field(init=False)
    screen_profile: Profile = field(init=False)  # the profile at the job's SM share and clock

    def __post_init__(self) -> None:
        self.cluster = self.cluster_spec.resolve()
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
        return self.cluster_spec.num_gpus

    def run_config(self, key: PlanKey, **training: Any) -> RunConfig:
        """The validated config of a plan (``training`` overrides the base's fields)."""
        tp, pp, dp, cp, ep, sp, vpp, zero, schedule, mb, recompute = key
        par = ParallelSpec(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, sp=sp, vpp=vpp, zero=zero, schedule=schedule)
        train = self.training.model_copy(update={"micro_batch": mb, "recompute": recompute, **training})
        return RunConfig(
            model=self.model,
            cluster=self.cluster_spec,
            parallel=par,
            training=train,
            moe_routing=self.moe_routing,
            power=self.power,
            site=self.site,
            seed=self.seed,
        )


_CTX: _Context | None = None


def _init_worker(ctx: _Context | None) -> None:
    """Install the search context in this process (None drops it) and empty the memo tables."""
    global _CTX
    _CTX = ctx
    _Caches.clear()


class _Caches:
    """Per-process memo tables: per-layer costs, activations, stage sums and collective times."""

    layers: dict[tuple, _LayerTable] = {}
    stages: dict[tuple, _Stages] = {}
    acts: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    rank_layers: dict[tuple, tuple[tuple[int, np.ndarray], ...]] = {}
    params: dict[tuple, np.ndarray] = {}
    statics: dict[tuple, tuple[_RankStatic, ...]] = {}
    act_parts: dict[tuple, tuple[_RankActs, ...]] = {}
    groups: dict[tuple[int, int], CommGroup] = {}
    comm: dict[tuple, float] = {}
    memop: dict[float, float] = {}

    @classmethod
    def clear(cls) -> None:
        for table in (
            cls.layers,
            cls.stages,
            cls.acts,
            cls.rank_layers,
            cls.params,
            cls.statics,
            cls.act_parts,
            cls.groups,
            cls.comm,
            cls.memop,
        ):
            table.clear()


def _group(size: int, stride: int) -> CommGroup:
    key = (size, stride)
    g = _Caches.groups.get(key)
    if g is None:
        assert _CTX is not None
        g = _Caches.groups[key] = _CTX.cluster.comm_group(size, stride=stride)
    return g


def _comm(kind: str, nbytes: float, size: int, stride: int) -> float:
    key = (kind, nbytes, size, stride)
    t = _Caches.comm.get(key)
    if t is None:
        t = _Caches.comm[key] = comm_time(kind, nbytes, _group(size, stride))
    return t


def _memop(nbytes: float) -> float:
    t = _Caches.memop.get(nbytes)
    if t is None:
        assert _CTX is not None
        t = _Caches.memop[nbytes] = _CTX.screen_profile.memory_op_time(nbytes)
    return t


# ---- per-layer costs and stage sums --------------------------------------------------------------


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


def _prefix(values: Iterable[float]) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.fromiter(values, dtype=float))])


def _layer_table(tp: int, sp: bool, cp: int, ep: int, mb: int, recompute: str) -> _LayerTable:
    """Per-layer costs from chunk_costs (one chunk per layer), without the per-chunk non-linear terms
    (host floor, ZeRO-3 gathers), which the stage sums add back."""
    key = (tp, sp, cp, ep, mb, recompute)
    table = _Caches.layers.get(key)
    if table is not None:
        return table
    ctx = _CTX
    assert ctx is not None
    dp = ctx.num_gpus // (tp * cp)
    cfg = ctx.run_config(
        (tp, 1, dp, cp, ep, sp, 1, 0, "1f1b", mb, recompute), global_batch=mb * dp, host_s_per_layer=0.0
    )
    layers = ctx.model.num_layers
    if ctx.model.moe is None and layers > 3:
        # dense layers all cost the same: cost a 3-layer copy (embedding layer, a middle layer, head layer)
        # and repeat its middle layer, which saves the per-layer loop of chunk_costs for every table
        small = cfg.model_copy(update={"model": cfg.model.model_copy(update={"num_layers": 3})})
        chunks = chunk_costs(small, ctx.screen_profile, ctx.cluster, num_chunks=3)
        chunks = [chunks[0]] + [chunks[1]] * (layers - 2) + [chunks[2]]
    else:
        chunks = chunk_costs(cfg, ctx.screen_profile, ctx.cluster, num_chunks=layers)
    table = _LayerTable(
        f=_prefix(c.forward.total_s for c in chunks),
        fc=_prefix(sum(c.forward.comm_s.values()) for c in chunks),
        b=_prefix(c.backward.total_s for c in chunks),
        bc=_prefix(sum(c.backward.comm_s.values()) for c in chunks),
        w=_prefix(c.weight.total_s for c in chunks),
        params=_prefix(c.params for c in chunks),
        send_bytes=chunks[0].send_bytes,
    )
    _Caches.layers[key] = table
    return table


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


def _stages(layers: _LayerTable, key: tuple, pp: int, vpp: int, dual: bool, host_s: float, full: bool) -> _Stages:
    skey = (key, pp, vpp, dual)
    st = _Caches.stages.get(skey)
    if st is not None:
        return st
    assert _CTX is not None
    slices = chunk_layers(_CTX.model.num_layers, pp if dual else pp * vpp)
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
    _Caches.stages[skey] = st
    return st


# ---- the closed-form screen: step time ----------------------------------------------------------


def _zero3(st: _Stages, dp_cp: int, tp: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward/backward with ZeRO-3's exposed parameter gathers and gradient reduce-scatters
    (plan._zero3_exposure, per chunk)."""
    assert _CTX is not None
    t = _CTX.training
    gbytes = grad_comm_bytes(t.precision)
    ag = np.array([_comm("all_to_all", 2.0 * p, dp_cp, tp) for p in st.params])
    rs = np.array([_comm("all_to_all", gbytes * p, dp_cp, tp) for p in st.params])
    f = st.f + np.maximum(0.0, ag - st.f)
    bw = st.b + st.w
    exposed = np.maximum(0.0, ag + rs - bw) if t.overlap_grad_reduce else np.maximum(0.0, ag - bw) + rs
    return f, st.b + exposed


def _rank_tail(st: _Stages, side: int, end: float, key: PlanKey) -> float:
    """When the first (``side`` 0) or last (1) rank finishes its step: DP gradient buckets after its last
    backwards, the tied-embedding all-reduce, the optimizer and ZeRO-1/2's parameter gather
    (simulate._rank_tail in closed form)."""
    ctx = _CTX
    assert ctx is not None
    tp, pp, dp, cp, _, _, _, zero, schedule, _, _ = key
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
            s = _comm(kind, float(st.params[c]) * gbytes / n, dp_cp, tp)
            if t.overlap_grad_reduce:
                queue = max(queue + n * s, done - d + d / n + n * s, done + s)
            else:
                queue = max(queue, end) + n * s
        clock = max(queue, end)
    if pp > 1 and model.tied_embeddings:
        emb = model.vocab_size * model.hidden_size / tp * gbytes
        clock += _comm("all_reduce", emb, 2, tp * cp * dp)
    shard = params / dp_cp if zero >= 1 else params
    clock += _memop(ADAM_BYTES_PER_PARAM * shard)
    if zero in (1, 2) and dp_cp > 1 and not t.overlap_param_gather:
        clock += _comm("all_gather", 2.0 * params, dp_cp, tp)
    return clock


def _step_estimate(st: _Stages, key: PlanKey, m: int) -> float:
    """Closed-form step time of a plan, seconds."""
    tp, pp, dp, cp, _, _, vpp, zero, schedule, _, _ = key
    agg = st.agg
    if zero == 3 and dp * cp > 1:
        f, b = _zero3(st, dp * cp, tp)
        agg = _aggregate(st.f, st.b, f, b, st.w, st.fc + st.bc, st.rank, pp, st.v, st.dual)
    p2p = _comm("send_recv", st.send_bytes, 2, tp * cp * dp) if pp > 1 else 0.0
    total, early = get_schedule(schedule).screen_time(agg, pp, st.v, m, p2p)
    end = _rank_tail(st, 0, total, key)
    if pp > 1:
        end = max(end, _rank_tail(st, 1, total - early, key))
    return end


# ---- the closed-form screen: memory (the memory model's functions over per-layer arrays) ----------


@dataclass(frozen=True)
class _RankStatic:
    """Bytes of weights + gradients + optimizer state at each ZeRO stage, and buffers, on one rank."""

    static: tuple[float, float, float, float]
    buffers: tuple[float, float]  # zero < 3, zero == 3 (prefetched layers)
    layers: int
    rank: int


@dataclass(frozen=True)
class _RankActs:
    """Activation bytes of one rank: per in-flight micro-batch, the once-per-rank working set, the output layer."""

    per_mb: float
    transient: float
    out_layer: float


def _rank_reps(pp: int, vpp: int) -> tuple[tuple[int, np.ndarray], ...]:
    """The pipeline ranks whose memory can be the peak, with their layers (memory.stage_layers).

    Ranks holding the same mix of dense and MoE layers differ only in how many micro-batches they keep,
    which falls with the rank in every schedule but DualPipe; so the first rank of each mix is enough,
    plus the first and last rank (embedding, head) and, for DualPipe, each mix's rank nearest the middle.
    """
    key = (pp, vpp)
    hit = _Caches.rank_layers.get(key)
    if hit is None:
        assert _CTX is not None
        model = _CTX.model
        chunks = chunk_layers(model.num_layers, pp * vpp)
        kinds = [model.is_moe_layer(i) for i in range(model.num_layers)]
        groups: dict[tuple[int, int], list[int]] = {}
        layers = {}
        for r in range(pp):
            layers[r] = [i for v in range(vpp) for i in chunks[r + v * pp]]
            moe = sum(kinds[i] for i in layers[r])
            mix = (-1, r) if r in (0, pp - 1) else (len(layers[r]) - moe, moe)  # first and last stand alone
            groups.setdefault(mix, []).append(r)
        middle = (pp - 1) / 2
        reps = sorted({r for g in groups.values() for r in (g[0], min(g, key=lambda x: (abs(x - middle), x)))})
        hit = _Caches.rank_layers[key] = tuple((r, np.array(layers[r], dtype=int)) for r in reps)
    return hit


def _layer_params() -> np.ndarray:
    """Per layer: (dense parameters, routed-expert parameters)."""
    hit = _Caches.params.get(())
    if hit is None:
        assert _CTX is not None
        model = _CTX.model
        routed = model.routed_expert_params / model.num_moe_layers if model.num_moe_layers else 0.0
        rows = []
        for i in range(model.num_layers):
            experts = routed if model.is_moe_layer(i) else 0.0
            rows.append((model.params_per_layer(i) - experts, experts))
        hit = _Caches.params[()] = np.array(rows, dtype=float)
    return hit


def _static_parts(tp: int, pp: int, dp: int, cp: int, ep: int, vpp: int, mb: int) -> tuple[_RankStatic, ...]:
    """memory.static_memory of the representative ranks (:func:`_rank_reps`), at every ZeRO stage, from the
    memory model's own functions (sharded_states, buffer_bytes) over per-layer parameter arrays."""
    key = (tp, pp, dp, cp, ep, vpp, mb)
    hit = _Caches.statics.get(key)
    if hit is not None:
        return hit
    ctx = _CTX
    assert ctx is not None
    model, t = ctx.model, ctx.training
    lp = _layer_params()
    expert_split = min(tp * ep, tp * dp * cp)
    reps = (dp * cp, tp * dp * cp / expert_split)
    sbh = (t.seq_len / cp) * mb * model.hidden_size
    buffers = M.buffer_bytes(tp=tp, pp=pp, dp=dp, cp=cp, sbh=sbh)
    out = []
    for rank, layers in _rank_reps(pp, vpp):
        edges = 0.0
        if rank == 0:
            edges += model.embedding_params()
        if rank == pp - 1:
            edges += model.output_params()
            if model.tied_embeddings and pp > 1:
                edges += model.vocab_size * model.hidden_size
        par = M.StageParams(float(lp[layers, 0].sum()) / tp, float(lp[layers, 1].sum()) / expert_split, edges / tp)
        fp8 = t.precision == "fp8"
        static = tuple(sum(M.sharded_states(par, *reps, zero=zero, fp8=fp8)) for zero in range(4))
        biggest = float((lp[layers, 0] / tp + lp[layers, 1] / expert_split).max())
        zero3 = M.buffer_bytes(tp=tp, pp=pp, dp=dp, cp=cp, sbh=sbh, zero3_layer_params=biggest)
        out.append(_RankStatic(static, (buffers, zero3), len(layers), rank))  # type: ignore[arg-type]
    hit = _Caches.statics[key] = tuple(out)
    return hit


def _act_parts(tp: int, sp: bool, cp: int, mb: int, recompute: str, pp: int, vpp: int) -> tuple[_RankActs, ...]:
    """memory.activation_bytes_per_microbatch and transient_activation_bytes of the representative ranks."""
    key = (tp, sp, cp, mb, recompute, pp, vpp)
    hit = _Caches.act_parts.get(key)
    if hit is not None:
        return hit
    ctx = _CTX
    assert ctx is not None
    model = ctx.model
    keep, work = _activations(tp, sp, cp, mb, recompute)
    tokens = (ctx.training.seq_len / cp) * mb
    out_layer = M.output_layer_bytes(tokens, model.hidden_size, model.vocab_size, tp, sp)
    mask = M.embedding_mask_bytes(tokens * model.hidden_size, tp, sp)
    out = []
    for rank, layers in _rank_reps(pp, vpp):
        per_mb = float(keep[layers].sum()) + (mask if rank == 0 else 0.0)
        transient = float(work[layers].max()) if recompute != "none" else 0.0
        out.append(_RankActs(per_mb, transient, out_layer if rank == pp - 1 else 0.0))
    hit = _Caches.act_parts[key] = tuple(out)
    return hit


def _activations(tp: int, sp: bool, cp: int, mb: int, recompute: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer activation bytes kept per micro-batch, and the recompute working set per layer."""
    key = (tp, sp, cp, mb, recompute)
    hit = _Caches.acts.get(key)
    if hit is not None:
        return hit
    assert _CTX is not None
    model, seq = _CTX.model, _CTX.training.seq_len // cp
    kinds: dict[bool, tuple[float, float]] = {}
    keep, work = [], []
    for i in range(model.num_layers):
        moe = model.is_moe_layer(i)
        if moe not in kinds:
            args = {"tp": tp, "sp": sp, "flash_attention": _CTX.training.flash_attention, "layer": i}
            kept = model.activation_bytes_per_layer(seq, mb, recompute=recompute, **args)
            full = model.activation_bytes_per_layer(seq, mb, recompute="none", **args)
            kinds[moe] = (kept, full - kept if recompute != "none" else 0.0)
        keep.append(kinds[moe][0])
        work.append(kinds[moe][1])
    hit = _Caches.acts[key] = (np.array(keep), np.array(work))
    return hit


def _memory_estimate(statics: tuple[_RankStatic, ...], acts: tuple[_RankActs, ...], key: PlanKey, m: int) -> float:
    """Peak bytes per GPU over the pipeline ranks that can hold the most (simulate._memory)."""
    assert _CTX is not None
    pp, vpp, zero, schedule = key[1], key[6], key[7], key[8]
    sched = get_schedule(schedule)
    gpipe, dual = sched.all_forwards_first, sched.dual
    stage_avg = _CTX.model.num_layers / pp
    peak = 0.0
    for s, a in zip(statics, acts, strict=True):
        rank = s.rank
        per_mb = a.per_mb + (a.out_layer if gpipe else 0.0)
        transient = a.transient + (0.0 if gpipe else a.out_layer)
        weight = 1.0 if sched.interleaved else s.layers / stage_avg
        acts = sched.inflight(rank, pp, vpp, m, weight) * per_mb + transient
        peak = max(peak, M.peak_bytes(s.static[zero], s.buffers[zero == 3], acts, 2.0 if dual else 1.0))
    return peak


# ---- enumeration (one task per (tp, cp)) ---------------------------------------------------------


@dataclass
class _TaskOut:
    """What one (tp, cp) task found: prune counts, the feasible count, its fastest plans and memory front."""

    candidates: int = 0
    feasible: int = 0
    pruned: dict[str, int] = field(default_factory=dict)
    best: list[tuple[float, float, PlanKey]] = field(default_factory=list)  # (step s, memory bytes, key)
    front: list[tuple[float, float, PlanKey]] = field(default_factory=list)

    def prune(self, reason: str, n: int) -> None:
        if n:
            self.pruned[reason] = self.pruned.get(reason, 0) + n
            self.candidates += n


def _schedule_variants(space: SearchSpace, num_layers: int) -> list[tuple[str, int]]:
    vpps = space.vpp if space.vpp is not None else tuple(d for d in divisors(num_layers) if d >= 2)
    out: list[tuple[str, int]] = []
    for s in space.schedule:
        out += [(s, v) for v in vpps] if get_schedule(s).interleaved else [(s, 1)]
    return out


def _options(values: tuple[int, ...] | None, limit: int) -> tuple[int, ...]:
    """A dimension's values: the given ones, or the divisors of what the other dimensions leave."""
    return values if values is not None else divisors(limit)


def _micro_batches(space: SearchSpace, global_batch: int, dp: int) -> tuple[int, ...]:
    return _options(space.micro_batch, max(1, global_batch // dp))


def _ep_options(space: SearchSpace, model: ModelSpec) -> tuple[int, ...]:
    if space.ep is not None:
        return space.ep
    return divisors(model.moe.num_experts) if model.moe is not None else (1,)


def _tasks(ctx: _Context) -> list[tuple[int, int]]:
    """(tp, cp) pairs, the unit of parallel work; tp or cp that cannot divide the GPUs still count."""
    n = ctx.num_gpus
    out = []
    for tp in _options(ctx.space.tp, n):
        rest = n // tp if n % tp == 0 else 1
        for cp in _options(ctx.space.cp, rest):
            out.append((tp, cp))
    return out


def _screen_task(task: tuple[int, int]) -> _TaskOut:
    """Enumerate, prune and screen every candidate with this (tp, cp)."""
    ctx = _CTX
    assert ctx is not None
    tp, cp = task
    space, model, t = ctx.space, ctx.model, ctx.training
    n, gb, layers = ctx.num_gpus, t.global_batch, model.num_layers
    out = _TaskOut()
    variants = _schedule_variants(space, layers)
    eps = _ep_options(space, model)
    n_sp, n_rec, n_zero, n_var = len(space.sp), len(space.recompute), len(space.zero), len(variants)
    leaf = n_zero * n_var * n_rec * n_sp  # candidates under one (tp, pp, cp, ep, micro-batch)
    found: list[tuple[float, float, PlanKey]] = []
    ok_tp = n % tp == 0 and model.num_attention_heads % tp == 0
    kv_ok = model.kv_heads % tp == 0 or tp % model.kv_heads == 0
    base_pp = n // (tp * cp) if n % (tp * cp) == 0 else 1
    for pp in _options(space.pp, base_pp):
        world_ok = n % (tp * pp * cp) == 0
        dp = n // (tp * pp * cp) if world_ok else 1
        mbs = _micro_batches(space, gb, dp)
        sub = len(eps) * len(mbs) * leaf
        if not world_ok:
            out.prune(R_WORLD, sub)
            continue
        if not ok_tp:
            out.prune(R_TP_HEADS, sub)
            continue
        if not kv_ok:
            out.prune(R_TP_KV, sub)
            continue
        if t.seq_len % cp:
            out.prune(R_CP_SEQ, sub)
            continue
        if pp > layers:
            out.prune(R_PP_LAYERS, sub)
            continue
        for ep in eps:
            experts = model.moe.num_experts if model.moe is not None else 0
            if ep > 1 and ((dp * cp * tp) % ep or experts % ep):
                out.prune(R_EP, len(mbs) * leaf)
                continue
            if ep * tp * cp > n:
                out.prune(R_EP_FIT, len(mbs) * leaf)
                continue
            for mb in mbs:
                if gb % (mb * dp):
                    out.prune(R_BATCH, leaf)
                    continue
                m = gb // (mb * dp)
                for sp in space.sp:
                    if sp and tp == 1:
                        out.prune(R_SP, n_zero * n_var * n_rec)
                        continue
                    for recompute in space.recompute:
                        lkey = (tp, sp, cp, ep, mb, recompute)
                        table = None
                        for schedule, vpp in variants:
                            reason = _schedule_rule(schedule, pp, vpp, m, layers)
                            if reason:
                                out.prune(reason, n_zero)
                                continue
                            if table is None:
                                table = _layer_table(*lkey)
                            dual = get_schedule(schedule).dual
                            st = _stages(table, lkey, pp, vpp, dual, t.host_s_per_layer, recompute == "full")
                            statics = _static_parts(tp, pp, dp, cp, ep, vpp, mb)
                            acts = _act_parts(tp, sp, cp, mb, recompute, pp, vpp)
                            for zero in space.zero:
                                if zero and dp * cp == 1:
                                    out.prune(R_ZERO, 1)
                                    continue
                                key: PlanKey = (tp, pp, dp, cp, ep, sp, vpp, zero, schedule, mb, recompute)
                                mem = _memory_estimate(statics, acts, key, m)
                                if mem > ctx.capacity:
                                    out.prune(R_OOM, 1)
                                    continue
                                out.candidates += 1
                                out.feasible += 1
                                found.append((_step_estimate(st, key, m), mem, key))
    found.sort()
    out.best = found[: ctx.keep]
    out.front = _front_2d(found)
    return out


def _schedule_rule(schedule: str, pp: int, vpp: int, m: int, layers: int) -> str | None:
    """Why a (schedule, vpp) cannot run this pipeline, or None (the schedule's own rule from the registry)."""
    if pp == 1:
        return R_PIPE if schedule != "1f1b" else None
    if vpp > 1 and pp * vpp > layers:
        return R_PP_LAYERS
    if vpp > 1 and layers % (pp * vpp):
        return R_VPP_LAYERS
    return get_schedule(schedule).rule(pp, vpp, m)


def _front_2d(points: Sequence[tuple[float, float, PlanKey]]) -> list[tuple[float, float, PlanKey]]:
    """Plans no other plan beats on both screened time and memory (``points`` sorted by time)."""
    front, best_mem = [], math.inf
    for p in points:
        if p[1] < best_mem:
            front.append(p)
            best_mem = p[1]
    return front


# ---- simulation of the short list -------------------------------------------------------------------


def _simulate(key: PlanKey) -> TrainingResult | str:
    """Simulate one plan (timeline dropped: it is large and the search reports metrics), or why it failed."""
    ctx = _CTX
    assert ctx is not None
    try:
        res = simulate_training(ctx.run_config(key), ctx.profile)
    except ValidationError as exc:
        return first_validation_error(exc)
    except ClusterSimError as exc:
        return str(exc)
    return res.model_copy(update={"timeline": None})


def _tasks_of(key: PlanKey, global_batch: int) -> int:
    """Engine tasks of a plan: a forward and a backward (and a weight task) per micro-batch and chunk."""
    tp, pp, dp, cp, ep, sp, vpp, zero, schedule, mb, _ = key
    m = global_batch // (mb * dp)
    return m * pp * vpp * (3 if get_schedule(schedule).split_weight else 2)


def _pick_spread(front: Sequence[Any], n: int) -> list[Any]:
    """Up to ``n`` members of a front, evenly spaced along it, both ends included."""
    if len(front) <= n:
        return list(front)
    idx = sorted({round(i * (len(front) - 1) / (n - 1)) for i in range(n)})
    return [front[i] for i in idx]


@dataclass(frozen=True)
class _Fixed:
    """The part of every plan's config that the search does not vary."""

    model: ModelSpec
    cluster: ClusterSpec
    training: TrainingSpec
    moe_routing: MoERouting
    power: PowerSpec
    site: SiteSpec
    seed: int


_SETTABLE = {
    "cluster": ClusterSpec,
    "training": TrainingSpec,
    "moe_routing": MoERouting,
    "power": PowerSpec,
    "site": SiteSpec,
}


def _fixed(
    model: str | dict[str, Any] | ModelSpec,
    num_gpus: int,
    gpu: str,
    global_batch: int | None,
    seq_len: int | None,
    node: str | None,
    overrides: list[str] | None,
) -> _Fixed:
    """Validate the fixed part of every plan: model, cluster, and the settings that are not searched."""
    spec = get_model(model)
    data = apply_overrides({"cluster": {"gpu": gpu, "num_gpus": num_gpus}, "training": {}}, overrides)
    settable = ", ".join(f"{k}.*" for k in _SETTABLE) + ", seed"
    for section in sorted(set(data) - set(_SETTABLE) - {"seed"}):
        what = "is what the search varies; restrict it with --space" if section == "parallel" else "is not a section"
        raise ClusterSimError(f"--set {section}.* {what} (settable: {settable})")
    searched = sorted({"micro_batch", "recompute"} & set(data["training"]))
    if searched:
        raise ClusterSimError(f"training.{searched[0]} is searched; restrict it with --space {searched[0]}=...")
    if "stage_clocks_mhz" in (data.get("power") or {}):
        raise ClusterSimError("power.stage_clocks_mhz depends on pp, which the search varies; use power.sm_clock_mhz")
    if node is not None:
        data["cluster"]["node"] = node
    train = data["training"]
    if global_batch is not None:
        train["global_batch"] = global_batch
    train.setdefault("global_batch", num_gpus)
    if seq_len is not None:
        train["seq_len"] = seq_len
    parts: dict[str, Any] = {}
    for name, cls in _SETTABLE.items():
        value = data.get(name) or {}
        if not isinstance(value, dict):
            raise ClusterSimError(f"--set {name}={value!r}: {name} is a section; set {name}.KEY=VALUE")
        try:
            parts[name] = cls.model_validate(value)
        except ValidationError as exc:
            raise ClusterSimError(f"{name}.{first_validation_error(exc)}") from None
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ClusterSimError(f"seed={seed!r} must be an integer")
    fixed = _Fixed(model=spec, seed=seed, **parts)
    # the checks that do not depend on the plan (fp8 support, comm_sms, ...), on the plainest plan
    probe = fixed.training.model_copy(update={"global_batch": num_gpus, "micro_batch": 1})
    try:
        RunConfig(
            model=spec,
            cluster=fixed.cluster,
            parallel=ParallelSpec(dp=num_gpus),
            training=probe,
            moe_routing=fixed.moe_routing,
            power=fixed.power,
            site=fixed.site,
            seed=seed,
        )
    except ValidationError as exc:
        raise ClusterSimError(first_validation_error(exc)) from None
    return fixed


def search_training_plans(
    model: str | dict[str, Any] | ModelSpec,
    *,
    num_gpus: int,
    gpu: str,
    global_batch: int | None = None,
    seq_len: int | None = None,
    node: str | None = None,
    overrides: list[str] | None = None,
    space: SearchSpace | None = None,
    top_k: int = 32,
    top: int = 5,
    pareto_k: int = 12,
    workers: int | None = None,
    profile: str | Profile | None = None,
    progress: bool = False,
) -> PlanSearchResult:
    """Search every training plan of ``model`` on ``num_gpus`` x ``gpu`` and simulate the most promising.

    ``overrides`` (``key=value``, as ``--set``) fix the settings that are not searched: ``training.precision``,
    ``training.host_s_per_layer``, ``cluster.nics_per_node``, ... ``global_batch`` defaults to one sequence
    per GPU. ``top_k`` plans that fit are simulated in the screen's time order (more if some turn out not to
    fit), plus up to ``pareto_k`` plans of the screen's time/memory front; ``best`` holds the ``top`` fastest
    simulated plans. ``workers`` processes share the work (default: every CPU).
    """
    if top_k < 1 or top < 1 or pareto_k < 0:
        raise ClusterSimError(f"top_k={top_k} and top={top} must be >= 1 and pareto_k={pareto_k} >= 0")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ClusterSimError(f"workers={workers} must be >= 1")
    fixed = _fixed(model, num_gpus, gpu, global_batch, seq_len, node, overrides)
    spec, cluster, training = fixed.model, fixed.cluster, fixed.training
    prof = load_profile(profile, gpu=cluster.gpu)
    keep = max(4 * top_k, 64)
    ctx = _Context(
        spec,
        cluster,
        training,
        fixed.moe_routing,
        fixed.power,
        fixed.site,
        fixed.seed,
        prof,
        space or SearchSpace(),
        keep,
    )
    tasks = sorted(_tasks(ctx), key=lambda tc: (tc[0] * tc[1], tc))
    start = time.perf_counter()
    with _Pool(ctx, workers) as pool:
        outs = list(_progress(pool.map(_screen_task, tasks), len(tasks), "screening", progress))
        screen_s = time.perf_counter() - start
        pruned: dict[str, int] = {}
        for o in outs:
            for k, v in o.pruned.items():
                pruned[k] = pruned.get(k, 0) + v
        candidates = sum(o.candidates for o in outs)
        feasible = sum(o.feasible for o in outs)
        order = heapq.nsmallest(keep, (p for o in outs for p in o.best))
        front = _front_2d(sorted(p for o in outs for p in o.front))
        if not order:
            real = [kv for kv in pruned.items() if not kv[0].startswith("duplicate")]
            common = ", ".join(f"{k} ({v:,})" for k, v in sorted(real, key=lambda kv: (-kv[1], kv[0]))[:2])
            raise ClusterSimError(
                f"none of the {candidates:,} plans for {spec.name} on {num_gpus} x {cluster.gpu} is feasible "
                f"(most pruned: {common}); add GPUs or lower the global batch or sequence length"
            )
        rank = {p[2]: i for i, p in enumerate(order)}
        screened = {p[2]: p for p in order + front}
        sims: dict[PlanKey, TrainingResult] = {}
        failed: dict[PlanKey, str] = {}
        queue = [p[2] for p in order]
        # the front's memory-light end holds long pipelines that are slow and costly to simulate: keep to
        # plans within PARETO_MAX_SLOWDOWN of the fastest
        front = [
            p
            for p in front
            if p[0] <= PARETO_MAX_SLOWDOWN * order[0][0] and _tasks_of(p[2], training.global_batch) <= PARETO_MAX_TASKS
        ]
        first = set(queue[:top_k])
        batch = queue[:top_k] + [p[2] for p in _pick_spread(front, pareto_k) if p[2] not in first]
        nxt = top_k
        sim_start = time.perf_counter()
        bar = _progress(None, None, "simulating", progress)
        while batch:
            for key, res in zip(batch, pool.map(_simulate, batch), strict=True):
                if isinstance(res, str):
                    failed[key] = res
                else:
                    sims[key] = res
                bar.update(1)
            fits = sum(1 for k in queue[:nxt] if k in sims and sims[k].fits_in_memory)
            short = top_k - fits
            batch = queue[nxt : nxt + short] if short > 0 and nxt < len(queue) and nxt < 3 * top_k else []
            nxt += len(batch)
        bar.close()
        simulate_s = time.perf_counter() - sim_start
    wall = time.perf_counter() - start
    plans = [
        PlanResult(
            parallel=_parallel_of(k),
            training=training.model_copy(update={"micro_batch": k[9], "recompute": k[10]}),
            config=ctx.run_config(k),
            result=sims[k],
            screen_step_s=screened[k][0],
            screen_memory_gb=screened[k][1] / 1e9,
            screen_rank=rank.get(k, -1),
        )
        for k in sorted(sims)
    ]
    fitting = sorted((p for p in plans if p.result.fits_in_memory), key=_plan_sort)
    if not fitting:
        raise ClusterSimError(
            f"no simulated plan of {spec.name} fits in {cluster.gpu} memory; add GPUs or lower the global batch"
        )
    return PlanSearchResult(
        model=spec.name,
        gpu=cluster.gpu,
        num_gpus=num_gpus,
        global_batch=training.global_batch,
        seq_len=training.seq_len,
        best=fitting[:top],
        pareto=_pareto(fitting),
        simulated=sorted(plans, key=_plan_sort),
        candidates=candidates,
        feasible=feasible,
        pruned=dict(sorted(pruned.items(), key=lambda kv: (-kv[1], kv[0]))),
        screen_s=screen_s,
        simulate_s=simulate_s,
        wall_s=wall,
        workers=workers,
    )


def _parallel_of(key: PlanKey) -> ParallelSpec:
    tp, pp, dp, cp, ep, sp, vpp, zero, schedule, _, _ = key
    return ParallelSpec(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, sp=sp, vpp=vpp, zero=zero, schedule=schedule)


def _key_of(p: PlanResult) -> PlanKey:
    a, t = p.parallel, p.training
    return (a.tp, a.pp, a.dp, a.cp, a.ep, a.sp, a.vpp, a.zero, a.schedule, t.micro_batch, t.recompute)


def _plan_sort(p: PlanResult) -> tuple[float, PlanKey]:
    return (p.result.step_time_s, _key_of(p))


def _pareto(plans: list[PlanResult]) -> list[PlanResult]:
    """Simulated plans that no other beats on step time, peak memory and (when reported) energy per step."""
    energy = [p.energy_j for p in plans]
    with_energy = all(e is not None for e in energy)
    points = [
        [p.result.step_time_s, p.result.memory_per_gpu_gb.peak] + ([e] if with_energy else [])
        for p, e in zip(plans, energy, strict=True)
    ]
    mask = pareto_front(points, [True] * len(points[0]))
    return [p for p, on in zip(plans, mask, strict=True) if on]


class _Pool:
    """The worker processes (or this one, for ``workers=1``), each holding the search context."""

    def __init__(self, ctx: _Context, workers: int) -> None:
        self.ctx, self.workers = ctx, workers
        self.executor: Any = None

    def __enter__(self) -> _Pool:
        if self.workers == 1:
            _init_worker(self.ctx)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            self.executor = ProcessPoolExecutor(
                self.workers, mp_context=mp.get_context(method), initializer=_init_worker, initargs=(self.ctx,)
            )
        return self

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterable[Any]:
        if self.executor is None:
            return map(fn, items)
        return self.executor.map(fn, items, chunksize=1)

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)
        _init_worker(None)


def _progress(items: Iterable[Any] | None, total: int | None, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        items,
        total=total,
        desc=desc,
        unit="task" if items is not None else "plan",
        disable=not enabled,
        file=sys.stderr,
        leave=False,
    )
