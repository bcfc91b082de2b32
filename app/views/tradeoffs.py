"""Trade-off explorer page: sweep 2-3 knobs, draw the Pareto front, open a plan in its planner.

Training: step time vs peak memory per GPU (both minimised; the front is drawn over the plans that
fit). Serving: p99 end-to-end latency (minimised) vs output tokens/s (maximised). Run as a
Streamlit page; importing it only defines the helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st
from simulator.app import charts
from simulator.app.common import PAGE_PARAMS, drop_foreign_params, error_text, run_page, run_serving, run_training
from simulator.app.plans import (
    CURVE_REQUESTS,
    MAX_SWEEP,
    SERVING_KNOB_CHOICES,
    SERVING_KNOB_DEFAULTS,
    TRAINING_KNOB_CHOICES,
    TRAINING_KNOB_DEFAULTS,
    default_serving,
    default_training,
    from_json,
    serving_variants,
    to_json,
    to_yaml,
    training_variants,
)

from hwmodels.errors import ClusterSimError
from simulator.search.pareto import pareto_front

PARAM = PAGE_PARAMS["tradeoffs"][0]
MODES = {"training": "Training: step time vs memory", "serving": "Serving: throughput vs p99 latency"}
PLANNER = {
    "training": ("views/training.py", PAGE_PARAMS["training"][0], "training_cfg"),
    "serving": ("views/serving.py", PAGE_PARAMS["serving"][0], "serving_cfg"),
}
CHOICES = {"training": TRAINING_KNOB_CHOICES, "serving": SERVING_KNOB_CHOICES}
DEFAULTS = {"training": TRAINING_KNOB_DEFAULTS, "serving": SERVING_KNOB_DEFAULTS}
DEFAULT_KNOBS = {"training": ["tp", "pp", "micro_batch"], "serving": ["batching", "max_num_seqs"]}
AXES = {
    "training": ("step_time_s", "peak_memory_gb", [True, True]),
    "serving": ("e2e_p99_s", "throughput_tokens_per_s", [True, False]),
}
TITLES = {
    "step_time_s": "step time (s)",
    "peak_memory_gb": "peak memory per GPU (GB)",
    "e2e_p99_s": "p99 end-to-end latency (s)",
    "throughput_tokens_per_s": "output tokens/s",
}


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
        knobs = {k: list(v) for k, v in (spec.get("knobs") or {}).items() if k in CHOICES[mode]}
    except (ClusterSimError, TypeError, AttributeError) as exc:
        st.warning(f"{exc}; showing the default sweep")
        return
    st.session_state["to_mode"] = mode
    st.session_state[f"to_{mode}_knobs"] = list(knobs)[:3]
    for k, values in knobs.items():
        st.session_state[f"to_{mode}_vals_{k}"] = [v for v in values if v in CHOICES[mode][k]]


def _knob_widgets(mode: str) -> dict[str, list[Any]]:
    """The knobs to sweep and, per knob, the values to try (multiselects); returns knob -> values."""
    key = f"to_{mode}_knobs"
    if key not in st.session_state:
        st.session_state[key] = DEFAULT_KNOBS[mode]
    names = st.multiselect("knobs to sweep (2-3)", list(CHOICES[mode]), key=key, max_selections=3)
    knobs = {}
    cols = st.columns(max(1, len(names)))
    for col, name in zip(cols, names, strict=False):
        vkey = f"to_{mode}_vals_{name}"
        if vkey not in st.session_state:
            st.session_state[vkey] = DEFAULTS[mode][name]
        with col:
            knobs[name] = st.multiselect(name, CHOICES[mode][name], key=vkey)
    return knobs


def _base(mode: str) -> dict[str, Any]:
    """The plan being varied: the planner's current config, else its default."""
    if mode == "training":
        return dict(st.session_state.get("training_cfg") or default_training())
    base = dict(st.session_state.get("serving_cfg") or default_serving())
    wl = dict(base.get("workload") or {})
    wl["num_requests"] = min(int(wl.get("num_requests", CURVE_REQUESTS)), CURVE_REQUESTS)
    base["workload"] = wl
    return base


def _training_row(res: Any) -> dict[str, Any]:
    """The sweep table's columns of a TrainingResult (step time s, peak memory GB, tokens/s, MFU, bubble, fit)."""
    return {
        "step_time_s": res.step_time_s,
        "peak_memory_gb": res.memory_per_gpu_gb.peak,
        "tokens_per_s": res.tokens_per_s,
        "mfu": res.mfu,
        "bubble": res.bubble_fraction,
        "fits": res.fits_in_memory,
    }


def _serving_row(res: Any) -> dict[str, Any]:
    """The sweep table's columns of a ServingResult (p99 latencies s, tokens/s, goodput, SLO attainment)."""
    return {
        "e2e_p99_s": res.e2e_s.p99,
        "throughput_tokens_per_s": res.throughput_tokens_per_s,
        "ttft_p99_s": res.ttft_s.p99,
        "tpot_p99_s": res.tpot_s.p99,
        "goodput_requests_per_s": res.goodput_requests_per_s,
        "slo_attainment": res.slo_attainment,
    }


def sweep(mode: str, base: dict[str, Any], knobs: dict[str, list[Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Simulate every variant (cached per config) with a progress bar; (results, failures)."""
    variants = (training_variants if mode == "training" else serving_variants)(base, knobs)
    run: Callable[[str], Any] = run_training if mode == "training" else run_serving
    row_of = _training_row if mode == "training" else _serving_row
    bar = st.progress(0.0, text="sweep")
    rows, failed = [], []
    for i, (label, values, cfg) in enumerate(variants):
        res, err = error_text(run, to_json(cfg))
        bar.progress((i + 1) / len(variants), text=f"{i + 1}/{len(variants)}: {label}")
        if res is None:
            failed.append({"plan": label, "error": err})
        else:
            rows.append({"label": label, **values, **row_of(res), "config": to_json(cfg)})
    bar.empty()
    return pd.DataFrame(rows), pd.DataFrame(failed, columns=["plan", "error"])


def front_mask(mode: str, df: pd.DataFrame) -> list[bool]:
    """Pareto mask over the plans; for training only plans that fit in memory can be on the front."""
    x, y, minimize = AXES[mode]
    eligible = df["fits"].to_numpy(bool) if mode == "training" and df["fits"].any() else [True] * len(df)
    idx = [i for i, ok in enumerate(eligible) if ok]
    sub = pareto_front(df[[x, y]].to_numpy()[idx].tolist(), minimize)
    mask = [False] * len(df)
    for i, on in zip(idx, sub, strict=True):
        mask[i] = on
    return mask


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


def render() -> None:
    """The page: pick a mode and 2-3 knobs, sweep them, draw the Pareto front and open a plan in its planner."""
    st.title("Trade-off explorer")
    drop_foreign_params("tradeoffs")
    _load_from_url()
    if "to_mode" not in st.session_state:
        st.session_state["to_mode"] = "training"
    mode = st.radio("explore", list(MODES), format_func=MODES.get, key="to_mode", horizontal=True)
    base = _base(mode)
    _base_caption(mode, base)
    knobs = _knob_widgets(mode)
    spec = {"mode": mode, "knobs": knobs}
    st.query_params[PARAM] = to_json(spec)
    st.session_state["_sweep_url"] = st.query_params[PARAM]

    if len(knobs) < 1 or any(not v for v in knobs.values()):
        st.info("Pick 2-3 knobs and at least one value for each.")
        return
    n = 1
    for v in knobs.values():
        n *= len(v)
    if n > MAX_SWEEP:
        st.error(f"{n} plans: pick fewer values (at most {MAX_SWEEP} plans per sweep)")
        return
    df, failed = sweep(mode, base, knobs)
    if len(failed):
        with st.expander(f"{len(failed)} of {n} plans are invalid (why)"):
            st.dataframe(failed, hide_index=True)
    if df.empty:
        st.error("No valid plan in this sweep; change the knob values.")
        return
    mask = front_mask(mode, df)
    df = df.assign(on_front=mask)
    _summary_metrics(mode, df, mask)
    _front_chart(mode, df, mask)
    _plan_picker(mode, df, mask)
    st.dataframe(df.drop(columns=["config"]), hide_index=True)
    _sweep_downloads(mode, base, knobs, df)


def _base_caption(mode: str, base: dict[str, Any]) -> None:
    """Say which plan the sweep varies (the planner's current one)."""
    model = base.get("model") if isinstance(base.get("model"), str) else "custom model"
    if mode == "training":
        p = base.get("parallel", {})
        st.caption(
            f"Base plan (from the Training planner): {model} on {base['cluster']['num_gpus']:,} x "
            f"{base['cluster']['gpu']}, tp{p.get('tp')} pp{p.get('pp')}, {p.get('schedule')}; "
            "dp is re-derived for every plan."
        )
    else:
        st.caption(
            f"Base deployment (from the Serving planner): {model} on {base['gpu']}, "
            f"{base['workload']['num_requests']} requests per plan."
        )


def _summary_metrics(mode: str, df: pd.DataFrame, mask: list[bool]) -> None:
    """Plans simulated, plans on the front, and how many fit (training) or the best tokens/s (serving)."""
    c1, c2, c3 = st.columns(3)
    c1.metric("plans simulated", f"{len(df)}")
    c2.metric("on the Pareto front", f"{sum(mask)}")
    if mode == "training":
        c3.metric("fit in memory", f"{int(df['fits'].sum())} of {len(df)}")
    else:
        best = df.loc[df["throughput_tokens_per_s"].idxmax()]
        c3.metric("best throughput", f"{best['throughput_tokens_per_s']:,.0f} tok/s")


def _front_chart(mode: str, df: pd.DataFrame, mask: list[bool]) -> None:
    """The Pareto chart; a newly clicked point opens its plan in the planner."""
    x, y, _ = AXES[mode]
    fig = charts.pareto_chart(df, x, y, mask, titles=TITLES, ok="fits" if mode == "training" else None)
    event = st.plotly_chart(fig, key=f"to_pareto_{mode}", on_select="rerun", selection_mode="points")
    row = _selected_row(event)
    marker = f"{mode}:{row}:{df['config'].iloc[row]}" if row is not None and row < len(df) else None
    if marker is None:
        st.session_state["_to_last_pick"] = None
    elif marker != st.session_state.get("_to_last_pick"):
        st.session_state["_to_last_pick"] = marker
        open_plan(mode, df["config"].iloc[row])


def _plan_picker(mode: str, df: pd.DataFrame, mask: list[bool]) -> None:
    """A plan selectbox (front first, then by the x axis) and a button that opens the pick in its planner."""
    x = AXES[mode][0]
    order = sorted(range(len(df)), key=lambda i: (not mask[i], df[x].iloc[i]))
    labels = {i: ("* " if mask[i] else "") + df["label"].iloc[i] for i in order}
    c1, c2 = st.columns([3, 1])
    pick = c1.selectbox("or pick a plan (* = on the front)", order, format_func=labels.get, key=f"to_pick_{mode}")
    with c2:
        st.write("")
        if st.button("open in the planner", key=f"to_open_{mode}"):
            open_plan(mode, df["config"].iloc[pick])


def _sweep_downloads(mode: str, base: dict[str, Any], knobs: dict[str, list[Any]], df: pd.DataFrame) -> None:
    """Download buttons for the sweep's config (YAML) and its results (CSV)."""
    st.download_button(
        "download config (YAML)",
        to_yaml({"mode": mode, "base": base, "knobs": knobs}),
        file_name="sweep.yaml",
        mime="text/yaml",
        key="dl_sweep_cfg",
    )
    st.download_button(
        "download results (CSV)", df.to_csv(index=False), file_name="sweep.csv", mime="text/csv", key="dl_sweep_csv"
    )


if __name__ == "__main__":
    run_page(render)
