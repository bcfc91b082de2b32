"""Dollar cost of a run: $ per GPU-hour presets with their sources, and the arithmetic on top.

Presets live in ``simulator/data/prices.yaml``: cloud list prices divided by the instance's GPU count (so the CPU,
memory and network of the instance are included), each with the date it was read and a source; entries that are not
published prices say ``estimate``. A user YAML in the same format can add or override presets. Where you know your
own price, pass it directly: ``cost_usd(gpu_hours, 2.10)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from hwmodels.errors import ClusterSimError, UnknownNameError
from simulator.core.limits import MAX_TABLE_BYTES
from simulator.core.untrusted import read_yaml_file


@dataclass(frozen=True)
class Price:
    """$ per GPU-hour for one GPU type under one preset, with where it comes from."""

    gpu: str
    preset: str
    value_usd: float  # per GPU-hour
    source: str
    date: str = ""
    estimate: bool = False
    instance: str = ""  # the cloud instance the price was divided from, if any


@dataclass(frozen=True)
class PricePreset:
    """A named set of prices (e.g. one provider's on-demand list)."""

    name: str
    description: str
    prices: Mapping[str, Price]


def _norm(name: str) -> str:
    return "-".join(str(name).strip().lower().replace("_", " ").replace("-", " ").split())


def _price_entry(preset: str, gpu: str, entry: Mapping[str, Any]) -> Price:
    where = f"prices: {preset}.{gpu}"
    if not isinstance(entry, Mapping):
        raise ClusterSimError(f"{where}: give a mapping with usd_per_gpu_hour (or instance_usd_per_hour and gpus)")
    if "usd_per_gpu_hour" in entry:
        value = entry["usd_per_gpu_hour"]
    elif "instance_usd_per_hour" in entry and "gpus" in entry:
        gpus = entry["gpus"]
        if not isinstance(gpus, int) or gpus < 1:
            raise ClusterSimError(f"{where}: gpus={gpus!r} must be a positive whole number")
        value = float(entry["instance_usd_per_hour"]) / gpus
    else:
        raise ClusterSimError(f"{where}: give usd_per_gpu_hour, or instance_usd_per_hour with gpus")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ClusterSimError(f"{where}: price {value!r} is not a number") from None
    if not value >= 0 or not math.isfinite(value):
        raise ClusterSimError(f"{where}: price {value} must be a non-negative number of $ per GPU-hour")
    source = str(entry.get("source", "")).strip()
    if not source:
        raise ClusterSimError(f"{where}: every price needs a source (where the number comes from)")
    return Price(
        gpu=gpu,
        preset=preset,
        value_usd=value,
        source=source,
        date=str(entry.get("date", "")),
        estimate=bool(entry.get("estimate", False)),
        instance=str(entry.get("instance", "")),
    )


def _build(raw: Mapping[str, Any]) -> dict[str, PricePreset]:
    presets_raw = raw.get("presets") if isinstance(raw, Mapping) else None
    if not isinstance(presets_raw, Mapping):
        raise ClusterSimError("a prices file needs a top-level 'presets' mapping")
    direct: dict[str, dict[str, Price]] = {}
    refs: dict[str, dict[str, str]] = {}
    for name, body in presets_raw.items():
        prices = (body or {}).get("prices", {})
        direct[name], refs[name] = {}, {}
        for gpu, entry in prices.items():
            gid = _resolve_gpu(gpu)
            if isinstance(entry, Mapping) and "from" in entry:
                refs[name][gid] = str(entry["from"])
            else:
                direct[name][gid] = _price_entry(name, gid, entry)
    out = {}
    for name, body in presets_raw.items():
        prices: dict[str, Price] = {}
        for gpu in (body or {}).get("prices", {}):  # file order
            gid = _resolve_gpu(gpu)
            if gid in direct[name]:
                prices[gid] = direct[name][gid]
                continue
            other = refs[name][gid]
            if gid not in direct.get(other, {}):
                raise ClusterSimError(f"prices: {name}.{gid} refers to preset {other!r}, which has no price for it")
            p = direct[other][gid]
            prices[gid] = Price(gid, name, p.value_usd, f"{p.source} (via {other})", p.date, p.estimate, p.instance)
        out[name] = PricePreset(name, str((body or {}).get("description", "")), prices)
    return out


def _resolve_gpu(gpu: str) -> str:
    """Catalogue id for a GPU name or alias; a name the catalogue lacks is kept (normalised) for user price files."""
    from hwmodels.catalogue import get_gpu

    try:
        return get_gpu(gpu).id
    except UnknownNameError:
        return _norm(gpu)


@lru_cache(maxsize=1)
def _bundled() -> dict[str, PricePreset]:
    text = resources.files("simulator").joinpath("data/prices.yaml").read_text(encoding="utf-8")
    return _build(yaml.safe_load(text))


def load_price_presets(path: str | Path | None = None) -> dict[str, PricePreset]:
    """The bundled presets, with those in a user YAML (same format) added or replacing same-named ones."""
    presets = dict(_bundled())
    if path is None:
        return presets
    p = Path(path)
    if not p.is_file():
        raise ClusterSimError(f"prices file {str(p)!r} does not exist")
    raw = read_yaml_file(p, p.name, MAX_TABLE_BYTES) or {}
    presets.update(_build(raw))
    return presets


def list_price_presets(path: str | Path | None = None) -> list[PricePreset]:
    """Every preset (bundled, plus a user file's), 'default' first."""
    presets = load_price_presets(path)
    return sorted(presets.values(), key=lambda p: (p.name != "default", p.name))


def gpu_hour_price(gpu: str, preset: str = "default", *, path: str | Path | None = None) -> Price:
    """$ per GPU-hour of ``gpu`` (id or alias) in ``preset``; a missing pair says which presets do price the GPU."""
    presets = load_price_presets(path)
    if preset not in presets:
        raise ClusterSimError(f"unknown price preset {preset!r}; choose one of: {', '.join(sorted(presets))}")
    gid = _resolve_gpu(gpu)
    known = {g for p in presets.values() for g in p.prices}
    if gid not in known:
        from hwmodels.catalogue import get_gpu

        get_gpu(gpu)  # raises the catalogue's one-line 'unknown GPU ... choose one of' error for a typo
        raise ClusterSimError(f"no bundled price for {gid}; pass your own $ per GPU-hour (or a prices file)")
    price = presets[preset].prices.get(gid)
    if price is None:
        others = ", ".join(sorted(n for n, p in presets.items() if gid in p.prices))
        raise ClusterSimError(f"preset {preset!r} has no price for {gid}; use {others}, or pass your own $/GPU-h")
    return price


def cost_usd(gpu_hours: float, price_usd_per_gpu_hour: float | Price) -> float:
    """Dollars for ``gpu_hours`` at a $/GPU-hour price (a number or a :class:`Price`)."""
    value = price_usd_per_gpu_hour.value_usd if isinstance(price_usd_per_gpu_hour, Price) else price_usd_per_gpu_hour
    if not gpu_hours >= 0 or not math.isfinite(gpu_hours):
        raise ClusterSimError(f"gpu_hours={gpu_hours} must be a non-negative number")
    if not value >= 0 or not math.isfinite(value):
        raise ClusterSimError(f"price {value} must be a non-negative number of $ per GPU-hour")
    return float(gpu_hours) * float(value)


def cost_per_million_tokens(total_usd: float, tokens: float) -> float:
    """$ per million tokens (trained or served), the unit prices are quoted in."""
    if not tokens > 0 or not math.isfinite(tokens):
        raise ClusterSimError(f"tokens={tokens} must be a positive number")
    if not total_usd >= 0 or not math.isfinite(total_usd):
        raise ClusterSimError(f"total_usd={total_usd} must be a non-negative number")
    return float(total_usd) / float(tokens) * 1e6


__all__ = [
    "Price",
    "PricePreset",
    "cost_per_million_tokens",
    "cost_usd",
    "gpu_hour_price",
    "list_price_presets",
    "load_price_presets",
]
