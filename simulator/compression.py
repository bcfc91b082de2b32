"""Compressed gradient communication: what goes on the wire, which collective carries it, what it costs.

Pure functions over a frozen :class:`CompressionSpec`; no SimPy. A spec is a fixed pipeline of optional
stages, applied in this order to the gradient a rank contributes to its data-parallel collective::

    sparsify (topk | randomk | structured_2_4)  ->  quantize (uniform | log, ``bits``)
    or, instead of both: PowerSGD low rank (``powersgd_rank``)

then two schedules on top: ``every_k_steps`` (interpretation a: only every k-th step is compressed, the
others send the dense gradient) and ``sync_every_k_steps`` (interpretation b: ranks accumulate locally and
communicate only every k-th step). Per-step figures below are averages over such a cycle.

Payload per compressed step, for ``N`` gradient elements, kept fraction ``f`` and dense bytes ``b``:

* topk: ``fN`` values + ``fN`` int32 indices (index sets differ per rank, so the payloads are all-gathered);
* randomk: ``fN`` values only; every rank draws the same indices from a shared seed, so payloads sum
  (all-reduce) and indices need not be sent;
* structured_2_4: 2 of every 4 values + 2 bits of position metadata per kept value (NVIDIA 2:4 format:
  4 bits per group of four); masks differ per rank, so all-gathered;
* quantize: ``bits`` per kept value + one fp32 scale per ``scale_block`` kept values;
* PowerSGD: ``r(m+n)`` values for an ``m x n`` gradient matrix (factors P and Q, summable).

Quantised payloads are charged as an all-reduce of the compressed size: that is the traffic of a
two-phase compressed all-reduce (all-to-all of quantised shards, local dequantise-sum-requantise,
all-gather), as in DeepSpeed's 1-bit Adam; a plain NCCL all-reduce cannot sum quantised values.

Convergence is not modelled: ``steps_multiplier`` multiplies the number of steps to train. Starting
points, to be checked against your own runs: 1.0 for PowerSGD rank >= 4 with error feedback (Vogels et al.
2019, "PowerSGD", matched uncompressed accuracy on CIFAR-10/WikiText-2 in the same epochs) and for top-k
at 0.1 % with momentum correction (Lin et al. 2018, "Deep Gradient Compression"); above 1.0 (e.g. 1.1-1.3)
for aggressive quantisation or sparsification without error feedback, or for ``sync_every_k_steps`` > 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hwmodels.dtypes import bytes_per_element, normalize_dtype
from hwmodels.errors import ClusterSimError, first_validation_error
from hwmodels.profile import Profile
from hwmodels.topology import CommGroup
from simulator.core.costs import DEFAULT_ALGORITHM, CommAlgorithm, comm_time, gemm_time, memory_op_time

#: Bits of an int32 top-k index.
INDEX_BITS = 32
#: NVIDIA 2:4 sparsity metadata: a 4-bit position code per group of 4 holding 2 values = 2 bits per kept value.
STRUCTURED_2_4_META_BITS = 2
#: Bytes of one per-block quantisation scale (fp32).
SCALE_BYTES = 4.0
#: Bytes of one error-feedback residual / PowerSGD factor element (kept in fp32 by the reference
#: implementations: torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook).
STATE_BYTES = 4.0
#: Read passes of a radix top-k select over 32-bit keys, 8 bits per digit (4 histogram passes).
TOPK_SELECT_PASSES = 4
#: Low-precision activation / dispatch payloads: one fp32 scale per tile of this many elements
#: (DeepSeek-V3 technical report, sec. 3.3: 1x128 tiles for activations).
PAYLOAD_TILE = 128

#: A gradient matrix as ``(rows, cols)``, or a layer's parameter count taken as a square matrix.
Shape = tuple[int, int] | float


class CompressionSpec(BaseModel):
    """How a rank's gradient is compressed before the data-parallel collective (see module doc)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    sparsify: Literal["none", "topk", "randomk", "structured_2_4"] = "none"
    fraction: float | None = Field(default=None, gt=0, le=1, description="kept fraction for topk / randomk")
    quantize: Literal["none", "uniform", "log"] = "none"
    bits: int | None = Field(default=None, ge=1, le=16, description="bits per kept value when quantize is set")
    scale_block: int = Field(default=2048, gt=0, description="kept values sharing one fp32 quantisation scale")
    powersgd_rank: int | None = Field(default=None, gt=0, description="PowerSGD rank r (replaces sparsify/quantize)")
    powersgd_matrix_dim: int | None = Field(
        default=None, gt=0, description="PowerSGD without layer shapes: treat the gradient as d x d matrices"
    )
    every_k_steps: int = Field(default=1, ge=1, description="(a) compress only every k-th step; dense otherwise")
    sync_every_k_steps: int = Field(default=1, ge=1, description="(b) accumulate locally, communicate every k-th step")
    error_feedback: bool = Field(default=False, description="keep an fp32 residual of what compression dropped")
    steps_multiplier: float = Field(default=1.0, gt=0, description="steps to train relative to uncompressed")

    @model_validator(mode="after")
    def _check(self) -> CompressionSpec:
        if self.sparsify in ("topk", "randomk") and self.fraction is None:
            raise ClusterSimError(f"compression.sparsify={self.sparsify} needs compression.fraction in (0, 1]")
        if self.sparsify not in ("topk", "randomk") and self.fraction is not None:
            raise ClusterSimError(
                f"compression.fraction is only used by sparsify topk/randomk, not {self.sparsify!r}; remove it"
            )
        if (self.quantize == "none") != (self.bits is None):
            raise ClusterSimError("compression.bits and compression.quantize (uniform|log) must be set together")
        if self.powersgd_rank is not None and (self.sparsify != "none" or self.quantize != "none"):
            raise ClusterSimError("compression.powersgd_rank replaces sparsify/quantize; set those to none")
        if self.powersgd_matrix_dim is not None and self.powersgd_rank is None:
            raise ClusterSimError("compression.powersgd_matrix_dim needs compression.powersgd_rank")
        if self.error_feedback and not self.lossy:
            raise ClusterSimError("compression.error_feedback needs a lossy stage (sparsify, quantize or powersgd)")
        return self

    @property
    def lossy(self) -> bool:
        """Whether any stage drops information (what error feedback has to remember)."""
        return self.sparsify != "none" or self.quantize != "none" or self.powersgd_rank is not None

    @property
    def keep_fraction(self) -> float:
        """Fraction of gradient elements the sparsifier keeps (1 when none)."""
        if self.sparsify == "structured_2_4":
            return 0.5
        return self.fraction if self.fraction is not None else 1.0


def parse_compression(data: dict[str, Any] | CompressionSpec) -> CompressionSpec:
    """Validate a user dict into a spec; any problem becomes a one-line ClusterSimError."""
    if isinstance(data, CompressionSpec):
        return data
    try:
        return CompressionSpec.model_validate(data)
    except ValidationError as exc:
        prefix = "compression." if exc.errors()[0]["loc"] else ""  # cross-field messages already name their fields
        raise ClusterSimError(prefix + first_validation_error(exc)) from None


# ---- payload sizes ---------------------------------------------------------------------------------


def _square(shape: Shape) -> tuple[float, float]:
    if isinstance(shape, tuple):
        m, n = shape
    else:
        m = n = math.sqrt(shape)
    if m <= 0 or n <= 0:
        raise ClusterSimError(f"layer shape {shape!r} must be positive")
    return float(m), float(n)


def powersgd_payload_elems(rank: int, layer_shapes: Sequence[Shape]) -> float:
    """Elements PowerSGD sends for these matrices: ``r(m+n)`` each, or ``mn`` where that is smaller.

    A bare number is a layer's parameter count, approximated as a square ``sqrt(p) x sqrt(p)`` matrix.
    Matrices that low rank would not shrink go uncompressed, as the torch hook's ``min_compression_rate``.
    """
    if rank < 1:
        raise ClusterSimError(f"PowerSGD rank must be >= 1, got {rank}")
    total = 0.0
    for shape in layer_shapes:
        m, n = _square(shape)
        total += min(rank * (m + n), m * n)
    return total


def _powersgd_matrices(
    spec: CompressionSpec, num_params: float, layer_shapes: Sequence[Shape] | None
) -> tuple[list[tuple[float, float]], float, float]:
    """(shapes, weight each, dense remainder): the matrices PowerSGD works on for ``num_params`` elements."""
    if layer_shapes is not None:
        covered = sum(m * n for m, n in map(_square, layer_shapes))
        if covered > num_params * (1 + 1e-9):
            raise ClusterSimError(f"layer_shapes hold {covered:.4g} elements, more than num_params={num_params:.4g}")
        return [_square(s) for s in layer_shapes], 1.0, num_params - covered  # 1-D params (norms, biases) go dense
    d = spec.powersgd_matrix_dim
    if d is None:
        raise ClusterSimError("PowerSGD needs layer_shapes or compression.powersgd_matrix_dim to size its matrices")
    return [(float(d), float(d))], num_params / (d * d), 0.0


def compressed_step_bytes(
    spec: CompressionSpec,
    num_params: float,
    dense_bytes_per_elem: float = 2.0,
    layer_shapes: Sequence[Shape] | None = None,
) -> float:
    """Bytes one rank contributes on a step that is compressed (no averaging over steps)."""
    _check_sizes(num_params, dense_bytes_per_elem)
    if spec.powersgd_rank is not None:
        shapes, weight, dense = _powersgd_matrices(spec, num_params, layer_shapes)
        return (weight * powersgd_payload_elems(spec.powersgd_rank, shapes) + dense) * dense_bytes_per_elem
    kept = num_params * spec.keep_fraction
    value_bits = spec.bits if spec.bits is not None else 8.0 * dense_bytes_per_elem
    index_bits = {"topk": INDEX_BITS, "structured_2_4": STRUCTURED_2_4_META_BITS}.get(spec.sparsify, 0)
    nbytes = kept * (value_bits + index_bits) / 8.0
    if spec.quantize != "none":
        nbytes += math.ceil(kept / spec.scale_block) * SCALE_BYTES
    return nbytes


def _per_step(spec: CompressionSpec, compressed: float, dense: float) -> float:
    """Average over a cycle: (a) k-1 dense + 1 compressed per k syncs, (b) one sync per k steps."""
    k = spec.every_k_steps
    return ((k - 1) * dense + compressed) / k / spec.sync_every_k_steps


def wire_bytes(
    spec: CompressionSpec,
    num_params: float,
    dense_bytes_per_elem: float = 2.0,
    layer_shapes: Sequence[Shape] | None = None,
) -> float:
    """Average bytes per step each rank contributes to the DP collective (its payload, not the gathered buffer)."""
    compressed = compressed_step_bytes(spec, num_params, dense_bytes_per_elem, layer_shapes)
    return _per_step(spec, compressed, num_params * dense_bytes_per_elem)


def compression_ratio(
    spec: CompressionSpec,
    num_params: float,
    dense_bytes_per_elem: float = 2.0,
    layer_shapes: Sequence[Shape] | None = None,
) -> float:
    """Dense bytes per step / average wire bytes per step (> 1 means less traffic)."""
    return num_params * dense_bytes_per_elem / wire_bytes(spec, num_params, dense_bytes_per_elem, layer_shapes)


def collective_for(spec: CompressionSpec) -> str:
    """``all_gather`` when ranks' payloads are not summable (per-rank index sets), else ``all_reduce``."""
    return "all_gather" if spec.sparsify in ("topk", "structured_2_4") else "all_reduce"


def dp_comm_time(
    spec: CompressionSpec,
    num_params: float,
    group: CommGroup,
    dense_bytes_per_elem: float = 2.0,
    layer_shapes: Sequence[Shape] | None = None,
    algorithm: CommAlgorithm = DEFAULT_ALGORITHM,
) -> float:
    """Average seconds per step of the DP gradient collective over ``group``.

    Averages times, not bytes, so every collective's latency is charged. An all-gather moves the
    gathered buffer (every rank's payload), so sparse traffic grows with the group size. The
    collectives run ``algorithm`` (``parallel.collective_algorithm``; the ``default`` rule unless given).
    """
    compressed = compressed_step_bytes(spec, num_params, dense_bytes_per_elem, layer_shapes)
    if collective_for(spec) == "all_gather":
        t_comp = comm_time("all_gather", compressed * group.size, group, algorithm)
    else:
        t_comp = comm_time("all_reduce", compressed, group, algorithm)
    t_dense = comm_time("all_reduce", num_params * dense_bytes_per_elem, group, algorithm)
    return _per_step(spec, t_comp, t_dense)


# ---- compute and memory ----------------------------------------------------------------------------


def _gemm_dtype(dense_bytes_per_elem: float) -> str:
    return "fp32" if dense_bytes_per_elem >= 4 else "bf16"


def _powersgd_compute_s(
    spec: CompressionSpec, num_params: float, profile: Profile, b: float, layer_shapes: Sequence[Shape] | None
) -> float:
    """P = M Q, orthogonalise P (r passes over it), Q = M^T P, then M ~ P Q^T to decompress."""
    r = spec.powersgd_rank or 1
    shapes, weight, _ = _powersgd_matrices(spec, num_params, layer_shapes)
    dtype = _gemm_dtype(b)
    total = 0.0
    for m_f, n_f in shapes:
        m, n = max(1, round(m_f)), max(1, round(n_f))
        if r * (m + n) >= m * n:
            continue  # sent uncompressed
        total += gemm_time(profile, m, r, n, dtype) + gemm_time(profile, n, r, m, dtype)
        total += memory_op_time(profile, 2.0 * r * m * r * b) + gemm_time(profile, m, n, r, dtype)
    return weight * total


def compression_compute_s(
    spec: CompressionSpec,
    num_params: float,
    profile: Profile,
    dense_bytes_per_elem: float = 2.0,
    layer_shapes: Sequence[Shape] | None = None,
    dp_size: int = 1,
) -> float:
    """Average seconds per step to compress and decompress (plus error feedback) on one rank.

    Memory-bound passes priced with :func:`simulator.core.costs.memory_op_time`; PowerSGD as GEMMs. With an all-gather,
    each rank decompresses all ``dp_size`` received payloads.
    """
    _check_sizes(num_params, dense_bytes_per_elem)
    if dp_size < 1:
        raise ClusterSimError(f"dp_size must be >= 1, got {dp_size}")
    if not spec.lossy:
        return 0.0
    b, n = dense_bytes_per_elem, num_params
    grad = n * b
    kept = n * spec.keep_fraction
    payload = compressed_step_bytes(spec, n, b, layer_shapes)
    received = dp_size if collective_for(spec) == "all_gather" else 1
    kernels: list[float] = []  # bytes read + written by each kernel
    if spec.sparsify == "topk":
        kernels += [TOPK_SELECT_PASSES * grad, grad + payload]  # radix select, then pack values + indices
        kernels += [grad] + [2.0 * payload + kept * b] * received  # zero-fill, then scatter-add each payload
    elif spec.sparsify in ("randomk", "structured_2_4"):
        kernels += [grad + payload] + [payload + grad] * received  # pack; unpack each payload
    if spec.quantize != "none":
        vals = kept * b
        quant = kept * (spec.bits or 0) / 8.0
        kernels += [vals, vals + quant] + [quant + vals] * received  # absmax per block, quantise; dequantise
    if spec.error_feedback:
        kernels += [2.0 * grad + STATE_BYTES * n] * 2  # g += e; e = g - decompress(compress(g))
    total = sum(memory_op_time(profile, x) for x in kernels)
    if spec.powersgd_rank is not None:
        total += _powersgd_compute_s(spec, n, profile, b, layer_shapes)
    return _per_step(spec, total, 0.0)


def memory_overhead_bytes(
    spec: CompressionSpec, num_params: float, layer_shapes: Sequence[Shape] | None = None
) -> float:
    """Persistent extra bytes per rank: the fp32 error-feedback residual and PowerSGD's fp32 P, Q factors.

    Transient pack/gather buffers live per bucket and are not counted.
    """
    _check_sizes(num_params, 1.0)
    total = STATE_BYTES * num_params if spec.error_feedback else 0.0
    if spec.powersgd_rank is not None:
        shapes, weight, _ = _powersgd_matrices(spec, num_params, layer_shapes)
        elems = weight * sum(spec.powersgd_rank * (m + n) for m, n in shapes if spec.powersgd_rank * (m + n) < m * n)
        total += STATE_BYTES * elems
    return total


def steps_to_train(spec: CompressionSpec, base_steps: float) -> float:
    """Steps with compression: the user's convergence knob times the uncompressed count."""
    return base_steps * spec.steps_multiplier


# ---- low-precision payloads (MoE dispatch, PP activations) -----------------------------------------


def payload_bytes_per_elem(dtype: str, tile: int = PAYLOAD_TILE) -> float:
    """Wire bytes per element incl. scales: fp8/int8 add one fp32 scale per ``tile`` elements (1 + 4/128)."""
    if tile < 1:
        raise ClusterSimError(f"tile must be >= 1 element, got {tile}")
    key = normalize_dtype(dtype)
    if key in ("fp8", "int8", "int4"):
        return bytes_per_element(key) + SCALE_BYTES / tile
    return bytes_per_element(key)


def _check_sizes(num_params: float, dense_bytes_per_elem: float) -> None:
    if num_params < 0:
        raise ClusterSimError(f"num_params must be >= 0, got {num_params}")
    if dense_bytes_per_elem <= 0:
        raise ClusterSimError(f"dense_bytes_per_elem must be > 0, got {dense_bytes_per_elem}")
