"""The Power & carbon page (/power) driven headless with AppTest, and its chart builders.

AppTest does not render Plotly, so the page tests count the charts and read the metrics; the
figures themselves are checked directly at the end of the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from simulator.app import charts
from streamlit.testing.v1 import AppTest

from simulator.core.resources import data_path
from simulator.energy import carbon
from simulator.energy.power_trace import power_trace
from simulator.search import dvfs
from simulator.training import simulate_training

REPO = Path(__file__).resolve().parents[2]
MAIN = str(REPO / "app" / "main.py")
WEEK = data_path("carbon/synthetic_week.csv")
TIMEOUT = 120
SMALL_PP2 = {
    "model": "llama3.2-1b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 8},
    "parallel": {"tp": 1, "pp": 2, "dp": 4},
    "training": {"seq_len": 2048, "global_batch": 32, "micro_batch": 1},
}


def _power(**params: str) -> AppTest:
    """The power page, with exactly ``params`` in the URL."""
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    at.switch_page("views/power.py")
    at.query_params.clear()
    at.query_params.update(params)
    return at.run()


def _clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _deltas(at: AppTest) -> dict[str, str]:
    return {m.label: m.delta for m in at.metric}


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _charts(at: AppTest) -> int:
    return len(at.get("plotly_chart"))


# ---- the page ------------------------------------------------------------------------------------


def test_defaults_render_with_units_and_fill_the_url() -> None:
    at = _power()
    _clean(at)
    assert at.title[0].value == "Power & carbon"
    assert not _errors(at)
    m = _metrics(at)
    assert m["avg GPU power"].endswith(" W") and m["SM clock"] == "1,980 MHz" and m["power limit"] == "700 W"
    assert m["energy per step"].endswith(" kWh") and m["energy per token"].endswith(" J/token")
    assert m["operational carbon per step"].endswith("CO2e") and m["embodied carbon per step"].endswith("CO2e")
    assert m["cost per step"].startswith("$ ")
    assert _deltas(at)["power limit"] == "not binding"
    assert {"run now", "best-start", "saving vs running now"} <= set(m)  # the schedule on the synthetic week
    assert _charts(at) == 3  # power over the step, energy by component, schedule (DVFS waits for its button)
    page = json.loads(at.query_params["power"])
    assert page["workload"] == "quickstart" and page["carbon"]["policy"] == "best-start"
    labels = {b.label for b in at.get("download_button")}
    assert {"download config (YAML)", "download results (JSON)", "download schedule (CSV)"} <= labels


def test_a_low_power_cap_throttles_the_clock() -> None:
    at = _power()
    at.number_input(key="pw_cap").set_value(500.0).run()
    _clean(at)
    m, d = _metrics(at), _deltas(at)
    assert m["power limit"] == "500 W" and d["power limit"] == "binding"
    assert m["SM clock"] != "1,980 MHz" and d["SM clock"] == "throttled by the power cap"
    assert float(m["avg GPU power"].removesuffix(" W")) <= 500.5
    assert json.loads(at.query_params["power"])["power"]["power_limit_w"] == 500.0
    at.number_input(key="pw_cap").set_value(150.0).run()  # below what the lowest clock can reach
    _clean(at)
    assert any("cannot be met" in e for e in _errors(at)) and "avg GPU power" not in _metrics(at)


def test_a_deadline_shorter_than_the_job_is_an_inline_error() -> None:
    at = _power()
    at.number_input(key="pw_deadline_h").set_value(10.0).run()
    _clean(at)
    errors = _errors(at)
    assert errors and "the deadline allows 10 h" in errors[0]
    assert "avg GPU power" in _metrics(at) and "run now" not in _metrics(at)  # the rest of the page stands
    at.number_input(key="pw_deadline_h").set_value(48.0)
    at.selectbox(key="pw_policy").set_value("pause-resume").run()
    _clean(at)
    assert not _errors(at) and float(_metrics(at)["saving vs running now"].split()[0]) > 0


def test_the_dvfs_sweep_renders_its_chart_when_triggered() -> None:
    at = _power()
    assert "least-energy clock" not in _metrics(at)
    at.button(key="pw_dvfs_run").click().run()
    _clean(at)
    m = _metrics(at)
    assert m["least-energy clock"].endswith(" MHz") and m["GPU energy per token there"].endswith(" mJ")
    assert _charts(at) == 4
    assert "download DVFS points (CSV)" in {b.label for b in at.get("download_button")}
    at.selectbox(key="pw_policy").set_value("scale-down").run()  # the same job: the sweep stays
    _clean(at)
    assert _charts(at) == 4 and "least-energy clock" in _metrics(at)
    at.number_input(key="pw_pue").set_value(1.3).run()  # another job: hidden until asked for again
    _clean(at)
    assert _charts(at) == 3 and "least-energy clock" not in _metrics(at)


def test_serving_link_and_bad_link() -> None:
    at = _power(power=json.dumps({"workload": "serving", "site": {"region": "fr"}}))
    _clean(at)
    assert at.session_state["pw_region"] == "FR"
    m = _metrics(at)
    assert m["cost per M output tokens"].startswith("$ ") and m["run length"].endswith(" s")
    bad = {"workload": "custom", "power": {"mode": "foo"}, "site": {"pue": 0.5}}
    at = _power(power=json.dumps(bad))
    _clean(at)
    assert any("invalid mode, pue, workload" in w.value for w in at.warning)
    assert _metrics(at)["SM clock"] == "1,980 MHz"  # the defaults instead


def test_a_custom_config_from_the_url_keeps_its_power_settings() -> None:
    cfg = {**SMALL_PP2, "power": {"power_limit_w": 450}}
    at = _power(power=json.dumps({"workload": "custom", "config": cfg, "power": {"power_limit_w": 450}}))
    _clean(at)
    assert at.session_state["pw_workload"] == "custom"
    assert _deltas(at)["power limit"] == "binding" and "step time" in _metrics(at)
    assert json.loads(at.query_params["power"])["config"]["model"] == "llama3.2-1b"


# ---- the charts ----------------------------------------------------------------------------------


def test_power_and_energy_charts() -> None:
    r = simulate_training(SMALL_PP2)
    trace = power_trace(r)
    fig = charts.power_timeline(trace, limit_w=700.0)
    assert [t.name for t in fig.data] == ["rank 0", "rank 1"]
    assert max(max(t.y) for t in fig.data) == pytest.approx(max(x.busy_w for x in trace.ranks))
    assert any(s.y0 == 700.0 for s in fig.layout.shapes)
    fig = charts.energy_breakdown(r.energy_j)
    assert sum(t.x[0] for t in fig.data) == pytest.approx(r.energy_j["facility"] / 3.6e6)
    assert fig.data[0].name.startswith("GPUs")


def test_dvfs_and_schedule_charts() -> None:
    points = dvfs.sweep(SMALL_PP2, clocks_mhz=[990.0, 1485.0, 1980.0])
    rows = dvfs.to_rows(points)
    best = rows[points.index(dvfs.optimum(points))]
    fig = charts.dvfs_front(rows, best)
    assert [t.name for t in fig.data][:2] == ["settings", "Pareto front"]
    assert fig.data[2].name.startswith("least energy") and fig.data[2].x[0] == best["ms_per_token"]
    assert len(fig.data[1].x) == sum(r["pareto"] for r in rows)
    series = carbon.load_intensity_series(WEEK)
    sched = carbon.schedule_job(series, job_hours=6, power_kw=10.0, deadline_h=48, policy="pause-resume")
    now = carbon.schedule_job(series, job_hours=6, power_kw=10.0, deadline_h=48, policy="now")
    fig = charts.carbon_schedule(series, sched, now)
    assert len(fig.data[0].y) == len(series)
    assert list(fig.data[1].y) == [f * 100 for f in sched.fractions]
    assert fig.data[2].name == "run now (baseline)"
