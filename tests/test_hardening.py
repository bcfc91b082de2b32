"""Regression tests of issue #17's crash and rough-edge items: bad input is one line (never a traceback),
infinities and absurd integers are refused, infeasible DVFS caps are rows, units and labels say what they are.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hwmodels.checks import MAX_TOKENS, check_count, check_iteration_args, check_numbers
from hwmodels.errors import ClusterSimError
from hwmodels.fileio import atomic_write, remove_stale_files
from hwmodels.profile import PowerParams, datasheet_profile, load_profile
from simulator.cli import main
from simulator.core.config import load_config
from simulator.core.resources import example_path
from simulator.models import get_model

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = example_path("quickstart.yaml")
H100 = "h100-sxm5-80gb"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, needle: str = "") -> None:
    """Exit 2 with exactly one short 'clustersim: error:' line (and the needle in it)."""
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("clustersim: error:") and len(err) < 600, err[:600]
    assert needle in err, err


def quickstart() -> dict:
    return yaml.safe_load(QUICKSTART.read_text())


# ---- item 5: tracebacks on bad input ----------------------------------------------------------------


def test_5000_digit_integer_in_a_config_file_or_override(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "big.yaml"
    cfg.write_text(QUICKSTART.read_text().replace("seq_len: 8192", "seq_len: " + "1" * 5000))
    assert_one_line_error(*run(capsys, "train", str(cfg))[::2], "number too long")
    assert_one_line_error(*run(capsys, "train", "--set", "training.seq_len=" + "9" * 5000)[::2], "training.seq_len")
    with pytest.raises(ClusterSimError, match="digits long"):  # the Python API: a dict holding such an int
        load_config({**quickstart(), "seed": 10**5000})


def test_hf_config_with_model_type_a_list() -> None:
    with pytest.raises(ClusterSimError, match="model_type must be a string"):
        get_model({"model_type": ["llama"], "num_hidden_layers": 2})
    with pytest.raises(ClusterSimError):
        get_model({"architectures": [["LlamaForCausalLM"]], "num_hidden_layers": 2})


def test_megabyte_model_name_is_a_short_error(capsys) -> None:
    for name in ("x" * 1_000_000, "a/" + "x" * 1_000_000):
        with pytest.raises(ClusterSimError) as err:
            get_model(name)
        assert len(str(err.value)) < 600
    assert_one_line_error(*run(capsys, "train", "--set", "model=" + "x" * 200_000)[::2], "unknown model preset")


@pytest.mark.parametrize("value", ["1.0e+76", str(10**76), "1e76"])
def test_huge_seq_len(capsys, value: str) -> None:
    assert_one_line_error(*run(capsys, "train", str(QUICKSTART), "--set", f"training.seq_len={value}")[::2], "seq_len")


def test_infinite_override_of_a_serving_config(capsys) -> None:
    code, _, err = run(capsys, "serve", "--set", "kv.host_gb=.inf")
    assert_one_line_error(code, err, "kv.host_gb=inf must be a finite number")


def test_claims_only_unknown_or_lower_case(capsys) -> None:
    from simulator.validation.claims import claim_ids

    assert_one_line_error(*run(capsys, "claims", "--only", "C99")[::2], "no claim 'C99'; choose from C1")
    assert claim_ids(["c5", "5", " C17 "]) == ["C5", "C5", "C17"]
    code, out, err = run(capsys, "claims", "--only", "c5", "--json")
    assert code == 0 and '"id": "C5"' in out and "Traceback" not in err


def test_ctrl_c_during_a_sweep_is_one_line_and_exit_130(tmp_path: Path, capsys, monkeypatch) -> None:
    import simulator.search.sweep.run as sweep_run

    spec = tmp_path / "sweep.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "base": str(QUICKSTART),
                "overrides": {"training.global_batch": 8},
                "space": {"training.micro_batch": [1, 2, 4, 8], "seed": [0, 1]},
            }
        )
    )
    real, calls = sweep_run.evaluate_point, []

    def interrupted_third(*args: object, **kwargs: object) -> dict:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_run, "evaluate_point", interrupted_third)
    code, out, err = run(capsys, "sweep", str(spec), "--cache-dir", str(tmp_path / "cache"), "--json")
    assert code == 130 and out == "" and "Traceback" not in err
    assert err.strip() == (
        f"clustersim: interrupted; 2 of 8 points cached in {tmp_path / 'cache'}, rerun the same command to resume"
    )
    monkeypatch.setattr(sweep_run, "evaluate_point", real)  # the rerun resumes from the two cached points
    code, out, _ = run(capsys, "sweep", str(spec), "--cache-dir", str(tmp_path / "cache"), "--json")
    assert code == 0 and '"cached": 2' in out


# ---- item 6: public API entry points check their arguments -------------------------------------------

BAD = [None, "x", -1, 0, 1.5, math.nan, math.inf, True, [1], {}, 10**30]


def test_gemm_time_bad_arguments_are_cluster_sim_errors() -> None:
    prof = datasheet_profile(H100)
    for bad in BAD:
        for args in ((bad, 64, 64), (64, bad, 64), (64, 64, bad)):
            with pytest.raises(ClusterSimError):
                prof.gemm_time(*args)
    for nbytes in (math.nan, math.inf, -1.0, "x"):
        with pytest.raises(ClusterSimError, match="nbytes"):
            prof.memory_op_time(nbytes)
    with pytest.raises(ClusterSimError):
        prof.attention_decode_time(2, [128, math.nan], 32, 8, 128)
    assert prof.gemm_time(4096, 4096, 4096) > 0 and prof.attention_decode_time(2, [128, 64], 32, 8, 128) > 0


@pytest.mark.parametrize("bad", [5, 1.5, [1], {}, b"x", True, "a" * 5000, "x" * 300 + ".json", "bad\0name"])
def test_load_profile_bad_arguments_are_cluster_sim_errors(bad: object) -> None:
    with pytest.raises(ClusterSimError):
        load_profile(bad)  # type: ignore[arg-type]
    with pytest.raises(ClusterSimError):
        load_profile("datasheet", gpu=bad)  # type: ignore[arg-type]


def test_iteration_argument_checks() -> None:
    assert check_iteration_args(H100, 2, 1, [128, (64, 512)], [100, 200]) == ([(128, 0), (64, 512)], [100, 200])
    bad_calls = [
        ((H100, 4, 5, [128], []), "spans nodes of 8 GPUs unevenly"),  # 20 GPUs: not whole DGX nodes
        ((H100, 0, 1, [128], []), "tp=0"),
        ((H100, "x", 1, [128], []), "tp must be an integer"),
        ((H100, 1, 1, 5, []), "prefill_tokens must be a list"),
        ((H100, 1, 1, [(1,)], []), "chunk length or a (chunk, context) pair"),
        ((H100, 1, 1, [math.inf], []), "whole number"),
        ((H100, 1, 1, [10**30], []), "between 1 and"),
        ((H100, 1, 1, [], [0]), "decode_contexts[0]=0"),
        ((H100, 1, 1, [], None), "decode_contexts must be a list"),
        ((None, 1, 1, [], []), "gpu must be a GPU id"),
    ]
    for args, needle in bad_calls:
        with pytest.raises(ClusterSimError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            check_iteration_args(*args)
    with pytest.raises(ClusterSimError, match="weight_dtype"):
        check_iteration_args(H100, 1, 1, [128], [], weight_dtype="fp7")
    assert check_count("n", 5.0) == 5 and MAX_TOKENS == 10**9


def test_predict_iteration_time_tp4_pp5_is_one_line() -> None:
    from simulator.serving.iteration import predict_iteration_time

    with pytest.raises(ClusterSimError):
        predict_iteration_time("llama3-8b", H100, 4, [128], pp=5)
    for prefill in ([-1], ["x"], [math.inf], [(1,)], 5, None):
        with pytest.raises(ClusterSimError):
            predict_iteration_time("llama3-8b", H100, 1, prefill)


# ---- item 8: finite floats, bounded counts, plans caught at validation ---------------------------------


@pytest.mark.parametrize(
    "override",
    [
        "site.pue=.inf",
        "site.price_usd_per_gpu_hour=.inf",
        "site.grid_kg_per_kwh=.nan",
        "site.market_kg_per_kwh=.inf",
        "power.power_limit_w=.inf",
        "training.tokens=.inf",
    ],
)
def test_infinity_is_refused_in_a_training_config(capsys, override: str) -> None:
    assert_one_line_error(*run(capsys, "train", str(QUICKSTART), "--set", override)[::2], "must be a finite number")


def test_infinity_is_refused_in_the_python_api() -> None:
    with pytest.raises(ClusterSimError, match=r"site\.pue=inf"):
        load_config({**quickstart(), "site": {"pue": math.inf}})
    with pytest.raises(ValueError):  # pydantic's own check on every float field (allow_inf_nan=False)
        PowerParams(idle_w=60, active_idle_w=100, compute_dynamic_w=400, memory_dynamic_w=100, power_limit_w=math.inf,
                    max_sm_clock_mhz=1980)  # fmt: skip
    with pytest.raises(ClusterSimError, match="digits long"):
        check_numbers({"a": [1, {"b": 2**60}]})


def test_carbon_and_energy_functions_refuse_infinity() -> None:
    from simulator.energy import carbon

    calls = [
        lambda: carbon.operational_kgco2e(10, math.inf),
        lambda: carbon.operational_kgco2e(10, 0.4, market_kg_per_kwh=math.inf),
        lambda: carbon.embodied_kgco2e(H100, 10, lifetime_years=math.inf),
        lambda: carbon.tdp_energy_mwh(10, 700, pue=math.inf),
        lambda: carbon.tdp_tco2e(10, 700, 1.1, math.inf),
        lambda: carbon.job_footprint(H100, 10, pue=1.1, intensity=math.inf),
    ]
    for call in calls:
        with pytest.raises(ClusterSimError, match="finite"):
            call()


def test_ep_that_cannot_be_placed_is_caught_at_validation() -> None:
    with pytest.raises(ClusterSimError, match=r"ep\*tp\*cp = 8\*8\*1 = 64 GPUs"):
        load_config({**quickstart(), "model": "mixtral-8x7b", "parallel": {"tp": 8, "ep": 8}})
    assert load_config({**quickstart(), "model": "mixtral-8x7b", "parallel": {"tp": 1, "dp": 8, "ep": 8}})


def test_1e30_token_trace_is_one_line(tmp_path: Path, capsys) -> None:
    trace = tmp_path / "huge.csv"
    trace.write_text("prompt_tokens,output_tokens\n1e30,5\n")
    argv = ["serve", "--set", "workload.lengths.kind=trace", "--set", f"workload.trace.path={trace}"]
    assert_one_line_error(*run(capsys, *argv, "--set", "workload.num_requests=5")[::2], "prompt_tokens")


@pytest.mark.parametrize("kind", ["deep-json", "truncated-gz", "not-gz", "latin1"])
def test_broken_traces_are_one_line(tmp_path: Path, capsys, kind: str) -> None:
    data = gzip.compress(b"prompt_tokens,output_tokens\n" + b"5,5\n" * 1000)
    files = {
        "deep-json": ("deep.jsonl", ("[" * 100_000 + "]" * 100_000 + "\n").encode()),
        "truncated-gz": ("cut.csv.gz", data[: len(data) // 2]),
        "not-gz": ("noise.csv.gz", os.urandom(64)),
        "latin1": ("latin.csv", b"prompt_tokens,output_tokens\n\xff\xfe,5\n"),
    }
    name, content = files[kind]
    path = tmp_path / name
    path.write_bytes(content)
    argv = ["serve", "--set", "workload.lengths.kind=trace", "--set", f"workload.trace.path={path}"]
    assert_one_line_error(*run(capsys, *argv, "--set", "workload.num_requests=5")[::2])


def test_a_directory_as_a_trace_is_one_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "folder.csv"
    path.mkdir()
    argv = ["serve", "--set", "workload.lengths.kind=trace", "--set", f"workload.trace.path={path}"]
    assert_one_line_error(*run(capsys, *argv, "--set", "workload.num_requests=5")[::2], "folder.csv")


# ---- item 10: an impossible DVFS cap is a row, not an abort --------------------------------------------


def test_dvfs_caps_with_an_infeasible_one(capsys) -> None:
    from simulator.cli.dvfs_report import dvfs_summary, dvfs_text
    from simulator.search import dvfs

    points = dvfs.sweep(str(QUICKSTART), caps_w=[300, 400])  # the README's own example
    bad, good = points
    assert not bad.feasible and "cannot be met" in bad.reason and good.feasible
    assert dvfs.front(points) == [good] and dvfs.optimum(points) is good
    text = dvfs_text(points)
    assert "infeasible" in text and "300 W is infeasible: power.power_limit_w=300 W cannot be met" in text
    summary = dvfs_summary(points)
    assert summary["points"][0]["feasible"] is False and summary["points"][0]["time_s"] is None
    code, out, err = run(capsys, "dvfs", "--caps", "300,400")
    assert code == 0 and "400" in out and "Traceback" not in err
    with pytest.raises(ClusterSimError, match="cannot be met"):  # nothing feasible: the reason, once
        dvfs.sweep(str(QUICKSTART), caps_w=[100])


def test_dvfs_clock_table_has_one_clock_column() -> None:
    from simulator.cli.dvfs_report import dvfs_text
    from simulator.search import dvfs

    header = dvfs_text(dvfs.sweep(str(QUICKSTART), clocks_mhz=[1200, 1980])).splitlines()[0]
    assert header.count("MHz") == 1 and header.startswith("clock MHz")


# ---- item 11: killing `clustersim app` leaves no server behind -------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_killing_clustersim_app_releases_the_port() -> None:
    port = _free_port()
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    cmd = [sys.executable, "-m", "simulator", "app", "--headless", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 45
        while not _listening(port) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert _listening(port), "the app never started listening"
        proc.send_signal(signal.SIGTERM)  # the PID `clustersim app` reported is the server itself (execv)
        proc.wait(timeout=20)
        deadline = time.monotonic() + 10
        while _listening(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _listening(port), "an orphaned server still holds the port"
    finally:
        if proc.poll() is None:
            proc.kill()


# ---- item 13: the power chart says the limit holds on the average ---------------------------------------


def test_power_chart_labels_the_limit_and_draws_the_window_average() -> None:
    from simulator.app import charts

    from simulator.energy.power_trace import power_trace
    from simulator.training import simulate_training

    cfg = {
        "model": "llama3.2-1b",
        "cluster": {"gpu": H100, "num_gpus": 8},
        "parallel": {"tp": 1, "pp": 2, "dp": 4},
        "training": {"seq_len": 2048, "global_batch": 32, "micro_batch": 1},
    }
    r = simulate_training(cfg)
    fig = charts.power_timeline(power_trace(r), 700.0)
    texts = [a.text for a in fig.layout.annotations]
    assert "power limit 700 W (applies to the average)" in texts
    assert any(t.startswith("window average") for t in texts) and len(texts) == 3  # both lines keep their labels
    average = next(s.y0 for s in fig.layout.shapes if s.line.dash == "dot")
    assert average == pytest.approx(r.power["avg_gpu_power_w"])


# ---- item 14: help and docs say what the defaults are --------------------------------------------------


def test_help_names_each_commands_default_config(capsys) -> None:
    from simulator.cli import build_parser

    helps = {}
    for cmd in ("train", "serve", "dvfs", "costs"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([cmd, "--help"])
        helps[cmd] = " ".join(capsys.readouterr().out.split())
    assert "gpt3-175b-a100.yaml, GPT-3 175B on 1,024 A100" in helps["train"]
    assert "llama3-8b-h100.yaml, Llama-3 8B on one H100" in helps["serve"]  # argparse wraps at the hyphen
    assert "quickstart.yaml" in helps["dvfs"] and "quickstart" not in helps["train"] + helps["serve"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    assert "power & carbon" in capsys.readouterr().out
    readme = (REPO / "README.md").read_text()
    assert "opens seven pages" in readme and "`/power`" in readme and "about 4-5 minutes" in readme


# ---- item 15: claims show the claim, the simulation and the reason ------------------------------------


def test_claims_text_shows_claimed_simulated_and_why() -> None:
    from simulator.validation.claims import format_claims, run_claims

    text = format_claims(run_claims(["C5"]))
    for label in ("claimed", "simulated", "why"):
        assert f"    {label}" in text
    assert text.startswith("C5  ") and (": CONSISTENT" in text or ": INCONSISTENT" in text)


def test_text_columns_are_left_aligned_with_their_header() -> None:
    from simulator.cli.textfmt import table

    lines = table([{"id": "C1", "what": "short", "n": 5}, {"id": "C10", "what": "a longer text", "n": 1234}],
                  [("id", "claim"), ("what", "technique"), ("n", "count")]).splitlines()  # fmt: skip
    assert lines[0].index("technique") == lines[2].index("short") == lines[3].index("a longer text")
    assert lines[0].rstrip().endswith("count") and lines[3].endswith("1,234")


# ---- item 16: units, names and labels ---------------------------------------------------------------


def test_gpu_memory_is_gib_and_named_so(capsys) -> None:
    from hwmodels.catalogue import get_gpu

    assert get_gpu(H100).memory_bytes == 80 * 2**30
    code, out, _ = run(capsys, "gpus")
    assert code == 0 and "memory GiB" in out and "85.9 GB" in out


def test_training_frame_column_names_match_their_units() -> None:
    from simulator.training import simulate_training

    cols = set(simulate_training(str(QUICKSTART)).to_frame().columns)
    assert {"memory_stage", "memory_inflight_microbatches", "memory_peak_gb", "memory_capacity_gb"} <= cols
    assert not {"memory_stage_gb", "memory_inflight_microbatches_gb"} & cols


def test_sweep_prune_reasons_show_the_numbers() -> None:
    import pandas as pd

    from simulator.cli.search import _pruned_examples

    frame = pd.DataFrame(
        {
            "status": ["invalid", "invalid", "ok"],
            "reason": [
                "parallel.dp=auto: tp*pp*cp = 8*16*1 = 128 does not divide cluster.num_gpus=64",
                "parallel.dp=auto: tp*pp*cp = 4*32*1 = 128 does not divide cluster.num_gpus=64",
                None,
            ],
        }
    )
    (example,) = _pruned_examples(frame).values()
    assert "8*16*1 = 128" in example and "N*N" not in example


def test_vtrain_row_labels_are_unique() -> None:
    from simulator.validation.tables import _vtrain_label, read_table

    for name in ("vtrain_single_node.csv", "vtrain_multi_node.csv"):
        seen: dict[str, int] = {}
        plans = [
            {"tp": r["tensor_parallelism"], "pp": r["pipeline_parallelism"], "dp": r["data_parallelism"]}
            for r in read_table(name)
        ]
        labels = [_vtrain_label(r, plan, seen) for r, plan in zip(read_table(name), plans, strict=True)]
        assert len(labels) == len(set(labels))


def test_interleaved_schedule_with_one_chunk_says_what_to_set() -> None:
    with pytest.raises(ClusterSimError, match="needs parallel.vpp >= 2"):
        load_config({**quickstart(), "parallel": {"tp": 8, "schedule": "interleaved"}})


def test_atomic_write_respects_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "out.json", "{}")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        path.chmod(0o600)
        atomic_write(path, "{}")  # replacing a file keeps its mode
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_stale_uploads_are_removed(tmp_path: Path) -> None:
    old, fresh = tmp_path / "trace-old.csv", tmp_path / "trace-new.csv"
    for p in (old, fresh):
        p.write_text("x")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    assert remove_stale_files(tmp_path, "*.csv") == 1
    assert not old.exists() and fresh.exists()


# ---- residuals of the hostile-input corpus (benchmarks/hostile_inputs.py) ------------------------------------


def test_serving_on_a_part_filled_node_reports_energy(capsys) -> None:
    """12 GPUs (1.5 DGX nodes) simulate and print; the node power is charged for the share of nodes used."""
    cfg = ["--set", "workload.num_requests=8", "--set", "workload.arrivals.rate_per_s=4"]
    code, out, err = run(capsys, "serve", *cfg, "--set", "replicas=12", "--json")
    assert code == 0 and "Traceback" not in err, err
    result = json.loads(out)
    assert result["num_gpus"] == 12 and result["energy_j"]["node"] > 0


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--set", "parallel.tp.x=1"], "'tp' is a value, not a section"),
        (["dvfs", "--caps", ",,,"], "is not a number"),
        (["dvfs", "--clocks", "abc"], "'abc' in 'abc' is not a number"),
        (["plan", "train", "llama3-8b", "--gpus", str(10**12), "--gpu", H100], "beyond interactive scale"),
        (["plan", "serve", "--rate", "inf"], "positive, finite rate"),
        (["plan", "serve", "--rate", "2", "--requests", str(10**9)], "per capacity search must be 1 to"),
    ],
)
def test_bad_flags_are_one_line_errors(capsys, argv: list[str], needle: str) -> None:
    start = time.perf_counter()
    assert_one_line_error(*run(capsys, *argv)[::2], needle)
    assert time.perf_counter() - start < 5.0


def test_claims_out_naming_a_directory(tmp_path: Path, capsys) -> None:
    assert_one_line_error(*run(capsys, "claims", "--only", "C1", "--out", str(tmp_path))[::2], "is a directory")


def test_trace_and_routing_paths_too_long_for_the_filesystem(tmp_path: Path) -> None:
    from simulator.moe.routing import load_trace as load_routing_trace
    from simulator.serving.workload import TraceSpec, load_trace

    long_path = str(tmp_path / ("x" * 5000))
    with pytest.raises(ClusterSimError, match="not found"):
        load_trace(TraceSpec(path=long_path))
    with pytest.raises(ClusterSimError, match="not found"):
        load_routing_trace(long_path)


def test_a_trace_error_never_echoes_a_first_line_that_is_not_column_names(tmp_path: Path) -> None:
    from simulator.serving.workload import TraceSpec, load_trace

    secret = tmp_path / "passwd.csv"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1\n")
    with pytest.raises(ClusterSimError) as exc:
        load_trace(TraceSpec(path=str(secret), format="csv"))
    assert "/bin/bash" not in str(exc.value) and "1 cell(s) that are not column names" in str(exc.value)
    names = tmp_path / "names.csv"
    names.write_text("arrival_s,prompt_tokens\n0,1\n")  # real column names are still listed, to help fix a mapping
    with pytest.raises(ClusterSimError, match=r"\(have: arrival_s, prompt_tokens\)"):
        load_trace(TraceSpec(path=str(names), format="csv"))
