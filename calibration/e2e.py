"""End-to-end steps of a small Llama-style model in plain PyTorch: what the stack costs, not only kernels.

The model is written as people write it in eager PyTorch (the ``pytorch-eager`` stack preset describes the
same code): HF-style modules with separate q/k/v and gate/up ``nn.Linear`` layers and fp32 parameters,
``F.rms_norm``, HF ``rotate_half`` rotary embeddings with fp32 cos/sin, ``F.scaled_dot_product_attention``,
SwiGLU as ``silu(gate) * up``, ``logits.float()`` + ``F.cross_entropy``, ``clip_grad_norm_`` and AdamW
(fused on CUDA, foreach on the CPU). We time, with :class:`calibration.measure.Timer`:

* ``train_step``: forward + backward + optimizer under ``torch.autocast(bfloat16)``;
* ``prefill``: a no-grad forward of the prompts in bf16 weights, logits of the last token only;
* ``decode_eager``: one new token per sequence against a static KV cache of ``decode_context`` tokens;
* ``decode_graph`` (CUDA only): the same step captured once in a CUDA graph and replayed.

Each record carries the kernels one call launches (profiler kernel events on CUDA, non-view ATen ops on the
CPU). Tiny shapes (:func:`host_probe_shapes`) are launch-bound: their step time over their kernel count is
the eager host cost per kernel, which :func:`calibration.fit.fit_host` fits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from calibration.validate import Shape

__all__ = ["LlamaModel", "count_kernels", "host_probe_shapes", "measure_host_probe", "measure_steps"]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaBlock(nn.Module):
    """One pre-norm Llama layer as HF writes it: RMSNorm, q/k/v, rotary, SDPA, o; RMSNorm, SwiGLU."""

    def __init__(self, s: Shape) -> None:
        super().__init__()
        self.s, hd = s, s.head_size
        self.n1, self.n2 = nn.Parameter(torch.ones(s.hidden)), nn.Parameter(torch.ones(s.hidden))
        self.q = nn.Linear(s.hidden, s.heads * hd, bias=False)
        self.k = nn.Linear(s.hidden, s.kv_heads * hd, bias=False)
        self.v = nn.Linear(s.hidden, s.kv_heads * hd, bias=False)
        self.o = nn.Linear(s.heads * hd, s.hidden, bias=False)
        self.gate = nn.Linear(s.hidden, s.ffn, bias=False)
        self.up = nn.Linear(s.hidden, s.ffn, bias=False)
        self.down = nn.Linear(s.ffn, s.hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: Any = None) -> torch.Tensor:
        """The layer on ``x`` (batch, tokens, hidden); ``cache`` = (K, V, slot) writes the new K/V at ``slot``."""
        s, (b, t, _) = self.s, x.shape
        hd = s.head_size
        h = F.rms_norm(x, (s.hidden,), self.n1, 1e-5)
        q = self.q(h).view(b, t, s.heads, hd).transpose(1, 2)
        k = self.k(h).view(b, t, s.kv_heads, hd).transpose(1, 2)
        v = self.v(h).view(b, t, s.kv_heads, hd).transpose(1, 2)
        # fp32 cos/sin promote q and k to fp32; cast back as SDPA's autocast does (explicit: inference has none)
        q, k = (q * cos + _rotate_half(q) * sin).to(v.dtype), (k * cos + _rotate_half(k) * sin).to(v.dtype)
        if cache is not None:
            kc, vc, slot = cache
            kc.index_copy_(2, slot, k)
            vc.index_copy_(2, slot, v)
            k, v = kc, vc
        a = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None, enable_gqa=True)
        x = x + self.o(a.transpose(1, 2).contiguous().view(b, t, -1))
        h = F.rms_norm(x, (s.hidden,), self.n2, 1e-5)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class LlamaModel(nn.Module):
    """Embedding, the blocks, final norm and LM head, with fp32 rotary tables for ``max_len`` positions."""

    def __init__(self, s: Shape, max_len: int) -> None:
        super().__init__()
        self.s = s
        self.emb = nn.Embedding(s.vocab, s.hidden)
        self.blocks = nn.ModuleList(LlamaBlock(s) for _ in range(s.layers))
        self.norm = nn.Parameter(torch.ones(s.hidden))
        self.head = nn.Linear(s.hidden, s.vocab, bias=False)
        inv = 1.0 / (10000.0 ** (torch.arange(0, s.head_size, 2, dtype=torch.float32) / s.head_size))
        ang = torch.outer(torch.arange(max_len, dtype=torch.float32), inv)
        ang = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, ids: torch.Tensor, caches: Any = None, pos: Any = None, last_only: bool = False) -> torch.Tensor:
        """Logits for ``ids``; with ``caches`` (per-layer K, V) and ``pos`` (a 1-element index) one decode step."""
        x = self.emb(ids)
        if pos is None:
            cos, sin = self.cos[: ids.shape[1]], self.sin[: ids.shape[1]]
        else:
            cos, sin = self.cos.index_select(0, pos), self.sin.index_select(0, pos)
        for i, blk in enumerate(self.blocks):
            x = blk(x, cos, sin, None if caches is None else (*caches[i], pos))
        if last_only:
            x = x[:, -1:]
        return self.head(F.rms_norm(x, (self.s.hidden,), self.norm, 1e-5))


# ---- counting kernels --------------------------------------------------------------------------------


class _OpCounter(TorchDispatchMode):
    """Counts the ATen ops that do work (views launch nothing), the CPU's analogue of kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if not getattr(func, "is_view", False):
            self.n += 1
        return func(*args, **(kwargs or {}))


def count_kernels(fn: Callable[[int], Any], device: str) -> int:
    """Kernels one call of ``fn`` launches: CUDA kernel events of the profiler on a GPU, ATen ops on the CPU."""
    if device.startswith("cuda"):
        with contextlib.suppress(Exception):  # the profiler is optional: fall back to counting ATen ops
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn(0)
                torch.cuda.synchronize(device)
            n = sum(1 for e in prof.events() if str(getattr(e, "device_type", "")).endswith("CUDA"))
            if n > 0:
                return n
    counter = _OpCounter()
    with counter:
        fn(0)
    return counter.n


# ---- the timed steps --------------------------------------------------------------------------------


def _train_step(model: LlamaModel, s: Shape, device: str) -> Callable[[int], Any]:
    cuda = device.startswith("cuda")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if cuda else {"foreach": True}))
    ids = torch.randint(0, s.vocab, (s.batch, s.seq), device=device)
    targets = torch.randint(0, s.vocab, (s.batch, s.seq), device=device)
    kind = "cuda" if cuda else "cpu"

    def step(_: int) -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(kind, dtype=torch.bfloat16):
            logits = model(ids)
        F.cross_entropy(logits.float().view(-1, s.vocab), targets.view(-1)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()

    return step


def _decode_step(model: LlamaModel, s: Shape, device: str) -> Callable[[int], Any]:
    hd, dt = s.head_size, torch.bfloat16
    shape = (s.decode_batch, s.kv_heads, s.decode_context, hd)
    caches = [(torch.randn(shape, device=device, dtype=dt), torch.randn(shape, device=device, dtype=dt))]
    caches += [(torch.randn_like(caches[0][0]), torch.randn_like(caches[0][1])) for _ in range(s.layers - 1)]
    pos = torch.tensor([s.decode_context - 1], device=device)
    ids = torch.randint(0, s.vocab, (s.decode_batch, 1), device=device)

    def step(_: int) -> torch.Tensor:
        with torch.no_grad():
            return model(ids, caches, pos)

    return step


def _graphed(step: Callable[[int], Any], device: str) -> Callable[[int], Any]:
    """``step`` captured in a CUDA graph (after a warm-up on a side stream), replayed per call."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for i in range(3):
            step(i)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(0)
    return lambda _: graph.replay()


def _record(kind: str, timing: Any, kernels: int) -> dict[str, Any]:
    return {"kind": kind, **timing.fields(), "kernels": kernels}


def measure_steps(s: Shape, device: str, timer: Any) -> list[dict[str, Any]]:
    """Time a training step, a prefill and a decode step (eager, and CUDA-graphed on a GPU) of ``s``."""
    torch.manual_seed(0)
    model = LlamaModel(s, max(s.seq, s.decode_context)).to(device)
    train = _train_step(model, s, device)
    out = [_record("train_step", timer(train), count_kernels(train, device))]
    model = model.to(torch.bfloat16).eval()  # inference runs in bf16 weights, as serving engines do
    ids = torch.randint(0, s.vocab, (s.batch, s.seq), device=device)

    def prefill(_: int) -> torch.Tensor:
        with torch.no_grad():
            return model(ids, last_only=True)

    out.append(_record("prefill", timer(prefill), count_kernels(prefill, device)))
    decode = _decode_step(model, s, device)
    n_decode = count_kernels(decode, device)
    out.append(_record("decode_eager", timer(decode), n_decode))
    if device.startswith("cuda"):
        out.append(_record("decode_graph", timer(_graphed(decode, device)), n_decode))
    return out


def host_probe_shapes(device: str) -> list[Shape]:
    """Tiny models (1, 2, 4 layers of width 64; 1 and 2 on the CPU) whose training steps are launch-bound."""
    return [Shape.tiny().with_layers(n) for n in ((1, 2, 4) if device.startswith("cuda") else (1, 2))]


def measure_host_probe(s: Shape, device: str, timer: Any) -> dict[str, Any]:
    """Time one training step of the tiny model ``s`` and count its kernels."""
    torch.manual_seed(0)
    model = LlamaModel(s, s.seq).to(device)
    train = _train_step(model, s, device)
    return _record("train_step", timer(train), count_kernels(train, device))
