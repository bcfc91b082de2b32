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
  16-bit gradients; with Megatron's fp32 gradients it is 2 + 4 + 12 = 18. ``optimizer_moment_dtype=bf16``
  keeps the moments in BF16, 4 + 2 + 2 = 8 (DeepSeek-V3 report sec. 3.3.3); ``ema=gpu`` adds an fp32
  weight average (4), ``ema=cpu`` keeps it in host memory (sec. 3.2.3).
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
  ``shared_embedding``; its gradient is all-reduced with the first rank's). Multi-token prediction
  (``mtp_depth``) puts its modules (projection, norms, one layer) on the rank holding the head, with an
  embedding copy unless that rank also holds the embedding (DualPipe: shared, DeepSeek-V3 sec. 3.2.3).
* **DualPipe** -- rank s holds stages s and pp-1-s (:func:`rank_layers`): twice the weights and gradients
  ("2x parameters", DeepSeek-V3 Table 2), the two ends (embedding, head, MTP) on ranks 0 and pp-1; each
  stage's two copies are replicas, so ZeRO shards over twice the data-parallel ranks and the optimizer
  shard per rank is not doubled.
* **Activations** per layer from :meth:`ModelSpec.activation_bytes_per_layer` (Korthikanti et al.
  2022, arXiv:2205.05198) at seq_len / cp tokens, with tp, sp, the recompute mode and its
  ``recompute_modules``, the ``activation_cache_dtype`` and dropout, flash attention on by default
  (modern Megatron: the s^2 score terms become an fp32 log-sum-exp). Per in-flight micro-batch (the
  engine's unit: one micro-batch through num_layers / pp layers) the rank keeps that many layers' saved
  tensors (at the mean over its layers), plus on the first rank the embedding
  dropout mask (s b h bytes, /t with SP; Korthikanti Sec. 4.3 counts it as sbh p/t). Once per rank
  (not per micro-batch): the tensors recompute re-creates for the layer being back-propagated
  (``full``: the whole layer minus its kept input; ``selective``: the attention core), and on the last
  rank the output layer's inputs (4 s b h, /t with SP) and the fp32 logits kept by the cross-entropy,
  4 s b V / t (Korthikanti Sec. 4.3: 4sbh/t (1 + V/h)). The head's forward is followed at once by its
  backward in 1F1B/interleaved schedules; with ``schedule=gpipe`` all forwards precede all backwards, so
  there the output-layer term is per micro-batch. MTP modules add their layer, projection input and
  second pass through the head to that term.
* **Buffers** -- DP gradient bucket (Megatron DDP default ``bucket_size = max(40M, 1M x dp)`` elements,
  fp32; only when gradients are reduced, dp x cp > 1); TP communication buffer 2 x s b h x 2 bytes
  (gathered input / output of a tensor-parallel block, tp > 1); PP send + receive buffers
  2 x s b h x 2 / tp bytes (pp > 1; Megatron scatters the p2p tensor over tp); ZeRO-3 all-gather
  prefetch of 2 layers of bf16 weights; and :data:`RUNTIME_OVERHEAD_BYTES` for the CUDA context,
  cuBLAS/cuBLASLt workspaces and NCCL's internal buffers (an estimate, see its comment).
* **Fragmentation** -- :func:`fragmentation_ratio` of the dynamic pool (activations and buffers except
  the runtime overhead, which PyTorch's caching allocator does not manage; weights, gradients and
  optimizer state live in contiguous buffers allocated once): 5 % base, +7 % with recompute, +8 % with
  ZeRO-3, +3 % for MoE, capped at 5 % with ``expandable_segments`` (sources at the constants).
* **Compression state** -- with ``training.compression`` and a data-parallel collective, an fp32 error-feedback
  residual of every local gradient element and PowerSGD's fp32 factors (:func:`compression_state_bytes`,
  ``simulator.compression.memory_overhead_bytes``), held for the whole run outside the allocator's dynamic pool.
* **Host tiers** -- ``training.offload`` moves the optimizer state and fp32 gradients (ZeRO-Offload), the 16-bit
  weights (ZeRO-3, ZeRO-Infinity) or the saved activations of in-flight micro-batches off the GPU, to host memory or
  NVMe (:mod:`simulator.training.offload`: ``place_states``, ``activations_on_gpu``); ``host`` and ``nvme`` report
  them apart from the GPU total.
* **Usable memory** -- :func:`usable_memory_bytes`: the catalogue's "80 GB" is 80 GiB of HBM, of which
  CUDA reports slightly less (79.18 GiB on the measured H100); that ratio is applied to every GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from hwmodels.errors import ClusterSimError
from simulator.compression import CompressionSpec, memory_overhead_bytes
from simulator.core.config import RunConfig
from simulator.core.device_memory import RUNTIME_OVERHEAD_BYTES
from simulator.training import offload
from simulator.training.offload import activations_on_gpu, place_states
from simulator.training.plan import model_chunks
from simulator.training.schedules import get_schedule

WEIGHT_BYTES = 2.0  # bf16/fp16 model weights
FP8_WEIGHT_BYTES = 1.0  # TransformerEngine's fp8 copy of each GEMM weight (precision=fp8)
GRAD_BYTES = 4.0  # Megatron's fp32 main_grad accumulation buffer
OPTIMIZER_BYTES = 12.0  # Adam: fp32 master weights + exp_avg + exp_avg_sq (ZeRO paper, Sec. 3.1)
MASTER_BYTES = 4.0  # fp32 master weights (kept fp32 by DeepSeek-V3 too, report sec. 3.3.3)
MOMENT_BYTES = {"fp32": 4.0, "bf16": 2.0}  # per Adam moment; DeepSeek-V3 tracks both in BF16 (sec. 3.3.3)
EMA_BYTES = 4.0  # an fp32 exponential moving average of the weights, when it lives on the GPU
ACT_BYTES = 2.0  # 16-bit activations / communication tensors
LOGIT_BYTES = 4.0  # fp32 logits kept by the vocab-parallel cross-entropy for its backward
MASK_BYTES = 1.0  # dropout masks stored as bytes (Korthikanti et al. 2022)

DDP_BUCKET_MIN_ELEMENTS = 40_000_000  # Megatron DDP: bucket_size = max(40M, 1M x dp) elements
DDP_BUCKET_ELEMENTS_PER_DP_RANK = 1_000_000
ZERO3_PREFETCH_LAYERS = 2  # layers of gathered weights ZeRO-3 holds (current + prefetched next)


# Allocator fragmentation: PyTorch's caching allocator splits and caches blocks, so its reserved memory
# exceeds the peak of live tensors. Measured as the *fragmentation ratio* 1 - peak active / peak reserved
# (GMLake, Guo et al. ASPLOS'24, arXiv:2401.08156, README of intelligent-machine-learning/glake/GMLake):
# up to ~30 % for LLM fine-tuning with DeepSpeed ZeRO-3 + recomputation (+ LoRA / offload) on A100-80GB,
# GMLake's virtual-memory stitching recovering 5-29 points of it and keeping the ratio < 10 % (> 95 %
# utilisation at 13B-20B); STWeaver/STAlloc (Huang et al. 2025, arXiv:2507.16274) finds up to 43 % wasted
# under Megatron-LM with virtual pipelines and recomputation, and names MoE's variable-size dispatch as a
# dynamic source. The rule below is an ASSUMPTION anchored on those ranges, not a fit:
#
# * only the *dynamic* pool fragments (activations, recompute working sets, communication buffers,
#   ZeRO-3 gathered weights): Megatron allocates weights, fp32 gradients and the distributed optimizer's
#   shards once, as contiguous buffers (``param_and_grad_buffer``), so they leave no holes;
# * ratio = base + recompute (tensor lifetimes broken by re-created activations) + ZeRO-3 (whole layers
#   gathered and freed each micro-batch) + MoE (token counts per expert change every micro-batch), so
#   ZeRO-3 + recompute sits at ~20 %, mid-range of GMLake's measurements;
# * ``expandable_segments:True`` (PyTorch CUDA semantics docs: segments grow in place through the CUDA
#   virtual-memory API, "reducing fragmentation" when sizes change) behaves like GMLake's VMM allocator:
#   the ratio is capped at the base.
FRAGMENTATION_BASE = 0.05  # fixed-shape training, no recompute: the allocator's rounding and caching
FRAGMENTATION_RECOMPUTE = 0.07
FRAGMENTATION_ZERO3 = 0.08
FRAGMENTATION_MOE = 0.03
FRAGMENTATION_FRACTION = FRAGMENTATION_BASE  # the ratio peak_bytes assumes when not told (kept for importers)


def fragmentation_ratio(*, recompute: str, zero: int, moe: bool, expandable_segments: bool = False) -> float:
    """Fraction of the dynamic pool's reserved bytes that the caching allocator leaves unusable (see above)."""
    if expandable_segments:
        return FRAGMENTATION_BASE
    ratio = FRAGMENTATION_BASE
    ratio += FRAGMENTATION_RECOMPUTE if recompute != "none" else 0.0
    ratio += FRAGMENTATION_ZERO3 if zero == 3 else 0.0
    return ratio + (FRAGMENTATION_MOE if moe else 0.0)


def fragmentation_bytes(dynamic: float, ratio: float) -> float:
    """Reserved-but-unusable bytes when ``dynamic`` bytes are live at the peak: reserved = live / (1 - ratio)."""
    return max(0.0, dynamic) * ratio / (1.0 - ratio)


def config_fragmentation_ratio(cfg: RunConfig) -> float:
    """:func:`fragmentation_ratio` of a run configuration."""
    t = cfg.training
    return fragmentation_ratio(
        recompute=t.recompute, zero=cfg.parallel.zero, moe=cfg.model.is_moe, expandable_segments=t.expandable_segments
    )


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
    host: float = 0.0  # offloaded to host memory (training.offload), not part of the GPU total
    nvme: float = 0.0  # offloaded to NVMe, not part of the GPU total
    compression: float = 0.0  # gradient-compression state: fp32 error-feedback residual, PowerSGD factors

    @property
    def total(self) -> float:
        """Peak GPU bytes: the sum of every GPU term (host and NVMe tiers excluded)."""
        return (
            self.weights
            + self.gradients
            + self.optimizer
            + self.activations
            + self.buffers
            + self.fragmentation
            + self.compression
        )

    def to_gb(self) -> dict[str, float]:
        """Every term in GB (1e9 bytes), plus ``peak`` (= total), for tables and charts; the host and NVMe
        tiers and the compression state only when there are any."""
        dump = self.model_dump()
        out = {k: float(v) / _GB for k, v in dump.items() if v or k not in ("host", "nvme", "compression")}
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
    chunks = model_chunks(cfg, p.pp * p.vpp)
    return [layer for v in range(p.vpp) for layer in chunks[stage + v * p.pp]]


def _dual(cfg: RunConfig) -> bool:
    return get_schedule(cfg.parallel.schedule).dual


def rank_layers(cfg: RunConfig, stage: int) -> list[int]:
    """Layer indices pipeline rank ``stage`` holds weights for: its :func:`stage_layers`, and with DualPipe
    also those of stage pp-1-stage (the reverse-direction pipeline's chunk; DeepSeek-V3 sec. 3.2.1)."""
    layers = stage_layers(cfg, stage)
    if _dual(cfg):
        layers = layers + stage_layers(cfg, cfg.parallel.pp - 1 - stage)
    return layers


def _is_first(cfg: RunConfig, stage: int) -> bool:
    """Whether the rank holds the first chunk (the embedding): stage 0, and with DualPipe stage pp-1 too."""
    return stage == 0 or (_dual(cfg) and stage == cfg.parallel.pp - 1)


def _is_last(cfg: RunConfig, stage: int) -> bool:
    """Whether the rank holds the last chunk (final norm, head, MTP): stage pp-1, and with DualPipe stage 0."""
    return stage == cfg.parallel.pp - 1 or (_dual(cfg) and stage == 0)


def _expert_split(cfg: RunConfig) -> int:
    """Ranks one stage's routed experts are split over: tp x ep, capped at the tp x dp x cp ranks."""
    p = cfg.parallel
    return min(p.tp * p.ep, p.tp * p.dp * p.cp)


def _replicas(cfg: RunConfig) -> tuple[int, float]:
    """(dense, expert) replication degree: the ranks ZeRO shards each kind of parameter over.

    DualPipe keeps each stage on two pipeline ranks (s and pp-1-s), whose gradients are summed like
    data-parallel replicas', so a ZeRO optimizer shards over twice the data-parallel group: its two model
    copies double the weights and gradients a rank holds ("2x parameters", DeepSeek-V3 Table 2) but not
    its optimizer shard (with ZeRO >= 1).
    """
    p = cfg.parallel
    stage_ranks = p.tp * p.dp * p.cp
    copies = 2 if _dual(cfg) else 1
    return copies * p.dp * p.cp, copies * stage_ranks / _expert_split(cfg)


def _routed_per_moe_layer(cfg: RunConfig) -> float:
    m = cfg.model
    return m.routed_expert_params / m.num_moe_layers if m.num_moe_layers else 0.0


def _layer_split(cfg: RunConfig, i: int) -> tuple[float, float]:
    """(dense, expert) parameters of layer ``i`` held by one rank (before ZeRO)."""
    m = cfg.model
    experts = _routed_per_moe_layer(cfg) if m.is_moe_layer(i) else 0.0
    dense = m.params_per_layer(i) - experts
    return dense / cfg.parallel.tp, experts / _expert_split(cfg)


def _mtp_params(cfg: RunConfig) -> tuple[float, float]:
    """(dense, expert) per-rank parameters of the multi-token-prediction modules (before ZeRO).

    Each of ``mtp_depth`` modules (DeepSeek-V3 sec. 2.2) is a projection of [h; embedding] (2h x h), two
    input RMSNorms and a final one, and one transformer layer like the model's last; its embedding and
    output head are the main model's, shared (sec. 3.2.3).
    """
    m = cfg.model
    if not m.mtp_depth:
        return 0.0, 0.0
    dense, experts = _layer_split(cfg, m.num_layers - 1)
    dense += (2 * m.hidden_size * m.hidden_size + 3 * m.hidden_size) / cfg.parallel.tp
    return m.mtp_depth * dense, m.mtp_depth * experts


def _stage_params(cfg: RunConfig, stage: int) -> StageParams:
    m, p = cfg.model, cfg.parallel
    layers = experts = 0.0
    for i in rank_layers(cfg, stage):
        d, e = _layer_split(cfg, i)
        layers += d
        experts += e
    extra = 0.0
    first, last = _is_first(cfg, stage), _is_last(cfg, stage)
    if first:
        extra += m.embedding_params()
    if last:
        extra += m.output_params()
        mtp_dense, mtp_experts = _mtp_params(cfg)
        layers += mtp_dense
        experts += mtp_experts
        if (m.tied_embeddings or m.mtp_depth) and not first:
            # the last rank's copy of the word embedding (Megatron's shared_embedding for tied heads; MTP
            # looks up the next tokens' embeddings). DualPipe puts both ends on one rank, so the MTP
            # modules share the embedding and head physically (DeepSeek-V3 sec. 3.2.3): no copy.
            extra += m.vocab_size * m.hidden_size
    return StageParams(layers=layers, experts=experts, edges=extra / p.tp)


def optimizer_bytes_per_param(cfg: RunConfig) -> float:
    """Adam state per parameter: fp32 master weights + two moments in ``optimizer_moment_dtype``, plus an
    fp32 EMA when it is kept on the GPU (DeepSeek-V3 keeps it in CPU memory, sec. 3.2.3)."""
    t = cfg.training
    return MASTER_BYTES + 2 * MOMENT_BYTES[t.optimizer_moment_dtype] + (EMA_BYTES if t.ema == "gpu" else 0.0)


def static_memory(cfg: RunConfig, stage: int) -> MemoryBreakdown:
    """Weights, gradients, optimizer state and buffers of pipeline rank ``stage`` (no activations).

    These do not depend on the schedule, so a planner can reject a plan before simulating it.
    """
    par = _stage_params(cfg, stage)
    weights, gradients, optimizer = sharded_states(
        par,
        *_replicas(cfg),
        zero=cfg.parallel.zero,
        fp8=cfg.training.precision == "fp8",
        optimizer_bytes=optimizer_bytes_per_param(cfg),
    )
    # training.offload moves optimizer state, gradients and weights to host memory or NVMe (offload.place_states)
    bucket = GRAD_BYTES * DDP_BUCKET_MIN_ELEMENTS
    p = cfg.parallel
    placed = place_states(
        cfg.training.offload, p.dp * p.cp, weights, gradients, optimizer, optimizer_bytes_per_param(cfg), bucket
    )
    return MemoryBreakdown(
        weights=placed.weights,
        gradients=placed.gradients,
        optimizer=placed.optimizer,
        activations=0.0,
        buffers=_buffer_bytes(cfg, stage) + placed.extra_buffers,
        fragmentation=0.0,
        host=placed.host,
        nvme=placed.nvme,
        compression=compression_state_bytes(cfg.training.compression, p.dp * p.cp, par),
    )


def compression_state_bytes(spec: CompressionSpec | None, dp_cp: int, par: StageParams) -> float:
    """Persistent gradient-compression state of a rank (``simulator.compression.memory_overhead_bytes``): an fp32
    error-feedback residual of every local gradient element, PowerSGD's fp32 factors; 0 without DP or compression.
    It is kept for the rank's whole (unsharded) local gradient, which is what is compressed before the collective."""
    if spec is None or dp_cp == 1:
        return 0.0
    return memory_overhead_bytes(spec, par.layers + par.experts + par.edges)


def sharded_states(
    par: StageParams,
    dense_rep: float,
    expert_rep: float,
    *,
    zero: int,
    fp8: bool,
    optimizer_bytes: float = OPTIMIZER_BYTES,
) -> tuple[float, float, float]:
    """(weights, gradients, optimizer state) bytes of one rank holding ``par`` under ZeRO stage ``zero``.

    ZeRO-1 shards the optimizer state, ZeRO-2 also the gradients, ZeRO-3 also the weights (Rajbhandari
    et al. 2020): dense parameters over ``dense_rep`` ranks (dp x cp), routed experts over ``expert_rep``.
    With fp8, TransformerEngine keeps an fp8 copy of each GEMM weight (not of the embedding/head).
    ``optimizer_bytes`` per parameter (:func:`optimizer_bytes_per_param`; 12 for fp32 Adam).
    """

    def sharded(level: int, edges: bool = True) -> float:
        dense = par.layers + (par.edges if edges else 0.0)
        return dense / dense_rep + par.experts / expert_rep if zero >= level else dense + par.experts

    weights = WEIGHT_BYTES * sharded(3) + (FP8_WEIGHT_BYTES * sharded(3, edges=False) if fp8 else 0.0)
    return weights, GRAD_BYTES * sharded(2), optimizer_bytes * sharded(1)


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


def peak_bytes(
    static: float, buffers: float, activations: float, copies: float = 1.0, *, ratio: float = FRAGMENTATION_FRACTION
) -> float:
    """Peak bytes of a rank: every term plus fragmentation of the dynamic pool (activations and buffers
    but the runtime overhead) at fragmentation ``ratio`` (:func:`fragmentation_ratio`).

    ``static`` is weights + gradients + optimizer state; ``copies`` > 1 multiplies it (a rough stand-in
    for DualPipe, whose exact per-rank state :func:`static_memory` computes from both of its chunks).
    """
    dynamic = activations + buffers - RUNTIME_OVERHEAD_BYTES
    return copies * static + activations + buffers + fragmentation_bytes(dynamic, ratio)


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
    biggest = min(biggest, offload.gathered_layer_cap(t.offload))  # ZeRO-Infinity tiles layers under its live-set cap
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
        dropout=t.dropout,
        layer=i,
        recompute_modules=t.recompute_modules,
        cache_dtype=t.activation_cache_dtype,
    )


def _output_layer_activations(cfg: RunConfig, flash_attention: bool = True) -> float:
    """The output layer's inputs and fp32 logits; with MTP (DeepSeek-V3 sec. 2.2) each module adds its
    layer's saved tensors, its projection's input ([h; embedding], 2 x 2h, /t with SP) and its own pass
    through the shared head, all live until the loss's backward."""
    p, t, m = cfg.parallel, cfg.training, cfg.model
    tokens = (t.seq_len / p.cp) * t.micro_batch
    head = output_layer_bytes(tokens, m.hidden_size, m.vocab_size, p.tp, p.sp)
    if not m.mtp_depth:
        return head
    layer = _layer_activations(cfg, m.num_layers - 1, t.recompute, flash_attention)
    proj = 2 * ACT_BYTES * tokens * m.hidden_size / (p.tp if p.sp else 1)
    return head + m.mtp_depth * (head + layer + proj)


def _stage_unit_layers(cfg: RunConfig) -> float:
    """Layers of one micro-batch through an average stage: the unit the engine counts in-flight
    activations in (``PipelineEngine.weight``: a chunk weighs its layers / (num_layers / pp))."""
    return cfg.model.num_layers / cfg.parallel.pp


def activation_bytes_per_microbatch(cfg: RunConfig, stage: int, *, flash_attention: bool = True) -> float:
    """Activations one in-flight micro-batch keeps on rank ``stage``: the saved tensors (per the recompute
    mode) of an average stage's worth of layers (num_layers / pp, at the mean over the layers the rank
    holds), the embedding dropout mask on the first rank, and with gpipe the output layer's.

    The engine's in-flight count is in that unit (a chunk weighs its layers / (num_layers / pp)), so a
    rank with an uneven share, interleaved chunks or DualPipe's two chunks is counted once, not twice.
    The transient terms held once per rank (recompute working set, 1F1B logits) are in
    :func:`transient_activation_bytes`.
    """
    p, t, m = cfg.parallel, cfg.training, cfg.model
    layers = rank_layers(cfg, stage)
    mean = sum(_layer_activations(cfg, i, t.recompute, flash_attention) for i in layers) / len(layers)
    total = mean * _stage_unit_layers(cfg)
    if _is_first(cfg, stage) and t.dropout:
        total += embedding_mask_bytes((t.seq_len / p.cp) * t.micro_batch * m.hidden_size, p.tp, p.sp)
    if _is_last(cfg, stage) and get_schedule(p.schedule).all_forwards_first:
        total += _output_layer_activations(cfg, flash_attention)
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
            for i in rank_layers(cfg, stage)
        )
    if _is_last(cfg, stage) and not get_schedule(cfg.parallel.schedule).all_forwards_first:
        working += _output_layer_activations(cfg, flash_attention)
    return working


def memory_breakdown(
    cfg: RunConfig, stage: int, inflight_microbatches: float, *, flash_attention: bool = True
) -> MemoryBreakdown:
    """Peak memory of rank ``stage`` with ``inflight_microbatches`` micro-batches' activations held.

    The count comes from the schedule (1F1B: pp - stage on rank ``stage``), so the caller supplies it;
    it may be fractional (interleaved chunks count as 1/vpp of a micro-batch). With DualPipe the rank's
    weights, gradients and optimizer shard already cover both of its chunks (:func:`rank_layers`).
    """
    if inflight_microbatches < 0:
        raise ClusterSimError(f"inflight_microbatches={inflight_microbatches} must be >= 0")
    static = static_memory(cfg, stage)
    per_mb = activation_bytes_per_microbatch(cfg, stage, flash_attention=flash_attention)
    # activation offload keeps a window of layers on the GPU and the in-flight rest in host memory
    held, on_host = activations_on_gpu(cfg, inflight_microbatches * per_mb, per_mb / _stage_unit_layers(cfg))
    activations = held + transient_activation_bytes(cfg, stage, flash_attention=flash_attention)
    dynamic = activations + static.buffers - RUNTIME_OVERHEAD_BYTES
    return MemoryBreakdown(  # total == peak_bytes(weights + gradients + optimizer, buffers, activations, ratio=)
        weights=static.weights,
        gradients=static.gradients,
        optimizer=static.optimizer,
        activations=activations,
        buffers=static.buffers,
        fragmentation=fragmentation_bytes(dynamic, config_fragmentation_ratio(cfg)),
        host=static.host + on_host,
        nvme=static.nvme,
        compression=static.compression,
    )
