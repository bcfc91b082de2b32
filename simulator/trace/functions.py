"""The function-level half of the capture: autocast emulation, fused calls, autograd-node tagging.

A ``TorchFunctionMode`` sees each Python-level torch call before it decomposes. This handler applies the
CUDA autocast policy (:mod:`simulator.trace.autocast`), turns the calls named in ``fused`` into one kernel
each (:mod:`simulator.trace.fused`), answers the few value reads that control flow needs on meta tensors,
and tags every new autograd node with the region that created it, so backward kernels land in their layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hwmodels.errors import ClusterSimError
from simulator.trace.autocast import AutocastCaster
from simulator.trace.fused import AttentionSpec, CrossEntropySpec, RmsNormSpec, fused_function
from simulator.trace.recorder import WHERE_KEY, Recorder

_SCALAR_READS = frozenset({"__bool__", "item", "tolist", "__int__", "__float__", "__index__"})

_ARGS = {
    "scaled_dot_product_attention": ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale"),
    "rms_norm": ("input", "normalized_shape", "weight", "eps"),
    "layer_norm": ("input", "normalized_shape", "weight", "bias", "eps"),
    "cross_entropy": ("input", "target", "weight", "size_average", "ignore_index", "reduce", "reduction"),
}


def _bind(name: str, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Positional and keyword arguments of a fused-capable call by parameter name."""
    return {**dict(zip(_ARGS[name], args, strict=False)), **kwargs}


class FunctionHandler:
    """Handles every Python-level torch call during the forward pass (the function mode's hook)."""

    def __init__(self, rec: Recorder, caster: AutocastCaster | None, fused: frozenset[str]) -> None:
        self.rec = rec
        self.caster = caster
        self.fused = fused
        self.known: dict[int, tuple[Any, bool]] = {}
        self.handlers: dict[str, Callable[[Any, tuple, dict], Any]] = {
            "scaled_dot_product_attention": self._attention,
            "rms_norm": self._rms_norm,
            "layer_norm": self._layer_norm,
            "cross_entropy": self._cross_entropy,
        }

    def on_function(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """Run ``func`` the way CUDA autocast and the fused kernels would; tag the autograd nodes it made."""
        name = getattr(func, "__name__", "")
        if name in _SCALAR_READS and args and _is_meta(args[0]):
            return self._scalar(name, args[0])
        handler = self.handlers.get(name)
        if handler is not None:
            out = handler(func, args, kwargs)
        else:
            args, kwargs = self._cast(name, args, kwargs)
            out = func(*args, **kwargs)
            if name in ("all", "any") and _is_meta(out):
                self.known[id(out)] = (out, name == "all")
        self.tag(out)
        return out

    def _cast(self, name: str, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return self.caster.cast(name, args, kwargs) if self.caster is not None else (args, kwargs)

    def tag(self, out: Any) -> None:
        """Stamp every untagged autograd node reachable from ``out`` with the current region."""
        import torch
        from torch.utils._pytree import tree_leaves

        where = self.rec.position()
        stack = [t.grad_fn for t in tree_leaves(out) if isinstance(t, torch.Tensor) and t.grad_fn is not None]
        while stack:
            node = stack.pop()
            meta = node.metadata
            if WHERE_KEY in meta:
                continue
            meta[WHERE_KEY] = where
            stack.extend(n for n, _ in node.next_functions if n is not None)

    def _scalar(self, name: str, t: Any) -> Any:
        """A value read on a meta tensor: known for ``.all()``/``.any()`` results (no padding, no packing)."""
        hit = self.known.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1]
        raise ClusterSimError(
            f"the model reads a tensor's value (Tensor.{name}) to decide what to run; that cannot be traced "
            "on the meta device -- make the control flow depend on shapes or config only"
        )

    # ---- fused calls ----------------------------------------------------------------------------
    def _attention(self, func: Any, args: tuple, kwargs: dict) -> Any:
        a = _bind("scaled_dot_product_attention", args, kwargs)
        if "scaled_dot_product_attention" not in self.fused:
            args, kwargs = self._cast("scaled_dot_product_attention", args, kwargs)
            return func(*args, **kwargs)
        (q, k, v, mask), _ = self._cast("scaled_dot_product_attention", (a["query"], a["key"], a["value"],
                                                                           a.get("attn_mask")), {})  # fmt: skip
        spec = AttentionSpec(self.rec, q, k, v, mask, bool(a.get("is_causal", False)))
        return fused_function().apply(spec, q, k, v, mask)

    def _rms_norm(self, func: Any, args: tuple, kwargs: dict) -> Any:
        a = _bind("rms_norm", args, kwargs)
        (x, w), _ = self._cast("rms_norm", (a["input"], a.get("weight")), {})
        shape = a["normalized_shape"]
        if "rms_norm" in self.fused and (w is None or w.dtype == x.dtype) and _has_fused_rms_norm():
            ndim = 1 if isinstance(shape, int) else len(shape)
            return fused_function().apply(RmsNormSpec(self.rec, ndim), x, w)
        return func(x, shape, w, a.get("eps"))

    def _layer_norm(self, func: Any, args: tuple, kwargs: dict) -> Any:
        a = _bind("layer_norm", args, kwargs)
        (x, w, b), _ = self._cast("layer_norm", (a["input"], a.get("weight"), a.get("bias")), {})
        shape, eps = a["normalized_shape"], a.get("eps", 1e-5)
        if "layer_norm" in self.fused:
            return func(x, shape, w, b, eps)
        dims = tuple(range(-(1 if isinstance(shape, int) else len(shape)), 0))
        centred = x - x.mean(dims, keepdim=True)
        y = centred * (centred * centred).mean(dims, keepdim=True).add(eps).rsqrt()
        y = y * w if w is not None else y
        return y + b if b is not None else y

    def _cross_entropy(self, func: Any, args: tuple, kwargs: dict) -> Any:
        a = _bind("cross_entropy", args, kwargs)
        x, target = a["input"], a["target"]
        simple = a.get("weight") is None and not kwargs.get("label_smoothing") and a.get("reduce") is None
        if "cross_entropy" in self.fused and simple and x.dim() == 2 and target.dim() == 1:
            spec = CrossEntropySpec(self.rec, a.get("reduction", "mean"))
            return fused_function().apply(spec, x, target)
        args, kwargs = self._cast("cross_entropy", args, kwargs)
        return func(*args, **kwargs)


def _has_fused_rms_norm() -> bool:
    """PyTorch >= 2.8 has the fused CUDA kernel ``_fused_rms_norm`` that ``F.rms_norm`` dispatches to."""
    import torch

    return hasattr(torch.ops.aten, "_fused_rms_norm")


def _is_meta(t: Any) -> bool:
    import torch

    return isinstance(t, torch.Tensor) and t.device.type == "meta"
