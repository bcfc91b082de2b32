"""GPU power model: idle, power by activity and clock, and the power limit.

Board power at SM clock ``f`` (``r = f / f_max``)::

    P = active_idle + sm_active * busy * r^k + compute * u * r^(k-1) + memory * m

``busy`` is the fraction of time a kernel runs, ``u`` the math units' work rate (achieved FLOP/s
over the dtype's peak at max clock), ``m`` the HBM traffic over its peak. The clock term follows
P ~ f V^2 with the voltage falling with the clock: the energy of a unit of math work scales as
``r^(k-1)``, the clock tree's as ``r^k``; memory power does not depend on the SM clock.

When the average power over a window exceeds the limit the GPU lowers its SM clock until it fits
(the limit is enforced on the average: the shared H100 50%-duty GEMM run draws 537 W at full
clock although its GEMM bursts alone are above 700 W). The window is about a second
(``simulator.energy.accounting.LIMIT_WINDOW_S``, an estimate): a training step's steady phase is
longer, so that phase must fit the limit, not the step's average with its pipeline bubble.

Below the max clock a compute-bound kernel's time is ``clock_share / r + 1 - clock_share`` of its
full-clock time (its SM cycles scale with the clock, its stalls do not), never faster than
``clock_limited_eff`` of the clock-scaled peak (:func:`hwmodels.profile.clock_efficiency`). The shared
H100 data fixes the share: the 8192^3 bf16 GEMM runs at 721 TFLOP/s in a short run at 1980 MHz and
at 668 TFLOP/s at 1365 MHz under the 700 W limit, so ``clock_share`` = 0.18 (3% slower at 1670 MHz).
Profiles without a throttled measurement keep ``clock_share`` = 0: no loss until the cap binds.
Published evidence on sustained clocks and the limiter's window: docs/research/h100-sustained-clocks.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwmodels.errors import ClusterSimError
from hwmodels.profile import PowerParams, clock_efficiency


@dataclass(frozen=True)
class PowerState:
    """Steady state of a GPU under a given load."""

    power_w: float
    sm_clock_mhz: float
    compute_slowdown: float  # time multiplier for the load's compute-bound work (>= 1 when throttled)


def _check_util(name: str, u: float) -> None:
    if not 0.0 <= u <= 1.0:
        raise ClusterSimError(f"{name} must be between 0 and 1, got {u}")


def activity_power_w(p: PowerParams, busy: float, compute: float, memory: float, clock_ratio: float = 1.0) -> float:
    """Board power for average activity ``busy``/``compute``/``memory`` at ``clock_ratio`` = f / f_max."""
    k = p.clock_power_exponent
    r = clock_ratio
    return (
        p.active_idle_w
        + p.sm_active_w * busy * r**k
        + p.compute_dynamic_w * compute * r ** (k - 1.0)
        + p.memory_dynamic_w * memory
    )


def window_energy_j(
    p: PowerParams, seconds: float, busy_s: float, tensor_s: float, hbm_s: float, clock_ratio: float = 1.0
) -> float:
    """Energy of a window of ``seconds`` in which kernels ran ``busy_s``.

    ``tensor_s`` is the math work as seconds at the dtype's full peak (sum of FLOPs / peak) and
    ``hbm_s`` the memory traffic as seconds at full bandwidth: both are fixed by the work, not the
    clock, so the energy is the integral of :func:`activity_power_w` without the timeline.
    """
    k = p.clock_power_exponent
    r = clock_ratio
    return (
        p.active_idle_w * seconds
        + p.sm_active_w * busy_s * r**k
        + p.compute_dynamic_w * tensor_s * r ** (k - 1.0)
        + p.memory_dynamic_w * hbm_s
    )


def power_state(
    p: PowerParams,
    compute_util: float,
    memory_util: float = 0.0,
    *,
    duty: float = 1.0,
    power_limit_w: float | None = None,
    sm_clock_mhz: float | None = None,
) -> PowerState:
    """Steady state of a kernel loop that runs a ``duty`` fraction of the time.

    ``compute_util`` and ``memory_util`` are the kernel's own utilisation at max clock; the rest of
    the time the board idles between kernels. The clock (at most ``sm_clock_mhz``) falls until the
    average power fits ``power_limit_w`` (default: the board's limit). A kernel whose memory utilisation
    exceeds its compute utilisation is memory-bound: only the clock-scaled peak can slow it (as in
    :meth:`hwmodels.profile.Curve.time`, where the clock scales the compute time alone).
    """
    _check_util("compute_util", compute_util)
    _check_util("memory_util", memory_util)
    _check_util("duty", duty)
    limit = p.power_limit_w if power_limit_w is None else power_limit_w
    f_max = p.max_sm_clock_mhz if sm_clock_mhz is None else min(sm_clock_mhz, p.max_sm_clock_mhz)
    if limit <= p.active_idle_w:
        raise ClusterSimError(f"power limit {limit} W is below the GPU's active idle power {p.active_idle_w:.0f} W")
    if duty == 0.0 or (compute_util == 0.0 and memory_util == 0.0):
        return PowerState(power_w=p.idle_w, sm_clock_mhz=f_max, compute_slowdown=1.0)

    def at(r: float) -> tuple[float, float]:
        share = p.clock_share if compute_util >= memory_util else 0.0  # memory-bound: stalls set its time
        u = clock_efficiency(compute_util, r, p.clock_limited_eff, share)  # work rate at this clock
        speed = u / compute_util if compute_util > 0 else 1.0
        load = activity_power_w(p, 1.0, u, memory_util * speed, r)
        return duty * load + (1.0 - duty) * p.active_idle_w, speed

    r_hi = f_max / p.max_sm_clock_mhz
    power, speed = at(r_hi)
    if power > limit:
        lo, hi = 1e-3, r_hi
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if at(mid)[0] <= limit else (lo, mid)
        r_hi = lo
        power, speed = at(lo)
    return PowerState(power_w=power, sm_clock_mhz=r_hi * p.max_sm_clock_mhz, compute_slowdown=1.0 / speed)


def energy_j(p: PowerParams, seconds: float, compute_util: float, memory_util: float = 0.0) -> float:
    """Energy of running a steady load for ``seconds`` (throttled to the power limit if need be)."""
    if seconds < 0:
        raise ClusterSimError(f"seconds must be >= 0, got {seconds}")
    return power_state(p, compute_util, memory_util).power_w * seconds
