"""v0 power model: idle, load, and throttling at the power limit."""

from __future__ import annotations

import pytest

from hwmodels.errors import ClusterSimError
from hwmodels.power import energy_j, power_state
from hwmodels.profile import PowerParams, datasheet_profile

# H100 SXM parameters derived from the shared NVML measurements: active idle 130 W, 700 W limit
# reached by a large bf16 GEMM with the SM clock at 1365 of 1980 MHz (cubic clock-power law), and
# 509 W on a copy at ~0.9 of HBM bandwidth.
H100_MEASURED = PowerParams(
    idle_w=73.5,
    active_idle_w=130.0,
    compute_dynamic_w=(700 - 130) * (1980 / 1365) ** 3,
    memory_dynamic_w=(509 - 130) / 0.9,
    power_limit_w=700,
    max_sm_clock_mhz=1980,
)


def test_idle_and_monotone_in_load() -> None:
    p = datasheet_profile("a100-sxm4-80gb").power
    assert power_state(p, 0.0, 0.0).power_w == p.idle_w
    powers = [power_state(p, u, 0.2).power_w for u in [0.1, 0.3, 0.5, 0.8, 1.0]]
    assert powers == sorted(powers)
    assert powers[-1] <= p.power_limit_w


def test_power_limit_throttles_the_clock_like_the_h100_measurement() -> None:
    full = power_state(H100_MEASURED, 1.0, 0.0)
    assert full.power_w == pytest.approx(700)
    assert full.sm_clock_mhz == pytest.approx(1365, rel=0.01)
    assert full.compute_slowdown == pytest.approx(1980 / 1365, rel=0.01)
    copy = power_state(H100_MEASURED, 0.0, 0.9)
    assert copy.power_w == pytest.approx(509, rel=0.01)
    assert copy.sm_clock_mhz == 1980


def test_lower_cap_means_lower_clock() -> None:
    a = power_state(H100_MEASURED, 1.0, power_limit_w=500)
    b = power_state(H100_MEASURED, 1.0, power_limit_w=700)
    assert a.sm_clock_mhz < b.sm_clock_mhz and a.power_w == 500


def test_bad_input() -> None:
    with pytest.raises(ClusterSimError):
        power_state(H100_MEASURED, 1.5)
    with pytest.raises(ClusterSimError):
        power_state(H100_MEASURED, 0.5, power_limit_w=50)
    with pytest.raises(ClusterSimError):
        energy_j(H100_MEASURED, -1.0, 0.5)
    assert energy_j(H100_MEASURED, 2.0, 0.0) == pytest.approx(2 * 73.5)
