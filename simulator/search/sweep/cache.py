"""The sweep cache: one small JSON file per simulated point, named by a hash of what decides its numbers.

A point's key (:func:`config_hash`) covers its fully resolved config, the hardware profile and the
simulator's code (:func:`code_version`), so an interrupted or repeated sweep only simulates what is missing
and results from other code never come back. Each file also carries a ``digest`` (sha256 of the record's
canonical JSON), and :meth:`ResultCache.get` checks the record's shape (keys, types, finite numbers), its key,
code version and digest: a torn, foreign or edited file is a cache miss with a one-line warning, and the
point is simulated and written again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hwmodels.errors import ClusterSimError
from hwmodels.fileio import atomic_write, read_regular_file
from hwmodels.profile import MAX_PROFILE_BYTES
from simulator.search.sweep.spec import Kind

#: Bump when the cached record or the metric columns change shape, so old cache files are not reused.
SWEEP_SCHEMA = "sweep-2"
#: The largest cache file read back (a record is a few KiB; anything bigger is not one of ours).
MAX_CACHE_FILE_BYTES = 4 * 2**20
#: The statuses a cached record may hold (errors are never cached).
_CACHED_STATUSES = ("ok", "invalid")

_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w)(?!\.\d)")


def normalise_reason(message: str) -> str:
    """The reason a point is invalid with its numbers replaced by N, so equal reasons count together."""
    return _NUMBER.sub("N", message.strip())


# ---- cache keys -----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def code_version() -> str:
    """Schema, package version and a digest of the simulator's code and data: results from other code
    never come back from the cache."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("clustersim")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        pkg = "dev"
    digest = hashlib.sha256()
    skip = ("search/sweep/", "cli/", "app/")  # presentation only; they never change a simulated number
    for name in ("simulator", "hwmodels"):
        root = Path(str(resources.files(name)))
        for path in sorted(root.rglob("*")):
            if path.suffix not in {".py", ".yaml", ".json", ".csv"} or "__pycache__" in path.parts:
                continue
            rel = path.relative_to(root).as_posix()
            if rel.startswith(skip):
                continue
            digest.update(f"{name}/{rel}\0".encode())
            digest.update(path.read_bytes())
    return f"{SWEEP_SCHEMA}/clustersim-{pkg}/{digest.hexdigest()[:16]}"


def profile_key(profile: str | None) -> str:
    """The profile as a cache key: a profile file by a digest of its contents, else its name."""
    if profile is None:
        return "default"
    path = Path(profile)
    if path.is_file():  # read with the profile reader's cap: a sweep file may name any file
        return "file:" + hashlib.sha256(read_regular_file(path, MAX_PROFILE_BYTES, f"profile {path}")).hexdigest()
    return profile


def config_hash(kind: Kind, cfg: BaseModel, profile: str | None = None) -> str:
    """sha256 of the fully resolved config, profile and code version (the cache key of a point)."""
    payload = {
        "kind": kind,
        "config": cfg.model_dump(mode="json"),
        "profile": profile_key(profile),
        "code": code_version(),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ResultCache:
    """One JSON file per point under ``root/ab/abcdef....json``, written atomically (temp file + rename)."""

    def __init__(self, root: str | Path | None, warn: Callable[[str], None] | None = None) -> None:
        self.root = Path(root) if root is not None else None
        self.warn = warn or _print_warning
        self.rejected = 0  # cache files found but refused (torn, foreign or edited)
        if self.root is not None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ClusterSimError(f"cannot create cache dir {self.root}: {exc.strerror}") from None

    def path(self, key: str) -> Path:
        """The file of the point with cache key ``key``."""
        assert self.root is not None
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached record of ``key``, or None when there is no cache or no file; a torn, foreign or
        edited file is also None (a miss), with a one-line warning through ``warn``."""
        if self.root is None:
            return None
        path = self.path(key)
        if not path.exists():
            return None
        try:
            record = json.loads(read_regular_file(path, MAX_CACHE_FILE_BYTES, f"cache file {path.name}"))
        except ClusterSimError as exc:
            return self._reject(path, str(exc))
        except (ValueError, RecursionError):
            return self._reject(path, "not whole JSON")
        problem = record_problem(record, key)
        return record if problem is None else self._reject(path, problem)

    def _reject(self, path: Path, problem: str) -> None:
        self.rejected += 1
        self.warn(f"clustersim: warning: ignoring cache file {path.name} ({problem}); simulating the point again")
        return None

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store ``record`` under ``key`` (nothing without a cache dir); a failed write is a ClusterSimError."""
        if self.root is None:
            return
        record = {k: v for k, v in record.items() if k != "digest"}
        try:
            record["digest"] = record_digest(record)
        except (TypeError, ValueError):
            return  # a value JSON cannot hold exactly (NaN, an object): not cached, simulated each time
        if record_problem(record, key) is not None:
            return  # e.g. a non-finite metric: it could never be read back, so it is simulated each time
        try:
            # key order kept: the metric columns come out in the same order from the cache as from a simulation
            _atomic_write_text(self.path(key), json.dumps(record, allow_nan=False))
        except OSError as exc:
            raise ClusterSimError(
                f"cannot write to cache dir {self.root}: {exc.strerror or exc}; free space or pick another --cache-dir"
            ) from None


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, text)


def _print_warning(message: str) -> None:
    """One line on stderr (logging's last-resort handler when the application configured none)."""
    logging.getLogger("clustersim.sweep").warning(message)


# ---- the record's integrity -----------------------------------------------------------------------


def record_digest(record: dict[str, Any]) -> str:
    """sha256 of the record's canonical JSON (sorted keys, no NaN), without its ``digest`` field."""
    body = {k: v for k, v in record.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _is_scalar(value: Any) -> bool:
    """A metric cell: None, a bool, a string, or a finite number."""
    if value is None or isinstance(value, bool | str | int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _shape_problem(record: Any) -> str | None:
    """What is wrong with a record's keys and types, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    expected = {"schema", "hash", "kind", "code", "profile", "point", "status", "reason", "metrics", "sim_s", "digest"}
    missing = sorted(expected - record.keys())
    if missing:
        return f"missing {', '.join(missing)}"
    if sorted(record.keys() - expected):
        return f"unexpected key {sorted(record.keys() - expected)[0]!r}"
    if record["kind"] not in ("training", "serving") or record["status"] not in _CACHED_STATUSES:
        return "bad kind or status"
    if not isinstance(record["reason"], str | None) or (record["status"] == "invalid") != isinstance(
        record["reason"], str
    ):
        return "bad reason"
    sim_s = record["sim_s"]
    if isinstance(sim_s, bool) or not isinstance(sim_s, int | float) or not math.isfinite(sim_s) or sim_s < 0:
        return "bad sim_s"
    metrics = record["metrics"]
    if not isinstance(metrics, dict) or (record["status"] == "ok") != bool(metrics):
        return "bad metrics"
    bad = next((name for name, value in metrics.items() if not _is_scalar(value)), None)
    if bad is not None:
        return f"metric {bad[:60]!r} is not a finite number, text or flag"
    if not isinstance(record["point"], dict) or not all(_is_scalar(v) for v in record["point"].values()):
        return "bad point"
    return None


def record_problem(record: Any, key: str) -> str | None:
    """Why a cached record cannot be used for cache key ``key`` (shape, key, code version, digest), or None."""
    problem = _shape_problem(record)
    if problem is not None:
        return problem
    if record["schema"] != SWEEP_SCHEMA or record["code"] != code_version():
        return "written by another clustersim version"
    if record["hash"] != key:
        return "its hash is not its file name"
    try:
        digest = record_digest(record)
    except ValueError:  # NaN or Infinity somewhere json.loads accepted it
        return "not finite JSON"
    if record["digest"] != digest:
        return "digest mismatch: edited or corrupt"
    return None
