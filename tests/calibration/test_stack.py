"""Calibration beyond kernels: repeated timing with spread, alignment classes, memory-bound ops, host cost per
kernel and the end-to-end Llama-style steps (CPU, tiny shapes)."""

from __future__ import annotations

import itertools
import time

import pytest

torch = pytest.importorskip("torch")

from calibration import report  # noqa: E402
from calibration.e2e import LlamaModel, count_kernels, measure_steps  # noqa: E402
from calibration.fit import fit_alignment, fit_host, fit_profile, membound_rows, read_raw  # noqa: E402
from calibration.measure import Timer, Timing, alignment_grid, median_iqr  # noqa: E402
from calibration.run import e2e_shape, model_spec  # noqa: E402
from calibration.validate import Shape, compare, e2e_stack, predict  # noqa: E402
from hwmodels.errors import ClusterSimError  # noqa: E402
from hwmodels.profile import datasheet_profile, load_profile  # noqa: E402
from tests.conftest import H100_KERNELS  # noqa: E402

# ---- repeated timing ---------------------------------------------------------------------------------


def test_median_and_iqr() -> None:
    assert median_iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == (3.0, 2.0)
    assert median_iqr([2.0]) == (2.0, 0.0)


def test_a_noisy_point_is_measured_again_with_more_repeats() -> None:
    durations = itertools.cycle([0.001, 0.004])
    timer = Timer("cpu", min_block_s=0.0, repeats=5, max_spread=0.10, retry_factor=3)
    t = timer(lambda _: time.sleep(next(durations)))
    assert t.remeasured and t.n == 15
    assert t.spread > 0.10
    fields = t.fields()
    assert set(fields) == {"ms", "ms_iqr", "n", "remeasured"} and fields["n"] == 15


def test_a_steady_point_keeps_its_repeats() -> None:
    t = Timer("cpu", min_block_s=0.0, repeats=5, max_spread=100.0)(lambda _: None)
    assert not t.remeasured and t.n == 5
    assert Timing(1e-3, 1e-4, 5, 10).fields("bwd_ms") == {"bwd_ms": 1.0, "bwd_ms_iqr": 0.1, "bwd_n": 5}


# ---- alignment classes -------------------------------------------------------------------------------


def _align_rows(partial: float, odd: float) -> list[dict]:
    rows = []
    for m, n, k, dt, cls, group in alignment_grid(8192, 4096, 50304, "bfloat16"):
        eff = {"aligned": 1.0, "partial": partial, "odd": odd}[cls]
        rows.append({"M": m, "N": n, "K": k, "dtype": dt, "class": cls, "group": group, "ms": m * n * k / 7e11 / eff})
    return rows


def test_the_alignment_grid_covers_gpt2_vocab_and_both_contiguous_dims() -> None:
    grid = alignment_grid(8192, 4096, 50304, "bfloat16")
    assert {(n, k) for _, n, k, *_ in grid if k == 768} == {(50304, 768), (50260, 768), (50258, 768), (50257, 768)}
    assert {k for _, n, k, _, _, g in grid if g == "square_k"} == {4096, 4092, 4094, 4095}
    prof = datasheet_profile("h100-sxm5-80gb")
    for _, n, k, _, cls, _ in grid:  # the class each shape is measured for is the class the model gives it
        eff = prof.alignment_efficiency(n, k, "bf16")
        assert eff == {"aligned": 1.0, "partial": 0.7, "odd": 0.4}[cls], (n, k, cls)


def test_alignment_efficiencies_are_fitted_into_the_profile() -> None:
    base = datasheet_profile("h100-sxm5-80gb").gemm_alignment
    fitted, ratios = fit_alignment({"gemm_align": _align_rows(0.8, 0.3)}, base)
    assert fitted.partial == pytest.approx(0.8) and fitted.odd == pytest.approx(0.3)
    assert len(ratios["partial"]) == 6 and len(ratios["odd"]) == 3 and "fitted" in fitted.source
    raw = {**read_raw(H100_KERNELS), "gemm_align": _align_rows(0.8, 0.3)}
    prof, _ = fit_profile(raw)
    assert prof.alignment_efficiency(50257, 768) == pytest.approx(0.3)
    assert fit_alignment({}, base)[0] == base  # nothing measured: the datasheet defaults stay


# ---- memory-bound ops and host cost ------------------------------------------------------------------


def test_membound_is_fitted_to_every_streaming_op_when_bytes_are_recorded() -> None:
    legacy = read_raw(H100_KERNELS)
    assert {r["op"] for r in membound_rows(legacy)} == {"d2d_copy"}  # shared data: add was a + a
    rows = [{"op": op, "bytes": 1 << 20, "ms": 0.01, "moved_bytes": 2 << 20} for op in ("add", "sum", "rms_norm")]
    new = {"membw": rows}
    assert {r["op"] for r in membound_rows(new)} == {"add", "sum"}


def test_host_cost_per_kernel_is_the_slope_of_launch_bound_steps() -> None:
    probes = [{"kernels": n, "ms": 0.2 + n * 0.008} for n in (300, 600, 1200)]
    h, count = fit_host({"host_probe": probes})
    assert h == pytest.approx(8e-6) and count == 3
    assert fit_host({})[0] is None
    raw = {**read_raw(H100_KERNELS), "host_probe": probes}
    assert fit_profile(raw)[0].host_s_per_kernel == pytest.approx(8e-6)


# ---- the end-to-end model ----------------------------------------------------------------------------


def test_the_llama_model_runs_training_prefill_and_decode_shapes() -> None:
    s = Shape.tiny()
    model = LlamaModel(s, 64)
    ids = torch.randint(0, s.vocab, (2, 16))
    assert model(ids).shape == (2, 16, s.vocab)
    assert model(ids, last_only=True).shape == (2, 1, s.vocab)
    kv = [(torch.zeros(2, s.kv_heads, 64, s.head_size),) * 2 for _ in range(s.layers)]
    assert model(ids[:, :1], kv, torch.tensor([5])).shape == (2, 1, s.vocab)
    assert count_kernels(lambda _: model(ids), "cpu") > 10


def test_e2e_steps_on_the_cpu_record_median_spread_and_kernels() -> None:
    recs = measure_steps(Shape.tiny(), "cpu", Timer("cpu", min_block_s=0.0, repeats=3))
    assert [r["kind"] for r in recs] == ["train_step", "prefill", "decode_eager"]  # no CUDA graphs on a CPU
    assert all(r["ms"] > 0 and r["n"] >= 3 and "ms_iqr" in r and r["kernels"] > 0 for r in recs)
    assert recs[0]["kernels"] > recs[1]["kernels"]  # backward and optimizer launch more than a forward


def test_prediction_uses_the_pytorch_eager_stack_when_it_exists(monkeypatch) -> None:
    from simulator.stacks import DEFAULT_STACK, list_stacks

    expected = "pytorch-eager" if any(s.name == "pytorch-eager" for s in list_stacks()) else DEFAULT_STACK
    assert e2e_stack() == expected
    prof = load_profile("h100-sxm5-80gb")
    pred = predict(Shape(), prof)
    assert set(pred) == {"train_step", "prefill", "decode_eager", "decode_graph"}
    assert all(v > 0 for v in pred.values()) and pred["decode_graph"] <= pred["decode_eager"]
    monkeypatch.setattr("calibration.validate.E2E_STACK", "no-such-stack")
    assert e2e_stack() == DEFAULT_STACK  # tolerated: the default stack predicts
    rows = compare([{"shape": Shape.tiny().as_dict(), "kind": "prefill", "ms": 1.0}], prof)
    assert rows[0][3] == DEFAULT_STACK and rows[0][2] > 0


def test_the_e2e_shape_comes_from_the_run_configs_model(tmp_path) -> None:
    cpu = e2e_shape("cpu", "llama3-8b")
    assert cpu.hidden == 64 and cpu.heads // cpu.kv_heads == 4 and cpu.name == "llama3-8b"  # 32 / 8 heads
    gpu = Shape.for_model(model_spec("llama3-8b"), "cuda:0")
    assert (gpu.layers, gpu.hidden, gpu.kv_heads, gpu.ffn, gpu.vocab) == (2, 4096, 8, 14336, 128256)
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: llama3.2-1b\ncluster: {gpu: h100, num_gpus: 8}\n")
    assert model_spec(str(cfg)).name == model_spec("llama3.2-1b").name
    assert e2e_shape("cpu", None) == Shape.tiny()
    with pytest.raises(ClusterSimError, match="dense Llama-style") as info:
        e2e_shape("cpu", "deepseek-v3")
    assert "\n" not in str(info.value)


def test_report_sections_read_the_raw_file() -> None:
    raw = {
        "gemm": [{"M": 1, "N": 2, "K": 3, "ms": 1.0, "ms_iqr": 0.05, "n": 5}],
        "membw": [{"op": "sum", "bytes": 1 << 16, "ms": 0.01, "ms_iqr": 0.002, "n": 15, "remeasured": True}],
        "host_probe": [{"kernels": 100, "ms": 1.0}],
    }
    spread = report.spread_table(raw)
    assert "gemm" in spread and "20.0%" in spread
    assert "not measured" in report.host_line({}) and "10.0 us" in report.host_line(raw)
    prof = datasheet_profile("h100-sxm5-80gb")
    assert "sum" in report.membound_table(raw, prof) and "64KB" in report.membound_table(raw, prof)
    assert "defaults partial 0.70" in report.alignment_table({}, prof)
    assert "+100.0%" in report.e2e_table([("x", 1.0, 2.0, "pytorch-eager")])
