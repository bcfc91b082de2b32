"""Published large-scale training runs (Llama 3 405B, MegaScale, Nemotron-4) as a validation table.

The rows live in ``data/validation/large_scale.csv``, each with its source, URL, verbatim quote and notes on what the
source leaves unstated (``docs/research/large-scale-runs.md``). Each simulable row runs under its stack preset with
nothing fitted per row; rows recorded but not simulated (another system's own optimisations) and rows whose config
does not validate are returned as skipped with the reason.

Metrics compare what the source published: iteration time directly; TFLOP/s per GPU and MFU with the source's FLOP
convention, 6N + 12LHQT per token (PaLM, Megatron's no-recompute formula): non-causal attention, head included,
recompute not counted, i.e. ``ModelSpec.flops_per_token(seq, training=True, causal=False)``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

from hwmodels.catalogue import get_gpu
from hwmodels.errors import ClusterSimError
from simulator.core.config import load_config
from simulator.core.resources import data_text
from simulator.training.simulate import simulate_training
from simulator.validation.tables import Comparison, report_rows

__all__ = ["TABLE", "UNITS", "large_scale", "large_scale_config", "large_scale_report", "large_scale_rows", "row_id"]

TABLE = "large-scale"
FILENAME = "large_scale.csv"
#: The unit each metric is compared in.
UNITS = {"step_time_s": "s/step", "tflops_per_gpu": "TFLOP/s/GPU", "mfu": "MFU"}
_MODEL_KEYS = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "ffn_hidden_size", "vocab_size")


def large_scale_rows() -> list[dict[str, str]]:
    """Every row of the table (``#`` comment lines skipped; quotes may hold commas)."""
    text = data_text(f"validation/{FILENAME}", encoding="utf-8-sig")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def _model(r: dict[str, str]) -> str | dict[str, Any]:
    """A preset name when the row names one without an architecture, else the row's inline architecture."""
    if not r["num_layers"]:
        return r["model"]
    n = {k: int(r[k]) for k in _MODEL_KEYS}
    return {
        "name": r["model"],
        "source": f"{r['source']} ({r['url']})",
        "num_layers": n["num_layers"],
        "hidden_size": n["hidden_size"],
        "num_attention_heads": n["num_heads"],
        "num_kv_heads": n["num_kv_heads"],
        "ffn_hidden_size": n["ffn_hidden_size"],
        "vocab_size": n["vocab_size"],
        "mlp": r["mlp"],
        "norm": r["norm"],
        "position": r["position"],
        "tied_embeddings": r["tied_embeddings"] == "true",
        "bias": False,
        "max_seq_len": int(r["seq_len"]),
    }


def _parallel(r: dict[str, str]) -> dict[str, Any]:
    plan: dict[str, Any] = {k: int(r[k]) for k in ("tp", "pp", "dp", "cp", "vpp", "zero")}
    plan["sp"] = r["sp"] == "true"
    if plan["vpp"] > 1:
        plan["schedule"] = "interleaved"
    if r["layers_per_stage"]:
        plan["layers_per_stage"] = [int(x) for x in r["layers_per_stage"].split(";")]
    return plan


#: ``recompute`` of a row whose source does not state it: the least activation recomputation with which the plan
#: fits in GPU memory (none, then selective, then full), as anyone running it would have to choose.
LEAST_THAT_FITS = "fit"
_RECOMPUTE_ORDER = ("none", "selective", "full")


def large_scale_config(r: dict[str, str]) -> dict[str, Any]:
    """The run config of one published row (raises ClusterSimError for a row recorded but not simulated).

    A row whose recompute the source leaves out (``recompute = fit``) gets the least recomputation that fits."""
    if r["skip"]:
        raise ClusterSimError(r["skip"])
    cfg = _row_config(r)
    if r["recompute"] == LEAST_THAT_FITS:
        cfg["training"]["recompute"] = least_recompute_that_fits(cfg)
    return cfg


def least_recompute_that_fits(cfg: dict[str, Any]) -> str:
    """The first of none, selective and full recomputation with which ``cfg`` fits in GPU memory (else full)."""
    for mode in _RECOMPUTE_ORDER:
        trial = {**cfg, "training": {**cfg["training"], "recompute": mode}}
        try:
            if simulate_training(trial).fits_in_memory:
                return mode
        except ClusterSimError:
            continue  # this mode cannot run the plan at all; try the next
    return _RECOMPUTE_ORDER[-1]


def _row_config(r: dict[str, str]) -> dict[str, Any]:
    return {
        "model": _model(r),
        "stack": r["stack"],
        "cluster": {"gpu": r["gpu"], "node": r["node"], "num_gpus": int(r["num_gpus"])},
        "parallel": _parallel(r),
        "training": {
            "seq_len": int(r["seq_len"]),
            "global_batch": int(r["global_batch"]),
            "micro_batch": int(r["micro_batch"]),
            "precision": r["precision"],
            "recompute": r["recompute"],
            "flash_attention": r["flash_attention"] == "true",
            "overlap_grad_reduce": r["overlap_dp"] == "true",
            "overlap_param_gather": r["overlap_dp"] == "true",
        },
    }


def _predict(r: dict[str, str], cfg: dict[str, Any], profile: Any) -> tuple[float, str]:
    """The row's metric as clustersim predicts it, in the source's FLOP convention, and a note when the simulated
    plan does not fit in GPU memory (the published run did: the memory model over-estimates it)."""
    run = load_config(cfg)
    res = simulate_training(run, profile)
    m = res.memory_per_gpu_gb
    note = "" if res.fits_in_memory else f"simulated plan needs {m.peak:.1f} GB of {m.capacity:.1f} GB; the run fit"
    if r["metric"] == "step_time_s":
        return res.step_time_s, note
    t = run.training
    flops = run.model.flops_per_token(t.seq_len, training=True, causal=False) * t.global_batch * t.seq_len
    per_gpu = flops / res.step_time_s / res.num_gpus
    if r["metric"] == "tflops_per_gpu":
        return per_gpu / 1e12, note
    return per_gpu / get_gpu(run.cluster.gpu).peak_flops(t.precision), note  # MFU over the datasheet dense peak


def _skip_reason(exc: ClusterSimError, cfg: dict[str, Any] | None) -> str:
    """Config errors about uneven pipeline stages name the missing mechanism; others pass through."""
    text = str(exc)
    if cfg and "layers_per_stage" in cfg["parallel"] and "layers_per_stage" in text:
        return "needs parallel.layers_per_stage"
    return text


def row_id(label: str) -> str:
    """The CSV row id of a comparison label (``"<id> (<unit>)"``)."""
    return label.split(" (")[0]


def large_scale_report(
    profile: Any = None, progress: Callable[[int, int], None] | None = None
) -> tuple[list[Comparison], list[tuple[str, str]]]:
    """Predicted vs published figures of every simulable row, and (id, reason) of the rows left out."""

    def predict(r: dict[str, str]) -> tuple[float, dict[str, Any], str]:
        cfg: dict[str, Any] | None = None
        try:
            cfg = large_scale_config(r)
            value, note = _predict(r, cfg, profile)
        except ClusterSimError as exc:
            raise ClusterSimError(_skip_reason(exc, cfg)) from None
        return value, cfg, note

    return report_rows(TABLE, large_scale_rows(), predict, UNITS, progress)


def large_scale(profile: Any = None, progress: Callable[[int, int], None] | None = None) -> list[Comparison]:
    """Predicted vs published figures of every simulable row (``large_scale_report`` also gives the skipped)."""
    return large_scale_report(profile, progress)[0]
