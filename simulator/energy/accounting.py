"""Energy, carbon and cost of a run: the power settings a user picks and what they cost.

Two energy modes:

- ``modelled`` (default): the GPU power model (:mod:`hwmodels.power`) integrated over the simulated
  step, per pipeline rank (busy time, math work, HBM traffic at the clock it ran), plus each node's
  non-GPU power (CPUs, DRAM, NICs, switches; ``host_power_w`` of the node preset) for the whole run,
  times the site's PUE. A power limit below the step's average draw lowers the SM clock (the
  limit is enforced on the average, as the H100 NVML data show) and the step is re-simulated there.
- ``tdp``: GPU-hours x TDP x PUE, the bookkeeping most published footprints use (Llama 2, LLaMA);
  node power is not counted separately, as in those figures.

Carbon: operational = facility kWh x grid intensity (location-based by default, market-based
optional; :mod:`simulator.energy.carbon`), embodied = the GPUs' and servers' manufacturing footprint
amortised over their lifetime by the run's GPU-hours. Cost = GPU-hours x $/GPU-hour
(:mod:`simulator.energy.pricing`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hwmodels.errors import ClusterSimError
from hwmodels.power import window_energy_j
from hwmodels.profile import PowerParams

#: Seconds over which the power limit holds the average (an ESTIMATE: NVIDIA does not publish the limiter's
#: window). What is known: NVML reports power as a 1 s average on Ampere and later (NVML docs,
#: nvmlDeviceGetPowerUsage); the shared H100 measurements run a 50%-duty GEMM loop (~6 ms bursts) at 1980 MHz
#: and 537 W although its bursts draw ~940 W, so the window is much longer than ~10 ms; a sustained GEMM settles
#: at the limit within seconds (8192^3 bf16: 1365 MHz and 668 TFLOP/s over 10 s against 743 in short runs; an
#: H200 soak in stas00/ml-engineering's mamf-finder notes: 703 sustained against 828 TFLOP/s in bursts).
#: A training step's steady 1F1B phase lasts seconds, so it is the stretch that must fit the limit. Sources:
#: docs/research/h100-sustained-clocks.md.
LIMIT_WINDOW_S = 1.0


class PowerSpec(BaseModel):
    """DVFS and power settings of a job (``power:`` in a config)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    mode: Literal["modelled", "tdp"] = Field(
        default="modelled", description="modelled: power model over the timeline; tdp: GPU-hours x TDP x PUE"
    )
    sm_clock_mhz: float | None = Field(
        default=None, gt=0, description="locked SM clock (nvidia-smi -lgc); max if unset"
    )
    power_limit_w: float | None = Field(default=None, gt=0, description="per-GPU power cap; the board's TDP if unset")
    limit_window_s: float = Field(
        default=LIMIT_WINDOW_S,
        gt=0,
        le=3600,
        description="seconds over which the GPU holds its average power to the limit: a step longer than this must "
        "fit the limit in its busiest stretch, not only on average over the step (ESTIMATE, see LIMIT_WINDOW_S)",
    )
    stage_clocks_mhz: tuple[float, ...] | None = Field(
        default=None, description="locked SM clock per pipeline stage (slow the stages that wait, as Perseus/EnvPipe)"
    )

    @model_validator(mode="after")
    def _one_clock_setting(self) -> PowerSpec:
        if self.sm_clock_mhz is not None and self.stage_clocks_mhz is not None:
            raise ClusterSimError("set power.sm_clock_mhz or power.stage_clocks_mhz, not both")
        if self.stage_clocks_mhz is not None and any(c <= 0 for c in self.stage_clocks_mhz):
            raise ClusterSimError("power.stage_clocks_mhz must all be > 0 MHz")
        return self


class SiteSpec(BaseModel):
    """Where and at what price a job runs (``site:`` in a config)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    pue: float = Field(
        default=1.1, ge=1.0, description="power usage effectiveness; 1.1 is a hyperscale figure (Meta's Llama 2 card)"
    )
    region: str = Field(default="us", description="grid region for location-based carbon (simulator.energy.carbon)")
    grid_kg_per_kwh: float | None = Field(default=None, ge=0, description="overrides the region's grid intensity")
    market_kg_per_kwh: float | None = Field(
        default=None, ge=0, description="market-based intensity (contracts, PPAs); location-based when unset"
    )
    price_usd_per_gpu_hour: float | None = Field(default=None, ge=0, description="overrides the price preset")
    price_preset: str = Field(default="default", description="$/GPU-hour preset (simulator.energy.pricing)")
    embodied_lifetime_years: float = Field(
        default=5.0, gt=0, description="service life the embodied carbon is spread over"
    )


def hottest_window_w(p: PowerParams, seconds: float, busy_s: float, energy_j: float, window_s: float) -> float:
    """Average power of the busiest ``window_s`` of a step of ``seconds`` whose kernels run ``busy_s`` and that
    draws ``energy_j`` in all: its busy time taken as one stretch (the steady phase of a pipeline, with the
    fill and drain idle around it), filled up with idle time when shorter than the window. Idle gaps inside
    the steady phase (waits of a few milliseconds) are counted at the ends instead, so this is an upper bound
    on the window's power: it may throttle a little more than the GPU would."""
    if seconds <= 0:
        return 0.0
    busy_s = min(max(busy_s, 0.0), seconds)
    idle = seconds - busy_s
    busy_j = max(0.0, energy_j - p.active_idle_w * idle)
    window = min(window_s, seconds)
    if busy_s >= window:
        return busy_j / busy_s
    return (busy_j + p.active_idle_w * (window - busy_s)) / window


def gpu_energy_j(
    p: PowerParams, seconds: float, busy_s: float, tensor_s: float, hbm_s: float, clock_ratio: float
) -> float:
    """Energy of one GPU over a window (see :func:`hwmodels.power.window_energy_j`)."""
    if busy_s > seconds * (1 + 1e-9):
        raise ClusterSimError(f"busy time {busy_s} s exceeds the window {seconds} s")
    return window_energy_j(p, seconds, busy_s, tensor_s, hbm_s, clock_ratio)


def footprint(
    facility_j: float, gpu_hours: float, gpu: str, gpus_per_node: int, site: SiteSpec
) -> tuple[dict[str, float], float]:
    """(kgCO2e {operational, embodied}, cost in USD) of a run's facility energy and GPU-hours."""
    from simulator.energy import carbon, pricing

    kwh = facility_j / 3.6e6
    if site.market_kg_per_kwh is not None:
        intensity = site.market_kg_per_kwh
    elif site.grid_kg_per_kwh is not None:
        intensity = site.grid_kg_per_kwh
    else:
        intensity = carbon.grid_intensity(site.region).kg_per_kwh
    embodied = carbon.embodied_kgco2e(
        gpu, gpu_hours, gpus_per_node=gpus_per_node, lifetime_years=site.embodied_lifetime_years
    )
    price = site.price_usd_per_gpu_hour
    if price is None:
        price = pricing.gpu_hour_price(gpu, site.price_preset).value_usd
    return {"operational": kwh * intensity, "embodied": embodied}, gpu_hours * price
