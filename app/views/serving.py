"""Serving planner page: a deployment and its traffic -> latency percentiles, goodput, KV use, capacity.

Run as a Streamlit page; importing it only defines the helpers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from simulator.app import charts
from simulator.app.common import (
    PAGE_PARAMS,
    clamp_choice,
    coerce_state,
    config_to_load,
    downloads,
    drop_foreign_params,
    guarded,
    model_choice_state,
    model_picker,
    publish_config,
    run_page,
    run_serving,
    set_state,
    warn_reset,
)
from simulator.app.plans import CURVE_REQUESTS, at_rate, curve_point, default_serving, knee_rate, rates_around, to_json

from hwmodels.catalogue import list_gpus, list_links
from hwmodels.errors import ClusterSimError
from simulator.core.limits import MAX_REQUEST_TRACE_BYTES
from simulator.core.untrusted import save_upload
from simulator.serving.policies import BATCHING_POLICIES

PARAM, STATE = PAGE_PARAMS["serving"][0], "serving_cfg"
BATCHING_KINDS = list(BATCHING_POLICIES)  # the policy registry: a registered policy appears here
#: Each policy's knobs and their defaults, read from the config schema (one source of truth).
BATCHING_KNOBS: dict[str, dict[str, Any]] = {
    kind: {k: v for k, v in cls().model_dump().items() if k != "kind"} for kind, cls in BATCHING_POLICIES.items()
}
ARRIVAL_KINDS = ["poisson", "gamma", "fixed", "trace"]
LENGTH_KINDS = ["fixed", "uniform", "lognormal", "zipf", "trace"]
LENGTH_KNOBS: dict[str, dict[str, Any]] = {
    "fixed": {"prompt_tokens": 1024, "output_tokens": 256},
    "uniform": {"prompt_min": 256, "prompt_max": 2048, "output_min": 64, "output_max": 512},
    "lognormal": {"prompt_median": 1024.0, "prompt_sigma": 0.8, "output_median": 256.0, "output_sigma": 0.7},
    "zipf": {"prompt_a": 1.5, "output_a": 1.5},
    "trace": {"sample": False},
}
TRACE_PRESETS = ["none", "azure", "splitwise", "vidur"]
TOP_FIELDS = {"sv_gpu": "gpu", "sv_tp": "tp", "sv_replicas": "replicas", "sv_weight_dtype": "weight_dtype"}
TOP_DEFAULTS = {"sv_tp": 1, "sv_replicas": 1, "sv_weight_dtype": "bf16", "sv_router": "least_outstanding"}
KV_FIELDS = {
    "sv_kv_dtype": ("dtype", "bf16"),
    "sv_block_size": ("block_size", 16),
    "sv_gpu_memory_utilization": ("gpu_memory_utilization", 0.9),
    "sv_preemption": ("preemption", "recompute"),
    "sv_host_gb": ("host_gb", 0.0),
    "sv_prefix_caching": ("prefix_caching", False),
}


def _knob_key(group: str, kind: str, field: str) -> str:
    """Widget key of one knob of a batching policy (group "b") or length distribution (group "l")."""
    return f"sv_{group}_{kind}_{field}"


def _raw_state(cfg: dict[str, Any]) -> dict[str, Any]:
    """Widget values that show the serving config ``cfg`` (unchecked; see :func:`safe_state`)."""
    out = model_choice_state("sv", cfg.get("model", "llama3-8b"))
    for key, field in TOP_FIELDS.items():
        out[key] = cfg.get(field, TOP_DEFAULTS.get(key))
    out["sv_router"] = cfg.get("router", TOP_DEFAULTS["sv_router"])
    batching = cfg.get("batching") or {"kind": "continuous"}
    kind = batching.get("kind", "continuous")
    kind = kind if kind in BATCHING_KNOBS else "invalid"
    out["sv_kind"] = kind
    for field, default in BATCHING_KNOBS.get(kind, {}).items():
        out[_knob_key("b", kind, field)] = batching.get(field, default)
    kv = cfg.get("kv") or {}
    for key, (field, default) in KV_FIELDS.items():
        out[key] = kv.get(field, default)
    wl = cfg.get("workload") or {}
    out["sv_num_requests"] = wl.get("num_requests", 300)  # types are checked by coerce_state
    arrivals = wl.get("arrivals") or {"kind": "poisson", "rate_per_s": 8.0}
    out["sv_arrivals"] = arrivals.get("kind", "poisson")
    out["sv_rate"] = arrivals.get("rate_per_s") or 0.0
    out["sv_cv"] = arrivals.get("cv", 2.0)
    lengths = wl.get("lengths") or {"kind": "lognormal"}
    lkind = lengths.get("kind", "lognormal")
    lkind = lkind if lkind in LENGTH_KNOBS else "invalid"
    out["sv_lengths"] = lkind
    for field, default in LENGTH_KNOBS.get(lkind, {}).items():
        out[_knob_key("l", lkind, field)] = lengths.get(field, default)
    trace = wl.get("trace") or {}
    st.session_state["sv_trace_path"] = trace.get("path")
    out["sv_trace_preset"] = trace.get("preset", "none")
    slo = cfg.get("slo") or {}
    out["sv_slo_ttft"] = slo.get("ttft_s", 1.0)
    out["sv_slo_tpot"] = slo.get("tpot_s", 0.05)
    return out


OPTIONS = {
    "sv_weight_dtype": ["bf16", "fp16", "fp8", "int8", "int4"],
    "sv_router": ["round_robin", "least_outstanding", "kv_aware"],
    "sv_kind": BATCHING_KINDS,
    "sv_kv_dtype": ["bf16", "fp16", "fp8", "int4"],
    "sv_preemption": ["recompute", "swap"],
    "sv_arrivals": ARRIVAL_KINDS,
    "sv_lengths": LENGTH_KINDS,
    "sv_trace_preset": TRACE_PRESETS,
}
BOUNDS = {
    "sv_gpu_memory_utilization": (0.3, 1.0),
    "sv_cv": (0.01, float("inf")),
    "sv_slo_ttft": (0.001, float("inf")),
    "sv_slo_tpot": (0.001, float("inf")),
}


def _default_of(key: str) -> Any:
    """Default of a serving widget: the bundled example's value, or the policy/distribution default."""
    for group, table in (("b", BATCHING_KNOBS), ("l", LENGTH_KNOBS)):
        for kind, knobs in table.items():
            for field, default in knobs.items():
                if key == _knob_key(group, kind, field):
                    return default
    return _raw_state(default_serving()).get(key)


def safe_state(cfg: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Widget values for ``cfg`` with unusable values (wrong type, unknown option) reset to defaults."""
    try:
        values = _raw_state(cfg)
    except (TypeError, ValueError, AttributeError):
        return _raw_state(default_serving()), ["config"]
    reset = coerce_state(values, _default_of, OPTIONS, BOUNDS)
    for group, kind_key, table in (("b", "sv_kind", BATCHING_KNOBS), ("l", "sv_lengths", LENGTH_KNOBS)):
        kind = values[kind_key]  # a reset kind gets its own knobs' defaults
        for field, default in table[kind].items():
            values.setdefault(_knob_key(group, kind, field), default)
    return values, reset


def _knob_widgets(group: str, kind: str, knobs: dict[str, Any]) -> dict[str, Any]:
    """One widget per knob of a policy or distribution; hidden kinds keep nothing in the state."""
    values: dict[str, Any] = {}
    cols = st.columns(2)
    for i, (field, default) in enumerate(knobs.items()):
        key = _knob_key(group, kind, field)
        if key not in st.session_state:
            st.session_state[key] = default
        label = field.replace("_", " ")
        with cols[i % 2]:
            if isinstance(default, bool):
                values[field] = st.checkbox(label, key=key)
            elif isinstance(default, int):
                values[field] = int(st.number_input(label, min_value=1, step=1, key=key))
            elif isinstance(default, float):
                values[field] = float(st.number_input(label, min_value=0.0, step=0.1, format="%.3g", key=key))
            elif field == "link":
                links = [lk.id for lk in list_links()]
                clamp_choice(key, links, default)
                values[field] = st.selectbox(label, links, key=key)
            else:
                values[field] = st.text_input(label, key=key)
    return values


def _trace_upload() -> None:
    """Save an uploaded trace under a content-hashed temp name and switch the workload to it."""
    up = st.file_uploader("request trace (CSV or JSONL)", type=["csv", "jsonl", "json"], key="sv_trace_file")
    if up is None or st.session_state.get("sv_trace_file_id") == up.file_id:
        return
    st.session_state["sv_trace_file_id"] = up.file_id
    try:
        path = save_upload(up.getvalue(), "trace", Path(up.name).suffix or ".csv", MAX_REQUEST_TRACE_BYTES)
    except ClusterSimError as exc:
        st.error(str(exc))
        return
    st.session_state["sv_trace_path"] = str(path)
    st.session_state["sv_arrivals"] = "trace"
    st.session_state["sv_lengths"] = "trace"


def _sidebar() -> dict[str, Any]:
    """Draw the deployment, policy, KV, traffic and SLO widgets; return the serving config."""
    st.header("Deployment")
    deployment = _deployment_widgets()
    st.header("Batching")
    kind = st.selectbox("policy", BATCHING_KINDS, key="sv_kind")
    batching = {"kind": kind, **_knob_widgets("b", kind, BATCHING_KNOBS[kind])}
    st.header("KV cache")
    kv = _kv_widgets()
    st.header("Traffic")
    workload = _traffic_widgets()
    st.header("SLO")
    c1, c2 = st.columns(2)
    slo = {
        "ttft_s": float(c1.number_input("TTFT (s)", min_value=0.001, step=0.1, format="%.3g", key="sv_slo_ttft")),
        "tpot_s": float(c2.number_input("TPOT (s)", min_value=0.001, step=0.01, format="%.3g", key="sv_slo_tpot")),
    }
    return {**deployment, "batching": batching, "kv": kv, "workload": workload, "slo": slo}


def _deployment_widgets() -> dict[str, Any]:
    """Model, GPU, tp per replica, replicas, weight dtype and router: the config's top-level fields."""
    model = model_picker("sv", "llama3-8b")
    gpus = [g.id for g in list_gpus()]
    clamp_choice("sv_gpu", gpus, "h100-sxm5-80gb")
    gpu = st.selectbox("GPU", gpus, key="sv_gpu")
    c1, c2 = st.columns(2)
    tp = int(c1.number_input("tp per replica", min_value=1, step=1, key="sv_tp"))
    replicas = int(c2.number_input("replicas", min_value=1, step=1, key="sv_replicas"))
    weight_dtype = st.selectbox("weights", ["bf16", "fp16", "fp8", "int8", "int4"], key="sv_weight_dtype")
    router = st.selectbox("router", ["round_robin", "least_outstanding", "kv_aware"], key="sv_router")
    return {"model": model, "gpu": gpu, "tp": tp, "replicas": replicas, "weight_dtype": weight_dtype, "router": router}


def _kv_widgets() -> dict[str, Any]:
    """The ``kv`` section: cache dtype, block size, memory share, preemption, host tier (GB), prefix caching."""
    c1, c2 = st.columns(2)
    return {
        "dtype": c1.selectbox("KV dtype", ["bf16", "fp16", "fp8", "int4"], key="sv_kv_dtype"),
        "block_size": int(c2.number_input("block size", min_value=1, step=8, key="sv_block_size")),
        "gpu_memory_utilization": float(
            st.slider("GPU memory utilization", 0.3, 1.0, step=0.05, key="sv_gpu_memory_utilization")
        ),
        "preemption": st.selectbox("preemption", ["recompute", "swap"], key="sv_preemption"),
        "host_gb": float(st.number_input("host KV tier (GB, 0 = none)", min_value=0.0, step=16.0, key="sv_host_gb")),
        "prefix_caching": st.checkbox("prefix caching", key="sv_prefix_caching"),
    }


def _traffic_widgets() -> dict[str, Any]:
    """The ``workload`` section: request count, arrivals (req/s), lengths and, for kind 'trace', the trace file."""
    _trace_upload()
    num_requests = int(st.number_input("requests", min_value=1, step=100, key="sv_num_requests"))
    akind = st.selectbox("arrivals", ARRIVAL_KINDS, key="sv_arrivals")
    rate_label = "rescale trace to rate (req/s, 0 = as recorded)" if akind == "trace" else "arrival rate (req/s)"
    rate = float(st.number_input(rate_label, min_value=0.0, step=1.0, key="sv_rate"))
    arrivals: dict[str, Any] = {"kind": akind}
    if akind != "trace" or rate > 0:
        arrivals["rate_per_s"] = rate
    if akind == "gamma":
        arrivals["cv"] = float(st.number_input("burstiness cv", min_value=0.01, step=0.5, key="sv_cv"))
    lkind = st.selectbox("lengths", LENGTH_KINDS, key="sv_lengths")
    lengths = {"kind": lkind, **_knob_widgets("l", lkind, LENGTH_KNOBS[lkind])}
    workload: dict[str, Any] = {"num_requests": num_requests, "arrivals": arrivals, "lengths": lengths}
    if akind == "trace" or lkind == "trace":
        preset = st.selectbox(
            "trace columns", TRACE_PRESETS, key="sv_trace_preset", help="column names of known traces"
        )
        path = st.session_state.get("sv_trace_path")
        if path:
            workload["trace"] = {"path": path, "preset": preset}
            st.caption(f"trace: {Path(path).name}")
        else:
            st.warning("upload a trace file above for arrivals/lengths of kind 'trace'")
    return workload


def latency_curve(cfg: dict[str, Any]) -> tuple[pd.DataFrame, float | None] | None:
    """Simulate the deployment at a few rates around the configured one (small runs, cached)."""
    rate = (cfg["workload"]["arrivals"] or {}).get("rate_per_s")
    if not rate:
        st.info("The latency-vs-rate curve needs an arrival rate (set one to rescale the trace).")
        return None
    rates = rates_around(rate)
    bar = st.progress(0.0, text="latency vs rate")
    points = []
    for i, r in enumerate(rates):
        res = guarded(run_serving, to_json(at_rate(cfg, r, CURVE_REQUESTS)))
        bar.progress((i + 1) / len(rates), text=f"latency vs rate: {r:g} req/s")
        if res is None:
            break
        points.append({**curve_point(r, res), "stable": bool(res.steady is None or res.steady.stable)})
    bar.empty()
    if not points:
        return None
    return pd.DataFrame(points), knee_rate([p for p in points if p["stable"]], 0.9)  # overload never counts


@st.cache_data(show_spinner=False, max_entries=32)
def steady_capacity(cfg_json: str) -> Any:
    """The steady-state capacity search of a serving config given as JSON (cached per distinct config)."""
    from simulator.serving import load_serving_config
    from simulator.serving.capacity import find_capacity

    return find_capacity(load_serving_config(json.loads(cfg_json)), attainment=0.9)


def _ci_text(est: float, iv: Any, unit: float = 1e3, digits: int = 0) -> str:
    """``820 [740, 910]`` of an estimate and its interval, scaled by ``unit``."""
    f = f"{{:.{digits}f}}"
    return f"{f.format(est * unit)} [{f.format(iv.low * unit)}, {f.format(iv.high * unit)}]"


def _steady(r: Any) -> None:
    """Stability verdict, measurement window and the percentiles' intervals of a result."""
    s = r.steady
    if s is None:
        return
    if not s.stable:
        st.warning(
            f"Unstable: requests in the system grow {s.queue_growth_per_s:.2f} req/s and TTFT "
            f"{s.ttft_growth_s_per_s:.3g} s per s. The offered rate is overload; the figures only describe this run."
        )
    st.caption(
        f"{'Stable' if s.stable else 'UNSTABLE'}; measured over {s.window_requests:,} requests arriving "
        f"{s.window_start_s:.0f}-{s.window_end_s:.0f} s (warm-up of {s.warmup_requests:,} removed by MSER-5). "
        f"{s.confidence:.0%} intervals: p99 TTFT {_ci_text(r.ttft_s.p99, s.ttft_ci_s.p99)} ms, p99 TPOT "
        f"{_ci_text(r.tpot_s.p99, s.tpot_ci_s.p99, digits=1)} ms, SLO attainment "
        f"{_ci_text(r.slo_attainment, s.slo_attainment_ci, 100, 1)} %; widest half-width "
        f"{s.rel_half_width:.0%} of its percentile (target {s.target_rel_half_width:.0%})."
    )


def _metrics(r: Any) -> None:
    """Latency percentiles (ms), throughput, goodput, SLO attainment, KV peak and preemptions of a result."""
    cols = st.columns(4)
    cols[0].metric("TTFT p50 / p99", f"{r.ttft_s.p50 * 1e3:.0f} / {r.ttft_s.p99 * 1e3:.0f} ms")
    cols[1].metric("TPOT p50 / p99", f"{r.tpot_s.p50 * 1e3:.1f} / {r.tpot_s.p99 * 1e3:.1f} ms")
    cols[2].metric("throughput", f"{r.throughput_requests_per_s:.2f} req/s")
    cols[3].metric("output tokens/s", f"{r.throughput_tokens_per_s:,.0f}")
    cols = st.columns(4)
    cols[0].metric(
        "goodput",
        f"{r.goodput_requests_per_s:.2f} req/s",
        help="requests/s completed in the steady-state window that met both SLO limits",
    )
    cols[1].metric("SLO attainment", f"{r.slo_attainment:.1%}")
    cols[2].metric("KV peak", f"{r.kv_peak_utilization:.0%}", help=f"{r.kv_blocks_per_replica:,} blocks per replica")
    cols[3].metric("preemptions", f"{r.preemptions:,}")
    st.caption(
        f"{r.model} on {r.num_gpus} x {r.gpu} ({r.profile} profile), {r.policy} batching: "
        f"{r.completed_requests:,} requests in {r.duration_s:.1f} s simulated, mean {r.mean_batch_size:.1f} "
        f"decodes per iteration, GPU busy {r.gpu_busy_fraction:.0%}, prefix hit rate {r.prefix_hit_rate:.0%}"
    )


def render() -> None:
    """The page: widgets in the sidebar, results in the main area."""
    st.title("Serving planner")
    drop_foreign_params("serving")
    loaded = config_to_load(PARAM, STATE, default_serving(), probe="sv_tp")
    if loaded is not None:
        values, reset = safe_state(loaded)
        warn_reset(PARAM, reset, "sv_")
        set_state(values)
    with st.sidebar:
        cfg = _sidebar()
        st.header("Capacity")
        show_curve = st.checkbox("latency vs rate curve", value=True, key="sv_curve")
        search = st.checkbox(
            "steady-state capacity search", value=False, key="sv_capacity", help="binary search on the rate (~10 s)"
        )
    publish_config(PARAM, STATE, cfg)
    wl = cfg["workload"]
    if "trace" in (wl["arrivals"]["kind"], wl["lengths"]["kind"]) and "trace" not in wl:
        st.info("Upload a request trace in the sidebar (Traffic), or pick other arrivals/lengths.")
        downloads("serving", cfg, {})
        return

    with st.spinner("simulating the traffic..."):
        result = guarded(run_serving, to_json(cfg))
    if result is None:
        st.info("Fix the deployment in the sidebar to see its latency and throughput.")
        downloads("serving", cfg, {})
        return
    if result.slo_attainment < 0.9:
        st.warning(f"Only {result.slo_attainment:.0%} of requests meet the SLO at this rate.")
    _metrics(result)
    _steady(result)
    col1, col2 = st.columns(2)
    with col1:
        st.plotly_chart(charts.latency_percentiles(result), key="sv_latency")
        st.plotly_chart(charts.batch_sizes(result), key="sv_batches")
    with col2:
        st.plotly_chart(charts.kv_occupancy(result), key="sv_kv")
        curve = latency_curve(cfg) if show_curve else None
        if curve is not None:
            points, knee = curve
            st.plotly_chart(charts.latency_vs_rate(points, cfg["slo"]["ttft_s"], knee), key="sv_curve_chart")
            top = float(points["rate_per_s"].max())
            label = "below the lowest probed rate" if knee is None else f"{knee:g} req/s"
            st.metric(
                "capacity at SLO (90% attainment)",
                f">= {label}" if knee is not None and knee >= top else label,
                help=f"highest probed stable rate, {CURVE_REQUESTS} requests per point (short runs look better than "
                "the steady state); tick 'steady-state capacity search' for the capacity with its interval",
            )
        if search:
            with st.spinner("steady-state capacity search (a few runs of >= 2,000 requests)..."):
                cap = guarded(steady_capacity, to_json(cfg))
            if cap is not None:
                st.metric(
                    "steady-state capacity (90% attainment)",
                    f"{cap.rate_per_s:.3g} req/s [{cap.interval.low:.3g}, {cap.interval.high:.3g}]",
                    help="highest rate passing on the lower confidence bound of SLO attainment (stable), and the "
                    "lowest failing: `clustersim serve --max-rate`",
                )
    with st.expander("per-request table"):
        st.dataframe(result.requests, hide_index=True)
    files = {
        "result.json": ("download results (JSON)", json.dumps(result.to_dict(), indent=1), "application/json"),
        "requests.csv": ("download requests (CSV)", result.requests.to_csv(index=False), "text/csv"),
    }
    if curve is not None:
        files["latency-vs-rate.csv"] = ("download latency vs rate (CSV)", curve[0].to_csv(index=False), "text/csv")
    downloads("serving", cfg, files)


if __name__ == "__main__":
    run_page(render)
