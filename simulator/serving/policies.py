"""Batching policies: one class per policy, each its config schema and its scheduling hooks.

A policy is a pydantic model (its ``kind`` and knobs, validated like every config section) with
SimPy-style hooks the engine calls (:class:`simulator.serving.engine.ServingEngine`):

* :meth:`BatchingPolicy.step` -- one scheduling step of a replica (a SimPy generator). The default
  asks :meth:`BatchingPolicy.next_batch` for the next iteration's prefill chunks and decodes and runs
  it; request-level policies (static, bucketed) override ``step`` to run a whole batch.
* :meth:`BatchingPolicy.replica_roles`, :meth:`BatchingPolicy.setup` and
  :meth:`BatchingPolicy.max_iteration_tokens` -- pool layout, engine setup and activation sizing.

Adding a policy is one subclass decorated with :func:`register_batching`, in this file or any
other module: the config, the engine and the app's policy list all read :data:`BATCHING_POLICIES`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hwmodels.catalogue import get_link
from hwmodels.errors import ClusterSimError, first_validation_error

if TYPE_CHECKING:  # the engine imports this module; the hooks only receive its objects
    from simulator.serving.engine import Replica, Seq, ServingEngine

__all__ = [
    "BATCHING_POLICIES",
    "BatchingPolicy",
    "BucketedBatching",
    "ChunkedPrefill",
    "ContinuousBatching",
    "DisaggregatedServing",
    "PrefillFirst",
    "RequestLevelBatching",
    "StaticBatching",
    "get_batching",
    "parse_batching",
    "register_batching",
]

#: kind -> policy class, in registration order.
BATCHING_POLICIES: dict[str, type[BatchingPolicy]] = {}

Batch = tuple[list[tuple["Seq", int]], list["Seq"]]  # (prefill (sequence, chunk tokens), decodes)


def register_batching(cls: type[BatchingPolicy]) -> type[BatchingPolicy]:
    """Class decorator: add a policy under its ``kind`` default (duplicate kinds are refused)."""
    kind = cls.model_fields["kind"].default
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"{cls.__name__} needs a `kind` field with a string default")
    if kind in BATCHING_POLICIES:
        raise ValueError(f"a batching policy of kind {kind!r} is already registered")
    BATCHING_POLICIES[kind] = cls
    return cls


def get_batching(kind: str) -> type[BatchingPolicy]:
    """The policy class of ``kind`` (a one-line error lists the registered kinds)."""
    try:
        return BATCHING_POLICIES[kind]
    except (KeyError, TypeError):
        raise ClusterSimError(
            f"batching.kind={kind!r} is not a batching policy; use one of: {', '.join(BATCHING_POLICIES)}"
        ) from None


def parse_batching(value: Any) -> BatchingPolicy:
    """Validate a ``batching:`` section (a dict with ``kind``, or a policy object) into its policy class."""
    if isinstance(value, BatchingPolicy):
        return value
    if not isinstance(value, dict) or "kind" not in value:
        raise ClusterSimError(f"batching needs a mapping with a kind ({', '.join(BATCHING_POLICIES)})")
    cls = get_batching(value["kind"])
    try:
        return cls.model_validate(value)
    except ValidationError as exc:
        raise ClusterSimError(first_validation_error(exc)) from None


class BatchingPolicy(BaseModel):
    """Base of every batching policy (subclass it, give ``kind`` a Literal default, register it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: str

    #: the knob that limits a batch's size (the trade-off explorer's ``max_num_seqs`` knob sets it)
    batch_limit_field: ClassVar[str] = "max_num_seqs"

    def replica_roles(self, replicas: int) -> list[str]:
        """Role of each replica: ``serve`` (both phases), ``prefill`` or ``decode``."""
        return ["serve"] * replicas

    def setup(self, engine: ServingEngine) -> None:
        """Prepare the engine before it runs (e.g. the KV transfer link); nothing by default."""

    def max_iteration_tokens(self, max_prompt: int) -> int:
        """Most prompt tokens one iteration can hold (sizes the activation workspace)."""
        return max(int(getattr(self, "max_num_batched_tokens", max_prompt)), max_prompt)

    #: whether each decode-only step decays SGLang's new-token ratio (see :meth:`quiet_decode`)
    decays_token_ratio: ClassVar[bool] = False

    def quiet_decode(self, engine: ServingEngine, rep: Replica) -> bool:
        """Whether, while every sequence running on ``rep`` decodes, the policy's next iterations are one decode
        step of them all with no prompt joining -- so the engine may advance such a run at once. False (the
        default) keeps every iteration a scheduling step."""
        return False

    def next_batch(self, engine: ServingEngine, rep: Replica) -> Batch:
        """The next iteration's prefill chunks and decodes on ``rep`` (iteration-level policies)."""
        raise NotImplementedError(f"{type(self).__name__} must implement next_batch or step")

    def step(self, engine: ServingEngine, rep: Replica) -> Generator:
        """One scheduling step of ``rep``: run the next iteration, or wait for work."""
        prefill, decodes = self.next_batch(engine, rep)
        yield from engine.run_batch(rep, prefill, decodes)


class RequestLevelBatching(BatchingPolicy):
    """Base of request-level policies: a batch is formed, prefilled and decoded to its end, then the next.

    Subclasses say which candidate batches to try (:meth:`groups`) and their size limits.
    """

    max_wait_s: float = Field(default=0.5, ge=0)

    @property
    def size_limits(self) -> tuple[int, int]:
        """(largest batch, smallest batch that starts before ``max_wait_s``)."""
        raise NotImplementedError

    def groups(self, waiting: list[Seq]) -> list[list[Seq]]:
        """Candidate batches in the order they are tried."""
        return [list(waiting)]

    def step(self, engine: ServingEngine, rep: Replica) -> Generator:  # noqa: D102 - see BatchingPolicy
        yield from engine.static_batch(rep, self)


@register_batching
class StaticBatching(RequestLevelBatching):
    """Request-level batching: wait for ``batch_size`` requests (or ``max_wait_s``), prefill them
    together, decode until the whole batch is done; nobody joins a running batch."""

    kind: Literal["static"] = "static"
    batch_size: int = Field(default=8, gt=0)
    max_wait_s: float = Field(default=0.5, ge=0)

    batch_limit_field: ClassVar[str] = "batch_size"

    @property
    def size_limits(self) -> tuple[int, int]:  # noqa: D102 - see RequestLevelBatching
        return self.batch_size, self.batch_size

    def max_iteration_tokens(self, max_prompt: int) -> int:  # noqa: D102 - see BatchingPolicy
        return self.batch_size * max_prompt


@register_batching
class BucketedBatching(RequestLevelBatching):
    """Dynamic length-bucketed batching: requests wait in ``num_buckets`` bins of ``bucket_width``
    prompt tokens; a bin runs as a static batch once it holds ``min_batch`` requests (up to
    ``max_batch``) or its oldest request has waited ``max_wait_s``."""

    kind: Literal["bucketed"] = "bucketed"
    bucket_width: int = Field(default=256, gt=0)
    num_buckets: int = Field(default=8, gt=0)
    min_batch: int = Field(default=4, gt=0)
    max_batch: int = Field(default=32, gt=0)
    max_wait_s: float = Field(default=0.2, ge=0)

    batch_limit_field: ClassVar[str] = "max_batch"

    @model_validator(mode="after")
    def _check(self) -> BucketedBatching:
        if self.min_batch > self.max_batch:
            raise ClusterSimError(f"batching.min_batch={self.min_batch} exceeds max_batch={self.max_batch}")
        return self

    @property
    def size_limits(self) -> tuple[int, int]:  # noqa: D102 - see RequestLevelBatching
        return self.max_batch, self.min_batch

    def groups(self, waiting: list[Seq]) -> list[list[Seq]]:
        """One candidate batch per prompt-length bucket, the bucket with the oldest request first."""
        buckets: dict[int, list[Seq]] = {}
        for s in waiting:
            b = min(s.prompt // self.bucket_width, self.num_buckets - 1)
            buckets.setdefault(b, []).append(s)
        return sorted(buckets.values(), key=lambda g: g[0].arrival)

    def max_iteration_tokens(self, max_prompt: int) -> int:  # noqa: D102 - see BatchingPolicy
        return self.max_batch * min(max_prompt, self.bucket_width * self.num_buckets)


@register_batching
class ContinuousBatching(BatchingPolicy):
    """Iteration-level batching (Orca, vLLM): finished sequences leave and waiting ones join every
    iteration; a new request's whole prompt is prefilled in one iteration (prefills first)."""

    kind: Literal["continuous"] = "continuous"
    max_num_seqs: int = Field(default=256, gt=0)
    max_num_batched_tokens: int = Field(default=8192, gt=0)
    num_scheduler_steps: int = Field(
        default=1,
        ge=1,
        le=64,
        description="decode steps run per scheduling decision (vLLM V0 multi-step scheduling, "
        "--num-scheduler-steps): the CPU step is paid once per block and new prompts wait for its end",
    )

    def next_batch(self, engine: ServingEngine, rep: Replica) -> Batch:  # noqa: D102 - see BatchingPolicy
        return engine.continuous_batch(rep, self.max_num_seqs, self.max_num_batched_tokens)

    def quiet_decode(self, engine: ServingEngine, rep: Replica) -> bool:  # noqa: D102 - see BatchingPolicy
        return self.num_scheduler_steps == 1 and engine.admission_blocked(rep, self.max_num_seqs)

    def step(self, engine: ServingEngine, rep: Replica) -> Generator:  # noqa: D102 - see BatchingPolicy
        prefill, decodes = self.next_batch(engine, rep)
        yield from engine.run_batch(rep, prefill, decodes)
        if decodes and not prefill and self.num_scheduler_steps > 1:
            yield from engine.multi_step(rep, decodes, self.num_scheduler_steps - 1)


@register_batching
class ChunkedPrefill(BatchingPolicy):
    """Sarathi-Serve: each iteration has a ``token_budget``; running decodes take one token each and
    the rest of the budget prefills waiting prompts in chunks, so long prompts never stall decodes."""

    kind: Literal["chunked"] = "chunked"
    max_num_seqs: int = Field(default=256, gt=0)
    token_budget: int = Field(default=512, gt=0)
    chunk_prompts: bool = Field(
        default=True,
        description="split prompts to fill the budget; False: a prompt joins only when it fits whole (TRT-LLM "
        "in-flight batching without chunked context)",
    )

    def max_iteration_tokens(self, max_prompt: int) -> int:  # noqa: D102 - see BatchingPolicy
        return self.token_budget if self.chunk_prompts else max(self.token_budget, max_prompt)

    def next_batch(self, engine: ServingEngine, rep: Replica) -> Batch:  # noqa: D102 - see BatchingPolicy
        return engine.chunked_batch(rep, self.max_num_seqs, self.token_budget, self.chunk_prompts)

    def quiet_decode(self, engine: ServingEngine, rep: Replica) -> bool:  # noqa: D102 - see BatchingPolicy
        return engine.admission_blocked(rep, self.max_num_seqs, self.token_budget, self.chunk_prompts)


@register_batching
class PrefillFirst(BatchingPolicy):
    """SGLang's scheduler: whenever prompts wait and fit, the iteration is a prefill-only batch of up to
    ``chunk_size`` prompt tokens (longer prompts split over iterations, the partial one continued first);
    otherwise every running request decodes one token. Prefill and decode never share an iteration."""

    kind: Literal["prefill_first"] = "prefill_first"
    max_num_seqs: int = Field(default=4096, gt=0, description="SGLang --max-running-requests")
    chunk_size: int = Field(default=8192, gt=0, description="SGLang --chunked-prefill-size")

    def max_iteration_tokens(self, max_prompt: int) -> int:  # noqa: D102 - see BatchingPolicy
        return self.chunk_size

    def next_batch(self, engine: ServingEngine, rep: Replica) -> Batch:  # noqa: D102 - see BatchingPolicy
        return engine.prefill_first_batch(rep, self.max_num_seqs, self.chunk_size)

    decays_token_ratio: ClassVar[bool] = True

    def quiet_decode(self, engine: ServingEngine, rep: Replica) -> bool:  # noqa: D102 - see BatchingPolicy
        # a waiting prompt's admission rests on a reserve that shrinks every decode step: quiet only when full
        return engine.admission_blocked(rep, self.max_num_seqs, full_only=True)


@register_batching
class DisaggregatedServing(BatchingPolicy):
    """Separate prefill and decode pools (Splitwise, DistServe): prompts run on prefill replicas, the
    KV cache moves over ``link`` to a decode replica, which batches decodes continuously."""

    kind: Literal["disaggregated"] = "disaggregated"
    prefill_replicas: int = Field(default=1, gt=0)
    decode_replicas: int = Field(default=1, gt=0)
    max_num_seqs: int = Field(default=256, gt=0)
    max_num_batched_tokens: int = Field(default=8192, gt=0)
    link: str = Field(default="ib-ndr", description="link class for the KV transfer (`clustersim nodes`)")

    def replica_roles(self, replicas: int) -> list[str]:
        """``prefill_replicas`` prefill pools and ``decode_replicas`` decode pools (``replicas`` is ignored)."""
        return ["prefill"] * self.prefill_replicas + ["decode"] * self.decode_replicas

    def next_batch(self, engine: ServingEngine, rep: Replica) -> Batch:  # noqa: D102 - see BatchingPolicy
        return engine.continuous_batch(rep, self.max_num_seqs, self.max_num_batched_tokens)

    def quiet_decode(self, engine: ServingEngine, rep: Replica) -> bool:  # noqa: D102 - see BatchingPolicy
        return engine.admission_blocked(rep, self.max_num_seqs)

    def setup(self, engine: ServingEngine) -> None:
        """The KV cache moves from prefill to decode replicas over ``link``."""
        engine.kv_link_bytes_s = get_link(self.link).effective_bandwidth_bytes_per_s
