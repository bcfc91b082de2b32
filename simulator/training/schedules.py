"""Pipeline schedules: which micro-batch chunk each rank runs next (a registry: one class per schedule).

A micro-batch follows a *route* of positions (model chunks in order); position ``k`` lives on one
rank. Tasks are ``(kind, microbatch, position)`` with kind ``F`` (forward), ``B`` (backward; input
gradients only when the schedule splits out ``W``) and ``W`` (weight gradients).

Static schedules give each rank a fixed task order, exactly as the frameworks lay them out:

* ``gpipe``: all forwards, then all backwards (Huang et al. 2019).
* ``1f1b``: ``pp - rank - 1`` warm-up forwards, then one-forward-one-backward, then cool-down
  (PipeDream-Flush / Megatron-LM, Narayanan et al. 2021).
* ``interleaved``: Megatron-LM's virtual pipeline: ``vpp`` chunks per rank, micro-batches in
  groups of ``pp``, ``2(pp - rank - 1) + (vpp - 1) pp`` warm-up forwards.

Dynamic schedules pick the next task at run time from what is ready, deterministically:

* ``zero-bubble`` (ZB-H1, Qi et al. 2024): backward split into B and W; a rank runs a ready B
  first, else a forward while it holds fewer than ``pp - rank`` in-flight micro-batches (1F1B's
  memory), else a deferred W, so W fills what would be bubbles.
* ``dualpipe`` (DeepSeek-V3 report, sec. 3.2.1): two copies of the model, micro-batches fed from
  both ends (half in each direction); rank ``r`` holds position ``r`` of the forward-direction
  pipeline and position ``pp-1-r`` of the reverse one. B/W are split as in zero-bubble, and a
  ready forward and backward of the two directions run as one overlapped pair, which hides the
  communication of each under the other's compute.

Adding a schedule is one subclass of :class:`Schedule` decorated with :func:`register_schedule`, in
this file or any other module: the config check, the engine, the memory model, the plan search and
the app's list all read the registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from hwmodels.errors import ClusterSimError

Task = tuple[str, int, int]  # (kind, microbatch, position)


@dataclass(frozen=True)
class Layout:
    """Where every route position lives and which chunk of the rank's model it runs."""

    pp: int
    vpp: int
    num_microbatches: int
    dual: bool = False

    @property
    def positions(self) -> int:
        """Route length: chunks a micro-batch passes through."""
        return self.pp if self.dual else self.pp * self.vpp

    @property
    def chunks_per_rank(self) -> int:
        """Model chunks each rank holds."""
        return 2 if self.dual else self.vpp

    def direction(self, mb: int) -> int:
        """Route direction of micro-batch ``mb``: 0, or 1 for DualPipe's second half."""
        return int(self.dual and mb >= self.num_microbatches // 2)

    def rank(self, mb: int, pos: int) -> int:
        """Pipeline rank that runs route position ``pos`` of micro-batch ``mb``."""
        if self.dual:
            return pos if self.direction(mb) == 0 else self.pp - 1 - pos
        return pos % self.pp

    def local_chunk(self, mb: int, pos: int) -> int:
        """Index of the chunk on its rank (0..chunks_per_rank-1)."""
        return self.direction(mb) if self.dual else pos // self.pp

    def ranks(self, mb: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """:meth:`rank` of many (micro-batch, position) pairs at once (override both together)."""
        if self.dual:
            return np.where(mb >= self.num_microbatches // 2, self.pp - 1 - pos, pos)
        return pos % self.pp

    def local_chunks(self, mb: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """:meth:`local_chunk` of many (micro-batch, position) pairs at once (override both together)."""
        if self.dual:
            return (mb >= self.num_microbatches // 2).astype(np.int64)
        return pos // self.pp

    def model_chunk(self, mb: int, pos: int) -> int:
        """Which slice of the model (in model order) the position runs."""
        return pos


# ---- the registry ----------------------------------------------------------------------------------

SCHEDULES: dict[str, Schedule] = {}


def register_schedule(cls: type[Schedule]) -> type[Schedule]:
    """Class decorator: add a schedule to the registry under ``cls.name`` (duplicate names are refused)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    if cls.name in SCHEDULES:
        raise ValueError(f"a pipeline schedule named {cls.name!r} is already registered")
    SCHEDULES[cls.name] = cls()
    return cls


def get_schedule(name: str) -> Schedule:
    """The registered schedule called ``name`` (a one-line error lists the known ones)."""
    try:
        return SCHEDULES[name]
    except (KeyError, TypeError):
        raise ClusterSimError(f"unknown pipeline schedule {name!r}; use one of: {', '.join(SCHEDULES)}") from None


def schedule_names() -> tuple[str, ...]:
    """Registered schedule names, in registration order (the app's and the search's list)."""
    return tuple(SCHEDULES)


@dataclass(frozen=True)
class StageAggregate:
    """A pipeline in the few numbers the closed-form schedule models need (seconds per micro-batch)."""

    smax: float  # slowest rank's forward + backward
    ssum: float  # all ranks' forward + backward
    fb_mean: float  # mean rank forward + input-gradient backward
    w_mean: float  # mean rank weight-gradient backward
    f_mean: float  # mean chunk forward
    drain: float  # backwards the last rank finishes before the first (all but the last rank)
    pair_work: np.ndarray | None = None  # dual schedules: per-rank mean chunk work
    pair_hidden: np.ndarray | None = None  # dual schedules: per-rank communication an F/B pair hides


class Schedule:
    """A pipeline schedule: its layout rule, task order, in-flight activations and closed-form step time.

    Subclass, set ``name`` and decorate with :func:`register_schedule`; the engine, the memory model,
    the plan search, the config check and the app all read the registry. A static schedule returns a
    task order from :meth:`order`; a dynamic one returns None and the engine picks ready tasks at run
    time (B first, else a forward inside the 1F1B activation budget, else a deferred W).
    """

    name: ClassVar[str] = ""
    split_weight: ClassVar[bool] = False  # weight gradients run as separate W tasks
    interleaved: ClassVar[bool] = False  # runs vpp > 1 model chunks per rank
    dual: ClassVar[bool] = False  # two model copies fed from both ends (DualPipe)
    all_forwards_first: ClassVar[bool] = False  # every forward precedes every backward (GPipe)

    def rule(self, pp: int, vpp: int, num_microbatches: int) -> str | None:
        """Why this schedule cannot run the pipeline (a short reason the plan search counts), or None."""
        return None

    def layout(self, pp: int, vpp: int, num_microbatches: int) -> Layout:
        """Validate the schedule's requirements (one-line error) and return its layout."""
        return Layout(pp, vpp if self.interleaved else 1, num_microbatches)

    def order(self, layout: Layout, rank: int) -> list[Task] | None:
        """The fixed task order of ``rank``; None for a dynamic schedule."""
        return None

    def inflight(self, rank: int, pp: int, vpp: int, m: int, weight: float) -> float:
        """Peak micro-batches of activations ``rank`` holds (the engine's ``peak_inflight``, closed form)."""
        return min(pp - rank, m) * weight

    def screen_time(self, a: StageAggregate, pp: int, v: int, m: int, p2p: float) -> tuple[float, float]:
        """(pipeline time of one step, how much earlier the last rank finishes than the first), closed form.

        The steady state runs at the slowest rank; filling and draining the pipeline costs the other
        ranks' work once, divided by the virtual stages (1F1B, GPipe and interleaved).
        """
        hops = 2.0 * (pp - 1) * p2p
        total = m * a.smax + (a.ssum - a.smax) / v + hops * (1.0 + (v - 1) / v)
        return total, a.drain + (pp - 1) * p2p


@register_schedule
class GPipe(Schedule):
    """All forwards, then all backwards (Huang et al. 2019)."""

    name = "gpipe"
    all_forwards_first = True

    def order(self, layout: Layout, rank: int) -> list[Task]:  # noqa: D102 - see Schedule
        m = layout.num_microbatches
        return [("F", i, rank) for i in range(m)] + [("B", i, rank) for i in range(m)]

    def inflight(self, rank: int, pp: int, vpp: int, m: int, weight: float) -> float:  # noqa: D102
        return m * weight


@register_schedule
class OneFOneB(Schedule):
    """PipeDream-Flush / Megatron-LM 1F1B: ``pp - rank - 1`` warm-up forwards, then alternate, then cool down."""

    name = "1f1b"

    def order(self, layout: Layout, rank: int) -> list[Task]:  # noqa: D102 - see Schedule
        m, pp = layout.num_microbatches, layout.pp
        warmup = min(pp - rank - 1, m)
        order: list[Task] = [("F", i, rank) for i in range(warmup)]
        for i in range(m - warmup):
            order += [("F", warmup + i, rank), ("B", i, rank)]
        return order + [("B", i, rank) for i in range(m - warmup, m)]


@register_schedule
class Interleaved(Schedule):
    """Megatron-LM's interleaved 1F1B (forward_backward_pipelining_with_interleaving): vpp chunks per rank."""

    name = "interleaved"
    interleaved = True

    def rule(self, pp: int, vpp: int, num_microbatches: int) -> str | None:  # noqa: D102 - see Schedule
        return "interleaving needs micro-batches divisible by pp" if num_microbatches % pp else None

    def layout(self, pp: int, vpp: int, num_microbatches: int) -> Layout:  # noqa: D102 - see Schedule
        if num_microbatches % pp:
            raise ClusterSimError(
                f"the interleaved schedule needs micro-batches per step ({num_microbatches}) divisible by pp={pp}; "
                "change training.global_batch or training.micro_batch"
            )
        return Layout(pp, vpp, num_microbatches)

    def order(self, layout: Layout, rank: int) -> list[Task]:  # noqa: D102 - see Schedule
        m, pp, v = layout.num_microbatches, layout.pp, layout.vpp
        total = m * v

        def mb_of(k: int) -> int:
            return (k // (pp * v)) * pp + k % pp

        def fwd(k: int) -> Task:
            return ("F", mb_of(k), ((k // pp) % v) * pp + rank)

        def bwd(k: int) -> Task:
            return ("B", mb_of(k), (v - 1 - (k // pp) % v) * pp + rank)

        warmup = min((pp - rank - 1) * 2 + (v - 1) * pp, total)
        order = [fwd(k) for k in range(warmup)]
        for i in range(total - warmup):
            order += [fwd(warmup + i), bwd(i)]
        return order + [bwd(k) for k in range(total - warmup, total)]

    def inflight(self, rank: int, pp: int, vpp: int, m: int, weight: float) -> float:  # noqa: D102
        warmup = min(2 * (pp - rank - 1) + (vpp - 1) * pp, m * vpp)
        return min(warmup + 1, m * vpp) / vpp


@register_schedule
class ZeroBubble(Schedule):
    """ZB-H1 (Qi et al. 2024): W deferred to fill the 1F1B bubble, with 1F1B's activation memory."""

    name = "zero-bubble"
    split_weight = True

    def screen_time(self, a: StageAggregate, pp: int, v: int, m: int, p2p: float) -> tuple[float, float]:
        """Deferred weight gradients fill the 1F1B bubble once there are enough micro-batches."""
        bubble = max(0.0, (pp - 1) * a.fb_mean - min(m - 1, pp - 1) * a.w_mean)
        return m * a.smax + bubble + 2.0 * (pp - 1) * p2p, 0.0


@register_schedule
class DualPipe(Schedule):
    """DeepSeek-V3's DualPipe (report sec. 3.2.1): two model copies fed from both ends, F/B pairs overlapped."""

    name = "dualpipe"
    split_weight = True
    dual = True

    def rule(self, pp: int, vpp: int, num_microbatches: int) -> str | None:  # noqa: D102 - see Schedule
        m = num_microbatches
        bad = pp % 2 or m % 2 or m < pp
        return "dualpipe needs an even pp and an even number of micro-batches >= pp" if bad else None

    def layout(self, pp: int, vpp: int, num_microbatches: int) -> Layout:  # noqa: D102 - see Schedule
        if self.rule(pp, vpp, num_microbatches):
            raise ClusterSimError(
                f"dualpipe needs an even pp (got {pp}) and an even number of micro-batches >= pp "
                f"(got {num_microbatches})"
            )
        return Layout(pp, 1, num_microbatches, dual=True)

    def inflight(self, rank: int, pp: int, vpp: int, m: int, weight: float) -> float:  # noqa: D102
        return float(min(pp - rank, m // 2) + min(rank + 1, m // 2)) * weight

    def screen_time(self, a: StageAggregate, pp: int, v: int, m: int, p2p: float) -> tuple[float, float]:
        """Rank r runs chunk r of one direction and pp-1-r of the other, m/2 micro-batches each.

        A forward and a backward of opposite directions run as one task that hides their communication,
        which the engine manages for about m - 3 pp micro-batches; filling the two pipelines from both
        ends leaves about (pp/2 - 1) forwards of bubble.
        """
        assert a.pair_work is not None and a.pair_hidden is not None
        per_rank = m * a.pair_work - max(0, m - 3 * pp) * a.pair_hidden
        return float(per_rank.max()) + (pp / 2 - 1) * a.f_mean + 2.0 * (pp - 1) * p2p, 0.0


def make_layout(schedule: str, pp: int, vpp: int, num_microbatches: int) -> Layout:
    """Validate the schedule's requirements and return its layout."""
    return get_schedule(schedule).layout(pp, vpp, num_microbatches)


def rank_tasks(layout: Layout, rank: int, split_weight: bool) -> list[Task]:
    """Every task a rank must run (used by the dynamic schedules)."""
    tasks: list[Task] = []
    for mb in range(layout.num_microbatches):
        for pos in range(layout.positions):
            if layout.rank(mb, pos) == rank:
                tasks += [("F", mb, pos), ("B", mb, pos)] + ([("W", mb, pos)] if split_weight else [])
    return tasks
