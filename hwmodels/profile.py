"""Kernel cost model: roofline x efficiency curves, held in a per-GPU profile.

A profile holds the few parameters that turn a kernel's FLOPs and bytes into seconds. The
datasheet profile is built from the catalogue's peaks plus global default curves; calibration
(``clustersim calibrate``) fits the same parameters to measurements of a real GPU.

Time of one kernel::

    t_ideal   = max(flops / peak, bytes / bandwidth)             (the roofline)
    fill      = t_ideal / (t_ideal + half_sat_s)                  (small problems under-fill the GPU)
    t_device  = max(flops / (peak * eff_max * fill), bytes / (bandwidth * mem_eff * fill))
    t         = max(floor_s, t_device)

``floor_s`` is the host issue floor: PyTorch launches kernels asynchronously, so the host's
per-kernel cost overlaps device work and a stream of kernels runs at whichever is slower.

GEMMs also pay for their shape (:mod:`hwmodels.gemm_shapes`, docs/research/gemm-shape-effects.md): the
compute term is divided by the alignment class of N and K times the tile/wave quantisation of M x N over
the SMs (relative to the level the fitted curve already holds), and FP8 GEMMs follow the FP8 rules
(K, N % 16 or the bf16 path; a quantisation pass over the operands).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hwmodels.catalogue import get_gpu, get_link
from hwmodels.checks import check_count
from hwmodels.dtypes import DTYPES, bytes_per_element, normalize_dtype
from hwmodels.errors import ClusterSimError, first_validation_error, short
from hwmodels.fileio import atomic_write, read_regular_file
from hwmodels.gemm_shapes import Fp8Rules, GemmTiling, reference_efficiency, reference_shapes

PROFILE_SCHEMA_VERSION = 1
#: Largest profile file read (a fitted profile is ~50 KB); listed with the other caps in simulator.core.limits.
MAX_PROFILE_BYTES = 16 * 2**20


class Curve(BaseModel):
    """Efficiency curve of one kernel family (see module docstring for the formula)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    eff_max: float = Field(gt=0, le=1, description="fraction of the dtype's dense peak reached by large problems")
    half_sat_s: float = Field(ge=0, description="ideal (at-peak) time at which efficiency is half of eff_max")
    mem_eff: float = Field(gt=0, le=1, description="fraction of HBM bandwidth reached when memory-bound")
    floor_s: float = Field(ge=0, description="host issue floor: a kernel never costs less than this")
    source: str = ""

    def time(
        self,
        flops: float,
        nbytes: float,
        peak_flops: float,
        bw_bytes_s: float,
        floor: bool = True,
        *,
        clock_ratio: float = 1.0,
        clock_eff: float = 1.0,
        compute_eff: float = 1.0,
        clock_share: float = 0.0,
    ) -> float:
        """Seconds for a kernel of ``flops`` and ``nbytes`` on a device with these peaks.

        Below the maximum SM clock (``clock_ratio`` = f / f_max < 1) compute work is also bounded
        by ``clock_eff`` of the clock-scaled peak: a large GEMM that reaches ``eff_max`` of peak at
        full clock loses nothing until ``f / f_max < eff_max / clock_eff`` and then slows as 1/f.
        With a fitted ``clock_share`` (the share of a compute-bound kernel's time at full clock that is
        SM cycles; the rest, memory and latency stalls, does not scale with the clock) it slows smoothly
        before that: its time is ``clock_share / r + 1 - clock_share`` of the full-clock time
        (:func:`clock_efficiency`).
        Memory-bound work does not depend on the SM clock. ``compute_eff`` scales the compute
        throughput of a kernel that cannot take the fastest path (a misaligned GEMM).
        """
        t_ideal = max(flops / peak_flops, nbytes / bw_bytes_s)
        if t_ideal <= 0.0:
            return self.floor_s if floor else 0.0
        fill = t_ideal / (t_ideal + self.half_sat_s)
        t_comp = flops / (
            peak_flops * clock_efficiency(self.eff_max, clock_ratio, clock_eff, clock_share) * compute_eff
        )
        t_dev = max(t_comp, nbytes / (bw_bytes_s * self.mem_eff)) / fill
        return max(self.floor_s, t_dev) if floor else t_dev


def clock_efficiency(eff_max: float, clock_ratio: float, clock_eff: float, clock_share: float = 0.0) -> float:
    """Share of peak a compute-bound kernel reaching ``eff_max`` at full clock reaches at ``clock_ratio`` = f/f_max:
    ``eff_max / (clock_share / r + 1 - clock_share)`` (SM cycles scale with 1/f, stalls do not), never above
    ``clock_eff`` of the clock-scaled peak. ``clock_share = 0`` is the step model: no loss until that cap binds."""
    r = clock_ratio
    if r >= 1.0:
        return min(eff_max, clock_eff)
    return min(eff_max / (clock_share / r + 1.0 - clock_share), clock_eff * r)


class GemmAlignment(BaseModel):
    """Compute efficiency of GEMMs whose contiguous dimensions are not 16-byte aligned.

    cuBLAS/CUTLASS pick their fastest Tensor Core kernels (on Hopper, TMA loads) only when the
    contiguous dimensions of the operands are multiples of 16 bytes (8 bf16 elements); otherwise they
    fall back to kernels with 8/4-byte (``partial``) or 2-byte (``odd``) vector loads.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    partial: float = Field(default=0.7, gt=0, le=1, description="dimensions 4- or 8-byte aligned, not 16")
    odd: float = Field(default=0.4, gt=0, le=1, description="a dimension only 1- or 2-byte aligned (odd count)")
    source: str = ""

    def efficiency(self, dims: tuple[int, ...], element_bytes: float) -> float:
        """The factor for a GEMM whose contiguous dimensions are ``dims`` elements of ``element_bytes``."""
        worst = 1.0
        for d in dims:
            nbytes = d * element_bytes
            if nbytes % 16 == 0:
                continue
            worst = min(worst, self.partial if nbytes % 4 == 0 else self.odd)
        return worst


class PowerParams(BaseModel):
    """GPU power model parameters (see :mod:`hwmodels.power` for the formula)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    idle_w: float = Field(gt=0, description="board power with nothing running, clocks idle")
    active_idle_w: float = Field(gt=0, description="board power between kernels, clocks up (just after load)")
    sm_active_w: float = Field(default=0.0, ge=0, description="extra power while any kernel runs, at max clock")
    compute_dynamic_w: float = Field(ge=0, description="power of the math units at full utilisation, at max clock")
    memory_dynamic_w: float = Field(ge=0, description="power above active idle at full HBM bandwidth")
    power_limit_w: float = Field(gt=0)
    max_sm_clock_mhz: float = Field(gt=0)
    min_sm_clock_mhz: float | None = Field(default=None, gt=0, description="lowest clock DVFS sweeps consider")
    clock_power_exponent: float = Field(default=3.0, gt=0, description="SM power ~ f^k at fixed work rate")
    clock_limited_eff: float = Field(
        default=0.98, gt=0, le=1, description="fraction of the clock-scaled peak compute reaches when the clock binds"
    )
    clock_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of a large GEMM's time at max clock that is SM cycles (scales as 1/f below it); fitted "
        "from a GEMM throttled by the power limit against the same GEMM at full clock; 0 = no measurement: "
        "compute keeps its speed until the clock-scaled peak binds",
    )
    source: str = ""

    @property
    def lowest_clock_mhz(self) -> float:
        """Lowest SM clock (MHz) DVFS sweeps consider: the profile's, else 40% of the max clock."""
        return self.min_sm_clock_mhz or 0.4 * self.max_sm_clock_mhz


Family = Literal["gemm", "attn_fwd", "attn_bwd", "attn_decode", "membound"]


class Profile(BaseModel):
    """Everything the cost model knows about one GPU: peaks, efficiency curves, power."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    schema_version: int = PROFILE_SCHEMA_VERSION
    gpu: str
    kind: Literal["datasheet", "calibrated"] = "datasheet"
    source: str
    peak_tflops: dict[str, float]
    memory_bandwidth_gbps: float = Field(gt=0)
    host_link_gbps: float = Field(gt=0, description="achievable pinned host<->device bandwidth per direction")
    iteration_overhead_s: float = Field(
        default=0.0, ge=0, description="serving engine CPU time per iteration (scheduling, sampling, I/O)"
    )
    curves: dict[str, Curve]
    gemm_by_dtype: dict[str, Curve] = Field(default_factory=dict, description="per-dtype GEMM overrides")
    gemm_alignment: GemmAlignment = Field(
        default_factory=GemmAlignment, description="compute efficiency of GEMMs with misaligned dimensions"
    )
    gemm_tiling: GemmTiling = Field(
        default_factory=GemmTiling, description="output-tile and wave quantisation of GEMMs over the SMs"
    )
    fp8: Fp8Rules = Field(default_factory=Fp8Rules, description="FP8 GEMM divisibility rule and scaling cost")
    host_s_per_kernel: float | None = Field(
        default=None, ge=0, description="measured eager host cost per launched kernel (calibration's e2e step fit)"
    )
    power: PowerParams
    meta: dict[str, object] = Field(default_factory=dict, description="provenance: driver, date, fit errors")
    # run settings, not measurements: the operating point a simulation asks for
    clock_ratio: float = Field(default=1.0, gt=0, le=1, description="SM clock / max SM clock (DVFS, power cap)")
    sm_fraction: float = Field(
        default=1.0, gt=0, le=1, description="share of SMs compute kernels get (the rest run communication kernels)"
    )

    @model_validator(mode="before")
    @classmethod
    def _shape_defaults(cls, data: object) -> object:
        """Profiles written before GEMM tiling / FP8 rules existed get this GPU's defaults (not the bare ones)."""
        if isinstance(data, dict) and isinstance(data.get("gpu"), str):
            missing = {k for k in ("gemm_tiling", "fp8") if k not in data}
            if missing:
                defaults = _shape_defaults_for(data["gpu"])
                data = {**data, **{k: defaults[k] for k in missing}}
        return data

    # ---- helpers -------------------------------------------------------------------------
    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s for ``dtype``; a one-line error if this GPU has no such unit."""
        key = normalize_dtype(dtype)
        peak = self.peak_tflops.get(key)
        if not peak:
            have = ", ".join(k for k, v in self.peak_tflops.items() if v)
            raise ClusterSimError(f"{self.gpu} has no {key} units; use one of: {have}")
        return peak * 1e12

    @property
    def bandwidth_bytes_s(self) -> float:
        """HBM bandwidth, bytes/s."""
        return self.memory_bandwidth_gbps * 1e9

    @property
    def sm_clock_mhz(self) -> float:
        """SM clock this profile runs at (MHz): the clock ratio times the max clock."""
        return self.clock_ratio * self.power.max_sm_clock_mhz

    def at(self, *, sm_clock_mhz: float | None = None, sm_fraction: float | None = None) -> Profile:
        """This GPU run at a (lower) SM clock and/or with some SMs given to communication kernels."""
        update: dict[str, float] = {}
        if sm_clock_mhz is not None:
            if sm_clock_mhz <= 0:
                raise ClusterSimError(f"sm_clock_mhz must be > 0, got {sm_clock_mhz}")
            update["clock_ratio"] = min(1.0, sm_clock_mhz / self.power.max_sm_clock_mhz)
        if sm_fraction is not None:
            update["sm_fraction"] = sm_fraction
        return self.model_copy(update=update) if update else self

    def _time(
        self, curve: Curve, flops: float, nbytes: float, dtype: str, floor: bool, compute_eff: float = 1.0
    ) -> float:
        return curve.time(
            flops,
            nbytes,
            self.peak_flops(dtype) * self.sm_fraction,
            self.bandwidth_bytes_s,
            floor,
            clock_ratio=self.clock_ratio,
            clock_eff=self.power.clock_limited_eff,
            compute_eff=compute_eff,
            clock_share=self.power.clock_share,
        )

    def alignment_efficiency(self, N: int, K: int, dtype: str = "bf16") -> float:
        """Compute efficiency of ``y[M,N] = x[M,K] @ W[N,K].T`` from its contiguous dimensions N and K.

        The row count M is not a contiguous dimension of any operand, so it never misaligns the kernel.
        """
        return self.gemm_alignment.efficiency((N, K), bytes_per_element(dtype))

    @property
    def sm_count(self) -> int | None:
        """SMs compute kernels get: the profile's (else the catalogue's) count times ``sm_fraction``."""
        sms = self.gemm_tiling.sms or _catalogue_sms(self.gpu)
        return max(1, int(sms * self.sm_fraction)) if sms else None

    def wave_factor(self, M: int, N: int) -> float:  # noqa: N803
        """Tile/wave quantisation factor of ``y[M,N]`` relative to the fitted curve (1.0: as calibrated)."""
        sms = self.sm_count
        return self.gemm_tiling.factor(M, N, sms) if sms else 1.0

    def gemm_shape_efficiency(self, M: int, N: int, K: int, dtype: str = "bf16") -> float:  # noqa: N803
        """Compute efficiency of ``y[M,N] = x[M,K] @ W[N,K].T`` from its shape: alignment x wave quantisation."""
        return self.alignment_efficiency(N, K, dtype) * self.wave_factor(M, N)

    def curve(self, family: Family, dtype: str | None = None) -> Curve:
        """Efficiency curve of a kernel family; for GEMM the ``dtype``'s own curve where the profile has one."""
        if family == "gemm" and dtype is not None:
            override = self.gemm_by_dtype.get(normalize_dtype(dtype))
            if override is not None:
                return override
        return self.curves[family]

    # ---- kernels -------------------------------------------------------------------------
    def kernel_time(
        self,
        family: Family,
        flops: float,
        nbytes: float,
        dtype: str = "bf16",
        floor: bool = True,
        compute_eff: float = 1.0,
    ) -> float:
        """Seconds for one kernel of ``family`` doing ``flops`` in ``dtype`` and moving ``nbytes`` of HBM.

        The family's efficiency curve (for GEMM the ``dtype``'s own where the profile has one) at this
        profile's SM share and clock: what the shape-aware methods below compute once they have counted
        a kernel's FLOPs and bytes. For kernels whose bytes those methods do not count, such as a
        serving GEMM whose weights have their own width (``simulator.core.costs.gemm_time``).
        """
        return self._time(self.curve(family, dtype), flops, nbytes, dtype, floor, compute_eff)

    def gemm_time(self, M: int, N: int, K: int, dtype: str = "bf16", floor: bool = True) -> float:
        """Seconds for ``y[M,N] = x[M,K] @ W[N,K].T`` (an ``nn.Linear``).

        The compute term pays the shape (alignment class of N, K; tile/wave quantisation of M x N). An fp8
        GEMM whose K or N breaks the FP8 rule runs as bf16; one that meets it adds its quantisation pass.
        """
        _check_sizes(M=M, N=N, K=K)
        fp8 = normalize_dtype(dtype) == "fp8"
        if fp8 and not self.fp8.on_fp8_path(N, K):
            self.peak_flops(dtype)  # a GPU without FP8 units is refused, whatever the shape
            return self.gemm_time(M, N, K, "bf16", floor)
        b = bytes_per_element(dtype)
        flops = 2.0 * M * N * K
        nbytes = b * (M * K + N * K + M * N)
        eff = self.gemm_shape_efficiency(M, N, K, dtype)
        t = self._time(self.curve("gemm", dtype), flops, nbytes, dtype, floor, eff)
        if fp8:
            t += self.memory_op_time(self.fp8.scaling_bytes(M * K + N * K), floor)
        return t

    def attention_prefill_time(
        self,
        batch: int,
        q_len: int,
        heads: int,
        kv_heads: int,
        head_dim: int,
        dtype: str = "bf16",
        *,
        kv_len: int | None = None,
        v_head_dim: int | None = None,
        causal: bool = True,
        backward: bool = False,
        floor: bool = True,
    ) -> float:
        """Seconds for flash-style attention over ``q_len`` new tokens against ``kv_len`` keys.

        With ``kv_len > q_len`` (a chunk after a cached prefix) each causal query sees the prefix
        plus the tokens before it. ``backward`` gives the backward pass alone (2.5x the forward
        FLOPs: flash attention recomputes the scores and does four more matmuls).
        """
        kv_len = q_len if kv_len is None else kv_len
        _check_sizes(batch=batch, q_len=q_len, kv_len=kv_len, heads=heads, kv_heads=kv_heads, head_dim=head_dim)
        if kv_len < q_len:
            raise ClusterSimError(f"kv_len={kv_len} must be >= q_len={q_len}")
        dv = check_count("v_head_dim", v_head_dim) if v_head_dim else head_dim
        keys_per_query = (kv_len - (q_len - 1) / 2.0) if causal else float(kv_len)
        flops = 2.0 * batch * heads * q_len * keys_per_query * (head_dim + dv)
        b = bytes_per_element(dtype)
        nbytes = b * batch * (q_len * heads * (head_dim + dv) + kv_len * kv_heads * (head_dim + dv))
        family: Family = "attn_bwd" if backward else "attn_fwd"
        if backward:
            flops *= 2.5
            nbytes *= 2.0
        return self._time(self.curve(family), flops, nbytes, dtype, floor)

    def attention_decode_time(
        self,
        batch: int,
        kv_len: int | Sequence[int],
        heads: int,
        kv_heads: int,
        head_dim: int,
        dtype: str = "bf16",
        *,
        kv_dtype: str | None = None,
        v_head_dim: int | None = None,
        floor: bool = True,
    ) -> float:
        """Seconds for one query token per sequence against its cached keys/values.

        ``kv_len`` is one length for all ``batch`` sequences, or one length per sequence (a mixed
        serving batch): the kernel streams every cached byte, so the sum is what matters.
        """
        _check_sizes(batch=batch, heads=heads, kv_heads=kv_heads, head_dim=head_dim)
        if isinstance(kv_len, int | float):
            total = float(check_count("kv_len", kv_len)) * batch
        else:
            try:
                lens = list(kv_len)
            except TypeError:
                raise ClusterSimError(f"kv_len must be a length or a list of lengths, got {short(kv_len)}") from None
            if len(lens) != batch:
                raise ClusterSimError(f"kv_len has {len(lens)} entries but batch={batch}")
            total = float(sum(check_count("kv_len", n) for n in lens))
        dv = check_count("v_head_dim", v_head_dim) if v_head_dim else head_dim
        kv_b = bytes_per_element(kv_dtype or dtype)
        flops = 2.0 * heads * total * (head_dim + dv)
        nbytes = kv_b * total * kv_heads * (head_dim + dv) + bytes_per_element(dtype) * batch * heads * (head_dim + dv)
        return self._time(self.curve("attn_decode"), flops, nbytes, dtype, floor)

    def memory_op_time(self, nbytes: float, floor: bool = True) -> float:
        """Seconds for a memory-bound kernel that reads plus writes ``nbytes`` of HBM."""
        _check_bytes(nbytes)
        return self.curves["membound"].time(0.0, nbytes, 1.0, self.bandwidth_bytes_s, floor)

    def host_copy_time(self, nbytes: float) -> float:
        """Seconds to copy ``nbytes`` between pinned host memory and the GPU (one direction)."""
        _check_bytes(nbytes)
        return nbytes / (self.host_link_gbps * 1e9)


def _check_sizes(**sizes: int) -> None:
    """Each size a whole number in [1, MAX_SIZE] (a one-line error naming it: no NaN, infinity or bool)."""
    for name, value in sizes.items():
        check_count(name, value)


def _check_bytes(nbytes: float) -> None:
    """A byte count must be a finite number >= 0."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int | float) or not 0 <= nbytes < float("inf"):
        raise ClusterSimError(f"nbytes must be a finite number >= 0, got {short(nbytes)}")


# ---- building and loading profiles ---------------------------------------------------------


@lru_cache(maxsize=1)
def _defaults() -> dict:
    text = resources.files("hwmodels").joinpath("data/profile_defaults.yaml").read_text()
    return yaml.safe_load(text)


def _catalogue_sms(gpu: str) -> int | None:
    try:
        return get_gpu(gpu).sms
    except ClusterSimError:
        return None


@lru_cache(maxsize=64)
def _shape_defaults_for(gpu: str) -> dict[str, dict]:
    """Default ``gemm_tiling`` and ``fp8`` of ``gpu``: its SM count and the reference level of the default grid."""
    d = _defaults()
    tiling = dict(d["gemm_tiling"])
    grid = tiling.pop("reference_grid")
    sms = _catalogue_sms(gpu)
    tiles = tuple(tuple(t) for t in tiling["tiles"])
    ref = reference_efficiency(reference_shapes(grid), sms, tiles) if sms else 1.0
    return {
        "gemm_tiling": {**tiling, "tiles": tiles, "sms": sms, "reference_eff": ref},
        "fp8": dict(d["fp8_rules"]),
    }


def _curves_for(gpu_id: str, defaults: dict) -> dict[str, Curve]:
    """Global default curves, with any GPU-family override (``gpu_overrides`` in the defaults file)."""
    curves = {name: dict(c) for name, c in defaults["curves"].items()}
    for ov in defaults.get("gpu_overrides", []):
        if gpu_id.startswith(ov["match"]):
            for name, fields in ov["curves"].items():
                curves[name].update(fields, source=f"{curves[name]['source']}; {ov['source']}")
    return {name: Curve(**c) for name, c in curves.items()}


def datasheet_profile(gpu: str) -> Profile:
    """The profile built from the catalogue's datasheet peaks and the global default curves."""
    spec = get_gpu(gpu)
    d = _defaults()
    pw = d["power"]
    active_idle = spec.idle_w + pw["active_idle_extra_frac_tdp"] * spec.tdp_w
    dynamic = max(spec.tdp_w - active_idle, 1.0)
    curves = _curves_for(spec.id, d)
    sm_w = pw["sm_active_frac"] * dynamic
    # a large GEMM at max clock (eff_max of peak) draws exactly TDP: no throttling without a measurement
    compute_w = (dynamic - sm_w) / curves["gemm"].eff_max
    host = get_link(spec.pcie)
    return Profile(
        gpu=spec.id,
        kind="datasheet",
        source=f"datasheet peaks of {spec.id} (hwmodels/data/gpus.yaml) x global default curves "
        "(hwmodels/data/profile_defaults.yaml)",
        peak_tflops={dt: spec.peak_tflops(dt) for dt in DTYPES if spec.supports(dt)},
        memory_bandwidth_gbps=spec.memory_bandwidth_gbps,
        host_link_gbps=host.bandwidth_gbps * d["host_link_efficiency"],
        iteration_overhead_s=d["iteration_overhead_s"],
        curves=curves,
        gemm_by_dtype={"fp8": Curve(**d["fp8_gemm"])} if spec.supports("fp8") and "fp8_gemm" in d else {},
        gemm_alignment=GemmAlignment(**d["gemm_alignment"]),
        **_shape_defaults_for(spec.id),
        power=PowerParams(
            idle_w=spec.idle_w,
            active_idle_w=active_idle,
            sm_active_w=sm_w,
            compute_dynamic_w=compute_w,
            memory_dynamic_w=pw["memory_dynamic_frac"] * dynamic,
            power_limit_w=spec.tdp_w,
            max_sm_clock_mhz=spec.boost_clock_mhz,
            clock_power_exponent=pw["clock_power_exponent"],
            clock_limited_eff=pw["clock_limited_eff"],
            source=pw["source"],
        ),
    )


def _profiles_dir() -> Path:
    return Path(str(resources.files("hwmodels").joinpath("profiles")))


def calibrated_profile_path(gpu: str) -> Path | None:
    """Path of the shipped calibrated profile for ``gpu``, if one exists."""
    path = _profiles_dir() / f"{get_gpu(gpu).id}.json"
    return path if path.is_file() else None


def read_profile(path: str | Path) -> Profile:
    """Load and validate a profile JSON file; a foreign schema version or corrupt file is refused."""
    path = Path(path)
    raw = read_regular_file(path, MAX_PROFILE_BYTES, f"profile {path}")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError: no file contents echoed
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 JSON"
        raise ClusterSimError(f"cannot read profile {path}: {msg}; re-run `clustersim calibrate`") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if version != PROFILE_SCHEMA_VERSION:
        raise ClusterSimError(
            f"profile {path} has schema_version={version!r}, this clustersim reads {PROFILE_SCHEMA_VERSION}; "
            "re-fit it with `clustersim fit RAW.json`"
        )
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ClusterSimError(f"profile {path} is invalid: {first_validation_error(exc)}") from None


def write_profile(profile: Profile, path: str | Path) -> Path:
    """Write ``profile`` as JSON atomically (temp file, then rename)."""
    return atomic_write(path, profile.model_dump_json(indent=1, exclude={"clock_ratio", "sm_fraction"}))


def _check_profile_args(name_or_path: object, gpu: object) -> None:
    """``load_profile``'s arguments: a profile, a name or path (str/Path) or None, and a GPU id or None."""
    if name_or_path is not None and not isinstance(name_or_path, str | Path):
        raise ClusterSimError(
            f"profile must be a Profile, a GPU id, 'datasheet' or a profile JSON path, got {short(name_or_path)}"
        )
    if gpu is not None and not isinstance(gpu, str):
        raise ClusterSimError(f"gpu must be a GPU id such as 'h100-sxm5-80gb', got {short(gpu)}")
    for text in (name_or_path, gpu):
        if text is not None and (len(str(text)) > 4096 or "\0" in str(text)):
            raise ClusterSimError(f"profile or GPU name {short(str(text))} is not a GPU id or a file path")


def _is_file(path: str | Path) -> bool:
    """Whether ``path`` is a file; False (not an OSError) for a name too long or otherwise unusable as a path."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def load_profile(name_or_path: str | Path | None = None, *, gpu: str | None = None) -> Profile:
    """Resolve a profile the way every command does.

    ``name_or_path`` may be a profile JSON path, a GPU id (its calibrated profile when one is
    shipped, else its datasheet profile), or ``"datasheet"`` / ``None`` together with ``gpu``.
    """
    if isinstance(name_or_path, Profile):
        return name_or_path
    _check_profile_args(name_or_path, gpu)
    if name_or_path is not None and (Path(name_or_path).suffix == ".json" or _is_file(name_or_path)):
        return read_profile(name_or_path)
    if name_or_path == "datasheet":
        if gpu is None:
            raise ClusterSimError("profile 'datasheet' needs a GPU; pass gpu=...")
        return datasheet_profile(gpu)
    target = gpu if name_or_path is None else str(name_or_path)
    if target is None:
        raise ClusterSimError("load_profile needs a GPU id or a profile path")
    calibrated = calibrated_profile_path(target)
    if calibrated:
        return read_profile(calibrated)
    twin = get_gpu(target).same_silicon_as
    twin_path = calibrated_profile_path(twin) if twin else None
    if twin_path is None:
        return datasheet_profile(target)
    # same die and board: the twin's measured curves and power, this GPU's own datasheet peaks
    own = datasheet_profile(target)
    prof = read_profile(twin_path)
    return prof.model_copy(
        update={"gpu": own.gpu, "peak_tflops": own.peak_tflops, "source": f"{prof.source}; applied to {own.gpu}"}
    )
