"""Every sweepable field of a config schema, found by walking its pydantic models (issue #18).

:func:`schema_knobs` turns a config model (:class:`~simulator.core.config.RunConfig`,
:class:`~simulator.serving.config.ServingConfig`) into a list of :class:`Knob`: a dotted path the sweep
engine can set (:func:`simulator.search.sweep.spec.apply_values`), its type, its choices or bounds, and,
for a field of one variant of a tagged union (``moe_routing.source.exponent`` exists only for
``kind: zipf``), the variant it needs. Nothing here is a hand-kept list of knobs: a field added to a config
model appears on its own. Free-text fields, lists and file paths are left out (a file path must never
come from a link); free-text fields backed by a registry (schedules, GPUs, batching policies) become
choices from that registry.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any, Literal

import annotated_types as at
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from hwmodels.errors import ClusterSimError
from simulator.core.untrusted import FILE_KEYS

KnobType = Literal["int", "float", "bool", "choice"]
#: A field name whose free-text value is one of a registry's names -> that registry's names.
Registries = Mapping[str, Callable[[], Sequence[str]]]
#: A base model class whose value is one of registered subclasses (``kind`` -> class).
Families = Mapping[type, Callable[[], Mapping[str, type]]]


@dataclass(frozen=True)
class Knob:
    """One sweepable config field: its dotted path, type, choices or bounds, default and the variants it needs."""

    path: str
    type: KnobType
    choices: tuple[Any, ...] = ()
    ge: float | None = None  #: lowest allowed value (inclusive)
    gt: float | None = None  #: values must exceed this
    le: float | None = None  #: highest allowed value (inclusive)
    lt: float | None = None  #: values must stay below this
    optional: bool = False  #: ``None`` (unset) is a valid value
    default: Any = None
    description: str = ""
    #: (path of a ``kind`` field, allowed kinds) pairs: the union variants this field belongs to
    when: tuple[tuple[str, tuple[str, ...]], ...] = ()
    name: str = field(default="", compare=False)  #: shortest unique dotted suffix of ``path``

    def label(self) -> str:
        """What a picker shows: path, type and range or choices, and the variant it needs."""
        rng = self.bounds_text() if self.type in ("int", "float") else ""
        need = "; ".join(f"{p}={'|'.join(k)}" for p, k in self.when)
        return f"{self.path} ({self.type}{', ' + rng if rng else ''}{'; needs ' + need if need else ''})"

    def bounds_text(self) -> str:
        """The allowed range as text, e.g. ``> 0, <= 1``."""
        parts = [f"{op} {_num(v)}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))]
        return ", ".join(p for p, v in zip(parts, (self.ge, self.gt, self.le, self.lt), strict=True) if v is not None)

    def check(self, value: Any) -> Any:
        """``value`` as this knob's type, or a one-line error saying what is allowed."""
        if value is None:
            if self.optional:
                return None
            raise ClusterSimError(f"{self.path} cannot be unset (none)")
        if self.type == "choice":
            if value not in self.choices:
                raise ClusterSimError(f"{self.path}={value!r} is not one of {', '.join(map(str, self.choices))}")
            return value
        if self.type == "bool":
            if not isinstance(value, bool):
                raise ClusterSimError(f"{self.path} takes true or false, not {value!r}")
            return value
        return self._check_number(value)

    def _check_number(self, value: Any) -> int | float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ClusterSimError(f"{self.path} takes a finite number, not {value!r}")
        if self.type == "int":
            if value != int(value):
                raise ClusterSimError(f"{self.path} takes a whole number, not {value!r}")
            value = int(value)
        else:
            value = float(value)
        ok = (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )
        if not ok:
            raise ClusterSimError(f"{self.path}={_num(value)} is out of range ({self.bounds_text()})")
        return value

    def parse(self, text: str) -> list[Any]:
        """Comma-separated values typed by a user (``none`` unsets an optional field), each checked."""
        out: list[Any] = []
        for item in (t.strip() for t in str(text).split(",")):
            if not item:
                continue
            out.append(self.check(_scalar(item, self.type)))
        return list(dict.fromkeys(out))

    def suggest(self, current: Any = None, n: int = 3) -> list[Any]:
        """A few values to start from: the choices (current one first), or the current value halved and doubled."""
        current = self.default if current is None else current
        if self.type in ("choice", "bool"):
            options = list(self.choices)
            first = [current] if current in options else []
            return list(dict.fromkeys(first + options))[:n]
        if current is None or isinstance(current, bool) or not isinstance(current, int | float):
            return []
        cands = [current / 2, current, current * 2] if current else [current, 1]
        out = []
        for c in cands:
            try:
                out.append(self.check(round(c) if self.type == "int" else c))
            except ClusterSimError:
                continue
        return list(dict.fromkeys(out))


def _num(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _scalar(text: str, kind: KnobType) -> Any:
    """A typed value from text: numbers, true/false, none; choices stay text unless they parse as numbers."""
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        if kind in ("int", "float"):
            raise ClusterSimError(f"{text[:40]!r} is not a number") from None
        return text


# ---- the walk -----------------------------------------------------------------------------------------


def schema_knobs(
    model: type[BaseModel], registries: Registries | None = None, families: Families | None = None
) -> list[Knob]:
    """Every sweepable field under ``model`` as a :class:`Knob`, in schema order, each with a short unique name.

    ``registries`` maps a free-text field name (``schedule``, ``gpu``) to the names it may take;
    ``families`` maps a base class (``BatchingPolicy``) to its registered subclasses, walked as a tagged union.
    """
    walker = _Walker(dict(registries or {}), dict(families or {}))
    walker.model(model, "", ())
    return _named(list(walker.knobs.values()))


class _Walker:
    """Collects knobs; a path seen in several union variants is merged (its ``when`` kinds joined)."""

    def __init__(self, registries: dict[str, Callable[[], Sequence[str]]], families: dict[type, Any]) -> None:
        self.registries, self.families = registries, families
        self.knobs: dict[str, Knob] = {}

    def model(self, cls: type[BaseModel], prefix: str, when: tuple[tuple[str, tuple[str, ...]], ...]) -> None:
        for name, info in cls.model_fields.items():
            if name in FILE_KEYS or (name == "kind" and when and when[-1][0] == f"{prefix}kind"):
                continue  # file paths never come from a sweep; a variant's own kind is the union's knob
            default = info.get_default(call_default_factory=False)
            default = None if default is PydanticUndefined else default
            self.field(f"{prefix}{name}", name, info.annotation, list(info.metadata), when, default, info.description)

    def field(
        self,
        path: str,
        name: str,
        ann: Any,
        meta: list[Any],
        when: tuple[tuple[str, tuple[str, ...]], ...],
        default: Any,
        doc: str | None,
    ) -> None:
        ann, meta, optional = _unwrap(ann, meta)
        base = Knob(path, "int", optional=optional, description=(doc or "").strip(), when=when)
        if name in self.registries:
            self.add(replace(base, type="choice", choices=tuple(self.registries[name]()), default=_plain(default)))
        elif isinstance(ann, type) and ann in self.families:
            self.union(path, dict(self.families[ann]()), when, default)
        elif _is_model(ann):
            self.model(ann, f"{path}.", when)
        elif (variants := _variants(ann)) is not None:
            self.union(path, variants, when, default)
        elif typing.get_origin(ann) is Literal:
            self.add(replace(base, type="choice", choices=typing.get_args(ann), default=default))
        elif ann is bool:
            self.add(replace(base, type="bool", choices=(False, True), default=default))
        elif ann in (int, float):
            self.add(replace(base, type="int" if ann is int else "float", default=default, **_bounds(meta)))

    def union(
        self, path: str, variants: dict[str, type], when: tuple[tuple[str, tuple[str, ...]], ...], default: Any
    ) -> None:
        """A tagged union: a ``kind`` choice knob, then each variant's fields needing that kind."""
        kinds, kind = tuple(variants), getattr(default, "kind", None)
        self.add(
            Knob(f"{path}.kind", "choice", choices=kinds, default=kind, when=when, description=f"variant of {path}")
        )
        for kind, cls in variants.items():
            self.model(cls, f"{path}.", (*when, (f"{path}.kind", (kind,))))

    def add(self, knob: Knob) -> None:
        old = self.knobs.get(knob.path)
        if old is None:
            self.knobs[knob.path] = knob
            return
        self.knobs[knob.path] = replace(old, when=_join_when(old.when, knob.when))


def _join_when(a: tuple[tuple[str, tuple[str, ...]], ...], b: tuple[tuple[str, tuple[str, ...]], ...]) -> Any:
    """The conditions of a field found in two variants: the kinds joined when both name the same unions, else none."""
    if [p for p, _ in a] != [p for p, _ in b]:
        return ()
    return tuple((p, tuple(dict.fromkeys(ka + kb))) for (p, ka), (_, kb) in zip(a, b, strict=True))


def _plain(value: Any) -> Any:
    """A default that is a registry object (a ModelSpec, a StackSpec) as its name."""
    return getattr(value, "name", value) if isinstance(value, BaseModel) else value


def _is_model(ann: Any) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _unwrap(ann: Any, meta: list[Any]) -> tuple[Any, list[Any], bool]:
    """Strip Annotated (keeping its metadata) and ``| None``; returns (annotation, metadata, optional)."""
    optional = False
    while True:
        if typing.get_origin(ann) is typing.Annotated:
            ann, *extra = typing.get_args(ann)
            meta = meta + list(extra)
            continue
        if typing.get_origin(ann) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(ann) if a is not type(None)]
            if len(args) < len(typing.get_args(ann)):
                optional = True
                ann = args[0] if len(args) == 1 else typing.Union[tuple(args)]  # noqa: UP007 - built at runtime
                continue
        return ann, meta, optional


def _variants(ann: Any) -> dict[str, type] | None:
    """``kind`` -> class for a union of models that each fix ``kind`` to one literal; None otherwise."""
    if typing.get_origin(ann) not in (typing.Union, types.UnionType):
        return None
    out: dict[str, type] = {}
    for arg in typing.get_args(ann):
        arg, _, _ = _unwrap(arg, [])
        info = arg.model_fields.get("kind") if _is_model(arg) else None
        kinds = typing.get_args(info.annotation) if info is not None else ()
        if info is None or typing.get_origin(info.annotation) is not Literal or len(kinds) != 1:
            return None
        out[kinds[0]] = arg
    return out or None


def _bounds(meta: list[Any]) -> dict[str, float]:
    """ge/gt/le/lt from annotated-types metadata (pydantic's Field(gt=...) and friends)."""
    out: dict[str, float] = {}
    for m in meta:
        for cls, key in ((at.Ge, "ge"), (at.Gt, "gt"), (at.Le, "le"), (at.Lt, "lt")):
            if isinstance(m, cls):
                out[key] = getattr(m, key)
    return out


def _named(knobs: list[Knob]) -> list[Knob]:
    """Give each knob the shortest dotted suffix of its path that no other knob's path ends with."""
    out = []
    for k in knobs:
        parts = k.path.split(".")
        for n in range(1, len(parts) + 1):
            cand = ".".join(parts[-n:])
            if not any(o.path != k.path and (o.path == cand or o.path.endswith("." + cand)) for o in knobs):
                break
        out.append(replace(k, name=cand))
    return out


# ---- the two config schemas ---------------------------------------------------------------------------


def _registries() -> dict[str, Callable[[], Sequence[str]]]:
    from hwmodels.catalogue import list_gpus
    from simulator.core.config import algorithm_names  # the names parallel.collective_algorithm accepts
    from simulator.models import list_models
    from simulator.stacks import list_stacks
    from simulator.training.schedules import schedule_names

    return {
        "model": lambda: [m.name for m in list_models()],
        "stack": lambda: [s.name for s in list_stacks()],
        "gpu": lambda: [g.id for g in list_gpus()],
        "schedule": lambda: list(schedule_names()),
        "collective_algorithm": lambda: list(algorithm_names()),
    }


@cache
def training_knobs() -> tuple[Knob, ...]:
    """The knobs of a training run config (:class:`simulator.core.config.RunConfig`)."""
    from simulator.core.config import RunConfig

    return tuple(schema_knobs(RunConfig, _registries()))


@cache
def serving_knobs() -> tuple[Knob, ...]:
    """The knobs of a serving config (:class:`simulator.serving.config.ServingConfig`), batching policies included."""
    from simulator.serving.config import ServingConfig
    from simulator.serving.policies import BATCHING_POLICIES, BatchingPolicy

    return tuple(schema_knobs(ServingConfig, _registries(), {BatchingPolicy: lambda: dict(BATCHING_POLICIES)}))


def config_knobs(kind: Literal["training", "serving"]) -> dict[str, Knob]:
    """The knobs of a training or serving config by path."""
    return {k.path: k for k in (training_knobs() if kind == "training" else serving_knobs())}


def find_knob(knobs: Mapping[str, Knob], key: str) -> Knob | None:
    """The knob named ``key``: by path, else by its short name (``tp``, ``max_num_seqs``); None if neither."""
    if key in knobs:
        return knobs[key]
    return next((k for k in knobs.values() if k.name == key), None)


def value_at(data: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in a nested config mapping, or None when any part is missing."""
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node
