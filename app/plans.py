"""Config plumbing for the app, kept free of Streamlit so it can be unit-tested.

Default configs, compact JSON for the URL, sweep variants for the trade-off explorer and the
latency-vs-rate helpers. Every config here is a plain dict that ``load_config`` /
``load_serving_config`` validate; nothing in this module models hardware.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import yaml

from hwmodels.errors import ClusterSimError
from simulator.core import untrusted
from simulator.core.limits import APP_CAPS, MAX_CONFIG_BYTES
from simulator.serving.policies import BATCHING_POLICIES, get_batching
from simulator.training.schedules import schedule_names

TRAIN_EXAMPLE = "gpt3-175b-a100.yaml"
SERVE_EXAMPLE = "serve-llama3-8b-h100.yaml"
#: Serving runs in the app use few requests so a page answers in about a second.
APP_SERVING_REQUESTS = 300
CURVE_REQUESTS = 200
#: Plans in one trade-off sweep (the app's sweep-points cap, simulator.core.limits.APP_CAPS).
MAX_SWEEP = APP_CAPS.sweep_points


def _example(name: str) -> dict[str, Any]:
    text = resources.files("simulator").joinpath(f"examples/{name}").read_text()
    return yaml.safe_load(text)


def default_training() -> dict[str, Any]:
    """The bundled GPT-3 175B on 1,024 A100 plan (the CLI's `train` default)."""
    return _example(TRAIN_EXAMPLE)


def default_serving(num_requests: int = APP_SERVING_REQUESTS) -> dict[str, Any]:
    """The bundled Llama-3 8B serving example with fewer requests, for interactive speed."""
    cfg = _example(SERVE_EXAMPLE)
    cfg["workload"]["num_requests"] = num_requests
    return cfg


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override`` recursively (a copy); a URL may carry only some keys."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def to_json(cfg: Mapping[str, Any]) -> str:
    """Compact, key-sorted JSON: the cache key and the ``cfg`` query parameter."""
    return json.dumps(cfg, separators=(",", ":"), sort_keys=True)


#: Config keys that name a file on the machine running the app: never taken from a URL or an upload
#: (``path`` keys may name a file the app saved from an upload; see simulator.core.untrusted).
SERVER_FILE_KEYS = untrusted.FILE_KEYS


def refuse_server_files(data: Any, what: str) -> None:
    """A one-line error when a URL or upload config names a server file: ``stack.traced``, a trace or
    routing-trace ``path`` outside the app's upload folder, or a ``model`` given as a path."""
    untrusted.check_config_files(data, what)


def from_json(text: str, what: str = "cfg") -> dict[str, Any]:
    """Parse a JSON object from the URL or an upload, with a one-line error (depth checked, no NaN)."""
    if not isinstance(text, str | bytes):
        raise ClusterSimError(f"{what} is not valid JSON text; fix or remove it")
    data = untrusted.parse_json_text(text, what)
    if not isinstance(data, dict):
        raise ClusterSimError(f"{what} must be a JSON object")
    refuse_server_files(data, what)
    return data


def check_app_config(kind: str, data: Mapping[str, Any]) -> Any:
    """The validated training or serving config the app may simulate: names no server file, takes its model
    from the presets (or inline), and is within the app's work caps (:data:`simulator.core.limits.APP_CAPS`).

    Every simulation the app runs passes here first (``simulator.app.common.run_training`` and friends),
    whichever page or link the config came from; a refusal is one line saying what to reduce.
    """
    from simulator.core.config import load_config
    from simulator.models import list_models
    from simulator.search.scale import check_work
    from simulator.serving.config import load_serving_config

    if not isinstance(data, Mapping):
        raise ClusterSimError("the config must be a mapping with keys model, ...")
    refuse_server_files(data, "config")
    model = data.get("model")
    if isinstance(model, str) and model.strip().lower() not in {m.name.lower() for m in list_models()}:
        raise ClusterSimError(f"model {model[:60]!r} is not a preset; pick one, or upload a HF config.json")
    cfg = load_config(dict(data)) if kind == "training" else load_serving_config(dict(data))
    check_work(kind, cfg, APP_CAPS, "reduce it, or run it with the CLI (clustersim train/serve CONFIG)")  # type: ignore[arg-type]
    return cfg


def to_yaml(cfg: Mapping[str, Any]) -> str:
    """YAML the CLI reads back (`clustersim train CONFIG`)."""
    return yaml.safe_dump(dict(cfg), sort_keys=False)


def parse_upload(data: bytes, name: str) -> dict[str, Any]:
    """A mapping from an uploaded JSON or YAML file; malformed, oversized or hostile files (alias bombs,
    deep nesting, server file paths) give a one-line error."""
    if len(data) > MAX_CONFIG_BYTES:
        raise ClusterSimError(f"{name} is over {MAX_CONFIG_BYTES // 2**20} MiB; upload a config, not data")
    text = untrusted.decode_text(data, name)
    if name.lower().endswith((".yaml", ".yml")):
        out = untrusted.load_yaml_text(text, name)
        if not isinstance(out, dict):
            raise ClusterSimError(f"{name} must hold a mapping")
        refuse_server_files(out, name)
        return out
    return from_json(text, name)


def derive_dp(num_gpus: int, tp: int, pp: int, cp: int = 1) -> int:
    """Data-parallel degree that fills the cluster; a one-line error when tp*pp*cp does not divide it."""
    model_parallel = tp * pp * cp
    if model_parallel <= 0 or num_gpus % model_parallel:
        raise ClusterSimError(
            f"tp*pp*cp = {tp}*{pp}*{cp} = {model_parallel} does not divide num_gpus={num_gpus}; "
            "change tp, pp, cp or the GPU count"
        )
    return num_gpus // model_parallel


# ---- training sweeps -----------------------------------------------------------------------------

#: Knob -> (section, key) in the training config.
TRAINING_KNOBS: dict[str, tuple[str, str]] = {
    "tp": ("parallel", "tp"),
    "pp": ("parallel", "pp"),
    "micro_batch": ("training", "micro_batch"),
    "schedule": ("parallel", "schedule"),
    "recompute": ("training", "recompute"),
    "zero": ("parallel", "zero"),
    "vpp": ("parallel", "vpp"),
    "cp": ("parallel", "cp"),
}
TRAINING_KNOB_CHOICES: dict[str, list[Any]] = {
    "tp": [1, 2, 4, 8, 16],
    "pp": [1, 2, 4, 8, 16, 32],
    "micro_batch": [1, 2, 4, 8],
    "schedule": list(schedule_names()),  # the schedule registry
    "recompute": ["none", "selective", "full"],
    "zero": [0, 1, 2, 3],
    "vpp": [1, 2, 3, 4],
    "cp": [1, 2, 4],
}
TRAINING_KNOB_DEFAULTS: dict[str, list[Any]] = {
    "tp": [4, 8],
    "pp": [4, 8, 16],
    "micro_batch": [1, 2],
    "schedule": ["1f1b", "zero-bubble"],
    "recompute": ["selective", "full"],
    "zero": [0, 1],
    "vpp": [1, 2],
    "cp": [1, 2],
}


def _label(values: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in values.items())


def training_variants(
    base: Mapping[str, Any], knobs: Mapping[str, Sequence[Any]]
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every combination of ``knobs`` applied to ``base`` as (label, values, config), dp re-derived.

    A plan whose tp*pp*cp does not divide the GPU count keeps the base dp, so validation reports
    the mismatch; vpp > 1 switches the schedule to interleaved unless the schedule is swept too.
    """
    names = list(knobs)
    out = []
    for combo in itertools.product(*(knobs[n] for n in names)):
        values = dict(zip(names, combo, strict=True))
        cfg = copy.deepcopy(dict(base))
        for name, value in values.items():
            section, key = TRAINING_KNOBS[name]
            cfg.setdefault(section, {})[key] = value
        par = cfg.setdefault("parallel", {})
        if "vpp" in values and "schedule" not in values:
            par["schedule"] = "interleaved" if values["vpp"] > 1 else par.get("schedule", "1f1b")
            if values["vpp"] == 1 and par["schedule"] == "interleaved":
                par["schedule"] = "1f1b"
        n = cfg["cluster"]["num_gpus"]
        tp, pp, cp = par.get("tp", 1), par.get("pp", 1), par.get("cp", 1)
        if n % (tp * pp * cp) == 0:
            par["dp"] = n // (tp * pp * cp)  # otherwise validation names the mismatch
        out.append((_label(values), values, cfg))
    return out


# ---- serving sweeps ------------------------------------------------------------------------------

SERVING_KNOB_CHOICES: dict[str, list[Any]] = {
    "batching": list(BATCHING_POLICIES),  # the policy registry
    "max_num_seqs": [8, 16, 32, 64, 128, 256, 512],
    "tp": [1, 2, 4, 8],
    "rate_per_s": [2.0, 4.0, 8.0, 12.0, 16.0, 24.0],
    "kv_dtype": ["bf16", "fp8", "int4"],
    "replicas": [1, 2, 4],
}
SERVING_KNOB_DEFAULTS: dict[str, list[Any]] = {
    "batching": ["continuous", "chunked"],
    "max_num_seqs": [16, 64, 256],
    "tp": [1, 2],
    "rate_per_s": [4.0, 8.0, 16.0],
    "kv_dtype": ["bf16", "fp8"],
    "replicas": [1, 2],
}


def serving_variants(
    base: Mapping[str, Any], knobs: Mapping[str, Sequence[Any]]
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Every combination of ``knobs`` applied to the serving config ``base``: (label, values, config)."""
    names = list(knobs)
    out = []
    for combo in itertools.product(*(knobs[n] for n in names)):
        values = dict(zip(names, combo, strict=True))
        cfg = copy.deepcopy(dict(base))
        batching = cfg.setdefault("batching", {"kind": "continuous"})
        if "batching" in values and values["batching"] != batching.get("kind"):
            batching = cfg["batching"] = {"kind": values["batching"]}  # a new policy starts from its defaults
        if "max_num_seqs" in values:
            limit = values["max_num_seqs"]
            kind = batching.get("kind", "continuous")
            batching[get_batching(kind).batch_limit_field] = limit
            if kind == "bucketed":
                batching["min_batch"] = min(batching.get("min_batch", 4), limit)
        if "tp" in values:
            cfg["tp"] = values["tp"]
        if "replicas" in values:
            cfg["replicas"] = values["replicas"]
        if "kv_dtype" in values:
            cfg.setdefault("kv", {})["dtype"] = values["kv_dtype"]
        if "rate_per_s" in values:
            cfg.setdefault("workload", {}).setdefault("arrivals", {"kind": "poisson"})["rate_per_s"] = values[
                "rate_per_s"
            ]
        out.append((_label(values), values, cfg))
    return out


# ---- latency vs rate -----------------------------------------------------------------------------

RATE_FACTORS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)


def rates_around(rate: float, factors: Sequence[float] = RATE_FACTORS) -> list[float]:
    """Arrival rates to probe for the latency-vs-rate curve, around the configured rate."""
    if rate <= 0:
        raise ClusterSimError(f"rate must be > 0, got {rate}")
    return [round(rate * f, 6) for f in factors]


def at_rate(cfg: Mapping[str, Any], rate: float, num_requests: int = CURVE_REQUESTS) -> dict[str, Any]:
    """``cfg`` with its arrival rate set to ``rate`` and at most ``num_requests`` requests."""
    out = copy.deepcopy(dict(cfg))
    wl = out.setdefault("workload", {})
    wl.setdefault("arrivals", {"kind": "poisson"})["rate_per_s"] = rate
    wl["num_requests"] = min(int(wl.get("num_requests", num_requests)), num_requests)
    return out


def curve_point(rate: float, result: Any) -> dict[str, float]:
    """One row of the latency-vs-rate table from a ServingResult."""
    return {
        "rate_per_s": rate,
        "ttft_p50_s": result.ttft_s.p50,
        "ttft_p99_s": result.ttft_s.p99,
        "tpot_p99_s": result.tpot_s.p99,
        "e2e_p99_s": result.e2e_s.p99,
        "throughput_requests_per_s": result.throughput_requests_per_s,
        "slo_attainment": result.slo_attainment,
    }


def knee_rate(points: Sequence[Mapping[str, float]], attainment: float = 0.9) -> float | None:
    """The highest probed rate at which at least ``attainment`` of requests meet the SLO (None if none)."""
    passing = [p["rate_per_s"] for p in points if p["slo_attainment"] >= attainment]
    return max(passing) if passing else None


# ---- hardware ------------------------------------------------------------------------------------


def measurement_file(gpu_id: str) -> Any:
    """The newest shipped kernel measurement set for ``gpu_id`` (calibration/data), or None."""
    try:
        folder = resources.files("calibration").joinpath("data")
        names = sorted(e.name for e in folder.iterdir() if e.name.startswith(f"{gpu_id}-kernels-"))
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        return None
    names = [n for n in names if n.endswith(".json")]
    return folder.joinpath(names[-1]) if names else None


def load_measurements(gpu_id: str) -> dict[str, Any] | None:
    """The kernel measurements for ``gpu_id`` as a dict (keys gemm, attn_prefill, ...), or None."""
    path = measurement_file(gpu_id)
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ClusterSimError(f"cannot read measurements {path}: {exc}") from None
    return data if isinstance(data, dict) else None


def gemm_errors(profile: Any, measurements: Mapping[str, Any], min_m: int = 512) -> dict[str, tuple[int, float]]:
    """Per dtype: (points, mean absolute % error) of the profile's GEMM time against measured GEMMs
    with M >= ``min_m`` (the range the validation tests hold the profile to)."""
    from hwmodels.dtypes import normalize_dtype

    errs: dict[str, list[float]] = {}
    for r in measurements.get("gemm", []):
        if r["M"] < min_m:
            continue
        d = normalize_dtype(r["dtype"])
        if not profile.peak_tflops.get(d):
            continue
        pred = profile.gemm_time(r["M"], r["N"], r["K"], d)
        errs.setdefault(d, []).append(abs(pred - r["ms"] / 1e3) / (r["ms"] / 1e3))
    return {d: (len(v), sum(v) / len(v)) for d, v in errs.items() if v}
