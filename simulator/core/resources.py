"""Bundled package data: example configs, claim scenarios, data tables.

Everything the tool ships is read through ``importlib.resources`` from the ``simulator`` package, so a
plain ``pip install .`` works from any working directory (no paths relative to a checkout).
"""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path

from hwmodels.errors import ClusterSimError

__all__ = ["data_path", "data_text", "example_path", "list_examples", "read_table"]

_EXAMPLE_SUFFIXES = (".yaml", ".yml", ".csv")


def _root():
    return resources.files("simulator")


def data_text(relpath: str, encoding: str = "utf-8") -> str:
    """Text of a bundled data file under ``simulator/data/`` (e.g. ``"validation/megatron_sc21_table1.csv"``)."""
    return _root().joinpath("data").joinpath(relpath).read_text(encoding=encoding)


def data_path(relpath: str) -> Path:
    """Filesystem path of a bundled data file under ``simulator/data/``."""
    return Path(str(_root().joinpath("data").joinpath(relpath)))


def example_path(name: str) -> Path:
    """Path of a bundled example config (``quickstart.yaml``, ``sweeps/llama3-8b-serving.yaml``, ``claims/C5.yaml``)."""
    path = Path(str(_root().joinpath("examples").joinpath(name)))
    if not path.is_file():
        raise ClusterSimError(f"no bundled example {name!r}; `clustersim example --list` lists them")
    return path


def list_examples() -> list[str]:
    """Names of every bundled example, relative to the examples folder (sub-folders with a slash)."""
    root = Path(str(_root().joinpath("examples")))
    names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in _EXAMPLE_SUFFIXES]
    return sorted(names, key=lambda n: (n.count("/"), n))


def _norm_column(col: str) -> str:
    col = col.replace("\ufeff", "").strip().lstrip("#").strip().lower()
    for a, b in (("(", ""), (")", ""), (" ", "_"), ("#", "")):
        col = col.replace(a, b)
    return {"parameters_billion": "params_b"}.get(col, col)


def read_table(filename: str) -> list[dict[str, str]]:
    """Rows of a bundled CSV (comment lines above the header skipped, columns snake_cased)."""
    text = data_text(f"validation/{filename}", encoding="utf-8-sig")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    start = next(
        i
        for i in range(len(lines) - 1)
        if not lines[i + 1].startswith("#") and lines[i].count(",") == lines[i + 1].count(",")
    )
    reader = csv.DictReader(io.StringIO("\n".join(lines[start:])))
    return [{_norm_column(k): v for k, v in row.items()} for row in reader]
