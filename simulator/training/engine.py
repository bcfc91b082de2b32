"""The SimPy pipeline engine: one representative pipeline of ranks, exactly scheduled.

Data-parallel replicas of a pipeline behave alike, so one pipeline (all its stages) is simulated
and the DP collectives are charged afterwards from the cost model (see :mod:`simulator.training`).
Each rank is a SimPy process that runs its chunk tasks in the order its schedule dictates (or
picks them at run time for the dynamic schedules); activations and gradients travel between
ranks over point-to-point links that are SimPy resources, so transfers that share a link queue.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import simpy

from simulator.training.plan import ChunkCost, Phase
from simulator.training.schedules import Layout, Task, get_schedule, rank_tasks

#: timeline record: (start_s, end_s, rank, stream, name, phase, microbatch, chunk)
Event = tuple[float, float, int, str, str, str, int, int]


@dataclass
class RankStats:
    """What one rank did during the pipeline phase."""

    busy_s: float = 0.0
    comm_s: dict[str, float] = field(default_factory=dict)
    pp_wait_s: float = 0.0
    first_start_s: float | None = None
    last_end_s: float = 0.0
    inflight: float = 0.0
    peak_inflight: float = 0.0
    grad_done: dict[int, tuple[float, float]] = field(default_factory=dict)  # local chunk -> last grad task


@dataclass
class PipelineRun:
    """Outcome of the pipeline phase of one step."""

    events: list[Event]
    ranks: list[RankStats]

    @property
    def end_s(self) -> float:
        """When the last rank finishes its pipeline work, seconds."""
        return max(r.last_end_s for r in self.ranks)


class PipelineEngine:
    """Simulates the forward/backward pipeline of one training step."""

    def __init__(self, layout: Layout, chunks: list[ChunkCost], schedule: str, p2p_s: float) -> None:
        self.layout = layout
        self.chunks = chunks
        self.schedule = schedule
        self.split = get_schedule(schedule).split_weight
        self.p2p_s = p2p_s
        self.env = simpy.Environment()
        self.events: list[Event] = []
        self.stats = [RankStats() for _ in range(layout.pp)]
        self.done: dict[Task, simpy.Event] = {}
        self.arrived: dict[Task, simpy.Event] = {}
        self.sent_at: dict[Task, float] = {}
        self.links: dict[tuple[int, int], simpy.Resource] = {}
        self.grad_count: dict[tuple[int, int], int] = {}
        # activations of one chunk, in units of one micro-batch through all of a rank's pipeline stage
        stage_layers = sum(len(c.layers) for c in chunks) / layout.pp
        self.weight = [len(c.layers) / stage_layers for c in chunks]

    # ---- dependencies --------------------------------------------------------------------------
    def _event(self, table: dict[Task, simpy.Event], key: Task) -> simpy.Event:
        ev = table.get(key)
        if ev is None:
            ev = table[key] = self.env.event()
        return ev

    def dep_keys(self, task: Task) -> list[tuple[bool, Task]]:
        """What ``task`` waits for: (is a transfer arrival, the producing task)."""
        kind, mb, pos = task
        if kind == "F":
            return [(True, ("F", mb, pos - 1))] if pos > 0 else []
        if kind == "B":
            own = [(False, ("F", mb, pos))]
            return own + ([(True, ("B", mb, pos + 1))] if pos < self.layout.positions - 1 else [])
        return [(False, ("B", mb, pos))]

    def deps(self, task: Task) -> list[simpy.Event]:
        """The SimPy events ``task`` waits for (see :meth:`dep_keys`)."""
        return [self._event(self.arrived if arr else self.done, key) for arr, key in self.dep_keys(task)]

    def ready(self, task: Task) -> bool:
        """Whether every dependency of ``task`` has happened."""
        return all(ev.triggered for ev in self.deps(task))

    # ---- execution ------------------------------------------------------------------------------
    def phase_of(self, task: Task) -> Phase:
        """The cost of ``task``: its chunk's forward, backward (with weight gradients unless split) or weight phase."""
        kind, _, pos = task
        c = self.chunks[pos]
        if kind == "F":
            return c.forward
        if kind == "B":
            return c.backward if self.split else c.backward + c.weight
        return c.weight

    def _record(self, rank: int, start: float, phase: Phase, name: str, task: Task) -> float:
        kind, mb, pos = task
        chunk = self.layout.local_chunk(mb, pos)
        t = start
        if phase.compute_s > 0:
            self.events.append((t, t + phase.compute_s, rank, "compute", name, kind, mb, chunk))
            t += phase.compute_s
        st = self.stats[rank]
        for comm_kind, secs in phase.comm_s.items():
            if secs > 0:
                self.events.append((t, t + secs, rank, comm_kind, f"{comm_kind} comm", kind, mb, chunk))
                st.comm_s[comm_kind] = st.comm_s.get(comm_kind, 0.0) + secs
                t += secs
        return t - start

    def execute(self, rank: int, tasks: list[Task], phase: Phase) -> Generator:
        """Run one task (or an overlapped F+B pair) on ``rank``."""
        env, st = self.env, self.stats[rank]
        start = env.now
        if st.first_start_s is None:
            st.first_start_s = start
        name = "+".join(f"{k}{mb}.{pos}" for k, mb, pos in tasks)
        dur = self._record(rank, start, phase, name, tasks[0])
        yield env.timeout(dur)
        st.busy_s += dur
        st.last_end_s = env.now
        for task in tasks:
            self._finish(rank, task, start)

    def _finish(self, rank: int, task: Task, start: float) -> None:
        kind, mb, pos = task
        st = self.stats[rank]
        self._event(self.done, task).succeed()
        if kind == "F":
            st.inflight += self.weight[pos]
            st.peak_inflight = max(st.peak_inflight, st.inflight)
            if pos < self.layout.positions - 1:
                self._send(rank, self.layout.rank(mb, pos + 1), task)
        if kind == "B":
            st.inflight -= self.weight[pos]
            if pos > 0:
                self._send(rank, self.layout.rank(mb, pos - 1), task)
        if kind == "W" or (kind == "B" and not self.split):
            key = (rank, self.layout.local_chunk(mb, pos))
            self.grad_count[key] = self.grad_count.get(key, 0) + 1
            if self.grad_count[key] == self._grad_tasks_per_chunk(rank, key[1]):
                st.grad_done[key[1]] = (start, self.env.now)

    def _grad_tasks_per_chunk(self, rank: int, chunk: int) -> int:
        lay = self.layout
        if lay.dual:
            return lay.num_microbatches // 2
        return lay.num_microbatches

    def _send(self, src: int, dst: int, task: Task) -> None:
        ev = self._event(self.arrived, task)
        if src == dst or self.p2p_s <= 0:
            self.sent_at[task] = self.env.now
            ev.succeed()
            return
        self.env.process(self._transfer(src, dst, task, ev))

    def _transfer(self, src: int, dst: int, task: Task, ev: simpy.Event) -> Generator:
        link = self.links.get((src, dst))
        if link is None:
            link = self.links[(src, dst)] = simpy.Resource(self.env, capacity=1)
        with link.request() as req:
            yield req
            start = self.env.now
            self.sent_at[task] = start
            yield self.env.timeout(self.p2p_s)
            kind, mb, pos = task
            name = f"send {'act' if kind == 'F' else 'grad'} {mb}.{pos}->r{dst}"
            self.events.append((start, self.env.now, src, "pp", name, kind, mb, self.layout.local_chunk(mb, pos)))
        ev.succeed()

    def _wait(self, rank: int, tasks: list[Task], any_of: bool = False) -> Generator:
        """Wait for ``tasks``' dependencies; time spent waiting on in-flight transfers counts as PP comm."""
        keys = [(arr, key) for t in tasks for arr, key in self.dep_keys(t)]
        events = [self._event(self.arrived if arr else self.done, key) for arr, key in keys]
        pending = [e for e in events if not e.triggered]
        if not pending:
            return
        t0 = self.env.now
        yield (simpy.AnyOf if any_of else simpy.AllOf)(self.env, pending)
        sends = [self.sent_at[key] for arr, key in keys if arr and key in self.sent_at]
        if sends:
            self.stats[rank].pp_wait_s += max(0.0, self.env.now - max(t0, max(sends)))

    # ---- rank processes -----------------------------------------------------------------------
    def static_rank(self, rank: int, order: list[Task]) -> Generator:
        """SimPy process of ``rank`` running a static schedule's task ``order``."""
        for task in order:
            if not self.ready(task):
                yield from self._wait(rank, [task])
            yield from self.execute(rank, [task], self.phase_of(task))

    def _heads(self, tasks: list[Task]) -> list[Task]:
        """The next task of each direction (tasks are kept in micro-batch order)."""
        if not self.layout.dual:
            return tasks[:1]
        seen: dict[int, Task] = {}
        for t in tasks:
            seen.setdefault(self.layout.direction(t[1]), t)
            if len(seen) == 2:
                break
        return list(seen.values())

    def dynamic_rank(self, rank: int) -> Generator:
        """SimPy process of ``rank`` picking its next task at run time: backward first, forward within the
        1F1B activation budget, deferred weight gradients to fill gaps (DualPipe overlaps an F+B pair)."""
        lay = self.layout
        todo = rank_tasks(lay, rank, split_weight=True)
        forwards = [t for t in todo if t[0] == "F"]
        backs = [t for t in todo if t[0] == "B"]
        weights: list[Task] = []
        # 1F1B's activation budget per direction: a rank at route position k keeps at most pp - k in flight
        inflight = {0: 0, 1: 0}

        def allowed(t: Task) -> bool:
            return inflight[lay.direction(t[1])] < lay.pp - t[2]

        while forwards or backs or weights:
            b = next((t for t in self._heads(backs) if self.ready(t)), None)
            f = next((t for t in self._heads(forwards) if allowed(t) and self.ready(t)), None)
            if lay.dual and b is not None and f is not None and lay.direction(b[1]) != lay.direction(f[1]):
                pair = self.phase_of(f) + self.phase_of(b)
                hidden = Phase(pair.compute_s, {k: max(0.0, v - pair.compute_s) for k, v in pair.comm_s.items()})
                yield from self.execute(rank, [f, b], hidden)
                forwards.remove(f)
                backs.remove(b)
                weights.append(("W", b[1], b[2]))
                inflight[lay.direction(f[1])] += 1
                inflight[lay.direction(b[1])] -= 1
                continue
            if b is not None:
                yield from self.execute(rank, [b], self.phase_of(b))
                backs.remove(b)
                weights.append(("W", b[1], b[2]))
                inflight[lay.direction(b[1])] -= 1
            elif f is not None:
                yield from self.execute(rank, [f], self.phase_of(f))
                forwards.remove(f)
                inflight[lay.direction(f[1])] += 1
            elif weights:
                w = weights.pop(0)
                yield from self.execute(rank, [w], self.phase_of(w))
            else:
                yield from self._wait(rank, self._heads(backs) + self._heads(forwards), any_of=True)

    def run(self) -> PipelineRun:
        """Simulate the pipeline phase of one step; a deadlocked schedule raises RuntimeError."""
        schedule = get_schedule(self.schedule)
        for rank in range(self.layout.pp):
            order = schedule.order(self.layout, rank)
            self.env.process(self.dynamic_rank(rank) if order is None else self.static_rank(rank, order))
        self.env.run()
        missing = [t for t, ev in self.done.items() if not ev.triggered]
        if missing:  # a schedule that deadlocks is a bug in the schedule, not a user error
            raise RuntimeError(f"{self.schedule} schedule deadlocked with {len(missing)} tasks left, e.g. {missing[0]}")
        return PipelineRun(events=self.events, ranks=self.stats)
