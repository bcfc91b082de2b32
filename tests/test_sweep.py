"""The sweep engine: grid and random points, pruning by reason, constraints, caching/resume, CLI and output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import simulator.training
from hwmodels.errors import ClusterSimError
from simulator.cli import main as cli_main
from simulator.cli.search import add_sweep_parser, cmd_sweep
from simulator.search import sweep as sw
from simulator.search.sweep import SweepSpec, load_sweep_file, normalise_reason, pareto, sweep, write_frame

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "simulator" / "examples" / "sweeps"

#: Llama-3 8B on one DGX H100 node: a step simulates in milliseconds.
BASE = {
    "model": "llama3-8b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 8, "node": "dgx-h100"},
    "parallel": {"tp": 8, "pp": 1, "dp": 1, "sp": True},
    "training": {"seq_len": 8192, "global_batch": 8, "micro_batch": 1},
}
#: tp*pp must be 8 (dp is fixed at 1) and micro_batch 3 never divides the batch of 8.
SPACE = {"parallel.tp": [1, 2, 4, 8], "parallel.pp": [1, 2], "training.micro_batch": [1, 3]}
AUTO = {**BASE, "parallel": {**BASE["parallel"], "dp": "auto"}}
SERVE = {
    "model": "llama3-8b",
    "gpu": "h100-sxm5-80gb",
    "batching": {"kind": "continuous", "max_num_seqs": 64},
    "workload": {
        "num_requests": 40,
        "arrivals": {"kind": "poisson", "rate_per_s": 8.0},
        "lengths": {"kind": "fixed", "prompt_tokens": 256, "output_tokens": 32},
    },
}


class Calls(list):
    """Training simulations run in this process; ``stop_at = k`` raises KeyboardInterrupt on the k-th."""

    stop_at: int | None = None


@pytest.fixture
def calls(monkeypatch) -> Calls:
    real = simulator.training.simulate_training
    log = Calls()

    def counted(cfg, profile=None):
        log.append(cfg)
        if log.stop_at == len(log):
            raise KeyboardInterrupt
        return real(cfg, profile)

    monkeypatch.setattr(simulator.training, "simulate_training", counted)
    return log


# ---- points and pruning ------------------------------------------------------------------------------


def test_grid_size_and_pruning_counts_by_hand(calls) -> None:
    df = sweep(BASE, SPACE, progress=False)
    assert len(df) == 4 * 2 * 2 and list(df["point"]) == list(range(16))  # grid order
    ok = df[df["status"] == "ok"]
    # only (tp, pp) = (8, 1) and (4, 2) use all 8 GPUs, and only with micro_batch 1
    plans = zip(ok["parallel.tp"], ok["parallel.pp"], ok["training.micro_batch"], strict=True)
    assert sorted(plans) == [(4, 2, 1), (8, 1, 1)]
    assert len(calls) == 2 and df.attrs["evaluated"] == 2 and df.attrs["cached"] == 0
    pruned = df.attrs["pruned"]
    assert len(pruned) == 2 and sum(pruned.values()) == 14
    world = next(r for r in pruned if "tp*pp*dp*cp" in r)
    batch = next(r for r in pruned if "global_batch" in r)
    assert pruned[world] == 12 and pruned[batch] == 2  # (8,1,3) and (4,2,3) get past the world-size check
    assert not any(ch.isdigit() for ch in world.replace("num_gpus", ""))  # numbers normalised, so they group
    invalid = df[df["status"] == "invalid"]
    assert invalid["reason"].notna().all() and invalid["config_hash"].isna().all()
    assert ok["config_hash"].str.len().eq(64).all() and ok["step_time_s"].gt(0).all()
    assert {"memory_per_gpu_gb_peak", "exposed_comm_s_tp", "fits_in_memory", "mfu"} <= set(df.columns)
    assert df["feasible"].sum() == 2


def test_dp_auto_fills_the_gpu_count_and_oom_is_a_result_row() -> None:
    df = sweep(AUTO, {"parallel.tp": [1, 8], "parallel.pp": [1, 2]}, progress=False)
    by_plan = {(r["parallel.tp"], r["parallel.pp"]): r for r in df.to_dict("records")}
    assert by_plan[(1, 1)]["parallel.dp"] == 8 and by_plan[(1, 2)]["parallel.dp"] == 4
    assert by_plan[(8, 2)]["status"] == "invalid" and "does not divide" in by_plan[(8, 2)]["reason"]
    # 8B parameters with Adam and no ZeRO on one GPU: simulated, reported as not fitting
    assert by_plan[(1, 1)]["status"] == "ok" and by_plan[(1, 1)]["fits_in_memory"] is False
    assert pd.isna(by_plan[(8, 2)]["parallel.dp"]) and df["parallel.dp"].dtype == "Int64"
    # auto as a swept value, next to a fixed degree
    df = sweep(BASE, {"parallel.tp": [4], "parallel.dp": ["auto", 1]}, progress=False)
    assert list(df["parallel.dp"]) == [2, 1] and list(df["status"]) == ["ok", "invalid"]


def test_normalise_reason_keeps_names_with_digits() -> None:
    msg = "parallel tp*pp*dp*cp = 8*2*1*1 = 16 must equal cluster.num_gpus=64 on a100-sxm4-80gb in fp8 (and 2 more)"
    assert normalise_reason(msg) == (
        "parallel tp*pp*dp*cp = N*N*N*N = N must equal cluster.num_gpus=N on a100-sxm4-80gb in fp8 (and N more)"
    )
    assert normalise_reason("rate 0.25 and 1e-3 s") == "rate N and N s"


def test_random_mode_is_deterministic_and_never_enumerates_the_grid() -> None:
    space = {f"k{i}": list(range(1000)) for i in range(4)}  # 10^12 points
    a = SweepSpec(space=space, mode="random", samples=7, seed=3).points()
    b = SweepSpec(space=space, mode="random", samples=7, seed=3).points()
    c = SweepSpec(space=space, mode="random", samples=7, seed=4).points()
    assert a == b and a != c and len({i for i, _ in a}) == 7
    assert [i for i, _ in a] == sorted(i for i, _ in a)
    index, values = a[0]
    assert index == sum(values[f"k{i}"] * 1000 ** (3 - i) for i in range(4))  # the grid index of its values
    with pytest.raises(ClusterSimError, match="mode: random"):
        SweepSpec(space=space)
    with pytest.raises(ClusterSimError, match="needs samples"):
        SweepSpec(space=space, mode="random")


def test_random_sweep_draws_a_subset_of_the_grid() -> None:
    grid = sweep(BASE, SPACE, progress=False)
    one = sweep(BASE, SPACE, mode="random", samples=5, seed=11, progress=False)
    two = sweep(BASE, SPACE, mode="random", samples=5, seed=11, progress=False)
    pd.testing.assert_frame_equal(one, two)
    assert len(one) == 5 and set(one["point"]) <= set(grid["point"])
    merged = one.merge(grid, on="point", suffixes=("", "_grid"))
    assert (merged["status"] == merged["status_grid"]).all()


def test_bad_space_is_one_line() -> None:
    for space, match in [
        ({}, "dotted config paths"),
        ({"parallel.tp": 4}, "parallel.tp must be a non-empty list"),
        ({"parallel tp": [1]}, "not a dotted config path"),
    ]:
        with pytest.raises(ClusterSimError, match=match) as exc:
            sweep(BASE, space, progress=False)
        assert "\n" not in str(exc.value)
    with pytest.raises(ClusterSimError, match="training has cluster"):
        sweep({"model": "llama3-8b"}, {"seed": [1]}, progress=False)
    with pytest.raises(ClusterSimError, match="given both"):
        sweep(BASE, SweepSpec(space=SPACE), objective="mfu", progress=False)


# ---- objective, constraints, pareto ---------------------------------------------------------------------


def test_constraints_mark_feasible_rows_and_objective_sorts_them_first() -> None:
    space = {"parallel.tp": [1, 2, 4, 8], "parallel.pp": [1, 2]}
    plain = sweep(AUTO, space, progress=False)
    fits = plain[plain["status"].eq("ok") & plain["fits_in_memory"].eq(True)]
    threshold = float(fits["mfu"].median())
    df = sweep(
        AUTO,
        space,
        objective="step_time_s",
        maximize=False,
        constraints=["fits_in_memory == True", f"mfu >= {threshold}", "`parallel.tp` > 0"],
        progress=False,
    )
    feasible = df[df["feasible"]]
    assert set(feasible["point"]) == set(fits[fits["mfu"] >= threshold]["point"])
    assert len(feasible) >= 1 and df["feasible"].iloc[: len(feasible)].all()  # feasible rows come first
    assert feasible["step_time_s"].is_monotonic_increasing  # minimised: best (fastest) first
    assert df.attrs["objective"] == "step_time_s" and len(df.attrs["constraints"]) == 3
    assert not df.loc[df["status"] != "ok", "feasible"].any()

    for bad, match in [
        (["no_such_column > 1"], "use a result column"),
        (["mfu >"], "not a valid expression"),
        (["mfu + 1"], "must be a comparison"),
        (["__import__('os')"], "not a valid expression"),
    ]:
        with pytest.raises(ClusterSimError, match=match):
            sweep(AUTO, space, constraints=bad, progress=False)
    with pytest.raises(ClusterSimError, match="not a result column"):
        sweep(AUTO, space, objective="speed", progress=False)


def test_a_misspelt_constraint_or_objective_stops_after_the_first_simulation(calls) -> None:
    space = {"parallel.tp": [1, 2, 4, 8], "parallel.pp": [1, 2]}
    with pytest.raises(ClusterSimError, match="mfux"):
        sweep(AUTO, space, constraints=["mfux > 0.4"], progress=False)
    with pytest.raises(ClusterSimError, match="not a result column"):
        sweep(AUTO, space, objective="tokens_per_second", progress=False)
    assert len(calls) == 2


def test_pareto_keeps_only_undominated_feasible_rows() -> None:
    df = sweep(AUTO, {"parallel.tp": [1, 2, 4, 8], "parallel.pp": [1, 2, 4]}, progress=False)
    objectives = {"step_time_s": "min", "memory_per_gpu_gb_peak": "min"}
    front = pareto(df, objectives)
    ok = df[df["status"] == "ok"]
    assert 1 <= len(front) <= len(ok)
    for _, f in front.iterrows():
        dominated = (ok["step_time_s"] <= f["step_time_s"]) & (
            ok["memory_per_gpu_gb_peak"] <= f["memory_per_gpu_gb_peak"]
        )
        strictly = (ok["step_time_s"] < f["step_time_s"]) | (ok["memory_per_gpu_gb_peak"] < f["memory_per_gpu_gb_peak"])
        assert not (dominated & strictly).any()
    with pytest.raises(ClusterSimError, match="min"):
        pareto(df, {"step_time_s": "lowest"})


def test_serving_sweep_switches_policies_and_flattens_percentiles() -> None:
    space = {
        "batching": [{"kind": "continuous", "max_num_seqs": 16}, {"kind": "chunked", "token_budget": 256}],
        "tp": [1, 3],
    }
    df = sweep(SERVE, space, constraints=["ttft_s_p99 < 100"], objective="goodput_requests_per_s", progress=False)
    assert df.attrs["kind"] == "serving" and len(df) == 4
    assert (df.loc[df["tp"] == 3, "status"] == "invalid").all()  # 3 does not divide 32 heads
    ok = df[df["status"] == "ok"]
    assert set(ok["policy"]) == {"continuous", "chunked"} and ok["feasible"].all()
    assert {"ttft_s_p99", "tpot_s_p50", "kv_memory_gb_kv_gb"} <= set(df.columns)
    assert json.loads(ok["batching"].iloc[0])["kind"] in {"continuous", "chunked"}  # sections as JSON text
    json.loads(ok["batch_size_histogram"].iloc[0])  # variable-key dicts stay one JSON column


# ---- cache and resume ---------------------------------------------------------------------------------


def test_interrupted_sweep_resumes_without_recomputing(tmp_path, calls) -> None:
    space = {"parallel.tp": [1, 2, 4, 8], "parallel.pp": [1, 2, 4]}
    fresh = sweep(AUTO, space, progress=False)
    n_ok = int((fresh["status"] == "ok").sum())
    calls.clear()

    calls.stop_at = 4  # Ctrl-C during the 4th simulation
    with pytest.raises(KeyboardInterrupt):
        sweep(AUTO, space, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.rglob("*.json"))) == 3  # the finished points were saved as they completed

    calls.clear()
    calls.stop_at = None
    resumed = sweep(AUTO, space, cache_dir=tmp_path, progress=False)
    assert len(calls) == n_ok - 3
    assert resumed.attrs["cached"] == 3 and resumed.attrs["evaluated"] == n_ok - 3
    pd.testing.assert_frame_equal(resumed, fresh)

    calls.clear()
    again = sweep(AUTO, space, cache_dir=tmp_path, progress=False)
    assert calls == [] and again.attrs["cached"] == n_ok and again.attrs["evaluated"] == 0
    pd.testing.assert_frame_equal(again, fresh)

    # another profile is another cache key
    sweep(AUTO, {"parallel.tp": [8], "parallel.pp": [1]}, cache_dir=tmp_path, profile="datasheet", progress=False)
    assert len(calls) == 1


def test_cache_files_are_whole_json_written_atomically(tmp_path, monkeypatch, calls) -> None:
    space = {"parallel.tp": [4, 8]}
    df = sweep(AUTO, space, cache_dir=tmp_path, progress=False)
    files = sorted(tmp_path.rglob("*.json"))
    assert len(files) == 2 and not list(tmp_path.rglob("*.tmp"))
    for path in files:
        record = json.loads(path.read_text())
        assert record["hash"] == path.stem and path.parent.name == path.stem[:2]
        assert record["status"] == "ok" and record["schema"] == sw.SWEEP_SCHEMA and record["metrics"]["step_time_s"] > 0
    assert set(df["config_hash"]) == {p.stem for p in files}

    # a torn or foreign file is ignored and rewritten
    files[0].write_text('{"hash": "trunc')
    calls.clear()
    sweep(AUTO, space, cache_dir=tmp_path, progress=False)
    assert len(calls) == 1 and json.loads(files[0].read_text())["hash"] == files[0].stem

    # a failed rename leaves neither a partial file nor a temp file behind
    other = tmp_path / "other"

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("hwmodels.fileio.os.replace", boom)
    with pytest.raises(ClusterSimError, match="No space left on device"):
        sweep(AUTO, space, cache_dir=other, progress=False)
    assert list(other.rglob("*")) == [] or all(p.is_dir() for p in other.rglob("*"))


def test_process_pool_gives_the_same_frame() -> None:
    one = sweep(BASE, SPACE, progress=False)
    two = sweep(BASE, SPACE, workers=2, progress=False)
    pd.testing.assert_frame_equal(one, two)


class FakeRay:
    """Just enough of the ray module to check when the sweep starts, joins and shuts Ray down."""

    def __init__(self, initialized: bool = False) -> None:
        self.initialized = initialized
        self.calls: list[tuple] = []

    def is_initialized(self) -> bool:
        return self.initialized

    def init(self, **kwargs) -> None:
        self.calls.append(("init", kwargs))
        if kwargs.get("address") == "nowhere:6379":
            raise ConnectionError("Failed to connect to Ray cluster at nowhere:6379")
        self.initialized = True

    def shutdown(self) -> None:
        self.calls.append(("shutdown",))
        self.initialized = False

    def remote(self, **options):
        class Task:
            def __init__(self, fn):
                self.fn = fn

            def remote(self, *args):
                return type("Ref", (), {"value": self.fn(*args)})()

        return Task

    def cluster_resources(self) -> dict:
        return {"CPU": 2.0}

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.value

    def cancel(self, ref) -> None:
        pass


def test_ray_backend_starts_a_private_ray_only_when_none_is_up(monkeypatch) -> None:
    space = {"parallel.tp": [4, 8], "parallel.pp": [1, 2]}
    local = sweep(AUTO, space, progress=False)

    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    pd.testing.assert_frame_equal(sweep(AUTO, space, backend="ray", workers=2, progress=False), local)
    assert fake.calls == [("init", {"address": "local", "num_cpus": 2, "include_dashboard": False}), ("shutdown",)]

    fake.calls.clear()
    sweep(AUTO, space, backend="ray", ray_address="auto", progress=False)
    assert fake.calls == [("init", {"address": "auto"}), ("shutdown",)]  # our connection, closed again

    caller = FakeRay(initialized=True)  # the caller's own ray.init(): used and left running
    monkeypatch.setitem(sys.modules, "ray", caller)
    sweep(AUTO, space, backend="ray", ray_address="ignored:1", progress=False)
    assert caller.calls == [] and caller.initialized

    monkeypatch.setitem(sys.modules, "ray", FakeRay())
    with pytest.raises(ClusterSimError, match="ray start --head"):
        sweep(AUTO, space, backend="ray", ray_address="nowhere:6379", progress=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # not installed
    with pytest.raises(ClusterSimError, match=r"clustersim\[distributed\]"):
        sweep(AUTO, space, backend="ray", progress=False)


# ---- output and CLI -------------------------------------------------------------------------------------


def test_parquet_and_csv_round_trip(tmp_path) -> None:
    df = sweep(AUTO, {"parallel.tp": [1, 2, 4, 8], "parallel.pp": [1, 2]}, objective="mfu", progress=False)
    pq = write_frame(df, tmp_path / "out" / "r.parquet")
    back = pd.read_parquet(pq)
    pd.testing.assert_frame_equal(back, df)
    assert back.attrs["pruned"] == df.attrs["pruned"]
    csv = write_frame(df, tmp_path / "r.csv")
    back = pd.read_csv(csv)
    assert list(back.columns) == list(df.columns) and len(back) == len(df)
    pd.testing.assert_series_equal(back["mfu"], df["mfu"], check_exact=False)
    assert list(back["status"]) == list(df["status"]) and list(back["feasible"]) == list(df["feasible"])
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(ClusterSimError, match=r"\.parquet or \.csv"):
        write_frame(df, tmp_path / "r.xlsx")


def _write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    "content, match",
    [
        ("base: [unclosed", "not valid YAML"),
        ({"space": {"parallel.tp": [1]}}, "base"),
        ({"base": "nowhere.yaml", "space": {"parallel.tp": [1]}}, "cannot read config"),
        ({"base": BASE, "space": {"parallel.tp": 8}}, "parallel.tp must be a non-empty list"),
        ({"base": BASE, "space": {"parallel.tp": [8]}, "speed": 1}, "unknown key"),
        ({"base": BASE, "space": {"parallel.tp": [8]}, "mode": "sobol"}, "mode"),
        ({"base": BASE, "space": {"parallel.tp": [8]}, "constraints": ["nope > 1"]}, "constraint"),
    ],
)
def test_cli_bad_sweep_file_exits_2_with_one_line(tmp_path, capsys, content, match) -> None:
    path = _write(tmp_path, "bad.yaml", content)
    assert cli_main(["sweep", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("clustersim: error: ") and err.count("\n") == 1 and match in err


def test_cli_rejects_a_bad_out_name_before_running(tmp_path, capsys) -> None:
    path = _write(tmp_path, "s.yaml", {"base": BASE, "space": {"parallel.tp": [8]}})
    assert cli_main(["sweep", str(path), "--out", str(tmp_path / "r.xlsx")]) == 2
    assert ".parquet or .csv" in capsys.readouterr().err


def test_cli_runs_a_sweep_file_with_a_relative_base(tmp_path, capsys) -> None:
    (tmp_path / "configs").mkdir()
    _write(tmp_path / "configs", "base.yaml", BASE)
    path = _write(
        tmp_path,
        "s.yaml",
        {
            "base": "configs/base.yaml",
            "overrides": {"parallel.dp": "auto"},
            "space": {"parallel.tp": [1, 2, 4, 8], "parallel.pp": [1, 2]},
            "objective": "tokens_per_s_per_gpu",
            "constraints": ["fits_in_memory == True"],
        },
    )
    out_csv = tmp_path / "r.csv"
    assert cli_main(["sweep", str(path), "--out", str(out_csv), "--cache-dir", str(tmp_path / "c"), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "best 3 of" in out and "tokens/s/GPU" in out and "pruned 1 invalid points" in out
    assert "evaluated 7, cached 0" in out and f"wrote {out_csv} (8 rows)" in out
    assert len(pd.read_csv(out_csv)) == 8

    assert cli_main(["sweep", str(path), "--cache-dir", str(tmp_path / "c"), "--json", "--top", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["cached"] == 7 and summary["evaluated"] == 0 and summary["points"] == 8
    assert len(summary["best"]) == 3 and summary["best"][0]["feasible"] is True
    best = [r["tokens_per_s_per_gpu"] for r in summary["best"]]
    assert best == sorted(best, reverse=True)


def test_example_sweeps_load_and_the_training_one_runs(tmp_path, capsys) -> None:
    serving = load_sweep_file(EXAMPLES / "llama3-8b-serving.yaml")
    assert serving.spec().grid_size == 9 and serving.objective == "goodput_requests_per_s"
    out = tmp_path / "gpt3.parquet"
    assert cli_main(["sweep", str(EXAMPLES / "gpt3-175b-64xa100.yaml"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "feasible points by tokens_per_s_per_gpu" in text and "pruned 3 invalid points" in text
    df = pd.read_parquet(out)
    assert len(df) == 36 and df["feasible"].any() and (~df["fits_in_memory"].fillna(True)).any()


def test_add_sweep_parser_registers_the_command() -> None:
    parser = argparse.ArgumentParser(prog="clustersim")
    add_sweep_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["sweep", "s.yaml", "--workers", "4", "--backend", "ray", "--ray-address", "auto"])
    assert args.func is cmd_sweep and args.workers == 4 and args.backend == "ray" and args.ray_address == "auto"


def test_a_swept_vpp_brings_the_interleaved_schedule_with_it() -> None:
    """parallel.vpp > 1 needs a schedule with model chunks: a sweep over vpp alone switches 1F1B to interleaved
    at vpp > 1 (and back at vpp 1), as the app's planners do, instead of failing at every such point; a swept
    schedule is left as swept."""
    from simulator.search.sweep.spec import derive_schedule

    base = {
        "model": "llama3-8b",
        "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 16, "node": "dgx-h100"},
        "parallel": {"tp": 8, "pp": 2, "dp": 1},
        "training": {"seq_len": 4096, "global_batch": 16, "micro_batch": 1},
    }
    frame = sweep(base, {"parallel.vpp": [1, 2]}, kind="training", progress=False)
    assert list(frame["status"]) == ["ok", "ok"]
    one, two = frame["step_time_s"]
    assert two < one  # two chunks per rank halve the bubble
    data = {"parallel": {"vpp": 1, "schedule": "interleaved"}}
    derive_schedule(data, {"parallel.vpp": 1})
    assert data["parallel"]["schedule"] == "1f1b"
    kept = {"parallel": {"vpp": 2, "schedule": "1f1b"}}
    derive_schedule(kept, {"parallel.vpp": 2, "parallel.schedule": "1f1b"})
    assert kept["parallel"]["schedule"] == "1f1b"  # swept too: validation reports the mismatch
