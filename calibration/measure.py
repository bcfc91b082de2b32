"""Measure kernels on a device with PyTorch, in the schema of calibration/data/*-kernels-*.json.

GEMMs (y = x @ W.T, as nn.Linear) rotate through enough weight copies to keep them out of L2;
every op is timed with CUDA events (perf_counter on the CPU) after a warm-up, and the median of
several timed blocks is kept. Results accumulate in a raw file that is rewritten atomically after
every measurement, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from hwmodels.fileio import atomic_write

SECTIONS = ("gemm", "attn_prefill", "attn_decode", "membw", "h2d", "launch", "nccl", "power")


def grids(quick: bool, device: str) -> dict[str, list]:
    """The measurement grids: small on the CPU (tests), a few hundred points quick, more in full."""
    if device == "cpu":
        return {
            "gemm": [(m, n, k, dt) for m in (1, 16, 64) for n, k in ((64, 64), (128, 64)) for dt in ("float32",)],
            "attn_prefill": [(1, 2, 2, 64, 16), (1, 2, 1, 128, 16)],
            "attn_decode": [(1, 2, 2, 64, 16), (2, 2, 1, 128, 16)],
            "membw": [(op, 1 << 16) for op in ("d2d_copy", "add", "rms_norm")],
            "h2d": [],
        }
    ms = (
        (1, 16, 64, 256, 1024, 4096, 16384)
        if quick
        else (1, 2, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
    )
    nks = ((1024, 1024), (4096, 4096), (8192, 8192), (14336, 4096), (4096, 14336))
    if not quick:
        nks += ((1024, 4096), (6144, 4096), (28672, 8192), (8192, 28672), (2048, 2048), (16384, 16384))
    dtypes = ("bfloat16", "float16", "float32") + (("float8_e4m3fn",) if _has_fp8(device) else ())
    gemm = [(m, n, k, dt) for dt in dtypes for n, k in nks for m in ms if not (dt == "float32" and m < 512)]
    seqs = (512, 2048, 8192) if quick else (512, 1024, 2048, 4096, 8192, 16384)
    attn = [(b, h, kvh, s, 128) for s in seqs for b in (1, 4) for h, kvh in ((32, 32), (32, 8), (64, 8))]
    dec = [(b, 32, kvh, L, 128) for b in (1, 8, 32, 128) for kvh in (32, 8) for L in (512, 2048, 8192)]
    mem = [(op, 1 << p) for op in ("d2d_copy", "add", "rms_norm") for p in (20, 24, 26, 28, 30)]
    h2d = [1 << p for p in (20, 24, 27, 30)]
    return {"gemm": gemm, "attn_prefill": attn, "attn_decode": dec, "membw": mem, "h2d": h2d}


def _has_fp8(device: str) -> bool:
    if not device.startswith("cuda") or not hasattr(torch, "float8_e4m3fn"):
        return False
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    return major >= 9 and hasattr(torch, "_scaled_mm")


class Timer:
    """Median time of a callable, with CUDA events on a GPU and perf_counter on the CPU."""

    def __init__(self, device: str, min_block_s: float = 0.02, blocks: int = 5) -> None:
        self.device = device
        self.cuda = device.startswith("cuda")
        self.min_block_s = min_block_s
        self.blocks = blocks

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def __call__(self, fn: Callable[[int], Any]) -> tuple[float, int]:
        """Seconds per call of ``fn(i)`` and the number of calls per timed block."""
        for i in range(3):
            fn(i)
        self._sync()
        t0 = time.perf_counter()
        fn(0)
        self._sync()
        one = max(time.perf_counter() - t0, 1e-6)
        iters = max(1, min(1000, int(self.min_block_s / one)))
        samples = []
        for _ in range(self.blocks):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for i in range(iters):
                    fn(i)
                end.record()
                torch.cuda.synchronize(self.device)
                samples.append(start.elapsed_time(end) / 1e3 / iters)
            else:
                t0 = time.perf_counter()
                for i in range(iters):
                    fn(i)
                samples.append((time.perf_counter() - t0) / iters)
        return statistics.median(samples), iters


def _l2_bytes(device: str) -> int:
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return int(getattr(props, "L2_cache_size", 50 << 20))
    return 32 << 20


class Measurer:
    """Runs the measurements into a raw dict, saving after each one so a re-run resumes."""

    def __init__(self, device: str, raw_path: str | Path, quick: bool = True) -> None:
        self.device = device
        self.quick = quick
        self.path = Path(raw_path)
        self.timer = Timer(device)
        self.raw: dict[str, Any] = self._load()
        self.raw.setdefault("meta", self._meta())
        for s in SECTIONS:
            self.raw.setdefault(s, [])

    def _load(self) -> dict[str, Any]:
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if isinstance(data, dict):
                    return data
            except json.JSONDecodeError:
                pass  # a corrupt partial file: start again
        return {}

    def _meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "torch": torch.__version__,
            "time": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            "device": self.device,
            "quick": self.quick,
        }
        if self.device.startswith("cuda"):
            props = torch.cuda.get_device_properties(torch.device(self.device))
            meta.update(
                name=props.name,
                sms=props.multi_processor_count,
                mem_gb=props.total_memory / 2**30,
                cuda=torch.version.cuda,
                cc=f"{props.major}.{props.minor}",
            )
            meta["nvml"] = nvml_snapshot(self.device)
        else:
            meta["name"] = "cpu"
        return meta

    def save(self) -> None:
        """Atomic write: temp file in the same folder, then rename."""
        atomic_write(self.path, json.dumps(self.raw, indent=1))

    def _done(self, section: str, key: dict[str, Any]) -> bool:
        return any(all(r.get(k) == v for k, v in key.items()) for r in self.raw[section])

    def _add(self, section: str, record: dict[str, Any]) -> None:
        self.raw[section].append(record)
        self.save()

    # ---- the measurements ----------------------------------------------------------------------------
    def gemm(self, m: int, n: int, k: int, dtype: str) -> None:
        """Time an (m x k) @ (k x n) GEMM in ``dtype`` (weights rotated past L2); record ms, TFLOP/s, GB/s."""
        key = {"M": m, "N": n, "K": k, "dtype": dtype}
        if self._done("gemm", key):
            return
        fp8 = dtype.startswith("float8")
        dt = torch.bfloat16 if fp8 else getattr(torch, dtype)
        copies = max(1, min(16, math.ceil(2 * _l2_bytes(self.device) / (n * k * (1 if fp8 else dt.itemsize)))))
        x = torch.randn(m, k, device=self.device, dtype=dt)
        ws = [torch.randn(n, k, device=self.device, dtype=dt) for _ in range(copies)]
        if fp8:
            x8 = x.to(torch.float8_e4m3fn)
            w8 = [w.to(torch.float8_e4m3fn) for w in ws]
            one = torch.ones((), device=self.device)

            def fn(i: int) -> Any:
                return torch._scaled_mm(x8, w8[i % copies].t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        else:

            def fn(i: int) -> Any:
                return F.linear(x, ws[i % copies])

        secs, iters = self.timer(fn)
        self._add(
            "gemm",
            {
                **key,
                "ms": secs * 1e3,
                "tflops": 2 * m * n * k / secs / 1e12,
                "gbps": (m * k + n * k + m * n) * dt.itemsize / secs / 1e9,
                "iters": iters,
            },
        )

    def attn_prefill(self, b: int, h: int, kvh: int, s: int, d: int) -> None:
        """Time causal attention forward and backward over ``s`` tokens (GQA: ``kvh`` KV heads); record ms, TFLOP/s."""
        key = {"b": b, "h": h, "kvh": kvh, "s": s, "d": d}
        if self._done("attn_prefill", key):
            return
        dt = torch.float32 if self.device == "cpu" else torch.bfloat16
        q = torch.randn(b, h, s, d, device=self.device, dtype=dt, requires_grad=True)
        kk = torch.randn(b, kvh, s, d, device=self.device, dtype=dt, requires_grad=True)
        v = torch.randn(b, kvh, s, d, device=self.device, dtype=dt, requires_grad=True)

        def fwd(_: int) -> Any:
            return _sdpa(q, kk, v, causal=True)

        secs, _ = self.timer(fwd)
        out = fwd(0)
        grad = torch.randn_like(out)

        def bwd(_: int) -> Any:
            return torch.autograd.grad(out, (q, kk, v), grad, retain_graph=True)

        bsecs, _ = self.timer(bwd)
        flops = 4 * b * h * s * s * d / 2
        self._add(
            "attn_prefill",
            {**key, "causal": True, "ms": secs * 1e3, "tflops": flops / secs / 1e12, "bwd_ms": bsecs * 1e3},
        )

    def attn_decode(self, b: int, h: int, kvh: int, L: int, d: int) -> None:  # noqa: N803
        """Time one decode step's attention against an ``L``-token KV cache; record ms and KV GB/s."""
        key = {"b": b, "h": h, "kvh": kvh, "L": L, "d": d}
        if self._done("attn_decode", key):
            return
        dt = torch.float32 if self.device == "cpu" else torch.bfloat16
        q = torch.randn(b, h, 1, d, device=self.device, dtype=dt)
        kk = torch.randn(b, kvh, L, d, device=self.device, dtype=dt)
        v = torch.randn(b, kvh, L, d, device=self.device, dtype=dt)
        secs, _ = self.timer(lambda _: _sdpa(q, kk, v, causal=False))
        kv_bytes = 2 * b * kvh * L * d * dt.itemsize
        self._add("attn_decode", {**key, "ms": secs * 1e3, "kv_gbps": kv_bytes / secs / 1e9})

    def membw(self, op: str, nbytes: int) -> None:
        """Time a memory-bound op (copy, add, RMSNorm) over ``nbytes``; record ms and read+write GB/s."""
        key = {"op": op, "bytes": nbytes}
        if self._done("membw", key):
            return
        a = torch.empty(nbytes // 2, device=self.device, dtype=torch.bfloat16).normal_()
        out = torch.empty_like(a)
        w = torch.ones(1024, device=self.device, dtype=a.dtype)
        fns = {
            "d2d_copy": (lambda _: out.copy_(a), 2),
            "add": (lambda _: torch.add(a, a, out=out), 3),
            "rms_norm": (lambda _: _rms_norm(a.view(-1, 1024), w), 2),
        }
        fn, factor = fns[op]
        secs, _ = self.timer(fn)
        self._add("membw", {**key, "ms": secs * 1e3, "gbps_rw": factor * nbytes / secs / 1e9})

    def h2d(self, nbytes: int) -> None:
        """Time a pinned host-to-device and device-to-host copy of ``nbytes``; record ms and GB/s each way."""
        for direction in ("h2d", "d2h"):
            key = {"dir": direction, "bytes": nbytes}
            if self._done("h2d", key):
                continue
            host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
            dev = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
            if direction == "h2d":

                def fn(_: int, d=dev, h=host) -> Any:
                    return d.copy_(h, non_blocking=True)
            else:

                def fn(_: int, d=dev, h=host) -> Any:
                    return h.copy_(d, non_blocking=True)

            secs, _ = self.timer(fn)
            self._add("h2d", {**key, "ms": secs * 1e3, "gbps": nbytes / secs / 1e9})

    def launch(self) -> None:
        """Time a one-element kernel, i.e. the launch overhead; record ms."""
        if self._done("launch", {"op": "add_1"}):
            return
        a = torch.ones(1, device=self.device)
        secs, _ = self.timer(lambda _: a.add_(0))
        self._add("launch", {"op": "add_1", "ms": secs * 1e3})

    def nccl(self) -> None:
        """All-reduce across every visible GPU from one process (torch.cuda.nccl)."""
        n = torch.cuda.device_count() if self.device.startswith("cuda") else 0
        if n < 2:
            return
        import torch.cuda.nccl as nccl

        for p in (10, 20, 26, 30):
            key = {"collective": "all_reduce", "gpus": n, "bytes": 1 << p}
            if self._done("nccl", key):
                continue
            ts = [torch.ones((1 << p) // 2, dtype=torch.bfloat16, device=f"cuda:{i}") for i in range(n)]
            secs, _ = Timer("cuda:0")(lambda _, t=ts: nccl.all_reduce(t))
            busbw = 2 * (n - 1) / n * (1 << p) / secs / 1e9
            self._add("nccl", {**key, "ms": secs * 1e3, "busbw_gbps": busbw})

    def run(self, progress: Callable[[Iterable, str, int], Iterable] | None = None) -> dict[str, Any]:
        """Measure everything not yet in the raw file."""
        g = grids(self.quick, self.device)
        wrap = progress or (lambda it, _desc, _n: it)
        jobs: list[tuple[str, Callable[[], None]]] = [("launch", self.launch)]
        jobs += [("gemm", lambda a=a: self.gemm(*a)) for a in g["gemm"]]
        jobs += [("attn_prefill", lambda a=a: self.attn_prefill(*a)) for a in g["attn_prefill"]]
        jobs += [("attn_decode", lambda a=a: self.attn_decode(*a)) for a in g["attn_decode"]]
        jobs += [("membw", lambda a=a: self.membw(*a)) for a in g["membw"]]
        if self.device.startswith("cuda"):
            jobs += [("h2d", lambda a=a: self.h2d(a)) for a in g["h2d"]]
            jobs += [("nccl", self.nccl), ("power", self.power)]
        for _name, job in wrap(jobs, "measuring", len(jobs)):
            job()
        return self.raw

    def power(self) -> None:
        """NVML energy-counter windows (>= 2 s) at idle, GEMM, copy and 50% duty. Never changes clocks."""
        if self.raw["power"]:
            return
        from calibration.power import measure_power

        for record in measure_power(self.device, seconds=2.5 if self.quick else 5.0):
            self.raw["power"].append(record)
        self.save()


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
    if q.shape[1] != k.shape[1]:  # GQA: repeat KV heads when the kernel cannot
        try:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        except TypeError:
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _rms_norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    if hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.shape[-1],), w)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * w


def nvml_snapshot(device: str) -> dict[str, Any]:
    """Power limit, clocks, temperature and driver from NVML (read-only); {} when unavailable."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(torch.device(device).index or 0)
        return {
            "power_limit_w": pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1e3,
            "power_default_limit_w": pynvml.nvmlDeviceGetPowerManagementDefaultLimit(h) / 1e3,
            "sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "max_sm_clock_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM),
            "temp_c": pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
            "power_w": pynvml.nvmlDeviceGetPowerUsage(h) / 1e3,
            "driver": pynvml.nvmlSystemGetDriverVersion(),
        }
    except Exception:  # noqa: BLE001 - NVML is optional; the measurements stand without it
        return {}
