"""Serving traffic: a :class:`WorkloadSpec` -> a list of :class:`Request` (arrival time, prompt, output).

Synthetic arrival processes and length distributions, or both replayed from a request trace (Azure /
Splitwise, Vidur, or any CSV/JSONL with a column mapping), optionally grouped into multi-turn sessions
whose prompts carry the conversation so far. All randomness comes from one ``numpy.random.default_rng(seed)``,
so the same spec and seed give the same list, and everything is drawn as numpy arrays (10k requests in a few
milliseconds).
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import os
import re
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import IO

import numpy as np

from hwmodels.checks import MAX_TOKENS
from hwmodels.errors import ClusterSimError, short
from hwmodels.fileio import stat_regular_file
from simulator.core.limits import MAX_REQUEST_TRACE_BYTES
from simulator.serving.config import (
    ConcurrencyArrivals,
    FixedArrivals,
    FixedLengths,
    GammaArrivals,
    LognormalLengths,
    PoissonArrivals,
    ShareGPTLengths,
    TraceArrivals,
    TraceLengths,
    TraceSpec,
    UniformLengths,
    WorkloadSpec,
    ZipfLengths,
)

FIELDS = ("arrival_s", "prompt_tokens", "output_tokens")
"""Our names for a trace's columns; ``TraceSpec.columns`` maps them to a file's columns."""

PRESETS: dict[str, dict[str, str]] = {
    "none": {f: f for f in FIELDS},
    # Azure LLM inference traces 2023/2024 (github.com/Azure/AzurePublicDataset), used by Splitwise.
    "azure": {"arrival_s": "TIMESTAMP", "prompt_tokens": "ContextTokens", "output_tokens": "GeneratedTokens"},
    "splitwise": {"arrival_s": "TIMESTAMP", "prompt_tokens": "ContextTokens", "output_tokens": "GeneratedTokens"},
    # Vidur's request-trace CSVs (microsoft/vidur, data/processed_traces).
    "vidur": {"arrival_s": "arrived_at", "prompt_tokens": "num_prefill_tokens", "output_tokens": "num_decode_tokens"},
}


@dataclass(frozen=True)
class LengthPreset:
    """A public dataset's prompt and output lengths: log-normals (median, log-space sigma) drawn until a pair passes
    the benchmarks' filters, with the published means they reproduce and where those come from."""

    prompt_median: float
    output_median: float
    sigma: float  # log-space spread of both lengths
    min_tokens: int  # pairs with a shorter prompt or output are dropped
    max_prompt: int
    max_total: int  # prompt + output
    prompt_mean: float  # published, after the filters
    output_mean: float
    source: str


#: ShareGPT V3 (ShareGPT_V3_unfiltered_cleaned_split.json, first human turn -> first answer) as serving benchmarks
#: sample it: vllm/benchmarks/datasets.py ShareGPTDataset (and sglang bench_serving) drop pairs with fewer than 4
#: tokens on either side, prompts over 1,024 and pairs over 2,048 tokens. Published means after those filters:
#: 10,000 sampled prompts have 2,258,583 input and 1,992,177 output tokens (sglang bench_serving, seed 1, Qwen3
#: tokenizer; github.com/lvhan028/llm_benchmark vllm/H800_v0.10.1.md), i.e. 225.9 and 199.2 per request. The
#: log-space sigma of 1.0 is an assumption (no published median was found); the medians are the values whose
#: filtered draws have exactly those means (solved once by Monte Carlo over 2M draws).
SHAREGPT = LengthPreset(
    prompt_median=167.3,
    output_median=126.8,
    sigma=1.0,
    min_tokens=4,
    max_prompt=1024,
    max_total=2048,
    prompt_mean=225.9,
    output_mean=199.2,
    source="github.com/lvhan028/llm_benchmark vllm/H800_v0.10.1.md (sharegpt means); vllm ShareGPTDataset filters",
)


@dataclass(frozen=True, slots=True)
class Request:
    """One inference request as the serving simulator sees it."""

    id: int
    arrival_s: float
    prompt_tokens: int  # whole prompt, including earlier conversation for later turns
    output_tokens: int
    session: int = -1  # -1 = single-turn request
    turn: int = 0  # 0-based turn index within the session
    context_tokens: int = 0  # leading prompt tokens that are earlier conversation (prefix-cacheable)
    turn_tokens: tuple[int, ...] = ()  # tokens of each earlier turn (its message + its answer), oldest first


@dataclass(frozen=True)
class Trace:
    """A parsed request trace: one row per request, sorted by arrival, ``arrival_s`` starting at 0.

    Arrays are read-only because loaded traces are cached and shared between runs.
    """

    arrival_s: np.ndarray  # float64 seconds
    prompt_tokens: np.ndarray  # int64, >= 1
    output_tokens: np.ndarray  # int64, >= 1

    def __len__(self) -> int:
        return len(self.prompt_tokens)


# ---- trace loading -------------------------------------------------------------------------------
def load_trace(spec: TraceSpec, *, require_arrivals: bool = True) -> Trace:
    """Read ``spec.path`` into a :class:`Trace`, mapping columns by ``preset`` then ``columns``.

    With ``require_arrivals=False`` a file without an arrival column still loads (lengths-only traces);
    its rows keep file order and ``arrival_s`` is all zeros. Results are cached on the file's mtime and size.
    """
    path = Path(spec.path).expanduser()
    if not os.path.exists(path):  # False, not OSError, for a name too long for the filesystem
        raise ClusterSimError(f"trace file '{spec.path}' not found; set workload.trace.path to an existing CSV/JSONL")
    st = stat_regular_file(path, MAX_REQUEST_TRACE_BYTES, f"trace '{spec.path}'")
    return _load_cached(spec.model_dump_json(), str(path.resolve()), st.st_mtime_ns, st.st_size, require_arrivals)


#: A header cell that reads as a column name; anything else (``root:x:0:0:root:/root:/bin/bash``) is not echoed.
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_ ]{0,39}")


def _header_text(header: list[str]) -> str:
    """The header's column names for an error message, unless the first line is not a list of column
    names (another kind of file named as a trace): then only how many cells it has, never its text."""
    if header and all(_COLUMN_NAME.fullmatch(h) for h in header[:12]):
        return ", ".join(header[:12])
    return f"a first line of {len(header)} cell(s) that are not column names" if header else "none"


@lru_cache(maxsize=8)
def _load_cached(spec_json: str, path: str, _mtime_ns: int, _size: int, require_arrivals: bool) -> Trace:
    spec = TraceSpec.model_validate_json(spec_json)
    unknown = sorted(set(spec.columns) - set(FIELDS))
    if unknown:
        raise ClusterSimError(f"workload.trace.columns has unknown key '{unknown[0]}'; use {', '.join(FIELDS)}")
    cols = {**PRESETS[spec.preset], **spec.columns}
    wanted = {f: cols[f] for f in FIELDS}
    name = spec.path
    fmt = spec.format if spec.format != "auto" else _format_from_suffix(Path(path), name)
    reader = _read_csv if fmt == "csv" else _read_jsonl
    try:
        header, raw, lines = reader(Path(path), name, list(wanted.values()), spec.max_rows)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error) as exc:
        raise ClusterSimError(f"trace {name} cannot be read: {_unreadable(exc)}") from None
    if not lines:
        raise ClusterSimError(f"trace {name} has no rows; point workload.trace.path at a trace with requests")
    have_arrivals = wanted["arrival_s"] in header
    for field, col in wanted.items():
        if col not in header and (field != "arrival_s" or require_arrivals):
            have = _header_text(header)
            raise ClusterSimError(
                f"trace {name} lacks column '{col}' (have: {have}); set workload.trace.columns or preset"
            )
    prompt = _tokens(raw[wanted["prompt_tokens"]], wanted["prompt_tokens"], lines, name)
    output = _tokens(raw[wanted["output_tokens"]], wanted["output_tokens"], lines, name)
    if have_arrivals:
        arrival = _arrival_seconds(raw[wanted["arrival_s"]], wanted["arrival_s"], lines, name)
        order = np.argsort(arrival, kind="stable")
        arrival, prompt, output = arrival[order] - arrival[order[0]], prompt[order], output[order]
    else:
        arrival = np.zeros(len(prompt))
    for a in (arrival, prompt, output):
        a.flags.writeable = False
    return Trace(arrival_s=arrival, prompt_tokens=prompt, output_tokens=output)


def _unreadable(exc: BaseException) -> str:
    """Why a trace file could not be read, in words (never its contents)."""
    if isinstance(exc, gzip.BadGzipFile | zlib.error):
        return "not a valid gzip file; decompress it or fix the .gz suffix"
    if isinstance(exc, EOFError):
        return "the gzip file is truncated; download it again"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (bad byte at offset {exc.start}); save it as UTF-8"
    if isinstance(exc, csv.Error):
        return "not valid CSV; check the quoting"
    return getattr(exc, "strerror", None) or type(exc).__name__


def _format_from_suffix(path: Path, name: str) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    last = suffixes[-1] if suffixes else ""
    if last in (".csv",):
        return "csv"
    if last in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    raise ClusterSimError(f"cannot tell the format of trace {name} from its suffix; set workload.trace.format")


def _open_text(path: Path) -> IO[str]:
    """Open a trace as text, transparently un-gzipping ``*.gz`` (public traces often ship compressed)."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - caller closes


RawColumns = tuple[list[str], dict[str, list], list[int]]  # header, column -> values, source line per row


def _read_csv(path: Path, name: str, cols: list[str], max_rows: int | None) -> RawColumns:
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        header = [h.strip() for h in next(reader, [])]
        index = {c: header.index(c) for c in cols if c in header}
        raw: dict[str, list] = {c: [] for c in index}
        lines: list[int] = []
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue  # blank line
            for c, i in index.items():
                raw[c].append(row[i] if i < len(row) else "")
            lines.append(reader.line_num)
            if max_rows is not None and len(lines) >= max_rows:
                break
    return header, raw, lines


def _read_jsonl(path: Path, name: str, cols: list[str], max_rows: int | None) -> RawColumns:
    header: list[str] = []
    raw: dict[str, list] = {c: [] for c in cols}
    lines: list[int] = []
    with _open_text(path) as fh:
        for lineno, obj in _json_objects(fh, name):
            if not header:
                header = list(obj)
            for c in cols:
                if c in obj:
                    raw[c].append(obj[c])
                elif c in header:
                    raise ClusterSimError(f"trace {name} line {lineno} lacks '{c}'; every row needs the same keys")
            lines.append(lineno)
            if max_rows is not None and len(lines) >= max_rows:
                break
    return header, raw, lines


def _json_objects(fh: IO[str], name: str) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) from JSON lines, or (item number, object) from one JSON array."""
    text_iter = iter(fh)
    for lineno, line in enumerate(text_iter, start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("["):  # a JSON array of objects rather than JSON lines
            yield from _json_array(line + "".join(text_iter), name)
            return
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ClusterSimError(f"trace {name} line {lineno} is not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise ClusterSimError(f"trace {name} line {lineno} nests too deeply; use flat objects") from None
        if not isinstance(obj, dict):
            raise ClusterSimError(f"trace {name} line {lineno} is not a JSON object; use one object per line")
        yield lineno, obj


def _json_array(text: str, name: str) -> Iterator[tuple[int, dict]]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClusterSimError(f"trace {name} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise ClusterSimError(f"trace {name} nests too deeply; use a flat array of objects") from None
    if not isinstance(items, list):
        raise ClusterSimError(f"trace {name} is not a JSON array of objects; use one object per request")
    for i, obj in enumerate(items, start=1):
        if not isinstance(obj, dict):
            raise ClusterSimError(f"trace {name} item {i} is not a JSON object; use one object per request")
        yield i, obj


def _tokens(values: list, col: str, lines: list[int], name: str) -> np.ndarray:
    """Token counts as int64; every one must be a whole number >= 1."""
    arr = _as_float(values)
    bad = ~np.isfinite(arr) | (arr < 1) | (arr > MAX_TOKENS) | (arr != np.floor(arr))
    if bad.any():
        i = int(np.argmax(bad))
        raise ClusterSimError(
            f"trace {name} line {lines[i]}: {col}={short(values[i])} is not a whole number from 1 to "
            f"{MAX_TOKENS:,}; fix or drop that row"
        )
    return arr.astype(np.int64)


def _as_float(values: list) -> np.ndarray:
    """Floats, with NaN for anything that is not a number (so the caller can name the bad row)."""
    try:
        return np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        return np.array([_float_or_nan(v) for v in values], dtype=np.float64)


def _float_or_nan(v: object) -> float:
    if isinstance(v, bool):
        return math.nan
    try:
        return float(v)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return math.nan


def _arrival_seconds(values: list, col: str, lines: list[int], name: str) -> np.ndarray:
    """Arrival times in seconds (not yet shifted to 0): numbers are seconds, strings are date-times.

    The first row decides which, so a stray value of the other kind is reported with its line.
    """
    arr = _as_float(values)
    if not math.isfinite(arr[0]):
        secs = _datetime_seconds(values)
        if secs is not None:
            return secs
        arr = np.array([_parse_datetime(v) if isinstance(v, str) else math.nan for v in values], dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise ClusterSimError(
            f"trace {name} line {lines[i]}: {col}={short(values[i])} is neither seconds nor a date-time; "
            "fix or drop that row"
        )
    return arr


def _datetime_seconds(values: list[str]) -> np.ndarray | None:
    """Fast path: numpy parses naive ISO date-times (any fraction digits, space or 'T'); None if it can't.

    Each value must first match ``_DATETIME``: numpy alone would read a stray "7" as the year 7.
    """
    if not all(isinstance(v, str) and _DATETIME.match(v) for v in values):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ts = np.array([v.strip() for v in values], dtype="datetime64[ns]")
    except (ValueError, Warning):
        return None
    if np.isnat(ts).any():
        return None
    ns = ts.astype(np.int64)
    return (ns - ns.min()).astype(np.float64) / 1e9


_DATETIME = re.compile(
    r"^\s*(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?\s*(Z|[+-]\d{2}:?\d{2})?\s*$"
)


def _parse_datetime(text: str) -> float:
    """Seconds since the epoch for an ISO-like date-time; naive times are taken as UTC.

    Handles what ``datetime.fromisoformat`` rejects on Python 3.10: more than 6 fractional digits
    (Azure traces have 7) and a 'Z' suffix. NaN if the text is not a date-time.
    """
    m = _DATETIME.match(text)
    if not m:
        return math.nan
    y, mo, d, hh, mm, ss, frac, tz = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0), tzinfo=timezone.utc)
    except ValueError:
        return math.nan
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        dt -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return dt.timestamp() + (float("0." + frac) if frac else 0.0)


# ---- fitting -------------------------------------------------------------------------------------
def fit_lognormal(values: Sequence[float]) -> tuple[float, float]:
    """(median, sigma) of a log-normal by maximum likelihood on log values: feeds ``LognormalLengths``
    from a trace's prompt or output lengths."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0 or not np.isfinite(x).all() or (x <= 0).any():
        raise ClusterSimError("fit_lognormal needs a non-empty list of positive, finite values")
    logs = np.log(x)
    return float(np.exp(logs.mean())), float(logs.std())


# ---- request generation --------------------------------------------------------------------------
def generate_requests(spec: WorkloadSpec, seed: int) -> list[Request]:
    """Requests sorted by arrival, ids 0..n-1 in that order; same spec and seed -> the same list.

    Counts: ``num_requests``, capped at the trace's rows when lengths replay a trace row by row, and at
    rows x turns when arrivals replay a trace (each trace arrival starts one session, or is one request).
    Sessions are open loop: turn k+1 arrives ``think_time_s`` after turn k *arrived*, whatever the
    serving delay, so the offered load does not depend on the system under test. The arrival rate is
    the rate of session starts; each session then offers ``turns`` requests.
    """
    rng = np.random.default_rng(seed)
    arrivals, lengths, sessions = spec.arrivals, spec.lengths, spec.sessions
    uses_trace = isinstance(arrivals, TraceArrivals) or isinstance(lengths, TraceLengths)
    if uses_trace and spec.trace is None:
        raise ClusterSimError("workload.arrivals/lengths kind 'trace' needs workload.trace.path")
    trace = load_trace(spec.trace, require_arrivals=isinstance(arrivals, TraceArrivals)) if uses_trace else None

    turns = sessions.turns if sessions is not None else 1
    n = spec.num_requests
    if trace is not None and isinstance(arrivals, TraceArrivals):
        n = min(n, len(trace) * turns)
    if trace is not None and isinstance(lengths, TraceLengths) and not lengths.sample:
        n = min(n, len(trace))
    starts = _arrival_times(spec, -(-n // turns), rng, trace)  # one arrival per session (or request)
    prompt, output = _lengths(spec, n, rng, trace)
    if sessions is None:
        return [
            Request(i, a, p, o)
            for i, (a, p, o) in enumerate(zip(starts.tolist(), prompt.tolist(), output.tolist(), strict=True))
        ]
    return _sessions(starts, prompt, output, turns, sessions.think_time_s)


def _arrival_times(spec: WorkloadSpec, n: int, rng: np.random.Generator, trace: Trace | None) -> np.ndarray:
    a = spec.arrivals
    if isinstance(a, PoissonArrivals):
        return np.cumsum(rng.exponential(1.0 / a.rate_per_s, n))
    if isinstance(a, GammaArrivals):
        k = 1.0 / a.cv**2
        return np.cumsum(rng.gamma(k, 1.0 / (a.rate_per_s * k), n))
    if isinstance(a, FixedArrivals):
        return np.arange(n, dtype=np.float64) / a.rate_per_s
    if isinstance(a, ConcurrencyArrivals):  # earliest send times; the engine holds each until a client is free
        if a.rate_per_s is None:
            return np.zeros(n)
        return np.cumsum(rng.exponential(1.0 / a.rate_per_s, n))
    if isinstance(a, TraceArrivals):
        assert trace is not None
        t = np.array(trace.arrival_s[:n], dtype=np.float64)
        span = t[-1] - t[0] if len(t) else 0.0
        if a.rate_per_s is not None and span > 0:
            # mean rate over the replayed rows = (rows - 1) gaps / span; stretch time to hit the target
            t = (t - t[0]) * ((len(t) - 1) / span / a.rate_per_s)
        return t
    raise ClusterSimError(f"workload.arrivals kind '{a.kind}' is not supported")


def _lengths(spec: WorkloadSpec, n: int, rng: np.random.Generator, trace: Trace | None) -> tuple[np.ndarray, ...]:
    """(prompt or new-message tokens, output tokens), int64 arrays of length n, all >= 1."""
    ln = spec.lengths
    if isinstance(ln, FixedLengths):
        return np.full(n, ln.prompt_tokens, np.int64), np.full(n, ln.output_tokens, np.int64)
    if isinstance(ln, UniformLengths):
        prompt = rng.integers(ln.prompt_min, ln.prompt_max, n, endpoint=True)
        return prompt, rng.integers(ln.output_min, ln.output_max, n, endpoint=True)
    if isinstance(ln, LognormalLengths):
        return (
            _lognormal(rng, n, ln.prompt_median, ln.prompt_sigma, ln.max_prompt),
            _lognormal(rng, n, ln.output_median, ln.output_sigma, ln.max_output),
        )
    if isinstance(ln, ZipfLengths):
        return (
            _zipf(rng, n, ln.prompt_a, ln.prompt_scale, ln.max_prompt),
            _zipf(rng, n, ln.output_a, ln.output_scale, ln.max_output),
        )
    if isinstance(ln, ShareGPTLengths):
        return _sharegpt(rng, n)
    if isinstance(ln, TraceLengths):
        assert trace is not None
        # sampling takes prompt and output from the same row, keeping their correlation
        rows = rng.integers(0, len(trace), n) if ln.sample else np.arange(n)
        return np.array(trace.prompt_tokens[rows]), np.array(trace.output_tokens[rows])
    raise ClusterSimError(f"workload.lengths kind '{ln.kind}' is not supported")


def _lognormal(rng: np.random.Generator, n: int, median: float, sigma: float, cap: int) -> np.ndarray:
    return np.clip(np.rint(median * np.exp(sigma * rng.standard_normal(n))), 1, cap).astype(np.int64)


def _sharegpt(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """ShareGPT-like (prompt, output) pairs: the preset's log-normals, redrawn where the benchmarks' filters
    (under 4 tokens, prompt over ``max_prompt``, pair over ``max_total``) would drop a pair."""
    p = SHAREGPT
    prompt = np.empty(n, np.int64)
    output = np.empty(n, np.int64)
    filled = 0
    while filled < n:
        k = 2 * (n - filled) + 16
        a = np.rint(p.prompt_median * np.exp(p.sigma * rng.standard_normal(k))).astype(np.int64)
        b = np.rint(p.output_median * np.exp(p.sigma * rng.standard_normal(k))).astype(np.int64)
        ok = (a >= p.min_tokens) & (b >= p.min_tokens) & (a <= p.max_prompt) & (a + b <= p.max_total)
        a, b = a[ok][: n - filled], b[ok][: n - filled]
        prompt[filled : filled + len(a)], output[filled : filled + len(b)] = a, b
        filled += len(a)
    return prompt, output


def _zipf(rng: np.random.Generator, n: int, a: float, scale: int, cap: int) -> np.ndarray:
    # clip the rank before scaling: ranks near int64 max (a close to 1) would overflow when multiplied
    ranks = np.minimum(rng.zipf(a, n), -(-cap // scale))
    return np.clip(ranks * scale, 1, cap).astype(np.int64)


def _sessions(starts: np.ndarray, message: np.ndarray, output: np.ndarray, turns: int, think_s: float) -> list[Request]:
    """Group draws (session-major) into conversations: turn k's prompt is every earlier turn's message
    and answer plus its own new message; the last session may have fewer turns."""
    n = len(message)
    idx = np.arange(n)
    session, turn = idx // turns, idx % turns
    arrival = starts[session] + turn * think_s
    per_turn = message + output
    cum = np.cumsum(per_turn)
    session_base = np.concatenate(([0], cum))[session * turns]  # tokens before the session's first turn
    context = cum - per_turn - session_base  # exclusive cumsum within the session
    prompt = context + message
    order = np.argsort(arrival, kind="stable")  # ties keep session-major order
    tt, arr, pr, out, ctx, ses, tn = (x.tolist() for x in (per_turn, arrival, prompt, output, context, session, turn))
    return [
        Request(rid, arr[j], pr[j], out[j], ses[j], tn[j], ctx[j], tuple(tt[j - tn[j] : j]))
        for rid, j in enumerate(order.tolist())
    ]
