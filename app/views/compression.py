"""Gradient compression page: every data-parallel gradient compression method side by side on one plan.

For a plan (default: GPT-3 175B on 1,024 A100) each method of :mod:`simulator.compression` is simulated
as ``training.compression`` and compared with the dense plan: bytes a GPU puts on the wire, DP
communication (total and exposed), (de)compression compute, step time, and the break-even steps
multiplier -- the dense step time over the compressed one: a method that needs more steps than that
to reach the same loss trains slower than no compression. Convergence is the user's input
(``steps_multiplier``); clustersim models the time per step only. Claim C2 is worked through at the end.
Run as a Streamlit page; importing it only defines the helpers.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st
from simulator.app import charts
from simulator.app.common import (
    PAGE_PARAMS,
    coerce_state,
    config_to_load,
    drop_foreign_params,
    error_text,
    publish_config,
    run_page,
    run_training,
    set_state,
    warn_reset,
)
from simulator.app.plans import check_app_config, default_training, to_json

from simulator.compression import collective_for, memory_overhead_bytes, parse_compression, wire_bytes
from simulator.training.plan import grad_comm_bytes

PARAM, STATE = PAGE_PARAMS["compression"][0], "compression_view"
DENSE = "dense (no compression)"
C2_METHOD = "C2: every 4th step, 2:4 + log 4-bit"
CODEC_EVENT = "gradient (de)compression"  # the training engine's timeline name for the codec kernels
PLANS = {
    "gpt3-175b": "GPT-3 175B on 1,024 x A100 (the default plan)",
    "c2": "claim C2: Megatron GPT 7.5B on 128 x A100, data parallel only",
    "c7": "claim C7: Megatron GPT 1.7B on 16 x A100, data parallel only",
    "planner": "the Training planner's plan",
}
#: widget key -> default; the page's URL parameter holds these values.
DEFAULTS: dict[str, Any] = {
    "cp_plan": "gpt3-175b",
    "cp_fraction_pct": 1.0,
    "cp_uniform_bits": 8,
    "cp_log_bits": 4,
    "cp_rank": 4,
    "cp_every_k": 1,
    "cp_error_feedback": False,
    "cp_steps_multiplier": 1.0,
}
BOUNDS = {
    "cp_fraction_pct": (0.001, 100.0),
    "cp_uniform_bits": (1, 16),
    "cp_log_bits": (1, 16),
    "cp_rank": (1, 1024),
    "cp_every_k": (1, 1000),
    "cp_steps_multiplier": (0.01, 100.0),
}
#: table column -> (header with unit, number format)
COLUMNS: dict[str, tuple[str, str]] = {
    "payload_gb": ("payload per GPU per step (GB)", "%.3g"),
    "ratio": ("fewer bytes than dense (x)", "%.3g"),
    "dp_comm_s": ("DP communication (s)", "%.4f"),
    "exposed_dp_s": ("exposed DP communication (s)", "%.4f"),
    "codec_s": ("(de)compression compute (s)", "%.4f"),
    "step_time_s": ("step time (s)", "%.3f"),
    "vs_dense_pct": ("step time vs dense (%)", "%+.1f"),
    "break_even": ("break-even steps multiplier (x)", "%.3f"),
    "extra_memory_gb": ("extra memory per GPU (GB)", "%.3g"),
    "time_to_train_days": ("time to train (days)", "%.2f"),
}


# ---- the plan and the methods (pure) --------------------------------------------------------------


def plan_config(name: str, planner_cfg: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The training config of a plan preset (``planner``: the Training planner's current plan)."""
    from simulator.validation.claims import scenario

    if name == "planner" and planner_cfg:
        return copy.deepcopy(dict(planner_cfg))
    if name in ("c2", "c7"):
        return scenario(name.upper())["config"]
    return default_training()


@dataclass(frozen=True)
class PlanFacts:
    """What the table needs of a plan besides its results: gradient elements and bytes per GPU, dp."""

    grad_elements: float
    grad_bytes: float
    dp: int
    hidden_size: int


def plan_facts(cfg: Mapping[str, Any]) -> PlanFacts:
    """Gradient elements an average GPU reduces (parameters / (tp pp), routed experts also / ep), the bytes per
    element on the wire (:func:`simulator.training.plan.grad_comm_bytes`), dp and the model's hidden size."""
    run = check_app_config("training", cfg)
    m, p = run.model, run.parallel
    routed = float(m.routed_expert_params)
    elements = (m.total_params - routed) / (p.tp * p.pp) + routed / (p.tp * p.pp * p.ep)
    return PlanFacts(elements, grad_comm_bytes(run.training.precision), p.dp, m.hidden_size)


def methods(values: Mapping[str, Any], hidden_size: int) -> dict[str, dict[str, Any] | None]:
    """Method label -> ``training.compression`` (None: dense). The widget values set the methods' parameters;
    PowerSGD treats the gradient as ``hidden_size`` square matrices; C2 keeps its own every-4th-step schedule."""
    from simulator.validation.claims import scenario

    frac = float(values["cp_fraction_pct"])
    shared: dict[str, Any] = {"steps_multiplier": float(values["cp_steps_multiplier"])}
    if values["cp_error_feedback"]:
        shared["error_feedback"] = True
    every = {"every_k_steps": int(values["cp_every_k"])} if int(values["cp_every_k"]) > 1 else {}
    ubits, lbits, rank = int(values["cp_uniform_bits"]), int(values["cp_log_bits"]), int(values["cp_rank"])
    lossy = {
        f"top-k {frac:g}%": {"sparsify": "topk", "fraction": frac / 100},
        f"random-k {frac:g}%": {"sparsify": "randomk", "fraction": frac / 100},
        "2:4 structured": {"sparsify": "structured_2_4"},
        f"uniform {ubits}-bit": {"quantize": "uniform", "bits": ubits},
        f"log {lbits}-bit": {"quantize": "log", "bits": lbits},
        f"PowerSGD rank {rank}": {"powersgd_rank": rank, "powersgd_matrix_dim": int(hidden_size)},
    }
    out: dict[str, dict[str, Any] | None] = {DENSE: None}
    out.update({label: {**spec, **every, **shared} for label, spec in lossy.items()})
    out[C2_METHOD] = {**scenario("C2")["compression"], **shared}
    return out


def with_compression(cfg: Mapping[str, Any], spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """``cfg`` with ``training.compression`` set to ``spec`` (removed for None)."""
    out = copy.deepcopy(dict(cfg))
    training = out.setdefault("training", {})
    training.pop("compression", None)
    if spec is not None:
        training["compression"] = dict(spec)
    return out


def _max_rank_seconds(result: Any, stream: str | None = None, name: str | None = None) -> float:
    """Largest per-rank total of the timeline events on ``stream`` and/or named ``name`` (0 without a timeline)."""
    totals: dict[int, float] = {}
    for start, end, rank, ev_stream, ev_name, *_ in getattr(result.timeline, "events", ()):
        if (stream is None or ev_stream == stream) and (name is None or ev_name == name):
            totals[rank] = totals.get(rank, 0.0) + end - start
    return max(totals.values(), default=0.0)


def method_row(label: str, spec: Mapping[str, Any] | None, result: Any, dense: Any, facts: PlanFacts) -> dict[str, Any]:
    """One table row: the method's wire bytes (simulator.compression.wire_bytes), its simulated DP times, codec
    time and step time (from ``result``), and the break-even steps multiplier against ``dense``."""
    dense_bytes = facts.grad_elements * facts.grad_bytes
    parsed = parse_compression(dict(spec)) if spec is not None else None
    payload = wire_bytes(parsed, facts.grad_elements, facts.grad_bytes) if parsed else dense_bytes
    return {
        "method": label,
        "collective": collective_for(parsed) if parsed else "all_reduce",
        "payload_gb": payload / 1e9,
        "ratio": dense_bytes / payload if payload else float("inf"),
        "dp_comm_s": _max_rank_seconds(result, stream="dp"),
        "exposed_dp_s": float(result.exposed_comm_s.get("dp", 0.0)),
        "codec_s": _max_rank_seconds(result, name=CODEC_EVENT),
        "step_time_s": result.step_time_s,
        "vs_dense_pct": (result.step_time_s / dense.step_time_s - 1) * 100,
        "break_even": dense.step_time_s / result.step_time_s,
        "extra_memory_gb": memory_overhead_bytes(parsed, facts.grad_elements) / 1e9 if parsed else 0.0,
        "time_to_train_days": result.time_to_train_days,
    }


def compare(cfg: Mapping[str, Any], specs: Mapping[str, Mapping[str, Any] | None]) -> tuple[pd.DataFrame, list[str]]:
    """Simulate the plan under every method (cached per config): (table, one-line failures)."""
    facts = plan_facts(cfg)
    dense = run_training(to_json(with_compression(cfg, None)))
    rows, failed = [], []
    for label, spec in specs.items():
        result, err = error_text(run_training, to_json(with_compression(cfg, spec))) if spec else (dense, None)
        if result is None:
            failed.append(f"{label}: {err}")
            continue
        row, err = error_text(method_row, label, spec, result, dense, facts)
        if row is None:
            failed.append(f"{label}: {err}")
        else:
            rows.append(row)
    return pd.DataFrame(rows), failed


# ---- the page --------------------------------------------------------------------------------------


def _load_from_url() -> None:
    """Apply this page's URL parameter (a shared link) to the widgets, resetting unusable values."""
    loaded = config_to_load(PARAM, STATE, DEFAULTS, probe="cp_plan")
    if loaded is None:
        return
    values = {k: loaded.get(k, d) for k, d in DEFAULTS.items()}
    reset = coerce_state(values, DEFAULTS.get, {"cp_plan": list(PLANS)}, BOUNDS)
    warn_reset(PARAM, reset, "cp_")
    set_state(values)


def _sidebar() -> dict[str, Any]:
    """The plan and the methods' parameters; returns the widget values."""
    plans = [p for p in PLANS if p != "planner" or st.session_state.get("training_cfg")]
    if st.session_state.get("cp_plan") not in plans:
        st.session_state["cp_plan"] = DEFAULTS["cp_plan"]
    st.header("Plan")
    st.selectbox("plan", plans, format_func=PLANS.get, key="cp_plan")
    st.header("Methods")
    st.number_input("top-k / random-k: kept fraction (%)", 0.001, 100.0, step=0.5, format="%g", key="cp_fraction_pct")
    st.number_input("uniform quantisation: bits", 1, 16, key="cp_uniform_bits")
    st.number_input("log quantisation: bits", 1, 16, key="cp_log_bits")
    st.number_input("PowerSGD rank", 1, 1024, key="cp_rank")
    st.number_input("compress every k-th step (dense otherwise)", 1, 1000, key="cp_every_k")
    st.checkbox("error feedback (fp32 residual)", key="cp_error_feedback")
    st.number_input("steps multiplier you expect (x)", 0.01, 100.0, step=0.05, format="%g", key="cp_steps_multiplier")
    st.caption(
        "Accuracy is your input: clustersim models time per step, not convergence. The steps multiplier scales "
        "the steps to train (time to train); the break-even column says how large it may be before a method "
        "trains slower than dense."
    )
    return {k: st.session_state[k] for k in DEFAULTS}


def _table(df: pd.DataFrame) -> None:
    """The comparison with units in the headers."""
    config = {k: st.column_config.NumberColumn(head, format=fmt) for k, (head, fmt) in COLUMNS.items()}
    st.dataframe(df, hide_index=True, column_config=config, key="cp_table")


def _headline(df: pd.DataFrame) -> None:
    """The fastest method, its step time against dense and its break-even steps multiplier."""
    best = df.loc[df["step_time_s"].idxmin()]
    dense = df.loc[df["method"] == DENSE]
    c1, c2, c3 = st.columns(3)
    c1.metric("fastest step", str(best["method"]))
    if len(dense):
        c2.metric("step time vs dense", f"{best['step_time_s']:.3f} s", f"{best['vs_dense_pct']:+.1f}%", "inverse")
    c3.metric("its break-even steps multiplier", f"x{best['break_even']:.2f}")


@st.cache_data(show_spinner=False)
def _c2_claim() -> dict[str, str]:
    """Claim C2's row of the claims gallery (its scenario is bundled: evaluated once per process)."""
    from simulator.validation.claims import c2

    return c2().as_dict()


def worked_example(dense: Mapping[str, Any], c2: Mapping[str, Any], claim: Mapping[str, str]) -> str:
    """Markdown that walks through claim C2 with the C2 plan's dense and C2 rows of the table."""
    share_d = dense["exposed_dp_s"] / dense["step_time_s"]
    share_c = c2["exposed_dp_s"] / c2["step_time_s"]
    be = c2["break_even"]
    pays = (
        f"the compressed run trains faster only while it needs fewer than {be:.2f}x the dense run's steps"
        if be > 1
        else f"it never pays off: it would have to converge in {be:.2f}x the dense run's steps, fewer than dense"
    )
    how = (
        "all-gathered, so every rank receives the other ranks' payloads"
        if c2["collective"] == "all_gather"
        else "summed by an all-reduce"
    )
    return (
        f"**Worked example: claim C2.** The source material claims for {claim['technique']}: {claim['claim']}. "
        "On its scenario (simulator/examples/claims/C2.yaml) clustersim predicts "
        f"{dense['step_time_s']:.3f} s per step dense (exposed DP communication {share_d:.0%} of the step) and "
        f"{c2['step_time_s']:.3f} s compressed ({share_c:.0%}): throughput x{c2['break_even']:.2f}, so {pays}. "
        "Payload per GPU and step: {dense['payload_gb']:.2f} GB dense, {c2['payload_gb']:.2f} GB "
        f"compressed on average, {how}. Verdict **{claim['verdict']}**: {claim['reason']}."
    )


def _c2_section() -> None:
    """Claim C2 on its own plan: the dense and C2 rows, and the claim's verdict."""
    from simulator.validation.claims import scenario

    cfg = plan_config("c2")
    df, failed = compare(cfg, {DENSE: None, C2_METHOD: scenario("C2")["compression"]})
    claim, err = error_text(_c2_claim)
    if failed or claim is None or len(df) < 2:
        st.info("The C2 worked example could not be computed: " + "; ".join(failed or [err or "no rows"]))
        return
    rows = {r["method"]: r for r in df.to_dict("records")}
    st.markdown(worked_example(rows[DENSE], rows[C2_METHOD], claim))


def render() -> None:
    """The page: plan and method parameters in the sidebar; charts, the table and the C2 example in the main area."""
    st.title("Gradient compression")
    drop_foreign_params("compression")
    _load_from_url()
    with st.sidebar:
        values = _sidebar()
    publish_config(PARAM, STATE, values)
    cfg = plan_config(values["cp_plan"], st.session_state.get("training_cfg"))
    facts = plan_facts(cfg)
    p = cfg.get("parallel", {})
    st.caption(
        f"{PLANS[values['cp_plan']]}: dp={facts.dp}, tp={p.get('tp', 1)}, pp={p.get('pp', 1)}; "
        f"{facts.grad_elements / 1e9:.3g}B gradient elements per GPU, {facts.grad_bytes:g} bytes each on the wire "
        "(average over pipeline stages). Times are the busiest rank's, from the simulated timeline."
    )
    if facts.dp * int(p.get("cp", 1)) <= 1:
        st.info("This plan has dp=1: there is no data-parallel gradient sync to compress. Pick another plan.")
        return
    with st.spinner("simulating every method..."):
        df, failed = compare(cfg, methods(values, facts.hidden_size))
    if failed:
        with st.expander(f"{len(failed)} methods could not run (why)"):
            st.write("\n".join(f"- {f}" for f in failed))
    if df.empty:
        st.error("No method could be simulated on this plan.")
        return
    _headline(df)
    c1, c2 = st.columns(2)
    c1.plotly_chart(charts.compression_times(df), key="cp_times")
    c2.plotly_chart(charts.break_even_chart(df), key="cp_break_even")
    _table(df)
    st.download_button("download table (CSV)", df.to_csv(index=False), "compression.csv", "text/csv", key="cp_csv")
    _c2_section()


if __name__ == "__main__":
    run_page(render)
