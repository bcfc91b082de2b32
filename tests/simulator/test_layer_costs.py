"""Workload ops and the layer cost report: FLOPs add up, TP splits work, MoE and MLA shapes."""

from __future__ import annotations

import pytest

from simulator.core.config import load_config
from simulator.core.layer_costs import layer_cost_report
from simulator.core.workload import head_ops, layer_ops
from simulator.models import get_model


def _cfg(model: str, gpus: int = 8, tp: int = 8, **extra):
    data = {
        "model": model,
        "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": gpus},
        "parallel": {"tp": tp, "dp": gpus // tp, **extra},
        "training": {"seq_len": 4096, "global_batch": gpus // tp, "micro_batch": 1},
    }
    return load_config(data)


@pytest.mark.parametrize("name", ["llama3-8b", "gpt3-175b", "mixtral-8x7b", "deepseek-v2-lite"])
def test_layer_matmul_flops_match_the_model_flop_count(name: str) -> None:
    """The ops' forward FLOPs per token equal the model's own count (matmuls + attention)."""
    m = get_model(name)
    seq = 2048
    total = sum(op.flops for i in range(m.num_layers) for op in layer_ops(m, i, 1, seq) if op.kind in ("gemm", "attn"))
    total += sum(op.flops for op in head_ops(m, 1, seq) if op.kind == "gemm")
    per_token = total / seq
    expected = m.flops_per_token(seq)
    print(f"\n{name}: ops {per_token / 1e9:.3f} GFLOP/token vs model {expected / 1e9:.3f}")
    assert per_token == pytest.approx(expected, rel=0.03)


def test_tensor_parallel_splits_gemm_flops() -> None:
    m = get_model("llama3-8b")
    one = sum(op.flops for op in layer_ops(m, 0, 1, 2048, tp=1) if op.kind == "gemm")
    eight = sum(op.flops for op in layer_ops(m, 0, 1, 2048, tp=8) if op.kind == "gemm")
    assert eight == pytest.approx(one / 8, rel=1e-9)
    comms = [op for op in layer_ops(m, 0, 1, 2048, tp=8) if op.kind == "comm"]
    assert [c.collective for c in comms] == ["all_reduce", "all_reduce"]
    sp = [op.collective for op in layer_ops(m, 0, 1, 2048, tp=8, sp=True) if op.kind == "comm"]
    assert sp == ["all_gather", "reduce_scatter", "all_gather", "reduce_scatter"]


def test_moe_layer_has_dispatch_and_combine_with_ep() -> None:
    m = get_model("mixtral-8x7b")
    names = [op.name for op in layer_ops(m, 0, 1, 1024, ep=8)]
    assert "moe_dispatch" in names and "moe_combine" in names and "router" in names


def test_report_is_consistent() -> None:
    r = layer_cost_report(_cfg("llama3-8b"))
    assert r.model_forward_ms > r.layer_forward_ms > 0
    assert r.model_backward_ms > r.model_forward_ms
    assert 0 < r.mfu < 1
    assert r.tflops_per_gpu == pytest.approx(r.mfu * 989, rel=1e-6)
    frame = r.to_frame()
    assert list(frame["name"])[0] == "attn_norm"


def test_more_tp_means_less_time_per_micro_batch_but_lower_mfu() -> None:
    r1 = layer_cost_report(_cfg("llama3-8b", gpus=1, tp=1))
    r8 = layer_cost_report(_cfg("llama3-8b", gpus=8, tp=8))
    assert r8.model_forward_ms < r1.model_forward_ms
    assert r8.mfu < r1.mfu


def test_calibrated_h100_profile_is_the_default_and_changes_the_costs() -> None:
    a = layer_cost_report(_cfg("llama3-8b"), "datasheet")
    b = layer_cost_report(_cfg("llama3-8b"))
    assert a.profile == "datasheet" and b.profile == "calibrated"
    assert a.model_forward_ms != b.model_forward_ms
