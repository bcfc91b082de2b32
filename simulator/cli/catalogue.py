"""Catalogue commands: ``gpus``, ``models``, ``nodes``, ``costs`` and ``example``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hwmodels.catalogue import list_gpus, list_links, list_nodes
from hwmodels.errors import ClusterSimError
from simulator.cli.common import Handler, add_config_args, add_json_arg, default_config_path, print_json
from simulator.cli.textfmt import fmt, table
from simulator.core.resources import example_path, list_examples

__all__ = ["cmd_costs", "cmd_example", "cmd_gpus", "cmd_models", "cmd_nodes", "register"]

_GPU_COLUMNS = [
    ("id", "GPU"),
    ("bf16_tflops", "bf16 TFLOP/s"),
    ("fp16_tflops", "fp16 TFLOP/s"),
    ("fp8_tflops", "fp8 TFLOP/s"),
    ("fp32_tflops", "fp32 TFLOP/s"),
    ("memory_gb", "memory GiB"),
    ("memory_bandwidth_gbps", "HBM GB/s"),
    ("nvlink_bandwidth_gbps", "NVLink GB/s"),
    ("tdp_w", "TDP W"),
    ("idle_w", "idle W"),
]
_MODEL_COLUMNS = [
    ("name", "model"),
    ("total_b", "params B"),
    ("active_b", "active B"),
    ("active_ne_b", "active B w/o embedding"),
    ("num_layers", "layers"),
    ("hidden_size", "hidden"),
    ("attention_kind", "attention"),
    ("kv_kib", "KV KiB/token (bf16)"),
]
_STACK_COLUMNS = [
    ("name", "stack"),
    ("attention", "attention"),
    ("launch", "launch"),
    ("kernels_fwd", "kernels/layer fwd"),
    ("kernels_bwd", "bwd"),
    ("host_us", "host us/kernel"),
    ("opt_bytes", "optimizer B/param"),
    ("host_ms", "host ms/layer"),
    ("overlap_grad_reduce", "DP overlap"),
    ("description", "what it is"),
]
_NODE_COLUMNS = [
    ("id", "node"),
    ("gpu", "GPU"),
    ("gpus_per_node", "GPUs"),
    ("intra_link", "intra-node"),
    ("nics_per_node", "NICs"),
    ("nic_link", "NIC"),
    ("host_power_w", "host W"),
]
_LINK_COLUMNS = [
    ("id", "link"),
    ("kind", "kind"),
    ("bandwidth_gbps", "GB/s per dir"),
    ("efficiency", "NCCL efficiency"),
    ("latency_us", "latency us"),
]
_OP_COLUMNS = [
    ("name", "op"),
    ("shape", "shape"),
    ("gflop", "GFLOP"),
    ("mbytes", "MB"),
    ("forward_ms", "fwd ms"),
    ("backward_ms", "bwd ms"),
    ("tflops", "TFLOP/s"),
    ("bound", "bound"),
]


# ---- listings --------------------------------------------------------------------------------------


def cmd_gpus(args: argparse.Namespace) -> int:
    """``clustersim gpus``: the GPU catalogue (dense peaks, memory, bandwidth, power)."""
    rows = [g.to_row() for g in list_gpus()]
    if args.json:
        print_json(rows)
        return 0
    print(table(rows, _GPU_COLUMNS))
    print(
        "\nDense peaks (no sparsity). Memory is the marketed capacity, which vendors give in GiB (2^30 bytes; an "
        "'80 GB' card holds 85.9 GB). Sources per figure: hwmodels/data/gpus.yaml; `--json` for all fields."
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    """``clustersim models``: the model presets with total and active parameters."""
    from simulator.models import list_models

    rows = [m.to_summary() for m in list_models()]
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        r["total_b"] = r["total_params"] / 1e9
        r["active_b"] = r["active_params"] / 1e9
        r["active_ne_b"] = r["active_params_non_embedding"] / 1e9
        r["kv_kib"] = r["kv_cache_bytes_per_token"] / 1024
    print(table(rows, _MODEL_COLUMNS))
    return 0


def cmd_stacks(args: argparse.Namespace) -> int:
    """``clustersim stacks``: the software-stack presets and the training knobs each sets."""
    from simulator.stacks import list_stacks

    stacks = list_stacks()
    rows = [s.model_dump() for s in stacks]
    if args.json:
        print_json(rows)
        return 0
    for r, s in zip(rows, stacks, strict=True):
        r["host_ms"] = r["host_s_per_layer"] * 1e3
        r["host_us"] = r["host_s_per_kernel"] * 1e6
        r["opt_bytes"] = s.optimizer.bytes_per_param
        r["kernels_fwd"], r["kernels_bwd"] = _elementwise_launches(s)
    print(table(rows, _STACK_COLUMNS))
    print("(elementwise kernels a dense SwiGLU/RoPE layer launches besides its GEMMs and attention)")
    return 0


def _elementwise_launches(stack: Any) -> tuple[int, int]:
    """Forward and backward elementwise launches of one dense gated rotary layer under ``stack``."""
    fwd = bwd = 0
    slots = ("weights", "attn_norm", "attn_in", "rope", "attn_out", "attn_residual", "mlp_norm", "mlp_in", "mlp_act",
             "mlp_residual")  # fmt: skip
    for slot in slots:
        for g in stack.kernels.get(slot, []):
            if g.when == "plain":
                continue
            n = g.launches * g.split
            fwd += len(g.fwd) * n
            bwd += (len(g.fwd) if g.bwd is None else len(g.bwd)) * n
    return fwd, bwd


def cmd_nodes(args: argparse.Namespace) -> int:
    """``clustersim nodes``: the node presets, then the network links."""
    rows = [n.model_dump() for n in list_nodes()]
    if args.json:
        print_json(rows)
        return 0
    print(table(rows, _NODE_COLUMNS))
    print()
    print(table([lk.model_dump() for lk in list_links()], _LINK_COLUMNS))
    return 0


# ---- costs -----------------------------------------------------------------------------------------


def cmd_costs(args: argparse.Namespace) -> int:
    """``clustersim costs``: per-kernel costs of one layer and the model's compute-only throughput."""
    from simulator.core.config import load_config
    from simulator.core.layer_costs import layer_cost_report

    cfg = load_config(args.config or default_config_path(), args.set)
    report = layer_cost_report(cfg, args.profile)
    if args.json:
        print_json(report.to_dict())
        return 0
    print(_costs_report(report))
    return 0


def _costs_report(report: Any) -> str:
    """The text of ``clustersim costs``: one layer's kernels, then the model's compute-only figures."""
    r = report
    return "\n".join(
        [
            f"{r.model} on {r.gpu} ({r.profile} profile), TP={r.tp} EP={r.ep}, "
            f"micro-batch {r.micro_batch} x {r.seq_len} tokens, {r.precision}",
            f"\nLayer {r.layer}, one micro-batch on one rank:",
            table([op.model_dump() for op in r.ops], _OP_COLUMNS),
            f"\nlayer forward {fmt(r.layer_forward_ms)} ms, backward {fmt(r.layer_backward_ms)} ms",
            f"model forward+backward per micro-batch: {fmt(r.model_forward_ms + r.model_backward_ms)} ms "
            f"(compute and TP/EP communication, no pipeline or data-parallel cost)",
            f"throughput {fmt(r.tokens_per_s_per_gpu)} tokens/s/GPU, {fmt(r.tflops_per_gpu)} model TFLOP/s "
            f"per GPU, MFU {r.mfu:.1%}",
            f"weights {fmt(r.weights_gb_per_gpu)} GB per GPU; KV cache {fmt(r.kv_cache_bytes_per_token)} "
            f"bytes/token (bf16)",
        ]
    )


# ---- example ---------------------------------------------------------------------------------------


def _example_source(name: str) -> Path:
    """The bundled example ``name`` (as ``--list`` prints it); one-line error naming a close match if any."""
    names = list_examples()
    if name not in names:
        same_file = [n for n in names if Path(n).name == Path(name).name]
        hint = f"did you mean {same_file[0]}? " if len(same_file) == 1 else ""
        raise ClusterSimError(f"no bundled example {name!r}; {hint}`clustersim example --list` lists them")
    return example_path(name)


def cmd_example(args: argparse.Namespace) -> int:
    """List the bundled examples, or copy one into --out (default: the current folder)."""
    if args.list or not args.name:
        print("\n".join(list_examples()))
        return 0
    src = _example_source(args.name)
    folder = Path(args.out) if args.out else Path.cwd()
    if folder.exists() and not folder.is_dir():
        raise ClusterSimError(f"--out {folder} is a file, not a folder")
    dest = folder / src.name
    if dest.exists() and not args.force:
        raise ClusterSimError(f"{dest} already exists; pass --force to overwrite it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(src.read_bytes())
    except OSError as exc:
        raise ClusterSimError(f"cannot write {dest}: {exc.strerror or exc}") from None
    print(f"wrote {dest}")
    return 0


# ---- registration ----------------------------------------------------------------------------------


def _add_example_parser(sub: Any) -> None:
    help_ = "copy a bundled example config (quickstart.yaml, sweeps/..., claims/...) into this folder"
    p = sub.add_parser(
        "example",
        help=help_,
        description="Write the bundled example config NAME into the current folder (or --out), under its own "
        "file name; --list (or no NAME) prints every name.",
    )
    p.add_argument("name", nargs="?", metavar="NAME", help="example name as --list prints it, e.g. quickstart.yaml")
    p.add_argument("--list", action="store_true", help="print the names of the bundled examples")
    p.add_argument("--out", metavar="DIR", help="folder to write into (default: the current folder)")
    p.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    p.set_defaults(func=cmd_example)


def register(sub: Any) -> None:
    """Add ``gpus``, ``models``, ``nodes``, ``stacks``, ``costs`` and ``example`` to the CLI's subcommands."""
    listings: dict[str, tuple[str, Handler]] = {
        "gpus": ("list the GPU catalogue (peaks, memory, bandwidth, power)", cmd_gpus),
        "models": ("list the model presets (total and active parameters)", cmd_models),
        "nodes": ("list node presets and network links", cmd_nodes),
        "stacks": ("list the software-stack presets (attention, host costs, DP overlap)", cmd_stacks),
    }
    for name, (help_, fn) in listings.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add_json_arg(p)
        p.set_defaults(func=fn)
    p = sub.add_parser(
        "costs",
        help="per-kernel cost of a model's layers on a GPU (the quickstart job)",
        description="Per-kernel FLOPs, bytes, time and bound of one layer, and the model's "
        "compute-only throughput for one micro-batch.",
    )
    add_config_args(p)
    p.set_defaults(func=cmd_costs)
    _add_example_parser(sub)
