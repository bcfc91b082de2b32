"""Shared fixtures: the shipped H100 measurement set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
H100_KERNELS = REPO / "calibration" / "data" / "h100-sxm5-80gb-kernels-2026-11-23.json"


@pytest.fixture(scope="session")
def h100_kernels() -> dict:
    return json.loads(H100_KERNELS.read_text())
