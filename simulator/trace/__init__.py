"""Import any PyTorch model's kernels: trace a training step on the meta device, save it, price it.

:func:`trace_model` records the ATen kernels of forward, backward and an optimizer step of an
``nn.Module`` (hand-written or Hugging Face ``transformers``) under CUDA-autocast emulation, grouped per
transformer layer, without weights or a GPU; :meth:`Trace.save` / :func:`load_trace` write and read the
JSON file (``docs/trace-format.md``); :func:`traced_ops` turns it into :class:`~simulator.core.workload.Op`
records that :func:`simulator.core.costs.op_cost` prices as written. :func:`resolve_factory` turns
``MODULE:FACTORY`` (user code: command line and API only) or ``hf:CONFIG`` into a model factory.

PyTorch is imported only when a model is traced; reading traces and pricing them needs no torch.
"""

from __future__ import annotations

from simulator.trace.capture import trace_model
from simulator.trace.convert import InferenceKernel, TracedOps, inference_kernels, kernel_op, traced_ops
from simulator.trace.factory import resolve_factory
from simulator.trace.fused import DEFAULT_FUSED, FUSABLE
from simulator.trace.schema import (
    MAX_TRACE_BYTES,
    TRACE_FORMAT,
    Kernel,
    ParamCounts,
    Trace,
    load_stack_trace,
    load_trace,
    parse_trace,
)

__all__ = [
    "DEFAULT_FUSED",
    "FUSABLE",
    "InferenceKernel",
    "MAX_TRACE_BYTES",
    "TRACE_FORMAT",
    "Kernel",
    "ParamCounts",
    "Trace",
    "TracedOps",
    "inference_kernels",
    "kernel_op",
    "load_stack_trace",
    "load_trace",
    "parse_trace",
    "resolve_factory",
    "trace_model",
    "traced_ops",
]
