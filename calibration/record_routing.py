"""Record an MoE router's per-layer expert loads into a routing trace the simulator can replay.

Why: synthetic routing (uniform, Zipf) is a guess; a trace recorded from a real model's router on
real tokens is what ``TraceRouting`` replays, so the simulated imbalance is the measured one.
The router here is the standard PyTorch top-k gate (softmax or sigmoid scoring, optional
DeepSeek-V3 group limit where a group's score is the sum of its two best expert scores). Feed it
the hidden states entering each MoE layer (forward hooks on the gate) and the gate weights.

The file format is ``docs/routing-trace-format.md``; ``python -m calibration.record_routing --demo
OUT.json`` writes a small trace from random tensors to show it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from hwmodels.errors import ClusterSimError
from simulator.moe.routing import TRACE_FORMAT, load_trace, write_trace

Scoring = Literal["softmax", "sigmoid"]


def route_topk(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    top_k: int,
    scoring: Scoring = "softmax",
    groups: int = 1,
    topk_groups: int = 1,
    correction_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Expert ids [tokens, top_k] a top-k gate picks for ``hidden`` [tokens, hidden] (``weight`` [experts, hidden]).

    With ``groups > 1`` each token first keeps its ``topk_groups`` best groups (group score = sum of the
    top-2 expert scores, DeepSeek-V3) and picks experts only there; ``correction_bias`` [experts] is
    V3's load-balancing bias, added for the choice only.
    """
    logits = hidden.reshape(-1, hidden.shape[-1]).float() @ weight.float().T
    scores = logits.softmax(dim=-1) if scoring == "softmax" else logits.sigmoid()
    if correction_bias is not None:
        scores = scores + correction_bias.float()
    tokens, experts = scores.shape
    if groups > 1:
        grouped = scores.view(tokens, groups, experts // groups)
        group_score = grouped.topk(min(2, experts // groups), dim=-1).values.sum(dim=-1)
        keep = torch.zeros_like(group_score, dtype=torch.bool)
        keep.scatter_(1, group_score.topk(topk_groups, dim=-1).indices, True)
        scores = scores.masked_fill(~keep.repeat_interleave(experts // groups, dim=1), float("-inf"))
    return scores.topk(top_k, dim=-1).indices


def _check(
    layers: Sequence[torch.Tensor], weights: Sequence[torch.Tensor], top_k: int, groups: int, topk_groups: int
) -> int:
    """One-line errors for shapes and group settings that the gate cannot run with."""
    if len(layers) != len(weights) or not layers:
        raise ClusterSimError(f"got {len(layers)} hidden-state layers and {len(weights)} router weights; pass one each")
    experts = int(weights[0].shape[0])
    for i, (h, w) in enumerate(zip(layers, weights, strict=True)):
        if w.ndim != 2 or w.shape[0] != experts or h.shape[-1] != w.shape[1]:
            raise ClusterSimError(
                f"layer {i}: router weight {tuple(w.shape)} must be [experts={experts}, hidden={h.shape[-1]}]"
            )
    if not 1 <= top_k <= experts:
        raise ClusterSimError(f"top_k={top_k} must be between 1 and num_experts={experts}")
    if groups < 1 or experts % groups or not 1 <= topk_groups <= groups:
        raise ClusterSimError(f"groups={groups} must divide num_experts={experts} and 1 <= topk_groups <= groups")
    if top_k > topk_groups * (experts // groups):
        raise ClusterSimError(f"top_k={top_k} exceeds topk_groups*experts_per_group; raise topk_groups")
    return experts


def record_routing(
    hidden_states: torch.Tensor | Sequence[torch.Tensor],
    router_weights: Sequence[torch.Tensor],
    top_k: int,
    scoring: Scoring = "softmax",
    groups: int = 1,
    topk_groups: int = 1,
    *,
    out: str | Path,
    step: int = 0,
    append: bool = False,
    correction_bias: Sequence[torch.Tensor] | None = None,
    assignments: bool = False,
    source: str = "",
) -> dict[str, Any]:
    """Route one step's tokens through each layer's gate and write (or append) the trace to ``out``.

    ``hidden_states`` is [layers, tokens, hidden] or a list of [..., hidden] per layer. ``append``
    adds this step to an existing trace (a step recorded again replaces those layers). With
    ``assignments`` the per-token expert ids are stored instead of counts (needed for exact
    all-to-all dedup replay, larger files). The file is written atomically; returns the document.
    """
    layers = list(hidden_states.unbind(0)) if isinstance(hidden_states, torch.Tensor) else list(hidden_states)
    experts = _check(layers, router_weights, top_k, groups, topk_groups)
    if step < 0:
        raise ClusterSimError(f"step={step} must be >= 0")
    entries = []
    with torch.no_grad():
        for i, (h, w) in enumerate(zip(layers, router_weights, strict=True)):
            bias = correction_bias[i] if correction_bias is not None else None
            ids = route_topk(h, w, top_k, scoring, groups, topk_groups, bias).cpu()
            if assignments:
                entries.append({"layer": i, "assignments": ids.sort(dim=1).values.tolist()})
            else:
                entries.append({"layer": i, "expert_counts": torch.bincount(ids.flatten(), minlength=experts).tolist()})
    out = Path(out)
    doc = _existing(out, experts, top_k) if append and out.exists() else None
    if doc is None:
        doc = {"format": TRACE_FORMAT, "num_experts": experts, "top_k": top_k, "layers": 0, "steps": [], "source": ""}
    _merge_step(doc, step, entries)
    doc["layers"] = max(doc["layers"], len(layers))
    doc["source"] = source or doc.get("source") or f"calibration.record_routing ({scoring} top-{top_k} gate)"
    write_trace(doc, out)
    return doc


def _existing(path: Path, experts: int, top_k: int) -> dict[str, Any]:
    """The trace already at ``path`` as a plain dict, refusing one recorded for a different router."""
    trace = load_trace(path)
    if trace.num_experts != experts or trace.top_k != top_k:
        raise ClusterSimError(
            f"{path} holds num_experts={trace.num_experts}, top_k={trace.top_k}; "
            f"cannot append num_experts={experts}, top_k={top_k} (write a new file)"
        )
    return trace.model_dump(exclude_none=True)


def _merge_step(doc: dict[str, Any], step: int, entries: list[dict[str, Any]]) -> None:
    """Put ``entries`` under ``step``, replacing layers recorded before at that step; keep steps sorted."""
    for st in doc["steps"]:
        if st["step"] == step:
            fresh = {e["layer"] for e in entries}
            st["layers"] = sorted([e for e in st["layers"] if e["layer"] not in fresh] + entries, key=_layer_of)
            break
    else:
        doc["steps"].append({"step": step, "layers": entries})
    doc["steps"].sort(key=lambda st: st["step"])


def _layer_of(entry: dict[str, Any]) -> int:
    return int(entry["layer"])


def demo(
    out: str | Path,
    *,
    experts: int = 16,
    top_k: int = 2,
    layers: int = 4,
    tokens: int = 512,
    hidden: int = 64,
    steps: int = 2,
    groups: int = 1,
    topk_groups: int = 1,
    scoring: Scoring = "softmax",
    seed: int = 0,
) -> dict[str, Any]:
    """Write a trace for a toy model (random router weights and hidden states) so users see the format."""
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(experts, hidden, generator=gen) / hidden**0.5 for _ in range(layers)]
    doc: dict[str, Any] = {}
    for s in range(steps):
        hs = torch.randn(layers, tokens, hidden, generator=gen)
        doc = record_routing(
            hs, weights, top_k, scoring, groups, topk_groups, out=out, step=s, append=s > 0, source="random toy router"
        )
    return doc


def main(argv: list[str] | None = None) -> int:
    """``python -m calibration.record_routing --demo OUT.json``: write a toy trace and summarise it."""
    ap = argparse.ArgumentParser(prog="python -m calibration.record_routing", description=__doc__.split("\n")[0])
    ap.add_argument("--demo", metavar="OUT.json", required=True, help="write a trace from a random toy router")
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--groups", type=int, default=1)
    ap.add_argument("--topk-groups", type=int, default=1)
    ap.add_argument("--scoring", choices=("softmax", "sigmoid"), default="softmax")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        doc = demo(
            args.demo,
            experts=args.experts,
            top_k=args.top_k,
            layers=args.layers,
            tokens=args.tokens,
            hidden=args.hidden,
            steps=args.steps,
            groups=args.groups,
            topk_groups=args.topk_groups,
            scoring=args.scoring,
            seed=args.seed,
        )
    except ClusterSimError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    first = doc["steps"][0]["layers"][0]["expert_counts"]
    print(f"wrote {args.demo}: {len(doc['steps'])} steps x {doc['layers']} layers, {doc['num_experts']} experts")
    print(f"step 0 layer 0 expert_counts: {first} (max/mean {max(first) / (sum(first) / len(first)):.2f})")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
