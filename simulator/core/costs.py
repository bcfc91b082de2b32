"""Costs: the seconds an op takes on a given GPU profile and cluster (forward and backward).

The single place where workload ops meet the hardware models: training (:func:`op_cost`), serving
iterations, gradient compression and the plan search reach :class:`~hwmodels.profile.Profile`'s
kernel timings and :mod:`hwmodels.collectives` only through the functions here
(``tests/test_architecture.py`` checks it). Backward of a GEMM is two GEMMs of the same FLOPs
(input gradient and weight gradient); backward of attention is the flash backward; a collective's
backward is its transpose (all-gather <-> reduce-scatter).

Kernels: :func:`gemm_time`, :func:`attention_prefill_time`, :func:`attention_decode_time`,
:func:`memory_op_time`, :func:`optimizer_step_time`, :func:`launch_floor_s`. Communication:
:func:`comm_time` (with a :class:`CommAlgorithm`), :func:`routed_all_to_all_time`. Work for the
energy model: :func:`op_work`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hwmodels import collectives
from hwmodels.dtypes import bytes_per_element
from hwmodels.profile import Family, Profile
from hwmodels.topology import Cluster, CommGroup
from simulator.core.workload import Op

_BACKWARD_COLLECTIVE = {"all_gather": "reduce_scatter", "reduce_scatter": "all_gather"}

#: Bytes per activation and output element of a GEMM whose weights have their own width
#: (:func:`gemm_time` with ``weight_dtype``): 16 bits, the serving iteration model's convention.
ACTIVATION_BYTES = 2.0


@dataclass(frozen=True)
class OpCost:
    """An op with its forward and backward time on one rank."""

    op: Op
    forward_s: float
    backward_s: float  # input gradient + weight gradient
    bound: str  # what limits the forward kernel: compute, memory, network or launch
    backward_weight_s: float = 0.0  # the weight-gradient part (zero-bubble schedules defer it)

    @property
    def backward_input_s(self) -> float:
        """The input-gradient part of the backward."""
        return self.backward_s - self.backward_weight_s


@dataclass(frozen=True)
class CommAlgorithm:
    """How a run's all-reduce / all-gather / reduce-scatter pick their algorithm.

    ``name`` is ``parallel.collective_algorithm`` (a rule such as ``default``/``auto`` or an
    algorithm of :mod:`hwmodels.collectives`); ``features`` what the nodes offer (NVLS).
    """

    name: str = "default"
    features: frozenset[str] = frozenset()

    @classmethod
    def of(cls, name: str, cluster: Cluster) -> CommAlgorithm:
        """The setting for ``cluster``; a one-line error if its nodes cannot run ``name``."""
        features = collectives.node_features(cluster)
        collectives.check_algorithm(
            name, features, where=f"node {cluster.node.id}", what="parallel.collective_algorithm"
        )
        return cls(name, features)


#: The fitted envelope rule (``default``): what callers without a run config get -- serving's tensor-parallel
#: all-reduce, whose validation was fitted with it. Training and the plan search run the config's
#: ``parallel.collective_algorithm`` (``auto`` by default) through :meth:`CommAlgorithm.of`.
DEFAULT_ALGORITHM = CommAlgorithm()


def comm_time(kind: str, nbytes: float, group: CommGroup, algorithm: CommAlgorithm = DEFAULT_ALGORITHM) -> float:
    """Seconds for a collective of ``kind`` moving a ``nbytes`` buffer over ``group``.

    All-reduce, all-gather and reduce-scatter run the ``algorithm`` setting; all-to-all and
    point-to-point transfers have one cost model each.
    """
    if kind == "ring_exchange":  # context-parallel ring attention: cp-1 neighbour hops
        return (group.size - 1) * collectives.send_recv_time(nbytes, group)
    fn = {
        "all_reduce": collectives.all_reduce_time,
        "all_gather": collectives.all_gather_time,
        "reduce_scatter": collectives.reduce_scatter_time,
    }.get(kind)
    if fn is not None:
        return fn(nbytes, group, algorithm.name, features=algorithm.features)
    if kind == "all_to_all":
        return collectives.all_to_all_time(nbytes, group)
    return collectives.send_recv_time(nbytes, group)


# ---- kernels ----------------------------------------------------------------------------------


def gemm_time(
    profile: Profile,
    M: int,
    N: int,
    K: int,
    compute_dtype: str = "bf16",
    *,
    weight_dtype: str | None = None,
    floor: bool = True,
) -> float:
    """Seconds for ``y[M,N] = x[M,K] @ W[N,K].T`` on the ``compute_dtype`` units.

    Without ``weight_dtype`` every operand is a ``compute_dtype`` tensor (training). With it (serving:
    W8A8 fp8/int8, weight-only int4 dequantised in the kernel, or plain bf16) the weights are read at
    their own width and the activations and output at :data:`ACTIVATION_BYTES`; the sizes are then
    not re-checked (the serving model memoises these per token count). ``floor=False`` leaves out
    the host issue floor.
    """
    if weight_dtype is None:
        return profile.gemm_time(M, N, K, compute_dtype, floor)
    flops = 2.0 * M * N * K
    nbytes = ACTIVATION_BYTES * (M * K + M * N) + bytes_per_element(weight_dtype) * N * K
    eff = profile.gemm_shape_efficiency(M, N, K, compute_dtype)
    return profile.kernel_time("gemm", flops, nbytes, compute_dtype, floor, eff)


def attention_prefill_time(
    profile: Profile,
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
    """Seconds for flash attention of ``q_len`` new tokens per sequence against ``kv_len`` keys.

    ``kv_len`` defaults to ``q_len`` (a fresh prompt or a training sequence); above it, the chunk
    follows a cached prefix. ``backward`` gives the backward pass alone. See
    :meth:`hwmodels.profile.Profile.attention_prefill_time` for the FLOP and byte counts.
    """
    return profile.attention_prefill_time(
        batch,
        q_len,
        heads,
        kv_heads,
        head_dim,
        dtype,
        kv_len=kv_len,
        v_head_dim=v_head_dim,
        causal=causal,
        backward=backward,
        floor=floor,
    )


def attention_decode_time(
    profile: Profile,
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
    """Seconds for one query token per sequence against its KV cache (stored in ``kv_dtype``).

    ``kv_len`` is one context length for all ``batch`` sequences or one per sequence; the kernel
    streams every cached byte. See :meth:`hwmodels.profile.Profile.attention_decode_time`.
    """
    return profile.attention_decode_time(
        batch, kv_len, heads, kv_heads, head_dim, dtype, kv_dtype=kv_dtype, v_head_dim=v_head_dim, floor=floor
    )


def memory_op_time(profile: Profile, nbytes: float, floor: bool = True) -> float:
    """Seconds for a memory-bound (elementwise) kernel that reads plus writes ``nbytes`` of HBM."""
    return profile.memory_op_time(nbytes, floor)


#: The least a kernel costs when a CUDA graph replays it (no host issue floor): a minimal kernel runs for
#: about 2 us and graph replay leaves ~0.5 us between kernels (NVIDIA, "Getting Started with CUDA Graphs":
#: a 2.9 us kernel costs 3.4 us per launch in a graph vs 3.8 us stream-launched). An estimate until the
#: calibration's CUDA-graph decode run fits it.
CUDA_GRAPH_KERNEL_FLOOR_S = 2.5e-6


def graph_kernel_time(device_s: float) -> float:
    """A kernel's time under CUDA-graph replay, from its device time without the host floor."""
    return max(CUDA_GRAPH_KERNEL_FLOOR_S, device_s)


def launch_floor_s(profile: Profile, family: Family = "gemm", dtype: str | None = None) -> float:
    """The host issue floor of one kernel of ``family``: no kernel of it costs less (launch-bound)."""
    return profile.curve(family, dtype).floor_s


def optimizer_step_time(profile: Profile, nbytes: float, launches: float = 0.0) -> float:
    """Seconds of an optimizer step that streams ``nbytes`` of HBM (memory-bound), plus ``launches`` more
    kernels beyond the first at the elementwise launch floor (foreach / per-tensor implementations)."""
    return memory_op_time(profile, nbytes) + launches * launch_floor_s(profile, "membound")


# ---- ops ----------------------------------------------------------------------------------------


def _bound(op: Op, t: float, profile: Profile, dtype: str) -> str:
    if op.kind == "comm":
        return "network"
    floor = launch_floor_s(profile, "gemm" if op.kind == "gemm" else ("attn_fwd" if op.kind == "attn" else "membound"))
    if t <= floor * op.count * 1.0000001:
        return "launch"
    if op.kind == "mem":
        return "memory"
    t_c = op.flops / profile.peak_flops(dtype)
    t_m = op.bytes / profile.bandwidth_bytes_s
    return "compute" if t_c >= t_m else "memory"


def op_cost(
    op: Op,
    profile: Profile,
    groups: dict[str, CommGroup],
    dtype: str = "bf16",
    algorithm: CommAlgorithm = DEFAULT_ALGORITHM,
) -> OpCost:
    """Forward and backward seconds of ``op`` on one rank (in the op's own dtype when it has one).

    Collectives run the ``algorithm`` setting (``parallel.collective_algorithm``)."""
    dtype = op.dtype or dtype
    if op.phase != "both":
        return _one_pass_cost(op, profile, groups, dtype, algorithm)
    wgrad = 0.0
    if op.kind == "gemm" and op.batched:  # one kernel over all count matrices; both operands are activations
        M, N, K = op.gemm  # type: ignore[misc]
        c = op.count
        fwd = profile.gemm_time(c * M, N, K, dtype)
        bwd = profile.gemm_time(c * M, K, N, dtype) + profile.gemm_time(c * N, K, M, dtype)
    elif op.kind == "gemm":
        M, N, K = op.gemm  # type: ignore[misc]
        fwd = profile.gemm_time(M, N, K, dtype) * op.count
        wgrad = profile.gemm_time(N, K, M, dtype) * op.count
        bwd = profile.gemm_time(M, K, N, dtype) * op.count + wgrad
    elif op.kind == "attn":
        a = op.attn
        split = a.get("split", 1)  # context parallelism: each rank does 1/cp of the causal work
        args = (a["batch"], a["q_len"], a["heads"], a["kv_heads"], a["head_dim"], dtype)
        fwd = profile.attention_prefill_time(*args, kv_len=a["kv_len"], v_head_dim=a["v_head_dim"]) / split
        bwd = profile.attention_prefill_time(*args, kv_len=a["kv_len"], v_head_dim=a["v_head_dim"], backward=True)
        bwd /= split
    elif op.kind == "mem":
        c = op.count  # bytes are totals over the count kernels
        fwd = profile.memory_op_time(op.bytes / c) * c
        # without listed backward kernels: one reading the saved input and the incoming gradient
        bwd = sum(profile.memory_op_time(b / c) for b in op.bwd_bytes) * c if op.bwd_bytes else 2.0 * fwd
    else:
        group = groups[op.group or "tp"]
        fwd = comm_time(op.collective or "send_recv", op.bytes, group, algorithm)
        back = _BACKWARD_COLLECTIVE.get(op.collective or "", op.collective or "send_recv")
        bwd = comm_time(back, op.bytes, group, algorithm)
    return OpCost(op=op, forward_s=fwd, backward_s=bwd, bound=_bound(op, fwd, profile, dtype), backward_weight_s=wgrad)


def _kernel_time(op: Op, profile: Profile, groups: dict[str, CommGroup], dtype: str, algorithm: CommAlgorithm) -> float:
    """Seconds of ``op`` run once as written (no derived backward)."""
    if op.kind == "gemm":
        M, N, K = op.gemm  # type: ignore[misc]
        return profile.gemm_time(M * (op.count if op.batched else 1), N, K, dtype) * (1 if op.batched else op.count)
    if op.kind == "attn":
        a = op.attn
        args = (a["batch"], a["q_len"], a["heads"], a["kv_heads"], a["head_dim"], dtype)
        t = profile.attention_prefill_time(
            *args, kv_len=a["kv_len"], v_head_dim=a["v_head_dim"], backward=bool(a.get("backward", 0))
        )
        return t / a.get("split", 1)
    if op.kind == "mem":
        return profile.memory_op_time(op.bytes / op.count) * op.count
    return comm_time(op.collective or "send_recv", op.bytes, groups[op.group or "tp"], algorithm)


def _one_pass_cost(
    op: Op, profile: Profile, groups: dict[str, CommGroup], dtype: str, algorithm: CommAlgorithm
) -> OpCost:
    """A kernel that runs in one pass only (``op.phase`` ``fwd`` or ``bwd``)."""
    t = _kernel_time(op, profile, groups, dtype, algorithm)
    if op.phase == "fwd":
        return OpCost(op=op, forward_s=t, backward_s=0.0, bound=_bound(op, t, profile, dtype))
    bound = _bound(op, t, profile, dtype)
    return OpCost(op=op, forward_s=0.0, backward_s=t, bound=bound, backward_weight_s=t if op.wgrad else 0.0)


def op_work(ops: list[Op], profile: Profile, dtype: str) -> tuple[float, float]:
    """Forward + backward work of ``ops``: (math as seconds at full peak, HBM traffic as seconds at full
    bandwidth). Backward is 2x a GEMM's FLOPs and 2.5x attention's; elementwise backward reads twice;
    a collective reads and writes its buffer in each direction. Clock-independent (energy model)."""
    tensor = hbm = 0.0
    bw = profile.bandwidth_bytes_s
    for op in ops:
        if op.phase != "both":  # a kernel of one pass, counted as written
            if op.kind in ("gemm", "attn"):
                tensor += op.flops / profile.peak_flops(op.dtype or dtype)
            hbm += (2.0 if op.kind == "comm" else 1.0) * op.bytes / bw
        elif op.kind == "mem" and op.bwd_bytes:
            hbm += (op.bytes + sum(op.bwd_bytes)) / bw
        elif op.kind in ("gemm", "attn"):
            tensor += op.flops * (3.0 if op.kind == "gemm" else 3.5) / profile.peak_flops(op.dtype or dtype)
            hbm += 3.0 * op.bytes / bw
        elif op.kind == "mem":
            hbm += 3.0 * op.bytes / bw
        else:
            hbm += 4.0 * op.bytes / bw
    return tensor, hbm


def routed_all_to_all_time(intra_bytes: float, inter_bytes: float, group: CommGroup) -> float:
    """Seconds of an uneven all-to-all (MoE dispatch/combine) set by its busiest rank.

    ``intra_bytes`` cross the node fabric and ``inter_bytes`` the rank's NIC share, at once.
    """
    net = group.all_to_all_net_bytes_s / group.local if group.spans_nodes else float("inf")
    t_intra = intra_bytes / group.intra_bytes_s if group.local > 1 else 0.0
    return max(t_intra, inter_bytes / net) + group.hop_latency_s + collectives.BASE_LATENCY_S
