"""Validate a profile on a small real transformer: time it in PyTorch, predict it with clustersim.

The model is Llama-shaped (RMSNorm, GQA attention, SwiGLU MLP) with random weights; we time a
forward pass, a decode step against a KV cache and a training step (forward, backward, AdamW), and
compare with what the simulator's cost model predicts for the same shapes on the profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from calibration.measure import Timer, _sdpa
from hwmodels.profile import Profile


@dataclass(frozen=True)
class Shape:
    """Sizes of the validation transformer and of the batches it is timed on (tokens)."""

    layers: int = 4
    hidden: int = 2048
    heads: int = 16
    kv_heads: int = 4
    ffn: int = 5632
    vocab: int = 32000
    batch: int = 4
    seq: int = 1024
    decode_batch: int = 16
    decode_context: int = 1024

    @classmethod
    def tiny(cls) -> Shape:
        """A very small shape that runs in moments on a CPU (tests)."""
        return cls(
            layers=2,
            hidden=64,
            heads=4,
            kv_heads=2,
            ffn=128,
            vocab=256,
            batch=1,
            seq=32,
            decode_batch=2,
            decode_context=32,
        )

    def spec(self) -> dict[str, Any]:
        """The shape as a clustersim model spec, so the simulator predicts the same model."""
        return {
            "name": "validation-transformer",
            "source": "calibration.validate (random weights)",
            "num_layers": self.layers,
            "hidden_size": self.hidden,
            "num_attention_heads": self.heads,
            "num_kv_heads": self.kv_heads,
            "ffn_hidden_size": self.ffn,
            "vocab_size": self.vocab,
            "mlp": "swiglu",
            "norm": "rmsnorm",
        }


class Block(nn.Module):
    """One pre-norm Llama-style layer: RMSNorm, GQA attention, RMSNorm, SwiGLU MLP, with residuals."""

    def __init__(self, s: Shape) -> None:
        super().__init__()
        self.s = s
        hd = s.hidden // s.heads
        self.n1, self.n2 = nn.RMSNorm(s.hidden), nn.RMSNorm(s.hidden)
        self.qkv = nn.Linear(s.hidden, (s.heads + 2 * s.kv_heads) * hd, bias=False)
        self.o = nn.Linear(s.heads * hd, s.hidden, bias=False)
        self.up = nn.Linear(s.hidden, 2 * s.ffn, bias=False)
        self.down = nn.Linear(s.ffn, s.hidden, bias=False)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The layer on ``x`` (batch, tokens, hidden); with ``cache`` (K, V) the new tokens attend to it too."""
        s, (b, t, _) = self.s, x.shape
        hd = s.hidden // s.heads
        q, k, v = self.qkv(self.n1(x)).split([s.heads * hd, s.kv_heads * hd, s.kv_heads * hd], dim=-1)
        q = q.view(b, t, s.heads, hd).transpose(1, 2)
        k = k.view(b, t, s.kv_heads, hd).transpose(1, 2)
        v = v.view(b, t, s.kv_heads, hd).transpose(1, 2)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        a = _sdpa(q, k, v, causal=cache is None).transpose(1, 2).reshape(b, t, -1)
        x = x + self.o(a)
        g, u = self.up(self.n2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(g) * u)


class Transformer(nn.Module):
    """Embedding, the blocks, final norm and LM head: the model that is timed."""

    def __init__(self, s: Shape) -> None:
        super().__init__()
        self.emb = nn.Embedding(s.vocab, s.hidden)
        self.blocks = nn.ModuleList(Block(s) for _ in range(s.layers))
        self.norm = nn.RMSNorm(s.hidden)
        self.head = nn.Linear(s.hidden, s.vocab, bias=False)

    def forward(self, ids: torch.Tensor, caches=None) -> torch.Tensor:
        """Logits for token ``ids`` (batch, tokens), each block using its KV cache when ``caches`` is given."""
        x = self.emb(ids)
        for i, blk in enumerate(self.blocks):
            x = blk(x, None if caches is None else caches[i])
        return self.head(self.norm(x))


def measure(s: Shape, device: str) -> dict[str, float]:
    """Seconds for a forward pass, one decode step and one training step of the validation model."""
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    model = Transformer(s).to(device=device, dtype=dtype)
    timer = Timer(device, min_block_s=0.05, blocks=3)
    ids = torch.randint(0, s.vocab, (s.batch, s.seq), device=device)
    with torch.no_grad():
        fwd, _ = timer(lambda _: model(ids))
        hd = s.hidden // s.heads
        caches = [
            (torch.randn(s.decode_batch, s.kv_heads, s.decode_context, hd, device=device, dtype=dtype),) * 2
            for _ in range(s.layers)
        ]
        step_ids = torch.randint(0, s.vocab, (s.decode_batch, 1), device=device)
        dec, _ = timer(lambda _: model(step_ids, caches))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train(_: int) -> None:
        opt.zero_grad(set_to_none=True)
        logits = model(ids)
        F.cross_entropy(logits.view(-1, s.vocab).float(), ids.view(-1)).backward()
        opt.step()

    trn, _ = timer(train)
    return {"forward_s": fwd, "decode_step_s": dec, "train_step_s": trn}


def predict(s: Shape, profile: Profile) -> dict[str, float]:
    """The simulator's prediction of :func:`measure` on ``profile`` (one GPU, no parallelism)."""
    from simulator.core.config import load_config
    from simulator.core.costs import optimizer_step_time
    from simulator.core.layer_costs import layer_cost_report
    from simulator.serving.iteration import predict_iteration_time
    from simulator.training.simulate import ADAM_BYTES_PER_PARAM

    cfg = load_config(
        {
            "model": s.spec(),
            "cluster": {"gpu": profile.gpu, "num_gpus": 1},
            "training": {"seq_len": s.seq, "global_batch": s.batch, "micro_batch": s.batch, "recompute": "none"},
        }
    )
    report = layer_cost_report(cfg, profile)
    decode = predict_iteration_time(cfg.model, profile.gpu, 1, [], [s.decode_context] * s.decode_batch, profile=profile)
    fwd = report.model_forward_ms / 1e3
    adam = optimizer_step_time(profile, ADAM_BYTES_PER_PARAM * cfg.model.total_params)
    train = fwd + report.model_backward_ms / 1e3 + adam
    return {"forward_s": fwd, "decode_step_s": decode, "train_step_s": train}
