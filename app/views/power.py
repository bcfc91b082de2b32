"""Power & carbon page: a job's power over its step, energy by component, the DVFS energy-time front
and a carbon-aware schedule over an hourly grid-intensity series.

The job is a bundled example, an uploaded config, or the plan of the Training/Serving planner; the
sidebar sets its power (energy mode, locked clock, power cap) and site (PUE, grid region, price).
Run as a Streamlit page; importing it only defines the helpers.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
import yaml
from simulator.app import charts
from simulator.app.common import (
    PAGE_PARAMS,
    budgeted,
    clamp_choice,
    coerce_state,
    config_to_load,
    downloads,
    drop_foreign_params,
    error_text,
    guarded,
    publish_config,
    run_page,
    run_serving,
    run_training,
    set_state,
    warn_reset,
)
from simulator.app.plans import check_app_config, default_serving, default_training, parse_upload, to_json

from simulator.core.limits import MAX_TABLE_BYTES
from simulator.core.resources import data_path
from simulator.core.untrusted import save_upload
from simulator.energy import carbon, pricing
from simulator.energy.power_trace import power_trace
from simulator.search import dvfs

PARAM, STATE = PAGE_PARAMS["power"][0], "power_cfg"
SYNTHETIC_WEEK = data_path("carbon/synthetic_week.csv")
EXAMPLES = {
    "quickstart": "training: Llama-3 8B on 8 x H100 (quickstart)",
    "gpt3-175b": "training: GPT-3 175B on 1,024 x A100",
    "serving": "serving: Llama-3 8B on 1 x H100, 300 requests",
}
CUSTOM = "custom"
MODES = ["modelled", "tdp"]
POLICIES = list(carbon.POLICIES)
SWEEPS = ["locked clocks", "power caps"]
SERIES_BUNDLED, SERIES_UPLOADED = "synthetic week (bundled, illustrative)", "uploaded CSV"
CAP_FRACTIONS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: widget key -> (section of the page config, field, default); the page config is what the URL holds.
FIELDS: dict[str, tuple[str | None, str, Any]] = {
    "pw_workload": (None, "workload", "quickstart"),
    "pw_mode": ("power", "mode", "modelled"),
    "pw_clock": ("power", "sm_clock_mhz", 0.0),
    "pw_cap": ("power", "power_limit_w", 0.0),
    "pw_pue": ("site", "pue", 1.1),
    "pw_region": ("site", "region", "US"),
    "pw_preset": ("site", "price_preset", "default"),
    "pw_use_ttt": ("carbon", "use_time_to_train", True),
    "pw_job_h": ("carbon", "job_hours", 24.0),
    "pw_deadline_h": ("carbon", "deadline_h", 72.0),
    "pw_start_h": ("carbon", "start_h", 0),
    "pw_policy": ("carbon", "policy", "best-start"),
    "pw_overhead_h": ("carbon", "resume_overhead_h", 0.0),
    "pw_low_fraction": ("carbon", "low_fraction", 0.5),
    "pw_dvfs": (None, "dvfs", SWEEPS[0]),
}
BOUNDS = {
    "pw_clock": (0.0, 1e5),
    "pw_cap": (0.0, 1e5),
    "pw_pue": (1.0, 10.0),
    "pw_job_h": (0.0, 1e6),
    "pw_deadline_h": (0.0, 1e6),
    "pw_start_h": (0, 1e6),
    "pw_overhead_h": (0.0, 1e3),
    "pw_low_fraction": (0.01, 0.99),
}


# ---- configs -------------------------------------------------------------------------------------


def example_config(name: str) -> dict[str, Any]:
    """A bundled example's simulator config."""
    if name == "gpt3-175b":
        return default_training()
    if name == "serving":
        return default_serving()
    text = resources.files("simulator").joinpath("examples/quickstart.yaml").read_text()
    return yaml.safe_load(text)


def is_training(cfg: dict[str, Any]) -> bool:
    """Training configs have a cluster/parallel/training section; serving configs do not."""
    return any(k in cfg for k in ("cluster", "parallel", "training"))


def sim_config(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``base`` with the page's power and site settings (0 clock/cap = unset, so the defaults apply)."""
    cfg = copy.deepcopy(base)
    power = dict(cfg.get("power") or {})
    power["mode"] = values["pw_mode"]
    for key, field in (("pw_clock", "sm_clock_mhz"), ("pw_cap", "power_limit_w")):
        if float(values[key]) > 0:
            power[field] = float(values[key])
        else:
            power.pop(field, None)
    if "sm_clock_mhz" in power:
        power.pop("stage_clocks_mhz", None)  # one clock setting at a time
    site = dict(cfg.get("site") or {})
    site.update(pue=float(values["pw_pue"]), region=values["pw_region"], price_preset=values["pw_preset"])
    cfg["power"], cfg["site"] = power, site
    return cfg


@st.cache_data(show_spinner=False)
def region_options() -> dict[str, str]:
    """Grid region id -> label with its intensity (every bundled region, latest year)."""
    out = {}
    for g in carbon.list_regions():
        out[g.region] = f"{g.region}: {g.name} ({g.g_per_kwh:.0f} g/kWh, {g.year})"
    return out


@st.cache_data(show_spinner=False)
def preset_options() -> list[str]:
    """Names of the $/GPU-hour price presets, for the preset selectbox."""
    return [p.name for p in pricing.list_price_presets()]


def _canonical_region(value: Any) -> Any:
    try:
        return carbon.grid_intensity(str(value)).region
    except Exception:  # an unknown region is reset by coerce_state
        return value


def _raw_state(page: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, (section, field, default) in FIELDS.items():
        holder = page if section is None else (page.get(section) or {})
        value = holder.get(field, default)
        out[key] = default if value is None else value
    out["pw_region"] = _canonical_region(out["pw_region"])
    return out


def _default_of(key: str) -> Any:
    return FIELDS[key][2] if key in FIELDS else None


def safe_state(page: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Widget values for a page config, unusable values (wrong type, unknown option) reset."""
    try:
        values = _raw_state(page)
    except (TypeError, ValueError, AttributeError):
        return _raw_state({}), ["config"]
    options = {
        "pw_workload": [*EXAMPLES, CUSTOM],
        "pw_mode": MODES,
        "pw_region": list(region_options()),
        "pw_preset": preset_options(),
        "pw_policy": POLICIES,
        "pw_dvfs": SWEEPS,
    }
    reset = coerce_state(values, _default_of, options, BOUNDS)
    return values, reset


def page_config(values: dict[str, Any], custom: dict[str, Any] | None) -> dict[str, Any]:
    """The page config (URL and session) from widget values; a custom job carries its config."""
    out: dict[str, Any] = {}
    for key, (section, field, _default) in FIELDS.items():
        if section is None:
            out[field] = values[key]
        else:
            out.setdefault(section, {})[field] = values[key]
    if values["pw_workload"] == CUSTOM and custom is not None:
        out["config"] = custom
    return out


def _set_custom(cfg: dict[str, Any], name: str) -> None:
    """Make ``cfg`` the custom job; its own power/site settings seed the widgets."""
    st.session_state["pw_custom_cfg"] = cfg
    st.session_state["pw_custom_name"] = name
    seed = {"power": dict(cfg.get("power") or {}), "site": dict(cfg.get("site") or {})}
    values, _ = safe_state(seed)
    keep = {k for k, (section, field, _d) in FIELDS.items() if section in seed and field in seed[section]}
    keep |= {"pw_mode", "pw_clock", "pw_cap"}  # a config without a clock/cap runs at max/board limit
    set_state({k: v for k, v in values.items() if k in keep} | {"pw_workload": CUSTOM})


# ---- cached computations -------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=512)
def dvfs_point(cfg_json: str, setting: str, value: float) -> dvfs.DvfsPoint:
    """One DVFS setting of a config that passes the app's gate (cached per config and setting)."""
    data = json.loads(cfg_json)
    check_app_config("training" if is_training(data) else "serving", data)
    kwargs = {"clocks_mhz": [value]} if setting == "clock" else {"caps_w": [value]}
    return dvfs.sweep(data, **kwargs)[0]


@st.cache_data(show_spinner=False, max_entries=32)
def load_series(path: str) -> carbon.IntensitySeries:
    """The hourly grid-intensity series at ``path`` (cached per path)."""
    return carbon.load_intensity_series(path)


@st.cache_data(show_spinner=False, max_entries=256)
def plan_schedule(path: str, policy: str, **kwargs: Any) -> carbon.Schedule:
    """A carbon-aware schedule over the series at ``path`` (cached per job and policy)."""
    return carbon.schedule_job(load_series(path), policy=policy, **kwargs)


# ---- widgets -------------------------------------------------------------------------------------


def _config_import() -> None:
    """Upload a config or take a planner's; either becomes the custom job."""
    with st.expander("upload a config, or use a planner's", expanded=False):
        up = st.file_uploader("training or serving config (YAML/JSON)", type=["yaml", "yml", "json"], key="pw_file")
        if up is not None and st.session_state.get("pw_file_id") != up.file_id:
            st.session_state["pw_file_id"] = up.file_id
            data = guarded(parse_upload, up.getvalue(), up.name)
            if data is not None:
                _set_custom(data, up.name)
        c1, c2 = st.columns(2)
        training, serving = st.session_state.get("training_cfg"), st.session_state.get("serving_cfg")
        if c1.button("Training planner's plan", key="pw_from_training", disabled=not training):
            _set_custom(copy.deepcopy(training), "the Training planner's plan")
        if c2.button("Serving planner's deployment", key="pw_from_serving", disabled=not serving):
            _set_custom(copy.deepcopy(serving), "the Serving planner's deployment")


def _series_upload() -> None:
    """Save an uploaded intensity CSV under a content-hashed temp name and switch to it."""
    up = st.file_uploader("hourly grid intensity (CSV: timestamp, g_per_kwh)", type=["csv"], key="pw_series_file")
    if up is None or st.session_state.get("pw_series_file_id") == up.file_id:
        return
    st.session_state["pw_series_file_id"] = up.file_id
    path = guarded(save_upload, up.getvalue(), "intensity", ".csv", MAX_TABLE_BYTES)
    if path is None:
        return
    st.session_state["pw_series_path"] = str(path)
    st.session_state["pw_series_name"] = up.name
    st.session_state["pw_series"] = SERIES_UPLOADED


def _sidebar() -> tuple[dict[str, Any], str | None]:
    """Draw the job, power, site, schedule and sweep widgets; return their values and the series path."""
    st.header("Job")
    _job_widgets()
    st.header("Power")
    _power_widgets()
    st.header("Site")
    _site_widgets()
    st.header("Carbon-aware schedule")
    path = _schedule_widgets()
    st.header("DVFS sweep")
    st.radio("sweep", SWEEPS, key="pw_dvfs", horizontal=True)
    return {k: st.session_state[k] for k in FIELDS}, path


def _job_widgets() -> None:
    """Config import and the job picker: a bundled example or the custom job."""
    _config_import()
    options = [*EXAMPLES] + ([CUSTOM] if st.session_state.get("pw_custom_cfg") is not None else [])
    clamp_choice("pw_workload", options, "quickstart")
    custom_name = st.session_state.get("pw_custom_name", "uploaded")
    st.selectbox(
        "config",
        options,
        format_func=lambda k: EXAMPLES.get(k, f"custom: {custom_name}"),
        key="pw_workload",
    )


def _power_widgets() -> None:
    """Energy mode, locked SM clock (MHz) and power cap (W per GPU)."""
    st.selectbox(
        "energy mode",
        MODES,
        key="pw_mode",
        help="modelled: the GPU power model over the simulated timeline, plus hosts, x PUE; "
        "tdp: GPU-hours x TDP x PUE (how most published footprints count)",
    )
    c1, c2 = st.columns(2)
    c1.number_input("locked SM clock (MHz, 0 = max)", min_value=0.0, step=15.0, format="%.0f", key="pw_clock")
    c2.number_input("power cap (W per GPU, 0 = board limit)", min_value=0.0, step=25.0, format="%.0f", key="pw_cap")


def _site_widgets() -> None:
    """PUE, grid region and price preset of the site."""
    st.number_input("PUE", min_value=1.0, max_value=10.0, step=0.05, format="%.2f", key="pw_pue")
    regions = region_options()
    clamp_choice("pw_region", list(regions), "US")
    st.selectbox("grid region", list(regions), format_func=regions.get, key="pw_region")
    presets = preset_options()
    clamp_choice("pw_preset", presets, "default")
    st.selectbox("price preset ($/GPU-hour)", presets, key="pw_preset")


def _schedule_widgets() -> str | None:
    """Intensity series, job length, deadline, start and policy settings; returns the series' path."""
    _series_upload()
    series_options = [SERIES_BUNDLED] + ([SERIES_UPLOADED] if st.session_state.get("pw_series_path") else [])
    clamp_choice("pw_series", series_options, SERIES_BUNDLED)
    choice = st.selectbox("intensity series", series_options, key="pw_series")
    path = st.session_state.get("pw_series_path") if choice == SERIES_UPLOADED else str(SYNTHETIC_WEEK)
    st.checkbox(
        "job length = the plan's time to train",
        key="pw_use_ttt",
        help="a training plan with a token budget; otherwise the hours below",
    )
    c1, c2 = st.columns(2)
    c1.number_input("job length (h at full rate)", min_value=0.0, step=1.0, key="pw_job_h")
    c2.number_input("deadline (h after the start)", min_value=0.0, step=6.0, key="pw_deadline_h")
    c1, c2 = st.columns(2)
    c1.number_input("start (hour of the series)", min_value=0, step=1, key="pw_start_h")
    c2.selectbox("policy", POLICIES, key="pw_policy")
    c1, c2 = st.columns(2)
    c1.number_input(
        "resume overhead (h)",
        min_value=0.0,
        step=0.25,
        key="pw_overhead_h",
        help="pause-resume: run time each resume costs (checkpoint reload, warm-up)",
    )
    c2.number_input(
        "GPUs kept when scaled down",
        min_value=0.01,
        max_value=0.99,
        step=0.05,
        key="pw_low_fraction",
        help="scale-down: share of the job's GPUs that keep running in high-carbon hours",
    )
    return path


# ---- results -------------------------------------------------------------------------------------


def _num(x: float, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, thousands separated when large."""
    return f"{x:,.0f}" if abs(x) >= 10 ** (digits - 1) else f"{x:,.{digits}g}"


def _co2(kg: float) -> str:
    """kgCO2e, or gCO2e below 1 kg so small figures stay readable."""
    return f"{_num(kg)} kgCO2e" if abs(kg) >= 1 or kg == 0 else f"{_num(kg * 1e3)} gCO2e"


def _clock_text(clocks: Any) -> str:
    values = [float(c) for c in clocks] if isinstance(clocks, list | tuple) else [float(clocks)]
    lo, hi = min(values), max(values)
    return f"{lo:,.0f} MHz" if hi - lo < 0.5 else f"{lo:,.0f}-{hi:,.0f} MHz"


def show_metrics(r: Any, training: bool) -> None:
    """Power, energy, carbon and cost of one result, every number with its unit."""
    per = "step" if training else "run"
    pw = r.power
    throttled = bool(pw.get("throttled"))
    cols = st.columns(4)
    cols[0].metric(
        "avg GPU power",
        f"{pw['avg_gpu_power_w']:,.0f} W",
        help=f"the hottest GPU's average over the {per} ({pw['mode']} mode)",
    )
    cols[1].metric(
        "SM clock",
        _clock_text(pw["sm_clock_mhz"]),
        "throttled by the power cap" if throttled else None,
        delta_color="inverse",
        help="per pipeline stage when they differ",
    )
    cols[2].metric(
        "power limit",
        f"{pw['power_limit_w']:,.0f} W",
        "binding" if throttled else "not binding",
        delta_color="inverse" if throttled else "off",
        help="per GPU, held on the average power",
    )
    if training:
        cols[3].metric("step time", f"{r.step_time_s:,.3f} s")
    else:
        cols[3].metric("run length", f"{r.duration_s:,.1f} s", help="first arrival to last completion")
    cols = st.columns(4)
    cols[0].metric(
        f"energy per {per}",
        f"{_num(r.energy_j['facility'] / 3.6e6)} kWh",
        help="facility energy: GPUs + hosts, x PUE",
    )
    cols[1].metric(
        "energy per token",
        f"{_num(r.energy_per_token_j)} J/token",
        help="facility energy per " + ("trained token" if training else "output token"),
    )
    cols[2].metric(f"operational carbon per {per}", _co2(r.kgco2e["operational"]))
    cols[3].metric(
        f"embodied carbon per {per}",
        _co2(r.kgco2e["embodied"]),
        help="manufacturing footprint amortised over the hardware's service life by GPU-hours",
    )
    cols = st.columns(4)
    cols[0].metric(f"cost per {per}", f"$ {_num(r.cost_usd, 4)}", help="GPU-hours x $/GPU-hour")
    if not training:
        cols[1].metric("cost per M output tokens", f"$ {_num(r.cost_per_million_output_tokens_usd)}")
    elif r.total_mwh is not None:
        cols[1].metric(
            "whole run (token budget)",
            f"{_num(r.total_mwh)} MWh",
            f"{_num(r.total_tco2e)} tCO2e, $ {_num(r.total_cost_usd)}",
            delta_color="off",
            help=f"time to train {r.time_to_train_days:,.1f} days",
        )


def site_caption(cfg: dict[str, Any], gpu: str) -> str:
    """Where the carbon and price figures come from."""
    site = cfg.get("site") or {}
    parts = []
    if site.get("market_kg_per_kwh") is not None:
        parts.append(f"market-based intensity {site['market_kg_per_kwh'] * 1e3:,.0f} g/kWh (from the config)")
    elif site.get("grid_kg_per_kwh") is not None:
        parts.append(f"grid intensity {site['grid_kg_per_kwh'] * 1e3:,.0f} g/kWh (from the config)")
    else:
        grid, _ = error_text(carbon.grid_intensity, site.get("region", "US"))
        if grid is not None:
            parts.append(f"grid {grid.name} {grid.g_per_kwh:,.0f} gCO2e/kWh ({grid.year}, {grid.basis}; {grid.source})")
    if site.get("price_usd_per_gpu_hour") is not None:
        parts.append(f"price $ {site['price_usd_per_gpu_hour']:,.2f}/GPU-hour (from the config)")
    else:
        price, _ = error_text(pricing.gpu_hour_price, gpu, site.get("price_preset", "default"))
        if price is not None:
            est = ", estimate" if price.estimate else ""
            parts.append(f"price $ {price.value_usd:,.2f}/GPU-hour ({price.preset}{est}: {price.source})")
    return "; ".join(parts)


def show_power(r: Any, training: bool) -> Any:
    """Power over the step timeline and energy by component; returns the power trace (or None)."""
    trace = guarded(power_trace, r)
    col1, col2 = st.columns([3, 2])
    with col1:
        if trace is not None:
            limit = r.power["power_limit_w"] if r.power["mode"] == "modelled" else None
            st.plotly_chart(charts.power_timeline(trace, limit), key="pw_power_chart")
    with col2:
        st.plotly_chart(charts.energy_breakdown(r.energy_j, "step" if training else "run"), key="pw_energy_chart")
    st.caption(
        "Power over time: each GPU of a "
        + ("pipeline rank" if training else "replica")
        + " draws its rank-average compute power while it computes, active idle plus the SM-activity term "
        "during inline collectives, and active idle between kernels, so the line integrates to the modelled "
        "GPU energy and the hottest rank's average is the avg GPU power above. "
        "Hosts: CPUs, DRAM, NICs and switches of the job's share of its nodes; PUE overhead: cooling and power "
        "delivery. In tdp mode every GPU counts at its TDP and hosts are not counted separately."
    )
    return trace


def dvfs_settings(setting: str, gpu: str, limit_w: float) -> list[float]:
    """The clocks (default: 9 from the lowest to the max) or caps (40-100% of the limit) to sweep."""
    if setting == "clock":
        return dvfs.default_clocks(gpu)
    return [float(round(limit_w * f)) for f in CAP_FRACTIONS]


def show_dvfs(cfg: dict[str, Any], r: Any, sweep_kind: str) -> pd.DataFrame | None:
    """The DVFS section: on demand, the energy-time front over clocks or caps; returns its table."""
    st.subheader("DVFS: energy vs time per token")
    setting = "clock" if sweep_kind == SWEEPS[0] else "cap"
    values = guarded(dvfs_settings, setting, r.gpu, r.power["power_limit_w"])
    if values is None:
        return None
    cfg_json = to_json(cfg)
    key = to_json({"cfg": cfg, "setting": setting})
    what = "locked clocks" if setting == "clock" else "power caps"
    if st.button(f"run the DVFS sweep ({len(values)} {what})", key="pw_dvfs_run"):
        st.session_state["pw_dvfs_for"] = key
    if st.session_state.get("pw_dvfs_for") != key:
        st.caption(
            f"Re-simulates this job at {len(values)} {what} ("
            + ", ".join(f"{v:,.0f}" for v in values)
            + (" MHz" if setting == "clock" else " W")
            + "); results are cached per config."
        )
        return None
    bar = st.progress(0.0, text="DVFS sweep")
    points, failed = [], []
    for i, value in enumerate(values):
        point, err = error_text(budgeted, dvfs_point, cfg_json, setting, value)
        unit = "MHz" if setting == "clock" else "W"
        bar.progress((i + 1) / len(values), text=f"DVFS sweep: {value:,.0f} {unit}")
        if point is None:
            failed.append(f"{value:,.0f} {unit}: {err}")
        else:
            points.append(point)
    bar.empty()
    if not points:
        st.error(failed[0] if failed else "no DVFS points")
        return None
    if failed:
        st.warning(f"{len(failed)} of {len(values)} settings could not run: " + "; ".join(failed))
    rows = dvfs.to_rows(points)
    best = dvfs.optimum(points)
    best_row = rows[points.index(best)]
    fastest = min(points, key=lambda p: p.seconds_per_token)
    st.plotly_chart(charts.dvfs_front(rows, best_row), key="pw_dvfs_chart")
    cols = st.columns(4)
    cols[0].metric("least-energy clock", f"{best.sm_clock_mhz:,.0f} MHz", help="least GPU energy per token")
    cols[1].metric(
        "GPU energy per token there",
        f"{_num(best.gpu_j_per_token * 1e3)} mJ",
        f"{best.gpu_j_per_token / fastest.gpu_j_per_token - 1:+.1%} vs fastest",
        delta_color="inverse",
    )
    cols[2].metric(
        "time per token there",
        f"{_num(best.seconds_per_token * 1e3)} ms",
        f"{best.seconds_per_token / fastest.seconds_per_token - 1:+.1%} vs fastest",
        delta_color="inverse",
    )
    cols[3].metric("on the Pareto front", f"{sum(row['pareto'] for row in rows)} of {len(rows)} settings")
    frame = pd.DataFrame(rows)
    with st.expander("DVFS points"):
        st.dataframe(frame, hide_index=True)
    return frame


def _schedule_frame(series: carbon.IntensitySeries, sched: carbon.Schedule, power_kw: float) -> pd.DataFrame:
    """The schedule hour by hour: intensity (g/kWh), running fraction, progress (h), power (kW) and kgCO2e."""
    rows = []
    for i, (f, prog) in enumerate(zip(sched.fractions, sched.progress, strict=True)):
        hour = sched.now + i
        when = series.timestamp(hour)
        rows.append(
            {
                "hour": hour,
                "timestamp": when.isoformat() if when is not None else None,
                "g_per_kwh": series[hour] * 1e3,
                "running_fraction": f,
                "progress_h": prog,
                "power_kw": f * power_kw,
                "kgco2e": f * power_kw * series[hour],
            }
        )
    return pd.DataFrame(rows)


def show_schedule(r: Any, training: bool, values: dict[str, Any], path: str | None) -> pd.DataFrame | None:
    """The carbon-aware schedule of the job over the intensity series; returns its hourly table."""
    st.subheader("Carbon-aware schedule")
    if not path or not Path(path).is_file():
        st.info("Upload an hourly grid-intensity CSV in the sidebar (the bundled synthetic week is not installed).")
        return None
    series = guarded(load_series, path)
    if series is None:
        return None
    window_s = r.step_time_s if training else r.duration_s
    power_kw = r.energy_j["facility"] / window_s / 1e3
    job_hours, length = _job_length(r, training, values)
    uses_ttt = values["pw_use_ttt"] and getattr(r, "time_to_train_days", None) is not None
    if uses_ttt and job_hours > len(series) - int(values["pw_start_h"]):
        st.info(
            f"The plan's time to train ({job_hours:,.0f} h) does not fit in the series' {len(series)} hours from "
            "the start: untick 'job length = the plan's time to train' to schedule a shorter job, or upload a "
            "longer series."
        )
        return None
    kwargs = dict(
        job_hours=job_hours,
        power_kw=power_kw,
        deadline_h=float(values["pw_deadline_h"]),
        now=int(values["pw_start_h"]),
        resume_overhead_h=float(values["pw_overhead_h"]),
        low_fraction=float(values["pw_low_fraction"]),
    )
    st.caption(
        f"Job length {length} at {_num(power_kw)} kW facility power (all {r.num_gpus:,} GPUs, hosts and PUE, "
        f"from this {'step' if training else 'run'}); series: {series.source or Path(path).name}, "
        f"{len(series)} hours, mean {series.mean() * 1e3:,.0f} g/kWh. The schedule charges this series, "
        "not the site's region."
    )
    policy = values["pw_policy"]
    with st.spinner("planning the schedule..."):
        sched = guarded(plan_schedule, path, policy, **kwargs)
    if sched is None:
        return None
    base = plan_schedule(path, "now", **kwargs) if policy != "now" else sched
    _schedule_metrics(sched, policy)
    st.plotly_chart(charts.carbon_schedule(series, sched, base), key="pw_carbon_chart")
    rows = _policy_rows(sched, policy, path, kwargs)
    with st.expander("every policy"):
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    return _schedule_frame(series, sched, power_kw)


def _job_length(r: Any, training: bool, values: dict[str, Any]) -> tuple[float, str]:
    """Hours of the job at full rate (the plan's time to train, if asked and known) and how that was chosen."""
    ttt = getattr(r, "time_to_train_days", None)
    if values["pw_use_ttt"] and ttt is not None:
        return ttt * 24.0, f"the plan's time to train, {ttt * 24.0:,.1f} h"
    job_hours, length = float(values["pw_job_h"]), f"{float(values['pw_job_h']):,.4g} h"
    if values["pw_use_ttt"]:
        length += " (the job has no time to train: " + ("no token budget" if training else "serving") + ")"
    return job_hours, length


def _schedule_metrics(sched: carbon.Schedule, policy: str) -> None:
    """Carbon of running now and of the policy (kgCO2e), the saving, and when the job starts and finishes."""
    cols = st.columns(4)
    cols[0].metric("run now", _co2(sched.baseline_kgco2e), help="start at once, run contiguously")
    cols[1].metric(
        policy,
        _co2(sched.kgco2e),
        f"{-sched.saving_kg:+,.3g} kg" if sched.saving_kg else None,
        delta_color="inverse",
    )
    cols[2].metric("saving vs running now", _co2(sched.saving_kg), f"{sched.saving_pct:.1f}%", "off")
    start, finish = sched.start_time, sched.finish_time
    cols[3].metric(
        "starts / finishes",
        f"+{sched.start_h:,.1f} h / +{sched.finish_h:,.1f} h",
        help=f"{start:%a %Y-%m-%d %H:%M} to {finish:%a %Y-%m-%d %H:%M}" if start and finish else None,
    )


def _policy_rows(sched: carbon.Schedule, policy: str, path: str, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per policy for the same job: its kgCO2e, saving, start and finish (h) and resumes, or its error."""
    rows = []
    for p in POLICIES:
        other, err = (sched, None) if p == policy else error_text(plan_schedule, path, p, **kwargs)
        if other is None:
            rows.append({"policy": p, "error": err})
            continue
        rows.append(
            {
                "policy": p,
                "kgCO2e": other.kgco2e,
                "saving (kg)": other.saving_kg,
                "saving (%)": other.saving_pct,
                "start (h)": other.start_h,
                "finish (h)": other.finish_h,
                "resumes": other.resumes,
            }
        )
    return rows


def render() -> None:
    """The page: job, power and site in the sidebar; power, energy, DVFS and the schedule in the main area."""
    st.title("Power & carbon")
    drop_foreign_params("power")
    default = page_config({k: d for k, (_s, _f, d) in FIELDS.items()}, None)
    loaded = config_to_load(PARAM, STATE, default, probe="pw_mode")
    if loaded is not None:
        values, reset = safe_state(loaded)
        custom = loaded.get("config")
        if values["pw_workload"] == CUSTOM:
            if isinstance(custom, dict):
                st.session_state["pw_custom_cfg"] = custom
                st.session_state.setdefault("pw_custom_name", "from the link")
            elif st.session_state.get("pw_custom_cfg") is None:
                values["pw_workload"] = "quickstart"
                reset.append("pw_workload")
        warn_reset(PARAM, reset, "pw_")
        set_state(values)
    with st.sidebar:
        values, series_path = _sidebar()
    workload = values["pw_workload"]
    custom = st.session_state.get("pw_custom_cfg") if workload == CUSTOM else None
    publish_config(PARAM, STATE, page_config(values, custom))

    base = custom if custom is not None else example_config(workload)
    cfg = sim_config(base, values)
    training = is_training(cfg)
    with st.spinner("simulating the job..."):
        result = guarded(run_training if training else run_serving, to_json(cfg))
    if result is None:
        st.info("Fix the job or its power settings in the sidebar to see its power, energy and carbon.")
        downloads("power", cfg, {})
        return
    show_metrics(result, training)
    st.caption(
        f"{result.model} on {result.num_gpus:,} x {result.gpu} ({result.profile} profile), "
        f"{result.power['mode']} energy, PUE {cfg['site']['pue']:.2f}; " + site_caption(cfg, result.gpu)
    )
    trace = show_power(result, training)
    dvfs_frame = show_dvfs(cfg, result, values["pw_dvfs"])
    schedule_frame = show_schedule(result, training, values, series_path)

    files = {
        "result.json": ("download results (JSON)", json.dumps(result.to_dict(), indent=1), "application/json"),
    }
    if trace is not None:
        files["power.csv"] = ("download power over time (CSV)", trace.to_frame().to_csv(index=False), "text/csv")
    if dvfs_frame is not None:
        files["dvfs.csv"] = ("download DVFS points (CSV)", dvfs_frame.to_csv(index=False), "text/csv")
    if schedule_frame is not None:
        files["schedule.csv"] = ("download schedule (CSV)", schedule_frame.to_csv(index=False), "text/csv")
    downloads("power", cfg, files)


if __name__ == "__main__":
    run_page(render)
