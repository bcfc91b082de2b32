"""Pricing: $/GPU-hour presets with sources, user price files, and the cost arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hwmodels.catalogue import get_gpu, list_gpus
from hwmodels.errors import ClusterSimError
from simulator.energy.pricing import (
    Price,
    cost_per_million_tokens,
    cost_usd,
    gpu_hour_price,
    list_price_presets,
    load_price_presets,
)


def test_instance_price_is_divided_by_its_gpus() -> None:
    p4d = gpu_hour_price("a100-sxm4-40gb", "aws-on-demand")
    assert p4d.value_usd == pytest.approx(32.7726 / 8)
    assert p4d.instance == "p4d.24xlarge" and p4d.date
    assert gpu_hour_price("t4", "aws-on-demand").value_usd == pytest.approx(0.526)  # one GPU per instance


def test_default_preset_points_at_a_sourced_price() -> None:
    h100 = gpu_hour_price("h100")
    assert h100.preset == "default"
    assert h100.value_usd == gpu_hour_price("h100-sxm5-80gb", "aws-on-demand").value_usd
    assert "via aws-on-demand" in h100.source
    h800 = gpu_hour_price("h800")
    assert h800.estimate and "estimate" in h800.source


def test_default_preset_prices_every_catalogue_gpu() -> None:
    # every simulated run gets a cost; where no list price is bundled the price says it is an estimate
    for gpu in list_gpus():
        price = gpu_hour_price(gpu.id)
        assert price.value_usd > 0
        assert price.estimate == ("estimate" in price.source), gpu.id
    assert gpu_hour_price("h200").estimate and gpu_hour_price("a100-pcie-80gb").estimate
    assert not gpu_hour_price("a100-sxm4-80gb").estimate


def test_a_gpu_no_preset_prices_asks_for_a_price(tmp_path: Path) -> None:
    from simulator.energy import pricing

    only = tmp_path / "p.yaml"
    only.write_text("presets:\n  x:\n    prices:\n      mi300x: {usd_per_gpu_hour: 1, source: s}\n")
    assert gpu_hour_price("mi300x", "x", path=only).value_usd == 1.0  # a GPU outside the catalogue, in a user file
    with pytest.raises(ClusterSimError, match="preset 'default' has no price for mi300x; use x"):
        gpu_hour_price("mi300x", path=only)
    assert pricing.cost_usd(10, gpu_hour_price("mi300x", "x", path=only)) == 10.0


def test_every_bundled_price_is_sourced_dated_and_for_a_catalogue_gpu() -> None:
    presets = list_price_presets()
    assert presets[0].name == "default"
    assert {p.name for p in presets} >= {"aws-on-demand", "gcp-on-demand", "azure-on-demand", "lambda-on-demand"}
    for preset in presets:
        assert preset.description
        for gid, price in preset.prices.items():
            assert get_gpu(gid).id == gid
            assert price.source.strip() and price.date.strip(), (preset.name, gid)
            assert 0.1 < price.value_usd < 20, (preset.name, gid)


def test_aliases_resolve() -> None:
    assert gpu_hour_price("A100", "lambda-on-demand").gpu == "a100-sxm4-80gb"
    assert gpu_hour_price("nvidia-h100-sxm5-80gb", "lambda-on-demand").value_usd == pytest.approx(2.99)


def test_lookup_errors_say_what_to_change() -> None:
    with pytest.raises(ClusterSimError, match="unknown price preset 'cheap'; choose one of: aws-on-demand"):
        gpu_hour_price("h100", "cheap")
    with pytest.raises(ClusterSimError, match="unknown GPU 'h1000'"):
        gpu_hour_price("h1000")
    with pytest.raises(ClusterSimError, match="'lambda-on-demand' has no price for t4-16gb; use aws-on-demand"):
        gpu_hour_price("t4", "lambda-on-demand")


def test_user_price_file_adds_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "prices.yaml"
    f.write_text(
        "presets:\n"
        "  mine:\n"
        "    description: our contract\n"
        "    prices:\n"
        "      h200: {usd_per_gpu_hour: 3.5, date: '2025-01', source: 'our contract'}\n"
        "      h100: {instance_usd_per_hour: 20, gpus: 8, source: 'our contract'}\n"
        "  default:\n"
        "    prices:\n"
        "      h100: {from: mine}\n"
    )
    assert gpu_hour_price("h200", "mine", path=f).value_usd == 3.5
    assert gpu_hour_price("h100", "mine", path=f).value_usd == 2.5
    assert gpu_hour_price("h100", path=f).value_usd == 2.5  # the user's default replaces the bundled one
    assert "aws-on-demand" in load_price_presets(f)  # bundled presets stay


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "presets:\n  x:\n    prices:\n      h100: {usd_per_gpu_hour: 2}\n",
            "h100-sxm5-80gb: every price needs a source",
        ),
        ("presets:\n  x:\n    prices:\n      h100: {usd_per_gpu_hour: -2, source: s}\n", "must be a non-negative"),
        ("presets:\n  x:\n    prices:\n      h100: {usd_per_gpu_hour: abc, source: s}\n", "'abc' is not a number"),
        ("presets:\n  x:\n    prices:\n      h100: {source: s}\n", "give usd_per_gpu_hour"),
        ("presets:\n  x:\n    prices:\n      h100: {instance_usd_per_hour: 8, gpus: 0, source: s}\n", "gpus=0"),
        ("presets:\n  x:\n    prices:\n      h100: {from: y}\n", "refers to preset 'y'"),
        ("prices: {}\n", "top-level 'presets'"),
        ("presets: [1\n", "not valid YAML"),
    ],
)
def test_bad_price_files_are_one_line_errors(tmp_path: Path, body: str, message: str) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(body)
    with pytest.raises(ClusterSimError, match=message) as info:
        load_price_presets(f)
    assert "\n" not in str(info.value)


def test_missing_price_file(tmp_path: Path) -> None:
    with pytest.raises(ClusterSimError, match="does not exist"):
        load_price_presets(tmp_path / "none.yaml")


def test_cost_arithmetic_by_hand() -> None:
    assert cost_usd(1000.0, 2.5) == pytest.approx(2500.0)
    assert cost_usd(1000.0, Price("h100-sxm5-80gb", "x", 2.5, "s")) == pytest.approx(2500.0)
    # 184,320 A100-hours (Llama 2 7B) at $1.79: $329,932.80; over 2T tokens that is $0.165 per million
    total = cost_usd(184_320, gpu_hour_price("a100", "lambda-on-demand"))
    assert total == pytest.approx(329_932.8)
    assert cost_per_million_tokens(total, 2e12) == pytest.approx(0.1649664)


def test_cost_errors() -> None:
    with pytest.raises(ClusterSimError, match="gpu_hours=-1"):
        cost_usd(-1, 2.0)
    with pytest.raises(ClusterSimError, match="price -2"):
        cost_usd(1, -2.0)
    with pytest.raises(ClusterSimError, match="tokens=0"):
        cost_per_million_tokens(10.0, 0)
    with pytest.raises(ClusterSimError, match="total_usd=-1"):
        cost_per_million_tokens(-1.0, 10)


@given(hours=st.floats(0, 1e7), price=st.floats(0, 100), k=st.floats(0, 10))
def test_cost_is_linear(hours: float, price: float, k: float) -> None:
    assert cost_usd(hours * k, price) == pytest.approx(k * cost_usd(hours, price), rel=1e-9, abs=1e-6)
