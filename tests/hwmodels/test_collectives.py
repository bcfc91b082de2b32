"""Collective cost models: ring/tree theory, growth with size, and measured NCCL figures."""

from __future__ import annotations

import pytest

from hwmodels import collectives as C
from hwmodels.errors import ClusterSimError
from hwmodels.topology import ClusterSpec, CommGroup

NV = CommGroup(size=8, local=8, nodes=1, intra_bytes_s=200e9, intra_latency_s=2e-6)


def group(n: int, local: int = 8) -> CommGroup:
    nodes = max(1, n // local)
    return CommGroup(
        size=n,
        local=min(n, local),
        nodes=nodes,
        intra_bytes_s=200e9,
        intra_latency_s=2e-6,
        net_bytes_s=100e9 if nodes > 1 else 0.0,
        net_latency_s=5e-6,
    )


def test_ring_all_reduce_matches_theory() -> None:
    S = 1e9
    expected = C.BASE_LATENCY_S + 2 * 7 / 8 * S / 200e9 + 2 * 7 * 2e-6
    assert C.all_reduce_time(S, NV, "ring") == pytest.approx(expected)
    assert C.all_gather_time(S, NV, "ring") == pytest.approx(C.BASE_LATENCY_S + 7 / 8 * S / 200e9 + 7 * 2e-6)
    assert C.reduce_scatter_time(S, NV, "ring") == C.all_gather_time(S, NV, "ring")


def test_bus_bandwidth_of_a_large_ring_equals_the_link() -> None:
    S = 8e9
    t = C.all_reduce_time(S, NV, "ring")
    assert C.bus_bandwidth("all_reduce", S, t, 8) == pytest.approx(200e9, rel=0.01)


@pytest.mark.parametrize("kind", ["all_reduce", "all_gather", "reduce_scatter", "all_to_all"])
def test_time_grows_with_message_size(kind: str) -> None:
    fn = getattr(C, f"{kind}_time")
    times = [fn(s, group(64)) for s in [1e3, 1e5, 1e7, 1e9]]
    assert times == sorted(times) and times[0] < times[-1]


@pytest.mark.parametrize("algorithm", ["ring", "tree"])
def test_all_reduce_grows_with_group_size(algorithm: str) -> None:
    times = [C.all_reduce_time(1e8, group(n), algorithm) for n in [2, 4, 8, 16, 64, 256, 1024]]
    assert times == sorted(times)


def test_tree_wins_small_messages_ring_never_loses_large_ones() -> None:
    big = group(1024)
    assert C.all_reduce_time(1e3, big, "tree") < C.all_reduce_time(1e3, big, "ring")
    assert C.all_reduce_time(1e3, big) == C.all_reduce_time(1e3, big, "tree")
    # latency term of a ring grows linearly in n, of a tree logarithmically
    lat_ring = C.all_reduce_time(1.0, big, "ring")
    lat_tree = C.all_reduce_time(1.0, big, "tree")
    assert lat_ring / lat_tree > 10


def test_single_rank_and_empty_messages_cost_nothing() -> None:
    one = CommGroup(size=1, local=1, nodes=1, intra_bytes_s=1e9, intra_latency_s=1e-6)
    assert C.all_reduce_time(1e9, one) == 0.0
    assert C.all_gather_time(0, NV) == 0.0


def test_bad_input() -> None:
    with pytest.raises(ClusterSimError):
        C.all_reduce_time(-1, NV)
    with pytest.raises(ClusterSimError, match="algorithm"):
        C.all_reduce_time(1, NV, "butterfly")  # type: ignore[arg-type]


def test_strided_groups_share_the_node_nics() -> None:
    cluster = ClusterSpec(gpu="a100-sxm4-80gb", num_gpus=64, node="dgx-a100").resolve()
    tp = cluster.comm_group(8)
    dp = cluster.comm_group(8, stride=8)
    assert not tp.spans_nodes and tp.local == 8
    assert dp.spans_nodes and dp.local == 1 and dp.nodes == 8
    assert dp.net_bytes_s == pytest.approx(cluster.node_nic_bytes_s / 8)
    assert C.all_reduce_time(1e9, dp) > C.all_reduce_time(1e9, tp)


def test_oversubscription_slows_groups_that_leave_the_leaf() -> None:
    flat = ClusterSpec(gpu="h100-sxm5-80gb", num_gpus=8 * 64, node="dgx-h100", nodes_per_leaf=32).resolve()
    thin = ClusterSpec(
        gpu="h100-sxm5-80gb", num_gpus=8 * 64, node="dgx-h100", nodes_per_leaf=32, oversubscription=2.0
    ).resolve()
    inside = (flat.comm_group(8 * 16), thin.comm_group(8 * 16))
    across = (flat.comm_group(8 * 64), thin.comm_group(8 * 64))
    assert C.all_reduce_time(1e9, inside[0]) == C.all_reduce_time(1e9, inside[1])
    assert C.all_reduce_time(1e9, across[1]) > C.all_reduce_time(1e9, across[0])


# ---- against measured NCCL figures (../shared/data/validation/nccl_measured.csv) ------------------
NCCL_BUSBW = [
    # (node preset, gpus, nics per node, measured all-reduce busbw GB/s, source note)
    ("dgx-a100", 8, None, 232.5, "one DGX A100 node, NVSwitch"),
    ("dgx-a100", 16, 4, 86.0, "2x DGX A100 with 4x HDR per node"),
    ("dgx-a100-40gb", 24, 4, 84.8, "3x DGX A100 40GB with 4x HDR per node (not used to set any figure)"),
]


@pytest.mark.parametrize("node,gpus,nics,measured,note", NCCL_BUSBW)
def test_all_reduce_bus_bandwidth_against_nccl_tests(node, gpus, nics, measured, note) -> None:
    spec = ClusterSpec(gpu=_gpu_of(node), num_gpus=gpus, node=node, nics_per_node=nics)
    g = spec.resolve().comm_group(gpus)
    S = 8e9
    busbw = C.bus_bandwidth("all_reduce", S, C.all_reduce_time(S, g), gpus) / 1e9
    err = abs(busbw - measured) / measured
    print(f"\n{note}: predicted busbw {busbw:.0f} GB/s vs measured {measured:.0f} GB/s ({err:.0%})")
    assert err <= 0.20


NCCL_LATENCY = [("dgx-a100", 2, 10.0), ("dgx-a100", 4, 16.9), ("dgx-a100", 8, 33.7)]


@pytest.mark.parametrize("node,gpus,measured_us", NCCL_LATENCY)
def test_small_message_latency_against_nccl_tests(node, gpus, measured_us) -> None:
    g = ClusterSpec(gpu=_gpu_of(node), num_gpus=gpus, node=node).resolve().comm_group(gpus)
    t = C.all_reduce_time(8, g, "ring") * 1e6
    err = abs(t - measured_us) / measured_us
    print(f"\n{node} {gpus} GPUs 8 B all-reduce: predicted {t:.1f} us vs measured {measured_us} us ({err:.0%})")
    assert err <= 0.25


def _gpu_of(node: str) -> str:
    from hwmodels.catalogue import get_node

    return get_node(node).gpu
