"""Where a sweep's points are simulated: in this process, a local process pool, or as Ray tasks.

Every backend runs the same per-point function (:func:`simulator.search.sweep.run.evaluate_point`, handed
in as :attr:`Runner.evaluate`) and reports each job's record through the same ``on_done`` callback, so
every backend gives the same frame. A worker that dies reports an ``error`` record instead of stopping
the sweep.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from hwmodels.errors import ClusterSimError
from simulator.search.sweep.spec import Kind

Backend = Literal["local", "ray"]

#: A point's ``status``: simulated, rejected by the config check or the simulator, or a crash.
STATUS_OK, STATUS_INVALID, STATUS_ERROR = "ok", "invalid", "error"


@dataclass
class Job:
    """One distinct resolved config to simulate, and the grid indices of the points that resolve to it."""

    key: str
    cfg: BaseModel
    indices: list[int] = field(default_factory=list)


#: The per-point function: (kind, config, profile) -> {status, reason, metrics, sim_s}.
Evaluate = Callable[[Kind, BaseModel, str | None], dict[str, Any]]
OnDone = Callable[[Job, dict[str, Any]], None]


@dataclass(frozen=True)
class Runner:
    """How a sweep's jobs run: the per-point function with its kind and profile, and on which backend."""

    evaluate: Evaluate
    kind: Kind
    profile: str | None = None
    workers: int = 1
    backend: Backend = "local"
    ray_address: str | None = None

    def run(self, jobs: list[Job], on_done: OnDone) -> None:
        """Simulate ``jobs``, calling ``on_done(job, record)`` as each finishes (in this thread)."""
        if not jobs:
            return  # everything was pruned or cached: do not start workers or Ray
        if self.backend == "ray":
            _run_ray(self, jobs, on_done)
        elif self.workers > 1 and len(jobs) > 1:
            _run_pool(self, jobs, on_done)
        else:
            _run_inprocess(self, jobs, on_done)


def check_backend(workers: Any, backend: Any) -> None:
    """One-line errors for a worker count or backend name the sweep cannot use."""
    if not isinstance(workers, int) or workers < 1:
        raise ClusterSimError(f"workers must be a positive integer, got {workers!r}")
    if backend not in ("local", "ray"):
        raise ClusterSimError(f"backend must be local or ray, got {backend!r}")


def _crashed(exc: BaseException) -> dict[str, Any]:
    """The record of a job whose worker died (killed, out of memory, lost with its node)."""
    return {"status": STATUS_ERROR, "reason": f"{type(exc).__name__}: {exc}", "metrics": {}}


def _windowed(
    jobs: Iterable[Job],
    window: int,
    inflight: dict[Any, Job],
    submit: Callable[[Job], Any],
    next_done: Callable[[], Iterable[Any]],
    result: Callable[[Any], dict[str, Any]],
    on_done: OnDone,
) -> None:
    """Keep at most ``window`` jobs in flight (``inflight``: handle -> job) and report each as it finishes.

    A bounded window of submissions keeps memory flat for big sweeps and lets Ctrl-C stop quickly."""
    pending = iter(jobs)
    while True:
        while len(inflight) < window and (job := next(pending, None)) is not None:
            inflight[submit(job)] = job
        if not inflight:
            break
        for handle in next_done():
            job = inflight.pop(handle)
            try:
                out = result(handle)
            except Exception as exc:  # the worker died
                out = _crashed(exc)
            on_done(job, out)


def _run_inprocess(runner: Runner, jobs: list[Job], on_done: OnDone) -> None:
    for job in jobs:
        on_done(job, runner.evaluate(runner.kind, job.cfg, runner.profile))


def _run_pool(runner: Runner, jobs: list[Job], on_done: OnDone) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(max_workers=runner.workers, mp_context=mp.get_context(method))
    inflight: dict[Any, Job] = {}

    def next_done() -> list[Any]:
        done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
        return sorted(done, key=lambda f: inflight[f].indices[0])

    try:
        _windowed(
            jobs,
            4 * runner.workers,
            inflight,
            submit=lambda job: pool.submit(runner.evaluate, runner.kind, job.cfg, runner.profile),
            next_done=next_done,
            result=lambda fut: fut.result(),
            on_done=on_done,
        )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterSimError("backend ray needs Ray: pip install 'clustersim[distributed]'") from None
    return ray


def _start_ray(ray: Any, workers: int, address: str | None) -> bool:
    """Start (no ``address``) or join a Ray unless the caller already did; True when the sweep started one
    and so must shut it down."""
    if ray.is_initialized():
        return False
    if address is None:
        # "local" always starts a private instance, never joins one that RAY_ADDRESS or `ray start` set up
        ray.init(address="local", num_cpus=workers if workers > 1 else None, include_dashboard=False)
        return True
    try:
        ray.init(address=address)
    except ConnectionError:
        raise ClusterSimError(
            f"cannot reach a Ray cluster at --ray-address {address!r}: start one with `ray start --head` "
            "or pass the head's host:port"
        ) from None
    return True


def _run_ray(runner: Runner, jobs: list[Job], on_done: OnDone) -> None:
    ray = _import_ray()
    started = _start_ray(ray, runner.workers, runner.ray_address)
    inflight: dict[Any, Job] = {}
    try:
        task = ray.remote(num_cpus=1)(runner.evaluate)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        _windowed(
            jobs,
            runner.workers if runner.workers > 1 else max(2 * cpus, 2),
            inflight,
            submit=lambda job: task.remote(runner.kind, job.cfg, runner.profile),
            next_done=lambda: ray.wait(list(inflight), num_returns=1)[0],
            result=ray.get,
            on_done=on_done,
        )
    except BaseException:
        for ref in inflight:
            ray.cancel(ref)
        raise
    finally:
        if started:
            ray.shutdown()
