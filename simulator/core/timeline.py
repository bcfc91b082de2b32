"""The timeline of a simulation: every compute and communication interval, per rank and stream.

A first-class output: the app's Gantt chart, the energy integral and the tests all read it, and
``to_chrome_trace`` writes a file that chrome://tracing and Perfetto open.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwmodels.fileio import atomic_write

COLUMNS = ("start_s", "end_s", "rank", "stream", "name", "phase", "microbatch", "chunk")


@dataclass(frozen=True)
class Timeline:
    """Immutable list of ``(start_s, end_s, rank, stream, name, phase, microbatch, chunk)`` records."""

    events: tuple[tuple, ...]

    def __len__(self) -> int:
        return len(self.events)

    def records(self) -> list[dict[str, Any]]:
        """The events as dicts keyed by column name (for JSON and tables)."""
        return [dict(zip(COLUMNS, e, strict=True)) for e in self.events]

    def to_frame(self) -> Any:
        """The events as a pandas DataFrame (pandas is imported only here)."""
        import pandas as pd

        return pd.DataFrame(list(self.events), columns=list(COLUMNS))

    def busy_s(self, rank: int, streams: tuple[str, ...] | None = None) -> float:
        """Total time ``rank`` spends in events on ``streams`` (all streams when None)."""
        return sum(e[1] - e[0] for e in self.events if e[2] == rank and (streams is None or e[3] in streams))

    def to_chrome_trace(self) -> dict[str, Any]:
        """Chrome trace-event JSON (microseconds): one process per rank, one thread per stream."""
        streams = sorted({e[3] for e in self.events})
        tid = {s: i for i, s in enumerate(streams)}
        out: list[dict[str, Any]] = []
        for rank in sorted({e[2] for e in self.events}):
            out.append({"ph": "M", "name": "process_name", "pid": rank, "args": {"name": f"rank {rank}"}})
            for s in streams:
                out.append({"ph": "M", "name": "thread_name", "pid": rank, "tid": tid[s], "args": {"name": s}})
        for start, end, rank, stream, name, phase, mb, chunk in self.events:
            out.append(
                {
                    "ph": "X",
                    "name": name,
                    "cat": phase,
                    "pid": rank,
                    "tid": tid[stream],
                    "ts": start * 1e6,
                    "dur": (end - start) * 1e6,
                    "args": {"microbatch": mb, "chunk": chunk},
                }
            )
        return {"traceEvents": out, "displayTimeUnit": "ms"}

    def write_chrome_trace(self, path: str | Path) -> Path:
        """Write the Chrome trace atomically (temp file, then rename)."""
        return atomic_write(path, json.dumps(self.to_chrome_trace()))
