"""Parameter all-gather under the first forward (param_gather_window); all-gather context parallelism (cp_comm)."""

from __future__ import annotations

import pytest

from hwmodels.errors import ClusterSimError
from simulator.training import simulate_training
from simulator.training.simulate import param_gather_exposed_s


def test_chained_gather_exposes_the_first_bucket_and_each_shortfall() -> None:
    ag, comp = [3.0, 5.0, 1.0, 4.0], [2.0, 2.0, 6.0, 1.0]
    # bucket k+1's gather is dispatched when bucket k's forward starts: a_1 + sum max(0, a_{k+1} - c_k)
    expected = 3.0 + max(0, 5 - 2) + max(0, 1 - 2) + max(0, 4 - 6)
    assert param_gather_exposed_s(ag, comp, 0.0, chained=True) == pytest.approx(expected)


def test_gathers_dispatched_up_front_hide_under_the_pipeline_fill() -> None:
    ag, comp = [3.0, 5.0, 1.0], [2.0, 2.0, 2.0]
    up_front = param_gather_exposed_s(ag, comp, 0.0, chained=False)
    assert up_front == pytest.approx(3.0 + 8.0 - 5.0 + 0.0)  # bucket 2 done at 8, needed at 5; bucket 3 at 9 < 10
    assert up_front <= param_gather_exposed_s(ag, comp, 0.0, chained=True)
    # 4 s of pipeline fill: forwards at 4-6, 8-10 (bucket 2 done at 8), 10-12: 12 - 4 - 6 = 2 s exposed
    assert param_gather_exposed_s(ag, comp, 4.0, chained=False) == pytest.approx(2.0)
    assert param_gather_exposed_s(ag, comp, 100.0, chained=False) == 0.0
    with pytest.raises(ClusterSimError):
        param_gather_exposed_s([1.0], [1.0, 2.0], 0.0, chained=True)


def _run(window: str, dp: int) -> object:
    return simulate_training(
        {
            "model": "llama2-7b",
            "stack": {"base": "megatron-te", "name": f"pg-{window}", "param_gather_window": window},
            "cluster": {"gpu": "h100-sxm5-80gb", "node": "dgx-h100", "num_gpus": 8 * dp},
            "parallel": {"tp": 8, "pp": 1, "dp": dp, "zero": 1, "sp": True},
            "training": {"seq_len": 4096, "global_batch": 2 * dp, "micro_batch": 1, "overlap_param_gather": True},
        }
    )


def test_first_forward_window_costs_time_and_grows_with_dp() -> None:
    hidden, small, big = _run("hidden", 16), _run("first_forward", 16), _run("first_forward", 256)
    assert small.step_time_s > hidden.step_time_s
    # the first bucket's gather is exposed and the ring latency grows with the DP ranks
    assert big.step_time_s - big.pipeline_time_s > small.step_time_s - small.pipeline_time_s


_CP = {
    "model": "llama2-7b",
    "cluster": {"gpu": "h100-sxm5-80gb", "node": "dgx-h100", "num_gpus": 32},
    "parallel": {"tp": 8, "cp": 4, "pp": 1, "dp": 1, "sp": True},
    "training": {"seq_len": 32768, "global_batch": 1, "micro_batch": 1},
}


def _cp_run(stack: str) -> object:
    return simulate_training({**_CP, "stack": stack})


def test_all_gather_context_parallelism_exposes_the_kv_exchange() -> None:
    from hwmodels.profile import load_profile
    from simulator.core.config import load_config
    from simulator.training.plan import chunk_costs

    def cp_comm(stack: str) -> tuple[float, float]:
        conf = load_config({**_CP, "stack": stack})
        chunk = chunk_costs(conf, load_profile(None, gpu="h100"), conf.cluster.resolve(), num_chunks=1)[0]
        return chunk.forward.comm_s.get("cp", 0.0), chunk.backward.comm_s.get("cp", 0.0)

    ring_f, ring_b = cp_comm("megatron-te")
    ag_f, ag_b = cp_comm("llama3-4d")
    assert ag_f > ring_f and ag_f > 0  # nothing of the gather hides under the attention
    assert ag_b == pytest.approx(2.0 * ag_f)  # K/V gathered again, dK/dV reduce-scattered
    assert _cp_run("llama3-4d").step_time_s > _cp_run("megatron-te").step_time_s
