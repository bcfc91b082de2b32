"""Run config: YAML loading, --set overrides, cross-field checks with one-line messages."""

from __future__ import annotations

import pytest

from hwmodels.errors import ClusterSimError
from simulator.core.config import apply_overrides, load_config

BASE = {
    "model": "gpt3-175b",
    "cluster": {"gpu": "a100-sxm4-80gb", "num_gpus": 1024, "node": "dgx-a100"},
    "parallel": {"tp": 8, "pp": 8, "dp": 16, "sp": True},
    "training": {"seq_len": 2048, "global_batch": 1536, "micro_batch": 1},
}


def test_issue_shape_loads() -> None:
    cfg = load_config(BASE)
    assert cfg.model.name == "gpt3-175b"
    assert cfg.parallel.tp * cfg.parallel.pp * cfg.parallel.dp == cfg.cluster.num_gpus


def test_yaml_file_and_overrides(tmp_path) -> None:
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    cfg = load_config(path, ["parallel.pp=16", "parallel.dp=8", "training.precision=bf16"])
    assert cfg.parallel.pp == 16 and cfg.parallel.dp == 8


def test_switching_kind_drops_the_old_kinds_options() -> None:
    data = {"batching": {"kind": "continuous", "max_num_batched_tokens": 4096}}
    assert apply_overrides(data, ["batching.kind=chunked", "batching.token_budget=256"]) == {
        "batching": {"kind": "chunked", "token_budget": 256}
    }
    assert apply_overrides(data, ["batching.kind=continuous"]) == data


def test_overrides_create_sections_and_parse_yaml_scalars() -> None:
    out = apply_overrides({"a": {"b": 1}}, ["a.c=true", "d.e=2.5", "f=x"])
    assert out == {"a": {"b": 1, "c": True}, "d": {"e": 2.5}, "f": "x"}


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["parallel.dp=15"], "must equal cluster.num_gpus=1024"),
        (
            ["parallel.tp=5", "parallel.dp=1", "cluster.num_gpus=40", "cluster.node=null"],
            "tp=5 does not divide",
        ),
        (["parallel.pp=128", "parallel.dp=1", "cluster.num_gpus=1024"], "num_layers=96 cannot be split"),
        (["training.global_batch=1000"], "not divisible by micro_batch*dp"),
        (["training.precision=fp8"], "a100-sxm4-80gb lacks"),
        (["cluster.gpu=b300"], "unknown GPU 'b300'"),
        (["model=gpt-7"], "unknown model preset"),
        (["parallel.tpp=8"], "parallel.tpp: unknown key"),
        (["parallel.tp=-1"], "parallel.tp"),
        (["parallel.vpp=2"], "needs parallel.schedule=interleaved"),
        (["parallel.ep=2"], "parallel.ep=2 must divide the model's routed experts (0)"),
    ],
)
def test_bad_configs_give_one_line_errors(overrides, needle) -> None:
    with pytest.raises(ClusterSimError) as info:
        load_config(BASE, overrides)
    msg = str(info.value)
    assert needle in msg and "\n" not in msg


def test_bad_override_syntax_and_files(tmp_path) -> None:
    with pytest.raises(ClusterSimError, match="key=value"):
        load_config(BASE, ["parallel.tp"])
    with pytest.raises(ClusterSimError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ClusterSimError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ClusterSimError, match="mapping"):
        load_config(scalar)
