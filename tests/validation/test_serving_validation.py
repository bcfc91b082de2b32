"""Published serving benchmarks (vLLM, SGLang, TensorRT-LLM) vs the serving simulator: the harness, its errors.

The latency rows (E2E and TTFT) are simulated here and their MAPE asserted at the level the models reach, with a
small margin; every error is printed with its sign. ``clustersim validate serving`` prints the whole table.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hwmodels.errors import ClusterSimError
from simulator.serving.config import ServingConfig
from simulator.validation.serving import (
    COLUMNS,
    ENGINE_PRESETS,
    engine_preset,
    family,
    read_rows,
    row_config,
    serving_report,
    summary_by_family,
)

#: The MAPE each latency family reaches on the bundled table (E2E 8.2%, TTFT 15.0% when written), with a margin.
E2E_MAPE_MAX = 0.10
TTFT_MAPE_MAX = 0.17


def _latency_ids() -> list[str]:
    return [r["id"] for r in read_rows() if family(r["metric"]) in ("E2E", "TTFT")]


@pytest.fixture(scope="module")
def latency_report():
    return serving_report(only=_latency_ids())


def test_every_row_is_simulated_or_skipped_with_a_reason() -> None:
    rows = read_rows()
    assert rows and len({r["id"] for r in rows}) == len(rows)
    simulable = 0
    for r in rows:
        assert r["source"] and r["url"].startswith("http") and r["quote"], r["id"]
        try:
            cfg = row_config(r)
        except ClusterSimError as exc:
            reason = str(exc)
            assert reason and "\n" not in reason, r["id"]
            assert r["engine"].lower() not in ENGINE_PRESETS or "GPU" in reason or "model" in reason, reason
            continue
        ServingConfig.model_validate(cfg)  # a valid serving config
        simulable += 1
    assert simulable >= 20


def test_latency_rows_meet_the_acceptance_levels(latency_report) -> None:
    report = latency_report
    wanted = set(_latency_ids()) - {rid for rid, _ in report.skipped}
    assert {c.label for c in report.comparisons} == wanted  # every simulable latency row yields a comparison
    for c in report.comparisons:
        print(f"{c.label:58s} {report.presets[c.label]:12s} {c.published:9.4g} {c.predicted:9.4g} {c.error:+.1%}")
    fam = summary_by_family(report)
    print({k: f"MAPE {v['mape']:.1%} signed {v['mean_signed_error']:+.1%}" for k, v in fam.items()})
    assert fam["E2E"]["mape"] <= E2E_MAPE_MAX
    assert fam["TTFT"]["mape"] <= TTFT_MAPE_MAX


def test_versions_pick_the_engine_presets() -> None:
    assert engine_preset("vllm", "0.6.0") == "vllm-v0"
    assert engine_preset("vllm", "v0.10.1") == "vllm"
    assert engine_preset("vllm", "0.13.0") == "vllm-async"
    assert engine_preset("vllm", "main (build 1)") == "vllm"  # not stated: the default vllm preset
    assert engine_preset("sglang", "0.3.0") == "sglang-sync" and engine_preset("SGLang", "0.4.1") == "sglang"
    with pytest.raises(ClusterSimError, match="no serving preset"):
        engine_preset("lmdeploy", "0.10")


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    import csv

    with path.open("w", newline="") as fh:
        fh.write("# a comment line\n")
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def _row(**over: str) -> dict[str, str]:
    base = {c: "" for c in COLUMNS}
    base.update(
        id="fixture-latency",
        source="fixture",
        url="https://example.org",
        quote="q",
        engine="vllm",
        engine_version="0.6.0",
        gpu="h100-sxm5-80gb",
        num_gpus="1",
        tp="1",
        model="meta-llama/Llama-3.1-8B-Instruct",
        dataset="fixed",
        input_tokens="32",
        output_tokens="128",
        num_requests="8",
        request_rate="inf",
        max_concurrency="8",
        metric="e2e_mean_s",
        value="1.0",
        unit="s",
    )
    base.update(over)
    return base


def test_a_small_csv_runs_and_reports_skips(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "rows.csv",
        [
            _row(),
            _row(id="fixture-tpu", gpu="tpu-v5p"),
            _row(id="fixture-lmdeploy", engine="lmdeploy"),
            _row(id="fixture-ttft", metric="ttft_mean_s", value="0.05", request_rate="2", max_concurrency=""),
        ],
    )
    report = serving_report(path)
    assert [c.label for c in report.comparisons] == ["fixture-latency", "fixture-ttft"]
    reasons = dict(report.skipped)
    assert "tpu-v5p" in reasons["fixture-tpu"] and "preset" in reasons["fixture-lmdeploy"]
    latency = report.comparisons[0]
    assert 0.5 < latency.predicted < 2.0 and latency.config["stack"] == "vllm-v0"
    out = subprocess.run(
        [sys.executable, "-m", "simulator", "validate", "serving", "--file", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "fixture-latency" in out.stdout and "MAPE" in out.stdout and "skipped fixture-tpu" in out.stdout


def test_a_malformed_row_is_a_one_line_error(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.csv", [_row(value="fast")])
    with pytest.raises(ClusterSimError, match="fixture-latency.*not a number"):
        read_rows(bad)
    short = tmp_path / "short.csv"
    short.write_text(",".join(COLUMNS) + "\nonly,three,fields\n")
    with pytest.raises(ClusterSimError, match="wrong number of fields"):
        read_rows(short)
    out = subprocess.run(
        [sys.executable, "-m", "simulator", "validate", "serving", "--file", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "not a number" in lines[0] and "Traceback" not in out.stderr
