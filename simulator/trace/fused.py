"""High-level calls captured as one fused kernel each, forward and backward.

On meta tensors (as on CPU) ``F.scaled_dot_product_attention`` decomposes into the math path (bmm,
softmax, bmm) and ``F.rms_norm`` into pow/mean/add/rsqrt/mul before a dispatch mode sees them, while on a
GPU each is one kernel. These calls are therefore run through a custom ``torch.autograd.Function`` that
records the kernel the GPU would launch, in forward and in backward, and returns correctly shaped empty
meta tensors; the decomposition inside is never run.

- ``scaled_dot_product_attention``: FlashAttention (``_scaled_dot_product_flash_attention``) without a
  mask in 16-bit; the memory-efficient kernel with an explicit mask or in fp32 (flash needs 16-bit).
- ``rms_norm``: ``_fused_rms_norm`` (CUDA kernel since PyTorch 2.8, pytorch/pytorch#153666), used only
  when input and weight dtypes match -- otherwise PyTorch itself falls back to the composite
  (``layer_norm.cpp``: "Mismatch dtype between input and weight ... Cannot dispatch to fused
  implementation", pytorch/pytorch#167308), and so does the trace.
- ``cross_entropy`` (opt-in): one fused softmax-cross-entropy kernel (Apex xentropy / Liger style) that
  upcasts internally, instead of PyTorch's ``log_softmax`` + ``nll_loss``.
- ``layer_norm`` is one ATen kernel (``native_layer_norm``) on meta as on CUDA; leaving it out of
  ``fused`` traces the unfused composite a hand-written LayerNorm runs.
"""

from __future__ import annotations

import functools
import math
from typing import Any

from simulator.trace.recorder import Recorder

FUSABLE = ("scaled_dot_product_attention", "rms_norm", "layer_norm", "cross_entropy")
DEFAULT_FUSED = ("scaled_dot_product_attention", "rms_norm", "layer_norm")


@functools.cache
def fused_function() -> type:
    """The autograd Function that runs a :class:`FusedSpec` (built on first use: torch stays lazy)."""
    import torch

    class FusedKernel(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, spec: FusedSpec, *tensors: Any) -> Any:
            ctx.spec = spec
            with spec.rec.suppressed():
                outs = spec.outputs(tensors)
            spec.record_forward(tensors, outs)
            ctx.inputs = tensors  # meta tensors: nothing to free, and no saved-tensor version checks
            ctx.outs = outs
            return outs[0]

        @staticmethod
        def backward(ctx: Any, *grads: Any) -> Any:
            spec = ctx.spec
            with spec.rec.suppressed():
                result = [
                    torch.empty_like(t) if t is not None and need else None
                    for t, need in zip(ctx.inputs, ctx.needs_input_grad[1:], strict=True)
                ]
            spec.record_backward(ctx.inputs, ctx.outs, grads[0], result)
            return (None, *result)

    return FusedKernel


class FusedSpec:
    """One fused kernel: its output tensors and the forward / backward records."""

    fwd_op = "fused.kernel"
    bwd_op = "fused.kernel_backward"

    def __init__(self, rec: Recorder) -> None:
        self.rec = rec

    def outputs(self, tensors: tuple) -> list[Any]:
        """Empty meta outputs: the result first, then what the kernel saves for backward."""
        raise NotImplementedError

    def extra(self, backward: bool) -> dict[str, Any]:
        """Extra fields of the kernel record (``attn`` for attention)."""
        return {}

    def record_forward(self, tensors: tuple, outs: list[Any]) -> None:
        """Record the forward kernel."""
        self.rec.record_fused(self.fwd_op, list(tensors), outs, **self.extra(False))

    def saved(self, outs: list[Any]) -> list[Any]:
        """Forward outputs the backward kernel reads (by default the auxiliaries, not the result)."""
        return outs[1:]

    def record_backward(self, tensors: tuple, outs: list[Any], grad: Any, grads: list[Any]) -> None:
        """Record the backward kernel: reads the incoming gradient, the inputs and the saved outputs."""
        self.rec.record_fused(self.bwd_op, [grad, *tensors, *self.saved(outs)], [g for g in grads if g is not None],
                              **self.extra(True))  # fmt: skip


class AttentionSpec(FusedSpec):
    """``scaled_dot_product_attention`` as one flash (or memory-efficient) attention kernel."""

    def __init__(self, rec: Recorder, q: Any, k: Any, v: Any, mask: Any, causal: bool) -> None:
        super().__init__(rec)
        flash = mask is None and q.dtype in _half_dtypes()
        kernel = "_scaled_dot_product_flash_attention" if flash else "_scaled_dot_product_efficient_attention"
        self.fwd_op, self.bwd_op = f"aten.{kernel}.default", f"aten.{kernel}_backward.default"
        lead = q.shape[:-3]
        self.attn = {
            "batch": int(math.prod(lead)) if lead else 1,
            "q_len": int(q.shape[-2]),
            "kv_len": int(k.shape[-2]),
            "heads": int(q.shape[-3]),
            "kv_heads": int(k.shape[-3]),
            "head_dim": int(q.shape[-1]),
            "v_head_dim": int(v.shape[-1]),
            "causal": int(bool(causal) and mask is None),
        }

    def outputs(self, tensors: tuple) -> list[Any]:
        """The attention output and the fp32 log-sum-exp the backward reads."""
        import torch

        q, v = tensors[0], tensors[2]
        out = torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)
        return [out, torch.empty(tuple(q.shape[:-1]), dtype=torch.float32, device=q.device)]

    def saved(self, outs: list[Any]) -> list[Any]:
        """Flash backward reads the output and the log-sum-exp."""
        return outs

    def extra(self, backward: bool) -> dict[str, Any]:
        """The attention shape (``backward: 1`` for the backward kernel)."""
        return {"attn": {**self.attn, "backward": int(backward)}}


class RmsNormSpec(FusedSpec):
    """``rms_norm`` as PyTorch's fused CUDA kernel (``_fused_rms_norm`` and its backward)."""

    fwd_op = "aten._fused_rms_norm.default"
    bwd_op = "aten._fused_rms_norm_backward.default"

    def __init__(self, rec: Recorder, ndim: int) -> None:
        super().__init__(rec)
        self.ndim = ndim

    def outputs(self, tensors: tuple) -> list[Any]:
        """The normalised tensor and the fp32 reciprocal RMS per row."""
        import torch

        x = tensors[0]
        rstd_shape = (*x.shape[: x.dim() - self.ndim], *([1] * self.ndim))
        return [torch.empty_like(x), torch.empty(rstd_shape, dtype=torch.float32, device=x.device)]


class CrossEntropySpec(FusedSpec):
    """``cross_entropy`` over [N, C] logits as one fused softmax + loss kernel (opt-in)."""

    fwd_op = "fused.cross_entropy"
    bwd_op = "fused.cross_entropy_backward"

    def __init__(self, rec: Recorder, reduction: str) -> None:
        super().__init__(rec)
        self.reduction = reduction

    def outputs(self, tensors: tuple) -> list[Any]:
        """The loss (scalar, or per row for ``reduction='none'``) and the fp32 log-sum-exp per row."""
        import torch

        logits, target = tensors[0], tensors[1]
        shape = tuple(target.shape) if self.reduction == "none" else ()
        lse = torch.empty((logits.shape[0],), dtype=torch.float32, device=logits.device)
        return [torch.empty(shape, dtype=logits.dtype, device=logits.device), lse]


def _half_dtypes() -> tuple[Any, ...]:
    import torch

    return (torch.bfloat16, torch.float16)
