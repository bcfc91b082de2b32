"""The trace file: a validated record of the kernels one training step of a model launches.

Layout and meaning of every field: ``docs/trace-format.md``. A trace file is untrusted input: it is read
with a size cap, as strict JSON (no NaN/Infinity), validated field by field, and any problem is one
:class:`~hwmodels.errors.ClusterSimError` line that names the field, never a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hwmodels.errors import ClusterSimError, first_validation_error
from hwmodels.fileio import atomic_write, read_regular_file
from simulator.core.limits import MAX_KERNEL_TRACE_BYTES

TRACE_FORMAT = "clustersim-trace/1"
#: Largest trace file read (a 400-layer model's trace is a few MB); the cap lives in simulator.core.limits.
MAX_TRACE_BYTES = MAX_KERNEL_TRACE_BYTES

_MAX_INT = 2**53
Count = Annotated[int, Field(ge=0, le=_MAX_INT)]
Dim = Annotated[int, Field(ge=1, le=_MAX_INT)]
Amount = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Text = Annotated[str, Field(max_length=300)]
Phase = Literal["fwd", "bwd", "opt"]
Region = Literal["pre", "layer", "post", "opt"]

_ATTN_KEYS = frozenset({"batch", "q_len", "kv_len", "heads", "kv_heads", "head_dim", "v_head_dim"})


class Kernel(BaseModel):
    """One kernel launch (or ``count`` launches of one foreach / batched call) recorded from ATen."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    phase: Phase
    region: Region
    layer: Count | None = None
    op: Text
    kind: Literal["gemm", "attn", "mem", "comm"]
    name: Text
    shapes: Annotated[list[Annotated[list[Count], Field(max_length=16)]], Field(max_length=100_000)]
    dtypes: Annotated[list[Text], Field(max_length=100_000)]
    out_shapes: Annotated[list[Annotated[list[Count], Field(max_length=16)]], Field(max_length=100_000)]
    out_dtypes: Annotated[list[Text], Field(max_length=100_000)]
    flops: Amount
    bytes: Amount
    gemm: tuple[Dim, Dim, Dim] | None = None
    attn: dict[Text, Count] | None = None
    wgrad: bool = False
    count: Dim = 1
    batched: bool = False

    @model_validator(mode="after")
    def _check(self) -> Kernel:
        if self.kind == "gemm" and self.gemm is None:
            raise ValueError("a gemm kernel needs gemm: [M, N, K]")
        if self.kind == "attn" and (self.attn is None or not set(self.attn) >= _ATTN_KEYS):
            raise ValueError(f"an attn kernel needs attn with {', '.join(sorted(_ATTN_KEYS))}")
        if self.kind == "attn" and self.attn is not None and min(self.attn[k] for k in _ATTN_KEYS) < 1:
            raise ValueError("attn sizes must be >= 1")
        if len(self.shapes) != len(self.dtypes) or len(self.out_shapes) != len(self.out_dtypes):
            raise ValueError("shapes and dtypes must have the same length")
        if (self.region == "layer") != (self.layer is not None):
            raise ValueError("layer is set exactly for region 'layer'")
        if (self.phase == "opt") != (self.region == "opt"):
            raise ValueError("phase 'opt' goes with region 'opt' only")
        return self


class ParamCounts(BaseModel):
    """Parameter elements (total, per layer, embedding tables) and parameter tensors (the optimizer's lists)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    total: Count
    embedding: Count
    per_layer: list[Count]
    tensors: Count


class Trace(BaseModel):
    """A model's kernels for one training step at one (batch, seq), grouped by region and layer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["clustersim-trace/1"] = TRACE_FORMAT
    factory: Text
    batch: Dim
    seq: Dim
    autocast: Literal["bf16", "fp16"] | None
    fused: list[Text]
    torch_version: Text
    num_layers: Count
    layer_class: Text | None = None
    identical_layers: bool
    layer_note: Annotated[str, Field(max_length=2000)] = ""
    params: ParamCounts
    optimizer: Text | None = None
    pre: list[Kernel]
    layers: list[list[Kernel]]
    post: list[Kernel]
    opt: list[Kernel] = []
    dropped: dict[Text, Count] = {}

    @model_validator(mode="after")
    def _check(self) -> Trace:
        if len(self.layers) != self.num_layers or len(self.params.per_layer) != self.num_layers:
            raise ValueError(f"num_layers={self.num_layers} but layers / params.per_layer have other lengths")
        for region, kernels in (("pre", self.pre), ("post", self.post), ("opt", self.opt)):
            if any(k.region != region for k in kernels):
                raise ValueError(f"{region}: a kernel of another region")
        for i, layer in enumerate(self.layers):
            if any(k.region != "layer" or k.layer != i for k in layer):
                raise ValueError(f"layers[{i}]: a kernel of another layer")
        return self

    def kernels(self) -> list[Kernel]:
        """Every kernel in execution-region order: pre, layers, post, optimizer."""
        return [*self.pre, *(k for layer in self.layers for k in layer), *self.post, *self.opt]

    def save(self, path: str | Path) -> Path:
        """Write the trace as JSON, atomically (temp file, then rename)."""
        return atomic_write(path, self.model_dump_json())


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_trace(text: str | bytes, where: str = "trace") -> Trace:
    """Validate a trace's JSON text; a one-line :class:`ClusterSimError` on any problem."""
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ClusterSimError(f"{where} is not valid JSON: {msg}") from None
    if not isinstance(data, dict):
        raise ClusterSimError(f"{where} must be a JSON object")
    fmt = data.get("format")
    if fmt != TRACE_FORMAT:
        shown = repr(fmt)[:60]
        raise ClusterSimError(f"{where} has format={shown}, this clustersim reads {TRACE_FORMAT!r}; re-trace the model")
    try:
        return Trace.model_validate(data)
    except ValidationError as exc:
        raise ClusterSimError(f"{where} is invalid: {first_validation_error(exc)}") from None


def read_capped(path: str | Path, limit: int, where: str) -> bytes:
    """A regular file's bytes, at most ``limit`` of them: a one-line error when it cannot be read, is not a
    regular file (a directory, device or FIFO, refused before opening) or is larger
    (:func:`hwmodels.fileio.read_regular_file`)."""
    return read_regular_file(path, limit, where)


def load_trace(path: str | Path) -> Trace:
    """Read and validate a trace file (at most :data:`MAX_TRACE_BYTES`)."""
    return parse_trace(read_capped(path, MAX_TRACE_BYTES, f"trace {path}"), where=f"trace {path}")


def load_stack_trace(path: str | None, num_layers: int, model: str) -> Trace:
    """The trace a ``stack: {traced: FILE}`` names, checked against the run's model: a ``.json`` regular
    file (never a device or a directory) with the model's layer count; one-line errors otherwise."""
    where = str(path or "")
    if not where.endswith(".json") or not Path(where).is_file():
        raise ClusterSimError(f"stack.traced: {where!r} is not a .json trace file (write one with clustersim trace)")
    trace = load_trace(where)
    if trace.num_layers != num_layers:
        raise ClusterSimError(f"stack.traced: the trace has {trace.num_layers} layers, model {model} {num_layers}")
    return trace
