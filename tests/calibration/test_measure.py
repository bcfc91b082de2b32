"""The measure step on the CPU with tiny shapes (torch is installed in CI), resume and the CLI."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from calibration.measure import MEM_OPS, Measurer  # noqa: E402
from simulator.cli import main  # noqa: E402


def test_cpu_measurements_have_the_shared_schema(tmp_path) -> None:
    raw = Measurer("cpu", tmp_path / "raw.json").run()
    assert {"M", "N", "K", "dtype", "ms", "tflops"} <= set(raw["gemm"][0])
    assert {"b", "h", "kvh", "s", "d", "ms", "bwd_ms"} <= set(raw["attn_prefill"][0])
    assert {"b", "h", "kvh", "L", "d", "ms"} <= set(raw["attn_decode"][0])
    assert {r["op"] for r in raw["membw"]} == set(MEM_OPS)
    assert all({"ms", "ms_iqr", "n", "moved_bytes"} <= set(r) for r in raw["membw"])
    assert all(r["ms"] > 0 for r in raw["gemm"])
    assert json.loads((tmp_path / "raw.json").read_text()) == raw  # saved as it went


def test_an_interrupted_run_resumes(tmp_path, monkeypatch) -> None:
    path = tmp_path / "raw.json"
    m = Measurer("cpu", path)
    calls = {"n": 0}
    original = Measurer.gemm

    def flaky(self, *args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(Measurer, "gemm", flaky)
    with pytest.raises(KeyboardInterrupt):
        m.run()
    kept = len(json.loads(path.read_text())["gemm"])
    assert kept == 2
    monkeypatch.setattr(Measurer, "gemm", original)
    raw = Measurer("cpu", path).run()
    keys = [(r["M"], r["N"], r["K"], r["dtype"]) for r in raw["gemm"]]
    assert len(keys) == len(set(keys)) == 6  # nothing measured twice, nothing missing


def test_calibrate_end_to_end_on_the_cpu(tmp_path, capsys) -> None:
    out = tmp_path / "cpu-smoke.json"
    # the documented smoke test: no --gpu needed, and no GPU profile comes out of CPU timings
    code = main(["calibrate", "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0 and (tmp_path / "cpu-smoke.raw.json").is_file()
    assert not out.exists() and not list(tmp_path.glob("*profile*"))  # CPU timings never become a GPU profile
    assert "CPU smoke run: no profile written" in err
    assert "held-out error" in err and "validation on a small transformer" in err
    for section in ("measurement spread", "GEMM alignment classes", "memory-bound ops", "host cost per kernel"):
        assert section in err
    assert "train_step" in err and "decode_eager" in err and "predicted" in err
    raw = json.loads((tmp_path / "cpu-smoke.raw.json").read_text())
    assert {r["kind"] for r in raw["e2e"]} == {"train_step", "prefill", "decode_eager"}
    assert len(raw["host_probe"]) >= 2 and {r["class"] for r in raw["gemm_align"]} == {"aligned", "partial", "odd"}
    assert all({"ms", "ms_iqr", "n"} <= set(r) for s in ("gemm", "gemm_align", "membw", "e2e") for r in raw[s])
    # re-fitting those CPU timings is refused with one line
    assert main(["fit", str(tmp_path / "cpu-smoke.raw.json"), "--gpu", "h100-sxm5-80gb"]) == 2
    assert "CPU timings" in capsys.readouterr().err and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_calibrate_without_a_gpu_says_so_and_exits_2(capsys) -> None:
    assert main(["calibrate"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU is visible" in err and len(err.strip().splitlines()) == 1


def test_fit_command_on_the_shared_h100_data(tmp_path, capsys) -> None:
    from tests.conftest import H100_KERNELS

    out = tmp_path / "h100.json"
    assert main(["fit", str(H100_KERNELS), "--out", str(out)]) == 0
    assert "gemm_bf16" in capsys.readouterr().out and out.is_file()
