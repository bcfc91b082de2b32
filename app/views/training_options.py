"""Training planner option sections: gradient compression, precision recipe, MoE routing, power, stack and
host memory (offload, parameter servers), each a sidebar expander, and what each changes in the main area.

``training.py`` calls :func:`option_state` (config -> widget values, for links), :func:`sidebar` (widgets ->
config) and :func:`show_effects` (the sections' effects beside the simulated plan). The options live in the
plan's config, so the page's URL parameter carries them and ``check_app_config`` checks them like any field.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st
from simulator.app import effects
from simulator.app.common import clamp_choice, guarded, run_training
from simulator.app.plans import check_app_config, to_json

from hwmodels.catalogue import get_gpu
from hwmodels.errors import ClusterSimError
from hwmodels.profile import load_profile
from simulator.core.limits import MAX_ROUTING_TRACE_BYTES
from simulator.core.untrusted import decode_text, parse_json_text, save_upload
from simulator.core.workload import LOW_PRECISION
from simulator.stacks import DEFAULT_STACK, get_stack, list_stacks

GIB = 2**30
METHODS = ["none", "topk", "randomk", "structured_2_4", "quantize", "powersgd"]
METHOD_LABELS = {
    "none": "none (dense gradients)",
    "topk": "top-k sparsification",
    "randomk": "random-k sparsification",
    "structured_2_4": "2:4 structured sparsity",
    "quantize": "quantisation only",
    "powersgd": "PowerSGD (low rank)",
}
QUANTIZERS = ["none", "uniform", "log"]
SOURCES = ["uniform", "zipf", "group_limited", "hierarchical", "load_aware", "trace"]
POWER_MODES = ["max clock", "locked clock", "power cap"]
TIERS = ["none", "cpu", "nvme"]
STACKS = [s.name for s in list_stacks() if s.serving is None]  # training stacks (serving engines excluded)

#: Widget key -> its value when the config leaves the option unset.
DEFAULTS: dict[str, Any] = {
    "tr_cmp_method": "none",
    "tr_cmp_fraction_pct": 1.0,
    "tr_cmp_quantize": "none",
    "tr_cmp_bits": 8,
    "tr_cmp_scale_block": 2048,
    "tr_cmp_rank": 4,
    "tr_cmp_matrix_dim": 4096,
    "tr_cmp_every_k": 1,
    "tr_cmp_sync_k": 1,
    "tr_cmp_ef": False,
    "tr_cmp_steps_mult": 1.0,
    "tr_prec_act_cache": "bf16",
    "tr_prec_moments": "fp32",
    "tr_prec_pp_payload": "bf16",
    "tr_moe_source": "uniform",
    "tr_moe_skew": 1.0,
    "tr_moe_layer_var": 0.0,
    "tr_moe_groups": 8,
    "tr_moe_max_groups": 4,
    "tr_moe_group_score": "top2_sum",
    "tr_moe_pools": 2,
    "tr_moe_bias": 0.5,
    "tr_moe_rounds": 8,
    "tr_moe_trace_path": "",
    "tr_moe_cf": 0.0,
    "tr_moe_replicas": 0,
    "tr_moe_dispatch": "bf16",
    "tr_moe_dedup": False,
    "tr_pw_mode": "max clock",
    "tr_pw_clock_mhz": 0.0,
    "tr_pw_limit_w": 0.0,
    "tr_stack": DEFAULT_STACK,
    "tr_off_optimizer": "none",
    "tr_off_params": "none",
    "tr_off_activations": False,
    "tr_off_dpu": False,
    "tr_ps_on": False,
    "tr_ps_servers": 0,
    "tr_ps_placement": "colocated",
}
#: Choices of the option selectboxes (a link's value outside them is reset with a warning).
OPTIONS: dict[str, list[Any]] = {
    "tr_cmp_method": METHODS,
    "tr_cmp_quantize": QUANTIZERS,
    "tr_prec_act_cache": ["bf16", "fp8"],
    "tr_prec_moments": ["fp32", "bf16"],
    "tr_prec_pp_payload": ["bf16", "fp8"],
    "tr_moe_source": SOURCES,
    "tr_moe_group_score": ["top2_sum", "max"],
    "tr_moe_dispatch": ["bf16", "fp8"],
    "tr_pw_mode": POWER_MODES,
    "tr_stack": STACKS,
    "tr_off_optimizer": TIERS,
    "tr_off_params": TIERS,
    "tr_ps_placement": ["colocated", "dedicated"],
}
#: Ranges of the numeric option widgets (the widgets' own limits).
BOUNDS: dict[str, tuple[float, float]] = {
    "tr_cmp_fraction_pct": (0.001, 100.0),
    "tr_cmp_bits": (1, 16),
    "tr_cmp_scale_block": (1, 1 << 24),
    "tr_cmp_rank": (1, 1024),
    "tr_cmp_matrix_dim": (1, 1 << 20),
    "tr_cmp_every_k": (1, 1000),
    "tr_cmp_sync_k": (1, 1000),
    "tr_cmp_steps_mult": (0.01, 100.0),
    "tr_moe_skew": (0.0, 8.0),
    "tr_moe_layer_var": (0.0, 1.0),
    "tr_moe_groups": (1, 4096),
    "tr_moe_max_groups": (1, 4096),
    "tr_moe_pools": (1, 4096),
    "tr_moe_bias": (0.001, 1.0),
    "tr_moe_rounds": (1, 1000),
    "tr_moe_cf": (0.0, 64.0),
    "tr_moe_replicas": (0, 4096),
    "tr_pw_clock_mhz": (0.0, 10000.0),
    "tr_pw_limit_w": (0.0, 10000.0),
    "tr_ps_servers": (0, 4096),
}


# ---- config -> widget values (links) ---------------------------------------------------------------


def option_state(cfg: dict[str, Any]) -> dict[str, Any]:
    """Widget values that show the options of ``cfg`` (unchecked: ``coerce_state`` resets bad ones; a section
    that is not even a mapping marks its first widget invalid, so the page warns and shows the default)."""
    t, p = cfg.get("training") or {}, cfg.get("parallel") or {}
    out = dict(DEFAULTS)
    out.update(_guard(_compression_state, t.get("compression"), "tr_cmp_method"))
    out.update(_guard(_routing_state, cfg.get("moe_routing"), "tr_moe_source"))
    out.update(_guard(_power_state, cfg.get("power"), "tr_pw_mode"))
    out.update(_guard(_offload_state, t.get("offload"), "tr_off_optimizer"))
    out.update(_guard(_server_state, p, "tr_ps_on"))
    out.update(
        tr_prec_act_cache=t.get("activation_cache_dtype", "bf16"),
        tr_prec_moments=t.get("optimizer_moment_dtype", "fp32"),
        tr_prec_pp_payload=t.get("pp_payload_dtype", "bf16"),
        tr_moe_dispatch=t.get("moe_dispatch_dtype", "bf16"),
        tr_moe_dedup=t.get("moe_node_dedup", False),
        tr_stack=cfg.get("stack", DEFAULT_STACK),
    )
    return out


def _guard(fn: Callable[[Any], dict[str, Any]], section: Any, key: str) -> dict[str, Any]:
    """``fn(section)``, or ``{key: None}`` (reset with a warning) when the section has the wrong shape."""
    try:
        return fn(section)
    except (AttributeError, TypeError, ValueError):
        return {key: None}


def _offload_state(off: dict[str, Any] | None) -> dict[str, Any]:
    """Widget values of a ``training.offload`` mapping."""
    off = off or {}
    return {
        "tr_off_optimizer": off.get("optimizer", "none"),
        "tr_off_params": off.get("params", "none"),
        "tr_off_activations": off.get("activations", False),
        "tr_off_dpu": off.get("delayed_param_update", False),
    }


def _server_state(parallel: dict[str, Any]) -> dict[str, Any]:
    """Widget values of ``parallel.dp_mode`` and ``parallel.parameter_server``."""
    ps = parallel.get("parameter_server") or {}
    return {
        "tr_ps_on": parallel.get("dp_mode", "collective") == "parameter_server",
        "tr_ps_servers": ps.get("servers", 0),
        "tr_ps_placement": ps.get("placement", "colocated"),
    }


def _compression_state(spec: dict[str, Any] | None) -> dict[str, Any]:
    """Widget values of a ``training.compression`` mapping."""
    if not spec:
        return {}
    sparsify, quantize = spec.get("sparsify", "none"), spec.get("quantize", "none")
    method = "powersgd" if spec.get("powersgd_rank") else sparsify if sparsify != "none" else quantize
    out = {
        "tr_cmp_method": "quantize" if method in ("uniform", "log") else method,
        "tr_cmp_quantize": quantize,
        "tr_cmp_every_k": spec.get("every_k_steps", 1),
        "tr_cmp_sync_k": spec.get("sync_every_k_steps", 1),
        "tr_cmp_ef": spec.get("error_feedback", False),
        "tr_cmp_steps_mult": spec.get("steps_multiplier", 1.0),
        "tr_cmp_scale_block": spec.get("scale_block", 2048),
    }
    for key, field, scale in (("tr_cmp_fraction_pct", "fraction", 100.0), ("tr_cmp_bits", "bits", 1)):
        if spec.get(field) is not None:
            out[key] = spec[field] * scale
    for key, field in (("tr_cmp_rank", "powersgd_rank"), ("tr_cmp_matrix_dim", "powersgd_matrix_dim")):
        if spec.get(field) is not None:
            out[key] = spec[field]
    return out


def _routing_state(routing: dict[str, Any] | None) -> dict[str, Any]:
    """Widget values of a ``moe_routing`` mapping."""
    if not routing:
        return {}
    src = routing.get("source") or {"kind": "uniform"}
    base = src.get("base") or {}
    skewed = src if src.get("kind") == "zipf" else base
    out = {
        "tr_moe_source": src.get("kind", "uniform"),
        "tr_moe_cf": routing.get("capacity_factor") or 0.0,
        "tr_moe_replicas": routing.get("replicate_hot_experts", 0),
        "tr_moe_trace_path": src.get("path", ""),
    }
    if skewed.get("kind") == "zipf":
        out.update(tr_moe_skew=skewed.get("exponent", 1.0), tr_moe_layer_var=skewed.get("layer_variation", 0.0))
    elif src.get("kind") in ("group_limited", "hierarchical", "load_aware"):
        out["tr_moe_skew"] = 0.0  # uniform base
    names = {"groups": "tr_moe_groups", "max_groups": "tr_moe_max_groups", "group_score": "tr_moe_group_score"}
    names |= {"pools": "tr_moe_pools", "bias_strength": "tr_moe_bias", "rounds": "tr_moe_rounds"}
    out.update({key: src[field] for field, key in names.items() if field in src})
    return out


def _power_state(power: dict[str, Any] | None) -> dict[str, Any]:
    """Widget values of a ``power`` mapping (a locked clock or a power cap)."""
    power = power or {}
    if power.get("sm_clock_mhz"):
        return {"tr_pw_mode": "locked clock", "tr_pw_clock_mhz": power["sm_clock_mhz"]}
    if power.get("power_limit_w"):
        return {"tr_pw_mode": "power cap", "tr_pw_limit_w": power["power_limit_w"]}
    return {}


# ---- widgets -> config -------------------------------------------------------------------------------


def sidebar(cfg: dict[str, Any]) -> None:
    """Draw the option sections (sidebar expanders) and write their settings into ``cfg``."""
    st.header("Options")
    for key, value in DEFAULTS.items():  # widgets not drawn last run lose their state: start from the default
        st.session_state.setdefault(key, value)
    _compression_widgets(cfg)
    _precision_widgets(cfg)
    if is_moe(cfg.get("model")):
        _routing_widgets(cfg)
    _power_widgets(cfg)
    _stack_widgets(cfg)
    _host_widgets(cfg)


def is_moe(model: Any) -> bool:
    """Whether the config's model (a preset name or an inline HF/ModelSpec mapping) has routed experts."""
    from simulator.models import resolve_model

    try:
        return resolve_model(model).moe is not None
    except Exception:  # an unusable model is reported where the plan is simulated
        return False


def _compression_widgets(cfg: dict[str, Any]) -> None:
    """DP gradient compression: the method, its parameters, the schedules and the convergence input."""
    with st.expander("Gradient compression (data parallel)", expanded=st.session_state.get("tr_cmp_method") != "none"):
        method = st.selectbox("method", METHODS, key="tr_cmp_method", format_func=METHOD_LABELS.get)
        if method == "none":
            return
        spec: dict[str, Any] = {}
        if method in ("topk", "randomk", "structured_2_4"):
            spec["sparsify"] = method
        if method in ("topk", "randomk"):
            pct = st.number_input("kept fraction (%)", 0.001, 100.0, step=0.1, format="%.3f", key="tr_cmp_fraction_pct")
            spec["fraction"] = float(pct) / 100.0
        if method == "powersgd":
            spec["powersgd_rank"] = int(st.number_input("PowerSGD rank r", 1, 1024, key="tr_cmp_rank"))
            spec["powersgd_matrix_dim"] = int(
                st.number_input(
                    "matrix side d", 1, 1 << 20, key="tr_cmp_matrix_dim", help="the gradient taken as d x d matrices"
                )
            )
        else:
            spec |= _quantize_widgets(method)
        spec |= _schedule_widgets()
        cfg["training"]["compression"] = spec


def _quantize_widgets(method: str) -> dict[str, Any]:
    """Quantisation of the kept values (required for 'quantisation only')."""
    options = QUANTIZERS if method != "quantize" else QUANTIZERS[1:]
    clamp_choice("tr_cmp_quantize", options, "uniform")
    quantize = st.selectbox("quantise kept values", options, key="tr_cmp_quantize")
    if quantize == "none":
        return {}
    c1, c2 = st.columns(2)
    bits = int(c1.number_input("bits", 1, 16, key="tr_cmp_bits"))
    block = int(c2.number_input("values per scale", 1, 1 << 24, key="tr_cmp_scale_block"))
    return {"quantize": quantize, "bits": bits, "scale_block": block}


def _schedule_widgets() -> dict[str, Any]:
    """Every-k / sync-every-k schedules, error feedback and the steps multiplier."""
    c1, c2 = st.columns(2)
    every = int(c1.number_input("compress every k-th step", 1, 1000, key="tr_cmp_every_k"))
    sync = int(c2.number_input("sync every k steps", 1, 1000, key="tr_cmp_sync_k", help="local accumulation"))
    ef = st.checkbox("error feedback (fp32 residual)", key="tr_cmp_ef")
    mult = st.number_input("steps multiplier", 0.01, 100.0, step=0.05, key="tr_cmp_steps_mult")
    st.caption(
        "Convergence is not modelled: the steps multiplier (steps to reach your target relative to dense "
        "training) is your input, from your own runs. It scales time to train, energy and cost."
    )
    return {"every_k_steps": every, "sync_every_k_steps": sync, "error_feedback": ef, "steps_multiplier": float(mult)}


def _precision_widgets(cfg: dict[str, Any]) -> None:
    """The precision recipe: GEMM precision (the plan's 'precision' box) and the low-precision stores."""
    t = cfg["training"]
    with st.expander("Precision recipe"):
        st.caption(
            f"'precision' above sets the linear layers' GEMMs. Under {'/'.join(LOW_PRECISION)} only those run in "
            "low precision; attention, norms, activations, the MoE router and the output head stay bf16 "
            "(Transformer Engine's recipe, as the workload builds it; not a setting)."
        )
        act = st.selectbox("saved activations", ["bf16", "fp8"], key="tr_prec_act_cache", help="DeepSeek-V3 3.3.3")
        moments = st.selectbox("Adam moments", ["fp32", "bf16"], key="tr_prec_moments", help="master weights stay fp32")
        payload = st.selectbox("pipeline send payload", ["bf16", "fp8"], key="tr_prec_pp_payload")
        _set_if(t, "activation_cache_dtype", act, "bf16")
        _set_if(t, "optimizer_moment_dtype", moments, "fp32")
        _set_if(t, "pp_payload_dtype", payload, "bf16")


def _set_if(section: dict[str, Any], field: str, value: Any, default: Any) -> None:
    """Write a field only when it differs from the default (short links, older links unchanged)."""
    if value != default:
        section[field] = value


def _routing_widgets(cfg: dict[str, Any]) -> None:
    """MoE routing: the source and its skew, capacity factor, hot-expert replicas, a routing trace upload."""
    with st.expander("MoE routing", expanded=st.session_state.get("tr_moe_source") != "uniform"):
        _trace_upload()
        kind = st.selectbox("routing source", SOURCES, key="tr_moe_source")
        source = _source_widgets(kind)
        c1, c2 = st.columns(2)
        cf = float(c1.number_input("capacity factor (0 = no drops)", 0.0, 64.0, step=0.25, key="tr_moe_cf"))
        replicas = int(c2.number_input("hot-expert replicas", 0, 4096, key="tr_moe_replicas", help="EPLB"))
        c1, c2 = st.columns(2)
        dispatch = c1.selectbox("dispatch payload", ["bf16", "fp8"], key="tr_moe_dispatch")
        dedup = c2.checkbox("node dedup", key="tr_moe_dedup", help="send a token once per node (DeepSeek-V3)")
        routing: dict[str, Any] = {}
        _set_if(routing, "source", source, {"kind": "uniform"})
        _set_if(routing, "capacity_factor", cf or None, None)
        _set_if(routing, "replicate_hot_experts", replicas, 0)
        if routing:
            cfg["moe_routing"] = routing
        _set_if(cfg["training"], "moe_dispatch_dtype", dispatch, "bf16")
        _set_if(cfg["training"], "moe_node_dedup", dedup, False)


def _source_widgets(kind: str) -> dict[str, Any]:
    """The routing source's parameters; group-limited, pooled and load-aware sources route over a Zipf base
    when the skew is above 0."""
    if kind == "trace":
        path = st.session_state.get("tr_moe_trace_path") or ""
        st.caption("upload a routing trace above" if not path else "replaying the uploaded trace")
        return {"kind": "trace", "path": path}
    if kind == "uniform":
        return {"kind": "uniform"}
    c1, c2 = st.columns(2)
    skew = float(c1.number_input("skew (Zipf exponent)", 0.0, 8.0, step=0.1, key="tr_moe_skew"))
    var = float(c2.number_input("layer variation", 0.0, 1.0, step=0.1, key="tr_moe_layer_var"))
    zipf = {"kind": "zipf", "exponent": skew, "layer_variation": var}
    if kind == "zipf":
        return zipf
    base = zipf if skew > 0 else {"kind": "uniform"}
    c1, c2 = st.columns(2)
    if kind == "group_limited":
        groups = int(c1.number_input("groups", 1, 4096, key="tr_moe_groups"))
        limit = int(c2.number_input("max groups per token", 1, 4096, key="tr_moe_max_groups"))
        score = st.selectbox("group score", ["top2_sum", "max"], key="tr_moe_group_score")
        return {"kind": kind, "groups": groups, "max_groups": limit, "group_score": score, "base": base}
    if kind == "hierarchical":
        return {"kind": kind, "pools": int(c1.number_input("pools", 1, 4096, key="tr_moe_pools")), "base": base}
    bias = float(c1.number_input("bias strength", 0.001, 1.0, step=0.05, key="tr_moe_bias"))
    rounds = int(c2.number_input("bias rounds", 1, 1000, key="tr_moe_rounds"))
    return {"kind": "load_aware", "bias_strength": bias, "rounds": rounds, "base": base}


def _trace_upload() -> None:
    """A recorded routing trace (docs/routing-trace-format.md), saved under the app's upload folder."""
    up = st.file_uploader("routing trace (JSON)", type=["json"], key="tr_moe_trace_file")
    if up is None or st.session_state.get("tr_moe_trace_id") == up.file_id:
        return
    st.session_state["tr_moe_trace_id"] = up.file_id
    path = guarded(save_trace, up.getvalue(), up.name)
    if path is not None:
        st.session_state["tr_moe_trace_path"] = path
        st.session_state["tr_moe_source"] = "trace"


def save_trace(data: bytes, name: str) -> str:
    """Check an uploaded routing trace (size, JSON, format) and save it; returns the path a config may name."""
    from simulator.moe.routing import parse_trace

    if len(data) > MAX_ROUTING_TRACE_BYTES:
        raise ClusterSimError(f"{name} is over {MAX_ROUTING_TRACE_BYTES // 2**20} MiB; upload a routing trace")
    parse_trace(parse_json_text(decode_text(data, name), name), name)
    return str(save_upload(data, "routing", ".json", MAX_ROUTING_TRACE_BYTES))


def _power_widgets(cfg: dict[str, Any]) -> None:
    """Power: a locked SM clock or a power cap (the GPU's maximum clock and TDP as starting values)."""
    gpu = cfg["cluster"]["gpu"]
    with st.expander("Power", expanded=st.session_state.get("tr_pw_mode") != "max clock"):
        mode = st.radio("GPU clocks", POWER_MODES, key="tr_pw_mode", horizontal=True)
        if mode == "locked clock":
            if not st.session_state.get("tr_pw_clock_mhz"):
                prof = guarded(load_profile, None, gpu=gpu)
                st.session_state["tr_pw_clock_mhz"] = float(prof.power.max_sm_clock_mhz) if prof else 1000.0
            mhz = st.number_input("locked SM clock (MHz)", 0.0, 10000.0, step=15.0, key="tr_pw_clock_mhz")
            cfg["power"] = {"sm_clock_mhz": float(mhz)}
        elif mode == "power cap":
            if not st.session_state.get("tr_pw_limit_w"):
                spec = guarded(get_gpu, gpu)
                st.session_state["tr_pw_limit_w"] = float(spec.tdp_w) if spec else 400.0
            watts = st.number_input("power cap per GPU (W)", 0.0, 10000.0, step=25.0, key="tr_pw_limit_w")
            cfg["power"] = {"power_limit_w": float(watts)}


def _stack_widgets(cfg: dict[str, Any]) -> None:
    """The software stack preset (simulator/stacks/presets): kernels, host overheads, training defaults."""
    with st.expander("Stack", expanded=st.session_state.get("tr_stack") != DEFAULT_STACK):
        name = st.selectbox("software stack", STACKS, key="tr_stack")
        stack = get_stack(name)
        st.caption(stack.description)
        if name != DEFAULT_STACK:
            cfg["stack"] = name


def _host_widgets(cfg: dict[str, Any]) -> None:
    """Host memory: ZeRO-Offload/Infinity tiers, activation offload, delayed update, parameter servers."""
    active = any(st.session_state.get(k) not in (None, "none", False) for k in ("tr_off_optimizer", "tr_off_params"))
    with st.expander("Host memory / offload", expanded=active or bool(st.session_state.get("tr_ps_on"))):
        opt = st.selectbox("optimizer states + step", TIERS, key="tr_off_optimizer", help="ZeRO-Offload / -Infinity")
        params = st.selectbox("16-bit weights (ZeRO-3)", TIERS, key="tr_off_params", help="ZeRO-Infinity")
        acts = st.checkbox("activations to host memory", key="tr_off_activations")
        dpu = st.checkbox("delayed parameter update", key="tr_off_dpu", disabled=opt == "none")
        off: dict[str, Any] = {}
        _set_if(off, "optimizer", opt, "none")
        _set_if(off, "params", params, "none")
        _set_if(off, "activations", acts, False)
        _set_if(off, "delayed_param_update", dpu and opt != "none", False)
        if off:
            cfg["training"]["offload"] = off
        if st.checkbox("parameter-server data parallelism", key="tr_ps_on", help="BytePS push/pull over RDMA"):
            c1, c2 = st.columns(2)
            servers = int(c1.number_input("CPU server machines", 0, 4096, key="tr_ps_servers"))
            placement = c2.selectbox("placement", ["colocated", "dedicated"], key="tr_ps_placement")
            cfg["parallel"]["dp_mode"] = "parameter_server"
            cfg["parallel"]["parameter_server"] = {"servers": servers, "placement": placement}


# ---- effects (main area) -----------------------------------------------------------------------------


def show_effects(cfg: dict[str, Any], result: Any) -> None:
    """One expander per option section: what it changes against the same plan without it."""
    run_cfg = guarded(check_app_config, "training", cfg)
    if run_cfg is None:
        return
    st.subheader("What the options change")
    _compression_effects(cfg, run_cfg, result)
    _precision_effects(cfg, result)
    if run_cfg.model.moe is not None:
        _routing_effects(cfg, run_cfg, result)
    _power_effects(cfg, result)
    _stack_effects(cfg, result)
    _host_effects(cfg, run_cfg, result)


def _baseline(cfg: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> Any | None:
    """The simulated plan with an option undone by ``change`` (cached like every run), or None."""
    base = json.loads(json.dumps(cfg))
    change(base)
    return guarded(run_training, to_json(base))


def _delta(value: float, ref: Any | None, attr: Callable[[Any], float], fmt: str, unit: str = "") -> str | None:
    """``value`` minus the reference plan's, formatted with its unit (None without a reference)."""
    return None if ref is None else format(value - attr(ref), fmt) + unit


def _step_metrics(cols: list[Any], r: Any, ref: Any | None, vs: str) -> None:
    """Step time and time to train against a reference plan (None: no deltas)."""
    cols[0].metric(
        f"step time vs {vs}",
        f"{r.step_time_s:.3f} s",
        _delta(r.step_time_s, ref, lambda x: x.step_time_s, "+.3f", " s"),
        delta_color="inverse",
    )
    days = r.time_to_train_days
    ref_days = ref.time_to_train_days if ref is not None else None
    cols[1].metric(
        f"time to train vs {vs}",
        f"{days:.1f} days" if days is not None else "-",
        None if days is None or ref_days is None else f"{days - ref_days:+.1f} days",
        delta_color="inverse",
        help="for the token budget, times the compression steps multiplier",
    )


def _compression_effects(cfg: dict[str, Any], run_cfg: Any, r: Any) -> None:
    """DP wire bytes by collective (dense vs compressed), exposed DP comm, (de)compression, memory, time."""
    spec = run_cfg.training.compression
    with st.expander("Gradient compression: what it changes", expanded=spec is not None):
        rows = guarded(effects.dp_traffic, run_cfg) or []
        ref = dense_cfg = None
        if spec is not None:
            ref = _baseline(cfg, lambda c: c["training"].pop("compression", None))
            dense_cfg = guarded(check_app_config, "training", effects.without(cfg, "training.compression"))
        dense_rows = (guarded(effects.dp_traffic, dense_cfg) or []) if dense_cfg is not None else []
        if not rows:
            st.caption("no data parallelism (dp x cp = 1): no gradient collective to compress")
        wire = sum(x.wire_bytes for x in rows)
        over = guarded(effects.compression_overhead, run_cfg) or {"compute_s": 0.0, "state_bytes": 0.0}
        cols = st.columns(4)
        cols[0].metric(
            "DP wire bytes per GPU",
            f"{wire / 1e9:.3f} GB",
            f"{(wire - sum(x.wire_bytes for x in dense_rows)) / 1e9:+.3f} GB" if dense_rows else None,
            delta_color="inverse",
            help="per step, what each GPU contributes to its data-parallel collectives (GB = 10^9 bytes)",
        )
        _exposed_metric(cols[1], "dp", r, ref)
        cols[2].metric("(de)compression compute", f"{over['compute_s']:.3f} s", help="per step, on the critical path")
        state = r.memory_per_gpu_gb.compression * 1e9
        cols[3].metric("compression state", f"{state / GIB:.2f} GiB", help="error feedback, PowerSGD (in the peak)")
        cols = st.columns(4)
        _step_metrics(cols, r, ref, "uncompressed")
        cols[2].metric("steps multiplier", f"x{effects.steps_multiplier(run_cfg):.2f}", help="your convergence input")
        mem = r.memory_per_gpu_gb.peak * 1e9 / GIB
        cols[3].metric(
            "GPU memory vs uncompressed",
            f"{mem:.1f} GiB",
            _delta(mem, ref, lambda x: x.memory_per_gpu_gb.peak * 1e9 / GIB, "+.2f", " GiB"),
            delta_color="inverse",
            help="the simulated peak, which holds the compression state (simulator.compression.memory_overhead_bytes)",
        )
        if state and not r.fits_in_memory:
            st.warning(f"with its compression state this plan needs {mem:.1f} GiB per GPU: it does not fit")
        _traffic_table(rows, dense_rows)


def _exposed_metric(col: Any, kind: str, r: Any, ref: Any) -> None:
    """Exposed communication of one kind (dp, ep, ...) per step, with its change against the reference plan."""
    secs = r.exposed_comm_s.get(kind, 0.0)
    col.metric(
        f"exposed {kind.upper()} comm",
        f"{secs:.3f} s",
        _delta(secs, ref, lambda x: x.exposed_comm_s.get(kind, 0.0), "+.3f", " s"),
        delta_color="inverse",
    )


def _traffic_table(rows: list[Any], dense_rows: list[Any]) -> None:
    """DP collectives of the plan (and of the dense plan when compressed), bytes per GPU and model seconds."""
    frame = [
        {
            "plan": plan,
            "collective": x.collective,
            "GB per GPU per step": x.wire_bytes / 1e9,
            "seconds (one call)": x.seconds,
            "note": x.note,
        }
        for plan, xs in (("this plan", rows), ("dense", dense_rows))
        for x in xs
    ]
    if frame:
        fmt = {
            "GB per GPU per step": st.column_config.NumberColumn(format="%.3f"),
            "seconds (one call)": st.column_config.NumberColumn(format="%.4f"),
        }
        st.dataframe(pd.DataFrame(frame), hide_index=True, column_config=fmt)


def _precision_effects(cfg: dict[str, Any], r: Any) -> None:
    """Step time, MFU and memory against the bf16 recipe with bf16/fp32 stores."""
    t = cfg["training"]
    fields = ("activation_cache_dtype", "optimizer_moment_dtype", "pp_payload_dtype")
    active = t.get("precision", "bf16") != "bf16" or any(f in t for f in fields)
    with st.expander("Precision recipe: what it changes", expanded=active):
        ref = None
        if active:

            def undo(c: dict[str, Any]) -> None:
                c["training"]["precision"] = "bf16"
                for f in fields:
                    c["training"].pop(f, None)

            ref = _baseline(cfg, undo)
        cols = st.columns(3)
        _step_metrics(cols, r, ref, "bf16 recipe")
        mem = r.memory_per_gpu_gb
        cols[2].metric(
            "GPU memory vs bf16 recipe",
            f"{mem.peak * 1e9 / GIB:.1f} GiB",
            _delta(mem.peak * 1e9 / GIB, ref, lambda x: x.memory_per_gpu_gb.peak * 1e9 / GIB, "+.2f", " GiB"),
            delta_color="inverse",
            help=f"activations {mem.activations:.1f} GB, optimizer {mem.optimizer:.1f} GB",
        )
        st.caption(f"MFU {r.mfu:.1%}" + (f" (bf16 recipe {ref.mfu:.1%})" if ref is not None else ""))


def _routing_effects(cfg: dict[str, Any], run_cfg: Any, r: Any) -> None:
    """Expert time of the busiest EP rank, load imbalance, drops and the all-to-all against uniform routing."""
    active = bool(cfg.get("moe_routing"))
    with st.expander("MoE routing: what it changes", expanded=active):
        ref = ref_time = None
        if active:
            ref = _baseline(cfg, lambda c: c.pop("moe_routing", None))
            uniform = guarded(check_app_config, "training", effects.without(cfg, "moe_routing"))
            ref_time = guarded(effects.expert_time, uniform) if uniform is not None else None
        et = guarded(effects.expert_time, run_cfg)
        if et is None:
            return
        cols = st.columns(4)
        cols[0].metric(
            "expert time (busiest EP rank)",
            f"{et.expert_s * 1e3:.2f} ms",
            _delta(et.expert_s * 1e3, ref_time, lambda x: x.expert_s * 1e3, "+.2f", " ms"),
            delta_color="inverse",
            help="one MoE layer, one micro-batch, forward + backward of the expert GEMMs",
        )
        cols[1].metric("expert load max/mean", f"{et.load_factor:.2f}", help="busiest EP rank over the mean")
        cols[2].metric("token copies dropped", f"{et.dropped_fraction:.1%}", help="by the capacity factor")
        _exposed_metric(cols[3], "ep", r, ref)
        _step_metrics(st.columns(2), r, ref, "uniform routing")


def _power_effects(cfg: dict[str, Any], r: Any) -> None:
    """Step time, energy per token and GPU power against the GPU's default clocks and limit."""
    active = bool(cfg.get("power"))
    with st.expander("Power: what it changes", expanded=active):
        ref = _baseline(cfg, lambda c: c.pop("power", None)) if active else None
        cols = st.columns(4)
        _step_metrics(cols, r, ref, "max clock")
        cols[2].metric(
            "energy per token",
            f"{r.energy_per_token_j:.3f} J",
            _delta(r.energy_per_token_j, ref, lambda x: x.energy_per_token_j, "+.3f", " J"),
            delta_color="inverse",
        )
        watts = float(r.power.get("avg_gpu_power_w", 0.0))
        cols[3].metric(
            "GPU power",
            f"{watts:.0f} W",
            _delta(watts, ref, lambda x: float(x.power.get("avg_gpu_power_w", 0.0)), "+.0f", " W"),
            help="step average of the hottest GPU",
        )


def _stack_effects(cfg: dict[str, Any], r: Any) -> None:
    """Step time and MFU against the default stack."""
    active = "stack" in cfg
    with st.expander("Stack: what it changes", expanded=active):
        ref = _baseline(cfg, lambda c: c.pop("stack", None)) if active else None
        cols = st.columns(3)
        _step_metrics(cols, r, ref, DEFAULT_STACK)
        cols[2].metric("MFU", f"{r.mfu:.1%}", _delta(r.mfu * 100, ref, lambda x: x.mfu * 100, "+.1f", " pts"))


def _host_effects(cfg: dict[str, Any], run_cfg: Any, r: Any) -> None:
    """GPU and host memory, PCIe traffic, the CPU optimizer step and step time against no offload; the
    parameter server against collective all-reduce."""
    off = run_cfg.training.offload
    ps = run_cfg.parallel.dp_mode == "parameter_server"
    with st.expander("Host memory / offload: what it changes", expanded=off.any or ps):
        if not (off.any or ps):
            st.caption("nothing offloaded; model states stay in GPU memory")
            return

        def undo(c: dict[str, Any]) -> None:
            c["training"].pop("offload", None)
            for k in ("dp_mode", "parameter_server"):
                c["parallel"].pop(k, None)

        ref = _baseline(cfg, undo)
        vs = " and ".join(x for x, on in (("no offload", off.any), ("all-reduce", ps)) if on)
        mem = r.memory_per_gpu_gb
        cols = st.columns(4)
        cols[0].metric(
            f"GPU memory vs {vs}",
            f"{mem.peak * 1e9 / GIB:.1f} GiB",
            _delta(mem.peak * 1e9 / GIB, ref, lambda x: x.memory_per_gpu_gb.peak * 1e9 / GIB, "+.1f", " GiB"),
            delta_color="inverse",
            help=("fits" if r.fits_in_memory else "does not fit")
            + ("" if ref is None else f"; without offload it {'fits' if ref.fits_in_memory else 'does not fit'}"),
        )
        cols[1].metric(
            "host memory per GPU",
            f"{mem.host * 1e9 / GIB:.1f} GiB",
            help=f"of {mem.host_capacity * 1e9 / GIB:.0f} GiB (the node's host memory shared by its GPUs)",
        )
        cols[2].metric("NVMe per GPU", f"{mem.nvme * 1e9 / GIB:.1f} GiB")
        cols[3].metric("CPU optimizer step", f"{r.offload_s.get('cpu_adam_s', 0.0):.3f} s", help=_offload_help(r))
        pcie = guarded(effects.pcie_traffic, run_cfg) or {}
        cols = st.columns(4)
        _step_metrics(cols, r, ref, vs)
        cols[2].metric("PCIe traffic per GPU", f"{pcie.get('total', 0.0) / 1e9:.1f} GB", help="per step")
        if ps:
            dp = r.exposed_comm_s.get("dp", 0.0)
            cols[3].metric(
                "exposed DP comm vs all-reduce",
                f"{dp:.3f} s",
                _delta(dp, ref, lambda x: x.exposed_comm_s.get("dp", 0.0), "+.3f", " s"),
                delta_color="inverse",
                help="parameter-server push/pull against the collective plan",
            )
        else:
            cols[3].metric("exposed host step", f"{r.offload_s.get('exposed_s', 0.0):.3f} s", help=_offload_help(r))
        if r.fits_in_memory and ref is not None and not ref.fits_in_memory:
            st.success("fits only with offload: without it the plan does not fit in GPU memory")
        if pcie:
            frame = [{"copy": k, "GB per step": v / 1e9} for k, v in pcie.items() if k not in ("total", "pcie_s")]
            fmt = {"GB per step": st.column_config.NumberColumn(format="%.2f")}
            st.dataframe(pd.DataFrame(frame), hide_index=True, column_config=fmt)
            st.caption(f"{pcie['pcie_s']:.2f} s of PCIe copies per step at the node's per-GPU host link rate")


def _offload_help(r: Any) -> str:
    """The host optimizer step by stream (seconds) and what the step waits for."""
    o = r.offload_s
    if not o:
        return "no optimizer offload"
    return (
        f"CPU Adam {o.get('cpu_adam_s', 0):.3f} s, weights back over PCIe {o.get('weights_h2d_s', 0):.3f} s, "
        f"NVMe swap {o.get('nvme_swap_s', 0):.3f} s; exposed {o.get('exposed_s', 0):.3f} s"
    )
