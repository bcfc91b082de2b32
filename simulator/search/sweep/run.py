"""Running a sweep: every point of the space applied to the base config, simulated once, into one frame.

:func:`sweep` resolves each point's config (pruning, by reason, those that do not validate), reads what it
can from the cache, simulates the rest with :func:`evaluate_point` on the chosen backend, and builds one row
per point; :func:`pareto` and :func:`write_frame` work on that frame.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from hwmodels.errors import ClusterSimError
from hwmodels.fileio import atomic_write
from simulator.core.limits import WorkCaps
from simulator.search.scale import check_work
from simulator.search.sweep.backends import (
    STATUS_ERROR,
    STATUS_INVALID,
    STATUS_OK,
    Backend,
    Job,
    Runner,
    check_backend,
)
from simulator.search.sweep.cache import (
    SWEEP_SCHEMA,
    ResultCache,
    code_version,
    config_hash,
    normalise_reason,
    profile_key,
)
from simulator.search.sweep.expr import constraint_mask, objective_values, parse_expression
from simulator.search.sweep.spec import (
    Kind,
    Mode,
    SweepSpec,
    apply_values,
    config_kind,
    derive_dp,
    derive_schedule,
    load_point,
    resolve_base,
    spec_from,
)

if TYPE_CHECKING:
    import pandas as pd

#: What to do about a sweep or a point over the caps given to :func:`sweep` (the CLI's interactive scale).
CAPS_HINT = "beyond interactive scale; pass --yes to run it anyway"
#: Result fields whose keys vary from point to point: stored as one JSON string column, not flattened.
_OPAQUE_METRICS = {"batch_size_histogram"}


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


def flat_metrics(result: Any) -> dict[str, Any]:
    """A TrainingResult's or ServingResult's scalar metrics under the sweep frame's column names
    (``memory_per_gpu_gb_peak``, ``ttft_s_p99``): the one flattening the app and the sweep share."""
    return _flatten(result.to_dict())


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
        status, reason, metrics = STATUS_OK, None, flat_metrics(result)
    except ClusterSimError as exc:
        status, reason, metrics = STATUS_INVALID, str(exc), {}
    except Exception as exc:  # a bug in the simulator: keep the sweep going, report it in the row
        status, reason, metrics = STATUS_ERROR, f"{type(exc).__name__}: {exc}", {}
    return {"status": status, "reason": reason, "metrics": metrics, "sim_s": time.perf_counter() - start}


# ---- the sweep ----------------------------------------------------------------------------------------


def _cell(value: Any) -> Any:
    """A swept value as a frame cell: scalars as they are, sections as canonical JSON."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


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
    caps: WorkCaps | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Simulate every point of ``space`` applied to ``base_config`` and return one row per point.

    Columns: ``point`` (grid index), one per swept path, ``parallel.dp`` when the base says
    ``dp: auto``, ``status`` (ok / invalid / error), ``reason``, ``feasible``, ``config_hash`` and
    the flattened result metrics (``memory_per_gpu_gb_peak``, ``ttft_s_p99``, ...). A plan that does
    not fit in memory is an ``ok`` row with ``fits_in_memory`` false. Rows are in grid order, or
    best first by ``objective`` when one is given (feasible rows first).

    ``df.attrs`` holds ``points``, ``evaluated`` (simulated now), ``cached`` (read from ``cache_dir``),
    ``cache_rejected`` (cache files refused as torn, foreign or edited, each simulated again), ``pruned``
    ({normalised reason: count} of invalid points), ``errors`` and ``wall_s``.

    ``caps`` (e.g. :data:`simulator.core.limits.CLI_CAPS`) refuses a sweep of more points and marks
    points whose work is over the caps invalid; the default runs whatever is asked.

    ``on_progress(done, total)`` is called in this thread as each point finishes (the app's progress bar).
    """
    started = time.perf_counter()
    spec = spec_from(
        space,
        mode=mode,
        samples=samples,
        seed=seed,
        objective=objective,
        maximize=maximize,
        constraints=constraints,
    )
    check_backend(workers, backend)
    base = resolve_base(base_config)
    kind = _check_kind(kind or config_kind(base))
    n_points = spec.grid_size if spec.mode == "grid" else min(spec.samples or 0, spec.grid_size)
    if caps is not None and n_points > caps.sweep_points:
        raise ClusterSimError(f"the sweep has {n_points:,} points, over {caps.sweep_points:,}; {CAPS_HINT}")
    run = _SweepRun(spec, kind, base, profile, ResultCache(cache_dir), progress, caps)
    run.on_progress = on_progress
    try:
        run.collect()
        Runner(evaluate_point, kind, profile, workers, backend, ray_address).run(run.todo(), run.on_done)
    finally:
        run.bar.close()
    return run.frame(started)


def _check_kind(kind: Any) -> Kind:
    if kind not in ("training", "serving"):
        raise ClusterSimError(f"kind must be training or serving, got {kind!r}")
    return kind  # type: ignore[no-any-return]


class _SweepRun:
    """One sweep's bookkeeping: a row and metrics per point, the jobs left to simulate, the counts and prunes.

    Points whose config does not validate are finished at once (invalid, or error when the loader trips),
    cached ones from their record; the rest become jobs, one per distinct config hash, finished through
    :meth:`on_done` as the backend reports them.
    """

    def __init__(
        self,
        spec: SweepSpec,
        kind: Kind,
        base: dict[str, Any],
        profile: str | None,
        cache: ResultCache,
        progress: bool,
        caps: WorkCaps | None = None,
    ) -> None:
        self.spec, self.kind, self.base, self.profile, self.cache = spec, kind, base, profile, cache
        self.caps = caps
        base_dp = base.get("parallel", {}).get("dp") if isinstance(base.get("parallel"), dict) else None
        self.derived_dp = kind == "training" and (base_dp == "auto" or "auto" in spec.space.get("parallel.dp", []))
        self.rows: dict[int, dict[str, Any]] = {}
        self.metrics: dict[int, dict[str, Any]] = {}
        self.jobs: dict[str, Job] = {}
        self.pruned: Counter[str] = Counter()
        self.counts = {"evaluated": 0, "cached": 0}
        self.points = spec.points()
        self.points_by_index = dict(self.points)
        self.bar = _progress_bar(len(self.points), progress)
        self.checked = False  # the objective and constraints were tried on a simulated row
        self.on_progress: Callable[[int, int], None] | None = None
        self.done = 0

    def finish(self, index: int, status: str, reason: str | None, values: dict[str, Any]) -> None:
        """Record point ``index``'s outcome (and, on the first simulated row, check the ranking columns)."""
        self.rows[index].update(status=status, reason=reason)
        self.metrics[index] = values
        if status == STATUS_INVALID:
            self.pruned[normalise_reason(reason or "")] += 1
        elif status == STATUS_OK and not self.checked:
            # a typo fails now, not at the end
            _check_ranking(self.spec, {**self.rows[index], "feasible": True, **values})
            self.checked = True
        self.bar.update(1)
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.done, len(self.points))

    def collect(self) -> None:
        """Resolve every point: finish the invalid and cached ones, queue a job for the rest."""
        for index, values in self.points:
            self._add(index, values)

    def _add(self, index: int, values: dict[str, Any]) -> None:
        row: dict[str, Any] = {"point": index, **{k: _cell(v) for k, v in values.items()}}
        self.rows[index] = row
        if self.derived_dp:
            row["parallel.dp"] = None  # filled in below unless the point is invalid
        cfg = self._config(index, row, values)
        if cfg is None:
            return
        key = row["config_hash"] = config_hash(self.kind, cfg, self.profile)
        record = self.cache.get(key)
        if record is not None:
            self.counts["cached"] += 1
            self.finish(index, record["status"], record["reason"], record["metrics"])
        elif key in self.jobs:
            self.jobs[key].indices.append(index)  # the same resolved config twice: simulate it once
        else:
            self.jobs[key] = Job(key, cfg, [index])

    def _config(self, index: int, row: dict[str, Any], values: dict[str, Any]) -> BaseModel | None:
        """The point's validated config, or None when it is finished already as invalid (or an error)."""
        try:
            data = apply_values(self.base, values)
            if self.kind == "training":
                derive_schedule(data, values)
            if self.derived_dp:
                row["parallel.dp"] = derive_dp(data)
            cfg = load_point(self.kind, data)
            if self.caps is not None:
                check_work(self.kind, cfg, self.caps, CAPS_HINT)
            return cfg  # type: ignore[no-any-return]
        except ClusterSimError as exc:
            row["config_hash"] = None
            self.finish(index, STATUS_INVALID, str(exc), {})
        except Exception as exc:  # the loader tripped over a value it did not expect
            row["config_hash"] = None
            self.finish(index, STATUS_ERROR, f"{type(exc).__name__}: {exc}", {})
        return None

    def todo(self) -> list[Job]:
        """The jobs to simulate, in the order of their first point."""
        return list(self.jobs.values())

    def on_done(self, job: Job, out: dict[str, Any]) -> None:
        """A job's record came back: cache it (unless it is an error) and finish its points."""
        self.counts["evaluated"] += 1
        if out["status"] != STATUS_ERROR:  # errors may be transient or fixed later: never cached
            self.cache.put(job.key, self._record(job, out))
        for index in job.indices:
            self.finish(index, out["status"], out["reason"], out["metrics"])

    def _record(self, job: Job, out: dict[str, Any]) -> dict[str, Any]:
        return {
            "schema": SWEEP_SCHEMA,
            "hash": job.key,
            "kind": self.kind,
            "code": code_version(),
            "profile": profile_key(self.profile),
            "point": {k: _cell(v) for k, v in self.points_by_index[job.indices[0]].items()},
            **out,
        }

    def frame(self, started: float) -> pd.DataFrame:
        """The result frame, ranked, with the sweep's counts in ``attrs`` (``started``: perf_counter at the start)."""
        frame = _build_frame(self.points, self.rows, self.metrics, list(self.spec.space), self.derived_dp)
        frame = _rank(frame, self.spec)
        frame.attrs.update(
            kind=self.kind,
            points=len(self.points),
            evaluated=self.counts["evaluated"],
            cached=self.counts["cached"],
            cache_rejected=self.cache.rejected,
            pruned=dict(sorted(self.pruned.items(), key=lambda kv: (-kv[1], kv[0]))),
            errors=int((frame["status"] == STATUS_ERROR).sum()),
            wall_s=time.perf_counter() - started,
            objective=self.spec.objective,
            maximize=self.spec.maximize,
            constraints=list(self.spec.constraints),
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

    ok = (frame["status"] == STATUS_OK).to_numpy()
    feasible = ok.copy()
    if spec.constraints and ok.any():
        sub = frame[ok].infer_objects()
        for expr in spec.constraints:
            feasible[ok] &= _constraint_mask(sub, expr)
    frame["feasible"] = feasible
    if spec.objective is None or not ok.any():
        return frame
    score = _objective_score(frame[ok], spec.objective).reindex(frame.index)
    if spec.objective not in frame.columns:  # an expression: show its value as a column named by its text
        frame[spec.objective] = score
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
    """The objective per row: a result column, or a safe arithmetic expression over columns (:mod:`.expr`)."""
    import pandas as pd

    if objective in frame.columns:
        score = pd.to_numeric(frame[objective], errors="coerce")
        if score.isna().all() and frame[objective].notna().any():
            raise ClusterSimError(f"objective {objective!r} is not numeric; pick a metric like tokens_per_s")
        return score
    expr = parse_expression(objective)
    missing = [c for c in expr.columns if c not in frame.columns]
    if missing:
        numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c]) and c != "point"]
        raise ClusterSimError(
            f"objective {objective!r}: {missing[0]!r} is not a result column; choose one of: {', '.join(numeric)}"
        )
    return objective_values(frame, expr)


def _constraint_mask(sub: pd.DataFrame, expr: str) -> Any:
    """Rows of ``sub`` that meet the constraint, evaluated by the safe expression language (never pandas eval)."""
    return constraint_mask(sub, expr)


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
    mask = frame["status"] == STATUS_OK
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
