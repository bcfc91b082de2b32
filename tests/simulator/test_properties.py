"""Property tests over random training plans: a step never gets shorter when the hardware gets worse.

Each property runs over :data:`PLANS` random plans (seeded, so a failure reproduces): lower SM clock, lower
network bandwidth, more GPUs at the same per-GPU work, and more rank-to-rank variability must never shorten
the simulated step. (A DualPipe plan was once seen to get shorter at 0.7x clock: greedy schedules can do
that, so the dynamic schedules are in the draw.)
"""

from __future__ import annotations

import numpy as np
import pytest

from hwmodels.errors import ClusterSimError
from simulator.core.config import load_config
from simulator.training import simulate_training

PLANS = 200
#: Relative slack for "not shorter": floating-point noise of summing the same costs in another order.
EPS = 1e-9

_MODEL = {
    "name": "prop-1b",
    "source": "a small Llama-like test model",
    "num_layers": 16,
    "hidden_size": 2048,
    "num_attention_heads": 16,
    "num_kv_heads": 8,
    "ffn_hidden_size": 5632,
    "vocab_size": 32000,
    "mlp": "swiglu",
    "position": "rope",
    "norm": "rmsnorm",
}
_MOE = {**_MODEL, "name": "prop-moe", "moe": {"num_experts": 8, "top_k": 2, "expert_ffn_hidden_size": 1408}}


def _plan(rng: np.random.Generator) -> dict:
    """A random valid-looking plan: tp, pp, dp, schedule, batch, recompute, precision, GPU."""
    gpu, node = [("h100-sxm5-80gb", "dgx-h100"), ("a100-sxm4-80gb", "dgx-a100")][rng.integers(2)]
    tp = int(rng.choice([1, 2, 4, 8]))
    pp = int(rng.choice([1, 2, 4]))
    dp = int(rng.choice([1, 2, 4, 8]))
    sched = str(rng.choice(["1f1b", "interleaved", "gpipe", "zero-bubble", "dualpipe"]))
    if pp == 1:
        sched = "1f1b"
    vpp = 2 if sched == "interleaved" else 1
    mb = int(rng.choice([1, 2]))
    num_mb = int(rng.choice([1, 2, 4, 8])) * (2 if sched == "dualpipe" else 1)
    moe = rng.random() < 0.25
    parallel = {"tp": tp, "pp": pp, "dp": dp, "vpp": vpp, "schedule": sched, "sp": tp > 1, "zero": int(rng.integers(2))}
    if moe and dp > 1:
        parallel["ep"] = int(min(dp, 8))
    return {
        "model": _MOE if moe else _MODEL,
        "cluster": {"gpu": gpu, "num_gpus": tp * pp * dp, "node": node},
        "parallel": parallel,
        "training": {
            "seq_len": int(rng.choice([1024, 2048])),
            "global_batch": mb * num_mb * dp,
            "micro_batch": mb,
            "recompute": str(rng.choice(["none", "selective", "full"])),
            "precision": "bf16",
        },
        "power": {"mode": "tdp"},
    }


def _step(cfg: dict) -> float:
    return simulate_training(load_config(cfg)).step_time_s


def _merge(cfg: dict, section: str, **kv) -> dict:
    return {**cfg, section: {**cfg.get(section, {}), **kv}}


@pytest.fixture(scope="module")
def plans() -> list[tuple[dict, float]]:
    """:data:`PLANS` random plans that simulate, with their step times."""
    rng = np.random.default_rng(15)
    out = []
    while len(out) < PLANS:
        cfg = _plan(rng)
        try:
            out.append((cfg, _step(cfg)))
        except ClusterSimError:
            continue
    return out


def _violations(plans, vary) -> list[str]:
    bad = []
    for cfg, base in plans:
        other = vary(cfg)
        if other is None:
            continue
        t = _step(other)
        if t < base * (1 - EPS):
            bad.append(f"{cfg['parallel']} {cfg['training']}: {base:.6f} s -> {t:.6f} s")
    return bad


def test_enough_distinct_plans(plans):
    assert len(plans) >= 200
    assert len({str(c["parallel"]) for c, _ in plans}) >= 40


def test_lower_clock_never_shortens_a_step(plans):
    def slower(cfg):
        f_max = 1980 if cfg["cluster"]["gpu"].startswith("h100") else 1410
        return _merge(cfg, "power", sm_clock_mhz=0.7 * f_max)

    assert not _violations(plans, slower)


def test_lower_network_bandwidth_never_shortens_a_step(plans):
    def slower(cfg):
        if cfg["cluster"]["num_gpus"] <= 8:
            return _merge(cfg, "cluster", intra_link="pcie4")
        return _merge(cfg, "cluster", nic_link="roce-100")

    assert not _violations(plans, slower)


def test_more_replicas_at_the_same_per_gpu_work_never_shorten_a_step(plans):
    # ZeRO shards the optimizer over the replicas (per-GPU work shrinks with more of them): compare without it
    unsharded = [(c, b) if not c["parallel"]["zero"] else (_merge(c, "parallel", zero=0), None) for c, b in plans]
    unsharded = [(c, _step(c) if b is None else b) for c, b in unsharded]

    def doubled(cfg):
        p, t = cfg["parallel"], cfg["training"]
        out = _merge(cfg, "parallel", dp=p["dp"] * 2)
        out = _merge(out, "training", global_batch=t["global_batch"] * 2)
        return _merge(out, "cluster", num_gpus=cfg["cluster"]["num_gpus"] * 2)

    assert not _violations(unsharded, doubled)


def test_more_variability_never_shortens_a_step(plans):
    def noisier(cfg):
        return _merge(cfg, "variability", gpu_speed_cv=0.04, sync_jitter_cv=0.03)

    assert not _violations(plans, noisier)
