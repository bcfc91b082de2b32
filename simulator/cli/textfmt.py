"""Plain-text tables and number formatting for the CLI (no colour, stable for tests and pipes)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    """Human-friendly number: thousands separators for big values, ``digits`` significant figures."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if value != value:  # NaN: nothing to show (an infeasible setting, a missing metric)
        return "-"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    if value == 0:
        return "0"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _is_text(value: Any) -> bool:
    """A cell that reads as words (left-aligned), not a number or a percentage (right-aligned)."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return False
    text = str(value).strip().replace(",", "")
    return not re.fullmatch(r"[-+]?[$x]?\d*\.?\d+(e[-+]?\d+)?%?", text, flags=re.IGNORECASE)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Render ``rows`` as an aligned table; ``columns`` are (key, header-with-unit) pairs.

    The first column and columns of words are left-aligned (header too), columns of numbers right-aligned.
    """
    cells = [[fmt(r.get(key)) for key, _ in columns] for r in rows]
    headers = [h for _, h in columns]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    left = [i == 0 or any(_is_text(r.get(key)) for r in rows) for i, (key, _) in enumerate(columns)]

    def line(parts: Sequence[str]) -> str:
        out = []
        for p, w, flush_left in zip(parts, widths, left, strict=True):
            out.append(p.ljust(w) if flush_left else p.rjust(w))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(c) for c in cells)])
