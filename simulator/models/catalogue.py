"""Model presets (YAML files in ``presets/``) and one entry point that resolves any model reference.

``get_model`` accepts a preset name (case-insensitive), a path to a HF ``config.json`` (or the
folder holding it) or to a ModelSpec ``.yaml``, an inline dict (ModelSpec fields or HF fields), or
a ModelSpec. Presets are data: one YAML file per model, ModelSpec fields plus a source.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from hwmodels.errors import ClusterSimError, UnknownNameError, short
from simulator.core.limits import MAX_MODEL_FILE_BYTES
from simulator.core.untrusted import load_yaml_text, read_text_file
from simulator.models.hf import from_hf_config
from simulator.models.spec import ModelSpec, validate_spec

_HF_KEYS = frozenset({"model_type", "architectures", "num_hidden_layers", "n_layer"})
_HINT = "`clustersim models` lists them; or pass a path to a HF config.json"


def _is_hf(data: dict[str, Any]) -> bool:
    """HF configs carry model_type/architectures and HF's field names; ModelSpecs carry num_layers."""
    return "num_layers" not in data and bool(_HF_KEYS & data.keys())


def spec_from_dict(data: dict[str, Any], where: str = "model dict") -> ModelSpec:
    """A ModelSpec from an inline mapping of either ModelSpec fields or HF config fields."""
    if _is_hf(data):
        return from_hf_config(data)
    return validate_spec(data, where)


def _read_yaml(text: str, where: str) -> dict[str, Any]:
    data = load_yaml_text(text, where)  # alias bombs and deep nesting refused; no file contents echoed
    if not isinstance(data, dict):
        raise ClusterSimError(f"{where}: expected a mapping of ModelSpec fields")
    return data


def load_model_file(path: Path) -> ModelSpec:
    """A ModelSpec from a ``.yaml`` ModelSpec, a HF ``.json`` config, or a folder with config.json."""
    if path.is_dir() or path.suffix.lower() == ".json":
        return from_hf_config(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        text = read_text_file(path, MAX_MODEL_FILE_BYTES, f"model file {path}")
        return spec_from_dict(_read_yaml(text, str(path)), str(path))
    raise ClusterSimError(f"{path}: model files are .json (HF config) or .yaml (ModelSpec)")


@lru_cache(maxsize=1)
def _presets() -> dict[str, ModelSpec]:
    """All presets keyed by lower-case name, loaded once from the package data."""
    folder = resources.files("simulator.models").joinpath("presets")
    specs: dict[str, ModelSpec] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        where = f"model preset {entry.name}"
        spec = validate_spec(_read_yaml(entry.read_text(), where), where)
        if spec.name.lower() in specs:
            raise ClusterSimError(f"{where}: duplicate preset name {spec.name!r}")
        specs[spec.name.lower()] = spec
    return specs


def list_models() -> list[ModelSpec]:
    """Every preset, sorted by name."""
    return sorted(_presets().values(), key=lambda s: s.name)


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or Path(text).suffix.lower() in (".json", ".yaml", ".yml")


def _is_model_file(key: str) -> bool:
    """Whether ``key`` names a model file or a folder holding config.json (False for a name too long to be a
    path, rather than ENAMETOOLONG)."""
    try:
        path = Path(key).expanduser()
        return path.is_file() or (path.is_dir() and (path / "config.json").is_file())
    except (OSError, ValueError):
        return False


def get_model(name_or_path: str | Path | dict[str, Any] | ModelSpec) -> ModelSpec:
    """Resolve a preset name, a model file path, an inline dict or a ModelSpec to a ModelSpec."""
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    if isinstance(name_or_path, dict):
        return spec_from_dict(name_or_path)
    if not isinstance(name_or_path, str | Path):
        raise ClusterSimError(f"model must be a preset name, a file path or a mapping, got {short(name_or_path)}")
    key = str(name_or_path).strip()
    presets = _presets()
    if not isinstance(name_or_path, Path) and key.lower() in presets:
        return presets[key.lower()]
    if _is_model_file(key):
        return load_model_file(Path(key).expanduser())
    if isinstance(name_or_path, Path) or _looks_like_path(key):
        raise ClusterSimError(f"model file {short(key)} does not exist; {_HINT}")
    raise UnknownNameError("model preset", key, [s.name for s in presets.values()], hint=_HINT)
