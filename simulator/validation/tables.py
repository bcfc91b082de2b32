"""Validation against published training measurements (Megatron-LM SC'21, vTrain MICRO'24).

Every row is simulated with the same hardware profile and global settings; what a table leaves
unpublished (Megatron's micro-batch size and interleaving) is chosen by one rule for all rows:
the fastest plan that fits in memory, as the paper's authors tuned them. The framework setup of
each dataset (precision, attention implementation, recompute, gradient-sync overlap) comes from
the paper or the code that produced it, never from a row's result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hwmodels.errors import ClusterSimError
from simulator.core.config import load_config
from simulator.core.resources import read_table
from simulator.training import TrainingResult, simulate_training

TABLES = ("megatron-table1", "megatron-table2", "vtrain-single", "vtrain-multi", "deepseek-v3")


@dataclass(frozen=True)
class Comparison:
    """One published figure and clustersim's prediction of it."""

    table: str
    label: str
    published: float
    predicted: float
    unit: str
    config: dict[str, Any] = field(repr=False, default_factory=dict)
    note: str = ""  # a caveat printed with the row (e.g. its simulated plan does not fit in memory)

    @property
    def error(self) -> float:
        """Signed relative error, (predicted - published) / published."""
        return (self.predicted - self.published) / self.published


def gpt_spec(name: str, layers: int, hidden: int, heads: int, vocab: int, seq: int) -> dict[str, Any]:
    """A GPT-2/3-style model (LayerNorm, learned positions, 4h GELU MLP, biases, tied embeddings)."""
    return {
        "name": name,
        "source": "GPT architecture as in Megatron-LM / Megatron-DeepSpeed (Brown et al. 2020)",
        "num_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "ffn_hidden_size": 4 * hidden,
        "mlp": "gelu",
        "vocab_size": vocab,
        "tied_embeddings": True,
        "norm": "layernorm",
        "bias": True,
        "position": "learned",
        "max_seq_len": seq,
    }


# The SC'21 and vTrain runs were measured on eager PyTorch Megatron stacks: the unfused softmax attention path,
# the DP all-reduce after the backward pass and two host-side costs fitted once to vTrain's single-node runs
# (benchmarks/fit_validation_globals.py; README). Those live in the stack preset; the runs' own settings are
# fp16 and full activation checkpointing.
#: The stack the published runs were measured on (simulator/stacks/presets/megatron-2021.yaml); a name or a mapping.
VALIDATION_STACK: str | dict[str, Any] = "megatron-2021"
MEGATRON_2021 = {"precision": "fp16", "recompute": "full"}
VTRAIN = {**MEGATRON_2021}  # Megatron-DeepSpeed fp16, checkpointing on (DDP bucketing off: the stack)
DGX_A100 = {"gpu": "a100-sxm4-80gb", "node": "dgx-a100"}


def megatron_flops(spec: dict[str, Any], batch: int, seq: int) -> float:
    """The paper's FLOPs per iteration, F = 96 B s l h^2 (1 + s/6h + V/(16 l h)) (counts recompute)."""
    n, h, v = spec["num_layers"], spec["hidden_size"], spec["vocab_size"]
    return 96.0 * batch * seq * n * h * h * (1 + seq / (6 * h) + v / (16 * n * h))


def _fastest(candidates: Iterable[dict[str, Any]], profile: Any) -> tuple[dict[str, Any], TrainingResult]:
    best: tuple[dict[str, Any], TrainingResult] | None = None
    fallback = None
    for cfg in candidates:
        try:
            res = simulate_training(load_config(cfg), profile)
        except ClusterSimError:
            continue
        if fallback is None or res.step_time_s < fallback[1].step_time_s:
            fallback = (cfg, res)
        if res.fits_in_memory and (best is None or res.step_time_s < best[1].step_time_s):
            best = (cfg, res)
    if best is None and fallback is None:
        raise ClusterSimError("no candidate plan is valid for this row")
    return best or fallback  # type: ignore[return-value]


def _megatron_row_candidates(spec: dict, tp: int, pp: int, dp: int, gb: int) -> list[dict[str, Any]]:
    out = []
    for mb in (1, 2, 4, 8):
        if gb % (mb * dp):
            continue
        m = gb // (mb * dp)
        schedules = [("1f1b", 1)]
        if pp > 1 and m % pp == 0 and spec["num_layers"] % (2 * pp) == 0:
            schedules.append(("interleaved", 2))
        for sched, vpp in schedules:
            out.append(
                {
                    "model": spec,
                    "stack": VALIDATION_STACK,
                    "cluster": {**DGX_A100, "num_gpus": tp * pp * dp},
                    "parallel": {"tp": tp, "pp": pp, "dp": dp, "vpp": vpp, "schedule": sched},
                    "training": {"seq_len": 2048, "global_batch": gb, "micro_batch": mb, **MEGATRON_2021},
                }
            )
    return out


def megatron_table1(profile: Any = None, rows: int | None = None) -> list[Comparison]:
    """Weak scaling, GPT 1.7B-1T on 32-3,072 A100: TFLOP/s per GPU."""
    out = []
    for r in read_table("megatron_sc21_table1.csv")[:rows]:
        spec = gpt_spec(f"gpt-{r['params_b']}b", int(r["layers"]), int(r["hidden"]), int(r["heads"]), 51200, 2048)
        tp, pp, dp, gb = int(r["tp"]), int(r["pp"]), int(r["dp"]), int(r["global_batch"])
        cfg, res = _fastest(_megatron_row_candidates(spec, tp, pp, dp, gb), profile)
        tflops = megatron_flops(spec, gb, 2048) / res.step_time_s / res.num_gpus / 1e12
        label = (
            f"{r['params_b']}B tp{tp} pp{pp} dp{dp} ({cfg['training']['micro_batch']}, {cfg['parallel']['schedule']})"
        )
        out.append(Comparison("megatron-table1", label, float(r["tflops_per_gpu"]), tflops, "TFLOP/s/GPU", cfg))
    return out


_TABLE2_SHAPES = {"174.6": (96, 12288, 96), "529.6": (105, 20480, 128)}


def table2_config(r: dict[str, str]) -> dict[str, Any]:
    """The config of one Megatron SC'21 Table 2 row (GPT shape, DGX A100 cluster, the paper's plan and stack)."""
    layers, hidden, heads = _TABLE2_SHAPES[r["params_b"]]
    spec = gpt_spec(f"gpt-{r['params_b']}b", layers, hidden, heads, 51200, 2048)
    gpus, tp, pp, mb, gb = (int(r[k]) for k in ("gpus", "tp", "pp", "micro_batch", "global_batch"))
    return {
        "model": spec,
        "stack": VALIDATION_STACK,
        "cluster": {**DGX_A100, "num_gpus": gpus},
        "parallel": {"tp": tp, "pp": pp, "dp": gpus // (tp * pp), "zero": 3 if r["scheme"] == "zero3" else 1},
        "training": {"seq_len": 2048, "global_batch": gb, "micro_batch": mb, **MEGATRON_2021},
    }


def table2_row(scheme: str, params_b: str, gpus: int) -> dict[str, str]:
    """One row of Megatron SC'21 Table 2, e.g. ``table2_row("ptdp", "174.6", 1536)``."""
    for r in read_table("megatron_sc21_table2.csv"):
        if (r["scheme"], r["params_b"], int(r["gpus"])) == (scheme, params_b, gpus):
            return r
    raise KeyError(f"no Table 2 row {scheme} {params_b}B {gpus} GPUs")


def megatron_table2(profile: Any = None) -> list[Comparison]:
    """PTD-P vs ZeRO-3 (no model parallelism), GPT 175B and 530B: TFLOP/s per GPU."""
    out = []
    for r in read_table("megatron_sc21_table2.csv"):
        cfg = table2_config(r)
        gpus, gb = int(r["gpus"]), int(r["global_batch"])
        res = simulate_training(load_config(cfg), profile)
        tflops = megatron_flops(cfg["model"], gb, 2048) / res.step_time_s / gpus / 1e12
        label = f"{r['scheme']} {r['params_b']}B {gpus} GPUs"
        out.append(Comparison("megatron-table2", label, float(r["tflops_per_gpu"]), tflops, "TFLOP/s/GPU", cfg))
    return out


def _vtrain_config(r: dict[str, str], seq_key: str, nics: int | None) -> dict[str, Any]:
    h, heads, layers, seq = (int(r[k]) for k in ("hidden_size", "attention_heads", "layers", seq_key))
    tp, dp, pp = int(r["tensor_parallelism"]), int(r["data_parallelism"]), int(r["pipeline_parallelism"])
    cluster: dict[str, Any] = {**DGX_A100, "num_gpus": tp * dp * pp}
    if nics is not None:
        cluster["nics_per_node"] = nics
    return {
        "model": gpt_spec(f"gpt-h{h}-l{layers}", layers, h, heads, 50257, seq),
        "stack": VALIDATION_STACK,
        "cluster": cluster,
        "parallel": {"tp": tp, "pp": pp, "dp": dp},
        "training": {
            "seq_len": seq,
            "global_batch": int(r["global_batch"]),
            "micro_batch": int(r["micro_batch"]),
            **VTRAIN,
        },
    }


def _vtrain_label(r: dict[str, Any], p: dict[str, int], seen: dict[str, int]) -> str:
    """A unique row label: every dimension the table varies (model shape, sequence, batch, plan); a repeated
    measurement of the same setting gets ``#2``, ``#3`` (``seen`` counts the labels so far)."""
    label = (
        f"h{r['hidden_size']} a{r['attention_heads']} l{r['layers']} s{r['sequence_length']} "
        f"gb{r['global_batch']} mb{r['micro_batch']} tp{p['tp']} pp{p['pp']} dp{p['dp']}"
    )
    seen[label] = seen.get(label, 0) + 1
    return label if seen[label] == 1 else f"{label} #{seen[label]}"


def _vtrain(
    table: str,
    filename: str,
    nics: int | None,
    profile: Any,
    rows: int | None,
    progress: Callable[[int, int], None] | None,
) -> list[Comparison]:
    data = read_table(filename)[:rows]
    out = []
    seen: dict[str, int] = {}
    for i, r in enumerate(data):
        cfg = _vtrain_config(r, "sequence_length", nics)
        res = simulate_training(load_config(cfg), profile)
        label = _vtrain_label(r, cfg["parallel"], seen)
        out.append(Comparison(table, label, float(r["iteration_time_ms"]), res.step_time_s * 1e3, "ms", cfg))
        if progress:
            progress(i + 1, len(data))
    return out


def vtrain_single(profile: Any = None, rows: int | None = None, progress=None) -> list[Comparison]:
    """1,440 single-node Megatron-DeepSpeed runs on 1-8 A100: iteration time."""
    return _vtrain("vtrain-single", "vtrain_single_node.csv", None, profile, rows, progress)


def vtrain_multi(profile: Any = None, rows: int | None = None, progress=None) -> list[Comparison]:
    """109 multi-node runs on 64-512 A100 (800 Gb/s per node = 4 HDR NICs): iteration time."""
    return _vtrain("vtrain-multi", "vtrain_multi_node.csv", 4, profile, rows, progress)


#: DeepSeek-V3 technical report (arXiv 2412.19437): 2.664M H800 GPU-hours of pre-training for 14.8T
#: tokens, i.e. 180K GPU-hours per trillion tokens, on 2,048 H800 with PP16, EP64 over 8 nodes, ZeRO-1
#: DP, no TP, DualPipe, FP8 mixed precision, sequence length 4,096 and a batch of 15,360 sequences,
#: 20 SMs per GPU for communication, one multi-token-prediction module (in the model preset).
DEEPSEEK_V3 = {
    "model": "deepseek-v3",
    "cluster": {"gpu": "h800-sxm5-80gb", "num_gpus": 2048, "node": "hgx-h800"},
    # layers per stage: the report does not publish them; Megatron-Core's DeepSeek-V3 recipe counts the embedding
    # and the loss (with the MTP module) as layers of the first and last stage (--account-for-embedding-in-
    # pipeline-split, --account-for-loss-in-pipeline-split), which DualPipe puts on the same rank: 3 + 14 x 4 + 2
    "parallel": {
        "tp": 1,
        "pp": 16,
        "dp": 128,
        "ep": 64,
        "zero": 1,
        "schedule": "dualpipe",
        "layers_per_stage": [3] + [4] * 14 + [2],
    },
    "training": {
        "seq_len": 4096,
        "global_batch": 15360,
        "micro_batch": 1,
        "precision": "fp8",
        "recompute": "selective",
        "moe_dispatch_dtype": "fp8",
        "moe_node_dedup": True,
        "comm_sms": 20,  # report 3.2.2: 20 of the 132 SMs run the all-to-all kernels that overlap compute
        # report 3.2.3: recompute all RMSNorms and the MLA up-projections; 3.3.3: cache the MoE SwiGLU inputs
        # (in FP8) and recompute its output -- Megatron-Core's names for these recompute modules
        "recompute_modules": ["layernorm", "mla_up_proj", "moe_act"],
        "activation_cache_dtype": "fp8",  # 3.3.3: Linear inputs cached in FP8, attention output in E5M6
        "optimizer_moment_dtype": "bf16",  # 3.3.3: AdamW moments in BF16, master weights and grads in FP32
        "ema": "cpu",  # 3.2.3: the EMA of the weights lives in CPU memory, updated asynchronously
        "dropout": False,  # no dropout in the recipe (HF config.json: attention_dropout 0.0)
    },
    # node-limited routing: each token reaches experts on at most 4 of the 8 nodes of its EP group;
    # the auxiliary-loss-free bias keeps the experts balanced
    "moe_routing": {"source": {"kind": "group_limited", "groups": 8, "max_groups": 4}},
}
DEEPSEEK_V3_GPU_HOURS_PER_T = 180_000.0


def deepseek_v3(profile: Any = None) -> list[Comparison]:
    """DeepSeek-V3 pre-training on 2,048 H800: H800 GPU-hours per trillion tokens."""
    res = simulate_training(load_config(DEEPSEEK_V3), profile)
    tokens = DEEPSEEK_V3["training"]["global_batch"] * DEEPSEEK_V3["training"]["seq_len"]
    hours = res.num_gpus * res.step_time_s / 3600.0 * 1e12 / tokens
    return [
        Comparison(
            "deepseek-v3",
            "DeepSeek-V3 671B, 2,048 H800, PP16 EP64 DualPipe FP8",
            DEEPSEEK_V3_GPU_HOURS_PER_T,
            hours,
            "GPU-hours per 1T tokens",
            DEEPSEEK_V3,
        )
    ]


def report_rows(
    table: str,
    rows: list[dict[str, str]],
    predict: Callable[[dict[str, str]], tuple[float, dict[str, Any], str]],
    units: Mapping[str, str],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[Comparison], list[tuple[str, str]]]:
    """Every row of a published table predicted: ``predict(row)`` gives (value, config simulated, note); a
    ClusterSimError leaves the row out with its reason. Returns (comparisons, [(row id, reason)])."""
    out: list[Comparison] = []
    skipped: list[tuple[str, str]] = []
    for i, r in enumerate(rows):
        try:
            predicted, cfg, note = predict(r)
        except ClusterSimError as exc:
            skipped.append((r["id"], str(exc)))
        else:
            unit = units[r["metric"]]
            out.append(Comparison(table, f"{r['id']} ({unit})", float(r["value"]), predicted, unit, cfg, note))
        if progress:
            progress(i + 1, len(rows))
    return out, skipped


def summary(comparisons: list[Comparison]) -> dict[str, float]:
    """Mean absolute percentage error, max absolute error and mean signed error."""
    errs = [abs(c.error) for c in comparisons]
    return {
        "rows": len(comparisons),
        "mape": sum(errs) / len(errs),
        "max_abs_error": max(errs),
        "mean_signed_error": sum(c.error for c in comparisons) / len(comparisons),
    }
