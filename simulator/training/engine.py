"""The SimPy pipeline engine: one representative pipeline of ranks, exactly scheduled.

Data-parallel replicas of a pipeline behave alike, so one pipeline (all its stages) is simulated
and the DP collectives are charged afterwards from the cost model (see :mod:`simulator.training`).
Each rank is a SimPy process that runs its chunk tasks in the order its schedule dictates (or
picks them at run time for the dynamic schedules); activations and gradients travel between
ranks over point-to-point links that are SimPy resources, so transfers that share a link queue.
"""

from __future__ import annotations

import gc
import math
from collections import OrderedDict
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import compress, islice, repeat

import numpy as np
import simpy

from simulator.training.plan import ChunkCost, Phase
from simulator.training.schedules import Layout, Schedule, Task, get_schedule, rank_tasks

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
        """Simulate the pipeline phase of one step; a deadlocked schedule raises RuntimeError.

        A static schedule (every rank has a fixed task order) is list-scheduled directly
        (:meth:`run_static`, the same times as SimPy without its event loop); a dynamic one runs in SimPy.
        """
        plan = _cached_plan(get_schedule(self.schedule), self.layout, self.split, self._grad_tasks_per_chunk(0, 0))
        if plan is None:
            return self.run_simpy()
        with _gc_paused():
            return _run_static(self, plan)

    def orders(self) -> list[list[Task] | None]:
        """Each rank's fixed task order from the schedule (None for a rank that picks at run time)."""
        schedule = get_schedule(self.schedule)
        return [schedule.order(self.layout, rank) for rank in range(self.layout.pp)]

    def run_simpy(self, orders: list[list[Task] | None] | None = None) -> PipelineRun:
        """Simulate the pipeline phase in SimPy (any schedule); a deadlocked schedule raises RuntimeError."""
        if orders is None:
            orders = self.orders()
        for rank, order in enumerate(orders):
            self.env.process(self.dynamic_rank(rank) if order is None else self.static_rank(rank, order))
        self.env.run()
        missing = [t for t, ev in self.done.items() if not ev.triggered]
        if missing:  # a schedule that deadlocks is a bug in the schedule, not a user error
            raise RuntimeError(f"{self.schedule} schedule deadlocked with {len(missing)} tasks left, e.g. {missing[0]}")
        return PipelineRun(events=self.events, ranks=self.stats)

    def run_static(self, orders: list[list[Task]]) -> PipelineRun:
        """List-schedule fixed task orders without SimPy: the same events and statistics as :meth:`run_simpy`.

        A task starts when its rank is free and its inputs have arrived; a transfer on the directed
        link (src, dst) starts when its task ends and the link is free (FIFO, capacity 1, issued in
        the sending rank's task order, as SimPy's Resource queues them). Ranks are advanced in
        dependency order: a rank runs until it needs an input not yet sent, and resumes when it is.
        Every time is computed with the same floating-point operations as the SimPy engine.
        """
        with _gc_paused():
            return _run_static(self, static_plan(self.layout, orders, self.split, self._grad_tasks_per_chunk(0, 0)))


# ---- static schedules without SimPy -----------------------------------------------------------------


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while the fast path allocates its tens of thousands of
    event tuples (none in a reference cycle): otherwise a collection every 700 allocations takes more
    time than the schedule itself. The previous state is restored, so nesting is harmless."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


#: a task as integers: (task id, cost id, the task whose output it waits for, the own task it waits
#: for, the link its output leaves on, the rank its output goes to); see :class:`StaticPlan`
Record = tuple[int, int, int, int, int, int]


@dataclass(frozen=True)
class StaticPlan:
    """A static schedule before any time is known: every rank's tasks as integer records, plus columns.

    Task ids number ``(kind, microbatch, position)`` as ``(kind * m + mb) * positions + pos`` (kind F=0,
    B=1, W=2), and id ``3 m positions`` stands for "nothing" (done at 0, never sent); the cost id is
    ``kind * positions + pos``. Links ``0 .. num_links-1`` are the directed links (src, dst) between
    ranks; link ``num_links + r`` is rank r's own, free one for an output that stays on the rank or
    goes nowhere (its destination is then r itself). The columns hold one entry per record, rank after
    rank in task order; they build the timeline and the statistics without a Python loop per event. A
    plan depends on the layout and the task orders only.
    """

    layout: Layout
    orders: list[list[Task]]
    records: list[list[Record]]
    offsets: list[int]  # records[r] are rows offsets[r]:offsets[r + 1] of the columns
    num_links: int  # directed links between ranks; rank r's own link is num_links + r
    grad_last: list[dict[int, int]]  # per rank: local chunk -> row of the task that completes its gradients
    cost: np.ndarray  # cost id
    rank: np.ndarray
    kind: np.ndarray  # kind id (0 F, 1 B, 2 W)
    kind_name: np.ndarray  # "F" / "B" / "W" (object)
    mb: np.ndarray
    chunk: np.ndarray  # local chunk index
    name: np.ndarray  # "F3.1" (object)
    send: np.ndarray  # rows whose output crosses a link
    send_name: np.ndarray  # "send act 3.1->r2" of those rows (object)
    columns: dict[str, list] = field(default_factory=dict)  # the timeline's fixed columns as Python lists

    def __post_init__(self) -> None:
        cols = {"rank": self.rank, "kind": self.kind_name, "mb": self.mb, "chunk": self.chunk, "name": self.name}
        for key, col in list(cols.items()):
            self.columns[key] = col.tolist()
            self.columns[f"send_{key}"] = col[self.send].tolist()
        self.columns["send_name"] = self.send_name.tolist()


def static_plan(layout: Layout, orders: list[list[Task]], split: bool, grads_per_chunk: int) -> StaticPlan:
    """Number the tasks of fixed ``orders`` (one per rank), their dependencies, destinations and links;
    ``grads_per_chunk`` tasks produce a chunk's weight gradients (B, or W when ``split``)."""
    npos, m = layout.positions, layout.num_microbatches
    flat = [task for order in orders for task in order]
    offsets = np.cumsum([0] + [len(order) for order in orders]).tolist()
    rank = np.repeat(np.arange(len(orders)), np.diff(offsets))
    kind_name = np.array([t[0] for t in flat], dtype=object)
    mb = np.array([t[1] for t in flat], dtype=np.int64)
    pos = np.array([t[2] for t in flat], dtype=np.int64)
    kind = (kind_name == "B").astype(np.int64) + 2 * (kind_name == "W")
    fwd, bwd = kind == 0, kind == 1
    tid = (kind * m + mb) * npos + pos
    none = 3 * m * npos
    adep = np.where(fwd & (pos > 0), tid - 1, np.where(bwd & (pos < npos - 1), tid + 1, none))
    ddep = np.where(kind > 0, tid - m * npos, none)
    out_f, out_b = fwd & (pos < npos - 1), bwd & (pos > 0)
    dst = np.full(len(flat), -1, dtype=np.int64)
    dst[out_f] = layout.ranks(mb[out_f], pos[out_f] + 1)
    dst[out_b] = layout.ranks(mb[out_b], pos[out_b] - 1)
    remote = (dst >= 0) & (dst != rank)
    num_links = len(np.unique(rank[remote] * layout.pp + dst[remote]))
    link = num_links + rank
    _, link[remote] = np.unique(rank[remote] * layout.pp + dst[remote], return_inverse=True)
    chunk = layout.local_chunks(mb, pos)
    to = np.where(dst >= 0, dst, rank)
    rows = list(zip(*(a.tolist() for a in (tid, kind * npos + pos, adep, ddep, link, to)), strict=True))
    grads = (kind == 2) | (bwd & (not split))
    grad_last = []
    for r in range(len(orders)):
        lo, hi = offsets[r], offsets[r + 1]
        last = {}
        for c in np.unique(chunk[lo:hi][grads[lo:hi]]).tolist():
            idx = np.flatnonzero(grads[lo:hi] & (chunk[lo:hi] == c))
            if len(idx) >= grads_per_chunk > 0:
                last[c] = int(idx[grads_per_chunk - 1])
        grad_last.append(dict(sorted(last.items(), key=lambda ci: ci[1])))  # in completion order, as SimPy
    send = np.flatnonzero(remote)
    return StaticPlan(
        layout=layout,
        orders=orders,
        records=[rows[offsets[r] : offsets[r + 1]] for r in range(len(orders))],
        offsets=offsets,
        num_links=num_links,
        grad_last=grad_last,
        cost=kind * npos + pos,
        rank=rank,
        kind=kind,
        kind_name=kind_name,
        mb=mb,
        chunk=chunk,
        name=np.array([f"{k}{b}.{p}" for k, b, p in flat], dtype=object),
        send=send,
        send_name=np.array(
            [f"send {'act' if flat[i][0] == 'F' else 'grad'} {flat[i][1]}.{flat[i][2]}->r{d}"
             for i, d in zip(send.tolist(), dst[send].tolist(), strict=True)],
            dtype=object,
        ),
    )  # fmt: skip


#: plans of recent layouts, newest last: a sweep or an app session re-simulates the same layouts
_PLANS: OrderedDict[tuple, StaticPlan | None] = OrderedDict()
_PLAN_CACHE_TASKS = 250_000  # tasks the cached plans may hold in all (about half a kB each)
_PLAN_CACHE_SIZE = 16


def _cached_plan(schedule: Schedule, layout: Layout, split: bool, grads_per_chunk: int) -> StaticPlan | None:
    """The plan of a static schedule, None when a rank picks its tasks at run time. Keyed on the registered
    instance (re-registering a name makes a new one), so an order must depend on the layout and rank only."""
    key = (schedule, layout, split, grads_per_chunk)
    if key in _PLANS:
        _PLANS.move_to_end(key)
        return _PLANS[key]
    orders = [schedule.order(layout, rank) for rank in range(layout.pp)]
    plan = None
    if all(order is not None for order in orders):
        plan = static_plan(layout, orders, split, grads_per_chunk)  # type: ignore[arg-type]
    _PLANS[key] = plan
    while len(_PLANS) > _PLAN_CACHE_SIZE or sum(p.offsets[-1] for p in _PLANS.values() if p) > _PLAN_CACHE_TASKS:
        _PLANS.popitem(last=False)
        if not _PLANS:
            break
    return plan


@dataclass
class _Times:
    """The list-scheduled times of a plan, by row (record): task start/end, transfer start/arrival."""

    start: list[float]
    end: list[float]
    sent: list[float]  # rows with a transfer: when it took the link
    arrived: list[float]  # rows with a transfer: when it reached the destination
    busy: list[float]  # per rank: compute + blocking comm seconds, summed in task order
    wait: list[float]  # per rank: PP wait seconds


def _task_times(plan: StaticPlan, durations: list[tuple[float, ...]], p2p: float) -> _Times:
    """List-schedule the plan: a task starts at max(its rank is free, its inputs have arrived); a transfer
    starts at max(its task ends, its link is free). A deadlocked order raises RuntimeError."""
    lay = plan.layout
    ntask = 3 * lay.num_microbatches * lay.positions
    rows = plan.offsets[-1]
    times = _Times([0.0] * rows, [0.0] * rows, [0.0] * rows, [0.0] * rows, [0.0] * lay.pp, [0.0] * lay.pp)
    # a transfer takes p2p seconds on a link between ranks (as in SimPy, none when p2p <= 0)
    latency = [p2p if p2p > 0 else 0.0] * plan.num_links + [0.0] * lay.pp
    nxt = _list_schedule(plan, durations, times, ntask, latency)
    stuck = [(r, plan.orders[r][i]) for r, i in enumerate(nxt) if i < len(plan.records[r])]
    if stuck:  # a schedule that deadlocks is a bug in the schedule, not a user error
        r, task = stuck[0]
        raise RuntimeError(f"static schedule deadlocked: {len(stuck)} ranks stuck, e.g. rank {r} at {task}")
    return times


def _list_schedule(
    plan: StaticPlan, durations: list[tuple[float, ...]], times: _Times, ntask: int, latency: list[float]
) -> list[int]:
    """Fill ``times``; returns how many tasks each rank ran (all of them unless the orders deadlock).

    Ranks advance in dependency order: a rank runs its tasks until one needs an input not yet sent,
    and is woken when it is. The arithmetic is the SimPy engine's, operation for operation (a task's
    events are added up from its start, then its end is start + duration), so the times are the same
    to the last bit. One flat loop: this is the hot path of a 10k-GPU simulation."""
    ends: list = [None] * ntask + [0.0]  # task id -> end ("nothing", the last id, is done at 0)
    arrived: list = [None] * ntask + [0.0]  # producing task id -> when its output reached the consumer
    sent = [0.0] * ntask + [math.inf]  # producing task id -> when its transfer started
    starts, row_end, row_sent, row_arr = times.start, times.end, times.sent, times.arrived
    busy, wait, offsets, records = times.busy, times.wait, plan.offsets, plan.records
    pp = len(records)
    link_free = [0.0] * len(latency)
    nxt, clock, blocked = [0] * pp, [0.0] * pp, [False] * pp
    work = list(range(pp - 1, -1, -1))
    while work:
        r = work.pop()
        i, now, b, w = nxt[r], clock[r], busy[r], wait[r]
        row = offsets[r] + i
        for tid, cost, adep, ddep, link, dst in islice(records[r], i, None):
            ready = ends[ddep]
            if ready is None:
                break
            a = arrived[adep]
            if a is None:
                break
            if a > ready:
                ready = a
            if ready > now:  # waited: the part after the input's transfer started counts as PP comm
                d = ready - (sent[adep] if sent[adep] > now else now)
                if d > 0.0:
                    w += d
                now = ready
            start = t = starts[row] = now
            for x in durations[cost]:
                t += x
            dur = t - start
            now = ends[tid] = row_end[row] = start + dur
            b += dur
            s = link_free[link] if link_free[link] > now else now
            sent[tid] = row_sent[row] = s
            link_free[link] = arrived[tid] = row_arr[row] = s + latency[link]
            row += 1
            if blocked[dst]:
                blocked[dst] = False
                work.append(dst)
        i = row - offsets[r]
        nxt[r], clock[r], busy[r], wait[r] = i, now, b, w
        blocked[r] = i < len(records[r])
    return nxt


def _pieces(eng: PipelineEngine) -> list[list[tuple[str, str | None, float]]]:
    """Each cost id's events in the SimPy engine's order: (stream, name or None for the task's, seconds)
    for the compute (if any), then each blocking comm kind (if any)."""
    pieces = []
    for kind in "FBW":
        for pos in range(eng.layout.positions):
            ph = eng.phase_of((kind, 0, pos))
            own: list[tuple[str, str | None, float]] = [("compute", None, ph.compute_s)] if ph.compute_s > 0 else []
            pieces.append(own + [(k, f"{k} comm", v) for k, v in ph.comm_s.items() if v > 0])
    return pieces


def _run_static(eng: PipelineEngine, plan: StaticPlan) -> PipelineRun:
    """The static-schedule fast path: list-scheduled times, then the events and statistics by column."""
    pieces = _pieces(eng)
    times = _task_times(plan, [tuple(x for _, _, x in p) for p in pieces], eng.p2p_s)
    eng.events.extend(_static_events(plan, pieces, times, eng.p2p_s > 0))
    _static_stats(eng, plan, pieces, times)
    return PipelineRun(events=eng.events, ranks=eng.stats)


def _static_events(plan: StaticPlan, pieces: list, times: _Times, remote: bool) -> list[Event]:
    """Every compute, blocking-comm and transfer event of the list-scheduled plan, built by column.

    The ``j``-th event of a task starts where its ``(j-1)``-th ends, so each level is one vector add
    (the same IEEE additions the SimPy engine makes one at a time); the tuples are zipped from the
    plan's cached columns, so no Python code runs per event."""
    t = np.array(times.start, dtype=np.float64)
    cost, cols = plan.cost, plan.columns
    events: list[Event] = []
    for j in range(max((len(p) for p in pieces), default=0)):
        level = [p[j] if j < len(p) else ("", None, 0.0) for p in pieces]
        present = np.array([j < len(p) for p in pieces])
        end = t + np.array([e[2] for e in level])[cost]
        streams = {e[0] for e, here in zip(level, present, strict=True) if here}
        labels = {e[1] for e, here in zip(level, present, strict=True) if here}
        stream = repeat(streams.pop()) if len(streams) == 1 else np.array([e[0] for e in level], dtype=object)[cost]
        if labels == {None}:  # the task's own name (compute)
            name = cols["name"]
        elif len(labels) == 1:
            name = repeat(labels.pop())
        else:
            own = np.array([e[1] is None for e in level])[cost]
            name = np.where(own, plan.name, np.array([e[1] for e in level], dtype=object)[cost]).tolist()
        if not isinstance(stream, repeat):
            stream = stream.tolist()
        rows = zip(
            t.tolist(), end.tolist(), cols["rank"], stream, name, cols["kind"], cols["mb"], cols["chunk"], strict=False
        )
        used = present[cost]
        events.extend(rows if used.all() else compress(rows, used.tolist()))
        t = end
    if remote and len(plan.send):
        sent = np.array(times.sent, dtype=np.float64)[plan.send].tolist()
        arrived = np.array(times.arrived, dtype=np.float64)[plan.send].tolist()
        events.extend(zip(sent, arrived, cols["send_rank"], repeat("pp"), cols["send_name"], cols["send_kind"],
                          cols["send_mb"], cols["send_chunk"], strict=False))  # fmt: skip
    return events


def _static_stats(eng: PipelineEngine, plan: StaticPlan, pieces: list, times: _Times) -> None:
    """Each rank's statistics from the list-scheduled times. Sums run in task order, as the SimPy engine
    adds them (``np.cumsum`` accumulates left to right, so its last element is that very sum)."""
    weight = np.array(eng.weight, dtype=np.float64)
    kinds = list(dict.fromkeys(k for p in pieces for k, _, _ in p if k != "compute"))
    comm = {k: np.array([next((x for kk, _, x in p if kk == k), 0.0) for p in pieces]) for k in kinds}
    npos = eng.layout.positions
    pos = plan.cost % npos
    step = np.where(plan.kind == 0, weight[pos], np.where(plan.kind == 1, -weight[pos], 0.0))
    for r, st in enumerate(eng.stats):
        lo, hi = plan.offsets[r], plan.offsets[r + 1]
        st.busy_s, st.pp_wait_s = times.busy[r], times.wait[r]
        if hi > lo:
            st.first_start_s, st.last_end_s = times.start[lo], times.end[hi - 1]
            inflight = np.cumsum(step[lo:hi])
            st.inflight = float(inflight[-1])
            fwd = inflight[plan.kind[lo:hi] == 0]
            st.peak_inflight = max(0.0, float(fwd.max())) if len(fwd) else 0.0
        firsts = []
        for k in kinds:
            secs = comm[k][plan.cost[lo:hi]]
            used = np.flatnonzero(secs > 0)
            if len(used):
                first = int(used[0])
                within = [kk for kk, _, _ in pieces[plan.cost[lo + first]]].index(k)
                firsts.append(((first, within), k, float(np.cumsum(secs[used])[-1])))
        st.comm_s = {k: v for _, k, v in sorted(firsts)}  # keys in first-use order, as SimPy adds them
        st.grad_done = {c: (times.start[lo + i], times.end[lo + i]) for c, i in plan.grad_last[r].items()}
