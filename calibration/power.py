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
    """Idle, large bf16 GEMM, 1 GiB copy, 50%-duty GEMM and skinny (M=64) GEMM windows of ``seconds`` each."""
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
    w = _window(h, pynvml, seconds, lambda: a @ a)
    rows.append({"kind": "gemm_bf16_8192", **w, "tflops": w["calls"] * 2 * 8192**3 / w["seconds"] / 1e12})
    w = _window(h, pynvml, seconds, lambda: out.copy_(big))
    rows.append({"kind": "d2d_copy_1GiB", **w, "gbps_rw": w["calls"] * 2 * big.nbytes / w["seconds"] / 1e9})

    def duty() -> None:  # GEMMs for a while, then idle for as long: a 50% duty cycle
        t0 = time.perf_counter()
        for _ in range(4):
            a @ a
        torch.cuda.synchronize()
        time.sleep(time.perf_counter() - t0)

    rows.append({"kind": "gemm_bf16_8192_duty50", "duty": 0.5, **_window(h, pynvml, seconds, duty)})
    m64 = torch.randn(64, 8192, device=device, dtype=torch.bfloat16)
    w = _window(h, pynvml, seconds, lambda: m64 @ a)
    rows.append({"kind": "gemm_bf16_m64_8192", **w, "tflops": w["calls"] * 2 * 64 * 8192**2 / w["seconds"] / 1e12})
    return rows
