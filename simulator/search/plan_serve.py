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
    pruned_shapes: int = 0  # shapes the search left out because they could not beat this plan

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
    replica up, within a TP degree the highest burst bound first. Unless ``exhaustive``, the search is
    branch and bound: a shape that cannot rank before the best plan so far (fewer GPUs, or as many with
    more capacity per replica) is left out -- by its GPUs per replica, by its burst bound, or by one
    probe at the least capacity it would need (:class:`~simulator.serving.capacity.BelowRate`); only
    shapes that pass that probe get a full capacity search. ``best.pruned_shapes`` counts those left out.
    ``requests`` sizes each capacity search's probes, which use at least ``steady_state.min_requests``
    (docs/serving-steady-state.md).
    """
    from simulator.energy.pricing import gpu_hour_price
    from simulator.serving import load_serving_config

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
    tps = sorted(tps or _tps(cfg0.model, per_node))
    n_shapes = len(tps) * len(policies) * len(max_num_seqs)
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_shapes, desc="replica shapes", unit="shape")
    plans: list[ServePlan] = []
    search = _Search(rate_per_s, exhaustive)
    try:
        groups = [
            (
                tp * cfg0.pp * cfg0.ep,
                [_shape({**base, "workload": workload}, tp, p, n) for p in policies for n in max_num_seqs],
            )
            for tp in tps
        ]
        _search_shapes(search, plans, groups, price, attainment, profile, bar)
    finally:
        if bar is not None:
            bar.close()
    over = search.over
    if not plans and over:
        raise ClusterSimError(
            f"rate_per_s={rate_per_s:g} needs more than {CLI_CAPS.replicas:,} replicas of every shape; lower the rate"
        )
    if not plans:
        raise ClusterSimError(
            f"no replica shape of {cfg0.model.name} on {gpu.id} meets the SLO; relax slo.ttft_s/tpot_s or use a "
            "larger GPU"
        )
    plans.sort(key=_rank)
    best = _confirm(base, plans, rate_per_s, attainment, requests, profile)
    best.pruned_shapes = search.pruned
    return best, plans


def _search_shapes(
    search: _Search,
    plans: list[ServePlan],
    groups: list[tuple[int, list[dict[str, Any]]]],
    price: float,
    attainment: float,
    profile: Any,
    bar: Any,
) -> None:
    """Search the replica shapes, grouped by GPUs per replica (fewest first), appending each plan to ``plans``."""
    for gpus, shapes in groups:
        if search.cannot_win(gpus, math.inf):
            search.pruned += len(shapes)
            _advance(bar, len(shapes))
            continue  # one replica of this TP already needs more GPUs than the best plan so far
        for data, bound in _by_bound(shapes, profile):  # the likeliest high capacity first: it prunes the rest
            _advance(bar, 1)
            plan = search.shape(data, gpus, bound, attainment, profile)
            if plan is not None:
                plan.usd_per_hour = plan.num_gpus * price
                plans.append(plan)
                search.add(plan)


def _rank(plan: ServePlan) -> tuple[int, float]:
    """Order of preference: fewest GPUs (every shape pays the same $/GPU-hour), then the higher capacity per replica."""
    return plan.num_gpus, -plan.replica_capacity_per_s


def _advance(bar: Any, n: int) -> None:
    if bar is not None:
        bar.update(n)


def _by_bound(shapes: list[dict[str, Any]], profile: Any) -> list[tuple[dict[str, Any], float | None]]:
    """Shapes with their burst bounds (None: does not fit), the highest bound first."""
    out: list[tuple[dict[str, Any], float | None]] = []
    for data in shapes:
        try:
            out.append((data, throughput_bound(data, profile)))
        except ClusterSimError:
            out.append((data, None))
    return sorted(out, key=lambda x: -(x[1] or 0.0))


@dataclass
class _Search:
    """The best plan so far, and the least capacity a shape needs to beat it (branch and bound on GPUs)."""

    rate: float
    exhaustive: bool
    best: ServePlan | None = None
    pruned: int = 0  # shapes not fully searched because they cannot beat the best plan
    over: int = 0  # the most replicas a shape would need, when over CLI_CAPS.replicas

    def add(self, plan: ServePlan) -> None:
        if self.best is None or _rank(plan) < _rank(self.best):
            self.best = plan

    def need(self, gpus: int) -> float | None:
        """Least capacity per replica (req/s) with which a shape of ``gpus`` GPUs per replica would rank
        before the best plan: fewer GPUs in all, or as many with a higher capacity per replica."""
        if self.best is None or self.exhaustive:
            return None
        k = self.best.num_gpus // gpus  # most replicas that do not exceed the best plan's GPUs
        if k * gpus < self.best.num_gpus:
            return self.rate / k
        fewer = self.rate / (k - 1) if k > 1 else math.inf  # fewer GPUs than the best plan
        return min(fewer, max(self.rate / k, self.best.replica_capacity_per_s * (1 + 1e-9)))  # or a tie won

    def shape(
        self, data: dict[str, Any], gpus: int, bound: float | None, attainment: float, profile: Any
    ) -> ServePlan | None:
        """The plan of one replica shape (``usd_per_hour`` left to the caller), or None when it does not fit,
        never meets the SLO, would need too many replicas or cannot beat the best plan (counted as pruned)."""
        from simulator.serving import load_serving_config
        from simulator.serving.capacity import BelowRate, find_capacity

        if bound is None:
            return None  # does not fit (weights/KV)
        least = math.ceil(self.rate / bound)  # replicas, at the least
        if least > CLI_CAPS.replicas:
            self.over = max(self.over, least)
            return None  # confirming it would simulate requests x replicas requests
        if self.cannot_win(gpus, bound):
            self.pruned += 1
            return None  # cannot be cheaper, whatever its capacity at the SLO
        try:
            cfg = load_serving_config(data)
            found = find_capacity(cfg, attainment=attainment, profile=profile, at_least=self.need(gpus))
        except BelowRate:
            self.pruned += 1
            return None  # misses the SLO at the least capacity that would make it the cheapest
        except ClusterSimError:
            return None  # never meets the SLO
        cap = found.rate_per_s
        replicas = max(1, math.ceil(self.rate / cap))
        if replicas > CLI_CAPS.replicas:
            self.over = max(self.over, replicas)
            return None
        batching = data["batching"]
        interval = (found.interval.low, found.interval.high)
        n = replicas * gpus
        return ServePlan(
            data["tp"],
            batching["kind"],
            batching["max_num_seqs"],
            cap,
            replicas,
            n,
            0.0,
            replica_capacity_interval=interval,
        )

    def cannot_win(self, gpus: int, bound: float) -> bool:
        """True when a shape of ``gpus`` GPUs per replica whose capacity is below ``bound`` cannot rank first."""
        if self.best is None or self.exhaustive:
            return False
        if gpus > self.best.num_gpus:
            return True
        need = self.need(gpus)
        return need is not None and bound < need


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
