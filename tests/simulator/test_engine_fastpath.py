"""The static-schedule fast path (list scheduling) reproduces the SimPy engine exactly."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.training.engine import PipelineEngine, PipelineRun
from simulator.training.plan import ChunkCost, Phase
from simulator.training.schedules import Layout, Schedule, get_schedule, make_layout

TOL = 1e-9


def _phase(rng: np.random.Generator, comm: bool) -> Phase:
    """A random phase: compute (sometimes zero) and, with ``comm``, random blocking comm by kind."""
    compute = float(rng.choice([0.0, rng.uniform(0.1, 3.0)], p=[0.05, 0.95]))
    kinds = {}
    if comm:
        for kind in ("tp", "cp", "ep"):
            if rng.random() < 0.5:
                kinds[kind] = float(rng.choice([0.0, rng.uniform(0.0, 1.0)], p=[0.2, 0.8]))
    return Phase(compute, kinds)


def _chunks(rng: np.random.Generator, positions: int, comm: bool) -> list[ChunkCost]:
    chunks = []
    for pos in range(positions):
        layers = tuple(range(int(rng.integers(1, 4))))
        chunks.append(
            ChunkCost(
                layers=layers,
                first=pos == 0,
                last=pos == positions - 1,
                forward=_phase(rng, comm),
                backward=_phase(rng, comm),
                weight=_phase(rng, comm),
                params=1e6,
                send_bytes=1e6,
                recompute_flops=0.0,
            )
        )
    return chunks


def _assert_same(fast: PipelineRun, ref: PipelineRun) -> None:
    assert len(fast.events) == len(ref.events)
    for a, b in zip(sorted(fast.events), sorted(ref.events), strict=True):
        assert a[2:] == b[2:], (a, b)
        assert abs(a[0] - b[0]) <= TOL and abs(a[1] - b[1]) <= TOL, (a, b)
    assert len(fast.ranks) == len(ref.ranks)
    for r, (x, y) in enumerate(zip(fast.ranks, ref.ranks, strict=True)):
        for name in ("busy_s", "pp_wait_s", "last_end_s", "inflight", "peak_inflight"):
            assert getattr(x, name) == pytest.approx(getattr(y, name), abs=TOL), (r, name)
        assert (x.first_start_s is None) == (y.first_start_s is None)
        if x.first_start_s is not None:
            assert x.first_start_s == pytest.approx(y.first_start_s, abs=TOL)
        assert x.comm_s.keys() == y.comm_s.keys(), r
        for k in x.comm_s:
            assert x.comm_s[k] == pytest.approx(y.comm_s[k], abs=TOL), (r, k)
        assert x.grad_done.keys() == y.grad_done.keys(), r
        for c in x.grad_done:
            assert x.grad_done[c] == pytest.approx(y.grad_done[c], abs=TOL), (r, c)
    assert fast.end_s == pytest.approx(ref.end_s, abs=TOL)


def _both(layout: Layout, chunks: list[ChunkCost], schedule: str, p2p: float) -> tuple[PipelineRun, PipelineRun]:
    fast = PipelineEngine(layout, chunks, schedule, p2p)
    orders = fast.orders()
    assert all(o is not None for o in orders)
    return fast.run_static(orders), PipelineEngine(layout, chunks, schedule, p2p).run_simpy()


def _case(seed: int) -> tuple[Layout, list[ChunkCost], str, float]:
    rng = np.random.default_rng(seed)
    schedule = ["gpipe", "1f1b", "interleaved"][seed % 3]
    pp = int(rng.integers(1, 17))
    vpp = int(rng.integers(1, 5)) if schedule == "interleaved" else 1
    # interleaving needs m divisible by pp: up to 40 micro-batches (at least pp)
    m = pp * int(rng.integers(1, max(2, 40 // pp + 1))) if schedule == "interleaved" else int(rng.integers(1, 41))
    layout = make_layout(schedule, pp, vpp, m)
    comm = bool(rng.random() < 0.7)
    p2p = float(rng.choice([0.0, rng.uniform(0.01, 0.5), rng.uniform(0.5, 3.0)]))
    # quantised costs make ties (a transfer ready just as its link frees, an input arriving as the rank frees)
    chunks = _chunks(rng, layout.positions, comm)
    if seed % 4 == 0:
        chunks = [
            ChunkCost(
                **{
                    **c.__dict__,
                    **{
                        f: Phase(
                            float(round(getattr(c, f).compute_s)),
                            {k: float(round(v)) for k, v in getattr(c, f).comm_s.items()},
                        )
                        for f in ("forward", "backward", "weight")
                    },
                }
            )
            for c in chunks
        ]
        p2p = float(round(p2p))
    return layout, chunks, schedule, p2p


@pytest.mark.parametrize("seed", range(240))
def test_fast_path_matches_simpy(seed: int) -> None:
    layout, chunks, schedule, p2p = _case(seed)
    _assert_same(*_both(layout, chunks, schedule, p2p))


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved"])
def test_run_uses_fast_path_for_static_schedules(schedule: str) -> None:
    layout, chunks, _, p2p = _case(5)
    layout = make_layout(schedule, 4, 2, 8)
    chunks = _chunks(np.random.default_rng(1), layout.positions, True)
    eng = PipelineEngine(layout, chunks, schedule, 0.3)
    run = eng.run()
    assert eng.env.now == 0.0  # SimPy's clock never moved
    _assert_same(run, PipelineEngine(layout, chunks, schedule, 0.3).run_simpy())


def test_dynamic_schedules_still_run_in_simpy() -> None:
    layout = make_layout("zero-bubble", 4, 1, 8)
    chunks = _chunks(np.random.default_rng(2), layout.positions, True)
    eng = PipelineEngine(layout, chunks, "zero-bubble", 0.2)
    eng.run()
    assert eng.env.now > 0.0


def test_fast_path_reports_a_deadlocked_order() -> None:
    class Backwards(Schedule):
        name = "backwards-first-test"

        def order(self, layout: Layout, rank: int) -> list:
            m = layout.num_microbatches
            return [("B", i, rank) for i in range(m)] + [("F", i, rank) for i in range(m)]

    layout = Layout(2, 1, 2)
    chunks = _chunks(np.random.default_rng(3), 2, False)
    eng = PipelineEngine(layout, chunks, "1f1b", 0.1)
    with pytest.raises(RuntimeError, match="deadlocked"):
        eng.run_static([Backwards().order(layout, r) for r in range(2)])
    assert get_schedule("1f1b").order(layout, 0) is not None


def test_plans_are_cached_per_registered_schedule_instance() -> None:
    from simulator.training import engine

    layout = make_layout("1f1b", 4, 1, 8)
    one = engine._cached_plan(get_schedule("1f1b"), layout, False, 8)
    assert one is not None and engine._cached_plan(get_schedule("1f1b"), layout, False, 8) is one
    assert engine._cached_plan(get_schedule("zero-bubble"), layout, True, 8) is None  # dynamic: SimPy

    class Reversed(Schedule):  # same layout, another instance: never served the 1f1b plan
        name = "reversed-test"

        def order(self, layout: Layout, rank: int) -> list:
            return [("F", i, rank) for i in range(layout.num_microbatches)] + [
                ("B", i, rank) for i in reversed(range(layout.num_microbatches))
            ]

    other = engine._cached_plan(Reversed(), layout, False, 8)
    assert other is not None and other is not one
    assert other.orders[0][-1] == ("B", 0, 0)


def test_fast_path_is_bit_identical_on_a_benchmark_sized_pipeline() -> None:
    """pp 32 x 64 micro-batches of 1F1B with uneven first/last chunks: every number equal, not just close."""
    rng = np.random.default_rng(7)
    layout = make_layout("1f1b", 32, 1, 64)
    chunks = _chunks(rng, layout.positions, True)
    fast, ref = _both(layout, chunks, "1f1b", 0.013)
    assert sorted(fast.events) == sorted(ref.events)
    for x, y in zip(fast.ranks, ref.ranks, strict=True):
        assert x.__dict__ == y.__dict__
        assert list(x.comm_s) == list(y.comm_s)
