"""Streamlit plumbing shared by the pages: cached simulations, error display, URL state, downloads.

Pages call the public simulator API only through here (or directly), so caching and the
"never a traceback" rule live in one place.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import streamlit as st
from simulator.app.plans import check_app_config, deep_merge, from_json, parse_upload, to_json, to_yaml

from hwmodels.errors import ClusterSimError
from simulator.core.limits import SESSION_BUDGET_S, SESSION_WINDOW_S

T = TypeVar("T")


# ---- cached simulations (the key is the config as compact JSON, so it is hashable) ---------------


@st.cache_data(show_spinner=False, max_entries=512)
def _training_result(cfg_json: str) -> Any:
    """TrainingResult of a config that passes the app's gate (:func:`check_app_config`), cached per config."""
    from simulator.training import simulate_training

    return simulate_training(check_app_config("training", json.loads(cfg_json)))


@st.cache_data(show_spinner=False, max_entries=256)
def _serving_result(cfg_json: str) -> Any:
    """ServingResult of a serving config that passes the app's gate, cached per config."""
    from simulator.serving import simulate_serving

    return simulate_serving(check_app_config("serving", json.loads(cfg_json)))


def run_training(cfg_json: str) -> Any:
    """TrainingResult of a config given as JSON: checked by the app's gate (no server files, within
    APP_CAPS), charged to the session's time budget, cached per distinct config."""
    return budgeted(_training_result, cfg_json)


def run_serving(cfg_json: str) -> Any:
    """ServingResult of a serving config given as JSON: gated, budgeted and cached like :func:`run_training`."""
    return budgeted(_serving_result, cfg_json)


def budgeted(fn: Callable[..., T], key: str, *args: Any) -> T:
    """``fn(key, *args)`` charged to this session's simulation budget (limits.SESSION_BUDGET_S seconds in any
    SESSION_WINDOW_S window). Once it is spent, only what the session already computed (cached) runs."""
    now = time.monotonic()
    log = [(t, s) for t, s in st.session_state.get("_sim_log", []) if now - t < SESSION_WINDOW_S]
    done = st.session_state.setdefault("_sim_done", set())
    token = f"{getattr(fn, '__name__', fn)}:{key}:{args}"
    if sum(s for _, s in log) >= SESSION_BUDGET_S and token not in done:
        wait = SESSION_WINDOW_S - (now - min((t for t, _ in log), default=now))
        raise ClusterSimError(
            f"this session has used its {SESSION_BUDGET_S:.0f} s of simulation time; try again in "
            f"{wait / 60:.0f} min, or run large studies with the CLI"
        )
    start = time.monotonic()
    try:
        out = fn(key, *args)
    finally:
        st.session_state["_sim_log"] = [*log, (start, time.monotonic() - start)]
    if len(done) < 4096:
        done.add(token)
    return out


def guarded(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Call ``fn``; show bad input as ``st.error`` with its one-line message, never a traceback."""
    try:
        return fn(*args, **kwargs)
    except ClusterSimError as exc:
        st.error(str(exc))
    except Exception as exc:  # the app must keep working whatever the model raises
        st.error(f"internal error: {type(exc).__name__}: {exc}")
    return None


def error_text(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T | None, str | None]:
    """Like :func:`guarded` but returns the message instead of showing it (for sweeps)."""
    try:
        return fn(*args, **kwargs), None
    except ClusterSimError as exc:
        return None, str(exc)
    except Exception as exc:
        return None, f"internal error: {type(exc).__name__}: {exc}"


def run_page(render: Callable[[], None]) -> None:
    """Run a page body so that any error the guarded calls missed is still one line, not a traceback."""
    try:
        render()
    except ClusterSimError as exc:
        st.error(str(exc))
    except Exception as exc:  # Streamlit's rerun/stop signals are BaseExceptions and pass through
        st.error(f"internal error: {type(exc).__name__}: {exc}")


# ---- the configuration in the URL ---------------------------------------------------------------


#: Query parameter of each page; different names so a link never feeds one page's config to another.
PAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "training": ("train", "b"),
    "serving": ("serve",),
    "tradeoffs": ("sweep",),
    "hardware": ("gpu",),
    "power": ("power",),
    "claims": (),
    "compression": ("comp",),
}


def drop_foreign_params(page: str) -> None:
    """Remove other pages' parameters from the URL, so a copied link holds this page's view only."""
    mine = set(PAGE_PARAMS[page])
    for other, params in PAGE_PARAMS.items():
        for name in params:
            if other != page and name not in mine and name in st.query_params:
                del st.query_params[name]


def config_to_load(param: str, state_key: str, default: Mapping[str, Any], probe: str) -> dict[str, Any] | None:
    """The config to push into the widgets at the start of a run, or None if they already hold one.

    A ``param`` in the URL that this session has not applied yet wins (a shared link, or a plan
    sent from the trade-off explorer); otherwise the widgets keep their state, or get the page's
    last config back after a page switch (Streamlit drops the state of widgets not on screen).
    """
    raw = st.query_params.get(param)
    seen = f"_{state_key}_url"
    if raw and raw != st.session_state.get(seen):
        st.session_state[seen] = raw
        try:
            return deep_merge(default, from_json(raw, f"URL parameter {param!r}"))
        except ClusterSimError as exc:
            st.warning(f"{exc}; showing the defaults instead")
            return dict(default)
    if probe not in st.session_state:
        return dict(st.session_state.get(state_key) or default)
    return None


def publish_config(param: str, state_key: str, cfg: Mapping[str, Any] | None) -> None:
    """Write the page's config to the URL (so a link reproduces the view) and to the session."""
    seen = f"_{state_key}_url"
    if cfg is None:
        if param in st.query_params:
            del st.query_params[param]
        st.session_state[seen] = None
        return
    raw = to_json(cfg)
    st.session_state[state_key] = dict(cfg)
    st.session_state[seen] = raw
    if st.query_params.get(param) != raw:
        st.query_params[param] = raw


def set_state(values: Mapping[str, Any]) -> None:
    """Put values into widget keys (only valid before those widgets are drawn in this run)."""
    for key, value in values.items():
        st.session_state[key] = value


def coerce_state(
    values: dict[str, Any],
    default_of: Callable[[str], Any],
    options: Mapping[str, list[Any]] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> list[str]:
    """Make widget values from a URL safe to draw: the default's type, inside the options or bounds.

    A widget given a value it cannot show raises on every rerun, so a bad link would break the
    page for the session; reset such values to the default and return their keys instead.
    """
    options, bounds = options or {}, bounds or {}
    reset = []
    for key, value in values.items():
        default = default_of(key)
        if default is None:
            continue
        try:
            if key in options:
                ok = value in options[key]
            elif isinstance(default, bool):
                ok = isinstance(value, bool)
            elif isinstance(default, int | float):
                number = float(value)
                lo, hi = bounds.get(key, (1.0 if isinstance(default, int) else 0.0, float("inf")))
                ok = lo <= number <= hi and (not isinstance(default, int) or number.is_integer())
                value = int(number) if isinstance(default, int) else number
            else:
                ok = isinstance(value, str)
        except (TypeError, ValueError, OverflowError):
            ok = False
        values[key] = value if ok else default
        if not ok:
            reset.append(key)
    return reset


def warn_reset(param: str, reset: list[str], prefix: str) -> None:
    """Say which fields of a link were unusable (and now show their defaults)."""
    if reset:
        names = ", ".join(k.removeprefix(prefix) for k in reset)
        st.warning(f"URL parameter {param!r}: invalid {names}; showing the default instead")


def clamp_choice(key: str, options: list[Any], fallback: Any = None) -> None:
    """Keep a selectbox's stored value inside its (changing) options."""
    if st.session_state.get(key) not in options:
        st.session_state[key] = fallback if fallback in options else options[0]


# ---- model picker (preset or uploaded HF config.json) --------------------------------------------

CUSTOM_MODEL = "custom: uploaded config.json"


def model_choice_state(prefix: str, model: Any) -> dict[str, Any]:
    """Widget state for a config's ``model`` (a preset name or an inline HF/ModelSpec dict)."""
    if isinstance(model, Mapping):
        st.session_state[f"{prefix}_model_inline"] = dict(model)
        return {f"{prefix}_model": CUSTOM_MODEL}
    return {f"{prefix}_model": str(model)}


def model_picker(prefix: str, default: str | None = None) -> Any:
    """Preset selectbox plus an optional HF ``config.json`` upload; returns the config's model value."""
    from simulator.models import from_hf_config, list_models

    inline_key, file_key = f"{prefix}_model_inline", f"{prefix}_model_file"
    with st.expander("upload a Hugging Face config.json", expanded=False):
        up = st.file_uploader("config.json", type=["json"], key=file_key)
    if up is not None and st.session_state.get(f"{file_key}_id") != up.file_id:
        st.session_state[f"{file_key}_id"] = up.file_id
        data = guarded(parse_upload, up.getvalue(), up.name)
        spec = guarded(from_hf_config, data) if data is not None else None
        if spec is not None:
            data.setdefault("_name_or_path", up.name.removesuffix(".json"))
            st.session_state[inline_key] = data
            st.session_state[f"{prefix}_model"] = CUSTOM_MODEL
    options = [m.name for m in list_models()]
    if st.session_state.get(inline_key) is not None:
        options.append(CUSTOM_MODEL)
    current = str(st.session_state.get(f"{prefix}_model", ""))
    by_lower = {o.lower(): o for o in options}
    if current not in options and current.lower() in by_lower:  # preset names are case-insensitive
        st.session_state[f"{prefix}_model"] = by_lower[current.lower()]
    elif current and current not in options:
        st.warning(f"model {current!r} is not a preset; showing {default or options[0]}")
    clamp_choice(f"{prefix}_model", options, default)
    choice = st.selectbox("model", options, key=f"{prefix}_model")
    return st.session_state[inline_key] if choice == CUSTOM_MODEL else choice


# ---- downloads -----------------------------------------------------------------------------------


def downloads(
    name: str,
    cfg: Mapping[str, Any] | None,
    results: Mapping[str, tuple[str, str, str]],
) -> None:
    """A row of download buttons: the config as YAML and each result as (label, data, mime)."""
    cols = st.columns(1 + len(results))
    with cols[0]:
        st.download_button(
            "download config (YAML)",
            to_yaml(cfg or {}),
            file_name=f"{name}.yaml",
            mime="text/yaml",
            key=f"dl_{name}_cfg",
            disabled=cfg is None,
        )
    for col, (suffix, (label, data, mime)) in zip(cols[1:], results.items(), strict=True):
        with col:
            st.download_button(label, data, file_name=f"{name}-{suffix}", mime=mime, key=f"dl_{name}_{suffix}")
