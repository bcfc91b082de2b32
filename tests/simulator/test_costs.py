"""simulator.core.costs, the one place ops meet the hardware models: each kernel function prices
exactly what the profile does, and the serving and compression models reach the hardware through it."""

from __future__ import annotations

import pytest

from hwmodels import collectives as C
from hwmodels.dtypes import bytes_per_element
from hwmodels.profile import load_profile
from hwmodels.topology import ClusterSpec
from simulator.compression import dp_comm_time, parse_compression
from simulator.core import costs
from simulator.serving.iteration import iteration_model

H100 = "h100-sxm5-80gb"


@pytest.fixture(scope="module")
def h100():
    return load_profile(H100)


@pytest.mark.parametrize("dtype", ["bf16", "fp8", "fp32"])
@pytest.mark.parametrize("shape", [(1, 4096, 4096), (8192, 28672, 8192), (37, 129, 4095)])
@pytest.mark.parametrize("floor", [True, False])
def test_gemm_time_is_the_profiles_gemm(h100, dtype, shape, floor) -> None:
    assert costs.gemm_time(h100, *shape, dtype, floor=floor) == h100.gemm_time(*shape, dtype, floor)


@pytest.mark.parametrize("weight", ["bf16", "fp8", "int8", "int4"])
@pytest.mark.parametrize("shape", [(1, 8192, 8192), (4096, 1024, 8192)])
def test_gemm_time_with_own_weight_width_reads_weights_at_that_width(h100, weight, shape) -> None:
    """Serving's quantised weights: the weights at their width, activations and output at 16 bits, and
    the compute dtype's own GEMM curve (fp8's override on an H100)."""
    M, N, K = shape
    compute = {"int4": "bf16", "int8": "int8", "fp8": "fp8", "bf16": "bf16"}[weight]
    nbytes = 2.0 * (M * K + M * N) + bytes_per_element(weight) * N * K
    expected = h100._time(h100.curve("gemm", compute), 2.0 * M * N * K, nbytes, compute, True)
    assert costs.gemm_time(h100, M, N, K, compute, weight_dtype=weight) == expected
    if weight == "bf16":  # same bytes as the plain GEMM, up to float association
        assert expected == pytest.approx(h100.gemm_time(M, N, K, "bf16"), rel=1e-12)


def test_kernel_time_uses_the_familys_curve(h100) -> None:
    for family in ("gemm", "attn_fwd", "attn_bwd", "attn_decode", "membound"):
        for dtype in ("bf16", "fp8"):
            got = h100.kernel_time(family, 3e12, 4e9, dtype, False)
            assert got == h100._time(h100.curve(family, dtype), 3e12, 4e9, dtype, False)
    assert h100.kernel_time("gemm", 1e3, 1e3) == h100.curve("gemm").floor_s  # a tiny kernel is launch-bound


def test_attention_memory_and_floor_are_the_profiles(h100) -> None:
    args = (2, 1024, 32, 8, 128, "bf16")
    for kw in ({}, {"kv_len": 4096}, {"backward": True}, {"causal": False, "floor": False}, {"v_head_dim": 64}):
        assert costs.attention_prefill_time(h100, *args, **kw) == h100.attention_prefill_time(*args, **kw)
    for kv in (4096, [100, 2000, 4096]):
        for kw in ({}, {"kv_dtype": "fp8"}, {"floor": False, "v_head_dim": 64}):
            got = costs.attention_decode_time(h100, 3, kv, 32, 8, 128, "bf16", **kw)
            assert got == h100.attention_decode_time(3, kv, 32, 8, 128, "bf16", **kw)
    for nbytes in (0.0, 1e3, 1e9):
        assert costs.memory_op_time(h100, nbytes) == h100.memory_op_time(nbytes)
        assert costs.memory_op_time(h100, nbytes, False) == h100.memory_op_time(nbytes, False)
        assert costs.optimizer_step_time(h100, nbytes) == h100.memory_op_time(nbytes)
    assert costs.launch_floor_s(h100, "gemm") == h100.curves["gemm"].floor_s
    assert costs.launch_floor_s(h100, "gemm", "fp8") == h100.gemm_by_dtype["fp8"].floor_s
    assert costs.launch_floor_s(h100, "membound") == h100.curves["membound"].floor_s


def test_serving_tp_all_reduce_runs_the_algorithm() -> None:
    cluster = ClusterSpec(gpu=H100, num_gpus=8, node="dgx-h100").resolve()
    plain = iteration_model("llama3-70b", H100, 8, node="dgx-h100")
    nvls = iteration_model("llama3-70b", H100, 8, node="dgx-h100", algorithm=costs.CommAlgorithm.of("nvls", cluster))
    tokens = 8192
    act = 2.0 * tokens * plain.model.hidden_size
    saved = 2 * (
        C.all_reduce_time(act, plain.tp_group) - C.all_reduce_time(act, plain.tp_group, "nvls", features={"nvls"})
    )
    assert saved > 0
    assert nvls.dense_layer_s(tokens) == pytest.approx(plain.dense_layer_s(tokens) - saved, rel=1e-12)
    assert plain.algorithm == costs.DEFAULT_ALGORITHM


def test_dp_comm_time_runs_the_algorithm() -> None:
    cluster = ClusterSpec(gpu=H100, num_gpus=64, node="dgx-h100").resolve()
    g = cluster.comm_group(64)
    spec = parse_compression({"quantize": "uniform", "bits": 8})
    n = 1e9
    assert dp_comm_time(spec, n, g) == C.all_reduce_time(n + 4.0 * -(-n // 2048), g)
    ring = costs.CommAlgorithm("ring")
    assert dp_comm_time(spec, n, g, algorithm=ring) == C.all_reduce_time(n + 4.0 * -(-n // 2048), g, "ring")
