"""Memory-saving techniques of real plans (DeepSeek-V3 report sec. 3.2.3 / 3.3.3): recompute modules, FP8
activation caching, BF16 optimizer moments, EMA placement, DualPipe's two chunks, MTP sharing, and the
allocator fragmentation rule."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hwmodels.errors import ClusterSimError
from simulator.core.config import RunConfig, load_config
from simulator.core.device_memory import RUNTIME_OVERHEAD_BYTES
from simulator.models import get_model
from simulator.training import memory as M
from simulator.validation.tables import DEEPSEEK_V3

GIB = 2**30


def _v3(**training: Any) -> RunConfig:
    d = copy.deepcopy(DEEPSEEK_V3)
    d["training"].update(training)
    return load_config(d)


# ----------------------------------------------------------------------------- per-component activations
def test_deepseek_v3_moe_layer_per_token_by_component() -> None:
    """DeepSeek-V3's recipe, term by term (bytes per token, tp = 1): norm inputs 2 x 2h (residual stream);
    MLA latents c_q, c_kv and the RoPE key 2 (1536 + 512 + 64); attention output in E5M6 1.5 x 128 x 128;
    fp32 LSE 4 x 128; router fp32 scores 4 (256 + 8); 8 dispatched tokens and 8 x 2f_e SwiGLU inputs in
    FP8 (1 + 4/128 bytes with the 1x128 tile scales); the shared expert's 2f_s + f_s in FP8."""
    m = get_model("deepseek-v3")
    h, fp8 = 7168, 1 + 4 / 128
    expected = (
        2 * 2 * h
        + 2 * (1536 + 512 + 64)
        + 1.5 * 128 * 128
        + 4 * 128
        + 4 * (256 + 8)
        + 8 * fp8 * h
        + 8 * fp8 * 2 * 2048
        + fp8 * 3 * 2048
    )
    mods = ("layernorm", "mla_up_proj", "moe_act")
    act = m.activation_bytes_per_layer(
        4096,
        1,
        recompute="selective",
        recompute_modules=mods,
        cache_dtype="fp8",
        flash_attention=True,
        dropout=False,
        layer=10,
    )
    assert act == pytest.approx(4096 * expected, rel=1e-12)
    # each technique saves memory on its own, relative to Megatron's default selective (core_attn)
    base = m.activation_bytes_per_layer(4096, 1, recompute="selective", flash_attention=True, dropout=False, layer=10)
    for one in mods:
        alone = m.activation_bytes_per_layer(
            4096, 1, recompute="selective", recompute_modules=(one,), flash_attention=True, dropout=False, layer=10
        )
        assert alone < base, one
    assert act < base / 2.5


def test_mla_without_up_proj_recompute_keeps_latents_and_normed_latents_and_qkv() -> None:
    m = get_model("deepseek-v3")
    a, qk, v = 128, 192, 128
    with_qkv = m.activation_bytes_per_layer(1, 1, recompute="selective", recompute_modules=(), layer=10)
    without = m.activation_bytes_per_layer(1, 1, recompute="selective", recompute_modules=("mla_up_proj",), layer=10)
    # dropped: Q, K, V (2 bytes each) and the normed latents (2 bytes); added: the shared RoPE key
    assert with_qkv - without == pytest.approx(2 * a * (2 * qk + v) + 2 * (1536 + 512) - 2 * 64)


def test_moe_and_mlp_modules_keep_only_the_block_input() -> None:
    m = get_model("deepseek-v3")
    h = 7168
    kw: dict[str, Any] = {"recompute": "selective", "flash_attention": True, "dropout": False}
    attn_only = m.activation_bytes_per_layer(1, 1, recompute_modules=("moe", "mlp"), layer=10, **kw)
    attn = attn_only - 2 * 2 * h  # the MoE block keeps its norm input and its (checkpointed) input
    dense = m.activation_bytes_per_layer(1, 1, recompute_modules=("moe", "mlp"), layer=0, **kw)
    assert dense == pytest.approx(attn + 2 * 2 * h)


def test_recompute_modules_checked_and_ignored_unless_selective() -> None:
    m = get_model("deepseek-v3")
    with pytest.raises(ClusterSimError, match="recompute_modules"):
        m.activation_bytes_per_layer(1, 1, recompute="selective", recompute_modules=("attention",))
    none = m.activation_bytes_per_layer(8, 1, recompute="none")
    assert m.activation_bytes_per_layer(8, 1, recompute="none", recompute_modules=("moe",)) == none
    with pytest.raises(ClusterSimError, match="cache_dtype"):
        m.activation_bytes_per_layer(1, 1, cache_dtype="fp4")
    with pytest.raises(Exception, match="recompute_modules"):
        _v3(recompute_modules=["attention"])


# ----------------------------------------------------------------------------- optimizer, EMA
def test_optimizer_bytes_per_param_moments_and_ema() -> None:
    assert M.optimizer_bytes_per_param(_v3(optimizer_moment_dtype="fp32", ema="cpu")) == 12.0
    assert M.optimizer_bytes_per_param(_v3()) == 8.0  # DeepSeek-V3: fp32 master + 2 bf16 moments
    assert M.optimizer_bytes_per_param(_v3(ema="gpu")) == 12.0  # + an fp32 EMA on the GPU
    ratio = M.static_memory(_v3(optimizer_moment_dtype="fp32"), 5).optimizer / M.static_memory(_v3(), 5).optimizer
    assert ratio == pytest.approx(12 / 8)


# ----------------------------------------------------------------------------- DualPipe and MTP
def _dual_vs_1f1b(stage: int) -> tuple[M.MemoryBreakdown, M.MemoryBreakdown, M.MemoryBreakdown]:
    dual = _v3()
    d = copy.deepcopy(DEEPSEEK_V3)
    d["parallel"]["schedule"] = "1f1b"
    one = load_config(d)
    return M.static_memory(dual, stage), M.static_memory(one, stage), M.static_memory(one, 15 - stage)


def test_dualpipe_holds_two_chunks_weights_and_grads_twice_optimizer_shard_once() -> None:
    """Rank s holds stages s and pp-1-s (DeepSeek-V3 Table 2: 2x parameters); ZeRO-1 shards the optimizer over
    both copies' data-parallel ranks, so the optimizer shard equals the two stages' one-copy shards halved."""
    dual, own, mirror = _dual_vs_1f1b(5)
    assert dual.weights == pytest.approx(own.weights + mirror.weights)
    assert dual.gradients == pytest.approx(own.gradients + mirror.gradients)
    assert dual.optimizer == pytest.approx((own.optimizer + mirror.optimizer) / 2)
    assert M.rank_layers(_v3(), 5) == M.stage_layers(_v3(), 5) + M.stage_layers(_v3(), 10)


def test_mtp_shares_embedding_with_dualpipe_and_copies_it_otherwise() -> None:
    m = get_model("deepseek-v3")
    dual, last_1f1b = M._stage_params(_v3(), 0), None
    d = copy.deepcopy(DEEPSEEK_V3)
    d["parallel"]["schedule"] = "1f1b"
    one = load_config(d)
    last_1f1b = M._stage_params(one, 15)
    first_1f1b = M._stage_params(one, 0)
    emb = m.vocab_size * m.hidden_size
    # DualPipe's rank 0 holds the embedding and the head once, shared by the MTP module
    assert dual.edges == pytest.approx(m.embedding_params() + m.output_params())
    # 1F1B: the last stage keeps its own copy of the embedding for the MTP module's lookup
    assert last_1f1b.edges == pytest.approx(m.output_params() + emb)
    assert first_1f1b.edges == pytest.approx(m.embedding_params())
    # and the MTP module's layer + projection
    mtp_dense, mtp_experts = M._mtp_params(one)
    layer_dense, layer_experts = M._layer_split(one, 60)
    assert mtp_dense == pytest.approx(layer_dense + 2 * 7168 * 7168 + 3 * 7168)
    assert mtp_experts == pytest.approx(layer_experts)


def test_inflight_unit_is_an_average_stage_so_uneven_ranks_are_not_counted_twice() -> None:
    """The engine counts a 4-layer chunk of a 61-layer/16-stage model as 4 / 3.8125 micro-batches; the
    activations of 17 such micro-batches are 17 x 4 layers, not 17 x 4 / 3.8125 x 4."""
    cfg = _v3()
    per_layer = M._layer_activations(cfg, 20, "selective", True)
    inflight = 17 * 4 / (61 / 16)
    acts = M.memory_breakdown(cfg, 5, inflight).activations - M.transient_activation_bytes(cfg, 5)
    assert acts == pytest.approx(17 * 4 * per_layer)


# ----------------------------------------------------------------------------- fragmentation rule
def test_fragmentation_rule() -> None:
    base = M.fragmentation_ratio(recompute="none", zero=1, moe=False)
    assert base == M.FRAGMENTATION_BASE
    zr = M.fragmentation_ratio(recompute="full", zero=3, moe=False)
    assert zr == pytest.approx(M.FRAGMENTATION_BASE + M.FRAGMENTATION_RECOMPUTE + M.FRAGMENTATION_ZERO3)
    assert 0.10 <= zr <= 0.30  # inside GMLake's measured range for ZeRO-3 + recomputation
    assert M.fragmentation_ratio(recompute="full", zero=3, moe=True, expandable_segments=True) == base
    assert M.fragmentation_bytes(85.0, 0.15) == pytest.approx(15.0)  # reserved = live / (1 - ratio)


def test_fragmentation_is_charged_on_the_dynamic_pool_only() -> None:
    cfg = _v3()
    mem = M.memory_breakdown(cfg, 5, 10)
    ratio = M.config_fragmentation_ratio(cfg)
    assert ratio == pytest.approx(M.FRAGMENTATION_BASE + M.FRAGMENTATION_RECOMPUTE + M.FRAGMENTATION_MOE)
    dynamic = mem.activations + mem.buffers - RUNTIME_OVERHEAD_BYTES
    assert mem.fragmentation == pytest.approx(dynamic * ratio / (1 - ratio))
    static = mem.weights + mem.gradients + mem.optimizer
    assert M.peak_bytes(static, mem.buffers, mem.activations, ratio=ratio) == pytest.approx(mem.total)
    expandable = M.memory_breakdown(_v3(expandable_segments=True), 5, 10)
    assert expandable.fragmentation < mem.fragmentation


# ----------------------------------------------------------------------------- the published plan
def test_deepseek_v3_middle_ranks_fit_80gib_with_the_report_techniques() -> None:
    """PP16 DualPipe: a middle rank holds two 4-layer MoE chunks and PP + 1 = 17 chunk-micro-batches in flight
    (report Table 2). With the report's techniques it fits an 80 GiB H800; with none of them it does not."""
    inflight = 17 * 4 / (61 / 16)
    mem = M.memory_breakdown(_v3(), 5, inflight)
    print(f"\nDeepSeek-V3 rank 5: {mem.to_gb()}")
    assert mem.total < 80 * GIB
    plain = copy.deepcopy(DEEPSEEK_V3)
    for knob in ("recompute_modules", "activation_cache_dtype", "optimizer_moment_dtype", "ema", "dropout"):
        plain["training"].pop(knob)
    assert M.memory_breakdown(load_config(plain), 5, inflight).total > 2 * mem.total
