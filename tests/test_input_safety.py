"""The input-safety layer (issue #17): the sweep expression language, capped file reads, path confinement,
hostile YAML/JSON and the work caps. Every refusal is one line (a ClusterSimError), fast, and never
echoes a file's contents."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hwmodels.errors import ClusterSimError
from hwmodels.fileio import read_regular_file
from hwmodels.profile import read_profile
from simulator.cli import main as cli_main
from simulator.core import limits, untrusted
from simulator.core.config import load_config, read_yaml
from simulator.models import get_model
from simulator.moe.routing import load_trace as load_routing_trace
from simulator.search.scale import check_work, serving_work
from simulator.search.sweep import SweepSpec, load_sweep_file, sweep
from simulator.search.sweep.expr import constraint_mask, objective_values, parse_expression
from simulator.serving import load_serving_config
from simulator.training import simulate_training

REPO = Path(__file__).resolve().parents[1]
TRAIN = {
    "model": "llama3.2-1b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 8},
    "parallel": {"tp": 1, "pp": 1, "dp": 8},
    "training": {"seq_len": 2048, "global_batch": 8, "micro_batch": 1},
}
SERVE = {
    "model": "llama3.2-1b",
    "gpu": "h100-sxm5-80gb",
    "batching": {"kind": "continuous", "max_num_seqs": 64},
    "workload": {
        "num_requests": 20,
        "arrivals": {"kind": "poisson", "rate_per_s": 4.0},
        "lengths": {"kind": "fixed", "prompt_tokens": 128, "output_tokens": 16},
    },
}


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg, msg
    return msg


def bomb_yaml(levels: int = 9, key: str = "model") -> str:
    """A billion-laughs document (9 levels: 9^9 = 387M strings) under ``key``, plus a valid rest of config."""
    lines = [f"{key}:", '  - &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghijklm"[: levels - 1]:
        lines.append(f"  - &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
        prev = name
    rest = yaml.safe_dump({k: v for k, v in TRAIN.items() if k != key}, default_flow_style=None, width=200)
    return "\n".join(lines) + "\n" + rest


# ---- the safe expression language -----------------------------------------------------------------------

FRAME = pd.DataFrame(
    {
        "mfu": [0.31, 0.52, 0.44, 0.7, 0.05],
        "fits_in_memory": [True, False, True, True, False],
        "parallel.tp": [1, 2, 4, 8, 8],
        "ttft_s_p99": [0.5, 1.5, 0.2, 0.9, 3.0],
        "step_time_s": [2.0, 1.0, 4.0, 0.5, 8.0],
        "batching.kind": ["continuous", "chunked", "continuous", "static", "chunked"],
    }
)
ALLOWED = [
    "mfu > 0.4",
    "fits_in_memory == True",
    "fits_in_memory",
    "`parallel.tp` >= 4",
    "0.2 < mfu <= 0.6",
    "mfu > 0.4 and fits_in_memory",
    "mfu > 0.6 or ttft_s_p99 < 0.6",
    "(mfu > 0.4) & (ttft_s_p99 < 1)",
    "(mfu > 0.4) | ~fits_in_memory",
    "not mfu > 0.4",
    "mfu * 2 ** 2 - 1 > 0.5",
    "-mfu < -0.4",
    "+mfu / step_time_s >= 0.1",
    "ttft_s_p99 != 0.9",
    "mfu / 0 > 1",
    "`batching.kind` == 'chunked'",
    "`batching.kind` != 'chunked' and `parallel.tp` > 1",
]


@pytest.mark.parametrize("expr", ALLOWED)
def test_allowed_expressions_match_pandas_eval(expr: str) -> None:
    expected = FRAME.eval(expr).fillna(False).to_numpy(dtype=bool)
    assert constraint_mask(FRAME, expr).tolist() == expected.tolist()


def test_nullable_columns_and_nan_follow_pandas() -> None:
    df = pd.DataFrame(
        {
            "a": pd.array([1, None, 3, 0], dtype="Int64"),
            "b": pd.array([True, None, False, True], dtype="boolean"),
            "x": [0.5, np.nan, 2.0, 0.0],
        }
    )
    for expr in ["a > 1", "a != 1", "b", "~b", "b | (a > 2)", "~(0 < a < 4)", "x != 1", "x != x", "(a - a) / x > 0"]:
        expected = np.broadcast_to(np.asarray(df.eval(expr).fillna(False), dtype=bool), len(df))
        assert constraint_mask(df, expr).tolist() == expected.tolist(), expr


def test_objectives_match_pandas_eval_and_dotted_names_read_columns() -> None:
    for expr in ["mfu * `parallel.tp` - step_time_s / 3", "mfu ** 2", "-(mfu + 1) * 2"]:
        np.testing.assert_allclose(objective_values(FRAME, expr), FRAME.eval(expr).to_numpy(dtype=float))
    # a dotted name is the column's name, never attribute access
    assert constraint_mask(FRAME, "parallel.tp >= 4").tolist() == [False, False, True, True, True]
    assert parse_expression("parallel.tp > 1 and mfu > 0").columns == ["parallel.tp", "mfu"]


ATTACKS = [
    "ttft_s_p99.__class__.__init__.__globals__['sys'].modules['os'].system('id')",
    "ttft_s_p99.__class__.__init__.__globals__['sys'].modules['os'].system('id') == 0",
    "mfu.to_csv('{tmp}/written.csv') == None",
    "mfu.to_csv('{tmp}/written.csv')",
    "__import__('os').system('id')",
    "mfu.__class__ == 1",
    "`__class__` > 1",
    "mfu.values",
    "mfu[0] > 1",
    "(lambda: 1)() > 0",
    "[m for m in mfu]",
    "{{}} == 1",
    "mfu if mfu else 0",
    "mfu ** 1000000 > 1",
    "mfu ** mfu > 1",
    "10 ** 10 ** 10 > mfu",
    "9" * 400 + " > mfu",
    "mfu @ mfu > 1",
    "mfu % 2 > 1",
    "f'{{mfu}}' == 'x'",
    "'a' + 'b' == 'ab'",
    "mfu > " + "(" * 300 + "1" + ")" * 300,
    "mfu > 1" + " and mfu > 1" * 100,
    "",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_each_attack_string_is_refused_with_one_line(attack: str, tmp_path: Path) -> None:
    attack = attack.format(tmp=tmp_path)
    start = time.perf_counter()
    with pytest.raises(ClusterSimError) as exc:
        constraint_mask(FRAME, attack)
    _one_line(exc)
    assert time.perf_counter() - start < 1.0
    assert not list(tmp_path.iterdir())  # nothing written


def test_unknown_column_lists_the_available_columns_and_types_are_checked() -> None:
    with pytest.raises(ClusterSimError) as exc:
        constraint_mask(FRAME, "nope > 1")
    msg = _one_line(exc)
    assert "unknown column 'nope'" in msg and "mfu" in msg and "ttft_s_p99" in msg
    for bad, needle in [
        ("mfu + 1", "must be a comparison"),
        ("mfu > 'x'", "compares text with a number"),
        ("`batching.kind` > 'a'", "only be compared with == or !="),
        ("mfu and fits_in_memory", "and/or/not need comparisons"),
    ]:
        with pytest.raises(ClusterSimError, match=needle):
            constraint_mask(FRAME, bad)


def test_sweep_specs_and_files_refuse_attacks_before_any_simulation(tmp_path: Path) -> None:
    with pytest.raises(ClusterSimError, match="calls are not allowed"):
        SweepSpec(space={"parallel.tp": [1]}, constraints=["mfu.to_csv('/tmp/x') == None"])
    with pytest.raises(ClusterSimError, match="attribute access|not allowed"):
        SweepSpec(space={"parallel.tp": [1]}, objective="mfu.real.__class__")
    with pytest.raises(ClusterSimError, match="at most"):
        SweepSpec(space={"parallel.tp": [1]}, constraints=["mfu > 0"] * (limits.MAX_CONSTRAINTS + 1))
    marker = tmp_path / "PWNED"
    path = tmp_path / "rce.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base": SERVE,
                "space": {"tp": [1]},
                "constraints": [f"ttft_s_p99.__class__.__init__.__globals__['os'].system('touch {marker}') == 0"],
            }
        )
    )
    with pytest.raises(ClusterSimError, match="not a valid expression"):
        load_sweep_file(path)
    assert cli_main(["sweep", str(path)]) == 2
    assert not marker.exists()


def test_an_objective_expression_ranks_and_shows_as_a_column() -> None:
    objective = "throughput_tokens_per_s / num_gpus"
    df = sweep(SERVE, {"batching.max_num_seqs": [4, 64]}, objective=objective, progress=False)
    assert "throughput_tokens_per_s / num_gpus" in df.columns
    assert df["throughput_tokens_per_s / num_gpus"].is_monotonic_decreasing


# ---- files: type and size checked before opening ---------------------------------------------------------


def test_devices_directories_fifos_and_oversize_files_are_refused_before_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)  # opening it for reading would block forever
    big = tmp_path / "big.json"
    big.write_bytes(b"x" * 2000)
    for path, needle in [
        ("/dev/zero", "not a regular file"),
        (fifo, "not a regular file"),
        (tmp_path, "is a directory"),
        (big, "is over"),
        (tmp_path / "missing.json", "cannot read"),
    ]:
        start = time.perf_counter()
        with pytest.raises(ClusterSimError, match=needle) as exc:
            read_regular_file(path, 1000, f"file {Path(path).name}")
        _one_line(exc)
        assert time.perf_counter() - start < 1.0
    assert read_regular_file(big, 2000, "big") == b"x" * 2000


def test_readers_of_configs_models_traces_and_profiles_use_the_checks(tmp_path: Path) -> None:
    fifo = tmp_path / "model.json"
    os.mkfifo(fifo)
    zero_link = tmp_path / "routing.json"
    zero_link.symlink_to("/dev/zero")
    start = time.perf_counter()
    with pytest.raises(ClusterSimError, match="not a regular file"):
        load_routing_trace("/dev/zero")
    with pytest.raises(ClusterSimError, match="not a regular file"):
        load_routing_trace(zero_link)
    with pytest.raises(ClusterSimError, match="not a regular file"):
        read_profile(fifo)
    with pytest.raises(ClusterSimError, match="not a regular file"):
        read_yaml("/dev/zero")
    with pytest.raises(ClusterSimError):
        get_model(str(fifo))
    moe = {**TRAIN, "model": "mixtral-8x7b", "moe_routing": {"source": {"kind": "trace", "path": "/dev/zero"}}}
    with pytest.raises(ClusterSimError, match="not a regular file"):
        simulate_training(load_config(moe))
    assert time.perf_counter() - start < 3.0


def test_error_messages_never_echo_file_contents(tmp_path: Path) -> None:
    secret = "s3cr3t-token-value"
    cases = {
        "cfg.yaml": f"model: [unclosed {secret}\n",
        "model.yaml": f"name: {secret}\n  bad: indentation\n",
        "model.json": f'{{"model_type": "llama", "x": {secret}}}',
        "routing.json": f'{{"steps": [{secret}]}}',
        "profile.json": f'{{"schema_version": {secret}}}',
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        loader = {
            "cfg.yaml": read_yaml,
            "model.yaml": lambda p: get_model(str(p)),
            "model.json": lambda p: get_model(str(p)),
            "routing.json": load_routing_trace,
            "profile.json": read_profile,
        }[name]
        with pytest.raises(ClusterSimError) as exc:
            loader(path)
        assert secret not in _one_line(exc), name


# ---- paths from links and uploads --------------------------------------------------------------------------


def test_paths_from_links_are_confined_to_the_upload_folder(tmp_path: Path) -> None:
    upload = untrusted.save_upload(b"arrival_s,prompt_tokens,output_tokens\n0,1,1\n", "trace", ".csv", 1000)
    assert upload.parent == untrusted.UPLOAD_DIR and untrusted.confine_path(str(upload), (), "trace") == upload
    outside = tmp_path / "link.csv"
    outside.symlink_to("/etc/passwd")
    sneaky = untrusted.UPLOAD_DIR / "sneaky.csv"
    sneaky.unlink(missing_ok=True)
    sneaky.symlink_to("/etc/passwd")  # a symlink inside the folder pointing out of it
    try:
        escapes = [str(outside), str(sneaky), f"{untrusted.UPLOAD_DIR}/../x"]
        for bad in ["/etc/passwd", "passwd", "../../etc/passwd", *escapes]:
            with pytest.raises(ClusterSimError, match="may only name uploaded files") as exc:
                untrusted.confine_path(bad, (), "workload.trace.path")
            _one_line(exc)
    finally:
        sneaky.unlink()
    # the message is the same whether the file exists or not: no existence oracle
    msgs = set()
    for bad in ["/etc/hostname", "/no/such/dir/hostname"]:
        with pytest.raises(ClusterSimError) as exc:
            untrusted.confine_path(bad, (), "path")
        msgs.add(str(exc.value))
    assert len(msgs) == 1
    assert untrusted.confine_path(str(outside), [tmp_path, "/etc"], "x") == Path("/etc/passwd").resolve()


def test_link_configs_cannot_name_server_files() -> None:
    for cfg, needle in [
        ({**SERVE, "workload": {**SERVE["workload"], "trace": {"path": "/etc/passwd"}}}, "uploaded files"),
        ({**TRAIN, "moe_routing": {"source": {"kind": "trace", "path": "/dev/zero"}}}, "uploaded files"),
        ({**TRAIN, "stack": {"traced": "/etc/x.json"}}, "reads a file on the server"),
        ({**TRAIN, "model": "/etc/passwd"}, "is a file path"),
        ({**TRAIN, "model": "../secrets/config.json"}, "is a file path"),
    ]:
        with pytest.raises(ClusterSimError, match=needle) as exc:
            untrusted.check_config_files(cfg, "URL parameter 'train'")
        _one_line(exc)
    untrusted.check_config_files(TRAIN, "ok")  # a preset name passes


# ---- hostile YAML and JSON ---------------------------------------------------------------------------------


def test_a_yaml_alias_bomb_fails_fast_everywhere(tmp_path: Path) -> None:
    text = bomb_yaml()
    assert 400 < len(text.encode()) < 800
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(text)
    model_file = tmp_path / "bomb-model.yaml"
    model_file.write_text(bomb_yaml(key="name"))
    uses_model_file = tmp_path / "uses-model.yaml"
    uses_model_file.write_text(yaml.safe_dump({**TRAIN, "model": str(model_file)}))
    for run in [
        lambda: untrusted.load_yaml_text(text, "bomb"),
        lambda: read_yaml(cfg),
        lambda: load_config(cfg),
        lambda: load_config(uses_model_file),
        lambda: get_model(str(model_file)),
    ]:
        start = time.perf_counter()
        with pytest.raises(ClusterSimError, match="expands to over") as exc:
            run()
        _one_line(exc)
        assert time.perf_counter() - start < 1.0
    with pytest.raises(ClusterSimError, match="recursive alias"):
        untrusted.load_yaml_text("a: &a [1, *a]\n", "loop")
    # anchors and merge keys of ordinary size still work
    assert untrusted.load_yaml_text("x: &d {a: 1}\ny: {<<: *d, b: 2}\n", "ok") == {"x": {"a": 1}, "y": {"a": 1, "b": 2}}


def test_deep_nesting_and_non_utf8_are_one_line_errors(tmp_path: Path) -> None:
    deep_yaml = tmp_path / "deep.yaml"
    deep_yaml.write_text("model: " + "[" * 50_000 + "]" * 50_000 + "\n")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("model: llama3-8b  # caf\xe9\n".encode("latin-1"))
    latin1_model = tmp_path / "model.yaml"
    latin1_model.write_bytes("name: caf\xe9\n".encode("latin-1"))
    for run, needle in [
        (lambda: read_yaml(deep_yaml), "nests deeper"),
        (lambda: untrusted.parse_json_text("[" * 100_000 + "]" * 100_000, "URL"), "nests deeper"),
        (lambda: untrusted.parse_json_text('{"a":' * 70 + "1" + "}" * 70, "URL"), "nests deeper"),
        (lambda: untrusted.parse_json_text('{"x": NaN}', "URL"), "not valid JSON"),
        (lambda: untrusted.parse_json_text("1" * 5000, "URL"), "not valid JSON"),
        (lambda: read_yaml(latin1), "not UTF-8"),
        (lambda: get_model(str(latin1_model)), "not UTF-8"),
    ]:
        with pytest.raises(ClusterSimError, match=needle) as exc:
            run()
        _one_line(exc)


# ---- work caps -------------------------------------------------------------------------------------------------


def test_work_caps_refuse_huge_configs_fast() -> None:
    big_model = get_model("llama3.2-1b").model_dump(mode="json") | {"num_layers": 10**6}
    huge_dp = ("cluster.num_gpus", "parallel.dp", "training.global_batch")
    cases = [
        ("training", load_config(TRAIN, ["training.global_batch=153600"]), "micro-batches"),
        ("training", load_config(TRAIN, ["training.global_batch=1000000000000"]), "micro-batches"),
        ("training", load_config(TRAIN, [f"{k}=1000000000000" for k in huge_dp]), "GPUs"),
        ("training", load_config({**TRAIN, "model": big_model}), "model layers"),
        ("serving", load_serving_config(SERVE, ["workload.num_requests=1000000000"]), "num_requests"),
        ("serving", load_serving_config(SERVE, ["replicas=1000000000"]), "GPUs"),
        ("serving", load_serving_config(SERVE, ["workload.lengths.output_tokens=100000"]), "output tokens"),
    ]
    for kind, cfg, needle in cases:
        start = time.perf_counter()
        with pytest.raises(ClusterSimError, match=needle) as exc:
            check_work(kind, cfg, limits.APP_CAPS, "use the CLI")
        assert "over the limit" in _one_line(exc)
        assert time.perf_counter() - start < 1.0
    assert serving_work(load_serving_config(SERVE), limits.APP_CAPS)["output_tokens"] == 20 * 16


def test_a_sweep_under_caps_prunes_points_beyond_them() -> None:
    df = sweep(SERVE, {"workload.num_requests": [10, 10**9]}, caps=limits.CLI_CAPS, progress=False)
    by_n = dict(zip(df["workload.num_requests"], df["status"], strict=True))
    assert by_n == {10: "ok", 10**9: "invalid"}
    assert "--yes" in df.loc[df["status"] == "invalid", "reason"].iloc[0]
    with pytest.raises(ClusterSimError, match="--yes"):
        sweep(SERVE, {"seed": list(range(limits.CLI_CAPS.sweep_points + 1))}, caps=limits.CLI_CAPS, progress=False)


def test_cli_stops_beyond_interactive_scale_unless_yes(capsys) -> None:
    assert cli_main(["serve", "--set", "workload.num_requests=1000000000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "beyond interactive scale" in err and "--yes" in err
    assert cli_main(["train", "--set", "training.global_batch=1536000000000"]) == 2  # 96e9 micro-batches
    assert "micro-batches" in capsys.readouterr().err
    assert cli_main(["--yes", "serve", "--set", "workload.num_requests=20", "--json"]) == 0
    assert cli_main(["serve", "--yes", "--set", "workload.num_requests=20", "--json"]) == 0


def test_cli_attacks_stay_small_in_a_fresh_process(tmp_path: Path) -> None:
    """The CLI on each attack: exit 2, one line, well under 1.5 GB and 20 s (children's peak RSS)."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(bomb_yaml())
    routing = tmp_path / "routing.yaml"
    moe = {**TRAIN, "model": "mixtral-8x7b", "moe_routing": {"source": {"kind": "trace", "path": "/dev/zero"}}}
    routing.write_text(yaml.safe_dump(moe))
    runs = [
        ["train", str(bomb)],
        ["train", str(routing)],
        ["serve", "--set", "workload.num_requests=1000000000", "--set", "replicas=1000000000"],
    ]
    for argv in runs:
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "simulator", *argv], capture_output=True, text=True, timeout=60, cwd=REPO
        )
        assert out.returncode == 2, out.stderr
        assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
        assert time.perf_counter() - start < 20
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert peak_kb < 1.5 * 2**20, peak_kb


def test_app_uploads_are_checked_like_files() -> None:
    from simulator.app import plans

    with pytest.raises(ClusterSimError, match="expands to over"):
        plans.parse_upload(bomb_yaml().encode(), "cfg.yaml")
    with pytest.raises(ClusterSimError, match="UTF-8"):
        plans.parse_upload("model: caf\xe9".encode("latin-1"), "cfg.yaml")
    with pytest.raises(ClusterSimError, match="uploaded files"):
        plans.parse_upload(json.dumps({**SERVE, "workload": {"trace": {"path": "/etc/passwd"}}}).encode(), "c.json")
    with pytest.raises(ClusterSimError, match="is over"):
        plans.parse_upload(b" " * (limits.MAX_CONFIG_BYTES + 1), "cfg.json")
    with pytest.raises(ClusterSimError, match="not a preset"):
        plans.check_app_config("training", {**TRAIN, "model": "README.md"})
    assert plans.check_app_config("serving", SERVE).workload.num_requests == 20
