"""Run configuration: pydantic models loaded from YAML, with ``--set key=value`` overrides.

The shape every command shares::

    model: gpt3-175b                      # preset, path to a HF config.json, or inline spec
    cluster: {gpu: a100-sxm4-80gb, num_gpus: 1024, node: dgx-a100}
    parallel: {tp: 8, pp: 8, dp: 16, ...}
    training: {seq_len: 2048, global_batch: 1536, micro_batch: 1, precision: bf16}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hwmodels.catalogue import get_gpu
from hwmodels.checks import check_numbers
from hwmodels.collectives import algorithm_names, check_algorithm, is_algorithm, node_features
from hwmodels.errors import ClusterSimError, first_validation_error
from hwmodels.topology import ClusterSpec
from simulator.compression import CompressionSpec
from simulator.core.host_tiers import OffloadSpec, ParameterServerSpec, check_host_tiers
from simulator.core.untrusted import load_yaml_text, read_yaml_file
from simulator.core.variability import VariabilitySpec
from simulator.energy.accounting import PowerSpec, SiteSpec
from simulator.models import ModelField, ModelSpec
from simulator.moe.routing import MoERouting
from simulator.stacks import DEFAULT_STACK, StackField, get_stack
from simulator.training.schedules import get_schedule


class ParallelSpec(BaseModel):
    """How the work is split: tensor, pipeline, data, context and expert parallel degrees."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    dp: int = Field(default=1, gt=0)
    cp: int = Field(default=1, gt=0)
    ep: int = Field(default=1, gt=0)
    sp: bool = False
    vpp: int = Field(default=1, gt=0)
    zero: int = Field(default=0, ge=0, le=3)
    schedule: str = Field(default="1f1b", description="a registered pipeline schedule (simulator.training.schedules)")
    layers_per_stage: tuple[int, ...] | None = Field(
        default=None,
        description="transformer layers on each pipeline stage (pp numbers summing to num_layers), e.g. Llama 3 "
        "405B's 126 layers on PP16 with the first and last stage one layer short: [7, 8, ..., 8, 7]; with vpp a "
        "stage's layers split over its chunks, the embedding's and the head's chunk taking fewer; default: as even "
        "as possible",
    )

    @field_validator("schedule")
    @classmethod
    def _known_schedule(cls, v: str) -> str:
        get_schedule(v)  # one-line error naming the registered schedules
        return v

    dp_mode: Literal["collective", "parameter_server"] = Field(
        default="collective",
        description="how data-parallel gradients are summed: NCCL collectives, or push/pull through CPU parameter "
        "servers (parallel.parameter_server; simulator.training.param_server)",
    )
    parameter_server: ParameterServerSpec = Field(
        default_factory=ParameterServerSpec, description="server machines and placement for dp_mode=parameter_server"
    )
    collective_algorithm: str = Field(
        default="auto",
        description="all-reduce/all-gather/reduce-scatter algorithm (hwmodels.collectives): auto (default) = "
        "NCCL's tuner, the fastest of ring, tree and nvls (where the node has NVLink SHARP) with their LL/LL128/"
        "Simple protocols; default = the faster of ring and tree with fitted single-protocol costs (the envelope "
        "the validation was first fitted with); or force ring, tree, hierarchical or nvls. Mid-size messages "
        "across tens of nodes run slower than both rules predict (a forced ring follows them: docs/collectives.md)",
    )

    @field_validator("collective_algorithm")
    @classmethod
    def _known_collective_algorithm(cls, v: str) -> str:
        if not is_algorithm(v):
            raise ClusterSimError(f"unknown collective algorithm {v!r}; use one of: {', '.join(algorithm_names())}")
        return v


class TrainingSpec(BaseModel):
    """Batch shape and numerics of a training step."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    seq_len: int = Field(default=2048, gt=0)
    global_batch: int = Field(default=1, gt=0)
    micro_batch: int = Field(default=1, gt=0)
    recompute: Literal["none", "selective", "full"] = "selective"
    precision: Literal["bf16", "fp16", "fp8"] = "bf16"
    tokens: float | None = Field(default=None, gt=0, description="token budget for time_to_train_days")
    overlap_grad_reduce: bool = Field(
        default=True, description="launch DP gradient reduction per bucket during the last backward (Megatron/DDP)"
    )
    overlap_param_gather: bool = Field(
        default=True, description="ZeRO-1/2: hide the post-optimizer parameter all-gather under the next forward"
    )
    flash_attention: bool = Field(
        default=True, description="fused flash attention; false = Megatron's pre-2022 unfused softmax path"
    )
    host_s_per_layer: float = Field(
        default=0.0,
        ge=0,
        description="host (Python/launch) time per transformer layer forward in an eager framework; a phase costs "
        "max(device time, host time) since launches are asynchronous; 0 = never host-bound (CUDA graphs)",
    )
    host_s_per_kernel: float = Field(
        default=0.0,
        ge=0,
        le=1.0,
        description="host time to issue one kernel of a layer's forward in an eager framework (dispatch and "
        "launch); added to host_s_per_layer for each kernel the stack launches",
    )
    collective_call_s: float = Field(
        default=0.0,
        ge=0,
        description="extra cost of each blocking in-layer collective call in an eager framework (launch and "
        "host synchronisation of the group), on top of the NCCL cost model",
    )
    bucket_mparams: float = Field(default=40.0, gt=0, description="DP gradient bucket size, millions of parameters")
    moe_dispatch_dtype: Literal["bf16", "fp8"] = Field(
        default="bf16", description="payload of the MoE dispatch all-to-all (DeepSeek-V3 dispatches in fp8)"
    )
    pp_payload_dtype: Literal["bf16", "fp8"] = Field(
        default="bf16", description="activations/gradients sent between pipeline stages"
    )
    moe_node_dedup: bool = Field(
        default=False, description="send a token once per destination node and forward over NVLink (DeepSeek-V3)"
    )
    compression: CompressionSpec | None = Field(
        default=None, description="DP gradient compression (simulator.compression.CompressionSpec)"
    )
    comm_sms: int = Field(
        default=0,
        ge=0,
        description="SMs reserved for communication kernels that overlap compute (DeepSeek-V3: 20 of 132); "
        "compute runs on the rest",
    )
    recompute_modules: (
        tuple[Literal["core_attn", "moe_act", "layernorm", "mla_up_proj", "mlp", "moe", "shared_experts"], ...] | None
    ) = Field(
        default=None,
        description="with recompute=selective, the submodules recomputed in backward (Megatron-Core "
        "--recompute-modules); default: core_attn only",
    )
    activation_cache_dtype: Literal["bf16", "fp8"] = Field(
        default="bf16",
        description="cached Linear inputs (and MoE SwiGLU inputs) kept for backward in fp8, the attention output "
        "in 12-bit E5M6 (DeepSeek-V3 report sec. 3.3.3)",
    )
    optimizer_moment_dtype: Literal["fp32", "bf16"] = Field(
        default="fp32", description="Adam's exp_avg / exp_avg_sq; master weights stay fp32 (DeepSeek-V3: bf16)"
    )
    dropout: bool | None = Field(
        default=None,
        description="dropout on (masks kept for backward); default: the model's own recipe (model.dropout: off for "
        "Llama, Mistral, Mixtral, Qwen2, DeepSeek; on for GPT), on when the model does not say",
    )
    ema: Literal["none", "gpu", "cpu"] = Field(
        default="none",
        description="exponential moving average of the weights: gpu keeps an fp32 copy (sharded like the optimizer), "
        "cpu keeps it in host memory (DeepSeek-V3 sec. 3.2.3)",
    )
    expandable_segments: bool = Field(
        default=False,
        description="PyTorch caching allocator with expandable_segments:True (less fragmentation)",
    )
    offload: OffloadSpec = Field(
        default_factory=OffloadSpec,
        description="model states and activations on host memory or NVMe (ZeRO-Offload / ZeRO-Infinity; "
        "simulator.training.offload)",
    )


def with_model_dropout(training: TrainingSpec, model: ModelSpec) -> TrainingSpec:
    """``training`` with ``dropout`` set from the model's own recipe when unset (on when the model does not say)."""
    if training.dropout is not None:
        return training
    return training.model_copy(update={"dropout": model.dropout if model.dropout is not None else True})


class RunConfig(BaseModel):
    """A model on a cluster with a parallel plan and a batch shape."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False)

    model: ModelField
    cluster: ClusterSpec
    stack: StackField = Field(
        default_factory=lambda: get_stack(DEFAULT_STACK),
        description="the software stack (simulator.stacks): a preset name or a mapping; it sets training knobs",
    )
    parallel: ParallelSpec = ParallelSpec()
    training: TrainingSpec = TrainingSpec()
    moe_routing: MoERouting = Field(
        default_factory=MoERouting, description="how tokens pick experts (simulator.moe.routing)"
    )
    power: PowerSpec = PowerSpec()
    site: SiteSpec = SiteSpec()
    variability: VariabilitySpec = Field(
        default_factory=VariabilitySpec,
        description="GPU speed spread, jitter, stragglers and failures (simulator.core.variability)",
    )
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _finite_numbers(cls, data: Any) -> Any:
        """No inf/NaN and no integer past 2**53 anywhere (printed as null or overflowing numpy later)."""
        check_numbers(data)
        return data

    @model_validator(mode="before")
    @classmethod
    def _stack_sets_training(cls, data: Any) -> Any:
        """The stack fills the ``training:`` knobs the config leaves unset; values given there win."""
        if not isinstance(data, dict):
            return data
        stack = get_stack(data.get("stack", DEFAULT_STACK))
        training = data.get("training", {})
        if isinstance(training, TrainingSpec):
            unset = {k: v for k, v in stack.training_defaults().items() if k not in training.model_fields_set}
            return {**data, "stack": stack, "training": training.model_copy(update=unset)}
        if isinstance(training, dict):
            return {**data, "stack": stack, "training": {**stack.training_defaults(), **training}}
        return data

    @model_validator(mode="after")
    def _dropout_from_model(self) -> RunConfig:
        """``training.dropout`` left unset takes the model's own recipe (on when the model does not say)."""
        object.__setattr__(self, "training", with_model_dropout(self.training, self.model))
        return self

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        """The model, parallel plan, batch and GPU must fit together (one-line errors, first problem only)."""
        _check_parallel_plan(self.model, self.parallel, self.cluster.num_gpus)
        _check_batch_and_gpu(self)
        p, t = self.parallel, self.training
        check_host_tiers(t.offload, p.dp_mode, p.zero, p.dp * p.cp, t.compression is not None, self.cluster)
        return self

    @model_validator(mode="after")
    def _collective_algorithm_fits_nodes(self) -> RunConfig:
        """A forced algorithm must run on the nodes: nvls needs an NVSwitch that reduces in-switch."""
        name = self.parallel.collective_algorithm
        if name not in ("default", "auto"):  # the rules run on any node
            cluster = self.cluster.resolve()
            where = f"node {cluster.node.id}"
            check_algorithm(name, node_features(cluster), where=where, what="parallel.collective_algorithm")
        return self


def _check_parallel_plan(m: ModelSpec, p: ParallelSpec, num_gpus: int) -> None:
    """The parallel plan must split the model's heads, experts and layers and fill the cluster."""
    if m.num_attention_heads % p.tp:
        raise ClusterSimError(f"parallel.tp={p.tp} does not divide num_attention_heads={m.num_attention_heads}")
    if m.kv_heads % p.tp and p.tp % m.kv_heads:
        raise ClusterSimError(f"parallel.tp={p.tp} and num_kv_heads={m.kv_heads}: one must divide the other")
    world = p.tp * p.pp * p.dp * p.cp
    if world != num_gpus:
        raise ClusterSimError(
            f"parallel tp*pp*dp*cp = {p.tp}*{p.pp}*{p.dp}*{p.cp} = {world} must equal cluster.num_gpus={num_gpus}"
        )
    if p.ep > 1 and (p.dp * p.cp * p.tp) % p.ep:
        raise ClusterSimError(f"parallel.ep={p.ep} must divide dp*cp*tp={p.dp * p.cp * p.tp} (experts fold into them)")
    if p.ep > 1 and (m.moe is None or m.moe.num_experts % p.ep):
        experts = m.moe.num_experts if m.moe else 0
        raise ClusterSimError(
            f"parallel.ep={p.ep} must divide the model's routed experts ({experts}); pick ep from its divisors"
        )
    if p.ep > 1 and p.ep * p.tp * p.cp > num_gpus:
        raise ClusterSimError(
            f"parallel.ep={p.ep}: an expert group spans ep*tp*cp = {p.ep}*{p.tp}*{p.cp} = {p.ep * p.tp * p.cp} GPUs "
            f"(its ranks are tp*cp apart) but cluster.num_gpus={num_gpus}; lower ep or tp, or add GPUs"
        )
    if p.layers_per_stage is not None:
        _check_layers_per_stage(m, p)
    elif m.num_layers < p.pp * p.vpp:
        raise ClusterSimError(
            f"num_layers={m.num_layers} cannot be split over pp*vpp={p.pp}*{p.vpp} chunks; use fewer stages "
            "or give parallel.layers_per_stage"
        )
    if p.vpp > 1 and not get_schedule(p.schedule).interleaved:
        raise ClusterSimError(f"parallel.vpp={p.vpp} needs parallel.schedule=interleaved")
    if p.vpp == 1 and get_schedule(p.schedule).interleaved:
        raise ClusterSimError(
            f"parallel.schedule={p.schedule} needs parallel.vpp >= 2 (model chunks per pipeline rank); "
            "set parallel.vpp=2 or more, or use schedule 1f1b"
        )


def _check_layers_per_stage(m: ModelSpec, p: ParallelSpec) -> None:
    """``parallel.layers_per_stage`` needs one positive count per stage, summing to the model's layers."""
    counts = p.layers_per_stage or ()
    if len(counts) != p.pp:
        raise ClusterSimError(f"parallel.layers_per_stage has {len(counts)} entries; give one per stage (pp={p.pp})")
    if min(counts) < 1 or sum(counts) != m.num_layers:
        raise ClusterSimError(
            f"parallel.layers_per_stage must be >= 1 each and sum to num_layers={m.num_layers}, got {list(counts)}"
        )


def _check_batch_and_gpu(cfg: RunConfig) -> None:
    """The batch must split over micro-batches, DP and CP; SMs, stage clocks and precision must suit the GPU."""
    p, t = cfg.parallel, cfg.training
    if t.global_batch % (t.micro_batch * p.dp):
        raise ClusterSimError(
            f"training.global_batch={t.global_batch} is not divisible by micro_batch*dp={t.micro_batch * p.dp}"
        )
    if t.seq_len % p.cp:
        raise ClusterSimError(f"training.seq_len={t.seq_len} is not divisible by parallel.cp={p.cp}")
    gpu = get_gpu(cfg.cluster.gpu)
    if t.comm_sms >= gpu.sms:
        raise ClusterSimError(f"training.comm_sms={t.comm_sms} leaves no SMs for compute ({gpu.id} has {gpu.sms})")
    if cfg.power.stage_clocks_mhz is not None and len(cfg.power.stage_clocks_mhz) != p.pp:
        raise ClusterSimError(
            f"power.stage_clocks_mhz has {len(cfg.power.stage_clocks_mhz)} clocks; give one per stage (pp={p.pp})"
        )
    if t.precision == "fp8" and not gpu.supports("fp8"):
        raise ClusterSimError(f"training.precision=fp8 needs FP8 tensor cores, which {cfg.cluster.gpu} lacks; use bf16")


def _coerce(text: str) -> Any:
    """Parse an override value as YAML so ``tp=8`` is an int and ``sp=true`` a bool."""
    try:
        return load_yaml_text(text, "--set value")
    except ClusterSimError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to a nested dict (a copy).

    Setting a section's ``kind`` to a different value drops that section's other keys, so
    ``--set batching.kind=chunked`` does not inherit the previous policy's options.
    """
    check_numbers(data)  # before the copy: a 5,000-digit integer cannot even be dumped
    out = yaml.safe_load(yaml.safe_dump(data)) if data else {}
    for item in overrides or []:
        if "=" not in item:
            raise ClusterSimError(f"--set {item!r} is not key=value (e.g. --set parallel.tp=8)")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is not None and not isinstance(child, dict | str):
                raise ClusterSimError(f"--set {key.strip()}: {part!r} is a value, not a section")
            if child is None or isinstance(child, str):
                child = {} if child is None else child
                if isinstance(child, str):
                    raise ClusterSimError(f"--set {key}: {part!r} is a name, not a section")
                node[part] = child
            node = child
        value = _coerce(value)
        check_numbers(value, f"--set {key.strip()}")
        if parts[-1] == "kind" and node.get("kind") not in (None, value):
            node.clear()  # switching a tagged union (policy, distribution) starts from the new kind's defaults
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a one-line error for a missing, oversized, non-UTF-8 or malformed file.

    The file is untrusted input (:mod:`simulator.core.untrusted`): a regular file under
    :data:`~simulator.core.limits.MAX_CONFIG_BYTES`, loaded without alias bombs or deep nesting.
    """
    path = Path(path)
    data = read_yaml_file(path, f"config {path}")
    if not isinstance(data, dict):
        raise ClusterSimError(f"config {path} must be a YAML mapping with keys model, cluster, ...")
    return data


def load_config(source: str | Path | dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
    """Build a validated :class:`RunConfig` from a YAML path or dict plus overrides."""
    data = source if isinstance(source, dict) else read_yaml(source)
    data = apply_overrides(data, overrides)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ClusterSimError(first_validation_error(exc)) from None
