"""Measure kernels on a device with PyTorch, in the schema of calibration/data/*-kernels-*.json.

GEMMs (y = x @ W.T, as nn.Linear) rotate through enough weight copies to keep them out of L2;
every point is timed R times (default 5 blocks, CUDA events on a GPU, perf_counter on the CPU) after a
warm-up, and its median, interquartile range and sample count are recorded (``ms``, ``ms_iqr``, ``n``);
a point whose IQR exceeds 10% of its median is re-measured once with three times the repeats. Beyond
the kernel grid: alignment-class GEMMs (aligned / 4-8-byte / odd N and K), elementwise and reduction
bandwidth from 64 KB to 1 GB, and the end-to-end steps of a small Llama-style model
(:mod:`calibration.e2e`). Results accumulate in a raw file that is rewritten atomically after every
measurement, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812

from hwmodels.fileio import atomic_write

SECTIONS = (
    "gemm",
    "gemm_align",
    "attn_prefill",
    "attn_decode",
    "membw",
    "h2d",
    "launch",
    "nccl",
    "power",
    "e2e",
    "host_probe",
)
#: Repeats per timed point, and the IQR / median above which a point is re-measured once with 3x repeats.
REPEATS = 5
MAX_SPREAD = 0.10
RETRY_FACTOR = 3

#: Memory-bound ops: (bytes moved per byte of the input buffer). ``bytes`` in a record is the input buffer.
MEM_OPS: dict[str, float] = {
    "d2d_copy": 2.0,  # read + write
    "add": 3.0,  # a + b -> out, three distinct buffers
    "mul": 3.0,
    "cast_bf16_fp32": 3.0,  # read bf16, write fp32 (twice the bytes)
    "cast_fp32_bf16": 1.5,  # read fp32, write bf16 (half the bytes)
    "sum": 1.0,  # rows of 1024 reduced: read once, a 1/1024 write
    "mean": 1.0,
    "rms_norm": 2.0,  # fused norm: read + write (not a pure stream: reported, not fitted)
}


def grids(quick: bool, device: str) -> dict[str, list]:
    """The measurement grids: small on the CPU (tests), a few hundred points quick, more in full."""
    if device == "cpu":
        return {
            "gemm": [(m, n, k, dt) for m in (1, 16, 64) for n, k in ((64, 64), (128, 64)) for dt in ("float32",)],
            "gemm_align": alignment_grid(16, 64, 256, "bfloat16"),
            "attn_prefill": [(1, 2, 2, 64, 16), (1, 2, 1, 128, 16)],
            "attn_decode": [(1, 2, 2, 64, 16), (2, 2, 1, 128, 16)],
            "membw": [(op, 1 << p) for op in MEM_OPS for p in (16, 18)],
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
    sizes = (16, 20, 24, 28, 30) if quick else (16, 18, 20, 22, 24, 26, 28, 30)  # 64 KB .. 1 GB
    mem = [(op, 1 << p) for op in MEM_OPS for p in sizes]
    h2d = [1 << p for p in (20, 24, 27, 30)]
    align = alignment_grid(8192, 4096, 50304, "bfloat16")
    return {"gemm": gemm, "gemm_align": align, "attn_prefill": attn, "attn_decode": dec, "membw": mem, "h2d": h2d}


def alignment_grid(m: int, k: int, vocab: int, dtype: str) -> list[tuple[int, int, int, str, str, str]]:
    """GEMMs at aligned and misaligned N and K: (M, N, K, dtype, class, group of the aligned neighbour).

    Three families, each an aligned shape and 8-byte, 4-byte and odd neighbours (bf16 counts): N of an LM
    head (``vocab``: GPT-2's 50,304 / 50,260 / 50,258 / 50,257, K=768 for k=4096), N of a square GEMM
    (n-4, n-2, n-1), and K of a square GEMM.
    """
    head_k = max(64, k * 3 // 16)  # 768 for k=4096
    square = ((0, "aligned"), (4, "partial"), (2, "partial"), (1, "odd"))
    head = ((0, "aligned"), (44, "partial"), (46, "partial"), (47, "odd"))  # 50,304 -> 50,260 / 50,258 / 50,257
    families = [("head_n", m, vocab, head_k, "N", head), ("square_n", m, k, k, "N", square)]
    families.append(("square_k", m, k, k, "K", square))
    out = []
    for group, mm, n, kk, dim, deltas in families:
        for delta, cls in deltas:
            shape = (mm, n - delta, kk) if dim == "N" else (mm, n, kk - delta)
            out.append((*shape, dtype, cls, group))
    return out


def _has_fp8(device: str) -> bool:
    if not device.startswith("cuda") or not hasattr(torch, "float8_e4m3fn"):
        return False
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    return major >= 9 and hasattr(torch, "_scaled_mm")


@dataclass(frozen=True)
class Timing:
    """One timed point: median and interquartile range of ``n`` timed blocks of ``iters`` calls each."""

    seconds: float
    iqr_s: float
    n: int
    iters: int
    remeasured: bool = False

    @property
    def spread(self) -> float:
        """IQR over median (0 for a single sample)."""
        return self.iqr_s / self.seconds if self.seconds > 0 else 0.0

    def fields(self, prefix: str = "ms") -> dict[str, Any]:
        """The record fields: ``ms``, ``ms_iqr``, ``n`` (``bwd_ms``, ``bwd_ms_iqr``, ``bwd_n`` for prefix bwd_ms)."""
        n_key = "n" if prefix == "ms" else prefix.removesuffix("ms") + "n"
        out = {prefix: self.seconds * 1e3, f"{prefix}_iqr": self.iqr_s * 1e3, n_key: self.n}
        if self.remeasured:
            out[prefix.removesuffix("ms") + "remeasured"] = True
        return out


def median_iqr(samples: list[float]) -> tuple[float, float]:
    """Median and interquartile range (inclusive quartiles) of ``samples``."""
    if len(samples) < 2:
        return (samples[0] if samples else 0.0), 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return statistics.median(samples), q3 - q1


class Timer:
    """Median and spread of a callable's time, with CUDA events on a GPU and perf_counter on the CPU.

    ``repeats`` timed blocks after a warm-up; when their IQR exceeds ``max_spread`` of the median the
    point is measured once more with ``retry_factor`` times the blocks, and that larger sample is kept.
    """

    def __init__(
        self,
        device: str,
        min_block_s: float = 0.02,
        repeats: int = REPEATS,
        max_spread: float = MAX_SPREAD,
        retry_factor: int = RETRY_FACTOR,
    ) -> None:
        self.device = device
        self.cuda = device.startswith("cuda")
        self.min_block_s = min_block_s
        self.repeats = repeats
        self.max_spread = max_spread
        self.retry_factor = retry_factor

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def _block(self, fn: Callable[[int], Any], iters: int) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for i in range(iters):
                fn(i)
            end.record()
            torch.cuda.synchronize(self.device)
            return start.elapsed_time(end) / 1e3 / iters
        t0 = time.perf_counter()
        for i in range(iters):
            fn(i)
        return (time.perf_counter() - t0) / iters

    def __call__(self, fn: Callable[[int], Any]) -> Timing:
        """Time ``fn(i)``: warm-up, then ``repeats`` blocks (re-measured once if their spread is too wide)."""
        for i in range(3):
            fn(i)
        self._sync()
        t0 = time.perf_counter()
        fn(0)
        self._sync()
        one = max(time.perf_counter() - t0, 1e-6)
        iters = max(1, min(1000, int(self.min_block_s / one)))
        samples = [self._block(fn, iters) for _ in range(self.repeats)]
        med, iqr = median_iqr(samples)
        if med > 0 and iqr / med > self.max_spread:
            samples = [self._block(fn, iters) for _ in range(self.repeats * self.retry_factor)]
            med, iqr = median_iqr(samples)
            return Timing(med, iqr, len(samples), iters, remeasured=True)
        return Timing(med, iqr, len(samples), iters)


def _l2_bytes(device: str) -> int:
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return int(getattr(props, "L2_cache_size", 50 << 20))
    return 32 << 20


class Measurer:
    """Runs the measurements into a raw dict, saving after each one so a re-run resumes."""

    def __init__(
        self, device: str, raw_path: str | Path, quick: bool = True, e2e_shape: Any = None, repeats: int | None = None
    ) -> None:
        self.device = device
        self.quick = quick
        self.path = Path(raw_path)
        cuda = device.startswith("cuda")
        # a CPU smoke run times short blocks and fewer repeats: every path runs, in seconds, measuring nothing
        reps = repeats or (REPEATS if cuda else 3)
        self.timer = Timer(device, min_block_s=0.02 if cuda else 0.002, repeats=reps, retry_factor=RETRY_FACTOR)
        self.e2e_shape = e2e_shape
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
    def _gemm_fn(self, m: int, n: int, k: int, dtype: str) -> tuple[Callable[[int], Any], int]:
        """A GEMM callable rotating weight copies past L2, and the element size of its inputs."""
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

            return fn, 1

        def linear(i: int) -> Any:
            return F.linear(x, ws[i % copies])

        return linear, dt.itemsize

    def _gemm_record(self, m: int, n: int, k: int, dtype: str) -> dict[str, Any]:
        fn, size = self._gemm_fn(m, n, k, dtype)
        t = self.timer(fn)
        return {
            **t.fields(),
            "tflops": 2 * m * n * k / t.seconds / 1e12,
            "gbps": (m * k + n * k + m * n) * size / t.seconds / 1e9,
            "iters": t.iters,
        }

    def gemm(self, m: int, n: int, k: int, dtype: str) -> None:
        """Time an (m x k) @ (k x n) GEMM in ``dtype`` (weights rotated past L2); record ms, TFLOP/s, GB/s."""
        key = {"M": m, "N": n, "K": k, "dtype": dtype}
        if not self._done("gemm", key):
            self._add("gemm", {**key, **self._gemm_record(m, n, k, dtype)})

    def gemm_align(self, m: int, n: int, k: int, dtype: str, cls: str, group: str) -> None:
        """Time a GEMM of one alignment class (``aligned``/``partial``/``odd``) beside its aligned neighbour."""
        key = {"M": m, "N": n, "K": k, "dtype": dtype, "group": group}
        if not self._done("gemm_align", key):
            self._add("gemm_align", {**key, "class": cls, **self._gemm_record(m, n, k, dtype)})

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

        t = self.timer(fwd)
        out = fwd(0)
        grad = torch.randn_like(out)

        def bwd(_: int) -> Any:
            return torch.autograd.grad(out, (q, kk, v), grad, retain_graph=True)

        tb = self.timer(bwd)
        flops = 4 * b * h * s * s * d / 2
        self._add(
            "attn_prefill",
            {**key, "causal": True, **t.fields(), "tflops": flops / t.seconds / 1e12, **tb.fields("bwd_ms")},
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
        t = self.timer(lambda _: _sdpa(q, kk, v, causal=False))
        kv_bytes = 2 * b * kvh * L * d * dt.itemsize
        self._add("attn_decode", {**key, **t.fields(), "kv_gbps": kv_bytes / t.seconds / 1e9})

    def membw(self, op: str, nbytes: int) -> None:
        """Time a memory-bound op (:data:`MEM_OPS`) on an ``nbytes`` input; record ms and read+write GB/s."""
        key = {"op": op, "bytes": nbytes}
        if self._done("membw", key):
            return
        fn = _mem_op(op, nbytes, self.device)
        t = self.timer(fn)
        moved = MEM_OPS[op] * nbytes
        rec = {**key, **t.fields(), "moved_bytes": moved, "gbps_rw": moved / t.seconds / 1e9}
        self._add("membw", rec)

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

            t = self.timer(fn)
            self._add("h2d", {**key, **t.fields(), "gbps": nbytes / t.seconds / 1e9})

    def launch(self) -> None:
        """Time a one-element kernel, i.e. the launch overhead; record ms."""
        if self._done("launch", {"op": "add_1"}):
            return
        a = torch.ones(1, device=self.device)
        t = self.timer(lambda _: a.add_(0))
        self._add("launch", {"op": "add_1", **t.fields()})

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
            t = Timer("cuda:0")(lambda _, t=ts: nccl.all_reduce(t))
            busbw = 2 * (n - 1) / n * (1 << p) / t.seconds / 1e9
            self._add("nccl", {**key, **t.fields(), "busbw_gbps": busbw})

    def e2e(self, shape: Any) -> None:
        """Time the end-to-end steps of the Llama-style model of ``shape`` (train, prefill, decode)."""
        from calibration.e2e import measure_steps

        key = {"shape": shape.as_dict()}
        if self._done("e2e", key):
            return
        for rec in measure_steps(shape, self.device, self.timer):
            self.raw["e2e"].append({**key, **rec})
        self.save()

    def host_probe(self, shape: Any) -> None:
        """Time a training step of a tiny (launch-bound) model and count its kernels (host cost per kernel)."""
        from calibration.e2e import measure_host_probe

        key = {"shape": shape.as_dict()}
        if not self._done("host_probe", key):
            self._add("host_probe", {**key, **measure_host_probe(shape, self.device, self.timer)})

    def run(self, progress: Callable[[Iterable, str, int], Iterable] | None = None) -> dict[str, Any]:
        """Measure everything not yet in the raw file."""
        wrap = progress or (lambda it, _desc, _n: it)
        jobs = self.jobs()
        for _name, job in wrap(jobs, "measuring", len(jobs)):
            job()
        return self.raw

    def jobs(self) -> list[tuple[str, Callable[[], None]]]:
        """Every measurement of this device's grids, in order: (section, job)."""
        from calibration.e2e import host_probe_shapes

        g = grids(self.quick, self.device)
        jobs: list[tuple[str, Callable[[], None]]] = [("launch", self.launch)]
        jobs += [("gemm", lambda a=a: self.gemm(*a)) for a in g["gemm"]]
        jobs += [("gemm_align", lambda a=a: self.gemm_align(*a)) for a in g["gemm_align"]]
        jobs += [("attn_prefill", lambda a=a: self.attn_prefill(*a)) for a in g["attn_prefill"]]
        jobs += [("attn_decode", lambda a=a: self.attn_decode(*a)) for a in g["attn_decode"]]
        jobs += [("membw", lambda a=a: self.membw(*a)) for a in g["membw"]]
        if self.e2e_shape is not None:  # the stack: launch-bound tiny steps, then the model's own steps
            jobs += [("host_probe", lambda s=s: self.host_probe(s)) for s in host_probe_shapes(self.device)]
            jobs.append(("e2e", lambda: self.e2e(self.e2e_shape)))
        if self.device.startswith("cuda"):
            jobs += [("h2d", lambda a=a: self.h2d(a)) for a in g["h2d"]]
            jobs += [("nccl", self.nccl), ("power", self.power)]
        return jobs

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


def _mem_op(op: str, nbytes: int, device: str) -> Callable[[int], Any]:
    """A callable running memory-bound ``op`` on an ``nbytes`` input buffer (bf16, or fp32 for the fp32 cast)."""
    src_dt = torch.float32 if op == "cast_fp32_bf16" else torch.bfloat16
    a = torch.empty(nbytes // src_dt.itemsize, device=device, dtype=src_dt).normal_()
    if op == "cast_fp32_bf16":
        return lambda _: a.to(torch.bfloat16)
    if op == "cast_bf16_fp32":
        return lambda _: a.to(torch.float32)
    rows = a.view(-1, min(1024, a.numel()))
    if op in ("sum", "mean"):
        return (lambda _: rows.sum(-1)) if op == "sum" else (lambda _: rows.mean(-1))
    out = torch.empty_like(a)
    if op == "d2d_copy":
        return lambda _: out.copy_(a)
    if op == "rms_norm":
        w = torch.ones(rows.shape[-1], device=device, dtype=a.dtype)
        return lambda _: _rms_norm(rows, w)
    b = torch.empty_like(a).normal_()
    return (lambda _: torch.add(a, b, out=out)) if op == "add" else (lambda _: torch.mul(a, b, out=out))


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
