"""Training simulation: one SimPy engine for data/tensor/pipeline/sequence/context-parallel training."""

from simulator.training.result import MemoryReport, TrainingResult
from simulator.training.simulate import simulate_training

__all__ = ["MemoryReport", "TrainingResult", "simulate_training"]
