"""The training planner's option sections (app/views/training_options.py) driven with AppTest, and the
Streamlit-free effect figures (app/effects.py) checked by hand calculation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from simulator.app import effects
from simulator.app.plans import check_app_config, default_training
from streamlit.testing.v1 import AppTest

from simulator.compression import INDEX_BITS
from simulator.training import offload
from tests.fixtures.app_pages import assert_page_clean

REPO = Path(__file__).resolve().parents[2]
MAIN = str(REPO / "app" / "main.py")
TIMEOUT = 120

MOE = {
    "model": "mixtral-8x7b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 16, "node": "dgx-h100"},
    "parallel": {"tp": 2, "pp": 2, "dp": 4, "ep": 8, "zero": 1},
    "training": {"seq_len": 4096, "global_batch": 64, "micro_batch": 1},
}
#: Llama 2 13B fine-tuned on one 80 GB A100 (issue #19's acceptance case).
ONE_GPU_13B = {
    "model": "llama2-13b",
    "cluster": {"gpu": "a100-sxm4-80gb", "num_gpus": 1, "node": "dgx-a100"},
    "parallel": {"tp": 1, "pp": 1, "dp": 1, "zero": 0},
    "training": {"seq_len": 2048, "global_batch": 8, "micro_batch": 1, "recompute": "full"},
}


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.query_params.update(params)
    return at.run()


def _metric(at: AppTest, label: str) -> tuple[float, str | None]:
    """The number at the start of a metric's value, and its delta."""
    (m,) = [m for m in at.metric if m.label == label]
    return float(m.value.split()[0].lstrip("x").rstrip("%")), m.delta


def test_topk_one_percent_lowers_dp_communication_and_changes_step_time() -> None:
    at = _app()
    assert_page_clean(at)
    wire, _ = _metric(at, "DP wire bytes per GPU")
    exposed, _ = _metric(at, "exposed DP comm")
    step, _ = _metric(at, "step time")
    at.selectbox(key="tr_cmp_method").set_value("topk").run()
    assert_page_clean(at)
    assert at.session_state["tr_cmp_fraction_pct"] == 1.0
    wire_c, wire_delta = _metric(at, "DP wire bytes per GPU")
    exposed_c, exposed_delta = _metric(at, "exposed DP comm")
    assert wire_c < wire and wire_delta.startswith("-")
    assert exposed_c < exposed and exposed_delta.startswith("-")
    assert _metric(at, "step time")[0] != step
    assert _metric(at, "(de)compression compute")[0] > 0
    spec = json.loads(at.query_params["train"])["training"]["compression"]
    assert spec["sparsify"] == "topk" and spec["fraction"] == pytest.approx(0.01)
    at.number_input(key="tr_cmp_steps_mult").set_value(1.5).run()  # the user's convergence input
    assert_page_clean(at)
    days, delta = _metric(at, "time to train vs uncompressed")
    assert float(delta.split()[0]) > 0  # 1.5x the steps outweighs the faster step
    link = _app(train=at.query_params["train"])  # the link reproduces the compressed plan
    assert_page_clean(link)
    assert link.session_state["tr_cmp_method"] == "topk" and link.session_state["tr_cmp_steps_mult"] == 1.5
    assert _metric(link, "time to train vs uncompressed")[0] == days


def test_routing_skew_on_an_moe_preset_changes_the_expert_time() -> None:
    at = _app(train=json.dumps(MOE))
    assert_page_clean(at)
    uniform, _ = _metric(at, "expert time (busiest EP rank)")
    at.selectbox(key="tr_moe_source").set_value("zipf").run()
    assert_page_clean(at)
    skewed, delta = _metric(at, "expert time (busiest EP rank)")
    assert skewed > uniform and delta.startswith("+")
    at.number_input(key="tr_moe_skew").set_value(2.0).run()
    assert_page_clean(at)
    steeper, _ = _metric(at, "expert time (busiest EP rank)")
    assert steeper > skewed
    assert json.loads(at.query_params["train"])["moe_routing"]["source"] == {
        "kind": "zipf",
        "exponent": 2.0,
        "layer_variation": 0.0,
    }
    imbalance, _ = _metric(at, "expert load max/mean")
    at.number_input(key="tr_moe_replicas").set_value(4).run()  # EPLB replicas of the hot experts
    assert_page_clean(at)
    assert _metric(at, "expert load max/mean")[0] < imbalance
    assert _metric(at, "expert time (busiest EP rank)")[0] < steeper


def test_optimizer_offload_fits_13b_on_one_gpu_and_shows_host_memory() -> None:
    at = _app(train=json.dumps(ONE_GPU_13B))
    assert not at.exception
    assert any("does not fit in memory" in w.value for w in at.warning)
    at.selectbox(key="tr_off_optimizer").set_value("cpu").run()
    assert_page_clean(at)
    assert not any("does not fit in memory" in w.value for w in at.warning)
    host, _ = _metric(at, "host memory per GPU")
    assert host > 150  # fp32 master weights, two moments and fp32 gradients of 13B parameters: 16 B each
    assert _metric(at, "CPU optimizer step")[0] > 0 and _metric(at, "PCIe traffic per GPU")[0] > 0
    assert any("fits only with offload" in s.value for s in at.success)
    assert json.loads(at.query_params["train"])["training"]["offload"] == {"optimizer": "cpu"}


def test_power_and_stack_sections_move_their_metrics() -> None:
    at = _app(train=json.dumps(MOE))
    step, _ = _metric(at, "step time")
    at.radio(key="tr_pw_mode").set_value("locked clock").run()
    at.number_input(key="tr_pw_clock_mhz").set_value(1200.0).run()
    assert_page_clean(at)
    slow, delta = _metric(at, "step time vs max clock")
    assert slow > step and delta.startswith("+")
    assert json.loads(at.query_params["train"])["power"] == {"sm_clock_mhz": 1200.0}
    at.selectbox(key="tr_stack").set_value("pytorch-eager").run()
    assert_page_clean(at)
    assert _metric(at, "step time vs megatron-te")[1] is not None
    assert json.loads(at.query_params["train"])["stack"] == "pytorch-eager"


def test_bad_option_values_in_a_link_are_reset_with_a_warning() -> None:
    cfg = default_training()
    cfg["training"]["compression"] = {"sparsify": "bogus", "every_k_steps": -3}
    at = _app(train=json.dumps(cfg))
    assert not at.exception
    assert "invalid cmp_method, cmp_every_k" in " ".join(w.value for w in at.warning)
    assert at.session_state["tr_cmp_method"] == "none"
    cfg["training"] |= {"compression": 5, "offload": "cpu"}
    cfg |= {"power": [1], "stack": {"base": "megatron-te"}}
    at = _app(train=json.dumps(cfg))
    assert not at.exception
    assert "invalid cmp_method, pw_mode, stack, off_optimizer" in " ".join(w.value for w in at.warning)
    assert "step time" in {m.label for m in at.metric}  # the rest of the link still shows


# ---- the effect figures, by hand ---------------------------------------------------------------


def test_dp_traffic_topk_is_values_plus_indices_of_the_kept_fraction() -> None:
    cfg = default_training()
    dense = effects.dp_traffic(check_app_config("training", cfg))
    cfg["training"]["compression"] = {"sparsify": "topk", "fraction": 0.01}
    topk = effects.dp_traffic(check_app_config("training", cfg))
    params = effects.params_per_gpu(check_app_config("training", cfg))
    assert dense[0].collective == "gradient reduce_scatter" and dense[0].wire_bytes == pytest.approx(4.0 * params)
    assert topk[0].collective == "compressed all_gather"
    # 1 % of the fp32 gradient: a 32-bit value and a 32-bit index each
    assert topk[0].wire_bytes == pytest.approx(0.01 * params * (32 + INDEX_BITS) / 8)
    assert topk[1] == dense[1]  # the ZeRO-1 parameter all-gather is not compressed


def test_pcie_traffic_of_optimizer_offload_by_hand() -> None:
    cfg = json.loads(json.dumps(ONE_GPU_13B))
    cfg["training"]["offload"] = {"optimizer": "cpu"}
    run = check_app_config("training", cfg)
    params = effects.params_per_gpu(run)
    out = effects.pcie_traffic(run)
    micro_batches = 8
    assert out["gradients to host"] == pytest.approx(offload.GRAD_D2H_BYTES * params * micro_batches)
    assert out["weights to GPU (after the CPU step)"] == pytest.approx(offload.PARAM_H2D_BYTES * params)
    assert out["pcie_s"] == pytest.approx(out["total"] / offload.host_rates(run.cluster).pcie_bytes_s)
    assert effects.pcie_traffic(check_app_config("training", ONE_GPU_13B)) == {}


def test_expert_time_grows_with_skew_and_is_none_for_dense() -> None:
    base = effects.expert_time(check_app_config("training", MOE))
    skewed = effects.expert_time(
        check_app_config("training", {**MOE, "moe_routing": {"source": {"kind": "zipf", "exponent": 1.5}}})
    )
    assert base is not None and skewed is not None
    assert skewed.balanced_s == pytest.approx(base.balanced_s)
    assert skewed.expert_s == pytest.approx(skewed.balanced_s * skewed.load_factor)
    assert skewed.load_factor > base.load_factor >= 1.0
    assert effects.expert_time(check_app_config("training", default_training())) is None


def test_parameter_server_section_compares_push_pull_with_all_reduce() -> None:
    cfg = {
        "model": "llama3.2-1b",
        "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 32, "node": "dgx-h100"},
        "parallel": {"tp": 1, "pp": 1, "dp": 32, "zero": 0},
        "training": {"seq_len": 2048, "global_batch": 64, "micro_batch": 1},
    }
    at = _app(train=json.dumps(cfg))
    at.checkbox(key="tr_ps_on").check().run()
    at.number_input(key="tr_ps_servers").set_value(4).run()
    assert_page_clean(at)
    _, delta = _metric(at, "exposed DP comm vs all-reduce")
    assert delta is not None and delta.endswith(" s")
    parallel = json.loads(at.query_params["train"])["parallel"]
    assert parallel["dp_mode"] == "parameter_server" and parallel["parameter_server"]["servers"] == 4
    rows = effects.dp_traffic(check_app_config("training", json.loads(at.query_params["train"])))
    assert rows[0].collective == "push/pull (parameter servers)"
