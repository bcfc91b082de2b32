"""Power model: the shared H100 NVML windows, throttling at the limit, and bad input."""

from __future__ import annotations

import pytest

from calibration.fit import fit_power
from hwmodels.errors import ClusterSimError
from hwmodels.power import activity_power_w, energy_j, power_state, window_energy_j
from hwmodels.profile import datasheet_profile, load_profile

PEAK_BF16 = 989.0
PEAK_BW = 3350.0


def _rows(raw: dict) -> dict[str, dict]:
    return {r["kind"]: r for r in raw["power"]}


def _big_gemm_unthrottled_tflops(raw: dict) -> float:
    return next(r["tflops"] for r in raw["gemm"] if r["M"] == r["N"] == r["K"] == 8192 and r["dtype"] == "bfloat16")


def test_shipped_h100_power_model_reproduces_the_nvml_windows(h100_kernels: dict) -> None:
    p = load_profile(gpu="h100-sxm5-80gb").power
    rows = _rows(h100_kernels)
    full = _big_gemm_unthrottled_tflops(h100_kernels) / PEAK_BF16
    predicted = {
        "idle": power_state(p, 0.0, 0.0).power_w,  # cold idle: the meta reading
        "d2d_copy_1GiB": power_state(p, 0.0, rows["d2d_copy_1GiB"]["gbps_rw"] / PEAK_BW).power_w,
        "gemm_bf16_8192": power_state(p, full, 0.079).power_w,
        "gemm_bf16_8192_duty50": power_state(p, full, 0.079, duty=0.5).power_w,
    }
    measured = {k: rows[k]["avg_power_w_counter"] for k in predicted}
    measured["idle"] = h100_kernels["meta"]["nvml"]["power_w"]
    for kind, watts in predicted.items():
        err = watts / measured[kind] - 1
        print(f"{kind:24s} predicted {watts:6.1f} W measured {measured[kind]:6.1f} W error {err:+.1%}")
        assert abs(err) <= 0.10, kind


def test_gemm_at_the_cap_loses_the_measured_throughput(h100_kernels: dict) -> None:
    p = load_profile(gpu="h100-sxm5-80gb").power
    capped = _rows(h100_kernels)["gemm_bf16_8192"]
    unthrottled = _big_gemm_unthrottled_tflops(h100_kernels)
    state = power_state(p, unthrottled / PEAK_BF16, 0.079)
    predicted_tflops = unthrottled / state.compute_slowdown
    print(
        f"clock {state.sm_clock_mhz:.0f} MHz (measured {capped['sm_clock_mhz_median']:.0f}); "
        f"{predicted_tflops:.0f} TFLOP/s at the cap (measured {capped['tflops']:.0f}, unthrottled {unthrottled:.0f})"
    )
    assert state.sm_clock_mhz == pytest.approx(capped["sm_clock_mhz_median"], rel=0.05)
    assert predicted_tflops == pytest.approx(capped["tflops"], rel=0.03)
    assert state.compute_slowdown > 1.04  # the cap costs throughput (measured: 7.4%)
    # and the same GEMM does not throttle at half duty or with a 1000 W limit
    assert power_state(p, unthrottled / PEAK_BF16, duty=0.5).compute_slowdown == 1.0
    assert power_state(p, unthrottled / PEAK_BF16, power_limit_w=1000).compute_slowdown == 1.0


def test_fit_recovers_the_shipped_parameters_from_the_raw_windows(h100_kernels: dict) -> None:
    shipped = load_profile(gpu="h100-sxm5-80gb").power
    base = datasheet_profile("h100-sxm5-80gb").power
    fitted = fit_power({**h100_kernels, "_peak_bw_gbps": PEAK_BW}, base, 1980.0, PEAK_BF16)
    for field in ("sm_active_w", "compute_dynamic_w", "memory_dynamic_w", "clock_power_exponent"):
        assert getattr(fitted, field) == pytest.approx(getattr(shipped, field), rel=1e-6), field
    assert fitted.clock_limited_eff == pytest.approx(668.4 / (989 * 1365 / 1980), rel=0.01)
    # the share of the 8192^3 GEMM's time that is SM cycles: its short run at 1980 MHz against 1365 MHz at the cap
    unthrottled = _big_gemm_unthrottled_tflops(h100_kernels)
    assert fitted.clock_share == pytest.approx((unthrottled / 668.4 - 1) / (1980 / 1365 - 1), rel=0.02)
    assert fitted.clock_share == pytest.approx(shipped.clock_share, rel=1e-9)
    # without the throttled GEMM window, no clock information: the exponent stays at the base value
    partial = {**h100_kernels, "power": [r for r in h100_kernels["power"] if r["kind"] != "gemm_bf16_8192"]}
    refit = fit_power({**partial, "_peak_bw_gbps": PEAK_BW}, base, 1980.0, PEAK_BF16)
    assert refit.clock_power_exponent == base.clock_power_exponent


def test_datasheet_gpu_reaches_tdp_on_a_large_gemm_without_throttling() -> None:
    prof = datasheet_profile("a100-sxm4-80gb")
    p = prof.power
    assert power_state(p, 0.0, 0.0).power_w == p.idle_w
    powers = [power_state(p, u, 0.2).power_w for u in [0.1, 0.3, 0.5, 0.6]]
    assert powers == sorted(powers)
    full = power_state(p, prof.curves["gemm"].eff_max)
    assert full.power_w == pytest.approx(p.power_limit_w) and full.compute_slowdown == pytest.approx(1.0)


def test_lower_cap_means_lower_clock_and_window_energy_matches_power() -> None:
    p = load_profile(gpu="h100-sxm5-80gb").power
    a = power_state(p, 0.72, power_limit_w=500)
    b = power_state(p, 0.72, power_limit_w=700)
    assert a.sm_clock_mhz < b.sm_clock_mhz and a.power_w == pytest.approx(500)
    # a window's energy is the integral of the activity power
    r, secs = 0.8, 2.0
    e = window_energy_j(p, secs, busy_s=1.0, tensor_s=0.5, hbm_s=0.25, clock_ratio=r)
    assert e == pytest.approx(
        activity_power_w(p, 0.5, 0.25, 0.125, r) * secs, rel=1e-12
    )  # busy half the time at u=0.5, m=0.25


def test_bad_input() -> None:
    p = load_profile(gpu="h100-sxm5-80gb").power
    with pytest.raises(ClusterSimError):
        power_state(p, 1.5)
    with pytest.raises(ClusterSimError):
        power_state(p, 0.5, power_limit_w=50)
    with pytest.raises(ClusterSimError):
        energy_j(p, -1.0, 0.5)
    assert energy_j(p, 2.0, 0.0) == pytest.approx(2 * p.idle_w)


def test_a_compute_bound_kernel_slows_smoothly_with_the_clock(h100_kernels: dict) -> None:
    """Between the measured points (full clock, and 1365 MHz at the 700 W cap) a GEMM neither keeps its full speed
    down to a knee nor slows as 1/f: its SM cycles scale with the clock, its stalls do not."""
    from hwmodels.profile import clock_efficiency

    p = load_profile(gpu="h100-sxm5-80gb").power
    e = 0.72
    at = {mhz: clock_efficiency(e, mhz / 1980, p.clock_limited_eff, p.clock_share) for mhz in (1980, 1669, 1365)}
    print({mhz: f"{v / e:.3f}" for mhz, v in at.items()})
    assert at[1980] == pytest.approx(e)
    assert at[1365] / e == pytest.approx(668.4 / _big_gemm_unthrottled_tflops(h100_kernels), rel=0.01)
    assert 1365 / 1980 < at[1669] / e < 1.0 and at[1669] / e > 0.95  # 3% slower at 1669 MHz, not 16%
    assert clock_efficiency(e, 0.9, 0.98, 0.0) == pytest.approx(e)  # no fitted share: the step model
