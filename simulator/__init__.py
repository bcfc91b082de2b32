"""clustersim's simulator package: models, configs, workloads and the SimPy training and serving engines.

Public API: :func:`get_model`, :func:`load_config`, :func:`simulate_training`, :func:`layer_cost_report`.
"""

from simulator import _compat
from simulator.core.config import RunConfig, load_config
from simulator.core.layer_costs import LayerCostReport, layer_cost_report
from simulator.models import ModelSpec, from_hf_config, get_model, list_models
from simulator.training import TrainingResult, simulate_training

_compat.install()

__all__ = [
    "LayerCostReport",
    "ModelSpec",
    "RunConfig",
    "TrainingResult",
    "from_hf_config",
    "get_model",
    "layer_cost_report",
    "list_models",
    "load_config",
    "simulate_training",
]
