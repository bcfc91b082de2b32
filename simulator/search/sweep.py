"""Generic parameter sweeps over training or serving configs, locally or on a Ray cluster (issue #9).

A sweep is a base config plus a *space*: dotted config paths (``parallel.tp``, ``training.micro_batch``,
``batching.max_num_seqs``) mapped to lists of values. Every point of the grid (or a seeded random
sample of it) is the base config with those values set. Points whose config does not validate are
pruned before any simulation and counted by reason; the rest are simulated by the same per-point
function in this process, a process pool, or as Ray tasks, so every backend gives the same frame.

Each simulated point is cached as one small JSON file named by a hash of its fully resolved config,
the hardware profile and the simulator's code, so an interrupted or repeated sweep only simulates
what is missing.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hwmodels.errors import ClusterSimError, first_validation_error
from hwmodels.fileio import atomic_write

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SWEEP_SCHEMA",
    "SweepFile",
    "SweepSpec",
    "code_version",
    "config_hash",
    "config_kind",
    "evaluate_point",
    "load_sweep_file",
    "normalise_reason",
    "pareto",
    "sweep",
    "sweep_file_base",
    "write_frame",
]

#: Bump when the cached record or the metric columns change shape, so old cache files are not reused.
SWEEP_SCHEMA = "sweep-1"
#: A grid larger than this must be sampled (mode: random) instead of enumerated.
MAX_GRID_POINTS = 1_000_000

Kind = Literal["training", "serving"]
Mode = Literal["grid", "random"]
Backend = Literal["local", "ray"]

_STATUS_OK, _STATUS_INVALID, _STATUS_ERROR = "ok", "invalid", "error"
#: Result fields whose keys vary from point to point: stored as one JSON string column, not flattened.
_OPAQUE_METRICS = {"batch_size_histogram"}


# ---- the sweep description --------------------------------------------------------------------------


class SweepSpec(BaseModel):
    """What to sweep and how to rank it: the space, grid or random sampling, objective and constraints."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    space: dict[str, list[Any]] = Field(description="dotted config path -> values to try")
    mode: Mode = "grid"
    samples: int | None = Field(default=None, gt=0, description="points to draw in random mode")
    seed: int = 0
    objective: str | None = Field(default=None, description="result column to rank feasible points by")
    maximize: bool = True
    constraints: list[str] = Field(default_factory=list, description="pandas expressions every feasible row meets")

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


def _resolve_base(base: str | Path | Mapping[str, Any], relative_to: Path | None = None) -> dict[str, Any]:
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


def _apply_values(base: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``values`` set: shallower paths first and ``kind`` before its siblings."""
    data = copy.deepcopy(base)
    order = sorted(values, key=lambda k: (k.count("."), not k.endswith(".kind") and k != "kind"))
    for key in order:
        _set_path(data, key, values[key])
    return data


def _derive_dp(data: dict[str, Any]) -> Any:
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


def config_kind(data: Mapping[str, Any]) -> Kind:
    """Training configs have a ``cluster`` section, serving configs a top-level ``gpu``."""
    if "cluster" in data:
        return "training"
    if "gpu" in data:
        return "serving"
    raise ClusterSimError(
        "cannot tell a training from a serving base config: training has cluster:, serving has gpu: (or set kind:)"
    )


def _load(kind: Kind, data: dict[str, Any]) -> Any:
    if kind == "training":
        from simulator.core.config import load_config

        return load_config(data)
    from simulator.serving.config import load_serving_config

    return load_serving_config(data)


_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w)(?!\.\d)")


def normalise_reason(message: str) -> str:
    """The reason a point is invalid with its numbers replaced by N, so equal reasons count together."""
    return _NUMBER.sub("N", message.strip())


# ---- cache keys -----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def code_version() -> str:
    """Schema, package version and a digest of the simulator's code and data: results from other code
    never come back from the cache."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("clustersim")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        pkg = "dev"
    digest = hashlib.sha256()
    skip = ("search/sweep.py", "cli/", "app/")  # presentation only; they never change a simulated number
    for name in ("simulator", "hwmodels"):
        root = Path(str(resources.files(name)))
        for path in sorted(root.rglob("*")):
            if path.suffix not in {".py", ".yaml", ".json", ".csv"} or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(root).as_posix()
            if rel.startswith(skip):
                continue
            digest.update(f"{name}/{rel}\0".encode())
            digest.update(path.read_bytes())
    return f"{SWEEP_SCHEMA}/clustersim-{pkg}/{digest.hexdigest()[:16]}"


def _profile_key(profile: str | None) -> str:
    if profile is None:
        return "default"
    path = Path(profile)
    if path.is_file():
        return "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    return profile


def config_hash(kind: Kind, cfg: BaseModel, profile: str | None = None) -> str:
    """sha256 of the fully resolved config, profile and code version (the cache key of a point)."""
    payload = {
        "kind": kind,
        "config": cfg.model_dump(mode="json"),
        "profile": _profile_key(profile),
        "code": code_version(),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class _Cache:
    """One JSON file per point under ``root/ab/abcdef....json``, written atomically (temp file + rename)."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None
        if self.root is not None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ClusterSimError(f"cannot create cache dir {self.root}: {exc.strerror}") from None

    def path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        if self.root is None:
            return None
        try:
            record = json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None  # missing or unreadable: simulate again
        if not isinstance(record, dict) or record.get("hash") != key or record.get("schema") != SWEEP_SCHEMA:
            return None
        return record

    def put(self, key: str, record: dict[str, Any]) -> None:
        if self.root is None:
            return
        try:
            # key order kept: the metric columns come out in the same order from the cache as from a simulation
            _atomic_write_text(self.path(key), json.dumps(record, default=str))
        except OSError as exc:
            raise ClusterSimError(
                f"cannot write to cache dir {self.root}: {exc.strerror or exc}; free space or pick another --cache-dir"
            ) from None


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, text)


# ---- the per-point work (runs in this process, a worker process or a Ray task) -----------------------


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if key in _OPAQUE_METRICS or isinstance(value, list | tuple):
            out[name] = json.dumps(value, sort_keys=True)
        elif isinstance(value, Mapping):
            out.update(_flatten(value, name))
        else:
            out[name] = value
    return out


def evaluate_point(kind: Kind, cfg: BaseModel, profile: str | None = None) -> dict[str, Any]:
    """Simulate one validated config: {status, reason, metrics (flat scalars), sim_s}.

    A ClusterSimError found only while simulating (a serving request that can never fit the KV
    cache) makes the point ``invalid``; any other exception is an ``error`` with its type and message.
    """
    start = time.perf_counter()
    try:
        if kind == "training":
            from simulator.training import simulate_training

            result = simulate_training(cfg, profile)
        else:
            from simulator.serving import simulate_serving

            result = simulate_serving(cfg, profile)
        status, reason, metrics = _STATUS_OK, None, _flatten(result.to_dict())
    except ClusterSimError as exc:
        status, reason, metrics = _STATUS_INVALID, str(exc), {}
    except Exception as exc:  # a bug in the simulator: keep the sweep going, report it in the row
        status, reason, metrics = _STATUS_ERROR, f"{type(exc).__name__}: {exc}", {}
    return {"status": status, "reason": reason, "metrics": metrics, "sim_s": time.perf_counter() - start}


@dataclass
class _Job:
    key: str
    cfg: BaseModel
    indices: list[int] = field(default_factory=list)


OnDone = Callable[[_Job, dict[str, Any]], None]


def _run_inprocess(jobs: list[_Job], kind: Kind, profile: str | None, on_done: OnDone) -> None:
    for job in jobs:
        on_done(job, evaluate_point(kind, job.cfg, profile))


def _run_pool(jobs: list[_Job], kind: Kind, profile: str | None, workers: int, on_done: OnDone) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        # a bounded window of submissions keeps memory flat for big sweeps and lets Ctrl-C stop quickly
        pending = iter(jobs)
        inflight: dict[Any, _Job] = {}
        while True:
            while len(inflight) < 4 * workers and (job := next(pending, None)) is not None:
                inflight[pool.submit(evaluate_point, kind, job.cfg, profile)] = job
            if not inflight:
                break
            done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
            for fut in sorted(done, key=lambda f: inflight[f].indices[0]):
                job = inflight.pop(fut)
                try:
                    out = fut.result()
                except Exception as exc:  # a worker died (killed, out of memory)
                    out = {"status": _STATUS_ERROR, "reason": f"{type(exc).__name__}: {exc}", "metrics": {}}
                on_done(job, out)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_ray(
    jobs: list[_Job], kind: Kind, profile: str | None, workers: int, address: str | None, on_done: OnDone
) -> None:
    try:
        import ray
    except ImportError:
        raise ClusterSimError("backend ray needs Ray: pip install 'clustersim[distributed]'") from None

    started = not ray.is_initialized()
    if started:
        if address is None:
            # "local" always starts a private instance, never joins one that RAY_ADDRESS or `ray start` set up
            ray.init(address="local", num_cpus=workers if workers > 1 else None, include_dashboard=False)
        else:
            try:
                ray.init(address=address)
            except ConnectionError:
                raise ClusterSimError(
                    f"cannot reach a Ray cluster at --ray-address {address!r}: start one with `ray start --head` "
                    "or pass the head's host:port"
                ) from None
    inflight: dict[Any, _Job] = {}
    try:
        task = ray.remote(num_cpus=1)(evaluate_point)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        window = workers if workers > 1 else max(2 * cpus, 2)
        profile_ref = profile
        pending = iter(jobs)
        while True:
            while len(inflight) < window and (job := next(pending, None)) is not None:
                inflight[task.remote(kind, job.cfg, profile_ref)] = job
            if not inflight:
                break
            done, _ = ray.wait(list(inflight), num_returns=1)
            for ref in done:
                job = inflight.pop(ref)
                try:
                    out = ray.get(ref)
                except Exception as exc:  # the task's worker crashed or was lost with its node
                    out = {"status": _STATUS_ERROR, "reason": f"{type(exc).__name__}: {exc}", "metrics": {}}
                on_done(job, out)
    except BaseException:
        for ref in inflight:
            ray.cancel(ref)
        raise
    finally:
        if started:
            ray.shutdown()


# ---- the sweep ----------------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    """A swept value as a frame cell: scalars as they are, sections as canonical JSON."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _spec_from(space: Mapping[str, Any] | SweepSpec, **kwargs: Any) -> SweepSpec:
    if isinstance(space, SweepSpec):
        defaults = {"mode": "grid", "samples": None, "seed": 0, "objective": None, "maximize": True, "constraints": []}
        clash = sorted(k for k, v in kwargs.items() if v != defaults[k] and not (k == "constraints" and v is None))
        if clash:
            raise ClusterSimError(f"{', '.join(clash)} given both in the SweepSpec and as arguments; pass them once")
        return space
    kwargs["constraints"] = list(kwargs["constraints"] or [])
    return _validated(SweepSpec, {"space": dict(space), **kwargs})


def sweep(
    base_config: Mapping[str, Any] | str | Path,
    space: Mapping[str, Sequence[Any]] | SweepSpec,
    *,
    mode: Mode = "grid",
    samples: int | None = None,
    seed: int = 0,
    objective: str | None = None,
    maximize: bool = True,
    constraints: list[str] | None = None,
    workers: int = 1,
    backend: Backend = "local",
    cache_dir: str | Path | None = None,
    progress: bool = True,
    ray_address: str | None = None,
    profile: str | None = None,
    kind: Kind | None = None,
) -> pd.DataFrame:
    """Simulate every point of ``space`` applied to ``base_config`` and return one row per point.

    Columns: ``point`` (grid index), one per swept path, ``parallel.dp`` when the base says
    ``dp: auto``, ``status`` (ok / invalid / error), ``reason``, ``feasible``, ``config_hash`` and
    the flattened result metrics (``memory_per_gpu_gb_peak``, ``ttft_s_p99``, ...). A plan that does
    not fit in memory is an ``ok`` row with ``fits_in_memory`` false. Rows are in grid order, or
    best first by ``objective`` when one is given (feasible rows first).

    ``df.attrs`` holds ``points``, ``evaluated`` (simulated now), ``cached`` (read from ``cache_dir``),
    ``pruned`` ({normalised reason: count} of invalid points), ``errors`` and ``wall_s``.
    """
    started = time.perf_counter()
    spec = _spec_from(
        space,
        mode=mode,
        samples=samples,
        seed=seed,
        objective=objective,
        maximize=maximize,
        constraints=constraints,
    )
    if not isinstance(workers, int) or workers < 1:
        raise ClusterSimError(f"workers must be a positive integer, got {workers!r}")
    if backend not in ("local", "ray"):
        raise ClusterSimError(f"backend must be local or ray, got {backend!r}")
    base = _resolve_base(base_config)
    kind = kind or config_kind(base)
    if kind not in ("training", "serving"):
        raise ClusterSimError(f"kind must be training or serving, got {kind!r}")
    cache = _Cache(cache_dir)
    base_dp = base.get("parallel", {}).get("dp") if isinstance(base.get("parallel"), dict) else None
    derived_dp = kind == "training" and (base_dp == "auto" or "auto" in spec.space.get("parallel.dp", []))

    rows: dict[int, dict[str, Any]] = {}
    metrics: dict[int, dict[str, Any]] = {}
    jobs: dict[str, _Job] = {}
    pruned: Counter[str] = Counter()
    counts = {"evaluated": 0, "cached": 0}
    points = spec.points()
    points_by_index = dict(points)
    bar = _progress_bar(len(points), progress)

    checked = False

    def finish(index: int, status: str, reason: str | None, values: dict[str, Any]) -> None:
        nonlocal checked
        rows[index].update(status=status, reason=reason)
        metrics[index] = values
        if status == _STATUS_INVALID:
            pruned[normalise_reason(reason or "")] += 1
        elif status == _STATUS_OK and not checked:
            _check_ranking(spec, {**rows[index], "feasible": True, **values})  # a typo fails now, not at the end
            checked = True
        bar.update(1)

    try:
        for index, values in points:
            row: dict[str, Any] = {"point": index, **{k: _cell(v) for k, v in values.items()}}
            rows[index] = row
            if derived_dp:
                row["parallel.dp"] = None  # filled in below unless the point is invalid
            try:
                data = _apply_values(base, values)
                if derived_dp:
                    row["parallel.dp"] = _derive_dp(data)
                cfg = _load(kind, data)
            except ClusterSimError as exc:
                row["config_hash"] = None
                finish(index, _STATUS_INVALID, str(exc), {})
                continue
            except Exception as exc:  # the loader tripped over a value it did not expect
                row["config_hash"] = None
                finish(index, _STATUS_ERROR, f"{type(exc).__name__}: {exc}", {})
                continue
            key = row["config_hash"] = config_hash(kind, cfg, profile)
            record = cache.get(key)
            if record is not None:
                counts["cached"] += 1
                finish(index, record["status"], record["reason"], record["metrics"])
            elif key in jobs:
                jobs[key].indices.append(index)  # the same resolved config twice: simulate it once
            else:
                jobs[key] = _Job(key, cfg, [index])

        def on_done(job: _Job, out: dict[str, Any]) -> None:
            counts["evaluated"] += 1
            if out["status"] != _STATUS_ERROR:  # errors may be transient or fixed later: never cached
                record = {
                    "schema": SWEEP_SCHEMA,
                    "hash": job.key,
                    "kind": kind,
                    "code": code_version(),
                    "profile": _profile_key(profile),
                    "point": {k: _cell(v) for k, v in points_by_index[job.indices[0]].items()},
                    **out,
                }
                cache.put(job.key, record)
            for index in job.indices:
                finish(index, out["status"], out["reason"], out["metrics"])

        todo = list(jobs.values())
        if not todo:
            pass  # everything was pruned or cached: do not start workers or Ray
        elif backend == "ray":
            _run_ray(todo, kind, profile, workers, ray_address, on_done)
        elif workers > 1 and len(todo) > 1:
            _run_pool(todo, kind, profile, workers, on_done)
        else:
            _run_inprocess(todo, kind, profile, on_done)
    finally:
        bar.close()

    frame = _build_frame(points, rows, metrics, list(spec.space), derived_dp)
    frame = _rank(frame, spec)
    frame.attrs.update(
        kind=kind,
        points=len(points),
        evaluated=counts["evaluated"],
        cached=counts["cached"],
        pruned=dict(sorted(pruned.items(), key=lambda kv: (-kv[1], kv[0]))),
        errors=int((frame["status"] == _STATUS_ERROR).sum()),
        wall_s=time.perf_counter() - started,
        objective=spec.objective,
        maximize=spec.maximize,
        constraints=list(spec.constraints),
    )
    return frame


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc="sweep",
        unit="pt",
        file=sys.stderr,
        disable=not enabled or not sys.stderr.isatty(),
        leave=False,
    )


def _build_frame(
    points: list[tuple[int, dict[str, Any]]],
    rows: dict[int, dict[str, Any]],
    metrics: dict[int, dict[str, Any]],
    swept: list[str],
    derived_dp: bool,
) -> pd.DataFrame:
    import pandas as pd

    head = ["point", *swept]
    if derived_dp and "parallel.dp" not in swept:
        head.append("parallel.dp")
    head += ["status", "reason", "feasible", "config_hash"]
    metric_cols: list[str] = []
    seen = set(head)
    for index, _ in points:
        for name in metrics[index]:
            if name not in seen:
                seen.add(name)
                metric_cols.append(name)
    records = []
    for index, _ in points:
        rec = {name: rows[index].get(name) for name in head if name != "feasible"}
        rec["feasible"] = False
        for name in metric_cols:
            rec[name] = metrics[index].get(name)
        records.append(rec)
    columns = head + metric_cols
    return pd.DataFrame({name: _typed_column([rec[name] for rec in records]) for name in columns}, columns=columns)


def _typed_column(values: list[Any]) -> Any:
    """A column that keeps ints and bools as such when invalid rows leave holes (Int64, boolean)."""
    import pandas as pd

    present = [v for v in values if v is not None and not (isinstance(v, float) and v != v)]
    if present and all(isinstance(v, bool) for v in present):
        return pd.array(values, dtype="boolean" if len(present) < len(values) else bool)
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.array(values, dtype="Int64" if len(present) < len(values) else "int64")
    return pd.Series(values).infer_objects().array


def _rank(frame: pd.DataFrame, spec: SweepSpec) -> pd.DataFrame:
    """Mark feasible rows (ok and every constraint true) and sort them best first by the objective."""
    import numpy as np

    ok = (frame["status"] == _STATUS_OK).to_numpy()
    feasible = ok.copy()
    if spec.constraints and ok.any():
        sub = frame[ok].infer_objects()
        for expr in spec.constraints:
            feasible[ok] &= _constraint_mask(sub, expr)
    frame["feasible"] = feasible
    if spec.objective is None or not ok.any():
        return frame
    score = _objective_score(frame[ok], spec.objective).reindex(frame.index)
    values = score.to_numpy(dtype=float, na_value=np.nan)
    key = np.nan_to_num(-values if spec.maximize else values, nan=np.inf)
    order = np.lexsort((frame["point"].to_numpy(), key, ~frame["feasible"].to_numpy()))
    return frame.iloc[order].reset_index(drop=True)


def _check_ranking(spec: SweepSpec, row: dict[str, Any]) -> None:
    """Evaluate the constraints and objective on the first simulated row, so a misspelt column is
    reported after one simulation instead of after the whole sweep."""
    import pandas as pd

    probe = pd.DataFrame([row]).infer_objects()
    for expr in spec.constraints:
        _constraint_mask(probe, expr)
    if spec.objective is not None:
        _objective_score(probe, spec.objective)


def _objective_score(frame: pd.DataFrame, objective: str) -> Any:
    import pandas as pd

    if objective not in frame.columns:
        numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and c != "point"]
        raise ClusterSimError(
            f"objective {objective!r} is not a result column; choose one of: {', '.join(numeric[:12])}, ..."
        )
    score = pd.to_numeric(frame[objective], errors="coerce")
    if score.isna().all() and frame[objective].notna().any():
        raise ClusterSimError(f"objective {objective!r} is not numeric; pick a metric like tokens_per_s")
    return score


def _constraint_mask(sub: pd.DataFrame, expr: str) -> Any:
    import pandas as pd

    try:
        out = sub.eval(expr, local_dict={}, global_dict={})
    except pd.errors.UndefinedVariableError as exc:
        raise ClusterSimError(
            f"constraint {expr!r}: {exc}; use a result column (dotted names in backticks: `parallel.tp`)"
        ) from None
    except Exception as exc:
        raise ClusterSimError(f"constraint {expr!r} is not a valid expression ({exc}); e.g. 'mfu > 0.4'") from None
    if not isinstance(out, pd.Series) or not pd.api.types.is_bool_dtype(out):
        raise ClusterSimError(f"constraint {expr!r} must be a comparison that is true or false, e.g. 'mfu > 0.4'")
    return out.fillna(False).to_numpy(dtype=bool)


def pareto(frame: pd.DataFrame, objectives: Mapping[str, str], *, feasible_only: bool = True) -> pd.DataFrame:
    """The rows no other row beats on every objective; ``objectives`` maps a column to "min" or "max".

    Only ok rows (and, by default, feasible ones) with a value in every objective column take part.
    """
    from simulator.search.pareto import pareto_front

    bad = {c: d for c, d in objectives.items() if d not in ("min", "max")}
    if not objectives or bad:
        raise ClusterSimError("pareto needs objectives like {'step_time_s': 'min', 'mfu': 'max'}")
    missing = [c for c in objectives if c not in frame.columns]
    if missing:
        raise ClusterSimError(f"pareto: no column {missing[0]!r} in the sweep results")
    mask = frame["status"] == _STATUS_OK
    if feasible_only and "feasible" in frame.columns:
        mask &= frame["feasible"].astype(bool)
    cols = list(objectives)
    sub = frame[mask].dropna(subset=cols)
    if sub.empty:
        return sub
    front = pareto_front(sub[cols].astype(float).to_numpy().tolist(), [objectives[c] == "min" for c in cols])
    return sub[front]


def write_frame(frame: pd.DataFrame, out: str | Path) -> Path:
    """Write the full frame as .parquet (pyarrow) or .csv, atomically (temp file + rename)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ClusterSimError(f"--out {out}: use a .parquet or .csv file name")
    if suffix == ".csv":
        return atomic_write(out, lambda tmp: frame.to_csv(tmp, index=False))
    return atomic_write(out, lambda tmp: _parquet_safe(frame).to_parquet(tmp, index=False))


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet needs one type per column: a swept column mixing e.g. numbers and names becomes text."""
    import pandas as pd

    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            types = {type(v) for v in out[col] if v is not None and not (isinstance(v, float) and pd.isna(v))}
            if len(types) > 1:
                out[col] = out[col].map(lambda v: None if v is None else str(v))
    return out


# ---- sweep files (``clustersim sweep`` in simulator/cli/search.py prints the results) -----------------


def sweep_file_base(sf: SweepFile, path: str | Path) -> dict[str, Any]:
    """The base config of the sweep file at ``path`` (read as ``sf`` by :func:`load_sweep_file`) with the
    file's ``overrides`` set: a base path is looked up beside the file first, then as given, then bundled."""
    base = _resolve_base(sf.base, Path(path).parent)
    for key, value in sf.overrides.items():
        _set_path(base, key, value)
    return base
