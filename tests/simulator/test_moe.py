"""MoE routing replay and placement: loads, imbalance, all-to-all bytes, group limits, traces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels.errors import ClusterSimError
from simulator.moe.routing import (
    GroupLimitedRouting,
    HierarchicalRouting,
    LoadAwareRouting,
    MoERouting,
    TraceRouting,
    UniformRouting,
    ZipfRouting,
    a2a_bytes_per_rank,
    capacity,
    expert_loads,
    inclusion_probabilities,
    layer_stats,
    layer_time_factor,
    load_trace,
    parse_trace,
    route_tokens,
    routing_stats,
    validate_routing,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def zipf(exponent: float, **kw: float) -> MoERouting:
    return MoERouting(source=ZipfRouting(exponent=exponent, **kw))


# ----------------------------------------------------------------------------- loads
@pytest.mark.parametrize("tokens", [1, 100, 4096, 1_000_000])
def test_uniform_loads_sum_to_tokens_times_top_k(tokens: int) -> None:
    loads = expert_loads(MoERouting(), 64, 8, tokens, rng=rng())
    assert loads.dtype.kind == "i"
    assert loads.sum() == tokens * 8
    assert loads.min() >= 0 and loads.max() <= tokens  # a token picks an expert at most once


def test_uniform_imbalance_close_to_one_for_many_tokens() -> None:
    stats = routing_stats(expert_loads(MoERouting(), 64, 8, 1_000_000, rng=rng()), ep=8)
    assert stats.rank_max_over_mean < 1.005
    assert stats.expert_max_over_mean < 1.01
    few = routing_stats(expert_loads(MoERouting(), 64, 8, 64, rng=rng()), ep=8)
    assert few.rank_max_over_mean > stats.rank_max_over_mean  # small batches are lumpier


def test_zipf_exponent_raises_imbalance_monotonically() -> None:
    ratios = [
        routing_stats(expert_loads(zipf(s), 64, 6, 200_000, rng=rng()), ep=8).expert_max_over_mean
        for s in (0.0, 0.5, 1.0, 1.5)
    ]
    assert ratios[0] < 1.05
    assert all(a < b for a, b in zip(ratios, ratios[1:], strict=False)), ratios


def test_scaling_up_keeps_batch_noise_realistic() -> None:
    """Past sample_tokens the loads are mean + sqrt-scaled noise, not a blown-up sample."""
    big = [routing_stats(expert_loads(zipf(1.0), 256, 8, 2_000_000, rng=rng(s)), ep=32) for s in range(3)]
    ratios = [b.expert_max_over_mean for b in big]
    assert max(ratios) - min(ratios) < 0.02 * min(ratios)
    loads = expert_loads(MoERouting(), 256, 8, 2_000_000, rng=rng())
    # binomial-sized noise: std of a load is ~ sqrt(mean) = 250, so the spread stays within a few %
    assert loads.max() / loads.mean() < 1.02


def test_same_seed_same_loads_and_different_seed_differs() -> None:
    for routing in (zipf(1.2, layer_variation=0.3, drift_per_step=0.05), MoERouting()):
        a = expert_loads(routing, 64, 6, 10_000, layer=3, step=7, rng=rng(1))
        b = expert_loads(routing, 64, 6, 10_000, layer=3, step=7, rng=rng(1))
        c = expert_loads(routing, 64, 6, 10_000, layer=3, step=7, rng=rng(2))
        np.testing.assert_array_equal(a, b)
        assert (a != c).any()


def test_hot_experts_depend_on_layer_variation_and_drift() -> None:
    def hottest(routing: MoERouting, layer: int = 0, step: int = 0) -> int:
        return int(np.argmax(expert_loads(routing, 64, 2, 50_000, layer=layer, step=step, rng=rng())))

    same = zipf(2.0)
    assert len({hottest(same, layer=i) for i in range(6)}) == 1
    varied = zipf(2.0, layer_variation=1.0)
    assert len({hottest(varied, layer=i) for i in range(6)}) > 1
    drifting = zipf(2.0, drift_per_step=0.5)
    assert len({hottest(drifting, step=s) for s in range(0, 600, 100)}) > 1


def test_inclusion_probabilities_sum_to_top_k_and_match_sampling() -> None:
    w = 1.0 / np.arange(1, 33) ** 1.0
    pi = inclusion_probabilities(w, 4)
    assert pi.sum() == pytest.approx(4.0)
    empirical = expert_loads(MoERouting(source=ZipfRouting(exponent=1.0)), 32, 4, 4096, rng=rng()) / 4096
    assert np.sort(empirical)[::-1][:4] == pytest.approx(np.sort(pi)[::-1][:4], abs=0.06)


# ----------------------------------------------------------------------------- stats
def test_layer_time_factor_is_max_over_mean_rank_load() -> None:
    loads = np.array([10, 0, 5, 5, 30, 10, 0, 20])  # ep=4: ranks get 10, 10, 40, 20
    stats = routing_stats(loads, ep=4)
    np.testing.assert_array_equal(stats.rank_loads, [10, 10, 40, 20])
    assert layer_time_factor(stats) == pytest.approx(40 / 20)
    assert stats.expert_utilisation == pytest.approx(10 / 30)


def test_capacity_factor_drops_tokens_and_reports_fraction() -> None:
    routing = MoERouting(source=ZipfRouting(exponent=1.2), capacity_factor=1.0)
    tokens = 8192
    loads = expert_loads(routing, 32, 2, tokens, rng=rng())
    cap = capacity(1.0, tokens, 2, 32)
    assert cap == 512
    assert loads.max() == cap
    stats = routing_stats(loads, ep=4, routed=tokens * 2)
    assert 0.05 < stats.dropped_fraction < 0.9
    assert stats.dropped_fraction == pytest.approx(1 - loads.sum() / (tokens * 2))
    free = layer_stats(MoERouting(source=ZipfRouting(exponent=1.2)), 32, 2, tokens, ep=4, rng=rng())
    assert free.dropped_fraction == 0.0


def test_eplb_replication_lowers_rank_imbalance() -> None:
    loads = expert_loads(zipf(1.2), 64, 6, 100_000, rng=rng())
    plain = routing_stats(loads, ep=8)
    replicated = routing_stats(loads, ep=8, replicate_hot_experts=8)
    assert replicated.rank_max_over_mean < plain.rank_max_over_mean - 0.2
    assert replicated.rank_loads.sum() == pytest.approx(loads.sum())
    assert replicated.replicas.sum() == 64 + 8
    via_config = layer_stats(zipf(1.2).model_copy(update={"replicate_hot_experts": 8}), 64, 6, 100_000, ep=8, rng=rng())
    assert via_config.rank_max_over_mean == pytest.approx(replicated.rank_max_over_mean)


def test_load_aware_routing_lowers_imbalance_vs_its_base() -> None:
    base = ZipfRouting(exponent=1.2)
    before = routing_stats(expert_loads(MoERouting(source=base), 64, 6, 100_000, rng=rng()), ep=8)
    aware = MoERouting(source=LoadAwareRouting(bias_strength=0.5, base=base))
    after = routing_stats(expert_loads(aware, 64, 6, 100_000, rng=rng()), ep=8)
    assert after.expert_max_over_mean < 1.3 < before.expert_max_over_mean
    assert after.expert_utilisation > 0.75 > before.expert_utilisation
    assert after.rank_max_over_mean < before.rank_max_over_mean


# ----------------------------------------------------------------------------- per-token routing
def test_hierarchical_routing_keeps_each_token_inside_one_pool() -> None:
    routing = MoERouting(source=HierarchicalRouting(pools=4))
    ids = route_tokens(routing, 32, 2, 4096, rng=rng())
    assert ids.shape == (4096, 2)
    pools = ids // 8
    assert (pools == pools[:, :1]).all()
    assert (ids[:, 0] != ids[:, 1]).all()
    share = np.bincount(pools[:, 0], minlength=4) / 4096
    assert share == pytest.approx([0.25] * 4, abs=0.04)


def test_group_limited_routing_bounds_groups_per_token() -> None:
    routing = MoERouting(source=GroupLimitedRouting(groups=8, max_groups=3, base=ZipfRouting(exponent=0.8)))
    ids = route_tokens(routing, 64, 6, 2048, rng=rng())
    groups_used = np.array([len(set(row)) for row in (ids // 8).tolist()])
    assert groups_used.max() <= 3
    assert (np.sort(ids, axis=1)[:, 1:] != np.sort(ids, axis=1)[:, :-1]).all()  # distinct experts
    loads = expert_loads(routing, 64, 6, 50_000, rng=rng())
    assert loads.sum() == 50_000 * 6


def test_group_limited_shape_errors_are_one_line() -> None:
    routing = MoERouting(source=GroupLimitedRouting(groups=8, max_groups=1))
    with pytest.raises(ClusterSimError, match="max_groups") as err:
        expert_loads(routing, 64, 9, 100, rng=rng())
    assert "\n" not in str(err.value)
    with pytest.raises(ClusterSimError, match="does not divide"):
        expert_loads(MoERouting(source=HierarchicalRouting(pools=3)), 64, 2, 100, rng=rng())


# ----------------------------------------------------------------------------- all-to-all bytes
def test_a2a_bytes_match_hand_calculation_top1() -> None:
    # E=4 experts on ep=4 ranks (expert e on rank e), 2 ranks per node; token i is held by rank i // 2.
    ids = np.array([[0], [2], [0], [1], [3], [1], [3], [3]])
    out = a2a_bytes_per_rank(
        ids, num_experts=4, tokens_per_rank=2, hidden=10, bytes_per_elem=2.0, ep=4, ranks_per_node=2
    )
    tok = 10 * 2.0  # bytes per token copy
    np.testing.assert_array_equal(out.local_bytes, np.array([1, 1, 0, 2]) * tok)
    np.testing.assert_array_equal(out.intra_node_bytes, np.array([0, 1, 1, 0]) * tok)
    np.testing.assert_array_equal(out.inter_node_bytes, np.array([1, 0, 1, 0]) * tok)
    np.testing.assert_array_equal(out.inter_node_dedup_bytes, np.array([1, 0, 1, 0]) * tok)
    # rank 2's copy for expert 1 lands on its rail peer (rank 0) and is forwarded over NVLink to rank 1
    np.testing.assert_array_equal(out.forwarded_bytes, np.array([0, 0, 1, 0]) * tok)
    doubled = a2a_bytes_per_rank(
        ids, num_experts=4, tokens_per_rank=4, hidden=10, bytes_per_elem=2.0, ep=4, ranks_per_node=2
    )
    np.testing.assert_array_equal(doubled.inter_node_bytes, 2 * out.inter_node_bytes)


def test_a2a_node_dedup_sends_once_per_remote_node() -> None:
    ids = np.array([[2, 3], [0, 1], [0, 3], [0, 1]])  # one token per rank, top_k=2
    out = a2a_bytes_per_rank(
        ids, num_experts=4, tokens_per_rank=1, hidden=1, bytes_per_elem=1.0, ep=4, ranks_per_node=2
    )
    np.testing.assert_array_equal(out.local_bytes, [0, 1, 0, 0])
    np.testing.assert_array_equal(out.intra_node_bytes, [0, 1, 1, 0])
    np.testing.assert_array_equal(out.inter_node_bytes, [2, 0, 1, 2])
    np.testing.assert_array_equal(out.inter_node_dedup_bytes, [1, 0, 1, 1])
    np.testing.assert_array_equal(out.forwarded_bytes, [1, 0, 0, 1])


def test_a2a_from_routing_conserves_copies() -> None:
    out = a2a_bytes_per_rank(
        zipf(1.0),
        num_experts=64,
        top_k=6,
        tokens_per_rank=1000,
        hidden=100,
        bytes_per_elem=1.0,
        ep=16,
        ranks_per_node=8,
        rng=rng(),
    )
    total = out.local_bytes + out.intra_node_bytes + out.inter_node_bytes
    np.testing.assert_allclose(total, 1000 * 6 * 100)
    assert (out.inter_node_dedup_bytes <= out.inter_node_bytes).all()


def test_group_limited_to_one_node_cuts_inter_node_bytes() -> None:
    """DeepSeek-V2-like: 64 experts, top-6, 8 nodes of 8 ranks; each token restricted to one node."""
    kw = dict(num_experts=64, top_k=6, tokens_per_rank=512, hidden=5120, bytes_per_elem=2.0, ep=64, ranks_per_node=8)
    free = a2a_bytes_per_rank(MoERouting(), rng=rng(), **kw)
    limited = a2a_bytes_per_rank(MoERouting(source=GroupLimitedRouting(groups=8, max_groups=1)), rng=rng(), **kw)
    cut = 1 - limited.inter_node_dedup_bytes.mean() / free.inter_node_dedup_bytes.mean()
    assert cut >= 0.3, cut
    # the expected values: 7/8 remote nodes per token vs 7 * (1 - C(56,6)/C(64,6)) ~ 3.96
    per_token = 5120 * 2.0 * 512
    assert limited.inter_node_dedup_bytes.mean() / per_token == pytest.approx(7 / 8, abs=0.05)
    assert free.inter_node_dedup_bytes.mean() / per_token == pytest.approx(3.96, abs=0.15)


# ----------------------------------------------------------------------------- configs
def test_routing_config_is_a_tagged_union_with_one_line_errors() -> None:
    routing = validate_routing({"source": {"kind": "zipf", "exponent": 1.2}, "capacity_factor": 1.25})
    assert isinstance(routing.source, ZipfRouting)
    nested = validate_routing(
        {"source": {"kind": "load_aware", "bias_strength": 0.3, "base": {"kind": "zipf", "exponent": 1}}}
    )
    assert isinstance(nested.source, LoadAwareRouting) and isinstance(nested.source.base, ZipfRouting)
    for bad in ({"source": {"kind": "zipf"}}, {"source": {"kind": "nope"}}, {"capacity_factor": 0}, {"extra": 1}):
        with pytest.raises(ClusterSimError) as err:
            validate_routing(bad)
        assert "\n" not in str(err.value)
    with pytest.raises(ClusterSimError, match="max_groups"):
        validate_routing({"source": {"kind": "group_limited", "groups": 4, "max_groups": 5}})


@settings(max_examples=40, deadline=None)
@given(
    e_exp=st.integers(2, 7),
    k=st.integers(1, 8),
    tokens=st.integers(0, 20_000),
    kind=st.sampled_from(["uniform", "zipf", "group", "pool", "aware"]),
    seed=st.integers(0, 2**16),
)
def test_loads_are_valid_for_any_source(e_exp: int, k: int, tokens: int, kind: str, seed: int) -> None:
    e = 2**e_exp
    k = min(k, e // 2 if kind in ("group", "pool") else e)
    source = {
        "uniform": UniformRouting(),
        "zipf": ZipfRouting(exponent=1.5, drift_per_step=0.1),
        "group": GroupLimitedRouting(groups=2, max_groups=1, base=ZipfRouting(exponent=1.0)),
        "pool": HierarchicalRouting(pools=2, base=ZipfRouting(exponent=3.0)),
        "aware": LoadAwareRouting(bias_strength=1.0, base=ZipfRouting(exponent=8.0)),
    }[kind]
    loads = expert_loads(MoERouting(source=source, sample_tokens=512), e, k, tokens, step=seed % 300, rng=rng(seed))
    assert loads.shape == (e,)
    assert loads.sum() == tokens * k
    assert loads.min() >= 0 and loads.max() <= tokens


def test_steep_zipf_still_picks_distinct_experts() -> None:
    ids = route_tokens(zipf(30.0), 16, 4, 500, rng=rng())
    assert (np.sort(ids, axis=1)[:, 1:] != np.sort(ids, axis=1)[:, :-1]).all()


# ----------------------------------------------------------------------------- traces
def _trace(**over: object) -> dict:
    doc = {
        "format": "clustersim-routing/1",
        "num_experts": 4,
        "top_k": 1,
        "layers": 1,
        "steps": [{"step": 0, "layers": [{"layer": 0, "expert_counts": [1, 2, 3, 4]}]}],
        "source": "test",
    }
    doc.update(over)
    return doc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "clustersim-routing/0"}, "format"),
        ({"steps": [{"step": 0, "layers": [{"layer": 0, "expert_counts": [1, 2, 3]}]}]}, "expected num_experts=4"),
        ({"steps": [{"step": 0, "layers": [{"layer": 0, "expert_counts": [1, -2, 3, 4]}]}]}, "negative"),
        ({"steps": [{"step": 0, "layers": [{"layer": 2, "expert_counts": [1, 2, 3, 4]}]}]}, "out of range"),
        ({"steps": [{"step": 0, "layers": [{"layer": 0, "assignments": [[1], [7]]}]}]}, "outside"),
        ({"steps": [{"step": 0, "layers": [{"layer": 0}]}]}, "exactly one"),
        ({"steps": [{"step": 0, "layers": [{"layer": 0, "assignments": [[1], [2, 3]]}]}]}, "top_k=1"),
        ({"steps": [{"step": 0, "layers": [{"layer": 0, "assignments": [[1, 1]]}]}], "top_k": 2}, "distinct"),
        ({"steps": []}, "steps"),
    ],
)
def test_bad_traces_give_one_line_errors(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_trace(**change)))
    with pytest.raises(ClusterSimError, match=message) as err:
        load_trace(path)
    assert "\n" not in str(err.value)


def test_trace_errors_for_missing_file_and_mismatched_model(tmp_path: Path) -> None:
    with pytest.raises(ClusterSimError, match="not found"):
        load_trace(tmp_path / "missing.json")
    path = tmp_path / "t.json"
    path.write_text(json.dumps(_trace()))
    with pytest.raises(ClusterSimError, match="num_experts=8"):
        expert_loads(MoERouting(source=TraceRouting(path=str(path))), 8, 1, 10, rng=rng())
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(ClusterSimError, match="not valid JSON"):
        load_trace(tmp_path / "junk.json")


def test_trace_replay_scales_and_cycles_steps(tmp_path: Path) -> None:
    doc = _trace(
        steps=[
            {"step": 0, "layers": [{"layer": 0, "expert_counts": [1, 2, 3, 4]}]},
            {"step": 5, "layers": [{"layer": 0, "assignments": [[3], [3], [0], [3]]}]},
        ]
    )
    assert parse_trace(doc).steps[1].step == 5
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    routing = MoERouting(source=TraceRouting(path=str(path)))
    np.testing.assert_array_equal(expert_loads(routing, 4, 1, 10, rng=rng()), [1, 2, 3, 4])
    np.testing.assert_array_equal(expert_loads(routing, 4, 1, 20, layer=3, rng=rng()), [2, 4, 6, 8])
    np.testing.assert_array_equal(expert_loads(routing, 4, 1, 4, step=1, rng=rng()), [1, 0, 0, 3])
    np.testing.assert_array_equal(expert_loads(routing, 4, 1, 10, step=2, rng=rng()), [1, 2, 3, 4])  # cycles


def test_record_routing_round_trip(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from calibration.record_routing import record_routing

    gen = torch.Generator().manual_seed(0)
    layers, tokens, hidden, experts, k = 3, 300, 32, 16, 2
    weights = [torch.randn(experts, hidden, generator=gen) for _ in range(layers)]
    out = tmp_path / "trace.json"
    expected = {}
    for step in (0, 1):
        hs = torch.randn(layers, tokens, hidden, generator=gen)
        record_routing(hs, weights, k, "softmax", out=out, step=step, append=step > 0)
        for layer in range(layers):  # independent reference: plain softmax top-k
            ids = (hs[layer] @ weights[layer].T).softmax(-1).topk(k, dim=-1).indices
            expected[(step, layer)] = torch.bincount(ids.flatten(), minlength=experts).numpy()
    trace = load_trace(out)
    assert (trace.num_experts, trace.top_k, trace.layers, len(trace.steps)) == (experts, k, layers, 2)
    routing = MoERouting(source=TraceRouting(path=str(out)))
    for (step, layer), counts in expected.items():
        loads = expert_loads(routing, experts, k, tokens, layer=layer, step=step, rng=rng())
        np.testing.assert_array_equal(loads, counts)


def test_record_routing_group_limit_and_assignments(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from calibration.record_routing import record_routing, route_topk

    gen = torch.Generator().manual_seed(1)
    hs = torch.randn(2, 256, 16, generator=gen)
    weights = [torch.randn(32, 16, generator=gen) for _ in range(2)]
    ids = route_topk(hs[0], weights[0], 4, "sigmoid", groups=8, topk_groups=1)
    assert ((ids // 4) == (ids[:, :1] // 4)).all()  # every expert in the token's one group
    out = tmp_path / "a.json"
    record_routing(hs, weights, 4, "sigmoid", 8, 2, out=out, assignments=True)
    routing = MoERouting(source=TraceRouting(path=str(out)))
    picked = route_tokens(routing, 32, 4, 256, rng=rng())
    assert (np.array([len(set(row)) for row in (picked // 4).tolist()]) <= 2).all()
    bytes_ = a2a_bytes_per_rank(
        routing,
        num_experts=32,
        top_k=4,
        tokens_per_rank=64,
        hidden=8,
        bytes_per_elem=1,
        ep=8,
        ranks_per_node=4,
        rng=rng(),
    )
    assert bytes_.inter_node_dedup_bytes.sum() > 0
    with pytest.raises(ClusterSimError, match="cannot append"):
        record_routing(hs, [w[:16] for w in weights], 4, out=out, append=True)
    with pytest.raises(ClusterSimError, match="router weight"):
        record_routing(hs, [torch.randn(32, 8)] * 2, 4, out=tmp_path / "x.json")


def test_demo_cli_writes_a_loadable_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    from calibration.record_routing import main

    out = tmp_path / "demo.json"
    assert main(["--demo", str(out), "--experts", "8", "--layers", "2", "--steps", "3"]) == 0
    trace = load_trace(out)
    assert len(trace.steps) == 3 and trace.layers == 2
    assert "wrote" in capsys.readouterr().out
    assert main(["--demo", str(out), "--experts", "8", "--groups", "3"]) == 2
