"""v0 GPU power model: idle, power by utilisation and boundness, and the power limit.

Board power at SM clock ``f``::

    P = active_idle + compute_dynamic * u_compute * (f / f_max)^k + memory_dynamic * u_memory

When that exceeds the power limit the GPU lowers its SM clock until it fits (memory power does
not scale with the SM clock), which slows compute-bound work by ``f / f_max``. On the shared
H100 data a large bf16 GEMM pins the board at its 700 W limit with the clock down from 1980 to
~1365 MHz; a calibrated profile reproduces that, the datasheet profile assumes TDP is reached
exactly at full load.
"""

from __future__ import annotations

from dataclasses import dataclass

from hwmodels.errors import ClusterSimError
from hwmodels.profile import PowerParams


@dataclass(frozen=True)
class PowerState:
    """Steady state of a GPU under a given load."""

    power_w: float
    sm_clock_mhz: float
    compute_slowdown: float  # time multiplier for compute-bound work (>= 1 when throttled)


def _check_util(name: str, u: float) -> None:
    if not 0.0 <= u <= 1.0:
        raise ClusterSimError(f"{name} must be between 0 and 1, got {u}")


def power_state(
    p: PowerParams,
    compute_util: float,
    memory_util: float = 0.0,
    *,
    power_limit_w: float | None = None,
    sm_clock_mhz: float | None = None,
) -> PowerState:
    """Power draw and SM clock for a load; ``power_limit_w`` / ``sm_clock_mhz`` override the board's."""
    _check_util("compute_util", compute_util)
    _check_util("memory_util", memory_util)
    limit = p.power_limit_w if power_limit_w is None else power_limit_w
    f_max = p.max_sm_clock_mhz if sm_clock_mhz is None else min(sm_clock_mhz, p.max_sm_clock_mhz)
    if limit <= p.active_idle_w:
        raise ClusterSimError(f"power limit {limit} W is below the GPU's active idle power {p.active_idle_w} W")
    if compute_util == 0.0 and memory_util == 0.0:
        return PowerState(power_w=p.idle_w, sm_clock_mhz=f_max, compute_slowdown=1.0)
    k = p.clock_power_exponent
    mem_w = p.memory_dynamic_w * memory_util
    comp_w = p.compute_dynamic_w * compute_util
    demand = p.active_idle_w + comp_w * (f_max / p.max_sm_clock_mhz) ** k + mem_w
    if demand <= limit or comp_w == 0.0:
        return PowerState(power_w=min(demand, limit), sm_clock_mhz=f_max, compute_slowdown=p.max_sm_clock_mhz / f_max)
    headroom = max(limit - p.active_idle_w - mem_w, 1e-9)
    f = p.max_sm_clock_mhz * (headroom / comp_w) ** (1.0 / k)
    return PowerState(power_w=limit, sm_clock_mhz=f, compute_slowdown=p.max_sm_clock_mhz / f)


def energy_j(p: PowerParams, seconds: float, compute_util: float, memory_util: float = 0.0) -> float:
    """Energy of running a steady load for ``seconds``."""
    if seconds < 0:
        raise ClusterSimError(f"seconds must be >= 0, got {seconds}")
    return power_state(p, compute_util, memory_util).power_w * seconds
