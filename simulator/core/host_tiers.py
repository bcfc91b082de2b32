"""Config sections for host memory in training: ``training.offload`` and ``parallel.parameter_server``.

What they mean physically (tier placement, PCIe / NVMe / CPU times, push/pull) lives in
:mod:`simulator.training.offload` and :mod:`simulator.training.param_server`; this module holds only the
validated settings and the cross-field checks the run config calls (one-line errors naming the field).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hwmodels.errors import ClusterSimError
from hwmodels.topology import ClusterSpec

Tier = Literal["none", "cpu", "nvme"]

#: Host figures each kind of offload needs from the node catalogue (hwmodels/data/nodes.yaml).
_HOST_FIELDS = ("cpu_sockets", "cpu_cores", "host_memory_gb", "host_memory_bandwidth_gbps", "gpus_per_pcie_uplink")
_NVME_FIELDS = ("nvme_gb", "nvme_bandwidth_gbps")


class OffloadSpec(BaseModel):
    """ZeRO-Offload / ZeRO-Infinity and activation offload: which model states leave the GPU, and where to.

    ``optimizer``: fp32 master weights, Adam moments and fp32 gradients on the host (``cpu``, ZeRO-Offload,
    Ren et al. ATC'21) or on NVMe (``nvme``, ZeRO-Infinity, Rajbhandari et al. SC'21), stepped by a CPU Adam;
    the GPU keeps fp16/bf16 weights and a gradient bucket. ``params``: the 16-bit weights too (ZeRO-3 only),
    fetched over PCIe before each forward and backward. ``activations``: saved activations go to host memory
    between forward and backward instead of being kept (or recomputed). ``delayed_param_update``: the CPU step
    of step i overlaps the forward/backward of step i+1 (ZeRO-Offload Sec. 5.2, DPU).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    optimizer: Tier = Field(default="none", description="where the optimizer state and its step live")
    params: Tier = Field(default="none", description="where the 16-bit weights live between uses (needs zero=3)")
    activations: bool = Field(default=False, description="saved activations to host memory, back for the backward")
    delayed_param_update: bool = Field(
        default=False, description="one-step delayed parameter update: the CPU step overlaps the next step (DPU)"
    )

    @model_validator(mode="after")
    def _check(self) -> OffloadSpec:
        if self.delayed_param_update and self.optimizer == "none":
            raise ClusterSimError("training.offload.delayed_param_update needs training.offload.optimizer=cpu or nvme")
        return self

    @property
    def any(self) -> bool:
        """Whether anything is offloaded."""
        return self.optimizer != "none" or self.params != "none" or self.activations


class ParameterServerSpec(BaseModel):
    """Parameter-server data parallelism (BytePS, Jiang et al. OSDI'20): workers push gradients to CPU server
    processes over RDMA and pull the sums back; the servers only add (the optimizer stays on the GPUs).

    ``placement: colocated`` runs a server on every GPU node plus ``servers`` extra CPU machines (BytePS's
    design; with ``servers: 0`` the traffic equals a ring all-reduce's); ``dedicated`` runs servers only on the
    ``servers`` CPU machines (a classic PS).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    servers: int = Field(default=0, ge=0, description="dedicated CPU server machines (k in BytePS)")
    placement: Literal["colocated", "dedicated"] = "colocated"
    server_nic_gbps: float | None = Field(
        default=None,
        gt=0,
        description="network bandwidth of one server machine, GB/s per direction; default: a GPU "
        "node's NICs (BytePS assumes equal bandwidth)",
    )
    server_memory_bandwidth_gbps: float | None = Field(
        default=None, gt=0, description="peak DRAM bandwidth of one server machine, GB/s; default: a GPU node's host"
    )

    @model_validator(mode="after")
    def _check(self) -> ParameterServerSpec:
        if self.placement == "dedicated" and self.servers < 1:
            raise ClusterSimError("parallel.parameter_server.placement=dedicated needs servers >= 1")
        return self


def check_host_tiers(
    offload: OffloadSpec, dp_mode: str, zero: int, dp_cp: int, compressed: bool, cluster: ClusterSpec
) -> None:
    """Cross-field checks of offload and parameter-server settings (first problem only, one line)."""
    if offload.params != "none" and zero != 3:
        raise ClusterSimError(
            f"training.offload.params={offload.params} needs parallel.zero=3 (ZeRO-Infinity offloads the "
            f"partitioned weights); got zero={zero}"
        )
    if offload.optimizer != "none" and dp_cp > 1 and zero < 1:
        raise ClusterSimError(
            f"training.offload.optimizer={offload.optimizer} needs parallel.zero >= 1 with data parallelism "
            "(DeepSpeed offloads the ZeRO optimizer partition); set parallel.zero=2"
        )
    if dp_mode == "parameter_server":
        if zero:
            raise ClusterSimError(f"parallel.dp_mode=parameter_server needs parallel.zero=0, got {zero}")
        if compressed:
            raise ClusterSimError("parallel.dp_mode=parameter_server does not combine with training.compression")
        if offload.optimizer != "none":
            raise ClusterSimError("parallel.dp_mode=parameter_server does not combine with training.offload.optimizer")
    if not (offload.any or dp_mode == "parameter_server"):
        return
    node = cluster.resolve().node
    what = "training.offload" if offload.any else "parallel.dp_mode=parameter_server"
    for name in _HOST_FIELDS:
        node.host_figure(name, what)
    if "nvme" in (offload.optimizer, offload.params):
        for name in _NVME_FIELDS:
            node.host_figure(name, "an nvme offload tier")
