"""Published host-memory training runs (ZeRO-Offload, ZeRO-3 Offload / ZeRO-Infinity, BytePS) as a validation table.

The rows live in ``data/validation/offload.csv``, each with its source, URL, verbatim quote and notes on what the source
leaves unstated. Each row runs under its stack preset with nothing fitted per row; ``batch_per_gpu: auto`` picks the
fastest micro-batch that fits GPU and host memory (one rule for every such row, as the authors tuned theirs).
``throughput_ratio`` rows simulate the row and its ``baseline`` variant and compare samples/s per GPU.
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
from simulator.training import TrainingResult, simulate_training
from simulator.validation.tables import Comparison, gpt_spec, megatron_flops, report_rows

__all__ = ["AUTO_BATCHES", "TABLE", "offload_config", "offload_report", "offload_rows", "offload_table"]

TABLE = "offload"
FILENAME = "offload.csv"
UNITS = {"tflops_per_gpu": "TFLOP/s/GPU", "mfu": "MFU", "throughput_ratio": "x"}
#: Micro-batches ``batch_per_gpu: auto`` tries (one micro-batch per step per GPU).
AUTO_BATCHES = (1, 2, 4, 8, 16, 32, 64)


def offload_rows() -> list[dict[str, str]]:
    """Every row of the table (``#`` comment lines skipped; quotes may hold commas)."""
    text = data_text(f"validation/{FILENAME}", encoding="utf-8-sig")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return list(csv.DictReader(io.StringIO("\n".join(lines))))


def offload_config(r: dict[str, str], batch: int) -> dict[str, Any]:
    """The run config of one row at ``batch`` sequences per GPU."""
    gpus = int(r["num_gpus"])
    cluster: dict[str, Any] = {"gpu": r["gpu"], "node": r["node"], "num_gpus": gpus}
    for key in ("gpus_per_node", "nics_per_node"):
        if r[key]:
            cluster[key] = int(r[key])
    if r["nic_link"]:
        cluster["nic_link"] = r["nic_link"]
    parallel: dict[str, Any] = {"dp": gpus, "zero": int(r["zero"]), "dp_mode": r["dp_mode"]}
    if r["dp_mode"] == "parameter_server":
        parallel["parameter_server"] = {"servers": int(r["ps_servers"]), "placement": r["ps_placement"]}
    seq = int(r["seq_len"])
    return {
        "model": gpt_spec(
            r["model"], int(r["num_layers"]), int(r["hidden_size"]), int(r["num_heads"]), int(r["vocab_size"]), seq
        ),  # fmt: skip
        "stack": r["stack"],
        "cluster": cluster,
        "parallel": parallel,
        "training": {
            "seq_len": seq,
            "global_batch": batch * gpus,
            "micro_batch": batch,
            "precision": r["precision"],
            "recompute": r["recompute"],
            "overlap_grad_reduce": True,
            "offload": {
                "optimizer": r["offload_optimizer"],
                "params": r["offload_params"],
                "activations": r["offload_activations"] == "true",
            },
        },
    }


def _run(r: dict[str, str], profile: Any) -> tuple[dict[str, Any], TrainingResult]:
    """The row's config and result: its batch, or with ``auto`` the fastest batch that fits."""
    batches = AUTO_BATCHES if r["batch_per_gpu"] == "auto" else (int(r["batch_per_gpu"]),)
    best: tuple[float, dict[str, Any], TrainingResult] | None = None
    for b in batches:
        cfg = offload_config(r, b)
        res = simulate_training(load_config(cfg), profile)
        rate = b / res.step_time_s
        if (res.fits_in_memory or len(batches) == 1) and (best is None or rate > best[0]):
            best = (rate, cfg, res)
    if best is None:
        raise ClusterSimError(f"row {r['id']}: no batch in {list(batches)} fits in memory")
    return best[1], best[2]


def _variant(r: dict[str, str]) -> dict[str, str]:
    """The row with its ``baseline`` column's ``column=value`` changes applied."""
    out = dict(r)
    for item in filter(None, (s.strip() for s in r["baseline"].split(";"))):
        key, _, value = item.partition("=")
        if key not in out:
            raise ClusterSimError(f"row {r['id']}: baseline sets unknown column {key!r}")
        out[key] = value
    return out


def _predict(r: dict[str, str], profile: Any) -> tuple[float, dict[str, Any]]:
    """The row's metric as clustersim predicts it, and the config it simulated."""
    cfg, res = _run(r, profile)
    batch = cfg["training"]["micro_batch"]
    if r["metric"] == "throughput_ratio":
        base_cfg, base = _run(_variant(r), profile)
        return (batch / res.step_time_s) / (base_cfg["training"]["micro_batch"] / base.step_time_s), cfg
    gpus = int(r["num_gpus"])
    per_gpu = megatron_flops(cfg["model"], batch * gpus, int(r["seq_len"])) / res.step_time_s / gpus
    if r["metric"] == "tflops_per_gpu":
        return per_gpu / 1e12, cfg
    return per_gpu / get_gpu(r["gpu"]).peak_flops(r["precision"]), cfg


def offload_report(
    profile: Any = None, progress: Callable[[int, int], None] | None = None
) -> tuple[list[Comparison], list[tuple[str, str]]]:
    """Predicted vs published figures of every row, and (id, reason) of rows whose config does not run."""

    def predict(r: dict[str, str]) -> tuple[float, dict[str, Any], str]:
        value, cfg = _predict(r, profile)
        return value, cfg, ""

    return report_rows(TABLE, offload_rows(), predict, UNITS, progress)


def offload_table(profile: Any = None) -> list[Comparison]:
    """Predicted vs published figures of every row (``offload_report`` also gives the rows left out)."""
    return offload_report(profile)[0]
