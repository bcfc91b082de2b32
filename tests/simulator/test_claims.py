"""`clustersim claims`: every claim C1-C18 has a row with a verdict and a reason."""

from __future__ import annotations

import json

from simulator.cli import main
from simulator.validation.claims import CLAIMS, run_claims, to_markdown


def test_every_claim_has_a_row_with_a_verdict(tmp_path, capsys) -> None:
    out = tmp_path / "claims.md"
    assert main(["claims", "--json", "--out", str(out)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == [f"C{i}" for i in range(1, 19)]
    for r in rows:
        assert r["verdict"] in ("consistent", "inconsistent", "not modelled") and r["reason"]
    text = out.read_text()
    assert text.count("\n| C") == 18


def test_known_verdicts() -> None:
    by = {r.id: r for r in run_claims(["C3", "C13", "C14", "C5"])}
    assert (
        by["C3"].verdict == "inconsistent" and "no fp8" in by["C3"].technique_result.lower() or "FP8" in by["C3"].reason
    )
    assert by["C13"].verdict == "inconsistent" and "93.3%" in by["C13"].reason
    assert by["C14"].verdict == "inconsistent" and "21B" in by["C14"].reason
    assert by["C5"].verdict == "consistent"
    assert set(CLAIMS) == {f"C{i}" for i in range(1, 19)}
    assert "| C5 |" in to_markdown([by["C5"]])


def test_energy_and_carbon_claims_are_modelled() -> None:
    by = {r.id: r for r in run_claims(["C11", "C12"])}
    c11, c12 = by["C11"], by["C12"]
    assert c11.verdict != "not modelled" and "light power" in c11.predicted_effect
    assert "energy -" in c11.predicted_effect  # a phase-aware governor saves energy in the model too
    assert c12.verdict != "not modelled" and "t/year" in c12.technique_result
    # pause-resume (free to pick the cleanest hours) saves at least as much as one best start time
    saved = dict(part.split(" saves ") for part in c12.technique_result.split(", "))
    as_t = {k: float(v.split()[0].replace(",", "")) for k, v in saved.items()}
    assert as_t["pause-resume"] >= as_t["best-start"] > 0
