"""NVML power windows: average power from the energy counter while a load runs (read-only).

Clocks and power limits are only read, never set.
"""

from __future__ import annotations

import time
from typing import Any

import torch


def _window(handle: Any, pynvml: Any, seconds: float, step) -> dict[str, float]:
    clocks = []
    e0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    t0 = time.perf_counter()
    calls = 0
    while time.perf_counter() - t0 < seconds:
        step()
        calls += 1
        if calls % 20 == 0:
            clocks.append(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM))
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    energy = (pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) - e0) / 1e3
    clocks.sort()
    return {
        "seconds": dt,
        "calls": calls,
        "energy_j": energy,
        "avg_power_w_counter": energy / dt,
        "sm_clock_mhz_median": float(clocks[len(clocks) // 2]) if clocks else 0.0,
    }


def measure_power(device: str, seconds: float = 5.0) -> list[dict[str, Any]]:
    """Idle, large bf16 GEMM, 1 GiB copy and 50%-duty GEMM windows of ``seconds`` each."""
    try:
        import pynvml
    except ImportError:
        return []
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(torch.device(device).index or 0)
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    big = torch.empty(1 << 29, device=device, dtype=torch.bfloat16)
    out = torch.empty_like(big)
    rows = [{"kind": "idle", **_window(h, pynvml, seconds, lambda: time.sleep(0.01))}]
    rows.append({"kind": "gemm_bf16_8192", **_window(h, pynvml, seconds, lambda: a @ a)})
    rows.append({"kind": "d2d_copy_1GiB", **_window(h, pynvml, seconds, lambda: out.copy_(big))})

    def duty() -> None:
        for _ in range(8):
            a @ a
        torch.cuda.synchronize()
        time.sleep(0.004)

    rows.append({"kind": "gemm_bf16_8192_duty50", **_window(h, pynvml, seconds, duty)})
    return rows
