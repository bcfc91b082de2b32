"""Model architecture spec (dense, GQA/MQA, MoE, MLA): parameter counts, FLOPs, KV cache, activations.

Everything the workload builders need to know about a model is derived here from a handful of
architecture figures, so each number the simulator prints traces back to one formula in this file.

Conventions:

* Parameter counts are exact: every weight matrix, norm gain (LayerNorm also has a bias), linear
  biases where the architecture has them, the token embedding, learned position embeddings, the
  output head unless tied, MoE routers and MLA's low-rank projections with their norms.
  A *block* (attention, dense MLP, MoE) includes the norm in front of it.
* FLOPs are model FLOPs (2 per multiply-accumulate), no recompute, no bias adds or element-wise ops.
* Activation sizes assume 16-bit activations and 1-byte dropout masks, as Korthikanti et al. (2022).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hwmodels.dtypes import bytes_per_element
from hwmodels.errors import ClusterSimError, first_validation_error

Recompute = Literal["none", "selective", "full"]
_RECOMPUTE = ("none", "selective", "full")
_ACT_BYTES = 2.0  # 16-bit activations (Korthikanti et al. 2022, Sec. 4)
_MASK_BYTES = 1.0  # dropout masks are stored as bytes
_LSE_BYTES = 4.0  # flash attention keeps one fp32 log-sum-exp per query and head
_ROUTER_BYTES = 4.0  # MoE router scores and chosen probabilities are kept in fp32 (Megatron-Core, DeepSeek-V3)
# FP8 activation caching (DeepSeek-V3 report sec. 3.3.3): e4m3 values plus one fp32 scale per 1x128 tile
# (sec. 3.3.2, fine-grained quantization), and the attention output in a 12-bit E5M6 format.
_FP8_CACHE_BYTES = 1.0 + 4.0 / 128
_E5M6_BYTES = 1.5
_CACHE_DTYPES = ("bf16", "fp8")
#: Megatron-Core ``TransformerConfig.recompute_modules`` choices (``--recompute-modules``; default core_attn).
RECOMPUTE_MODULES = ("core_attn", "moe_act", "layernorm", "mla_up_proj", "mlp", "moe", "shared_experts")


def recompute_module_set(recompute: str, modules: Iterable[str] | None) -> frozenset[str]:
    """The submodules recomputed under ``recompute``: ``modules`` (default core_attn) when selective, else none."""
    if recompute != "selective":
        return frozenset()
    chosen = frozenset(("core_attn",) if modules is None else modules)
    unknown = sorted(chosen - set(RECOMPUTE_MODULES))
    if unknown:
        raise ClusterSimError(f"recompute_modules {unknown} unknown; use some of: {', '.join(RECOMPUTE_MODULES)}")
    return chosen


def _require_positive(obj: BaseModel, names: Iterable[str], prefix: str = "") -> None:
    """Raise a one-line error naming the first field that is not a positive number."""
    for name in names:
        value = getattr(obj, name)
        if value is not None and value <= 0:
            raise ClusterSimError(f"{prefix}{name}={value} must be positive")


def _require_non_negative(obj: BaseModel, names: Iterable[str], prefix: str = "") -> None:
    """Raise a one-line error naming the first field that is negative."""
    for name in names:
        value = getattr(obj, name)
        if value < 0:
            raise ClusterSimError(f"{prefix}{name}={value} must be >= 0")


class MoESpec(BaseModel):
    """Mixture-of-experts MLP: routed experts (top_k per token), optional always-on shared experts."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    num_experts: int
    top_k: int
    expert_ffn_hidden_size: int
    num_shared_experts: int = 0
    shared_expert_ffn_hidden_size: int | None = None  # all shared experts together; None: n x expert width
    shared_expert_gate: bool = False  # Qwen2-MoE's sigmoid gate (h -> 1) on the shared expert
    first_dense_layers: int = 0  # DeepSeek first_k_dense_replace
    layer_freq: int = 1  # layer i is MoE when i >= first_dense_layers and i % layer_freq == 0
    num_expert_groups: int = 1
    topk_groups: int = 1
    scoring: Literal["softmax", "sigmoid"] = "softmax"
    router_bias: bool = False  # DeepSeek-V3's per-expert e_score_correction_bias

    @model_validator(mode="after")
    def _check(self) -> MoESpec:
        _require_positive(self, ("num_experts", "top_k", "expert_ffn_hidden_size", "layer_freq"))
        _require_positive(self, ("num_expert_groups", "topk_groups", "shared_expert_ffn_hidden_size"))
        _require_non_negative(self, ("num_shared_experts", "first_dense_layers"))
        if self.top_k > self.num_experts:
            raise ClusterSimError(f"top_k={self.top_k} exceeds num_experts={self.num_experts}")
        if self.num_experts % self.num_expert_groups:
            raise ClusterSimError(
                f"num_expert_groups={self.num_expert_groups} does not divide num_experts={self.num_experts}"
            )
        if self.topk_groups > self.num_expert_groups:
            raise ClusterSimError(f"topk_groups={self.topk_groups} exceeds num_expert_groups={self.num_expert_groups}")
        has_shared_options = self.shared_expert_gate or self.shared_expert_ffn_hidden_size is not None
        if has_shared_options and self.num_shared_experts == 0:
            raise ClusterSimError("shared_expert_ffn_hidden_size/shared_expert_gate need num_shared_experts >= 1")
        return self

    @property
    def shared_ffn_hidden_size(self) -> int:
        """Total intermediate width of the shared experts (DeepSeek fuses them into one MLP)."""
        if self.num_shared_experts == 0:
            return 0
        if self.shared_expert_ffn_hidden_size is not None:
            return self.shared_expert_ffn_hidden_size
        return self.num_shared_experts * self.expert_ffn_hidden_size


class MLASpec(BaseModel):
    """Multi-head latent attention (DeepSeek-V2/V3): K/V (and optionally Q) through low-rank latents."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    kv_lora_rank: int
    q_lora_rank: int | None = None
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @model_validator(mode="after")
    def _check(self) -> MLASpec:
        names = ("kv_lora_rank", "q_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        _require_positive(self, names, prefix="mla.")
        return self

    @property
    def qk_head_dim(self) -> int:
        """Per-head query/key width: the position-free part plus the decoupled RoPE part."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim


class ModelSpec(BaseModel):
    """A decoder-only transformer described by its architecture figures, with a source for them."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str
    source: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    ffn_hidden_size: int
    mlp: Literal["swiglu", "gelu"] = "swiglu"
    vocab_size: int
    tied_embeddings: bool = False
    norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    bias: bool = False
    qkv_bias: bool = False  # biases on q/k/v only (Qwen2); ``bias`` puts them on every linear (GPT-3)
    position: Literal["rope", "learned"] = "rope"
    max_seq_len: int = 4096
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    dropout: bool | None = Field(
        default=None,
        description="the model's own training recipe uses dropout (GPT-2/3, Megatron GPT: 0.1; Llama, Mistral, "
        "Mixtral, Qwen2, DeepSeek: 0); None: not known. Sets training.dropout when a run config leaves it unset",
    )
    mtp_depth: int = Field(
        default=0,
        ge=0,
        description="multi-token-prediction modules trained with the model (DeepSeek-V3: 1); each adds a layer, "
        "a projection and a pass through the output head to the last stage; not in the parameter counts",
    )

    # ----------------------------------------------------------------------------- validation
    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        sizes = ("num_layers", "hidden_size", "num_attention_heads", "num_kv_heads", "head_dim")
        _require_positive(self, (*sizes, "ffn_hidden_size", "vocab_size", "max_seq_len"))
        self._check_heads()
        self._check_moe()
        if self.mla is not None and self.bias:
            raise ClusterSimError("bias=True is not supported together with mla (DeepSeek MLA has no biases)")
        return self

    def _check_heads(self) -> None:
        heads, kv = self.num_attention_heads, self.kv_heads
        if heads % kv:
            raise ClusterSimError(f"num_attention_heads={heads} is not a multiple of num_kv_heads={kv}")
        if self.head_dim is None and self.mla is None and self.hidden_size % heads:
            raise ClusterSimError(
                f"hidden_size={self.hidden_size} is not a multiple of num_attention_heads={heads}; set head_dim"
            )

    def _check_moe(self) -> None:
        if self.moe is not None and self.moe.first_dense_layers >= self.num_layers:
            raise ClusterSimError(
                f"moe.first_dense_layers={self.moe.first_dense_layers} leaves no MoE layer "
                f"in num_layers={self.num_layers}"
            )

    # ----------------------------------------------------------------------------- shape
    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (num_kv_heads, or one per attention head when unset)."""
        return self.num_kv_heads if self.num_kv_heads is not None else self.num_attention_heads

    @property
    def head_size(self) -> int:
        """Query/key width per head: head_dim, hidden_size // heads, or MLA's nope + rope dims."""
        if self.mla is not None:
            return self.mla.qk_head_dim
        if self.head_dim is not None:
            return self.head_dim
        return self.hidden_size // self.num_attention_heads

    @property
    def is_moe(self) -> bool:
        """Whether any layer has a mixture-of-experts MLP."""
        return self.moe is not None

    @property
    def is_mla(self) -> bool:
        """Whether attention is DeepSeek-style multi-head latent attention."""
        return self.mla is not None

    @property
    def attention_kind(self) -> str:
        """'mha', 'gqa', 'mqa' or 'mla': what decides the KV-cache size and attention kernel shape."""
        if self.mla is not None:
            return "mla"
        if self.kv_heads == self.num_attention_heads:
            return "mha"
        return "mqa" if self.kv_heads == 1 else "gqa"

    def _check_layer(self, i: int) -> None:
        if not 0 <= i < self.num_layers:
            raise ClusterSimError(f"layer index {i} is out of range for num_layers={self.num_layers}")

    def is_moe_layer(self, i: int) -> bool:
        """Whether layer ``i`` (0-based) has an MoE MLP (DeepSeek's rule: i >= first_dense, i % freq == 0)."""
        self._check_layer(i)
        if self.moe is None:
            return False
        return i >= self.moe.first_dense_layers and i % self.moe.layer_freq == 0

    @property
    def num_moe_layers(self) -> int:
        """How many layers have an MoE MLP."""
        return sum(self.is_moe_layer(i) for i in range(self.num_layers))

    @property
    def num_dense_layers(self) -> int:
        """How many layers have a dense MLP."""
        return self.num_layers - self.num_moe_layers

    # ----------------------------------------------------------------------------- parameters
    def _norm_params(self, width: int) -> int:
        """RMSNorm has a gain per channel; LayerNorm a gain and a bias."""
        return width if self.norm == "rmsnorm" else 2 * width

    def _attention_matmul_params(self) -> int:
        """Weights of the attention projections (what the FLOPs count multiplies by)."""
        h, heads = self.hidden_size, self.num_attention_heads
        if self.mla is None:
            q_dim, kv_dim = heads * self.head_size, self.kv_heads * self.head_size
            return h * q_dim + 2 * h * kv_dim + q_dim * h
        m = self.mla
        q = h * heads * m.qk_head_dim if m.q_lora_rank is None else m.q_lora_rank * (h + heads * m.qk_head_dim)
        kv_down = h * (m.kv_lora_rank + m.qk_rope_head_dim)
        kv_up = m.kv_lora_rank * heads * (m.qk_nope_head_dim + m.v_head_dim)
        return q + kv_down + kv_up + heads * m.v_head_dim * h

    def _attention_vector_params(self) -> int:
        """Norm gains and biases of the attention block (input norm, MLA latent norms, q/k/v/o biases)."""
        h, n = self.hidden_size, self._norm_params(self.hidden_size)
        if self.mla is not None:
            q_norm = self._norm_params(self.mla.q_lora_rank) if self.mla.q_lora_rank else 0
            return n + q_norm + self._norm_params(self.mla.kv_lora_rank)
        qkv = (self.num_attention_heads + 2 * self.kv_heads) * self.head_size
        if self.bias:
            return n + qkv + h
        return n + (qkv if self.qkv_bias else 0)

    def attention_params(self) -> int:
        """Parameters of one attention block, including the norm in front of it."""
        return self._attention_matmul_params() + self._attention_vector_params()

    def _mlp_matmul_params(self, ffn: int) -> int:
        """Weights of one MLP of intermediate width ``ffn`` (SwiGLU has gate, up and down)."""
        return (3 if self.mlp == "swiglu" else 2) * self.hidden_size * ffn

    def _mlp_bias_params(self, ffn: int) -> int:
        """Biases of one MLP of intermediate width ``ffn`` (only where bias=True)."""
        if not self.bias or ffn == 0:
            return 0
        return (2 if self.mlp == "swiglu" else 1) * ffn + self.hidden_size

    def _mlp_params(self, ffn: int) -> int:
        return self._mlp_matmul_params(ffn) + self._mlp_bias_params(ffn)

    def dense_mlp_params(self) -> int:
        """Parameters of one dense MLP block, including the norm in front of it."""
        return self._norm_params(self.hidden_size) + self._mlp_params(self.ffn_hidden_size)

    def _router_params(self) -> int:
        """Router (h x experts), DeepSeek-V3's per-expert score bias, Qwen2-MoE's shared-expert gate."""
        moe = self._moe()
        gate = self.hidden_size if moe.shared_expert_gate else 0
        return self.hidden_size * moe.num_experts + (moe.num_experts if moe.router_bias else 0) + gate

    def _moe(self) -> MoESpec:
        if self.moe is None:
            raise ClusterSimError(f"model {self.name!r} has no MoE layers (moe is not set)")
        return self.moe

    def moe_layer_params(self) -> int:
        """Parameters of one MoE block: input norm, all routed experts, shared experts and router."""
        moe = self._moe()
        routed = moe.num_experts * self._mlp_params(moe.expert_ffn_hidden_size)
        shared = self._mlp_params(moe.shared_ffn_hidden_size)
        return self._norm_params(self.hidden_size) + routed + shared + self._router_params()

    def moe_active_layer_params(self) -> int:
        """Parameters of one MoE block that a token touches: top_k routed experts, shared, router."""
        moe = self._moe()
        routed = moe.top_k * self._mlp_params(moe.expert_ffn_hidden_size)
        shared = self._mlp_params(moe.shared_ffn_hidden_size)
        return self._norm_params(self.hidden_size) + routed + shared + self._router_params()

    @property
    def routed_expert_params(self) -> int:
        """All routed-expert weights of the model: the part expert parallelism shards."""
        if self.moe is None:
            return 0
        return self.num_moe_layers * self.moe.num_experts * self._mlp_params(self.moe.expert_ffn_hidden_size)

    def embedding_params(self) -> int:
        """Token embedding plus the learned position table (when position='learned')."""
        positions = self.max_seq_len if self.position == "learned" else 0
        return (self.vocab_size + positions) * self.hidden_size

    def output_params(self) -> int:
        """Final norm plus the LM head (zero extra when tied to the token embedding)."""
        head = 0 if self.tied_embeddings else self.vocab_size * self.hidden_size
        return self._norm_params(self.hidden_size) + head

    def params_per_layer(self, i: int) -> int:
        """Parameters of transformer layer ``i`` (attention block + dense or MoE block)."""
        mlp = self.moe_layer_params() if self.is_moe_layer(i) else self.dense_mlp_params()
        return self.attention_params() + mlp

    def _layer_sum(self, moe_block: int) -> int:
        dense = self.num_dense_layers * self.dense_mlp_params()
        moe = self.num_moe_layers * moe_block if self.is_moe else 0
        return self.num_layers * self.attention_params() + dense + moe

    @property
    def total_params(self) -> int:
        """All parameters (embeddings, layers, final norm, untied head)."""
        moe_block = self.moe_layer_params() if self.is_moe else 0
        return self.embedding_params() + self._layer_sum(moe_block) + self.output_params()

    @property
    def active_params(self) -> int:
        """Parameters touched per token: as total, but only top_k routed experts per MoE layer."""
        moe_block = self.moe_active_layer_params() if self.is_moe else 0
        return self.embedding_params() + self._layer_sum(moe_block) + self.output_params()

    @property
    def active_params_non_embedding(self) -> int:
        """Active parameters without the input-embedding table (a lookup, not compute).

        DeepSeek's "activated parameters" follow this convention (V3's README_WEIGHTS: 36.7B), while
        Mistral's 12.9B for Mixtral counts the embedding too; both are reported.
        """
        return self.active_params - self.embedding_params()

    # ----------------------------------------------------------------------------- FLOPs
    def _active_matmul_params(self) -> int:
        """Matmul weights a token passes through: projections, active experts, router, LM head."""
        attn = self.num_layers * self._attention_matmul_params()
        dense = self.num_dense_layers * self._mlp_matmul_params(self.ffn_hidden_size)
        moe = 0
        if self.moe is not None:
            experts = self.moe.top_k * self._mlp_matmul_params(self.moe.expert_ffn_hidden_size)
            shared = self._mlp_matmul_params(self.moe.shared_ffn_hidden_size)
            gate = self.hidden_size * (self.moe.num_experts + (1 if self.moe.shared_expert_gate else 0))
            moe = self.num_moe_layers * (experts + shared + gate)
        return attn + dense + moe + self.vocab_size * self.hidden_size

    def _attention_core_dims(self) -> tuple[int, int]:
        """(query/key width, value width) summed over heads: the two attention matmuls' inner sizes."""
        heads = self.num_attention_heads
        v_dim = self.mla.v_head_dim if self.mla is not None else self.head_size
        return heads * self.head_size, heads * v_dim

    def flops_per_token(self, seq_len: int, *, training: bool = False, causal: bool = True) -> float:
        """Model FLOPs per token: 2 x active matmul weights (head included, embedding lookup not)
        plus attention scores (QK^T) and context (AV), 2 x context x width each, per layer.

        The context is seq_len (full, as Megatron counts) or seq_len / 2 with ``causal`` (the
        average over a causal sequence). Training = 3 x forward (backward costs twice forward).
        """
        if seq_len <= 0:
            raise ClusterSimError(f"seq_len={seq_len} must be positive")
        context = seq_len / 2 if causal else float(seq_len)
        qk, v = self._attention_core_dims()
        forward = 2.0 * self._active_matmul_params() + self.num_layers * 2.0 * context * (qk + v)
        return 3.0 * forward if training else forward

    def megatron_flops_per_iteration(self, batch: int, seq_len: int, recompute: bool = True) -> float:
        """Megatron's GPT model-FLOPs formula per iteration (for validation against published tables).

        With full recompute (Narayanan et al. SC'21): F = 96 B s l h^2 (1 + s/(6h) + V/(16 l h)).
        Without (Korthikanti et al. 2022, Sec. 6): F = 72 B s l h^2 (1 + s/(6h) + V/(12 l h)); the
        LM-head term stays 6 B s V h in both because the head is never recomputed. Assumes a GPT
        layer (MHA, 4h MLP); for other models use flops_per_token.
        """
        b, s, n_layers, h, v = batch, seq_len, self.num_layers, self.hidden_size, self.vocab_size
        coeff, head_div = (96.0, 16.0) if recompute else (72.0, 12.0)
        return coeff * b * s * n_layers * h**2 * (1.0 + s / (6.0 * h) + v / (head_div * n_layers * h))

    # ----------------------------------------------------------------------------- memory
    def kv_cache_bytes_per_token(self, dtype: str = "bf16") -> float:
        """KV-cache bytes one token occupies across all layers.

        MHA/GQA/MQA: K and V per KV head. MLA: the compressed latent plus the shared RoPE key,
        as DeepSeek-V2 serves it (kv_lora_rank + qk_rope_head_dim per layer).
        """
        per_layer = (
            self.mla.kv_lora_rank + self.mla.qk_rope_head_dim
            if self.mla is not None
            else 2 * self.kv_heads * self.head_size
        )
        return float(self.num_layers * per_layer) * bytes_per_element(dtype)

    def weight_bytes_per_layer(self, i: int, dtype: str = "bf16") -> float:
        """Bytes of layer ``i``'s weights stored in ``dtype``."""
        return self.params_per_layer(i) * bytes_per_element(dtype)

    def _attention_activations(
        self, seq_len: int, dropout: bool, flash: bool, modules: frozenset[str], lin: float, out_b: float
    ) -> tuple[float, float, float]:
        """Attention block's saved tensors per token as (TP-replicated, TP-split, score) bytes.

        Replicated (split only by sequence parallelism): the norm input (the residual stream, 2h), the
        norm output = QKV-projection input (``lin`` h; recomputed with ``layernorm``), the output dropout
        mask (h). Split over heads: Q, K, V (2 bytes each, inputs of the attention kernel) and the
        output-projection input (``out_b`` per element; it is also the attention output its backward
        reads). Score: softmax output (2as), its dropout mask (as) and dropout output (2as) -- without
        dropout only 2as; flash attention keeps only an fp32 log-sum-exp per head; ``core_attn`` drops it.

        MLA (DeepSeek-V2 sec. 2.1): the latents c_q (q_lora_rank) and c_kv (kv_lora_rank) are the
        inputs of their RMSNorms (2 bytes) and the normed latents the up-projection inputs (``lin``);
        Q and K carry qk_head_dim = nope + rope per head, V v_head_dim. ``mla_up_proj`` (Megatron-Core:
        "recompute the MLA up projection and RoPE applying parts", the latent norms fused in) keeps only
        the latents and the shared RoPE key (qk_rope_head_dim) and rebuilds the normed latents, Q, K, V.
        """
        h, a = self.hidden_size, self.num_attention_heads
        replicated = _ACT_BYTES * h + (0.0 if "layernorm" in modules else lin * h)
        replicated += _MASK_BYTES * h if dropout else 0.0
        if self.mla is not None:
            latents = (self.mla.q_lora_rank or 0) + self.mla.kv_lora_rank
            if "mla_up_proj" in modules:
                replicated += _ACT_BYTES * (latents + self.mla.qk_rope_head_dim)
                qkv = 0.0
            else:
                replicated += (_ACT_BYTES + lin) * latents
                qkv = _ACT_BYTES * a * (2 * self.mla.qk_head_dim + self.mla.v_head_dim)
            out = a * self.mla.v_head_dim
        else:
            q_dim, kv_dim = a * self.head_size, self.kv_heads * self.head_size
            qkv, out = _ACT_BYTES * (q_dim + 2 * kv_dim), q_dim
        split = qkv + out_b * out
        if "core_attn" in modules:
            score = 0.0
        elif flash:
            score = _LSE_BYTES * a
        else:
            score = (2 * _ACT_BYTES + _MASK_BYTES) * a * seq_len if dropout else _ACT_BYTES * a * seq_len
        return replicated, split, score

    def _mlp_intermediate_activations(self, ffn: int, act_in: float = _ACT_BYTES, act_out: float = _ACT_BYTES) -> float:
        """Saved intermediates of one MLP per token: the activation function's input (GELU f, SwiGLU's
        gate and up outputs 2f, at ``act_in`` bytes) and its output, the down-projection input (f at
        ``act_out``; 0 when the activation is recomputed). 16-bit: GELU 2 x 2f, SwiGLU 3 x 2f."""
        width = 2 * ffn if self.mlp == "swiglu" else ffn
        return act_in * width + act_out * ffn

    def _mlp_activations(
        self, moe_layer: bool, dropout: bool, modules: frozenset[str], lin: float, fp8: bool
    ) -> tuple[float, float]:
        """MLP block's saved tensors per token as (TP-replicated, TP-split) bytes.

        Dense: norm input (2h), norm output = first-linear input (``lin`` h; 0 with ``layernorm``), the
        intermediates (split), the output dropout mask. ``mlp`` checkpoints the whole dense MLP: only
        its input (the norm output, 2h) stays.

        MoE (top_k = k routed experts of width f_e, shared experts of total width f_s, E experts):
        norm input (2h) and output (2h: the router's input stays 16-bit, DeepSeek-V3 sec. 3.3 keeps the
        gating in higher precision; 0 with ``layernorm``); the router's fp32 scores (E) and the k chosen
        probabilities (4 bytes each: sigmoid/softmax backward and the probability-weighted activation);
        k dispatched copies of the token (the experts' first-linear inputs, ``lin`` h each); per
        expert the activation input (2f_e, fp8 when caching fp8: DeepSeek-V3 sec. 3.3.3 caches the
        SwiGLU inputs of MoE in FP8) and output (``lin`` f_e; 0 with ``moe_act``, which recomputes it);
        the shared experts' intermediates likewise (0 with ``shared_experts``). Expert outputs are not
        kept: Megatron-Core multiplies the routing probabilities into the activation
        (``activation_func_with_probs`` in ``moe/experts.py``), so the combine's backward needs none.
        ``moe`` checkpoints the whole MoE block: only its input (the norm output, 2h) stays.
        """
        h = self.hidden_size
        mask = _MASK_BYTES * h if dropout else 0.0
        norm_out = 0.0 if "layernorm" in modules else lin * h
        if not moe_layer or self.moe is None:
            if "mlp" in modules:
                return 2 * _ACT_BYTES * h + mask, 0.0
            intermediates = self._mlp_intermediate_activations(self.ffn_hidden_size, act_out=lin)
            return _ACT_BYTES * h + norm_out + mask, intermediates
        moe = self.moe
        if "moe" in modules:
            return 2 * _ACT_BYTES * h + mask, 0.0
        k = moe.top_k
        replicated = _ACT_BYTES * h + (0.0 if "layernorm" in modules else _ACT_BYTES * h) + mask
        replicated += _ROUTER_BYTES * (moe.num_experts + k) + k * lin * h
        act_in = lin if fp8 else _ACT_BYTES
        routed_out = 0.0 if "moe_act" in modules else lin
        split = k * self._mlp_intermediate_activations(moe.expert_ffn_hidden_size, act_in, routed_out)
        if moe.shared_ffn_hidden_size and "shared_experts" not in modules:
            split += self._mlp_intermediate_activations(moe.shared_ffn_hidden_size, act_in, lin)
        return replicated, split

    def activation_bytes_per_layer(
        self,
        seq_len: int,
        micro_batch: int,
        *,
        tp: int = 1,
        sp: bool = False,
        recompute: str = "none",
        flash_attention: bool = False,
        dropout: bool = True,
        layer: int | None = None,
        recompute_modules: Iterable[str] | None = None,
        cache_dtype: str = "bf16",
    ) -> float:
        """Activation bytes one transformer layer keeps for backward, per GPU (Korthikanti et al. 2022).

        Each saved tensor is counted term by term (see ``_attention_activations`` and
        ``_mlp_activations``) in three groups: replicated across tensor-parallel ranks unless
        ``sp`` (norm inputs, linear inputs at the block edges, dropout masks, dispatched tokens, router
        scores), split over ``tp`` (Q, K, V, attention output, MLP intermediates) and the attention score
        terms (split). For GPT (MHA, GELU 4h MLP, dropout) this gives exactly s b h (34 + 5 a s / h);
        with TP, s b h (10 + 24/t + 5 a s/(h t)); with SP, s b h (34/t + 5 a s/(h t)). GQA shrinks K and
        V to the KV heads; SwiGLU keeps 6f instead of GELU's 4f. ``dropout=False`` drops the masks.

        ``recompute='selective'`` recomputes ``recompute_modules`` (Megatron-Core's ``--recompute-modules``:
        core_attn, moe_act, layernorm, mla_up_proj, mlp, moe, shared_experts; default core_attn, which drops
        the score terms); ``'full'`` keeps only the layer input (2 s b h, /t with SP).
        ``cache_dtype='fp8'`` caches the Linear inputs in FP8 (1 byte + one fp32 scale per 1x128 tile) and
        the attention output (the output projection's input) in E5M6 (12 bits), as DeepSeek-V3 does
        (report sec. 3.3.3, "Low-Precision Activation"). ``layer`` picks dense vs MoE; None means an MoE
        layer if the model has any.
        """
        if recompute not in _RECOMPUTE:
            raise ClusterSimError(f"recompute={recompute!r} must be one of {', '.join(_RECOMPUTE)}")
        if tp < 1 or seq_len <= 0 or micro_batch <= 0:
            raise ClusterSimError(f"tp={tp}, seq_len={seq_len}, micro_batch={micro_batch} must be positive")
        if cache_dtype not in _CACHE_DTYPES:
            raise ClusterSimError(f"cache_dtype={cache_dtype!r} must be one of {', '.join(_CACHE_DTYPES)}")
        modules = recompute_module_set(recompute, recompute_modules)
        tokens = float(seq_len * micro_batch)
        rep_div = tp if sp else 1
        if recompute == "full":
            return tokens * _ACT_BYTES * self.hidden_size / rep_div
        fp8 = cache_dtype == "fp8"
        lin, out_b = (_FP8_CACHE_BYTES, _E5M6_BYTES) if fp8 else (_ACT_BYTES, _ACT_BYTES)
        moe_layer = self.is_moe and (layer is None or self.is_moe_layer(layer))
        a_rep, a_split, score = self._attention_activations(seq_len, dropout, flash_attention, modules, lin, out_b)
        m_rep, m_split = self._mlp_activations(moe_layer, dropout, modules, lin, fp8)
        return tokens * ((a_rep + m_rep) / rep_div + (a_split + m_split + score) / tp)

    # ----------------------------------------------------------------------------- summary
    def _moe_summary(self) -> dict[str, Any] | None:
        if self.moe is None:
            return None
        return {
            "num_experts": self.moe.num_experts,
            "top_k": self.moe.top_k,
            "num_shared_experts": self.moe.num_shared_experts,
            "num_moe_layers": self.num_moe_layers,
        }

    def to_summary(self) -> dict[str, Any]:
        """The figures a user checks first (sizes, attention kind, KV bytes), as a flat dict."""
        return {
            "name": self.name,
            "total_params": self.total_params,
            "active_params": self.active_params,
            "active_params_non_embedding": self.active_params_non_embedding,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "heads": self.num_attention_heads,
            "kv_heads": self.kv_heads,
            "attention_kind": self.attention_kind,
            "moe": self._moe_summary(),
            "kv_cache_bytes_per_token": self.kv_cache_bytes_per_token("bf16"),
            "source": self.source,
        }


def validate_spec(data: dict[str, Any], where: str) -> ModelSpec:
    """Build a ModelSpec from a mapping, turning validation errors into one-line ClusterSimErrors."""
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as err:
        raise ClusterSimError(f"{where}: {first_validation_error(err)}") from None
