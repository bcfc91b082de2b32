"""Map a HuggingFace ``config.json`` onto a ModelSpec, so adding a model is adding its config file.

Supported ``model_type`` families: llama, mistral, mixtral, qwen2, qwen2_moe, deepseek_v2,
deepseek_v3, gpt2, gpt_neox. Anything else is refused with a one-line error rather than guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hwmodels.errors import ClusterSimError, UnknownNameError, short
from simulator.core.limits import MAX_MODEL_FILE_BYTES
from simulator.core.untrusted import parse_json_text, read_text_file
from simulator.models.spec import ModelSpec, validate_spec

_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "MixtralForCausalLM": "mixtral",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "DeepseekV2ForCausalLM": "deepseek_v2",
    "DeepseekV3ForCausalLM": "deepseek_v3",
    "GPT2LMHeadModel": "gpt2",
    "GPTNeoXForCausalLM": "gpt_neox",
}


class _Config:
    """A HF config dict that names the file and the field in every error about it."""

    def __init__(self, data: dict[str, Any], where: str, family: str) -> None:
        self.data, self.where, self.family = data, where, family

    def req(self, key: str) -> Any:
        """A required field; a one-line error naming the field and file when it is missing."""
        value = self.data.get(key)
        if value is None:
            raise ClusterSimError(f"{self.where}: missing required field {key!r} for model_type {self.family!r}")
        return value

    def opt(self, key: str, default: Any = None) -> Any:
        """An optional field (absent or null -> ``default``)."""
        value = self.data.get(key)
        return default if value is None else value


def _gated_mlp(c: _Config) -> str:
    """Llama-family MLPs are gated; only SiLU gating (SwiGLU) is modelled."""
    act = c.opt("hidden_act", "silu")
    if act not in ("silu", "swish"):
        raise ClusterSimError(f"{c.where}: hidden_act={act!r} (gated) is not modelled; only silu (SwiGLU)")
    return "swiglu"


def _llama(c: _Config) -> dict[str, Any]:
    """Llama / Mistral: RMSNorm, RoPE, SwiGLU, optional GQA and explicit head_dim."""
    attention_bias, mlp_bias = bool(c.opt("attention_bias", False)), bool(c.opt("mlp_bias", False))
    return {
        "num_layers": c.req("num_hidden_layers"),
        "hidden_size": c.req("hidden_size"),
        "num_attention_heads": c.req("num_attention_heads"),
        "num_kv_heads": c.opt("num_key_value_heads"),
        "head_dim": c.opt("head_dim"),
        "ffn_hidden_size": c.req("intermediate_size"),
        "mlp": _gated_mlp(c),
        "vocab_size": c.req("vocab_size"),
        "tied_embeddings": bool(c.opt("tie_word_embeddings", False)),
        "norm": "rmsnorm",
        # attention_bias alone adds q/k/v/o biases; counted as q/k/v only (o bias: h per layer, ignored)
        "bias": attention_bias and mlp_bias,
        "qkv_bias": attention_bias and not mlp_bias,
        "position": "rope",
        "max_seq_len": c.opt("max_position_embeddings", 4096),
    }


def _mixtral(c: _Config) -> dict[str, Any]:
    """Mixtral: Mistral layers whose every MLP is num_local_experts SwiGLU experts, top-k routed."""
    spec = _llama(c)
    spec["moe"] = {
        "num_experts": c.req("num_local_experts"),
        "top_k": c.req("num_experts_per_tok"),
        "expert_ffn_hidden_size": c.req("intermediate_size"),
    }
    return spec


def _qwen2(c: _Config) -> dict[str, Any]:
    """Qwen2: Llama layers with biases on the q, k and v projections."""
    spec = _llama(c)
    spec["qkv_bias"] = True
    return spec


def _qwen2_moe(c: _Config) -> dict[str, Any]:
    """Qwen2-MoE: routed experts plus one gated shared expert in every layer."""
    if c.opt("decoder_sparse_step", 1) != 1 or c.opt("mlp_only_layers", []):
        raise ClusterSimError(f"{c.where}: decoder_sparse_step != 1 or mlp_only_layers is not modelled")
    spec = _qwen2(c)
    shared = c.opt("shared_expert_intermediate_size", 0)
    spec["moe"] = {
        "num_experts": c.req("num_experts"),
        "top_k": c.req("num_experts_per_tok"),
        "expert_ffn_hidden_size": c.req("moe_intermediate_size"),
        "num_shared_experts": 1 if shared else 0,
        "shared_expert_ffn_hidden_size": shared or None,
        "shared_expert_gate": bool(shared),
    }
    return spec


def _deepseek_moe(c: _Config) -> dict[str, Any] | None:
    if c.opt("n_routed_experts") is None:
        return None
    return {
        "num_experts": c.req("n_routed_experts"),
        "top_k": c.req("num_experts_per_tok"),
        "expert_ffn_hidden_size": c.req("moe_intermediate_size"),
        "num_shared_experts": c.opt("n_shared_experts", 0),
        "first_dense_layers": c.opt("first_k_dense_replace", 0),
        "layer_freq": c.opt("moe_layer_freq", 1),
        "num_expert_groups": c.opt("n_group", 1),
        "topk_groups": c.opt("topk_group", 1),
        "scoring": c.opt("scoring_func", "softmax"),
        "router_bias": c.opt("topk_method") == "noaux_tc",  # V3's e_score_correction_bias
    }


def _deepseek(c: _Config) -> dict[str, Any]:
    """DeepSeek-V2/V3: MLA attention, DeepSeekMoE (shared + fine-grained routed experts).

    DeepSeek-V3's multi-token-prediction module (num_nextn_predict_layers) is excluded from the
    parameter counts (the published 671B counts the main model only, 685B with it) but kept as
    ``mtp_depth``: training runs it.
    """
    spec = _llama(c)
    spec["mtp_depth"] = c.opt("num_nextn_predict_layers", 0)
    spec["head_dim"] = None  # MLA head widths come from the mla block
    spec["mla"] = {
        "kv_lora_rank": c.req("kv_lora_rank"),
        "q_lora_rank": c.opt("q_lora_rank"),
        "qk_nope_head_dim": c.req("qk_nope_head_dim"),
        "qk_rope_head_dim": c.req("qk_rope_head_dim"),
        "v_head_dim": c.req("v_head_dim"),
    }
    spec["moe"] = _deepseek_moe(c)
    return spec


def _gpt2(c: _Config) -> dict[str, Any]:
    """GPT-2 style: LayerNorm, learned positions, GELU MLP (n_inner, default 4h), biases, tied head."""
    h = c.req("n_embd")
    return {
        "num_layers": c.req("n_layer"),
        "hidden_size": h,
        "num_attention_heads": c.req("n_head"),
        "ffn_hidden_size": c.opt("n_inner", 4 * h),
        "mlp": "gelu",
        "vocab_size": c.req("vocab_size"),
        "tied_embeddings": bool(c.opt("tie_word_embeddings", True)),
        "norm": "layernorm",
        "bias": True,
        "position": "learned",
        "max_seq_len": c.opt("n_positions", 1024),
    }


def _gpt_neox(c: _Config) -> dict[str, Any]:
    """GPT-NeoX style: LayerNorm, rotary positions, GELU MLP with biases, untied head."""
    h = c.req("hidden_size")
    return {
        "num_layers": c.req("num_hidden_layers"),
        "hidden_size": h,
        "num_attention_heads": c.req("num_attention_heads"),
        "ffn_hidden_size": c.opt("intermediate_size", 4 * h),
        "mlp": "gelu",
        "vocab_size": c.req("vocab_size"),
        "tied_embeddings": bool(c.opt("tie_word_embeddings", False)),
        "norm": "layernorm",
        "bias": bool(c.opt("attention_bias", True)),
        "position": "rope",
        "max_seq_len": c.opt("max_position_embeddings", 2048),
    }


_FAMILIES: dict[str, Callable[[_Config], dict[str, Any]]] = {
    "llama": _llama,
    "mistral": _llama,
    "mixtral": _mixtral,
    "qwen2": _qwen2,
    "qwen2_moe": _qwen2_moe,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
}


def _family(data: dict[str, Any], where: str) -> str:
    """The config's family: model_type, else the first known architecture, else GPT-2 keys."""
    family = data.get("model_type")
    if family is None:
        archs = data.get("architectures") or []
        archs = archs if isinstance(archs, list) else [archs]
        family = next((_ARCHITECTURES[a] for a in archs if isinstance(a, str) and a in _ARCHITECTURES), None)
    if family is None and "n_embd" in data:
        family = "gpt2"
    if family is None:
        raise ClusterSimError(f"{where}: no model_type or known architectures entry; cannot tell the family")
    if not isinstance(family, str):
        raise ClusterSimError(f"{where}: model_type must be a string such as 'llama', got {short(family)}")
    if family not in _FAMILIES:
        raise UnknownNameError("HF model_type", family, _FAMILIES, hint="write a ModelSpec YAML instead")
    return family


def _load(cfg: dict[str, Any] | str | Path) -> tuple[dict[str, Any], str, Path | None]:
    """The config dict, a label for errors, and the file it came from (if any)."""
    if isinstance(cfg, dict):
        return cfg, "HF config dict", None
    path = Path(cfg)
    if path.is_dir():
        path = path / "config.json"
    text = read_text_file(path, MAX_MODEL_FILE_BYTES, f"HF config {path}")  # a regular file, size-capped
    data = parse_json_text(text, f"HF config {path}")
    if not isinstance(data, dict):
        raise ClusterSimError(f"{path}: expected a JSON object with the model's config")
    return data, str(path), path


def _default_name(data: dict[str, Any], path: Path | None, family: str) -> str:
    """Name from _name_or_path, else the folder holding config.json, else the file stem."""
    if data.get("_name_or_path"):
        return str(data["_name_or_path"]).rstrip("/").split("/")[-1]
    if path is not None:
        return path.parent.name if path.name == "config.json" and path.parent.name else path.stem
    return family


def _drop_default_head_dim(fields: dict[str, Any]) -> None:
    """An explicit head_dim equal to hidden_size // heads is the default; drop it so specs compare equal."""
    head_dim = fields.get("head_dim")
    if head_dim is not None and head_dim * fields["num_attention_heads"] == fields["hidden_size"]:
        fields["head_dim"] = None


#: HF config keys holding a dropout probability (Llama/Mistral/Qwen/DeepSeek: attention_dropout; GPT-2: resid_pdrop,
#: attn_pdrop, embd_pdrop; GPT-NeoX: attention_dropout, hidden_dropout).
_DROPOUT_KEYS = ("attention_dropout", "hidden_dropout", "resid_pdrop", "attn_pdrop", "embd_pdrop")

#: Families whose transformers config class defaults a dropout above 0 when the file names none (GPT2Config:
#: resid_pdrop = attn_pdrop = embd_pdrop = 0.1); the others default every dropout to 0.0 (LlamaConfig,
#: MistralConfig, MixtralConfig, Qwen2Config, DeepseekV3Config: attention_dropout 0.0; GPTNeoXConfig: 0.0).
_DROPOUT_BY_DEFAULT = frozenset({"gpt2"})


def _dropout(c: _Config) -> bool:
    """Whether the config's own recipe uses dropout: any dropout probability above 0, with transformers'
    defaults for those the file leaves out."""
    values = [c.data.get(k) for k in _DROPOUT_KEYS if isinstance(c.data.get(k), (int, float))]
    return any(v > 0 for v in values) if values else c.family in _DROPOUT_BY_DEFAULT


def from_hf_config(cfg: dict[str, Any] | str | Path, name: str | None = None, source: str | None = None) -> ModelSpec:
    """Build a ModelSpec from a HuggingFace config (dict, config.json path, or a folder holding one)."""
    data, where, path = _load(cfg)
    family = _family(data, where)
    fields = _FAMILIES[family](_Config(data, where, family))
    fields["dropout"] = _dropout(_Config(data, where, family))
    _drop_default_head_dim(fields)
    fields["name"] = name or _default_name(data, path, family)
    fields["source"] = source or (f"HF config {where}" if path else f"HF config dict (model_type={family})")
    return validate_spec(fields, where)
