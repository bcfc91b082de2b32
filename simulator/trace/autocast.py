"""CUDA autocast, emulated on the meta device: which functions run in bf16/fp16, which in fp32.

On meta tensors ``torch.autocast`` casts nothing, so the capture applies CUDA autocast's policy itself at
the Python function level (a ``TorchFunctionMode``), and the casts it inserts are recorded as the
``_to_copy`` kernels they are on a GPU. The lists are PyTorch's ``AT_FORALL_LOWER_PRECISION_FP``,
``AT_FORALL_FP32``, ``AT_FORALL_FP32_SET_OPT_DTYPE`` and ``AT_FORALL_PROMOTE`` of
``aten/src/ATen/autocast_mode.h`` (docs: "Autocast Op Reference", CUDA Ops that can autocast to float16 /
float32), spelled as the Python functions that reach those ATen ops. Additions for PyTorch >= 2.12:
``rms_norm`` runs under the fp32 policy (pytorch/pytorch#174824, fixing #167308; see #188955).
Python-level composites whose ATen pieces are listed are given the policy of those pieces:
``cross_entropy`` (``log_softmax`` + ``nll_loss``), ``normalize`` / ``norm`` (``fp32_append_dtype``),
``interpolate`` (``upsample_*``) and reverse division / power (``reciprocal``, ``pow``).
Calls made with CUDA autocast switched off (``torch.autocast("cuda", enabled=False)``) are left alone.
"""

from __future__ import annotations

from typing import Any

#: Run in the autocast dtype (bf16 / fp16): tensor-core GEMMs, convolutions, attention.
LOWER_PRECISION = frozenset(
    {
        "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
        "convolution", "_convolution", "prelu", "addmm", "addmv", "addr", "matmul", "__matmul__", "__rmatmul__",
        "einsum", "mm", "mv", "linalg_vecdot", "vecdot", "linear", "addbmm", "baddbmm", "bmm", "chain_matmul",
        "linalg_multi_dot", "multi_dot", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell",
        "scaled_dot_product_attention",
    }
)  # fmt: skip

#: Run in fp32 (every floating input cast up): transcendental functions, norms, losses.
FP32 = frozenset(
    {
        "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal", "rsqrt",
        "sinh", "tan", "pow", "__pow__", "__rpow__", "__rtruediv__", "__rdiv__", "softplus", "layer_norm",
        "native_layer_norm", "group_norm", "rms_norm", "frobenius_norm", "nuclear_norm", "cosine_similarity",
        "poisson_nll_loss", "cosine_embedding_loss", "nll_loss", "nll_loss2d", "hinge_embedding_loss", "kl_div",
        "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss", "margin_ranking_loss", "multilabel_margin_loss",
        "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss", "binary_cross_entropy_with_logits",
        "dist", "pdist", "cdist", "renorm", "logsumexp", "interpolate", "upsample", "upsample_nearest",
        "upsample_bilinear", "cross_entropy", "norm", "normalize",
    }
)  # fmt: skip

#: Run in fp32 by passing ``dtype=torch.float32`` (the kernel reads 16-bit input, accumulates in fp32).
FP32_SET_OPT_DTYPE = frozenset(
    {"prod", "softmax", "softmin", "log_softmax", "cumprod", "cumsum", "linalg_vector_norm", "vector_norm",
     "linalg_matrix_norm", "matrix_norm", "sum"}
)  # fmt: skip

#: Run in the widest floating dtype among the inputs.
PROMOTE = frozenset(
    {"addcdiv", "addcmul", "atan2", "bilinear", "cross", "linalg_cross", "dot", "vdot", "grid_sampler",
     "grid_sample", "index_put", "tensordot", "scatter_add"}
)  # fmt: skip

AUTOCAST_DTYPES = ("bf16", "fp16")


def policy(name: str) -> str | None:
    """The autocast policy of the Python function ``name`` (``lower``/``fp32``/``set_dtype``/``promote``)."""
    if name in LOWER_PRECISION:
        return "lower"
    if name in FP32:
        return "fp32"
    if name in FP32_SET_OPT_DTYPE:
        return "set_dtype"
    if name in PROMOTE:
        return "promote"
    return None


class AutocastCaster:
    """Applies CUDA autocast's cast policy to a call's arguments, caching weight casts like autocast does.

    Autocast caches the lower-precision copy of an fp32 leaf tensor that requires grad (a weight) for the
    whole autocast region, so a weight used twice is cast once (``cached_cast`` in autocast_mode.cpp).
    """

    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype
        self.cache: dict[int, tuple[Any, Any]] = {}

    def cast(self, name: str, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """``args``/``kwargs`` with the policy of ``name`` applied (unchanged when it has none)."""
        import torch
        from torch.utils._pytree import tree_leaves

        pol = policy(name)
        if pol is None or not torch.is_autocast_enabled("cuda") or (name == "rms_norm" and not torch_at_least(2, 12)):
            return args, kwargs
        lower = torch.get_autocast_dtype("cuda")
        eligible = [t for t in tree_leaves((args, kwargs)) if _eligible(t)]
        if pol == "set_dtype":
            first = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if first is not None and _eligible(first) and kwargs.get("dtype") is None:
                kwargs = {**kwargs, "dtype": torch.float32}
            return args, kwargs
        if pol == "promote":
            to = torch.float32 if any(t.dtype == torch.float32 for t in eligible) else lower
        else:
            to = lower if pol == "lower" else torch.float32
        return self._map(args, to), self._map(kwargs, to)

    def _map(self, tree: Any, to: Any) -> Any:
        from torch.utils._pytree import tree_map

        return tree_map(lambda t: self._cast_one(t, to) if _eligible(t) and t.dtype != to else t, tree)

    def _cast_one(self, t: Any, to: Any) -> Any:
        import torch

        cacheable = to != torch.float32 and t.dtype == torch.float32 and t.requires_grad and t.is_leaf
        if not cacheable:
            return t.to(to)
        hit = self.cache.get(id(t))
        if hit is None or hit[0] is not t or hit[1].dtype != to:
            hit = (t, t.to(to))
            self.cache[id(t)] = hit
        return hit[1]


def torch_at_least(major: int, minor: int) -> bool:
    """Whether the installed PyTorch is at least ``major.minor`` (autocast lists and kernels change by release)."""
    import torch

    parts = torch.__version__.split("+")[0].split(".")
    try:
        return (int(parts[0]), int(parts[1])) >= (major, minor)
    except (IndexError, ValueError):
        return True


def _eligible(t: Any) -> bool:
    """Autocast-eligible: a floating tensor other than float64 (``is_eligible`` in autocast_mode.h)."""
    import torch

    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != torch.float64
