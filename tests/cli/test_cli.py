"""The clustersim CLI: listings, the quickstart job, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from simulator.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_gpus_json_lists_the_catalogue(capsys) -> None:
    code, out, _ = run(capsys, "gpus", "--json")
    rows = json.loads(out)
    ids = {r["id"] for r in rows}
    assert code == 0 and {"a100-sxm4-80gb", "h100-sxm5-80gb", "t4-16gb", "l4-24gb", "h200-sxm-141gb"} <= ids
    h100 = next(r for r in rows if r["id"] == "h100-sxm5-80gb")
    for key in ("bf16_tflops", "memory_gb", "memory_bandwidth_gbps", "tdp_w"):
        assert h100[key] > 0


def test_models_json_lists_every_preset_with_counts(capsys) -> None:
    code, out, _ = run(capsys, "models", "--json")
    rows = json.loads(out)
    assert code == 0 and len(rows) >= 20
    for r in rows:
        assert r["total_params"] >= r["active_params"] > 0
    v3 = next(r for r in rows if r["name"] == "deepseek-v3")
    assert v3["total_params"] == pytest.approx(671e9, rel=0.01)


def test_tables_are_readable(capsys) -> None:
    for cmd in ("gpus", "models", "nodes"):
        code, out, _ = run(capsys, cmd)
        assert code == 0 and len(out.splitlines()) > 5


def test_costs_quickstart_prints_a_summary(capsys) -> None:
    code, out, _ = run(capsys, "costs")
    assert code == 0
    assert "llama3-8b on h100-sxm5-80gb" in out and "MFU" in out and "tokens/s/GPU" in out


def test_costs_json_and_overrides(capsys) -> None:
    code, out, _ = run(capsys, "costs", "--json", "--set", "parallel.tp=4", "--set", "parallel.dp=2")
    data = json.loads(out)
    assert code == 0 and data["tp"] == 4 and data["tokens_per_s_per_gpu"] > 0


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["costs", "--set", "cluster.gpu=h100-sxm9"], "unknown GPU 'h100-sxm9'"),
        (["costs", "--set", "model=llama9"], "unknown model preset 'llama9'"),
        (["costs", "--set", "training.seq_len=-4"], "training.seq_len"),
        (
            ["costs", "--set", "parallel.tp=3", "--set", "parallel.dp=1", "--set", "cluster.num_gpus=3"],
            "tp=3 does not divide",
        ),
        (["costs", "/nonexistent.yaml"], "cannot read config"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv, needle) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_console_script_has_no_traceback_on_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "simulator", "costs", "--set", "cluster.gpu=nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("clustersim: error: cluster.gpu: unknown GPU") and "Traceback" not in proc.stderr


def test_import_does_not_pull_torch_or_streamlit() -> None:
    code = "import simulator, hwmodels, sys; print('torch' in sys.modules, 'streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


def test_train_default_prints_a_summary(capsys) -> None:
    code, out, _ = run(capsys, "train")
    assert code == 0
    for needle in ("step time", "MFU", "pipeline bubble", "exposed comm", "memory per GPU", "time to train"):
        assert needle in out


def test_train_json_and_trace(capsys, tmp_path) -> None:
    trace = tmp_path / "step.json"
    code, out, _ = run(
        capsys, "train", "--json", "--set", "parallel.pp=16", "--set", "parallel.dp=8", "--trace", str(trace)
    )
    data = json.loads(out)
    assert code == 0 and data["step_time_s"] > 0 and "memory_per_gpu_gb" in data
    assert json.loads(trace.read_text())["traceEvents"]


def test_train_bad_plan_exits_2(capsys) -> None:
    code, _, err = run(capsys, "train", "--set", "parallel.pp=3")
    assert code == 2 and "must equal cluster.num_gpus" in err


def test_validate_training_prints_errors(capsys) -> None:
    code, out, _ = run(capsys, "validate", "training", "--table", "megatron-table2")
    assert code == 0 and "MAPE" in out and "ptdp" in out


def test_serve_json_has_the_promised_keys(capsys) -> None:
    code, out, _ = run(capsys, "serve", "--json", "--set", "workload.num_requests=80")
    data = json.loads(out)
    assert code == 0
    for key in (
        "throughput_tokens_per_s",
        "throughput_requests_per_s",
        "completed_requests",
        "preemptions",
        "kv_peak_utilization",
        "goodput_requests_per_s",
    ):
        assert key in data
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        assert set(data[key]) == {"mean", "p50", "p90", "p99"}
    assert data["completed_requests"] == 80


def test_serve_summary_and_max_rate(capsys) -> None:
    code, out, _ = run(capsys, "serve", "--set", "workload.num_requests=60")
    assert code == 0 and "TTFT" in out and "goodput" in out
    code, out, err = run(capsys, "serve", "--max-rate", "--set", "workload.num_requests=60")
    assert code == 0 and "highest arrival rate meeting the SLO" in out and "SLO attainment" in err


def test_serve_bad_input_exits_2(capsys) -> None:
    code, _, err = run(capsys, "serve", "--set", "workload.arrivals.rate_per_s=-1")
    assert code == 2 and "rate_per_s" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "serve", "--set", "batching.kind=magic")
    assert code == 2 and "batching" in err


def test_energy_commands(capsys) -> None:
    import json as _json

    from simulator.cli import main as cli

    assert cli(["validate", "energy", "--json"]) == 0
    rows = _json.loads(capsys.readouterr().out)
    assert len(rows) == 7 and all(abs(r["tco2e_error"]) <= 0.01 for r in rows)
    assert cli(["dvfs", "--clocks", "1000,1980", "--json"]) == 0
    out = _json.loads(capsys.readouterr().out)
    assert [p["value"] for p in out["points"]] == [1000.0, 1980.0]
    assert out["points"][0]["time_s"] >= out["points"][1]["time_s"]
    assert cli(["train", "--set", "power.power_limit_w=100"]) == 2  # below active idle: one line, exit 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "power" in err
    assert cli(["plan", "serve", "--rate", "0"]) == 2
    assert "rate" in capsys.readouterr().err


# ---- clustersim example ----------------------------------------------------------------------------


def test_example_writes_the_config_into_the_current_folder(capsys, tmp_path, monkeypatch) -> None:
    from simulator.core.resources import example_path

    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "example", "quickstart.yaml")
    written = tmp_path / "quickstart.yaml"
    assert code == 0 and written.read_text() == example_path("quickstart.yaml").read_text()
    assert str(written) in out
    code, out, _ = run(capsys, "costs", str(written))  # the copy is a runnable config
    assert code == 0 and "MFU" in out


def test_example_in_a_subfolder_is_written_under_its_base_name(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, _ = run(capsys, "example", "claims/C5.yaml", "--out", "cfg")
    assert code == 0 and (tmp_path / "cfg" / "C5.yaml").is_file()


def test_example_refuses_to_overwrite_without_force(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart.yaml").write_text("mine\n")
    code, out, err = run(capsys, "example", "quickstart.yaml")
    assert code == 2 and out == ""
    assert err.startswith("clustersim: error: ") and "--force" in err and err.count("\n") == 1
    assert (tmp_path / "quickstart.yaml").read_text() == "mine\n"
    code, _, _ = run(capsys, "example", "quickstart.yaml", "--force")
    assert code == 0 and (tmp_path / "quickstart.yaml").read_text() != "mine\n"


def test_example_list_names_every_bundled_example(capsys) -> None:
    code, out, _ = run(capsys, "example", "--list")
    names = out.splitlines()
    assert code == 0 and {"quickstart.yaml", "sweeps/llama3-8b-serving.yaml", "claims/C5.yaml"} <= set(names)
    assert run(capsys, "example")[1] == out  # no NAME lists too


def test_example_unknown_name_exits_2_with_one_line(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "example", "nope.yaml")
    assert code == 2 and out == "" and list(tmp_path.iterdir()) == []
    assert err.startswith("clustersim: error: ") and "nope.yaml" in err and err.count("\n") == 1
    code, _, err = run(capsys, "example", "C5.yaml")  # a bare base name points at the full one
    assert code == 2 and "claims/C5.yaml" in err and err.count("\n") == 1


def test_ctrl_c_exits_130_with_one_line(capsys, monkeypatch) -> None:
    from simulator.cli import catalogue

    def interrupted() -> list:
        raise KeyboardInterrupt

    monkeypatch.setattr(catalogue, "list_gpus", interrupted)
    code, out, err = run(capsys, "gpus")
    assert code == 130 and out == "" and err.count("\n") == 1 and "Traceback" not in err


def test_python_m_calibration_is_clustersim_calibrate_without_the_simulator_cli() -> None:
    code = "import sys, calibration.cli; print('simulator.cli' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
    proc = subprocess.run([sys.executable, "-m", "calibration", "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: clustersim calibrate")
