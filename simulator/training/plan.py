"""Per-chunk phase costs: what one model chunk costs one rank per micro-batch.

A *chunk* is a contiguous slice of layers that one pipeline rank runs for a micro-batch (one per
rank, ``vpp`` per rank with interleaving, two with DualPipe). Its cost is split by phase (forward,
backward-input, backward-weight) and, inside each phase, into compute and the blocking
communication that sits on the compute stream (TP, EP, CP, ZeRO-3), so the engine can lay out the
schedule and the metrics can say where the time went.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import numpy as np

from hwmodels.errors import ClusterSimError
from hwmodels.profile import Profile
from hwmodels.topology import Cluster, CommGroup
from simulator.compression import payload_bytes_per_elem
from simulator.core.config import RunConfig
from simulator.core.costs import CommAlgorithm, OpCost, comm_time, op_cost, op_work, routed_all_to_all_time
from simulator.core.workload import Op, embedding_ops, head_ops, layer_ops, numerics
from simulator.training import offload

COMM_KINDS = ("tp", "cp", "ep", "dp", "pp")
_UNFUSED_CORE = ("attn_scores", "attn_softmax_dropout", "attn_context")


@dataclass(frozen=True)
class Phase:
    """Seconds of one phase of a chunk: compute plus blocking communication by kind."""

    compute_s: float = 0.0
    comm_s: dict[str, float] = field(default_factory=dict)

    @property
    def total_s(self) -> float:
        """Compute plus all blocking communication, seconds."""
        return self.compute_s + sum(self.comm_s.values())

    def __add__(self, other: Phase) -> Phase:
        comm = dict(self.comm_s)
        for k, v in other.comm_s.items():
            comm[k] = comm.get(k, 0.0) + v
        return Phase(self.compute_s + other.compute_s, comm)

    def scaled(self, factor: float) -> Phase:
        """This phase with every time multiplied by ``factor`` (e.g. a slower clock)."""
        return Phase(self.compute_s * factor, {k: v * factor for k, v in self.comm_s.items()})


@dataclass(frozen=True)
class ChunkCost:
    """One chunk's per-micro-batch cost on one rank."""

    layers: tuple[int, ...]
    first: bool
    last: bool
    forward: Phase
    backward: Phase  # input gradients, including any recomputation
    weight: Phase  # weight gradients (deferred by zero-bubble schedules)
    params: float  # parameters of this chunk held by one rank (DP gradient volume)
    send_bytes: float  # activation (and gradient) bytes passed to the neighbouring chunk
    recompute_flops: float  # extra forward FLOPs recomputed in the backward pass (for HFU)
    tensor_s: float = 0.0  # math work of forward + backward (+ recompute) as seconds at full peak (energy)
    hbm_s: float = 0.0  # HBM traffic of the same as seconds at full bandwidth (energy)

    def stretched(self, factor: float) -> ChunkCost:
        """This chunk with the compute of every phase multiplied by ``factor`` (communication unchanged): the
        wait for the slowest rank where ranks synchronise (:mod:`simulator.core.variability`)."""
        if factor == 1.0:
            return self

        def phase(ph: Phase) -> Phase:
            return Phase(ph.compute_s * factor, ph.comm_s)

        return replace(self, forward=phase(self.forward), backward=phase(self.backward), weight=phase(self.weight))


@dataclass(frozen=True)
class Groups:
    """The communication groups of one rank, placed Megatron-style (TP fastest, then CP, DP, PP)."""

    tp: CommGroup
    cp: CommGroup
    ep: CommGroup
    dp: CommGroup
    pp: CommGroup
    grad: CommGroup  # gradients reduce over data- and context-parallel ranks together
    algorithm: CommAlgorithm = CommAlgorithm()  # parallel.collective_algorithm on this cluster's nodes

    @classmethod
    def of(cls, cfg: RunConfig, cluster: Cluster) -> Groups:
        """The groups of ``cfg``'s parallel plan on ``cluster``, with its collective algorithm setting."""
        p = cfg.parallel
        link = cfg.variability.degraded_link_factor

        def group(size: int, stride: int = 1) -> CommGroup:
            g = cluster.comm_group(size, stride)
            # one degraded NIC paces every group that crosses the network: groups of a kind run in lock-step
            if link >= 1.0 or not g.spans_nodes:
                return g
            return replace(g, net_bytes_s=g.net_bytes_s * link, a2a_net_bytes_s=g.all_to_all_net_bytes_s * link)

        return cls(
            tp=group(p.tp),
            cp=group(p.cp, stride=p.tp),
            ep=group(p.ep, stride=p.tp * p.cp),
            dp=group(p.dp, stride=p.tp * p.cp),
            pp=group(2, stride=p.tp * p.cp * p.dp) if p.pp > 1 else group(1),
            grad=group(p.dp * p.cp, stride=p.tp),
            algorithm=CommAlgorithm.of(p.collective_algorithm, cluster),
        )

    def as_dict(self) -> dict[str, CommGroup]:
        """The groups by op group name (``tp``, ``cp``, ``ep``, ``dp``, ``pp``, ``grad``), as :func:`op_cost` wants."""
        return {"tp": self.tp, "cp": self.cp, "ep": self.ep, "dp": self.dp, "pp": self.pp, "grad": self.grad}


def _phases(
    costs: list[OpCost], cp: int, call_s: float = 0.0, cp_all_gather: bool = False
) -> tuple[Phase, Phase, Phase, float]:
    """Forward, backward-input and backward-weight phases of a list of op costs, and attn-core fwd time.

    ``cp_all_gather``: K/V are all-gathered before the attention (the ring's bytes, none of them hidden) and
    the backward gathers them again and reduce-scatters dK/dV (Llama 3 §3.3.2; Transformer Engine's
    ``cp_comm_type="all_gather"``), instead of the ring exchange overlapped with the attention blocks."""
    f_comp = b_comp = w_comp = attn = 0.0
    f_comm: dict[str, float] = {}
    b_comm: dict[str, float] = {}
    ring = 0.0
    for c in costs:
        op = c.op
        if op.kind != "comm":
            f_comp += c.forward_s
            b_comp += c.backward_input_s
            w_comp += c.backward_weight_s
            if op.kind == "attn" or op.name in _UNFUSED_CORE:
                attn += c.forward_s
            continue
        if op.collective == "ring_exchange":
            ring += c.forward_s
            continue
        kind = op.group or "tp"
        f_comm[kind] = f_comm.get(kind, 0.0) + c.forward_s + call_s
        b_comm[kind] = b_comm.get(kind, 0.0) + c.backward_s + call_s
    if cp > 1 and cp_all_gather:
        f_comm["cp"] = ring
        b_comm["cp"] = 2.0 * ring
    elif cp > 1:  # ring attention overlaps the K/V exchange with the attention blocks it feeds
        f_comm["cp"] = max(0.0, ring - attn)
        b_comm["cp"] = max(0.0, 2.0 * ring - 2.5 * attn)
    return Phase(f_comp, f_comm), Phase(b_comp, b_comm), Phase(w_comp), attn


def _layer_params(cfg: RunConfig, layer: int) -> float:
    """Parameters of ``layer`` held by one rank: /tp, routed experts also /ep."""
    m, p = cfg.model, cfg.parallel
    total = m.params_per_layer(layer)
    if not m.is_moe_layer(layer):
        return total / p.tp
    routed = m.routed_expert_params / max(1, m.num_moe_layers)
    return (total - routed) / p.tp + routed / (p.tp * p.ep)


def chunk_layers(num_layers: int, num_chunks: int) -> list[tuple[int, ...]]:
    """Split layers into ``num_chunks`` contiguous slices (a fresh list of the cached split)."""
    return list(_chunk_layers(num_layers, num_chunks))


@lru_cache(maxsize=256)
def _chunk_layers(num_layers: int, num_chunks: int) -> tuple[tuple[int, ...], ...]:
    """Split layers into ``num_chunks`` contiguous slices, as equal as possible.

    When they do not divide, the first chunks take one layer more and the last (which also runs the
    output head) fewer, as Llama 3's 126 layers on 16 stages did.
    """
    per, extra = divmod(num_layers, num_chunks)
    out, start = [], 0
    for i in range(num_chunks):
        n = per + (1 if i < extra else 0)
        out.append(tuple(range(start, start + n)))
        start += n
    return tuple(out)


def model_chunks(cfg: RunConfig, num_chunks: int) -> list[tuple[int, ...]]:
    """The layers of each of ``num_chunks`` pipeline chunks in route order (chunk ``v pp + s`` is stage ``s``'s
    ``v``-th), from ``parallel.layers_per_stage`` when given, else :func:`chunk_layers`.

    With a per-stage list and ``vpp`` chunks per stage, a stage's layers split over its chunks as evenly as
    possible; the first stage's short chunk is its first (which also runs the embedding) and every other
    stage's its last (the last stage's runs the head), as Megatron-LM places Llama 3's 126 layers on
    PP16 x VPP8 when the embedding and the loss each count as a layer
    (``--account-for-embedding-in-pipeline-split``, ``--account-for-loss-in-pipeline-split``).
    """
    counts = cfg.parallel.layers_per_stage
    if counts is None:
        return chunk_layers(cfg.model.num_layers, num_chunks)
    pp = len(counts)
    if num_chunks % pp:
        raise ClusterSimError(f"{num_chunks} pipeline chunks do not split over the {pp} stages of layers_per_stage")
    vpp = num_chunks // pp
    sizes = [0] * num_chunks
    for s, n in enumerate(counts):
        per, extra = divmod(n, vpp)
        short_first = s == 0 and pp > 1
        for v in range(vpp):
            long = v >= vpp - extra if short_first else v < extra
            sizes[v * pp + s] = per + (1 if long else 0)
    out, start = [], 0
    for n in sizes:
        out.append(tuple(range(start, start + n)))
        start += n
    return out


def chunk_costs(
    cfg: RunConfig, profile: Profile, cluster: Cluster, *, num_chunks: int, include_comm: bool = True
) -> list[ChunkCost]:
    """Costs of the model split into ``num_chunks`` pipeline chunks, in model order."""
    mc = _model_costs(cfg, profile, cluster)
    chunks = []
    slices = model_chunks(cfg, num_chunks)
    for idx, layers in enumerate(slices):
        first, last = idx == 0, idx == len(slices) - 1
        s = _sum_layers(cfg, layers, mc.kinds)
        if first:
            _add_embedding(s, mc, profile, cfg.training.precision)
        if last:
            _add_head(cfg, s, mc, profile, num_chunks)
        fwd, bwd, wgt = _finish_phases(cfg, s, mc.grad, len(layers), include_comm, layers)
        chunks.append(
            ChunkCost(layers, first, last, fwd, bwd, wgt, s.params, mc.send, s.recompute_flops, s.tensor_s, s.hbm_s)
        )
    return chunks


@dataclass(frozen=True)
class _Pricer:
    """Prices ops as a chunk's phases on one rank: :func:`op_cost` per op, MoE routing effects, then
    :func:`_phases`."""

    profile: Profile
    groups: dict[str, CommGroup]
    algorithm: CommAlgorithm
    dtype: str
    cp: int
    call_s: float  # host cost of one collective call (training.collective_call_s)
    moe: _MoEAdjust | None
    cp_all_gather: bool = False  # stack.cp_comm == "all_gather"

    def __call__(self, ops: list[Op]) -> tuple[Phase, Phase, Phase, float]:
        """Forward, backward-input and backward-weight phases of ``ops``, and attn-core forward seconds."""
        costs = [op_cost(op, self.profile, self.groups, self.dtype, self.algorithm) for op in ops]
        if self.moe is not None:
            costs = [self.moe.adjust(c) for c in costs]
        return _phases(costs, self.cp, self.call_s, self.cp_all_gather)


@dataclass(frozen=True)
class _LayerKind:
    """Per-micro-batch costs of one kind of layer (dense or MoE) on one rank."""

    phases: tuple[Phase, Phase, Phase, float]  # forward, backward-input, backward-weight, attn-core fwd s
    work: tuple[float, float, float, float]  # fwd+bwd (math s, HBM s), then forward-only recompute (math, HBM)
    flops: float  # GEMM + attention FLOPs of the forward (full recompute)
    attn_flops: float  # attention-core FLOPs of the forward (selective recompute)
    host_s: float = 0.0  # eager host time to issue the layer's forward (plan._host_bound)


def _layer_kind(cfg: RunConfig, profile: Profile, price: _Pricer, layer: int) -> _LayerKind:
    """Phases, energy work and recompute FLOPs of ``layer``, which stands for every layer of its kind."""
    return _kind_of(cfg, profile, price, config_layer_ops(cfg, layer))


def config_layer_ops(cfg: RunConfig, layer: int) -> list[Op]:
    """Forward ops of ``layer`` for one micro-batch of ``cfg`` on one rank, under the run's stack."""
    m, p, t = cfg.model, cfg.parallel, cfg.training
    return layer_ops(
        m, layer, t.micro_batch, t.seq_len, tp=p.tp, ep=p.ep, cp=p.cp, dtype=t.precision, sp=p.sp,
        flash=t.flash_attention, stack=cfg.stack,
    )  # fmt: skip


def _kind_of(cfg: RunConfig, profile: Profile, price: _Pricer, ops: list[Op]) -> _LayerKind:
    """A layer kind from its ops (built from the model and stack, or traced): phases, energy work, the
    forward work and FLOPs recomputation repeats, and the eager host time to issue it."""
    t, dtype = cfg.training, cfg.training.precision
    fwd = [op for op in ops if op.phase != "bwd"]
    core = [op for op in fwd if op.kind == "attn" or op.name in _UNFUSED_CORE]
    rec_t = rec_h = 0.0
    if t.recompute != "none":  # forward-only work: a derived-backward op's work is 3x its forward's
        for op in fwd if t.recompute == "full" else core:
            w_t, w_h = op_work([op], profile, dtype)
            share = 3.0 if op.phase == "both" else 1.0
            rec_t, rec_h = rec_t + w_t / share, rec_h + w_h / share
    return _LayerKind(
        phases=price(ops),
        work=(*op_work(ops, profile, dtype), rec_t, rec_h),
        flops=sum(op.flops for op in fwd if op.kind in ("gemm", "attn")),
        attn_flops=sum(op.flops for op in core),
        host_s=t.host_s_per_layer + t.host_s_per_kernel * forward_kernels(ops),
    )


def forward_kernels(ops: list[Op]) -> int:
    """Kernels a layer's forward launches (collectives included: each is a call too)."""
    return sum(op.count for op in ops if op.phase != "bwd")


def layer_host_s(cfg: RunConfig, layer: int = 0) -> float:
    """Eager host time to issue one layer's forward: the stack's per-layer cost plus its per-kernel cost
    for each kernel the layer launches."""
    t = cfg.training
    if t.host_s_per_kernel == 0.0:
        return t.host_s_per_layer
    return t.host_s_per_layer + t.host_s_per_kernel * forward_kernels(config_layer_ops(cfg, layer))


def _mtp_ops(cfg: RunConfig, head_op_list: list[Op]) -> list[Op]:
    """A multi-token-prediction module's ops: projection of [hidden; next embedding], one more layer,
    the head again (empty without MTP)."""
    m, p, t = cfg.model, cfg.parallel, cfg.training
    dtype, mb, seq = t.precision, t.micro_batch, t.seq_len
    if not m.mtp_depth:
        return []
    proj = Op(
        "mtp_proj",
        "gemm",
        flops=2.0 * mb * seq // p.cp * m.hidden_size * 2 * m.hidden_size,
        bytes=0.0,
        gemm=(mb * seq // p.cp, m.hidden_size // p.tp, 2 * m.hidden_size),
        dtype=numerics(dtype)[0],
    )
    return [proj] + config_layer_ops(cfg, m.num_layers - 1) + head_op_list


@dataclass(frozen=True)
class _ModelCosts:
    """What every chunk is assembled from: layer kinds, the embedding, the output head and MTP."""

    kinds: dict[bool, _LayerKind]  # is-MoE -> costs of that layer kind
    embed_ops: list[Op]
    head_ops: list[Op]
    mtp_ops: list[Op]
    embed: tuple[Phase, Phase, Phase, float]
    head: tuple[Phase, Phase, Phase, float]
    mtp: tuple[Phase, Phase, Phase, float] | None
    embed_params: float  # per rank (/tp)
    head_params: float  # per rank (/tp)
    send: float  # activation bytes passed between chunks per micro-batch
    grad: CommGroup  # the gradient-reduction group (ZeRO-3 traffic)


def traced_model_ops(cfg: RunConfig) -> Any:
    """The :class:`~simulator.trace.TracedOps` of a ``stack: {traced: FILE}`` run, checked against the config:
    the trace's shapes and layer count, one GPU per model replica (a trace is one device's kernels)."""
    from simulator.trace import load_stack_trace, traced_ops

    m, p, t = cfg.model, cfg.parallel, cfg.training
    ops = traced_ops(load_stack_trace(cfg.stack.traced, m.num_layers, m.name), batch=t.micro_batch, seq=t.seq_len)
    if p.tp * p.pp * p.cp * p.ep > 1:
        raise ClusterSimError("stack.traced: a trace is one device's kernels; use tp = pp = cp = ep = 1 (dp is fine)")
    return ops


def traced_optimizer_s(cfg: RunConfig, profile: Profile) -> float | None:
    """Seconds of a traced model's recorded optimizer step (its kernels as written) on one unsharded replica;
    None when the trace has no optimizer step (the stack's optimizer model applies)."""
    ops = traced_model_ops(cfg).optimizer
    return sum(op_cost(op, profile, {}, cfg.training.precision).forward_s for op in ops) if ops else None


def _model_costs(cfg: RunConfig, profile: Profile, cluster: Cluster) -> _ModelCosts:
    """Price each layer kind, the embedding, the head and the MTP module once for one rank."""
    m, p, t = cfg.model, cfg.parallel, cfg.training
    placed = Groups.of(cfg, cluster)
    groups = placed.as_dict()
    dtype = t.precision
    mb, seq = t.micro_batch, t.seq_len
    moe = _MoEAdjust.of(cfg, groups) if m.is_moe else None
    cp_ag = cfg.stack.cp_comm == "all_gather"
    price = _Pricer(profile, groups, placed.algorithm, dtype, p.cp, t.collective_call_s, moe, cp_ag)
    kinds: dict[bool, _LayerKind] = {}
    if cfg.stack.traced:
        traced = traced_model_ops(cfg)
        kinds = {False: _kind_of(cfg, profile, price, traced.layers[0])}  # identical layers: one kind
        embed_ops, head_op_list = traced.pre, traced.post
    else:
        for i in range(m.num_layers):
            if m.is_moe_layer(i) not in kinds:
                kinds[m.is_moe_layer(i)] = _layer_kind(cfg, profile, price, i)
        embed_ops = embedding_ops(m, mb, seq // p.cp, dtype=dtype, stack=cfg.stack)
        head_op_list = head_ops(
            m,
            mb,
            seq // p.cp,
            tp=p.tp,
            dtype=dtype,
            vocab_multiple=cfg.stack.vocab_divisible_by * p.tp,
            stack=cfg.stack,
        )
    embed, head = price(embed_ops), price(head_op_list)
    mtp_ops = _mtp_ops(cfg, head_op_list)
    payload = payload_bytes_per_elem(t.pp_payload_dtype)
    return _ModelCosts(
        kinds=kinds,
        embed_ops=embed_ops,
        head_ops=head_op_list,
        mtp_ops=mtp_ops,
        embed=embed,
        head=head,
        mtp=price(mtp_ops) if mtp_ops else None,
        embed_params=m.embedding_params() / p.tp,
        head_params=m.output_params() / p.tp,
        send=mb * (seq // p.cp) * m.hidden_size * payload / p.tp,  # Megatron scatter/gather: 1/tp per rank
        grad=groups["grad"],
    )


@dataclass
class _ChunkSum:
    """A chunk's running totals while its layers, embedding and head are added."""

    params: float
    fwd: Phase = field(default_factory=Phase)
    bwd: Phase = field(default_factory=Phase)
    wgt: Phase = field(default_factory=Phase)
    recompute: Phase = field(default_factory=Phase)
    recompute_flops: float = 0.0
    tensor_s: float = 0.0
    hbm_s: float = 0.0
    host_s: float = 0.0  # eager host time to issue the chunk's layers' forward


def _sum_layers(cfg: RunConfig, layers: tuple[int, ...], kinds: dict[bool, _LayerKind]) -> _ChunkSum:
    """Phases, energy work and recomputation of a chunk's transformer layers."""
    m, t = cfg.model, cfg.training
    s = _ChunkSum(params=sum(_layer_params(cfg, i) for i in layers))
    for i in layers:
        kind = kinds[m.is_moe_layer(i)]
        s.host_s += kind.host_s
        f, b, w, attn = kind.phases
        wt, wh, rt, rh = kind.work
        s.tensor_s, s.hbm_s = s.tensor_s + wt + rt, s.hbm_s + wh + rh
        s.fwd, s.bwd, s.wgt = s.fwd + f, s.bwd + b, s.wgt + w
        if t.recompute == "selective":
            s.recompute = s.recompute + Phase(attn)
            s.recompute_flops += kind.attn_flops
        elif t.recompute == "full":
            s.recompute = s.recompute + f
            s.recompute_flops += kind.flops
    return s


def _add_embedding(s: _ChunkSum, mc: _ModelCosts, profile: Profile, dtype: str) -> None:
    """Add the input embedding to the first chunk."""
    s.fwd, s.bwd = s.fwd + mc.embed[0], s.bwd + mc.embed[1]
    s.params += mc.embed_params
    s.hbm_s += op_work(mc.embed_ops, profile, dtype)[1]


def _add_head(cfg: RunConfig, s: _ChunkSum, mc: _ModelCosts, profile: Profile, num_chunks: int) -> None:
    """Add the output head and any MTP modules to the last chunk (a tied head is not counted twice)."""
    m = cfg.model
    s.fwd, s.bwd, s.wgt = s.fwd + mc.head[0], s.bwd + mc.head[1], s.wgt + mc.head[2]
    ht, hh = op_work(mc.head_ops + mc.mtp_ops * m.mtp_depth, profile, cfg.training.precision)
    s.tensor_s, s.hbm_s = s.tensor_s + ht, s.hbm_s + hh
    for _ in range(m.mtp_depth):
        assert mc.mtp is not None
        s.fwd, s.bwd, s.wgt = s.fwd + mc.mtp[0], s.bwd + mc.mtp[1], s.wgt + mc.mtp[2]
    s.params += mc.head_params if not (m.tied_embeddings and num_chunks == 1) else 0.0


def _finish_phases(
    cfg: RunConfig, s: _ChunkSum, grad: CommGroup, num_layers: int, include_comm: bool, layers: tuple[int, ...] = ()
) -> tuple[Phase, Phase, Phase]:
    """A chunk's final phases: recomputation before the backward, the host floor, ZeRO-3 traffic, the PCIe
    copies of training.offload, and no communication at all when ``include_comm`` is off."""
    p, t = cfg.parallel, cfg.training
    fwd, bwd, wgt = s.fwd, s.recompute + s.bwd, s.wgt
    if s.host_s > 0:
        fwd, bwd, wgt = _host_bound(fwd, bwd, wgt, s.host_s, t.recompute == "full")
    if t.offload.any:  # activations out in the forward, back (and gradients out) in the backward
        d2h_f, pcie_b = offload.chunk_pcie_s(cfg, s.params, layers)
        fwd, bwd = _host_floor(fwd, d2h_f), _host_floor(bwd, pcie_b)
    if p.zero == 3:
        gbytes = grad_comm_bytes(t.precision)
        gathers = cfg.stack.zero3_backward_gathers(t.recompute)
        fetch = offload.param_fetch_s(t.offload, cfg.cluster, s.params, p.dp * p.cp)
        fwd, bwd = _zero3_exposure(fwd, bwd, wgt, s.params, grad, gbytes, t.overlap_grad_reduce, gathers, fetch)
    if not include_comm:
        fwd, bwd, wgt = Phase(fwd.compute_s), Phase(bwd.compute_s), Phase(wgt.compute_s)
    return fwd, bwd, wgt


@dataclass(frozen=True)
class _MoEAdjust:
    """Routing effects on an MoE layer: the busiest EP rank's expert load stretches the expert GEMMs
    (max/mean rank load), and the all-to-all moves the routed bytes of the busiest rank."""

    factor: float
    dispatch_s: float | None
    combine_s: float | None

    @classmethod
    def of(cls, cfg: RunConfig, groups: dict[str, CommGroup]) -> _MoEAdjust:
        from simulator.moe import routing as M

        m, p, t = cfg.model, cfg.parallel, cfg.training
        spec = m.moe
        assert spec is not None
        rng = np.random.default_rng(cfg.seed)
        tokens = t.micro_batch * (t.seq_len // p.cp)
        routing = cfg.moe_routing
        layer = next(i for i in range(m.num_layers) if m.is_moe_layer(i))
        loads = M.expert_loads(routing, spec.num_experts, spec.top_k, tokens * p.ep, layer=layer, rng=rng)
        stats = M.routing_stats(
            loads,
            p.ep if spec.num_experts % p.ep == 0 else 1,
            routed=tokens * p.ep * spec.top_k,
            replicate_hot_experts=routing.replicate_hot_experts,
        )
        factor = M.layer_time_factor(stats) if p.ep > 1 else 1.0
        if p.ep == 1:
            return cls(factor, None, None)
        grp = groups["ep"]
        times = []
        for dtype in (t.moe_dispatch_dtype, "bf16"):  # dispatch payload, then the bf16 combine
            nbytes = M.a2a_bytes_per_rank(
                routing,
                num_experts=spec.num_experts,
                top_k=spec.top_k,
                tokens_per_rank=tokens,
                hidden=m.hidden_size,
                bytes_per_elem=payload_bytes_per_elem(dtype),
                ep=p.ep,
                ranks_per_node=grp.local,
                layer=layer,
                rng=np.random.default_rng(cfg.seed),
            )
            inter = nbytes.inter_node_dedup_bytes if t.moe_node_dedup else nbytes.inter_node_bytes
            intra = nbytes.intra_node_bytes + (nbytes.forwarded_bytes if t.moe_node_dedup else 0.0)
            times.append(routed_all_to_all_time(float(intra.max()), float(inter.max()), grp))
        return cls(factor, times[0], times[1])

    def adjust(self, c: OpCost) -> OpCost:
        name = c.op.name
        if name.startswith("expert_") and self.factor != 1.0:
            return replace(
                c,
                forward_s=c.forward_s * self.factor,
                backward_s=c.backward_s * self.factor,
                backward_weight_s=c.backward_weight_s * self.factor,
            )
        if name == "moe_dispatch" and self.dispatch_s is not None:
            return replace(c, forward_s=self.dispatch_s, backward_s=self.combine_s)  # backward reverses the pair
        if name == "moe_combine" and self.combine_s is not None:
            return replace(c, forward_s=self.combine_s, backward_s=self.dispatch_s)
        return c


def grad_comm_bytes(precision: str) -> float:
    """Bytes per gradient element on the wire: Megatron reduces bf16 grads in fp32, fp16 runs in fp16."""
    return 2.0 if precision == "fp16" else 4.0


def _host_floor(phase: Phase, host_s: float) -> Phase:
    """A phase cannot finish before the host has issued its kernels: stretch its compute if needed."""
    return Phase(max(phase.compute_s, host_s - sum(phase.comm_s.values())), phase.comm_s)


def _host_bound(fwd: Phase, bwd: Phase, wgt: Phase, host_fwd_s: float, full_recompute: bool) -> tuple[Phase, ...]:
    """Eager-mode host cost: forward 1x, input-gradient backward 1x (+1x forward when recomputing), weight
    gradients 1x the per-layer forward host time (backward issues about twice the forward's kernels)."""
    b_host = host_fwd_s * (2.0 if full_recompute else 1.0)
    return _host_floor(fwd, host_fwd_s), _host_floor(bwd, b_host), _host_floor(wgt, host_fwd_s)


def _zero3_exposure(
    fwd: Phase,
    bwd: Phase,
    wgt: Phase,
    params: float,
    dp: CommGroup,
    grad_bytes: float,
    overlap_rs: bool,
    bwd_gathers: int = 1,
    fetch_s: float = 0.0,
) -> tuple[Phase, Phase]:
    """ZeRO-3 (Rajbhandari et al. 2020): every micro-batch all-gathers the chunk's parameters before
    its forward and again before its backward, then reduce-scatters the gradients.

    The gathers are prefetched, so only what does not fit under the phase's compute is exposed; the
    reduce-scatter overlaps the backward only with ``overlap_grad_reduce`` (DeepSpeed's
    ``overlap_comm``, off by default). ZeRO-3 gathers each parameter from every rank that owns a
    shard, so the traffic to off-node owners goes through the rank's own NIC share (the
    ``all_to_all`` pattern), not through an NVLink-aggregated ring. ``bwd_gathers`` is 2 when the
    stack's recomputed forward released the parameters it gathered (DeepSpeed under full recompute:
    :meth:`StackSpec.zero3_backward_gathers`). ``fetch_s``: each rank's shard coming back from host memory or
    NVMe first (training.offload.params), pipelined with the gathers layer by layer, so the slower of the two.
    """
    ag = max(comm_time("all_to_all", 2.0 * params, dp), fetch_s)
    rs = comm_time("all_to_all", grad_bytes * params, dp)
    f_exposed = max(0.0, ag - fwd.total_s)
    b_compute = bwd.total_s + wgt.total_s
    b_ag = bwd_gathers * ag
    b_exposed = max(0.0, b_ag + rs - b_compute) if overlap_rs else max(0.0, b_ag - b_compute) + rs
    return fwd + Phase(0.0, {"dp": f_exposed}), bwd + Phase(0.0, {"dp": b_exposed})
