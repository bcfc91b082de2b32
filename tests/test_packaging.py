"""A plain (non-editable) install works from any folder: CLI, claims, examples, bundled data, app.

Builds the wheel as `pip install .` would, installs it (without dependencies, which this environment
already has) into a folder of its own, and runs it from an empty working directory with that folder
first on the path, so nothing is read from the checkout.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, the folder it is installed in)."""
    tmp = tmp_path_factory.mktemp("pkg")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(tmp / "dist"), str(REPO)], check=True, timeout=600)
    wheel = next((tmp / "dist").glob("clustersim-*.whl"))
    site = tmp / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, timeout=300)
    return wheel, site


def _run(site: Path, cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONWARNINGS": "error::DeprecationWarning:simulator"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_wheel_holds_three_packages_and_their_data(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"simulator", "hwmodels", "calibration"}
    for data in (
        "simulator/app/main.py",
        "simulator/app/views/power.py",
        "simulator/examples/claims/C1.yaml",
        "simulator/examples/sweeps/llama3-8b-serving.yaml",
        "simulator/examples/quickstart.yaml",
        "simulator/data/carbon/synthetic_week.csv",
        "simulator/data/validation/megatron_sc21_table1.csv",
        "simulator/models/presets/llama3-8b.yaml",
        "hwmodels/data/gpus.yaml",
        "hwmodels/profiles/h100-sxm5-80gb.json",
    ):
        assert data in names, data


def test_installed_cli_works_from_an_empty_folder(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, site = installed
    assert _run(site, tmp_path, "-c", "import app").returncode != 0  # no top-level `app` package
    here = _run(site, tmp_path, "-c", "import simulator; print(simulator.__file__)")
    assert here.stdout.strip().startswith(str(site)), here.stderr
    claims = _run(site, tmp_path, "-m", "simulator", "claims", "--only", "C5")
    assert claims.returncode == 0 and "C5" in claims.stdout, claims.stderr
    train = _run(site, tmp_path, "-m", "simulator", "train", "--json")
    assert train.returncode == 0 and '"step_time_s"' in train.stdout, train.stderr
    example = _run(site, tmp_path, "-m", "simulator", "example", "serve-llama3-8b-h100.yaml")
    assert example.returncode == 0 and (tmp_path / "serve-llama3-8b-h100.yaml").is_file(), example.stderr
    serve = _run(
        site, tmp_path, "-m", "simulator", "serve", "serve-llama3-8b-h100.yaml", "--set", "workload.num_requests=50"
    )
    assert serve.returncode == 0 and "TTFT" in serve.stdout, serve.stderr


def test_readme_api_snippet_and_bundled_week(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, site = installed
    code = """
from hwmodels import ClusterSpec, collectives, load_profile
from simulator import get_model, simulate_training
from simulator.core.resources import data_path, example_path
from simulator.energy.carbon import load_intensity_series

r = simulate_training(example_path("gpt3-175b-a100.yaml"), overrides=["parallel.schedule=zero-bubble"])
assert r.step_time_s > 0
assert get_model("deepseek-v3").active_params > 3e10
assert load_profile("h100-sxm5-80gb").gemm_time(8192, 8192, 8192, "bf16") > 0
g = ClusterSpec(gpu="a100", num_gpus=64, node="dgx-a100").resolve().comm_group(8, stride=8)
assert collectives.all_reduce_time(1e9, g) > 0
assert len(load_intensity_series(data_path("carbon/synthetic_week.csv")).values) == 168
print("ok")
"""
    out = _run(site, tmp_path, "-c", code)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_installed_power_page_renders_with_its_bundled_week(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, site = installed
    code = f"""
from pathlib import Path

from streamlit.testing.v1 import AppTest

import simulator.app

main = Path(simulator.app.__file__).parent / "main.py"
assert str(main).startswith({str(site)!r}), main
at = AppTest.from_file(str(main), default_timeout=240)
at.run()
at.switch_page("views/power.py").run()
assert not at.exception, [e.value for e in at.exception]
assert not at.error, [e.value for e in at.error]
assert "synthetic week" in at.selectbox(key="pw_series").value  # the bundled series, read from the wheel
assert len(at.metric) >= 3
print("ok")
"""
    out = _run(site, tmp_path, "-c", code, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_installed_app_serves_its_health_endpoint(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, site = installed
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "app", "--headless", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline, body = time.time() + 60, ""
        while time.time() < deadline and not body:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read().decode()
            except OSError:
                time.sleep(0.5)
        assert body == "ok"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
