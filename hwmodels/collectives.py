"""Collective communication cost: latency + bytes / bandwidth over a :class:`CommGroup`.

Algorithms (``n`` ranks, ``g`` per node, ``m`` nodes, message ``S`` bytes, per-hop latency a):

* ring: all-reduce moves ``2(n-1)/n * S`` through the slowest hop, in ``2(n-1)`` steps;
  all-gather and reduce-scatter move ``(n-1)/n * S`` in ``n-1`` steps (S = the full buffer).
* tree: NCCL's intra-node chain + inter-node double binary tree; the same bandwidth term as the
  ring, but ``2((g-1) a_intra + ceil(log2 m) a_net)`` latency, so it wins for small messages.
* hierarchical: reduce-scatter inside the node, all-reduce of ``S/g`` across nodes on this
  rank's NIC share, all-gather inside the node (2D / NVLS-style).
* ``auto`` picks the fastest, as NCCL's tuner does.

Every collective also pays ``BASE_LATENCY_S`` once (kernel launch and synchronisation): the
DGX A100 small-message all-reduce latencies in nccl_measured.csv (2/4/8 GPUs: 10.0/16.9/33.7 us)
are 6 us + 2(n-1) x 2 us.

Bus bandwidth (what nccl-tests prints) is ``algbw * 2(n-1)/n`` for all-reduce, so a ring's
predicted bus bandwidth equals the bandwidth of its slowest hop.
"""

from __future__ import annotations

import math
from typing import Literal

from hwmodels.errors import ClusterSimError
from hwmodels.topology import CommGroup

#: Fixed cost per collective call, fitted to nccl-tests small-message latencies (see module doc).
BASE_LATENCY_S = 6.0e-6

Algorithm = Literal["auto", "ring", "tree", "hierarchical"]
ALGORITHMS: tuple[str, ...] = ("auto", "ring", "tree", "hierarchical")


def _check(nbytes: float, algorithm: str) -> None:
    if nbytes < 0:
        raise ClusterSimError(f"message size must be >= 0 bytes, got {nbytes}")
    if algorithm not in ALGORITHMS:
        raise ClusterSimError(f"unknown collective algorithm {algorithm!r}; use one of: {', '.join(ALGORITHMS)}")


def _tree_latency(group: CommGroup) -> float:
    net_levels = math.ceil(math.log2(group.nodes)) if group.spans_nodes else 0
    return 2.0 * ((group.local - 1) * group.intra_latency_s + net_levels * group.net_latency_s)


def _ring_all_reduce(nbytes: float, group: CommGroup) -> float:
    n = group.size
    return 2.0 * (n - 1) / n * nbytes / group.ring_bytes_s + 2.0 * (n - 1) * group.hop_latency_s


def _tree_all_reduce(nbytes: float, group: CommGroup) -> float:
    n = group.size
    return 2.0 * (n - 1) / n * nbytes / group.ring_bytes_s + _tree_latency(group)


def _hier_all_reduce(nbytes: float, group: CommGroup) -> float:
    g, m = group.local, group.nodes
    t = 0.0
    if g > 1:  # reduce-scatter then all-gather inside the node
        t += 2.0 * ((g - 1) / g * nbytes / group.intra_bytes_s + (g - 1) * group.intra_latency_s)
    if m > 1:  # each rank all-reduces its 1/g shard across nodes on its own NIC share
        per_rank = group.net_bytes_s / g
        t += 2.0 * (m - 1) / m * (nbytes / g) / per_rank + 2.0 * math.ceil(math.log2(m)) * group.net_latency_s
    return t


def all_reduce_time(nbytes: float, group: CommGroup, algorithm: Algorithm = "auto") -> float:
    """Seconds to all-reduce a buffer of ``nbytes`` across ``group``."""
    _check(nbytes, algorithm)
    if group.size == 1 or nbytes == 0:
        return 0.0
    options = {"ring": _ring_all_reduce, "tree": _tree_all_reduce, "hierarchical": _hier_all_reduce}
    if algorithm == "auto":
        return BASE_LATENCY_S + min(_ring_all_reduce(nbytes, group), _tree_all_reduce(nbytes, group))
    return BASE_LATENCY_S + options[algorithm](nbytes, group)


def all_gather_time(nbytes: float, group: CommGroup, algorithm: Algorithm = "auto") -> float:
    """Seconds to all-gather into a buffer of ``nbytes`` (the gathered size) across ``group``."""
    _check(nbytes, algorithm)
    if group.size == 1 or nbytes == 0:
        return 0.0
    n = group.size
    bw = (n - 1) / n * nbytes / group.ring_bytes_s
    times = {
        "ring": bw + (n - 1) * group.hop_latency_s,
        "tree": bw + _tree_latency(group) / 2.0,
        "hierarchical": 0.5 * _hier_all_reduce(nbytes, group),
    }
    best = min(times["ring"], times["tree"]) if algorithm == "auto" else times[algorithm]
    return BASE_LATENCY_S + best


def reduce_scatter_time(nbytes: float, group: CommGroup, algorithm: Algorithm = "auto") -> float:
    """Seconds to reduce-scatter a buffer of ``nbytes`` (the full input) across ``group``."""
    return all_gather_time(nbytes, group, algorithm)


def all_to_all_time(nbytes: float, group: CommGroup) -> float:
    """Seconds for an all-to-all in which every rank holds ``nbytes`` split evenly over ranks.

    The share for ranks on the same node crosses the intra-node fabric, the rest the rank's NIC
    share; both run at once, so the slower decides.
    """
    _check(nbytes, "auto")
    if group.size == 1 or nbytes == 0:
        return 0.0
    n, g = group.size, group.local
    intra = (g - 1) / n * nbytes / group.intra_bytes_s if g > 1 else 0.0
    inter = 0.0
    if group.spans_nodes:
        inter = (n - g) / n * nbytes / (group.net_bytes_s / g)
    return BASE_LATENCY_S + max(intra, inter) + group.hop_latency_s


def send_recv_time(nbytes: float, group: CommGroup) -> float:
    """Seconds for one point-to-point transfer between neighbours of ``group`` (e.g. PP stages).

    A two-rank group on one node uses the intra-node fabric, across nodes the rank's NIC share.
    """
    _check(nbytes, "auto")
    if nbytes == 0:
        return 0.0
    if group.spans_nodes:
        return nbytes / (group.net_bytes_s / group.local) + group.net_latency_s
    return nbytes / group.intra_bytes_s + group.intra_latency_s


def bus_bandwidth(kind: str, nbytes: float, seconds: float, n: int) -> float:
    """nccl-tests' bus bandwidth (bytes/s) for a collective of ``kind`` that took ``seconds``."""
    factor = {"all_reduce": 2.0 * (n - 1) / n, "all_gather": (n - 1) / n, "reduce_scatter": (n - 1) / n}
    if kind not in factor:
        raise ClusterSimError(f"bus bandwidth is defined for {', '.join(factor)}, not {kind!r}")
    return nbytes / seconds * factor[kind]
