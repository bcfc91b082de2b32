"""Layer cost report: what one transformer layer and the whole model cost per micro-batch.

The foundation's main job (``clustersim costs``): model + GPU + TP/EP + batch shape -> every
kernel of a layer with its FLOPs, bytes, forward and backward time and what bounds it, and the
compute-only throughput they imply. It answers "where does a layer's time go on this GPU?"
before any schedule or pipeline is simulated.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from hwmodels.dtypes import bytes_per_element
from hwmodels.profile import Profile, load_profile
from simulator.core.config import RunConfig
from simulator.core.costs import CommAlgorithm, OpCost, op_cost
from simulator.core.workload import Op, head_ops, layer_ops


class OpRow(BaseModel):
    """One kernel or collective of the representative layer."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str
    shape: str
    gflop: float
    mbytes: float
    forward_ms: float
    backward_ms: float
    tflops: float  # achieved in the forward pass (0 for memory ops and collectives)
    bound: str


class LayerCostReport(BaseModel):
    """Per-op costs of one layer and the per-micro-batch totals of the model on one rank."""

    model_config = ConfigDict(frozen=True)

    model: str
    gpu: str
    profile: str
    tp: int
    ep: int
    micro_batch: int
    seq_len: int
    precision: str
    layer: int
    ops: list[OpRow]
    layer_forward_ms: float
    layer_backward_ms: float
    model_forward_ms: float
    model_backward_ms: float
    model_flops_per_token: float
    tokens_per_s_per_gpu: float
    tflops_per_gpu: float
    mfu: float
    weights_gb_per_gpu: float
    kv_cache_bytes_per_token: float

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        return self.model_dump()

    def to_frame(self) -> Any:
        """The op table as a pandas DataFrame (pandas is imported only here)."""
        import pandas as pd

        return pd.DataFrame([r.model_dump() for r in self.ops])


def _shape(op: Op) -> str:
    if op.gemm:
        m, n, k = op.gemm
        return f"{m}x{n}x{k}" + (f" x{op.count}" if op.count > 1 else "")
    if op.attn:
        a = op.attn
        return f"b{a['batch']} s{a['q_len']} h{a['heads']}/{a['kv_heads']} d{a['head_dim']}"
    if op.collective:
        return f"{op.collective}({op.group})"
    return "elementwise"


def _row(c: OpCost) -> OpRow:
    op = c.op
    tflops = op.flops / c.forward_s / 1e12 if op.kind in ("gemm", "attn") and c.forward_s > 0 else 0.0
    return OpRow(
        name=op.name,
        kind=op.kind,
        shape=_shape(op),
        gflop=op.flops / 1e9,
        mbytes=op.bytes / 1e6,
        forward_ms=c.forward_s * 1e3,
        backward_ms=c.backward_s * 1e3,
        tflops=tflops,
        bound=c.bound,
    )


def representative_layer(cfg: RunConfig) -> int:
    """The layer the report shows: the first MoE layer of an MoE model, else layer 0."""
    m = cfg.model
    return next((i for i in range(m.num_layers) if m.is_moe_layer(i)), 0)


def weights_per_gpu(cfg: RunConfig) -> float:
    """Bytes of weights one GPU holds: everything split over TP and PP, routed experts also over EP.

    Weights are kept in the training precision's 16-bit format (fp8 training keeps bf16 masters).
    """
    m, p = cfg.model, cfg.parallel
    experts = m.routed_expert_params
    dense = m.total_params - experts
    return bytes_per_element("bf16") * (dense / (p.tp * p.pp) + experts / (p.tp * p.pp * p.ep))


def layer_cost_report(cfg: RunConfig, profile: Profile | str | None = None) -> LayerCostReport:
    """Cost every op of the model's layers for one micro-batch on one rank (TP/EP applied, no PP)."""
    prof = load_profile(profile, gpu=cfg.cluster.gpu) if not isinstance(profile, Profile) else profile
    cluster = cfg.cluster.resolve()
    p, t, m = cfg.parallel, cfg.training, cfg.model
    dtype = t.precision
    groups = {
        "tp": cluster.comm_group(p.tp),
        "ep": cluster.comm_group(p.ep, stride=p.tp),
        "cp": cluster.comm_group(p.cp, stride=p.tp),
    }
    mb, seq = t.micro_batch, t.seq_len

    algorithm = CommAlgorithm.of(p.collective_algorithm, cluster)

    def cost(ops: list[Op]) -> list[OpCost]:
        return [op_cost(op, prof, groups, dtype, algorithm) for op in ops]

    layer_costs: dict[bool, list[OpCost]] = {}
    fwd = bwd = 0.0
    for i in range(m.num_layers):
        kind = m.is_moe_layer(i)
        if kind not in layer_costs:
            ops = layer_ops(
                m, i, mb, seq, tp=p.tp, ep=p.ep, cp=p.cp, dtype=dtype, sp=p.sp, flash=t.flash_attention, stack=cfg.stack
            )
            layer_costs[kind] = cost(ops)
        fwd += sum(c.forward_s for c in layer_costs[kind])
        bwd += sum(c.backward_s for c in layer_costs[kind])
    vocab_multiple = cfg.stack.vocab_divisible_by * p.tp
    head = cost(head_ops(m, mb, seq // p.cp, tp=p.tp, dtype=dtype, vocab_multiple=vocab_multiple, stack=cfg.stack))
    fwd += sum(c.forward_s for c in head)
    bwd += sum(c.backward_s for c in head)

    rep = representative_layer(cfg)
    rows = [_row(c) for c in layer_costs[m.is_moe_layer(rep)] + head]
    tokens = mb * seq
    flops_per_token = m.flops_per_token(t.seq_len, training=True)
    tokens_per_s_gpu = tokens / (fwd + bwd) / (p.tp * p.cp)
    achieved = flops_per_token * tokens_per_s_gpu
    return LayerCostReport(
        model=m.name,
        gpu=cluster.gpu.id,
        profile=prof.kind,
        tp=p.tp,
        ep=p.ep,
        micro_batch=mb,
        seq_len=t.seq_len,
        precision=dtype,
        layer=rep,
        ops=rows,
        layer_forward_ms=sum(c.forward_s for c in layer_costs[m.is_moe_layer(rep)]) * 1e3,
        layer_backward_ms=sum(c.backward_s for c in layer_costs[m.is_moe_layer(rep)]) * 1e3,
        model_forward_ms=fwd * 1e3,
        model_backward_ms=bwd * 1e3,
        model_flops_per_token=flops_per_token,
        tokens_per_s_per_gpu=tokens_per_s_gpu,
        tflops_per_gpu=achieved / 1e12,
        mfu=achieved / prof.peak_flops(dtype),
        weights_gb_per_gpu=weights_per_gpu(cfg) / 1e9,
        kv_cache_bytes_per_token=m.kv_cache_bytes_per_token("bf16"),
    )
