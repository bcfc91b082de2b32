"""Tests for the hardware catalogue: data completeness, sane figures, lookups and load-time validation."""

from __future__ import annotations

import copy
import json
import math

import pydantic
import pytest

from hwmodels import catalogue as cat
from hwmodels.catalogue import (
    PEAK_DTYPES,
    build_catalogue,
    default_node_for_gpu,
    get_gpu,
    get_link,
    get_node,
    list_gpus,
    list_links,
    list_nodes,
)
from hwmodels.errors import ClusterSimError, UnknownNameError

GPU_IDS = {
    "a100-sxm4-40gb",
    "a100-sxm4-80gb",
    "a100-pcie-80gb",
    "h100-sxm5-80gb",
    "h100-pcie-80gb",
    "h800-sxm5-80gb",
    "h200-sxm-141gb",
    "t4-16gb",
    "l4-24gb",
    "v100-sxm-32gb",
}
NUMERIC_FIELDS = (
    "memory_gb",
    "memory_bandwidth_gbps",
    "l2_mb",
    "sms",
    "base_clock_mhz",
    "boost_clock_mhz",
    "tdp_w",
    "idle_w",
    "nvlink_bandwidth_gbps",
)


def _raw() -> tuple[dict, dict, dict]:
    """Deep copies of the packaged YAML entries, for tests that break them on purpose."""
    return tuple(copy.deepcopy(cat._read(f"{k}.yaml")[k]) for k in ("gpus", "links", "nodes"))


# --- data completeness -------------------------------------------------------------------------


def test_all_gpus_load():
    assert {g.id for g in list_gpus()} == GPU_IDS


def test_every_gpu_figure_has_a_source():
    for g in list_gpus():
        assert g.sources["default"].strip()
        figures = [f for f in NUMERIC_FIELDS if getattr(g, f) is not None]
        figures += [d for d in PEAK_DTYPES if g.supports(d)]
        for field in figures:
            assert len(g.source_for(field)) > 10, (g.id, field)


def test_estimates_are_labelled_and_measured_idle_is_used():
    h100 = get_gpu("h100-sxm5-80gb")
    assert h100.idle_w == pytest.approx(73.5)
    assert "measured" in h100.source_for("idle_w")
    for g in list_gpus():
        if g.id != "h100-sxm5-80gb":
            assert "estimate" in g.source_for("idle_w"), g.id


def test_links_and_nodes_have_sources():
    for spec in [*list_links(), *list_nodes()]:
        assert spec.source.strip()
    for link in list_links():
        for field in ("bandwidth_gbps", "efficiency", "latency_us"):
            assert link.source_for(field).strip(), (link.id, field)
    for node in list_nodes():
        assert node.source_for("host_power_w") != node.source, node.id


# --- figures -----------------------------------------------------------------------------------


def test_h100_datasheet_figures():
    h100 = get_gpu("h100-sxm5-80gb")
    assert h100.peak_tflops("bf16") == 989  # dense, not the 1979 sparsity figure
    assert h100.peak_tflops("torch.bfloat16") == 989
    assert h100.peak_tflops("fp8") == 1979
    assert h100.peak_flops("bf16") == pytest.approx(989e12)
    assert h100.memory_bandwidth_gbps == 3350
    assert h100.memory_bandwidth_bytes_per_s == pytest.approx(3.35e12)
    assert h100.memory_bytes == pytest.approx(80 * 2**30)  # the marketed "80GB" is GiB
    assert (h100.sms, h100.tdp_w, h100.boost_clock_mhz, h100.nvlink_bandwidth_gbps) == (132, 700, 1980, 900)


def test_other_key_figures():
    assert get_gpu("a100-sxm4-80gb").peak_tflops("bf16") == 312
    assert get_gpu("a100-sxm4-40gb").memory_bandwidth_gbps == 1555
    assert get_gpu("h200-sxm-141gb").memory_bandwidth_gbps == 4800
    assert get_gpu("h200-sxm-141gb").memory_gb == 141
    h800 = get_gpu("h800-sxm5-80gb")
    assert h800.peak_tflops("fp64") == 1
    assert h800.nvlink_bandwidth_gbps == 400
    assert get_gpu("a100-sxm4-80gb").nvlink_bandwidth_gbps == 600
    assert get_gpu("l4-24gb").peak_tflops("fp8") == pytest.approx(242, rel=0.01)


@pytest.mark.parametrize("gpu", sorted(GPU_IDS))
def test_figures_are_self_consistent(gpu):
    g = get_gpu(gpu)
    p = g.peak_tflops
    assert p("fp16") > p("fp32") >= p("fp64")
    if g.supports("int8"):  # Volta (V100) has no INT8 tensor cores
        assert p("int8") == pytest.approx(2 * p("fp16"), rel=0.01)
    if g.supports("bf16"):
        assert p("bf16") == p("fp16")
    if g.supports("tf32"):
        assert p("tf32") == pytest.approx(p("bf16") / 2, rel=0.01)
    if g.supports("fp8"):
        assert p("fp8") == pytest.approx(2 * p("bf16"), rel=0.01)
    assert 200 <= g.memory_bandwidth_gbps <= 6000
    assert 16 <= g.memory_gb <= 200
    assert 50 <= g.tdp_w <= 1000
    assert 0 < g.idle_w < 0.25 * g.tdp_w
    assert g.base_clock_mhz < g.boost_clock_mhz <= 2100
    # peak fp16 tensor throughput cannot exceed what the SMs could do at boost clock (<= 4096 FLOP/clk/SM)
    assert p("fp16") * 1e12 <= g.sms * 4096 * g.boost_clock_mhz * 1e6 * 1.01


def test_missing_units_raise_one_line_errors():
    a100 = get_gpu("a100")
    assert not a100.supports("fp8")
    with pytest.raises(ClusterSimError, match="fp8") as exc:
        a100.peak_tflops("float8_e4m3fn")
    assert "\n" not in str(exc.value) and "bf16" in str(exc.value)

    t4 = get_gpu("t4")
    assert not t4.supports("bf16") and not t4.supports("tf32")
    assert t4.supports("fp16") and t4.peak_tflops("fp16") == 65
    with pytest.raises(ClusterSimError, match="bf16.*use precision fp16"):
        t4.peak_tflops("bfloat16")
    with pytest.raises(ClusterSimError, match="int4"):
        a100.peak_flops("int4")
    assert not a100.supports("int4")


def test_unknown_dtype_is_a_clusterim_error():
    with pytest.raises(ClusterSimError, match="unknown dtype"):
        get_gpu("h100").peak_tflops("fp7")


def test_to_row_is_flat_and_json_ready():
    row = get_gpu("t4").to_row()
    assert row["id"] == "t4-16gb" and row["bf16_tflops"] is None and row["fp16_tflops"] == 65
    assert row["int8_tops"] == 130
    for key in ("memory_gb", "memory_bandwidth_gbps", "tdp_w", "idle_w", "nvlink_bandwidth_gbps", "sms"):
        assert key in row
    assert all(not isinstance(v, (dict, list, tuple)) for v in row.values())
    json.dumps(row)


def test_specs_are_frozen_and_hashable():
    h100 = get_gpu("h100")
    with pytest.raises(pydantic.ValidationError):
        h100.tdp_w = 1
    with pytest.raises(pydantic.ValidationError):
        h100.dense_tflops.bf16 = 1
    assert {h100: 1, get_link("nvlink4"): 2, get_node("dgx-h100"): 3}[h100] == 1


# --- lookups -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "gid"),
    [
        ("h100", "h100-sxm5-80gb"),
        ("H100", "h100-sxm5-80gb"),
        ("a100", "a100-sxm4-80gb"),
        ("A100-SXM4-80GB", "a100-sxm4-80gb"),
        ("NVIDIA A100-SXM4-40GB", "a100-sxm4-40gb"),  # torch.cuda.get_device_name()
        ("NVIDIA H100 80GB HBM3", "h100-sxm5-80gb"),
        ("NVIDIA A100 80GB PCIe", "a100-pcie-80gb"),
        ("Tesla T4", "t4-16gb"),
        (" l4 ", "l4-24gb"),
        ("h800", "h800-sxm5-80gb"),
        ("H200", "h200-sxm-141gb"),
        ("h100_pcie", "h100-pcie-80gb"),
    ],
)
def test_gpu_aliases(name, gid):
    assert get_gpu(name).id == gid


def test_links_and_nodes_are_case_insensitive():
    assert get_link("NVLink3").id == "nvlink3"
    assert get_node("DGX-H100").id == "dgx-h100"


@pytest.mark.parametrize(
    ("lookup", "kind", "catalogue_ids"),
    [
        (get_gpu, "GPU", lambda: [g.id for g in list_gpus()]),
        (get_node, "node", lambda: [n.id for n in list_nodes()]),
        (get_link, "link", lambda: [k.id for k in list_links()]),
    ],
)
def test_unknown_names(lookup, kind, catalogue_ids):
    with pytest.raises(UnknownNameError) as exc:
        lookup("v100-sxm2")
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"unknown {kind} 'v100-sxm2'")
    assert all(i in msg for i in catalogue_ids())
    assert isinstance(exc.value, ClusterSimError)


def test_unknown_gpu_hint():
    with pytest.raises(UnknownNameError, match="clustersim gpus"):
        get_gpu("b200")


# --- links and nodes ---------------------------------------------------------------------------


def test_link_figures():
    for link in list_links():
        assert 0 < link.efficiency <= 1, link.id
        assert 0 < link.latency_us < 100, link.id
        assert link.bandwidth_bytes_per_s == pytest.approx(link.bandwidth_gbps * 1e9)
        assert link.effective_bandwidth_bytes_per_s == pytest.approx(link.bandwidth_gbps * 1e9 * link.efficiency)
        assert link.latency_s == pytest.approx(link.latency_us * 1e-6)
    assert get_link("ib-hdr").bandwidth_gbps == 25
    assert get_link("ib-ndr").bandwidth_gbps == 50
    assert (get_link("nvlink3").bandwidth_gbps, get_link("nvlink4").bandwidth_gbps) == (300, 450)
    assert get_link("nvlink4-h800").bandwidth_gbps == 200
    # dgx-a100 8-GPU all-reduce measured 232.5 GB/s busbw (nccl_measured.csv)
    assert get_link("nvlink3").effective_bandwidth_bytes_per_s == pytest.approx(232.5e9, rel=0.02)


def test_gpu_nvlink_total_is_twice_link_per_direction():
    for g in list_gpus():
        assert get_link(g.pcie).kind == "pcie"
        if g.nvlink is not None:
            assert g.nvlink_bandwidth_gbps == 2 * get_link(g.nvlink).bandwidth_gbps, g.id


def test_nodes_reference_existing_entries():
    for node in list_nodes():
        assert node.gpu_spec.id == node.gpu
        assert node.intra_link_spec.kind in ("nvlink", "pcie")
        assert node.nic_link_spec.kind in ("infiniband", "roce", "ethernet")
        assert node.gpus_per_node in (4, 8, 16)  # 16: DGX-2
        assert node.switched == (node.intra_link_spec.kind == "nvlink"), node.id
        assert 100 < node.host_power_w < 5000, node.id
    assert get_node("dgx-a100").host_power_w == 6500 - 8 * 400


def test_every_gpu_has_a_default_node():
    for g in list_gpus():
        node = default_node_for_gpu(g.id)
        assert node.gpu == g.id
    assert default_node_for_gpu("h100").id == "dgx-h100"
    assert default_node_for_gpu("a100-sxm4-40gb").id == "dgx-a100-40gb"


# --- load-time validation (each must reject a broken copy of the real data) --------------------


def test_real_data_builds():
    gpus, links, nodes = _raw()
    assert set(build_catalogue(gpus, links, nodes).gpus) == GPU_IDS


def check_rejects(match: str, mutate) -> None:
    gpus, links, nodes = _raw()
    mutate(gpus, links, nodes)
    with pytest.raises(ClusterSimError, match=match) as exc:
        build_catalogue(gpus, links, nodes)
    assert "\n" not in str(exc.value)


def test_rejects_missing_default_source():
    check_rejects("default", lambda g, lk, n: g["t4-16gb"]["sources"].pop("default"))


def test_rejects_unknown_source_key():
    check_rejects("bandwith", lambda g, lk, n: g["t4-16gb"]["sources"].update(bandwith="typo"))


def test_rejects_non_positive_figures():
    check_rejects("memory_gb", lambda g, lk, n: g["l4-24gb"].update(memory_gb=0))
    check_rejects("bf16", lambda g, lk, n: g["l4-24gb"]["dense_tflops"].update(bf16=-1))
    check_rejects("latency_us", lambda g, lk, n: lk["pcie4"].update(latency_us=0))


def test_rejects_missing_or_unknown_peak():
    check_rejects("fp8", lambda g, lk, n: g["l4-24gb"]["dense_tflops"].pop("fp8"))
    check_rejects("fp4", lambda g, lk, n: g["l4-24gb"]["dense_tflops"].update(fp4=1))


def test_rejects_efficiency_out_of_range():
    check_rejects("efficiency", lambda g, lk, n: lk["ib-hdr"].update(efficiency=1.07))


def test_rejects_dangling_references():
    check_rejects("v100", lambda g, lk, n: n["dgx-a100"].update(gpu="v100"))
    check_rejects("nvlink5", lambda g, lk, n: n["dgx-a100"].update(intra_link="nvlink5"))
    check_rejects("ib-xdr", lambda g, lk, n: n["dgx-h100"].update(nic_link="ib-xdr"))
    check_rejects("pcie6", lambda g, lk, n: g["h100-sxm5-80gb"].update(pcie="pcie6"))
    check_rejects("nic_link", lambda g, lk, n: n["dgx-h100"].update(nic_link="pcie5"))


def test_rejects_inconsistent_nvlink_total():
    check_rejects("nvlink_bandwidth_gbps", lambda g, lk, n: g["h800-sxm5-80gb"].update(nvlink_bandwidth_gbps=900))


def test_rejects_alias_clash():
    check_rejects("already names", lambda g, lk, n: g["h200-sxm-141gb"]["aliases"].append("H100"))


def test_packaged_catalogue_is_cached():
    assert cat.load_catalogue() is cat.load_catalogue()
    assert math.isclose(get_gpu("h100").peak_tflops("fp16"), 989)
