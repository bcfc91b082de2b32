"""The ATen-level recorder: one kernel record per dispatched call, tagged with where and when it ran.

Torch is imported lazily (only :mod:`simulator.trace` may need it, and only when tracing): the mode
classes are built on first use by :func:`mode_classes`.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from simulator.trace.kernels import (
    FREE_OPS,
    TensorInfo,
    base_name,
    dtype_tag,
    foreach_launches,
    is_free,
    kernel_record,
)

#: Autograd-node metadata key holding the (region, layer, module) that created the node in forward.
WHERE_KEY = "clustersim_trace_where"

#: Calls a weight gradient flows through on its way to ``param.grad`` (besides free views).
_LINEAGE_OPS = frozenset({"_to_copy", "clone", "add", "add_", "copy_", "contiguous", "_unsafe_view"})

Where = tuple[str, "int | None", str]


@functools.cache
def mode_classes() -> tuple[type, type]:
    """(dispatch mode, function mode) classes that forward every call to a plain-Python handler."""
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    class _DispatchMode(TorchDispatchMode):
        def __init__(self, handler: Any) -> None:
            super().__init__()
            self.handler = handler

        def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            return self.handler.on_dispatch(func, args, kwargs or {})

    class _FunctionMode(TorchFunctionMode):
        def __init__(self, handler: Any) -> None:
            super().__init__()
            self.handler = handler

        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            return self.handler.on_function(func, args, kwargs or {})

    return _DispatchMode, _FunctionMode


def tensor_info(t: Any) -> TensorInfo:
    """A tensor's shape, dtype tag, element size and elements really stored (stride-0 dims once)."""
    shape = tuple(int(s) for s in t.shape)
    try:
        stride = t.stride()
        elems = math.prod(s for s, st in zip(shape, stride, strict=True) if st != 0) if t.numel() else 0
    except (RuntimeError, NotImplementedError):  # sparse / nested layouts have no strides
        elems = t.numel()
    return TensorInfo(shape, dtype_tag(str(t.dtype)), float(t.element_size()), int(elems))


def _tensors(tree: Any) -> list[Any]:
    import torch
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(tree) if isinstance(t, torch.Tensor)]


class Recorder:
    """Records dispatched ATen calls as kernel dicts; knows the phase and the region each call belongs to.

    In forward the region is whatever the layer hooks set (:meth:`enter`); in backward it is read from the
    autograd node running the call, which the function mode tagged in forward with :data:`WHERE_KEY`.
    """

    def __init__(self) -> None:
        self.phase = "fwd"
        self.where: Where = ("pre", None, "")
        self.kernels: list[dict[str, Any]] = []
        self.dropped: Counter[str] = Counter()
        self._suppress = 0
        self._origin: dict[int, tuple[Any, frozenset[int]]] = {}

    # ---- position -----------------------------------------------------------------------------
    def position(self) -> Where:
        """(region, layer, module) of the call being made now."""
        if self.phase != "bwd":
            return self.where
        import torch

        node = torch._C._current_autograd_node()
        found = node.metadata.get(WHERE_KEY) if node is not None else None
        if found is not None:
            self.where = found
        return self.where

    @contextmanager
    def suppressed(self) -> Iterator[None]:
        """Record nothing inside (the internals of a call captured as one fused kernel)."""
        self._suppress += 1
        try:
            yield
        finally:
            self._suppress -= 1

    # ---- records --------------------------------------------------------------------------------
    def add(self, rec: dict[str, Any]) -> int:
        """Append ``rec`` with its phase, region, layer and name; returns its index."""
        region, layer, module = self.position()
        if self.phase == "opt":
            region, layer, module = "opt", None, "optimizer"
        short = base_name(rec["op"])
        rec.update(phase=self.phase, region=region, layer=layer, name=f"{module}:{short}" if module else short)
        rec.setdefault("wgrad", False)
        self.kernels.append(rec)
        return len(self.kernels) - 1

    def record_fused(self, op: str, inputs: list[Any], outputs: list[Any], **extra: Any) -> None:
        """Record one fused kernel (attention, norm, loss) given its tensors."""
        ins = [tensor_info(t) for t in inputs if t is not None]
        self.add(kernel_record(op, ins, [tensor_info(t) for t in outputs], **extra))

    def on_dispatch(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """Run one ATen call and record it (the dispatch mode's hook)."""
        out = func(*args, **kwargs)
        if self._suppress:
            return out
        op = str(func)
        ins, outs = _tensors((args, kwargs)), _tensors(out)
        name = base_name(op)
        if self.phase == "bwd":
            self._trace_lineage(name, func, ins, outs)
        everything = ins + outs
        if everything and not any(t.device.type == "meta" for t in everything):
            self.dropped[f"{op} (host)"] += 1
            return out
        out_info = [tensor_info(t) for t in outs]
        if getattr(func, "is_view", False) or is_free(op, out_info, bool(ins)):
            self.dropped[op] += 1
            return out
        in_info = [tensor_info(t) for t in ins]
        written, count = self._inplace_and_count(func, name, args, in_info, out_info)
        idx = self.add(kernel_record(op, in_info, out_info, written=written, count=count))
        if self.phase == "bwd" and self.kernels[idx]["kind"] == "gemm":
            for t in outs:
                self._origin[id(t)] = (t, frozenset({idx}))
        return out

    @staticmethod
    def _inplace_and_count(
        func: Any, name: str, args: tuple, ins: list[TensorInfo], outs: list[TensorInfo]
    ) -> tuple[list[TensorInfo], int]:
        """(tensors an in-place call writes back, kernel launches: 1, or multi_tensor_apply's for foreach)."""
        schema_args = func._schema.arguments
        inplace = bool(schema_args) and schema_args[0].alias_info is not None and schema_args[0].alias_info.is_write
        first = args[0] if args else None
        first_list = list(first) if isinstance(first, (list, tuple)) else ([first] if first is not None else [])
        written = [tensor_info(t) for t in _tensors(first_list)] if inplace else []
        if not name.startswith("_foreach_"):
            return written, 1
        lists = sum(1 for a in args if isinstance(a, (list, tuple)) and _tensors(a))
        depth = lists + (0 if inplace else 1)
        scalar_list = func._overloadname.startswith("ScalarList")
        numels = [t.numel() for t in _tensors(first_list)]
        return written, max(1, foreach_launches(numels, depth, scalar_list))

    # ---- weight gradients -----------------------------------------------------------------------
    def _trace_lineage(self, name: str, func: Any, ins: list[Any], outs: list[Any]) -> None:
        """Carry "derived from backward GEMM #i" through views, casts and accumulation to ``param.grad``."""
        if not (name in FREE_OPS or name in _LINEAGE_OPS or getattr(func, "is_view", False)):
            return
        sources: frozenset[int] = frozenset()
        for t in ins:
            entry = self._origin.get(id(t))
            if entry is not None and entry[0] is t:
                sources |= entry[1]
        if sources:
            for t in outs:
                self._origin[id(t)] = (t, sources)

    def mark_weight_gradients(self, params: list[Any]) -> None:
        """Flag the backward GEMMs whose output became some parameter's ``.grad`` as ``wgrad``."""
        for p in params:
            g = p.grad
            entry = self._origin.get(id(g)) if g is not None else None
            if entry is not None and entry[0] is g:
                for idx in entry[1]:
                    self.kernels[idx]["wgrad"] = True
        self._origin.clear()
