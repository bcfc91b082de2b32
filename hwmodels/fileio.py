"""Atomic file writes: readers see the old file or the whole new one, never a torn one.

The one ``atomic_write`` of the project (profiles, raw calibration files, traces, sweep caches and
results, uploads). It lives in the lowest layer so every package can use it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | Path, data: str | bytes | Callable[[str], None]) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder, then rename it into place.

    ``data`` is text, bytes, or a callable that writes the temp file given its path (for writers such
    as ``DataFrame.to_parquet`` that want a file name). The temp file is removed if anything fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(
                fd, "wb" if isinstance(data, bytes) else "w", encoding=None if isinstance(data, bytes) else "utf-8"
            ) as fh:
                fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
