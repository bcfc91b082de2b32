"""Kernel cost model: roofline x efficiency, monotone within an alignment class, never faster than the roofline."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels.catalogue import list_gpus
from hwmodels.errors import ClusterSimError
from hwmodels.profile import Profile, datasheet_profile, load_profile, read_profile, write_profile

SIZES = [1, 16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384]


@pytest.fixture(scope="module")
def h100() -> Profile:
    return datasheet_profile("h100-sxm5-80gb")


@pytest.mark.parametrize("gpu", [g.id for g in list_gpus()])
def test_every_gpu_has_a_datasheet_profile(gpu: str) -> None:
    prof = datasheet_profile(gpu)
    assert prof.kind == "datasheet"
    assert prof.gemm_time(4096, 4096, 4096, "fp32") > 0
    assert prof.power.power_limit_w > prof.power.idle_w


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_gemm_time_is_monotone_in_each_dimension(h100: Profile, dtype: str) -> None:
    for n, k in itertools.product([1024, 4096, 8192], repeat=2):
        times = [h100.gemm_time(m, n, k, dtype) for m in SIZES]
        assert times == sorted(times), (n, k, times)
    for m in [256, 4096]:
        times = [h100.gemm_time(m, 4096, k, dtype) for k in SIZES]
        assert times == sorted(times)


@settings(max_examples=200, deadline=None)
@given(
    m=st.integers(1, 1 << 15),
    n=st.integers(1, 1 << 15),
    k=st.integers(1, 1 << 15),
    dtype=st.sampled_from(["bf16", "fp16", "fp32", "fp8"]),
)
def test_gemm_never_beats_the_roofline(h100: Profile, m: int, n: int, k: int, dtype: str) -> None:
    t = h100.gemm_time(m, n, k, dtype)
    b = {"bf16": 2, "fp16": 2, "fp32": 4, "fp8": 1}[dtype]
    roofline = max(2 * m * n * k / h100.peak_flops(dtype), b * (m * k + n * k + m * n) / h100.bandwidth_bytes_s)
    assert t >= roofline
    assert t >= h100.curve("gemm").floor_s


def test_large_gemm_efficiency_is_the_curve_maximum(h100: Profile) -> None:
    t = h100.gemm_time(16384, 16384, 16384, "bf16", floor=False)
    eff = 2 * 16384**3 / t / h100.peak_flops("bf16")
    assert eff == pytest.approx(h100.curve("gemm").eff_max, rel=0.01)


def test_attention_prefill_scales_quadratically_and_backward_costs_more(h100: Profile) -> None:
    t1 = h100.attention_prefill_time(1, 8192, 32, 8, 128, floor=False)
    t2 = h100.attention_prefill_time(1, 16384, 32, 8, 128, floor=False)
    assert 3.5 < t2 / t1 < 4.5
    assert h100.attention_prefill_time(1, 8192, 32, 8, 128, backward=True) > 2 * t1


def test_attention_prefill_chunk_with_prefix_costs_more_than_without(h100: Profile) -> None:
    base = h100.attention_prefill_time(1, 512, 32, 8, 128, floor=False)
    with_prefix = h100.attention_prefill_time(1, 512, 32, 8, 128, kv_len=4096, floor=False)
    assert with_prefix > base


def test_decode_is_bandwidth_bound_and_depends_on_total_context(h100: Profile) -> None:
    same = h100.attention_decode_time(4, 8192, 32, 8, 128)
    mixed = h100.attention_decode_time(4, [4096, 8192, 8192, 12288], 32, 8, 128)
    assert mixed == pytest.approx(same, rel=1e-9)
    kv_bytes = 4 * 8192 * 8 * 256 * 2
    assert same >= kv_bytes / h100.bandwidth_bytes_s
    fp8 = h100.attention_decode_time(4, 8192, 32, 8, 128, kv_dtype="fp8")
    assert fp8 < same


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.gemm_time(-5, 10, 10),
        lambda p: p.gemm_time(0, 10, 10),
        lambda p: p.attention_prefill_time(1, 1024, 32, 8, 128, kv_len=512),
        lambda p: p.attention_decode_time(2, [10], 32, 8, 128),
        lambda p: p.memory_op_time(-1),
        lambda p: p.gemm_time(10, 10, 10, "float7"),
    ],
)
def test_bad_sizes_give_one_line_errors(h100: Profile, call) -> None:
    with pytest.raises(ClusterSimError) as info:
        call(h100)
    assert "\n" not in str(info.value)


def test_fp8_on_a100_is_refused() -> None:
    with pytest.raises(ClusterSimError, match="fp8"):
        datasheet_profile("a100-sxm4-80gb").gemm_time(1024, 1024, 1024, "fp8")


def test_profile_round_trip_and_foreign_version(tmp_path, h100: Profile) -> None:
    path = write_profile(h100, tmp_path / "p.json")
    assert read_profile(path) == h100
    assert load_profile(str(path)) == h100
    bad = tmp_path / "old.json"
    data = json.loads(path.read_text())
    data["schema_version"] = 99
    bad.write_text(json.dumps(data))
    with pytest.raises(ClusterSimError, match="schema_version"):
        read_profile(bad)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    with pytest.raises(ClusterSimError, match="cannot read profile"):
        read_profile(corrupt)


def test_load_profile_by_name_and_datasheet(h100: Profile) -> None:
    assert load_profile("datasheet", gpu="h100") == h100
    assert load_profile(None, gpu="h100-sxm5-80gb").gpu == "h100-sxm5-80gb"


def test_fp8_gemms_are_faster_when_large_and_slower_at_m512() -> None:
    h100 = datasheet_profile("h100-sxm5-80gb")
    flops, n = 2.0 * 8192**3, 3 * 8192**2
    kernel = h100.kernel_time("gemm", flops, 2 * n, "bf16") / h100.kernel_time("gemm", flops, n, "fp8")
    assert 1.7 <= kernel <= 1.9  # the GEMM kernel alone (described H100 behaviour)
    big = h100.gemm_time(8192, 8192, 8192, "bf16") / h100.gemm_time(8192, 8192, 8192, "fp8")
    assert 1.4 <= big < kernel  # with the operands' quantisation pass (hwmodels.gemm_shapes.Fp8Rules)
    assert h100.gemm_time(512, 4096, 4096, "fp8") > h100.gemm_time(512, 4096, 4096, "bf16")
    assert "fp8" not in datasheet_profile("a100-sxm4-80gb").gemm_by_dtype


# ---- GEMM alignment classes (docs/research/gemm-shape-effects.md) ----------------------------------------


@pytest.mark.parametrize("gpu", ["h100-sxm5-80gb", "a100-sxm4-80gb"])
def test_gpt2_vocab_lm_head_is_at_least_twice_as_slow_as_the_padded_one(gpu: str) -> None:
    prof = load_profile(None, gpu=gpu)
    odd = prof.gemm_time(8192, 50257, 768, "bf16")
    padded = prof.gemm_time(8192, 50304, 768, "bf16")
    assert odd >= 2.0 * padded


def test_alignment_classes_follow_the_contiguous_dimensions() -> None:
    prof = load_profile(None, gpu="h100-sxm5-80gb")
    aligned = prof.gemm_time(8192, 8192, 8192, "bf16")
    assert prof.gemm_time(8191, 8192, 8192, "bf16") == pytest.approx(aligned, rel=1e-3)  # M is not contiguous
    partial = prof.gemm_time(8192, 8188, 8192, "bf16")  # 8 bytes aligned
    odd = prof.gemm_time(8192, 8192, 8191, "bf16")
    assert aligned < partial < odd
    assert prof.alignment_efficiency(8192, 8192, "bf16") == 1.0
    assert prof.alignment_efficiency(8188, 8192, "bf16") == prof.gemm_alignment.partial
    assert prof.alignment_efficiency(8192, 8191, "bf16") == prof.gemm_alignment.odd
    assert prof.alignment_efficiency(8196, 4100, "fp32") == 1.0  # 16-byte rows in fp32
    assert prof.alignment_efficiency(8200, 4096, "fp8") == prof.gemm_alignment.partial  # fp8 needs 16 elements


def test_misalignment_slows_compute_not_memory_bound_streaming() -> None:
    prof = load_profile(None, gpu="h100-sxm5-80gb")
    # a skinny decode-style GEMM streams its weights: bound by HBM, so alignment barely matters
    assert prof.gemm_time(1, 8191, 8192, "bf16") == pytest.approx(prof.gemm_time(1, 8192, 8192, "bf16"), rel=0.01)
