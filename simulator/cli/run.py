"""Simulation commands: ``train``, ``serve`` (with their text summaries) and ``dvfs``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from simulator.cli.common import (
    DEFAULT_SERVE_CONFIG,
    DEFAULT_TRAIN_CONFIG,
    add_config_args,
    number_list,
    print_json,
)
from simulator.cli.textfmt import fmt
from simulator.core.resources import example_path

__all__ = [
    "capacity_text",
    "cmd_dvfs",
    "cmd_serve",
    "cmd_train",
    "energy_rows",
    "register",
    "serve_summary",
    "steady_rows",
    "train_summary",
]


def _rows_text(head: str, rows: list[tuple[str, str]]) -> str:
    """``head``, then one indented ``label  value`` line per row, labels padded to one width."""
    width = max(len(k) for k, _ in rows)
    return "\n".join([head] + [f"  {k.ljust(width)}  {v}" for k, v in rows])


def energy_rows(r: Any, per: str) -> list[tuple[str, str]]:
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


# ---- train -----------------------------------------------------------------------------------------


def _plan_text(cfg: Any) -> str:
    """``TP8 PP1 DP1 CP2 EP4 VPP2, 1f1b, ZeRO-1, recompute none`` (CP, EP, VPP only when used)."""
    p, t = cfg.parallel, cfg.training
    plan = f"TP{p.tp} PP{p.pp} DP{p.dp}" + (f" CP{p.cp}" if p.cp > 1 else "") + (f" EP{p.ep}" if p.ep > 1 else "")
    return plan + f"{' VPP' + str(p.vpp) if p.vpp > 1 else ''}, {p.schedule}, ZeRO-{p.zero}, recompute {t.recompute}"


def train_summary(r: Any, cfg: Any) -> str:
    """The text of ``clustersim train``: plan, step time, throughput, memory, energy and time to train."""
    t, mem = cfg.training, r.memory_per_gpu_gb
    comm = " | ".join(f"{k} {fmt(v)} s" for k, v in r.exposed_comm_s.items())
    fits = "fits" if r.fits_in_memory else "DOES NOT FIT"
    rows = [
        ("plan", _plan_text(cfg)),
        ("stack", f"{cfg.stack.name} ({'flash' if t.flash_attention else 'unfused'} attention)"),
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
            "synchronisation",
            f"compute x{r.sync_stretch:.3f} waiting for the slowest rank, {fmt(r.gc_pause_s)} s per step on "
            "garbage-collection pauses",
        ),
        (
            "memory per GPU",
            f"{fmt(mem.peak)} of {fmt(mem.capacity)} GB usable ({fmt(mem.capacity * 1e9 / 2**30)} GiB) on stage "
            f"{mem.stage} -> {fits} (weights {fmt(mem.weights)}, "
            f"grads {fmt(mem.gradients)}, optimizer {fmt(mem.optimizer)}, activations {fmt(mem.activations)}, "
            f"buffers {fmt(mem.buffers)}, fragmentation {fmt(mem.fragmentation)} GB)",
        ),
    ]
    rows += energy_rows(r, "step")
    if r.time_to_train_days is not None:
        rows.append(
            (
                "time to train",
                f"{fmt(r.time_to_train_days)} days for {fmt(t.tokens / 1e9)}B tokens: {fmt(r.total_mwh)} MWh, "
                f"{fmt(r.total_tco2e)} tCO2e, ${fmt(r.total_cost_usd)}",
            )
        )
    return _rows_text(f"{r.model} on {r.num_gpus:,} x {r.gpu} ({r.profile} profile)", rows)


def cmd_train(args: argparse.Namespace) -> int:
    """``clustersim train``: simulate one training step (optionally writing a Chrome trace)."""
    from simulator.core.config import load_config
    from simulator.training import simulate_training

    cfg = load_config(args.config or example_path(DEFAULT_TRAIN_CONFIG), args.set)
    result = simulate_training(cfg, args.profile)
    if args.trace:
        path = result.timeline.write_chrome_trace(args.trace)
        if not args.json:
            print(f"wrote Chrome trace of one step to {path} (open in https://ui.perfetto.dev)", file=sys.stderr)
    if args.json:
        print_json(result.to_dict())
    else:
        print(train_summary(result, cfg))
    return 0


# ---- serve -----------------------------------------------------------------------------------------


def _percentiles(p: Any, unit: float = 1e3, ci: Any = None) -> str:
    """``mean .. p50 .. p90 .. p99 .. ms``; with ``ci`` (a LatencyCI) each value gets its [low, high]."""

    def one(name: str) -> str:
        text = f"{name} {fmt(getattr(p, name) * unit)}"
        if ci is not None:
            iv = getattr(ci, name)
            text += f" [{fmt(iv.low * unit)}, {fmt(iv.high * unit)}]"
        return text

    return "  ".join(one(n) for n in ("mean", "p50", "p90", "p99")) + " ms"


def steady_rows(r: Any) -> list[tuple[str, str]]:
    """Stability verdict and measurement window lines of a serving result (empty without one)."""
    s = r.steady
    if s is None:
        return []
    if s.stable:
        verdict = f"stable: {s.verdict}"
    else:
        verdict = (
            f"UNSTABLE: requests in the system grow {fmt(s.queue_growth_per_s)} +- {fmt(s.queue_growth_se)} req/s, "
            f"TTFT {fmt(s.ttft_growth_s_per_s)} +- {fmt(s.ttft_growth_se)} s per s: the offered rate is overload"
        )
    window = (
        f"{s.window_requests:,} requests arriving {fmt(s.window_start_s)}-{fmt(s.window_end_s)} s "
        f"(warm-up {s.warmup_requests:,} requests / {fmt(s.warmup_s)} s removed by MSER-5)"
    )
    precision = "reached" if s.precision_reached else "NOT reached"
    run = f"{s.extended_to_requests:,} requests simulated"
    if s.extended_to_requests != s.requested_requests:
        run += f" ({s.requested_requests:,} requested, budget {s.max_requests:,})"
    rows = [
        ("steady state", verdict),
        ("window", window),
        (
            "precision",
            f"widest {s.confidence:.0%} CI half-width {s.rel_half_width:.1%} of its percentile, target "
            f"{s.target_rel_half_width:.0%}: {precision}; {run}",
        ),
    ]
    return rows


def serve_summary(r: Any) -> str:
    """The text of ``clustersim serve``: stability, window, latency percentiles with their intervals,
    throughput, goodput, KV cache, energy, cost."""
    s = r.steady
    conf = f" ({s.confidence:.0%} CI)" if s is not None else ""
    att = s.slo_attainment_ci if s is not None else None
    att_txt = f"{r.slo_attainment:.1%}" + (f" [{att.low:.1%}, {att.high:.1%}]" if att is not None else "")
    per_gpu = f", {fmt(r.throughput_tokens_per_s_per_gpu)} per GPU" if r.throughput_tokens_per_s_per_gpu else ""
    rows = [
        ("policy", f"{r.policy} on {r.num_gpus} x {r.gpu} ({r.profile} profile)"),
        ("requests", f"{r.completed_requests:,} completed in {fmt(r.duration_s)} s"),
        *steady_rows(r),
        (
            "throughput",
            f"{fmt(r.throughput_requests_per_s)} req/s, {fmt(r.throughput_tokens_per_s)} output tokens/s{per_gpu} "
            "(window)",
        ),
        ("goodput", f"{fmt(r.goodput_requests_per_s)} req/s meet the SLO ({att_txt} of requests{conf})"),
        ("TTFT" + conf, _percentiles(r.ttft_s, ci=s.ttft_ci_s if s else None)),
        ("TPOT" + conf, _percentiles(r.tpot_s, ci=s.tpot_ci_s if s else None)),
        ("end to end" + conf, _percentiles(r.e2e_s, ci=s.e2e_ci_s if s else None)),
        ("queueing", _percentiles(r.queue_s)),
        (
            "KV cache",
            f"{r.kv_blocks_per_replica:,} blocks per replica ({fmt(r.kv_memory_gb['kv_gb'])} GB/GPU), "
            f"peak {r.kv_peak_utilization:.1%} used, {r.preemptions} preemptions, "
            f"prefix hit rate {r.prefix_hit_rate:.1%}",
        ),
        ("batching", f"mean {fmt(r.mean_batch_size)} decodes per iteration, GPU busy {r.gpu_busy_fraction:.1%}"),
        *energy_rows(r, "run"),
        ("cost per output token", _cost_text(r)),
    ]
    return _rows_text(r.model, rows)


def _cost_text(r: Any) -> str:
    text = f"${fmt(r.cost_per_million_output_tokens_usd)} per million output tokens (whole run)"
    if r.steady is not None and r.steady.cost_per_million_output_tokens_usd:
        text += f", ${fmt(r.steady.cost_per_million_output_tokens_usd)} at the steady state"
    return text


def capacity_text(cap: Any) -> str:
    """One line: the capacity, its interval, and what passing means."""
    iv = cap.interval
    return (
        f"highest arrival rate meeting the SLO for {cap.attainment:.0%} of requests: {fmt(cap.rate_per_s, 4)} req/s "
        f"[{fmt(iv.low, 4)}, {fmt(iv.high, 4)}] (passes on the lower confidence bound of SLO attainment, stable; "
        f"{fmt(iv.high, 4)} req/s fails: unstable or the upper bound misses; {cap.requests:,} requests per probe, "
        "inconclusive ones re-run with twice as many)"
    )


def _serve_max_rate(cfg: Any, args: argparse.Namespace) -> int:
    """``serve --max-rate``: the highest arrival rate meeting the SLO, each probe reported on stderr."""
    from simulator.serving.capacity import find_capacity, judge

    def progress(rate: float, res: Any) -> None:
        s = res.steady
        ci = f" [{s.slo_attainment_ci.low:6.1%}, {s.slo_attainment_ci.high:6.1%}]" if s else ""
        state = ("stable" if s.stable else "UNSTABLE") if s else ""
        print(
            f"  rate {rate:8.3f} req/s: SLO attainment {res.slo_attainment:6.1%}{ci} {state:8s} "
            f"{judge(res, args.attainment):12s} ({res.completed_requests:,} requests)",
            file=sys.stderr,
        )

    cap = find_capacity(cfg, attainment=args.attainment, profile=args.profile, progress=progress)
    result = cap.result
    if args.json:
        print_json(
            {
                "max_rate_per_s": cap.rate_per_s,
                "interval_per_s": [cap.interval.low, cap.interval.high],
                "attainment": args.attainment,
                "capacity": cap.model_dump(mode="json"),
                "result": result.to_dict() if result is not None else None,
            }
        )
    else:
        print(capacity_text(cap) + "\n")
        if result is not None:
            print(serve_summary(result))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``clustersim serve``: simulate serving traffic, or find the highest rate meeting the SLO."""
    from simulator.serving import load_serving_config, simulate_serving

    cfg = load_serving_config(args.config or example_path(DEFAULT_SERVE_CONFIG), args.set)
    if args.max_rate:
        return _serve_max_rate(cfg, args)
    result = simulate_serving(cfg, args.profile, extend=True if args.steady else None)
    if args.json:
        print_json(result.to_dict())
    else:
        print(serve_summary(result))
    return 0


# ---- dvfs ------------------------------------------------------------------------------------------


def cmd_dvfs(args: argparse.Namespace) -> int:
    """``clustersim dvfs``: energy vs time over locked SM clocks or power caps, with the Pareto front."""
    from simulator.cli.dvfs_report import dvfs_summary, dvfs_text
    from simulator.core.config import apply_overrides, read_yaml
    from simulator.search import dvfs

    data = apply_overrides(read_yaml(args.config or example_path("quickstart.yaml")), args.set)
    clocks, caps = number_list(args.clocks), number_list(args.caps)
    points = dvfs.sweep(data, clocks_mhz=clocks, caps_w=caps, profile=args.profile, progress=not args.json)
    if args.json:
        print_json(dvfs_summary(points))
    else:
        print(dvfs_text(points))
    return 0


# ---- registration ----------------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add ``train``, ``serve`` and ``dvfs`` to the CLI's subcommands."""
    p = sub.add_parser(
        "train",
        help="simulate one training step (default: GPT-3 175B on 1,024 A100)",
        description="Simulate one training step: step time, throughput, MFU, bubble, exposed "
        "communication and memory per GPU.",
    )
    add_config_args(p)
    p.add_argument("--trace", metavar="OUT.json", help="write a Chrome trace of the step (Perfetto, chrome://tracing)")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser(
        "serve",
        help="simulate serving traffic (default: Llama-3 8B on one H100)",
        description="Simulate an inference deployment: TTFT/TPOT/latency percentiles, throughput, goodput and "
        "KV cache use; --max-rate finds the capacity at the SLO.",
    )
    add_config_args(p)
    p.add_argument("--max-rate", action="store_true", help="binary-search the highest rate that meets the SLO")
    p.add_argument("--attainment", type=float, default=0.9, help="share of requests that must meet the SLO")
    p.add_argument(
        "--steady",
        action="store_true",
        help="steady-state run: at least steady_state.min_requests requests, doubled until every percentile's "
        "interval reaches the target precision (or the budget)",
    )
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser(
        "dvfs",
        help="energy vs time over locked SM clocks or power caps (training or serving config)",
        description="Re-simulate a config at each locked SM clock (default: 9 from the lowest to the max) or power "
        "cap and print time, power and energy per token with the energy-time Pareto front.",
    )
    add_config_args(p)
    p.add_argument("--clocks", help="comma-separated SM clocks in MHz, e.g. 990,1200,1410")
    p.add_argument("--caps", help="comma-separated power caps in W, e.g. 300,350,400")
    p.set_defaults(func=cmd_dvfs)
