"""Pipeline schedules: which micro-batch chunk each rank runs next.

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
"""

from __future__ import annotations

from dataclasses import dataclass

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
        return 2 if self.dual else self.vpp

    def direction(self, mb: int) -> int:
        return int(self.dual and mb >= self.num_microbatches // 2)

    def rank(self, mb: int, pos: int) -> int:
        if self.dual:
            return pos if self.direction(mb) == 0 else self.pp - 1 - pos
        return pos % self.pp

    def local_chunk(self, mb: int, pos: int) -> int:
        """Index of the chunk on its rank (0..chunks_per_rank-1)."""
        return self.direction(mb) if self.dual else pos // self.pp

    def model_chunk(self, mb: int, pos: int) -> int:
        """Which slice of the model (in model order) the position runs."""
        return pos


def gpipe(layout: Layout, rank: int) -> list[Task]:
    m = layout.num_microbatches
    return [("F", i, rank) for i in range(m)] + [("B", i, rank) for i in range(m)]


def one_f_one_b(layout: Layout, rank: int) -> list[Task]:
    m, pp = layout.num_microbatches, layout.pp
    warmup = min(pp - rank - 1, m)
    order: list[Task] = [("F", i, rank) for i in range(warmup)]
    for i in range(m - warmup):
        order += [("F", warmup + i, rank), ("B", i, rank)]
    order += [("B", i, rank) for i in range(m - warmup, m)]
    return order


def interleaved(layout: Layout, rank: int) -> list[Task]:
    """Megatron-LM's interleaved 1F1B order for ``rank`` (forward_backward_pipelining_with_interleaving)."""
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
    order += [bwd(k) for k in range(total - warmup, total)]
    return order


STATIC = {"gpipe": gpipe, "1f1b": one_f_one_b, "interleaved": interleaved}
DYNAMIC = ("zero-bubble", "dualpipe")


def make_layout(schedule: str, pp: int, vpp: int, num_microbatches: int) -> Layout:
    """Validate the schedule's requirements and return its layout."""
    if schedule == "interleaved" and num_microbatches % pp:
        raise ClusterSimError(
            f"the interleaved schedule needs micro-batches per step ({num_microbatches}) divisible by pp={pp}; "
            "change training.global_batch or training.micro_batch"
        )
    if schedule == "dualpipe":
        if pp % 2 or num_microbatches % 2 or num_microbatches < pp:
            raise ClusterSimError(
                f"dualpipe needs an even pp (got {pp}) and an even number of micro-batches >= pp "
                f"(got {num_microbatches})"
            )
        return Layout(pp, 1, num_microbatches, dual=True)
    return Layout(pp, vpp if schedule == "interleaved" else 1, num_microbatches)


def rank_tasks(layout: Layout, rank: int, split_weight: bool) -> list[Task]:
    """Every task a rank must run (used by the dynamic schedules)."""
    tasks: list[Task] = []
    for mb in range(layout.num_microbatches):
        for pos in range(layout.positions):
            if layout.rank(mb, pos) == rank:
                tasks += [("F", mb, pos), ("B", mb, pos)] + ([("W", mb, pos)] if split_weight else [])
    return tasks
