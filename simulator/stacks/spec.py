"""The stack schema and its presets (``simulator/stacks/presets/*.yaml``)."""

from __future__ import annotations

from bisect import bisect_left
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hwmodels.errors import ClusterSimError, UnknownNameError, first_validation_error

__all__ = [
    "DEFAULT_SERVING_STACK",
    "DEFAULT_STACK",
    "EngineSpec",
    "KernelGroup",
    "Optimizer",
    "Slot",
    "StackSpec",
    "Tensor",
    "get_stack",
    "list_stacks",
]

#: The stack a config runs on when it names none: fused kernels and flash attention, no host floor.
DEFAULT_STACK = "megatron-te"
#: The stack a serving config runs on when it names none: the vLLM engine.
DEFAULT_SERVING_STACK = "vllm"


#: Tensors a kernel reads or writes, by element count on one rank for one micro-batch: ``hidden`` T x h
#: (T tokens; 1/tp of it in a norm/residual slot under sequence parallelism), ``rows`` T (per-token
#: statistics), ``q``/``k``/``v`` the rotary-embedded query/key and the value heads, ``ctx`` the attention
#: output heads, ``ffn_up`` the up-projection output (2 x ffn when gated), ``ffn`` the MLP hidden units,
#: ``logits`` T x vocabulary/tp, ``params`` the layer's weights on this rank (per-step casts), ``rope_table``
#: T x head_dim (rotary cos/sin tables a model computes per forward).
Tensor = Literal["hidden", "rows", "q", "k", "v", "ctx", "ffn_up", "ffn", "logits", "params", "rope_table"]

#: Where in the model a kernel group runs: once per forward after the embedding (``model_in``: position ids,
#: masks, rotary tables), around the attention block, the MLP block, the output head, or on the layer's
#: weights once per micro-batch (autocast's weight casts and their gradients).
Slot = Literal[
    "model_in",
    "attn_norm",
    "attn_in",
    "rope",
    "attn_out",
    "attn_residual",
    "mlp_norm",
    "mlp_in",
    "mlp_act",
    "mlp_residual",
    "weights",
    "final_norm",
    "head_in",
    "loss",
]


class KernelGroup(BaseModel):
    """The kernels one framework call launches: each forward (and backward) entry is one kernel.

    An entry maps tensors to what the kernel moves per element of each: passes of the activation dtype
    (``unit: act``, read + write counted separately) or bytes (``unit: bytes``, for kernels in fixed
    precisions such as fp32 casts under autocast). Without ``bwd`` a single forward kernel gets one
    backward kernel moving twice its bytes (the saved input and the incoming gradient).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    unit: Literal["act", "bytes"] = "act"
    fwd: list[dict[Tensor, Annotated[float, Field(ge=0, le=1e4)]]] = Field(default_factory=list, max_length=64)
    bwd: list[dict[Tensor, Annotated[float, Field(ge=0, le=1e4)]]] | None = Field(default=None, max_length=64)
    launches: int = Field(
        default=1, ge=1, le=1024, description="each kernel runs this many times (e.g. once per Linear)"
    )
    split: int = Field(
        default=1, ge=1, le=1024, description="the listed bytes are spread over this many kernels (e.g. one per weight)"
    )
    when: Literal["always", "gated", "plain"] = Field(
        default="always", description="only for gated (SwiGLU) or only for plain (GELU) MLPs"
    )


class Optimizer(BaseModel):
    """How a stack runs the optimizer step: HBM bytes per parameter and kernel launches per parameter tensor."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    impl: Literal["fused", "foreach", "per_tensor"] = "fused"
    bytes_per_param: float = Field(default=30.0, gt=0, le=1000)
    launches_per_tensor: float = Field(default=0.0, ge=0, le=100)


class EngineSpec(BaseModel):
    """How a serving engine schedules: its default batching, CUDA-graph capture, CPU/GPU overlap and preemption.

    The CPU time per iteration itself is the stack's ``scheduler_s_per_iteration`` + ``scheduler_s_per_seq``
    x running sequences; ``overlap_scheduling`` says whether the engine prepares the next batch while the GPU
    runs the current one (the step then takes the longer of the two instead of their sum).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    batching: dict[str, Any] = Field(
        default_factory=dict, description="the batching policy a config gets when it names none (kind + knobs)"
    )
    large_gpu_batching: dict[str, Any] = Field(
        default_factory=dict, description="knobs that replace batching's on GPUs with >= large_gpu_min_memory_gib"
    )
    large_gpu_min_memory_gib: float = Field(default=0.0, ge=0, description="0 = no large-GPU defaults")
    large_gpu_exclude: list[str] = Field(
        default_factory=list, description="GPU id substrings that never count as large"
    )
    overlap_scheduling: bool = Field(
        default=False, description="CPU scheduling of step n+1 runs while the GPU runs step n (hidden behind it)"
    )
    cuda_graphs: Literal["none", "decode", "tokens"] = Field(
        default="none",
        description="which iterations replay a captured graph: none, pure-decode batches up to the largest size "
        "(decode), or any batch whose token count is at most the largest size (tokens: vLLM V1 piecewise graphs)",
    )
    cuda_graph_sizes: list[Annotated[int, Field(gt=0)]] = Field(
        default_factory=list, max_length=16384, description="captured batch sizes (decode) or token counts (tokens)"
    )
    cuda_graph_padding: bool = Field(
        default=True, description="pad a batch up to the next captured size (False: sizes not captured run eagerly)"
    )
    frontend_s: float = Field(
        default=0.0,
        ge=0,
        le=10.0,
        description="a request's path outside the engine loop (HTTP, tokenization, hand-off to the engine, "
        "detokenizing and streaming the output): added to every request's TTFT and latency, s",
    )
    preemption: Literal["lifo", "retract", "no_evict"] = Field(
        default="lifo",
        description="lifo: admit while the KV fits, evict the newest running request when it runs out (vLLM); "
        "retract: admit against a reserve for the running requests' expected output, retract the least-decoded "
        "requests when it runs out (SGLang); no_evict: admit only what can run to its last token (TRT-LLM)",
    )

    @model_validator(mode="after")
    def _check(self) -> EngineSpec:
        sizes = self.cuda_graph_sizes
        if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
            raise ValueError("serving.cuda_graph_sizes must be strictly increasing")
        if self.cuda_graphs != "none" and not sizes:
            raise ValueError(f"serving.cuda_graphs={self.cuda_graphs!r} needs serving.cuda_graph_sizes")
        return self

    def default_batching(self, gpu_memory_gib: float, gpu_id: str) -> dict[str, Any]:
        """The batching section this engine runs by default on a GPU with ``gpu_memory_gib`` of HBM."""
        large = (
            self.large_gpu_min_memory_gib > 0
            and gpu_memory_gib >= self.large_gpu_min_memory_gib
            and not any(x in gpu_id for x in self.large_gpu_exclude)
        )
        return {**self.batching, **(self.large_gpu_batching if large else {})}

    def graph_size(self, size: int) -> int:
        """The captured size a batch of ``size`` replays (0: it runs eagerly)."""
        sizes = self.cuda_graph_sizes
        if not sizes or size > sizes[-1]:
            return 0
        i = bisect_left(sizes, size)
        return sizes[i] if self.cuda_graph_padding or sizes[i] == size else 0


class StackSpec(BaseModel):
    """A framework as the simulator sees it; each field has the framework code it comes from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    sources: dict[str, str] = Field(default_factory=dict, description="field -> where the value comes from")
    attention: Literal["flash", "unfused"] = Field(
        default="flash", description="fused flash attention, or the pre-2022 unfused softmax path"
    )
    host_s_per_layer: float = Field(
        default=0.0, ge=0, description="eager host (Python/launch) time per transformer layer forward, s"
    )
    collective_call_s: float = Field(
        default=0.0, ge=0, description="extra host cost of each blocking in-layer collective call, s"
    )
    overlap_grad_reduce: bool = Field(
        default=True, description="DP gradient reduction per bucket during the backward (Megatron DDP overlap)"
    )
    cp_comm: Literal["p2p", "all_gather"] = Field(
        default="p2p",
        description="context parallelism: ring exchange of K/V overlapped with the attention blocks (p2p), or K/V "
        "all-gathered before attention and dK/dV reduce-scattered after it, exposed (all_gather; Llama 3 §3.3.2)",
    )
    param_gather_window: Literal["first_forward", "hidden"] = Field(
        default="first_forward",
        description="ZeRO-1/2 with overlap_param_gather: the updated parameters' all-gather hides only under the "
        "next step's first forward, bucket by bucket (Megatron DDP forward pre-hooks); 'hidden': fully overlapped",
    )
    zero3_regather_in_recompute: bool = Field(
        default=False,
        description="ZeRO-3 with full recompute gathers the parameters again for the backward after the recomputed "
        "forward released them (DeepSpeed's hooks); False: the recompute's gather serves the backward (FSDP)",
    )
    gc_aligned: bool = Field(
        default=False,
        description="the framework runs Python's garbage collection on every rank at the same step (torchtitan "
        "gc_freq, Megatron --manual-gc, NeMo gc_interval); False: the interpreter's automatic collection",
    )
    vocab_divisible_by: int = Field(
        default=1, ge=1, description="the LM head's vocabulary is padded to a multiple of this x tp (1 = no padding)"
    )
    kernels: dict[Slot, Annotated[list[KernelGroup], Field(max_length=16)]] = Field(
        default_factory=dict, description="slot -> the elementwise kernels the framework launches there"
    )
    split_qkv: bool = Field(default=False, description="separate q, k and v projection GEMMs (HF-style modules)")
    split_gate_up: bool = Field(default=False, description="separate gate and up projection GEMMs")
    optimizer: Optimizer = Field(default_factory=Optimizer)
    host_s_per_kernel: float = Field(
        default=0.0, ge=0, le=1.0, description="host time to issue one kernel (eager dispatch + launch), s"
    )
    launch: Literal["eager", "cuda_graphs", "compiled"] = Field(
        default="eager", description="how kernels are issued (CUDA graphs replay without host cost per kernel)"
    )
    scheduler_s_per_iteration: float | None = Field(
        default=None,
        ge=0,
        le=1.0,
        description="serving: the engine's exposed CPU time per iteration, s (unset: the GPU profile's value)",
    )
    traced: str | None = Field(
        default=None,
        max_length=4096,
        description="a trace file (clustersim trace): training prices exactly its recorded kernels",
    )
    scheduler_s_per_seq: float = Field(
        default=0.0, ge=0, le=1.0, description="serving: scheduling time per running sequence per iteration, s"
    )
    serving: EngineSpec | None = Field(
        default=None, description="serving engines: default batching, CUDA graphs, CPU overlap, preemption"
    )

    def training_defaults(self) -> dict[str, Any]:
        """The ``training:`` knobs this stack sets (a config's own ``training:`` values override them)."""
        return {
            "flash_attention": self.attention == "flash",
            "host_s_per_layer": self.host_s_per_layer,
            "host_s_per_kernel": self.host_s_per_kernel if self.launch != "cuda_graphs" else 0.0,
            "collective_call_s": self.collective_call_s,
            "overlap_grad_reduce": self.overlap_grad_reduce,
        }

    def zero3_backward_gathers(self, recompute: str) -> int:
        """Parameter all-gathers ZeRO-3 runs per micro-batch in a chunk's backward: 2 when the recomputed forward
        released its gathered parameters again, else 1."""
        return 2 if self.zero3_regather_in_recompute and recompute == "full" else 1


def _merge(base: StackSpec, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` over ``base``: fields replace, kernel slots replace slot by slot, sources merge."""
    out = {**base.model_dump(), **data}
    out["kernels"] = {**base.model_dump()["kernels"], **(data.get("kernels") or {})}
    out["sources"] = {**base.sources, **(data.get("sources") or {})}
    if base.serving is not None and isinstance(data.get("serving"), dict):  # engine knobs merge field by field
        out["serving"] = {**base.serving.model_dump(), **data["serving"]}
    return out


def _validate(data: Any, where: str) -> StackSpec:
    if not isinstance(data, dict):
        raise ClusterSimError(f"{where}: expected a mapping of stack fields")
    try:
        return StackSpec.model_validate(data)
    except ValidationError as exc:
        raise ClusterSimError(f"{where}: {first_validation_error(exc)}") from None


@lru_cache(maxsize=1)
def _presets() -> dict[str, StackSpec]:
    """Every preset keyed by name, loaded once from the package data."""
    folder = resources.files("simulator.stacks").joinpath("presets")
    raw: dict[str, tuple[str, dict[str, Any]]] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            data = yaml.safe_load(entry.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("name"), str):
                raise ClusterSimError(f"stack preset {entry.name}: expected a mapping with a name")
            if data["name"] in raw:
                raise ClusterSimError(f"stack preset {entry.name}: duplicate name {data['name']!r}")
            raw[data["name"]] = (entry.name, data)
    out: dict[str, StackSpec] = {}

    def build(name: str, seen: tuple[str, ...]) -> StackSpec:
        if name not in out:
            if name not in raw or name in seen:
                raise ClusterSimError(f"stack preset {name!r}: unknown or circular base")
            file, data = raw[name]
            data = dict(data)
            base = data.pop("base", None)
            merged = _merge(build(base, (*seen, name)), data) if base else data
            out[name] = _validate(merged, f"stack preset {file}")
        return out[name]

    for name in raw:
        build(name, ())
    return out


def list_stacks() -> list[StackSpec]:
    """Every stack preset, sorted by name."""
    return sorted(_presets().values(), key=lambda s: s.name)


def get_stack(value: str | dict[str, Any] | StackSpec) -> StackSpec:
    """A preset name, an inline mapping (``{name: ..., host_s_per_layer: ...}``) or a StackSpec, as a StackSpec.

    An inline mapping starts from a preset (``base: NAME``, default the default stack) and changes some
    fields; kernel slots it names replace the base's slot by slot.
    """
    if isinstance(value, StackSpec):
        return value
    if isinstance(value, dict):
        data = dict(value)
        base = data.pop("base", DEFAULT_STACK)  # fields it leaves out keep the default stack's values
        return _validate(_merge(get_stack(base), data), "stack")
    presets = _presets()
    key = str(value).strip()
    if key not in presets:
        raise UnknownNameError("stack", key, list(presets), hint="`clustersim stacks` lists them")
    return presets[key]
