"""Training memory model: hand-computed weights/grads/optimizer per ZeRO stage, Korthikanti activations,
pipeline layer placement and the GPT-3 175B fit on A100-80GB."""

from __future__ import annotations

from typing import Any

import pytest

from hwmodels.errors import ClusterSimError
from simulator.core.config import RunConfig, load_config
from simulator.core.device_memory import RUNTIME_OVERHEAD_BYTES, usable_memory_bytes
from simulator.training.memory import (
    FRAGMENTATION_BASE,
    FRAGMENTATION_RECOMPUTE,
    MemoryBreakdown,
    activation_bytes_per_microbatch,
    memory_breakdown,
    stage_layers,
    static_memory,
    transient_activation_bytes,
)

H, HEADS, F, V, L = 1024, 16, 4096, 32000, 8
S, B = 2048, 2

# A GPT-like layer without biases: attention 4h^2 + norm h, GELU MLP 2hf + norm h (f = 4h).
LAYER_PARAMS = 4 * H * H + H + 2 * H * F + H
EMBED_PARAMS = V * H
OUTPUT_PARAMS = H + V * H  # final RMSNorm + untied head

TINY: dict[str, Any] = {
    "name": "tiny-gpt",
    "source": "test fixture",
    "num_layers": L,
    "hidden_size": H,
    "num_attention_heads": HEADS,
    "ffn_hidden_size": F,
    "mlp": "gelu",
    "vocab_size": V,
    "norm": "rmsnorm",
    "position": "rope",
    "max_seq_len": S,
}


def _cfg(
    model: dict[str, Any] | str = TINY,
    gpu: str = "a100-sxm4-80gb",
    training: dict[str, Any] | None = None,
    **parallel: Any,
) -> RunConfig:
    par = {"tp": 2, "pp": 2, "dp": 4, **parallel}
    gpus = par["tp"] * par["pp"] * par["dp"] * par.get("cp", 1)
    train = {"seq_len": S, "micro_batch": B, "global_batch": B * par["dp"] * 4, **(training or {})}
    return load_config({"model": model, "cluster": {"gpu": gpu, "num_gpus": gpus}, "parallel": par, "training": train})


# ----------------------------------------------------------------------------- placement
def test_stage_layers_contiguous_and_interleaved() -> None:
    assert stage_layers(_cfg(), 0) == [0, 1, 2, 3]
    assert stage_layers(_cfg(), 1) == [4, 5, 6, 7]
    inter = _cfg(vpp=2, schedule="interleaved")
    assert stage_layers(inter, 0) == [0, 1, 4, 5]
    assert stage_layers(inter, 1) == [2, 3, 6, 7]
    with pytest.raises(ClusterSimError, match="stage=2"):
        stage_layers(_cfg(), 2)


# ----------------------------------------------------------------------------- static memory
@pytest.mark.parametrize("zero", [0, 1, 2, 3])
def test_weights_grads_optimizer_per_zero_stage(zero: int) -> None:
    """2 / 4 / 12 bytes per param; ZeRO-1 shards optimizer, -2 also grads, -3 also weights over dp=4."""
    tp, dp = 2, 4
    params = (4 * LAYER_PARAMS + EMBED_PARAMS) / tp  # stage 0 of pp=2
    mem = static_memory(_cfg(zero=zero), 0)
    assert mem.weights == pytest.approx(2 * params / (dp if zero >= 3 else 1))
    assert mem.gradients == pytest.approx(4 * params / (dp if zero >= 2 else 1))
    assert mem.optimizer == pytest.approx(12 * params / (dp if zero >= 1 else 1))
    assert mem.activations == 0 and mem.fragmentation == 0


def test_last_stage_holds_head_and_a_copy_of_tied_embeddings() -> None:
    tp = 2
    untied = static_memory(_cfg(), 1)
    assert untied.weights == pytest.approx(2 * (4 * LAYER_PARAMS + OUTPUT_PARAMS) / tp)
    tied = static_memory(_cfg({**TINY, "tied_embeddings": True}), 1)
    # tied: output_params() is just the final norm, but Megatron keeps the word embedding on the last rank too
    assert tied.weights == pytest.approx(untied.weights)
    single = static_memory(_cfg({**TINY, "tied_embeddings": True}, pp=1, dp=8), 0)
    assert single.weights == pytest.approx(2 * (8 * LAYER_PARAMS + EMBED_PARAMS + H) / tp)


def test_fp8_adds_one_byte_per_layer_param() -> None:
    bf16 = static_memory(_cfg(gpu="h100-sxm5-80gb"), 0)
    fp8 = static_memory(_cfg(gpu="h100-sxm5-80gb", training={"precision": "fp8"}), 0)
    assert fp8.weights - bf16.weights == pytest.approx(1.0 * 4 * LAYER_PARAMS / 2)
    assert fp8.optimizer == bf16.optimizer and fp8.gradients == bf16.gradients


def test_buffers_hand_computed() -> None:
    tp = 2
    sbh = S * B * H
    bucket = 4 * 40e6  # Megatron DDP bucket: 40M fp32 elements (dp=4 < 40)
    expected = RUNTIME_OVERHEAD_BYTES + bucket + 2 * 2 * sbh + 2 * 2 * sbh / tp
    assert static_memory(_cfg(), 0).buffers == pytest.approx(expected)
    # one GPU: no DP bucket, no TP or PP buffers
    alone = load_config({"model": TINY, "cluster": {"gpu": "a100-sxm4-80gb", "num_gpus": 1}})
    assert static_memory(alone, 0).buffers == pytest.approx(RUNTIME_OVERHEAD_BYTES)
    # ZeRO-3 prefetches two layers of bf16 weights (per TP rank)
    z3 = static_memory(_cfg(zero=3), 0).buffers
    assert z3 - expected == pytest.approx(2 * 2 * LAYER_PARAMS / tp)


MOE = {
    **TINY,
    "name": "tiny-moe",
    "mlp": "swiglu",
    "moe": {"num_experts": 8, "top_k": 2, "expert_ffn_hidden_size": 512},
}
ROUTED_PER_LAYER = 8 * 3 * H * 512  # 8 SwiGLU experts
NON_EXPERT_PER_LAYER = 4 * H * H + H + H + H * 8  # attention + its norm, MoE norm, router


def test_moe_experts_divide_by_ep() -> None:
    tp, dp, ep = 2, 4, 4
    one = static_memory(_cfg(MOE), 1)
    four = static_memory(_cfg(MOE, ep=ep), 1)
    dense = (4 * NON_EXPERT_PER_LAYER + OUTPUT_PARAMS) / tp
    assert one.weights == pytest.approx(2 * (dense + 4 * ROUTED_PER_LAYER / tp))
    assert four.weights == pytest.approx(2 * (dense + 4 * ROUTED_PER_LAYER / (tp * ep)))
    # ZeRO-1: dense optimizer state over dp=4 replicas, experts over dp/ep = 1 replica
    z1 = static_memory(_cfg(MOE, ep=ep, zero=1), 1)
    assert z1.optimizer == pytest.approx(12 * (dense / dp + 4 * ROUTED_PER_LAYER / (tp * ep)))


# ----------------------------------------------------------------------------- activations
def test_selective_recompute_with_sp_is_34_sbh_over_t_per_layer() -> None:
    """Korthikanti et al. 2022, Table 2: selective + SP keeps 34 s b h / t bytes per layer."""
    tp = 4
    cfg = _cfg(tp=tp, pp=4, dp=1, sp=True, training={"recompute": "selective"})
    per_layer = 34 * S * B * H / tp
    middle = activation_bytes_per_microbatch(cfg, 1, flash_attention=False)
    assert middle == pytest.approx(2 * per_layer)
    first = activation_bytes_per_microbatch(cfg, 0, flash_attention=False)
    assert first == pytest.approx(2 * per_layer + S * B * H / tp)  # + embedding dropout mask


def test_no_recompute_and_tp_without_sp_match_korthikanti() -> None:
    tp, a = 4, HEADS
    sbh = S * B * H
    none = _cfg(tp=tp, pp=4, dp=1, sp=True, training={"recompute": "none"})
    expected = sbh * (34 / tp + 5 * a * S / (H * tp))
    assert activation_bytes_per_microbatch(none, 1, flash_attention=False) == pytest.approx(2 * expected)
    no_sp = _cfg(tp=tp, pp=4, dp=1, training={"recompute": "selective"})
    assert activation_bytes_per_microbatch(no_sp, 1, flash_attention=False) == pytest.approx(2 * sbh * (10 + 24 / tp))
    # flash attention drops the s^2 term: only an fp32 log-sum-exp per query and head
    flash = activation_bytes_per_microbatch(none, 1)
    assert flash == pytest.approx(2 * (34 * sbh / tp + 4 * S * B * a / tp))


def test_full_recompute_keeps_inputs_plus_one_working_layer() -> None:
    tp = 4
    sbh = S * B * H
    cfg = _cfg(tp=tp, pp=4, dp=1, sp=True, training={"recompute": "full"})
    assert activation_bytes_per_microbatch(cfg, 1, flash_attention=False) == pytest.approx(2 * 2 * sbh / tp)
    full_layer = sbh * (34 / tp + 5 * HEADS * S / (H * tp))
    working = transient_activation_bytes(cfg, 1, flash_attention=False)
    assert working == pytest.approx(full_layer - 2 * sbh / tp)
    # the working layer is held once, not per in-flight micro-batch
    one = memory_breakdown(cfg, 1, 1, flash_attention=False).activations
    three = memory_breakdown(cfg, 1, 3, flash_attention=False).activations
    assert three - one == pytest.approx(2 * 2 * 2 * sbh / tp)


def test_selective_recompute_working_set_is_one_layers_attention_scores() -> None:
    tp = 4
    cfg = _cfg(tp=tp, pp=4, dp=1, sp=True, training={"recompute": "selective"})
    scores = S * B * 5 * HEADS * S / tp  # softmax out (2as) + dropout mask (as) + dropout out (2as), per token
    assert transient_activation_bytes(cfg, 1, flash_attention=False) == pytest.approx(scores)
    assert transient_activation_bytes(cfg, 1) == pytest.approx(S * B * 4 * HEADS / tp)  # flash: fp32 LSE


def test_last_stage_logits_once_for_1f1b_per_microbatch_for_gpipe() -> None:
    tp = 2
    sbh, sbv = S * B * H, S * B * V
    head = 4 * sbh / tp + 4 * sbv / tp  # Korthikanti: 4 s b h / t (1 + V / h), with SP
    cfg = _cfg(sp=True, training={"recompute": "none"})  # no recompute working set to add
    assert transient_activation_bytes(cfg, 1) == pytest.approx(head)
    assert transient_activation_bytes(cfg, 0) == 0
    layers = activation_bytes_per_microbatch(cfg, 1)
    gpipe = _cfg(sp=True, schedule="gpipe", training={"recompute": "none"})
    assert activation_bytes_per_microbatch(gpipe, 1) == pytest.approx(layers + head)
    assert transient_activation_bytes(gpipe, 1) == 0


def test_breakdown_scales_linearly_in_inflight_microbatches() -> None:
    cfg = _cfg(sp=True)
    per_mb = activation_bytes_per_microbatch(cfg, 0)
    m1, m2, m5 = (memory_breakdown(cfg, 0, k) for k in (1, 2, 5))
    assert m5.activations - m1.activations == pytest.approx(4 * per_mb)
    assert m2.activations - m1.activations == pytest.approx(per_mb)
    assert m1.weights == m5.weights and m1.buffers == m5.buffers
    # fragmentation: the dynamic pool (activations + buffers but the runtime overhead) at the rule's ratio
    # (selective recompute, dense, no ZeRO-3: base + recompute); weights/grads/optimizer sit in contiguous buffers
    ratio = FRAGMENTATION_BASE + FRAGMENTATION_RECOMPUTE
    dynamic = m5.activations + m5.buffers - RUNTIME_OVERHEAD_BYTES
    assert m5.fragmentation == pytest.approx(dynamic * ratio / (1 - ratio))
    with pytest.raises(ClusterSimError, match="inflight_microbatches"):
        memory_breakdown(cfg, 0, -1)


def test_to_gb_and_total() -> None:
    mem = MemoryBreakdown(weights=1e9, gradients=2e9, optimizer=3e9, activations=4e9, buffers=5e8, fragmentation=5e8)
    assert mem.total == pytest.approx(11e9)
    gb = mem.to_gb()
    expected = {"weights": 1, "gradients": 2, "optimizer": 3, "activations": 4, "buffers": 0.5, "fragmentation": 0.5}
    assert gb == pytest.approx({**expected, "peak": 11})


def test_usable_memory_is_cuda_visible_share_of_gib() -> None:
    assert usable_memory_bytes("a100-sxm4-80gb") == pytest.approx(79.1787109375 * 2**30)
    assert usable_memory_bytes("a100-sxm4-40gb") == pytest.approx(40 * 2**30 * 79.1787109375 / 80)


# ----------------------------------------------------------------------------- GPT-3 175B on A100-80GB
def _gpt3(micro_batch: int, recompute: str) -> RunConfig:
    return load_config(
        {
            "model": "gpt3-175b",
            "cluster": {"gpu": "a100-sxm4-80gb", "num_gpus": 1024},
            "parallel": {"tp": 8, "pp": 8, "dp": 16, "sp": True, "zero": 1},
            "training": {"seq_len": 2048, "global_batch": 1536, "micro_batch": micro_batch, "recompute": recompute},
        }
    )


def test_gpt3_175b_fits_with_selective_recompute_but_not_without_at_micro_batch_8() -> None:
    usable = usable_memory_bytes("a100-sxm4-80gb")
    fits = memory_breakdown(_gpt3(1, "selective"), 0, 8)  # 1F1B: the first rank holds pp micro-batches
    print(f"\nGPT-3 175B stage 0: {fits.to_gb()}")
    assert fits.total < usable
    # selective + SP: 34 s b h / t per layer x 12 layers x 8 micro-batches ~ 10.3 GB (Korthikanti)
    assert fits.activations / 1e9 == pytest.approx(34 * 2048 * 12288 / 8 * 12 * 8 / 1e9, rel=0.01)
    too_big = memory_breakdown(_gpt3(8, "none"), 0, 8)
    assert too_big.total > usable


def test_compression_state_is_in_the_simulated_memory() -> None:
    """Error feedback keeps an fp32 residual of every local gradient element (and PowerSGD its fp32 factors): the
    simulated peak holds it, as a term of its own, and only when a data-parallel collective is compressed."""
    from simulator.compression import memory_overhead_bytes
    from simulator.core.config import load_config
    from simulator.training.simulate import simulate_training

    base = {
        "model": "llama3-8b",
        "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 64, "node": "dgx-h100"},
        "parallel": {"tp": 8, "dp": 8},
        "training": {"seq_len": 4096, "global_batch": 64, "micro_batch": 1},
    }
    ef = {"sparsify": "topk", "fraction": 0.01, "error_feedback": True}
    dense = simulate_training(base).memory_per_gpu_gb
    comp = simulate_training({**base, "training": {**base["training"], "compression": ef}}).memory_per_gpu_gb
    params = load_config(base).model.total_params / 8  # tp 8, one pipeline stage
    assert dense.compression == 0.0
    assert comp.compression * 1e9 == pytest.approx(4.0 * params, rel=1e-6)
    assert comp.peak - dense.peak == pytest.approx(comp.compression, rel=1e-6)
    spec = load_config({**base, "training": {**base["training"], "compression": ef}}).training.compression
    assert comp.compression * 1e9 == pytest.approx(memory_overhead_bytes(spec, params), rel=1e-6)
    one_replica = {**base, "cluster": {**base["cluster"], "num_gpus": 8}, "parallel": {"tp": 8, "dp": 1}}
    one_replica["training"] = {**base["training"], "global_batch": 8, "compression": ef}
    assert simulate_training(one_replica).memory_per_gpu_gb.compression == 0.0  # nothing is reduced, no state
