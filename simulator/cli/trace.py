"""The ``trace`` command: record a PyTorch model's kernels on the meta device and summarise them.

``clustersim trace MODULE:FACTORY`` imports the user's own module and runs its factory (user code, by
design: this is only reachable from the command line, never from a config file or a URL).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from hwmodels.errors import ClusterSimError
from simulator.cli.textfmt import fmt, table

__all__ = ["cmd_trace", "register"]

_SUMMARY_COLUMNS = [
    ("region", "region"),
    ("phase", "pass"),
    ("kernels", "kernels"),
    ("gemm", "gemm"),
    ("attn", "attn"),
    ("mem", "mem"),
    ("casts", "casts"),
    ("gflop", "GFLOP"),
    ("mb", "MB moved"),
]


def _fused(text: str) -> tuple[str, ...]:
    """``--fused`` as a tuple: a comma-separated list, or ``none``."""
    from simulator.trace import FUSABLE

    names = tuple(n.strip() for n in text.split(",") if n.strip() and n.strip() != "none")
    unknown = [n for n in names if n not in FUSABLE]
    if unknown:
        raise ClusterSimError(f"--fused: unknown {', '.join(unknown)}; choose from {', '.join(FUSABLE)} or none")
    return names


def cmd_trace(args: argparse.Namespace) -> int:
    """``clustersim trace MODULE:FACTORY``: trace one training step, print a summary, write the trace file."""
    from simulator.trace import resolve_factory, trace_model
    from simulator.trace.summary import summary_rows

    factory = resolve_factory(args.model)
    autocast = None if args.autocast == "none" else args.autocast
    print(f"tracing {args.model} on the meta device: batch {args.batch} x seq {args.seq}, "
          f"autocast {args.autocast} ...", file=sys.stderr)  # fmt: skip
    trace = trace_model(
        factory,
        batch=args.batch,
        seq=args.seq,
        autocast=autocast,
        fused=_fused(args.fused),
        optimizer=not args.no_optimizer,
        name=args.model,
    )
    print(_header(trace))
    print(table(summary_rows(trace), _SUMMARY_COLUMNS))
    if not trace.identical_layers:
        print(f"\nnote: layers differ: {trace.layer_note}")
    if args.out:
        path = trace.save(args.out)
        print(f"wrote {path} ({len(trace.kernels())} kernel records)", file=sys.stderr)
    return 0


def _header(trace: Any) -> str:
    p = trace.params
    return (
        f"{trace.factory}: {trace.num_layers} x {trace.layer_class or 'no layer list'}, "
        f"{fmt(p.total)} parameters ({fmt(p.embedding)} in embeddings, {p.tensors} tensors), "
        f"batch {trace.batch} x seq {trace.seq}, autocast {trace.autocast or 'none'}, "
        f"fused: {', '.join(trace.fused) or 'none'}, optimizer: {trace.optimizer or 'none'}\n"
    )


def register(sub: Any) -> None:
    """Add ``trace`` to the CLI's subcommands."""
    p = sub.add_parser(
        "trace",
        help="record a PyTorch model's kernels (forward, backward, optimizer) on the meta device",
        description="Build MODULE:FACTORY (your own code, imported and run) or hf:CONFIG.json on the meta "
        "device, trace one training step under CUDA-autocast emulation, print per-region totals and write the "
        "trace file (docs/trace-format.md). No weights and no GPU are needed.",
    )
    p.add_argument("model", help="MODULE:FACTORY (a zero-argument function or class) or hf:CONFIG.json")
    p.add_argument("--batch", type=int, default=1, help="sequences per micro-batch (default 1)")
    p.add_argument("--seq", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--autocast", choices=["bf16", "fp16", "none"], default="bf16", help="CUDA autocast dtype")
    p.add_argument(
        "--fused",
        default="scaled_dot_product_attention,rms_norm,layer_norm",
        help="calls captured as one kernel: comma-separated from scaled_dot_product_attention, rms_norm, "
        "layer_norm, cross_entropy, or 'none' (default: the first three, as PyTorch >= 2.8 on CUDA runs them)",
    )
    p.add_argument("--no-optimizer", action="store_true", help="leave out the AdamW (foreach) step")
    p.add_argument("--out", default="trace.json", help="trace file to write (default trace.json; '' to skip)")
    p.set_defaults(func=cmd_trace)
