"""pareto_front: the non-dominated plans of a sweep (the app's trade-off explorer draws them)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwmodels.errors import ClusterSimError
from simulator.search.pareto import dominates, pareto_front


def test_two_objectives_known_front() -> None:
    # (step time, memory): both minimised
    pts = [(1.0, 50.0), (2.0, 40.0), (3.0, 45.0), (1.5, 60.0), (4.0, 10.0)]
    assert pareto_front(pts, [True, True]) == [True, True, False, False, True]


def test_maximised_objective() -> None:
    # (p99 latency: min, throughput: max)
    pts = [(1.0, 100.0), (2.0, 300.0), (2.5, 250.0), (0.5, 50.0)]
    assert pareto_front(pts, [True, False]) == [True, True, False, True]


def test_duplicates_stay_on_the_front_and_empty_input() -> None:
    assert pareto_front([(1.0, 1.0), (1.0, 1.0), (2.0, 2.0)], [True, True]) == [True, True, False]
    assert pareto_front([], [True, True]) == []


def test_bad_shapes_are_one_line_errors() -> None:
    with pytest.raises(ClusterSimError, match="one per entry of minimize"):
        pareto_front([(1.0, 2.0, 3.0)], [True, True])
    with pytest.raises(ClusterSimError, match="NaN"):
        pareto_front([(float("nan"), 1.0)], [True, True])
    with pytest.raises(ClusterSimError):
        pareto_front([(1.0,)], [])


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def clouds(draw: st.DrawFn) -> tuple[list[tuple[float, ...]], list[bool]]:
    n_obj = draw(st.integers(min_value=1, max_value=3))
    minimize = draw(st.lists(st.booleans(), min_size=n_obj, max_size=n_obj))
    # small value pool so ties and duplicates are common
    value = st.one_of(finite, st.sampled_from([0.0, 1.0, 2.0]))
    pts = draw(st.lists(st.tuples(*[value] * n_obj), min_size=1, max_size=30))
    return pts, minimize


@given(clouds())
def test_front_points_are_not_dominated_and_the_rest_are(cloud: tuple[list[tuple[float, ...]], list[bool]]) -> None:
    pts, minimize = cloud
    mask = pareto_front(pts, minimize)
    assert len(mask) == len(pts)
    assert any(mask)  # a finite set always has a non-dominated point
    front = [p for p, m in zip(pts, mask, strict=True) if m]
    for p, on_front in zip(pts, mask, strict=True):
        if on_front:
            assert not any(dominates(q, p, minimize) for q in pts)
        else:
            assert any(dominates(q, p, minimize) for q in front)
