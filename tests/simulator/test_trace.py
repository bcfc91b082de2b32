"""simulator.trace: a model's kernels recorded on the meta device, saved, loaded and priced."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from hwmodels.errors import ClusterSimError  # noqa: E402
from hwmodels.profile import load_profile  # noqa: E402
from simulator.core.costs import op_cost  # noqa: E402
from simulator.trace import load_trace, parse_trace, resolve_factory, trace_model, traced_ops  # noqa: E402
from simulator.trace.kernels import TensorInfo, foreach_launches, gemm_dims  # noqa: E402
from tests.fixtures import trace_models  # noqa: E402

BATCH, SEQ = 2, 24  # 48 tokens: no GEMM dimension of the tiny models coincides with the token count
FIXTURE = "tests.fixtures.trace_models"


def _layer_counts(layer, phase):
    ks = [k for k in layer if k.phase == phase]
    return {kind: sum(1 for k in ks if k.kind == kind) for kind in ("gemm", "attn", "mem")}


def _casts(trace):
    """Casts between floating dtypes (the int64 -> fp32 position cast of RoPE is the model's own)."""
    floats = {"fp32", "bf16", "fp16"}
    return [k for k in trace.kernels() if k.op == "aten._to_copy.default" and {*k.dtypes, *k.out_dtypes} <= floats]


@pytest.fixture(scope="module")
def hf_trace():
    pytest.importorskip("transformers")
    return trace_model(trace_models.hf_llama, batch=BATCH, seq=SEQ, autocast="bf16")


@pytest.fixture(scope="module")
def hand_trace():
    return trace_model(trace_models.handwritten_llama, batch=BATCH, seq=SEQ, autocast="bf16")


# ---- Hugging Face Llama ------------------------------------------------------------------------------


def test_hf_llama_layers_are_identical_with_seven_gemms_and_one_fused_attention(hf_trace) -> None:
    assert hf_trace.num_layers == 2 and hf_trace.layer_class == "LlamaDecoderLayer"
    assert hf_trace.identical_layers, hf_trace.layer_note
    for layer in hf_trace.layers:
        fwd, bwd = _layer_counts(layer, "fwd"), _layer_counts(layer, "bwd")
        assert fwd["gemm"] == 7 and fwd["attn"] == 1
        assert bwd["gemm"] == 14 and bwd["attn"] == 1
        attn = [k for k in layer if k.kind == "attn"]
        assert attn[0].op == "aten._scaled_dot_product_flash_attention.default"
        assert attn[1].op == "aten._scaled_dot_product_flash_attention_backward.default"
        a = attn[0].attn
        assert (a["heads"], a["kv_heads"], a["head_dim"], a["q_len"], a["causal"]) == (4, 2, 16, SEQ, 1)
        assert attn[1].attn["backward"] == 1 and attn[0].attn["backward"] == 0
        # no math-path attention leaked through: no bmm, no softmax
        assert not [k for k in layer if k.op.split(".")[1] in ("bmm", "_softmax", "baddbmm")]


def test_hf_llama_weight_gradients_are_flagged(hf_trace) -> None:
    layer = hf_trace.layers[0]
    wgrad = [k for k in layer if k.wgrad]
    assert len(wgrad) == 7 and all(k.phase == "bwd" and k.kind == "gemm" for k in wgrad)
    weights = {tuple(p.shape) for p in trace_models.hf_llama().to("meta").model.layers[0].parameters()}
    for k in wgrad:
        assert tuple(k.out_shapes[0]) in weights or tuple(reversed(k.out_shapes[0])) in weights
    assert not [k for k in layer if k.wgrad and k.phase == "fwd"]
    head = [k for k in hf_trace.post if k.wgrad]
    assert len(head) == 1 and head[0].name.startswith("lm_head")


def test_hf_llama_casts_under_bf16_and_none_without_autocast(hf_trace) -> None:
    casts = _casts(hf_trace)
    fwd_weight_casts = [k for k in hf_trace.layers[0] if k.phase == "fwd" and k.op == "aten._to_copy.default"
                        and k.dtypes == ["fp32"] and k.out_dtypes == ["bf16"] and len(k.shapes[0]) == 2]  # fmt: skip
    assert len(fwd_weight_casts) == 7  # each weight cast to bf16 once (autocast's weight cache)
    assert casts and {k.out_dtypes[0] for k in casts} == {"bf16", "fp32"}
    gemm_dtypes = {k.dtypes[0] for layer in hf_trace.layers for k in layer if k.kind == "gemm"}
    assert gemm_dtypes == {"bf16"}
    plain = trace_model(trace_models.hf_llama, batch=BATCH, seq=SEQ, autocast=None, optimizer=False)
    assert _casts(plain) == [] and plain.autocast is None and plain.opt == []
    assert {k.dtypes[0] for k in plain.layers[0] if k.kind in ("gemm", "attn")} == {"fp32"}
    assert plain.layers[0][0].op != "aten._scaled_dot_product_flash_attention.default"


def test_hf_config_factory_reads_json_as_data(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    cfg = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
           "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 128}  # fmt: skip
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    trace = trace_model(resolve_factory(f"hf:{path}"), batch=1, seq=8, optimizer=False)
    assert trace.num_layers == 1 and trace.params.total > 0
    inline = resolve_factory("hf:" + json.dumps(cfg))
    assert inline.__name__ == "hf:llama"
    for bad, needle in (("hf:{nope", "not valid JSON"), ('hf:{"a": 1}', "model_type"), ("hf:/no/such.json", "cannot")):
        with pytest.raises(ClusterSimError, match=needle):
            resolve_factory(bad)


# ---- hand-written Llama ----------------------------------------------------------------------------


def test_handwritten_llama_fused_rms_norm_rope_sdpa_swiglu(hand_trace) -> None:
    assert hand_trace.identical_layers and hand_trace.num_layers == 2
    layer = hand_trace.layers[0]
    ops = [k.op.split(".")[1] for k in layer]
    assert ops.count("_fused_rms_norm") == 2 and ops.count("_fused_rms_norm_backward") == 2
    assert "silu" in ops and "silu_backward" in ops and ops.count("cat") >= 2  # SwiGLU, rotate_half
    assert _layer_counts(layer, "fwd")["gemm"] == 7 and _layer_counts(layer, "fwd")["attn"] == 1
    norm = next(k for k in layer if k.op == "aten._fused_rms_norm.default")
    assert norm.dtypes == ["fp32", "fp32"]  # rms_norm runs under autocast's fp32 policy (PyTorch >= 2.12)
    assert hand_trace.params.per_layer == [sum(p.numel() for p in trace_models.Block().parameters())] * 2
    assert hand_trace.optimizer == "adamw-foreach" and hand_trace.opt
    assert all(k.op.split(".")[1].startswith("_foreach_") for k in hand_trace.opt)


def test_unfused_rms_norm_decomposes() -> None:
    trace = trace_model(trace_models.handwritten_llama, batch=1, seq=8, fused=("scaled_dot_product_attention",),
                        optimizer=False)  # fmt: skip
    ops = {k.op.split(".")[1] for k in trace.layers[0]}
    assert "_fused_rms_norm" not in ops and {"pow", "mean", "rsqrt"} <= ops


def test_forward_gemm_flops_are_two_times_linear_params_times_tokens(hand_trace) -> None:
    model = trace_models.handwritten_llama()
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    flops = sum(k.flops for k in hand_trace.kernels() if k.kind == "gemm" and k.phase == "fwd")
    assert flops == pytest.approx(2 * linear * BATCH * SEQ, rel=0.01)
    bwd = sum(k.flops for k in hand_trace.kernels() if k.kind == "gemm" and k.phase == "bwd")
    assert bwd == pytest.approx(2 * flops, rel=0.01)


def test_layer_norm_unfused_and_fused_cross_entropy() -> None:
    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(64, 32)
            self.layers = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.LayerNorm(32), torch.nn.Linear(32, 32))
                                              for _ in range(2))  # fmt: skip
            self.head = torch.nn.Linear(32, 64)

        def forward(self, ids):
            x = self.emb(ids)
            for layer in self.layers:
                x = x + layer(x)
            return self.head(x)

    fused = trace_model(Tiny, batch=1, seq=8, fused=("layer_norm", "cross_entropy"), optimizer=False)
    assert [k.op for k in fused.layers[0] if "layer_norm" in k.op] == [
        "aten.native_layer_norm.default", "aten.native_layer_norm_backward.default"]  # fmt: skip
    assert {"fused.cross_entropy", "fused.cross_entropy_backward"} <= {k.op for k in fused.post}
    unfused = trace_model(Tiny, batch=1, seq=8, fused=(), optimizer=False)
    assert not [k for k in unfused.layers[0] if "layer_norm" in k.op]
    assert {"_log_softmax", "nll_loss_forward"} <= {k.op.split(".")[1] for k in unfused.post}


def test_code_that_switches_autocast_off_runs_in_fp32() -> None:
    class Mixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.proj, self.router = (
                torch.nn.Embedding(32, 16),
                torch.nn.Linear(16, 16),
                torch.nn.Linear(16, 32),
            )

        def forward(self, ids):
            x = self.proj(self.emb(ids))
            with torch.autocast("cuda", enabled=False):
                return self.router(x.float())

    trace = trace_model(Mixed, batch=1, seq=4, optimizer=False)
    gemms = {k.name: k.dtypes[-1] for k in trace.kernels() if k.kind == "gemm" and k.phase == "fwd"}
    assert gemms == {"proj:addmm": "bf16", "router:addmm": "fp32"}


def test_data_dependent_control_flow_is_one_line_error() -> None:
    class Branchy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(16, 8)

        def forward(self, ids):
            x = self.emb(ids)
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(ClusterSimError, match="reads a tensor's value"):
        trace_model(Branchy, batch=1, seq=4)


# ---- the trace file ----------------------------------------------------------------------------------


def test_save_load_round_trip(hand_trace, tmp_path: Path) -> None:
    path = hand_trace.save(tmp_path / "t.json")
    assert load_trace(path) == hand_trace


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda d: "not json at all", "not valid JSON"),
        (lambda d: json.dumps({**d, "format": "clustersim-trace/0"}), "format='clustersim-trace/0'"),
        (lambda d: json.dumps(d).replace('"flops": 0.0', '"flops": -1.0', 1), "greater than or equal"),
        (lambda d: json.dumps(d).replace('"bytes": ', '"bytes": Infinity, "x": ', 1), "not valid JSON"),
        (lambda d: json.dumps(d).replace('"flops": 0.0', '"flops": 1e999', 1), "finite"),
        (lambda d: json.dumps({**d, "num_layers": 5}), "num_layers=5"),
        (lambda d: json.dumps([1, 2]), "JSON object"),
    ],
)
def test_load_rejects_bad_files_in_one_line(hand_trace, tmp_path: Path, mutate, needle) -> None:
    path = tmp_path / "bad.json"
    path.write_text(mutate(json.loads(hand_trace.model_dump_json())))
    with pytest.raises(ClusterSimError, match=needle) as err:
        load_trace(path)
    assert "\n" not in str(err.value)


def test_load_rejects_oversized_files(hand_trace, tmp_path: Path, monkeypatch) -> None:
    import simulator.trace.schema as schema

    path = hand_trace.save(tmp_path / "t.json")
    monkeypatch.setattr(schema, "MAX_TRACE_BYTES", 1000)
    with pytest.raises(ClusterSimError, match="refusing to read"):
        load_trace(path)
    with pytest.raises(ClusterSimError, match="cannot read"):
        load_trace(tmp_path / "missing.json")
    with pytest.raises(ClusterSimError, match="not valid JSON"):
        parse_trace(b"\xff\xfe")


# ---- pricing -----------------------------------------------------------------------------------------


def test_traced_ops_are_priced_by_op_cost(hand_trace) -> None:
    ops = traced_ops(hand_trace, batch=BATCH, seq=SEQ)
    profile = load_profile(None, gpu="h100-sxm5-80gb")
    assert ops.num_layers == 2 and len(ops.layers) == 2 and ops.params.total == hand_trace.params.total
    layer_ops = ops.layers[0]
    assert {op.phase for op in layer_ops} == {"fwd", "bwd"}
    assert any(op.wgrad for op in layer_ops) and any(op.kind == "attn" and op.attn["backward"] for op in layer_ops)
    fwd = bwd = wgrad = 0.0
    for op in ops.all_ops():
        c = op_cost(op, profile, {})
        assert math.isfinite(c.forward_s + c.backward_s) and c.forward_s + c.backward_s > 0
        fwd, bwd, wgrad = fwd + c.forward_s, bwd + c.backward_s, wgrad + c.backward_weight_s
        assert (c.backward_s == 0) == (op.phase == "fwd")
    assert fwd > 0 and bwd > fwd and 0 < wgrad < bwd
    assert all(op.phase == "fwd" for op in ops.optimizer) and ops.optimizer
    with pytest.raises(ClusterSimError, match="re-trace"):
        traced_ops(hand_trace, seq=SEQ * 2)


def test_kernel_rules() -> None:
    a, b = TensorInfo((48, 64), "bf16", 2.0, 48 * 64), TensorInfo((64, 128), "bf16", 2.0, 64 * 128)
    assert gemm_dims("aten.mm.default", [a, b], []) == (48, 128, 64, 1)
    q, k = TensorInfo((8, 24, 16), "bf16", 2.0, 0), TensorInfo((8, 16, 24), "bf16", 2.0, 0)
    assert gemm_dims("aten.bmm.default", [q, k], []) == (24, 24, 16, 8)
    assert gemm_dims("aten.add.Tensor", [a, a], []) is None
    assert foreach_launches([10] * 200, depth=1) == 2  # 110 tensors per launch
    assert foreach_launches([10] * 200, depth=4) == 6  # 36 per launch at depth 4
    assert foreach_launches([320 * 65536 + 1], depth=1) == 2  # 320 chunks of 64K elements per launch
    assert foreach_launches([], depth=2) == 0


# ---- CLI ---------------------------------------------------------------------------------------------


def test_cli_trace_writes_a_file_and_bad_module_is_one_line(capsys, tmp_path: Path) -> None:
    from simulator.cli import main

    out = tmp_path / "trace.json"
    code = main(["trace", f"{FIXTURE}:handwritten_llama", "--batch", "1", "--seq", "16", "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 0 and "layer 0" in stdout and "optimizer" in stdout and "tracing" in stderr
    assert load_trace(out).seq == 16
    for argv in (["trace", "nosuchmodule:x"], ["trace", f"{FIXTURE}:not_a_model"], ["trace", "nocolon"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("clustersim: error:") and "Traceback" not in "\n".join(err)
