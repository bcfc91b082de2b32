"""Power over a simulated timeline: what each GPU draws, interval by interval, for plotting.

The energy model (:mod:`hwmodels.power`, :mod:`simulator.energy.accounting`) integrates power over a window
without drawing it: active-idle power for the whole window plus activity terms for the time kernels
run. This module spreads that energy back over the timeline so it can be drawn, in three levels
per GPU: between kernels the board's active-idle power; during the collectives that run inline with
the compute (tp, cp, ep) active idle plus the SM-activity term, which the model charges for any
kernel; during compute the rank's *average compute power*, which carries the rest of the rank's
energy (the math and HBM terms). Pipeline sends (pp) overlap other work and the gradient sync (dp)
is not counted as busy, as in the energy model, so the busy time here is the one the energy was
computed with.

A training result carries each pipeline rank's energy (``power["gpu_j_per_rank"]``), used as is.
Otherwise (serving, older results) only the sum and the hottest GPU's average power are known, so the
hottest rank gets exactly that average and the other ranks share the rest of the activity energy
(above active idle) in proportion to busy time x clock ratio^(k-1), the clock scaling of the math
term that dominates it. The trace therefore integrates to the result's GPU energy (to rounding) and
its hottest rank to the reported average power, but the split between the other ranks, and the
placement of a collective's HBM energy in the compute around it, are a model of the model: a
*rank-average power while busy*, not an instantaneous draw. In ``tdp`` mode every GPU draws its TDP
for the whole window, as that bookkeeping assumes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hwmodels.errors import ClusterSimError
from hwmodels.profile import Profile, load_profile

#: Timeline streams that are not GPU busy time in the energy model (overlapped sends, gradient sync, host-side
#: work the GPU waits on: CPU Adam, garbage-collection pauses).
NOT_BUSY_STREAMS = ("pp", "dp", "host")


@dataclass(frozen=True)
class RankPower:
    """One pipeline rank (training) or replica (serving): each of its GPUs' draw over the window."""

    rank: int
    gpus: float  # GPUs this rank stands for (data-parallel copies, or a replica's tp x pp)
    busy: tuple[tuple[float, float], ...]  # merged compute intervals, s
    busy_w: float  # per GPU while computing (the rank average)
    idle_w: float  # per GPU between kernels (active idle)
    energy_j: float  # per GPU over the window
    comm: tuple[tuple[float, float], ...] = ()  # inline collectives (tp, cp, ep) outside compute, s
    comm_w: float = 0.0  # per GPU during them

    @property
    def busy_s(self) -> float:
        """Seconds this rank computes in the window."""
        return sum(end - start for start, end in self.busy)

    @property
    def comm_s(self) -> float:
        """Seconds of inline collectives outside compute in the window."""
        return sum(end - start for start, end in self.comm)


@dataclass(frozen=True)
class PowerTrace:
    """Per-GPU power of every rank over one training step or one serving run."""

    kind: str  # "training" or "serving"
    mode: str  # "modelled" or "tdp"
    start_s: float
    end_s: float
    ranks: tuple[RankPower, ...]

    @property
    def seconds(self) -> float:
        """Length of the window, s."""
        return self.end_s - self.start_s

    def gpu_energy_j(self) -> float:
        """Energy of all GPUs over the window (J): the result's ``energy_j['gpu']``."""
        return sum(r.energy_j * r.gpus for r in self.ranks)

    def segments(self, rank: RankPower) -> list[tuple[float, float, float]]:
        """``(start_s, end_s, watts)`` covering the window: busy intervals and the idle gaps between them."""
        out: list[tuple[float, float, float]] = []
        t = self.start_s
        levels = sorted([(s, e, rank.busy_w) for s, e in rank.busy] + [(s, e, rank.comm_w) for s, e in rank.comm])
        for start, end, watts in levels:
            if start > t:
                out.append((t, start, rank.idle_w))
            out.append((start, end, watts))
            t = end
        if t < self.end_s:
            out.append((t, self.end_s, rank.idle_w))
        return out

    def integral_j(self, rank: RankPower) -> float:
        """The trace of one GPU of ``rank`` integrated over the window (J)."""
        return sum((end - start) * watts for start, end, watts in self.segments(rank))

    def binned(self, rank: RankPower, bins: int) -> tuple[list[float], list[float]]:
        """Average power of ``rank`` in ``bins`` equal time bins: (bin start times, watts)."""
        if bins < 1:
            raise ClusterSimError(f"bins={bins} must be >= 1")
        width = self.seconds / bins
        if width <= 0:
            return [self.start_s], [rank.idle_w]
        extra = [0.0] * bins  # J above active idle in each bin
        for intervals, watts in ((rank.busy, rank.busy_w), (rank.comm, rank.comm_w)):
            for start, end in intervals:
                first = max(0, min(bins - 1, int((start - self.start_s) / width)))
                last = max(0, min(bins - 1, int((end - self.start_s) / width)))
                for b in range(first, last + 1):
                    lo, hi = self.start_s + b * width, self.start_s + (b + 1) * width
                    extra[b] += max(0.0, min(end, hi) - max(start, lo)) * (watts - rank.idle_w)
        times = [self.start_s + b * width for b in range(bins)]
        return times, [rank.idle_w + j / width for j in extra]

    def to_frame(self) -> Any:
        """One row per segment: rank, start_s, end_s, power_w (pandas imported here only)."""
        import pandas as pd

        rows = [
            {"rank": r.rank, "start_s": s, "end_s": e, "power_w": w} for r in self.ranks for s, e, w in self.segments(r)
        ]
        return pd.DataFrame(rows, columns=["rank", "start_s", "end_s", "power_w"])


def _merge(intervals: Iterable[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Sorted union of ``intervals``, empty ones dropped."""
    out: list[list[float]] = []
    for start, end in sorted(intervals):
        if end <= start:
            continue
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return tuple((s, e) for s, e in out)


def _subtract(
    intervals: tuple[tuple[float, float], ...], cut: tuple[tuple[float, float], ...]
) -> tuple[tuple[float, float], ...]:
    """Merged ``intervals`` minus merged ``cut``."""
    out = []
    for start, end in intervals:
        t = start
        for c0, c1 in cut:
            if c1 <= t or c0 >= end:
                continue
            if c0 > t:
                out.append((t, c0))
            t = max(t, c1)
        if t < end:
            out.append((t, end))
    return tuple(out)


def power_trace(result: Any, profile: Profile | str | None = None) -> PowerTrace:
    """Per-GPU power over a TrainingResult's step or a ServingResult's run (see the module docstring).

    ``profile`` gives the power parameters (default: the GPU's profile, as the simulation used).
    """
    timeline = getattr(result, "timeline", None)
    if timeline is None or not len(timeline):
        raise ClusterSimError("the result carries no timeline to draw power over")
    prof = load_profile(profile, gpu=result.gpu)
    p = prof.power
    power = result.power or {}
    mode = str(power.get("mode", "modelled"))
    events = timeline.events
    training = hasattr(result, "step_time_s")
    rank_ids, clocks, start_s, end_s = _window(result, events, power, p.max_sm_clock_mhz)
    seconds = end_s - start_s
    if not seconds > 0:
        raise ClusterSimError("the result's window is empty; nothing to draw")
    gpus = result.num_gpus / len(rank_ids)
    compute, inline = _rank_intervals(events, rank_ids)
    per_gpu_total = float(result.energy_j["gpu"]) / gpus  # sum over ranks of one GPU's energy
    kind = "training" if training else "serving"
    if mode == "tdp":
        watts = per_gpu_total / len(rank_ids) / seconds
        ranks = [RankPower(r, gpus, compute[r], watts, watts, watts * seconds, inline[r], watts) for r in rank_ids]
        return PowerTrace(kind, mode, start_s, end_s, tuple(ranks))
    idle = p.active_idle_w
    k = p.clock_power_exponent
    ratio = {r: min(1.0, c / p.max_sm_clock_mhz) for r, c in zip(rank_ids, clocks, strict=True)}
    busy_s = {r: sum(e - s for s, e in compute[r] + inline[r]) for r in rank_ids}
    weight = {r: busy_s[r] * ratio[r] ** (k - 1.0) for r in rank_ids}
    energy = _rank_energies(power, rank_ids, weight, per_gpu_total, idle, seconds)
    ranks = []
    for r in rank_ids:
        active = energy[r] - idle * seconds  # J above active idle
        compute_s = sum(e - s for s, e in compute[r])
        busy_w, comm_w = _busy_and_comm_w(idle, p.sm_active_w * ratio[r] ** k, active, compute_s, busy_s[r])
        used = (busy_w - idle) * compute_s + (comm_w - idle) * (busy_s[r] - compute_s)
        ranks.append(RankPower(r, gpus, compute[r], busy_w, idle, idle * seconds + used, inline[r], comm_w))
    return PowerTrace(kind, mode, start_s, end_s, tuple(ranks))


def _window(
    result: Any, events: Sequence[tuple], power: dict[str, Any], max_clock_mhz: float
) -> tuple[list[int], list[float], float, float]:
    """Ranks, each rank's SM clock (MHz) and the window's start and end (s) of a training or serving result."""
    if hasattr(result, "step_time_s"):  # training: one step, one clock per pipeline rank
        clocks = power.get("sm_clock_mhz") or [max_clock_mhz]
        clocks = list(clocks) if isinstance(clocks, list | tuple) else [clocks]
        return list(range(len(clocks))), clocks, 0.0, float(result.step_time_s)
    rank_ids = sorted({e[2] for e in events})
    clock = power.get("sm_clock_mhz") or max_clock_mhz
    end_s = max(e[1] for e in events)
    return rank_ids, [clock] * len(rank_ids), end_s - float(result.duration_s), end_s


def _rank_intervals(
    events: Sequence[tuple], rank_ids: list[int]
) -> tuple[dict[int, tuple[tuple[float, float], ...]], dict[int, tuple[tuple[float, float], ...]]]:
    """Per rank: merged compute intervals, and inline collectives (busy streams other than compute) outside them."""
    compute = {r: _merge((e[0], e[1]) for e in events if e[2] == r and e[3] == "compute") for r in rank_ids}
    inline = {
        r: _subtract(
            _merge((e[0], e[1]) for e in events if e[2] == r and e[3] not in NOT_BUSY_STREAMS + ("compute",)),
            compute[r],
        )
        for r in rank_ids
    }
    return compute, inline


def _rank_energies(
    power: dict[str, Any],
    rank_ids: list[int],
    weight: dict[int, float],
    per_gpu_total: float,
    idle: float,
    seconds: float,
) -> dict[int, float]:
    """One GPU's energy (J) per rank (``idle`` in W): the result's own split if it has one, else by ``weight``.

    Without a per-rank split the hottest rank gets the reported average power where that is consistent.
    """
    energy = _split(per_gpu_total, idle * seconds, weight)
    hottest_w = power.get("avg_gpu_power_w")
    exact = power.get("gpu_j_per_rank")
    if exact is not None and len(exact) == len(rank_ids):  # training results carry each rank's energy
        energy = {r: float(e) for r, e in zip(rank_ids, exact, strict=True)}
    elif hottest_w is not None and len(rank_ids) > 1:  # the hottest rank's average is known exactly
        hot = max(rank_ids, key=lambda r: energy[r])
        rest = {r: w for r, w in weight.items() if r != hot}
        rest_total = per_gpu_total - float(hottest_w) * seconds
        if rest_total >= idle * seconds * len(rest) * (1 - 1e-9) and float(hottest_w) >= idle:
            energy = {hot: float(hottest_w) * seconds, **_split(rest_total, idle * seconds, rest)}
    return energy


def _busy_and_comm_w(idle: float, sm_w: float, active: float, compute_s: float, busy_s: float) -> tuple[float, float]:
    """Per-GPU W while computing and during inline collectives, sharing ``active`` J above idle over the busy time.

    Collectives draw idle plus the SM-activity term ``sm_w`` (capped at the rank average); compute carries the rest.
    """
    comm_s = busy_s - compute_s
    comm_w = idle + min(sm_w, active / busy_s if busy_s > 0 else 0.0)
    if compute_s > 0:
        busy_w = idle + (active - (comm_w - idle) * comm_s) / compute_s
    else:  # nothing but collectives: they carry it all
        comm_w = idle + (active / comm_s if comm_s > 0 else 0.0)
        busy_w = idle
    return busy_w, comm_w


def _split(total_j: float, idle_j: float, weight: dict[int, float]) -> dict[int, float]:
    """``total_j`` over ranks: ``idle_j`` each plus the rest in proportion to ``weight``."""
    active = max(0.0, total_j - idle_j * len(weight))
    total_weight = sum(weight.values())
    if total_weight <= 0:
        return {r: total_j / len(weight) for r in weight}
    return {r: idle_j + active * w / total_weight for r, w in weight.items()}
