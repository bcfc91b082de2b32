"""The gradient compression page (/compression): every DP compression method side by side on a plan, its
break-even steps multiplier, the C2 worked example, and the page's chart builders."""

from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
import pytest
from simulator.app import charts
from simulator.app.views import compression as page
from streamlit.testing.v1 import AppTest

from tests.fixtures.app_pages import MAIN, assert_page_clean, open_page

METHODS = [page.DENSE, "top-k 1%", "random-k 1%", "2:4 structured", "uniform 8-bit", "log 4-bit", "PowerSGD rank 4"]


@pytest.fixture(scope="module")
def comp_app() -> AppTest:
    return open_page("compression")


def _table(at: AppTest) -> pd.DataFrame:
    return at.dataframe[0].value.set_index("method")


def test_every_method_renders_with_its_break_even_multiplier(comp_app: AppTest) -> None:
    at = comp_app
    assert_page_clean(at)
    assert at.title[0].value == "Gradient compression"
    df = _table(at)
    assert list(df.index) == [*METHODS, page.C2_METHOD]
    dense = df.loc[page.DENSE]
    assert dense["break_even"] == 1.0 and dense["codec_s"] == 0.0
    for method, row in df.iterrows():
        assert row["break_even"] == pytest.approx(dense["step_time_s"] / row["step_time_s"]), method
        assert row["step_time_s"] > 0 and row["payload_gb"] > 0, method
        if method != page.DENSE:
            assert row["codec_s"] > 0, method  # every lossy method pays (de)compression kernels
    top = df.loc["top-k 1%"]  # 1% of the values + an int32 index each, against fp32 gradients: 50x fewer bytes
    assert top["ratio"] == pytest.approx(50.0, rel=1e-3)
    assert top["exposed_dp_s"] < dense["exposed_dp_s"]
    assert top["step_time_s"] != dense["step_time_s"]
    assert df.loc["2:4 structured", "collective"] == "all_gather"  # per-rank masks: gathered, not summed
    assert df.loc["2:4 structured", "break_even"] < 1.0  # on 16-way DP the gather moves more than dense
    assert json.loads(at.query_params["comp"])["cp_plan"] == "gpt3-175b"


def test_the_c2_claim_is_worked_through(comp_app: AppTest) -> None:
    text = " ".join(m.value for m in comp_app.markdown)
    assert "Worked example: claim C2" in text
    assert "training efficiency x2.3 (128 GPUs)" in text and "Verdict **" in text  # the claim, then clustersim's


def test_method_parameters_and_plan_move_the_table(comp_app: AppTest) -> None:
    at = comp_app
    before = _table(at)
    at.number_input(key="cp_fraction_pct").set_value(10.0).run()
    assert_page_clean(at)
    after = _table(at)
    assert "top-k 10%" in after.index
    assert after.loc["top-k 10%", "payload_gb"] == pytest.approx(10 * before.loc["top-k 1%", "payload_gb"], rel=1e-3)
    at.number_input(key="cp_steps_multiplier").set_value(1.5).run()
    slower = _table(at)
    ratio = slower.loc["log 4-bit", "time_to_train_days"] / after.loc["log 4-bit", "time_to_train_days"]
    assert ratio == pytest.approx(1.5)  # the steps multiplier scales time to train, not the step
    assert slower.loc[page.DENSE, "time_to_train_days"] == after.loc[page.DENSE, "time_to_train_days"]
    at.selectbox(key="cp_plan").set_value("c2").run()
    assert_page_clean(at)
    c2 = _table(at)
    assert c2.loc[page.DENSE, "step_time_s"] != before.loc[page.DENSE, "step_time_s"]
    assert "dp=128" in " ".join(c.value for c in at.caption)


def test_a_bad_link_resets_to_defaults_without_an_exception() -> None:
    at = AppTest.from_file(MAIN, default_timeout=120)
    at.run()
    at.query_params["comp"] = json.dumps({"cp_plan": "nope", "cp_rank": -3})
    at.switch_page("views/compression.py").run()
    assert not at.exception
    assert any("invalid plan, rank" in w.value for w in at.warning), [w.value for w in at.warning]


# ---- chart builders ---------------------------------------------------------------------------------

FRAME = pd.DataFrame(
    {
        "method": ["dense", "top-k 1%", "2:4"],
        "step_time_s": [2.0, 1.6, 2.5],
        "dp_comm_s": [0.7, 0.2, 1.1],
        "exposed_dp_s": [0.5, 0.1, 1.0],
        "codec_s": [0.0, 0.05, 0.2],
        "payload_gb": [4.0, 0.08, 2.1],
        "break_even": [1.0, 1.25, 0.8],
    }
)


def test_compression_times_draws_the_three_times_and_the_payload() -> None:
    fig = charts.compression_times(FRAME)
    bars = [t for t in fig.data if isinstance(t, go.Bar)]
    assert [t.name for t in bars] == list(charts.COMPRESSION_TIMES.values())
    assert list(bars[0].y) == [0.7, 0.2, 1.1] and list(bars[2].y) == [0.0, 0.05, 0.2]
    (line,) = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert list(line.y) == [4.0, 0.08, 2.1] and line.yaxis == "y2"
    assert list(bars[1].x) == ["dense", "top-k 1%", "2:4"]


def test_break_even_chart_marks_methods_that_never_pay_off() -> None:
    fig = charts.break_even_chart(FRAME)
    (bar,) = fig.data
    assert list(bar.x) == [1.0, 1.25, 0.8] and list(bar.y) == ["dense", "top-k 1%", "2:4"]
    assert list(bar.marker.color) == ["#9D9D9D", "#54A24B", "#E45756"]  # dense grey; only above 1 pays
    assert list(bar.text) == ["x1.00", "x1.25", "x0.80"]
    assert any(s.x0 == 1.0 and s.x1 == 1.0 for s in fig.layout.shapes)  # the dense reference line


def test_worked_example_says_when_compression_never_pays_off() -> None:
    dense = {"exposed_dp_s": 0.2, "step_time_s": 2.0, "payload_gb": 30.0}
    slower = {"exposed_dp_s": 1.6, "step_time_s": 3.5, "payload_gb": 23.0, "break_even": 2.0 / 3.5}
    claim = {"technique": "t", "claim": "x2.3", "verdict": "inconsistent", "reason": "r"}
    text = page.worked_example(dense, {**slower, "collective": "all_gather"}, claim)
    assert "never pays off" in text and "0.57x" in text and "all-gathered" in text
    faster = {**slower, "step_time_s": 1.0, "break_even": 2.0, "collective": "all_reduce"}
    text = page.worked_example(dense, faster, claim)
    assert "fewer than 2.00x" in text and "never" not in text and "all-reduce" in text
