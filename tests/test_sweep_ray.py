"""The Ray backend runs the same per-point function as the local one, so the frames are identical.

Ray is in the ``test`` extra, so this runs in CI; it starts one 2-CPU local Ray (a few seconds). When the
sweep itself starts, joins and shuts down Ray is checked without a real Ray in test_sweep.py.
"""

from __future__ import annotations

import pandas as pd
import pytest

from simulator.search.sweep import sweep

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[test]' (or '.[distributed]')")

BASE = {
    "model": "llama3-8b",
    "cluster": {"gpu": "h100-sxm5-80gb", "num_gpus": 8, "node": "dgx-h100"},
    "parallel": {"tp": 8, "pp": 1, "dp": "auto", "sp": True},
    "training": {"seq_len": 8192, "global_batch": 8, "micro_batch": 1},
}
SPACE = {"parallel.tp": [1, 2, 4, 8], "parallel.pp": [1, 2]}  # 7 quick plans and 1 pruned (tp*pp = 16)
SERVE = {
    "model": "llama3-8b",
    "gpu": "h100-sxm5-80gb",
    "workload": {
        "num_requests": 30,
        "arrivals": {"kind": "poisson", "rate_per_s": 8.0},
        "lengths": {"kind": "fixed", "prompt_tokens": 256, "output_tokens": 32},
    },
}


@pytest.fixture(scope="module")
def local_ray():
    """A Ray the caller started: the sweep must use it and leave it running."""
    if ray.is_initialized():  # pragma: no cover - another test module left one up
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


def test_ray_backend_matches_local_and_leaves_the_callers_ray_running(local_ray, tmp_path) -> None:
    kwargs = {"objective": "mfu", "constraints": ["fits_in_memory == True"], "progress": False}
    local = sweep(BASE, SPACE, **kwargs)
    remote = sweep(BASE, SPACE, backend="ray", cache_dir=tmp_path, **kwargs)
    pd.testing.assert_frame_equal(remote, local)
    assert remote.attrs["evaluated"] == 7 and remote.attrs["pruned"] == local.attrs["pruned"]
    assert local_ray.is_initialized()

    # results the Ray tasks cached are read back by a local rerun
    again = sweep(BASE, SPACE, cache_dir=tmp_path, **kwargs)
    assert again.attrs["cached"] == 7 and again.attrs["evaluated"] == 0
    pd.testing.assert_frame_equal(again, local)

    space = {"batching.max_num_seqs": [4, 32], "tp": [1, 2]}
    pd.testing.assert_frame_equal(
        sweep(SERVE, space, backend="ray", workers=2, progress=False), sweep(SERVE, space, progress=False)
    )
