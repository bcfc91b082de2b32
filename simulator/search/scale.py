"""How much work a validated config asks for, and the check against a :class:`~simulator.core.limits.WorkCaps`.

The app refuses configs beyond :data:`~simulator.core.limits.APP_CAPS`; the CLI stops beyond
:data:`~simulator.core.limits.CLI_CAPS` unless given ``--yes``; sweeps can mark such points invalid.
The measures are the engines' cost drivers: micro-batches and pipeline ops for training, requests and
decoded tokens for serving, plus GPUs, replicas and layers. Measuring is cheap: a serving workload's
requests are drawn (as the simulation will draw them) only once their count is under the cap.
"""

from __future__ import annotations

from typing import Any, Literal

from hwmodels.errors import ClusterSimError
from simulator.core.limits import WorkCaps

__all__ = ["LABELS", "check_work", "over_caps", "serving_work", "training_work", "work_of"]

#: What each measure is, in the config's terms (so the message says what to change).
LABELS = {
    "num_gpus": "GPUs",
    "microbatches": "micro-batches per step (training.global_batch / (micro_batch x dp))",
    "pipeline_ops": "pipeline ops per step (micro-batches x pp x vpp)",
    "layers": "model layers",
    "requests": "workload.num_requests",
    "output_tokens": "output tokens to decode (num_requests x output length)",
    "replicas": "replicas",
    "sweep_points": "sweep points",
}


def training_work(cfg: Any) -> dict[str, int]:
    """The work measures of a validated training config (:class:`simulator.core.config.RunConfig`)."""
    p, t = cfg.parallel, cfg.training
    micro = t.global_batch // max(1, t.micro_batch * p.dp)
    return {
        "num_gpus": int(cfg.cluster.num_gpus),
        "microbatches": int(micro),
        "pipeline_ops": int(micro * p.pp * max(1, p.vpp)),
        "layers": int(cfg.model.num_layers),
    }


def serving_work(cfg: Any, caps: WorkCaps | None = None) -> dict[str, int]:
    """The work measures of a validated serving config; output tokens are counted over the drawn requests,
    only when the request count is within ``caps`` (drawing 10^9 requests would itself exhaust memory)."""
    # disaggregated policies set their own pools; counted from the fields, never by listing 10^9 replica roles
    pools = sum(int(getattr(cfg.batching, f, 0) or 0) for f in ("prefill_replicas", "decode_replicas"))
    replicas = pools or int(cfg.replicas)
    work = {
        "num_gpus": replicas * int(cfg.gpus_per_replica),
        "replicas": replicas,
        "layers": int(cfg.model.num_layers),
        "requests": int(cfg.workload.num_requests),
    }
    if caps is None or work["requests"] <= caps.requests:
        from simulator.serving.workload import generate_requests

        requests = generate_requests(cfg.workload, cfg.seed)
        work["output_tokens"] = int(sum(r.output_tokens for r in requests))
    return work


def work_of(kind: Literal["training", "serving"], cfg: Any, caps: WorkCaps | None = None) -> dict[str, int]:
    """The work measures of a validated training or serving config."""
    return training_work(cfg) if kind == "training" else serving_work(cfg, caps)


def over_caps(work: dict[str, int], caps: WorkCaps) -> list[tuple[str, int, int]]:
    """(measure, value, cap) for every measure of ``work`` over its cap, in the caps' order."""
    return [(name, work[name], cap) for name, cap in caps.items() if name in work and work[name] > cap]


def check_work(kind: Literal["training", "serving"], cfg: Any, caps: WorkCaps, hint: str) -> dict[str, int]:
    """The config's work measures; a one-line :class:`ClusterSimError` naming the first one over ``caps``
    (``hint`` says what to do instead, e.g. "use the CLI for larger runs")."""
    work = work_of(kind, cfg, caps)
    over = over_caps(work, caps)
    if over:
        name, value, cap = over[0]
        more = f" (and {len(over) - 1} more)" if len(over) > 1 else ""
        raise ClusterSimError(f"{LABELS[name]} = {value:,} is over the limit of {cap:,}{more}; {hint}")
    return work
