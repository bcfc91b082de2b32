"""Training plan search: every parallel plan of a model on a cluster, screened in closed form, the best simulated.

``clustersim plan train MODEL --gpus N --gpu TYPE`` answers "how should I split this job?" (issue #9). A
simulation costs 0.05-1 s, and the space -- TP, PP, DP, CP, EP, virtual stages, schedule, micro-batch, ZeRO
stage, recompute, sequence parallelism -- holds about 1.5 million candidates for GPT-3 on 1,024 GPUs, so
:func:`search_training_plans` runs in three steps:

1. **Enumerate** every candidate and prune the impossible ones (:mod:`~simulator.search.plan.space`).
2. **Screen** every remaining candidate in closed form (:mod:`~simulator.search.plan.screen`).
3. **Simulate** the ``top_k`` fastest screened plans plus the screen's time/memory Pareto front with
   :func:`simulator.training.simulate_training`; every plan reported was simulated. What the screen leaves
   out -- power-cap throttling, gradient compression, the exact DualPipe pairing -- only the simulation sees.

The work is split over processes by (tp, cp), so no two workers build the same layer costs, and every order
is sorted on a plan key, so results do not depend on the number of workers.
"""

from __future__ import annotations

import heapq
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from pydantic import ValidationError

from hwmodels.errors import ClusterSimError, first_validation_error
from hwmodels.profile import Profile, load_profile
from hwmodels.topology import ClusterSpec
from simulator.core.config import ParallelSpec, RunConfig, TrainingSpec, apply_overrides, with_model_dropout
from simulator.core.host_tiers import OffloadSpec
from simulator.energy.accounting import PowerSpec, SiteSpec
from simulator.models import ModelSpec, get_model
from simulator.moe.routing import MoERouting
from simulator.search.pareto import pareto_front
from simulator.search.plan.screen import Screen, Screened, SearchContext, TaskOut, front_2d, offload_spec
from simulator.search.plan.space import OFFLOAD, OFFLOAD_SPECS, PlanKey, SearchSpace, tasks
from simulator.stacks import DEFAULT_STACK, StackSpec, get_stack
from simulator.training import TrainingResult, offload, simulate_training
from simulator.training.schedules import get_schedule

#: Screened Pareto plans slower than this many times the fastest are not simulated (few would trade that much
#: time for memory, and their long pipelines take the longest to simulate).
PARETO_MAX_SLOWDOWN = 1.5

#: ... nor those whose pipeline has more tasks (forward, backward, weight-gradient per micro-batch and chunk)
#: than this, which takes the engine seconds.
PARETO_MAX_TASKS = 20_000


# ---- results --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanResult:
    """A simulated plan: its parallel and training settings, the simulation, and what the screen predicted."""

    parallel: ParallelSpec
    training: TrainingSpec
    config: RunConfig  # the whole config that was simulated (``clustersim train`` takes its model_dump)
    result: TrainingResult
    screen_step_s: float
    screen_memory_gb: float
    screen_rank: int  # position in the screen's time order among the feasible plans (0 = fastest)

    @property
    def energy_j(self) -> float | None:
        """Energy per step, J, when the result reports one (facility energy of a breakdown), else None."""
        value = getattr(self.result, "energy_j", None)
        if isinstance(value, dict):
            value = value.get("facility", sum(value.values())) if value else None
        return float(value) if value is not None else None

    def label(self) -> str:
        """Short human description: 'TP8 PP12 DP16 interleaved/2 mb1 ZeRO-1 selective SP'."""
        p, t = self.parallel, self.training
        parts = [f"TP{p.tp}", f"PP{p.pp}", f"DP{p.dp}"]
        parts += [f"CP{p.cp}"] if p.cp > 1 else []
        parts += [f"EP{p.ep}"] if p.ep > 1 else []
        parts += [p.schedule + (f"/{p.vpp}" if p.vpp > 1 else ""), f"mb{t.micro_batch}", f"ZeRO-{p.zero}"]
        parts += [t.recompute] + (["SP"] if p.sp else [])
        name = offload_name(t.offload)
        parts += [f"offload:{name}"] if name != "none" else []
        return " ".join(parts)

    @property
    def needs_offload(self) -> bool:
        """Whether the plan keeps model states in host memory (it fits only because of training.offload)."""
        return self.training.offload.any

    def to_dict(self) -> dict[str, Any]:
        """``parallel``, ``training``, every TrainingResult field, and the screen's estimates."""
        return {
            "plan": self.label(),
            "needs_offload": self.needs_offload,
            "parallel": self.parallel.model_dump(),
            "training": self.training.model_dump(mode="json"),
            **self.result.to_dict(),
            "screen": {
                "step_time_s": self.screen_step_s,
                "memory_gb": self.screen_memory_gb,
                "rank": self.screen_rank,
            },
        }


@dataclass
class PlanSearchResult:
    """What a plan search found, and how much of the space it looked at."""

    model: str
    gpu: str
    num_gpus: int
    global_batch: int
    seq_len: int
    best: list[PlanResult]
    pareto: list[PlanResult]
    simulated: list[PlanResult]
    candidates: int
    feasible: int
    pruned: dict[str, int]
    screen_s: float
    simulate_s: float
    wall_s: float
    workers: int

    @property
    def plans_evaluated(self) -> int:
        """Candidates screened: evaluated in closed form or pruned with a reason (every candidate of the space)."""
        return self.candidates

    @property
    def plans_per_second(self) -> float:
        """Candidates per second of the search's wall time (screening and simulation together)."""
        return self.candidates / self.wall_s if self.wall_s > 0 else float("inf")

    @property
    def plans_simulated(self) -> int:
        """Plans simulated (the screen's short list)."""
        return len(self.simulated)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``best``, ``pareto``, ``plans_evaluated``, ``plans_per_second`` and the counts."""
        return {
            "model": self.model,
            "gpu": self.gpu,
            "num_gpus": self.num_gpus,
            "global_batch": self.global_batch,
            "seq_len": self.seq_len,
            "best": [p.to_dict() for p in self.best],
            "pareto": [p.to_dict() for p in self.pareto],
            "plans_evaluated": self.plans_evaluated,
            "plans_per_second": self.plans_per_second,
            "plans_per_second_per_worker": self.plans_per_second / self.workers,
            "plans_feasible": self.feasible,
            "plans_simulated": self.plans_simulated,
            "pruned": dict(self.pruned),
            "screen_s": self.screen_s,
            "simulate_s": self.simulate_s,
            "wall_s": self.wall_s,
            "workers": self.workers,
        }


# ---- the fixed part of every plan ----------------------------------------------------------------


@dataclass(frozen=True)
class _Fixed:
    """The part of every plan's config that the search does not vary."""

    model: ModelSpec
    cluster: ClusterSpec
    training: TrainingSpec
    moe_routing: MoERouting
    power: PowerSpec
    site: SiteSpec
    seed: int
    stack: StackSpec


_SETTABLE = {
    "cluster": ClusterSpec,
    "training": TrainingSpec,
    "moe_routing": MoERouting,
    "power": PowerSpec,
    "site": SiteSpec,
}


def _fixed(
    model: str | dict[str, Any] | ModelSpec,
    num_gpus: int,
    gpu: str,
    global_batch: int | None,
    seq_len: int | None,
    node: str | None,
    overrides: list[str] | None,
) -> _Fixed:
    """Validate the fixed part of every plan: model, cluster, and the settings that are not searched."""
    spec = get_model(model)
    data = apply_overrides({"cluster": {"gpu": gpu, "num_gpus": num_gpus}, "training": {}}, overrides)
    _check_overrides(data)
    stack = get_stack(data.pop("stack", DEFAULT_STACK))
    data["training"] = {**stack.training_defaults(), **data["training"]}  # the stack's knobs, overridable
    if node is not None:
        data["cluster"]["node"] = node
    train = data["training"]
    if global_batch is not None:
        train["global_batch"] = global_batch
    train.setdefault("global_batch", num_gpus)
    if seq_len is not None:
        train["seq_len"] = seq_len
    parts = _sections(data)
    seed = data.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ClusterSimError(f"seed={seed!r} must be an integer")
    parts["training"] = with_model_dropout(parts["training"], spec)
    fixed = _Fixed(model=spec, seed=seed, stack=stack, **parts)
    _check_plainest_plan(fixed, num_gpus)
    return fixed


def _check_overrides(data: dict[str, Any]) -> None:
    """``--set`` may fix only the sections the search does not vary, and none of the searched fields."""
    settable = ", ".join(f"{k}.*" for k in _SETTABLE) + ", seed, stack"
    for section in sorted(set(data) - set(_SETTABLE) - {"seed", "stack"}):
        what = "is what the search varies; restrict it with --space" if section == "parallel" else "is not a section"
        raise ClusterSimError(f"--set {section}.* {what} (settable: {settable})")
    searched = sorted({"micro_batch", "recompute", "offload"} & set(data["training"]))
    if searched:
        raise ClusterSimError(f"training.{searched[0]} is searched; restrict it with --space {searched[0]}=...")
    if "stage_clocks_mhz" in (data.get("power") or {}):
        raise ClusterSimError("power.stage_clocks_mhz depends on pp, which the search varies; use power.sm_clock_mhz")


def _sections(data: dict[str, Any]) -> dict[str, Any]:
    """Each settable section, validated (one-line error naming the section)."""
    parts: dict[str, Any] = {}
    for name, cls in _SETTABLE.items():
        value = data.get(name) or {}
        if not isinstance(value, dict):
            raise ClusterSimError(f"--set {name}={value!r}: {name} is a section; set {name}.KEY=VALUE")
        try:
            parts[name] = cls.model_validate(value)
        except ValidationError as exc:
            raise ClusterSimError(f"{name}.{first_validation_error(exc)}") from None
    return parts


def _check_plainest_plan(fixed: _Fixed, num_gpus: int) -> None:
    """The checks that do not depend on the plan (fp8 support, comm_sms, ...), on the plainest plan."""
    probe = fixed.training.model_copy(update={"global_batch": num_gpus, "micro_batch": 1})
    try:
        RunConfig(
            model=fixed.model,
            cluster=fixed.cluster,
            parallel=ParallelSpec(dp=num_gpus),
            stack=fixed.stack,
            training=probe,
            moe_routing=fixed.moe_routing,
            power=fixed.power,
            site=fixed.site,
            seed=fixed.seed,
        )
    except ValidationError as exc:
        raise ClusterSimError(first_validation_error(exc)) from None


# ---- the search ---------------------------------------------------------------------------------------


def search_training_plans(
    model: str | dict[str, Any] | ModelSpec,
    *,
    num_gpus: int,
    gpu: str,
    global_batch: int | None = None,
    seq_len: int | None = None,
    node: str | None = None,
    overrides: list[str] | None = None,
    space: SearchSpace | None = None,
    top_k: int = 32,
    top: int = 5,
    pareto_k: int = 12,
    workers: int | None = None,
    profile: str | Profile | None = None,
    progress: bool = False,
) -> PlanSearchResult:
    """Search every training plan of ``model`` on ``num_gpus`` x ``gpu`` and simulate the most promising.

    ``overrides`` (``key=value``, as ``--set``) fix the settings that are not searched: ``training.precision``,
    ``training.host_s_per_layer``, ``cluster.nics_per_node``, ... ``global_batch`` defaults to one sequence
    per GPU. ``top_k`` plans that fit are simulated in the screen's time order (more if some turn out not to
    fit), plus up to ``pareto_k`` plans of the screen's time/memory front; ``best`` holds the ``top`` fastest
    simulated plans. ``workers`` processes share the work (default: every CPU).
    """
    workers = _check_counts(top_k, top, pareto_k, workers)
    fixed = _fixed(model, num_gpus, gpu, global_batch, seq_len, node, overrides)
    ctx = _context(fixed, load_profile(profile, gpu=fixed.cluster.gpu), space or SearchSpace(), max(4 * top_k, 64))
    work = sorted(tasks(ctx.space, ctx.num_gpus), key=lambda tc: (tc[0] * tc[1], tc))
    start = time.perf_counter()
    screened = _screen_all(ctx, work, workers, progress)
    if not screened.order and ctx.space.offload == ("none",) and _can_offload(fixed.cluster):
        # nothing fits on the GPUs alone: look again with the model states in host memory (training.offload)
        ctx = _context(fixed, ctx.profile, replace(ctx.space, offload=OFFLOAD), ctx.keep)
        screened = _screen_all(ctx, work, workers, progress)
    screen_s = time.perf_counter() - start
    screened.check_feasible(ctx, num_gpus)
    with _Pool(ctx, workers) as pool:
        queue, batch = _short_list(screened, top_k, pareto_k, ctx.training.global_batch)
        sim_start = time.perf_counter()
        sims = _simulate_short_list(pool, queue, batch, top_k, progress)
        simulate_s = time.perf_counter() - sim_start
    wall = time.perf_counter() - start
    plans = _plan_results(ctx, screened, sims)
    return _search_result(ctx, num_gpus, screened, plans, top, workers, (screen_s, simulate_s, wall))


def offload_name(spec: OffloadSpec) -> str:
    """The search's name of an offload setting (``none``, ``optimizer``, ``optimizer+params``)."""
    for name in OFFLOAD:
        if spec == OffloadSpec(**OFFLOAD_SPECS[name]):
            return name
    return "custom"


def _can_offload(cluster: ClusterSpec) -> bool:
    """Whether the cluster's nodes have the host figures offload needs (hwmodels/data/nodes.yaml)."""
    try:
        offload.host_rates(cluster)
    except ClusterSimError:
        return False
    return True


def _screen_all(ctx: SearchContext, work: list[tuple[int, int]], workers: int, progress: bool) -> _Screening:
    """Screen every (tp, cp) task of ``ctx``'s space in a pool of ``workers``."""
    with _Pool(ctx, workers) as pool:
        return _Screening.merge(_progress(pool.screen(work), len(work), "screening", progress), ctx.keep)


def _check_counts(top_k: int, top: int, pareto_k: int, workers: int | None) -> int:
    """The worker count (default: every CPU), after one-line errors for counts out of range."""
    if top_k < 1 or top < 1 or pareto_k < 0:
        raise ClusterSimError(f"top_k={top_k} and top={top} must be >= 1 and pareto_k={pareto_k} >= 0")
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ClusterSimError(f"workers={workers} must be >= 1")
    return workers


def _context(fixed: _Fixed, profile: Profile, space: SearchSpace, keep: int) -> SearchContext:
    return SearchContext(
        fixed.model,
        fixed.cluster,
        fixed.training,
        fixed.moe_routing,
        fixed.power,
        fixed.site,
        fixed.seed,
        profile,
        space,
        keep,
        stack=fixed.stack,
    )


@dataclass
class _Screening:
    """What the screen found over every task: counts, prunes, the fastest plans and the time/memory front."""

    candidates: int
    feasible: int
    pruned: dict[str, int]
    order: list[Screened]  # the fastest feasible plans, in time order
    front: list[Screened]  # the screen's time/memory front, in time order

    @classmethod
    def merge(cls, outs: Iterable[TaskOut], keep: int) -> _Screening:
        """Sum the tasks' counts; keep the ``keep`` fastest plans and the front over all tasks."""
        outs = list(outs)
        pruned: dict[str, int] = {}
        for o in outs:
            for k, v in o.pruned.items():
                pruned[k] = pruned.get(k, 0) + v
        return cls(
            candidates=sum(o.candidates for o in outs),
            feasible=sum(o.feasible for o in outs),
            pruned=pruned,
            order=heapq.nsmallest(keep, (p for o in outs for p in o.best)),
            front=front_2d(sorted(p for o in outs for p in o.front)),
        )

    def check_feasible(self, ctx: SearchContext, num_gpus: int) -> None:
        """A one-line error naming the commonest prune reasons when no plan is feasible."""
        if self.order:
            return
        real = [kv for kv in self.pruned.items() if not kv[0].startswith("duplicate")]
        common = ", ".join(f"{k} ({v:,})" for k, v in sorted(real, key=lambda kv: (-kv[1], kv[0]))[:2])
        raise ClusterSimError(
            f"none of the {self.candidates:,} plans for {ctx.model.name} on {num_gpus} x {ctx.cluster_spec.gpu} "
            f"is feasible (most pruned: {common}); add GPUs or lower the global batch or sequence length"
        )


def _short_list(
    screened: _Screening, top_k: int, pareto_k: int, global_batch: int
) -> tuple[list[PlanKey], list[PlanKey]]:
    """(every kept plan in the screen's time order, the first batch to simulate: the ``top_k`` fastest and
    up to ``pareto_k`` plans spread along the screen's front)."""
    queue = [p[2] for p in screened.order]
    # the front's memory-light end holds long pipelines that are slow and costly to simulate: keep to
    # plans within PARETO_MAX_SLOWDOWN of the fastest
    front = [
        p
        for p in screened.front
        if p[0] <= PARETO_MAX_SLOWDOWN * screened.order[0][0] and _tasks_of(p[2], global_batch) <= PARETO_MAX_TASKS
    ]
    first = set(queue[:top_k])
    return queue, queue[:top_k] + [p[2] for p in _pick_spread(front, pareto_k) if p[2] not in first]


def _simulate_short_list(
    pool: _Pool, queue: list[PlanKey], batch: list[PlanKey], top_k: int, progress: bool
) -> dict[PlanKey, TrainingResult]:
    """Simulate ``batch``, then more of ``queue`` in time order until ``top_k`` of its plans fit in memory
    (at most ``3 * top_k`` plans deep). A plan the config check rejects is left out."""
    sims: dict[PlanKey, TrainingResult] = {}
    nxt = top_k
    bar = _progress(None, None, "simulating", progress)
    while batch:
        for key, res in zip(batch, pool.simulate(batch), strict=True):
            if not isinstance(res, str):
                sims[key] = res
            bar.update(1)
        fits = sum(1 for k in queue[:nxt] if k in sims and sims[k].fits_in_memory)
        short = top_k - fits
        batch = queue[nxt : nxt + short] if short > 0 and nxt < len(queue) and nxt < 3 * top_k else []
        nxt += len(batch)
    bar.close()
    return sims


def _plan_results(ctx: SearchContext, screened: _Screening, sims: dict[PlanKey, TrainingResult]) -> list[PlanResult]:
    """The simulated plans with what the screen predicted for them, in key order."""
    rank = {p[2]: i for i, p in enumerate(screened.order)}
    by_key = {p[2]: p for p in screened.order + screened.front}
    return [
        PlanResult(
            parallel=_parallel_of(k),
            training=ctx.training.model_copy(
                update={"micro_batch": k[9], "recompute": k[10], "offload": offload_spec(k)}
            ),
            config=ctx.run_config(k),
            result=sims[k],
            screen_step_s=by_key[k][0],
            screen_memory_gb=by_key[k][1] / 1e9,
            screen_rank=rank.get(k, -1),
        )
        for k in sorted(sims)
    ]


def _search_result(
    ctx: SearchContext,
    num_gpus: int,
    screened: _Screening,
    plans: list[PlanResult],
    top: int,
    workers: int,
    timings: tuple[float, float, float],
) -> PlanSearchResult:
    """The search's report (``timings``: screen, simulation and wall seconds); an error when no simulated
    plan fits in memory."""
    fitting = sorted((p for p in plans if p.result.fits_in_memory), key=_plan_sort)
    if not fitting:
        raise ClusterSimError(
            f"no simulated plan of {ctx.model.name} fits in {ctx.cluster_spec.gpu} memory; add GPUs or lower the "
            "global batch"
        )
    screen_s, simulate_s, wall = timings
    return PlanSearchResult(
        model=ctx.model.name,
        gpu=ctx.cluster_spec.gpu,
        num_gpus=num_gpus,
        global_batch=ctx.training.global_batch,
        seq_len=ctx.training.seq_len,
        best=fitting[:top],
        pareto=_pareto(fitting),
        simulated=sorted(plans, key=_plan_sort),
        candidates=screened.candidates,
        feasible=screened.feasible,
        pruned=dict(sorted(screened.pruned.items(), key=lambda kv: (-kv[1], kv[0]))),
        screen_s=screen_s,
        simulate_s=simulate_s,
        wall_s=wall,
        workers=workers,
    )


# ---- simulation of the short list -------------------------------------------------------------------


def _tasks_of(key: PlanKey, global_batch: int) -> int:
    """Engine tasks of a plan: a forward and a backward (and a weight task) per micro-batch and chunk."""
    tp, pp, dp, cp, ep, sp, vpp, zero, schedule, mb, _ = key[:11]
    m = global_batch // (mb * dp)
    return m * pp * vpp * (3 if get_schedule(schedule).split_weight else 2)


def _pick_spread(front: Sequence[Any], n: int) -> list[Any]:
    """Up to ``n`` members of a front, evenly spaced along it, both ends included."""
    if len(front) <= n:
        return list(front)
    if n <= 1:
        return list(front[:n])
    idx = sorted({round(i * (len(front) - 1) / (n - 1)) for i in range(n)})
    return [front[i] for i in idx]


def _parallel_of(key: PlanKey) -> ParallelSpec:
    tp, pp, dp, cp, ep, sp, vpp, zero, schedule, _, _ = key[:11]
    return ParallelSpec(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, sp=sp, vpp=vpp, zero=zero, schedule=schedule)


def _key_of(p: PlanResult) -> PlanKey:
    a, t = p.parallel, p.training
    key = (a.tp, a.pp, a.dp, a.cp, a.ep, a.sp, a.vpp, a.zero, a.schedule, t.micro_batch, t.recompute)
    return (*key, offload_name(t.offload))


def _plan_sort(p: PlanResult) -> tuple[float, PlanKey]:
    return (p.result.step_time_s, _key_of(p))


def _pareto(plans: list[PlanResult]) -> list[PlanResult]:
    """Simulated plans that no other beats on step time, peak memory and (when reported) energy per step."""
    energy = [p.energy_j for p in plans]
    with_energy = all(e is not None for e in energy)
    points = [
        [p.result.step_time_s, p.result.memory_per_gpu_gb.peak] + ([e] if with_energy else [])
        for p, e in zip(plans, energy, strict=True)
    ]
    mask = pareto_front(points, [True] * len(points[0]))
    return [p for p, on in zip(plans, mask, strict=True) if on]


# ---- where the work runs: this process, or worker processes each holding a Screen ----------------------


def simulate_plan(ctx: SearchContext, key: PlanKey) -> TrainingResult | str:
    """Simulate one plan (timeline dropped: it is large and the search reports metrics), or why it failed."""
    try:
        res = simulate_training(ctx.run_config(key), ctx.profile)
    except ValidationError as exc:
        return first_validation_error(exc)
    except ClusterSimError as exc:
        return str(exc)
    return res.model_copy(update={"timeline": None})


#: This worker process's Screen. ProcessPoolExecutor runs a worker's tasks as picklable module-level
#: functions and sets per-process state only through its ``initializer``, so the worker's Screen has to live
#: in a module-level slot; :func:`_init_worker` fills it in each worker (the parent never uses it: the
#: in-process path holds its own Screen in :class:`_Pool`).
_WORKER: Screen | None = None


def _init_worker(ctx: SearchContext) -> None:
    """Pool initializer: this worker's Screen for the search context."""
    global _WORKER
    _WORKER = Screen(ctx)


def _worker_screen(task: tuple[int, int]) -> TaskOut:
    assert _WORKER is not None
    return _WORKER.task(task)


def _worker_simulate(key: PlanKey) -> TrainingResult | str:
    assert _WORKER is not None
    return simulate_plan(_WORKER.ctx, key)


class _Pool:
    """The worker processes (or this one, for ``workers=1``), each holding a Screen of the search context."""

    def __init__(self, ctx: SearchContext, workers: int) -> None:
        self.ctx, self.workers = ctx, workers
        self.executor: Any = None
        self.local: Screen | None = None

    def __enter__(self) -> _Pool:
        if self.workers == 1:
            self.local = Screen(self.ctx)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            self.executor = ProcessPoolExecutor(
                self.workers, mp_context=mp.get_context(method), initializer=_init_worker, initargs=(self.ctx,)
            )
        return self

    def screen(self, work: Sequence[tuple[int, int]]) -> Iterable[TaskOut]:
        """Screen every (tp, cp) task, results in task order."""
        if self.local is not None:
            return self._map(self.local.task, work)
        return self._map(_worker_screen, work)

    def simulate(self, keys: Sequence[PlanKey]) -> Iterable[TrainingResult | str]:
        """Simulate every plan, results in key order."""
        if self.local is not None:
            return self._map(partial(simulate_plan, self.ctx), keys)
        return self._map(_worker_simulate, keys)

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterable[Any]:
        if self.executor is None:
            return map(fn, items)
        return self.executor.map(fn, items, chunksize=1)

    def __exit__(self, *exc: object) -> None:
        if self.executor is not None:
            self.executor.shutdown(cancel_futures=True)
        self.local = None


def _progress(items: Iterable[Any] | None, total: int | None, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        items,
        total=total,
        desc=desc,
        unit="task" if items is not None else "plan",
        disable=not enabled,
        file=sys.stderr,
        leave=False,
    )
