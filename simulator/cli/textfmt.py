"""Plain-text tables and number formatting for the CLI (no colour, stable for tests and pipes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def fmt(value: Any, digits: int = 3) -> str:
    """Human-friendly number: thousands separators for big values, ``digits`` significant figures."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    if value == 0:
        return "0"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """Render ``rows`` as an aligned table; ``columns`` are (key, header-with-unit) pairs."""
    cells = [[fmt(r.get(key)) for key, _ in columns] for r in rows]
    headers = [h for _, h in columns]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]

    def line(parts: Sequence[str]) -> str:
        out = []
        for i, (p, w) in enumerate(zip(parts, widths, strict=True)):
            out.append(p.ljust(w) if i == 0 else p.rjust(w))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep, *(line(c) for c in cells)])
