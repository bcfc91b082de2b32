"""Published training throughput of open training stacks (llm-foundry, torchtitan, fms-fsdp, TinyLlama, NeMo,
Megatron-Bridge) on A100/H100, each row with its source and verbatim quote (``data/validation/real_stacks.csv``;
``docs/research/real-stack-measurements.md`` describes every source and the rows left out).

Each row runs under the stack preset its framework corresponds to (:data:`STACK_OF`); nothing is fitted per
row. Rows that cannot be simulated as published (ALiBi positions, layer counts that do not split over the
published pipeline, figures whose configuration could not be checked) are reported as skipped with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from hwmodels.errors import ClusterSimError
from simulator.core.config import load_config
from simulator.core.resources import read_table
from simulator.training.simulate import simulate_training
from simulator.validation.tables import Comparison

__all__ = ["STACK_OF", "real_stack_config", "real_stacks"]

TABLE = "real-stacks"

#: The stack preset each source's framework runs as (simulator/stacks/presets). torchtitan under
#: torch.compile keeps FSDP2's bf16 parameters, so it has no per-forward weight casts.
STACK_OF: dict[str, str | dict[str, Any]] = {
    "llm-foundry": "fsdp-bf16",
    "pytorch-eager": "fsdp-bf16",
    "torch-compile": {"name": "torch-compile-fsdp", "base": "torch-compile", "kernels": {"weights": []}},
    "megatron-te": "megatron-te",
    "megatron-2021": "megatron-2021",
    "deepspeed-zero": "deepspeed-zero",
}

#: The GPU, node and power limit (W, None = the GPU's) each row's hardware names. torchtitan's H100 rows ran on
#: Grand Teton H100 with 96 GB HBM2e at their default 500 W limit (the source's hardware note): modelled as an
#: H100 SXM5 capped at 500 W; its lower HBM bandwidth (2.4 vs 3.35 TB/s) is not modelled.
_HARDWARE: dict[str, tuple[str, str, float | None]] = {
    "h100-sxm": ("h100-sxm5-80gb", "dgx-h100", None),
    "h100-96gb-hbm2e-500w": ("h100-sxm5-80gb", "dgx-h100", 500.0),
    "a100-sxm-80gb": ("a100-sxm4-80gb", "dgx-a100", None),
    "a100-sxm-40gb": ("a100-sxm4-40gb", "dgx-a100-40gb", None),
}

#: Rows whose configuration the collecting research could not check against the source (see the doc).
_UNVERIFIED_PREFIX = "megatronlm-readme"


def _model(r: dict[str, str]) -> dict[str, Any]:
    """The row's architecture as an inline model (MPT: LayerNorm, biases, tied embeddings; Llama: RMSNorm)."""
    mpt = r["model"].startswith("mpt")
    return {
        "name": r["model"],
        "source": f"{r['source']} ({r['url']})",
        "num_layers": int(r["num_layers"]),
        "hidden_size": int(r["hidden_size"]),
        "num_attention_heads": int(r["num_heads"]),
        "num_kv_heads": int(r["num_kv_heads"]),
        "ffn_hidden_size": int(r["ffn_hidden_size"]),
        "vocab_size": int(r["vocab_size"]),
        "mlp": r["mlp"],
        "position": r["position"],
        "norm": "layernorm" if mpt or r["mlp"] == "gelu" else "rmsnorm",
        "bias": mpt,
        "tied_embeddings": mpt,
        "max_seq_len": int(r["seq_len"]),
    }


def _parallel(text: str, gpus: int) -> dict[str, Any]:
    """``fsdp-full-shard``, ``fsdp4-cp2``, ``fsdp32-tp8``, ``tp4-pp4-vp20-dp4``, ``cp2-dp4`` ... as a plan."""
    dims = {k: int(v) for k, v in re.findall(r"\b(tp|pp|vp|cp|dp|fsdp)(\d+)", text)}
    tp, pp, cp = dims.get("tp", 1), dims.get("pp", 1), dims.get("cp", 1)
    fsdp = "fsdp" in text
    plan: dict[str, Any] = {"tp": tp, "pp": pp, "cp": cp, "dp": gpus // (tp * pp * cp), "sp": tp > 1}
    plan["zero"] = 3 if fsdp else (1 if "zero1" in text or "dp" in dims else 0)
    if dims.get("vp", 1) > 1:
        plan.update(vpp=dims["vp"], schedule="interleaved")
    return plan


def real_stack_config(r: dict[str, str]) -> dict[str, Any]:
    """The run config of one published row."""
    if r["id"].startswith(_UNVERIFIED_PREFIX):
        raise ClusterSimError("configuration not checked against the source (docs/research/real-stack-measurements.md)")
    if r["position"] not in ("rope", "learned"):
        raise ClusterSimError(f"{r['position']} positions are not modelled")
    gpus = int(r["num_gpus"])
    plan = _parallel(r["parallelism"], gpus)
    mb = int(r["micro_batch"] or 1)
    gb = int(r["global_batch"] or mb * plan["dp"])
    recompute = {"true": "full", "selective": "selective"}.get(r["activation_checkpointing"], "none")
    stack = STACK_OF[r["stack"]] if r["compile"] != "true" else STACK_OF["torch-compile"]
    gpu, node, limit = _HARDWARE[r["gpu"]]
    power = {"power": {"power_limit_w": limit}} if limit else {}
    return {
        **power,
        "model": _model(r),
        "stack": stack,
        "cluster": {"gpu": gpu, "node": node, "num_gpus": gpus},
        "parallel": plan,
        "training": {
            "seq_len": int(r["seq_len"]),
            "global_batch": gb,
            "micro_batch": mb,
            "precision": "fp8" if r["precision"] == "fp8" else "bf16",
            "recompute": recompute,
        },
    }


def _predict(r: dict[str, str], cfg: dict[str, Any], profile: Any) -> float:
    res = simulate_training(load_config(cfg), profile)
    t = cfg["training"]
    if r["metric"] == "step_time_s":
        return res.step_time_s
    return t["global_batch"] * t["seq_len"] / res.step_time_s / cfg["cluster"]["num_gpus"]


def real_stacks(
    profile: Any = None, rows: int | None = None, progress: Callable[[int, int], None] | None = None
) -> tuple[list[Comparison], list[tuple[str, str]]]:
    """Predicted vs published throughput for every row that can be simulated, and (id, reason) of the rest."""
    data = [r for r in read_table("real_stacks.csv") if r["metric"] in ("tokens_per_s_per_gpu", "step_time_s")]
    data = data[:rows]
    out: list[Comparison] = []
    skipped: list[tuple[str, str]] = []
    for i, r in enumerate(data):
        try:
            cfg = real_stack_config(r)
            predicted = _predict(r, cfg, profile)
        except ClusterSimError as exc:
            skipped.append((r["id"], str(exc)))
        else:
            unit = "s/step" if r["metric"] == "step_time_s" else "tokens/s/GPU"
            out.append(Comparison(TABLE, r["id"], float(r["value"]), predicted, unit, cfg))
        if progress:
            progress(i + 1, len(data))
    return out, skipped
