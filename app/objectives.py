"""What the trade-off explorer can put on its axes and colour: objectives read from a sweep's result rows.

Each :class:`Objective` reads one flat result row (the sweep frame's columns, named as
:func:`simulator.search.sweep.run.flat_metrics` names them) and says which way is better and how to show
it. Derived figures say how they are derived: training cost per million tokens is the step's cost (GPU-hours
x $/GPU-hour, :mod:`simulator.energy.pricing`) over the tokens of one step (tokens/s x step time). Kept free
of Streamlit so it can be unit-tested.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from simulator.search.pareto import pareto_front

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Objective:
    """A figure of merit: its column key, label, unit, direction and how to read it from a flat result row."""

    key: str
    label: str
    unit: str  #: "s", "GB", "%" (a 0-1 share shown as percent), "J", "$", "tCO2e", ...
    direction: Literal["min", "max"]
    read: Callable[[Row], float | None]
    help: str = ""

    def title(self) -> str:
        """Axis title: label, unit and which way is better."""
        unit = f" ({self.unit})" if self.unit and self.unit != "%" else " (%)" if self.unit == "%" else ""
        return f"{self.label}{unit}, {'lower' if self.direction == 'min' else 'higher'} is better"

    def value(self, row: Row) -> float:
        """The objective of ``row`` as a float (NaN when the result does not give it)."""
        try:
            out = self.read(row)
        except (KeyError, TypeError, ZeroDivisionError):
            return math.nan
        return float(out) if out is not None and _finite(out) else math.nan


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _col(name: str) -> Callable[[Row], Any]:
    return lambda r: r.get(name)


def _train_cost_per_mtok(r: Row) -> float:
    """$ per million trained tokens: the step's cost over its tokens (tokens/s x step time)."""
    return r["cost_usd"] / (r["tokens_per_s"] * r["step_time_s"]) * 1e6


def _serve_gco2e_per_mtok(r: Row) -> float:
    """gCO2e (operational + embodied) of the run per million output tokens."""
    return (r["kgco2e_operational"] + r.get("kgco2e_embodied", 0.0)) * 1e3 / r["output_tokens"] * 1e6


TRAINING: tuple[Objective, ...] = (
    Objective("step_time_s", "step time", "s", "min", _col("step_time_s")),
    Objective("tokens_per_s", "tokens/s", "tok/s", "max", _col("tokens_per_s")),
    Objective("peak_memory_gb", "peak memory per GPU", "GB", "min", _col("memory_per_gpu_gb_peak")),
    Objective("mfu", "MFU", "%", "max", _col("mfu")),
    Objective("bubble", "pipeline bubble", "%", "min", _col("bubble_fraction")),
    Objective("energy_per_token_j", "energy per token", "J", "min", _col("energy_per_token_j"), "facility J/token"),
    Objective(
        "cost_per_million_tokens_usd",
        "cost per million tokens",
        "$",
        "min",
        _train_cost_per_mtok,
        "step cost / tokens per step",
    ),
    Objective("tco2e_to_train", "tCO2e to train", "tCO2e", "min", _col("total_tco2e"), "needs training.tokens"),
    Objective("time_to_train_days", "time to train", "days", "min", _col("time_to_train_wall_days")),
    Objective("goodput", "goodput", "%", "max", _col("goodput_fraction"), "useful share of wall time"),
    Objective("exposed_dp_s", "exposed DP communication", "s", "min", _col("exposed_comm_s_dp")),
    Objective("exposed_ep_s", "exposed EP communication", "s", "min", _col("exposed_comm_s_ep")),
)

SERVING: tuple[Objective, ...] = (
    Objective("e2e_p99_s", "p99 end-to-end latency", "s", "min", _col("e2e_s_p99")),
    Objective("throughput_tokens_per_s", "output tokens/s", "tok/s", "max", _col("throughput_tokens_per_s")),
    Objective("ttft_p99_s", "p99 TTFT", "s", "min", _col("ttft_s_p99")),
    Objective("tpot_p99_s", "p99 TPOT", "s", "min", _col("tpot_s_p99")),
    Objective(
        "goodput_requests_per_s",
        "goodput",
        "req/s",
        "max",
        _col("goodput_requests_per_s"),
        "requests/s meeting the SLO",
    ),
    Objective("slo_attainment", "SLO attainment", "%", "max", _col("slo_attainment")),
    Objective(
        "energy_per_token_j", "energy per token", "J", "min", _col("energy_per_token_j"), "facility J/output token"
    ),
    Objective(
        "cost_per_million_tokens_usd", "cost per million tokens", "$", "min", _col("cost_per_million_output_tokens_usd")
    ),
    Objective("gco2e_per_million_tokens", "gCO2e per million tokens", "gCO2e", "min", _serve_gco2e_per_mtok),
    Objective("kv_peak_utilization", "peak KV-cache use", "%", "min", _col("kv_peak_utilization")),
)

OBJECTIVES: dict[str, dict[str, Objective]] = {
    "training": {o.key: o for o in TRAINING},
    "serving": {o.key: o for o in SERVING},
}
#: The default chart: training step time vs memory, serving p99 latency vs throughput.
DEFAULT_AXES = {"training": ("step_time_s", "peak_memory_gb"), "serving": ("e2e_p99_s", "throughput_tokens_per_s")}


def objective_columns(mode: str, row: Row) -> dict[str, float]:
    """Every objective of ``mode`` read from one flat result row, by key."""
    return {key: obj.value(row) for key, obj in OBJECTIVES[mode].items()}


def pareto_mask(
    points: Sequence[Sequence[float]], directions: Sequence[str], eligible: Sequence[bool] | None = None
) -> list[bool]:
    """Which points no other eligible point beats on every objective (``directions``: "min"/"max" each).

    A point with a missing (NaN) objective, or not ``eligible`` (a training plan that does not fit), is
    never on the front and never beats another.
    """
    if any(d not in ("min", "max") for d in directions):
        raise ValueError(f"directions must be min or max, got {list(directions)}")
    ok = [(eligible is None or bool(eligible[i])) and all(_finite(v) for v in p) for i, p in enumerate(points)]
    idx = [i for i, good in enumerate(ok) if good]
    mask = [False] * len(points)
    if not idx:
        return mask
    sub = pareto_front([[float(v) for v in points[i]] for i in idx], [d == "min" for d in directions])
    for i, on in zip(idx, sub, strict=True):
        mask[i] = bool(on)
    return mask
