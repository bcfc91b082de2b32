"""Host memory in training: ZeRO-Offload / ZeRO-Infinity tiers, activation offload, parameter-server DP.

The step-time checks are hand calculations from the catalogue (DGX A100: 2 sockets, 409.6 GB/s peak DRAM,
PCIe Gen4 x16 at 32 GB/s x 0.80) and the constants of simulator.training.offload (CPU Adam 28 B/param, 16-bit
gradients out and weights back at 2 B/param, STREAM efficiency 0.8).
"""

from __future__ import annotations

import copy

import pytest

from hwmodels.errors import ClusterSimError
from hwmodels.topology import CommGroup
from simulator.core.config import load_config
from simulator.core.costs import comm_time
from simulator.models import get_model
from simulator.training import offload as O
from simulator.training import param_server as PS
from simulator.training import simulate_training
from simulator.training.memory import memory_breakdown

BASE = {
    "model": "llama2-13b",
    "cluster": {"gpu": "a100-sxm4-80gb", "num_gpus": 1, "node": "dgx-a100"},
    "training": {"seq_len": 2048, "global_batch": 1, "micro_batch": 1, "recompute": "full", "precision": "bf16"},
}
P13 = get_model("llama2-13b").total_params  # 13.016e9
SOCKET_DRAM = 409.6e9 * 0.8 / 2  # one process's pinned buffers sit on one NUMA node: one socket's STREAM bandwidth
PCIE4 = 32e9 * 0.80  # one GPU copying alone gets its whole x16 link


def _with(**offload) -> dict:
    cfg = copy.deepcopy(BASE)
    cfg["training"]["offload"] = offload
    return cfg


def test_13b_on_one_80gb_gpu_fits_only_with_optimizer_offload() -> None:
    plain = simulate_training(BASE)
    off = simulate_training(_with(optimizer="cpu"))
    assert not plain.fits_in_memory and plain.memory_per_gpu_gb.peak > 200  # 18 B/param: ~234 GB
    assert off.fits_in_memory and off.memory_per_gpu_gb.peak < 40
    mem = off.memory_per_gpu_gb
    assert mem.optimizer == 0 and mem.gradients == 0
    assert mem.weights == pytest.approx(2 * P13 / 1e9)  # bf16 weights stay on the GPU
    assert mem.host == pytest.approx(16 * P13 / 1e9)  # fp32 master + 2 moments (12) + fp32 gradients (4)
    assert mem.host <= mem.host_capacity == pytest.approx(2000.0)  # DGX A100: 2 TB for its one used GPU


def test_step_is_bounded_by_the_cpu_adam_and_the_pcie_copies() -> None:
    res = simulate_training(_with(optimizer="cpu"))
    cpu_s = 28 * P13 / SOCKET_DRAM  # 2.224 s
    d2h_s = h2d_s = 2 * P13 / PCIE4  # 1.017 s each way
    assert res.offload_s["cpu_adam_s"] == pytest.approx(cpu_s, rel=1e-9)
    assert res.offload_s["weights_h2d_s"] == pytest.approx(h2d_s, rel=1e-9)
    # no delayed update: the whole host step follows the pipeline (weights return tile by tile during it)
    assert res.step_time_s == pytest.approx(res.pipeline_time_s + max(cpu_s, h2d_s) + res.gc_pause_s, rel=1e-9)
    assert res.step_time_s >= cpu_s and res.step_time_s >= d2h_s + h2d_s
    # the backward cannot end before the gradients are on the host: the pipeline holds the D2H copy
    assert res.pipeline_time_s >= d2h_s
    assert res.optimizer_s == pytest.approx(cpu_s)


def test_delayed_parameter_update_overlaps_the_cpu_step_with_the_next_step() -> None:
    plain = simulate_training(_with(optimizer="cpu"))
    dpu = simulate_training(_with(optimizer="cpu", delayed_param_update=True))
    cpu_s = 28 * P13 / SOCKET_DRAM
    assert dpu.step_time_s < plain.step_time_s
    assert dpu.step_time_s == pytest.approx(max(dpu.pipeline_time_s, cpu_s) + dpu.gc_pause_s, rel=1e-6)
    with pytest.raises(ClusterSimError, match="delayed_param_update needs"):
        load_config(_with(delayed_param_update=True))


def test_nvme_optimizer_swaps_its_state_each_step() -> None:
    res = simulate_training(_with(optimizer="nvme"))
    mem = res.memory_per_gpu_gb
    assert mem.nvme == pytest.approx(12 * P13 / 1e9) and mem.host == pytest.approx(4 * P13 / 1e9)
    nvme_s = 24 * P13 / 50e9  # master + moments read and written back at the DGX A100 array's 50 GB/s
    assert res.offload_s["nvme_swap_s"] == pytest.approx(nvme_s)
    # slower than CPU Adam
    assert res.step_time_s == pytest.approx(res.pipeline_time_s + nvme_s + res.gc_pause_s, rel=1e-9)


def test_zero3_weight_offload_fetches_the_weights_over_pcie() -> None:
    cfg = _with(optimizer="cpu", params="cpu")
    cfg["parallel"] = {"zero": 3}
    res = simulate_training(cfg)
    mem = res.memory_per_gpu_gb
    assert mem.weights == 0 and mem.host == pytest.approx(18 * P13 / 1e9)  # + the bf16 weights
    assert res.offload_s["weights_h2d_s"] == 0  # updated weights stay on the host until the next fetch
    fetch = 2 * P13 / PCIE4  # every forward and backward pass brings the weights back
    assert res.pipeline_time_s >= 2 * fetch
    with pytest.raises(ClusterSimError, match="offload.params=cpu needs parallel.zero=3"):
        load_config(_with(params="cpu"))


def test_activation_offload_moves_saved_activations_to_the_host() -> None:
    base = copy.deepcopy(BASE)
    base["training"].update(recompute="none", global_batch=4, micro_batch=4)
    on = copy.deepcopy(base)
    on["training"]["offload"] = {"activations": True}
    keep, moved = (memory_breakdown(load_config(c), 0, 1.0) for c in (base, on))
    assert moved.activations < keep.activations / 5 and moved.host > 0.8 * keep.activations
    slow = simulate_training(on)
    run = load_config(on)
    out_s = O.saved_activation_bytes(run, tuple(range(run.model.num_layers))) / PCIE4
    assert slow.pipeline_time_s >= 2 * out_s  # out during the forward, back during the backward


def test_offload_errors_are_one_line() -> None:
    node_without_nvme = copy.deepcopy(_with(optimizer="nvme"))
    node_without_nvme["cluster"] = {"gpu": "a100-pcie-80gb", "num_gpus": 1, "node": "a100-pcie-server"}
    with pytest.raises(ClusterSimError, match="a100-pcie-server has no nvme_gb") as exc:
        load_config(node_without_nvme)
    assert "\n" not in str(exc.value)
    dp = _with(optimizer="cpu")
    dp["cluster"]["num_gpus"] = 8
    dp["parallel"] = {"dp": 8}
    dp["training"]["global_batch"] = 8
    with pytest.raises(ClusterSimError, match="needs parallel.zero >= 1"):
        load_config(dp)


def test_pcie_is_shared_by_the_gpus_behind_one_uplink() -> None:
    one = O.host_rates(load_config(BASE).cluster)
    cfg = copy.deepcopy(BASE)
    cfg["cluster"]["num_gpus"] = 8
    cfg["training"]["global_batch"] = 8
    cfg["parallel"] = {"dp": 8}
    eight = O.host_rates(load_config(cfg).cluster)
    assert one.pcie_bytes_s == pytest.approx(PCIE4) and eight.pcie_bytes_s == pytest.approx(PCIE4 / 2)
    assert eight.dram_bytes_s == pytest.approx(409.6e9 * 0.8 / 8)  # eight processes share both sockets
    assert eight.host_bytes == pytest.approx(2000e9 / 8)


# ---- parameter-server data parallelism ------------------------------------------------------------------

PS_BASE = {
    "model": "megatron-gpt-1.7b",
    "cluster": {"gpu": "a100-sxm4-80gb", "num_gpus": 128, "node": "dgx-a100", "nics_per_node": 1},
    "parallel": {"dp": 128},
    "training": {"seq_len": 2048, "global_batch": 128, "micro_batch": 1, "recompute": "none"},
}


def _ps(servers: int, placement: str) -> dict:
    cfg = copy.deepcopy(PS_BASE)
    cfg["parallel"].update(dp_mode="parameter_server", parameter_server={"servers": servers, "placement": placement})
    return cfg


def _sync_s(cfg: dict, nbytes: float = 4e9) -> float:
    """One gradient sync of ``nbytes`` per rank over the run's data-parallel group (16 nodes x 8 GPUs)."""
    from simulator.training.plan import Groups

    run = load_config(cfg)
    group = Groups.of(run, run.cluster.resolve()).grad
    if run.parallel.dp_mode == "collective":
        return comm_time("all_reduce", nbytes, group)
    return PS.push_pull_s(run, nbytes, group)


def test_more_cpu_servers_make_push_pull_beat_ring_all_reduce() -> None:
    """BytePS (OSDI'20): with n = 16 GPU nodes bottlenecked by one NIC each, dedicated CPU servers of the same
    bandwidth beat the ring all-reduce's 2(n-1)/n once k > n^2 / (2(n-1)) = 8.5 of them serve, and reach its
    half at k = n."""
    ring = _sync_s(PS_BASE)
    ded = {k: _sync_s(_ps(k, "dedicated")) for k in (4, 8, 12, 16, 32)}
    assert ded[4] > ded[8] > ded[12] > ded[16] == pytest.approx(ded[32], rel=1e-6)
    assert ded[8] > ring > ded[12]  # the crossover in server count
    assert ded[16] == pytest.approx(ring / 2, rel=0.02)  # M/B vs the ring's 2(N-1)/N M/B over N = 128 ranks
    # BytePS's colocated servers never lose to the ring, and extra CPU machines only help
    col = [_sync_s(_ps(k, "colocated")) for k in (0, 4, 8, 16)]
    assert col == sorted(col, reverse=True) and col[0] == pytest.approx(ring, rel=0.1)


def test_byteps_best_practice_statements() -> None:
    """docs/best-practice.md: 'if you have only 1 server and 2 workers, you'll only get half of the performance
    compared with 2 servers + 2 workers'; colocated servers perform 'similar to Horovod/NCCL'."""
    two_workers = copy.deepcopy(PS_BASE)
    two_workers["cluster"]["num_gpus"] = 16
    two_workers["parallel"]["dp"] = 16
    two_workers["training"]["global_batch"] = 16
    one, two = (_sync_s({**two_workers, "parallel": {**_ps(k, "dedicated")["parallel"], "dp": 16}}) for k in (1, 2))
    assert one == pytest.approx(2 * two, rel=0.01)


def test_parameter_server_in_a_simulated_step() -> None:
    ring = simulate_training(PS_BASE)
    ps = simulate_training(_ps(16, "dedicated"))
    assert ps.exposed_comm_s["dp"] < 0.6 * ring.exposed_comm_s["dp"]
    assert any("push_pull" in e[4] for e in ps.timeline.events)
    with pytest.raises(ClusterSimError, match="dedicated needs servers >= 1"):
        load_config(_ps(0, "dedicated"))
    zero = _ps(4, "colocated")
    zero["parallel"]["zero"] = 1
    with pytest.raises(ClusterSimError, match="parameter_server needs parallel.zero=0"):
        load_config(zero)


def test_summation_on_the_server_cpu_can_bound_push_pull() -> None:
    """A server machine that sums n M / k bytes at 5 B of DRAM per byte becomes the bottleneck when its DRAM is
    slow next to its NIC (SUM_DRAM_BYTES)."""
    g = CommGroup(size=16, local=1, nodes=16, intra_bytes_s=200e9, intra_latency_s=2e-6, net_bytes_s=20e9)
    fast = PS.balance(1e9, g.nodes, 16, (20e9, 20e9, 1e12, 1e12), colocated=False)
    slow = PS.balance(1e9, g.nodes, 16, (20e9, 20e9, 50e9, 50e9), colocated=False)
    assert fast == pytest.approx(1e9 / 20e9)
    assert slow == pytest.approx(PS.SUM_DRAM_BYTES * 1e9 / 50e9)


# ---- the plan search ------------------------------------------------------------------------------------


def test_plan_search_finds_and_labels_plans_that_fit_only_with_offload() -> None:
    from simulator.search.plan import SearchSpace, search_training_plans

    res = search_training_plans(
        "llama2-13b", num_gpus=1, gpu="a100-sxm4-80gb", global_batch=4, seq_len=2048, workers=1, top_k=4, pareto_k=2
    )
    assert res.best and all(p.needs_offload and "offload:" in p.label() for p in res.best)
    assert all(p.result.fits_in_memory for p in res.best)
    for p in res.best:  # the screen mirrors the simulation's memory and (closely) its step
        assert p.screen_memory_gb == pytest.approx(p.result.memory_per_gpu_gb.peak, rel=1e-6)
        assert p.screen_step_s == pytest.approx(p.result.step_time_s, rel=0.02)
    assert res.to_dict()["best"][0]["needs_offload"] is True
    space = SearchSpace.parse(["offload=none,optimizer"])
    assert space.offload == ("none", "optimizer")
    with pytest.raises(ClusterSimError, match="offload"):
        SearchSpace.parse(["offload=gpu"])
