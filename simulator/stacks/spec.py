"""The stack schema and its presets (``simulator/stacks/presets/*.yaml``)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hwmodels.errors import ClusterSimError, UnknownNameError, first_validation_error

__all__ = ["DEFAULT_STACK", "StackSpec", "get_stack", "list_stacks"]

#: The stack a config runs on when it names none: fused kernels and flash attention, no host floor.
DEFAULT_STACK = "megatron-te"


class StackSpec(BaseModel):
    """A framework as the simulator sees it; each field has the framework code it comes from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    sources: dict[str, str] = Field(default_factory=dict, description="field -> where the value comes from")
    attention: Literal["flash", "unfused"] = Field(
        default="flash", description="fused flash attention, or the pre-2022 unfused softmax path"
    )
    host_s_per_layer: float = Field(
        default=0.0, ge=0, description="eager host (Python/launch) time per transformer layer forward, s"
    )
    collective_call_s: float = Field(
        default=0.0, ge=0, description="extra host cost of each blocking in-layer collective call, s"
    )
    overlap_grad_reduce: bool = Field(
        default=True, description="DP gradient reduction per bucket during the backward (Megatron DDP overlap)"
    )
    vocab_divisible_by: int = Field(
        default=1, ge=1, description="the LM head's vocabulary is padded to a multiple of this x tp (1 = no padding)"
    )

    def training_defaults(self) -> dict[str, Any]:
        """The ``training:`` knobs this stack sets (a config's own ``training:`` values override them)."""
        return {
            "flash_attention": self.attention == "flash",
            "host_s_per_layer": self.host_s_per_layer,
            "collective_call_s": self.collective_call_s,
            "overlap_grad_reduce": self.overlap_grad_reduce,
        }


def _validate(data: Any, where: str) -> StackSpec:
    if not isinstance(data, dict):
        raise ClusterSimError(f"{where}: expected a mapping of stack fields")
    try:
        return StackSpec.model_validate(data)
    except ValidationError as exc:
        raise ClusterSimError(f"{where}: {first_validation_error(exc)}") from None


@lru_cache(maxsize=1)
def _presets() -> dict[str, StackSpec]:
    """Every preset keyed by name, loaded once from the package data."""
    folder = resources.files("simulator.stacks").joinpath("presets")
    out: dict[str, StackSpec] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            spec = _validate(yaml.safe_load(entry.read_text(encoding="utf-8")), f"stack preset {entry.name}")
            if spec.name in out:
                raise ClusterSimError(f"stack preset {entry.name}: duplicate name {spec.name!r}")
            out[spec.name] = spec
    return out


def list_stacks() -> list[StackSpec]:
    """Every stack preset, sorted by name."""
    return sorted(_presets().values(), key=lambda s: s.name)


def get_stack(value: str | dict[str, Any] | StackSpec) -> StackSpec:
    """A preset name, an inline mapping (``{name: ..., host_s_per_layer: ...}``) or a StackSpec, as a StackSpec.

    An inline mapping may start from a preset with ``base: NAME`` and change some fields.
    """
    if isinstance(value, StackSpec):
        return value
    if isinstance(value, dict):
        data = dict(value)
        base = data.pop("base", None)
        if base is not None:
            data = {**get_stack(base).model_dump(), **data}
        return _validate(data, "stack")
    presets = _presets()
    key = str(value).strip()
    if key not in presets:
        raise UnknownNameError("stack", key, list(presets), hint="`clustersim stacks` lists them")
    return presets[key]
