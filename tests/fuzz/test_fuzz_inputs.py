"""Fuzzing the untrusted-input readers (issue #17): the sweep expression language and the config loaders.

A few hundred cases per test by default; set CLUSTERSIM_FUZZ_EXAMPLES (e.g. 20000) for a longer run.
Every input must give a result or a one-line ClusterSimError: never another exception, a hang, or a
side effect (the expression language has no way to call anything).
"""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from simulator.app import plans

from hwmodels.errors import ClusterSimError
from simulator.core import untrusted
from simulator.core.limits import MAX_EXPRESSION_CHARS
from simulator.search.sweep.expr import constraint_mask, objective_values

EXAMPLES = int(os.environ.get("CLUSTERSIM_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize="CI" in os.environ
)

FRAME = pd.DataFrame(
    {
        "mfu": [0.31, 0.52, 0.44, 0.7, 0.05, 0.0],
        "tp": [1, 2, 4, 8, 8, 1],
        "step_time_s": [2.0, 1.0, 4.0, 0.5, 8.0, 3.0],
        "fits_in_memory": [True, False, True, True, False, True],
        "hole": pd.array([1, None, 3, 0, 5, None], dtype="Int64"),  # a nullable column with NA
        "nan": [0.5, np.nan, 2.0, 0.0, np.nan, 1.0],
    }
)
NUMERIC = ["mfu", "tp", "step_time_s", "hole", "nan"]
SOUP = [
    "mfu", "tp", "step_time_s", "fits_in_memory", "`tp`", "1", "0.5", "-", "+", "*", "/", "**", "(", ")",
    "<", "<=", ">", ">=", "==", "!=", "and", "or", "not", "&", "|", "~", "True", "'x'",
    ".", "__class__", "__globals__", "[", "]", "{", "}", ",", ":", "lambda", "import", "os", "system", "to_csv",
    "if", "else", "for", "in", "%", "@", "//", "^", "\\", "'", '"', "#", ";", "=", " ",
]  # fmt: skip


def assert_single_line_error(exc: ClusterSimError) -> None:
    assert str(exc) and "\n" not in str(exc)


# ---- the expression language ----------------------------------------------------------------------------------


ARITH = st.recursive(
    st.one_of(
        st.sampled_from(NUMERIC),
        st.integers(-50, 50).map(str),
        st.floats(-100, 100, allow_nan=False).map(lambda x: repr(round(x, 2))),
    ),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "/"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda e: f"(-{e})"),
        st.tuples(inner, st.just("2")).map(lambda t: f"({t[0]} ** {t[1]})"),
    ),
    max_leaves=4,
)
#: A column on the left, so every comparison is element-wise (pandas gives Python-scalar answers for
#: constant-only ones: ~(0 < 1) is -2 there).
COMPARE = st.tuples(
    st.sampled_from(NUMERIC),
    st.sampled_from(["", "+", "*"]),
    ARITH,
    st.sampled_from(["<", "<=", ">", ">=", "==", "!="]),
    ARITH,
).map(lambda t: f"({t[0]} {t[1]} {t[2]} {t[3]} {t[4]})" if t[1] else f"({t[0]} {t[3]} {t[4]})")
CONDITION = st.recursive(
    st.one_of(COMPARE, st.just("fits_in_memory")),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["&", "|"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda e: f"(~{e})"),
    ),
    max_leaves=4,
)


def _pandas(expr: str) -> np.ndarray:
    """pandas' answer (the reference), or skip the case where Python scalars make it differ from float64
    arithmetic (1 / 0 raises, (-1) ** 0.5 is complex) or the expression is over the language's size cap."""
    assume(len(expr) <= MAX_EXPRESSION_CHARS and expr.count("**") <= 2)  # pandas' int64 wraps past 2**63
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = FRAME.eval(expr, engine="python")
    except (ZeroDivisionError, OverflowError, TypeError):
        assume(False)
    assume(not np.iscomplexobj(np.asarray(out)))
    if isinstance(out, pd.Series) and pd.api.types.is_bool_dtype(out.dtype):
        return out.astype("boolean").fillna(False).to_numpy(dtype=bool)
    if isinstance(out, pd.Series):
        return out.to_numpy(dtype=float, na_value=np.nan)
    return np.asarray(out)


@FUZZ
@given(CONDITION)
def test_generated_constraints_match_pandas_eval(expr: str) -> None:
    values = _pandas(expr)
    assume(values.dtype == bool)  # Python scalars: ~(0 < 1) is -2 in pandas, not False
    expected = np.broadcast_to(values, len(FRAME))
    assert constraint_mask(FRAME, expr).tolist() == expected.tolist()


@FUZZ
@given(ARITH)
def test_generated_objectives_match_pandas_eval(expr: str) -> None:
    expected = np.broadcast_to(_pandas(expr).astype(float), len(FRAME))
    got = objective_values(FRAME, expr).to_numpy(dtype=float)
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)


@FUZZ
@given(st.one_of(st.text(max_size=80), st.lists(st.sampled_from(SOUP), max_size=25).map(" ".join)))
def test_arbitrary_text_is_a_result_or_a_one_line_error(text: str) -> None:
    for run in (constraint_mask, objective_values):
        try:
            run(FRAME, text)
        except ClusterSimError as exc:
            assert_single_line_error(exc)


# ---- the config loaders ---------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=30,
)
YAML_SOUP = ["a:", "&x", "*x", "[", "]", "{", "}", "-", ",", "\n", "  ", "<<:", "!!python/object", "'", '"', "1"]


@FUZZ
@given(st.one_of(st.text(max_size=200), st.lists(st.sampled_from(YAML_SOUP), max_size=40).map("".join)))
def test_yaml_and_json_text_loaders(text: str) -> None:
    for run in (
        lambda: untrusted.load_yaml_text(text, "cfg.yaml"),
        lambda: untrusted.parse_json_text(text, "URL"),
        lambda: plans.parse_upload(text.encode(), "cfg.yaml"),
        lambda: plans.parse_upload(text.encode(), "cfg.json"),
        lambda: plans.from_json(text, "URL parameter 'train'"),
    ):
        try:
            run()
        except ClusterSimError as exc:
            assert_single_line_error(exc)


@FUZZ
@given(st.binary(max_size=200))
def test_uploads_of_arbitrary_bytes(data: bytes) -> None:
    for name in ("cfg.yaml", "cfg.json"):
        try:
            plans.parse_upload(data, name)
        except ClusterSimError as exc:
            assert_single_line_error(exc)


@FUZZ
@given(JSON_VALUES)
def test_url_configs_of_any_shape(value) -> None:
    text = json.dumps({"model": "llama3.2-1b", "x": value})
    try:
        data = plans.from_json(text, "URL parameter 'serve'")
    except ClusterSimError as exc:
        assert_single_line_error(exc)
        return
    assert data["x"] == value or value != value


SERVE = {
    "model": "llama3.2-1b",
    "gpu": "h100-sxm5-80gb",
    "workload": {"num_requests": 10, "lengths": {"kind": "fixed", "prompt_tokens": 64, "output_tokens": 8}},
}
KNOBS = st.fixed_dictionaries(
    {},
    optional={
        "replicas": st.integers(-2, 10**12),
        "tp": st.sampled_from([0, 1, 2, 3, 8, 10**9]),
        "model": st.sampled_from(["llama3.2-1b", "/etc/passwd", "nope", "../x.json", "~/.ssh/id_rsa"]),
        "workload": st.fixed_dictionaries(
            {},
            optional={
                "num_requests": st.integers(-1, 10**12),
                "trace": st.fixed_dictionaries({"path": st.sampled_from(["/etc/passwd", "/dev/zero", "x.csv", ""])}),
            },
        ),
    },
)


@FUZZ
@given(KNOBS)
@pytest.mark.filterwarnings("ignore")
def test_the_app_gate_refuses_or_passes_without_running(knobs: dict) -> None:
    cfg = plans.deep_merge(SERVE, knobs)
    try:
        checked = plans.check_app_config("serving", cfg)
    except ClusterSimError as exc:
        assert_single_line_error(exc)
        return
    assert checked.workload.num_requests <= 10_000 and checked.replicas <= 256
