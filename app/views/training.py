"""Training planner page: one plan (and optionally a plan B) -> step time, MFU, memory, timeline.

Run as a Streamlit page (``st.navigation`` executes this file, where ``__name__ == "__main__"``);
importing it only defines the helpers.
"""

from __future__ import annotations

import json
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
    run_training,
    set_state,
    warn_reset,
)
from simulator.app.plans import default_training, derive_dp, from_json, to_json
from simulator.app.views import training_options

from hwmodels.catalogue import default_node_for_gpu, list_gpus, list_nodes
from simulator.training.schedules import schedule_names

PARAM, PARAM_B = PAGE_PARAMS["training"]
STATE, STATE_B = "training_cfg", "training_b"
#: widget key -> (config section, field)
FIELDS: dict[str, tuple[str, str]] = {
    "tr_gpu": ("cluster", "gpu"),
    "tr_node": ("cluster", "node"),
    "tr_num_gpus": ("cluster", "num_gpus"),
    "tr_tp": ("parallel", "tp"),
    "tr_pp": ("parallel", "pp"),
    "tr_dp": ("parallel", "dp"),
    "tr_cp": ("parallel", "cp"),
    "tr_ep": ("parallel", "ep"),
    "tr_sp": ("parallel", "sp"),
    "tr_vpp": ("parallel", "vpp"),
    "tr_zero": ("parallel", "zero"),
    "tr_schedule": ("parallel", "schedule"),
    "tr_seq_len": ("training", "seq_len"),
    "tr_global_batch": ("training", "global_batch"),
    "tr_micro_batch": ("training", "micro_batch"),
    "tr_recompute": ("training", "recompute"),
    "tr_precision": ("training", "precision"),
}
FIELD_DEFAULTS: dict[str, Any] = {
    "tr_node": None,
    "tr_dp": 1,
    "tr_cp": 1,
    "tr_ep": 1,
    "tr_sp": False,
    "tr_vpp": 1,
    "tr_zero": 0,
    "tr_schedule": "1f1b",
    "tr_recompute": "selective",
    "tr_precision": "bf16",
}
#: Plan B changes only these knobs of plan A (dp is re-derived).
B_FIELDS = ("tp", "pp", "vpp", "micro_batch", "schedule", "recompute", "zero")
SCHEDULES = list(schedule_names())  # the schedule registry: a registered schedule appears here
RECOMPUTE = ["none", "selective", "full"]
PRECISIONS = ["bf16", "fp16", "fp8"]
DEFAULT_MODEL, DEFAULT_GPU = "gpt3-175b", "a100-sxm4-80gb"
OPTIONS = {
    "tr_zero": [0, 1, 2, 3],
    "tr_schedule": SCHEDULES,
    "tr_recompute": RECOMPUTE,
    "tr_precision": PRECISIONS,
    **training_options.OPTIONS,
}


def _raw_state(cfg: dict[str, Any]) -> dict[str, Any]:
    """Widget values that show ``cfg`` (the inverse of what :func:`_sidebar_plan` builds), unchecked."""
    out = model_choice_state("tr", cfg.get("model", "gpt3-175b"))
    for key, (section, field) in FIELDS.items():
        value = (cfg.get(section) or {}).get(field, FIELD_DEFAULTS.get(key))
        out[key] = int(value) if isinstance(value, float) and value.is_integer() else value
    tokens = (cfg.get("training") or {}).get("tokens")
    try:
        out["tr_tokens_b"] = float(tokens) / 1e9 if tokens else 0.0
    except (TypeError, ValueError):
        out["tr_tokens_b"] = "invalid"  # reset by coerce_state
    p = cfg.get("parallel") or {}
    try:
        n = int(out["tr_num_gpus"] or 1)
        mp = int(p.get("tp", 1)) * int(p.get("pp", 1)) * int(p.get("cp", 1))
        out["tr_dp_auto"] = mp > 0 and n % mp == 0 and n // mp == int(p.get("dp", n // max(mp, 1)))
    except (TypeError, ValueError):
        out["tr_dp_auto"] = True
    out.update(training_options.option_state(cfg))  # compression, routing, power, stack, offload
    return out


def _default_state() -> dict[str, Any]:
    """Widget values of the default plan."""
    return _raw_state(default_training())


def safe_state(cfg: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Widget values for ``cfg`` with unusable values (wrong type, unknown option) reset."""
    try:
        values = _raw_state(cfg)
    except (TypeError, ValueError, AttributeError):
        return _default_state(), ["config"]
    defaults = _default_state()
    reset = coerce_state(values, defaults.get, OPTIONS, {"tr_zero": (0, 3), **training_options.BOUNDS})
    return values, reset


def b_state(values: dict[str, Any]) -> dict[str, Any]:
    """Plan B's widget values (``tr_b_<knob>``) for the B knobs found in ``values``."""
    return {f"tr_b_{k}": values[k] for k in B_FIELDS if k in values}


def _sidebar_plan() -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Draw plan A's widgets; return its config (None if dp cannot be derived) and the raw config."""
    model = model_picker("tr", DEFAULT_MODEL)
    cluster = _cluster_widgets()
    parallel, dp = _parallel_widgets(cluster["num_gpus"])
    training = _training_widgets()
    cfg = {"model": model, "cluster": cluster, "parallel": parallel, "training": training}
    training_options.sidebar(cfg)
    return (cfg if dp is not None else None), cfg


def _cluster_widgets() -> dict[str, Any]:
    """GPU, node preset (where the GPU has one) and GPU count: the config's ``cluster`` section."""
    gpus = [g.id for g in list_gpus()]
    clamp_choice("tr_gpu", gpus, DEFAULT_GPU)
    gpu = st.selectbox("GPU", gpus, key="tr_gpu")
    nodes = [n.id for n in list_nodes() if n.gpu == gpu]
    fallback = guarded(default_node_for_gpu, gpu)
    if nodes:
        clamp_choice("tr_node", nodes, fallback.id if fallback else None)
        node = st.selectbox("node", nodes, key="tr_node", help="node preset: GPUs per node, NVLink, NICs")
    else:
        node = None
    num_gpus = int(st.number_input("GPUs", min_value=1, step=8, key="tr_num_gpus"))
    cluster: dict[str, Any] = {"gpu": gpu, "num_gpus": num_gpus}
    if node:
        cluster["node"] = node
    return cluster


def _parallel_widgets(num_gpus: int) -> tuple[dict[str, Any], int | None]:
    """The ``parallel`` section's widgets; returns the section and dp (None when it cannot be derived)."""
    c1, c2, c3 = st.columns(3)
    tp = int(c1.number_input("tp", min_value=1, step=1, key="tr_tp", help="tensor parallel"))
    pp = int(c2.number_input("pp", min_value=1, step=1, key="tr_pp", help="pipeline stages"))
    cp = int(c3.number_input("cp", min_value=1, step=1, key="tr_cp", help="context parallel"))
    dp = _dp_widget(num_gpus, tp, pp, cp)
    c1, c2, c3 = st.columns(3)
    ep = int(c1.number_input("ep", min_value=1, step=1, key="tr_ep", help="expert parallel (MoE)"))
    vpp = int(c2.number_input("vpp", min_value=1, step=1, key="tr_vpp", help="chunks per stage (interleaved)"))
    zero = int(c3.selectbox("ZeRO", [0, 1, 2, 3], key="tr_zero"))
    sp = st.checkbox("sequence parallel", key="tr_sp")
    schedule = st.selectbox("pipeline schedule", SCHEDULES, key="tr_schedule")
    parallel = {
        "tp": tp,
        "pp": pp,
        "dp": dp if dp is not None else int(st.session_state.get("tr_dp_last", 1)),
        "cp": cp,
        "ep": ep,
        "sp": sp,
        "vpp": vpp,
        "zero": zero,
        "schedule": schedule,
    }
    return parallel, dp


def _dp_widget(num_gpus: int, tp: int, pp: int, cp: int) -> int | None:
    """Data parallel size: derived from the GPU count (None if it does not divide) or typed in."""
    auto = st.checkbox("derive dp = GPUs / (tp x pp x cp)", key="tr_dp_auto")
    dp: int | None
    if auto:
        dp = guarded(derive_dp, num_gpus, tp, pp, cp)
        st.caption(f"data parallel dp = {dp if dp is not None else '?'}")
    else:
        if "tr_dp" not in st.session_state:
            st.session_state["tr_dp"] = int(st.session_state.get("tr_dp_last", 1))
        dp = int(st.number_input("dp", min_value=1, step=1, key="tr_dp", help="data parallel"))
    if dp is not None:
        st.session_state["tr_dp_last"] = dp
    return dp


def _training_widgets() -> dict[str, Any]:
    """The ``training`` section: recompute, precision, sequence length and batches (tokens), token budget."""
    recompute = st.selectbox("activation recompute", RECOMPUTE, key="tr_recompute")
    precision = st.selectbox("precision", PRECISIONS, key="tr_precision")
    c1, c2, c3 = st.columns(3)
    seq_len = int(c1.number_input("seq_len", min_value=1, step=512, key="tr_seq_len"))
    global_batch = int(c2.number_input("global batch", min_value=1, step=64, key="tr_global_batch"))
    micro_batch = int(c3.number_input("micro batch", min_value=1, step=1, key="tr_micro_batch"))
    tokens_b = float(st.number_input("token budget (B tokens, 0 = none)", min_value=0.0, step=50.0, key="tr_tokens_b"))
    training: dict[str, Any] = {
        "seq_len": seq_len,
        "global_batch": global_batch,
        "micro_batch": micro_batch,
        "recompute": recompute,
        "precision": precision,
    }
    training["tokens"] = tokens_b * 1e9 if tokens_b > 0 else None  # explicit, so a link does not get the default
    return training


def _sidebar_plan_b(cfg_a: dict[str, Any]) -> dict[str, Any] | None:
    """Plan B: a few knobs that differ from plan A; returns B's override values or None."""
    raw = st.query_params.get(PARAM_B)
    if raw and raw != st.session_state.get("_training_b_url"):
        st.session_state["_training_b_url"] = raw
        values = guarded(from_json, raw, f"URL parameter {PARAM_B!r}")
        if values is not None:
            d = default_training()
            defaults = b_state({**d["parallel"], **d["training"]})
            state = b_state(values)
            options = {"tr_b_zero": OPTIONS["tr_zero"], "tr_b_schedule": SCHEDULES, "tr_b_recompute": RECOMPUTE}
            warn_reset(PARAM_B, coerce_state(state, defaults.get, options), "tr_b_")
            set_state(state | {"tr_b_on": True})
    on = st.checkbox("compare with plan B", key="tr_b_on")
    if not on:
        return None
    base = {**cfg_a["parallel"], **cfg_a["training"]}
    saved = st.session_state.get(STATE_B) or {}
    for key, value in b_state({**base, "pp": max(1, base["pp"] // 2), **saved}).items():
        if key not in st.session_state:  # first time on: B starts as A with half the stages
            st.session_state[key] = value
    c1, c2, c3 = st.columns(3)
    values = {
        "tp": int(c1.number_input("B tp", min_value=1, step=1, key="tr_b_tp")),
        "pp": int(c2.number_input("B pp", min_value=1, step=1, key="tr_b_pp")),
        "vpp": int(c3.number_input("B vpp", min_value=1, step=1, key="tr_b_vpp")),
    }
    c1, c2 = st.columns(2)
    values["micro_batch"] = int(c1.number_input("B micro batch", min_value=1, step=1, key="tr_b_micro_batch"))
    values["zero"] = int(c2.selectbox("B ZeRO", [0, 1, 2, 3], key="tr_b_zero"))
    values["schedule"] = st.selectbox("B schedule", SCHEDULES, key="tr_b_schedule")
    values["recompute"] = st.selectbox("B recompute", RECOMPUTE, key="tr_b_recompute")
    return values


def plan_b_config(cfg_a: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Plan A with B's knobs; dp re-derived so B fills the same cluster."""
    cfg = json.loads(json.dumps(cfg_a))
    for k in ("tp", "pp", "vpp", "zero", "schedule"):
        cfg["parallel"][k] = values[k]
    cfg["training"]["micro_batch"] = values["micro_batch"]
    cfg["training"]["recompute"] = values["recompute"]
    p = cfg["parallel"]
    cfg["parallel"]["dp"] = derive_dp(cfg["cluster"]["num_gpus"], p["tp"], p["pp"], p["cp"])
    return cfg


def _fmt_rate(x: float) -> str:
    """A rate per second with a k or M suffix."""
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.1f} k" if x >= 1e3 else f"{x:.0f}"


def show_metrics(r: Any, ref: Any | None = None, title: str | None = None) -> None:
    """The headline metrics of one plan; with ``ref``, deltas against it (plan B vs A)."""

    def delta(value: float, ref_value: float | None, fmt: str) -> str | None:
        return None if ref_value is None else format(value - ref_value, fmt)

    if title:
        st.markdown(f"**{title}**")
    mem = r.memory_per_gpu_gb
    cols = st.columns(6)
    cols[0].metric(
        "step time",
        f"{r.step_time_s:.3f} s",
        delta(r.step_time_s, ref and ref.step_time_s, "+.3f"),
        delta_color="inverse",
    )
    cols[1].metric("tokens/s", _fmt_rate(r.tokens_per_s), delta(r.tokens_per_s, ref and ref.tokens_per_s, "+,.0f"))
    cols[2].metric("MFU", f"{r.mfu:.1%}", delta(r.mfu * 100, ref and ref.mfu * 100, "+.1f"))
    cols[3].metric(
        "memory per GPU",
        f"{mem.peak:.1f} GB",
        f"fits in {mem.capacity:.1f} GB" if r.fits_in_memory else f"does not fit in {mem.capacity:.1f} GB",
        delta_color="normal" if r.fits_in_memory else "inverse",
        help=f"fullest pipeline stage {mem.stage}. GB = 10^9 bytes. Capacity is what the framework can allocate: "
        f"{mem.capacity * 1e9 / 2**30:.1f} GiB of the card's nominal memory (an '80 GB' card has 80 GiB = 85.9 GB, "
        "less the part CUDA reserves)",
    )
    cols[4].metric(
        "pipeline bubble",
        f"{r.bubble_fraction:.1%}",
        delta(r.bubble_fraction * 100, ref and ref.bubble_fraction * 100, "+.1f"),
        delta_color="inverse",
    )
    days = r.time_to_train_days
    cols[5].metric("time to train", f"{days:.1f} days" if days is not None else "-", help="for the token budget")
    st.caption(
        f"{r.model} on {r.num_gpus:,} x {r.gpu} ({r.profile} profile), {r.schedule}, "
        f"{r.num_microbatches} micro-batches; {r.tflops_per_gpu:.0f} model TFLOP/s per GPU, HFU {r.hfu:.1%}"
    )


def _warn_oom(r: Any, plan: str) -> None:
    """Warn, with what to try, when ``plan`` does not fit in GPU memory."""
    if not r.fits_in_memory:
        mem = r.memory_per_gpu_gb
        st.warning(
            f"{plan} does not fit in memory: {mem.peak:.1f} GB on stage {mem.stage} > {mem.capacity:.1f} GB. "
            "Try more tp/pp, ZeRO, full recompute or a smaller micro batch."
        )


def render() -> None:
    """The page: widgets in the sidebar, results in the main area."""
    st.title("Training planner")
    drop_foreign_params("training")
    default = default_training()
    loaded = config_to_load(PARAM, STATE, default, probe="tr_tp")
    if loaded is not None:
        values, reset = safe_state(loaded)
        warn_reset(PARAM, reset, "tr_")
        set_state(values)
    with st.sidebar:
        st.header("Plan A")
        cfg, raw_cfg = _sidebar_plan()
        st.header("Plan B")
        b_values = _sidebar_plan_b(raw_cfg)
    publish_config(PARAM, STATE, raw_cfg)
    _publish_plan_b(b_values)
    result, cfg_b, result_b = _simulate(cfg, b_values)
    if result is None:
        st.info("Fix the plan in the sidebar to see its step time, memory and timeline.")
        downloads("training", raw_cfg, {})
        return
    _show_plans(result, result_b, b_values is not None)
    _show_charts(result, result_b)
    training_options.show_effects(cfg, result)
    _training_downloads(raw_cfg, result, result_b, cfg_b)


def _publish_plan_b(b_values: dict[str, Any] | None) -> None:
    """Keep plan B's knobs in the session and the URL (or drop them from the URL when B is off)."""
    if b_values is not None:
        st.session_state[STATE_B] = b_values
        st.query_params[PARAM_B] = to_json(b_values)
        st.session_state["_training_b_url"] = st.query_params[PARAM_B]
    elif PARAM_B in st.query_params:
        del st.query_params[PARAM_B]


def _simulate(
    cfg: dict[str, Any] | None, b_values: dict[str, Any] | None
) -> tuple[Any | None, dict[str, Any] | None, Any | None]:
    """Simulate plan A and, when on, plan B: (result A, plan B's config, result B), None where not run."""
    result = result_b = None
    if cfg is not None:
        with st.spinner("simulating one training step..."):
            result = guarded(run_training, to_json(cfg))
    cfg_b = None
    if b_values is not None and cfg is not None:
        cfg_b = guarded(plan_b_config, cfg, b_values)
        if cfg_b is not None:
            with st.spinner("simulating plan B..."):
                result_b = guarded(run_training, to_json(cfg_b))
    return result, cfg_b, result_b


def _show_plans(result: Any, result_b: Any | None, b_on: bool) -> None:
    """Memory warnings and headline metrics of plan A, and of plan B with its deltas and an A-vs-B table."""
    _warn_oom(result, "Plan A" if b_on else "This plan")
    show_metrics(result, title="Plan A" if b_on else None)
    if result_b is not None:
        _warn_oom(result_b, "Plan B")
        show_metrics(result_b, ref=result, title="Plan B (deltas vs A)")
        st.subheader("A vs B")
        st.dataframe(
            charts.compare_table(result, result_b),
            hide_index=True,
            column_config={"change": st.column_config.NumberColumn(format="percent")},
        )


def _show_charts(result: Any, result_b: Any | None) -> None:
    """Memory and exposed-communication charts (A and B side by side) and the pipeline timelines."""
    col1, col2 = st.columns(2)
    with col1:
        mem = {"A": result.memory_per_gpu_gb, "B": result_b.memory_per_gpu_gb} if result_b else result.memory_per_gpu_gb
        st.plotly_chart(charts.memory_bar(mem), key="tr_memory")
    with col2:
        comm = {"A": result.exposed_comm_s, "B": result_b.exposed_comm_s} if result_b else result.exposed_comm_s
        st.plotly_chart(charts.comm_breakdown(comm), key="tr_comm")
    st.plotly_chart(charts.pipeline_gantt(result.timeline), key="tr_gantt")
    if result_b is not None:
        with st.expander("plan B timeline"):
            st.plotly_chart(charts.pipeline_gantt(result_b.timeline), key="tr_gantt_b")


def _training_downloads(
    raw_cfg: dict[str, Any], result: Any, result_b: Any | None, cfg_b: dict[str, Any] | None
) -> None:
    """Download buttons: the config (YAML), results (JSON, both plans), metrics and plan A's timeline (CSV)."""
    data = result.to_dict()
    frame = result.to_frame().assign(plan="A")
    if result_b is not None:
        data = {"plan_a": data, "plan_b": result_b.to_dict(), "plan_b_config": cfg_b}
        frame = pd.concat([frame, result_b.to_frame().assign(plan="B")], ignore_index=True)
    downloads(
        "training",
        raw_cfg,
        {
            "result.json": ("download results (JSON)", json.dumps(data, indent=1), "application/json"),
            "metrics.csv": ("download metrics (CSV)", frame.to_csv(index=False), "text/csv"),
            "timeline.csv": ("download timeline (CSV)", result.timeline.to_frame().to_csv(index=False), "text/csv"),
        },
    )


if __name__ == "__main__":
    run_page(render)
