"""The sweep cache: one small JSON file per simulated point, named by a hash of what decides its numbers.

A point's key (:func:`config_hash`) covers its fully resolved config, the hardware profile and the
simulator's code (:func:`code_version`), so an interrupted or repeated sweep only simulates what is missing
and results from other code never come back.
"""

from __future__ import annotations

import hashlib
import json
import re
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
SWEEP_SCHEMA = "sweep-1"

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

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None
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
        """The cached record of ``key``, or None when there is no cache, no file, or a torn or foreign one."""
        if self.root is None:
            return None
        try:
            record = json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None  # missing or unreadable: simulate again
        if not isinstance(record, dict) or record.get("hash") != key or record.get("schema") != SWEEP_SCHEMA:
            return None
        return record

    def put(self, key: str, record: dict[str, Any]) -> None:
        """Store ``record`` under ``key`` (nothing without a cache dir); a failed write is a ClusterSimError."""
        if self.root is None:
            return
        try:
            # key order kept: the metric columns come out in the same order from the cache as from a simulation
            _atomic_write_text(self.path(key), json.dumps(record, default=str))
        except OSError as exc:
            raise ClusterSimError(
                f"cannot write to cache dir {self.root}: {exc.strerror or exc}; free space or pick another --cache-dir"
            ) from None


def _atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, text)
