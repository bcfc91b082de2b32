"""What a sweep is: the space of dotted config paths, grid or random points, and the sweep file.

A :class:`SweepSpec` maps dotted config paths (``parallel.tp``, ``batching.max_num_seqs``) to the values to
try; every point is the base config with those values set (:func:`apply_values`), ``parallel.dp: auto``
resolved to what the GPU count leaves (:func:`derive_dp`), and validated as a training or serving config
(:func:`load_point`). A :class:`SweepFile` is the YAML form: a base config plus the spec's keys.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hwmodels.errors import ClusterSimError, first_validation_error
from simulator.core.limits import MAX_CONSTRAINTS
from simulator.search.sweep.expr import parse_expression

#: A grid larger than this must be sampled (mode: random) instead of enumerated.
MAX_GRID_POINTS = 1_000_000

Kind = Literal["training", "serving"]
Mode = Literal["grid", "random"]


# ---- the sweep description --------------------------------------------------------------------------


class SweepSpec(BaseModel):
    """What to sweep and how to rank it: the space, grid or random sampling, objective and constraints."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    space: dict[str, list[Any]] = Field(description="dotted config path -> values to try")
    mode: Mode = "grid"
    samples: int | None = Field(default=None, gt=0, le=MAX_GRID_POINTS, description="points to draw in random mode")
    seed: int = 0
    objective: str | None = Field(
        default=None, description="result column (or arithmetic over columns) to rank feasible points by"
    )
    maximize: bool = True
    constraints: list[str] = Field(
        default_factory=list,
        max_length=MAX_CONSTRAINTS,
        description="comparisons every feasible row meets, in the safe expression language of sweep.expr",
    )

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ClusterSimError(first_validation_error(exc)) from None

    @field_validator("space", mode="before")
    @classmethod
    def _check_space(cls, v: Any) -> Any:
        if not isinstance(v, Mapping) or not v:
            raise ClusterSimError("map dotted config paths to lists of values, e.g. {parallel.tp: [1, 2, 4]}")
        for key, values in v.items():
            if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", key):
                raise ClusterSimError(f"key {key!r} is not a dotted config path like parallel.tp")
            if not isinstance(values, list | tuple) or not values:
                raise ClusterSimError(f"{key} must be a non-empty list of values, e.g. [1, 2, 4]")
        return {k: list(vals) for k, vals in v.items()}

    @field_validator("constraints")
    @classmethod
    def _check_constraints(cls, v: list[str]) -> list[str]:
        for text in v:
            parse_expression(text)  # refused now, before any simulation, if it is not the safe language
        return v

    @field_validator("objective")
    @classmethod
    def _check_objective(cls, v: str | None) -> str | None:
        if v is not None:
            parse_expression(v)
        return v

    @model_validator(mode="after")
    def _check_mode(self) -> SweepSpec:
        if self.mode == "random" and self.samples is None:
            raise ClusterSimError("mode random needs samples: N (how many points to draw)")
        if self.mode == "grid" and self.samples is not None:
            raise ClusterSimError("samples only applies to mode: random; drop samples or set mode: random")
        if self.mode == "grid" and self.grid_size > MAX_GRID_POINTS:
            raise ClusterSimError(
                f"the grid has {self.grid_size:,} points (over {MAX_GRID_POINTS:,}); use mode: random with samples"
            )
        return self

    @property
    def grid_size(self) -> int:
        """Points in the full cartesian product of the space."""
        n = 1
        for values in self.space.values():
            n *= len(values)
        return n

    def _decode(self, index: int) -> dict[str, Any]:
        """Grid point ``index`` in itertools.product order (the last key varies fastest)."""
        out: dict[str, Any] = {}
        for key in reversed(list(self.space)):
            values = self.space[key]
            index, r = divmod(index, len(values))
            out[key] = values[r]
        return {k: out[k] for k in self.space}

    def points(self) -> list[tuple[int, dict[str, Any]]]:
        """The points to run as (grid index, {path: value}), in grid order; deterministic for the seed."""
        total = self.grid_size
        if self.mode == "grid" or (self.samples or 0) >= total:
            indices: Iterable[int] = range(total)
        else:
            indices = sorted(random.Random(self.seed).sample(range(total), self.samples or 0))
        return [(i, self._decode(i)) for i in indices]


class SweepFile(BaseModel):
    """A sweep YAML file: ``base`` (a config path or inline mapping) plus the :class:`SweepSpec` keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: str | dict[str, Any]
    kind: Kind | None = Field(default=None, description="training or serving (default: told from the base's keys)")
    overrides: dict[str, Any] = Field(default_factory=dict, description="fixed dotted-path values applied to base")
    profile: str | None = None
    space: dict[str, Any]
    mode: Mode = "grid"
    samples: int | None = None
    seed: int = 0
    objective: str | None = None
    maximize: bool = True
    constraints: list[str] = Field(default_factory=list)

    def spec(self) -> SweepSpec:
        """The sweep part of the file."""
        return _validated(SweepSpec, self.model_dump(include=set(SweepSpec.model_fields)))


def _validated(model: type[BaseModel], data: Any, where: str = "") -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ClusterSimError(f"{where}{first_validation_error(exc)}") from None


def _bundled_example(name: str) -> Path:
    return Path(str(resources.files("simulator").joinpath("examples").joinpath(name)))


def _read_base_file(path: Path) -> dict[str, Any]:
    """Read a base config; a serving trace path in it is made relative to the config's folder."""
    from simulator.core.config import read_yaml

    data = read_yaml(path)
    workload = data.get("workload")
    trace = workload.get("trace") if isinstance(workload, dict) else None
    if isinstance(trace, dict) and "path" in trace:
        trace_path = Path(str(trace["path"]))
        if not trace_path.is_absolute() and not trace_path.exists():
            trace["path"] = str(path.parent / trace_path)
    return data


def resolve_base(base: str | Path | Mapping[str, Any], relative_to: Path | None = None) -> dict[str, Any]:
    """A base config as a dict: a mapping as is, else a YAML path (beside the sweep file, the working
    directory, or a bundled example name such as gpt3-175b-a100.yaml)."""
    if isinstance(base, Mapping):
        return copy.deepcopy(dict(base))
    path = Path(base)
    candidates = [relative_to / path] if relative_to is not None and not path.is_absolute() else []
    candidates += [path, _bundled_example(str(base))]
    for cand in candidates:
        if cand.is_file():
            return _read_base_file(cand)
    return _read_base_file(candidates[0])  # raises the one-line "cannot read config" error


def load_sweep_file(path: str | Path) -> SweepFile:
    """Read and validate a sweep YAML file (one-line ClusterSimError on any problem)."""
    from simulator.core.config import read_yaml

    path = Path(path)
    if not path.is_file():
        raise ClusterSimError(f"cannot read sweep file {path}: no such file")
    data = read_yaml(path)
    sf = _validated(SweepFile, data, f"sweep file {path}: ")
    sf.spec()  # validate the space now, not after the base is loaded
    return sf


def sweep_file_base(sf: SweepFile, path: str | Path) -> dict[str, Any]:
    """The base config of the sweep file at ``path`` (read as ``sf`` by :func:`load_sweep_file`) with the
    file's ``overrides`` set: a base path is looked up beside the file first, then as given, then bundled."""
    base = resolve_base(sf.base, Path(path).parent)
    for key, value in sf.overrides.items():
        _set_path(base, key, value)
    return base


def spec_from(space: Mapping[str, Any] | SweepSpec, **kwargs: Any) -> SweepSpec:
    """The spec of a :func:`~simulator.search.sweep.sweep` call: ``space`` when it is a SweepSpec already
    (then the keyword arguments must keep their defaults), else ``space`` with the keyword arguments."""
    if isinstance(space, SweepSpec):
        defaults = {"mode": "grid", "samples": None, "seed": 0, "objective": None, "maximize": True, "constraints": []}
        clash = sorted(k for k, v in kwargs.items() if v != defaults[k] and not (k == "constraints" and v is None))
        if clash:
            raise ClusterSimError(f"{', '.join(clash)} given both in the SweepSpec and as arguments; pass them once")
        return space
    kwargs["constraints"] = list(kwargs["constraints"] or [])
    return _validated(SweepSpec, {"space": dict(space), **kwargs})


# ---- building one point's config --------------------------------------------------------------------


def _set_path(data: dict[str, Any], key: str, value: Any) -> None:
    """Set dotted ``key`` in nested ``data``; switching a section's ``kind`` drops its other keys
    (as ``--set`` does), so a new batching policy starts from its own defaults."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ClusterSimError(
                f"{key}: {part!r} is {child!r} in the base config, not a section; sweep {part} itself"
            )
        node = child
    if parts[-1] == "kind" and node.get("kind") not in (None, value):
        node.clear()
    node[parts[-1]] = copy.deepcopy(value)


def apply_values(base: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``values`` set: shallower paths first and ``kind`` before its siblings."""
    data = copy.deepcopy(base)
    order = sorted(values, key=lambda k: (k.count("."), not k.endswith(".kind") and k != "kind"))
    for key in order:
        _set_path(data, key, values[key])
    return data


def derive_dp(data: dict[str, Any]) -> Any:
    """Resolve ``parallel.dp: auto`` to num_gpus / (tp*pp*cp), so a sweep over tp and pp keeps the GPU count.

    Returns the point's data-parallel degree (as given when it is not ``auto``)."""
    par = data.get("parallel")
    if not isinstance(par, dict) or par.get("dp") != "auto":
        return par.get("dp", 1) if isinstance(par, dict) else 1
    cluster = data.get("cluster")
    n = cluster.get("num_gpus") if isinstance(cluster, dict) else None
    if not isinstance(n, int):
        raise ClusterSimError("parallel.dp: auto needs an integer cluster.num_gpus in the config")
    tp, pp, cp = (par.get(k, 1) for k in ("tp", "pp", "cp"))
    if not all(isinstance(x, int) and x > 0 for x in (tp, pp, cp)):
        raise ClusterSimError("parallel.dp: auto needs positive integer parallel.tp, pp and cp")
    if n % (tp * pp * cp):
        raise ClusterSimError(
            f"parallel.dp=auto: tp*pp*cp = {tp}*{pp}*{cp} = {tp * pp * cp} does not divide cluster.num_gpus={n}"
        )
    par["dp"] = n // (tp * pp * cp)
    return par["dp"]


def derive_schedule(data: dict[str, Any], values: Mapping[str, Any]) -> None:
    """A point that sets ``parallel.vpp`` but not ``parallel.schedule`` runs a schedule that takes it: vpp > 1 turns
    a schedule without model chunks into ``interleaved``, vpp 1 turns ``interleaved`` back into ``1f1b`` (as the
    app's planners do), so a sweep over vpp does not fail at every point the base schedule cannot run."""
    par = data.get("parallel")
    if "parallel.vpp" not in values or "parallel.schedule" in values or not isinstance(par, dict):
        return
    vpp, name = par.get("vpp", 1), par.get("schedule", "1f1b")
    if not isinstance(vpp, int) or isinstance(vpp, bool) or not isinstance(name, str):
        return  # validation names the bad value
    from simulator.training.schedules import get_schedule, schedule_names

    chunked = name in schedule_names() and get_schedule(name).interleaved
    if vpp > 1 and not chunked:
        par["schedule"] = "interleaved"
    elif vpp == 1 and name == "interleaved":
        par["schedule"] = "1f1b"


def config_kind(data: Mapping[str, Any]) -> Kind:
    """Training configs have a ``cluster`` section, serving configs a top-level ``gpu``."""
    if "cluster" in data:
        return "training"
    if "gpu" in data:
        return "serving"
    raise ClusterSimError(
        "cannot tell a training from a serving base config: training has cluster:, serving has gpu: (or set kind:)"
    )


def load_point(kind: Kind, data: dict[str, Any]) -> Any:
    """The validated training or serving config of one point's data."""
    if kind == "training":
        from simulator.core.config import load_config

        return load_config(data)
    from simulator.serving.config import load_serving_config

    return load_serving_config(data)
