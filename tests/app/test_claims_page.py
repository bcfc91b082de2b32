"""The claims page (/claims): the 18 claims with claimed and predicted values, verdicts and reasons, and
each claim's scenario opening in a page (planner or Power & carbon) without error."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from simulator.app.views import claims as page
from streamlit.testing.v1 import AppTest

from hwmodels.errors import ClusterSimError
from simulator.validation.claims import scenario
from tests.fixtures.app_pages import assert_page_clean, open_page

IDS = [f"C{i}" for i in range(1, 19)]


@pytest.fixture(scope="module")
def claims_app() -> AppTest:
    return open_page("claims")


def test_claims_page_lists_c1_to_c18_with_verdicts_and_reasons(claims_app: AppTest) -> None:
    at = claims_app
    assert_page_clean(at)
    assert at.title[0].value == "Claims"
    df = at.dataframe[0].value
    assert list(df["claim"]) == IDS
    assert set(df["verdict"]) <= set(page.VERDICTS), df.loc[~df["verdict"].isin(page.VERDICTS), ["claim", "reason"]]
    for column in ("technique", "claimed", "reason"):
        assert all(isinstance(v, str) and len(v) > 10 for v in df[column]), column
    assert all(isinstance(v, str) and v for v in df["predicted"])  # C14's is "-": nothing to predict
    counts = {m.label: m.value for m in at.metric}
    n_cons = int(counts["consistent"].split()[0])
    assert n_cons == (df["verdict"] == "consistent").sum()


def test_every_training_or_serving_claim_links_to_a_page(claims_app: AppTest) -> None:
    df = claims_app.dataframe[0].value
    links = dict(zip(df["claim"], df["scenario"], strict=True))
    for cid in ("C1", "C2", "C3", "C6", "C7", "C8", "C9", "C14", "C15", "C16"):
        assert links[cid].startswith("training?train="), cid
    for cid in ("C4", "C5", "C10", "C13", "C17", "C18"):
        assert links[cid].startswith("serving?serve="), cid
    for cid in ("C11", "C12"):
        assert links[cid].startswith("power?power="), cid
    assert not any("no link:" in v for v in df["opens"])  # every claim opens its scenario somewhere


def _link_target(url: str) -> tuple[str, str, dict]:
    parts = urlsplit(url)
    (param, (value,)), *_ = parse_qs(parts.query).items()
    return parts.path, param, json.loads(value)


def test_every_scenario_link_loads_its_page_without_error(claims_app: AppTest) -> None:
    at = claims_app
    df = at.dataframe[0].value
    at.session_state["sv_curve"] = False  # the serving planner's latency-vs-rate curve is not the scenario
    for cid, url in zip(df["claim"], df["scenario"], strict=True):
        if not isinstance(url, str):
            continue
        path, param, cfg = _link_target(url)
        at.query_params.clear()
        at.query_params[param] = json.dumps(cfg)
        at.switch_page(f"views/{path}.py").run()
        assert not at.exception, (cid, [e.value for e in at.exception])
        assert not at.error, (cid, [e.value for e in at.error])
        resets = [w.value for w in at.warning if "URL parameter" in w.value]
        assert not resets, (cid, resets)  # the page took every field of the link
        shown = json.loads(at.query_params[param])  # what the page now shows (it publishes its config)
        if path == "training":
            assert shown["cluster"]["num_gpus"] == cfg["cluster"]["num_gpus"], cid
            assert shown["parallel"]["tp"] == cfg["parallel"]["tp"], cid
            assert "step time" in {m.label for m in at.metric}, cid
        elif path == "serving":
            assert (shown["model"], shown["gpu"]) == (cfg["model"], cfg["gpu"]), cid
        else:
            assert shown["workload"] == "custom" and shown["config"] == cfg["config"], cid
    at.query_params.clear()
    at.switch_page("views/claims.py").run()  # back where the other tests expect the session


def test_open_button_switches_to_the_planner_with_the_scenario(claims_app: AppTest) -> None:
    at = claims_app
    at.selectbox(key="cl_pick").set_value("C2").run()
    at.button(key="cl_open").click().run()
    assert_page_clean(at)
    assert at.title[0].value == "Training planner"
    cfg = json.loads(at.query_params["train"])
    assert cfg["cluster"]["num_gpus"] == 128 and cfg["parallel"]["dp"] == 128


def test_scenario_links_fill_what_the_planner_would_take_from_its_default() -> None:
    link = page.scenario_link("c15")  # BERT on one GPU: the scenario has no parallel section
    assert link.page == "training"
    assert link.config["parallel"]["tp"] == link.config["parallel"]["dp"] == 1
    assert link.config["cluster"]["num_gpus"] == 1
    assert link.config["cluster"]["node"] == "dgx-a100-40gb"  # the GPU's default node, not the default plan's
    assert link.config["model"] == scenario("C15")["config"]["model"]
    c2 = page.scenario_link("C2")
    assert c2.config["training"]["compression"] == scenario("C2")["compression"]
    c1 = page.scenario_link("C1")  # a routing scenario: a plan built around the claim's layer and routing
    assert c1.config["moe_routing"] == scenario("C1")["hierarchical"]
    assert c1.config["model"]["moe"]["num_experts"] == scenario("C1")["experts"]
    assert c1.config["parallel"]["ep"] == scenario("C1")["ep"]
    with pytest.raises(ClusterSimError, match="no claim 'C99'"):
        page.scenario_link("C99")
