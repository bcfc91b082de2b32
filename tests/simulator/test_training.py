"""Training simulator: schedules against theory, determinism, memory, outputs, config checks."""

from __future__ import annotations

import json

import pytest

from hwmodels.errors import ClusterSimError
from simulator.training import simulate_training
from simulator.training.engine import PipelineEngine
from simulator.training.plan import ChunkCost, Phase
from simulator.training.schedules import make_layout


def uniform_chunks(n: int, f: float = 1.0, b: float = 2.0, w: float = 0.0) -> list[ChunkCost]:
    return [ChunkCost((i,), i == 0, i == n - 1, Phase(f), Phase(b - w), Phase(w), 1.0, 1.0, 0.0) for i in range(n)]


def bubble(run) -> float:
    span = run.end_s - min(r.first_start_s for r in run.ranks)
    busy = sum(r.busy_s for r in run.ranks)
    return (span * len(run.ranks) - busy) / busy


@pytest.mark.parametrize("pp,m", [(2, 4), (4, 8), (4, 16), (8, 32), (8, 8)])
def test_1f1b_bubble_is_exactly_p_minus_1_over_m(pp: int, m: int) -> None:
    layout = make_layout("1f1b", pp, 1, m)
    run = PipelineEngine(layout, uniform_chunks(pp), "1f1b", 0.0).run()
    assert run.end_s == pytest.approx((m + pp - 1) * 3.0)
    assert bubble(run) == pytest.approx((pp - 1) / m)
    assert [r.peak_inflight for r in run.ranks] == [min(pp - r, m) for r in range(pp)]


@pytest.mark.parametrize("pp,v,m", [(2, 2, 4), (4, 2, 8), (4, 4, 16), (8, 2, 16), (4, 3, 8)])
def test_interleaved_bubble_is_p_minus_1_over_vm(pp: int, v: int, m: int) -> None:
    layout = make_layout("interleaved", pp, v, m)
    # each chunk holds 1/v of a stage's layers, so its F and B take 1/v of the time
    run = PipelineEngine(layout, uniform_chunks(pp * v, 1.0 / v, 2.0 / v), "interleaved", 0.0).run()
    assert bubble(run) == pytest.approx((pp - 1) / (v * m))


def test_gpipe_has_the_1f1b_bubble_but_holds_every_micro_batch() -> None:
    layout = make_layout("gpipe", 4, 1, 8)
    run = PipelineEngine(layout, uniform_chunks(4), "gpipe", 0.0).run()
    assert bubble(run) == pytest.approx(3 / 8)
    assert run.ranks[0].peak_inflight == 8


@pytest.mark.parametrize("schedule", ["zero-bubble", "dualpipe"])
def test_split_backward_schedules_beat_1f1b(schedule: str) -> None:
    pp, m = 4, 8
    one = PipelineEngine(make_layout("1f1b", pp, 1, m), uniform_chunks(pp, 1, 2, 1), "1f1b", 0.0).run()
    split = PipelineEngine(make_layout(schedule, pp, 1, m), uniform_chunks(pp, 1, 2, 1), schedule, 0.0).run()
    assert split.end_s < one.end_s
    assert bubble(split) < bubble(one)
    # every task ran exactly once: busy time equals m x (F + B) per rank (x2 chunks, m/2 each for dualpipe)
    assert sum(r.busy_s for r in split.ranks) == pytest.approx(pp * m * 3.0)


def test_zero_bubble_keeps_1f1b_memory() -> None:
    pp, m = 4, 16
    run = PipelineEngine(make_layout("zero-bubble", pp, 1, m), uniform_chunks(pp, 1, 2, 1), "zero-bubble", 0.0).run()
    assert [r.peak_inflight for r in run.ranks] == [pp - r for r in range(pp)]


def test_p2p_transfers_delay_the_pipeline() -> None:
    layout = make_layout("1f1b", 4, 1, 8)
    free = PipelineEngine(layout, uniform_chunks(4), "1f1b", 0.0).run()
    slow = PipelineEngine(layout, uniform_chunks(4), "1f1b", 0.1).run()
    assert slow.end_s > free.end_s
    assert any(e[3] == "pp" for e in slow.events)


# ---- full simulation --------------------------------------------------------------------------

TOY = {
    "name": "toy-gpt",
    "source": "test model",
    "num_layers": 32,
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "ffn_hidden_size": 16384,
    "vocab_size": 128,
    "mlp": "gelu",
}


def toy(pp=4, vpp=1, m=8, schedule="1f1b", **training):
    return {
        "model": TOY,
        "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": pp},
        "parallel": {"pp": pp, "vpp": vpp, "schedule": schedule},
        "training": {"seq_len": 2048, "global_batch": m, "micro_batch": 1, **training},
    }


@pytest.mark.parametrize("pp,vpp,m,schedule", [(4, 1, 8, "1f1b"), (8, 1, 32, "1f1b"), (4, 2, 8, "interleaved")])
def test_simulated_bubble_matches_theory_without_communication(pp, vpp, m, schedule) -> None:
    r = simulate_training(toy(pp, vpp, m, schedule), include_comm=False)
    theory = (pp - 1) / (vpp * m)
    print(f"\n{schedule} pp={pp} vpp={vpp} m={m}: bubble {r.bubble_fraction:.4f} vs theory {theory:.4f}")
    assert r.bubble_fraction == pytest.approx(theory, rel=0.05)  # residual: embedding and head stages


GPT3 = {
    "model": "gpt3-175b",
    "cluster": {"gpu": "a100-sxm4-80gb", "num_gpus": 1024, "node": "dgx-a100"},
    "parallel": {"tp": 8, "pp": 8, "dp": 16, "sp": True, "zero": 1},
    "training": {"seq_len": 2048, "global_batch": 1536, "micro_batch": 1, "recompute": "selective"},
}


def test_same_config_same_json_twice() -> None:
    a = simulate_training(GPT3).to_dict()
    b = simulate_training(GPT3).to_dict()
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_result_has_the_promised_fields() -> None:
    r = simulate_training(GPT3, overrides=["training.tokens=300e9"]).to_dict()
    for key in (
        "step_time_s",
        "tokens_per_s",
        "tflops_per_gpu",
        "mfu",
        "hfu",
        "bubble_fraction",
        "exposed_comm_s",
        "memory_per_gpu_gb",
        "fits_in_memory",
        "time_to_train_days",
    ):
        assert key in r
    assert set(r["exposed_comm_s"]) == {"tp", "pp", "dp", "cp", "ep"}
    assert r["exposed_comm_s"]["tp"] > 0 and r["exposed_comm_s"]["cp"] == 0
    assert 0.2 < r["mfu"] < 0.8 and r["hfu"] >= r["mfu"]
    assert r["time_to_train_days"] == pytest.approx(300e9 / r["tokens_per_s"] / 86400)
    mem = r["memory_per_gpu_gb"]
    parts = sum(mem[k] for k in ("weights", "gradients", "optimizer", "activations", "buffers", "fragmentation"))
    assert mem["peak"] == pytest.approx(parts)


def test_oom_plan_is_a_result_not_an_error() -> None:
    r = simulate_training(
        {
            "model": "gpt3-175b",
            "cluster": {"gpu": "a100-sxm4-80gb", "num_gpus": 8},
            "parallel": {"tp": 8},
            "training": {"seq_len": 2048, "global_batch": 8, "recompute": "none"},
        }
    )
    assert r.fits_in_memory is False
    assert r.memory_per_gpu_gb.peak > r.memory_per_gpu_gb.capacity
    assert r.step_time_s > 0


def test_data_parallel_replicas_cost_nothing_to_simulate() -> None:
    small = simulate_training(GPT3, overrides=["parallel.dp=2", "cluster.num_gpus=128", "training.global_batch=192"])
    big = simulate_training(GPT3)
    assert len(small.timeline) > 0
    # same pipeline per replica: the per-rank event count does not grow with DP
    assert abs(len(big.timeline) - len(small.timeline)) < 0.1 * len(big.timeline)
    assert big.exposed_comm_s["dp"] > small.exposed_comm_s["dp"] * 0.5


def test_zero_stages_trade_memory_for_communication() -> None:
    base = {**GPT3, "parallel": {**GPT3["parallel"], "zero": 0}}
    z0 = simulate_training(base)
    z1 = simulate_training(base, overrides=["parallel.zero=1"])
    z3 = simulate_training(base, overrides=["parallel.zero=3"])
    assert z1.memory_per_gpu_gb.optimizer < z0.memory_per_gpu_gb.optimizer / 10
    assert z3.memory_per_gpu_gb.weights < z1.memory_per_gpu_gb.weights
    assert z3.step_time_s >= z1.step_time_s


def test_overlapping_gradient_reduction_hides_dp_time() -> None:
    on = simulate_training(GPT3)
    off = simulate_training(GPT3, overrides=["training.overlap_grad_reduce=false"])
    assert off.exposed_comm_s["dp"] > on.exposed_comm_s["dp"]
    assert off.step_time_s > on.step_time_s


def test_fp8_is_refused_on_a100_and_faster_on_h100() -> None:
    with pytest.raises(ClusterSimError, match="fp8"):
        simulate_training(GPT3, overrides=["training.precision=fp8"])
    h100 = [*(f"cluster.{k}" for k in ())]
    cfg = {**GPT3, "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 1024, "node": "dgx-h100"}}
    bf16 = simulate_training(cfg)
    fp8 = simulate_training(cfg, overrides=["training.precision=fp8", *h100])
    assert fp8.step_time_s < bf16.step_time_s


def test_recompute_trades_time_for_memory() -> None:
    modes = {m: simulate_training(GPT3, overrides=[f"training.recompute={m}"]) for m in ("none", "selective", "full")}
    assert modes["none"].step_time_s < modes["full"].step_time_s
    assert modes["full"].memory_per_gpu_gb.activations < modes["selective"].memory_per_gpu_gb.activations
    assert modes["selective"].memory_per_gpu_gb.activations < modes["none"].memory_per_gpu_gb.activations
    assert modes["full"].hfu > modes["full"].mfu


def test_context_and_expert_parallel_plans_run() -> None:
    cp = simulate_training(
        {
            "model": "llama3-8b",
            "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 16},
            "parallel": {"tp": 4, "cp": 4, "sp": True},
            "training": {"seq_len": 32768, "global_batch": 4, "micro_batch": 1},
        }
    )
    assert cp.step_time_s > 0 and cp.exposed_comm_s["cp"] >= 0
    moe = simulate_training(
        {
            "model": "mixtral-8x7b",
            "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 64},
            "parallel": {"tp": 2, "pp": 4, "dp": 8, "ep": 8, "sp": True, "zero": 1},
            "training": {"seq_len": 4096, "global_batch": 64},
        }
    )
    assert moe.exposed_comm_s["ep"] > 0


@pytest.mark.parametrize("schedule,vpp", [("zero-bubble", 1), ("dualpipe", 1), ("interleaved", 2), ("gpipe", 1)])
def test_every_schedule_simulates_a_real_model(schedule: str, vpp: int) -> None:
    r = simulate_training(GPT3, overrides=[f"parallel.schedule={schedule}", f"parallel.vpp={vpp}"])
    base = simulate_training(GPT3)
    assert r.step_time_s > 0
    if schedule in ("zero-bubble", "interleaved", "dualpipe"):
        assert r.bubble_fraction < base.bubble_fraction


def test_schedule_requirements_are_checked() -> None:
    with pytest.raises(ClusterSimError, match="interleaved"):
        simulate_training(
            GPT3, overrides=["parallel.schedule=interleaved", "parallel.vpp=2", "training.global_batch=1552"]
        )
    with pytest.raises(ClusterSimError, match="dualpipe"):
        simulate_training(toy(pp=3, m=6, schedule="dualpipe") | {"model": {**TOY, "num_layers": 30}})


def test_chrome_trace_is_valid(tmp_path) -> None:
    r = simulate_training(toy(pp=2, m=4))
    path = r.timeline.write_chrome_trace(tmp_path / "trace.json")
    data = json.loads(path.read_text())
    spans = [e for e in data["traceEvents"] if e["ph"] == "X"]
    assert len(spans) == len(r.timeline) and all(e["dur"] >= 0 for e in spans)
    names = {e["args"]["name"] for e in data["traceEvents"] if e["name"] == "thread_name"}
    assert "compute" in names


MIXTRAL = {
    "model": "mixtral-8x7b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 64},
    "parallel": {"tp": 2, "pp": 4, "dp": 8, "ep": 8, "sp": True, "zero": 1},
    "training": {"seq_len": 4096, "global_batch": 64},
}


def test_skewed_routing_stretches_expert_compute_by_the_rank_load_ratio() -> None:
    import numpy as np

    from hwmodels.profile import load_profile
    from simulator.core.config import load_config
    from simulator.moe import routing as M
    from simulator.training.plan import _MoEAdjust, chunk_costs

    def expert_time(cfg) -> tuple[float, float]:
        conf = load_config(cfg)
        cluster = conf.cluster.resolve()
        groups = {"ep": cluster.comm_group(8, stride=2)}
        adj = _MoEAdjust.of(conf, {**groups, "tp": cluster.comm_group(2)})
        chunks = chunk_costs(conf, load_profile(None, gpu="h100"), cluster, num_chunks=4)
        return adj.factor, sum(c.forward.compute_s for c in chunks)

    uni_factor, uni_t = expert_time(MIXTRAL)
    skew = {**MIXTRAL, "moe_routing": {"source": {"kind": "zipf", "exponent": 1.2}}}
    skew_factor, skew_t = expert_time(skew)
    conf = load_config(skew)
    loads = M.expert_loads(conf.moe_routing, 8, 2, 4096 * 8, layer=0, rng=np.random.default_rng(0))
    expected = M.layer_time_factor(M.routing_stats(loads, 8))
    assert skew_factor == pytest.approx(expected, rel=1e-9)
    assert skew_factor > 1.3 * uni_factor
    assert skew_t > uni_t
    assert simulate_training(skew).step_time_s > simulate_training(MIXTRAL).step_time_s


def test_node_limited_routing_and_dedup_cut_expert_parallel_traffic() -> None:
    base = {
        "model": "deepseek-v2-lite",
        "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 64},
        "parallel": {"tp": 1, "pp": 4, "dp": 16, "ep": 16, "zero": 1},
        "training": {"seq_len": 4096, "global_batch": 64},
    }
    naive = simulate_training(base)
    limited = simulate_training(
        {
            **base,
            "moe_routing": {"source": {"kind": "group_limited", "groups": 2, "max_groups": 1}},
            "training": {**base["training"], "moe_node_dedup": True},
        }
    )
    assert limited.exposed_comm_s["ep"] < naive.exposed_comm_s["ep"]
