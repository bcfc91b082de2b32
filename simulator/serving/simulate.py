"""simulate_serving: config -> requests -> replicas (SimPy) -> per-request latencies -> metrics.

``simulate_steady`` repeats a run with more requests until its steady-state intervals are narrow
enough (:mod:`simulator.serving.steady`); the capacity search and ``plan serve`` use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hwmodels.catalogue import get_gpu
from hwmodels.dtypes import bytes_per_element
from hwmodels.errors import ClusterSimError
from hwmodels.profile import Profile, load_profile
from hwmodels.topology import ClusterSpec
from simulator.core.device_memory import RUNTIME_OVERHEAD_BYTES, usable_memory_bytes
from simulator.energy.accounting import footprint, gpu_energy_j
from simulator.serving.config import (
    ServingConfig,
    load_serving_config,
)
from simulator.serving.engine import ServingEngine
from simulator.serving.iteration import IterationModel, iteration_model
from simulator.serving.kv import KVCache
from simulator.serving.result import ServingResult, build_result
from simulator.serving.workload import generate_requests


def kv_bytes_per_token_per_gpu(cfg: ServingConfig) -> float:
    """KV bytes one token occupies on each GPU of a replica (heads split over TP, layers over PP).

    MLA's compressed latent is shared by all heads, so every TP rank keeps it whole; GQA with fewer
    KV heads than TP ranks replicates a head per rank.
    """
    m, b = cfg.model, bytes_per_element(cfg.kv.dtype)
    layers = m.num_layers / cfg.pp
    if m.mla is not None:
        return layers * (m.mla.kv_lora_rank + m.mla.qk_rope_head_dim) * b
    return 2.0 * layers * max(1, m.kv_heads // cfg.tp) * m.head_size * b


def max_iteration_tokens(cfg: ServingConfig, max_prompt: int) -> int:
    """Most prompt tokens one iteration holds under the config's batching policy."""
    return cfg.batching.max_iteration_tokens(max_prompt)


def kv_budget_blocks(cfg: ServingConfig, max_prompt: int) -> tuple[int, dict[str, float]]:
    """GPU KV blocks per replica: HBM the engine may use, minus weights and activation workspace."""
    m = cfg.model
    group = cfg.tp * cfg.pp  # GPUs of one attention group; experts are further split over ep groups
    usable = usable_memory_bytes(cfg.gpu) * cfg.kv.gpu_memory_utilization
    params = m.total_params - m.routed_expert_params + m.routed_expert_params / cfg.ep
    weights = params * bytes_per_element(cfg.weight_dtype) / group
    tokens = max_iteration_tokens(cfg, max_prompt)
    ffn = (m.moe.expert_ffn_hidden_size * m.moe.top_k if m.moe else m.ffn_hidden_size) / cfg.tp
    activations = tokens * (4 * m.hidden_size + 3 * ffn) * 2.0 + 256 * m.vocab_size / cfg.tp * 4.0
    free = usable - weights - activations - RUNTIME_OVERHEAD_BYTES
    per_block = kv_bytes_per_token_per_gpu(cfg) * cfg.kv.block_size
    info = {
        "usable_gb": usable / 1e9,
        "weights_gb": weights / 1e9,
        "activations_gb": activations / 1e9,
        "kv_gb": max(free, 0.0) / 1e9,
    }
    if free <= per_block:
        raise ClusterSimError(
            f"{m.name} weights ({weights / 1e9:.1f} GB per GPU) and activations leave no room for a KV cache on "
            f"{cfg.gpu} with tp={cfg.tp} pp={cfg.pp}; raise tp, lower weight_dtype, or raise kv.gpu_memory_utilization"
        )
    return int(free // per_block) * cfg.ep, info  # each EP attention group keeps its own KV


def _check_requests(cfg: ServingConfig, requests: list, blocks: int) -> None:
    if not requests:
        raise ClusterSimError("the workload has no requests; check workload.num_requests or the trace")
    per = cfg.kv.block_size
    worst = max(requests, key=lambda r: r.prompt_tokens + r.output_tokens)
    need = math.ceil((worst.prompt_tokens + worst.output_tokens) / per)
    if need > blocks:
        raise ClusterSimError(
            f"request {worst.id} needs {need} KV blocks ({worst.prompt_tokens}+{worst.output_tokens} tokens) but a "
            f"replica holds {blocks}; it can never fit: raise tp, use kv.dtype fp8/int4, or cap the lengths"
        )


def simulate_serving(
    config: ServingConfig | dict[str, Any] | str | Path,
    profile: Profile | str | None = None,
    *,
    overrides: list[str] | None = None,
    extend: bool | None = None,
) -> ServingResult:
    """Simulate serving ``config``'s traffic and return latency, throughput, KV and goodput metrics.

    With ``extend`` (default: the config's ``steady_state.extend``) the run is a steady-state run:
    see :func:`simulate_steady`; otherwise exactly ``workload.num_requests`` are simulated.
    """
    cfg = (
        config
        if isinstance(config, ServingConfig) and not overrides
        else load_serving_config(config.model_dump() if isinstance(config, ServingConfig) else config, overrides)
    )
    if cfg.steady_state.extend if extend is None else extend:
        return simulate_steady(cfg, profile)
    return _simulate(cfg, _profile(cfg, profile), cfg.workload.num_requests)


def simulate_steady(
    cfg: ServingConfig,
    profile: Profile | str | None = None,
    *,
    enough: Callable[[ServingResult], bool] | None = None,
    start: int | None = None,
) -> ServingResult:
    """A steady-state run: at least ``steady_state.min_requests`` requests (or ``start``), doubled (up
    to ``max_requests``, or the requested count if larger) until ``enough(result)`` holds -- by default
    until every percentile interval reaches the target precision. An unstable run stops at once:
    overload is the answer, and more requests only grow the queue."""
    spec, requested = cfg.steady_state, cfg.workload.num_requests
    enough = enough or (lambda r: r.steady is not None and r.steady.precision_reached)
    prof = _profile(cfg, profile)
    budget = max(requested, spec.max_requests)
    n = min(start, budget) if start is not None else max(requested, spec.min_requests)
    while True:
        res = _simulate(with_requests(cfg, n), prof, requested)
        steady = res.steady
        if steady is None or not steady.stable or enough(res) or n >= budget or res.completed_requests < n:
            return res  # (a trace shorter than n cannot be extended)
        n = min(2 * n, budget)


def with_requests(cfg: ServingConfig, n: int) -> ServingConfig:
    """``cfg`` with ``workload.num_requests = n`` (re-validated)."""
    data = cfg.model_dump()
    data["workload"]["num_requests"] = int(n)
    return load_serving_config(data)


def _profile(cfg: ServingConfig, profile: Profile | str | None) -> Profile:
    prof = load_profile(profile, gpu=cfg.gpu)
    if cfg.power.sm_clock_mhz is not None:
        prof = prof.at(sm_clock_mhz=cfg.power.sm_clock_mhz)
    return prof


def _simulate(cfg: ServingConfig, prof: Profile, requested: int) -> ServingResult:
    """One run of exactly ``cfg``'s requests (re-run at a throttled clock when over the power limit)."""
    requests = generate_requests(cfg.workload, cfg.seed)
    if not requests:
        raise ClusterSimError("the workload has no requests; check workload.num_requests or the trace")
    engine, seqs, memory = _run(cfg, prof, requests)
    limit = cfg.power.power_limit_w or prof.power.power_limit_w
    throttled = False
    if cfg.power.mode == "modelled" and max(_gpu_power_w(engine, prof)) > limit * 1.005:
        prof = prof.model_copy(update={"clock_ratio": _throttled_ratio(engine, prof, limit)})
        engine, seqs, memory = _run(cfg, prof, requests)
        throttled = True
    energy = _energy_fields(cfg, engine, seqs, prof, limit, throttled)
    return build_result(cfg, engine, seqs, memory, prof.kind, energy, requested=requested)


def _run(cfg: ServingConfig, prof: Profile, requests: list) -> tuple[ServingEngine, list, dict[str, float]]:
    model: IterationModel = iteration_model(
        cfg.model,
        cfg.gpu,
        cfg.tp,
        cfg.pp,
        profile=prof,
        weight_dtype=cfg.weight_dtype,
        kv_dtype=cfg.kv.dtype,
        node=cfg.node,
        ep=cfg.ep,
        routing=cfg.moe_routing,
        stack=cfg.stack,
    )
    blocks, memory = kv_budget_blocks(cfg, max(r.prompt_tokens for r in requests))
    _check_requests(cfg, requests, blocks)
    per_gpu_block = kv_bytes_per_token_per_gpu(cfg) * cfg.kv.block_size
    host_bw = model.profile.host_link_gbps * 1e9

    def make_kv() -> KVCache:
        return KVCache(
            gpu_blocks=blocks,
            block_size=cfg.kv.block_size,
            bytes_per_block=per_gpu_block,
            host_blocks=int(cfg.kv.host_gb * 1e9 / cfg.gpus_per_replica // per_gpu_block),
            nvme_blocks=int(cfg.kv.nvme_gb * 1e9 / cfg.gpus_per_replica // per_gpu_block),
            host_bytes_s=host_bw,
            nvme_bytes_s=cfg.kv.nvme_gbps * 1e9 / cfg.gpus_per_replica,
        )

    engine = ServingEngine(cfg, model, make_kv, requests)
    cfg.batching.setup(engine)
    seqs = engine.run()
    return engine, seqs, memory


def _span(engine: ServingEngine) -> float:
    return max((s.done_s for s in engine.seqs), default=0.0) - min((s.arrival for s in engine.seqs), default=0.0)


def _replica_work(engine: ServingEngine, rep: Any) -> tuple[float, float, float]:
    """(busy s, math s, HBM s) of one GPU of a replica; with PP each GPU works on its stage only."""
    pp = engine.cfg.pp
    return max(0.0, rep.busy_s - rep.overhead_s) / pp, rep.tensor_s, rep.hbm_s


def _gpu_power_w(engine: ServingEngine, prof: Profile) -> list[float]:
    span = _span(engine) or 1e-12
    return [gpu_energy_j(prof.power, span, *_replica_work(engine, r), prof.clock_ratio) / span for r in engine.replicas]


def _throttled_ratio(engine: ServingEngine, prof: Profile, limit: float) -> float:
    """Clock at which the hottest replica's GPUs average ``limit`` with the same work (bisection)."""
    span = _span(engine) or 1e-12
    rep = max(engine.replicas, key=lambda r: r.tensor_s)
    busy, tensor, hbm = _replica_work(engine, rep)
    lo, hi = prof.power.lowest_clock_mhz / prof.power.max_sm_clock_mhz, prof.clock_ratio
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        ok = gpu_energy_j(prof.power, span, busy, tensor, hbm, mid) / span <= limit
        lo, hi = (mid, hi) if ok else (lo, mid)
    return lo


def _energy_fields(
    cfg: ServingConfig, engine: ServingEngine, seqs: list, prof: Profile, limit: float, throttled: bool
) -> dict[str, Any]:
    span = _span(engine)
    gpu = get_gpu(cfg.gpu)
    # the node's figures only (host power, GPUs per node): a deployment need not fill whole nodes (12 GPUs)
    node = ClusterSpec(gpu=gpu.id, num_gpus=1, node=cfg.node).resolve()
    per_gpu = cfg.gpus_per_replica
    if cfg.power.mode == "tdp":
        gpu_j, node_j, avg_w = cfg.num_gpus * gpu.tdp_w * span, 0.0, gpu.tdp_w
    else:
        watts = _gpu_power_w(engine, prof)
        gpu_j = sum(watts) * per_gpu * span
        node_j = node.node.host_power_w * cfg.num_gpus / node.gpus_per_node * span  # share of the nodes
        avg_w = max(watts)
    facility = (gpu_j + node_j) * cfg.site.pue
    out_tokens = sum(s.req.output_tokens for s in seqs)
    gpu_hours = cfg.num_gpus * span / 3600.0
    kg, usd = footprint(facility, gpu_hours, gpu.id, node.gpus_per_node, cfg.site)
    return dict(
        energy_j={"gpu": gpu_j, "node": node_j, "facility": facility},
        energy_per_token_j=facility / max(out_tokens, 1),
        kgco2e=kg,
        cost_usd=usd,
        cost_per_million_output_tokens_usd=usd / max(out_tokens, 1) * 1e6,
        power={
            "mode": cfg.power.mode,
            "avg_gpu_power_w": avg_w,
            "power_limit_w": limit,
            "sm_clock_mhz": prof.sm_clock_mhz,
            "throttled": throttled,
        },
    )
