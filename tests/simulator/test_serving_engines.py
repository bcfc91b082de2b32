"""Serving-engine presets (vLLM, SGLang, TensorRT-LLM): they load by name and differ as their engines do."""

from __future__ import annotations

import numpy as np
import pytest

from hwmodels.errors import ClusterSimError
from simulator.serving import load_serving_config, simulate_serving
from simulator.serving.config import ServingConfig, WorkloadSpec
from simulator.serving.iteration import iteration_model
from simulator.serving.workload import SHAREGPT, generate_requests
from simulator.stacks import get_stack

ENGINES = ("vllm", "vllm-async", "vllm-v0", "sglang", "sglang-sync", "tensorrt-llm")


def cfg(stack: str, **over) -> dict:
    base = {
        "model": "llama3-8b",
        "gpu": "h100-sxm5-80gb",
        "stack": stack,
        "workload": {
            "num_requests": 80,
            "arrivals": {"kind": "poisson", "rate_per_s": 8.0},
            "lengths": {"kind": "fixed", "prompt_tokens": 300, "output_tokens": 60},
        },
    }
    return {**base, **over}


@pytest.mark.parametrize("name", ENGINES)
def test_engine_presets_load_by_name_with_sources(name: str) -> None:
    stack = get_stack(name)
    assert stack.serving is not None and stack.serving.batching
    assert any(k.startswith("serving.") for k in stack.sources), "engine behaviour needs its sources"
    config = ServingConfig.model_validate(cfg(name))
    assert config.stack.name == name and config.batching.kind == stack.serving.batching["kind"]


def test_each_engine_gets_its_own_default_batching() -> None:
    kinds = {n: ServingConfig.model_validate(cfg(n)).batching for n in ("vllm", "sglang", "tensorrt-llm", "vllm-v0")}
    assert kinds["vllm"].kind == "chunked" and kinds["vllm"].chunk_prompts  # V1: chunked prefill always on
    assert kinds["sglang"].kind == "prefill_first" and kinds["sglang"].chunk_size == 8192
    assert kinds["tensorrt-llm"].kind == "chunked" and not kinds["tensorrt-llm"].chunk_prompts
    assert kinds["vllm-v0"].kind == "continuous"
    # vLLM's defaults depend on the GPU: 8192 tokens / 1024 sequences from 70 GiB up, except on A100
    h100, a100 = (ServingConfig.model_validate(cfg("vllm", gpu=g)).batching for g in ("h100-sxm", "a100-sxm4-80gb"))
    assert (h100.token_budget, h100.max_num_seqs) == (8192, 1024)
    assert (a100.token_budget, a100.max_num_seqs) == (2048, 256)
    explicit = ServingConfig.model_validate(cfg("sglang", batching={"kind": "continuous"}))
    assert explicit.batching.kind == "continuous"  # a config's own batching wins


def test_overlap_scheduler_hides_the_cpu_step() -> None:
    sync = iteration_model("llama3-8b", "h100-sxm", stack="sglang-sync")
    overlap = iteration_model("llama3-8b", "h100-sxm", stack="sglang")
    t_sync, idle_sync = sync.iteration_s([], 32, 32 * 500)
    t_over, idle_over = overlap.iteration_s([], 32, 32 * 500)
    cpu = sync.scheduler_s(32)
    assert idle_sync == pytest.approx(cpu) and idle_over == 0.0
    assert t_sync == pytest.approx(t_over + cpu)  # the GPU step is longer, so overlap hides all of it
    # a CPU step longer than the GPU step still shows through
    slow = iteration_model(
        "llama3-8b", "h100-sxm", stack={"base": "sglang", "name": "slow", "scheduler_s_per_seq": 1e-3}
    )
    t, idle = slow.iteration_s([], 32, 32 * 500)
    assert t == pytest.approx(slow.scheduler_s(32)) and idle > 0


def test_vllm_pads_batches_to_captured_graph_sizes() -> None:
    im = iteration_model("llama3-8b", "h100-sxm", stack="vllm")
    engine = im.stack.serving
    assert engine.cuda_graphs == "tokens" and engine.graph_size(9) == 16 and engine.graph_size(300) == 304
    assert engine.graph_size(513) == 0  # above the largest capture size: eager
    t, cpu = im.iteration_s([], 9, 9 * 100)
    assert t - cpu == pytest.approx(im._graphed()._gpu_s([], 9, 900, 9, 16))
    # the padded batch costs what its captured size costs in the token-parallel layers
    assert im._graphed().dense_layer_s(16) > im._graphed().dense_layer_s(9)
    # eager iterations pay the per-kernel host floor that graph replay avoids
    eager_per_token = (im.iteration_s([], 520, 520 * 100)[0] - im.scheduler_s(520)) / 520
    graph_per_token = (im.iteration_s([], 512, 512 * 100)[0] - im.scheduler_s(512)) / 512
    assert eager_per_token > graph_per_token


def test_decode_only_graphs_and_unpadded_sizes() -> None:
    sglang = get_stack("sglang").serving
    assert sglang.cuda_graphs == "decode" and sglang.graph_size(161) == 0 and sglang.graph_size(5) == 8
    trt = get_stack("tensorrt-llm").serving
    assert trt.graph_size(31) == 31 and trt.graph_size(33) == 0 and trt.graph_size(64) == 64  # no padding
    im = iteration_model("llama3-8b", "h100-sxm", stack="sglang-sync")
    mixed, _ = im.iteration_s([(100, 0)], 8, 8 * 100)  # a prefill in the batch: no graph
    assert mixed > im._graphed()._gpu_s([(100, 0)], 8, 800, 9, 108)


def test_closed_loop_never_has_more_than_n_in_flight() -> None:
    n = 6
    r = simulate_serving(
        cfg(
            "vllm",
            workload={
                "num_requests": 60,
                "arrivals": {"kind": "concurrency", "max_concurrency": n},
                "lengths": {"kind": "sharegpt"},
            },
        )
    )
    req = r.requests
    start, end = req["arrival_s"].to_numpy(), (req["arrival_s"] + req["e2e_s"]).to_numpy()
    events = sorted([(t, 1) for t in start] + [(t, -1) for t in end], key=lambda e: (e[0], e[1]))
    in_flight = np.cumsum([d for _, d in events])
    assert in_flight.max() == n and r.completed_requests == 60
    assert (req["arrival_s"].iloc[:n] == 0).all() and req["arrival_s"].iloc[n:].min() > 0
    paced = simulate_serving(
        cfg(
            "vllm",
            workload={
                "num_requests": 40,
                "arrivals": {"kind": "concurrency", "max_concurrency": 3, "rate_per_s": 2.0},
                "lengths": {"kind": "fixed", "prompt_tokens": 100, "output_tokens": 20},
            },
        )
    )
    assert paced.requests["arrival_s"].iloc[1] > 0  # Poisson pacing under the client limit


def test_preemption_modes_differ_as_the_engines_do() -> None:
    tight = {
        "kv": {"gpu_memory_utilization": 0.26},
        "workload": {
            "num_requests": 48,
            "arrivals": {"kind": "concurrency", "max_concurrency": 48},
            "lengths": {"kind": "fixed", "prompt_tokens": 400, "output_tokens": 400},
        },
    }
    runs = {n: simulate_serving(cfg(n, **tight)) for n in ("vllm", "sglang-sync", "tensorrt-llm")}
    assert runs["vllm"].preemptions > 0  # admits on the prompt's KV, evicts the newest when it runs out
    assert runs["tensorrt-llm"].preemptions == 0  # GUARANTEED_NO_EVICT reserves every request's last token
    assert runs["tensorrt-llm"].max_admitted < runs["vllm"].max_admitted
    assert runs["sglang-sync"].max_admitted < runs["vllm"].max_admitted  # the reserve admits fewer
    assert all(r.completed_requests == 48 for r in runs.values())


def test_multi_step_pays_the_scheduler_once_per_block() -> None:
    base = cfg(
        "vllm-v0",
        workload={
            "num_requests": 40,
            "arrivals": {"kind": "concurrency", "max_concurrency": 8},
            "lengths": {"kind": "fixed", "prompt_tokens": 64, "output_tokens": 200},
        },
    )
    one = simulate_serving(base)
    ten = simulate_serving({**base, "batching": {"kind": "continuous", "num_scheduler_steps": 10}})
    assert ten.tpot_s.mean < one.tpot_s.mean  # the per-iteration CPU step amortised over 10 decode steps
    assert ten.iterations == one.iterations  # the same steps, fewer scheduling decisions


def test_frontend_latency_adds_to_every_request() -> None:
    base = cfg(
        "vllm", workload={"num_requests": 1, "lengths": {"kind": "fixed", "prompt_tokens": 50, "output_tokens": 5}}
    )
    none = simulate_serving({**base, "stack": {"base": "vllm", "name": "v", "serving": {"frontend_s": 0.0}}})
    some = simulate_serving({**base, "stack": {"base": "vllm", "name": "v", "serving": {"frontend_s": 0.05}}})
    assert some.ttft_s.mean == pytest.approx(none.ttft_s.mean + 0.05)
    assert some.e2e_s.mean == pytest.approx(none.e2e_s.mean + 0.05)


def test_sharegpt_lengths_match_the_published_means_and_filters() -> None:
    reqs = generate_requests(WorkloadSpec(num_requests=20_000, lengths={"kind": "sharegpt"}), seed=1)
    prompt = np.array([r.prompt_tokens for r in reqs])
    output = np.array([r.output_tokens for r in reqs])
    assert prompt.mean() == pytest.approx(SHAREGPT.prompt_mean, rel=0.03)
    assert output.mean() == pytest.approx(SHAREGPT.output_mean, rel=0.03)
    assert prompt.min() >= 4 and output.min() >= 4 and prompt.max() <= 1024 and (prompt + output).max() <= 2048
    again = generate_requests(WorkloadSpec(num_requests=20_000, lengths={"kind": "sharegpt"}), seed=1)
    assert [r.prompt_tokens for r in again] == prompt.tolist()  # same seed, same draws


def test_bad_engine_settings_are_one_line_errors() -> None:
    with pytest.raises(ClusterSimError, match="strictly increasing"):
        get_stack({"base": "vllm", "name": "x", "serving": {"cuda_graph_sizes": [4, 2]}})
    with pytest.raises(ClusterSimError, match="max_concurrency"):
        load_serving_config(cfg("vllm", workload={"arrivals": {"kind": "concurrency", "max_concurrency": 0}}))
