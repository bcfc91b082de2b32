"""The plan search's space: the values each plan dimension may take and the rules that prune a candidate.

Every rule here is an integer check from :class:`simulator.core.config.RunConfig` or the schedule registry;
each pruned candidate is counted under its reason (the ``R_*`` strings, keys of
:attr:`~simulator.search.plan.PlanSearchResult.pruned`). Duplicates -- sequence parallelism without TP,
ZeRO without data parallelism, a schedule without a pipeline -- are pruned too, counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, get_args

from hwmodels.errors import ClusterSimError
from simulator.core.config import TrainingSpec
from simulator.models import ModelSpec
from simulator.training.schedules import get_schedule, schedule_names

SCHEDULES: tuple[str, ...] = schedule_names()  # the registry, in registration order
RECOMPUTE: tuple[str, ...] = get_args(TrainingSpec.model_fields["recompute"].annotation)

# Prune reasons (keys of PlanSearchResult.pruned).
R_WORLD = "tp*pp*cp does not divide num_gpus"
R_TP_HEADS = "tp does not divide the attention heads"
R_TP_KV = "tp and the kv heads do not divide one another"
R_CP_SEQ = "cp does not divide seq_len"
R_PP_LAYERS = "pp*vpp exceeds num_layers"
R_EP = "ep does not divide the experts or dp*cp*tp"
R_EP_FIT = "the ep group (stride tp*cp) does not fit in num_gpus"
R_BATCH = "global_batch not divisible by micro_batch*dp"
R_SP = "duplicate: sp needs tp > 1"
R_PIPE = "duplicate: a pipeline schedule needs pp > 1"
R_ZERO = "duplicate: zero needs dp*cp > 1"
R_VPP_LAYERS = "interleaving needs num_layers divisible by pp*vpp"
R_OOM = "out of memory"
R_OFFLOAD_PARAMS = "weight offload needs zero=3"
R_OFFLOAD_ZERO = "optimizer offload needs zero >= 1 with dp*cp > 1"

#: Offload options the search tries (``training.offload`` of simulator.training.offload): none, the optimizer
#: state and its step on the CPU (ZeRO-Offload), and also the 16-bit weights on the CPU (ZeRO-3, ZeRO-Infinity).
OFFLOAD_SPECS: dict[str, dict[str, str]] = {
    "none": {},
    "optimizer": {"optimizer": "cpu"},
    "optimizer+params": {"optimizer": "cpu", "params": "cpu"},
}
OFFLOAD: tuple[str, ...] = tuple(OFFLOAD_SPECS)

#: (tp, pp, dp, cp, ep, sp, vpp, zero, schedule, micro_batch, recompute, offload): the order every tie is broken in.
PlanKey = tuple[int, int, int, int, int, bool, int, int, str, int, str, str]


def divisors(n: int) -> tuple[int, ...]:
    """Positive divisors of ``n`` in increasing order."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return tuple(sorted(set(small + [n // d for d in small])))


@dataclass(frozen=True)
class SearchSpace:
    """The values each plan dimension may take; ``None`` means every value the cluster and model allow.

    Defaults: tp, pp, cp over the divisors of the GPU count (dp is what remains), ep over the divisors of the
    routed experts (1 for dense models), micro-batch over the divisors of the per-replica batch, vpp over the
    divisors >= 2 of the layer count (interleaved schedule only).
    """

    tp: tuple[int, ...] | None = None
    pp: tuple[int, ...] | None = None
    cp: tuple[int, ...] | None = None
    ep: tuple[int, ...] | None = None
    micro_batch: tuple[int, ...] | None = None
    vpp: tuple[int, ...] | None = None
    schedule: tuple[str, ...] = SCHEDULES
    zero: tuple[int, ...] = (0, 1, 2, 3)
    recompute: tuple[str, ...] = RECOMPUTE
    sp: tuple[bool, ...] = (False, True)
    offload: tuple[str, ...] = ("none",)  # search_training_plans adds the others when nothing fits without them

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "cp", "ep", "micro_batch", "vpp"):
            values = getattr(self, name)
            if values is None:
                continue
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
                raise ClusterSimError(f"search space {name}={list(values)} must list positive integers")
            object.__setattr__(self, name, tuple(sorted(set(values))))  # a value listed twice counts once
        for name in ("schedule", "zero", "recompute", "sp", "offload"):
            object.__setattr__(self, name, tuple(dict.fromkeys(getattr(self, name))))
        if self.vpp is not None and min(self.vpp) < 2:
            raise ClusterSimError(f"search space vpp={list(self.vpp)}: interleaving degrees start at 2")
        checks = [
            ("schedule", SCHEDULES),
            ("recompute", RECOMPUTE),
            ("zero", (0, 1, 2, 3)),
            ("sp", (False, True)),
            ("offload", OFFLOAD),
        ]
        for name, allowed in checks:
            values = getattr(self, name)
            bad = [v for v in values if v not in allowed]
            if not values or bad:
                raise ClusterSimError(
                    f"search space {name}={list(values)}: choose from {', '.join(str(a) for a in allowed)}"
                )

    @classmethod
    def parse(cls, items: Iterable[str]) -> SearchSpace:
        """Build a space from ``key=v1,v2`` strings (the CLI's ``--space``), e.g. ``tp=4,8`` or ``sp=true``."""
        fields: dict[str, Any] = {}
        names = {f for f in cls.__dataclass_fields__}
        aliases = {"mb": "micro_batch", "micro-batch": "micro_batch"}
        for item in items:
            if "=" not in item:
                raise ClusterSimError(f"--space {item!r} is not key=v1,v2 (e.g. --space tp=4,8)")
            key, text = (s.strip() for s in item.split("=", 1))
            key = aliases.get(key, key)
            if key not in names:
                raise ClusterSimError(
                    f"--space {key!r} is not a plan dimension; use one of: {', '.join(sorted(names))}"
                )
            parts = [p.strip() for p in text.split(",") if p.strip()]
            try:
                if key in ("schedule", "recompute", "offload"):
                    values: tuple[Any, ...] = tuple(parts)
                elif key == "sp":
                    values = tuple({"true": True, "false": False, "1": True, "0": False}[p.lower()] for p in parts)
                else:
                    values = tuple(int(p) for p in parts)
            except (KeyError, ValueError):
                raise ClusterSimError(f"--space {item!r}: values must be integers (sp: true/false)") from None
            fields[key] = values
        return cls(**fields)


# ---- the values of a dimension ------------------------------------------------------------------


def options(values: tuple[int, ...] | None, limit: int) -> tuple[int, ...]:
    """A dimension's values: the given ones, or the divisors of what the other dimensions leave."""
    return values if values is not None else divisors(limit)


def micro_batches(space: SearchSpace, global_batch: int, dp: int) -> tuple[int, ...]:
    """Micro-batch sizes: the given ones, or the divisors of the per-replica batch."""
    return options(space.micro_batch, max(1, global_batch // dp))


def ep_options(space: SearchSpace, model: ModelSpec) -> tuple[int, ...]:
    """Expert-parallel degrees: the given ones, or the divisors of the routed experts (1 for dense models)."""
    if space.ep is not None:
        return space.ep
    return divisors(model.moe.num_experts) if model.moe is not None else (1,)


def schedule_variants(space: SearchSpace, num_layers: int) -> list[tuple[str, int]]:
    """(schedule, vpp) pairs: interleaved schedules with each virtual-stage degree, the others with vpp 1."""
    vpps = space.vpp if space.vpp is not None else tuple(d for d in divisors(num_layers) if d >= 2)
    out: list[tuple[str, int]] = []
    for s in space.schedule:
        out += [(s, v) for v in vpps] if get_schedule(s).interleaved else [(s, 1)]
    return out


def tasks(space: SearchSpace, num_gpus: int) -> list[tuple[int, int]]:
    """(tp, cp) pairs, the unit of parallel work; tp or cp that cannot divide the GPUs still count."""
    out = []
    for tp in options(space.tp, num_gpus):
        rest = num_gpus // tp if num_gpus % tp == 0 else 1
        for cp in options(space.cp, rest):
            out.append((tp, cp))
    return out


# ---- the prune rules, from the top of the loop nest down ----------------------------------------------


def pipeline_rule(model: ModelSpec, num_gpus: int, seq_len: int, tp: int, pp: int, cp: int) -> str | None:
    """Why no plan with this (tp, pp, cp) can run, or None: the GPU count, the heads, the sequence, the layers."""
    if num_gpus % (tp * pp * cp):
        return R_WORLD
    if num_gpus % tp or model.num_attention_heads % tp:
        return R_TP_HEADS
    if model.kv_heads % tp and tp % model.kv_heads:
        return R_TP_KV
    if seq_len % cp:
        return R_CP_SEQ
    if pp > model.num_layers:
        return R_PP_LAYERS
    return None


def ep_rule(model: ModelSpec, num_gpus: int, tp: int, dp: int, cp: int, ep: int) -> str | None:
    """Why this expert-parallel degree cannot run with (tp, dp, cp), or None."""
    experts = model.moe.num_experts if model.moe is not None else 0
    if ep > 1 and ((dp * cp * tp) % ep or experts % ep):
        return R_EP
    if ep * tp * cp > num_gpus:
        return R_EP_FIT
    return None


def offload_rule(offload: str, zero: int, dp_cp: int) -> str | None:
    """Why an offload option cannot run with this ZeRO stage, or None (simulator.core.host_tiers' checks)."""
    spec = OFFLOAD_SPECS[offload]
    if spec.get("params", "none") != "none" and zero != 3:
        return R_OFFLOAD_PARAMS
    if spec and dp_cp > 1 and zero < 1:
        return R_OFFLOAD_ZERO
    return None


def schedule_rule(schedule: str, pp: int, vpp: int, m: int, layers: int) -> str | None:
    """Why a (schedule, vpp) cannot run this pipeline, or None (the schedule's own rule from the registry)."""
    if pp == 1:
        return R_PIPE if schedule != "1f1b" else None
    if vpp > 1 and pp * vpp > layers:
        return R_PP_LAYERS
    if vpp > 1 and layers % (pp * vpp):
        return R_VPP_LAYERS
    return get_schedule(schedule).rule(pp, vpp, m)
