"""File I/O of the project: atomic writes, and capped reads of regular files only.

The one ``atomic_write`` (profiles, raw calibration files, traces, sweep caches and results, uploads):
readers see the old file or the whole new one, never a torn one. The one ``read_regular_file``: a file
named by a config or a link is checked before it is opened (a regular file, not a directory, device or
FIFO, and not over a size cap), so ``/dev/zero`` or a FIFO can neither exhaust memory nor hang a read.
Both live in the lowest layer so every package can use them; ``simulator.core.untrusted`` builds on them.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from hwmodels.errors import ClusterSimError

__all__ = [
    "UPLOAD_MAX_AGE_S",
    "atomic_write",
    "read_regular_file",
    "remove_stale_files",
    "size_text",
    "stat_regular_file",
]


def _umask() -> int:
    """The process umask, read without changing it where /proc says (os.umask alone must set it to read it,
    which would race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file_mode(path: Path) -> int:
    """Mode for a file replacing ``path``: the existing file's, else what ``open()`` would give (0666 & ~umask)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


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
        os.chmod(tmp, _new_file_mode(path))  # mkstemp makes 0600; a plain open() would honour the umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def size_text(nbytes: int) -> str:
    """A byte count as ``64 MiB`` / ``512 KiB`` / ``100 bytes`` for messages."""
    if nbytes >= 2**20:
        return f"{nbytes / 2**20:g} MiB"
    return f"{nbytes / 1024:g} KiB" if nbytes >= 1024 else f"{nbytes} bytes"


def _check_stat(st: os.stat_result, max_bytes: int, what: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise ClusterSimError(f"{what} is a directory; name a file")
    if not stat.S_ISREG(st.st_mode):
        raise ClusterSimError(f"{what} is not a regular file (a device, FIFO or socket); name a file")
    if st.st_size > max_bytes:
        raise ClusterSimError(f"{what} is over {size_text(max_bytes)}; refusing to read it")


def stat_regular_file(path: str | Path, max_bytes: int, what: str) -> os.stat_result:
    """``path``'s stat when it is a regular file of at most ``max_bytes``; a one-line error otherwise.

    Nothing is opened: a directory, ``/dev/*``, a FIFO or a socket is refused from its metadata alone.
    The message names only ``what`` (never the file's contents).
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ClusterSimError(f"cannot read {what}: {exc.strerror or 'no such file'}") from None
    _check_stat(st, max_bytes, what)
    return st


def read_regular_file(path: str | Path, max_bytes: int, what: str) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``, checked before and after opening it.

    The open is non-blocking, so a file swapped for a FIFO between the checks cannot hang the read;
    at most ``max_bytes + 1`` bytes are ever read.
    """
    stat_regular_file(path, max_bytes, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ClusterSimError(f"cannot read {what}: {exc.strerror or exc}") from None
    try:
        _check_stat(os.fstat(fd), max_bytes, what)
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise ClusterSimError(f"cannot read {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise ClusterSimError(f"{what} is over {size_text(max_bytes)}; refusing to read it")
    return data


#: How long an uploaded file (the app's traces, intensity series) is kept after its last use: a day.
UPLOAD_MAX_AGE_S = 24 * 3600.0


def remove_stale_files(folder: str | Path, pattern: str, max_age_s: float = UPLOAD_MAX_AGE_S) -> int:
    """Delete the files in ``folder`` matching ``pattern`` not modified for ``max_age_s`` seconds; returns how many.

    The app saves uploads under content-hashed names in the temp folder and touches one when it is used
    again, so this removes only uploads nobody used for a day. Files that vanish meanwhile are skipped.
    """
    import time

    cutoff = time.time() - max_age_s
    removed = 0
    for p in Path(folder).glob(pattern):
        try:
            if p.is_file() and not p.is_symlink() and p.stat().st_mtime < cutoff:
                p.unlink()
                removed += 1
        except OSError:
            continue
    return removed
