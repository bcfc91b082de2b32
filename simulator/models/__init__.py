"""Model catalogue: architecture specs (dense, GQA, MoE, MLA), presets and HF config import."""

from simulator.models.catalogue import get_model, list_models
from simulator.models.hf import from_hf_config
from simulator.models.spec import MLASpec, ModelSpec, MoESpec

__all__ = ["MLASpec", "ModelSpec", "MoESpec", "from_hf_config", "get_model", "list_models"]
