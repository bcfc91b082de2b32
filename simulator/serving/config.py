"""Serving configuration: model, replicas, batching policy, KV cache, traffic and SLO.

Distributions are tagged unions (``kind: lognormal``), validated by pydantic; the batching policy is
looked up by its ``kind`` in the policy registry (:mod:`simulator.serving.policies`); every
cross-field problem is a one-line ``ClusterSimError`` naming the field to change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from hwmodels.catalogue import get_gpu
from hwmodels.checks import MAX_TOKENS, check_numbers
from hwmodels.errors import ClusterSimError, first_validation_error
from simulator.core.config import apply_overrides, read_yaml
from simulator.energy.accounting import PowerSpec, SiteSpec
from simulator.models import ModelField
from simulator.moe.routing import MoERouting
from simulator.serving.policies import (  # noqa: F401 - re-exported: the policies' old home
    BatchingPolicy,
    BucketedBatching,
    ChunkedPrefill,
    ContinuousBatching,
    DisaggregatedServing,
    StaticBatching,
    parse_batching,
)
from simulator.serving.steady import SteadyStateSpec
from simulator.stacks import DEFAULT_SERVING_STACK, StackField, get_stack

_STRICT = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# ---- traffic -------------------------------------------------------------------------------------
class PoissonArrivals(BaseModel):
    """Memoryless arrivals at ``rate_per_s`` (exponential gaps)."""

    model_config = _STRICT
    kind: Literal["poisson"] = "poisson"
    rate_per_s: float = Field(gt=0)


class GammaArrivals(BaseModel):
    """Bursty arrivals: gamma-distributed gaps with mean 1/rate and coefficient of variation ``cv``."""

    model_config = _STRICT
    kind: Literal["gamma"] = "gamma"
    rate_per_s: float = Field(gt=0)
    cv: float = Field(default=2.0, gt=0, description="1 = Poisson, > 1 burstier")


class FixedArrivals(BaseModel):
    """One request every 1/rate seconds."""

    model_config = _STRICT
    kind: Literal["fixed"] = "fixed"
    rate_per_s: float = Field(gt=0)


class TraceArrivals(BaseModel):
    """Arrival times replayed from ``workload.trace`` (optionally time-scaled to a target rate).

    With ``workload.sessions`` every arrival starts a session, so requests arrive at about
    ``turns x rate`` (the same holds for the other arrival kinds)."""

    model_config = _STRICT
    kind: Literal["trace"] = "trace"
    rate_per_s: float | None = Field(default=None, gt=0, description="rescale the trace to this mean rate")


class ConcurrencyArrivals(BaseModel):
    """Closed loop: ``max_concurrency`` clients, each sending its next request when its previous one completes
    (``vllm bench serve --max-concurrency``); with ``rate_per_s`` requests are also paced by Poisson arrivals
    and wait for a free client. Latencies count from when a request is sent."""

    model_config = _STRICT
    kind: Literal["concurrency"] = "concurrency"
    max_concurrency: int = Field(gt=0)
    rate_per_s: float | None = Field(default=None, gt=0, description="Poisson pacing; unset = send at once")


Arrivals = Annotated[
    PoissonArrivals | GammaArrivals | FixedArrivals | TraceArrivals | ConcurrencyArrivals, Field(discriminator="kind")
]


class FixedLengths(BaseModel):
    """Every request has the same prompt and output length (tokens)."""

    model_config = _STRICT
    kind: Literal["fixed"] = "fixed"
    prompt_tokens: int = Field(gt=0, le=MAX_TOKENS)
    output_tokens: int = Field(gt=0, le=MAX_TOKENS)


class UniformLengths(BaseModel):
    """Prompt and output lengths drawn uniformly from [min, max] tokens."""

    model_config = _STRICT
    kind: Literal["uniform"] = "uniform"
    prompt_min: int = Field(gt=0, le=MAX_TOKENS)
    prompt_max: int = Field(gt=0, le=MAX_TOKENS)
    output_min: int = Field(gt=0, le=MAX_TOKENS)
    output_max: int = Field(gt=0, le=MAX_TOKENS)


class LognormalLengths(BaseModel):
    """Log-normal lengths (median and log-space sigma), clipped to [1, max]; fit to a trace with
    ``simulator.serving.workload.fit_lognormal``."""

    model_config = _STRICT
    kind: Literal["lognormal"] = "lognormal"
    prompt_median: float = Field(gt=0)
    prompt_sigma: float = Field(default=1.0, ge=0)
    output_median: float = Field(gt=0)
    output_sigma: float = Field(default=1.0, ge=0)
    max_prompt: int = Field(default=32768, gt=0, le=MAX_TOKENS)
    max_output: int = Field(default=4096, gt=0, le=MAX_TOKENS)


class ZipfLengths(BaseModel):
    """Heavy-tailed (Zipf) lengths with exponent ``a`` > 1, clipped to [1, max]."""

    model_config = _STRICT
    kind: Literal["zipf"] = "zipf"
    prompt_a: float = Field(gt=1)
    output_a: float = Field(gt=1)
    prompt_scale: int = Field(default=64, gt=0, description="tokens per Zipf rank")
    output_scale: int = Field(default=16, gt=0)
    max_prompt: int = Field(default=32768, gt=0, le=MAX_TOKENS)
    max_output: int = Field(default=4096, gt=0, le=MAX_TOKENS)


class TraceLengths(BaseModel):
    """Prompt and output lengths taken from ``workload.trace`` (row by row, or sampled)."""

    model_config = _STRICT
    kind: Literal["trace"] = "trace"
    sample: bool = Field(default=False, description="sample rows with replacement instead of replaying them")


class ShareGPTLengths(BaseModel):
    """Prompt and output lengths of the ShareGPT V3 conversations as serving benchmarks sample them (a bundled
    log-normal description with its source: :data:`simulator.serving.workload.SHAREGPT`)."""

    model_config = _STRICT
    kind: Literal["sharegpt"] = "sharegpt"


Lengths = Annotated[
    FixedLengths | UniformLengths | LognormalLengths | ZipfLengths | TraceLengths | ShareGPTLengths,
    Field(discriminator="kind"),
]


class TraceSpec(BaseModel):
    """A request trace file: CSV or JSONL with arrival time, prompt and output tokens.

    ``preset`` maps the columns of known public traces (azure: TIMESTAMP, ContextTokens,
    GeneratedTokens; splitwise: same as azure; vidur: arrived_at, num_prefill_tokens,
    num_decode_tokens); ``columns`` maps our names to any other file's columns.
    """

    model_config = _STRICT
    path: str
    format: Literal["auto", "csv", "jsonl"] = "auto"
    preset: Literal["none", "azure", "splitwise", "vidur"] = "none"
    columns: dict[str, str] = Field(default_factory=dict, description="arrival_s/prompt_tokens/output_tokens -> column")
    max_rows: int | None = Field(default=None, gt=0)

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - {"arrival_s", "prompt_tokens", "output_tokens"})
        if unknown:
            raise ClusterSimError(f"unknown key(s) {unknown}; map arrival_s, prompt_tokens and output_tokens")
        return v


class SessionSpec(BaseModel):
    """Multi-turn conversations: each session has ``turns`` requests; a turn's prompt is the whole
    conversation so far (earlier prompts and answers) plus its new message."""

    model_config = _STRICT
    turns: int = Field(default=4, gt=0)
    think_time_s: float = Field(
        default=10.0, ge=0, description="gap between a turn's arrival and the next turn's (open loop)"
    )


class WorkloadSpec(BaseModel):
    """Traffic: how many requests, when they arrive, how long they are."""

    model_config = _STRICT
    num_requests: int = Field(default=1000, gt=0)
    arrivals: Arrivals = PoissonArrivals(rate_per_s=4.0)
    lengths: Lengths = LognormalLengths(prompt_median=512, prompt_sigma=0.8, output_median=128, output_sigma=0.8)
    trace: TraceSpec | None = None
    sessions: SessionSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> WorkloadSpec:
        uses_trace = self.arrivals.kind == "trace" or self.lengths.kind == "trace"
        if uses_trace and self.trace is None:
            raise ClusterSimError("workload.arrivals/lengths kind 'trace' needs workload.trace.path")
        if isinstance(self.lengths, UniformLengths):
            ln = self.lengths
            if ln.prompt_min > ln.prompt_max or ln.output_min > ln.output_max:
                raise ClusterSimError("workload.lengths: *_min must be <= *_max")
        return self


# ---- KV cache ------------------------------------------------------------------------------------
class RetentionSpec(BaseModel):
    """Structured KV retention for long conversations: keep the last ``keep_last_turns`` turns in
    full, only the ``key_token_fraction`` most-attended tokens of turns up to ``drop_after_turns``
    back, and drop older turns (the source material's scheme, so its saving can be measured)."""

    model_config = _STRICT
    keep_last_turns: int = Field(default=16, gt=0)
    key_token_fraction: float = Field(default=0.1, ge=0, le=1)
    drop_after_turns: int = Field(default=64, gt=0)

    @model_validator(mode="after")
    def _check(self) -> RetentionSpec:
        if self.drop_after_turns < self.keep_last_turns:
            raise ClusterSimError("kv.retention.drop_after_turns must be >= keep_last_turns")
        return self


class KVSpec(BaseModel):
    """Paged KV cache and its tiers."""

    model_config = _STRICT
    block_size: int = Field(default=16, gt=0, description="tokens per KV block (vLLM default 16)")
    dtype: Literal["bf16", "fp16", "fp8", "int4"] = "bf16"
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1, description="share of HBM the engine may use")
    preemption: Literal["recompute", "swap"] = "recompute"
    host_gb: float = Field(default=0.0, ge=0, description="host-DRAM KV tier per replica (0 = none)")
    nvme_gb: float = Field(default=0.0, ge=0, description="local NVMe KV tier per replica (0 = none)")
    nvme_gbps: float = Field(default=6.0, gt=0, description="NVMe read/write GB/s (PCIe Gen4 x4 SSD: ~6-7)")
    prefix_caching: bool = False
    offload_decode: bool = Field(
        default=False,
        description="admit sequences whose KV overflows HBM into the host tier and stream that part over PCIe "
        "at every decode step (FlexGen-style offloading): a bigger batch for a slower step",
    )
    retention: RetentionSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> KVSpec:
        if self.offload_decode and self.host_gb <= 0:
            raise ClusterSimError("kv.offload_decode needs a host tier: set kv.host_gb > 0")
        return self


class SLOSpec(BaseModel):
    """Latency targets a request must meet to count toward goodput."""

    model_config = _STRICT
    ttft_s: float = Field(default=2.0, gt=0)
    tpot_s: float = Field(default=0.1, gt=0)


class ServingConfig(BaseModel):
    """A model served on N replicas of TP x PP GPUs, with a batching policy and traffic."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False)

    model: ModelField
    gpu: str
    node: str | None = None
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    replicas: int = Field(default=1, gt=0)
    ep: int = Field(default=1, gt=0, description="expert parallelism inside a replica (MoE): ep groups of tp x pp GPUs")
    moe_routing: MoERouting = Field(default_factory=MoERouting, description="expert routing for ep > 1")
    weight_dtype: Literal["bf16", "fp16", "fp8", "int8", "int4"] = "bf16"
    stack: StackField = Field(
        default_factory=lambda: get_stack(DEFAULT_SERVING_STACK),
        description="the serving engine (simulator.stacks): vllm, sglang, pytorch-eager, ... or a mapping",
    )
    router: Literal["round_robin", "least_outstanding", "kv_aware"] = "least_outstanding"
    batching: SerializeAsAny[BatchingPolicy] = Field(
        default_factory=ContinuousBatching, description="a registered batching policy (simulator.serving.policies)"
    )
    kv: KVSpec = KVSpec()
    workload: WorkloadSpec = WorkloadSpec()
    slo: SLOSpec = SLOSpec()
    power: PowerSpec = PowerSpec()
    site: SiteSpec = SiteSpec()
    steady_state: SteadyStateSpec = Field(
        default_factory=SteadyStateSpec, description="steady-state detection, intervals and run extension"
    )
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _finite_numbers(cls, data: Any) -> Any:
        """No inf/NaN and no integer past 2**53 anywhere (one line naming the field, before numpy sees it)."""
        check_numbers(data)
        return data

    @model_validator(mode="before")
    @classmethod
    def _engine_batching(cls, data: Any) -> Any:
        """A config that names no batching policy runs its serving engine's default (the stack's ``serving``)."""
        if isinstance(data, dict) and data.get("batching") is None and isinstance(data.get("gpu"), str):
            engine = get_stack(data.get("stack", DEFAULT_SERVING_STACK)).serving
            if engine is not None and engine.batching:
                gpu = get_gpu(data["gpu"])
                data = {**data, "batching": engine.default_batching(gpu.memory_gb * 1e9 / 2**30, gpu.id)}
        return data

    @field_validator("batching", mode="before")
    @classmethod
    def _policy(cls, v: Any) -> BatchingPolicy:
        return parse_batching(v)

    @field_validator("gpu")
    @classmethod
    def _canonical_gpu(cls, v: str) -> str:
        return get_gpu(v).id

    @model_validator(mode="after")
    def _check(self) -> ServingConfig:
        m = self.model
        if m.num_attention_heads % self.tp:
            raise ClusterSimError(f"tp={self.tp} does not divide num_attention_heads={m.num_attention_heads}")
        if m.num_layers % self.pp:
            raise ClusterSimError(f"pp={self.pp} does not divide num_layers={m.num_layers}")
        if self.ep > 1 and (m.moe is None or m.moe.num_experts % self.ep):
            experts = m.moe.num_experts if m.moe else 0
            raise ClusterSimError(f"ep={self.ep} must divide the model's routed experts ({experts})")
        if self.weight_dtype == "fp8" and not get_gpu(self.gpu).supports("fp8"):
            raise ClusterSimError(f"weight_dtype=fp8 needs FP8 units, which {self.gpu} lacks; use int8 or bf16")
        return self

    @property
    def gpus_per_replica(self) -> int:
        """GPUs one replica spans: tp x pp x ep."""
        return self.tp * self.pp * self.ep

    @property
    def num_gpus(self) -> int:
        """GPUs of the whole deployment: every replica (prefill and decode ones included) x its GPUs."""
        return len(self.batching.replica_roles(self.replicas)) * self.gpus_per_replica


def load_serving_config(source: str | Path | dict[str, Any], overrides: list[str] | None = None) -> ServingConfig:
    """Build a validated :class:`ServingConfig` from a YAML path or dict plus ``--set`` overrides."""
    data = source if isinstance(source, dict) else read_yaml(source)
    data = apply_overrides(data, overrides)
    trace = (data.get("workload") or {}).get("trace") if isinstance(data.get("workload"), dict) else None
    if not isinstance(source, dict) and isinstance(trace, dict) and "path" in trace:
        path = Path(str(trace["path"]))
        if not path.is_absolute() and not path.exists():  # relative to the config file's folder
            trace["path"] = str(Path(source).parent / path)
    try:
        return ServingConfig.model_validate(data)
    except ValidationError as exc:
        raise ClusterSimError(first_validation_error(exc)) from None
