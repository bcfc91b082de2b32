"""Benchmark: 10,000 requests, Llama-3 70B TP4 on H100, continuous batching at 80% of capacity.

Capacity is found with the same binary search as `clustersim serve --max-rate` (on 1,000 requests);
the benchmark then simulates 10,000 requests at 80% of it and reports wall time and simulated
requests per second. Run: python benchmarks/bench_serving.py
"""

from __future__ import annotations

import time

from simulator.serving import load_serving_config, simulate_serving
from simulator.serving.capacity import max_rate

CONFIG = {
    "model": "llama3-70b",
    "gpu": "h100-sxm5-80gb",
    "tp": 4,
    "batching": {"kind": "continuous", "max_num_seqs": 256, "max_num_batched_tokens": 8192},
    "workload": {
        "num_requests": 1000,
        "arrivals": {"kind": "poisson", "rate_per_s": 4.0},
        "lengths": {
            "kind": "lognormal",
            "prompt_median": 1024,
            "prompt_sigma": 0.8,
            "output_median": 256,
            "output_sigma": 0.7,
        },
    },
    "slo": {"ttft_s": 2.0, "tpot_s": 0.1},
}


def main() -> None:
    t0 = time.perf_counter()
    capacity, _ = max_rate(load_serving_config(CONFIG), attainment=0.9)
    search = time.perf_counter() - t0
    rate = 0.8 * capacity
    cfg = {
        **CONFIG,
        "workload": {**CONFIG["workload"], "num_requests": 10_000, "arrivals": {"kind": "poisson", "rate_per_s": rate}},
    }
    t0 = time.perf_counter()
    r = simulate_serving(cfg)
    wall = time.perf_counter() - t0
    print(f"capacity at the SLO (90% attainment): {capacity:.2f} req/s (search took {search:.1f} s)")
    print(
        f"10,000 requests at {rate:.2f} req/s: {wall:.2f} s wall, {r.completed_requests / wall:,.0f} simulated "
        f"requests/s, {r.iterations:,} iterations; p99 TTFT {r.ttft_s.p99:.3f} s, p99 TPOT {r.tpot_s.p99 * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
