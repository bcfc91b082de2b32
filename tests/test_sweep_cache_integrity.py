"""Issue #17 item 7: the sweep cache never trusts a file just because its name matches.

A cached record must have the expected keys and types, finite numbers, this code version, its own hash and
a digest over its canonical JSON; anything else is a cache miss with one warning line, and the point is
simulated again and its file rewritten whole.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pandas as pd
import pytest

import simulator.training
from simulator.search.sweep import sweep
from simulator.search.sweep.cache import (
    MAX_CACHE_FILE_BYTES,
    SWEEP_SCHEMA,
    ResultCache,
    code_version,
    record_digest,
    record_problem,
)

#: Llama-3 8B on one DGX H100 node: a step simulates in milliseconds.
BASE = {
    "model": "llama3-8b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 8, "node": "dgx-h100"},
    "parallel": {"tp": 8, "pp": 1, "dp": 1, "sp": True},
    "training": {"seq_len": 8192, "global_batch": 8, "micro_batch": 1},
}
SPACE = {"parallel.tp": [4, 8], "parallel.pp": [2, 1]}  # two valid points (tp*pp = 8) and two invalid


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Training simulations run in this process."""
    real = simulator.training.simulate_training
    log: list[Any] = []

    def counted(cfg: Any, profile: Any = None) -> Any:
        log.append(cfg)
        return real(cfg, profile)

    monkeypatch.setattr(simulator.training, "simulate_training", counted)
    return log


@pytest.fixture
def cached(tmp_path: Path, calls: list[Any]) -> tuple[Path, pd.DataFrame, list[Path]]:
    """A sweep run once into ``tmp_path``: (cache dir, its frame, the ok points' cache files)."""
    fresh = sweep(BASE, SPACE, cache_dir=tmp_path, progress=False)
    ok_hashes = set(fresh.loc[fresh["status"] == "ok", "config_hash"])
    files = sorted(p for p in tmp_path.rglob("*.json") if p.stem in ok_hashes)
    assert len(files) == 2 and len(calls) == 2
    calls.clear()
    return tmp_path, fresh, files


def rerun(cache_dir: Path, caplog: pytest.LogCaptureFixture) -> tuple[pd.DataFrame, list[str]]:
    """The same sweep again: (frame, the cache's warnings)."""
    caplog.clear()
    frame = sweep(BASE, SPACE, cache_dir=cache_dir, progress=False)
    return frame, [r.getMessage() for r in caplog.records if r.name == "clustersim.sweep"]


def edit(path: Path, change: Any) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def test_a_clean_cache_is_trusted_without_warnings(cached, calls, caplog) -> None:
    cache_dir, fresh, files = cached
    again, warnings = rerun(cache_dir, caplog)
    assert calls == [] and warnings == [] and again.attrs["cached"] == 2 and again.attrs["cache_rejected"] == 0
    pd.testing.assert_frame_equal(again, fresh)
    for path in files:
        record = json.loads(path.read_text())
        assert record["digest"] == record_digest(record) and record_problem(record, path.stem) is None


def _drop(key: str) -> Any:
    return lambda r: r.pop(key)


def _set(key: str, value: Any) -> Any:
    return lambda r: r.__setitem__(key, value)


def _metric(name: str, value: Any) -> Any:
    return lambda r: r["metrics"].__setitem__(name, value)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (_drop("metrics"), "missing metrics"),
        (_drop("status"), "missing status"),
        (_drop("digest"), "missing digest"),
        (_set("metrics", []), "bad metrics"),
        (_set("metrics", {}), "bad metrics"),  # an ok point with no metrics
        (_set("status", "error"), "bad kind or status"),
        (_set("reason", 5), "bad reason"),
        (_set("sim_s", -1.0), "bad sim_s"),
        (_set("extra", 1), "unexpected key"),
        (_set("hash", "0" * 64), "hash is not its file name"),
        (_set("code", "sweep-2/clustersim-0.0/0000"), "another clustersim version"),
        (_metric("step_time_s", "fast"), "digest mismatch"),
        (_metric("step_time_s", [1.0]), "not a finite number"),
        (_metric("step_time_s", {"a": 1}), "not a finite number"),
    ],
)
def test_a_malformed_record_is_a_miss_with_one_warning(cached, calls, caplog, change, why) -> None:
    cache_dir, fresh, files = cached
    edit(files[0], change)
    again, warnings = rerun(cache_dir, caplog)
    assert len(warnings) == 1 and why in warnings[0] and files[0].name in warnings[0], warnings
    assert warnings[0].startswith("clustersim: warning:") and "Traceback" not in warnings[0]
    assert len(calls) == 1 and again.attrs["cache_rejected"] == 1 and again.attrs["cached"] == 1
    pd.testing.assert_frame_equal(again, fresh)
    # rewritten whole: the next run trusts it again
    assert record_problem(json.loads(files[0].read_text()), files[0].stem) is None
    calls.clear()
    _, warnings = rerun(cache_dir, caplog)
    assert calls == [] and warnings == []


def test_an_edited_metric_is_never_used(cached, calls, caplog) -> None:
    """A plausible but wrong number (the edit an attacker or a stray script would make) is caught by the digest."""
    cache_dir, fresh, files = cached
    edit(files[1], _metric("step_time_s", 1e-9))
    again, warnings = rerun(cache_dir, caplog)
    assert len(warnings) == 1 and "digest mismatch" in warnings[0] and len(calls) == 1
    assert (again["step_time_s"].dropna() > 1e-6).all()
    pd.testing.assert_frame_equal(again, fresh)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_refused(cached, calls, caplog, value) -> None:
    cache_dir, fresh, files = cached
    text = files[0].read_text()
    record = json.loads(text)
    original = json.dumps(record["metrics"]["step_time_s"])
    files[0].write_text(text.replace(f'"step_time_s": {original}', f'"step_time_s": {value}', 1))
    assert value in files[0].read_text()
    again, warnings = rerun(cache_dir, caplog)
    assert len(warnings) == 1 and "not a finite number" in warnings[0] and len(calls) == 1
    pd.testing.assert_frame_equal(again, fresh)


@pytest.mark.parametrize(
    "content",
    [b'{"hash": "trunc', b"\xff\xfe not utf-8", b"[" * 100_000, b"[1, 2, 3]", b"null"],
)
def test_torn_or_foreign_files_are_misses(cached, calls, caplog, content) -> None:
    cache_dir, fresh, files = cached
    files[0].write_bytes(content)
    again, warnings = rerun(cache_dir, caplog)
    assert len(warnings) == 1 and len(calls) == 1 and len(warnings[0]) < 300, warnings
    pd.testing.assert_frame_equal(again, fresh)


def test_oversized_file_or_fifo_is_refused_without_reading_it(cached, calls, caplog) -> None:
    cache_dir, fresh, files = cached
    with files[0].open("wb") as fh:
        fh.truncate(MAX_CACHE_FILE_BYTES + 1)
    files[1].unlink()
    os.mkfifo(files[1])  # a read would block forever
    again, warnings = rerun(cache_dir, caplog)
    assert len(warnings) == 2 and "over 4 MiB" in warnings[0] + warnings[1] and len(calls) == 2
    pd.testing.assert_frame_equal(again, fresh)


def test_put_refuses_a_record_it_could_not_read_back(tmp_path: Path) -> None:
    """A non-finite metric is not written (it would be refused on every read); the finite record is."""
    key = "ab" * 32
    cache = ResultCache(tmp_path)
    record = {
        "schema": SWEEP_SCHEMA,
        "hash": key,
        "kind": "training",
        "code": code_version(),
        "profile": "default",
        "point": {"parallel.tp": 8},
        "status": "ok",
        "reason": None,
        "sim_s": 0.1,
    }
    cache.put(key, {**record, "metrics": {"step_time_s": float("nan")}})
    assert not list(tmp_path.rglob("*.json")) and cache.get(key) is None
    cache.put(key, {**record, "metrics": {"step_time_s": 1.5}})
    assert cache.get(key) == {**record, "metrics": {"step_time_s": 1.5}, "digest": ANY}
