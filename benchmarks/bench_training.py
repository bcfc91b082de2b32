"""Benchmark: wall time to simulate one training step, and plans simulated per second.

Run: python benchmarks/bench_training.py   (numbers are reported in the README; not a test)
"""

from __future__ import annotations

import itertools
import statistics
import time

from hwmodels.errors import ClusterSimError
from simulator.core.config import load_config
from simulator.training import simulate_training

GPT3_1024 = {
    "model": "gpt3-175b",
    "cluster": {"gpu": "a100-sxm4-80gb", "num_gpus": 1024, "node": "dgx-a100"},
    "parallel": {"tp": 8, "pp": 8, "dp": 16, "vpp": 2, "schedule": "interleaved", "sp": True, "zero": 1},
    "training": {"seq_len": 2048, "global_batch": 1024, "micro_batch": 1, "recompute": "selective"},
}
LLAMA3_16K = {
    "model": "llama3-405b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 16384, "node": "dgx-h100"},
    "parallel": {"tp": 8, "pp": 16, "dp": 128, "vpp": 2, "schedule": "interleaved", "sp": True, "zero": 1},
    "training": {"seq_len": 8192, "global_batch": 2048, "micro_batch": 1, "recompute": "none"},
}


def timed(cfg: dict, repeats: int = 5) -> tuple[float, object]:
    conf = load_config(cfg)
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = simulate_training(conf)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def sweep_rate() -> tuple[int, float]:
    """Simulate every valid (tp, pp, micro-batch, schedule) plan of GPT-3 175B on 1,024 A100."""
    n, t0 = 0, time.perf_counter()
    for tp, pp, mb, sched in itertools.product([1, 2, 4, 8], [1, 2, 4, 8, 16], [1, 2], ["1f1b", "interleaved"]):
        dp = 1024 // (tp * pp)
        vpp = 2 if sched == "interleaved" else 1
        if sched == "interleaved" and pp == 1:
            continue
        cfg = {
            **GPT3_1024,
            "parallel": {"tp": tp, "pp": pp, "dp": dp, "vpp": vpp, "schedule": sched, "sp": tp > 1, "zero": 1},
            "training": {**GPT3_1024["training"], "global_batch": 1536, "micro_batch": mb},
        }
        try:
            simulate_training(load_config(cfg))
        except ClusterSimError:
            continue
        n += 1
    return n, time.perf_counter() - t0


def main() -> None:
    for name, cfg in [
        ("GPT-3 175B, 1,024 A100, TP8 PP8 DP16 interleaved, 64 micro-batches", GPT3_1024),
        ("Llama-3 405B, 16,384 H100, TP8 PP16 DP128 interleaved, 16 micro-batches", LLAMA3_16K),
    ]:
        secs, r = timed(cfg)
        print(
            f"{name}: {secs * 1e3:.0f} ms per simulated step (median of 5); "
            f"step {r.step_time_s:.2f} s, MFU {r.mfu:.1%}, {len(r.timeline)} timeline events"
        )
    n, secs = sweep_rate()
    print(f"plan sweep: {n} GPT-3 plans in {secs:.1f} s = {n / secs:.1f} configurations/s (one core)")


if __name__ == "__main__":
    main()
