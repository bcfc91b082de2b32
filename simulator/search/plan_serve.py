"""Serving deployment search: the cheapest TP x replicas x policy x max batch that meets an SLO at a rate.

For each candidate replica shape (tensor parallelism, batching policy, maximum batch) the capacity
search (:func:`simulator.serving.capacity.find_capacity`, steady-state runs judged on confidence
bounds) finds the highest arrival rate one replica sustains at the SLO; enough replicas for the
target rate follow, and the cheapest deployment is then confirmed by one long steady-state run
(``steady_state.max_requests`` requests) at the target rate with all its replicas: it must be
stable with the lower bound of its SLO attainment at the target, else a replica is added. The plan
reported is a simulated one, with its margin (capacity / target rate) and attainment interval.
Cost is GPU-hours x $/GPU-hour (``site`` settings of the config, :mod:`simulator.energy.pricing`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hwmodels.catalogue import get_gpu
from hwmodels.errors import ClusterSimError
from hwmodels.topology import ClusterSpec
from simulator.core.limits import CLI_CAPS

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
    replica_capacity_interval: tuple[float, float] = (0.0, 0.0)

    @property
    def margin(self) -> float:
        """Deployment capacity (replicas x the capacity of one) over the target rate; > 1 is headroom."""
        return float(self.simulated.get("margin", 0.0))

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
    exhaustive: bool = False,
) -> tuple[ServePlan, list[ServePlan]]:
    """The cheapest deployment of ``base`` (a serving config dict) meeting its SLO at ``rate_per_s``.

    Returns (best, every candidate searched that fits). Shapes are searched from the fewest GPUs per
    replica up; a shape whose single replica already costs more than the cheapest plan found is not
    searched (it cannot win) unless ``exhaustive``. ``requests`` sizes each capacity search's probes,
    which use at least ``steady_state.min_requests`` (docs/serving-steady-state.md).
    """
    from simulator.energy.pricing import gpu_hour_price
    from simulator.serving import load_serving_config
    from simulator.serving.capacity import find_capacity

    if not math.isfinite(rate_per_s) or rate_per_s <= 0:
        raise ClusterSimError(f"rate_per_s={rate_per_s} must be a positive, finite rate")
    if not 1 <= requests <= CLI_CAPS.requests:
        raise ClusterSimError(f"requests={requests:,} per capacity search must be 1 to {CLI_CAPS.requests:,}")
    cfg0 = load_serving_config(base)
    gpu = get_gpu(cfg0.gpu)
    site = cfg0.site
    price = site.price_usd_per_gpu_hour
    if price is None:
        price = gpu_hour_price(gpu.id, site.price_preset).value_usd
    workload = {**base.get("workload", {}), "num_requests": requests}
    per_node = ClusterSpec(gpu=gpu.id, num_gpus=1, node=cfg0.node).resolve().gpus_per_node
    tps = tps or _tps(cfg0.model, per_node)
    shapes = [(tp, pol, seqs) for tp in sorted(tps) for pol in policies for seqs in max_num_seqs]
    it: Any = shapes
    if progress:
        from tqdm import tqdm

        it = tqdm(shapes, desc="replica shapes", unit="shape")
    plans: list[ServePlan] = []
    over = 0  # the most replicas a shape would need, when over CLI_CAPS.replicas
    for tp, pol, seqs in it:
        cheapest = min((p.usd_per_hour for p in plans), default=math.inf)
        per_replica_usd = tp * cfg0.pp * cfg0.ep * price
        if not exhaustive and per_replica_usd > cheapest:
            continue  # one replica of this shape already costs more than the best plan so far
        data = _shape({**base, "workload": workload}, tp, pol, seqs)
        try:
            cfg = load_serving_config(data)
            least = math.ceil(rate_per_s / throughput_bound(data, profile))  # replicas, at the least
            if least > CLI_CAPS.replicas or (not exhaustive and least * per_replica_usd > cheapest):
                over = max(over, least) if least > CLI_CAPS.replicas else over
                continue  # cannot be confirmed, or cannot be cheaper, whatever its capacity at the SLO
            found = find_capacity(cfg, attainment=attainment, profile=profile)
        except ClusterSimError:
            continue  # does not fit (weights/KV) or never meets the SLO
        cap = found.rate_per_s
        replicas = max(1, math.ceil(rate_per_s / cap))
        if replicas > CLI_CAPS.replicas:  # confirming it would simulate requests x replicas requests
            over = max(over, replicas)
            continue
        n = replicas * tp * cfg.pp * cfg.ep
        interval = (found.interval.low, found.interval.high)
        plans.append(ServePlan(tp, pol, seqs, cap, replicas, n, n * price, replica_capacity_interval=interval))
    if not plans and over:
        raise ClusterSimError(
            f"rate_per_s={rate_per_s:g} needs more than {CLI_CAPS.replicas:,} replicas of every shape; lower the rate"
        )
    if not plans:
        raise ClusterSimError(
            f"no replica shape of {cfg0.model.name} on {gpu.id} meets the SLO; relax slo.ttft_s/tpot_s or use a "
            "larger GPU"
        )
    plans.sort(key=lambda p: (p.usd_per_hour, -p.replica_capacity_per_s))
    return _confirm(base, plans, rate_per_s, attainment, requests, profile), plans


#: A replica's capacity at any SLO is below the rate it completes requests when saturated; a burst run's
#: mean completion rate includes its ramp and drain at smaller batches, so it is doubled to stay an upper bound.
BURST_BOUND_FACTOR = 2.0


def throughput_bound(data: dict[str, Any], profile: Any = None, requests: int = 400) -> float:
    """An upper bound on one replica's capacity (requests/s) at any SLO: ``BURST_BOUND_FACTOR`` x the
    rate it completes ``requests`` requests sent at once (their lengths from ``data``'s workload)."""
    from simulator.serving import load_serving_config
    from simulator.serving.simulate import simulate_serving

    n = max(1, min(requests, int(data.get("workload", {}).get("num_requests", requests))))
    burst = {"kind": "fixed", "rate_per_s": 1e9}
    wl = {**data.get("workload", {}), "arrivals": burst, "num_requests": n}
    res = simulate_serving(load_serving_config({**data, "replicas": 1, "workload": wl}), profile)
    return BURST_BOUND_FACTOR * res.completed_requests / max(res.duration_s, 1e-9)


def _confirm(
    base: dict[str, Any], plans: list[ServePlan], rate: float, attainment: float, requests: int, profile: Any
) -> ServePlan:
    """Confirm the cheapest plan with one long steady-state run of all its replicas at the target rate
    (``steady_state.max_requests`` requests, or more if asked); add a replica while it does not pass."""
    from simulator.serving import load_serving_config
    from simulator.serving.capacity import judge
    from simulator.serving.simulate import simulate_steady

    best = plans[0]
    for _ in range(4):
        data = _shape(base, best.tp, best.policy, best.max_num_seqs)
        data["replicas"] = best.replicas
        arrivals = {**base.get("workload", {}).get("arrivals", {"kind": "poisson"}), "rate_per_s": rate}
        cfg = load_serving_config({**data, "workload": {**base.get("workload", {}), "arrivals": arrivals}})
        n = max(requests * best.replicas, cfg.steady_state.max_requests)
        wl = {**base.get("workload", {}), "arrivals": arrivals, "num_requests": n}
        res = simulate_steady(load_serving_config({**data, "workload": wl}), profile, enough=lambda _: True)
        if judge(res, attainment) == "pass":
            _record(best, res, rate)
            return best
        per_gpu = best.usd_per_hour / best.num_gpus
        best.replicas += 1
        best.num_gpus = best.num_gpus // (best.replicas - 1) * best.replicas
        best.usd_per_hour = best.num_gpus * per_gpu
    raise ClusterSimError("the cheapest shape misses the SLO at the target rate even with 4 extra replicas")


def _record(plan: ServePlan, res: Any, rate: float) -> None:
    """Store the confirming run's steady-state figures and the margin on ``plan``."""
    s = res.steady
    plan.usd_per_million_output_tokens = s.cost_per_million_output_tokens_usd
    plan.simulated = {
        "requests": res.completed_requests,
        "stable": s.stable,
        "margin": plan.replica_capacity_per_s * plan.replicas / rate,
        "slo_attainment": res.slo_attainment,
        "slo_attainment_ci": [s.slo_attainment_ci.low, s.slo_attainment_ci.high],
        "confidence": s.confidence,
        "ttft_p99_s": res.ttft_s.p99,
        "ttft_p99_ci_s": [s.ttft_ci_s.p99.low, s.ttft_ci_s.p99.high],
        "tpot_p99_s": res.tpot_s.p99,
        "tpot_p99_ci_s": [s.tpot_ci_s.p99.low, s.tpot_ci_s.p99.high],
        "throughput_tokens_per_s": res.throughput_tokens_per_s,
        "goodput_requests_per_s": res.goodput_requests_per_s,
        "energy_per_token_j": res.energy_per_token_j,
        "kgco2e_per_million_tokens": sum(res.kgco2e.values())
        / max(sum(row["output_tokens"] for row in res.requests_table), 1)
        * 1e6,
    }
