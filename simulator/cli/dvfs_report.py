"""What ``clustersim dvfs`` prints: the sweep's table (infeasible settings marked, with why) and its optima.

:mod:`simulator.cli.run` registers the command and runs the sweep (:func:`simulator.search.dvfs.sweep`);
the text and the JSON summary are built here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from simulator.cli.textfmt import fmt, table
from simulator.search import dvfs

__all__ = ["dvfs_summary", "dvfs_text"]


def _unit(points: Sequence[dvfs.DvfsPoint]) -> str:
    return "MHz" if points[0].setting == "clock" else "W"


def dvfs_summary(points: Sequence[dvfs.DvfsPoint]) -> dict[str, Any]:
    """``dvfs --json``: every point (infeasible ones with ``feasible`` false and a ``reason``) and the optima."""
    best, best_fac = dvfs.optimum(points), dvfs.optimum(points, "facility_j_per_token")
    rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in dvfs.to_rows(points)]
    return {"points": rows, "gpu_energy_optimum": best.value, "facility_energy_optimum": best_fac.value}


def dvfs_text(points: Sequence[dvfs.DvfsPoint]) -> str:
    """The table of a DVFS sweep (one clock column: the run's own clock only under a cap, where it differs from
    the setting), the infeasible settings with their reason, and the least-energy settings."""
    setting, unit = points[0].setting, _unit(points)
    best, best_fac = dvfs.optimum(points), dvfs.optimum(points, "facility_j_per_token")
    rows = dvfs.to_rows(points)
    for r in rows:
        if r["feasible"]:
            r["front"] = "*" if r["pareto"] else ""
            r["fac_mj"] = r["facility_energy_j"] / r["work"] * 1e3
        else:
            r.update(dict.fromkeys(("sm_clock_mhz", "time_s", "avg_gpu_power_w", "gpu_mj_per_token", "fac_mj")))
            r["front"] = "infeasible"
    columns = [("value", f"{setting} {unit}")]
    if setting == "cap":  # under a clock lock the run's clock is the setting: no second clock column
        columns.append(("sm_clock_mhz", "SM clock MHz"))
    columns += [
        ("time_s", "time s"),
        ("avg_gpu_power_w", "GPU W"),
        ("gpu_mj_per_token", "GPU mJ/token"),
        ("fac_mj", "facility mJ/token"),
        ("front", "Pareto"),
    ]
    lines = [table(rows, columns)]
    bad = [p for p in points if not p.feasible]
    if bad:
        lines.append("")
        lines += [f"{fmt(p.value)} {unit} is infeasible: {p.reason}" for p in bad]
    lines.append(
        f"\nleast GPU energy per token at {fmt(best.value)} {unit}; least facility energy (hosts and PUE too) at "
        f"{fmt(best_fac.value)} {unit}. Pareto = energy-time front of the feasible settings."
    )
    return "\n".join(lines)
