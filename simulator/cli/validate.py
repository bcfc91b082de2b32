"""Validation commands: ``validate`` (training tables, serving benchmarks, energy footprints) and ``claims``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hwmodels.errors import ClusterSimError
from hwmodels.fileio import atomic_write
from simulator.cli.common import add_json_arg, print_json
from simulator.cli.textfmt import table

__all__ = [
    "TRAINING_TABLES",
    "cmd_claims",
    "cmd_validate",
    "cmd_validate_energy",
    "cmd_validate_serving",
    "register",
]

#: The published training tables ``validate training`` compares with (``--table`` choices).
TRAINING_TABLES = (
    "megatron-table1",
    "megatron-table2",
    "vtrain-single",
    "vtrain-multi",
    "deepseek-v3",
    "real-stacks",
    "large-scale",
    "offload",
)

_CLAIM_COLUMNS = [
    ("id", "claim"),
    ("technique", "technique"),
    ("predicted_effect", "clustersim predicts"),
    ("verdict", "verdict"),
]
_FOOTPRINT_COLUMNS = [
    ("model", "model"),
    ("basis", "basis"),
    ("gpu_hours", "GPU-hours"),
    ("published_mwh", "published MWh"),
    ("predicted_mwh", "predicted MWh"),
    ("e_err", "error"),
    ("published_tco2e", "published tCO2e"),
    ("predicted_tco2e", "predicted tCO2e"),
    ("c_err", "error"),
]
_COMPARISON_COLUMNS = [("label", "row"), ("published", "published"), ("predicted", "predicted"), ("error", "error")]


# ---- claims ----------------------------------------------------------------------------------------


def cmd_claims(args: argparse.Namespace) -> int:
    """``clustersim claims``: every claim scenario's prediction and verdict (--out: the full Markdown)."""
    from simulator.validation.claims import format_claims, run_claims, to_markdown

    rows = run_claims(args.only or None)
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise ClusterSimError(f"--out {out} is a directory; name a Markdown file, e.g. {out / 'claims.md'}")
        try:
            atomic_write(out, to_markdown(rows))
        except OSError as exc:
            raise ClusterSimError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    if args.json:
        print_json([r.as_dict() for r in rows])
        return 0
    print(format_claims(rows))
    if args.out:
        print(f"\nfull table with baselines and reasons: {args.out}")
    return 0


# ---- validate energy -------------------------------------------------------------------------------


def _footprint_data() -> list[dict[str, Any]]:
    """Published training footprints next to the tdp-mode bookkeeping's prediction, one dict per model."""
    from simulator.energy.carbon import footprint_rows

    return [
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
        for c in footprint_rows()
    ]


def cmd_validate_energy(args: argparse.Namespace) -> int:
    """``clustersim validate energy``: published training footprints vs the tdp-mode bookkeeping."""
    from simulator.energy.carbon import FOOTPRINT_BASES

    data = _footprint_data()
    if args.json:
        print_json(data)
        return 0
    for d in data:
        d["e_err"] = "-" if d["energy_error"] is None else f"{d['energy_error']:+.2%}"
        d["c_err"] = f"{d['tco2e_error']:+.2%}"
    print("Published training footprints vs tdp-mode bookkeeping (GPU-hours x power x PUE x grid intensity)")
    print(table(data, _FOOTPRINT_COLUMNS))
    worst = max(max(abs(d["energy_error"] or 0), abs(d["tco2e_error"])) for d in data)
    print(f"worst |error| {worst:.2%}")
    for basis, text in FOOTPRINT_BASES.items():
        print(f"  {basis}: {text}")
    return 0


# ---- validate serving ------------------------------------------------------------------------------

_SERVING_COLUMNS = [
    ("id", "row"),
    ("preset", "preset"),
    ("metric", "metric"),
    ("published", "published"),
    ("predicted", "predicted"),
    ("error", "error"),
]


def cmd_validate_serving(args: argparse.Namespace) -> int:
    """``clustersim validate serving``: published vLLM / SGLang / TensorRT-LLM benchmarks vs the serving simulator."""
    from simulator.validation.serving import serving_report, summary_by_family

    report = serving_report(args.file, args.profile)
    comps = report.comparisons
    families = summary_by_family(report)
    if args.json:
        print_json(
            {
                "rows": [
                    {
                        "id": c.label,
                        "preset": report.presets[c.label],
                        "metric": report.rows[c.label]["metric"],
                        "published": c.published,
                        "predicted": c.predicted,
                        "error": c.error,
                    }
                    for c in comps
                ],
                "families": families,
                "skipped": [{"id": rid, "reason": why} for rid, why in report.skipped],
            }
        )
        return 0
    print(f"Published serving benchmarks vs clustersim ({len(comps)} rows simulated, {len(report.skipped)} left out)")
    rows = [
        {
            "id": c.label,
            "preset": report.presets[c.label],
            "metric": report.rows[c.label]["metric"],
            "published": f"{c.published:.4g} {c.unit}",
            "predicted": f"{c.predicted:.4g} {c.unit}",
            "error": f"{c.error:+.1%}",
        }
        for c in comps
    ]
    if rows:
        print(table(rows, _SERVING_COLUMNS))
    print("\nMAPE by metric family:")
    for name, s in families.items():
        mape, signed = s["mape"], s["mean_signed_error"]
        print(f"  {name:10s} {int(s['rows']):3d} rows  MAPE {mape:6.1%}  mean signed error {signed:+6.1%}")
    if comps:
        _print_by_source("serving", comps, report.skipped, lambda c: report.rows[c.label]["source"][:48], 48)
    else:
        for rid, why in report.skipped:
            print(f"  skipped {rid}: {why}")
    return 0


# ---- validate training -----------------------------------------------------------------------------


def _print_comparisons(name: str, comps: list[Any], summary: dict[str, float], show_all: bool) -> None:
    """One table's rows (its 10 largest errors unless ``show_all`` or short) and its error summary."""
    print(f"\n{name} ({len(comps)} rows, {comps[0].unit})")
    shown = comps if show_all or len(comps) <= 20 else sorted(comps, key=lambda c: -abs(c.error))[:10]
    if shown is not comps:
        print("(the 10 largest errors; --all prints every row)")
    rows = [
        {"label": c.label, "published": c.published, "predicted": c.predicted, "error": f"{c.error:+.1%}"}
        for c in shown
    ]
    print(table(rows, _COMPARISON_COLUMNS))
    print(
        f"MAPE {summary['mape']:.1%}, max |error| {summary['max_abs_error']:.1%}, mean signed error "
        f"{summary['mean_signed_error']:+.1%}"
    )


def _real_stacks(args: argparse.Namespace) -> list[Any]:
    """The open-stack throughput table; per-source errors and the rows left out go to the text report."""
    from simulator.validation.real_stacks import real_stacks

    comps, skipped = real_stacks(args.profile, args.rows)
    if not args.json:
        _print_by_source("real-stacks", comps, skipped, lambda c: c.label.split("-")[0], 12)
    return comps


def _print_by_source(table: str, comps: list[Any], skipped: list[tuple[str, str]], source_of: Any, width: int) -> None:
    """Per-source row count, MAPE and mean signed error of ``comps``, then the rows left out and why."""
    from simulator.validation import tables as V

    by_source: dict[str, list[Any]] = {}
    for c in comps:
        by_source.setdefault(source_of(c), []).append(c)
    print(f"\n{table} by source:")
    for name, rows in sorted(by_source.items()):
        s = V.summary(rows)
        mape, signed = s["mape"], s["mean_signed_error"]
        print(f"  {name:{width}s} {len(rows):3d} rows  MAPE {mape:6.1%}  mean signed error {signed:+6.1%}")
    for rid, why in skipped:
        print(f"  skipped {rid}: {why}")
    for c in comps:
        if c.note:
            print(f"  note {c.label}: {c.note}")


def _large_scale(args: argparse.Namespace) -> list[Any]:
    """Published runs on up to 16K GPUs; per-source errors and the rows left out go to the text report."""
    from simulator.validation.large_scale import large_scale_report, large_scale_rows, row_id

    comps, skipped = large_scale_report(args.profile)
    if not args.json:
        source = {r["id"]: r["source"] for r in large_scale_rows()}
        _print_by_source("large-scale", comps, skipped, lambda c: source[row_id(c.label)], 58)
    return comps


def _offload(args: argparse.Namespace) -> list[Any]:
    """Published ZeRO-Offload/Infinity and parameter-server runs; per-source errors in the text report."""
    from simulator.validation.large_scale import row_id
    from simulator.validation.offload import offload_report, offload_rows

    comps, skipped = offload_report(args.profile)
    if not args.json:
        source = {r["id"]: r["source"] for r in offload_rows()}
        _print_by_source("offload", comps, skipped, lambda c: source[row_id(c.label)], 58)
    return comps


def cmd_validate(args: argparse.Namespace) -> int:
    """``clustersim validate training|energy``: predictions vs the published tables, with error summaries."""
    from simulator.validation import tables as V

    if args.what == "energy":
        return cmd_validate_energy(args)
    if args.what == "serving":
        return cmd_validate_serving(args)
    runners = {
        "megatron-table1": lambda: V.megatron_table1(args.profile, args.rows),
        "megatron-table2": lambda: V.megatron_table2(args.profile),
        "vtrain-single": lambda: V.vtrain_single(args.profile, args.rows),
        "vtrain-multi": lambda: V.vtrain_multi(args.profile, args.rows),
        "deepseek-v3": lambda: V.deepseek_v3(args.profile),
        "real-stacks": lambda: _real_stacks(args),
        "large-scale": lambda: _large_scale(args),
        "offload": lambda: _offload(args),
    }
    report = {}
    for name in args.table or list(runners):
        comps = runners[name]()
        report[name] = {
            "summary": V.summary(comps),
            "rows": [
                {"label": c.label, "published": c.published, "predicted": c.predicted, "unit": c.unit, "error": c.error}
                | ({"note": c.note} if c.note else {})
                for c in comps
            ],
        }
        if not args.json:
            _print_comparisons(name, comps, report[name]["summary"], args.all)
    if args.json:
        print_json(report)
    return 0


# ---- registration ----------------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add ``claims`` and ``validate`` to the CLI's subcommands."""
    p = sub.add_parser(
        "claims",
        help="test the source material's claims C1-C18 against clustersim's models",
        description="Run every claim scenario (bundled claims/*.yaml) and print what clustersim predicts and a "
        "verdict.",
    )
    p.add_argument("--only", action="append", metavar="CN", help="only this claim (repeatable), e.g. --only C5")
    p.add_argument("--out", help="also write the full table as Markdown (e.g. docs/claims.md)")
    add_json_arg(p)
    p.set_defaults(func=cmd_claims)
    p = sub.add_parser(
        "validate",
        help="compare predictions with published measurements",
        description="Simulate every row of the published training tables or serving benchmarks and print the errors.",
    )
    p.add_argument("what", choices=["training", "serving", "energy"], help="which validation suite")
    p.add_argument("--table", action="append", choices=list(TRAINING_TABLES), help="only these tables (repeatable)")
    p.add_argument("--rows", type=int, default=None, help="only the first N rows of each table")
    p.add_argument("--all", action="store_true", help="print every row, not just the largest errors")
    p.add_argument("--profile", default=None, help="hardware profile (default: the GPU's own)")
    p.add_argument(
        "--file", default=None, help="serving: a CSV of published rows in serving_published.csv's columns (default: it)"
    )
    add_json_arg(p)
    p.set_defaults(func=cmd_validate)
