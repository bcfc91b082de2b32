"""The open-stack throughput table: sourced rows, simulated under their framework's stack preset."""

from __future__ import annotations

from simulator.core.resources import read_table
from simulator.validation.real_stacks import STACK_OF, real_stack_config, real_stacks
from simulator.validation.tables import summary


def test_rows_are_sourced_and_cover_enough_configurations() -> None:
    rows = read_table("real_stacks.csv")
    assert len(rows) >= 20
    assert len({r["source"] for r in rows}) >= 3
    for r in rows:
        assert r["url"].startswith("https://") and len(r["quote"]) > 20, r["id"]
        assert r["stack"] in STACK_OF, r["id"]
    assert len({r["id"] for r in rows}) == len(rows)


def test_every_simulable_row_runs_and_the_errors_are_reported() -> None:
    comps, skipped = real_stacks()
    assert len(comps) >= 20 and len({c.label.split("-")[0] for c in comps}) >= 3
    assert all(c.predicted > 0 for c in comps)
    assert all(reason for _, reason in skipped)
    s = summary(comps)
    assert s["mape"] < 0.5  # a loose guard against a broken mapping; the figures themselves are reported


def test_parallelism_strings_become_plans() -> None:
    row = {r["id"]: r for r in read_table("real_stacks.csv")}
    nemo = real_stack_config(row["nemo2407-llama3-70b-h100-64gpu-fp8"])
    assert {k: nemo["parallel"][k] for k in ("tp", "pp", "cp", "dp", "vpp")} == {
        "tp": 4,
        "pp": 4,
        "cp": 2,
        "dp": 2,
        "vpp": 5,
    }
    fsdp = real_stack_config(row["foundry-mpt7b-h100-8gpu-seq2048"])
    assert fsdp["parallel"]["zero"] == 3 and fsdp["parallel"]["dp"] == 8 and fsdp["stack"] == "fsdp-bf16"
