"""Text sections of the calibration report (``clustersim calibrate`` / ``clustersim fit`` print them).

Pure functions of a raw measurement file and a fitted profile: the measurement spread, the fitted
alignment classes, memory-bound bandwidth by op and size, the host cost per kernel, and the end-to-end
steps predicted against measured (every error printed with its sign).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from calibration.fit import fit_alignment, fit_host, moved_bytes
from hwmodels.profile import Profile, datasheet_profile

#: Sections whose records are timed points (median, IQR, n) and the time keys each holds.
_TIMED = {
    "gemm": ("ms",),
    "gemm_align": ("ms",),
    "attn_prefill": ("ms", "bwd_ms"),
    "attn_decode": ("ms",),
    "membw": ("ms",),
    "h2d": ("ms",),
    "e2e": ("ms",),
    "host_probe": ("ms",),
}


def spread_table(raw: dict[str, Any]) -> str:
    """Per section: timed points, repeats, median and worst IQR/median, and how many were re-measured."""
    lines = ["section        points  repeats  IQR/median: median   worst  re-measured"]
    for section, keys in _TIMED.items():
        spreads, ns, again = [], [], 0
        for r in raw.get(section, []):
            for k in keys:
                if r.get(f"{k}_iqr") is not None and r.get(k):
                    spreads.append(r[f"{k}_iqr"] / r[k])
                    ns.append(r.get("n" if k == "ms" else k.removesuffix("ms") + "n", 0))
                    again += bool(r.get("remeasured" if k == "ms" else k.removesuffix("ms") + "remeasured"))
        if spreads:
            lines.append(
                f"{section:14s} {len(spreads):6d} {int(np.median(ns)):8d} {np.median(spreads):19.1%} "
                f"{max(spreads):7.1%} {again:12d}"
            )
    if len(lines) == 1:
        return "(no spread recorded: these measurements predate repeated timing)"
    return "\n".join(lines)


def alignment_table(raw: dict[str, Any], profile: Profile) -> str:
    """Fitted alignment-class efficiencies beside the datasheet defaults."""
    default = datasheet_profile(profile.gpu).gemm_alignment
    _, ratios = fit_alignment(raw, default)
    if not ratios:
        return f"(no alignment GEMMs measured: defaults partial {default.partial:.2f}, odd {default.odd:.2f})"
    lines = ["class     GEMMs  fitted  default  ratios to the aligned neighbour"]
    for cls in ("partial", "odd"):
        if cls in ratios:
            each = " ".join(f"{v:.2f}" for v in ratios[cls])
            fitted, dflt = getattr(profile.gemm_alignment, cls), getattr(default, cls)
            lines.append(f"{cls:8s} {len(ratios[cls]):6d} {fitted:7.2f} {dflt:8.2f}  {each}")
    return "\n".join(lines)


def membound_table(raw: dict[str, Any], profile: Profile) -> str:
    """Achieved read+write bandwidth (fraction of HBM peak) per memory-bound op and size, and the fitted curve's."""
    rows = [r for r in raw.get("membw", []) if r.get("ms", 0) > 0]
    if not rows:
        return "(no memory-bound measurements)"
    sizes = sorted({r["bytes"] for r in rows})
    ops = sorted({r["op"] for r in rows})
    peak = profile.bandwidth_bytes_s
    head = "op              " + "".join(f"{_size(b):>8s}" for b in sizes)
    lines = [head]
    for op in ops:
        cells = {r["bytes"]: moved_bytes(r) / (r["ms"] / 1e3) / peak for r in rows if r["op"] == op}
        lines.append(f"{op:16s}" + "".join(f"{cells[b]:8.2f}" if b in cells else "       -" for b in sizes))
    model = [2 * b / profile.memory_op_time(2 * b) / peak for b in sizes]
    lines.append(f"{'fitted (copy)':16s}" + "".join(f"{m:8.2f}" for m in model))
    return "\n".join(lines)


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:g}{unit}"
    return f"{nbytes}B"


def host_line(raw: dict[str, Any]) -> str:
    """The fitted eager host cost per kernel and the probes it comes from."""
    h, n = fit_host(raw)
    if h is None:
        return "host cost per kernel: not measured"
    probes = ", ".join(f"{r['kernels']} kernels {r['ms']:.2f} ms" for r in raw.get("host_probe", []))
    return f"host cost per kernel (eager, launch-bound steps): {h * 1e6:.1f} us from {n} probes ({probes})"


def e2e_table(rows: list[tuple[str, float, float, str]]) -> str:
    """Measured vs predicted end-to-end steps, errors signed (predicted - measured) / measured."""
    if not rows:
        return "(no end-to-end steps measured)"
    lines = [f"(simulator prediction with stack {rows[0][3]!r})"]
    for label, measured, predicted, _ in rows:
        err = (predicted - measured) / measured
        ms = f"measured {measured * 1e3:9.3f} ms  predicted {predicted * 1e3:9.3f} ms"
        lines.append(f"  {label:40s} {ms}  {err:+.1%}")
    return "\n".join(lines)
