"""Searching over configs: the layer above the engines, below the user interfaces.

- :mod:`~simulator.search.sweep`: grid or random sweeps over any config fields, cached per point, run
  in this process, a process pool or on Ray, returned as one frame;
- :mod:`~simulator.search.plan`: the training plan search (enumerate every parallel plan, screen it in
  closed form with the engine's own functions, simulate the most promising); ``plan_train`` is its
  deprecated old path;
- :mod:`~simulator.search.plan_serve`: the cheapest serving deployment that meets an SLO;
- :mod:`~simulator.search.dvfs`: clock and power-cap sweeps, and phase-aware DVFS;
- :mod:`~simulator.search.pareto`: the non-dominated points of a set, which all of them report.

They return data and never print: :mod:`simulator.cli` and the app present it.
"""
