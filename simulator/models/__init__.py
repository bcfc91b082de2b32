"""Model catalogue: architecture specs (dense, GQA, MoE, MLA), presets and HF config import."""

from typing import Annotated, Any

from pydantic import BeforeValidator

from simulator.models.catalogue import get_model, list_models
from simulator.models.hf import from_hf_config
from simulator.models.spec import MLASpec, ModelSpec, MoESpec


def resolve_model(value: Any) -> ModelSpec:
    """A config's ``model:`` as a spec: a spec as is, else a preset name, an HF config path or an inline dict."""
    return value if isinstance(value, ModelSpec) else get_model(value)


#: The ``model:`` field of every run config (training and serving).
ModelField = Annotated[ModelSpec, BeforeValidator(resolve_model)]

__all__ = [
    "MLASpec",
    "ModelField",
    "ModelSpec",
    "MoESpec",
    "from_hf_config",
    "get_model",
    "list_models",
    "resolve_model",
]
