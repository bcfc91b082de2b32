"""Trade-off explorer page: sweep any config fields, pick two objectives and a colour, draw the Pareto front.

The knobs are every sweepable field of the training or serving config schema
(:mod:`simulator.search.sweep.knobs`), each picked by its dotted path from one searchable list; the
objectives (step time, tokens/s, memory, energy per token, cost per million tokens, tCO2e to train, p99
TTFT/TPOT, goodput, ...) come from :mod:`simulator.app.objectives`, each with its direction. Sweeps within
the page's cap (``limits.APP_CAPS.sweep_points``) run here, cached per plan; a larger one runs on request
through the sweep engine (:func:`simulator.search.sweep.sweep`) with a progress bar, on a local process pool
or, when ``CLUSTERSIM_RAY_ADDRESS`` is set for the app's server, on that Ray cluster. Run as a Streamlit
page; importing it only defines the helpers.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd
import streamlit as st
from simulator.app import charts, objectives, plans
from simulator.app.common import (
    PAGE_PARAMS,
    budgeted,
    drop_foreign_params,
    error_text,
    run_page,
    run_serving,
    run_training,
)
from simulator.app.plans import CURVE_REQUESTS, default_serving, default_training, from_json, to_json, to_yaml

from hwmodels.errors import ClusterSimError
from simulator.core.limits import APP_CAPS, CLI_CAPS
from simulator.search.sweep.knobs import Knob, config_knobs, find_knob, value_at
from simulator.search.sweep.run import flat_metrics
from simulator.search.sweep.spec import apply_values, derive_dp, derive_schedule

PARAM = PAGE_PARAMS["tradeoffs"][0]
MODES = {"training": "Training", "serving": "Serving"}
PLANNER = {
    "training": ("views/training.py", PAGE_PARAMS["training"][0], "training_cfg"),
    "serving": ("views/serving.py", PAGE_PARAMS["serving"][0], "serving_cfg"),
}
DEFAULT_KNOBS = {
    "training": {"tp": [4, 8], "pp": [4, 8, 16], "micro_batch": [1, 2]},
    "serving": {"batching.kind": ["continuous", "chunked"], "max_num_seqs": [16, 64, 256]},
}
#: Knob names of links made before the knobs came from the schema.
LEGACY = {"serving": {"batching": "batching.kind", "kv_dtype": "kv.dtype"}, "training": {}}
#: Points a sweep through the engine may have (the CLI's interactive scale); each point within APP_CAPS.
ENGINE_CAPS = dataclasses.replace(APP_CAPS, sweep_points=CLI_CAPS.sweep_points)
RAY_ENV, WORKERS_ENV = "CLUSTERSIM_RAY_ADDRESS", "CLUSTERSIM_APP_SWEEP_WORKERS"
UNIT_FORMAT = {
    "s": "%.4g s",
    "GB": "%.1f GB",
    "%": "percent",
    "J": "%.3g J",
    "$": "$%.4g",
    "tok/s": "%,.0f",
    "days": "%.1f d",
    "tCO2e": "%,.1f t",
    "gCO2e": "%.3g g",
    "req/s": "%.3g req/s",
}


def knobs_of(mode: str) -> dict[str, Knob]:
    """The sweepable fields of the mode's config schema, by short name."""
    return {k.name: k for k in config_knobs(mode).values()}  # type: ignore[arg-type]


def resolve_knob(mode: str, key: str) -> Knob | None:
    """A knob by short name, dotted path or legacy name; None when the schema has no such field."""
    return find_knob(config_knobs(mode), LEGACY[mode].get(key, key))  # type: ignore[arg-type]


def checked_values(knob: Knob, values: list[Any]) -> tuple[list[Any], list[str]]:
    """The values a knob can take (text typed into the picker parsed), and a message per refused one."""
    out, bad = [], []
    for v in values:
        try:
            out += knob.parse(v) if isinstance(v, str) and knob.type != "choice" else [knob.check(v)]
        except ClusterSimError as exc:
            bad.append(str(exc))
    return list(dict.fromkeys(out)), bad


def value_options(knob: Knob, current: Any, chosen: list[Any]) -> list[Any]:
    """What the values picker offers: the knob's choices, or a ladder around the current value, plus the chosen."""
    if knob.type in ("choice", "bool"):
        return list(knob.choices)
    cur = current if isinstance(current, int | float) and not isinstance(current, bool) else knob.default
    if isinstance(cur, int | float) and cur:
        cands: list[Any] = [cur * f for f in (0.125, 0.25, 0.5, 1, 2, 4, 8)]
    elif knob.le is not None and knob.le <= 1:
        cands = [0.01, 0.1, 0.5, 1.0]  # a share or fraction
    else:
        cands = [1, 2, 4, 8] if knob.type == "int" else []  # no scale to start from: type the values
    opts = []
    for c in cands:
        try:
            opts.append(knob.check(round(c) if knob.type == "int" else c))
        except ClusterSimError:
            continue
    extra = [v for v in chosen if v not in opts]
    return sorted(set(opts), key=float) + extra


# ---- state from a shared link -------------------------------------------------------------------------


def _load_from_url() -> None:
    """Apply a ``sweep`` parameter this session has not seen (a shared link) to the widgets."""
    raw = st.query_params.get(PARAM)
    if not raw or raw == st.session_state.get("_sweep_url"):
        return
    st.session_state["_sweep_url"] = raw
    try:
        spec = from_json(raw, f"URL parameter {PARAM!r}")
        mode = spec.get("mode", "training")
        if mode not in MODES:
            raise ClusterSimError(f"sweep mode {mode!r} is not one of {', '.join(MODES)}")
        knobs = {}
        for key, values in dict(spec.get("knobs") or {}).items():
            knob = resolve_knob(mode, str(key))
            if knob is not None and isinstance(values, list):
                knobs[knob.name] = checked_values(knob, values)[0]
    except (ClusterSimError, TypeError, AttributeError, ValueError) as exc:
        st.warning(f"{exc}; showing the default sweep")
        return
    st.session_state["to_mode"] = mode
    st.session_state[f"to_{mode}_knobs"] = list(knobs)[:3]
    for name, values in knobs.items():
        st.session_state[f"to_{mode}_vals_{name}"] = values
    axes = objectives.OBJECTIVES[mode]
    for part in ("x", "y", "color"):
        if spec.get(part) in axes or (part == "color" and spec.get(part) == "none"):
            st.session_state[f"to_{mode}_{part}"] = spec[part]


# ---- widgets ------------------------------------------------------------------------------------------


def _knob_widgets(mode: str, base: Mapping[str, Any]) -> dict[str, tuple[Knob, list[Any]]]:
    """The knobs to sweep (a searchable list of every schema field) and the values of each: name -> (knob, values)."""
    all_knobs = knobs_of(mode)
    key = f"to_{mode}_knobs"
    if key not in st.session_state:
        st.session_state[key] = list(DEFAULT_KNOBS[mode])
    st.session_state[key] = [n for n in st.session_state[key] if n in all_knobs]
    names = st.multiselect(
        f"knobs to sweep (1-3 of {len(all_knobs)} config fields; type to search)",
        list(all_knobs),
        format_func=lambda n: all_knobs[n].label(),
        key=key,
        max_selections=3,
    )
    chosen: dict[str, tuple[Knob, list[Any]]] = {}
    cols = st.columns(max(1, len(names)))
    for col, name in zip(cols, names, strict=False):
        knob = all_knobs[name]
        with col:
            chosen[name] = (knob, _values_widget(mode, knob, value_at(base, knob.path)))
    return chosen


def _values_widget(mode: str, knob: Knob, current: Any) -> list[Any]:
    """The values to try for one knob: its choices, or numbers (type a new one and press enter)."""
    vkey = f"to_{mode}_vals_{knob.name}"
    if vkey not in st.session_state:
        st.session_state[vkey] = (
            DEFAULT_KNOBS[mode].get(knob.name) or DEFAULT_KNOBS[mode].get(knob.path) or (knob.suggest(current))
        )
    state, bad = checked_values(knob, list(st.session_state[vkey]))
    for msg in bad:
        st.warning(msg)
    st.session_state[vkey] = state
    picked = st.multiselect(
        knob.path,
        value_options(knob, current, state),
        key=vkey,
        accept_new_options=knob.type in ("int", "float"),
        help=f"{knob.description} Now: {current if current is not None else knob.default}.".strip(),
    )
    values, _ = checked_values(knob, list(picked))
    if knob.when:
        st.caption("needs " + "; ".join(f"{p}={'|'.join(k)}" for p, k in knob.when))
    return values


def _objective_widgets(mode: str) -> tuple[str, str, str | None]:
    """The x and y objectives and the colour (or none), each a selectbox over the mode's objectives."""
    objs = objectives.OBJECTIVES[mode]
    keys = list(objs)
    x0, y0 = objectives.DEFAULT_AXES[mode]
    for part, default in (("x", x0), ("y", y0), ("color", "none")):
        if st.session_state.get(f"to_{mode}_{part}") not in [*keys, "none"]:
            st.session_state[f"to_{mode}_{part}"] = default
    c1, c2, c3 = st.columns(3)
    fmt = lambda k: "none" if k == "none" else f"{objs[k].label} ({objs[k].direction})"  # noqa: E731
    x = c1.selectbox("x axis", keys, format_func=fmt, key=f"to_{mode}_x")
    y = c2.selectbox("y axis", keys, format_func=fmt, key=f"to_{mode}_y")
    color = c3.selectbox("colour", ["none", *keys], format_func=fmt, key=f"to_{mode}_color")
    return x, y, None if color == "none" else color


def _base(mode: str) -> dict[str, Any]:
    """The plan being varied: the planner's current config, else its default (training: dp re-derived)."""
    if mode == "training":
        base = dict(st.session_state.get("training_cfg") or default_training())
        base["parallel"] = {**dict(base.get("parallel") or {}), "dp": "auto"}
        return base
    base = dict(st.session_state.get("serving_cfg") or default_serving())
    wl = dict(base.get("workload") or {})
    wl["num_requests"] = min(int(wl.get("num_requests", CURVE_REQUESTS)), CURVE_REQUESTS)
    base["workload"] = wl
    return base


# ---- running the plans --------------------------------------------------------------------------------


def point_config(base: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """One plan's config: ``values`` (dotted path -> value) set on ``base`` as the sweep engine sets them."""
    data = apply_values(dict(base), values)
    if "cluster" in data:  # training: a swept vpp brings the interleaved schedule with it
        derive_schedule(data, values)
    derive_dp(data)
    return data


def result_row(mode: str, flat: Mapping[str, Any]) -> dict[str, Any]:
    """A table row's objectives (and, for training, whether it fits) from one flat result row."""
    row: dict[str, Any] = objectives.objective_columns(mode, flat)
    if mode == "training":
        row["fits"] = bool(flat.get("fits_in_memory", True))
    return row


def _label(values: Mapping[str, Any], names: Mapping[str, str]) -> str:
    return " ".join(f"{names.get(k, k)}={v}" for k, v in values.items())


def sweep_inline(mode: str, base: dict[str, Any], space: dict[str, list[Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate every plan here (cached per config, charged to the session budget): (results, failures)."""
    run: Callable[[str], Any] = run_training if mode == "training" else run_serving
    names = {k.path: k.name for k in config_knobs(mode).values()}  # type: ignore[arg-type]
    combos = list(itertools.product(*space.values()))
    bar = st.progress(0.0, text="sweep")
    rows, failed = [], []
    for i, combo in enumerate(combos):
        values = dict(zip(space, combo, strict=True))
        label = _label(values, names)
        cfg, err = error_text(point_config, base, values)
        res, err = error_text(run, to_json(cfg)) if cfg is not None else (None, err)
        bar.progress((i + 1) / len(combos), text=f"{i + 1}/{len(combos)}: {label}")
        if res is None:
            failed.append({"plan": label, "error": err})
        else:
            cols = {names[p]: v for p, v in values.items()}
            rows.append({"label": label, **cols, **result_row(mode, flat_metrics(res)), "config": to_json(cfg)})
    bar.empty()
    return pd.DataFrame(rows), pd.DataFrame(failed, columns=["plan", "error"])


def engine_backend() -> tuple[str, str | None, int]:
    """(backend, Ray address, workers) for engine sweeps, from the app server's environment."""
    address = os.environ.get(RAY_ENV) or None
    try:
        workers = max(1, int(os.environ.get(WORKERS_ENV) or min(4, os.cpu_count() or 1)))
    except ValueError:
        raise ClusterSimError(f"{WORKERS_ENV} must be a whole number of worker processes") from None
    return ("ray" if address else "local"), address, workers


def sweep_engine(mode: str, base: dict[str, Any], space: dict[str, list[Any]], on_progress: Any) -> Any:
    """Run the sweep through :func:`simulator.search.sweep.sweep` (every point within the app's work caps)."""
    from simulator.search.sweep import sweep

    plans.refuse_server_files(base, "the base plan")
    backend, address, workers = engine_backend()
    return sweep(
        base,
        space,
        kind=mode,
        backend=backend,
        ray_address=address,
        workers=workers,  # type: ignore[arg-type]
        caps=ENGINE_CAPS,
        progress=False,
        on_progress=on_progress,
    )


def engine_frames(
    mode: str, base: dict[str, Any], space: dict[str, list[Any]], frame: Any
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sweep engine's frame as the page's (results, failures) tables."""
    names = {k.path: k.name for k in config_knobs(mode).values()}  # type: ignore[arg-type]
    rows, failed = [], []
    for rec in frame.to_dict("records"):
        values = {p: rec[p] for p in space}
        label = _label(values, names)
        if rec["status"] != "ok":
            failed.append({"plan": label, "error": rec["reason"]})
            continue
        cols = {names[p]: v for p, v in values.items()}
        cfg = point_config(base, values)
        rows.append({"label": label, **cols, **result_row(mode, rec), "config": to_json(cfg)})
    return pd.DataFrame(rows), pd.DataFrame(failed, columns=["plan", "error"])


def _run_engine(mode: str, base: dict[str, Any], space: dict[str, list[Any]], n: int) -> tuple[Any, Any] | None:
    """Offer (and on request run) an over-cap sweep through the engine; its tables, kept for this sweep."""
    key = to_json({"mode": mode, "base": base, "space": space})
    held = st.session_state.get("_to_engine")
    if held and held[0] == key:
        st.caption(f"{n:,} plans, run through the sweep engine.")
        return held[1]
    st.warning(
        f"{n:,} plans: at most {plans.MAX_SWEEP} plans per sweep run on this page; pick fewer values, "
        "or run them through the sweep engine"
    )
    backend, address, workers = engine_backend()
    where = f"Ray at {address}" if backend == "ray" else f"{workers} local worker{'s' if workers > 1 else ''}"
    if n > ENGINE_CAPS.sweep_points:
        st.error(f"{n:,} plans is over the sweep engine's {ENGINE_CAPS.sweep_points:,}; use the CLI (clustersim sweep)")
        return None
    if not st.button(f"run all {n:,} plans through the sweep engine ({where})", key="to_engine_run"):
        return None
    bar = st.progress(0.0, text="sweep engine")
    frame = budgeted(
        lambda _k: sweep_engine(mode, base, space, lambda d, t: bar.progress(d / t, f"{d}/{t} plans")), key
    )
    bar.empty()
    out = engine_frames(mode, base, space, frame)
    st.session_state["_to_engine"] = (key, out)
    return out


# ---- the page -----------------------------------------------------------------------------------------


def render() -> None:
    """The page: pick a mode, 1-3 knobs and the objectives; sweep; draw the Pareto front; open a plan."""
    st.title("Trade-off explorer")
    drop_foreign_params("tradeoffs")
    _load_from_url()
    if "to_mode" not in st.session_state:
        st.session_state["to_mode"] = "training"
    mode = st.radio("explore", list(MODES), format_func=MODES.get, key="to_mode", horizontal=True)
    base = _base(mode)
    _base_caption(mode, base)
    knobs = _knob_widgets(mode, base)
    x, y, color = _objective_widgets(mode)
    spec = {"mode": mode, "knobs": {n: v for n, (_, v) in knobs.items()}, "x": x, "y": y, "color": color or "none"}
    st.query_params[PARAM] = to_json(spec)
    st.session_state["_sweep_url"] = st.query_params[PARAM]
    if not knobs or any(not v for _, v in knobs.values()):
        st.info("Pick 1-3 knobs and at least one value for each.")
        return
    space = {k.path: v for k, v in knobs.values()}
    n = 1
    for v in space.values():
        n *= len(v)
    if n > plans.MAX_SWEEP:
        tables = _run_engine(mode, base, space, n)
        if tables is None:
            return
        df, failed = tables
    else:
        df, failed = sweep_inline(mode, base, space)
    _show(mode, base, spec, df, failed, n)


def _show(
    mode: str, base: dict[str, Any], spec: dict[str, Any], df: pd.DataFrame, failed: pd.DataFrame, n: int
) -> None:
    """The results: invalid plans, summary, chart, plan picker, formatted table and downloads."""
    if len(failed):
        with st.expander(f"{len(failed)} of {n} plans are invalid (why)"):
            st.dataframe(failed, hide_index=True)
    if df.empty:
        st.error("No valid plan in this sweep; change the knob values.")
        return
    x, y, color = spec["x"], spec["y"], None if spec["color"] == "none" else spec["color"]
    mask = front_mask(mode, df, x, y)
    df = df.assign(on_front=mask)
    _summary_metrics(mode, df, mask, x, y)
    _front_chart(mode, df, mask, x, y, color)
    _plan_picker(mode, df, mask, x)
    st.dataframe(df.drop(columns=["config"]), hide_index=True, column_config=column_config(mode, df))
    _sweep_downloads(mode, base, spec, df)


def front_mask(mode: str, df: pd.DataFrame, x: str | None = None, y: str | None = None) -> list[bool]:
    """Pareto mask over (x, y) in each objective's direction; for training only plans that fit can be on it
    (unless none fits)."""
    x0, y0 = objectives.DEFAULT_AXES[mode]
    x, y = x or x0, y or y0
    objs = objectives.OBJECTIVES[mode]
    fits = df["fits"].to_numpy(bool) if mode == "training" and "fits" in df and df["fits"].any() else None
    points = df[[x, y]].astype(float).to_numpy().tolist()
    return objectives.pareto_mask(points, [objs[x].direction, objs[y].direction], fits)


def column_config(mode: str, df: pd.DataFrame) -> dict[str, Any]:
    """Units on the table's objective columns (percent, seconds, GB, J, $, ...)."""
    out: dict[str, Any] = {}
    for key, obj in objectives.OBJECTIVES[mode].items():
        if key in df:
            out[key] = st.column_config.NumberColumn(obj.label, format=UNIT_FORMAT.get(obj.unit), help=obj.help or None)
    out["on_front"] = st.column_config.CheckboxColumn("on front")
    return out


def _base_caption(mode: str, base: dict[str, Any]) -> None:
    """Say which plan the sweep varies (the planner's current one)."""
    model = base.get("model") if isinstance(base.get("model"), str) else "custom model"
    if mode == "training":
        p = base.get("parallel", {})
        st.caption(
            f"Base plan (from the Training planner): {model} on {base['cluster']['num_gpus']:,} x "
            f"{base['cluster']['gpu']}, tp{p.get('tp', 1)} pp{p.get('pp', 1)}, {p.get('schedule', '1f1b')}; "
            "dp is re-derived for every plan."
        )
    else:
        st.caption(
            f"Base deployment (from the Serving planner): {model} on {base['gpu']}, "
            f"{base['workload']['num_requests']} requests per plan."
        )


def _summary_metrics(mode: str, df: pd.DataFrame, mask: list[bool], x: str, y: str) -> None:
    """Plans simulated, plans on the front, and how many fit (training) or the best tokens/s (serving)."""
    c1, c2, c3 = st.columns(3)
    c1.metric("plans simulated", f"{len(df)}")
    c2.metric("on the Pareto front", f"{sum(mask)}")
    if mode == "training":
        c3.metric("fit in memory", f"{int(df['fits'].sum())} of {len(df)}")
    else:
        best = df.loc[df["throughput_tokens_per_s"].idxmax()]
        c3.metric("best throughput", f"{best['throughput_tokens_per_s']:,.0f} tok/s")
    missing = [o for o in (x, y) if df[o].isna().all()]
    if missing:
        st.warning(
            f"No plan gives {', '.join(objectives.OBJECTIVES[mode][o].label for o in missing)}: "
            f"{'; '.join(objectives.OBJECTIVES[mode][o].help or 'not in the results' for o in missing)}."
        )


def _front_chart(mode: str, df: pd.DataFrame, mask: list[bool], x: str, y: str, color: str | None) -> None:
    """The Pareto chart; a newly clicked point opens its plan in the planner."""
    titles = {k: o.title() for k, o in objectives.OBJECTIVES[mode].items()}
    fig = charts.tradeoff_chart(df, x, y, mask, color=color, titles=titles, ok="fits" if mode == "training" else None)
    event = st.plotly_chart(fig, key=f"to_pareto_{mode}", on_select="rerun", selection_mode="points")
    row = _selected_row(event)
    marker = f"{mode}:{row}:{df['config'].iloc[row]}" if row is not None and row < len(df) else None
    if marker is None:
        st.session_state["_to_last_pick"] = None
    elif marker != st.session_state.get("_to_last_pick"):
        st.session_state["_to_last_pick"] = marker
        open_plan(mode, df["config"].iloc[row])


def open_plan(mode: str, config_json: str) -> None:
    """Load a plan into its planner page (through the URL, so the page shows exactly this plan)."""
    page, param, state = PLANNER[mode]
    st.session_state[state] = from_json(config_json)
    st.switch_page(page, query_params={param: config_json})


def _selected_row(event: Any) -> int | None:
    """Row position of the clicked point (``customdata``) in a plotly_chart selection event."""
    try:
        points = event.selection.points if hasattr(event, "selection") else event["selection"]["points"]
    except (KeyError, TypeError, AttributeError):
        return None
    for p in points or []:
        data = p.get("customdata")
        if isinstance(data, list | tuple):
            data = data[0] if data else None
        if data is not None:
            return int(data)
    return None


def _plan_picker(mode: str, df: pd.DataFrame, mask: list[bool], x: str) -> None:
    """A plan selectbox (front first, then by the x axis) and a button that opens the pick in its planner."""
    order = sorted(range(len(df)), key=lambda i: (not mask[i], _sort_key(df[x].iloc[i])))
    labels = {i: ("* " if mask[i] else "") + df["label"].iloc[i] for i in order}
    c1, c2 = st.columns([3, 1])
    pick = c1.selectbox("or pick a plan (* = on the front)", order, format_func=labels.get, key=f"to_pick_{mode}")
    with c2:
        st.write("")
        if st.button("open in the planner", key=f"to_open_{mode}"):
            open_plan(mode, df["config"].iloc[pick])


def _sort_key(v: Any) -> float:
    return float("inf") if pd.isna(v) else float(v)


def _sweep_downloads(mode: str, base: dict[str, Any], spec: dict[str, Any], df: pd.DataFrame) -> None:
    """Download buttons for the sweep (a `clustersim sweep` file) and its results (CSV)."""
    knobs = knobs_of(mode)
    space = {knobs[n].path: v for n, v in spec["knobs"].items() if n in knobs}
    st.download_button(
        "download sweep file (YAML, for clustersim sweep)",
        to_yaml({"kind": mode, "base": base, "space": space}),
        file_name="sweep.yaml",
        mime="text/yaml",
        key="dl_sweep_cfg",
    )
    st.download_button(
        "download results (CSV)", df.to_csv(index=False), file_name="sweep.csv", mime="text/csv", key="dl_sweep_csv"
    )


if __name__ == "__main__":
    run_page(render)
