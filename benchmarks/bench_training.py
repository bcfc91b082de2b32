"""Benchmark: wall time to simulate one training step, and plans simulated per second.

Run: python benchmarks/bench_training.py   (numbers are reported in the README; not a test)

Targets (issue #15, in-process after warm-up, one core): Megatron 1T on 3,072 A100 under 50 ms per
``simulate_training`` call, Llama 3 405B on 16,384 H100 under 0.5 s. Each scenario also prints the
pipeline engine's share and what the SimPy engine takes for the same pipeline (the static schedules
are list-scheduled without SimPy; ``PipelineEngine.run_simpy`` is the reference they match).
"""

from __future__ import annotations

import itertools
import statistics
import time
from contextlib import contextmanager

from hwmodels.errors import ClusterSimError
from simulator.core.config import load_config
from simulator.training import simulate_training
from simulator.training.engine import PipelineEngine

GPT3_1024 = {
    "model": "gpt3-175b",
    "cluster": {"gpu": "a100-sxm4-80gb", "num_gpus": 1024, "node": "dgx-a100"},
    "parallel": {"tp": 8, "pp": 8, "dp": 16, "vpp": 2, "schedule": "interleaved", "sp": True, "zero": 1},
    "training": {"seq_len": 2048, "global_batch": 1024, "micro_batch": 1, "recompute": "selective"},
}
#: Narayanan et al. SC'21 trillion-parameter run as issue #15 states it: TP4 PP64 DP12, global batch 3,072,
#: micro-batch 4 (64 micro-batches per pipeline), full recompute, 1F1B
MEGATRON_1T = {
    "model": "megatron-gpt-1t",
    "cluster": {"gpu": "a100-sxm4-80gb", "num_gpus": 3072, "node": "dgx-a100"},
    "parallel": {"tp": 4, "pp": 64, "dp": 12, "sp": False},
    "training": {"seq_len": 2048, "global_batch": 3072, "micro_batch": 4, "recompute": "full"},
}
LLAMA3_16K = {
    "model": "llama3-405b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 16384, "node": "dgx-h100"},
    "parallel": {"tp": 8, "pp": 16, "dp": 128, "vpp": 2, "schedule": "interleaved", "sp": True, "zero": 1},
    "training": {"seq_len": 8192, "global_batch": 2048, "micro_batch": 1, "recompute": "none"},
}


@contextmanager
def engine_clock(spent: list[float], simpy: bool = False):
    """Add each pipeline-engine run's seconds to ``spent``; ``simpy`` forces the SimPy engine."""
    original = PipelineEngine.run

    def run(self: PipelineEngine):
        t0 = time.perf_counter()
        try:
            return self.run_simpy() if simpy else original(self)
        finally:
            spent.append(time.perf_counter() - t0)

    PipelineEngine.run = run
    try:
        yield
    finally:
        PipelineEngine.run = original


def timed(cfg: dict, repeats: int = 7, simpy: bool = False) -> tuple[float, float, float, object]:
    """(median s per call, min s per call, median engine s per call, last result), after one warm-up call."""
    conf = load_config(cfg)
    times, engine, result = [], [], None
    with engine_clock([], simpy):
        simulate_training(conf)  # warm-up: imports, profiles, cached schedule plans
    with engine_clock(engine, simpy):
        for _ in range(repeats):
            t0 = time.perf_counter()
            result = simulate_training(conf)
            times.append(time.perf_counter() - t0)
    per_call = len(engine) // repeats
    engine_s = [sum(engine[i * per_call : (i + 1) * per_call]) for i in range(repeats)]
    return statistics.median(times), min(times), statistics.median(engine_s), result


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
    for name, cfg, target_ms in [
        ("Megatron 1T, 3,072 A100, TP4 PP64 DP12 1F1B, 64 micro-batches", MEGATRON_1T, 50),
        ("Llama-3 405B, 16,384 H100, TP8 PP16 DP128 interleaved, 16 micro-batches", LLAMA3_16K, 500),
        ("GPT-3 175B, 1,024 A100, TP8 PP8 DP16 interleaved, 64 micro-batches", GPT3_1024, None),
    ]:
        secs, best, engine, r = timed(cfg)
        simpy_secs, _, simpy_engine, _ = timed(cfg, repeats=3, simpy=True)
        target = f" (target < {target_ms} ms)" if target_ms else ""
        print(
            f"{name}: {secs * 1e3:.1f} ms per simulate_training call{target} (median of 7, min {best * 1e3:.1f}); "
            f"pipeline engine {engine * 1e3:.1f} ms; with the SimPy engine {simpy_secs * 1e3:.0f} ms "
            f"(engine {simpy_engine * 1e3:.0f} ms); step {r.step_time_s:.2f} s, MFU {r.mfu:.1%}, "
            f"{len(r.timeline)} timeline events"
        )
    n, secs = sweep_rate()
    print(f"plan sweep: {n} GPT-3 plans in {secs:.1f} s = {n / secs:.1f} configurations/s (one core)")


if __name__ == "__main__":
    main()
