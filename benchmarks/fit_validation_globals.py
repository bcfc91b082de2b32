"""Fit the few global parameters of the training validation (reported in the README).

Two parameters, each global (never per row):
* the A100 tensor-core GEMM efficiency ``eff_max`` (the datasheet default is read off H100 data),
* the eager framework's host time per transformer layer, ``host_s_per_layer`` of the ``megatron-2021``
  stack (simulator/stacks/presets/megatron-2021.yaml), which only matters when kernels are too small to
  keep the GPU busy (vTrain's single-node runs), and its per-collective-call cost ``collective_call_s``.

Usage: python benchmarks/fit_validation_globals.py [--eff 0.6 0.65 0.7] [--host 0.8e-3 1e-3]
Prints MAPE per dataset for each pair on a grid; pick the pair with the lowest worst-dataset error.
"""

from __future__ import annotations

import argparse
import itertools
import time

from hwmodels.profile import datasheet_profile
from simulator.validation import tables as V


def profile_with(eff: float):
    prof = datasheet_profile("a100-sxm4-80gb")
    gemm = prof.curves["gemm"].model_copy(update={"eff_max": eff})
    return prof.model_copy(update={"curves": {**prof.curves, "gemm": gemm}})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eff", type=float, nargs="+", default=[0.65, 0.68, 0.71])
    ap.add_argument("--host", type=float, nargs="+", default=[0.9e-3, 1.0e-3, 1.1e-3])
    ap.add_argument("--call", type=float, nargs="+", default=[0.0])
    ap.add_argument("--skip-table1", action="store_true")
    ap.add_argument("--single-stride", type=int, default=4, help="use every n-th vTrain single-node row")
    args = ap.parse_args()
    for eff, host, call in itertools.product(args.eff, args.host, args.call):
        t0 = time.time()
        prof = profile_with(eff)
        # the published runs' stack with the two host costs under test (the preset keeps the chosen pair)
        V.VALIDATION_STACK = {
            "base": "megatron-2021",
            "name": "fit",
            "host_s_per_layer": host,
            "collective_call_s": call,
        }
        single = [c for i, c in enumerate(V.vtrain_single(prof)) if i % args.single_stride == 0]
        multi = V.vtrain_multi(prof)
        t1 = V.megatron_table1(prof) if not args.skip_table1 else single[:1]
        row = {name: V.summary(cs) for name, cs in [("table1", t1), ("single", single), ("multi", multi)]}
        print(
            f"eff={eff:.3f} host={host * 1e3:.2f}ms call={call * 1e3:.2f}ms  "
            + "  ".join(
                f"{k}: mape {v['mape']:.1%} max {v['max_abs_error']:.1%} bias {v['mean_signed_error']:+.1%}"
                for k, v in row.items()
            )
            + f"  ({time.time() - t0:.0f}s)",
            flush=True,
        )


if __name__ == "__main__":
    main()
