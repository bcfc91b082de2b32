"""TrainingResult: what a simulated training step tells the user, plus its timeline."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from simulator.core.timeline import Timeline
from simulator.core.variability import Goodput


class MemoryReport(BaseModel):
    """Per-GPU memory of the fullest pipeline rank, GB (1e9 bytes)."""

    model_config = ConfigDict(frozen=True)

    peak: float
    weights: float
    gradients: float
    optimizer: float
    activations: float
    buffers: float
    fragmentation: float
    capacity: float
    stage: int = Field(description="pipeline rank with the highest peak")
    inflight_microbatches: float = Field(description="peak micro-batches of activations held on that rank")
    host: float = Field(default=0.0, description="bytes per GPU offloaded to host memory (training.offload), GB")
    nvme: float = Field(default=0.0, description="bytes per GPU offloaded to NVMe, GB")
    host_capacity: float = Field(default=0.0, description="host memory per GPU (node's / its GPUs), GB; 0: unused")
    nvme_capacity: float = Field(default=0.0, description="NVMe per GPU (node's / its GPUs), GB; 0: unused")
    compression: float = Field(
        default=0.0, description="gradient-compression state (error-feedback residual, PowerSGD factors), GB"
    )


#: MemoryReport fields that are not GB: the stage index and a count of micro-batches.
_MEMORY_COUNTS = frozenset({"stage", "inflight_microbatches"})


class TrainingResult(BaseModel):
    """Predicted performance, memory and time breakdown of one training step."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    model: str
    gpu: str
    num_gpus: int
    profile: str
    schedule: str
    num_microbatches: int
    step_time_s: float
    pipeline_time_s: float = Field(description="forward/backward phase of the step, before gradient sync")
    tokens_per_s: float
    tokens_per_s_per_gpu: float
    tflops_per_gpu: float = Field(description="model FLOPs (no recompute) per second per GPU, in TFLOP/s")
    mfu: float
    hfu: float
    bubble_fraction: float
    exposed_comm_s: dict[str, float]
    optimizer_s: float = Field(description="optimizer step on the critical path: GPU step, or the exposed CPU step")
    offload_s: dict[str, float] = Field(
        default_factory=dict, description="training.offload: CPU Adam, weights back over PCIe, NVMe swap, exposed s"
    )
    memory_per_gpu_gb: MemoryReport
    fits_in_memory: bool
    time_to_train_days: float | None = None
    time_to_train_wall_days: float | None = Field(
        default=None, description="time_to_train_days divided by the goodput: failures, restarts and checkpoints"
    )
    sync_stretch: float = Field(
        default=1.0, description="compute stretch from waiting for the slowest rank (GPU spread, jitter, stragglers)"
    )
    gc_pause_s: float = Field(
        default=0.0, description="expected seconds per step waiting on ranks' garbage-collection pauses (variability)"
    )
    goodput: Goodput | None = Field(default=None, description="useful share of wall time over a long run")
    energy_j: dict[str, float] = Field(default_factory=dict, description="per step: gpu, node, facility (x PUE), J")
    energy_per_token_j: float = Field(default=0.0, description="facility energy per trained token, J")
    kgco2e: dict[str, float] = Field(default_factory=dict, description="per step: operational, embodied, kgCO2e")
    cost_usd: float = Field(default=0.0, description="per step: GPU-hours x $/GPU-hour")
    power: dict[str, Any] = Field(
        default_factory=dict, description="mode, avg_gpu_power_w (hottest GPU), power_limit_w, sm_clock_mhz per stage"
    )
    total_mwh: float | None = Field(default=None, description="facility MWh for training.tokens")
    total_tco2e: float | None = Field(default=None, description="operational + embodied tCO2e for training.tokens")
    total_cost_usd: float | None = None
    timeline: Timeline | None = Field(default=None, exclude=True, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result (the timeline is exported separately with ``--trace``)."""
        return json.loads(self.model_dump_json())

    def to_frame(self) -> Any:
        """One-row DataFrame of the scalar metrics (pandas imported here only)."""
        import pandas as pd

        flat = {k: v for k, v in self.to_dict().items() if not isinstance(v, dict)}
        flat.update({f"exposed_{k}_s": v for k, v in self.exposed_comm_s.items()})
        # GB fields get _gb; the stage index and the in-flight micro-batch count are not GB
        flat.update({f"memory_{k}" if k in _MEMORY_COUNTS else f"memory_{k}_gb": v for k, v in self.memory_per_gpu_gb})
        return pd.DataFrame([flat])
