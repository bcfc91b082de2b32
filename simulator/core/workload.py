"""Workload builder: a model layer + a parallel plan -> the ops one rank runs, with FLOPs and bytes.

Ops are plain records; :mod:`simulator.core.costs` turns them into seconds with a hardware profile.
Shapes follow Megatron-LM: column-parallel QKV/up projections and row-parallel output/down
projections split over TP, so each TP rank sees every token and ``1/tp`` of the hidden units.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from hwmodels.dtypes import bytes_per_element
from simulator.models import ModelSpec
from simulator.stacks import DEFAULT_STACK, StackSpec, get_stack
from simulator.stacks.spec import KernelGroup, Slot

OpKind = Literal["gemm", "attn", "mem", "comm"]


@dataclass(frozen=True)
class Op:
    """One kernel (or collective) of a layer's forward pass on one rank."""

    name: str
    kind: OpKind
    flops: float = 0.0
    bytes: float = 0.0
    gemm: tuple[int, int, int] | None = None  # (M, N, K) of y[M,N] = x[M,K] @ W[N,K].T
    attn: dict[str, int] = field(default_factory=dict)  # batch, q_len, kv_len, heads, kv_heads, head_dim, v_head_dim
    collective: str | None = None  # all_reduce | all_gather | reduce_scatter | all_to_all
    group: str | None = None  # tp | ep | cp
    count: int = 1  # identical GEMMs: run back to back (local experts) or as one batched kernel
    batched: bool = False  # the count GEMMs are one batched kernel (attention scores per head)
    dtype: str | None = None  # the op's own numerics when they differ from the run's (fp8 linear layers)
    #: ``both``: a forward kernel whose backward the cost model derives (2 GEMMs, flash backward, 2x an
    #: elementwise read); ``fwd`` / ``bwd``: a kernel that runs only in that pass, as written (stack
    #: kernel lists and traced graphs list their backward kernels themselves)
    phase: Literal["both", "fwd", "bwd"] = "both"
    #: an elementwise op's backward kernels, total bytes of each over ``count`` (empty: one kernel moving
    #: twice the forward bytes); an elementwise op's ``bytes`` are likewise the total of its ``count`` launches
    bwd_bytes: tuple[float, ...] = ()
    wgrad: bool = False  # a ``bwd`` GEMM that computes a weight gradient (zero-bubble schedules defer it)


#: Under FP8 training only the linear layers' GEMMs run in fp8; activations, attention, norms, the
#: MoE router and the output head stay in bf16 (Transformer Engine's recipe; DeepSeek-V3 report, 3.3).
LOW_PRECISION = ("fp8",)


def numerics(dtype: str) -> tuple[str | None, str]:
    """(linear-GEMM dtype tag, activation dtype) of a run in ``dtype``."""
    return (dtype, "bf16") if dtype in LOW_PRECISION else (None, dtype)


def _gemm(
    name: str, M: int, N: int, K: int, b: float, count: int = 1, batched: bool = False, dtype: str | None = None
) -> Op:
    b = bytes_per_element(dtype) if dtype else b
    return Op(
        name=name,
        kind="gemm",
        flops=2.0 * M * N * K * count,
        bytes=b * (M * K + N * K + M * N) * count,
        gemm=(M, N, K),
        count=count,
        batched=batched,
        dtype=dtype,
    )


def _mem(name: str, nbytes: float) -> Op:
    return Op(name=name, kind="mem", bytes=nbytes)


def _tp_comm(name: str, nbytes: float, tp: int, sp: bool) -> list[Op]:
    """The TP collective after a row-parallel GEMM: all-reduce, or reduce-scatter with SP."""
    if tp == 1:
        return []
    kind = "reduce_scatter" if sp else "all_reduce"
    return [Op(name=name, kind="comm", bytes=nbytes, collective=kind, group="tp")]


#: Slots whose ``hidden`` tensor is split over TP under sequence parallelism (norms and residuals).
_SEQUENCE_SLOTS = frozenset({"attn_norm", "attn_residual", "mlp_norm", "mlp_residual", "final_norm"})


def _group_ops(group: KernelGroup, sizes: dict[str, float], act_bytes: float) -> list[Op]:
    """One kernel group as ops: a single kernel with the derived backward, or its listed kernels per pass."""
    unit = act_bytes if group.unit == "act" else 1.0

    def nbytes(entry: dict[str, float]) -> float:
        return unit * sum(v * sizes.get(t, 0.0) for t, v in entry.items()) * group.launches

    c = group.launches * group.split  # kernels per entry; Op.bytes is their total
    if group.bwd is None and len(group.fwd) == 1:
        return [Op(name=group.name, kind="mem", bytes=nbytes(group.fwd[0]), count=c)]
    fwd = [nbytes(e) for e in group.fwd]
    bwd = [2.0 * b for b in fwd] if group.bwd is None else [nbytes(e) for e in group.bwd]
    ops = [Op(name=f"{group.name}.{i}", kind="mem", bytes=b, count=c, phase="fwd") for i, b in enumerate(fwd)]
    ops += [Op(name=f"{group.name}.bwd{i}", kind="mem", bytes=b, count=c, phase="bwd") for i, b in enumerate(bwd)]
    return [op for op in ops if op.bytes > 0]


def stack_kernels(
    stack: StackSpec, slot: Slot, sizes: dict[str, float], act_bytes: float, *, gated: bool, sp_split: int = 1
) -> list[Op]:
    """The elementwise kernels ``stack`` launches at ``slot`` for tensors of ``sizes`` elements.

    ``sp_split`` divides the ``hidden`` tensor of norm and residual slots (sequence parallelism).
    """
    if slot in _SEQUENCE_SLOTS and sp_split > 1:
        sizes = {**sizes, "hidden": sizes.get("hidden", 0.0) / sp_split}
    ops: list[Op] = []
    for group in stack.kernels.get(slot, []):
        if group.when == "always" or (group.when == "gated") == gated:
            ops.extend(_group_ops(group, sizes, act_bytes))
    return ops


def _stack(stack: StackSpec | None) -> StackSpec:
    return stack if stack is not None else get_stack(DEFAULT_STACK)


def attention_sizes(model: ModelSpec, T: int, tp: int, layer_params: float) -> dict[str, float]:
    """Element counts of the attention block's tensors on one rank (``q``/``k``: the rotary parts)."""
    heads = model.num_attention_heads // tp
    kvh = max(1, model.kv_heads // tp)
    if model.mla is not None:
        rope = model.mla.qk_rope_head_dim
        q, k, v, ctx = heads * rope, rope, heads * model.mla.v_head_dim, heads * model.mla.v_head_dim
    else:
        d = model.head_size
        q, k, v, ctx = heads * d, kvh * d, kvh * d, heads * d
    if model.position != "rope":
        q = k = 0
    return {
        "hidden": T * model.hidden_size,
        "rows": T,
        "q": T * q,
        "k": T * k,
        "v": T * v,
        "ctx": T * ctx,
        "params": layer_params,
    }


def attention_ops(
    model: ModelSpec,
    batch: int,
    seq: int,
    tp: int,
    dtype: str,
    sp: bool = False,
    cp: int = 1,
    flash: bool = True,
    stack: StackSpec | None = None,
    layer_params: float = 0.0,
) -> list[Op]:
    """Forward ops of one attention block (norm, projections, core, output, TP collective).

    ``seq`` is the full sequence; with context parallelism ``cp`` each rank holds ``seq/cp`` tokens,
    computes its (load-balanced) share of causal attention against all keys, and passes K/V blocks
    around a ring (Liu et al., ring attention) that overlaps with the attention compute.
    """
    lin, act_dt = numerics(dtype)
    b = bytes_per_element(act_dt)
    full_seq, seq = seq, seq // cp
    T, h = batch * seq, model.hidden_size
    heads = model.num_attention_heads // tp
    kv_heads = max(1, model.kv_heads // tp)
    act = T * h * b
    st = _stack(stack)
    sizes = attention_sizes(model, T, tp, layer_params)
    gated = model.mlp == "swiglu"

    def kernels(slot: Slot) -> list[Op]:
        return stack_kernels(st, slot, sizes, b, gated=gated, sp_split=tp if sp else 1)

    ops: list[Op] = kernels("weights") + kernels("attn_norm")
    if sp and tp > 1:
        ops.append(Op(name="sp_all_gather_attn", kind="comm", bytes=act, collective="all_gather", group="tp"))
    ops += kernels("attn_in")
    if model.mla is not None:
        mla = model.mla
        qk_dim = mla.qk_nope_head_dim + mla.qk_rope_head_dim
        if mla.q_lora_rank:
            ops.append(_gemm("q_down", T, mla.q_lora_rank, h, b, dtype=lin))
            ops.append(_gemm("q_up", T, heads * qk_dim, mla.q_lora_rank, b, dtype=lin))
        else:
            ops.append(_gemm("q_proj", T, heads * qk_dim, h, b, dtype=lin))
        ops.append(_gemm("kv_down", T, mla.kv_lora_rank + mla.qk_rope_head_dim, h, b, dtype=lin))
        ops.append(_gemm("kv_up", T, heads * (mla.qk_nope_head_dim + mla.v_head_dim), mla.kv_lora_rank, b, dtype=lin))
        hd, vd, kvh = qk_dim, mla.v_head_dim, heads
    else:
        hd = vd = model.head_size
        kvh = kv_heads
        if st.split_qkv:
            ops.append(_gemm("q_proj", T, heads * hd, h, b, dtype=lin))
            ops.append(_gemm("k_proj", T, kv_heads * hd, h, b, dtype=lin))
            ops.append(_gemm("v_proj", T, kv_heads * hd, h, b, dtype=lin))
        else:
            ops.append(_gemm("qkv_proj", T, (heads + 2 * kv_heads) * hd, h, b, dtype=lin))
    ops += kernels("rope")
    if flash:
        core = dict(
            batch=batch,
            q_len=full_seq,
            kv_len=full_seq,
            heads=heads,
            kv_heads=kvh,
            head_dim=hd,
            v_head_dim=vd,
            split=cp,
        )
        attn_flops = 2.0 * batch * heads * full_seq * (full_seq + 1) / 2.0 * (hd + vd) / cp
        attn_bytes = b * batch * seq * (heads + kvh) * (hd + vd)
        ops.append(Op(name="attn_core", kind="attn", flops=attn_flops, bytes=attn_bytes, attn=core, dtype=act_dt))
    else:
        ops.extend(unfused_attention_ops(batch * heads, seq, hd, vd, b, act_dt))
    if cp > 1:
        kv_block = b * batch * seq * kvh * (hd + vd)
        ops.append(Op(name="cp_ring_kv", kind="comm", bytes=kv_block, collective="ring_exchange", group="cp"))
    ops += kernels("attn_out")
    ops.append(_gemm("attn_out_proj", T, h, heads * vd, b, dtype=lin))
    ops.extend(_tp_comm("tp_attn_out", act, tp, sp))
    return ops + kernels("attn_residual")


#: Bytes per attention-score element of Megatron's unfused path: fused scale-mask-softmax reads and
#: writes 16-bit scores (4) and dropout reads and writes them and stores a 1-byte mask (5).
UNFUSED_SCORE_BYTES = 9.0


def unfused_attention_ops(heads: int, seq: int, hd: int, vd: int, b: float, dtype: str | None = None) -> list[Op]:
    """Attention as Megatron-LM ran it before flash attention: batched QK^T and PV GEMMs over every
    head (the full s x s scores, causal mask or not) and a memory-bound softmax + dropout between."""
    return [
        _gemm("attn_scores", seq, seq, hd, b, count=heads, batched=True, dtype=dtype),
        _mem("attn_softmax_dropout", UNFUSED_SCORE_BYTES * heads * seq * seq),
        _gemm("attn_context", seq, vd, seq, b, count=heads, batched=True, dtype=dtype),
    ]


def _mlp_gemms(
    prefix: str,
    T: int,
    h: int,
    ffn: int,
    gated: bool,
    b: float,
    count: int = 1,
    lin: str | None = None,
    stack: StackSpec | None = None,
) -> list[Op]:
    """Up projection (gate and up, split or fused), the activation kernels, down projection; ``count``
    identical experts run back to back."""
    st = _stack(stack)
    up = 2 * ffn if gated else ffn
    sizes = {"hidden": T * h * count, "rows": T * count, "ffn_up": T * up * count, "ffn": T * ffn * count}

    def kernels(slot: Slot) -> list[Op]:
        out = stack_kernels(st, slot, sizes, b, gated=gated)
        # one kernel over every expert's tokens
        return [replace(op, name=f"{prefix}_{op.name.removeprefix('mlp_')}") for op in out]

    if gated and st.split_gate_up:
        ups = [
            _gemm(f"{prefix}_gate", T, ffn, h, b, count, dtype=lin),
            _gemm(f"{prefix}_up", T, ffn, h, b, count, dtype=lin),
        ]
    else:
        ups = [_gemm(f"{prefix}_up", T, up, h, b, count, dtype=lin)]
    return kernels("mlp_in") + ups + kernels("mlp_act") + [_gemm(f"{prefix}_down", T, h, ffn, b, count, dtype=lin)]


def mlp_ops(
    model: ModelSpec,
    layer: int,
    batch: int,
    seq: int,
    tp: int,
    ep: int,
    dtype: str,
    sp: bool = False,
    stack: StackSpec | None = None,
) -> list[Op]:
    """Forward ops of one MLP block: dense, or MoE (router, dispatch, experts, combine)."""
    lin, act_dt = numerics(dtype)
    b = bytes_per_element(act_dt)
    T, h = batch * seq, model.hidden_size
    act = T * h * b
    gated = model.mlp == "swiglu"
    st = _stack(stack)
    sizes = {"hidden": T * h, "rows": T}
    ops: list[Op] = stack_kernels(st, "mlp_norm", sizes, b, gated=gated, sp_split=tp if sp else 1)
    if sp and tp > 1:
        ops.append(Op(name="sp_all_gather_mlp", kind="comm", bytes=act, collective="all_gather", group="tp"))
    if not model.is_moe_layer(layer):
        ops.extend(_mlp_gemms("mlp", T, h, model.ffn_hidden_size // tp, gated, b, lin=lin, stack=st))
    else:
        moe = model.moe
        assert moe is not None
        routed_tokens = T * moe.top_k  # token copies sent to experts across the EP group
        local_experts = max(1, moe.num_experts // ep)
        # the EP group's ep*T*top_k token copies spread evenly over the experts (balanced routing)
        tokens_per_expert = max(1, round(routed_tokens * ep / moe.num_experts))
        ops.append(_gemm("router", T, moe.num_experts, h, b, dtype=act_dt))
        dispatch = Op(
            name="moe_dispatch", kind="comm", bytes=routed_tokens * h * b, collective="all_to_all", group="ep"
        )
        if ep > 1:
            ops.append(dispatch)
        ffn = moe.expert_ffn_hidden_size // tp
        ops.extend(_mlp_gemms("expert", tokens_per_expert, h, ffn, gated, b, count=local_experts, lin=lin, stack=st))
        if ep > 1:
            ops.append(replace(dispatch, name="moe_combine"))
        if moe.num_shared_experts:
            shared = moe.shared_ffn_hidden_size // tp
            ops.extend(_mlp_gemms("shared_expert", T, h, shared, gated, b, lin=lin, stack=st))
    ops.extend(_tp_comm("tp_mlp_out", act, tp, sp))
    return ops + stack_kernels(st, "mlp_residual", sizes, b, gated=gated, sp_split=tp if sp else 1)


def layer_ops(
    model: ModelSpec,
    layer: int,
    batch: int,
    seq: int,
    *,
    tp: int = 1,
    ep: int = 1,
    cp: int = 1,
    dtype: str = "bf16",
    sp: bool = False,
    flash: bool = True,
    stack: StackSpec | None = None,
) -> list[Op]:
    """Forward ops of transformer layer ``layer`` for ``batch`` sequences of ``seq`` tokens on one rank,
    with the elementwise kernels ``stack`` launches (default: the default stack)."""
    params = model.params_per_layer(layer) / tp
    attn = attention_ops(model, batch, seq, tp, dtype, sp, cp, flash, stack, params)
    return attn + mlp_ops(model, layer, batch, seq // cp, tp, ep, dtype, sp, stack)


def embedding_ops(
    model: ModelSpec, batch: int, seq: int, *, dtype: str = "bf16", stack: StackSpec | None = None
) -> list[Op]:
    """Forward ops of the input embedding: a gather of ``batch*seq`` rows (plus learned positions), then the
    kernels the stack runs once per forward before the layers (position ids, masks, rotary tables)."""
    act_dt = numerics(dtype)[1]
    b = bytes_per_element(act_dt)
    rows = 2 if model.position == "learned" else 1
    T = batch * seq
    table = T * model.head_size if model.position == "rope" else 0
    sizes = {"hidden": T * model.hidden_size, "rows": T, "rope_table": table}
    extra = stack_kernels(_stack(stack), "model_in", sizes, b, gated=model.mlp == "swiglu")
    return [_mem("embedding", b * T * model.hidden_size * (rows + 1)), *extra]


def padded_vocab(vocab_size: int, multiple: int) -> int:
    """The vocabulary a framework allocates: ``vocab_size`` rounded up to a multiple (Megatron pads its
    embedding and LM head to keep their GEMMs aligned and evenly split over TP)."""
    return -(-vocab_size // multiple) * multiple


def head_ops(
    model: ModelSpec,
    batch: int,
    seq: int,
    *,
    tp: int = 1,
    dtype: str = "bf16",
    vocab_multiple: int = 1,
    stack: StackSpec | None = None,
) -> list[Op]:
    """Forward ops of the output head: final norm, vocabulary projection (split over TP), loss.

    ``vocab_multiple`` is the stack's padding of the vocabulary (times tp for Megatron), 1 for none.
    """
    act_dt = numerics(dtype)[1]
    b = bytes_per_element(act_dt)
    T = batch * seq
    vocab = -(-padded_vocab(model.vocab_size, vocab_multiple) // tp)
    st = _stack(stack)
    sizes = {"hidden": T * model.hidden_size, "rows": T, "logits": T * vocab}

    def kernels(slot: Slot) -> list[Op]:
        return stack_kernels(st, slot, sizes, b, gated=model.mlp == "swiglu")

    lm_head = _gemm("lm_head", T, vocab, model.hidden_size, b, dtype=act_dt)
    return kernels("final_norm") + kernels("head_in") + [lm_head] + kernels("loss")
