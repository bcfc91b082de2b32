"""Pareto fronts of sweep results: which plans no other plan beats on every objective.

Used by the app's trade-off explorer and by sweeps; plain Python/NumPy, no plotting.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hwmodels.errors import ClusterSimError


def dominates(a: Sequence[float], b: Sequence[float], minimize: Sequence[bool]) -> bool:
    """Whether ``a`` is at least as good as ``b`` on every objective and strictly better on one."""
    better = False
    for x, y, lo in zip(a, b, minimize, strict=True):
        if (x > y) if lo else (x < y):
            return False
        if x != y:
            better = True
    return better


def pareto_front(points: Sequence[Sequence[float]], minimize: Sequence[bool]) -> list[bool]:
    """Mask of the non-dominated points; ``minimize[i]`` says whether objective ``i`` is a cost.

    Identical points do not dominate each other, so duplicates on the front all stay on it.
    """
    n_obj = len(minimize)
    if n_obj == 0:
        raise ClusterSimError("pareto_front needs at least one objective")
    if len(points) == 0:
        return []
    arr = np.asarray(points, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != n_obj:
        raise ClusterSimError(f"every point needs {n_obj} values (one per entry of minimize), got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ClusterSimError("pareto_front: points contain NaN; drop failed runs first")
    # flip maximised objectives so that smaller is better everywhere
    costs = np.where(np.asarray(minimize, dtype=bool), arr, -arr)
    mask = []
    for row in costs:
        no_worse = np.all(costs <= row, axis=1)
        strictly = np.any(costs < row, axis=1)
        mask.append(not bool(np.any(no_worse & strictly)))
    return mask
