"""Generic parameter sweeps over training or serving configs, locally or on a Ray cluster (issue #9).

A sweep is a base config plus a *space*: dotted config paths (``parallel.tp``, ``training.micro_batch``,
``batching.max_num_seqs``) mapped to lists of values. Every point of the grid (or a seeded random
sample of it) is the base config with those values set. Points whose config does not validate are
pruned before any simulation and counted by reason; the rest are simulated by the same per-point
function in this process, a process pool, or as Ray tasks, so every backend gives the same frame.

Each simulated point is cached as one small JSON file named by a hash of its fully resolved config,
the hardware profile and the simulator's code, so an interrupted or repeated sweep only simulates
what is missing.

The package, in the order a sweep runs:

- :mod:`~simulator.search.sweep.spec`: :class:`SweepSpec`, :class:`SweepFile`, :func:`load_sweep_file`,
  applying a point's values to the base config and resolving ``parallel.dp: auto``;
- :mod:`~simulator.search.sweep.cache`: :func:`config_hash`, :func:`code_version` and the result cache;
- :mod:`~simulator.search.sweep.backends`: the in-process, process-pool and Ray runners;
- :mod:`~simulator.search.sweep.run`: :func:`sweep`, :func:`evaluate_point`, ranking, :func:`pareto`,
  :func:`write_frame`;
- :mod:`~simulator.search.sweep.expr`: the safe expression language of constraints and objectives (parsed
  with :mod:`ast`, evaluated with numpy; never ``eval`` or ``DataFrame.eval``, as a sweep file may come
  from someone else).
"""

from __future__ import annotations

from simulator.search.sweep.backends import Backend as Backend
from simulator.search.sweep.cache import SWEEP_SCHEMA, code_version, config_hash, normalise_reason
from simulator.search.sweep.run import evaluate_point, pareto, sweep, write_frame
from simulator.search.sweep.spec import MAX_GRID_POINTS as MAX_GRID_POINTS
from simulator.search.sweep.spec import Kind as Kind
from simulator.search.sweep.spec import Mode as Mode
from simulator.search.sweep.spec import (
    SweepFile,
    SweepSpec,
    config_kind,
    load_sweep_file,
    sweep_file_base,
)

__all__ = [
    "SWEEP_SCHEMA",
    "SweepFile",
    "SweepSpec",
    "code_version",
    "config_hash",
    "config_kind",
    "evaluate_point",
    "load_sweep_file",
    "normalise_reason",
    "pareto",
    "sweep",
    "sweep_file_base",
    "write_frame",
]
