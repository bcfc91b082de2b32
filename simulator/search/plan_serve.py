"""Serving deployment search: the cheapest TP x replicas x policy x max batch that meets an SLO at a rate.

For each candidate replica shape (tensor parallelism, batching policy, maximum batch) the capacity
search (:func:`simulator.serving.capacity.max_rate`) finds the highest arrival rate one replica
sustains at the SLO; enough replicas for the target rate follow, and the cheapest deployment is
then simulated at the target rate with all its replicas, so the plan reported is a simulated one.
Cost is GPU-hours x $/GPU-hour (``site`` settings of the config, :mod:`simulator.energy.pricing`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hwmodels.catalogue import get_gpu
from hwmodels.errors import ClusterSimError
from hwmodels.topology import ClusterSpec

POLICIES = ("continuous", "chunked")


@dataclass
class ServePlan:
    """One candidate deployment and what it costs."""

    tp: int
    policy: str
    max_num_seqs: int
    replica_capacity_per_s: float
    replicas: int
    num_gpus: int
    usd_per_hour: float
    usd_per_million_output_tokens: float = 0.0
    simulated: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Every field as a plain dict (JSON-ready)."""
        return {k: v for k, v in self.__dict__.items()}


def _tps(model: Any, gpus_per_node: int) -> list[int]:
    """Tensor-parallel degrees inside one node (powers of two that divide the attention heads)."""
    return [t for t in (1, 2, 4, 8, 16) if t <= gpus_per_node and model.num_attention_heads % t == 0]


def _shape(base: dict[str, Any], tp: int, policy: str, seqs: int) -> dict[str, Any]:
    batching: dict[str, Any] = {"kind": policy, "max_num_seqs": seqs}
    if policy == "continuous":
        batching["max_num_batched_tokens"] = 8192
    return {**base, "tp": tp, "replicas": 1, "batching": batching}


def plan_serving(
    base: dict[str, Any],
    *,
    rate_per_s: float,
    attainment: float = 0.9,
    tps: list[int] | None = None,
    policies: tuple[str, ...] = POLICIES,
    max_num_seqs: tuple[int, ...] = (64, 256),
    requests: int = 400,
    profile: Any = None,
    progress: bool = False,
) -> tuple[ServePlan, list[ServePlan]]:
    """The cheapest deployment of ``base`` (a serving config dict) meeting its SLO at ``rate_per_s``.

    Returns (best, every candidate that fits). ``requests`` sizes each capacity search's workload.
    """
    from simulator.energy.pricing import gpu_hour_price
    from simulator.serving import load_serving_config
    from simulator.serving.capacity import max_rate

    if rate_per_s <= 0:
        raise ClusterSimError(f"rate_per_s={rate_per_s} must be positive")
    cfg0 = load_serving_config(base)
    gpu = get_gpu(cfg0.gpu)
    site = cfg0.site
    price = site.price_usd_per_gpu_hour
    if price is None:
        price = gpu_hour_price(gpu.id, site.price_preset).value_usd
    workload = {**base.get("workload", {}), "num_requests": requests}
    per_node = ClusterSpec(gpu=gpu.id, num_gpus=1, node=cfg0.node).resolve().gpus_per_node
    tps = tps or _tps(cfg0.model, per_node)
    shapes = [(tp, pol, seqs) for tp in tps for pol in policies for seqs in max_num_seqs]
    it: Any = shapes
    if progress:
        from tqdm import tqdm

        it = tqdm(shapes, desc="replica shapes", unit="shape")
    plans: list[ServePlan] = []
    for tp, pol, seqs in it:
        data = _shape({**base, "workload": workload}, tp, pol, seqs)
        try:
            cfg = load_serving_config(data)
            cap, _ = max_rate(cfg, attainment=attainment, profile=profile)
        except ClusterSimError:
            continue  # does not fit (weights/KV) or never meets the SLO
        replicas = max(1, math.ceil(rate_per_s / cap))
        n = replicas * tp * cfg.pp * cfg.ep
        plans.append(ServePlan(tp, pol, seqs, cap, replicas, n, n * price))
    if not plans:
        raise ClusterSimError(
            f"no replica shape of {cfg0.model.name} on {gpu.id} meets the SLO; relax slo.ttft_s/tpot_s or use a "
            "larger GPU"
        )
    plans.sort(key=lambda p: (p.usd_per_hour, -p.replica_capacity_per_s))
    return _confirm(base, plans, rate_per_s, attainment, requests, profile), plans


def _confirm(
    base: dict[str, Any], plans: list[ServePlan], rate: float, attainment: float, requests: int, profile: Any
) -> ServePlan:
    """Simulate the cheapest plans with all replicas at the target rate; add a replica if the SLO slips."""
    from simulator.serving import simulate_serving

    best = plans[0]
    for _ in range(4):
        data = _shape(base, best.tp, best.policy, best.max_num_seqs)
        data["replicas"] = best.replicas
        arrivals = {**base.get("workload", {}).get("arrivals", {"kind": "poisson"}), "rate_per_s": rate}
        data["workload"] = {**base.get("workload", {}), "arrivals": arrivals, "num_requests": requests * best.replicas}
        res = simulate_serving(data, profile)
        if res.slo_attainment >= attainment:
            best.usd_per_million_output_tokens = res.cost_per_million_output_tokens_usd
            best.simulated = {
                "slo_attainment": res.slo_attainment,
                "ttft_p99_s": res.ttft_s.p99,
                "tpot_p99_s": res.tpot_s.p99,
                "throughput_tokens_per_s": res.throughput_tokens_per_s,
                "energy_per_token_j": res.energy_per_token_j,
                "kgco2e_per_million_tokens": sum(res.kgco2e.values())
                / max(res.throughput_tokens_per_s * res.duration_s, 1)
                * 1e6,
            }
            return best
        per_gpu = best.usd_per_hour / best.num_gpus
        best.replicas += 1
        best.num_gpus = best.num_gpus // (best.replicas - 1) * best.replicas
        best.usd_per_hour = best.num_gpus * per_gpu
    raise ClusterSimError("the cheapest shape misses the SLO at the target rate even with 4 extra replicas")
