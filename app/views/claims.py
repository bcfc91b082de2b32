"""Claims page: the source material's 18 claims with what clustersim predicts, its verdict and the reason.

The rows come from :mod:`simulator.validation.claims` (the same as ``clustersim claims``), evaluated once
per server process (``st.cache_data``). Each claim whose scenario is a training or serving config opens
in its planner (or, for the DVFS and carbon claims, in the Power & carbon page) through the page's URL
parameter, so a user can change it; the others say why there is no plan to open. Run as a Streamlit
page; importing it only defines the helpers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pandas as pd
import streamlit as st
from simulator.app.common import PAGE_PARAMS, drop_foreign_params, error_text, run_page
from simulator.app.plans import check_app_config, default_training, from_json, to_json

from hwmodels.errors import ClusterSimError
from simulator.models.catalogue import get_model

#: page -> (view file for st.switch_page, its URL parameter, session key of its config or None)
TARGETS: dict[str, tuple[str, str, str | None]] = {
    "training": ("views/training.py", PAGE_PARAMS["training"][0], "training_cfg"),
    "serving": ("views/serving.py", PAGE_PARAMS["serving"][0], "serving_cfg"),
    "power": ("views/power.py", PAGE_PARAMS["power"][0], None),
}
TITLES = {"training": "Training planner", "serving": "Serving planner", "power": "Power & carbon"}
VERDICTS = ("consistent", "inconsistent", "not modelled")


@dataclass(frozen=True)
class ScenarioLink:
    """Where a claim's scenario opens: a page and the value of its URL parameter, or None and why not."""

    page: str | None
    config: dict[str, Any] | None
    note: str

    @property
    def url(self) -> str | None:
        """Relative link to the page with the config in its parameter (relative, so a base URL path works)."""
        if self.page is None or self.config is None:
            return None
        return f"{self.page}?{urlencode({TARGETS[self.page][1]: to_json(self.config)})}"


def _with(cfg: Mapping[str, Any], section: str | None = None, **fields: Any) -> dict[str, Any]:
    """A copy of ``cfg`` with ``fields`` set at the top level (``section`` None) or inside ``section``."""
    out = copy.deepcopy(dict(cfg))
    holder = out if section is None else out.setdefault(section, {})
    holder.update(copy.deepcopy(fields))
    return out


def complete_training(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` with every field the default plan sets made explicit from the validated config.

    The planner merges a link over its default plan, so a scenario that leaves a field unset (C15 has
    no ``parallel`` section) would otherwise pick up the default's 1,024-GPU values.
    """
    run = check_app_config("training", cfg)
    resolved = {"cluster": run.cluster.resolve()}  # the node the GPU defaults to, not None
    out = copy.deepcopy(dict(cfg))
    for section, fields in default_training().items():
        if not isinstance(fields, Mapping):
            continue
        holder = out.setdefault(section, {})
        source = resolved.get(section, getattr(run, section))
        for key in fields:
            if key not in holder:
                value = getattr(source, key, None)
                holder[key] = getattr(value, "id", value)  # a resolved catalogue entry -> its id
    return out


def _training(cfg: Mapping[str, Any], note: str) -> ScenarioLink:
    return ScenarioLink("training", complete_training(cfg), note)


def _serving(cfg: Mapping[str, Any], note: str) -> ScenarioLink:
    check_app_config("serving", cfg)
    return ScenarioLink("serving", copy.deepcopy(dict(cfg)), note)


def _power(cfg: Mapping[str, Any], note: str, **sections: Any) -> ScenarioLink:
    """The Power & carbon page with ``cfg`` as its custom job and ``sections`` (power, site, carbon) set."""
    check_app_config("training", cfg)
    return ScenarioLink("power", {"workload": "custom", "config": copy.deepcopy(dict(cfg)), **sections}, note)


def _none(note: str) -> Callable[[dict[str, Any]], ScenarioLink]:
    return lambda _s: ScenarioLink(None, None, note)


def _moe_plan(model: Any, gpu: str, gpus: int, parallel: dict[str, int], batch: int, seq: int = 4096) -> dict:
    """A training plan around a routing or model-spec scenario that names no plan of its own."""
    return {
        "model": model,
        "cluster": {"gpu": gpu, "num_gpus": gpus},
        "parallel": parallel,
        "training": {"global_batch": batch, "micro_batch": 1, "seq_len": seq},
    }


def _c1_model(s: Mapping[str, Any]) -> dict[str, Any]:
    """Mixtral's layer shape with the claim's expert count, top-k and hidden size."""
    m = get_model("mixtral-8x7b").model_dump(mode="json")
    m["moe"].update(num_experts=int(s["experts"]), top_k=int(s["top_k"]))
    m.update(name=f"mixtral-shaped-{s['experts']}-experts", hidden_size=int(s["hidden"]))
    return m


#: claim id -> its scenario (simulator/examples/claims/<id>.yaml) -> where it opens.
LINKS: dict[str, Callable[[dict[str, Any]], ScenarioLink]] = {
    "C1": lambda s: _training(
        {
            **_moe_plan(_c1_model(s), "h100-sxm5-80gb", s["ep"], {"tp": 1, "pp": 1, "dp": s["ep"], "ep": s["ep"]}, 32),
            "moe_routing": s["hierarchical"],
        },
        f"a Mixtral-shaped model with the claim's {s['experts']} experts (top-{s['top_k']}) over EP{s['ep']}, "
        "hierarchical routing; set routing to zipf 0.2 for the flat case (the claim compares the two)",
    ),
    "C2": lambda s: _training(
        _with(s["config"], "training", compression=s["compression"]),
        "the 128-GPU data-parallel plan with C2's compression; the Compression page compares every method on it",
    ),
    "C3": lambda s: _training(
        s["a100"], "the claim's A100 plan in bf16: set precision to fp8 to see why it is refused, or pick an H100"
    ),
    "C4": lambda s: _serving(_with(s["config"], batching=s["technique"]), "the length-bucketed deployment"),
    "C5": lambda s: _serving(
        _with(s["config"], "kv", retention=s["retention"]), "the 100-turn chat deployment with KV retention"
    ),
    "C6": lambda s: _training(s["large"], "the 1,024-GPU plan (the 512-GPU one halves dp and the batch)"),
    "C7": lambda s: _training(s["config"], "the 16-GPU data-parallel plan, gradient reduction overlapped"),
    "C8": lambda s: _training(
        _moe_plan(
            s["moe_model"], "a100-sxm4-80gb", s["gpus"], {"tp": 8, "pp": 1, "dp": s["gpus"] // 8, "ep": 8}, 64, 2048
        ),
        f"the claim's MoE model on its {s['gpus']} GPUs; switch the model to {s['dense_model']} for the dense side",
    ),
    "C9": lambda s: _training(s["config"], "the 128-GPU plan with CPU parameter servers"),
    "C10": lambda s: _serving(_with(s["config"], batching=s["technique"]), "the 3-bucket deployment"),
    "C11": lambda s: _power(
        s["config"],
        f"one H100 locked at {s['heavy_mhz']:.0f} MHz; the page locks one clock for the whole step "
        f"(try {s['light_mhz']:.0f} MHz too), phase-aware clocks are `clustersim claims C11`",
        power={"mode": "modelled", "sm_clock_mhz": float(s["heavy_mhz"])},
    ),
    "C12": lambda s: _power(
        s["config"],
        f"the 8-GPU job on the synthetic week, a {s['job_hours']} h job with a {s['deadline_h']} h deadline",
        site={"pue": s["config"].get("site", {}).get("pue", 1.1)},
        carbon={
            "use_time_to_train": False,
            "job_hours": float(s["job_hours"]),
            "deadline_h": float(s["deadline_h"]),
            "policy": s["policies"][0],
        },
    ),
    "C13": lambda s: _serving(
        {"model": s["model"], "gpu": "h100-sxm5-80gb", "tp": 8},
        "DeepSeek-V2 on 8 H100: its KV bytes per token (MLA) set the KV memory the planner shows",
    ),
    "C14": lambda s: _training(
        _moe_plan(s["model"], "h100-sxm5-80gb", 128, {"tp": 1, "pp": 8, "dp": 16, "ep": 16}, 256),
        "DeepSeek-V2 training on 128 H100 (PP8, EP16) with the experts its config declares",
    ),
    "C15": lambda s: _training(s["config"], "BERT-large on one A100 40 GB (inline model spec)"),
    "C16": lambda s: _training(
        {
            **_moe_plan(
                "deepseek-v2-lite", "h100-sxm5-80gb", s["ep"], {"tp": 1, "pp": 1, "dp": s["ep"], "ep": s["ep"]}, 64
            ),
            "moe_routing": s["load_aware"],
        },
        f"DeepSeek-V2-Lite (the claim's {s['experts']} experts, top-{s['top_k']}, hidden {s['hidden']}) over "
        f"EP{s['ep']} with load-aware routing; set routing to zipf 1.0 for the plain case",
    ),
    "C17": lambda s: _serving(_with(s["config"], weight_dtype="int8"), "the deployment with INT8 weights"),
    "C18": lambda s: _serving(
        _with(s["config"], weight_dtype="int8"), "the T4 deployment with INT8 weights and continuous batching"
    ),
}


def scenario_link(claim_id: str) -> ScenarioLink:
    """Where claim ``claim_id``'s scenario opens (a one-line ClusterSimError for an unknown claim)."""
    from simulator.validation.claims import claim_ids, scenario

    (key,) = claim_ids([claim_id])
    if key not in LINKS:
        return ScenarioLink(None, None, "no scenario link for this claim yet")
    return LINKS[key](scenario(key))


def _failed_row(claim_id: str, message: str) -> dict[str, str]:
    """A row for a claim whose evaluation failed: the error is its reason."""
    blank = dict.fromkeys(("technique", "claim", "baseline", "technique_result", "predicted_effect"), "-")
    return {"id": claim_id, **blank, "verdict": "error", "reason": message}


@st.cache_data(show_spinner=False)
def _claim(claim_id: str) -> dict[str, str]:
    """One claim's row (its scenario is bundled, not user input: evaluated once per process; a failure
    raises, so it is not cached)."""
    from simulator.validation.claims import CLAIMS

    return CLAIMS[claim_id]().as_dict()


@st.cache_data(show_spinner=False)
def _link(claim_id: str) -> tuple[str | None, dict[str, Any] | None, str]:
    """Where one claim's scenario opens, as plain data (page, config, note), cached like :func:`_claim`."""
    link = scenario_link(claim_id)
    return link.page, link.config, link.note


def claim_rows() -> list[dict[str, Any]]:
    """Every claim (C1..C18) as a dict: the ClaimRow's fields plus its link (url, page, note, link_config).

    A claim that fails to evaluate becomes a row with verdict ``error`` and the one-line message as reason.
    """
    from simulator.validation.claims import claim_ids

    rows = []
    for cid in claim_ids():
        row, err = error_text(_claim, cid)
        data = dict(row) if row is not None else _failed_row(cid, err or "failed")
        fields, link_err = error_text(_link, cid)
        link = ScenarioLink(*fields) if fields else ScenarioLink(None, None, f"the scenario does not open: {link_err}")
        data.update(url=link.url, page=link.page, note=link.note, link_config=link.config)
        rows.append(data)
    return rows


def table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The page's table: id, technique, claimed, predicted, verdict, reason, link and where it opens."""
    return pd.DataFrame(
        {
            "claim": [r["id"] for r in rows],
            "technique": [r["technique"] for r in rows],
            "claimed": [r["claim"] for r in rows],
            "predicted": [r["predicted_effect"] for r in rows],
            "verdict": [r["verdict"] for r in rows],
            "scenario": [r["url"] for r in rows],
            "reason": [r["reason"] for r in rows],
            "opens": [f"{TITLES[r['page']]}: {r['note']}" if r["page"] else f"no link: {r['note']}" for r in rows],
        }
    )


def open_scenario(page: str, config: Mapping[str, Any]) -> None:
    """Open a scenario in its page through the URL (as the trade-off explorer opens a plan)."""
    file, param, state = TARGETS[page]
    raw = to_json(config)
    if state is not None:
        st.session_state[state] = from_json(raw)
    st.switch_page(file, query_params={param: raw})


def _summary(rows: list[dict[str, Any]]) -> None:
    """Counts of each verdict, and how many claims open in a page."""
    cols = st.columns(len(VERDICTS) + 1)
    for col, verdict in zip(cols, VERDICTS, strict=False):
        col.metric(verdict, f"{sum(r['verdict'] == verdict for r in rows)} of {len(rows)}")
    cols[-1].metric("open in a page", f"{sum(r['url'] is not None for r in rows)} of {len(rows)}")


def _details(rows: list[dict[str, Any]]) -> None:
    """One claim in full (its baseline and technique as simulated) with a button that opens its scenario."""
    by_id = {r["id"]: r for r in rows}
    pick = st.selectbox(
        "claim in full",
        list(by_id),
        format_func=lambda c: f"{c}: {by_id[c]['technique']}",
        key="cl_pick",
    )
    r = by_id[pick]
    st.markdown(
        f"**{r['id']}: {r['technique']}** — verdict **{r['verdict']}**\n\n"
        f"- claimed: {r['claim']}\n- predicted: {r['predicted_effect']}\n"
        f"- clustersim, baseline: {r['baseline']}\n- clustersim, technique: {r['technique_result']}\n"
        f"- why: {r['reason']}"
    )
    if r["page"] is None:
        st.caption(f"No page to open: {r['note']}.")
        return
    st.caption(f"Opens in the {TITLES[r['page']]}: {r['note']}.")
    if st.button(f"open {r['id']} in the {TITLES[r['page']]}", key="cl_open"):
        open_scenario(r["page"], r["link_config"])


def render() -> None:
    """The page: verdict counts, the table of 18 claims with links, and one claim in full."""
    st.title("Claims")
    drop_foreign_params("claims")
    st.caption(
        "The source material's quantitative claims, each run as a scenario through clustersim's own models "
        "(`clustersim claims`; scenarios in simulator/examples/claims/). A claimed effect is consistent when it "
        "lies within the stated tolerance of the prediction. A planner shows the fields it has controls for; "
        "the full scenario is `clustersim example claims/C<n>.yaml`."
    )
    with st.spinner("evaluating the 18 claims (once per server)..."):
        rows = claim_rows()
    if not rows:
        raise ClusterSimError("no claims to show")
    _summary(rows)
    st.dataframe(
        table(rows),
        hide_index=True,
        height=35 * (len(rows) + 1) + 3,  # every claim without scrolling
        column_config={
            "claim": st.column_config.TextColumn("claim", width=50),
            "technique": st.column_config.TextColumn("technique", width="medium"),
            "claimed": st.column_config.TextColumn("claimed", width="medium"),
            "predicted": st.column_config.TextColumn("predicted", width="medium"),
            "verdict": st.column_config.TextColumn("verdict", width=100),
            "scenario": st.column_config.LinkColumn("scenario", display_text="open", width=70),
            "reason": st.column_config.TextColumn("reason", width="large"),
        },
        key="cl_table",
    )
    _details(rows)


if __name__ == "__main__":
    run_page(render)
