"""Parameter-server data parallelism: gradients pushed to CPU servers over RDMA, sums pulled back.

BytePS (Jiang et al., OSDI'20; github.com/bytedance/byteps, docs/rationale.md) observes that a ring all-reduce
sends and receives 2(n-1)/n times the gradient through every NIC, while a worker of a parameter server sends it
once and receives it once -- if the servers' own NICs keep up, which needs server bandwidth to match the
workers' ("The total bandwidth of the servers must be equal or larger than the total bandwidth of workers",
docs/best-practice.md). ``parallel.parameter_server`` (:class:`simulator.core.host_tiers.ParameterServerSpec`)
picks the servers; one push/pull of ``M`` bytes per worker node over ``n`` worker nodes costs:

* **Network** -- workers' NIC bandwidth ``B`` (the group's share of its nodes' NICs, as the collectives see it),
  ``k`` server machines of bandwidth ``B_s`` (the same share of each). ``dedicated``: every byte goes to a
  server, ``t = M max(1/B, n/(k B_s))``. ``colocated`` (BytePS): a fraction ``x`` of the gradient goes to the
  ``k`` CPU machines and the rest to servers on the GPU nodes themselves; a GPU node then moves
  ``M (a + x (1 - a))`` with ``a = 2(n-1)/n`` and a CPU machine ``n M x / k``, and the best ``x`` equalises the
  two (BytePS Sec. 3.1; with ``B_s = B`` this is its ``2n(n-1)M / ((n^2 + kn - 2k) B)``): ``k = 0`` gives
  the all-reduce's ``a M / B``, ``k >= n`` the PS optimum ``M / B``.
* **Summation** -- the servers add on the CPU, streaming :data:`SUM_DRAM_BYTES` of DRAM per pushed byte at the
  node's STREAM bandwidth (:data:`simulator.training.offload.DRAM_STREAM_EFFICIENCY`); BytePS's "summation
  service" is memory-bound.
* **Inside a node** -- BytePS reduce-scatters over NVLink/PCIe before pushing and all-gathers after pulling.

Partitioned tensors pipeline these stages (BytePS partitions tensors into small chunks), so a push/pull costs
the slowest stage plus one network round trip. A group inside one node uses NCCL (BytePS's non-distributed mode).
"""

from __future__ import annotations

from dataclasses import replace

from hwmodels.topology import CommGroup
from simulator.core.config import RunConfig
from simulator.core.costs import CommAlgorithm, comm_time
from simulator.training.offload import DRAM_STREAM_EFFICIENCY

#: Server DRAM traffic per pushed byte: the NIC writes it (1), the sum reads it and the accumulator and writes the
#: accumulator (3), the NIC reads the sum once per pull (1; one pull per push). Derived from the data path above.
SUM_DRAM_BYTES = 5.0


def _lines(
    nbytes: float, n: int, k: int, rates: tuple[float, float, float, float], colocated: bool
) -> list[tuple[float, float]]:
    """Each stage's seconds as a line ``(intercept, slope)`` in the share ``x`` sent to the CPU machines: the
    GPU node's NIC, the CPU machines' NICs, their summation, and the colocated servers' summation. ``rates``:
    (GPU-node NIC, CPU-machine NIC, CPU-machine summation, GPU-node summation) in bytes/s."""
    b_w, b_s, d_s, d_w = rates
    a = 2.0 * (n - 1) / n
    lines = [(nbytes * a / b_w, nbytes * (1.0 - a) / b_w)] if colocated else [(nbytes / b_w, 0.0)]
    if k:
        lines += [(0.0, n * nbytes / (k * b_s)), (0.0, SUM_DRAM_BYTES * n * nbytes / (k * d_s))]
    if colocated:
        cpu = SUM_DRAM_BYTES * (n - 1) * nbytes / (n * d_w)
        lines.append((cpu, -cpu))
    return lines


def balance(nbytes: float, n: int, k: int, rates: tuple[float, float, float, float], colocated: bool) -> float:
    """Seconds of the slowest push/pull stage at the best share ``x`` for the CPU machines (see the module
    docstring): 1 for dedicated servers, 0 without CPU machines, else the ``x`` minimising the slowest stage
    (the stages are lines in ``x``, so the optimum is an end point or where two of them cross)."""
    lines = _lines(nbytes, n, k, rates, colocated)
    if not colocated:
        return max(c + m for c, m in lines)
    if k == 0:
        return max(c for c, _ in lines)
    xs = {0.0, 1.0}
    for i, (c1, m1) in enumerate(lines):
        for c2, m2 in lines[i + 1 :]:
            if m1 != m2:
                x = (c2 - c1) / (m1 - m2)
                if 0.0 < x < 1.0:
                    xs.add(x)
    return min(max(c + m * x for c, m in lines) for x in xs)


def push_pull_s(cfg: RunConfig, nbytes: float, group: CommGroup, algorithm: CommAlgorithm | None = None) -> float:
    """Seconds for one push/pull of ``nbytes`` gradient bytes per rank of data-parallel ``group``."""
    cluster = cfg.cluster.resolve()
    algorithm = algorithm or CommAlgorithm.of(cfg.parallel.collective_algorithm, cluster)
    if not group.spans_nodes:  # one node: BytePS runs NCCL (non-distributed mode)
        return comm_time("all_reduce", nbytes, group, algorithm)
    spec = cfg.parallel.parameter_server
    share = group.net_bytes_s / cluster.node_nic_bytes_s  # this group's part of a node's (and a server's) NICs
    server_nic = spec.server_nic_gbps * 1e9 if spec.server_nic_gbps else cluster.node_nic_bytes_s
    node_dram = cluster.node.host_figure("host_memory_bandwidth_gbps", "parallel.dp_mode=parameter_server") * 1e9
    server_dram = spec.server_memory_bandwidth_gbps * 1e9 if spec.server_memory_bandwidth_gbps else node_dram
    eff = DRAM_STREAM_EFFICIENCY * share
    rates = (group.net_bytes_s, server_nic * share, server_dram * eff, node_dram * eff)
    slowest = balance(nbytes, group.nodes, spec.servers, rates, spec.placement == "colocated")
    # inside the node: reduce-scatter before the push, all-gather after the pull (NVLink or PCIe)
    local = replace(group, size=group.local, nodes=1, net_bytes_s=0.0)
    intra = 0.0
    if group.local > 1:
        scatter = comm_time("reduce_scatter", nbytes, local, algorithm)
        intra = scatter + comm_time("all_gather", nbytes, local, algorithm)
    return max(slowest, intra) + 2.0 * group.net_latency_s
