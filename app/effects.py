"""What a training option changes, from the library's own cost functions (no Streamlit, unit-tested).

The training planner's option sections (``app/views/training_options.py``) show these beside the simulated
step: the data-parallel traffic by collective (:mod:`simulator.compression`, :mod:`simulator.core.costs`,
:mod:`simulator.training.param_server`), the MoE expert time of the busiest expert-parallel rank
(:mod:`simulator.moe.routing`) and the PCIe traffic of offload (:mod:`simulator.training.offload`). Each
figure is per GPU (the average pipeline stage) and per step unless its name says otherwise.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from hwmodels.profile import Profile, load_profile
from simulator.compression import (
    collective_for,
    compression_compute_s,
    dp_comm_time,
    memory_overhead_bytes,
    wire_bytes,
)
from simulator.core.config import RunConfig
from simulator.core.costs import comm_time, op_cost
from simulator.core.layer_costs import representative_layer, weights_per_gpu
from simulator.training import offload, param_server
from simulator.training.plan import Groups, config_layer_ops, grad_comm_bytes, model_chunks

#: Bytes per element of the 16-bit weights ZeRO gathers (the training precision's weight format).
WEIGHT_BYTES = 2.0


@dataclass(frozen=True)
class Traffic:
    """One data-parallel collective of a step: what each rank contributes, and the model's time for it."""

    collective: str
    wire_bytes: float  # bytes one rank contributes per step (compression.wire_bytes's definition)
    seconds: float  # the collective over the gradient group as one call (the step overlaps its buckets)
    note: str = ""


def params_per_gpu(cfg: RunConfig) -> float:
    """Parameters one GPU holds: weights split over tp and pp, routed experts also over ep."""
    return weights_per_gpu(cfg) / 2.0  # weights_per_gpu counts 2-byte weights


def dp_traffic(cfg: RunConfig) -> list[Traffic]:
    """The data-parallel collectives of one step per rank (empty when dp x cp = 1)."""
    p, t = cfg.parallel, cfg.training
    if p.dp * p.cp == 1:
        return []
    groups = Groups.of(cfg, cfg.cluster.resolve())
    grad, algo = groups.grad, groups.algorithm
    params = params_per_gpu(cfg)
    gbytes = grad_comm_bytes(t.precision)
    dense = params * gbytes
    rows: list[Traffic] = []
    if p.dp_mode == "parameter_server":
        secs = param_server.push_pull_s(cfg, dense, grad, algo)
        rows.append(Traffic("push/pull (parameter servers)", dense, secs, "gradients out, sums back"))
    elif t.compression is not None:
        spec = t.compression
        secs = dp_comm_time(spec, params, grad, gbytes, algorithm=algo)
        note = "average over the every-k / sync-every-k cycle"
        rows.append(Traffic(f"compressed {collective_for(spec)}", wire_bytes(spec, params, gbytes), secs, note))
    else:
        kind = "all_reduce" if p.zero == 0 else "reduce_scatter"
        rows.append(Traffic(f"gradient {kind}", dense, comm_time(kind, dense, grad, algo)))
    rows += _param_gathers(cfg, params, grad, algo)
    return rows


def _param_gathers(cfg: RunConfig, params: float, grad: Any, algo: Any) -> list[Traffic]:
    """ZeRO's parameter all-gathers: once after the optimizer (ZeRO-1/2), per pass of every layer (ZeRO-3)."""
    p, t = cfg.parallel, cfg.training
    nbytes = WEIGHT_BYTES * params
    one = comm_time("all_gather", nbytes, grad, algo)
    if p.zero in (1, 2):
        note = "hidden under the next forward" if t.overlap_param_gather else "after the optimizer step"
        return [Traffic("param all_gather", nbytes, one, note)]
    if p.zero == 3:
        passes = 3 if t.recompute == "full" and cfg.stack.zero3_regather_in_recompute else 2
        note = f"{passes} passes (forward, backward{', recompute' if passes == 3 else ''})"
        return [Traffic("param all_gather (ZeRO-3)", passes * nbytes, passes * one, note)]
    return []


def compression_overhead(cfg: RunConfig, profile: Profile | None = None) -> dict[str, float]:
    """(De)compression seconds per step and the persistent state bytes (error feedback, PowerSGD factors)."""
    spec, p = cfg.training.compression, cfg.parallel
    if spec is None or p.dp * p.cp == 1:
        return {"compute_s": 0.0, "state_bytes": 0.0}
    prof = profile or load_profile(None, gpu=cfg.cluster.gpu)
    params = params_per_gpu(cfg)
    gbytes = grad_comm_bytes(cfg.training.precision)
    return {
        "compute_s": compression_compute_s(spec, params, prof, gbytes, dp_size=p.dp),
        "state_bytes": memory_overhead_bytes(spec, params),
    }


def steps_multiplier(cfg: RunConfig) -> float:
    """Steps to train relative to uncompressed: the user's convergence input (compression.steps_multiplier)."""
    spec = cfg.training.compression
    return spec.steps_multiplier if spec is not None else 1.0


@dataclass(frozen=True)
class ExpertTime:
    """One MoE layer, one micro-batch, on the busiest expert-parallel rank."""

    expert_s: float  # forward + backward seconds of the expert GEMMs and activation, load imbalance included
    balanced_s: float  # the same with perfectly balanced routing
    load_factor: float  # busiest rank's load over the mean (routing.layer_time_factor)
    dropped_fraction: float  # token copies dropped by the capacity factor


def expert_time(cfg: RunConfig, profile: Profile | None = None) -> ExpertTime | None:
    """Expert compute of the first MoE layer under ``cfg.moe_routing`` (None for a dense model); the
    load factor is the simulation's (:class:`simulator.training.plan._MoEAdjust` draws the same loads)."""
    from simulator.moe import routing as M

    m, p, t = cfg.model, cfg.parallel, cfg.training
    if m.moe is None:
        return None
    prof = profile or load_profile(None, gpu=cfg.cluster.gpu)
    layer = representative_layer(cfg)
    groups = Groups.of(cfg, cfg.cluster.resolve())
    ops = [op for op in config_layer_ops(cfg, layer) if op.name.startswith("expert_")]
    costs = [op_cost(op, prof, groups.as_dict(), t.precision, groups.algorithm) for op in ops]
    balanced = sum(c.forward_s + c.backward_s + c.backward_weight_s for c in costs)
    tokens = t.micro_batch * (t.seq_len // p.cp)
    spec = m.moe
    loads = M.expert_loads(
        cfg.moe_routing, spec.num_experts, spec.top_k, tokens * p.ep, layer=layer, rng=np.random.default_rng(cfg.seed)
    )
    stats = M.routing_stats(
        loads,
        p.ep if spec.num_experts % p.ep == 0 else 1,
        routed=tokens * p.ep * spec.top_k,
        replicate_hot_experts=cfg.moe_routing.replicate_hot_experts,
    )
    factor = M.layer_time_factor(stats) if p.ep > 1 else 1.0
    return ExpertTime(balanced * factor, balanced, factor, stats.dropped_fraction)


def pcie_traffic(cfg: RunConfig) -> dict[str, float]:
    """Host <-> GPU bytes per step of one GPU of the first stage under ``training.offload``, and the seconds
    they take at the node's per-GPU PCIe rate (offload.host_rates); empty when nothing is offloaded."""
    off, p = cfg.training.offload, cfg.parallel
    if not off.any:
        return {}
    params = params_per_gpu(cfg)
    mbs = offload.num_microbatches(cfg)
    shard = offload.optimizer_shard(cfg, params)
    out = {
        "gradients to host": offload.grad_d2h_bytes(cfg, params) * mbs,
        "weights to GPU (after the CPU step)": offload.PARAM_H2D_BYTES * shard if off.optimizer != "none" else 0.0,
        "offloaded weights fetched": 0.0,
        "activations out and back": 0.0,
    }
    if off.params != "none":  # ZeRO-Infinity: the shard comes back before every forward and backward pass
        out["offloaded weights fetched"] = 2.0 * mbs * offload.PARAM_H2D_BYTES * params / (p.dp * p.cp)
        out["weights to GPU (after the CPU step)"] = 0.0
    if off.activations:
        layers = model_chunks(cfg, p.pp * p.vpp)[0]
        out["activations out and back"] = 2.0 * mbs * offload.saved_activation_bytes(cfg, layers) * p.vpp
    rate = offload.host_rates(cfg.cluster).pcie_bytes_s
    return {**out, "total": sum(out.values()), "pcie_s": sum(out.values()) / rate}


def without(cfg: dict[str, Any], *paths: str) -> dict[str, Any]:
    """A copy of the config dict with the dotted ``paths`` removed (the plan without an option)."""
    out = copy.deepcopy(cfg)
    for path in paths:
        *parents, leaf = path.split(".")
        node = out
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out
