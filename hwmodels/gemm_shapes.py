"""GEMM shape effects beyond alignment: output-tile padding, wave quantisation and FP8 rules.

Sources for every rule and number are in ``docs/research/gemm-shape-effects.md`` (rows cited as "doc row N").

Tile and wave quantisation (doc rows 11-13): cuBLAS computes ``y[M,N]`` in output tiles of ``tm x tn``
(one CTA each) scheduled in waves over the SMs. A GEMM of ``T = ceil(M/tm) ceil(N/tn)`` tiles takes
``ceil(T / SMs)`` waves, so its useful fraction of the machine is ``M N / (waves * SMs * tm * tn)``. cuBLAS's
heuristics pick among a few tile shapes (CUTLASS/cuBLAS Hopper and Ampere kernels: 128x128, 128x256, 256x128);
we take the best of them, as the heuristic would. A lone partial wave (``T <= SMs`` for some candidate) is left
to the profile's fitted fill curve: cuBLAS fills idle SMs of a single wave with split-K (doc, "What this
suggests"), and the fill term was fitted on exactly those small shapes.

The profile's GEMM curve was fitted to measured times that already contain the wave efficiency of the
calibration shapes (about 0.97 on H100 for the power-of-two grid: 4096 tiles on 132 SMs fill 31.03 of 32
waves). So the factor applied is relative to that level, ``min(1, q / reference_eff)``: shapes at or above the
calibration level run at the fitted curve; only a worse tail slows down. Large square GEMMs and the calibration
grid barely move; a GEMM with one tile more than the SMs (two waves, the second nearly empty) is ~1.5-2x
slower per FLOP.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

#: Candidate CTA output tiles (rows x columns of y) of cuBLAS/CUTLASS Tensor Core GEMMs on Ampere and Hopper:
#: CUTLASS's sm80 and sm90 default tile shapes 128x128, 128x256 and 256x128; NVIDIA's matrix-multiplication
#: guide uses 256x128 on A100 for its wave-quantisation example (doc rows 11-12).
DEFAULT_TILES: tuple[tuple[int, int], ...] = ((128, 128), (128, 256), (256, 128))


def tile_wave_efficiency(M: int, N: int, tile: tuple[int, int], sms: int) -> float:  # noqa: N803
    """Useful fraction of ``waves x sms`` tile slots for ``y[M,N]`` in ``tile``-sized CTAs; 1.0 for a lone wave."""
    tm, tn = tile
    tiles = math.ceil(M / tm) * math.ceil(N / tn)
    if tiles <= sms:
        return 1.0  # one partial wave: the fitted fill curve prices it (split-K fills the idle SMs)
    waves = math.ceil(tiles / sms)
    return (M * N) / (waves * sms * tm * tn)


def wave_efficiency(M: int, N: int, sms: int, tiles: Iterable[tuple[int, int]] = DEFAULT_TILES) -> float:  # noqa: N803
    """Best tile-and-wave efficiency over the candidate ``tiles`` (cuBLAS picks the best-fitting tile)."""
    return max(tile_wave_efficiency(M, N, t, sms) for t in tiles)


def reference_efficiency(
    shapes: Iterable[tuple[int, int]], sms: int, tiles: Iterable[tuple[int, int]] = DEFAULT_TILES
) -> float:
    """Geometric mean wave efficiency of ``(M, N)`` shapes: the level a curve fitted to them already contains."""
    tiles = tuple(tiles)
    effs = [wave_efficiency(m, n, sms, tiles) for m, n in shapes]
    if not effs:
        return 1.0
    return math.exp(sum(math.log(e) for e in effs) / len(effs))


class GemmTiling(BaseModel):
    """How GEMM output tiles quantise over the SMs, relative to the level the fitted curve already holds."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    tiles: tuple[tuple[int, int], ...] = Field(default=DEFAULT_TILES, min_length=1, description="candidate CTA tiles")
    sms: int | None = Field(default=None, gt=0, description="SM count (None: the catalogue's)")
    reference_eff: float = Field(
        default=1.0, gt=0, le=1, description="wave efficiency of the shapes the GEMM curve was fitted to"
    )
    source: str = ""

    def factor(self, M: int, N: int, sms: int) -> float:  # noqa: N803
        """Compute-efficiency factor of ``y[M,N]`` on ``sms`` SMs, relative to the fitted level (<= 1)."""
        return min(1.0, wave_efficiency(M, N, sms, self.tiles) / self.reference_eff)


class Fp8Rules(BaseModel):
    """When an FP8 GEMM takes the FP8 path, and what its scaling (amax, cast) costs.

    cuBLASLt FP8 needs 16-byte-aligned leading dimensions, i.e. multiples of 16 fp8 elements, and
    ``torch._scaled_mm`` checks K and N % 16 (doc rows 1, 14); frameworks keep such layers in bf16 (torchao's
    float8 conversion skips linears whose dims are not divisible by 16; Transformer Engine asserts), so a
    non-conforming fp8 GEMM costs the bf16 GEMM. Each FP8 GEMM's operands must first be quantised: a
    memory-bound pass that reads bf16 and writes fp8 with amax fused (TE delayed scaling; DeepSeek-V3's online
    1x128 activation / 128x128 weight block scaling, arXiv 2412.19437 section 3.3), charged per operand element.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    multiple: int = Field(default=16, gt=0, description="K and N must be multiples of this for the FP8 path")
    scaling_bytes_per_element: float = Field(
        default=2.0, ge=0, description="HBM bytes per operand element of the quantisation pass, per GEMM"
    )
    scale_block: int | None = Field(
        default=128, gt=0, description="elements sharing one fp32 scale (None: one scale per tensor)"
    )
    source: str = ""

    def on_fp8_path(self, N: int, K: int) -> bool:  # noqa: N803
        """Whether ``y[M,N] = x[M,K] @ W[N,K].T`` meets the FP8 kernels' divisibility rule."""
        return N % self.multiple == 0 and K % self.multiple == 0

    def scaling_bytes(self, operand_elements: float) -> float:
        """HBM bytes of quantising ``operand_elements`` (both operands) for one FP8 GEMM, scales included."""
        per = self.scaling_bytes_per_element + (2 * 4.0 / self.scale_block if self.scale_block else 0.0)
        return per * operand_elements


def reference_shapes(grid: dict) -> list[tuple[int, int]]:
    """(M, N) pairs of a reference grid ``{m: [...], nk: [[N, K], ...]}``."""
    ms: Sequence[int] = grid.get("m", ())
    return [(int(m), int(nk[0])) for m in ms for nk in grid.get("nk", ())]
