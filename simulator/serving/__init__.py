"""Serving simulation: request traffic, batching policies, paged KV cache tiers, latency metrics."""

from simulator.serving.config import ServingConfig, load_serving_config
from simulator.serving.iteration import predict_iteration_time
from simulator.serving.result import ServingResult
from simulator.serving.simulate import simulate_serving

__all__ = ["ServingConfig", "ServingResult", "load_serving_config", "predict_iteration_time", "simulate_serving"]
