"""Turning ``MODULE:FACTORY`` or ``hf:CONFIG`` into a zero-argument model factory.

``MODULE:FACTORY`` imports the user's own module and calls the user's own code: it is for the command line
and the Python API only, and must never be reachable from a config file, a sweep file or a URL (that would
let whoever wrote the file run code). ``hf:`` reads a Hugging Face ``config.json`` (a path or inline JSON)
as untrusted data -- size-capped, JSON only -- and builds ``AutoModelForCausalLM.from_config`` from it.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from hwmodels.errors import ClusterSimError
from simulator.core.limits import MAX_MODEL_FILE_BYTES
from simulator.trace.schema import read_capped

#: Largest Hugging Face config read (real ones are a few KB); the cap lives in simulator.core.limits.
MAX_HF_CONFIG_BYTES = MAX_MODEL_FILE_BYTES


def resolve_factory(spec: str) -> Callable[[], Any]:
    """A zero-argument callable that builds the model named by ``spec`` (``MODULE:ATTR`` or ``hf:CONFIG``).

    ``MODULE:ATTR`` imports ``MODULE`` (the current folder is on the import path, as for ``python -m``)
    and returns ``ATTR`` -- a function or class called with no arguments. This runs user code by design.
    """
    if spec.startswith("hf:"):
        return hf_factory(spec[3:])
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ClusterSimError(f"model {spec!r} must be MODULE:FACTORY (e.g. mypkg.models:build) or hf:CONFIG.json")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ClusterSimError(f"cannot import {module_name!r}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ClusterSimError(f"module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ClusterSimError(f"{spec!r} is not callable; name a function or class that builds the model")
    return obj


def read_hf_config(source: str) -> dict[str, Any]:
    """A Hugging Face config as a dict, from inline JSON (``{...}``) or a file path; size-capped, JSON only."""
    if source.lstrip().startswith("{"):
        raw = source.encode()
        where = "inline hf config"
    else:
        where = f"hf config {source}"
        raw = read_capped(source, MAX_HF_CONFIG_BYTES, where)
    if len(raw) > MAX_HF_CONFIG_BYTES:
        raise ClusterSimError(f"{where} is over {MAX_HF_CONFIG_BYTES // 1024} KiB")
    try:
        data = json.loads(raw, parse_constant=_bad_constant)
    except (ValueError, RecursionError) as exc:
        raise ClusterSimError(f"{where} is not valid JSON: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise ClusterSimError(f"{where} must be a JSON object with a 'model_type' string")
    return data


def _bad_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def hf_factory(source: str) -> Callable[[], Any]:
    """A factory building a randomly initialised causal LM from a ``transformers`` config (no weights)."""
    data = dict(read_hf_config(source))

    def build() -> Any:
        try:
            from transformers import AutoConfig, AutoModelForCausalLM
        except ImportError:
            raise ClusterSimError("hf: models need the transformers package; pip install transformers") from None
        model_type = data.pop("model_type")
        try:
            config = AutoConfig.for_model(model_type, **data)
            return AutoModelForCausalLM.from_config(config)
        except (ValueError, TypeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ClusterSimError(f"transformers cannot build model_type {model_type!r}: {first}") from None
        finally:
            data["model_type"] = model_type

    build.__name__ = f"hf:{data['model_type']}"
    return build
