"""Model catalogue: parameter counts against published figures, KV/activation/FLOP formulas, HF import."""

from __future__ import annotations

import json

import pytest
import yaml
from pydantic import ValidationError

from hwmodels.errors import ClusterSimError, UnknownNameError
from simulator.models import MLASpec, ModelSpec, MoESpec, from_hf_config, get_model, list_models

# --------------------------------------------------------------------------- HF configs (values as published)
_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu"}
HF_LLAMA2_7B = {
    **_LLAMA,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}
HF_LLAMA32_1B = {
    **_LLAMA,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": True,
}
HF_MISTRAL_7B = {
    "architectures": ["MistralForCausalLM"],
    "model_type": "mistral",
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "vocab_size": 32000,
    "max_position_embeddings": 32768,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
}
HF_MIXTRAL_8X7B = {
    **HF_MISTRAL_7B,
    "architectures": ["MixtralForCausalLM"],
    "model_type": "mixtral",
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "sliding_window": None,
}
HF_QWEN2_7B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_act": "silu",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
}
HF_QWEN15_MOE_A27B = {
    "architectures": ["Qwen2MoeForCausalLM"],
    "model_type": "qwen2_moe",
    "hidden_act": "silu",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "moe_intermediate_size": 1408,
    "shared_expert_intermediate_size": 5632,
    "num_experts": 60,
    "num_experts_per_tok": 4,
    "decoder_sparse_step": 1,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
    "num_key_value_heads": 16,
    "vocab_size": 151936,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": False,
}
HF_DEEPSEEK_V2_LITE = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "model_type": "deepseek_v2",
    "hidden_act": "silu",
    "hidden_size": 2048,
    "intermediate_size": 10944,
    "moe_intermediate_size": 1408,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "num_hidden_layers": 27,
    "n_routed_experts": 64,
    "n_shared_experts": 2,
    "num_experts_per_tok": 6,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "n_group": 1,
    "topk_group": 1,
    "topk_method": "greedy",
    "scoring_func": "softmax",
    "kv_lora_rank": 512,
    "q_lora_rank": None,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "vocab_size": 102400,
    "max_position_embeddings": 163840,
    "tie_word_embeddings": False,
}
HF_DEEPSEEK_V3 = {
    **HF_DEEPSEEK_V2_LITE,
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "num_hidden_layers": 61,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_experts_per_tok": 8,
    "first_k_dense_replace": 3,
    "n_group": 8,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "q_lora_rank": 1536,
    "vocab_size": 129280,
    "num_nextn_predict_layers": 1,
}
HF_GPT2 = {
    "architectures": ["GPT2LMHeadModel"],
    "model_type": "gpt2",
    "activation_function": "gelu_new",
    "n_embd": 768,
    "n_layer": 12,
    "n_head": 12,
    "n_inner": None,
    "n_positions": 1024,
    "vocab_size": 50257,
}
HF_GPT_NEOX_20B = {
    "architectures": ["GPTNeoXForCausalLM"],
    "model_type": "gpt_neox",
    "hidden_act": "gelu_fast",
    "hidden_size": 6144,
    "intermediate_size": 24576,
    "num_attention_heads": 64,
    "num_hidden_layers": 44,
    "vocab_size": 50432,
    "max_position_embeddings": 2048,
    "rotary_pct": 0.25,
    "tie_word_embeddings": False,
}

# --------------------------------------------------------------------------- published parameter counts
_DS_ACTIVE = (
    "DeepSeek-V2-Lite's 2.4B activated is not reproducible from its config: without the input embedding "
    "we count 2.45B, with it 2.66B (community finds the same, deepseek-ai/DeepSeek-V2#73)"
)
_KNOWN_GAP = pytest.mark.xfail(strict=True, reason=_DS_ACTIVE)
PUBLISHED = [
    # preset, which count, published (billions), where published
    ("llama2-7b", "total", 6.74, "Llama 2 model card / HF 6.74B"),
    ("llama2-13b", "total", 13.0, "Llama 2 paper"),
    ("llama2-70b", "total", 69.0, "HF 68.98B"),
    ("llama3-8b", "total", 8.03, "HF 8.03B"),
    ("llama3-70b", "total", 70.6, "HF 70.6B"),
    ("llama3-405b", "total", 405.9, "HF 405.9B (Llama 3.1)"),
    ("llama3.2-1b", "total", 1.24, "HF 1.24B"),
    ("mixtral-8x7b", "total", 46.7, "Mistral AI blog"),
    ("mixtral-8x7b", "active", 12.9, "Mistral AI blog"),
    ("mixtral-8x22b", "total", 141.0, "Mistral AI blog"),
    ("mixtral-8x22b", "active", 39.0, "Mistral AI blog"),
    ("deepseek-v2-lite", "total", 15.7, "DeepSeek-V2-Lite model card"),
    pytest.param("deepseek-v2-lite", "active_non_embedding", 2.4, "model card", marks=_KNOWN_GAP),
    ("deepseek-v2", "total", 236.0, "DeepSeek-V2 paper"),
    # DeepSeek counts activated parameters without the input embedding (V3 README_WEIGHTS: "36.7B").
    ("deepseek-v2", "active_non_embedding", 21.0, "DeepSeek-V2 paper"),
    ("deepseek-v3", "total", 671.0, "DeepSeek-V3 report (MTP module excluded)"),
    ("deepseek-v3", "active_non_embedding", 36.7, "DeepSeek-V3 README_WEIGHTS (the report rounds to 37B)"),
    ("gpt3-175b", "total", 174.6, "GPT-3 paper 175B; 174.6B exact"),
]


@pytest.mark.parametrize(("preset", "which", "published_b", "where"), PUBLISHED)
def test_published_parameter_counts(preset: str, which: str, published_b: float, where: str) -> None:
    spec = get_model(preset)
    measured = {
        "total": spec.total_params,
        "active": spec.active_params,
        "active_non_embedding": spec.active_params_non_embedding,
    }[which]
    error = measured / (published_b * 1e9) - 1.0
    print(f"{preset} {which}: {measured / 1e9:.3f}B vs {published_b}B ({where}): error {error:+.2%}")
    assert abs(error) <= 0.01


# Narayanan et al. SC'21 Table 1 (shared/data/validation/megatron_sc21_table1.csv):
# preset, params_b, heads, hidden, layers
MEGATRON_TABLE = [
    ("megatron-gpt-1.7b", 1.7, 24, 2304, 24),
    ("megatron-gpt-3.6b", 3.6, 32, 3072, 30),
    ("megatron-gpt-7.5b", 7.5, 32, 4096, 36),
    ("megatron-gpt-18.4b", 18.4, 48, 6144, 40),
    ("megatron-gpt-39.1b", 39.1, 64, 8192, 48),
    ("megatron-gpt-76.1b", 76.1, 80, 10240, 60),
    ("megatron-gpt-145.6b", 145.6, 96, 12288, 80),
    ("megatron-gpt-310.1b", 310.1, 128, 16384, 96),
    ("megatron-gpt-529.6b", 529.6, 128, 20480, 105),
    ("megatron-gpt-1t", 1008.0, 160, 25600, 128),
]


@pytest.mark.parametrize(("preset", "params_b", "heads", "hidden", "layers"), MEGATRON_TABLE)
def test_megatron_family_matches_table(preset: str, params_b: float, heads: int, hidden: int, layers: int) -> None:
    spec = get_model(preset)
    assert (spec.num_attention_heads, spec.hidden_size, spec.num_layers) == (heads, hidden, layers)
    error = spec.total_params / (params_b * 1e9) - 1.0
    print(f"{preset}: {spec.total_params / 1e9:.3f}B vs {params_b}B: error {error:+.2%}")
    # The table prints 0.1B: 1.652B and 3.562B print as 1.7 and 3.6 (2.8% and 1.1% off), so accept
    # either 1% or agreement to the printed precision.
    assert abs(error) <= 0.01 or abs(spec.total_params / 1e9 - params_b) <= 0.05


@pytest.mark.parametrize("preset", [row[0] for row in MEGATRON_TABLE] + ["gpt3-175b"])
def test_megatron_params_formula(preset: str) -> None:
    """P = 12 l h^2 (1 + 13/(12h) + (V+s)/(12 l h)); ours also counts the final LayerNorm (2h)."""
    spec = get_model(preset)
    n_layers, h, v, s = spec.num_layers, spec.hidden_size, spec.vocab_size, spec.max_seq_len
    megatron = 12 * n_layers * h**2 + 13 * n_layers * h + (v + s) * h
    assert spec.total_params == megatron + 2 * h


# --------------------------------------------------------------------------- KV cache
def test_kv_cache_mha_gqa_mla() -> None:
    assert get_model("llama2-7b").kv_cache_bytes_per_token() == 2 * 32 * 32 * 128 * 2 == 524288
    assert get_model("llama3-8b").kv_cache_bytes_per_token("bf16") == 131072
    assert get_model("llama3-8b").kv_cache_bytes_per_token("fp8") == 65536
    assert get_model("deepseek-v2").kv_cache_bytes_per_token() == (512 + 64) * 60 * 2


def test_mla_cache_vs_mha_equivalent() -> None:
    v2 = get_model("deepseek-v2")
    mha = ModelSpec(**{**v2.model_dump(), "mla": None, "head_dim": 128})
    assert mha.attention_kind == "mha"
    ratio = v2.kv_cache_bytes_per_token() / mha.kv_cache_bytes_per_token()
    assert ratio == pytest.approx((512 + 64) / (2 * 128 * 128))
    print(f"MLA cache is {ratio:.2%} of MHA with 128 heads of 128 ({1 - ratio:.1%} smaller)")


def test_mla_reduction_vs_deepseek_67b() -> None:
    """DeepSeek-V2 paper: -93.3% KV cache vs DeepSeek 67B (GQA, 95 layers, 8 KV heads of 128), with
    V2 served with ~6-bit KV-cache quantisation (paper Sec. 3.2.3) against a 16-bit 67B cache."""
    dense_67b = from_hf_config(
        {**_LLAMA, "hidden_size": 8192, "intermediate_size": 22016, "num_attention_heads": 64,
         "num_key_value_heads": 8, "num_hidden_layers": 95, "vocab_size": 102400},
        name="deepseek-llm-67b",
    )  # fmt: skip
    assert dense_67b.attention_kind == "gqa"
    v2 = get_model("deepseek-v2")
    reduction = 1 - (v2.kv_cache_bytes_per_token() * 6 / 16) / dense_67b.kv_cache_bytes_per_token()
    print(f"KV reduction vs DeepSeek 67B at 6-bit: {reduction:.2%} (paper: 93.3%)")
    assert reduction == pytest.approx(0.933, abs=0.001)


# --------------------------------------------------------------------------- HF import
def _arch(spec: ModelSpec) -> dict:
    return spec.model_dump(exclude={"name", "source"})


@pytest.mark.parametrize(
    ("preset", "config"),
    [("llama2-7b", HF_LLAMA2_7B), ("llama3.2-1b", HF_LLAMA32_1B), ("mixtral-8x7b", HF_MIXTRAL_8X7B),
     ("deepseek-v2-lite", HF_DEEPSEEK_V2_LITE), ("deepseek-v3", HF_DEEPSEEK_V3)],
)  # fmt: skip
def test_hf_config_matches_preset(preset: str, config: dict) -> None:
    assert _arch(from_hf_config(config)) == _arch(get_model(preset))


@pytest.mark.parametrize(
    ("config", "total", "active"),
    [
        (HF_MISTRAL_7B, 7_241_732_096, None),  # HF parameter count of Mistral-7B-v0.1
        (HF_QWEN2_7B, 7_615_616_512, None),  # HF parameter count of Qwen2-7B
        (HF_QWEN15_MOE_A27B, 14.3e9, 2.7e9),  # Qwen1.5-MoE-A2.7B model card
        (HF_GPT2, 124_439_808, None),  # HF parameter count of gpt2
        (HF_GPT_NEOX_20B, 20_554_567_680, None),  # GPT-NeoX-20B paper, Table 1
    ],
)
def test_hf_families_counts(config: dict, total: float, active: float | None) -> None:
    spec = from_hf_config(config)
    print(f"{config['model_type']}: {spec.total_params:,} vs {total:,.0f}")
    assert spec.total_params == pytest.approx(total, rel=0.005)
    assert spec.active_params == pytest.approx(active or total, rel=0.01)


def test_hf_family_details() -> None:
    assert from_hf_config(HF_QWEN2_7B).qkv_bias
    qwen_moe = from_hf_config(HF_QWEN15_MOE_A27B).moe
    assert qwen_moe is not None and qwen_moe.shared_expert_gate and qwen_moe.shared_ffn_hidden_size == 5632
    gpt2 = from_hf_config(HF_GPT2)
    assert (gpt2.position, gpt2.norm, gpt2.mlp, gpt2.tied_embeddings, gpt2.ffn_hidden_size) == (
        "learned", "layernorm", "gelu", True, 3072,
    )  # fmt: skip
    v3 = from_hf_config(HF_DEEPSEEK_V3)
    assert v3.moe is not None and v3.moe.router_bias and v3.moe.scoring == "sigmoid"
    assert [v3.is_moe_layer(i) for i in range(4)] == [False, False, False, True]
    assert (v3.num_dense_layers, v3.num_moe_layers) == (3, 58)
    assert v3.attention_kind == "mla" and v3.head_size == 192


def test_hf_config_from_file_and_name(tmp_path) -> None:
    folder = tmp_path / "Llama-2-7b-hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(HF_LLAMA2_7B))
    spec = from_hf_config(folder / "config.json")
    assert spec.name == "Llama-2-7b-hf" and str(folder) in spec.source
    assert get_model(folder) == spec == get_model(str(folder / "config.json"))


def test_hf_missing_field_names_field_and_file(tmp_path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in HF_LLAMA2_7B.items() if k != "intermediate_size"}))
    with pytest.raises(ClusterSimError, match="intermediate_size") as err:
        from_hf_config(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_hf_unknown_model_type() -> None:
    with pytest.raises(UnknownNameError, match="phi3"):
        from_hf_config({**HF_LLAMA2_7B, "model_type": "phi3"})


# --------------------------------------------------------------------------- catalogue and errors
def test_presets_listed_sourced_and_case_insensitive() -> None:
    models = list_models()
    names = [m.name for m in models]
    assert names == sorted(names) and len(names) >= 23
    assert all(m.source for m in models)
    assert get_model("LLaMA3-8B") is get_model("llama3-8b")


def test_unknown_preset_one_line() -> None:
    with pytest.raises(UnknownNameError) as err:
        get_model("llama9-1t")
    msg = str(err.value)
    assert "\n" not in msg and "llama9-1t" in msg and "llama3-8b" in msg and "config.json" in msg


def test_missing_model_file_is_not_a_preset_error(tmp_path) -> None:
    with pytest.raises(ClusterSimError, match="does not exist"):
        get_model(str(tmp_path / "nope.yaml"))


def test_heads_not_divisible_by_kv_heads() -> None:
    fields = {**get_model("llama3-8b").model_dump(), "num_kv_heads": 5}
    message = "num_attention_heads=32 is not a multiple of num_kv_heads=5"
    with pytest.raises(ClusterSimError, match=message) as err:
        get_model(fields)
    assert "\n" not in str(err.value)
    with pytest.raises(ValidationError, match="num_kv_heads=5"):
        ModelSpec(**fields)


def test_extra_fields_rejected() -> None:
    fields = {**get_model("llama2-7b").model_dump(), "num_expert": 8}
    with pytest.raises(ClusterSimError, match="num_expert"):
        get_model(fields)
    with pytest.raises(ValidationError):
        MoESpec(num_experts=8, top_k=2, expert_ffn_hidden_size=8, topk=2)


@pytest.mark.parametrize(
    ("moe", "message"),
    [
        ({"num_experts": 8, "top_k": 9, "expert_ffn_hidden_size": 64}, "top_k=9 exceeds num_experts=8"),
        ({"num_experts": 8, "top_k": 2, "expert_ffn_hidden_size": 0}, "expert_ffn_hidden_size=0"),
        (
            {"num_experts": 8, "top_k": 2, "expert_ffn_hidden_size": 64, "num_expert_groups": 3},
            "num_expert_groups=3",
        ),
    ],
)
def test_moe_validation(moe: dict, message: str) -> None:
    with pytest.raises(ClusterSimError, match=message):
        get_model({**get_model("llama2-7b").model_dump(), "moe": moe})


def test_positive_sizes_and_frozen() -> None:
    with pytest.raises(ClusterSimError, match="hidden_size=0"):
        get_model({**get_model("llama2-7b").model_dump(), "hidden_size": 0})
    with pytest.raises(ValidationError):
        get_model("llama2-7b").num_layers = 3  # type: ignore[misc]
    assert hash(get_model("llama2-7b"))  # hashable: usable as a cache key


def test_yaml_and_inline_specs(tmp_path) -> None:
    spec = get_model("mixtral-8x7b")
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump()))
    assert get_model(path) == spec == get_model(spec.model_dump()) == get_model(spec)
    assert _arch(get_model(HF_MIXTRAL_8X7B)) == _arch(spec)  # inline HF dict
    assert "ModelSpec" in json.dumps(ModelSpec.model_json_schema())


def test_summary_and_layers() -> None:
    v3 = get_model("deepseek-v3")
    summary = v3.to_summary()
    assert summary["total_params"] == v3.total_params and summary["attention_kind"] == "mla"
    assert summary["moe"]["num_moe_layers"] == 58 and summary["kv_cache_bytes_per_token"] == 61 * 576 * 2
    assert sum(v3.params_per_layer(i) for i in range(v3.num_layers)) == (
        v3.total_params - v3.embedding_params() - v3.output_params()
    )
    assert v3.weight_bytes_per_layer(5, "fp8") == v3.params_per_layer(5)
    with pytest.raises(ClusterSimError, match="out of range"):
        v3.params_per_layer(61)
    assert get_model("llama3-8b").attention_kind == "gqa" and get_model("llama2-7b").attention_kind == "mha"


# --------------------------------------------------------------------------- activations (Korthikanti 2022)
@pytest.fixture
def gpt() -> ModelSpec:
    return get_model("gpt3-175b")


def test_korthikanti_no_parallelism(gpt: ModelSpec) -> None:
    s, b, h, a = 2048, 1, gpt.hidden_size, gpt.num_attention_heads
    assert gpt.activation_bytes_per_layer(s, b) == pytest.approx(s * b * h * (34 + 5 * a * s / h), rel=1e-12)


@pytest.mark.parametrize("t", [1, 2, 8])
def test_korthikanti_tensor_and_sequence_parallel(gpt: ModelSpec, t: int) -> None:
    s, b, h, a = 2048, 4, gpt.hidden_size, gpt.num_attention_heads
    act = gpt.activation_bytes_per_layer
    assert act(s, b, tp=t) == pytest.approx(s * b * h * (10 + 24 / t + 5 * a * s / (h * t)), rel=1e-12)
    assert act(s, b, tp=t, sp=True) == pytest.approx(s * b * h * (34 / t + 5 * a * s / (h * t)), rel=1e-12)
    assert act(s, b, tp=t, sp=True, recompute="selective") == pytest.approx(s * b * h * 34 / t, rel=1e-12)
    assert act(s, b, tp=t, recompute="selective") == pytest.approx(s * b * h * (10 + 24 / t), rel=1e-12)
    assert act(s, b, tp=t, recompute="full") == pytest.approx(2 * s * b * h, rel=1e-12)
    assert act(s, b, tp=t, sp=True, recompute="full") == pytest.approx(2 * s * b * h / t, rel=1e-12)


def test_activations_gqa_swiglu_no_dropout() -> None:
    """Llama 3 8B term by term: norm and block inputs 4 x 2h, Q/O 2 x 2q, K/V 2 x 2kv, SwiGLU 3 x 2f,
    softmax output 2as (no dropout: no masks, no dropout output)."""
    m = get_model("llama3-8b")
    s, h, f, a = 4096, 4096, 14336, 32
    q, kv = 32 * 128, 8 * 128
    per_token = 8 * h + 4 * q + 4 * kv + 6 * f + 2 * a * s
    assert m.activation_bytes_per_layer(s, 1, dropout=False) == pytest.approx(s * per_token, rel=1e-12)
    flash = m.activation_bytes_per_layer(s, 1, dropout=False, flash_attention=True)
    assert flash == pytest.approx(s * (per_token - 2 * a * s + 4 * a), rel=1e-12)
    short = m.activation_bytes_per_layer(s // 4, 1, dropout=False, flash_attention=True)
    assert flash == pytest.approx(4 * short, rel=1e-12)  # no s^2 term with flash attention


def test_activations_moe_scale_with_top_k() -> None:
    m = get_model("mixtral-8x7b")
    dense = ModelSpec(**{**m.model_dump(), "moe": None})
    s, h, f = 1024, 4096, 14336
    act, dense_act = m.activation_bytes_per_layer, dense.activation_bytes_per_layer
    extra = act(s, 1, dropout=False) - dense_act(s, 1, dropout=False)
    # k=2 dispatched copies of the token (k x 2h bytes) on top of the router input, which plays the part of
    # the dense first-linear input; a second expert's SwiGLU intermediates (6f); the router's fp32 scores
    # for the E=8 experts and the k=2 chosen probabilities (4 bytes each)
    assert extra == pytest.approx(s * (2 * 2 * h + 6 * f + 4 * (8 + 2)), rel=1e-12)
    v3 = get_model("deepseek-v3")
    assert v3.activation_bytes_per_layer(s, 1, layer=0) < v3.activation_bytes_per_layer(s, 1, layer=3)


def test_activation_argument_errors(gpt: ModelSpec) -> None:
    with pytest.raises(ClusterSimError, match="recompute='partial'"):
        gpt.activation_bytes_per_layer(2048, 1, recompute="partial")
    with pytest.raises(ClusterSimError, match="tp=0"):
        gpt.activation_bytes_per_layer(2048, 1, tp=0)


# --------------------------------------------------------------------------- FLOPs
@pytest.mark.parametrize("preset", ["llama2-7b", "llama3-70b", "gpt3-175b"])
def test_training_flops_about_6n_for_short_sequences(preset: str) -> None:
    m = get_model(preset)
    ratio = m.flops_per_token(16, training=True) / (6 * m.total_params)
    print(f"{preset}: training FLOPs/token = {ratio:.3f} x 6N")
    assert ratio == pytest.approx(1.0, abs=0.03)  # the input embedding is a lookup, not a matmul
    assert m.flops_per_token(16, training=True) == 3 * m.flops_per_token(16)


def test_moe_flops_use_active_params() -> None:
    m = get_model("mixtral-8x7b")
    ratio = m.flops_per_token(1) / (2 * m.active_params)
    assert ratio == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize(("batch", "seq"), [(1, 2048), (512, 2048), (8, 8192)])
def test_megatron_formula_matches_flops_per_token(gpt: ModelSpec, batch: int, seq: int) -> None:
    """72 B s l h^2 (1 + s/(6h) + V/(12 l h)) = B s x 3 x (2 x matmul params + 4 l s h), no causal halving."""
    ours = batch * seq * gpt.flops_per_token(seq, training=True, causal=False)
    assert gpt.megatron_flops_per_iteration(batch, seq, recompute=False) == pytest.approx(ours, rel=1e-12)
    n_layers, h = gpt.num_layers, gpt.hidden_size
    # recompute adds one more forward of the layers (not of the head)
    recompute_pass = 24 * batch * seq * n_layers * h**2 * (1 + seq / (6 * h))
    with_recompute = gpt.megatron_flops_per_iteration(batch, seq, recompute=True)
    assert with_recompute - ours == pytest.approx(recompute_pass, rel=1e-9)


def test_attention_flops_causal_and_mla() -> None:
    m = get_model("deepseek-v2")
    s1, s2 = 1024, 5120
    slope = (m.flops_per_token(s2) - m.flops_per_token(s1)) / (s2 - s1)
    assert slope == pytest.approx(m.num_layers * 2 * 0.5 * 128 * (192 + 128))  # QK with nope+rope, AV with v
    assert m.flops_per_token(s2, causal=False) - m.flops_per_token(s2) == pytest.approx(
        m.num_layers * 2 * (s2 / 2) * 128 * (192 + 128)
    )


def test_specs_are_constructible_directly() -> None:
    mla = MLASpec(kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128)
    moe = MoESpec(num_experts=4, top_k=1, expert_ffn_hidden_size=256, num_shared_experts=1)
    spec = ModelSpec(
        name="tiny", source="test", num_layers=2, hidden_size=256, num_attention_heads=4, ffn_hidden_size=512,
        vocab_size=1000, moe=moe, mla=mla,
    )  # fmt: skip
    assert spec.is_moe and spec.is_mla and spec.num_moe_layers == 2
    assert spec.total_params > spec.active_params > 0


def test_dropout_follows_the_models_own_recipe() -> None:
    """Llama-family configs train without dropout (transformers defaults attention_dropout to 0.0 and the models
    have no other dropout), GPT-2 with 0.1; a run config that leaves training.dropout unset takes the model's."""
    from simulator.core.config import load_config

    assert from_hf_config(HF_LLAMA2_7B).dropout is False  # no dropout key: LlamaConfig's default 0.0
    assert from_hf_config({**HF_LLAMA2_7B, "attention_dropout": 0.1}).dropout is True
    gpt2 = {"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "n_head": 12, "vocab_size": 50257}
    assert from_hf_config(gpt2).dropout is True and from_hf_config({**gpt2, "resid_pdrop": 0.0, "attn_pdrop": 0.0,
                                                                     "embd_pdrop": 0.0}).dropout is False  # fmt: skip
    base = {"cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 8}, "parallel": {"tp": 8}}
    assert load_config({**base, "model": "llama3-8b"}).training.dropout is False
    assert load_config({**base, "model": "gpt3-175b"}).training.dropout is True
    forced = load_config({**base, "model": "llama3-8b", "training": {"dropout": True}})
    assert forced.training.dropout is True  # the config's own setting wins
    inline = {k: v for k, v in get_model("llama3-8b").model_dump().items() if k != "dropout"}
    assert load_config({**base, "model": inline}).training.dropout is True  # unknown: Korthikanti's default
    from simulator.training.memory import activation_bytes_per_microbatch

    plain = load_config({**base, "model": "llama3-8b"})
    saved = activation_bytes_per_microbatch(forced, 0) - activation_bytes_per_microbatch(plain, 0)
    t, p, m = plain.training, plain.parallel, plain.model
    per_layer = {
        d: m.activation_bytes_per_layer(t.seq_len, t.micro_batch, tp=p.tp, sp=p.sp, recompute=t.recompute,
                                        flash_attention=True, dropout=d)
        for d in (True, False)
    }  # fmt: skip
    embedding_mask = t.seq_len * t.micro_batch * m.hidden_size / (p.tp if p.sp else 1)  # first rank, 1 byte each
    assert 0 < saved == pytest.approx(m.num_layers * (per_layer[True] - per_layer[False]) + embedding_mask)
