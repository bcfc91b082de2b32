"""Published large-scale training runs (Llama 3 405B, MegaScale, Nemotron-4): sourced rows, simulated, errors printed.

Only sane bounds are asserted; the errors themselves are reported (with their sign) for reading, never tuned to.
"""

from __future__ import annotations

import math

import pytest

from simulator.validation.large_scale import UNITS, large_scale_config, large_scale_report, large_scale_rows, row_id
from simulator.validation.tables import summary


@pytest.fixture(scope="module")
def report():
    return large_scale_report()


def test_rows_are_sourced_and_large() -> None:
    rows = large_scale_rows()
    assert len({r["id"] for r in rows}) == len(rows)
    for r in rows:
        assert r["source"] and r["url"].startswith("https://") and len(r["quote"]) > 20, r["id"]
        assert r["metric"] in UNITS and float(r["value"]) > 0, r["id"]
    assert sum(int(r["num_gpus"]) > 1000 for r in rows) >= 10
    assert sum(int(r["num_gpus"]) > 1000 and not r["skip"] for r in rows) >= 10
    assert len({r["source"].split(" (")[0] for r in rows}) >= 3


def test_held_out_sources_are_not_used() -> None:
    text = " ".join(f"{r['source']} {r['url']}" for r in large_scale_rows()).lower()
    for banned in ("mlperf", "mlcommons", "docs.nvidia.com", "turing-nlg", "mt-nlg", "2104.04473"):
        assert banned not in text


def test_llama3_rows_use_the_uneven_stage_split() -> None:
    row = next(r for r in large_scale_rows() if r["id"] == "llama3-405b-8192gpu-seq8k")
    plan = large_scale_config(row)["parallel"]
    assert plan["layers_per_stage"] == [7] + [8] * 14 + [7] and sum(plan["layers_per_stage"]) == 126
    assert (plan["tp"], plan["pp"], plan["dp"], plan["cp"]) == (8, 16, 64, 1)


def test_every_simulable_row_runs_and_the_errors_are_reported(report) -> None:
    comps, skipped = report
    rows = {r["id"]: r for r in large_scale_rows()}
    assert all(reason for _, reason in skipped)
    assert len(comps) + len(skipped) == len(rows)
    assert sum(int(rows[row_id(c.label)]["num_gpus"]) > 1000 for c in comps) >= 10
    print()
    for c in sorted(comps, key=lambda c: -abs(c.error)):
        print(f"  {c.label:52s} published {c.published:9.4g}  predicted {c.predicted:9.4g}  error {c.error:+.1%}")
    for row, why in skipped:
        print(f"  skipped {row}: {why}")
    s = summary(comps)
    mape, worst, signed = s["mape"], s["max_abs_error"], s["mean_signed_error"]
    print(f"  MAPE {mape:.1%}, max |error| {worst:.1%}, mean signed error {signed:+.1%}")
    assert all(math.isfinite(c.predicted) and c.predicted > 0 for c in comps)
    assert s["mape"] < 0.5  # a loose guard against a broken mapping; the figures themselves are reported


def test_rows_without_a_stated_recompute_take_the_least_that_fits() -> None:
    """MegaScale does not say how Megatron-LM recomputed activations: 530B on 80 GB A100s needs 104 GB per GPU
    without recomputation, so its rows run selective recomputation; 175B fits without, so its rows run none."""
    from simulator.training.simulate import simulate_training

    rows = {r["id"]: r for r in large_scale_rows()}
    assert all(r["recompute"] == "fit" for r in rows.values() if r["id"].startswith("megascale-"))
    big = large_scale_config(rows["megascale-f9-megatron-530b-2240gpu"])
    small = large_scale_config(rows["megascale-t2-megatron-175b-256gpu"])
    assert big["training"]["recompute"] == "selective" and small["training"]["recompute"] == "none"
    assert simulate_training(big).fits_in_memory and simulate_training(small).fits_in_memory
    none = {**big, "training": {**big["training"], "recompute": "none"}}
    assert not simulate_training(none).fits_in_memory  # the default would not have run


def test_a_row_whose_simulated_plan_does_not_fit_says_so(report) -> None:
    """The published runs all fit in GPU memory; a row whose simulated plan does not carries a note with the
    simulated peak over the capacity, so the memory model's error is visible next to the throughput error."""
    import re

    from simulator.training.simulate import simulate_training

    comps, _ = report
    for c in comps:
        fits = simulate_training(c.config).fits_in_memory
        assert bool(c.note) == (not fits), c.label
        if c.note:
            need, have = map(float, re.findall(r"([\d.]+) GB", c.note))
            assert need > have > 0
