"""Collective cost models: ring/tree theory, growth with size, and measured NCCL figures."""

from __future__ import annotations

import math

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
    assert C.all_reduce_time(S, NV, "ring/fitted") == pytest.approx(expected)
    assert C.all_gather_time(S, NV, "ring/fitted") == pytest.approx(C.BASE_LATENCY_S + 7 / 8 * S / 200e9 + 7 * 2e-6)
    assert C.reduce_scatter_time(S, NV, "ring/fitted") == C.all_gather_time(S, NV, "ring/fitted")
    # plain "ring" lets NCCL pick the protocol: Simple at 1 GB, within 1% of the fitted envelope
    assert C.all_reduce_time(S, NV, "ring") == pytest.approx(expected, rel=0.01)


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
    assert C.all_reduce_time(1e3, big) == C.all_reduce_time(1e3, big, "tree/fitted")  # the default rule
    assert C.choose_protocol("all_reduce", 1e3, big, "tree") == ("tree", "ll")  # NCCL's pick: tree/LL
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


def test_oversubscription_slows_all_to_all_across_leaves_more_than_rings() -> None:
    """A ring crosses the spine only at leaf boundaries (one flow out and one in per group under a leaf), so an
    oversubscribed spine slows it only when oversubscription > members under the leaf; an all-to-all sends
    the share of its traffic bound for other leaves through the up-links all at once."""
    flat = ClusterSpec(gpu="h100-sxm5-80gb", num_gpus=8 * 64, node="dgx-h100", nodes_per_leaf=32).resolve()
    thin = ClusterSpec(
        gpu="h100-sxm5-80gb", num_gpus=8 * 64, node="dgx-h100", nodes_per_leaf=32, oversubscription=4.0
    ).resolve()
    inside = (flat.comm_group(8 * 16), thin.comm_group(8 * 16))
    across = (flat.comm_group(8 * 64), thin.comm_group(8 * 64))
    assert C.all_reduce_time(1e9, inside[0]) == C.all_reduce_time(1e9, inside[1])
    # 32 members of each rail ring under a leaf: one flow each way through up-links worth 32/4 NICs -> no slowdown
    assert C.all_reduce_time(1e9, across[1]) == C.all_reduce_time(1e9, across[0])
    # half of an all-to-all's traffic leaves the leaf, through up-links a quarter of the down-links: half speed
    assert across[1].all_to_all_net_bytes_s == pytest.approx(across[0].all_to_all_net_bytes_s / 2)
    assert C.all_to_all_time(1e9, across[1]) > C.all_to_all_time(1e9, across[0])
    # top-of-rack leaves (all 8 NICs of 4 nodes): a DP ring at one member per node has 4 members under a leaf,
    # so the 8 DP rings of a TP8 job send 8 flows out of a ToR through up-links worth 32/8 NICs: half speed
    tor = ClusterSpec(
        gpu="h100-sxm5-80gb", num_gpus=8 * 64, node="dgx-h100", rail_optimized=False, oversubscription=8.0
    ).resolve()
    assert tor.comm_group(16, stride=8).net_bytes_s == pytest.approx(flat.comm_group(16, stride=8).net_bytes_s / 2)


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


# ---- algorithm registry, the default rule and NCCL-style auto -----------------------------------------


def _cluster(node: str, gpus: int, nics: int | None = None):
    return ClusterSpec(gpu=_gpu_of(node), num_gpus=gpus, node=node, nics_per_node=nics).resolve()


def test_registry_refuses_a_duplicate_name_and_the_rule_names() -> None:
    before = C.algorithm_names()
    for name in ("ring", "nvls", "auto", "default"):
        with pytest.raises(ClusterSimError, match="already registered"):
            C.register_algorithm(C.CollectiveAlgorithm(name, {"all_reduce": lambda s, g: 0.0}))
    with pytest.raises(ClusterSimError, match="costs must map"):
        C.register_algorithm(C.CollectiveAlgorithm("scatter-gather", {"broadcast": lambda s, g: 0.0}))
    assert C.algorithm_names() == before == ("default", "auto", "ring", "tree", "hierarchical", "nvls")


def test_a_new_algorithm_is_one_registry_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(C, "_REGISTRY", dict(C._REGISTRY))  # restored after the test
    C.register_algorithm(C.CollectiveAlgorithm("free", {"all_reduce": lambda s, g: 0.0}))
    g = group(64)
    assert C.all_reduce_time(1e9, g, "free") == C.BASE_LATENCY_S
    assert C.choose_algorithm("all_reduce", 1e9, g, "auto") == "free"  # auto considers it
    assert C.all_gather_time(1e9, g, "free") == C.all_gather_time(1e9, g, "ring")  # no all-gather: ring runs
    assert C.all_reduce_time(1e9, g) > C.BASE_LATENCY_S  # the default rule is unchanged


@pytest.mark.parametrize("kind", ["all_reduce", "all_gather", "reduce_scatter"])
@pytest.mark.parametrize("n", [2, 8, 64, 1024])
def test_default_is_exactly_the_faster_of_ring_and_tree(kind: str, n: int) -> None:
    """``default`` keeps the rule the training validation was fitted with: the faster of the fitted ring and tree
    costs everywhere (the tree's all-gather/reduce-scatter too, which NCCL itself runs only as PAT)."""
    fn = getattr(C, f"{kind}_time")
    tree = C.get_algorithm("tree").cost(kind, "fitted")
    for S in [8.0, 1e5, 1e7, 1e9]:  # the fitted single-protocol costs the training validation was fitted with
        assert fn(S, group(n)) == min(fn(S, group(n), "ring/fitted"), C.BASE_LATENCY_S + tree(S, group(n)))


@pytest.mark.parametrize("kind", ["all_gather", "reduce_scatter"])
def test_tree_gather_and_scatter_run_only_with_one_rank_per_node(kind: str) -> None:
    """NCCL has no tree all-gather/reduce-scatter; PAT (>= 2.23) takes their place only at one rank per node.
    Elsewhere ``auto`` and a forced ``tree`` run the ring, whose latency grows with the ranks."""
    fn = getattr(C, f"{kind}_time")
    packed = group(1024)  # 8 ranks per node
    assert C.choose_algorithm(kind, 1e6, packed, "tree") == "ring"
    assert fn(1e6, packed, "tree") == fn(1e6, packed, "ring")
    assert C.choose_algorithm(kind, 1e6, packed, "auto") == "ring"
    spread = _cluster("dgx-h100", 1024 * 8).comm_group(1024, stride=8)  # one rank per node, as a TP8 job's DP
    assert C.choose_algorithm(kind, 1e6, spread, "auto") == "tree"
    assert fn(1e6, spread, "auto") < fn(1e6, spread, "ring") / 2


@pytest.mark.parametrize("node,expected", [("dgx-a100", "tree"), ("dgx-h100", "nvls")])
@pytest.mark.parametrize("gpus", [64, 512])
def test_auto_picks_tree_or_nvls_for_a_small_all_reduce_at_scale(node: str, expected: str, gpus: int) -> None:
    cluster = _cluster(node, gpus)
    g, f = cluster.comm_group(gpus), C.node_features(cluster)
    assert C.choose_algorithm("all_reduce", 1e3, g, "auto", features=f) == expected
    auto = C.all_reduce_time(1e3, g, "auto", features=f)
    assert auto == C.all_reduce_time(1e3, g, expected, features=f)
    assert auto < C.all_reduce_time(1e3, g, "ring/fitted", features=f) / 5  # fitted ring: 2(n-1) network steps
    assert auto < C.all_reduce_time(1e3, g, "ring", features=f) / 2  # NCCL's ring: 2m network + 2(n-m-1) NVLink


@pytest.mark.parametrize("node,expected", [("dgx-a100", "ring"), ("dgx-h100", "nvls"), ("hgx-h800", "nvls")])
def test_auto_picks_ring_or_nvls_for_1gb_inside_one_node(node: str, expected: str) -> None:
    cluster = _cluster(node, 8)
    g, f = cluster.comm_group(8), C.node_features(cluster)
    assert C.choose_algorithm("all_reduce", 1e9, g, "auto", features=f) == expected
    if expected == "nvls":  # in-switch reduction moves (1 + 1/g) S instead of 2(g-1)/g S per GPU
        assert C.all_reduce_time(1e9, g, "auto", features=f) < 0.85 * C.all_reduce_time(1e9, g, "ring", features=f)


@pytest.mark.parametrize("node", ["dgx-a100", "dgx-h100"])
@pytest.mark.parametrize("kind", ["all_reduce", "all_gather", "reduce_scatter"])
def test_auto_is_the_fastest_algorithm_nccl_could_run(node: str, kind: str) -> None:
    cluster = _cluster(node, 256)
    f = C.node_features(cluster)
    fn = getattr(C, f"{kind}_time")
    tuned = [n for n in ("ring", "tree", "nvls") if C.get_algorithm(n).requires in (None, *f)]
    for size, stride in [(8, 1), (64, 1), (256, 1), (32, 8)]:
        g = cluster.comm_group(size, stride)
        for S in [1e3, 1e6, 1e8, 4e9]:
            assert fn(S, g, "auto", features=f) == min(fn(S, g, a, features=f) for a in tuned)


def test_nvls_is_refused_where_the_nvswitch_cannot_reduce() -> None:
    a100, h100 = _cluster("dgx-a100", 8), _cluster("dgx-h100", 8)
    assert C.node_features(a100) == frozenset() and C.node_features(h100) == {"nvls"}
    with pytest.raises(ClusterSimError, match="NVLink SHARP.*dgx-a100 lacks"):
        C.check_algorithm("nvls", C.node_features(a100), where="node dgx-a100")
    with pytest.raises(ClusterSimError, match="nvls"):
        C.all_reduce_time(1e6, a100.comm_group(8), "nvls", features=C.node_features(a100))
    pcie = ClusterSpec(gpu="h100-sxm5-80gb", num_gpus=8, node="dgx-h100", intra_link="pcie5").resolve()
    assert C.node_features(pcie) == frozenset()  # NVLS is the NVSwitch's; not over an overridden link


def test_nvls_falls_back_to_ring_where_it_cannot_run() -> None:
    cluster = _cluster("dgx-h100", 64)
    f = C.node_features(cluster)
    one_per_node = cluster.comm_group(8, stride=8)  # a DP group of a TP8 job: nothing for the switch to reduce
    for S in [1e3, 1e9]:
        assert C.all_reduce_time(S, one_per_node, "nvls", features=f) == C.all_reduce_time(S, one_per_node, "ring")
        assert C.all_gather_time(S, cluster.comm_group(8), "nvls", features=f) == C.all_gather_time(
            S, cluster.comm_group(8), "ring"
        )  # NVLS all-gather is not modelled


NVLS_BUSBW = [("dgx-h100", 480.0), ("hgx-h800", 215.0)]  # nccl_measured.csv (the h800 figure set no constant)


@pytest.mark.parametrize("node,measured", NVLS_BUSBW)
def test_nvls_bus_bandwidth_against_nccl_tests(node: str, measured: float) -> None:
    cluster = _cluster(node, 8)
    S = 8e9
    t = C.all_reduce_time(S, cluster.comm_group(8), "nvls", features=C.node_features(cluster))
    busbw = C.bus_bandwidth("all_reduce", S, t, 8) / 1e9
    assert abs(busbw - measured) / measured <= 0.05


def test_nvls_tree_small_message_latency_against_nccl_tests() -> None:
    cluster = _cluster("dgx-h100", 16)  # 2 nodes, NDR: 46 us measured for 4 B - 1 KB (nccl_measured.csv)
    t = C.all_reduce_time(1e3, cluster.comm_group(16), "nvls", features=C.node_features(cluster)) * 1e6
    assert abs(t - 46.0) / 46.0 <= 0.25


def _hier_theory(S: float, g: CommGroup) -> tuple[float, float]:
    """(hierarchical, flat ring) all-reduce seconds from first principles, without the per-call base."""
    n, loc, m = g.size, g.local, g.nodes
    ring = 2 * (n - 1) / n * S / min(g.intra_bytes_s, g.net_bytes_s) + 2 * (n - 1) * g.net_latency_s
    hier = (
        2 * (loc - 1) / loc * S / g.intra_bytes_s  # reduce-scatter + all-gather over NVLink
        + 2 * (loc - 1) * g.intra_latency_s
        + 2 * (m - 1) / m * S / g.net_bytes_s  # only S/g per rank crosses the NICs
        + 2 * math.ceil(math.log2(m)) * g.net_latency_s
    )
    return hier, ring


def test_hierarchical_beats_a_flat_ring_across_nodes_at_mid_sizes() -> None:
    g = _cluster("dgx-a100", 128).comm_group(128)  # 16 nodes, 8 HDR NICs each
    hier_s = lambda S: C.all_reduce_time(S, g, "hierarchical")  # noqa: E731
    ring_s = lambda S: C.all_reduce_time(S, g, "ring/fitted")  # noqa: E731  (the pre-protocol ring)
    for S in [1e6, 1e8]:
        assert hier_s(S) - C.BASE_LATENCY_S == pytest.approx(_hier_theory(S, g)[0])
        assert ring_s(S) - C.BASE_LATENCY_S == pytest.approx(_hier_theory(S, g)[1])
    # fewer network latencies vs two extra NVLink phases: hierarchical wins below the crossover S*
    lat_h, lat_r = _hier_theory(0.0, g)
    slope_h, slope_r = (t - lat for t, lat in zip(_hier_theory(1.0, g), (lat_h, lat_r), strict=True))
    crossover = (lat_r - lat_h) / (slope_h - slope_r)
    assert 1e8 < crossover < 1e10
    for S in [1e6, 16e6, 64e6, 0.5 * crossover]:
        assert hier_s(S) < ring_s(S)
    for S in [2 * crossover, 16e9]:
        assert hier_s(S) > ring_s(S)
    # with few NICs per node the NICs carry 2(m-1)/m S instead of 2(n-1)/n S: hierarchical wins at any size
    thin = _cluster("dgx-a100", 16, nics=4).comm_group(16)
    assert C.all_reduce_time(4e9, thin, "hierarchical") < 0.9 * C.all_reduce_time(4e9, thin, "ring/fitted")


# ---- the run config field, through the training simulator ---------------------------------------------


def _train_cfg(node: str, gpus: int, parallel: dict, nics: int | None = None) -> dict:
    cluster = {"gpu": _gpu_of(node), "num_gpus": gpus, "node": node}
    if nics is not None:
        cluster["nics_per_node"] = nics
    return {
        "model": "megatron-gpt-1.7b",
        "cluster": cluster,
        "parallel": parallel,
        "training": {"global_batch": 16, "seq_len": 2048, "overlap_grad_reduce": False},
    }


def test_collective_algorithm_field_validates_with_one_line_errors() -> None:
    from simulator.core.config import ParallelSpec, load_config

    assert ParallelSpec().collective_algorithm == "auto"  # NCCL's tuner, protocol-aware (#15)
    cfg = _train_cfg("dgx-a100", 16, {"dp": 16})
    with pytest.raises(ClusterSimError) as bad:
        load_config(cfg, ["parallel.collective_algorithm=butterfly"])
    msg = str(bad.value)
    assert "\n" not in msg and msg.startswith("parallel.collective_algorithm: ")
    assert "default, auto, ring, tree, hierarchical, nvls" in msg
    with pytest.raises(ClusterSimError, match=r"parallel.collective_algorithm 'nvls' needs NVLink SHARP.*dgx-a100"):
        load_config(cfg, ["parallel.collective_algorithm=nvls"])
    h100 = _train_cfg("dgx-h100", 16, {"dp": 16})
    assert load_config(h100, ["parallel.collective_algorithm=nvls"]).parallel.collective_algorithm == "nvls"


def test_hierarchical_changes_the_training_dp_sync_time() -> None:
    from simulator.training import simulate_training

    cfg = _train_cfg("dgx-a100", 16, {"dp": 16}, nics=4)  # 2 nodes, DP over all 16 GPUs, sync not overlapped
    runs = {
        a: simulate_training(cfg, overrides=[f"parallel.collective_algorithm={a}"]) for a in ("ring", "hierarchical")
    }
    dp = {a: r.timeline.busy_s(0, ("dp",)) for a, r in runs.items()}
    assert dp["hierarchical"] < 0.9 * dp["ring"]  # 4 HDR NICs per node: only S/g per rank crosses them
    assert runs["hierarchical"].exposed_comm_s["dp"] < runs["ring"].exposed_comm_s["dp"]
    assert runs["hierarchical"].step_time_s < runs["ring"].step_time_s
    default = simulate_training(cfg)  # parallel.collective_algorithm defaults to auto (NCCL's tuner)
    assert default.step_time_s == simulate_training(cfg, overrides=["parallel.collective_algorithm=auto"]).step_time_s
    envelope = simulate_training(cfg, overrides=["parallel.collective_algorithm=default"])
    assert envelope.step_time_s <= default.step_time_s  # the fitted envelope: never slower than the tuner's pick


def test_nvls_reaches_the_tensor_parallel_all_reduces() -> None:
    from simulator.training import simulate_training

    cfg = _train_cfg("dgx-h100", 8, {"tp": 8})
    cfg["training"]["global_batch"] = 4
    ring = simulate_training(cfg, overrides=["parallel.collective_algorithm=ring"])
    nvls = simulate_training(cfg, overrides=["parallel.collective_algorithm=nvls"])
    assert nvls.exposed_comm_s["tp"] < 0.9 * ring.exposed_comm_s["tp"]
    assert simulate_training(cfg, overrides=["parallel.collective_algorithm=auto"]).step_time_s == nvls.step_time_s
