"""Per-GPU memory model for training: what one pipeline rank holds at its peak, in bytes (SI).

The question it answers is "does this plan fit on this GPU, and if not, what fills it?". Every term
below is one rule with a source; the schedule-dependent part (how many micro-batches a rank keeps in
flight) is the caller's, so this module stays a pure function of the config.

Rules (mixed-precision Adam as Megatron-LM trains; ``P`` = parameters on this rank):

* **Weights** -- 2 bytes/param (bf16/fp16 model weights). ``precision=fp8``: Megatron with
  TransformerEngine keeps the bf16 weights *and* an fp8 copy of every GEMM weight, so +1 byte/param for
  the transformer-layer parameters (their norms and biases are counted too, a <0.1 % approximation;
  the embedding and LM head stay bf16).
* **Gradients** -- 4 bytes/param: Megatron accumulates gradients in an fp32 ``main_grad`` buffer.
* **Optimizer** -- 12 bytes/param: fp32 master weights + Adam ``exp_avg`` + ``exp_avg_sq``.
  Rajbhandari et al. 2020 (ZeRO, arXiv:1910.02054, Sec. 3.1) count 2 + 2 + 12 = 16 bytes/param with
  16-bit gradients; with Megatron's fp32 gradients it is 2 + 4 + 12 = 18.
* **ZeRO sharding** over the ranks holding the same parameters: optimizer for ``zero >= 1`` (Megatron's
  distributed optimizer is ZeRO-1), gradients for ``zero >= 2``, weights for ``zero == 3``. Dense
  parameters are replicated on dp x cp ranks (Megatron shards the distributed optimizer over the
  data-parallel group *with* context parallelism: CP ranks hold the same weights); routed experts on
  dp x cp / ep of them (Megatron's expert-data-parallel group).
* **Split of the parameters** -- everything divides by ``tp`` (all matmul weights; norms are really
  replicated, approximated as split). Routed experts additionally divide by ``ep`` (experts are
  tensor-parallel over tp and expert-parallel over ep, as ``layer_costs.weights_per_gpu``); when ep
  exceeds dp x cp the folded expert grid cannot be wider than the tp x dp x cp ranks of a stage, so the
  split is capped there. Pipeline rank ``s`` holds its layers (see :func:`stage_layers`); the first
  also the embedding (and learned positions), the last the final norm and LM head -- for *tied*
  embeddings with pp > 1 the last rank keeps its own copy of the word embedding (Megatron's
  ``shared_embedding``; its gradient is all-reduced with the first rank's).
* **Activations** per layer from :meth:`ModelSpec.activation_bytes_per_layer` (Korthikanti et al.
  2022, arXiv:2205.05198) at seq_len / cp tokens, with tp, sp and the recompute mode, flash attention
  on by default (modern Megatron: the s^2 score terms become an fp32 log-sum-exp). Per in-flight
  micro-batch the rank keeps all its layers' saved tensors, plus on the first rank the embedding
  dropout mask (s b h bytes, /t with SP; Korthikanti Sec. 4.3 counts it as sbh p/t). Once per rank
  (not per micro-batch): the tensors recompute re-creates for the layer being back-propagated
  (``full``: the whole layer minus its kept input; ``selective``: the attention core), and on the last
  rank the output layer's inputs (4 s b h, /t with SP) and the fp32 logits kept by the cross-entropy,
  4 s b V / t (Korthikanti Sec. 4.3: 4sbh/t (1 + V/h)). The head's forward is followed at once by its
  backward in 1F1B/interleaved schedules; with ``schedule=gpipe`` all forwards precede all backwards, so
  there the output-layer term is per micro-batch.
* **Buffers** -- DP gradient bucket (Megatron DDP default ``bucket_size = max(40M, 1M x dp)`` elements,
  fp32; only when gradients are reduced, dp x cp > 1); TP communication buffer 2 x s b h x 2 bytes
  (gathered input / output of a tensor-parallel block, tp > 1); PP send + receive buffers
  2 x s b h x 2 / tp bytes (pp > 1; Megatron scatters the p2p tensor over tp); ZeRO-3 all-gather
  prefetch of 2 layers of bf16 weights; and :data:`RUNTIME_OVERHEAD_BYTES` for the CUDA context,
  cuBLAS/cuBLASLt workspaces and NCCL's internal buffers (an estimate, see its comment).
* **Fragmentation** -- :data:`FRAGMENTATION_FRACTION` of the allocator-managed memory (everything above
  except the runtime overhead, which is not allocated by PyTorch's caching allocator).
* **Usable memory** -- :func:`usable_memory_bytes`: the catalogue's "80 GB" is 80 GiB of HBM, of which
  CUDA reports slightly less (79.18 GiB on the measured H100); that ratio is applied to every GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from hwmodels.errors import ClusterSimError
from simulator.core.config import RunConfig
from simulator.core.device_memory import RUNTIME_OVERHEAD_BYTES
from simulator.training.plan import chunk_layers
from simulator.training.schedules import get_schedule

WEIGHT_BYTES = 2.0  # bf16/fp16 model weights
FP8_WEIGHT_BYTES = 1.0  # TransformerEngine's fp8 copy of each GEMM weight (precision=fp8)
GRAD_BYTES = 4.0  # Megatron's fp32 main_grad accumulation buffer
OPTIMIZER_BYTES = 12.0  # Adam: fp32 master weights + exp_avg + exp_avg_sq (ZeRO paper, Sec. 3.1)
ACT_BYTES = 2.0  # 16-bit activations / communication tensors
LOGIT_BYTES = 4.0  # fp32 logits kept by the vocab-parallel cross-entropy for its backward
MASK_BYTES = 1.0  # dropout masks stored as bytes (Korthikanti et al. 2022)

DDP_BUCKET_MIN_ELEMENTS = 40_000_000  # Megatron DDP: bucket_size = max(40M, 1M x dp) elements
DDP_BUCKET_ELEMENTS_PER_DP_RANK = 1_000_000
ZERO3_PREFETCH_LAYERS = 2  # layers of gathered weights ZeRO-3 holds (current + prefetched next)


#: Allocator fragmentation allowance, as a fraction of all allocator-managed bytes. An ASSUMPTION:
#: PyTorch's caching allocator rounds and caches blocks, so reserved exceeds allocated by some 5-10 %
#: in long training runs (ZeRO, Rajbhandari et al. 2020 Sec. 3.2 discusses fragmentation from
#: interleaved short- and long-lived tensors); 8 % sits in that range.
FRAGMENTATION_FRACTION = 0.08


_GB = 1e9


class MemoryBreakdown(BaseModel):
    """Peak bytes one GPU holds during training, by what holds them (SI bytes)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weights: float
    gradients: float
    optimizer: float
    activations: float
    buffers: float
    fragmentation: float

    @property
    def total(self) -> float:
        """Peak bytes: the sum of every term."""
        return self.weights + self.gradients + self.optimizer + self.activations + self.buffers + self.fragmentation

    def to_gb(self) -> dict[str, float]:
        """Every term in GB (1e9 bytes), plus ``peak`` (= total), for tables and charts."""
        out = {k: float(v) / _GB for k, v in self.model_dump().items()}
        out["peak"] = self.total / _GB
        return out


@dataclass(frozen=True)
class StageParams:
    """Parameters one rank holds, split by how they are sharded (per-rank counts, before ZeRO)."""

    layers: float  # transformer-layer parameters except routed experts, replicated over dp x cp
    experts: float  # routed experts, replicated over the expert-data-parallel ranks
    edges: float  # embedding / final norm / LM head (first and last rank), replicated over dp x cp


def _check_stage(cfg: RunConfig, stage: int) -> None:
    pp = cfg.parallel.pp
    if not 0 <= stage < pp:
        raise ClusterSimError(f"stage={stage} is out of range for parallel.pp={pp}; use 0..{pp - 1}")


def stage_layers(cfg: RunConfig, stage: int) -> list[int]:
    """Layer indices pipeline rank ``stage`` holds, over all its virtual chunks.

    With interleaving (Narayanan et al. SC'21) rank s holds model chunks s, s + pp, s + 2 pp, ...,
    each of num_layers / (pp x vpp) consecutive layers; vpp = 1 is the plain contiguous split.
    """
    _check_stage(cfg, stage)
    p = cfg.parallel
    chunks = chunk_layers(cfg.model.num_layers, p.pp * p.vpp)
    return [layer for v in range(p.vpp) for layer in chunks[stage + v * p.pp]]


def _is_first(cfg: RunConfig, stage: int) -> bool:
    return stage == 0


def _is_last(cfg: RunConfig, stage: int) -> bool:
    return stage == cfg.parallel.pp - 1


def _expert_split(cfg: RunConfig) -> int:
    """Ranks one stage's routed experts are split over: tp x ep, capped at the tp x dp x cp ranks."""
    p = cfg.parallel
    return min(p.tp * p.ep, p.tp * p.dp * p.cp)


def _replicas(cfg: RunConfig) -> tuple[int, float]:
    """(dense, expert) replication degree: the ranks ZeRO shards each kind of parameter over."""
    p = cfg.parallel
    stage_ranks = p.tp * p.dp * p.cp
    return p.dp * p.cp, stage_ranks / _expert_split(cfg)


def _routed_per_moe_layer(cfg: RunConfig) -> float:
    m = cfg.model
    return m.routed_expert_params / m.num_moe_layers if m.num_moe_layers else 0.0


def _layer_split(cfg: RunConfig, i: int) -> tuple[float, float]:
    """(dense, expert) parameters of layer ``i`` held by one rank (before ZeRO)."""
    m = cfg.model
    experts = _routed_per_moe_layer(cfg) if m.is_moe_layer(i) else 0.0
    dense = m.params_per_layer(i) - experts
    return dense / cfg.parallel.tp, experts / _expert_split(cfg)


def _stage_params(cfg: RunConfig, stage: int) -> StageParams:
    m, p = cfg.model, cfg.parallel
    layers = experts = 0.0
    for i in stage_layers(cfg, stage):
        d, e = _layer_split(cfg, i)
        layers += d
        experts += e
    extra = 0.0
    if _is_first(cfg, stage):
        extra += m.embedding_params()
    if _is_last(cfg, stage):
        extra += m.output_params()
        if m.tied_embeddings and p.pp > 1:
            extra += m.vocab_size * m.hidden_size  # the last rank's copy of the shared word embedding
    return StageParams(layers=layers, experts=experts, edges=extra / p.tp)


def static_memory(cfg: RunConfig, stage: int) -> MemoryBreakdown:
    """Weights, gradients, optimizer state and buffers of pipeline rank ``stage`` (no activations).

    These do not depend on the schedule, so a planner can reject a plan before simulating it.
    """
    par = _stage_params(cfg, stage)
    weights, gradients, optimizer = sharded_states(
        par, *_replicas(cfg), zero=cfg.parallel.zero, fp8=cfg.training.precision == "fp8"
    )
    return MemoryBreakdown(
        weights=weights,
        gradients=gradients,
        optimizer=optimizer,
        activations=0.0,
        buffers=_buffer_bytes(cfg, stage),
        fragmentation=0.0,
    )


def sharded_states(
    par: StageParams, dense_rep: float, expert_rep: float, *, zero: int, fp8: bool
) -> tuple[float, float, float]:
    """(weights, gradients, optimizer state) bytes of one rank holding ``par`` under ZeRO stage ``zero``.

    ZeRO-1 shards the optimizer state, ZeRO-2 also the gradients, ZeRO-3 also the weights (Rajbhandari
    et al. 2020): dense parameters over ``dense_rep`` ranks (dp x cp), routed experts over ``expert_rep``.
    With fp8, TransformerEngine keeps an fp8 copy of each GEMM weight (not of the embedding/head).
    """

    def sharded(level: int, edges: bool = True) -> float:
        dense = par.layers + (par.edges if edges else 0.0)
        return dense / dense_rep + par.experts / expert_rep if zero >= level else dense + par.experts

    weights = WEIGHT_BYTES * sharded(3) + (FP8_WEIGHT_BYTES * sharded(3, edges=False) if fp8 else 0.0)
    return weights, GRAD_BYTES * sharded(2), OPTIMIZER_BYTES * sharded(1)


def buffer_bytes(*, tp: int, pp: int, dp: int, cp: int, sbh: float, zero3_layer_params: float = 0.0) -> float:
    """Communication buffers and the fixed runtime overhead of one rank.

    ``sbh`` is tokens x hidden size of one micro-batch on the rank (sequence / cp x micro-batch x h);
    ``zero3_layer_params`` the largest layer's per-rank parameters when ZeRO-3 prefetches gathered weights.
    """
    total = RUNTIME_OVERHEAD_BYTES
    if dp * cp > 1:
        total += GRAD_BYTES * max(DDP_BUCKET_MIN_ELEMENTS, DDP_BUCKET_ELEMENTS_PER_DP_RANK * dp)
    if tp > 1:
        total += 2 * ACT_BYTES * sbh
    if pp > 1:
        total += 2 * ACT_BYTES * sbh / tp
    return total + ZERO3_PREFETCH_LAYERS * WEIGHT_BYTES * zero3_layer_params


def peak_bytes(static: float, buffers: float, activations: float, copies: float = 1.0) -> float:
    """Peak bytes of a rank: every term plus fragmentation of the allocator-managed part.

    ``static`` is weights + gradients + optimizer state; ``copies`` > 1 keeps extra copies of it
    (DualPipe holds two model copies).
    """
    managed = static + activations + buffers - RUNTIME_OVERHEAD_BYTES
    total = static + activations + buffers + FRAGMENTATION_FRACTION * managed
    return total + (copies - 1.0) * static * (1.0 + FRAGMENTATION_FRACTION)


def embedding_mask_bytes(sbh: float, tp: int, sp: bool) -> float:
    """The first rank's embedding dropout mask, per in-flight micro-batch (bytes; /tp with SP)."""
    return MASK_BYTES * sbh / (tp if sp else 1)


def output_layer_bytes(tokens: float, hidden: int, vocab: int, tp: int, sp: bool) -> float:
    """Last rank: final-norm and LM-head inputs (4 s b h, /t with SP) and the fp32 logits (4 s b V / t)."""
    return 2 * ACT_BYTES * tokens * hidden / (tp if sp else 1) + LOGIT_BYTES * tokens * vocab / tp


def _buffer_bytes(cfg: RunConfig, stage: int) -> float:
    """Communication buffers and the fixed runtime overhead on rank ``stage``."""
    p, t, m = cfg.parallel, cfg.training, cfg.model
    biggest = max(sum(_layer_split(cfg, i)) for i in stage_layers(cfg, stage)) if p.zero == 3 else 0.0
    sbh = (t.seq_len / p.cp) * t.micro_batch * m.hidden_size
    return buffer_bytes(tp=p.tp, pp=p.pp, dp=p.dp, cp=p.cp, sbh=sbh, zero3_layer_params=biggest)


def _layer_activations(cfg: RunConfig, i: int, recompute: str, flash_attention: bool) -> float:
    p, t = cfg.parallel, cfg.training
    return cfg.model.activation_bytes_per_layer(
        t.seq_len // p.cp,
        t.micro_batch,
        tp=p.tp,
        sp=p.sp,
        recompute=recompute,
        flash_attention=flash_attention,
        layer=i,
    )


def _output_layer_activations(cfg: RunConfig) -> float:
    p, t, m = cfg.parallel, cfg.training, cfg.model
    return output_layer_bytes((t.seq_len / p.cp) * t.micro_batch, m.hidden_size, m.vocab_size, p.tp, p.sp)


def activation_bytes_per_microbatch(cfg: RunConfig, stage: int, *, flash_attention: bool = True) -> float:
    """Activations one in-flight micro-batch keeps on rank ``stage``: its layers' saved tensors (per the
    recompute mode), the embedding dropout mask on the first rank, and with gpipe the output layer's.

    The transient terms held once per rank (recompute working set, 1F1B logits) are in
    :func:`transient_activation_bytes`.
    """
    p, t, m = cfg.parallel, cfg.training, cfg.model
    total = sum(_layer_activations(cfg, i, t.recompute, flash_attention) for i in stage_layers(cfg, stage))
    if _is_first(cfg, stage):
        total += embedding_mask_bytes((t.seq_len / p.cp) * t.micro_batch * m.hidden_size, p.tp, p.sp)
    if _is_last(cfg, stage) and get_schedule(p.schedule).all_forwards_first:
        total += _output_layer_activations(cfg)
    return total


def transient_activation_bytes(cfg: RunConfig, stage: int, *, flash_attention: bool = True) -> float:
    """Activations live once per rank whatever the number of in-flight micro-batches.

    The tensors recompute re-creates for the one layer being back-propagated (largest layer on the
    rank), and on the last rank the output layer's inputs and fp32 logits unless the schedule is gpipe.
    """
    recompute = cfg.training.recompute
    working = 0.0
    if recompute != "none":
        working = max(
            _layer_activations(cfg, i, "none", flash_attention) - _layer_activations(cfg, i, recompute, flash_attention)
            for i in stage_layers(cfg, stage)
        )
    if _is_last(cfg, stage) and not get_schedule(cfg.parallel.schedule).all_forwards_first:
        working += _output_layer_activations(cfg)
    return working


def memory_breakdown(
    cfg: RunConfig, stage: int, inflight_microbatches: float, *, flash_attention: bool = True
) -> MemoryBreakdown:
    """Peak memory of rank ``stage`` with ``inflight_microbatches`` micro-batches' activations held.

    The count comes from the schedule (1F1B: pp - stage on rank ``stage``), so the caller supplies it;
    it may be fractional (interleaved chunks count as 1/vpp of a micro-batch).
    """
    if inflight_microbatches < 0:
        raise ClusterSimError(f"inflight_microbatches={inflight_microbatches} must be >= 0")
    static = static_memory(cfg, stage)
    activations = inflight_microbatches * activation_bytes_per_microbatch(
        cfg, stage, flash_attention=flash_attention
    ) + transient_activation_bytes(cfg, stage, flash_attention=flash_attention)
    managed = static.weights + static.gradients + static.optimizer + activations
    managed += static.buffers - RUNTIME_OVERHEAD_BYTES
    return MemoryBreakdown(  # total == peak_bytes(weights + gradients + optimizer, buffers, activations)
        weights=static.weights,
        gradients=static.gradients,
        optimizer=static.optimizer,
        activations=activations,
        buffers=static.buffers,
        fragmentation=FRAGMENTATION_FRACTION * managed,
    )
