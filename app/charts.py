"""Chart builders for the app: config/result in, Plotly figure (or DataFrame) out.

Pure functions with no Streamlit import, so they are unit-tested directly (AppTest does not
render Plotly). Times stay in simulated seconds: ``px.timeline`` would force dates, so the Gantt
is drawn with horizontal ``go.Bar`` traces (``base`` = start, ``x`` = duration), one trace per
category so thousands of events stay one cheap trace each.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hwmodels.dtypes import normalize_dtype

# ---- training ------------------------------------------------------------------------------------

#: Gantt categories and colours: compute phases, then one colour per communication stream.
CATEGORY_COLORS: dict[str, str] = {
    "forward": "#4C78A8",
    "backward": "#F58518",
    "weight": "#54A24B",
    "optimizer": "#B279A2",
    "comm tp": "#E45756",
    "comm cp": "#FF9DA6",
    "comm ep": "#9D755D",
    "comm pp": "#72B7B2",
    "comm dp": "#EECA3B",
}
_PHASE_CATEGORY = {"F": "forward", "B": "backward", "W": "weight", "OPT": "optimizer"}
#: Communication sub-lanes under each rank's compute lane (so overlapping streams stay visible).
COMM_LANES = ("tp", "cp", "ep", "pp", "dp")
_COMPUTE_OFFSET, _COMPUTE_WIDTH = -0.42, 0.5
_LANE_START, _LANE_STEP = 0.1, 0.066


def _note(text: str) -> dict:
    """A small caption above the plot area, left-aligned (how to read the chart)."""
    return {
        "text": text,
        "xref": "paper",
        "yref": "paper",
        "x": 0,
        "y": 1.0,
        "yanchor": "bottom",
        "showarrow": False,
        "font": {"size": 11},
    }


def event_category(stream: str, phase: str) -> str:
    """Gantt category of one timeline event: its compute phase, or ``comm <stream>``."""
    if stream == "compute":
        return _PHASE_CATEGORY.get(phase, str(phase).lower())
    return f"comm {stream}"


def rank_label(rank: int) -> str:
    """Axis label of a pipeline rank."""
    return f"rank {rank}"


def pipeline_gantt(timeline: Any, max_ranks: int = 16) -> go.Figure:
    """Ranks x time of one step: compute bars per phase, thin lanes below for each comm stream.

    Idle gaps on a rank's compute lane are the pipeline bubbles. Only the first ``max_ranks``
    ranks are drawn (the title says how many there are).
    """
    events = timeline.events if timeline is not None else ()
    ranks = sorted({e[2] for e in events})
    shown = set(ranks[:max_ranks])
    groups: dict[str, dict[str, list]] = {}
    for start, end, rank, stream, name, phase, mb, chunk in events:
        if rank not in shown:
            continue
        cat = event_category(stream, phase)
        g = groups.setdefault(cat, {"base": [], "x": [], "y": [], "text": []})
        g["base"].append(start)
        g["x"].append(end - start)
        g["y"].append(rank_label(rank))
        where = f"mb {mb} chunk {chunk}" if mb is not None and mb >= 0 else f"chunk {chunk}"
        g["text"].append(f"{name}<br>{where}<br>{start * 1e3:.3f} - {end * 1e3:.3f} ms")
    order = list(CATEGORY_COLORS) + sorted(set(groups) - set(CATEGORY_COLORS))
    fig = go.Figure()
    for cat in order:
        if cat not in groups:
            continue
        g = groups[cat]
        if cat.startswith("comm "):
            stream = cat.removeprefix("comm ")
            lane = COMM_LANES.index(stream) if stream in COMM_LANES else len(COMM_LANES) - 1
            offset, width = _LANE_START + lane * _LANE_STEP, _LANE_STEP * 0.9
        else:
            offset, width = _COMPUTE_OFFSET, _COMPUTE_WIDTH
        fig.add_trace(
            go.Bar(
                base=g["base"],
                x=g["x"],
                y=g["y"],
                orientation="h",
                name=cat,
                offset=offset,
                width=width,
                marker={"color": CATEGORY_COLORS.get(cat, "#BAB0AC"), "line": {"width": 0}},
                hovertext=g["text"],
                hovertemplate="%{hovertext}<extra>" + cat + "</extra>",
            )
        )
    labels = [rank_label(r) for r in ranks[:max_ranks]]
    more = f" (first {len(labels)} of {len(ranks)} ranks)" if len(ranks) > len(labels) else ""
    fig.update_layout(
        title=f"One training step per pipeline rank{more}",
        barmode="overlay",
        xaxis_title="time (s)",
        yaxis={"categoryorder": "array", "categoryarray": labels, "autorange": "reversed", "title": None},
        legend={"orientation": "h", "y": -0.2},
        height=max(260, 60 + 42 * len(labels)),
        margin={"t": 60, "b": 40},
        annotations=[_note("gaps on a rank's compute lane = pipeline bubble (idle); thin lanes: tp/cp/ep/pp/dp comm")],
    )
    return fig


MEMORY_PARTS = ("weights", "gradients", "optimizer", "activations", "buffers", "fragmentation")
_MEMORY_COLORS = ("#4C78A8", "#F58518", "#E45756", "#72B7B2", "#54A24B", "#BAB0AC")


def _as_dict(obj: Any) -> dict[str, Any]:
    return dict(obj) if isinstance(obj, Mapping) else obj.model_dump()


def memory_bar(memory_report: Any) -> go.Figure:
    """Stacked per-GPU memory (GB) of the fullest rank against the capacity line.

    ``memory_report`` is a MemoryReport (or its dict), or a mapping label -> report to put plans
    side by side (the A-vs-B view).
    """
    reports = (
        {"": memory_report}
        if not isinstance(memory_report, Mapping) or "weights" in memory_report
        else dict(memory_report)
    )
    rows = {label: _as_dict(r) for label, r in reports.items()}
    xs = [f"{label + ' ' if label else ''}(stage {int(r.get('stage', 0))})" for label, r in rows.items()]
    fig = go.Figure()
    for part, color in zip(MEMORY_PARTS, _MEMORY_COLORS, strict=True):
        fig.add_trace(
            go.Bar(
                x=xs,
                y=[r[part] for r in rows.values()],
                name=part,
                marker_color=color,
                hovertemplate="%{y:.2f} GB<extra>" + part + "</extra>",
            )
        )
    capacity = min(r["capacity"] for r in rows.values())
    peak = max(sum(r[p] for p in MEMORY_PARTS) for r in rows.values())
    fig.add_hline(
        y=capacity,
        line_dash="dash",
        line_color="black",
        annotation_text=f"usable capacity {capacity:.1f} GB ({capacity * 1e9 / 2**30:.1f} GiB)",
        annotation_position="top left",
    )
    fig.update_layout(
        barmode="stack",
        title="Memory per GPU (fullest pipeline stage)",
        yaxis_title="GB (10^9 bytes)",
        yaxis_range=[0, max(capacity, peak) * 1.12],
        legend={"orientation": "h", "y": -0.15},
    )
    return fig


COMM_KINDS = ("tp", "cp", "ep", "pp", "dp")


def comm_breakdown(exposed_comm_s: Mapping[str, Any]) -> go.Figure:
    """Exposed (not hidden under compute) communication per kind, seconds per step.

    Takes one ``{kind: seconds}`` mapping, or ``{plan label: {kind: seconds}}`` for grouped bars.
    """
    nested = bool(exposed_comm_s) and all(isinstance(v, Mapping) for v in exposed_comm_s.values())
    plans = dict(exposed_comm_s) if nested else {"exposed": exposed_comm_s}
    kinds = [k for k in COMM_KINDS if any(k in p for p in plans.values())]
    kinds += sorted({k for p in plans.values() for k in p} - set(kinds))
    fig = go.Figure()
    for label, comm in plans.items():
        fig.add_trace(
            go.Bar(
                x=kinds,
                y=[float(comm.get(k, 0.0)) for k in kinds],
                name=label,
                hovertemplate="%{x}: %{y:.4f} s<extra>" + label + "</extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        title="Exposed communication per step",
        xaxis_title="collective kind",
        yaxis_title="seconds",
        showlegend=nested,
    )
    return fig


def _training_metrics(r: Any) -> dict[str, float | None]:
    mem = r.memory_per_gpu_gb
    out: dict[str, float | None] = {
        "step time (s)": r.step_time_s,
        "tokens/s": r.tokens_per_s,
        "tokens/s per GPU": r.tokens_per_s_per_gpu,
        "model TFLOP/s per GPU": r.tflops_per_gpu,
        "MFU": r.mfu,
        "HFU": r.hfu,
        "pipeline bubble (fraction of busy time)": r.bubble_fraction,
        "peak memory per GPU (GB)": mem.peak,
        "memory capacity (GB)": mem.capacity,
        "fits in memory (1 = yes)": 1.0 if r.fits_in_memory else 0.0,
        "micro-batches per step": float(r.num_microbatches),
    }
    for k in COMM_KINDS:
        out[f"exposed {k} comm (s)"] = float(r.exposed_comm_s.get(k, 0.0))
    out["time to train (days)"] = r.time_to_train_days
    return out


def compare_table(result_a: Any, result_b: Any) -> pd.DataFrame:
    """Metric-by-metric A vs B: columns metric, A, B, difference (B - A) and change (B/A - 1)."""
    a, b = _training_metrics(result_a), _training_metrics(result_b)
    rows = []
    for metric in a:
        va, vb = a[metric], b[metric]
        if va is None or vb is None:
            continue
        diff = vb - va
        change = diff / va if va else (0.0 if diff == 0 else math.nan)
        rows.append({"metric": metric, "A": va, "B": vb, "difference": diff, "change": change})
    return pd.DataFrame(rows, columns=["metric", "A", "B", "difference", "change"])


# ---- serving -------------------------------------------------------------------------------------

_STATS = ("mean", "p50", "p90", "p99")


def latency_percentiles(result: Any) -> go.Figure:
    """TTFT, TPOT and end-to-end latency (mean/p50/p90/p99, ms), one panel each (different scales)."""
    series = [("TTFT", result.ttft_s), ("TPOT", result.tpot_s), ("E2E", result.e2e_s)]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("time to first token", "time per output token", "end to end"))
    for i, (name, pct) in enumerate(series, start=1):
        fig.add_trace(
            go.Bar(
                x=list(_STATS),
                y=[getattr(pct, s) * 1e3 for s in _STATS],
                name=name,
                hovertemplate="%{x}: %{y:.1f} ms<extra>" + name + "</extra>",
            ),
            row=1,
            col=i,
        )
        fig.update_yaxes(title_text="ms" if i == 1 else None, row=1, col=i)
    fig.update_layout(title="Latency percentiles", showlegend=False)
    return fig


def kv_occupancy(result: Any, max_points: int = 4000) -> go.Figure:
    """KV-cache blocks in use over time, per replica (downsampled to ``max_points`` per replica)."""
    df = result.kv_occupancy_frame()
    fig = go.Figure()
    for replica, part in df.groupby("replica", sort=True):
        step = max(1, math.ceil(len(part) / max_points))
        part = part.iloc[::step]
        fig.add_trace(
            go.Scattergl(
                x=part["time_s"],
                y=part["kv_used_fraction"] * 100.0,
                mode="lines",
                name=f"replica {replica}",
            )
        )
    fig.update_layout(
        title=f"KV cache occupancy (peak {result.kv_peak_utilization:.0%})",
        xaxis_title="time (s)",
        yaxis_title="% of KV blocks in use",
        yaxis_range=[0, 105],
    )
    return fig


def iteration_batches(timeline: Any) -> pd.DataFrame:
    """Per serving iteration: start, decodes in the batch, prefill tokens and phase (from the timeline)."""
    rows = []
    for start, _end, replica, _stream, name, phase, _mb, _chunk in timeline.events if timeline else ():
        if not str(name).startswith("iter p"):
            continue
        prefill, _, decodes = name.removeprefix("iter p").partition(" d")
        rows.append(
            {
                "start_s": start,
                "replica": replica,
                "prefill_tokens": int(prefill),
                "decodes": int(decodes),
                "phase": phase,
            }
        )
    return pd.DataFrame(rows, columns=["start_s", "replica", "prefill_tokens", "decodes", "phase"])


def batch_sizes(result: Any) -> go.Figure:
    """How many sequences decode per engine iteration, stacked by iteration kind.

    Read from the serving timeline (``iter p<prefill tokens> d<decodes>``); falls back to
    ``batch_size_histogram`` when the result carries no timeline.
    """
    df = iteration_batches(result.timeline)
    fig = go.Figure()
    if len(df):
        for phase in ("decode", "mixed", "prefill"):
            part = df[df["phase"] == phase]
            if len(part):
                fig.add_trace(go.Histogram(x=part["decodes"], name=phase))
        fig.update_layout(barmode="stack", xaxis_title="sequences decoding in the iteration")
    else:
        hist = result.batch_size_histogram
        fig.add_trace(go.Bar(x=list(hist), y=list(hist.values()), name="iterations"))
        fig.update_layout(xaxis_title="decode batch size")
    fig.update_layout(
        title=f"Batch sizes (mean {result.mean_batch_size:.1f} decodes/iteration)", yaxis_title="iterations"
    )
    return fig


def latency_vs_rate(points: Any, slo_s: float, knee_rate: float | None) -> go.Figure:
    """TTFT p50/p99 against arrival rate with the TTFT SLO line, SLO attainment on the right axis,
    and the knee: the highest probed rate that still meets the SLO for 90% of requests."""
    df = pd.DataFrame(points).sort_values("rate_per_s")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Scatter(x=df["rate_per_s"], y=df["ttft_p50_s"], mode="lines+markers", name="TTFT p50"))
    fig.add_trace(go.Scatter(x=df["rate_per_s"], y=df["ttft_p99_s"], mode="lines+markers", name="TTFT p99"))
    fig.add_trace(
        go.Scatter(
            x=df["rate_per_s"],
            y=df["slo_attainment"] * 100.0,
            mode="lines+markers",
            name="SLO attainment",
            line={"dash": "dot"},
        ),
        secondary_y=True,
    )
    fig.add_hline(y=slo_s, line_dash="dash", line_color="red", annotation_text=f"TTFT SLO {slo_s:g} s")
    if knee_rate is not None:
        knee = df[df["rate_per_s"] == knee_rate]
        y = float(knee["ttft_p99_s"].iloc[0]) if len(knee) else slo_s
        fig.add_trace(
            go.Scatter(
                x=[knee_rate],
                y=[y],
                mode="markers+text",
                name="knee",
                text=[f"knee {knee_rate:g} req/s"],
                textposition="top left",
                marker={"symbol": "star", "size": 16, "color": "black"},
            )
        )
        fig.add_vline(x=knee_rate, line_dash="dot", line_color="grey")
    fig.update_layout(
        title="Latency vs arrival rate",
        xaxis_title="arrival rate (requests/s)",
        legend={"orientation": "h", "y": -0.25},
    )
    fig.update_yaxes(title_text="TTFT (s)", type="log", secondary_y=False)
    fig.update_yaxes(
        title_text="SLO attainment (%)",
        range=[0, 105],
        tickmode="array",
        tickvals=[0, 25, 50, 75, 90, 100],
        showgrid=False,
        secondary_y=True,
    )
    return fig


# ---- trade-offs ----------------------------------------------------------------------------------


def pareto_chart(
    df: pd.DataFrame,
    x: str,
    y: str,
    front_mask: Sequence[bool],
    *,
    label: str = "label",
    titles: Mapping[str, str] | None = None,
    ok: str | None = None,
) -> go.Figure:
    """Every plan as a point plus the Pareto front as a line; ``customdata`` is the row position
    so a click in the app maps back to the plan. Rows whose boolean column ``ok`` is false (plans
    that do not fit in memory) are drawn as crosses."""
    titles = dict(titles or {})
    mask = np.asarray(list(front_mask), dtype=bool)
    if len(mask) != len(df):
        raise ValueError(f"front_mask has {len(mask)} entries for {len(df)} rows")
    pos = np.arange(len(df))
    text = df[label].astype(str).tolist() if label in df else [str(i) for i in pos]
    good = df[ok].to_numpy(bool) if ok and ok in df else np.ones(len(df), dtype=bool)
    text = [t if g else f"{t} (does not fit)" for t, g in zip(text, good, strict=True)]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=df[x],
            y=df[y],
            mode="markers",
            name="plans",
            customdata=pos,
            hovertext=text,
            hovertemplate="%{hovertext}<br>%{x:.4g}, %{y:.4g}<extra></extra>",
            marker={
                "size": 10,
                "color": np.where(mask, "#E45756", "#4C78A8").tolist(),
                "opacity": 0.8,
                "symbol": np.where(good, "circle", "x").tolist(),
            },
        )
    )
    front = df.assign(_pos=pos)[mask].sort_values([x, y])
    fig.add_trace(
        go.Scatter(
            x=front[x],
            y=front[y],
            mode="lines+markers",
            name="Pareto front",
            customdata=front["_pos"],
            hovertext=[text[i] for i in front["_pos"]],
            hovertemplate="%{hovertext}<br>%{x:.4g}, %{y:.4g}<extra>front</extra>",
            line={"color": "#E45756", "shape": "hv"},
            marker={"size": 12, "color": "#E45756", "symbol": "diamond"},
        )
    )
    fig.update_layout(
        title="Plans and their Pareto front (click a point to open it)",
        xaxis_title=titles.get(x, x),
        yaxis_title=titles.get(y, y),
        clickmode="event+select",
    )
    return fig


# ---- hardware ------------------------------------------------------------------------------------

DTYPE_COLORS = {"bf16": "#4C78A8", "fp16": "#F58518", "fp32": "#54A24B", "fp8": "#E45756", "tf32": "#B279A2"}
SQUARE_SIZES = tuple(int(2**e) for e in np.arange(6, 14.25, 0.25))


def efficiency_curves(
    profile: Any, measurements: Mapping[str, Any] | None = None, dtypes: Sequence[str] | None = None
) -> go.Figure:
    """GEMM efficiency (fraction of the dtype's dense peak) against problem size (FLOP).

    Lines: the profile's curve for square M=N=K. Points: measured GEMMs when ``measurements``
    (a kernel dataset with ``gemm`` rows of M, N, K, dtype, ms, tflops) is given, plus the
    profile's prediction for the same shapes so the fit can be read point by point.
    """
    rows = list((measurements or {}).get("gemm", []))
    fig = go.Figure()
    for d in _efficiency_dtypes(profile, rows, dtypes):
        color = DTYPE_COLORS.get(d, "#BAB0AC")
        peak = profile.peak_flops(d)
        flops = [2.0 * s**3 for s in SQUARE_SIZES]
        eff = [f / profile.gemm_time(s, s, s, d) / peak for f, s in zip(flops, SQUARE_SIZES, strict=True)]
        fig.add_trace(
            go.Scatter(
                x=flops,
                y=eff,
                mode="lines",
                name=f"{profile.kind} profile {d} (M=N=K)",
                legendgroup=d,
                line={"color": color},
                hovertext=[f"M=N=K={s}" for s in SQUARE_SIZES],
                hovertemplate="%{hovertext}<br>%{y:.1%}<extra></extra>",
            )
        )
        pts = [r for r in rows if normalize_dtype(r["dtype"]) == d]
        if pts:
            _add_measured_gemms(fig, profile, pts, d, color, peak)
    fig.update_layout(
        title=f"GEMM efficiency of {profile.gpu} ({profile.kind} profile)",
        xaxis={"title": "problem size (FLOP, 2MNK)", "type": "log"},
        yaxis={"title": "fraction of dense peak", "tickformat": ".0%", "range": [0, 1.05]},
    )
    return fig


def _efficiency_dtypes(profile: Any, rows: list[Mapping[str, Any]], dtypes: Sequence[str] | None) -> list[str]:
    """The dtypes to draw: those asked for, else those measured, else bf16; only dtypes the GPU has units for."""
    measured_dtypes = []
    for r in rows:
        d = normalize_dtype(r["dtype"])
        if d not in measured_dtypes:
            measured_dtypes.append(d)
    wanted = [normalize_dtype(d) for d in dtypes] if dtypes else (measured_dtypes or ["bf16"])
    wanted = [d for d in wanted if profile.peak_tflops.get(d)]
    if not wanted:
        wanted = [d for d in ("bf16", "fp16", "fp32") if profile.peak_tflops.get(d)][:1]
    return wanted


def _add_measured_gemms(
    fig: go.Figure, profile: Any, pts: list[Mapping[str, Any]], d: str, color: str, peak: float
) -> None:
    """Measured GEMMs of dtype ``d`` as points, and the profile's prediction at the same shapes (legend-only)."""
    shapes = [f"M={r['M']} N={r['N']} K={r['K']}" for r in pts]
    mflops = [2.0 * r["M"] * r["N"] * r["K"] for r in pts]
    fig.add_trace(
        go.Scatter(
            x=mflops,
            y=[r["tflops"] * 1e12 / peak for r in pts],
            mode="markers",
            name=f"measured {d}",
            legendgroup=d,
            marker={"color": color, "opacity": 0.6},
            hovertext=shapes,
            hovertemplate="%{hovertext}<br>measured %{y:.1%}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=mflops,
            y=[f / profile.gemm_time(r["M"], r["N"], r["K"], d) / peak for f, r in zip(mflops, pts, strict=True)],
            mode="markers",
            name=f"profile at measured shapes {d}",
            legendgroup=d,
            marker={"symbol": "circle-open", "color": color},
            hovertext=shapes,
            hovertemplate="%{hovertext}<br>predicted %{y:.1%}<extra></extra>",
            visible="legendonly",
        )
    )


# ---- power & carbon ------------------------------------------------------------------------------

POWER_SOURCE = (
    "compute: rank-average power while busy (model); inline collectives: active idle + SM activity; gaps: active idle"
)


def window_average_w(trace: Any) -> float | None:
    """Average power per GPU over the window of the hottest rank (W): what a power limit holds, and what the
    page reports as the average GPU power. None for an empty window."""
    if not trace.ranks or trace.seconds <= 0:
        return None
    return max(r.energy_j for r in trace.ranks) / trace.seconds


def power_timeline(trace: Any, limit_w: float | None = None, max_ranks: int = 16, max_points: int = 4000) -> go.Figure:
    """Per-GPU power of each pipeline rank (or serving replica) over the window, from a PowerTrace.

    Each rank draws its average compute power while it computes, active idle plus the SM-activity
    term during inline collectives and active idle between kernels (:mod:`simulator.energy.power_trace`);
    long runs are drawn as averages over equal time bins. The power limit is a dashed line: the GPU
    holds it on the average (the dotted line: the hottest rank's window average), so a compute stretch may
    sit above it.
    """
    unit = "replica" if trace.kind == "serving" else "rank"
    ranks = list(trace.ranks)[:max_ranks]
    binned = sum(len(r.busy) + len(r.comm) for r in ranks) * 2 > max_points
    bins = max(1, max_points // max(1, len(ranks)))
    fig = go.Figure()
    for r in ranks:
        if binned:
            times, watts = trace.binned(r, bins)
            xs, ys = [*times, trace.end_s], [*watts, watts[-1]]
        else:
            segs = trace.segments(r)
            xs = [s for s, _e, _w in segs] + [segs[-1][1]]
            ys = [w for _s, _e, w in segs] + [segs[-1][2]]
        fig.add_trace(
            go.Scattergl(
                x=xs,
                y=ys,
                mode="lines",
                line={"shape": "hv", "width": 1.5},
                name=f"{unit} {r.rank}",
                hovertemplate="%{x:.4g} s: %{y:.0f} W<extra>" + f"{unit} {r.rank}" + "</extra>",
            )
        )
    if limit_w:
        fig.add_hline(
            y=limit_w,
            line_dash="dash",
            line_color="red",
            annotation_text=f"power limit {limit_w:.0f} W (applies to the average)",
            annotation_position="top left",
        )
    average = window_average_w(trace)
    if average is not None:
        fig.add_hline(
            y=average,
            line_dash="dot",
            line_color="black",
            annotation_text=f"window average {average:.0f} W (hottest {unit})",
            annotation_position="bottom right",
        )
    more = f" (first {len(ranks)} of {len(trace.ranks)} {unit}s)" if len(trace.ranks) > len(ranks) else ""
    what = "one training step" if trace.kind == "training" else "the serving run"
    how = f"average over {trace.seconds / bins:.3g} s bins of: {POWER_SOURCE}" if binned else POWER_SOURCE
    fig.update_layout(
        title=f"GPU power over {what}, per {unit}{more}",
        xaxis_title="time (s)",
        yaxis_title="W per GPU",
        yaxis_rangemode="tozero",
        legend={"orientation": "h", "y": -0.2},
    )
    fig.add_annotation(**_note(how))  # added, not set: update_layout(annotations=...) drops the lines' labels
    return fig


ENERGY_PARTS = (("GPUs", "#4C78A8"), ("hosts (CPU, DRAM, NICs, switches)", "#72B7B2"), ("PUE overhead", "#BAB0AC"))


def energy_breakdown(energy_j: Mapping[str, float], per: str = "step") -> go.Figure:
    """Facility energy split into GPUs, the hosts' non-GPU power and the site's PUE overhead.

    ``energy_j`` is a result's ``{gpu, node, facility}`` in J; ``per`` names the window ("step" or "run").
    """
    gpu, node, facility = (float(energy_j.get(k, 0.0)) for k in ("gpu", "node", "facility"))
    parts = [gpu, node, max(0.0, facility - gpu - node)]
    scale, unit = 3.6e6, "kWh"
    fig = go.Figure()
    for (name, color), joules in zip(ENERGY_PARTS, parts, strict=True):
        share = joules / facility if facility else 0.0
        fig.add_trace(
            go.Bar(
                x=[joules / scale],
                y=[f"per {per}"],
                orientation="h",
                name=f"{name}: {joules / scale:.3g} {unit} ({share:.0%})",
                marker_color=color,
                text=[f"{share:.0%}" if share >= 0.1 else ""],
                textposition="inside",
                hovertemplate="%{x:.4g} " + unit + "<extra>" + name + "</extra>",
            )
        )
    fig.update_layout(
        barmode="stack",
        title=f"Facility energy per {per} by component: {facility / scale:.3g} {unit}",
        xaxis={"title": unit, "tickformat": ".3~g"},
        height=300,
        legend={"orientation": "h", "y": -0.45},
        margin={"t": 60, "b": 40},
    )
    return fig


def dvfs_front(rows: Sequence[Mapping[str, Any]], optimum: Mapping[str, Any] | None = None) -> go.Figure:
    """DVFS sweep: time per token against GPU energy per token, one point per setting (clock or cap),
    labelled with its clock; the energy-time Pareto front as a line and the energy optimum as a star.

    ``rows`` are :func:`simulator.search.dvfs.to_rows` rows (``ms_per_token``, ``gpu_mj_per_token``, ``pareto``).
    """
    df = pd.DataFrame([r for r in rows if r.get("feasible", True)])  # infeasible settings have no figures
    if df.empty:
        return go.Figure().update_layout(title="DVFS sweep: no feasible points")
    df["label"] = [_dvfs_label(r) for r in df.to_dict("records")]
    spot = list(zip(df["ms_per_token"].round(12), df["gpu_mj_per_token"].round(9), strict=True))
    df["text"] = ["" if spot[i] in spot[:i] else t for i, t in enumerate(df["label"])]  # one label per spot
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=df["ms_per_token"],
            y=df["gpu_mj_per_token"],
            mode="markers+text",
            name="settings",
            text=df["text"],
            hovertext=df["label"],
            textposition="top right",
            marker={"size": 10, "color": np.where(df["pareto"], "#E45756", "#4C78A8").tolist()},
            customdata=df[["avg_gpu_power_w"]].to_numpy(),
            hovertemplate="%{hovertext}<br>%{x:.4g} ms/token, %{y:.4g} mJ/token<br>"
            "%{customdata[0]:.0f} W per GPU<extra></extra>",
        )
    )
    front = df[df["pareto"]].sort_values("ms_per_token")
    fig.add_trace(
        go.Scatter(
            x=front["ms_per_token"],
            y=front["gpu_mj_per_token"],
            mode="lines",
            name="Pareto front",
            line={"color": "#E45756"},
            hoverinfo="skip",
        )
    )
    if optimum is not None:
        fig.add_trace(
            go.Scatter(
                x=[optimum["ms_per_token"]],
                y=[optimum["gpu_mj_per_token"]],
                mode="markers",
                name=f"least energy: {_dvfs_label(optimum)}",
                marker={"symbol": "star", "size": 18, "color": "black"},
                hovertemplate="least GPU energy per token<br>%{x:.4g} ms/token, %{y:.4g} mJ/token<extra></extra>",
            )
        )
    fig.update_layout(
        title="DVFS: time vs GPU energy per token (red: Pareto front)",
        xaxis_title="time per token (ms, whole job)",
        yaxis_title="GPU energy per token (mJ)",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def _dvfs_label(row: Mapping[str, Any]) -> str:
    """A DVFS setting's label: its clock (MHz), preceded by the cap (W) for a power-cap setting."""
    clock = f"{row['sm_clock_mhz']:.0f} MHz"
    return clock if row["setting"] == "clock" else f"{row['value']:.0f} W cap: {clock}"


def carbon_schedule(series: Any, schedule: Any, baseline: Any | None = None) -> go.Figure:
    """Grid intensity over the series' hours with the job's running fraction per hour overlaid
    (right axis), the run-now baseline dotted, and the window up to the deadline shaded.

    ``series`` is an :class:`simulator.energy.carbon.IntensitySeries`, ``schedule`` a :class:`Schedule`.
    """
    hours = list(range(len(series)))
    xs: list[Any] = [series.timestamp(h) for h in hours] if series.start is not None else hours
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Scatter(
            x=xs,
            y=[v * 1e3 for v in series.values],
            mode="lines",
            name="grid intensity",
            line={"color": "#54A24B", "shape": "hv"},
            hovertemplate="%{x}: %{y:.0f} g/kWh<extra></extra>",
        ),
        secondary_y=False,
    )
    window = range(schedule.now, schedule.now + len(schedule.fractions))
    _add_job_traces(fig, series, schedule, baseline, window)
    fig.add_vrect(
        x0=_series_x(series, schedule.now),
        x1=_series_x(series, window.stop),
        fillcolor="#EECA3B",
        opacity=0.12,
        line_width=0,
        annotation_text="until the deadline",
        annotation_position="top left",
    )
    fig.update_layout(
        title=f"Carbon-aware schedule ({schedule.policy}): saves {schedule.saving_kg:,.3g} kgCO2e "
        f"({schedule.saving_pct:.1f}%) vs running now",
        xaxis_title="time" if series.start is not None else "hour of the series",
        legend={"orientation": "h", "y": -0.2},
        bargap=0,
    )
    fig.update_yaxes(title_text="grid intensity (gCO2e/kWh)", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(
        title_text="job running (% of its GPUs)",
        range=[0, 105],
        tickvals=[0, 25, 50, 75, 100],
        showgrid=False,
        secondary_y=True,
    )
    return fig


def _series_x(series: Any, hour: float) -> Any:
    """The x coordinate of ``hour`` of the series: a timestamp when it has one, else the hour itself."""
    if series.start is None:
        return hour
    return series.start + pd.Timedelta(hours=hour)


def _add_job_traces(fig: go.Figure, series: Any, schedule: Any, baseline: Any | None, window: range) -> None:
    """The job's running share (% of its GPUs) per hour as bars, and the run-now baseline as a dotted step line."""
    fig.add_trace(
        go.Bar(
            x=[_series_x(series, h + 0.5) for h in window],
            y=[f * 100.0 for f in schedule.fractions],
            width=[3.6e6 if series.start is not None else 1.0] * len(window),
            name=f"job running ({schedule.policy})",
            marker={"color": "#4C78A8", "line": {"width": 0}},
            opacity=0.5,
            hovertemplate="%{y:.0f}% of the job's GPUs<extra></extra>",
        ),
        secondary_y=True,
    )
    if baseline is not None and baseline is not schedule:
        fig.add_trace(
            go.Scatter(
                x=[_series_x(series, h) for h in window] + [_series_x(series, window.stop)],
                y=[f * 100.0 for f in baseline.fractions] + [baseline.fractions[-1] * 100.0],
                mode="lines",
                name="run now (baseline)",
                line={"color": "black", "dash": "dot", "shape": "hv"},
                hovertemplate="run now: %{y:.0f}%<extra></extra>",
            ),
            secondary_y=True,
        )


# ---- gradient compression ------------------------------------------------------------------------

#: Bars of the compression chart: table column -> legend label (seconds per step, busiest rank).
COMPRESSION_TIMES = {
    "dp_comm_s": "DP communication",
    "exposed_dp_s": "exposed DP communication",
    "codec_s": "(de)compression compute",
}


def compression_times(frame: pd.DataFrame) -> go.Figure:
    """Per compression method: DP communication, the part of it exposed, and (de)compression compute
    (s per step, bars), and the payload a GPU puts on the wire per step (GB, markers on the right axis).

    ``frame`` has a ``method`` column and ``dp_comm_s``, ``exposed_dp_s``, ``codec_s``, ``payload_gb``.
    Step time is the break-even chart's and the table's: at full scale it dwarfs these parts.
    """
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    methods = [str(m) for m in frame["method"]]
    for column, label in COMPRESSION_TIMES.items():
        fig.add_trace(
            go.Bar(
                x=methods,
                y=[float(v) for v in frame[column]],
                name=label,
                hovertemplate="%{x}: %{y:.4g} s<extra>" + label + "</extra>",
            ),
            secondary_y=False,
        )
    fig.add_trace(
        go.Scatter(
            x=methods,
            y=[float(v) for v in frame["payload_gb"]],
            name="payload per GPU (GB)",
            mode="markers+lines",
            line={"color": "black", "dash": "dot"},
            hovertemplate="%{x}: %{y:.3g} GB<extra>payload per GPU</extra>",
        ),
        secondary_y=True,
    )
    fig.update_layout(
        barmode="group",
        title="Gradient sync per step by method: time and bytes on the wire",
        legend={"orientation": "h", "y": -0.35},
        margin={"b": 120},
    )
    fig.update_yaxes(title_text="seconds per step", secondary_y=False)
    fig.update_yaxes(title_text="GB per GPU per step", secondary_y=True, rangemode="tozero")
    return fig


def break_even_chart(frame: pd.DataFrame) -> go.Figure:
    """Break-even steps multiplier per method (dense step time / the method's, ``break_even`` column):
    above 1 a method may need that many times the steps and still train faster; below 1 it never pays off."""
    values = [float(v) for v in frame["break_even"]]
    fig = go.Figure(
        go.Bar(
            x=values,
            y=[str(m) for m in frame["method"]],
            orientation="h",
            marker_color=[_break_even_color(v) for v in values],
            text=[f"x{v:.2f}" for v in values],
            textposition="auto",
            hovertemplate="%{y}: x%{x:.3f}<extra>break-even</extra>",
            showlegend=False,
        )
    )
    fig.add_vline(x=1.0, line={"color": "black", "dash": "dash"})
    fig.update_layout(
        title="Break-even steps multiplier (dense step time / method's)",
        xaxis_title="steps multiplier at which the method stops paying off (x)",
        yaxis={"autorange": "reversed"},
        annotations=[_note("green: faster per step than dense; red: slower, never pays off; grey: dense")],
    )
    return fig


def _break_even_color(multiplier: float) -> str:
    """Green when a method is faster per step than dense, red when slower, grey for dense itself (x1)."""
    if math.isclose(multiplier, 1.0, rel_tol=1e-9):
        return "#9D9D9D"
    return "#54A24B" if multiplier > 1 else "#E45756"


# ---- trade-off explorer: any two objectives, a third as colour --------------------------------------


def tradeoff_chart(
    df: pd.DataFrame,
    x: str,
    y: str,
    front_mask: Sequence[bool],
    *,
    color: str | None = None,
    titles: Mapping[str, str] | None = None,
    label: str = "label",
    ok: str | None = None,
) -> go.Figure:
    """Every plan as a point (coloured by the ``color`` column when given) and the Pareto front over
    (``x``, ``y``) as a line named "Pareto front"; ``customdata`` is the row position so a click maps back
    to the plan. Rows whose boolean column ``ok`` is false (plans that do not fit) are drawn as crosses;
    rows without a value on either axis are left out."""
    titles = dict(titles or {})
    mask = np.asarray(list(front_mask), dtype=bool)
    if len(mask) != len(df):
        raise ValueError(f"front_mask has {len(mask)} entries for {len(df)} rows")
    for col in (x, y, *([color] if color else [])):
        if col not in df:
            raise ValueError(f"no column {col!r} to chart")
    pos = np.arange(len(df))
    text = df[label].astype(str).tolist() if label in df else [str(i) for i in pos]
    good = df[ok].to_numpy(bool) if ok and ok in df else np.ones(len(df), dtype=bool)
    text = [t if g else f"{t} (does not fit)" for t, g in zip(text, good, strict=True)]
    xs, ys = pd.to_numeric(df[x], errors="coerce"), pd.to_numeric(df[y], errors="coerce")
    shown = (xs.notna() & ys.notna()).to_numpy()
    marker: dict[str, Any] = {"size": 10, "opacity": 0.85, "symbol": np.where(good, "circle", "x")[shown].tolist()}
    if color:
        marker.update(
            color=pd.to_numeric(df[color], errors="coerce")[shown].tolist(),
            colorscale="Viridis",
            showscale=True,
            colorbar={"title": {"text": titles.get(color, color)}},
        )
    else:
        marker["color"] = np.where(mask, "#E45756", "#4C78A8")[shown].tolist()
    fig = go.Figure(
        go.Scatter(
            x=xs[shown],
            y=ys[shown],
            mode="markers",
            name="plans",
            customdata=pos[shown],
            hovertext=[t for t, s in zip(text, shown, strict=True) if s],
            hovertemplate="%{hovertext}<br>%{x:.4g}, %{y:.4g}<extra></extra>",
            marker=marker,
        )
    )
    front = pd.DataFrame({"x": xs, "y": ys, "pos": pos})[mask & shown].sort_values(["x", "y"])
    fig.add_trace(
        go.Scatter(
            x=front["x"],
            y=front["y"],
            mode="lines+markers",
            name="Pareto front",
            customdata=front["pos"],
            hovertext=[text[i] for i in front["pos"]],
            hovertemplate="%{hovertext}<br>%{x:.4g}, %{y:.4g}<extra>front</extra>",
            line={"color": "#E45756"},
            marker={
                "size": 13,
                "color": "rgba(0,0,0,0)",
                "line": {"color": "#E45756", "width": 2},
                "symbol": "diamond",
            },
        )
    )
    fig.update_layout(
        title="Plans and their Pareto front (click a point to open it)",
        xaxis_title=titles.get(x, x),
        yaxis_title=titles.get(y, y),
        clickmode="event+select",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig
