"""Training simulation: one SimPy engine for data/tensor/pipeline/sequence/context-parallel training.

The names below load on first use, so the leaf modules (``schedules``, the registry the run config
validates against) import without pulling in the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.training.result import MemoryReport, TrainingResult
    from simulator.training.simulate import simulate_training

__all__ = ["MemoryReport", "TrainingResult", "simulate_training"]

_HOME = {"MemoryReport": "result", "TrainingResult": "result", "simulate_training": "simulate"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"simulator.training.{_HOME[name]}"), name)
    raise AttributeError(f"module 'simulator.training' has no attribute {name!r}")
