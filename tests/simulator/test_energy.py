"""Energy, carbon and cost on training and serving results; power caps, locked clocks, DVFS shape."""

from __future__ import annotations

import pytest

from hwmodels.catalogue import get_gpu
from hwmodels.errors import ClusterSimError
from simulator.core.config import load_config, read_yaml
from simulator.core.resources import example_path
from simulator.search import dvfs
from simulator.serving.simulate import simulate_serving
from simulator.training.simulate import simulate_training

TRAIN = read_yaml(example_path("quickstart.yaml"))  # Llama-3 8B, TP8 on one DGX H100
SERVE = {**read_yaml(example_path("serve-llama3-8b-h100.yaml"))}
SERVE["workload"] = {**SERVE.get("workload", {}), "num_requests": 150}


def _train(**sections) -> object:
    return simulate_training({**TRAIN, **sections})


def test_tdp_mode_is_gpu_hours_times_tdp_times_pue() -> None:
    r = _train(power={"mode": "tdp"}, site={"pue": 1.2, "grid_kg_per_kwh": 0.5, "price_usd_per_gpu_hour": 2.0})
    tdp = get_gpu("h100").tdp_w
    gpu_j = 8 * tdp * r.step_time_s
    assert r.energy_j["gpu"] == pytest.approx(gpu_j) and r.energy_j["node"] == 0.0
    assert r.energy_j["facility"] == pytest.approx(gpu_j * 1.2)
    assert r.kgco2e["operational"] == pytest.approx(gpu_j * 1.2 / 3.6e6 * 0.5)
    assert r.cost_usd == pytest.approx(8 * r.step_time_s / 3600 * 2.0)
    assert r.energy_per_token_j == pytest.approx(r.energy_j["facility"] / (8 * 8192))


def test_modelled_energy_is_below_tdp_and_counts_hosts() -> None:
    r = _train()
    tdp = _train(power={"mode": "tdp"})
    assert 0.3 * tdp.energy_j["gpu"] < r.energy_j["gpu"] < tdp.energy_j["gpu"]
    node = get_gpu("h100")  # one DGX H100: the job holds the whole node
    assert r.energy_j["node"] == pytest.approx(4600 * r.step_time_s)  # dgx-h100 host_power_w
    assert r.energy_j["facility"] == pytest.approx((r.energy_j["gpu"] + r.energy_j["node"]) * 1.1)
    assert r.power["avg_gpu_power_w"] <= node.tdp_w and not r.power["throttled"]
    assert r.kgco2e["embodied"] > 0 and r.cost_usd > 0


def test_power_cap_throttles_the_clock_and_slows_the_step() -> None:
    free = _train()
    capped = _train(power={"power_limit_w": 450})
    print(
        f"cap 450 W: clock {capped.power['sm_clock_mhz'][0]:.0f} MHz, step {capped.step_time_s:.3f} s "
        f"(uncapped {free.step_time_s:.3f} s at {free.power['avg_gpu_power_w']:.0f} W)"
    )
    assert capped.power["throttled"]
    assert capped.power["sm_clock_mhz"][0] < free.power["sm_clock_mhz"][0]
    assert capped.step_time_s > free.step_time_s
    assert capped.power["avg_gpu_power_w"] == pytest.approx(450, rel=0.03)
    with pytest.raises(ClusterSimError, match="cannot be met"):
        _train(power={"power_limit_w": 140})


def test_locked_clock_equals_uniform_stage_clocks() -> None:
    cfg = {**TRAIN, "parallel": {"tp": 4, "pp": 2, "dp": 1}, "training": {**TRAIN["training"], "global_batch": 8}}
    a = simulate_training({**cfg, "power": {"sm_clock_mhz": 1200}})
    b = simulate_training({**cfg, "power": {"stage_clocks_mhz": [1200, 1200]}})
    assert a.step_time_s == pytest.approx(b.step_time_s) and a.energy_j == pytest.approx(b.energy_j)
    with pytest.raises(ClusterSimError, match="one per stage"):
        load_config({**cfg, "power": {"stage_clocks_mhz": [1200]}})


def test_time_to_train_reports_totals() -> None:
    r = _train(training={**TRAIN["training"], "tokens": 1e9})
    steps = 1e9 / (8 * 8192)
    assert r.total_mwh == pytest.approx(r.energy_j["facility"] * steps / 3.6e9)
    assert r.total_tco2e == pytest.approx(sum(r.kgco2e.values()) * steps / 1e3)


def test_serving_result_carries_energy_carbon_and_cost() -> None:
    r = simulate_serving(SERVE)
    out_tokens = r.output_tokens  # whole run (throughput_tokens_per_s is the steady-state window's)
    assert out_tokens == r.requests["output_tokens"].sum()
    assert r.energy_j["facility"] > r.energy_j["gpu"] > 0
    assert r.energy_per_token_j == pytest.approx(r.energy_j["facility"] / out_tokens, rel=1e-6)
    assert r.cost_per_million_output_tokens_usd == pytest.approx(r.cost_usd / out_tokens * 1e6, rel=1e-6)
    assert r.power["avg_gpu_power_w"] < 700


def test_clock_sweep_shape_training_vs_decode_heavy_serving() -> None:
    """Compute-bound training: the facility-energy optimum is below the max clock; decode-heavy
    serving: its optimum is much lower (decode is memory-bound and barely slows)."""
    clocks = dvfs.default_clocks("h100")
    train = dvfs.sweep(TRAIN, clocks_mhz=clocks)
    serve = dvfs.sweep(SERVE, clocks_mhz=clocks)
    t_opt = dvfs.optimum(train, "facility_j_per_token").value
    s_opt = dvfs.optimum(serve, "facility_j_per_token").value
    for name, pts in (("training", train), ("serving", serve)):
        print(name, [(round(p.value), round(p.facility_energy_j / p.work * 1e3, 1)) for p in pts], "mJ/token")
    print(f"optimum: training {t_opt:.0f} MHz, serving {s_opt:.0f} MHz (max {clocks[-1]:.0f})")
    assert t_opt < clocks[-1]
    assert s_opt <= 0.7 * t_opt
    # time only grows as the clock falls (the fitted H100 profile: a GEMM's SM cycles, 18% of its time at max
    # clock, scale as 1/f), so the max clock is the fastest point and on the front, with the energy optimum
    times = [p.time_s for p in train]
    assert all(a >= b - 1e-9 for a, b in zip(times, times[1:], strict=False))
    front = dvfs.front(train)
    fastest = max(train, key=lambda p: p.value)
    assert fastest in front and fastest.time_s == pytest.approx(min(times))
    assert any(p.value == pytest.approx(t_opt) for p in front)
    energy = {round(p.value): p.facility_energy_j / p.work for p in train}
    assert energy[round(fastest.value)] > energy[round(t_opt)]  # the last MHz cost energy per token


def test_the_power_limit_holds_over_the_busiest_window_not_the_step_average() -> None:
    """A pipeline step with a large bubble averages below 700 W at full clock, but its steady phase (seconds of
    back-to-back kernels) is above it: the limiter, which averages over ~1 s, lowers the clock for that phase."""
    from simulator.energy.accounting import hottest_window_w

    piped = {"parallel": {**TRAIN["parallel"], "tp": 2, "pp": 4}, "training": {**TRAIN["training"], "global_batch": 8}}
    step_avg = _train(**piped, power={"limit_window_s": 3600.0})  # the whole step is one window
    windowed = _train(**piped)  # default window (1 s) shorter than the 1.3 s step
    print(
        f"\nstep average: {step_avg.power['avg_gpu_power_w']:.0f} W at {step_avg.power['sm_clock_mhz'][0]:.0f} MHz; "
        f"1 s window: {windowed.power['avg_gpu_power_w']:.0f} W average at {windowed.power['sm_clock_mhz'][0]:.0f} MHz"
    )
    assert not step_avg.power["throttled"] and step_avg.power["avg_gpu_power_w"] < 700
    assert windowed.power["throttled"] and windowed.power["sm_clock_mhz"][0] < step_avg.power["sm_clock_mhz"][0]
    assert windowed.step_time_s >= step_avg.step_time_s  # a lower clock never shortens the step
    assert windowed.power["avg_gpu_power_w"] < step_avg.power["avg_gpu_power_w"]
    # the helper: busy stretch longer than the window -> busy power; shorter -> padded with active idle
    from hwmodels.profile import load_profile

    pw = load_profile(None, gpu="h100-sxm5-80gb").power
    assert hottest_window_w(pw, 10.0, 8.0, 8.0 * 650 + 2.0 * pw.active_idle_w, 1.0) == pytest.approx(650)
    assert hottest_window_w(pw, 10.0, 0.5, 0.5 * 650 + 9.5 * pw.active_idle_w, 1.0) == pytest.approx(
        (0.5 * 650 + 0.5 * pw.active_idle_w) / 1.0
    )
