"""Power over the timeline (simulator.energy.power_trace): the trace must integrate to the result's GPU
energy, per rank and in total, keep the hottest rank at the reported average power, and follow the
timeline's compute and collective intervals."""

from __future__ import annotations

import pytest

from hwmodels.errors import ClusterSimError
from hwmodels.profile import load_profile
from simulator.energy.power_trace import power_trace
from simulator.serving import simulate_serving
from simulator.training import simulate_training

GPU = "h100-sxm5-80gb"
PP4 = {
    "model": "llama3.2-1b",
    "cluster": {"gpu": GPU, "num_gpus": 16},
    "parallel": {"tp": 2, "pp": 4, "dp": 2},
    "training": {"seq_len": 2048, "global_batch": 32, "micro_batch": 1},
}


def _with(**sections: dict) -> dict:
    return {**PP4, **sections}


@pytest.mark.parametrize(
    "cfg",
    [
        PP4,
        _with(power={"power_limit_w": 450}),  # throttled: re-simulated at a lower clock
        _with(power={"stage_clocks_mhz": [1980, 1500, 1500, 1980]}),
        _with(parallel={"tp": 2, "pp": 4, "dp": 2, "schedule": "zero-bubble"}),
    ],
    ids=["1f1b", "capped", "stage-clocks", "zero-bubble"],
)
def test_training_trace_integrates_to_the_gpu_energy(cfg: dict) -> None:
    r = simulate_training(cfg)
    trace = power_trace(r)
    assert trace.kind == "training" and len(trace.ranks) == 4
    assert trace.seconds == pytest.approx(r.step_time_s)
    assert trace.gpu_energy_j() == pytest.approx(r.energy_j["gpu"], rel=0.01)
    for rank in trace.ranks:
        assert rank.gpus == 4  # 16 GPUs over 4 stages
        assert trace.integral_j(rank) == pytest.approx(rank.energy_j, rel=0.01)
        assert rank.busy_w > rank.comm_w > rank.idle_w  # compute > inline collectives > idle
    hottest = max(r_.energy_j for r_ in trace.ranks) / trace.seconds
    assert hottest == pytest.approx(r.power["avg_gpu_power_w"], rel=0.01)


def test_trace_follows_the_timeline() -> None:
    r = simulate_training(PP4)
    trace = power_trace(r)
    p = load_profile(gpu=GPU).power
    for rank in trace.ranks:
        compute = sum(e[1] - e[0] for e in r.timeline.events if e[2] == rank.rank and e[3] == "compute")
        tp = sum(e[1] - e[0] for e in r.timeline.events if e[2] == rank.rank and e[3] == "tp")
        assert rank.busy_s == pytest.approx(compute) and rank.comm_s == pytest.approx(tp)
        assert rank.idle_w == pytest.approx(p.active_idle_w)
        segs = trace.segments(rank)
        assert segs[0][0] == 0.0 and segs[-1][1] == pytest.approx(r.step_time_s)
        assert all(a[1] == pytest.approx(b[0]) for a, b in zip(segs, segs[1:], strict=False))  # no gaps
        _, watts = trace.binned(rank, 64)
        assert sum(watts) / len(watts) == pytest.approx(rank.energy_j / trace.seconds, rel=1e-9)
    frame = trace.to_frame()
    assert list(frame.columns) == ["rank", "start_s", "end_s", "power_w"]
    assert ((frame["end_s"] - frame["start_s"]) * frame["power_w"]).sum() * 4 == pytest.approx(r.energy_j["gpu"])


def test_tdp_mode_is_flat_at_tdp() -> None:
    r = simulate_training(_with(power={"mode": "tdp"}))
    trace = power_trace(r)
    assert trace.mode == "tdp"
    assert all(w == pytest.approx(700.0) for rank in trace.ranks for _s, _e, w in trace.segments(rank))
    assert trace.gpu_energy_j() == pytest.approx(r.energy_j["gpu"], rel=1e-9)


def test_serving_trace_per_replica() -> None:
    r = simulate_serving(
        {
            "model": "llama3.2-1b",
            "gpu": GPU,
            "replicas": 2,
            "workload": {"num_requests": 80, "arrivals": {"kind": "poisson", "rate_per_s": 4.0}},
        }
    )
    trace = power_trace(r)
    assert trace.kind == "serving" and [x.rank for x in trace.ranks] == [0, 1]
    assert trace.seconds == pytest.approx(r.duration_s)
    assert trace.gpu_energy_j() == pytest.approx(r.energy_j["gpu"], rel=0.01)
    assert max(x.energy_j for x in trace.ranks) / trace.seconds == pytest.approx(r.power["avg_gpu_power_w"], rel=0.01)


def test_a_result_without_a_timeline_is_a_one_line_error() -> None:
    r = simulate_training(PP4).model_copy(update={"timeline": None})
    with pytest.raises(ClusterSimError, match="no timeline"):
        power_trace(r)
