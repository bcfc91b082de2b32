"""Benchmark: serving-simulator speed at scale, Llama-3 70B TP4 on H100, continuous batching.

Capacity is found once with the same search as `clustersim serve --max-rate` (on 1,000 requests), or given
with ``--capacity``. The benchmark then simulates 10,000, 100,000 and 1,000,000 requests with Poisson arrivals
at 80% of it, in this process after a warm-up run, and reports simulated requests per second of wall time (and
of CPU time, which shared machines disturb less), iterations and the process's peak RSS so far (sizes run
smallest first, so each peak belongs to its size or a smaller one). A last case sends 8,000 requests at once
(t = 0), the queue-heavy pattern whose cost used to grow with the square of the requests.

Run: python benchmarks/bench_serving.py [--sizes 10000 100000] [--capacity 4.75]
"""

from __future__ import annotations

import argparse
import resource
import time
from typing import Any

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

#: Requests sent at once in the burst case.
BURST_REQUESTS = 8000


def with_traffic(n: int, arrivals: dict[str, Any]) -> dict[str, Any]:
    """The benchmark config with ``n`` requests arriving as ``arrivals``."""
    return {**CONFIG, "workload": {**CONFIG["workload"], "num_requests": n, "arrivals": arrivals}}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def timed(cfg: dict[str, Any]) -> tuple[Any, float, float]:
    """(result, wall s, CPU s) of one simulation."""
    wall, cpu = time.perf_counter(), time.process_time()
    res = simulate_serving(cfg)
    return res, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--capacity", type=float, default=None, help="req/s at the SLO (skips the search)")
    args = ap.parse_args()
    capacity = args.capacity
    if capacity is None:
        t0 = time.perf_counter()
        capacity, _ = max_rate(load_serving_config(CONFIG), attainment=0.9)
        took = time.perf_counter() - t0
        print(f"capacity at the SLO (90% attainment): {capacity:.2f} req/s (search took {took:.1f} s)")
    rate = 0.8 * capacity
    simulate_serving(with_traffic(500, {"kind": "poisson", "rate_per_s": rate}))  # warm-up: imports, caches
    for n in sorted(args.sizes):
        r, wall, cpu = timed(with_traffic(n, {"kind": "poisson", "rate_per_s": rate}))
        print(
            f"{n:>9,} requests at {rate:.2f} req/s: {wall:6.2f} s wall, {n / wall:7,.0f} simulated req/s "
            f"({n / cpu:,.0f} per CPU s), {r.iterations:,} iterations, peak RSS {peak_rss_mb():,.0f} MB; "
            f"p99 TTFT {r.ttft_s.p99:.3f} s, p99 TPOT {r.tpot_s.p99 * 1e3:.1f} ms"
        )
    r, wall, cpu = timed(with_traffic(BURST_REQUESTS, {"kind": "concurrency", "max_concurrency": BURST_REQUESTS}))
    print(
        f"{BURST_REQUESTS:,} requests at t=0: {wall:.2f} s wall ({cpu:.2f} s CPU), {r.iterations:,} iterations, "
        f"{r.preemptions} preemptions; p99 TTFT {r.ttft_s.p99:.1f} s"
    )


if __name__ == "__main__":
    main()
