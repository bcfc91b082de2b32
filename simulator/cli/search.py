"""Search commands: ``sweep``, ``plan train`` and ``plan serve``.

The engines live in :mod:`simulator.search` (``sweep``, ``plan``, ``plan_serve``) and return data;
this module parses the arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calibration.cli import EXIT_INTERRUPTED
from hwmodels.errors import ClusterSimError
from simulator.cli.common import (
    DEFAULT_SERVE_CONFIG,
    add_config_args,
    add_json_arg,
    add_yes_arg,
    number_list,
    print_json,
    scale_caps,
)
from simulator.cli.textfmt import fmt, table
from simulator.core.limits import CLI_CAPS
from simulator.core.resources import example_path

if TYPE_CHECKING:
    import pandas as pd

    from simulator.search.plan import PlanResult, PlanSearchResult
    from simulator.search.sweep import SweepFile

__all__ = [
    "add_plan_parser",
    "add_sweep_parser",
    "cmd_plan",
    "cmd_plan_serve",
    "cmd_sweep",
    "format_search",
    "register",
]

# ---- sweep -----------------------------------------------------------------------------------------

_TRAIN_COLUMNS = [
    ("step_time_s", "step s"),
    ("tokens_per_s_per_gpu", "tokens/s/GPU"),
    ("mfu", "MFU"),
    ("bubble_fraction", "bubble"),
    ("memory_per_gpu_gb_peak", "peak GB/GPU"),
    ("fits_in_memory", "fits"),
]
_SERVE_COLUMNS = [
    ("throughput_tokens_per_s", "tokens/s"),
    ("goodput_requests_per_s", "goodput req/s"),
    ("slo_attainment", "SLO met"),
    ("ttft_s_p99", "TTFT p99 s"),
    ("tpot_s_p99", "TPOT p99 s"),
    ("kv_peak_utilization", "KV peak"),
]
_PERCENT = {"mfu", "bubble_fraction", "slo_attainment", "kv_peak_utilization", "hfu"}
#: Values of a sweep frame's ``status`` column (see :func:`simulator.search.sweep.sweep`).
_OK, _ERROR = "ok", "error"


def add_sweep_parser(subparsers: Any) -> None:
    """Register ``clustersim sweep`` on the CLI's subparsers."""
    help_ = "run a parameter sweep (grid or random) over a training or serving config"
    p = subparsers.add_parser(
        "sweep",
        help=help_,
        description="Simulate every point of a sweep file's space (base config + dotted-path values), prune "
        "invalid plans, rank feasible ones by the objective, and write all rows to --out. Cached points "
        "(--cache-dir) are not simulated again.",
    )
    p.add_argument("sweep", metavar="SWEEP.yaml", help="sweep file: base, space, and optional mode/objective/...")
    p.add_argument("--workers", type=int, default=1, help="parallel simulations (local processes or Ray tasks)")
    p.add_argument("--backend", choices=["local", "ray"], default="local", help="where points run (default local)")
    p.add_argument("--ray-address", default=None, help="Ray cluster to join, e.g. auto (default: start a local Ray)")
    p.add_argument("--out", help="write every row to this .parquet or .csv file")
    p.add_argument("--cache-dir", help="cache one JSON per simulated point here; reruns resume from it")
    p.add_argument("--profile", default=None, help="hardware profile (default: each GPU's own)")
    p.add_argument("--top", type=int, default=5, help="feasible points to print (default 5)")
    add_json_arg(p, "machine-readable summary")
    add_yes_arg(p)
    p.set_defaults(func=cmd_sweep)


def _plain(value: Any) -> Any:
    """A frame cell as plain JSON: numpy scalars unwrapped, NaN as null."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def _run_sweep(args: argparse.Namespace) -> tuple[SweepFile, pd.DataFrame]:
    """Check the arguments, then run the sweep file's sweep (a one-line ClusterSimError on bad input)."""
    from simulator.search.sweep import load_sweep_file, sweep, sweep_file_base

    path = Path(args.sweep)
    sf = load_sweep_file(path)
    if args.out and Path(args.out).suffix.lower() not in (".parquet", ".csv"):
        raise ClusterSimError(f"--out {args.out}: use a .parquet or .csv file name")
    if args.top < 0:
        raise ClusterSimError("--top must be >= 0")
    frame = sweep(
        sweep_file_base(sf, path),
        sf.spec(),
        workers=args.workers,
        backend=args.backend,
        cache_dir=args.cache_dir,
        progress=not args.json,
        ray_address=args.ray_address,
        profile=args.profile or sf.profile,
        kind=sf.kind,
        caps=scale_caps(args),  # beyond interactive scale: the sweep stops, or its points are pruned, unless --yes
    )
    return sf, frame


def _sweep_summary(args: argparse.Namespace, frame: pd.DataFrame, out: Path | None) -> dict[str, Any]:
    """``sweep --json``: the frame's counts, the best feasible points and where the rows went."""
    a = frame.attrs
    feasible = frame[frame["feasible"]]
    summary = {k: a[k] for k in ("kind", "points", "evaluated", "cached", "pruned", "errors", "wall_s", "objective")}
    summary.update(
        sweep=str(Path(args.sweep)),
        feasible=len(feasible),
        best=[{k: _plain(v) for k, v in rec.items()} for rec in feasible.head(args.top).to_dict("records")],
        out=str(out) if out else None,
    )
    return summary


def _best_table(sf: SweepFile, frame: pd.DataFrame, best: pd.DataFrame) -> str:
    """The best feasible points: the swept values, then the kind's metric columns (ratios as percentages)."""
    swept = list(sf.space) + [c for c in ("parallel.dp",) if c in frame.columns and c not in sf.space]
    metric_cols = _TRAIN_COLUMNS if frame.attrs["kind"] == "training" else _SERVE_COLUMNS
    cols = [(c, c) for c in swept] + [(c, h) for c, h in metric_cols if c in frame.columns]
    if sf.objective and sf.objective not in {c for c, _ in cols}:
        cols.append((sf.objective, sf.objective))
    rows = []
    for rec in best.to_dict("records"):
        rec = {k: _plain(v) for k, v in rec.items()}
        for c in _PERCENT & rec.keys():
            if isinstance(rec[c], float):
                rec[c] = f"{rec[c]:.1%}"
        rows.append(rec)
    return table(rows, cols)


def _pruned_examples(frame: pd.DataFrame) -> dict[str, str]:
    """For each normalised prune reason (numbers as N), the first point's own reason with its numbers, e.g.
    ``tp*pp*cp = 16*8*1 = 128 does not divide cluster.num_gpus=64`` (``e.g.`` when several points share it)."""
    from simulator.search.sweep.cache import normalise_reason

    out: dict[str, str] = {}
    invalid = frame[frame["status"] == "invalid"]
    counts = invalid["reason"].map(lambda r: normalise_reason(str(r))).value_counts()
    for reason in invalid["reason"]:
        key = normalise_reason(str(reason))
        if key not in out:
            out[key] = f"{reason}" if counts[key] == 1 else f"{reason} (e.g.)"
    return out


def _sweep_report(args: argparse.Namespace, sf: SweepFile, frame: pd.DataFrame, out: Path | None) -> str:
    """The text of ``clustersim sweep``: the best feasible points, pruned reasons, failures and counts."""
    a = frame.attrs
    feasible = frame[frame["feasible"]]
    best = feasible.head(args.top)
    lines = [f"sweep {Path(args.sweep)}: {a['kind']}, {a['points']:,} points ({sf.mode})"]
    if best.empty:
        ok = int((frame["status"] == _OK).sum())
        lines.append(f"no feasible point ({ok} simulated points miss the constraints)")
    else:
        by = f" by {sf.objective} ({'higher' if sf.maximize else 'lower'} is better)" if sf.objective else ""
        lines += [f"best {len(best)} of {len(feasible):,} feasible points{by}:", _best_table(sf, frame, best)]
    if a["pruned"]:
        lines.append(f"\npruned {sum(a['pruned'].values()):,} invalid points:")
        examples = _pruned_examples(frame)
        lines += [f"  {count:6,}  {examples.get(reason, reason)}" for reason, count in a["pruned"].items()]
    errors = frame[frame["status"] == _ERROR]
    if len(errors):
        first = errors["reason"].iloc[0]
        lines.append(f"\n{len(errors)} points failed in the simulator (reason column), first: {first}")
    lines.append(
        f"\nevaluated {a['evaluated']:,}, cached {a['cached']:,}, wall {fmt(a['wall_s'])} s "
        f"({args.backend}, {args.workers} worker{'s' if args.workers != 1 else ''})"
    )
    if out:
        lines.append(f"wrote {out} ({len(frame):,} rows)")
    return "\n".join(lines)


def _interrupted_text(args: argparse.Namespace, exc: BaseException) -> str:
    """The one line after Ctrl-C in a sweep: how many of its points are cached (so a rerun resumes from them).

    The counts come from the interrupt when the sweep attached them (``points``, ``cached``), else from the
    sweep file and the records in ``--cache-dir``.
    """
    if not args.cache_dir:
        return "interrupted; no --cache-dir, so no point was kept: rerun with --cache-dir DIR to make it resumable"
    total = getattr(exc, "points", None)
    if total is None:
        try:
            from simulator.search.sweep import load_sweep_file

            total = len(load_sweep_file(Path(args.sweep)).spec().points())
        except (ClusterSimError, OSError):
            total = None
    cached = getattr(exc, "cached", None)
    if cached is None:
        cached = sum(1 for _ in Path(args.cache_dir).glob("??/*.json"))
        cached = min(cached, total) if total is not None else cached
    of = f" of {total:,}" if total is not None else ""
    return f"interrupted; {cached:,}{of} points cached in {args.cache_dir}, rerun the same command to resume"


def cmd_sweep(args: argparse.Namespace) -> int:
    """``clustersim sweep``: run the file's sweep, print the best feasible points, write --out.

    Exit status 1 when any point failed in the simulator (the rows say why), 0 otherwise.
    """
    from simulator.search.sweep import write_frame

    try:
        sf, frame = _run_sweep(args)
    except KeyboardInterrupt as exc:
        print(f"clustersim: {_interrupted_text(args, exc)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    out = write_frame(frame, args.out) if args.out else None
    if args.json:
        print(json.dumps(_sweep_summary(args, frame, out), indent=2, default=str))
        return 1 if frame.attrs["errors"] else 0
    print(_sweep_report(args, sf, frame, out))
    return 1 if (frame["status"] == _ERROR).any() else 0


# ---- plan train ------------------------------------------------------------------------------------


def _add_plan_train_parser(sub: Any) -> None:
    t = sub.add_parser(
        "train",
        help="search training plans (TP, PP, DP, CP, EP, VPP, schedule, micro-batch, ZeRO, recompute, SP)",
        description="Search every training plan of MODEL on --gpus x --gpu; --json gives best, pareto, "
        "plans_evaluated and plans_per_second.",
    )
    t.add_argument("model", help="model preset (`clustersim models`), or a path to a model YAML or HF config.json")
    t.add_argument("--gpus", type=int, required=True, help="number of GPUs")
    t.add_argument("--gpu", required=True, help="GPU id (`clustersim gpus`)")
    t.add_argument("--node", default=None, help="node preset (default: the GPU's own; `clustersim nodes`)")
    t.add_argument("--global-batch", type=int, default=None, help="sequences per step (default: one per GPU)")
    t.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: 2048)")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a setting the search does not vary, e.g. --set training.precision=fp8 (repeatable)",
    )
    t.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="DIM=V1,V2",
        help="restrict a searched dimension, e.g. --space tp=4,8 --space schedule=1f1b,interleaved (repeatable; "
        "tp, pp, cp, ep, micro_batch, vpp, schedule, zero, recompute, sp)",
    )
    t.add_argument("--top", type=int, default=5, help="fastest plans to print (default 5)")
    t.add_argument(
        "--simulate", type=int, default=32, dest="top_k", help="fastest screened plans to simulate (default 32)"
    )
    t.add_argument("--workers", type=int, default=None, help="processes (default: every CPU)")
    t.add_argument("--profile", default=None, help="hardware profile: the GPU's calibrated one by default")
    add_json_arg(t)
    t.set_defaults(func=cmd_plan)


def add_plan_parser(subparsers: Any) -> Any:
    """Add ``plan`` (with ``plan train``) to the CLI's subcommands; returns plan's own subparsers so that
    other planners (``plan serve``) can be added beside ``train``."""
    p = subparsers.add_parser(
        "plan",
        help="search every parallel plan and print the fastest and the Pareto front",
        description="Search the plan space of a job: every valid split is screened in closed form, the most "
        "promising are simulated, and the fastest plans and the time/memory(/energy) Pareto front are printed.",
    )
    sub = p.add_subparsers(dest="plan_command", required=True, metavar="JOB")
    _add_plan_train_parser(sub)
    return sub


def _plan_rows(plans: Sequence[PlanResult]) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    rows = []
    for p in plans:
        r = p.result
        energy = p.energy_j
        rows.append(
            {
                "plan": p.label(),
                "step": r.step_time_s,
                "tflops": r.tflops_per_gpu,
                "mfu": f"{r.mfu:.1%}",
                "mem": r.memory_per_gpu_gb.peak,
                "energy": energy / 1e3 if energy is not None else None,
                "screen": p.screen_step_s,
            }
        )
    cols = [("plan", "plan"), ("step", "step s"), ("tflops", "TFLOP/s/GPU"), ("mfu", "MFU"), ("mem", "memory GB")]
    if any(row["energy"] is not None for row in rows):
        cols.append(("energy", "energy kJ/step"))
    cols.append(("screen", "screened s"))
    return rows, cols


def _offload_note(plans: Sequence[PlanResult]) -> list[str]:
    """A line explaining ``offload:NAME`` when simulated plans keep model states in host memory or NVMe."""
    needs = [p.needs_offload for p in plans]
    if not any(needs):
        return []
    note = "offload:NAME = model states in host memory or NVMe (training.offload)"
    if all(needs):
        note += "; every simulated plan uses it (the search adds offload when no plan fits in GPU memory alone)"
    return ["", note]


def format_search(res: PlanSearchResult) -> str:
    """The text report of a plan search: what was searched, the fastest plans, the front, the prune counts."""
    lines = [
        f"{res.model} on {res.num_gpus:,} x {res.gpu}, global batch {res.global_batch:,} x {res.seq_len:,} tokens",
        f"{res.plans_evaluated:,} plans screened, {res.feasible:,} feasible, {res.plans_simulated} simulated, in "
        f"{fmt(res.wall_s)} s on {res.workers} worker(s) ({fmt(res.plans_per_second / res.workers)} plans/s per "
        f"worker; screen {fmt(res.screen_s)} s, simulation {fmt(res.simulate_s)} s)",
        "",
        f"Fastest plans (simulated; {len(res.best)} of {res.plans_simulated}):",
    ]
    rows, cols = _plan_rows(res.best)
    lines += [
        table(rows, cols),
        "",
        "Pareto front (step time vs memory" + (" vs energy" if len(cols) > 6 else "") + "):",
    ]
    rows, cols = _plan_rows(res.pareto)
    lines += [table(rows, cols), *_offload_note(res.simulated), "", "Pruned before simulation:"]
    width = max((len(k) for k in res.pruned), default=0)
    lines += [f"  {k.ljust(width)}  {v:>12,}" for k, v in res.pruned.items()]
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    """``clustersim plan train``: search and print (or ``--json``) the plans; bad input raises ClusterSimError."""
    from simulator.search.plan import SearchSpace, search_training_plans

    if args.plan_command != "train":  # other planners register their own func
        raise ClusterSimError(f"plan {args.plan_command} is not available; use plan train")
    if args.gpus < 1:
        raise ClusterSimError(f"--gpus {args.gpus} must be a positive number of GPUs")
    if args.gpus > CLI_CAPS.num_gpus and not getattr(args, "yes", False):
        raise ClusterSimError(
            f"--gpus {args.gpus:,} is beyond interactive scale ({CLI_CAPS.num_gpus:,}); pass --yes to run it anyway"
        )
    res = search_training_plans(
        args.model,
        num_gpus=args.gpus,
        gpu=args.gpu,
        global_batch=args.global_batch,
        seq_len=args.seq_len,
        node=args.node,
        overrides=args.set,
        space=SearchSpace.parse(args.space),
        top_k=args.top_k,
        top=args.top,
        workers=args.workers,
        profile=args.profile,
        progress=not args.json and sys.stderr.isatty(),
    )
    if args.json:
        print(json.dumps(res.to_dict(), indent=2, default=str))
    else:
        print(format_search(res))
    return 0


# ---- plan serve ------------------------------------------------------------------------------------

_SHAPE_COLUMNS = [
    ("shape", "replica shape"),
    ("replica_capacity_per_s", "req/s per replica"),
    ("replicas", "replicas"),
    ("num_gpus", "GPUs"),
    ("usd_per_hour", "$ per hour"),
]


def _add_plan_serve_parser(plan_sub: Any) -> None:
    p = plan_sub.add_parser(
        "serve",
        help="cheapest deployment (TP x replicas x policy x max batch) meeting the SLO at a rate",
        description="Find the cheapest deployment of a serving config's model that meets its SLO at --rate "
        "requests/s: per-replica capacity by the capacity search, then the cheapest deployment simulated at the rate.",
    )
    add_config_args(p)
    p.add_argument("--rate", type=float, required=True, help="target arrival rate, requests/s")
    p.add_argument("--attainment", type=float, default=0.9, help="share of requests that must meet the SLO")
    p.add_argument(
        "--all-shapes", action="store_true", help="search every replica shape, even those that cannot be cheapest"
    )
    p.add_argument("--tp", default=None, help="comma-separated TP degrees to try (default: 1,2,4,8 that divide heads)")
    p.add_argument(
        "--requests",
        type=int,
        default=400,
        help="requests per capacity probe; probes use at least steady_state.min_requests (default 2,000)",
    )
    p.set_defaults(func=cmd_plan_serve)


def _cheapest_text(rate: float, best: Any) -> str:
    sim = best.simulated
    return (
        f"\ncheapest at {fmt(rate)} req/s: TP{best.tp} {best.policy} (max {best.max_num_seqs} seqs) x "
        f"{best.replicas} replicas = {best.num_gpus} GPUs, ${fmt(best.usd_per_hour)}/h, "
        f"${fmt(best.usd_per_million_output_tokens)} per million output tokens at the steady state; confirmed by "
        f"{sim.get('requests', 0):,} requests at the rate: {'stable' if sim.get('stable', True) else 'UNSTABLE'}, "
        f"SLO met by {sim['slo_attainment']:.1%} {_ci(sim.get('slo_attainment_ci'), 1, '.1%')}, p99 TTFT "
        f"{fmt(sim['ttft_p99_s'] * 1e3)} {_ci(sim.get('ttft_p99_ci_s'), 1e3)} ms, p99 TPOT "
        f"{fmt(sim['tpot_p99_s'] * 1e3)} {_ci(sim.get('tpot_p99_ci_s'), 1e3)} ms ({sim.get('confidence', 0.95):.0%} "
        f"CI); margin {fmt(best.margin)}x (capacity {fmt(best.replica_capacity_per_s * best.replicas)} req/s / "
        f"{fmt(rate)} req/s)"
    )


def _ci(iv: Any, unit: float, spec: str = "") -> str:
    """``[low, high]`` of an interval pair scaled by ``unit`` (empty when absent)."""
    if not iv:
        return ""
    lo, hi = (format(v * unit, spec) if spec else fmt(v * unit) for v in iv)
    return f"[{lo}, {hi}]"


def cmd_plan_serve(args: argparse.Namespace) -> int:
    """``clustersim plan serve``: the cheapest deployment meeting the SLO at --rate."""
    from simulator.core.config import apply_overrides, read_yaml
    from simulator.search.plan_serve import plan_serving

    data = apply_overrides(read_yaml(args.config or example_path(DEFAULT_SERVE_CONFIG)), args.set)
    best, shapes = plan_serving(
        data,
        rate_per_s=args.rate,
        attainment=args.attainment,
        tps=number_list(args.tp, int),
        requests=args.requests,
        profile=args.profile,
        progress=not args.json,
        exhaustive=args.all_shapes,
    )
    if args.json:
        print_json({"best": best.as_dict(), "candidates": [s.as_dict() for s in shapes]})
        return 0
    rows = [{**s.as_dict(), "shape": f"TP{s.tp} {s.policy} max {s.max_num_seqs}"} for s in shapes]
    print(table(rows, _SHAPE_COLUMNS))
    if best.pruned_shapes:
        print(
            f"({best.pruned_shapes} shape(s) that could not beat the cheapest plan were not searched: more GPUs per "
            "replica, or the SLO missed at the capacity they would need; --all-shapes searches every one)"
        )
    print(_cheapest_text(args.rate, best))
    return 0


# ---- registration ----------------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add ``sweep`` and ``plan`` (``plan train``, ``plan serve``) to the CLI's subcommands."""
    add_sweep_parser(sub)
    _add_plan_serve_parser(add_plan_parser(sub))
