"""Benchmark: the full training plan search (issue #9) for GPT-3 175B on A100.

1. GPT-3 175B (preset) on 1,024 A100 80GB, global batch 1,536, today's defaults for what is not searched:
   candidates, feasible plans, screened plans per second per worker, simulated plans, wall time, best plans.
2. GPT-3 175B on 1,536 A100 as Megatron-LM SC'21 table 2 ran it (fp16, unfused attention, eager-framework host
   costs, configured as simulator.validation.tables does): the best plan against the published PTD-P plan
   (TP 8, PP 12, micro-batch 1), both simulated.

Run: python benchmarks/bench_plan_search.py [--workers 2] [--only 1024|1536]   (numbers go in the README)
"""

from __future__ import annotations

import argparse
import os
import time

from simulator.core.config import load_config
from simulator.search.plan import PlanSearchResult, SearchSpace, search_training_plans
from simulator.training import simulate_training
from simulator.validation import tables as V


def report(res: PlanSearchResult, top: int = 5, counts: bool = True) -> None:
    per_worker = res.plans_per_second / res.workers
    if counts:
        print(
            f"  candidates {res.plans_evaluated:,} (feasible {res.feasible:,}), simulated {res.plans_simulated}\n"
            f"  wall {res.wall_s:.1f} s on {res.workers} workers (screen {res.screen_s:.1f} s, simulation "
            f"{res.simulate_s:.1f} s): {res.plans_per_second:,.0f} plans/s, {per_worker:,.0f} plans/s per worker"
        )
        print("  pruned: " + "; ".join(f"{k} {v:,}" for k, v in res.pruned.items()))
    for i, p in enumerate(res.best[:top]):
        r = p.result
        print(
            f"  #{i + 1} {p.label():48s} step {r.step_time_s:7.3f} s  {r.tflops_per_gpu:6.1f} TFLOP/s/GPU  "
            f"MFU {r.mfu:5.1%}  {r.memory_per_gpu_gb.peak:5.1f} GB  (screened {p.screen_step_s:.3f} s, "
            f"screen rank {p.screen_rank})"
        )


def gpt3_1024(workers: int) -> None:
    print("GPT-3 175B, 1,024 x A100 80GB, global batch 1,536, seq 2,048 (defaults: bf16, flash attention)")
    res = search_training_plans("gpt3-175b", num_gpus=1024, gpu="a100-sxm4-80gb", global_batch=1536, workers=workers)
    report(res)


def gpt3_1536(workers: int) -> None:
    row = V.table2_row("ptdp", "174.6", 1536)
    gpus, gb = int(row["gpus"]), int(row["global_batch"])
    cfg = V.table2_config(row)
    published, spec = load_config(cfg), cfg["model"]
    tp, pp, mb = published.parallel.tp, published.parallel.pp, published.training.micro_batch
    t0 = time.perf_counter()
    pub = simulate_training(published)
    pub_s = time.perf_counter() - t0
    print(
        f"\nGPT-3 175B, {gpus:,} x A100 80GB, global batch {gb:,}, Megatron SC'21 setup (fp16, unfused attention, "
        "eager host costs; recompute searched)"
    )
    fixed = ["stack=megatron-2021", *(f"training.{k}={v}" for k, v in V.MEGATRON_2021.items() if k != "recompute")]

    def search(space: SearchSpace | None = None):
        return search_training_plans(
            spec,
            num_gpus=gpus,
            gpu=V.DGX_A100["gpu"],
            node=V.DGX_A100["node"],
            global_batch=gb,
            seq_len=2048,
            overrides=fixed,
            space=space,
            workers=workers,
        )

    res = search()
    report(res)
    # for context: the paper's own plan space (no CP, SP, selective recompute, ZeRO-2/3 or newer schedules)
    paper = SearchSpace(cp=(1,), sp=(False,), recompute=("full",), zero=(1,), schedule=("1f1b", "interleaved"))
    own = search(paper)
    print(f"  within the paper's own plan space ({own.plans_evaluated:,} candidates, {own.wall_s:.1f} s):")
    report(own, top=3, counts=False)
    best = res.best[0].result
    flops = V.megatron_flops(spec, gb, 2048)  # the paper's count (includes full recompute)
    print(
        f"  published PTD-P plan TP{tp} PP{pp} DP{gpus // (tp * pp)} mb{mb} (full recompute, 1F1B, ZeRO-1) "
        f"simulated in {pub_s:.2f} s: step {pub.step_time_s:.3f} s, {pub.tflops_per_gpu:.1f} model TFLOP/s/GPU "
        f"({flops / pub.step_time_s / gpus / 1e12:.0f} by the paper's count; published {row['tflops_per_gpu']})"
    )
    for name, r in (("best searched plan", best), ("best in the paper's space", own.best[0].result)):
        verdict = "at least as fast" if r.step_time_s <= pub.step_time_s else "SLOWER"
        print(
            f"  {name}: step {r.step_time_s:.3f} s, {pub.step_time_s / r.step_time_s:.2f}x the published "
            f"plan's speed ({verdict})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes (default 2)")
    parser.add_argument("--only", choices=["1024", "1536"], help="run one of the two searches")
    args = parser.parse_args()
    if args.only != "1536":
        gpt3_1024(args.workers)
    if args.only != "1024":
        gpt3_1536(args.workers)


if __name__ == "__main__":
    main()
