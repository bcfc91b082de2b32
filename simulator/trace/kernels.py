"""What a recorded ATen call costs: free or a kernel, its kind, FLOPs, bytes and GEMM shape (no torch here).

The capture hands each call over as plain :class:`TensorInfo` records, so these rules are pure functions
that run (and are tested) without PyTorch. Costing rules, also in ``docs/trace-format.md``:

- views and metadata (``view``, ``t``, ``expand``, ``slice``, ``detach``, ...) and scalar factories are
  free and dropped (counted in the trace's ``dropped`` table);
- ``mm``/``addmm``/``bmm``/``baddbmm``/``mv``/``dot``/``convolution`` are GEMMs: FLOPs ``2*M*N*K*count``,
  bytes ``elem_bytes*(M*K + N*K + M*N)*count``;
- every other call is a memory-bound kernel moving its input and output tensors at their real
  (unbroadcast: stride-0 dimensions counted once) sizes, an in-place write counted again;
- ``_foreach_*`` calls launch as many kernels as CUDA's ``multi_tensor_apply`` would (:func:`foreach_launches`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

#: ATen ops that launch no kernel: views, aliases, metadata, allocation without initialisation.
FREE_OPS = frozenset(
    {
        "view", "_unsafe_view", "_reshape_alias", "reshape", "t", "transpose", "permute", "expand", "expand_as",
        "slice", "select", "unsqueeze", "squeeze", "alias", "detach", "as_strided", "split", "split_with_sizes",
        "chunk", "unbind", "narrow", "diagonal", "view_as", "view_as_real", "view_as_complex", "lift_fresh",
        "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "resize_", "set_",
        "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size", "_has_same_storage_numel",
        "unflatten", "flatten", "movedim", "swapaxes", "_unsafe_split", "tensor_split", "_conj", "_neg_view",
        "record_stream", "_record_function_enter_new", "_record_function_exit",
    }
)  # fmt: skip

#: Factories whose output of at most one element is a host-side constant, not a kernel worth a record.
SCALAR_FACTORIES = frozenset(
    {"zeros", "ones", "full", "scalar_tensor", "zeros_like", "ones_like", "full_like", "new_zeros", "new_ones",
     "new_full", "arange", "lift_fresh_copy", "_to_copy", "clone", "copy", "fill"}
)  # fmt: skip

GEMM_OPS = frozenset({"mm", "addmm", "bmm", "baddbmm", "mv", "addmv", "dot", "vdot", "convolution", "_convolution"})

#: CUDA ``multi_tensor_apply`` launch limits for a 4 KB kernel-argument block, by list depth (number of
#: tensor lists): PyTorch ``aten/src/ATen/native/cuda/MultiTensorApply.cuh`` (``depth_to_max_tensors``,
#: ``depth_to_max_blocks``, ``kChunkSize``). Builds for CUDA >= 13 use a 32 KB block (fewer launches).
FOREACH_MAX_TENSORS = (110, 64, 48, 36, 30)
FOREACH_MAX_TENSORS_SCALARLIST = (96, 64, 48, 36, 30)
FOREACH_MAX_BLOCKS = 320
FOREACH_CHUNK = 65536

_DTYPE_TAGS = {
    "float32": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16",
    "float64": "fp64",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
}


class TensorInfo(NamedTuple):
    """A tensor as the cost rules see it: shape, dtype tag, bytes per element, elements really stored."""

    shape: tuple[int, ...]
    dtype: str
    itemsize: float
    elems: int  # elements in memory: a broadcast (stride-0) dimension counts once

    @property
    def nbytes(self) -> float:
        """Bytes the tensor really occupies (unbroadcast)."""
        return self.elems * self.itemsize


def dtype_tag(name: str) -> str:
    """Short dtype tag of a torch dtype name: ``torch.bfloat16`` -> ``bf16``; others keep their name."""
    key = name.removeprefix("torch.")
    return _DTYPE_TAGS.get(key, key)


def base_name(op: str) -> str:
    """``aten.mm.default`` -> ``mm``; ``aten.add_.Tensor`` -> ``add_``; ``fused.cross_entropy`` -> ``cross_entropy``."""
    parts = op.split(".")
    return parts[1] if len(parts) >= 2 else parts[0]


def is_free(op: str, outputs: Sequence[TensorInfo], has_inputs: bool) -> bool:
    """True for a call that launches no kernel worth costing (see :data:`FREE_OPS`)."""
    name = base_name(op)
    if name in FREE_OPS:
        return True
    if not has_inputs or name in SCALAR_FACTORIES:
        return sum(t.elems for t in outputs) <= 1
    return False


def gemm_dims(op: str, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> tuple[int, int, int, int] | None:
    """(M, N, K, count) of a GEMM call, or None when ``op`` is not one (or has an empty dimension)."""
    name = base_name(op)
    if name not in GEMM_OPS:
        return None
    dims: tuple[int, int, int, int] | None = None
    if name in ("mm", "addmm"):
        a, b = inputs[-2].shape, inputs[-1].shape
        dims = (a[0], b[1], a[1], 1) if len(a) == 2 and len(b) == 2 else None
    elif name in ("bmm", "baddbmm"):
        a, b = inputs[-2].shape, inputs[-1].shape
        dims = (a[1], b[2], a[2], a[0]) if len(a) == 3 and len(b) == 3 else None
    elif name in ("mv", "addmv"):
        a = inputs[-2].shape
        dims = (a[0], 1, a[1], 1) if len(a) == 2 else None
    elif name in ("dot", "vdot"):
        dims = (1, 1, inputs[0].shape[0], 1) if inputs[0].shape else None
    else:
        dims = _conv_dims(inputs, outputs)
    if dims is None or min(dims) <= 0:
        return None
    return dims


def _conv_dims(inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> tuple[int, int, int, int] | None:
    """Implicit-GEMM view of a convolution: M = batch x output pixels, N = out channels, K = in/g x kernel."""
    if len(inputs) < 2 or not outputs or len(outputs[0].shape) < 3 or len(inputs[1].shape) < 3:
        return None
    out, w = outputs[0].shape, inputs[1].shape
    return (out[0] * math.prod(out[2:]), out[1], w[1] * math.prod(w[2:]), 1)


def tensor_bytes(
    inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], written: Sequence[TensorInfo] = ()
) -> float:
    """Bytes a memory-bound kernel moves: inputs and outputs at real size, plus in-place writes it returns
    nothing for (``_foreach_*_`` ops; an in-place op that returns ``self`` has it among ``outputs``)."""
    total = sum(t.nbytes for t in inputs) + sum(t.nbytes for t in outputs)
    return total + (sum(t.nbytes for t in written) if not outputs else 0.0)


#: Ops that read a table only where an index points: they move the rows they gather, not the whole table.
_GATHERS = {"embedding": 0, "index_select": 0, "gather": 0, "nll_loss_forward": 0, "nll_loss2d_forward": 0}


def gather_bytes(op: str, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> float | None:
    """Bytes of a gather-like kernel (embedding lookup, index_select, gather, the loss's target pick): the
    gathered elements read and written plus the indices; None for other ops."""
    name = base_name(op)
    if name not in _GATHERS or len(inputs) < 2:
        return None
    table, rest = inputs[_GATHERS[name]], [t for i, t in enumerate(inputs) if i != _GATHERS[name]]
    index_bytes = sum(t.nbytes for t in rest)
    if name.startswith("nll_loss"):  # one log-probability per target, a scalar out
        picked = max((t.nbytes / max(t.itemsize, 1) for t in rest), default=0.0) * table.itemsize
        return picked + index_bytes + sum(t.nbytes for t in outputs)
    return 2.0 * sum(t.nbytes for t in outputs) + index_bytes


def foreach_launches(numels: Sequence[int], depth: int, scalar_list: bool = False) -> int:
    """Kernels ``multi_tensor_apply`` launches for tensors of ``numels`` elements over ``depth`` lists.

    A launch holds at most ``max_tensors[depth]`` tensors and :data:`FOREACH_MAX_BLOCKS` chunks of
    :data:`FOREACH_CHUNK` elements; a full launch is flushed and the next one starts (PyTorch's loop).
    """
    table = FOREACH_MAX_TENSORS_SCALARLIST if scalar_list else FOREACH_MAX_TENSORS
    max_tensors = table[min(max(depth, 1), len(table)) - 1]
    launches = tensors = blocks = 0
    for n in numels:
        if n <= 0:
            continue
        tensors += 1
        chunks = math.ceil(n / FOREACH_CHUNK)
        while chunks:  # PyTorch's per-chunk loop, a block-full stretch at a time
            take = min(chunks, FOREACH_MAX_BLOCKS - blocks)
            blocks, chunks = blocks + take, chunks - take
            if blocks == FOREACH_MAX_BLOCKS or (tensors == max_tensors and not chunks):
                launches += 1
                blocks = 0
                tensors = 1 if chunks else 0  # a tensor cut mid-way carries over into the next launch
    return launches + (1 if blocks else 0)


def attention_flops(attn: dict[str, int]) -> float:
    """FLOPs of a fused attention forward: 2 GEMMs over the (causally masked) score matrix.

    A backward (``attn["backward"]``) is 2.5x: five GEMMs of that size instead of two (FlashAttention-2).
    """
    q, kv = attn["q_len"], attn["kv_len"]
    pairs = q * kv - (q * (q - 1) / 2.0 if attn.get("causal") and kv >= q else 0.0)
    fwd = 2.0 * attn["batch"] * attn["heads"] * pairs * (attn["head_dim"] + attn["v_head_dim"])
    return fwd * (2.5 if attn.get("backward") else 1.0)


def kernel_record(
    op: str,
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    *,
    written: Sequence[TensorInfo] = (),
    count: int = 1,
    attn: dict[str, int] | None = None,
    kind: str | None = None,
) -> dict[str, Any]:
    """The cost fields of one kernel record: kind, flops, bytes, gemm, attn, count, batched, shapes, dtypes."""
    rec: dict[str, Any] = {
        "op": op,
        "shapes": [list(t.shape) for t in inputs],
        "dtypes": [t.dtype for t in inputs],
        "out_shapes": [list(t.shape) for t in outputs],
        "out_dtypes": [t.dtype for t in outputs],
        "gemm": None,
        "attn": None,
        "count": count,
        "batched": False,
    }
    dims = gemm_dims(op, inputs, outputs) if kind is None else None
    if attn is not None:
        rec.update(kind="attn", attn=dict(attn), flops=attention_flops(attn), bytes=tensor_bytes(inputs, outputs))
    elif dims is not None:
        M, N, K, c = dims
        b = inputs[-1].itemsize
        batched = base_name(op) in ("bmm", "baddbmm")
        rec.update(kind="gemm", gemm=[M, N, K], count=c, batched=batched)
        rec.update(flops=2.0 * M * N * K * c, bytes=b * (M * K + N * K + M * N) * c)
    else:
        gathered = gather_bytes(op, inputs, outputs)
        nbytes = gathered if gathered is not None else tensor_bytes(inputs, outputs, written)
        rec.update(kind=kind or "mem", flops=0.0, bytes=nbytes)
    return rec
