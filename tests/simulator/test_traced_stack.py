"""``stack: {traced: FILE}``: training prices a traced model's own kernels, and agrees with the presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from hwmodels.errors import ClusterSimError
from simulator import simulate_training
from simulator.core.config import load_config

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

H, L, HEADS, KV, FFN, VOCAB, BATCH, SEQ = 256, 2, 8, 4, 704, 2048, 2, 256


def _hf_llama() -> object:
    cfg = transformers.LlamaConfig(
        hidden_size=H,
        num_hidden_layers=L,
        num_attention_heads=HEADS,
        num_key_value_heads=KV,
        intermediate_size=FFN,
        vocab_size=VOCAB,
        max_position_embeddings=SEQ,
        attn_implementation="sdpa",
    )
    return transformers.LlamaForCausalLM(cfg)


def _config(stack: object) -> dict:
    model = {
        "name": "tiny-llama",
        "source": "test: the traced transformers config",
        "num_layers": L,
        "hidden_size": H,
        "num_attention_heads": HEADS,
        "num_kv_heads": KV,
        "ffn_hidden_size": FFN,
        "vocab_size": VOCAB,
        "mlp": "swiglu",
        "position": "rope",
    }
    return {
        "model": model,
        "stack": stack,
        "cluster": {"gpu": "h100-sxm", "num_gpus": 1},
        "parallel": {"tp": 1, "pp": 1, "dp": 1},
        "training": {"seq_len": SEQ, "global_batch": BATCH, "micro_batch": BATCH},
    }


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    from simulator.trace import trace_model

    path = tmp_path_factory.mktemp("trace") / "llama.json"
    trace_model(_hf_llama, batch=BATCH, seq=SEQ, autocast="bf16", optimizer=False).save(path)
    return str(path)


def test_traced_llama_and_the_pytorch_eager_preset_agree(trace_file: str) -> None:
    traced = simulate_training(_config({"name": "traced", "base": "pytorch-eager", "traced": trace_file}))
    preset = simulate_training(_config("pytorch-eager"))
    assert traced.step_time_s == pytest.approx(preset.step_time_s, rel=0.05)


def test_traced_unfused_module_is_slower_than_megatron_te(trace_file: str) -> None:
    traced = simulate_training(_config({"name": "traced", "base": "pytorch-eager", "traced": trace_file}))
    fused = simulate_training(_config("megatron-te"))
    assert traced.step_time_s > 1.2 * fused.step_time_s


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"training": {"seq_len": 128, "global_batch": BATCH, "micro_batch": BATCH}}, "re-trace"),
        ({"parallel": {"tp": 2, "pp": 1, "dp": 1}, "cluster": {"gpu": "h100-sxm", "num_gpus": 2}}, "one device"),
    ],
)
def test_a_trace_that_does_not_fit_the_config_is_a_one_line_error(trace_file: str, change: dict, message: str) -> None:
    cfg = {**_config({"name": "traced", "base": "pytorch-eager", "traced": trace_file}), **change}
    with pytest.raises(ClusterSimError, match=message):
        simulate_training(load_config(cfg))


def test_a_missing_or_non_json_trace_is_refused(tmp_path: Path) -> None:
    for path in (str(tmp_path / "none.json"), "/etc/passwd"):
        with pytest.raises(ClusterSimError, match="trace file"):
            simulate_training(_config({"name": "traced", "base": "pytorch-eager", "traced": path}))


def test_serving_prices_the_traced_forward_per_token(trace_file: str) -> None:
    from simulator.models import ModelSpec
    from simulator.serving.iteration import predict_iteration_time

    model = ModelSpec.model_validate(_config("x")["model"])
    traced = {"name": "traced", "base": "pytorch-eager", "traced": trace_file}
    for prefill, decodes in (([64], []), ([], [128] * 8)):
        for graphs in (False, True):
            args = (model, "h100-sxm", 1, prefill, decodes)
            mine = predict_iteration_time(*args, launch_overhead=not graphs, stack=traced)
            preset = predict_iteration_time(*args, launch_overhead=not graphs, stack="pytorch-eager")
            fused = predict_iteration_time(*args, launch_overhead=not graphs, stack="vllm")
            assert mine == pytest.approx(preset, rel=0.05) and mine > fused
    with pytest.raises(ClusterSimError, match="one device"):
        predict_iteration_time(model, "h100-sxm", 2, [64], [], stack=traced)
