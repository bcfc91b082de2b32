"""Published LLM serving benchmarks (vLLM, SGLang, TensorRT-LLM) as a validation table.

The rows live in ``data/validation/serving_published.csv`` (one published number per row, with its source, URL,
verbatim quote and notes; ``docs/research/serving-benchmarks.md``). Each simulable row becomes a serving config:
the engine and its version pick a stack preset (:data:`ENGINE_PRESETS`), the dataset a length model (``fixed`` /
``random`` = exact lengths, ``sharegpt`` = the bundled ShareGPT description), the load an arrival process
(Poisson at ``request_rate``, everything at once for ``inf``, a closed loop of ``max_concurrency`` clients), and
the few server options a row's notes state (:data:`NOTE_OPTIONS`). Nothing is fitted per row; rows that share a
run share one simulation. Rows the simulator cannot run (engine without a preset, unknown GPU or model, a
dataset without a length model) are returned as skipped with the reason.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hwmodels.catalogue import get_gpu
from hwmodels.errors import ClusterSimError
from simulator.core.resources import data_text
from simulator.models import get_model
from simulator.validation.tables import Comparison

__all__ = [
    "COLUMNS",
    "ENGINE_PRESETS",
    "FAMILIES",
    "MAX_REQUESTS",
    "NOTE_OPTIONS",
    "TABLE",
    "family",
    "read_rows",
    "row_config",
    "serving_report",
    "summary_by_family",
]

TABLE = "serving"
FILENAME = "serving_published.csv"
COLUMNS = [
    *("id", "source", "url", "quote", "engine", "engine_version", "gpu", "num_gpus", "tp", "model", "dataset"),
    *("input_tokens", "output_tokens", "num_requests", "request_rate", "max_concurrency", "metric", "value"),
    *("unit", "notes"),
]
#: Metric -> (family, unit); families are what MAPE is reported over.
METRICS: dict[str, tuple[str, str]] = {
    "throughput_requests_per_s": ("throughput", "req/s"),
    "output_tokens_per_s": ("throughput", "tok/s"),
    "total_tokens_per_s": ("throughput", "tok/s"),
    "ttft_mean_s": ("TTFT", "s"),
    "ttft_median_s": ("TTFT", "s"),
    "ttft_p99_s": ("TTFT", "s"),
    "tpot_mean_s": ("TPOT/ITL", "s"),
    "tpot_median_s": ("TPOT/ITL", "s"),
    "itl_mean_s": ("TPOT/ITL", "s"),
    "itl_median_s": ("TPOT/ITL", "s"),
    "e2e_mean_s": ("E2E", "s"),
    "e2e_median_s": ("E2E", "s"),
    "e2e_p99_s": ("E2E", "s"),
}
FAMILIES = ("E2E", "TTFT", "TPOT/ITL", "throughput")
#: Requests simulated per run at most (a row asking for more is simulated with this many, which changes
#: steady-state figures little; rows whose figure depends on the count, all-at-once latencies, are not capped).
MAX_REQUESTS = 2000
SEED = 0
#: Random workloads smaller than this are simulated again with the next seeds (at most MAX_SEEDS runs).
MIN_SAMPLED = 600
MAX_SEEDS = 5


def _version(text: str) -> tuple[int, ...] | None:
    m = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(g or 0) for g in m.groups()) if m else None


#: engine -> [(first version, preset)], newest first, and the preset of a row whose version is not stated
#: (:data:`UNVERSIONED`). vLLM: V1 became the default engine in v0.8.0 and async scheduling the default after PR
#: #27614 (taken as v0.12.0); SGLang: the overlap scheduler arrived in v0.4.0 (lmsys.org blog, 2024-12-04).
ENGINE_PRESETS: dict[str, list[tuple[tuple[int, ...], str]]] = {
    "vllm": [((0, 12, 0), "vllm-async"), ((0, 8, 0), "vllm"), ((0,), "vllm-v0")],
    "sglang": [((0, 4, 0), "sglang"), ((0,), "sglang-sync")],
    "tensorrt-llm": [((0,), "tensorrt-llm")],
}
#: engine -> the preset of a row that states no version: the engine's default stack preset.
UNVERSIONED = {"vllm": "vllm", "sglang": "sglang", "tensorrt-llm": "tensorrt-llm"}


def engine_preset(engine: str, version: str) -> str:
    """The stack preset that runs ``engine`` at ``version`` (ClusterSimError for an engine without one)."""
    presets = ENGINE_PRESETS.get(engine.strip().lower())
    if presets is None:
        raise ClusterSimError(f"engine {engine!r} has no serving preset ({', '.join(ENGINE_PRESETS)})")
    v = _version(version)
    if v is None:
        return UNVERSIONED[engine.strip().lower()]
    return next(name for first, name in presets if v >= first)


#: Server options a row's notes state, as (pattern, what it sets): vLLM multi-step scheduling, TRT-LLM's padded
#: CUDA graphs of trtllm-bench, vLLM V0's chunked prefill (on by default only above a 32K context).
NOTE_OPTIONS = {
    "num_scheduler_steps": r"--num-scheduler-steps[ =](\d+)",
    "max_model_len": r"--max[-_]model[-_]len[ =](\d+)",
    "graph_padding_to": r"enable_padding true, batch sizes 1\.\.(\d+)",
}


def read_rows(path: str | Path | None = None) -> list[dict[str, str]]:
    """Every row of the table (``#`` comment lines skipped), checked for the expected columns."""
    text = Path(path).read_text(encoding="utf-8-sig") if path else data_text(f"validation/{FILENAME}", "utf-8-sig")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise ClusterSimError(f"{path or FILENAME}: missing column(s) {', '.join(missing)}")
    rows = list(reader)
    for i, r in enumerate(rows, start=1):
        if None in r or any(v is None for v in r.values()):
            raise ClusterSimError(f"{path or FILENAME} row {i} ({r.get('id') or '?'}): wrong number of fields")
        if r["metric"] not in METRICS:
            raise ClusterSimError(f"row {r['id']}: unknown metric {r['metric']!r}; use one of {', '.join(METRICS)}")
        try:
            value = float(r["value"])
        except ValueError:
            raise ClusterSimError(f"row {r['id']}: value {r['value']!r} is not a number") from None
        if not value > 0 or not math.isfinite(value):
            raise ClusterSimError(f"row {r['id']}: value {r['value']!r} must be a positive number")
    return rows


def _int(r: dict[str, str], key: str, default: int | None = None) -> int | None:
    text = r[key].strip()
    if not text:
        return default
    try:
        return int(float(text))
    except ValueError:
        raise ClusterSimError(f"row {r['id']}: {key}={text!r} is not a number") from None


_MODEL_ALIASES = ((r"^llama-?3(\.[13])?-(\d+b)$", r"llama3-\2"), (r"^llama-?2-(\d+b)$", r"llama2-\1"))


def _model(name: str) -> str:
    """A catalogue model name for a row's model (HF ids: organisation, -Instruct/-hf/-FP8 suffixes dropped;
    Llama 3.1/3.3 are the Llama 3 architecture)."""
    key = name.strip().split("/")[-1].lower()
    key = re.sub(r"^meta-", "", key)
    key = re.sub(r"(-instruct|-chat|-hf|-fp8|-it)+$", "", key)
    for pattern, repl in _MODEL_ALIASES:
        key = re.sub(pattern, repl, key)
    get_model(key)  # raises for a model the catalogue lacks
    return key


def _options(notes: str) -> dict[str, int]:
    return {k: int(m.group(1)) for k, p in NOTE_OPTIONS.items() if (m := re.search(p, notes))}


def row_config(r: dict[str, str]) -> dict[str, Any]:
    """The serving config of one row (ClusterSimError, with the reason, for a row that cannot be simulated)."""
    preset = engine_preset(r["engine"], r["engine_version"])
    gpu = get_gpu(r["gpu"]).id
    model = _model(r["model"])
    tp = _int(r, "tp", 1) or 1
    gpus = _int(r, "num_gpus", tp) or tp
    if gpus % tp:
        raise ClusterSimError(f"num_gpus={gpus} is not a multiple of tp={tp}")
    n = _int(r, "num_requests", 1000) or 1000
    rate = r["request_rate"].strip().lower()
    conc = _int(r, "max_concurrency")
    if rate in ("", "inf"):
        arrivals: dict[str, Any] = {"kind": "concurrency", "max_concurrency": conc or n}
    else:
        try:
            per_s = float(rate)
        except ValueError:
            raise ClusterSimError(f"request_rate={rate!r} is not a number or inf") from None
        arrivals = (
            {"kind": "concurrency", "max_concurrency": conc, "rate_per_s": per_s}
            if conc
            else {"kind": "poisson", "rate_per_s": per_s}
        )
    throughput = METRICS[r["metric"]][0] == "throughput"
    if n > MAX_REQUESTS and (throughput or rate not in ("", "inf") or conc):
        n = MAX_REQUESTS
    dataset = r["dataset"].strip().lower()
    if dataset in ("fixed", "random"):
        isl, osl = _int(r, "input_tokens"), _int(r, "output_tokens")
        if not isl or not osl:
            raise ClusterSimError(f"dataset {dataset} needs input_tokens and output_tokens")
        lengths: dict[str, Any] = {"kind": "fixed", "prompt_tokens": isl, "output_tokens": osl}
    elif dataset == "sharegpt":
        lengths = {"kind": "sharegpt"}
    else:
        raise ClusterSimError(f"dataset {dataset!r} has no length model (fixed, random, sharegpt)")
    notes = r["notes"]
    cfg: dict[str, Any] = {
        "model": model,
        "gpu": gpu,
        "tp": tp,
        "replicas": gpus // tp,
        "stack": preset,
        "weight_dtype": "fp8" if re.search(r"\bfp8\b", f"{r['model']} {notes}", re.I) else "bf16",
        "workload": {"num_requests": n, "arrivals": arrivals, "lengths": lengths},
        "seed": SEED,
    }
    _apply_options(cfg, _options(notes))
    return cfg


def _apply_options(cfg: dict[str, Any], opts: dict[str, int]) -> None:
    """Put the server options a row states into its config (over the engine preset's defaults)."""
    if not opts:
        return
    from simulator.serving.config import ServingConfig

    if "max_model_len" in opts or "num_scheduler_steps" in opts:
        batching = dict(ServingConfig.model_validate(cfg).batching.model_dump())
        if "num_scheduler_steps" in opts and "num_scheduler_steps" in batching:
            batching["num_scheduler_steps"] = opts["num_scheduler_steps"]
        if "max_model_len" in opts and batching.get("kind") == "continuous":
            # vLLM V0: max_num_batched_tokens = max(max_model_len, 2048) without chunked prefill
            batching["max_num_batched_tokens"] = max(opts["max_model_len"], 2048)
        cfg["batching"] = batching
    if "graph_padding_to" in opts:
        cfg["stack"] = {
            "base": cfg["stack"],
            "name": f"{cfg['stack']}-padded-graphs",
            "serving": {"cuda_graph_sizes": list(range(1, opts["graph_padding_to"] + 1)), "cuda_graph_padding": True},
        }


def _seeds(cfg: dict[str, Any]) -> int:
    """Seeds a run is averaged over: a small random sample (Poisson arrivals, ShareGPT lengths) is repeated with
    other seeds until about :data:`MIN_SAMPLED` requests are simulated, so one draw's luck does not set the error."""
    wl = cfg["workload"]
    random = wl["arrivals"]["kind"] == "poisson" or wl["lengths"]["kind"] != "fixed"
    return max(1, min(MAX_SEEDS, math.ceil(MIN_SAMPLED / wl["num_requests"]))) if random else 1


def family(metric: str) -> str:
    """The metric family a metric's error counts toward (E2E, TTFT, TPOT/ITL, throughput)."""
    return METRICS[metric][0]


def _itl_median(res: Any) -> float:
    """Median gap between tokens over every decoded token: each decode in an iteration waits that iteration."""
    timeline = getattr(res, "timeline", None)
    if timeline is None or not len(timeline):
        return res.tpot_s.p50
    spans, weights = [], []
    for e in timeline.events:
        m = re.search(r"d(\d+)", str(e[4]))
        if m and int(m.group(1)):
            spans.append(e[1] - e[0])
            weights.append(int(m.group(1)))
    if not spans:
        return res.tpot_s.p50
    order = np.argsort(spans)
    cum = np.cumsum(np.asarray(weights)[order])
    return float(np.asarray(spans)[order][np.searchsorted(cum, cum[-1] / 2)])


def predict(metric: str, res: Any) -> float:
    """The row's metric as clustersim predicts it from a serving result."""
    req = res.requests
    out = req["output_tokens"].to_numpy()
    if metric == "throughput_requests_per_s":
        return res.throughput_requests_per_s
    if metric == "output_tokens_per_s":
        return res.throughput_tokens_per_s
    if metric == "total_tokens_per_s":
        return float(req["prompt_tokens"].sum() + out.sum()) / res.duration_s
    if metric == "itl_mean_s":  # every token gap after the first, over all requests
        gaps = (req["e2e_s"] - req["ttft_s"]).to_numpy()
        return float(gaps.sum() / max(1, int((out - 1).clip(min=0).sum())))
    if metric == "itl_median_s":
        return _itl_median(res)
    name, stat = metric[: metric.index("_")], metric.split("_")[1]
    pct = getattr(res, f"{name}_s")
    return {"mean": pct.mean, "median": pct.p50, "p99": pct.p99}[stat]


@dataclass(frozen=True)
class Report:
    """What ``validate serving`` prints: the comparisons, the rows left out and why, each row's preset."""

    comparisons: list[Comparison]
    skipped: list[tuple[str, str]]
    rows: dict[str, dict[str, str]]
    presets: dict[str, str]


def serving_report(
    path: str | Path | None = None,
    profile: Any = None,
    progress: Callable[[int, int], None] | None = None,
    only: Iterable[str] | None = None,
) -> Report:
    """Predicted vs published figures of every simulable row, and (id, reason) of the rows left out."""
    from simulator.serving import simulate_serving

    rows = read_rows(path)
    if only is not None:
        keep = set(only)
        rows = [r for r in rows if r["id"] in keep]
    configs: dict[str, dict[str, Any]] = {}
    skipped: list[tuple[str, str]] = []
    for r in rows:
        try:
            configs[r["id"]] = row_config(r)
        except ClusterSimError as exc:
            skipped.append((r["id"], str(exc)))
    runs: dict[str, Any] = {}
    keys = {rid: json.dumps(cfg, sort_keys=True) for rid, cfg in configs.items()}
    unique = list(dict.fromkeys(keys.values()))
    for i, key in enumerate(unique):
        cfg = json.loads(key)
        try:
            runs[key] = [simulate_serving({**cfg, "seed": SEED + k}, profile) for k in range(_seeds(cfg))]
        except ClusterSimError as exc:
            runs[key] = exc
        if progress:
            progress(i + 1, len(unique))
    out: list[Comparison] = []
    presets: dict[str, str] = {}
    for r in rows:
        key = keys.get(r["id"])
        if key is None:
            continue
        res = runs[key]
        if isinstance(res, ClusterSimError):
            skipped.append((r["id"], str(res)))
            continue
        stack = configs[r["id"]]["stack"]
        presets[r["id"]] = stack if isinstance(stack, str) else stack["base"]
        unit = METRICS[r["metric"]][1]
        predicted = float(np.mean([predict(r["metric"], x) for x in res]))
        out.append(Comparison(TABLE, r["id"], float(r["value"]), predicted, unit, configs[r["id"]]))
    return Report(out, skipped, {r["id"]: r for r in rows}, presets)


def summary_by_family(report: Report) -> dict[str, dict[str, float]]:
    """Rows, MAPE and mean signed error of each metric family that has rows."""
    out: dict[str, dict[str, float]] = {}
    for fam in FAMILIES:
        errs = [c.error for c in report.comparisons if family(report.rows[c.label]["metric"]) == fam]
        if errs:
            out[fam] = {
                "rows": len(errs),
                "mape": float(np.mean(np.abs(errs))),
                "mean_signed_error": float(np.mean(errs)),
            }
    return out
