"""A trace's kernels as the simulator's :class:`~simulator.core.workload.Op` records, priced as written.

Every op carries ``phase="fwd"`` or ``"bwd"`` (the kernel runs only in that pass, as recorded), so
:func:`simulator.core.costs.op_cost` derives no backward for it. Optimizer kernels are listed apart with
``phase="fwd"``: each runs once per step as written. Ops keep the trace's own shapes: a trace is priced
at the (batch, seq) it was recorded at; re-trace for another shape (rescaling is not implemented).
"""

from __future__ import annotations

from dataclasses import dataclass

from hwmodels.dtypes import BYTES_PER_ELEMENT
from hwmodels.errors import ClusterSimError
from simulator.core.workload import Op
from simulator.trace.schema import Kernel, ParamCounts, Trace

_COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")


@dataclass(frozen=True)
class TracedOps:
    """A traced model as ops: before the layers, each layer (forward then backward), after, optimizer."""

    pre: list[Op]
    layers: list[list[Op]]
    post: list[Op]
    optimizer: list[Op]
    num_layers: int
    params: ParamCounts

    def all_ops(self) -> list[Op]:
        """Every op of the step in execution-region order."""
        return [*self.pre, *(op for layer in self.layers for op in layer), *self.post, *self.optimizer]


def _dtype(tag: str | None) -> str | None:
    """The op dtype tag the cost model knows (``bf16``, ``fp16``, ``fp32``, ...), else None (the run's)."""
    return tag if tag in BYTES_PER_ELEMENT else None


def kernel_op(k: Kernel) -> Op:
    """One kernel record as an :class:`Op` with its own pass (``fwd``/``bwd``; optimizer kernels ``fwd``)."""
    phase = "bwd" if k.phase == "bwd" else "fwd"
    if k.kind == "gemm":
        assert k.gemm is not None
        dtype = _dtype(k.dtypes[-1] if k.dtypes else None)
        return Op(name=k.name, kind="gemm", flops=k.flops, bytes=k.bytes, gemm=tuple(k.gemm), count=k.count,
                  batched=k.batched, dtype=dtype, phase=phase, wgrad=k.wgrad)  # fmt: skip
    if k.kind == "attn":
        assert k.attn is not None
        dtype = _dtype(k.dtypes[0] if k.dtypes else None)  # q (forward) or the output gradient (backward)
        return Op(name=k.name, kind="attn", flops=k.flops, bytes=k.bytes, attn=dict(k.attn), dtype=dtype, phase=phase)
    if k.kind == "comm":
        collective = next((c for c in _COLLECTIVES if c in k.op), "send_recv")
        return Op(name=k.name, kind="comm", bytes=k.bytes, collective=collective, group="tp", phase=phase)
    return Op(name=k.name, kind="mem", bytes=k.bytes, count=k.count, phase=phase)


def traced_ops(trace: Trace, *, batch: int | None = None, seq: int | None = None) -> TracedOps:
    """The trace as ops at its own (batch, seq); a one-line error if another shape is asked for."""
    for what, want, have in (("batch", batch, trace.batch), ("seq", seq, trace.seq)):
        if want is not None and want != have:
            raise ClusterSimError(
                f"the trace was recorded at {what}={have}, not {want}; re-trace with `clustersim trace "
                f"{trace.factory} --{what} {want}` (traces are not rescaled)"
            )
    return TracedOps(
        pre=[kernel_op(k) for k in trace.pre],
        layers=[[kernel_op(k) for k in layer] for layer in trace.layers],
        post=[kernel_op(k) for k in trace.post],
        optimizer=[kernel_op(k) for k in trace.opt],
        num_layers=trace.num_layers,
        params=trace.params,
    )


@dataclass(frozen=True)
class InferenceKernel:
    """One forward kernel of a traced layer as serving prices it for any token count: a token GEMM
    ``[tokens, K] @ [K, N]`` (``gemm=(N, K)``) or an elementwise kernel moving ``bytes_per_token`` per token."""

    name: str
    gemm: tuple[int, int] | None = None
    bytes_per_token: float = 0.0


def _token_shaped(shape: list[int], batch: int, seq: int) -> bool:
    """Whether a tensor carries the step's tokens: [batch, seq, ...], [batch*seq, ...] or [batch, heads, seq, d]."""
    if len(shape) >= 2 and shape[0] == batch and shape[1] == seq:
        return True
    if shape and shape[0] == batch * seq:
        return True
    return len(shape) == 4 and shape[0] == batch and shape[2] == seq


def inference_kernels(trace: Trace) -> list[InferenceKernel]:
    """The forward kernels of the trace's first layer that scale with the token count, for serving.

    Attention is left out (the serving model prices prefill and decode attention itself), and so are
    kernels with no token-shaped tensor: autocast's per-forward weight casts, which inference, holding
    its weights in their serving dtype, does not run.
    """
    B, S = trace.batch, trace.seq
    out: list[InferenceKernel] = []
    for k in trace.layers[0] if trace.layers else []:
        if k.phase != "fwd" or k.kind in ("attn", "comm"):
            continue
        if k.kind == "gemm" and k.gemm is not None and not k.batched and k.gemm[0] == B * S:
            out.extend(InferenceKernel(k.name, gemm=(k.gemm[1], k.gemm[2])) for _ in range(k.count))
        elif k.kind == "mem" and any(_token_shaped(s, B, S) for s in [*k.shapes, *k.out_shapes]):
            per_launch = k.bytes / (B * S) / k.count
            out.extend(InferenceKernel(k.name, bytes_per_token=per_launch) for _ in range(k.count))
    return out
