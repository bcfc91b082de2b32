"""DVFS sweeps: the energy-time trade-off of locked SM clocks and power caps.

Each point re-simulates the run at one setting (a locked clock, ``nvidia-smi -lgc``, or a power
cap, ``nvidia-smi -pl``), so the time side includes everything the clock touches (compute-bound
kernels below the clock knee, bubbles that follow them) and the energy side is the power model
over that timeline. Compute-bound training has its energy minimum below the maximum clock (power
falls faster than the step stretches until static power dominates); memory-bound decode barely
slows at all, so its optimum sits far lower.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hwmodels.errors import ClusterSimError
from hwmodels.profile import Profile, load_profile
from simulator.search.pareto import pareto_front


@dataclass(frozen=True)
class DvfsPoint:
    """One setting of a sweep and what the run does there."""

    setting: str  # "clock" or "cap"
    value: float  # MHz or W
    sm_clock_mhz: float  # the clock the run ran at (throttled under a cap)
    time_s: float  # step time (training) or first arrival to last completion (serving)
    work: float  # tokens trained (per step) or output tokens served
    gpu_energy_j: float
    facility_energy_j: float
    avg_gpu_power_w: float
    feasible: bool = True  # False: the setting cannot be run (a cap below what the lowest clock draws)
    reason: str = ""  # why not, for an infeasible setting

    @classmethod
    def infeasible(cls, setting: str, value: float, reason: str) -> DvfsPoint:
        """A setting the run cannot meet: every figure NaN, the reason kept for the table."""
        nan = float("nan")
        return cls(setting, value, nan, nan, nan, nan, nan, nan, feasible=False, reason=reason)

    @property
    def gpu_j_per_token(self) -> float:
        """GPU energy per token, J."""
        return self.gpu_energy_j / self.work

    @property
    def seconds_per_token(self) -> float:
        """Run time per token, s."""
        return self.time_s / self.work


def _kind(data: dict[str, Any]) -> Literal["training", "serving"]:
    return "training" if "cluster" in data or "parallel" in data or "training" in data else "serving"


def _as_dict(config: dict[str, Any] | str | Path) -> dict[str, Any]:
    from simulator.core.config import read_yaml

    return dict(config) if isinstance(config, dict) else read_yaml(config)


def _run(data: dict[str, Any], profile: Profile | str | None) -> tuple[float, float, Any]:
    if _kind(data) == "training":
        from simulator.training.simulate import simulate_training

        r = simulate_training(data, profile)
        return r.step_time_s, r.tokens_per_s * r.step_time_s, r
    from simulator.serving.simulate import simulate_serving

    r = simulate_serving(data, profile)
    return r.duration_s, r.output_tokens, r  # whole run: the energy is whole-run too


def default_clocks(gpu: str, points: int = 9) -> list[float]:
    """Evenly spaced clocks from the lowest the model considers to the maximum (MHz)."""
    p = load_profile(gpu=gpu).power
    return [float(round(c)) for c in np.linspace(p.lowest_clock_mhz, p.max_sm_clock_mhz, points)]


def sweep(
    config: dict[str, Any] | str | Path,
    *,
    clocks_mhz: Sequence[float] | None = None,
    caps_w: Sequence[float] | None = None,
    profile: Profile | str | None = None,
    progress: bool = False,
) -> list[DvfsPoint]:
    """Simulate ``config`` at each locked clock (default: 9 from the lowest to the max) or each cap."""
    data = _as_dict(config)
    gpu = data.get("cluster", {}).get("gpu") if _kind(data) == "training" else data.get("gpu")
    if gpu is None:
        raise ClusterSimError("the config names no GPU (cluster.gpu for training, gpu for serving)")
    if clocks_mhz is not None and caps_w is not None:
        raise ClusterSimError("sweep either clocks_mhz or caps_w, not both")
    settings = (
        [("cap", float(w)) for w in caps_w]
        if caps_w is not None
        else [("clock", float(c)) for c in (clocks_mhz if clocks_mhz is not None else default_clocks(gpu))]
    )
    if not settings:
        raise ClusterSimError("give at least one clock or cap to sweep")
    out = []
    iterator: Any = settings
    if progress:
        from tqdm import tqdm

        iterator = tqdm(settings, desc="DVFS sweep", unit="setting")
    errors: list[ClusterSimError] = []
    for setting, value in iterator:
        power = dict(data.get("power") or {})
        power.pop("stage_clocks_mhz", None)
        power.update({"sm_clock_mhz": value} if setting == "clock" else {"power_limit_w": value})
        try:
            secs, work, r = _run({**data, "power": power}, profile)
        except ClusterSimError as exc:  # this setting cannot run (e.g. a cap below the lowest clock's power)
            errors.append(exc)
            out.append(DvfsPoint.infeasible(setting, value, str(exc)))
            continue
        clocks = r.power["sm_clock_mhz"]
        clock = float(np.mean(clocks)) if isinstance(clocks, list) else float(clocks)
        out.append(
            DvfsPoint(
                setting, value, clock, secs, work, r.energy_j["gpu"], r.energy_j["facility"], r.power["avg_gpu_power_w"]
            )
        )
    if len(errors) == len(out):  # nothing ran: the config itself (or every setting) is the problem
        raise errors[0]
    return out


def feasible(points: Sequence[DvfsPoint]) -> list[DvfsPoint]:
    """The points whose setting could be run (a sweep marks the others ``feasible=False`` with a reason)."""
    return [p for p in points if p.feasible]


def optimum(points: Sequence[DvfsPoint], metric: str = "gpu_j_per_token") -> DvfsPoint:
    """The point with the least energy per token (GPU energy by default; ``facility_j_per_token`` counts
    the host and PUE too, which favours faster clocks)."""
    ok = feasible(points)
    if not ok:
        raise ClusterSimError("no feasible DVFS setting: every clock or cap failed; raise the caps or clocks")
    if metric == "facility_j_per_token":
        return min(ok, key=lambda p: p.facility_energy_j / p.work)
    return min(ok, key=lambda p: getattr(p, metric))


def front(points: Sequence[DvfsPoint]) -> list[DvfsPoint]:
    """The energy-time Pareto front of the feasible points (time per token vs GPU energy per token, both minimised)."""
    ok = feasible(points)
    mask = pareto_front([(p.seconds_per_token, p.gpu_j_per_token) for p in ok], [True, True])
    return [p for p, keep in zip(ok, mask, strict=True) if keep]


def to_rows(points: Sequence[DvfsPoint]) -> list[dict[str, Any]]:
    """Table rows with derived per-token figures (for the CLI, the app and notebooks); an infeasible setting's
    row has ``feasible`` False, its ``reason`` and NaN figures, and is never on the front."""
    on_front = {id(p) for p in front(points)}
    return [
        {
            **asdict(p),
            "gpu_mj_per_token": p.gpu_j_per_token * 1e3,
            "ms_per_token": p.seconds_per_token * 1e3,
            "pareto": id(p) in on_front,
        }
        for p in points
    ]


@dataclass(frozen=True)
class PhaseDvfs:
    """A phase-aware governor vs running every kernel at the maximum clock (one GPU, one step)."""

    light_mhz: float
    heavy_mhz: float
    base_time_s: float
    time_s: float
    base_energy_j: float
    energy_j: float
    base_light_power_w: float  # average power of the light (not compute-bound) kernels at max clock
    light_power_w: float  # ... at the light clock
    light_time_share: float  # share of the step in light kernels

    @property
    def slowdown(self) -> float:
        """Step-time change against the maximum clock (0.05 = 5% slower)."""
        return self.time_s / self.base_time_s - 1.0

    @property
    def energy_change(self) -> float:
        """Step-energy change against the maximum clock (-0.1 = 10% less)."""
        return self.energy_j / self.base_energy_j - 1.0

    @property
    def light_power_change(self) -> float:
        """Change of the light kernels' average power at the light clock against the maximum clock."""
        return self.light_power_w / self.base_light_power_w - 1.0


def phase_dvfs(
    config: dict[str, Any] | str | Path, light_mhz: float, heavy_mhz: float, profile: Profile | str | None = None
) -> PhaseDvfs:
    """Per-kernel DVFS on one GPU: compute-bound kernels (as classified at max clock) at ``heavy_mhz``,
    the rest (memory-bound, launch-bound, communication) at ``light_mhz``.

    Each kernel's time comes from the cost model at its clock and its energy from the power model
    over that time (:func:`hwmodels.power.window_energy_j`); the step is every layer's kernels
    forward and backward for each micro-batch (a single rank: no pipeline, no DP).
    """
    from hwmodels.power import window_energy_j
    from simulator.core.config import load_config
    from simulator.core.costs import op_cost, op_work
    from simulator.core.workload import head_ops, layer_ops

    cfg = load_config(_as_dict(config))
    p, t, m = cfg.parallel, cfg.training, cfg.model
    if p.pp * p.dp * p.cp * p.tp != 1:
        raise ClusterSimError("phase_dvfs models one GPU: set tp = pp = dp = cp = 1 and cluster.num_gpus = 1")
    base = load_profile(profile, gpu=cfg.cluster.gpu)
    f_max = base.power.max_sm_clock_mhz
    st = cfg.stack
    ops = [
        op for i in range(m.num_layers) for op in layer_ops(m, i, t.micro_batch, t.seq_len, dtype=t.precision, stack=st)
    ]
    ops += head_ops(m, t.micro_batch, t.seq_len, dtype=t.precision, vocab_multiple=st.vocab_divisible_by, stack=st)
    heavy = [op_cost(op, base, {}, t.precision).bound == "compute" for op in ops]
    num_mb = t.global_batch // t.micro_batch

    def run(light: float, hot: float) -> tuple[float, float, float, float]:
        total_t = total_e = light_t = light_e = 0.0
        for op, is_heavy in zip(ops, heavy, strict=True):
            clock = hot if is_heavy else light
            prof = base.at(sm_clock_mhz=clock)
            c = op_cost(op, prof, {}, t.precision)
            secs = c.forward_s + c.backward_s
            tensor, hbm = op_work([op], base, t.precision)
            energy = window_energy_j(base.power, secs, secs, tensor, hbm, prof.clock_ratio)
            total_t, total_e = total_t + secs, total_e + energy
            if not is_heavy:
                light_t, light_e = light_t + secs, light_e + energy
        return total_t * num_mb, total_e * num_mb, light_e / max(light_t, 1e-12), light_t / max(total_t, 1e-12)

    t0, e0, p0, share = run(f_max, f_max)
    t1, e1, p1, _ = run(light_mhz, heavy_mhz)
    return PhaseDvfs(light_mhz, heavy_mhz, t0, t1, e0, e1, p0, p1, share)
