"""Host memory and NVMe as training memory tiers: where the model states live, and what moving them costs.

ZeRO-Offload (Ren et al., ATC'21, arXiv:2101.06840), ZeRO-Infinity (Rajbhandari et al., SC'21, arXiv:2104.07857)
and activation offload, as ``training.offload`` (:class:`simulator.core.host_tiers.OffloadSpec`) selects them.
:mod:`~simulator.training.memory`, :mod:`~simulator.training.plan` and :mod:`~simulator.training.simulate` call
the functions here with a few lines each; the plan search's screen calls the same ones.

**Placement** (per GPU; ``S`` = the parameters whose optimizer state the rank owns, its ZeRO shard):

* ``optimizer: cpu`` -- the fp32 master weights and Adam moments (``optimizer_bytes_per_param`` x S) and the
  fp32 gradients the CPU Adam reads (4 x S) live in host memory; the GPU keeps its 16-bit weights and one
  gradient bucket (DeepSpeed ZeRO-Offload: "offload partitioned optimizer states and gradients to CPU memory").
  ``nvme``: the optimizer state on NVMe, the fp32 gradients in host memory (ZeRO-Infinity).
* ``params: cpu|nvme`` (ZeRO-3) -- the rank's shard of the 16-bit weights leaves the GPU; the GPU keeps the
  two prefetched layers ZeRO-3 gathers anyway (memory.ZERO3_PREFETCH_LAYERS).
* ``activations: true`` -- the saved activations of every in-flight micro-batch live in host memory; the GPU keeps
  a window of :data:`ACTIVATION_WINDOW_LAYERS` layers (the one being copied out or prefetched, the one computing).

**Rates** (:func:`host_rates`, from the node catalogue): PCIe per GPU = the GPU's link at its measured host-copy
efficiency, divided among the GPUs behind one x16 uplink (``gpus_per_pcie_uplink``) when all copy at once;
DRAM per GPU process = the node's peak x :data:`DRAM_STREAM_EFFICIENCY`, shared by the node's GPU processes and
at most one socket's (a process's pinned buffers sit on one NUMA node) and at most
:data:`PER_CORE_DRAM_BYTES_S` per core it has; NVMe per GPU = the node's array shared by its GPUs.

**Times**: gradients go to the host during each backward (D2H, overlapped: the backward phase cannot end before
its copy has), the CPU Adam streams :data:`CPU_ADAM_DRAM_BYTES` per parameter of S, and the updated 16-bit
weights return tile by tile while the next tile is stepped (DeepSpeed ``ds_adam_step_plus_copy``), so the
optimizer tail is the longest of CPU step, H2D copy and NVMe swap; with ``delayed_param_update`` it overlaps the
next step's forward and backward and only the excess shows. Offloaded weights come back over PCIe (and from NVMe)
before each forward and backward pass of a chunk, overlapped with ZeRO-3's gathers; offloaded activations go out
during the forward and come back during the backward, each bounded below by its copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from hwmodels.catalogue import get_link
from hwmodels.topology import ClusterSpec
from simulator.core.config import RunConfig
from simulator.core.host_tiers import OffloadSpec

#: DeepSpeedCPUAdam's DRAM traffic per parameter: Step_AVX (csrc/includes/cpu_adam.h) loads the fp32 gradient,
#: exp_avg, exp_avg_sq and master weight (16 B) and stores the master weight and both moments (12 B).
CPU_ADAM_DRAM_BYTES = 28.0
#: Gradient bytes per parameter copied to the host (ZeRO-Offload Sec. 4.1: 16-bit gradients are offloaded).
GRAD_D2H_BYTES = 2.0
#: Weight bytes per parameter copied back to the GPU after the CPU step (16-bit weights; ZeRO-Offload Sec. 4.1).
PARAM_H2D_BYTES = 2.0
#: fp32 gradient kept in host memory for the CPU Adam, bytes per parameter of the shard.
HOST_GRAD_BYTES = 4.0
#: NVMe traffic per parameter of an nvme-resident optimizer per step: master weight and two moments read and
#: written back (ZeRO-Infinity's swap of the fp32 optimizer state), 12 + 12 B.
NVME_OPTIMIZER_BYTES = 24.0
#: Parameters ZeRO-3 may keep gathered at once: DeepSpeed's ``stage3_max_live_parameters`` default (1e9, DeepSpeed
#: ZeRO config docs); with offloaded weights ZeRO-Infinity's memory-centric tiling splits a larger layer into tiles
#: (Rajbhandari et al. SC'21 Sec. 5.1.3), so the gathered working set stays under it.
MAX_LIVE_PARAMS = 1e9
#: Layers of saved activations the GPU keeps with activation offload (the one copying, the one computing).
ACTIVATION_WINDOW_LAYERS = 2
#: Fraction of peak DRAM bandwidth a streaming kernel reaches: estimate from published STREAM triad results
#: (2-socket EPYC 7742 ~330 of 410 GB/s, 2-socket Xeon Platinum 8168 ~200 of 256 GB/s, i.e. ~0.8).
DRAM_STREAM_EFFICIENCY = 0.8
#: DRAM bandwidth one core sustains (misses in flight per core bound it, Little's law): estimate, single-thread
#: STREAM triad on server Xeon / EPYC cores is typically 10-20 GB/s; 10 GB/s taken.
PER_CORE_DRAM_BYTES_S = 10e9


@dataclass(frozen=True)
class HostRates:
    """What one GPU of the cluster gets of its node's host side (bytes and bytes/s)."""

    pcie_bytes_s: float  # host <-> GPU copy bandwidth per direction while every GPU of the node copies
    dram_bytes_s: float  # DRAM bandwidth the GPU's host process streams (CPU Adam, summation)
    nvme_bytes_s: float  # NVMe bandwidth per GPU (0 when the node has no catalogued NVMe)
    host_bytes: float  # host memory per GPU (the node's capacity shared by its GPUs)
    nvme_bytes: float  # NVMe capacity per GPU
    gpus_on_node: int


@lru_cache(maxsize=64)
def host_rates(cluster: ClusterSpec) -> HostRates:
    """Per-GPU host rates and capacities of ``cluster``'s nodes (see the module docstring)."""
    c = cluster.resolve()
    node = c.node
    what = "host offload"
    gpus = max(1, min(c.num_gpus, c.gpus_per_node))
    link = get_link(c.gpu.pcie).effective_bandwidth_bytes_per_s
    share = min(int(node.host_figure("gpus_per_pcie_uplink", what)), gpus)
    dram = node.host_figure("host_memory_bandwidth_gbps", what) * 1e9 * DRAM_STREAM_EFFICIENCY
    sockets = node.host_figure("cpu_sockets", what)
    cores = node.host_figure("cpu_cores", what) / gpus
    nvme_bw = (node.nvme_bandwidth_gbps or 0.0) * 1e9 / gpus
    return HostRates(
        pcie_bytes_s=min(link / share, dram / gpus),
        dram_bytes_s=min(dram / gpus, dram / sockets, cores * PER_CORE_DRAM_BYTES_S),
        nvme_bytes_s=nvme_bw,
        host_bytes=node.host_figure("host_memory_gb", what) * 1e9 / gpus,
        nvme_bytes=(node.nvme_gb or 0.0) * 1e9 / gpus,
        gpus_on_node=gpus,
    )


def num_microbatches(cfg: RunConfig) -> int:
    """Micro-batches per step on each data-parallel replica."""
    t = cfg.training
    return t.global_batch // (t.micro_batch * cfg.parallel.dp)


def optimizer_shard(cfg: RunConfig, params: float) -> float:
    """Parameters of ``params`` whose optimizer state this rank owns (its ZeRO shard, or all without ZeRO)."""
    p = cfg.parallel
    return params / (p.dp * p.cp) if p.zero >= 1 else params


# ---- memory placement --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Bytes of one GPU's model states by tier: what stays in HBM, what goes to host memory and to NVMe."""

    weights: float
    gradients: float
    optimizer: float
    extra_buffers: float = 0.0  # GPU-side buffers offload adds (a gradient bucket)
    host: float = 0.0
    nvme: float = 0.0


def place_states(
    off: OffloadSpec,
    dp_cp: int,
    weights: float,
    gradients: float,
    optimizer: float,
    opt_bytes_per_param: float,
    bucket: float,
) -> Placement:
    """Move the ZeRO-sharded ``weights``, ``gradients`` and ``optimizer`` bytes of a rank to the tiers ``off``
    names. ``opt_bytes_per_param`` turns the optimizer bytes back into the shard's parameter count; ``bucket`` is
    the gradient bucket the GPU keeps when its gradients are offloaded (only where no DP bucket exists:
    ``dp_cp`` = 1).
    """
    host = nvme = extra = 0.0
    if off.optimizer != "none":
        shard = optimizer / opt_bytes_per_param
        host += HOST_GRAD_BYTES * shard
        if off.optimizer == "cpu":
            host += optimizer
        else:
            nvme += optimizer
        optimizer, gradients = 0.0, 0.0
        extra = bucket if dp_cp == 1 else 0.0
    if off.params != "none":
        if off.params == "cpu":
            host += weights
        else:
            nvme += weights
        weights = 0.0
    return Placement(weights, gradients, optimizer, extra, host, nvme)


def gathered_layer_cap(off: OffloadSpec) -> float:
    """Per-rank parameters of one gathered layer that ZeRO-3's prefetch buffer (two layers) holds at most: no cap
    unless the weights are offloaded, then half of :data:`MAX_LIVE_PARAMS` per layer (ZeRO-Infinity tiling)."""
    return MAX_LIVE_PARAMS / 2 if off.params != "none" else float("inf")


def activations_on_gpu(cfg: RunConfig, held: float, per_layer: float) -> tuple[float, float]:
    """(GPU bytes, host bytes) of ``held`` bytes of saved activations (every in-flight micro-batch) when one
    layer of a micro-batch saves ``per_layer``: all of them on the GPU, or with activation offload a window of
    :data:`ACTIVATION_WINDOW_LAYERS` layers on the GPU and the rest in host memory."""
    if not cfg.training.offload.activations or held <= 0:
        return held, 0.0
    window = min(held, ACTIVATION_WINDOW_LAYERS * per_layer)
    return window, held - window


# ---- times ----------------------------------------------------------------------------------------------


def saved_activation_bytes(cfg: RunConfig, layers: tuple[int, ...] | list[int]) -> float:
    """Bytes the ``layers`` save for the backward per micro-batch on one rank (memory._layer_activations)."""
    p, t = cfg.parallel, cfg.training
    return sum(
        cfg.model.activation_bytes_per_layer(
            t.seq_len // p.cp,
            t.micro_batch,
            tp=p.tp,
            sp=p.sp,
            recompute=t.recompute,
            flash_attention=t.flash_attention,
            dropout=t.dropout,
            layer=i,
            recompute_modules=t.recompute_modules,
            cache_dtype=t.activation_cache_dtype,
        )
        for i in layers
    )


def grad_d2h_bytes(cfg: RunConfig, params: float) -> float:
    """Gradient bytes a chunk holding ``params`` (per rank) copies to the host per micro-batch: its whole local
    gradient while accumulating (DeepSpeed accumulates offloaded gradients on the host), its shard when the
    step has one micro-batch (the reduce-scatter comes first)."""
    p = cfg.parallel
    return grad_d2h_bytes_of(cfg.training.offload, params, num_microbatches(cfg), p.zero, p.dp * p.cp)


def grad_d2h_bytes_of(off: OffloadSpec, params: float, microbatches: int, zero: int, dp_cp: int) -> float:
    """:func:`grad_d2h_bytes` from its parts (the plan search's screen has no run config)."""
    if off.optimizer == "none":
        return 0.0
    local = params if microbatches > 1 or zero < 1 else params / dp_cp
    return GRAD_D2H_BYTES * local


def chunk_pcie_s(cfg: RunConfig, params: float, layers: tuple[int, ...]) -> tuple[float, float]:
    """Seconds of PCIe copies that bound a chunk's (forward, backward) per micro-batch: offloaded activations out
    during the forward and back during the backward, gradients out during the backward (the other direction,
    so the backward is bounded by the longer of the two)."""
    off = cfg.training.offload
    if not (off.activations or off.optimizer != "none"):
        return 0.0, 0.0
    rate = host_rates(cfg.cluster).pcie_bytes_s
    acts = saved_activation_bytes(cfg, layers) / rate if off.activations else 0.0
    grads = grad_d2h_bytes(cfg, params) / rate
    return acts, max(acts, grads)


def param_fetch_s(off: OffloadSpec, cluster: ClusterSpec, params: float, dp_cp: int) -> float:
    """Seconds to bring a chunk's offloaded weights back for one pass (forward or backward): each rank fetches
    its 1/(dp cp) shard over PCIe (from NVMe first when they live there; ZeRO-Infinity's bandwidth-centric
    partitioning), overlapped with the all-gather that assembles the layer."""
    if off.params == "none":
        return 0.0
    r = host_rates(cluster)
    nbytes = PARAM_H2D_BYTES * params / dp_cp
    secs = nbytes / r.pcie_bytes_s
    if off.params == "nvme":
        secs = max(secs, nbytes / r.nvme_bytes_s)
    return secs


@dataclass(frozen=True)
class OptimizerStep:
    """The host-side optimizer step of one rank, seconds: CPU Adam, weights back to the GPU, NVMe swap."""

    cpu_s: float
    h2d_s: float
    nvme_s: float

    @property
    def total_s(self) -> float:
        """The step with its copies pipelined tile by tile: the slowest of the three streams."""
        return max(self.cpu_s, self.h2d_s, self.nvme_s)


def optimizer_step(off: OffloadSpec, cluster: ClusterSpec, shard: float) -> OptimizerStep:
    """The CPU optimizer step over ``shard`` parameters (see the module docstring); zeros without offload."""
    if off.optimizer == "none":
        return OptimizerStep(0.0, 0.0, 0.0)
    r = host_rates(cluster)
    cpu = CPU_ADAM_DRAM_BYTES * shard / r.dram_bytes_s
    # offloaded weights are written to their host (or NVMe) copy and fetched before the next forward instead
    h2d = PARAM_H2D_BYTES * shard / r.pcie_bytes_s if off.params == "none" else 0.0
    nvme_bytes = (NVME_OPTIMIZER_BYTES if off.optimizer == "nvme" else 0.0) * shard
    nvme_bytes += PARAM_H2D_BYTES * shard if off.params == "nvme" else 0.0
    return OptimizerStep(cpu, h2d, nvme_bytes / r.nvme_bytes_s if nvme_bytes else 0.0)


def exposed_optimizer_s(cfg: RunConfig, step: OptimizerStep, window_s: float) -> float:
    """Seconds of the host optimizer step on the critical path: all of it, or with delayed parameter update only
    what the next step's forward and backward (``window_s``) do not cover (ZeRO-Offload Sec. 5.2)."""
    if cfg.training.offload.delayed_param_update:
        return max(0.0, step.total_s - window_s)
    return step.total_s
