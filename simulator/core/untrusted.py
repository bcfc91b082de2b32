"""The input-safety layer: reading files, YAML and JSON that may come from someone else, and confining paths.

Configs, sweep files, traces and the app's URL state can be written by someone else (DESIGN.md,
"Untrusted input"). Every reader of such input goes through here, so the rules hold in one place:

- a file is read only when it is a regular file under its kind's size cap, checked before it is opened
  (:func:`read_text_file`, built on :func:`hwmodels.fileio.read_regular_file`);
- text must be UTF-8, YAML is loaded by a safe loader that refuses alias bombs and deep nesting
  (:func:`load_yaml_text`), JSON is parsed with its depth checked (:func:`parse_json_text`);
- error messages name the file, a line or a column, never the file's contents;
- file paths that come from a link or an upload must lie in an allowed folder, the app's upload folder
  (:func:`confine_path`, :func:`check_config_files`); URL configs never name a server file.

The caps are in :mod:`simulator.core.limits`.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hwmodels.errors import ClusterSimError
from hwmodels.fileio import atomic_write, read_regular_file, remove_stale_files, size_text, stat_regular_file
from simulator.core.limits import MAX_CONFIG_BYTES, MAX_NESTING_DEPTH, MAX_YAML_NODES

__all__ = [
    "FILE_KEYS",
    "UPLOAD_DIR",
    "check_config_files",
    "check_depth",
    "confine_path",
    "decode_text",
    "is_upload",
    "load_yaml_text",
    "parse_json_text",
    "read_regular_file",
    "read_text_file",
    "read_yaml_file",
    "save_upload",
    "stat_regular_file",
]

#: Where the app keeps uploaded files (content-hashed names); the only folder a link's paths may name.
UPLOAD_DIR = Path(tempfile.gettempdir()) / "clustersim-uploads"
#: Uploads the pages saved before UPLOAD_DIR existed: ``<tmp>/clustersim-trace-<16 hex>.csv`` and the like.
_LEGACY_UPLOAD = re.compile(r"clustersim-(trace|intensity)-[0-9a-f]{16}(\.[a-z0-9]{1,8}){1,2}")
#: Config keys whose value is a file on the machine that runs clustersim.
FILE_KEYS = frozenset({"path", "traced"})
_UPLOAD_SUFFIXES = frozenset({".csv", ".json", ".jsonl", ".ndjson", ".yaml", ".yml", ".gz"})


# ---- text ---------------------------------------------------------------------------------------------


def decode_text(raw: bytes, what: str) -> str:
    """``raw`` as UTF-8 text (a leading byte-order mark dropped); a one-line error naming the byte offset."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ClusterSimError(f"{what} is not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8") from None


def read_text_file(path: str | Path, max_bytes: int, what: str) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes`` (see :func:`read_regular_file`)."""
    return decode_text(read_regular_file(path, max_bytes, what), what)


# ---- YAML ---------------------------------------------------------------------------------------------


class _Refused(yaml.YAMLError):
    """Raised inside the loader; :func:`load_yaml_text` turns it into a one-line ClusterSimError."""


class LimitedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses, before building any object, documents nested deeper than
    :data:`~simulator.core.limits.MAX_NESTING_DEPTH` or expanding to more than ``max_nodes`` nodes once
    aliases are followed (a "billion laughs" bomb), and recursive aliases."""

    max_nodes = MAX_YAML_NODES

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Compose one node, counting how deep the document nests (the composer recurses per level)."""
        self._depth += 1
        try:
            if self._depth > MAX_NESTING_DEPTH:
                raise _Refused(f"nests deeper than {MAX_NESTING_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_document(self, node: Any) -> Any:
        """Build the document once its expanded size is known to be under the cap."""
        _expanded_size(node, self.max_nodes)
        return super().construct_document(node)


def _expanded_size(root: Any, cap: int) -> int:
    """Nodes under ``root`` with every alias followed (memoised per node, so a bomb costs its own size)."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Refused("has a recursive alias (a node that contains itself)")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if total > cap:
            raise _Refused(f"expands to over {cap:,} nodes (YAML aliases); write the values out")
        sizes[key] = total
        return total

    return size(root)


def load_yaml_text(text: str, what: str) -> Any:
    """Parse YAML with :class:`LimitedSafeLoader`; any problem is a one-line error with a line number
    (never the offending text)."""
    try:
        return yaml.load(text, Loader=LimitedSafeLoader)  # noqa: S506 - a SafeLoader subclass
    except _Refused as exc:
        raise ClusterSimError(f"{what} {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ClusterSimError(f"{what} is not valid YAML{where}; fix the syntax") from None
    except RecursionError:
        raise ClusterSimError(f"{what} nests too deeply") from None
    except ValueError:  # an integer of more than 4,300 digits (sys.get_int_max_str_digits)
        raise ClusterSimError(f"{what} holds a number too long to read (thousands of digits); fix it") from None


def read_yaml_file(path: str | Path, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """A YAML file, read with the size and type checks and loaded with :func:`load_yaml_text`."""
    return load_yaml_text(read_text_file(path, max_bytes, what), what)


# ---- JSON ---------------------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json_text(text: str | bytes, what: str, *, max_depth: int = MAX_NESTING_DEPTH) -> Any:
    """Parse JSON (NaN/Infinity refused), with its nesting checked; a one-line error with the line number."""
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ClusterSimError(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise ClusterSimError(f"{what} nests deeper than {max_depth} levels") from None
    except ValueError as exc:  # a NaN/Infinity constant, an integer with thousands of digits, bad UTF-8
        first = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ClusterSimError(f"{what} is not valid JSON ({first})") from None
    check_depth(data, what, max_depth)
    return data


def check_depth(data: Any, what: str, max_depth: int = MAX_NESTING_DEPTH) -> None:
    """A one-line error when lists and mappings in ``data`` nest deeper than ``max_depth`` (no recursion)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    seen: set[int] = set()
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, Mapping | list | tuple):
            continue
        if depth > max_depth:
            raise ClusterSimError(f"{what} nests deeper than {max_depth} levels")
        if id(node) in seen:  # shared (YAML alias) or recursive: measured once
            continue
        seen.add(id(node))
        children = node.values() if isinstance(node, Mapping) else node
        stack.extend((child, depth + 1) for child in children)


# ---- paths from links and uploads --------------------------------------------------------------------


def _within(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def is_upload(path: str | Path) -> bool:
    """Whether ``path`` (symlinks followed) is a file the app saved from an upload: inside
    :data:`UPLOAD_DIR`, or a legacy ``<tmp>/clustersim-trace-<hash>.csv``."""
    resolved = Path(path).resolve()
    if _within(resolved, UPLOAD_DIR.resolve()):
        return True
    return resolved.parent == Path(tempfile.gettempdir()).resolve() and bool(_LEGACY_UPLOAD.fullmatch(resolved.name))


def confine_path(path: Any, roots: Sequence[str | Path], what: str) -> Path:
    """``path`` resolved (symlinks followed) when it lies inside one of ``roots`` (or is an app upload
    when ``roots`` is empty); otherwise a one-line error that says the same whether or not the file exists."""
    if not isinstance(path, str | Path) or not str(path) or "\0" in str(path):
        raise ClusterSimError(f"{what} must be a file name")
    p = Path(path)
    name = p.name or str(path)
    if not p.is_absolute():
        raise ClusterSimError(f"{what} {name!r}: a link or an upload may only name uploaded files")
    resolved = p.resolve()
    if any(_within(resolved, Path(r).resolve()) for r in roots) or (not roots and is_upload(resolved)):
        return resolved
    raise ClusterSimError(f"{what} {name!r}: a link or an upload may only name uploaded files; upload it in the app")


def _walk(data: Any, where: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted location, key, value) of every mapping entry in nested ``data`` (depth-checked first)."""
    stack: list[tuple[Any, str]] = [(data, where)]
    while stack:
        node, at = stack.pop()
        items: Iterable[tuple[Any, Any]]
        if isinstance(node, Mapping):
            items = node.items()
        elif isinstance(node, list | tuple):
            items = enumerate(node)
        else:
            continue
        for key, value in items:
            loc = f"{at}.{key}" if at else str(key)
            if isinstance(node, Mapping):
                yield loc, str(key), value
            stack.append((value, loc))


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith("~") or text.lower().endswith((".json", ".yaml", ".yml"))


def check_config_files(data: Any, what: str, roots: Sequence[str | Path] = ()) -> None:
    """Refuse a config from a link or an upload that names a file on the server.

    ``stack.traced`` is always refused; other file keys (``workload.trace.path``, a routing trace's
    ``path``) must name an app upload (or lie under ``roots``); a ``model`` must be a preset name or an
    inline mapping, never a path. The checks use no file's contents and say the same whether or not
    the file exists.
    """
    check_depth(data, what)
    for loc, key, value in _walk(data):
        if key == "traced":
            raise ClusterSimError(f"{what}: {loc!r} reads a file on the server; use it from the CLI or the Python API")
        if key in FILE_KEYS:
            confine_path(value, roots, f"{what}: {loc}")
        elif key == "model" and isinstance(value, str) and _looks_like_path(value):
            name = Path(value).name
            raise ClusterSimError(f"{what}: model {name!r} is a file path; a link takes a preset name or an upload")


def save_upload(data: bytes, kind: str, suffix: str, max_bytes: int) -> Path:
    """Save uploaded bytes under :data:`UPLOAD_DIR` with a content-hashed name (the same upload, the same
    path) and return the path; links may name it (see :func:`is_upload`)."""
    suffix = suffix.lower() if suffix.lower() in _UPLOAD_SUFFIXES else ".dat"
    if len(data) > max_bytes:
        raise ClusterSimError(f"the uploaded {kind} is over {size_text(max_bytes)}")
    if not re.fullmatch(r"[a-z]{1,16}", kind):
        raise ClusterSimError(f"upload kind {kind!r} must be a short lower-case word")
    path = UPLOAD_DIR / f"{kind}-{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    remove_stale_files(UPLOAD_DIR, "*")  # uploads nobody used for a day (UPLOAD_MAX_AGE_S)
    if path.is_file():
        path.touch()  # used again: kept another day
    else:
        atomic_write(path, data)
    return path
