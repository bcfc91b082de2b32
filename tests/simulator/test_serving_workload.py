"""Serving workload: arrival processes, length distributions, trace loading, sessions, determinism."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hwmodels.errors import ClusterSimError
from simulator.serving.config import TraceLengths, TraceSpec, WorkloadSpec
from simulator.serving.workload import Request, _parse_datetime, fit_lognormal, generate_requests, load_trace

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces"
AZURE = TRACES / "azure_conv_tiny.csv"
VIDUR = TRACES / "vidur_tiny.csv"
JSONL = TRACES / "requests_tiny.jsonl"
CUSTOM = TRACES / "custom_columns.csv"

LOGNORMAL = {"kind": "lognormal", "prompt_median": 512, "prompt_sigma": 0.8, "output_median": 128, "output_sigma": 0.6}


def spec(**kw: Any) -> WorkloadSpec:
    return WorkloadSpec.model_validate(kw)


def arrivals(reqs: list[Request]) -> np.ndarray:
    return np.array([r.arrival_s for r in reqs])


def prompts(reqs: list[Request]) -> np.ndarray:
    return np.array([r.prompt_tokens for r in reqs])


def outputs(reqs: list[Request]) -> np.ndarray:
    return np.array([r.output_tokens for r in reqs])


def assert_one_line_error(exc: pytest.ExceptionInfo[ClusterSimError]) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


# ---- determinism and ordering --------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw",
    [
        {"num_requests": 300},
        {"num_requests": 300, "arrivals": {"kind": "gamma", "rate_per_s": 3, "cv": 3}, "lengths": LOGNORMAL},
        {"num_requests": 300, "lengths": {"kind": "zipf", "prompt_a": 1.5, "output_a": 2.0}},
        {"num_requests": 300, "sessions": {"turns": 5, "think_time_s": 2.0}},
        {
            "num_requests": 50,
            "lengths": {"kind": "trace", "sample": True},
            "trace": {"path": str(AZURE), "preset": "azure"},
        },
    ],
)
def test_same_seed_same_requests_other_seed_differs(kw: dict) -> None:
    s = spec(**kw)
    a, b, c = generate_requests(s, 7), generate_requests(s, 7), generate_requests(s, 8)
    assert a == b
    assert a != c
    assert [r.id for r in a] == list(range(len(a)))
    assert np.all(np.diff(arrivals(a)) >= 0)


# ---- arrival processes ---------------------------------------------------------------------------
def test_poisson_mean_gap_and_first_arrival_after_one_gap() -> None:
    reqs = generate_requests(spec(num_requests=20_000, arrivals={"kind": "poisson", "rate_per_s": 5.0}), 1)
    t = arrivals(reqs)
    gaps = np.diff(np.concatenate(([0.0], t)))
    assert t[0] > 0  # first arrival is at the first gap, not at 0
    assert gaps.mean() == pytest.approx(1 / 5.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)  # exponential: cv = 1


@pytest.mark.parametrize("cv", [0.5, 2.0, 4.0])
def test_gamma_gaps_have_spec_cv_and_rate(cv: float) -> None:
    reqs = generate_requests(spec(num_requests=20_000, arrivals={"kind": "gamma", "rate_per_s": 8.0, "cv": cv}), 2)
    gaps = np.diff(np.concatenate(([0.0], arrivals(reqs))))
    assert gaps.mean() == pytest.approx(1 / 8.0, rel=0.05 * max(1.0, cv))
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.10)


def test_fixed_arrivals_exact() -> None:
    reqs = generate_requests(spec(num_requests=100, arrivals={"kind": "fixed", "rate_per_s": 4.0}), 0)
    assert [r.arrival_s for r in reqs] == [i / 4.0 for i in range(100)]


# ---- length distributions ------------------------------------------------------------------------
def test_fixed_lengths() -> None:
    reqs = generate_requests(
        spec(num_requests=10, lengths={"kind": "fixed", "prompt_tokens": 7, "output_tokens": 3}), 0
    )
    assert {(r.prompt_tokens, r.output_tokens) for r in reqs} == {(7, 3)}


def test_lognormal_median_and_clip() -> None:
    reqs = generate_requests(spec(num_requests=20_000, lengths=LOGNORMAL), 3)
    assert np.median(prompts(reqs)) == pytest.approx(512, rel=0.05)
    assert np.median(outputs(reqs)) == pytest.approx(128, rel=0.05)
    tight = {**LOGNORMAL, "prompt_sigma": 2.0, "max_prompt": 1000, "max_output": 200}
    p = prompts(generate_requests(spec(num_requests=5000, lengths=tight), 3))
    assert p.max() == 1000 and p.min() >= 1
    assert (p == 1000).sum() > 100  # the tail piles up at the cap


def test_fit_lognormal_recovers_generated_parameters() -> None:
    lengths = {**LOGNORMAL, "prompt_median": 900, "prompt_sigma": 1.1, "max_prompt": 10**9}
    p = prompts(generate_requests(spec(num_requests=20_000, lengths=lengths), 4))
    median, sigma = fit_lognormal(p)
    assert median == pytest.approx(900, rel=0.05)
    assert sigma == pytest.approx(1.1, rel=0.05)


def test_fit_lognormal_rejects_non_positive() -> None:
    with pytest.raises(ClusterSimError) as exc:
        fit_lognormal([3, 0, 5])
    assert_one_line_error(exc)
    with pytest.raises(ClusterSimError):
        fit_lognormal([])


def test_uniform_bounds_inclusive() -> None:
    lengths = {"kind": "uniform", "prompt_min": 10, "prompt_max": 14, "output_min": 1, "output_max": 2}
    reqs = generate_requests(spec(num_requests=2000, lengths=lengths), 5)
    assert set(prompts(reqs).tolist()) == {10, 11, 12, 13, 14}
    assert set(outputs(reqs).tolist()) == {1, 2}


def test_zipf_heavy_tail_and_clipping() -> None:
    lengths = {"kind": "zipf", "prompt_a": 1.5, "output_a": 2.5, "prompt_scale": 64, "max_prompt": 8192}
    p = prompts(generate_requests(spec(num_requests=20_000, lengths=lengths), 6))
    assert p.min() == 64 and p.max() == 8192
    assert (p == 64).mean() == pytest.approx(1 / 2.612, rel=0.05)  # P(rank 1) = 1 / zeta(1.5)
    assert np.median(p) == 128
    assert np.percentile(p, 99) >= 20 * np.median(p)  # heavy tail: p99 far above the median
    assert (p % 64 == 0).all()


def test_zipf_exponent_near_one_does_not_overflow() -> None:
    lengths = {"kind": "zipf", "prompt_a": 1.01, "output_a": 1.01, "prompt_scale": 1000, "output_scale": 1000}
    reqs = generate_requests(spec(num_requests=20_000, lengths=lengths), 6)
    p, o = prompts(reqs), outputs(reqs)
    assert p.min() == 1000 and p.max() == 32768  # no int64 wrap-around to negative (clipped to 1) values
    assert o.min() == 1000 and o.max() == 4096
    assert ((p % 1000 == 0) | (p == 32768)).all()


# ---- traces --------------------------------------------------------------------------------------
def test_azure_preset_datetime_with_seven_fraction_digits() -> None:
    tr = load_trace(TraceSpec(path=str(AZURE), preset="azure"))
    assert len(tr) == 6
    np.testing.assert_allclose(tr.arrival_s, [0.0, 4.314579, 4.4314100, 6.31941, 14.81941, 24.0], atol=1e-6)
    assert tr.prompt_tokens.tolist() == [374, 396, 879, 91, 1207, 2048]
    assert tr.output_tokens.tolist() == [44, 109, 31, 2, 388, 17]
    assert tr.prompt_tokens.dtype == np.int64


def test_splitwise_preset_is_azure_columns() -> None:
    a = load_trace(TraceSpec(path=str(AZURE), preset="azure"))
    s = load_trace(TraceSpec(path=str(AZURE), preset="splitwise"))
    assert a.prompt_tokens.tolist() == s.prompt_tokens.tolist()


def test_vidur_preset_sorted_by_arrival() -> None:
    tr = load_trace(TraceSpec(path=str(VIDUR), preset="vidur"))
    assert tr.arrival_s.tolist() == [0.0, 0.25, 0.75, 1.5, 2.0]
    assert tr.prompt_tokens.tolist() == [512, 1024, 128, 300, 4096]
    assert tr.output_tokens.tolist() == [128, 64, 32, 300, 512]


def test_jsonl_default_columns_start_at_zero() -> None:
    tr = load_trace(TraceSpec(path=str(JSONL)))
    assert tr.arrival_s.tolist() == [0.0, 0.5, 2.0, 3.0]
    assert tr.prompt_tokens.tolist() == [100, 200, 300, 400]
    assert tr.output_tokens.tolist() == [20, 40, 60, 80]


def test_explicit_columns_mapping_and_override_of_preset() -> None:
    cols = {"arrival_s": "t", "prompt_tokens": "input_len", "output_tokens": "output_len"}
    tr = load_trace(TraceSpec(path=str(CUSTOM), columns=cols))
    assert tr.arrival_s.tolist() == [0.0, 1.0, 3.0]
    assert tr.prompt_tokens.tolist() == [64, 128, 256]
    # columns override the preset key by key: vidur arrivals/prompts, total tokens as "output"
    tr = load_trace(TraceSpec(path=str(VIDUR), preset="vidur", columns={"output_tokens": "num_total_tokens"}))
    assert tr.output_tokens.tolist() == [640, 1088, 160, 600, 4608]


def test_max_rows_caps_rows_read() -> None:
    tr = load_trace(TraceSpec(path=str(VIDUR), preset="vidur", max_rows=3))
    assert tr.prompt_tokens.tolist() == [512, 1024, 300]  # first three file rows, then sorted


def test_timezone_offsets_and_gzip(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    rows = "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:01.5+00:00,10,2\n2024-05-10T02:00:03Z,20,4\n"
    path.write_bytes(gzip.compress(rows.encode()))
    tr = load_trace(TraceSpec(path=str(path), preset="azure"))
    assert tr.arrival_s.tolist() == pytest.approx([0.0, 7201.5])
    assert _parse_datetime("2023-11-16 18:15:46.6805900") == pytest.approx(1700158546.68059, abs=1e-6)
    assert _parse_datetime("2023-11-16T20:15:46.5+02:00") == pytest.approx(1700158546.5, abs=1e-6)
    assert np.isnan(_parse_datetime("yesterday"))


def test_json_array_file(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(
        '[{"arrival_s": 1, "prompt_tokens": 5, "output_tokens": 6}, {"arrival_s": 3, "prompt_tokens": 7, '
        '"output_tokens": 8}]'
    )
    assert load_trace(TraceSpec(path=str(path))).arrival_s.tolist() == [0.0, 2.0]


def test_trace_replay_arrivals_and_lengths() -> None:
    s = spec(
        num_requests=100,  # more than the trace has: all 6 rows are used
        arrivals={"kind": "trace"},
        lengths={"kind": "trace"},
        trace={"path": str(AZURE), "preset": "azure"},
    )
    reqs = generate_requests(s, 0)
    tr = load_trace(s.trace)
    assert len(reqs) == 6
    assert arrivals(reqs).tolist() == tr.arrival_s.tolist()
    assert prompts(reqs).tolist() == tr.prompt_tokens.tolist()
    assert len(generate_requests(s.model_copy(update={"num_requests": 4}), 0)) == 4


def test_trace_rate_rescaling() -> None:
    s = spec(
        num_requests=6, arrivals={"kind": "trace", "rate_per_s": 10.0}, trace={"path": str(AZURE), "preset": "azure"}
    )
    t = arrivals(generate_requests(s, 0))
    assert (len(t) - 1) / (t[-1] - t[0]) == pytest.approx(10.0)
    orig = load_trace(s.trace).arrival_s
    np.testing.assert_allclose(t / t[-1], orig / orig[-1])  # shape of the trace kept, only time stretched


def test_trace_lengths_sampled_keep_row_pairs() -> None:
    s = spec(num_requests=500, lengths={"kind": "trace", "sample": True}, trace={"path": str(VIDUR), "preset": "vidur"})
    reqs = generate_requests(s, 0)
    assert len(reqs) == 500
    pairs = {(512, 128), (1024, 64), (300, 300), (128, 32), (4096, 512)}
    assert {(r.prompt_tokens, r.output_tokens) for r in reqs} == pairs


def test_lengths_only_trace_without_arrival_column(tmp_path: Path) -> None:
    path = tmp_path / "lengths.csv"
    path.write_text("prompt_tokens,output_tokens\n30,3\n40,4\n")
    s = spec(num_requests=2, lengths={"kind": "trace"}, trace={"path": str(path)})
    assert [(r.prompt_tokens, r.output_tokens) for r in generate_requests(s, 0)] == [(30, 3), (40, 4)]
    with pytest.raises(ClusterSimError, match="lacks column 'arrival_s'"):
        load_trace(s.trace)


def test_error_missing_file() -> None:
    with pytest.raises(ClusterSimError) as exc:
        load_trace(TraceSpec(path="/nonexistent/trace.csv"))
    assert "not found" in assert_one_line_error(exc)


@pytest.mark.parametrize("content", ["", "TIMESTAMP,ContextTokens,GeneratedTokens\n", "\n\n"])
def test_error_empty_trace(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(content)
    with pytest.raises(ClusterSimError) as exc:
        load_trace(TraceSpec(path=str(path), preset="azure"))
    assert assert_one_line_error(exc).startswith(f"trace {path} has no rows")


def test_error_missing_column() -> None:
    with pytest.raises(ClusterSimError) as exc:
        load_trace(TraceSpec(path=str(VIDUR), preset="azure"))
    assert assert_one_line_error(exc) == (
        f"trace {VIDUR} lacks column 'TIMESTAMP' (have: arrived_at, num_prefill_tokens, num_decode_tokens, "
        "num_total_tokens); set workload.trace.columns or preset"
    )
    with pytest.raises(ClusterSimError) as exc:
        load_trace(TraceSpec(path=str(AZURE), columns={"arrival_s": "TIMESTAMP"}))
    assert "lacks column 'prompt_tokens'" in assert_one_line_error(exc)


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ("1.0,0,5", "prompt_tokens='0'"),
        ("1.0,-3,5", "prompt_tokens='-3'"),
        ("1.0,12.5,5", "prompt_tokens='12.5'"),
        ("1.0,abc,5", "prompt_tokens='abc'"),
        ("1.0,10,", "output_tokens=''"),
        ("soon,10,5", "arrival_s='soon'"),
        ("2023-11-16 18:15:46,10,5", "arrival_s='2023-11-16 18:15:46'"),
    ],
)
def test_error_invalid_values_name_the_line(tmp_path: Path, row: str, needle: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"arrival_s,prompt_tokens,output_tokens\n0.5,10,5\n{row}\n")
    with pytest.raises(ClusterSimError) as exc:
        load_trace(TraceSpec(path=str(path)))
    msg = assert_one_line_error(exc)
    assert "line 3" in msg and needle in msg


def test_error_bad_json_unknown_column_key_and_suffix(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"arrival_s": 0, "prompt_tokens": 1, "output_tokens": 1}\n{oops\n')
    with pytest.raises(ClusterSimError, match="line 2 is not valid JSON") as exc:
        load_trace(TraceSpec(path=str(bad)))
    assert_one_line_error(exc)
    with pytest.raises(ValidationError, match=r"unknown key\(s\) \['prompt'\]"):  # refused when the config loads
        TraceSpec(path=str(JSONL), columns={"prompt": "x"})
    odd = tmp_path / "trace.txt"
    odd.write_text("arrival_s,prompt_tokens,output_tokens\n0,1,1\n")
    with pytest.raises(ClusterSimError, match="set workload.trace.format"):
        load_trace(TraceSpec(path=str(odd)))
    assert len(load_trace(TraceSpec(path=str(odd), format="csv"))) == 1


def test_trace_kind_without_trace_is_rejected_defensively() -> None:
    s = WorkloadSpec.model_construct(num_requests=3, lengths=TraceLengths(), trace=None, sessions=None)
    with pytest.raises(ClusterSimError, match="workload.trace.path"):
        generate_requests(s, 0)


# ---- sessions ------------------------------------------------------------------------------------
def test_session_prompts_grow_with_the_conversation() -> None:
    s = spec(
        num_requests=22,
        arrivals={"kind": "poisson", "rate_per_s": 0.01},  # sessions far apart: no interleaving
        lengths=LOGNORMAL,
        sessions={"turns": 4, "think_time_s": 3.0},
    )
    reqs = generate_requests(s, 11)
    assert len(reqs) == 22
    by_session: dict[int, list[Request]] = {}
    for r in reqs:
        by_session.setdefault(r.session, []).append(r)
    assert sorted(by_session) == list(range(6))
    assert [len(v) for _, v in sorted(by_session.items())] == [4, 4, 4, 4, 4, 2]  # last session cut short
    for turns in by_session.values():
        assert [r.turn for r in turns] == list(range(len(turns)))
        first = turns[0]
        assert first.context_tokens == 0 and first.turn_tokens == ()
        for prev, cur in zip(turns, turns[1:], strict=False):
            prev_message = prev.prompt_tokens - prev.context_tokens
            assert cur.context_tokens == prev.context_tokens + prev_message + prev.output_tokens
            assert cur.prompt_tokens > cur.context_tokens  # the new message is >= 1 token
            assert cur.turn_tokens == (*prev.turn_tokens, prev_message + prev.output_tokens)
            assert cur.arrival_s - prev.arrival_s == pytest.approx(3.0)
        for r in turns:
            assert sum(r.turn_tokens) == r.context_tokens
            assert len(r.turn_tokens) == r.turn


def test_sessions_interleave_and_ids_follow_arrival() -> None:
    s = spec(num_requests=400, arrivals={"kind": "poisson", "rate_per_s": 5.0}, sessions={"turns": 8})
    reqs = generate_requests(s, 2)
    assert [r.id for r in reqs] == list(range(400))
    assert np.all(np.diff(arrivals(reqs)) >= 0)
    assert any(a.session > b.session for a, b in zip(reqs, reqs[1:], strict=False))  # sessions overlap in time
    assert {r.session for r in reqs} == set(range(50))


def test_sessions_start_at_trace_arrivals() -> None:
    s = spec(
        num_requests=100,
        arrivals={"kind": "trace"},
        trace={"path": str(VIDUR), "preset": "vidur"},
        sessions={"turns": 2, "think_time_s": 10.0},
    )
    reqs = generate_requests(s, 0)
    assert len(reqs) == 10  # 5 trace rows start 5 sessions of 2 turns
    assert sorted(r.arrival_s for r in reqs if r.turn == 0) == [0.0, 0.25, 0.75, 1.5, 2.0]


# ---- property ------------------------------------------------------------------------------------
arrival_st = st.one_of(
    st.builds(lambda r: {"kind": "poisson", "rate_per_s": r}, st.floats(0.01, 100)),
    st.builds(lambda r, cv: {"kind": "gamma", "rate_per_s": r, "cv": cv}, st.floats(0.01, 100), st.floats(0.1, 5)),
    st.builds(lambda r: {"kind": "fixed", "rate_per_s": r}, st.floats(0.01, 100)),
    st.builds(lambda r: {"kind": "trace", "rate_per_s": r}, st.none() | st.floats(0.01, 100)),
)
length_st = st.one_of(
    st.builds(
        lambda p, o: {"kind": "fixed", "prompt_tokens": p, "output_tokens": o}, st.integers(1, 99), st.integers(1, 9)
    ),
    st.builds(
        lambda a, b: {"kind": "uniform", "prompt_min": a, "prompt_max": a + b, "output_min": 1, "output_max": 1 + b},
        st.integers(1, 50),
        st.integers(0, 50),
    ),
    st.builds(
        lambda m, s, cap: {**LOGNORMAL, "prompt_median": m, "prompt_sigma": s, "max_prompt": cap, "max_output": cap},
        st.floats(0.1, 5000),
        st.floats(0, 3),
        st.integers(1, 10_000),
    ),
    st.builds(
        lambda a, cap: {"kind": "zipf", "prompt_a": a, "output_a": a, "max_prompt": cap, "max_output": cap},
        st.floats(1.01, 4),
        st.integers(1, 10_000),
    ),
    st.builds(lambda s: {"kind": "trace", "sample": s}, st.booleans()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 60),
    arr=arrival_st,
    lengths=length_st,
    turns=st.none() | st.integers(1, 5),
    think=st.floats(0, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_counts_order_and_positive_tokens(
    n: int, arr: dict, lengths: dict, turns: int | None, think: float, seed: int
) -> None:
    kw: dict[str, Any] = {"num_requests": n, "arrivals": arr, "lengths": lengths}
    if arr["kind"] == "trace" or lengths["kind"] == "trace":
        kw["trace"] = {"path": str(AZURE), "preset": "azure"}
    if turns is not None:
        kw["sessions"] = {"turns": turns, "think_time_s": think}
    reqs = generate_requests(spec(**kw), seed)

    rows = 6
    expected = n
    if arr["kind"] == "trace":
        expected = min(expected, rows * (turns or 1))
    if lengths["kind"] == "trace" and not lengths["sample"]:
        expected = min(expected, rows)
    assert len(reqs) == expected
    assert [r.id for r in reqs] == list(range(expected))
    assert np.all(np.diff(arrivals(reqs)) >= 0)
    assert all(r.prompt_tokens >= 1 and r.output_tokens >= 1 for r in reqs)
    assert all(r.prompt_tokens > r.context_tokens == sum(r.turn_tokens) for r in reqs)


def test_error_datetime_column_with_stray_value(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.1,1,1\n2023-11-16 18:15:47,1,1\n7,1,1\n"
    )
    with pytest.raises(ClusterSimError) as exc:
        load_trace(TraceSpec(path=str(path), preset="azure"))
    assert "line 4: TIMESTAMP='7'" in assert_one_line_error(exc)
