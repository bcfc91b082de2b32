"""Per-region totals of a trace: kernels by kind, GFLOP and MB moved (what ``clustersim trace`` prints)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from simulator.trace.schema import Kernel, Trace


def _row(label: str, phase: str, kernels: Iterable[Kernel]) -> dict[str, Any]:
    """Totals of ``kernels``: launches (a foreach call counts its launches), by kind, GFLOP, MB."""
    ks = list(kernels)
    launches = {kind: sum(k.count if k.kind == "mem" else 1 for k in ks if k.kind == kind) for kind in
                ("gemm", "attn", "mem", "comm")}  # fmt: skip
    return {
        "region": label,
        "phase": phase,
        "kernels": sum(launches.values()),
        "gemm": launches["gemm"],
        "attn": launches["attn"],
        "mem": launches["mem"],
        "casts": sum(1 for k in ks if k.op == "aten._to_copy.default"),
        "gflop": sum(k.flops for k in ks) / 1e9,
        "mb": sum(k.bytes for k in ks) / 1e6,
    }


def summary_rows(trace: Trace) -> list[dict[str, Any]]:
    """One row per region and pass (one layer, then all layers), then the optimizer and the whole step."""
    rows = []
    layer0 = trace.layers[0] if trace.layers else []
    all_layers = [k for layer in trace.layers for k in layer]
    for label, kernels in (
        ("pre", trace.pre),
        ("layer 0", layer0),
        (f"layers x{trace.num_layers}", all_layers),
        ("post", trace.post),
    ):
        for phase in ("fwd", "bwd"):
            rows.append(_row(label, phase, (k for k in kernels if k.phase == phase)))
    if trace.opt:
        rows.append(_row("optimizer", "opt", trace.opt))
    everything = [*trace.pre, *all_layers, *trace.post, *trace.opt]
    rows.append(_row("step", "all", everything))
    return rows
