"""Cost of one serving-engine iteration: a mixed batch of prefill chunks and decodes.

Per transformer layer on one TP rank: the projection and MLP GEMMs over all the iteration's tokens
(their weights are read once per iteration, which is what makes small decode batches
memory-bound), attention for each prefill chunk against its context and one decode-attention
kernel streaming every decode's KV cache (each context length counts, not their mean), the TP
all-reduces, and the elementwise ops; then the LM head for the sequences that emit a token, and a
per-iteration CPU overhead (scheduling, sampling) from the profile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hwmodels.catalogue import get_gpu
from hwmodels.checks import check_iteration_args
from hwmodels.dtypes import bytes_per_element
from hwmodels.errors import ClusterSimError
from hwmodels.profile import Profile, load_profile
from hwmodels.topology import ClusterSpec, CommGroup
from simulator.core import costs
from simulator.core.costs import DEFAULT_ALGORITHM, CommAlgorithm
from simulator.core.workload import attention_sizes, padded_vocab, stack_kernels
from simulator.models import ModelSpec, get_model
from simulator.stacks import DEFAULT_SERVING_STACK, StackSpec, get_stack
from simulator.stacks.spec import Slot

#: The elementwise slots of one layer's forward in serving, in order (the stack's kernels there). Not
#: ``weights``: inference keeps its weights in ``weight_dtype``, with no fp32 masters for autocast to cast.
_LAYER_SLOTS: tuple[Slot, ...] = (
    "attn_norm",
    "attn_in",
    "rope",
    "attn_out",
    "attn_residual",
    "mlp_norm",
    "mlp_in",
    "mlp_act",
    "mlp_residual",
)

#: Tokens per KV page a decode-attention kernel reads whole (vLLM's and SGLang's default block size is 16).
DECODE_PAGE_TOKENS = 16

#: GEMM compute dtype for each weight format: fp8 and int8 run on their tensor cores (W8A8),
#: int4 is weight-only (dequantised to bf16 in the kernel).
_COMPUTE_DTYPE = {"bf16": "bf16", "fp16": "fp16", "fp8": "fp8", "int8": "int8", "int4": "bf16"}


@dataclass(frozen=True, eq=False)
class IterationModel:
    """Everything needed to cost iterations of one replica, precomputed once."""

    model: ModelSpec
    profile: Profile
    tp: int
    pp: int
    weight_dtype: str
    kv_dtype: str
    tp_group: CommGroup
    overhead: bool = True
    act_dtype: str = "bf16"  # activations / attention (fp16 on GPUs without bf16, e.g. T4)
    ep: int = 1  # expert parallelism: routed experts split over ep attention groups of tp GPUs
    ep_group: CommGroup | None = None
    routing: Any = None  # simulator.moe.routing.MoERouting for per-iteration expert loads (ep > 1)
    algorithm: CommAlgorithm = DEFAULT_ALGORITHM  # the TP all-reduce's collective algorithm
    stack: StackSpec = field(default_factory=lambda: get_stack(DEFAULT_SERVING_STACK))
    _cache: dict = field(default_factory=dict, repr=False)

    def _memo(self, key: tuple, fn, *args) -> float:
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = fn(*args)
        return value

    # ---- per-token-count costs (cached: iterations repeat the same token counts) ----------------
    def _gemm(self, M: int, N: int, K: int, floor: bool | None = None) -> float:
        use_floor = self.overhead if floor is None else floor
        t = costs.gemm_time(
            self.profile, M, N, K, self.compute_dtype(), weight_dtype=self.weight_dtype, floor=use_floor
        )
        return t if self.overhead or floor is False else costs.graph_kernel_time(t)

    def compute_dtype(self) -> str:
        """The GEMM dtype: W8A8 formats on their tensor cores, weight-only int4 in bf16/fp16."""
        compute = _COMPUTE_DTYPE[self.weight_dtype]
        if compute in ("bf16", "fp16"):
            compute = self.act_dtype if self.weight_dtype in ("bf16", "int4") else compute
        return compute

    def dense_layer_s(self, tokens: int) -> float:
        """A layer's token-parallel work (everything but attention) for ``tokens`` tokens."""
        return self._memo(("dense", tokens), self._dense_layer_s, tokens)

    def _traced(self) -> list[Any]:
        """The traced layer's token-scaled forward kernels (``stack.traced``), loaded once."""
        kernels = self._cache.get("traced")
        if kernels is None:
            kernels = self._cache["traced"] = traced_inference_kernels(self.stack, self.model)
        return kernels

    def _dense_layer_s(self, tokens: int) -> float:
        m, tp = self.model, self.tp
        h = m.hidden_size
        t = 0.0
        if self.stack.traced:  # exactly the traced code's kernels, attention priced by the serving model
            for k in self._traced():
                t += self._gemm(tokens, *k.gemm) if k.gemm else self._elementwise_s(k.bytes_per_token * tokens)
            return t
        if m.mla is not None:
            mla = m.mla
            heads = m.num_attention_heads // tp
            if mla.q_lora_rank:
                t += self._gemm(tokens, mla.q_lora_rank, h) + self._gemm(
                    tokens, heads * mla.qk_head_dim, mla.q_lora_rank
                )
            else:
                t += self._gemm(tokens, heads * mla.qk_head_dim, h)
            t += self._gemm(tokens, mla.kv_lora_rank + mla.qk_rope_head_dim, h)
            t += self._gemm(tokens, heads * (mla.qk_nope_head_dim + mla.v_head_dim), mla.kv_lora_rank)
            t += self._gemm(tokens, h, heads * mla.v_head_dim)
        else:
            heads = m.num_attention_heads // tp
            kvh = max(1, m.kv_heads // tp)
            if self.stack.split_qkv:
                t += self._gemm(tokens, heads * m.head_size, h) + 2 * self._gemm(tokens, kvh * m.head_size, h)
            else:
                t += self._gemm(tokens, (heads + 2 * kvh) * m.head_size, h)
            t += self._gemm(tokens, h, heads * m.head_size)
        t += self._mlp_s(tokens)
        act = 2.0 * tokens * h
        t += sum(self._elementwise_s(b) * n for b, n in self._elementwise(tokens))
        if tp > 1:
            t += 2 * costs.comm_time("all_reduce", act, self.tp_group, self.algorithm)
        return t

    def _elementwise(self, tokens: int) -> list[tuple[float, int]]:
        """(bytes, launches) of each forward elementwise kernel the stack runs in one layer for ``tokens``."""
        m, tp = self.model, self.tp
        ffn = (m.moe.expert_ffn_hidden_size * m.moe.top_k if m.moe else m.ffn_hidden_size) // tp
        up = 2 * ffn if m.mlp == "swiglu" else ffn
        sizes = attention_sizes(m, tokens, tp, m.params_per_layer(0) / tp)
        sizes.update(ffn_up=tokens * up, ffn=tokens * ffn)
        b = bytes_per_element(self.act_dtype)
        out = []
        for slot in _LAYER_SLOTS:
            for op in stack_kernels(self.stack, slot, sizes, b, gated=m.mlp == "swiglu"):
                if op.phase != "bwd":
                    out.append((op.bytes / op.count, op.count))
        return out

    def _elementwise_s(self, nbytes: float) -> float:
        """One elementwise kernel: with the host floor, or as a CUDA graph replays it (``overhead`` off)."""
        t = costs.memory_op_time(self.profile, nbytes, self.overhead)
        return t if self.overhead else costs.graph_kernel_time(t)

    def kernels_per_iteration(self, tokens: int) -> int:
        """Kernels one iteration launches (GEMMs, attention, elementwise, collectives), for the eager host floor."""
        if self.stack.traced:
            return self.model.num_layers * (len(self._traced()) + 1) + 3
        per_layer = sum(n for _, n in self._elementwise(tokens)) + (9 if self.stack.split_qkv else 6)
        return self.model.num_layers * (per_layer + (2 if self.tp > 1 else 0)) + 3

    def _mlp_s(self, tokens: int) -> float:
        m, tp = self.model, self.tp
        h = m.hidden_size
        up = 3 if m.mlp == "swiglu" else 2
        moe = m.moe
        if moe is None:
            ffn = m.ffn_hidden_size // tp
            return self._gemm(tokens, (up - 1) * ffn, h) + self._gemm(tokens, h, ffn)
        if self.ep > 1:
            return self._ep_moe_s(tokens)
        # experts actually touched this iteration read their weights; tokens spread over them
        touched = min(moe.num_experts, tokens * moe.top_k)
        per_expert = max(1, round(tokens * moe.top_k / touched))
        ffn = moe.expert_ffn_hidden_size // tp
        t = self._gemm(tokens, moe.num_experts, h)
        # fused MoE kernels run all touched experts as one grouped GEMM per projection
        grouped = touched * (self._gemm(per_expert, (up - 1) * ffn, h, False) + self._gemm(per_expert, h, ffn, False))
        floor = 2 * costs.launch_floor_s(self.profile, "gemm") if self.overhead else 0.0
        t += max(floor, grouped)
        if moe.num_shared_experts:
            sffn = moe.shared_ffn_hidden_size // tp
            t += self._gemm(tokens, (up - 1) * sffn, h) + self._gemm(tokens, h, sffn)
        return t

    def _ep_moe_s(self, group_tokens: int) -> float:
        """An MoE block under expert parallelism: each of the ep groups routes its ``group_tokens``;
        the busiest rank's experts set the expert time, and dispatch + combine all-to-alls move the
        token copies that leave the rank."""
        m, tp, ep = self.model, self.tp, self.ep
        moe = m.moe
        assert moe is not None and self.ep_group is not None
        h = m.hidden_size
        up = 3 if m.mlp == "swiglu" else 2
        total = group_tokens * ep
        rank_copies = self._rank_load(total) * total * moe.top_k / ep  # busiest rank's token copies
        local = moe.num_experts // ep
        touched = max(1, min(local, round(rank_copies)))
        per_expert = max(1, round(rank_copies / touched))
        ffn = moe.expert_ffn_hidden_size // tp
        grouped = touched * (self._gemm(per_expert, (up - 1) * ffn, h, False) + self._gemm(per_expert, h, ffn, False))
        floor = 2 * costs.launch_floor_s(self.profile, "gemm") if self.overhead else 0.0
        t = self._gemm(group_tokens, moe.num_experts, h) + max(floor, grouped)
        payload = group_tokens * moe.top_k * h * 2.0  # bf16 token copies each rank sends (and gets back)
        t += 2 * costs.comm_time("all_to_all", payload, self.ep_group)
        if moe.num_shared_experts:
            sffn = moe.shared_ffn_hidden_size // tp
            t += self._gemm(group_tokens, (up - 1) * sffn, h) + self._gemm(group_tokens, h, sffn)
        return t

    def _rank_load(self, tokens: int) -> float:
        """max/mean EP-rank load for an iteration of ``tokens`` tokens (cached per power-of-two bucket)."""
        bucket = 1 << max(0, int(tokens - 1).bit_length())
        return self._memo(("rank_load", bucket), self._rank_load_uncached, bucket)

    def _rank_load_uncached(self, tokens: int) -> float:
        import numpy as np

        from simulator.moe import routing as M

        spec = self.model.moe
        assert spec is not None
        routing = self.routing if self.routing is not None else M.MoERouting()
        loads = M.expert_loads(routing, spec.num_experts, spec.top_k, tokens, rng=np.random.default_rng(tokens))
        return M.layer_time_factor(M.routing_stats(loads, self.ep))

    def is_moe_layer_mix(self) -> tuple[int, int]:
        """(dense layers, MoE layers) of the model."""
        m = self.model
        return m.num_dense_layers, m.num_moe_layers

    def prefill_attention_s(self, q_len: int, kv_len: int) -> float:
        """Seconds of one prefill chunk's attention (``q_len`` new tokens over ``kv_len`` in cache), memoised."""
        return self._memo(("prefill", q_len, kv_len), self._prefill_attention_s, q_len, kv_len)

    def _prefill_attention_s(self, q_len: int, kv_len: int) -> float:
        m = self.model
        heads = m.num_attention_heads // self.tp
        if m.mla is not None:
            return costs.attention_prefill_time(
                self.profile,
                1,
                q_len,
                heads,
                heads,
                m.mla.qk_head_dim,
                kv_len=kv_len,
                v_head_dim=m.mla.v_head_dim,
                floor=self.overhead,
            )
        kvh = max(1, m.kv_heads // self.tp)
        return costs.attention_prefill_time(
            self.profile, 1, q_len, heads, kvh, m.head_size, self.act_dtype, kv_len=kv_len, floor=self.overhead
        )

    def decode_attention_s(self, total_context: int, batch: int) -> float:
        """Seconds of decode attention for ``batch`` sequences with ``total_context`` KV tokens between them, the
        mean context rounded up to a whole KV page (paged kernels read whole pages), memoised."""
        per_seq = -(-max(1, total_context // batch) // DECODE_PAGE_TOKENS) * DECODE_PAGE_TOKENS
        return self._memo(("decode", per_seq, batch), self._decode_attention_s, per_seq * batch, batch)

    def _decode_attention_s(self, total_context: int, batch: int) -> float:
        m = self.model
        heads = m.num_attention_heads // self.tp
        if m.mla is not None:  # absorbed MLA: one shared latent (+ rope key) per token
            mla = m.mla
            return costs.attention_decode_time(
                self.profile,
                batch,
                [max(1, total_context // batch)] * batch,
                heads,
                1,
                mla.kv_lora_rank + mla.qk_rope_head_dim,
                kv_dtype=self.kv_dtype,
                v_head_dim=mla.kv_lora_rank,
                floor=self.overhead,
            )
        kvh = max(1, m.kv_heads // self.tp)
        return costs.attention_decode_time(
            self.profile,
            batch,
            max(1, total_context // batch),
            heads,
            kvh,
            m.head_size,
            self.act_dtype,
            kv_dtype=self.kv_dtype,
            floor=self.overhead,
        )

    def head_s(self, rows: int) -> float:
        """Seconds of the LM head (vocab projection) for ``rows`` sampled tokens, memoised."""
        return self._memo(("head", rows), self._head_s, rows)

    def _head_s(self, rows: int) -> float:
        m = self.model
        vocab = -(-padded_vocab(m.vocab_size, self.stack.vocab_divisible_by) // self.tp)
        head = self._gemm(rows, vocab, m.hidden_size)
        return head + costs.memory_op_time(self.profile, 4.0 * rows * vocab, self.overhead)

    # ---- one iteration ---------------------------------------------------------------------------
    def time(
        self, prefill: Sequence[tuple[int, int]], decode_contexts: Sequence[int], samples: int | None = None
    ) -> float:
        """Seconds for one iteration.

        ``prefill``: (chunk tokens, tokens already in the KV cache before the chunk) per prefilling
        sequence; ``decode_contexts``: context length of each decoding sequence; ``samples``: how
        many sequences emit a token (default: every decode and every prefill).
        """
        return self.time_totals(prefill, len(decode_contexts), int(sum(decode_contexts)), samples)

    def time_totals(
        self, prefill: Sequence[tuple[int, int]], decodes: int, decode_context: int, samples: int | None = None
    ) -> float:
        """:meth:`time` with the decodes given as their count and total context (the engine's hot path)."""
        return self.iteration_s(prefill, decodes, decode_context, samples)[0]

    def iteration_s(
        self,
        prefill: Sequence[tuple[int, int]],
        decodes: int,
        decode_context: int,
        samples: int | None = None,
        scheduled: bool = True,
    ) -> tuple[float, float]:
        """(seconds of one iteration, seconds of it the GPU waits for the engine's CPU).

        The GPU part replays a captured CUDA graph when the stack's engine captured one for this batch (padded
        to the captured size, no host issue floor per kernel), else runs eagerly. The engine's CPU step
        (:meth:`scheduler_s`; none for the later steps of a multi-step block, ``scheduled=False``) adds to it,
        or with ``serving.overlap_scheduling`` runs during it.
        """
        if not decodes and len(prefill) == 1:  # one prompt chunk alone: the commonest prefill, memoised
            key = ("prompt", *prefill[0], samples, scheduled)
            value = self._cache.get(key)
            if value is None:
                value = self._cache[key] = self._iteration_s(prefill, 0, 0, samples, scheduled)
            return value
        return self._iteration_s(prefill, decodes, decode_context, samples, scheduled)

    def _iteration_s(
        self,
        prefill: Sequence[tuple[int, int]],
        decodes: int,
        decode_context: int,
        samples: int | None,
        scheduled: bool,
    ) -> tuple[float, float]:
        tokens = sum(c for c, _ in prefill) + decodes
        if tokens == 0:
            return 0.0, 0.0
        rows = decodes + len(prefill) if samples is None else samples
        if not self.overhead:
            return self._gpu_s(prefill, decodes, decode_context, rows, tokens), 0.0
        engine = self.stack.serving
        padded = 0
        if engine is not None and engine.cuda_graphs != "none":
            if engine.cuda_graphs == "tokens":
                padded = engine.graph_size(tokens)
            elif not prefill:
                padded = engine.graph_size(decodes)
                rows = padded or rows  # the whole decode step, sampling included, runs at the captured size
        if padded:
            graphed = self._graphed()
            gpu = graphed._gpu_s(prefill, decodes, decode_context, rows, padded)
            if prefill:  # piecewise graphs: attention of a prefill or mixed batch is launched eagerly between them
                eager = self._attention_s(prefill, decodes, decode_context)
                gpu += eager - graphed._attention_s(prefill, decodes, decode_context)
        else:
            gpu = max(self._gpu_s(prefill, decodes, decode_context, rows, tokens), self._host_s(tokens))
        cpu = self.scheduler_s(decodes + len(prefill), scheduled)
        if engine is not None and engine.overlap_scheduling:
            return max(gpu, cpu), max(0.0, cpu - gpu)
        return gpu + cpu, cpu  # with PP the stages run one after another for a single iteration's latency

    def decode_step_s(self, decodes: int, decode_context: int) -> tuple[float, float]:
        """:meth:`iteration_s` of a scheduled decode-only iteration, memoised on all it depends on: the batch size
        and the mean context in whole KV pages that :meth:`decode_attention_s` reads (the engine's hot path)."""
        n = max(1, decodes // self.ep)
        total = max(n, (decode_context + decodes) // self.ep)
        key = ("step", decodes, -(-max(1, total // n) // DECODE_PAGE_TOKENS))
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = self.iteration_s((), decodes, decode_context, decodes, True)
        return value

    def _graphed(self) -> IterationModel:
        """This model as a CUDA graph replays it (no host floor per kernel), built once."""
        graphed = self._cache.get("graphed")
        if graphed is None:
            graphed = self._cache["graphed"] = replace(self, overhead=False, _cache={})
        return graphed

    def _gpu_s(
        self, prefill: Sequence[tuple[int, int]], decodes: int, decode_context: int, rows: int, dense_tokens: int
    ) -> float:
        """GPU seconds of one iteration whose token-parallel work runs over ``dense_tokens`` (padding included)."""
        t = self.dense_layer_s(-(-dense_tokens // self.ep)) * self.model.num_layers
        t += self._attention_s(prefill, decodes, decode_context)
        if rows:
            t += self.head_s(-(-rows // self.ep))
        return t

    def _attention_s(self, prefill: Sequence[tuple[int, int]], decodes: int, decode_context: int) -> float:
        """Attention seconds of one iteration over all layers (prefill chunks and one decode kernel per layer)."""
        layers = self.model.num_layers
        ep = self.ep  # the attention groups of an EP replica each take 1/ep of the batch
        t = 0.0
        if prefill:
            t += layers * sum(self.prefill_attention_s(c, ctx + c) for c, ctx in prefill) / ep
        if decodes:
            n = max(1, decodes // ep)
            t += layers * self.decode_attention_s(max(n, (decode_context + decodes) // ep), n)
        return t

    def _host_s(self, tokens: int) -> float:
        """Eager host time to issue an iteration's kernels (0 for CUDA graphs or fused engines)."""
        st = self.stack
        if st.launch == "cuda_graphs" or st.host_s_per_kernel == 0.0:
            return 0.0
        return self._memo(("host", tokens), lambda: st.host_s_per_kernel * self.kernels_per_iteration(tokens))

    def scheduler_s(self, seqs: int, scheduled: bool = True) -> float:
        """The engine's CPU time per iteration: the stack's per-iteration step (the GPU profile's iteration
        overhead when the stack sets none; only on steps that schedule, so a multi-step block pays it once) and
        its per-sequence work (input and output processing of every running sequence, every step)."""
        st = self.stack
        base = (
            self.profile.iteration_overhead_s if st.scheduler_s_per_iteration is None else st.scheduler_s_per_iteration
        )
        return (base if scheduled else 0.0) + st.scheduler_s_per_seq * seqs

    def _work_constants(self) -> tuple[float, float, float, float, float, float]:
        """Per-model constants of :meth:`work_totals` (computed once: the engine calls it every iteration)."""
        m = self.model
        qk, v = m._attention_core_dims()
        wbytes = bytes_per_element(self.weight_dtype)
        expert = 0.0
        if m.moe is not None:
            expert = m._mlp_matmul_params(m.moe.expert_ffn_hidden_size) * m.num_moe_layers * wbytes
        return (
            float(m._active_matmul_params()),
            2.0 * m.num_layers * (qk + v),
            float(m.total_params * wbytes),
            expert,
            m.kv_cache_bytes_per_token(self.kv_dtype),
            self.profile.peak_flops(self.compute_dtype()),
        )

    def decode_work_totals(self, decodes: int, decode_context: int) -> tuple[float, float]:
        """:meth:`work_totals` of a decode-only iteration, the same float operations with the per-batch terms kept
        (the engine's hot path: one call per decode step)."""
        terms = self._cache.get(("decode_work", decodes))
        if terms is None:
            m = self.model
            matmul, attn_width, weights, expert, kv_token, peak = self._memo(("work",), self._work_constants)
            if m.moe is not None:
                weights -= expert * m.moe.num_experts * (1.0 - min(1.0, decodes * m.moe.top_k / m.moe.num_experts))
            act = 4.0 * decodes * m.hidden_size * m.num_layers * 2.0
            gpus, bandwidth = self.tp * self.pp * self.ep, self.profile.bandwidth_bytes_s
            terms = (2.0 * matmul * decodes, attn_width, peak, gpus, weights, kv_token, act, bandwidth)
            self._cache[("decode_work", decodes)] = terms
        dense, attn_width, peak, gpus, weights, kv_token, act, bandwidth = terms
        flops = dense + attn_width * decode_context
        return flops / peak / gpus, (weights + kv_token * decode_context + act) / bandwidth / gpus

    def work_totals(self, prefill: Sequence[tuple[int, int]], decodes: int, decode_context: int) -> tuple[float, float]:
        """Work of one iteration on each GPU of the replica, for the energy model: (math as seconds at
        the dtype's full peak, HBM traffic as seconds at full bandwidth). Weights are read once per
        iteration (routed experts only as far as the tokens reach them), each decode streams its KV
        cache and each prefill chunk writes its KV and reads its context."""
        m = self.model
        gpus = self.tp * self.pp * self.ep
        tokens = sum(c for c, _ in prefill) + decodes
        if tokens == 0:
            return 0.0, 0.0
        matmul, attn_width, weights, expert, kv_token, peak = self._memo(("work",), self._work_constants)
        attn_flops = attn_width * (sum(c * (ctx + c / 2.0) for c, ctx in prefill) + decode_context)
        flops = 2.0 * matmul * tokens + attn_flops
        if m.moe is not None:
            weights -= expert * m.moe.num_experts * (1.0 - min(1.0, tokens * m.moe.top_k / m.moe.num_experts))
        kv = kv_token * (decode_context + sum(ctx + 2 * c for c, ctx in prefill))
        act = 4.0 * tokens * m.hidden_size * m.num_layers * 2.0  # norms, residuals, activations (16-bit)
        return flops / peak / gpus, (weights + kv + act) / self.profile.bandwidth_bytes_s / gpus


def traced_inference_kernels(stack: StackSpec, model: ModelSpec) -> list[Any]:
    """A ``stack: {traced: FILE}``'s per-token forward kernels, checked against the served model."""
    from simulator.trace import inference_kernels, load_stack_trace

    return inference_kernels(load_stack_trace(stack.traced, model.num_layers, model.name))


def iteration_model(
    model: ModelSpec | str,
    gpu: str,
    tp: int = 1,
    pp: int = 1,
    *,
    profile: Profile | str | None = None,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
    node: str | None = None,
    launch_overhead: bool = True,
    ep: int = 1,
    routing: Any = None,
    algorithm: CommAlgorithm = DEFAULT_ALGORITHM,
    stack: StackSpec | str = DEFAULT_SERVING_STACK,
) -> IterationModel:
    """Build the per-replica iteration cost model (the engine builds one per replica type).

    ``algorithm`` picks the TP all-reduce's collective algorithm (:class:`CommAlgorithm`; build it
    with ``CommAlgorithm.of(name, cluster)`` so the nodes are checked to run it).
    """
    spec = model if isinstance(model, ModelSpec) else get_model(model)
    gpu_id = get_gpu(gpu).id
    if get_stack(stack).traced and tp * pp * ep > 1:
        raise ClusterSimError("stack.traced: a trace is one device's kernels; serve it with tp = pp = ep = 1")
    if spec.num_attention_heads % tp:
        raise ClusterSimError(f"tp={tp} does not divide num_attention_heads={spec.num_attention_heads}")
    cluster = ClusterSpec(gpu=gpu_id, num_gpus=tp * pp * ep, node=node).resolve()
    if weight_dtype == "bf16" and not cluster.gpu.supports("bf16"):
        raise ClusterSimError(f"{gpu_id} has no bf16 units; set weight_dtype (and kv.dtype) to fp16")
    return IterationModel(
        model=spec,
        profile=load_profile(profile, gpu=gpu_id),
        tp=tp,
        pp=pp,
        weight_dtype=weight_dtype,
        kv_dtype=kv_dtype,
        tp_group=cluster.comm_group(tp),
        overhead=launch_overhead,
        act_dtype="bf16" if cluster.gpu.supports("bf16") else "fp16",
        ep=ep,
        ep_group=cluster.comm_group(ep, stride=tp) if ep > 1 else None,
        routing=routing,
        algorithm=algorithm,
        stack=get_stack(stack),
    )


def predict_iteration_time(
    model: ModelSpec | str,
    gpu: str,
    tp: int = 1,
    prefill_tokens: Sequence[int] | Sequence[tuple[int, int]] = (),
    decode_contexts: Sequence[int] = (),
    launch_overhead: bool = True,
    profile: Profile | str | None = None,
    *,
    pp: int = 1,
    weight_dtype: str = "bf16",
    kv_dtype: str = "bf16",
    stack: StackSpec | str = DEFAULT_SERVING_STACK,
) -> float:
    """Seconds for one engine iteration with these prefill chunks and decode contexts.

    ``prefill_tokens`` holds chunk lengths (a fresh prompt each) or (chunk, cached-context) pairs;
    ``decode_contexts`` the KV length of each decoding sequence. ``launch_overhead=False`` leaves
    out the host and launch terms, as when an engine replays CUDA graphs (each kernel still costs at
    least :data:`~simulator.core.costs.CUDA_GRAPH_KERNEL_FLOOR_S`).
    """
    chunks, decodes = check_iteration_args(
        gpu, tp, pp, prefill_tokens, decode_contexts, weight_dtype=weight_dtype, kv_dtype=kv_dtype
    )
    im = iteration_model(
        model,
        gpu,
        tp,
        pp,
        profile=profile,
        weight_dtype=weight_dtype,
        kv_dtype=kv_dtype,
        launch_overhead=launch_overhead,
        stack=stack,
    )
    return im.time(chunks, decodes)
