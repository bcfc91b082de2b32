"""Software stacks as data: presets load with sources, set the training knobs a config leaves unset,
stay overridable, and the published-table validation names the stack it was measured on."""

from __future__ import annotations

import pytest

from hwmodels.errors import ClusterSimError
from simulator import simulate_training
from simulator.cli import main as cli
from simulator.core.config import load_config
from simulator.stacks import DEFAULT_STACK, get_stack, list_stacks
from simulator.validation import tables as V

BASE = {
    "model": "llama3.2-1b",
    "cluster": {"gpu": "a100-sxm4-80gb", "num_gpus": 8, "node": "dgx-a100"},
    "parallel": {"tp": 2, "pp": 2, "dp": 2},
    "training": {"seq_len": 2048, "global_batch": 32, "micro_batch": 1},
}


def test_presets_load_with_a_source_per_value() -> None:
    names = {s.name for s in list_stacks()}
    assert {"megatron-te", "megatron-2021"} <= names
    for stack in list_stacks():
        knobs = {"attention", "host_s_per_layer", "overlap_grad_reduce"}
        assert knobs <= set(stack.sources), f"{stack.name}: every knob needs a source"


def test_default_stack_keeps_the_training_defaults() -> None:
    cfg = load_config(BASE)
    assert cfg.stack.name == DEFAULT_STACK
    assert cfg.training.flash_attention and cfg.training.host_s_per_layer == 0.0 and cfg.training.overlap_grad_reduce


def test_a_stack_sets_knobs_and_the_config_overrides_them() -> None:
    old = load_config({**BASE, "stack": "megatron-2021"})
    assert not old.training.flash_attention and not old.training.overlap_grad_reduce
    assert old.training.host_s_per_layer == get_stack("megatron-2021").host_s_per_layer > 0
    mixed = load_config({**BASE, "stack": "megatron-2021", "training": {**BASE["training"], "flash_attention": True}})
    assert mixed.training.flash_attention and mixed.training.host_s_per_layer == old.training.host_s_per_layer
    assert load_config(mixed.model_dump()) == mixed  # a dumped config re-validates to itself


def test_the_stack_changes_the_prediction_the_way_its_mechanisms_say() -> None:
    te = simulate_training(BASE)
    old = simulate_training({**BASE, "stack": "megatron-2021"})
    assert old.step_time_s > te.step_time_s  # unfused attention, eager host floor, DP sync after the backward


def test_inline_stack_from_a_base_preset() -> None:
    cfg = load_config({**BASE, "stack": {"base": "megatron-2021", "name": "slow-host", "host_s_per_layer": 5e-3}})
    assert cfg.stack.name == "slow-host" and cfg.training.host_s_per_layer == 5e-3
    assert not cfg.training.flash_attention  # the rest comes from the base


@pytest.mark.parametrize(
    "stack, message",
    [
        ("nope", "unknown stack 'nope'"),
        ({"name": "x", "attention": "magic"}, "attention"),
        ({"name": "x", "host_s_per_layer": -1}, "host_s_per_layer"),
        ({"name": "x", "colour": "red"}, "colour"),
    ],
)
def test_bad_stacks_are_one_line_errors(stack: object, message: str) -> None:
    with pytest.raises(ClusterSimError, match=message):
        load_config({**BASE, "stack": stack})


def test_validation_configs_name_the_stack_they_were_measured_on() -> None:
    row = V.table2_row("ptdp", "174.6", 1536)
    cfg = load_config(V.table2_config(row))
    assert cfg.stack.name == "megatron-2021" and cfg.training.precision == "fp16"
    assert not cfg.training.flash_attention
    assert cfg.training.host_s_per_layer == get_stack("megatron-2021").host_s_per_layer


def test_cli_lists_stacks_and_train_names_its_stack(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["stacks"]) == 0
    assert "megatron-2021" in capsys.readouterr().out
    assert cli(["train", "--set", "stack=megatron-2021"]) == 0
    assert "megatron-2021 (unfused attention)" in capsys.readouterr().out
    assert cli(["train", "--set", "stack=nope"]) == 2
    assert "unknown stack 'nope'" in capsys.readouterr().err


def test_megatron_stacks_pad_the_vocabulary_so_the_lm_head_stays_aligned() -> None:
    from simulator.core.workload import head_ops, padded_vocab
    from simulator.models import get_model

    gpt3 = get_model("gpt3-175b")
    assert gpt3.vocab_size == 50257 and padded_vocab(50257, 128 * 8) == 51200
    head = next(op for op in head_ops(gpt3, 1, 2048, tp=8, vocab_multiple=128 * 8) if op.name == "lm_head")
    assert head.gemm is not None and head.gemm[1] == 6400  # 51,200 / 8: 16-byte aligned
    unpadded = next(op for op in head_ops(gpt3, 1, 2048, tp=8) if op.name == "lm_head")
    assert unpadded.gemm is not None and unpadded.gemm[1] == 6283  # odd: the slow path
    assert get_stack("megatron-te").vocab_divisible_by == get_stack("megatron-2021").vocab_divisible_by == 128
    unpadded_stack = {"base": "megatron-te", "name": "no-padding", "vocab_divisible_by": 1}
    slow = simulate_training({**BASE, "model": "gpt3-175b", "stack": unpadded_stack, **_GPT3_SMALL})
    fast = simulate_training({**BASE, "model": "gpt3-175b", **_GPT3_SMALL})
    assert slow.step_time_s > fast.step_time_s


_GPT3_SMALL = {
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 64, "node": "dgx-h100"},
    "parallel": {"tp": 8, "pp": 8, "dp": 1},
    "training": {"seq_len": 2048, "global_batch": 16, "micro_batch": 1},
}


# ---- per-stack kernel lists --------------------------------------------------------------------------

SMALL = {
    "model": {
        "name": "small-llama",
        "source": "test",
        "num_layers": 4,
        "hidden_size": 1024,
        "num_attention_heads": 16,
        "num_kv_heads": 8,
        "ffn_hidden_size": 2816,
        "vocab_size": 32000,
        "mlp": "swiglu",
        "position": "rope",
    },
    "cluster": {"gpu": "h100-sxm", "num_gpus": 1},
    "parallel": {"tp": 1, "pp": 1, "dp": 1},
    "training": {"seq_len": 1024, "global_batch": 4, "micro_batch": 4},
}


def _layer(stack: str) -> list:
    from simulator.core.workload import layer_ops

    cfg = load_config({**SMALL, "stack": stack})
    t = cfg.training
    return layer_ops(cfg.model, 0, t.micro_batch, t.seq_len, stack=cfg.stack)


def test_every_required_preset_exists_with_kernel_and_optimizer_sources() -> None:
    names = {s.name for s in list_stacks()}
    assert {
        "megatron-te",
        "megatron-2021",
        "pytorch-eager",
        "torch-compile",
        "deepspeed-zero",
        "vllm",
        "sglang",
    } <= names
    for stack in list_stacks():
        assert "kernels" in stack.sources and stack.kernels, f"{stack.name}: kernel list and its source"


def test_plain_pytorch_launches_many_more_kernels_and_moves_more_bytes() -> None:
    from simulator.training.plan import forward_kernels

    fused, eager, compiled = _layer("megatron-te"), _layer("pytorch-eager"), _layer("torch-compile")
    assert forward_kernels(fused) <= 12 < forward_kernels(compiled) < forward_kernels(eager)
    assert forward_kernels(eager) >= 30
    mem = {
        name: sum(op.bytes for op in ops if op.kind == "mem")
        for name, ops in [("fused", fused), ("eager", eager), ("compiled", compiled)]
    }
    assert mem["fused"] < mem["compiled"] < mem["eager"]
    assert {op.name for op in eager if op.kind == "gemm"} >= {"q_proj", "k_proj", "v_proj", "mlp_gate", "mlp_up"}


def test_stack_predictions_order_as_their_kernels_do() -> None:
    times = {
        s: simulate_training({**SMALL, "stack": s}).step_time_s
        for s in ("megatron-te", "torch-compile", "pytorch-eager")
    }
    assert times["megatron-te"] < times["torch-compile"] < times["pytorch-eager"]
    assert 1.15 < times["pytorch-eager"] / times["megatron-te"] < 2.0


def test_slow_eager_host_time_bounds_a_tiny_model() -> None:
    tiny = {**SMALL, "training": {"seq_len": 64, "global_batch": 1, "micro_batch": 1}}
    fast = simulate_training(
        {**tiny, "stack": "pytorch-eager", "training": {**tiny["training"], "host_s_per_kernel": 0.0}}
    )
    slow = simulate_training(
        {**tiny, "stack": "pytorch-eager", "training": {**tiny["training"], "host_s_per_kernel": 50e-6}}
    )
    # dozens of tiny kernels a layer: once issuing one costs more than running it, the host sets the pace
    assert slow.step_time_s > 1.5 * fast.step_time_s


def test_inline_stack_replaces_one_slot_of_its_base() -> None:
    stack = get_stack({"name": "x", "base": "pytorch-eager", "kernels": {"rope": []}})
    assert stack.kernels["rope"] == [] and stack.kernels["attn_norm"] == get_stack("pytorch-eager").kernels["attn_norm"]
    names = {op.name for op in _layer("pytorch-eager")}
    assert any(n.startswith("rope_q") for n in names)


def test_optimizer_bytes_come_from_the_stack() -> None:
    base = simulate_training({**SMALL, "stack": "megatron-te"})
    heavier = simulate_training(
        {**SMALL, "stack": {"base": "megatron-te", "name": "y", "optimizer": {"bytes_per_param": 300}}}
    )
    assert heavier.step_time_s > base.step_time_s


def test_serving_stacks_change_the_iteration() -> None:
    from simulator.serving.iteration import predict_iteration_time

    args = ("llama3-8b", "h100-sxm", 1, [512], [1024] * 32)
    vllm, sglang = predict_iteration_time(*args, stack="vllm"), predict_iteration_time(*args, stack="sglang")
    eager = predict_iteration_time(*args, stack="pytorch-eager")
    assert sglang < vllm  # the overlap scheduler hides most of the CPU step
    assert eager > vllm  # unfused elementwise kernels and weight casts under autocast


def test_serving_config_names_its_stack() -> None:
    from simulator.serving.config import ServingConfig

    cfg = ServingConfig.model_validate({"model": "llama3-8b", "gpu": "h100-sxm", "stack": "sglang"})
    assert cfg.stack.name == "sglang"
    assert ServingConfig.model_validate({"model": "llama3-8b", "gpu": "h100-sxm"}).stack.name == "vllm"


def test_cuda_graph_replay_keeps_a_per_kernel_floor() -> None:
    from simulator.core.costs import CUDA_GRAPH_KERNEL_FLOOR_S
    from simulator.serving.iteration import iteration_model, predict_iteration_time

    decode = ("llama3-8b", "h100-sxm", 1, [], [1024])
    graphs = {s: predict_iteration_time(*decode, launch_overhead=False, stack=s) for s in ("vllm", "pytorch-eager")}
    eager = predict_iteration_time(*decode, stack="pytorch-eager")
    assert graphs["vllm"] < graphs["pytorch-eager"] < eager  # graphs remove the host cost, not the kernels
    im = iteration_model("llama3-8b", "h100-sxm", stack="pytorch-eager", launch_overhead=False)
    assert graphs["pytorch-eager"] > im.kernels_per_iteration(1) * CUDA_GRAPH_KERNEL_FLOOR_S


def test_deepspeed_zero3_gathers_again_after_the_recomputed_forward() -> None:
    """DeepSpeed's post-forward hook re-partitions the parameters after the recomputed forward, so a ZeRO-3
    backward under full recompute gathers them twice; FSDP keeps the recompute's gather for the backward.
    Only full recompute changes."""

    def step(regather: bool, recompute: str) -> float:
        cfg = {
            **BASE,
            "cluster": {"gpu": "a100-sxm4-80gb", "num_gpus": 32, "node": "dgx-a100"},
            "parallel": {"tp": 1, "pp": 1, "dp": 32, "zero": 3},
            "training": {**BASE["training"], "recompute": recompute},
            "stack": {"base": "megatron-2021", "name": "z3", "zero3_regather_in_recompute": regather},
        }
        return simulate_training(cfg).step_time_s

    assert get_stack("deepspeed-zero").zero3_regather_in_recompute
    assert not get_stack("fsdp-bf16").zero3_regather_in_recompute
    assert step(True, "full") > step(False, "full") * 1.02
    assert step(True, "none") == pytest.approx(step(False, "none"))
