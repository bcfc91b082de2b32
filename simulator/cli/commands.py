"""The ``clustersim`` command line.

Every subcommand shares one shape: an optional YAML config path, ``--set key=value`` overrides
and ``--json`` for machine output. Bad input prints one line saying what to change and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from hwmodels.catalogue import list_gpus, list_links, list_nodes
from hwmodels.errors import ClusterSimError
from simulator.cli.textfmt import fmt, table
from simulator.core.resources import example_path

EXIT_USAGE = 2


def default_config_path() -> Path:
    """The bundled config `costs` uses when no CONFIG is given."""
    return example_path("quickstart.yaml")


DEFAULT_TRAIN_CONFIG = "gpt3-175b-a100.yaml"
DEFAULT_SERVE_CONFIG = "serve-llama3-8b-h100.yaml"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False, default=str))


# ---- catalogue listings --------------------------------------------------------------------


def cmd_gpus(args: argparse.Namespace) -> int:
    rows = [g.to_row() for g in list_gpus()]
    if args.json:
        _print_json(rows)
        return 0
    cols = [
        ("id", "GPU"),
        ("bf16_tflops", "bf16 TFLOP/s"),
        ("fp16_tflops", "fp16 TFLOP/s"),
        ("fp8_tflops", "fp8 TFLOP/s"),
        ("fp32_tflops", "fp32 TFLOP/s"),
        ("memory_gb", "memory GB"),
        ("memory_bandwidth_gbps", "HBM GB/s"),
        ("nvlink_bandwidth_gbps", "NVLink GB/s"),
        ("tdp_w", "TDP W"),
        ("idle_w", "idle W"),
    ]
    print(table(rows, cols))
    print("\nDense peaks (no sparsity). Sources per figure: hwmodels/data/gpus.yaml; `--json` for all fields.")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from simulator.models import list_models

    rows = [m.to_summary() for m in list_models()]
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:
        r["total_b"] = r["total_params"] / 1e9
        r["active_b"] = r["active_params"] / 1e9
        r["active_ne_b"] = r["active_params_non_embedding"] / 1e9
        r["kv_kib"] = r["kv_cache_bytes_per_token"] / 1024
    cols = [
        ("name", "model"),
        ("total_b", "params B"),
        ("active_b", "active B"),
        ("active_ne_b", "active B w/o embedding"),
        ("num_layers", "layers"),
        ("hidden_size", "hidden"),
        ("attention_kind", "attention"),
        ("kv_kib", "KV KiB/token (bf16)"),
    ]
    print(table(rows, cols))
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    rows = [n.model_dump() for n in list_nodes()]
    if args.json:
        _print_json(rows)
        return 0
    cols = [
        ("id", "node"),
        ("gpu", "GPU"),
        ("gpus_per_node", "GPUs"),
        ("intra_link", "intra-node"),
        ("nics_per_node", "NICs"),
        ("nic_link", "NIC"),
        ("host_power_w", "host W"),
    ]
    print(table(rows, cols))
    links = [lk.model_dump() for lk in list_links()]
    print()
    print(
        table(
            links,
            [
                ("id", "link"),
                ("kind", "kind"),
                ("bandwidth_gbps", "GB/s per dir"),
                ("efficiency", "NCCL efficiency"),
                ("latency_us", "latency us"),
            ],
        )
    )
    return 0


# ---- costs ---------------------------------------------------------------------------------


def cmd_costs(args: argparse.Namespace) -> int:
    from simulator.core.config import load_config
    from simulator.core.layer_costs import layer_cost_report

    cfg = load_config(args.config or default_config_path(), args.set)
    report = layer_cost_report(cfg, args.profile)
    if args.json:
        _print_json(report.to_dict())
        return 0
    print(
        f"{report.model} on {report.gpu} ({report.profile} profile), TP={report.tp} EP={report.ep}, "
        f"micro-batch {report.micro_batch} x {report.seq_len} tokens, {report.precision}"
    )
    print(f"\nLayer {report.layer}, one micro-batch on one rank:")
    rows = [r.model_dump() for r in report.ops]
    print(
        table(
            rows,
            [
                ("name", "op"),
                ("shape", "shape"),
                ("gflop", "GFLOP"),
                ("mbytes", "MB"),
                ("forward_ms", "fwd ms"),
                ("backward_ms", "bwd ms"),
                ("tflops", "TFLOP/s"),
                ("bound", "bound"),
            ],
        )
    )
    print(f"\nlayer forward {fmt(report.layer_forward_ms)} ms, backward {fmt(report.layer_backward_ms)} ms")
    print(
        f"model forward+backward per micro-batch: {fmt(report.model_forward_ms + report.model_backward_ms)} ms "
        f"(compute and TP/EP communication, no pipeline or data-parallel cost)"
    )
    print(
        f"throughput {fmt(report.tokens_per_s_per_gpu)} tokens/s/GPU, {fmt(report.tflops_per_gpu)} model TFLOP/s "
        f"per GPU, MFU {report.mfu:.1%}"
    )
    print(
        f"weights {fmt(report.weights_gb_per_gpu)} GB per GPU; KV cache {fmt(report.kv_cache_bytes_per_token)} "
        f"bytes/token (bf16)"
    )
    return 0


# ---- train ---------------------------------------------------------------------------------


def _train_summary(r: Any, cfg: Any) -> str:
    p, t = cfg.parallel, cfg.training
    mem = r.memory_per_gpu_gb
    plan = f"TP{p.tp} PP{p.pp} DP{p.dp}" + (f" CP{p.cp}" if p.cp > 1 else "") + (f" EP{p.ep}" if p.ep > 1 else "")
    plan += f"{' VPP' + str(p.vpp) if p.vpp > 1 else ''}, {p.schedule}, ZeRO-{p.zero}, recompute {t.recompute}"
    comm = " | ".join(f"{k} {fmt(v)} s" for k, v in r.exposed_comm_s.items())
    fits = "fits" if r.fits_in_memory else "DOES NOT FIT"
    rows = [
        ("plan", plan),
        (
            "batch",
            f"{r.num_microbatches} micro-batches of {t.micro_batch} x {t.seq_len} tokens per step, {t.precision}",
        ),
        (
            "step time",
            f"{fmt(r.step_time_s)} s (pipeline {fmt(r.pipeline_time_s)} s, optimizer {fmt(r.optimizer_s)} s)",
        ),
        ("throughput", f"{fmt(r.tokens_per_s)} tokens/s ({fmt(r.tokens_per_s_per_gpu)} tokens/s/GPU)"),
        ("compute", f"{fmt(r.tflops_per_gpu)} model TFLOP/s per GPU, MFU {r.mfu:.1%}, HFU {r.hfu:.1%}"),
        ("pipeline bubble", f"{r.bubble_fraction:.1%} of busy time"),
        ("exposed comm", comm),
        (
            "memory per GPU",
            f"{fmt(mem.peak)} of {fmt(mem.capacity)} GB on stage {mem.stage} -> {fits} (weights {fmt(mem.weights)}, "
            f"grads {fmt(mem.gradients)}, optimizer {fmt(mem.optimizer)}, activations {fmt(mem.activations)}, "
            f"buffers {fmt(mem.buffers)}, fragmentation {fmt(mem.fragmentation)} GB)",
        ),
    ]
    rows += _energy_rows(r, "step")
    if r.time_to_train_days is not None:
        rows.append(
            (
                "time to train",
                f"{fmt(r.time_to_train_days)} days for {fmt(t.tokens / 1e9)}B tokens: {fmt(r.total_mwh)} MWh, "
                f"{fmt(r.total_tco2e)} tCO2e, ${fmt(r.total_cost_usd)}",
            )
        )
    head = f"{r.model} on {r.num_gpus:,} x {r.gpu} ({r.profile} profile)"
    width = max(len(k) for k, _ in rows)
    return "\n".join([head] + [f"  {k.ljust(width)}  {v}" for k, v in rows])


def _energy_rows(r: Any, per: str) -> list[tuple[str, str]]:
    """Power, energy, carbon and cost lines of a training (per step) or serving (per run) result."""
    pw, e, kg = r.power, r.energy_j, r.kgco2e
    clocks = pw["sm_clock_mhz"]
    clock = clocks if not isinstance(clocks, list) else (clocks[0] if len(set(clocks)) == 1 else clocks)
    clock_txt = f"{fmt(clock)} MHz" if not isinstance(clock, list) else "/".join(fmt(c) for c in clock) + " MHz"
    power = (
        f"{fmt(pw['avg_gpu_power_w'])} W per GPU (hottest), limit {fmt(pw['power_limit_w'])} W, SM clock {clock_txt}"
    )
    if pw["throttled"]:
        power += " (throttled to fit the limit)"
    return [
        ("power", power + f" [{pw['mode']}]"),
        (
            f"energy per {per}",
            f"{fmt(e['facility'] / 3.6e6)} kWh facility (GPUs {fmt(e['gpu'] / 3.6e6)} kWh, hosts "
            f"{fmt(e['node'] / 3.6e6)} kWh, x PUE), {fmt(r.energy_per_token_j)} J per token",
        ),
        (
            f"carbon, cost per {per}",
            f"{fmt(kg['operational'])} kgCO2e operational + {fmt(kg['embodied'])} embodied, ${fmt(r.cost_usd)}",
        ),
    ]


def cmd_train(args: argparse.Namespace) -> int:
    from simulator.core.config import load_config
    from simulator.training import simulate_training

    cfg = load_config(args.config or example_path(DEFAULT_TRAIN_CONFIG), args.set)
    result = simulate_training(cfg, args.profile)
    if args.trace:
        path = result.timeline.write_chrome_trace(args.trace)
        if not args.json:
            print(f"wrote Chrome trace of one step to {path} (open in https://ui.perfetto.dev)", file=sys.stderr)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(_train_summary(result, cfg))
    return 0


def _serve_summary(r: Any) -> str:
    def pct(p: Any, unit: float = 1e3) -> str:
        return (
            f"mean {fmt(p.mean * unit)}  p50 {fmt(p.p50 * unit)}  p90 {fmt(p.p90 * unit)}  p99 {fmt(p.p99 * unit)} ms"
        )

    rows = [
        ("policy", f"{r.policy} on {r.num_gpus} x {r.gpu} ({r.profile} profile)"),
        ("requests", f"{r.completed_requests:,} completed in {fmt(r.duration_s)} s"),
        ("throughput", f"{fmt(r.throughput_requests_per_s)} req/s, {fmt(r.throughput_tokens_per_s)} output tokens/s"),
        ("goodput", f"{fmt(r.goodput_requests_per_s)} req/s meet the SLO ({r.slo_attainment:.1%} of requests)"),
        ("TTFT", pct(r.ttft_s)),
        ("TPOT", pct(r.tpot_s)),
        ("end to end", pct(r.e2e_s)),
        ("queueing", pct(r.queue_s)),
        (
            "KV cache",
            f"{r.kv_blocks_per_replica:,} blocks per replica ({fmt(r.kv_memory_gb['kv_gb'])} GB/GPU), "
            f"peak {r.kv_peak_utilization:.1%} used, {r.preemptions} preemptions, "
            f"prefix hit rate {r.prefix_hit_rate:.1%}",
        ),
        ("batching", f"mean {fmt(r.mean_batch_size)} decodes per iteration, GPU busy {r.gpu_busy_fraction:.1%}"),
        *_energy_rows(r, "run"),
        ("cost per output token", f"${fmt(r.cost_per_million_output_tokens_usd)} per million output tokens"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join([r.model] + [f"  {k.ljust(width)}  {v}" for k, v in rows])


def cmd_serve(args: argparse.Namespace) -> int:
    from simulator.serving import load_serving_config, simulate_serving
    from simulator.serving.capacity import max_rate

    cfg = load_serving_config(args.config or example_path(DEFAULT_SERVE_CONFIG), args.set)
    if args.max_rate:

        def progress(rate: float, res: Any) -> None:
            print(f"  rate {rate:8.3f} req/s: SLO attainment {res.slo_attainment:6.1%}", file=sys.stderr)

        rate, result = max_rate(cfg, attainment=args.attainment, profile=args.profile, progress=progress)
        if args.json:
            _print_json({"max_rate_per_s": rate, "attainment": args.attainment, "result": result.to_dict()})
        else:
            print(f"highest arrival rate meeting the SLO for {args.attainment:.0%} of requests: {fmt(rate)} req/s\n")
            print(_serve_summary(result))
        return 0
    result = simulate_serving(cfg, args.profile)
    if args.json:
        _print_json(result.to_dict())
    else:
        print(_serve_summary(result))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from calibration.run import calibrate

    out = Path(args.out) if args.out else Path(f"{args.gpu or 'gpu'}-profile.json")
    return calibrate(args.device, out, quick=args.quick, gpu=args.gpu)


def cmd_fit(args: argparse.Namespace) -> int:
    from calibration.fit import read_raw
    from calibration.run import fit_and_write

    raw = read_raw(args.raw)
    out = Path(args.out) if args.out else Path(args.raw).with_name(Path(args.raw).stem.replace(".raw", "") + ".json")
    return fit_and_write(raw, out, args.gpu, None, sys.stdout)


def cmd_claims(args: argparse.Namespace) -> int:
    from simulator.validation.claims import run_claims, to_markdown

    rows = run_claims(args.only or None)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(to_markdown(rows))
    if args.json:
        _print_json([r.as_dict() for r in rows])
        return 0
    print(
        table(
            [r.as_dict() for r in rows],
            [
                ("id", "claim"),
                ("technique", "technique"),
                ("predicted_effect", "clustersim predicts"),
                ("verdict", "verdict"),
            ],
        )
    )
    if args.out:
        print(f"\nfull table with baselines and reasons: {args.out}")
    return 0


def cmd_validate_energy(args: argparse.Namespace) -> int:
    from simulator.energy.carbon import FOOTPRINT_BASES, footprint_rows

    rows = footprint_rows()
    data = [
        {
            "model": c.model,
            "basis": c.basis,
            "gpu_hours": c.gpu_hours,
            "published_mwh": c.published_energy_mwh,
            "predicted_mwh": c.predicted_energy_mwh,
            "energy_error": c.energy_error,
            "published_tco2e": c.published_tco2e,
            "predicted_tco2e": c.predicted_tco2e,
            "tco2e_error": c.tco2e_error,
        }
        for c in rows
    ]
    if args.json:
        _print_json(data)
        return 0
    for d in data:
        d["e_err"] = "-" if d["energy_error"] is None else f"{d['energy_error']:+.2%}"
        d["c_err"] = f"{d['tco2e_error']:+.2%}"
    print("Published training footprints vs tdp-mode bookkeeping (GPU-hours x power x PUE x grid intensity)")
    print(
        table(
            data,
            [
                ("model", "model"),
                ("basis", "basis"),
                ("gpu_hours", "GPU-hours"),
                ("published_mwh", "published MWh"),
                ("predicted_mwh", "predicted MWh"),
                ("e_err", "error"),
                ("published_tco2e", "published tCO2e"),
                ("predicted_tco2e", "predicted tCO2e"),
                ("c_err", "error"),
            ],
        )
    )
    worst = max(max(abs(d["energy_error"] or 0), abs(d["tco2e_error"])) for d in data)
    print(f"worst |error| {worst:.2%}")
    for basis, text in FOOTPRINT_BASES.items():
        print(f"  {basis}: {text}")
    return 0


def cmd_dvfs(args: argparse.Namespace) -> int:
    from simulator.core.config import apply_overrides, read_yaml
    from simulator.search import dvfs

    data = apply_overrides(read_yaml(args.config or example_path("quickstart.yaml")), args.set)
    clocks = [float(c) for c in args.clocks.split(",")] if args.clocks else None
    caps = [float(c) for c in args.caps.split(",")] if args.caps else None
    points = dvfs.sweep(data, clocks_mhz=clocks, caps_w=caps, profile=args.profile, progress=not args.json)
    rows = dvfs.to_rows(points)
    best, best_fac = dvfs.optimum(points), dvfs.optimum(points, "facility_j_per_token")
    if args.json:
        _print_json({"points": rows, "gpu_energy_optimum": best.value, "facility_energy_optimum": best_fac.value})
        return 0
    for r in rows:
        r["front"] = "*" if r["pareto"] else ""
        r["fac_mj"] = r["facility_energy_j"] / r["work"] * 1e3
    unit = "MHz" if points[0].setting == "clock" else "W"
    print(
        table(
            rows,
            [
                ("value", f"{points[0].setting} {unit}"),
                ("sm_clock_mhz", "SM clock MHz"),
                ("time_s", "time s"),
                ("avg_gpu_power_w", "GPU W"),
                ("gpu_mj_per_token", "GPU mJ/token"),
                ("fac_mj", "facility mJ/token"),
                ("front", "Pareto"),
            ],
        )
    )
    print(
        f"\nleast GPU energy per token at {fmt(best.value)} {unit}; least facility energy (hosts and PUE too) at "
        f"{fmt(best_fac.value)} {unit}. Pareto = energy-time front."
    )
    return 0


def cmd_plan_serve(args: argparse.Namespace) -> int:
    from simulator.core.config import apply_overrides, read_yaml
    from simulator.search.plan_serve import plan_serving

    data = apply_overrides(read_yaml(args.config or example_path(DEFAULT_SERVE_CONFIG)), args.set)
    tps = [int(t) for t in args.tp.split(",")] if args.tp else None
    best, shapes = plan_serving(
        data,
        rate_per_s=args.rate,
        attainment=args.attainment,
        tps=tps,
        requests=args.requests,
        profile=args.profile,
        progress=not args.json,
    )
    if args.json:
        _print_json({"best": best.as_dict(), "candidates": [s.as_dict() for s in shapes]})
        return 0
    rows = [{**s.as_dict(), "shape": f"TP{s.tp} {s.policy} max {s.max_num_seqs}"} for s in shapes]
    print(
        table(
            rows,
            [
                ("shape", "replica shape"),
                ("replica_capacity_per_s", "req/s per replica"),
                ("replicas", "replicas"),
                ("num_gpus", "GPUs"),
                ("usd_per_hour", "$ per hour"),
            ],
        )
    )
    sim = best.simulated
    print(
        f"\ncheapest at {fmt(args.rate)} req/s: TP{best.tp} {best.policy} (max {best.max_num_seqs} seqs) x "
        f"{best.replicas} replicas = {best.num_gpus} GPUs, ${fmt(best.usd_per_hour)}/h, "
        f"${fmt(best.usd_per_million_output_tokens)} per million output tokens; simulated at the rate: SLO met by "
        f"{sim['slo_attainment']:.1%}, p99 TTFT {fmt(sim['ttft_p99_s'] * 1e3)} ms, p99 TPOT "
        f"{fmt(sim['tpot_p99_s'] * 1e3)} ms"
    )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from simulator.validation import tables as V

    if args.what == "energy":
        return cmd_validate_energy(args)
    runners = {
        "megatron-table1": lambda: V.megatron_table1(args.profile, args.rows),
        "megatron-table2": lambda: V.megatron_table2(args.profile),
        "vtrain-single": lambda: V.vtrain_single(args.profile, args.rows),
        "vtrain-multi": lambda: V.vtrain_multi(args.profile, args.rows),
        "deepseek-v3": lambda: V.deepseek_v3(args.profile),
    }
    tables = args.table or list(runners)
    report = {}
    for name in tables:
        comps = runners[name]()
        report[name] = {
            "summary": V.summary(comps),
            "rows": [
                {"label": c.label, "published": c.published, "predicted": c.predicted, "unit": c.unit, "error": c.error}
                for c in comps
            ],
        }
        if args.json:
            continue
        print(f"\n{name} ({len(comps)} rows, {comps[0].unit})")
        shown = comps if args.all or len(comps) <= 20 else sorted(comps, key=lambda c: -abs(c.error))[:10]
        if shown is not comps:
            print("(the 10 largest errors; --all prints every row)")
        print(
            table(
                [
                    {"label": c.label, "published": c.published, "predicted": c.predicted, "error": f"{c.error:+.1%}"}
                    for c in shown
                ],
                [("label", "row"), ("published", "published"), ("predicted", "predicted"), ("error", "error")],
            )
        )
        s = report[name]["summary"]
        print(
            f"MAPE {s['mape']:.1%}, max |error| {s['max_abs_error']:.1%}, mean signed error "
            f"{s['mean_signed_error']:+.1%}"
        )
    if args.json:
        _print_json(report)
    return 0


def app_script() -> Path:
    """Installed path of the Streamlit explorer's entry script (the repository's app/main.py, installed as simulator/app/main.py)."""
    return Path(str(resources.files("simulator.app").joinpath("main.py")))


def cmd_app(args: argparse.Namespace) -> int:
    """Start the Streamlit explorer with this Python, so it sees the same installed packages."""
    import subprocess

    script = app_script()
    if not script.is_file():
        raise ClusterSimError(f"the app is not installed ({script} is missing); reinstall clustersim")
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(args.port)]
    if args.headless:
        cmd += ["--server.headless", "true"]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


# ---- entry ---------------------------------------------------------------------------------


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML config (default: the bundled quickstart example)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set parallel.tp=4 (repeatable)",
    )
    p.add_argument(
        "--profile",
        default=None,
        help="hardware profile: a GPU's calibrated profile by default, 'datasheet', or a path",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clustersim",
        description="Simulate and cost large-model training and inference on GPU clusters.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands: dict[str, tuple[str, Callable[[argparse.Namespace], int]]] = {
        "gpus": ("list the GPU catalogue (peaks, memory, bandwidth, power)", cmd_gpus),
        "models": ("list the model presets (total and active parameters)", cmd_models),
        "nodes": ("list node presets and network links", cmd_nodes),
    }
    for name, (help_, fn) in commands.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=fn)
    p = sub.add_parser(
        "costs",
        help="per-kernel cost of a model's layers on a GPU (the quickstart job)",
        description="Per-kernel FLOPs, bytes, time and bound of one layer, and the model's "
        "compute-only throughput for one micro-batch.",
    )
    _add_config_args(p)
    p.set_defaults(func=cmd_costs)
    p = sub.add_parser(
        "train",
        help="simulate one training step (default: GPT-3 175B on 1,024 A100)",
        description="Simulate one training step: step time, throughput, MFU, bubble, exposed "
        "communication and memory per GPU.",
    )
    _add_config_args(p)
    p.add_argument("--trace", metavar="OUT.json", help="write a Chrome trace of the step (Perfetto, chrome://tracing)")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser(
        "serve",
        help="simulate serving traffic (default: Llama-3 8B on one H100)",
        description="Simulate an inference deployment: TTFT/TPOT/latency percentiles, throughput, goodput and "
        "KV cache use; --max-rate finds the capacity at the SLO.",
    )
    _add_config_args(p)
    p.add_argument("--max-rate", action="store_true", help="binary-search the highest rate that meets the SLO")
    p.add_argument("--attainment", type=float, default=0.9, help="share of requests that must meet the SLO")
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser(
        "calibrate",
        help="measure this machine's GPU, fit a profile and report its error",
        description="Measure GEMM, attention, memory and copy kernels (and power, NCCL) with PyTorch, fit the "
        "cost models, write a profile and validate it on a small transformer. Resumes if interrupted.",
    )
    p.add_argument("--device", default="cuda:0", help="torch device (cpu only smoke-tests the pipeline)")
    p.add_argument("--quick", action="store_true", help="a smaller grid (under 5 minutes on an H100)")
    p.add_argument("--out", help="profile path (default: GPU-profile.json; raw measurements beside it)")
    p.add_argument("--gpu", help="catalogue id of the GPU (default: from the device name)")
    p.set_defaults(func=cmd_calibrate)
    p = sub.add_parser("fit", help="re-fit a profile from a raw measurement file (no GPU needed)")
    p.add_argument("raw", help="raw measurements JSON (written by calibrate)")
    p.add_argument("--out", help="profile path (default: next to the raw file)")
    p.add_argument("--gpu", help="catalogue id of the GPU (default: from the file's meta.name)")
    p.set_defaults(func=cmd_fit)
    p = sub.add_parser(
        "claims",
        help="test the source material's claims C1-C18 against clustersim's models",
        description="Run every claim scenario (bundled claims/*.yaml) and print what clustersim predicts and a verdict.",
    )
    p.add_argument("--only", action="append", metavar="CN", help="only this claim (repeatable), e.g. --only C5")
    p.add_argument("--out", help="also write the full table as Markdown (e.g. docs/claims.md)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_claims)
    p = sub.add_parser(
        "validate",
        help="compare predictions with published measurements",
        description="Simulate every row of the published training tables and print the errors.",
    )
    p.add_argument("what", choices=["training", "energy"], help="which validation suite")
    p.add_argument(
        "--table",
        action="append",
        choices=["megatron-table1", "megatron-table2", "vtrain-single", "vtrain-multi", "deepseek-v3"],
        help="only these tables (repeatable)",
    )
    p.add_argument("--rows", type=int, default=None, help="only the first N rows of each table")
    p.add_argument("--all", action="store_true", help="print every row, not just the largest errors")
    p.add_argument("--profile", default=None, help="hardware profile (default: the GPU's own)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser(
        "dvfs",
        help="energy vs time over locked SM clocks or power caps (training or serving config)",
        description="Re-simulate a config at each locked SM clock (default: 9 from the lowest to the max) or power "
        "cap and print time, power and energy per token with the energy-time Pareto front.",
    )
    _add_config_args(p)
    p.add_argument("--clocks", help="comma-separated SM clocks in MHz, e.g. 990,1200,1410")
    p.add_argument("--caps", help="comma-separated power caps in W, e.g. 300,350,400")
    p.set_defaults(func=cmd_dvfs)
    p = sub.add_parser(
        "app",
        help="open the Streamlit explorer (training, serving, trade-offs, hardware)",
        description="Run the Streamlit explorer: `streamlit run` on the installed app/main.py.",
    )
    p.add_argument("--port", type=int, default=8501, help="port to serve on (default 8501)")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.set_defaults(func=cmd_app)
    from simulator.search.plan_train import add_plan_parser
    from simulator.search.sweep import add_sweep_parser

    add_sweep_parser(sub)
    plan_sub = add_plan_parser(sub)
    p = plan_sub.add_parser(
        "serve",
        help="cheapest deployment (TP x replicas x policy x max batch) meeting the SLO at a rate",
        description="Find the cheapest deployment of a serving config's model that meets its SLO at --rate "
        "requests/s: per-replica capacity by the capacity search, then the cheapest deployment simulated at the rate.",
    )
    _add_config_args(p)
    p.add_argument("--rate", type=float, required=True, help="target arrival rate, requests/s")
    p.add_argument("--attainment", type=float, default=0.9, help="share of requests that must meet the SLO")
    p.add_argument("--tp", default=None, help="comma-separated TP degrees to try (default: 1,2,4,8 that divide heads)")
    p.add_argument("--requests", type=int, default=400, help="requests per capacity search (default 400)")
    p.set_defaults(func=cmd_plan_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for bad input, with a one-line message)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ClusterSimError as exc:
        print(f"clustersim: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
