"""Fit a profile's cost-model parameters to kernel measurements (SciPy), with held-out errors.

Input is a raw measurement file (the schema of calibration/data/*-kernels-*.json: gemm, attn_prefill,
attn_decode, membw, h2d, power, meta; newer files add gemm_align, e2e and host_probe and a median, IQR
and count per point). Each op family's curve (``hwmodels.profile.Curve``) is fitted by least squares
on log(predicted / measured medians) using four fifths of its points; the held-out fifth gives the
reported error (MAPE and max). The shipped parameters are then refitted on all points. GEMM
predictions include the profile's shape efficiency (alignment class x tile/wave quantisation), so the
curve is what is left once the shape is accounted for. Also fitted: the alignment-class efficiencies
(ratio to the aligned neighbour), the memory-bound curve over all streaming ops, the eager host cost
per kernel (launch-bound e2e steps). Power parameters come from the NVML rows in closed form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from hwmodels.catalogue import get_gpu
from hwmodels.errors import ClusterSimError
from hwmodels.gemm_shapes import GemmTiling, reference_efficiency
from hwmodels.profile import Curve, GemmAlignment, PowerParams, Profile, datasheet_profile

HOLDOUT_FRACTION = 0.2
_TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float8_e4m3fn": "fp8"}


@dataclass(frozen=True)
class FitError:
    """Held-out error of one op family's fitted model."""

    family: str
    points: int
    held_out: int
    mape: float
    max_error: float
    mape_large: float | None = None  # GEMM with M >= 64 only

    def as_dict(self) -> dict[str, Any]:
        """The error's fields as a dict, unset ones (None) left out."""
        return {k: v for k, v in self.__dict__.items() if v is not None}


# ---- per-family predictors: (curve, record) -> seconds --------------------------------------------
def _gemm_pred(prof: Profile) -> Callable[[Curve, dict], float]:
    """The GEMM kernel alone (an fp8 record times ``_scaled_mm`` on pre-quantised inputs: no scaling pass)."""

    def pred(c: Curve, r: dict) -> float:
        dt = _TORCH_DTYPES.get(r["dtype"], r["dtype"])
        b = 4 if dt == "fp32" else (1 if dt == "fp8" else 2)
        m, n, k = r["M"], r["N"], r["K"]
        eff = prof.gemm_shape_efficiency(m, n, k, dt)
        flops, nbytes = 2.0 * m * n * k, b * (m * k + n * k + m * n)
        return c.time(flops, nbytes, prof.peak_flops(dt), prof.bandwidth_bytes_s, compute_eff=eff)

    return pred


def _attn_pred(prof: Profile, backward: bool) -> Callable[[Curve, dict], float]:
    def pred(c: Curve, r: dict) -> float:
        family = "attn_bwd" if backward else "attn_fwd"
        p = prof.model_copy(update={"curves": {**prof.curves, family: c}})
        return p.attention_prefill_time(r["b"], r["s"], r["h"], r["kvh"], r["d"], backward=backward)

    return pred


def _decode_pred(prof: Profile) -> Callable[[Curve, dict], float]:
    def pred(c: Curve, r: dict) -> float:
        p = prof.model_copy(update={"curves": {**prof.curves, "attn_decode": c}})
        return p.attention_decode_time(r["b"], r["L"], r["h"], r["kvh"], r["d"])

    return pred


#: Bytes moved per buffer byte of the legacy membw rows (no ``moved_bytes``; see the shared data schema).
_LEGACY_MOVED = {"d2d_copy": 2.0, "add": 3.0, "rms_norm": 2.0}
#: Memory-bound ops the membound curve is fitted to: pure streams (a fused RMSNorm is reported, not fitted).
STREAM_OPS = ("d2d_copy", "add", "mul", "cast_bf16_fp32", "cast_fp32_bf16", "sum", "mean")


def moved_bytes(r: dict) -> float:
    """Bytes a membw record's op reads plus writes."""
    return float(r.get("moved_bytes") or _LEGACY_MOVED.get(r["op"], 2.0) * r["bytes"])


def _membw_pred(prof: Profile) -> Callable[[Curve, dict], float]:
    def pred(c: Curve, r: dict) -> float:
        return c.time(0.0, moved_bytes(r), 1.0, prof.bandwidth_bytes_s)

    return pred


def membound_rows(raw: dict) -> list[dict]:
    """The membw rows the membound curve is fitted to: every streaming op of a file that records the bytes it
    moves; in older files (the shared H100 data, ``add`` was ``a + a``) the device-to-device copies only."""
    rows = [r for r in raw.get("membw", []) if r.get("ms", 0) > 0]
    if any("moved_bytes" in r for r in rows):
        return [r for r in rows if "moved_bytes" in r and r["op"] in STREAM_OPS]
    return [r for r in rows if r["op"] == "d2d_copy"]


def _fit_curve(records: Sequence[dict], pred: Callable[[Curve, dict], float], start: Curve, seconds) -> Curve:
    """Least squares on log-ratio errors over (eff_max, half_sat_s, mem_eff, floor_s)."""
    meas = np.array([seconds(r) for r in records])

    def curve(x: np.ndarray) -> Curve:
        return Curve(eff_max=x[0], half_sat_s=x[1], mem_eff=x[2], floor_s=x[3], source=start.source)

    def residuals(x: np.ndarray) -> np.ndarray:
        c = curve(x)
        return np.log(np.array([pred(c, r) for r in records]) / meas)

    x0 = np.array([start.eff_max, max(start.half_sat_s, 1e-7), start.mem_eff, max(start.floor_s, 1e-6)])
    sol = least_squares(
        residuals,
        x0,
        bounds=([0.05, 0.0, 0.05, 0.0], [1.0, 1e-2, 1.0, 1e-2]),
        x_scale=[0.1, 1e-5, 0.1, 1e-5],
        loss="soft_l1",  # robust to the odd outlier measurement (MAPE is what we report)
        f_scale=0.05,
    )
    return curve(sol.x)


def _errors(records: Sequence[dict], pred, c: Curve, seconds) -> np.ndarray:
    return np.array([abs(pred(c, r) - seconds(r)) / seconds(r) for r in records])


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.random.default_rng(seed).permutation(n)
    k = max(1, round(n * HOLDOUT_FRACTION))
    return idx[k:], idx[:k]


def fit_family(
    family: str, records: list[dict], pred, start: Curve, seconds, seed: int = 0, large=None
) -> tuple[Curve, FitError]:
    """Fit one family: held-out error from a 4/5 fit, shipped curve from a fit on every point."""
    if len(records) < 5:
        raise ClusterSimError(f"{family}: {len(records)} measurements are too few to fit; measure at least 5")
    train_idx, hold_idx = _split(len(records), seed)
    train = [records[i] for i in train_idx]
    hold = [records[i] for i in hold_idx]
    trial = _fit_curve(train, pred, start, seconds)
    err = _errors(hold, pred, trial, seconds)
    big = [r for r in hold if large and large(r)]
    err_big = _errors(big, pred, trial, seconds) if big else None
    final = _fit_curve(records, pred, start, seconds)
    final = final.model_copy(update={"source": f"fitted to {len(records)} measurements ({family})"})
    report = FitError(
        family=family,
        points=len(records),
        held_out=len(hold),
        mape=float(err.mean()),
        max_error=float(err.max()),
        mape_large=float(err_big.mean()) if err_big is not None and err_big.size else None,
    )
    return final, report


def _ms(key: str = "ms") -> Callable[[dict], float]:
    return lambda r: r[key] / 1e3


_GEMM_KIND = re.compile(r"gemm_(?P<dt>[a-z0-9]+)_(?:m(?P<m>\d+)_)?(?P<n>\d+)(?:_duty(?P<duty>\d+))?$")


def _power_points(raw: dict, peak_tflops: float, peak_bw_gbps: float, max_clock: float) -> list[dict[str, float]]:
    """The NVML windows as (duty, busy, compute util, memory util, clock ratio, measured W) points."""
    points = []
    full_clock_tflops: dict[int, float] = {}
    for r in raw.get("gemm", []):
        if r["M"] == r["N"] == r["K"] and _TORCH_DTYPES.get(r["dtype"], r["dtype"]) == "bf16":
            full_clock_tflops[r["M"]] = r["tflops"]  # short timed runs: not yet throttled
    for r in raw.get("power", []):
        kind, watts = r["kind"], r["avg_power_w_counter"]
        ratio = r.get("sm_clock_mhz_median", max_clock) / max_clock
        if kind.startswith("d2d_copy") and r.get("gbps_rw"):
            points.append(dict(duty=1.0, compute=0.0, memory=min(1.0, r["gbps_rw"] / peak_bw_gbps), ratio=1.0, w=watts))
            continue
        m = _GEMM_KIND.match(kind)
        if not m:
            continue
        n = int(m["n"])
        rows = int(m["m"] or n)
        duty = int(m["duty"]) / 100.0 if m["duty"] else 1.0
        duty = r.get("duty", duty)
        tflops = r.get("tflops") or full_clock_tflops.get(n)
        if not tflops:
            continue
        if m["duty"]:  # bursts at full clock (the median clock says the cap never bound)
            ratio = 1.0
            tflops = full_clock_tflops.get(n, tflops)
        seconds = 2.0 * rows * n * n / (tflops * 1e12)
        gbps = 2.0 * (2 * rows * n + n * n) / seconds / 1e9
        full = full_clock_tflops.get(n, 0.0) / peak_tflops if rows == n else 0.0  # the same GEMM, short run
        points.append(
            dict(
                duty=duty,
                compute=tflops / peak_tflops,
                memory=min(1.0, gbps / peak_bw_gbps),
                ratio=ratio,
                w=watts,
                full_compute=full,
            )
        )
    return points


def _clock_share(point: dict[str, float]) -> float:
    """Share of the GEMM's full-clock time that is SM cycles, from its throttled rate: the time at clock ratio r is
    ``share / r + 1 - share`` of the full-clock time, so share = (full / throttled - 1) / (1 / r - 1)."""
    return (point["full_compute"] / point["compute"] - 1.0) / (1.0 / point["ratio"] - 1.0)


def fit_power(raw: dict, base: PowerParams, max_clock: float, peak_tflops: float = 0.0) -> PowerParams:
    """Power parameters from the NVML windows (see hwmodels.power for the model).

    Idle and active idle are read directly; sm_active, compute and memory power and the clock
    exponent are fitted by least squares on the relative error of the loaded windows (copy, GEMMs,
    duty-cycled GEMM); ``clock_limited_eff`` is the throttled GEMM's work rate over the clock-scaled
    peak and ``clock_share`` how much of the same GEMM's full-clock time scales with the clock (its short,
    unthrottled timed run against the throttled window). With fewer windows than unknowns the exponent keeps the
    base value.
    """
    from hwmodels.power import activity_power_w

    rows = {r["kind"]: r for r in raw.get("power", [])}
    meta = raw.get("meta", {}).get("nvml", {})
    update: dict[str, Any] = {
        "idle_w": meta.get("power_w") or base.idle_w,
        "power_limit_w": meta.get("power_limit_w") or base.power_limit_w,
        "active_idle_w": rows.get("idle", {}).get("avg_power_w_counter", base.active_idle_w),
    }
    peak_bw = raw.get("_peak_bw_gbps")
    points = _power_points(raw, peak_tflops, peak_bw, max_clock) if peak_bw and peak_tflops else []
    throttled = [p for p in points if p["ratio"] < 0.999 and p["compute"] > 0]
    if throttled:
        update["clock_limited_eff"] = min(1.0, max(p["compute"] / p["ratio"] for p in throttled))
        shares = [_clock_share(p) for p in throttled if p.get("full_compute")]
        if shares:
            update["clock_share"] = max(0.0, min(1.0, sum(shares) / len(shares)))
    if len(points) >= 3:
        active = update["active_idle_w"]
        fit_k = len(points) >= 4

        def residuals(x: np.ndarray) -> list[float]:
            k = x[3] if fit_k else base.clock_power_exponent
            trial = base.model_copy(
                update={
                    "active_idle_w": active,
                    "sm_active_w": x[0],
                    "compute_dynamic_w": x[1],
                    "memory_dynamic_w": x[2],
                    "clock_power_exponent": k,
                }
            )
            out = []
            for p in points:
                load = activity_power_w(trial, 1.0, p["compute"], p["memory"], p["ratio"])
                out.append((p["duty"] * load + (1 - p["duty"]) * active) / p["w"] - 1.0)
            return out

        x0 = [50.0, base.compute_dynamic_w, base.memory_dynamic_w] + ([base.clock_power_exponent] if fit_k else [])
        lo, hi = [0.0, 0.0, 0.0] + ([0.5] if fit_k else []), [5e3, 5e3, 5e3] + ([4.0] if fit_k else [])
        sol = least_squares(residuals, x0, bounds=(lo, hi))
        update.update(sm_active_w=sol.x[0], compute_dynamic_w=sol.x[1], memory_dynamic_w=sol.x[2])
        if fit_k:
            update["clock_power_exponent"] = sol.x[3]
        kinds = ", ".join(sorted(rows))
        worst = max(abs(v) for v in sol.fun)
        update["source"] = f"fitted to NVML energy-counter windows ({kinds}); worst residual {worst:.1%}"
    return base.model_copy(update=update)


def fit_tiling(raw: dict, base: Profile) -> GemmTiling:
    """The profile's tiling with the measured SM count and the wave level of the measured large GEMMs.

    The GEMM curve is fitted to these shapes, so their geometric-mean wave efficiency (shapes with M >= 2048,
    as the default reference grid) is the level the curve already contains.
    """
    tiling = base.gemm_tiling
    sms = raw.get("meta", {}).get("sms") or tiling.sms
    shapes = sorted({(r["M"], r["N"]) for r in raw.get("gemm", []) if r["M"] >= 2048})
    update: dict[str, Any] = {"sms": sms}
    if shapes and sms:
        update["reference_eff"] = reference_efficiency(shapes, sms, tiling.tiles)
        update["source"] = f"{tiling.source}; SMs and reference level from {len(shapes)} measured GEMM shapes"
    return tiling.model_copy(update=update)


def _fit_gemms(raw: dict, base: Profile, seed: int) -> tuple[dict[str, Curve], list[FitError]]:
    """One GEMM curve per measured dtype (unmeasured dtypes keep the base's), and the combined error."""
    errors: list[FitError] = []
    by_dtype: dict[str, Curve] = dict(base.gemm_by_dtype)  # defaults for dtypes not measured (e.g. fp8)
    pred = _gemm_pred(base)
    for dtype in sorted({r["dtype"] for r in raw.get("gemm", [])}):
        rows = [r for r in raw["gemm"] if r["dtype"] == dtype]
        dt = _TORCH_DTYPES.get(dtype, dtype)
        c, e = fit_family(f"gemm_{dt}", rows, pred, base.curves["gemm"], _ms(), seed, large=lambda r: r["M"] >= 64)
        by_dtype[dt] = c
        errors.append(e)
    if raw.get("gemm"):
        measured = {_TORCH_DTYPES.get(r["dtype"], r["dtype"]) for r in raw["gemm"]}
        fitted = {k: v for k, v in by_dtype.items() if k in measured}
        errors.append(_combined("gemm", raw["gemm"], pred, fitted, seed))
    return by_dtype, errors


def _fit_families(raw: dict, base: Profile, seed: int) -> tuple[dict[str, Curve], list[FitError]]:
    """Attention forward/backward, decode and memory-bound curves (families with >= 5 points)."""
    curves, errors = dict(base.curves), []
    families = [
        ("attn_fwd", raw.get("attn_prefill", []), _attn_pred(base, False), _ms("ms")),
        ("attn_bwd", raw.get("attn_prefill", []), _attn_pred(base, True), _ms("bwd_ms")),
        ("attn_decode", raw.get("attn_decode", []), _decode_pred(base), _ms("ms")),
        ("membound", membound_rows(raw), _membw_pred(base), _ms("ms")),
    ]
    for family, records, pred, seconds in families:
        rows = [r for r in records if seconds(r) > 0]
        if len(rows) >= 5:
            curves[family], e = fit_family(family, rows, pred, base.curves[family], seconds, seed)
            errors.append(e)
    return curves, errors


def fit_alignment(raw: dict, base: GemmAlignment) -> tuple[GemmAlignment, dict[str, list[float]]]:
    """Per-class GEMM efficiency: each misaligned GEMM's per-FLOP speed over its aligned neighbour's.

    Classes follow :class:`~hwmodels.profile.GemmAlignment` (``partial``: 4- or 8-byte aligned; ``odd``); the
    geometric mean of each class's ratios (clipped to (0.05, 1]) replaces the default. Without alignment rows
    the base is returned unchanged.
    """
    rows = raw.get("gemm_align", [])
    aligned = {r["group"]: r for r in rows if r.get("class") == "aligned"}
    ratios: dict[str, list[float]] = {}
    for r in rows:
        ref = aligned.get(r.get("group"))
        if ref is None or r.get("class") not in ("partial", "odd"):
            continue
        per_flop = (ref["ms"] / (ref["M"] * ref["N"] * ref["K"])) / (r["ms"] / (r["M"] * r["N"] * r["K"]))
        ratios.setdefault(r["class"], []).append(per_flop)
    if not ratios:
        return base, ratios
    fitted = {c: float(np.clip(np.exp(np.mean(np.log(v))), 0.05, 1.0)) for c, v in ratios.items()}
    counts = ", ".join(f"{c} {len(v)}" for c, v in sorted(ratios.items()))
    source = f"fitted: ratio to the aligned neighbour per FLOP, geometric mean ({counts} GEMMs)"
    return base.model_copy(update={**fitted, "source": source}), ratios


def fit_host(raw: dict) -> tuple[float | None, int]:
    """Eager host seconds per launched kernel: the slope of step time over kernel count of the launch-bound
    tiny training steps (``host_probe``); their ratio when only one probe exists. (None, 0) without probes."""
    pts = [(r["kernels"], r["ms"] / 1e3) for r in raw.get("host_probe", []) if r.get("kernels", 0) > 0]
    if not pts:
        return None, 0
    n = np.array([p[0] for p in pts], dtype=float)
    t = np.array([p[1] for p in pts])
    if len(pts) >= 2 and np.ptp(n) > 0:
        slope = float(np.polyfit(n, t, 1)[0])
        if slope > 0:
            return slope, len(pts)
    return float(np.median(t / n)), len(pts)


def fit_profile(raw: dict, gpu: str | None = None, seed: int = 0) -> tuple[Profile, list[FitError]]:
    """Fit every family present in ``raw`` and return the calibrated profile and its held-out errors."""
    name = gpu or raw.get("meta", {}).get("name")
    if not name:
        raise ClusterSimError("the raw file has no meta.name; pass the GPU id (e.g. --gpu h100-sxm5-80gb)")
    spec = get_gpu(name)
    base = datasheet_profile(spec.id)
    alignment, _ = fit_alignment(raw, base.gemm_alignment)
    base = base.model_copy(update={"gemm_tiling": fit_tiling(raw, base), "gemm_alignment": alignment})
    by_dtype, errors = _fit_gemms(raw, base, seed)
    curves, more = _fit_families(raw, base, seed)
    errors += more
    if "bf16" in by_dtype and raw.get("gemm"):
        curves["gemm"] = by_dtype["bf16"]
    h2d = [r for r in raw.get("h2d", []) if r["bytes"] >= 1 << 24]
    host = float(np.median([r["gbps"] for r in h2d])) if h2d else base.host_link_gbps
    host_kernel, _ = fit_host(raw)
    raw = {**raw, "_peak_bw_gbps": base.memory_bandwidth_gbps}
    meta = raw.get("meta", {})
    profile = base.model_copy(
        update={
            "kind": "calibrated",
            "source": f"calibrated on {meta.get('name', spec.id)} ({meta.get('time', 'unknown date')})",
            "curves": curves,
            "gemm_by_dtype": by_dtype,
            "host_link_gbps": host,
            "host_s_per_kernel": host_kernel,
            "power": fit_power(raw, base.power, spec.boost_clock_mhz, base.peak_tflops["bf16"]),
            "meta": {
                "gpu_name": meta.get("name"),
                "driver": meta.get("nvml", {}).get("driver"),
                "torch": meta.get("torch"),
                "cuda": meta.get("cuda"),
                "measured": meta.get("time"),
                "fitted": date.today().isoformat(),
                "fit_errors": [e.as_dict() for e in errors],
                "holdout_fraction": HOLDOUT_FRACTION,
            },
        }
    )
    return Profile.model_validate(profile.model_dump()), errors


def _combined(family: str, rows: list[dict], pred, by_dtype: dict[str, Curve], seed: int) -> FitError:
    """Held-out error over all GEMM dtypes together (each point predicted by its dtype's 4/5 fit)."""
    errs, big = [], []
    for dtype, curve in by_dtype.items():
        sub = [r for r in rows if _TORCH_DTYPES.get(r["dtype"], r["dtype"]) == dtype]
        train_idx, hold_idx = _split(len(sub), seed)
        trial = _fit_curve([sub[i] for i in train_idx], pred, curve, _ms())
        for i in hold_idx:
            r = sub[i]
            e = abs(pred(trial, r) - r["ms"] / 1e3) / (r["ms"] / 1e3)
            errs.append(e)
            if r["M"] >= 64:
                big.append(e)
    return FitError(
        family, len(rows), len(errs), float(np.mean(errs)), float(np.max(errs)), float(np.mean(big)) if big else None
    )


def read_raw(path: str | Path) -> dict:
    """Load a raw measurement file with a one-line error when it is missing or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ClusterSimError(f"cannot read measurements {path}: {exc}") from None
    if not isinstance(data, dict) or not any(k in data for k in ("gemm", "attn_prefill", "membw")):
        raise ClusterSimError(f"{path} holds no kernel measurements (expected keys gemm, attn_prefill, membw, ...)")
    return data


def format_errors(errors: list[FitError]) -> str:
    """A small table of held-out errors for the CLI."""
    lines = ["family          points  held-out   MAPE     max   MAPE (M>=64)"]
    for e in errors:
        big = f"{e.mape_large:7.1%}" if e.mape_large is not None else "      -"
        lines.append(f"{e.family:14s} {e.points:7d} {e.held_out:9d} {e.mape:7.1%} {e.max_error:7.1%}   {big}")
    return "\n".join(lines)
