"""Collective communication cost: latency + bytes / bandwidth over a :class:`CommGroup`.

Algorithms (``n`` ranks, ``g`` per node, ``m`` nodes, message ``S`` bytes, per-hop latency a):

* ring: all-reduce moves ``2(n-1)/n * S`` through the slowest hop, in ``2(n-1)`` steps;
  all-gather and reduce-scatter move ``(n-1)/n * S`` in ``n-1`` steps (S = the full buffer).
* tree: NCCL's intra-node chain + inter-node double binary tree; the same bandwidth term as the
  ring, but ``2((g-1) a_intra + ceil(log2 m) a_net)`` latency, so it wins for small messages.
  (NCCL's tuner offers tree for all-reduce only; the all-gather/reduce-scatter tree here charges
  half that latency, close to what NCCL >= 2.23's PAT does at one rank per node.)
* hierarchical: reduce-scatter inside the node over NVLink, all-reduce of ``S/g`` across nodes on
  this rank's NIC share, all-gather inside the node: three collectives one after the other, as a
  framework composes them (Horovod's hierarchical all-reduce, 2D all-reduce). It sends only
  ``2(m-1)/m * S`` per node over the network instead of a flat ring's ``2(n-1)/n * S`` and pays
  ``2(g-1)`` NVLink + ``2 ceil(log2 m)`` network latencies instead of ``2(n-1)`` network ones, at
  the price of the two intra-node phases.
* nvls (NVLink SHARP): the NVSwitch reduces in the switch (multimem ld_reduce) and multicasts the
  result, so each GPU moves ``(1 + 1/g) S`` per direction instead of the ring's ``2(g-1)/g S``
  (theory: 14/9 = 1.56x the ring's bus bandwidth at g = 8). Only where the node preset says its
  NVSwitch reduces in-switch (``nvls: true`` in nodes.yaml: NVSwitch gen 3 of H100/H200/H800 HGX,
  not A100's gen 2) and the group has >= 2 GPUs on the node. Across nodes it is NCCL's NVLSTree:
  NVLS inside the node pipelined with a tree across nodes on each rank's ``S/g`` shard. All-reduce
  only: NCCL >= 2.19 also runs all-gather/reduce-scatter over NVLS in one node, but no measurement
  here sets their bandwidth, so a forced ``nvls`` charges them as the ring.

Choosing (``algorithm=``; the run config's ``parallel.collective_algorithm``):

* ``default``: the faster of ring and tree for every call, the model's rule before the choice was
  configurable; the published-table validation was fitted with it.
* ``auto``: NCCL's tuner (``ncclTopoTuneModel`` / ``ncclTopoGetAlgoTime`` in NVIDIA/nccl
  src/graph/tuning.cc): predict latency + bytes / bandwidth for every algorithm NCCL could run on
  this group and collective (ring, tree, nvls where the node has it) and take the fastest. Latency
  makes tree/NVLSTree win small messages at scale and bandwidth makes ring (or nvls) win large ones.
  ``hierarchical`` is not a candidate: NCCL has no such algorithm, a framework has to ask for it.
* a registered name forces that algorithm. Where it cannot run on a group or does not implement a
  collective (nvls with one GPU of the group per node, nvls all-gather) the ring runs, as NCCL
  re-enables the ring when ``NCCL_ALGO`` leaves a collective nothing (tuning.cc, "at least set
  ring algo available").

Every collective also pays ``BASE_LATENCY_S`` once (kernel launch and synchronisation): the
DGX A100 small-message all-reduce latencies in nccl_measured.csv (2/4/8 GPUs: 10.0/16.9/33.7 us)
are 6 us + 2(n-1) x 2 us.

Bus bandwidth (what nccl-tests prints) is ``algbw * 2(n-1)/n`` for all-reduce, so a ring's
predicted bus bandwidth equals the bandwidth of its slowest hop.

Adding an algorithm is one :func:`register_algorithm` call at the end of this file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hwmodels.errors import ClusterSimError
from hwmodels.topology import CommGroup

if TYPE_CHECKING:
    from hwmodels.topology import Cluster

#: Fixed cost per collective call, fitted to nccl-tests small-message latencies (see module doc).
BASE_LATENCY_S = 6.0e-6

#: NVLS fixed latency: NVIDIA/nccl src/graph/tuning.cc hwLat[NVLINK][NVLS][Simple] = 23 us (NVLS runs
#: the Simple protocol only; baseLat of NVLS/NVLSTree is 0), read through the search tool at NCCL
#: commit b6475625 (has NVLS and MNNVL, not yet PAT: about 2.20-2.22). Check: a 2-node x 8-GPU NDR
#: all-reduce of 4 B - 1 KB (NVLSTree) measured 46 us (nccl_measured.csv); this model gives
#: 6 + 23 + 2 x 5 = 39 us (-15%).
NVLS_LATENCY_S = 23.0e-6

#: NVLS bandwidth relative to the ring's achieved NVLink bandwidth, for the ``(1 + 1/g) S`` traffic
#: above. Fitted to nccl_measured.csv: dgx-h100 8-GPU NVLS all-reduce 480 GB/s busbw (ring ~370) =
#: 1.75 x 0.836 x 369 GB/s (nvlink4 450 x 0.82) / 1.125. Check: hgx-h800 predicts 208 GB/s busbw,
#: measured 215 (-3%). (NCCL's tuner converts NVLS bus to algorithm bandwidth with 5/6 where the ring
#: uses n / 2(n-1); tuning.cc.)
NVLS_EFFICIENCY = 0.836

COLLECTIVE_KINDS: tuple[str, ...] = ("all_reduce", "all_gather", "reduce_scatter")

#: Node capabilities an algorithm may need, and how to say that a node lacks one.
FEATURES: dict[str, str] = {
    "nvls": "NVLink SHARP (an NVSwitch that reduces in-switch, `nvls: true` in nodes.yaml)",
}

#: Names that choose among the registered algorithms rather than naming one.
RULES: tuple[str, ...] = ("default", "auto")

#: What ``default`` takes the faster of (the rule before the algorithm was configurable).
DEFAULT_RULE: tuple[str, ...] = ("ring", "tree")

#: Seconds of one collective on a group, not counting ``BASE_LATENCY_S``.
CostFn = Callable[[float, CommGroup], float]


def _everywhere(kind: str, group: CommGroup) -> bool:
    return True


@dataclass(frozen=True)
class CollectiveAlgorithm:
    """One algorithm: its cost per collective kind and where it can run."""

    name: str
    costs: Mapping[str, CostFn]  # collective kind -> seconds without BASE_LATENCY_S
    runs_on: Callable[[str, CommGroup], bool] = _everywhere  # (kind, group) -> can it run there
    requires: str | None = None  # a FEATURES key the node must have
    tuned: bool = True  # whether ``auto`` (NCCL's tuner) considers it
    summary: str = field(default="", compare=False)

    def usable(self, kind: str, group: CommGroup, features: Collection[str]) -> bool:
        """Whether this algorithm runs ``kind`` on ``group`` on nodes with ``features``."""
        return kind in self.costs and (self.requires is None or self.requires in features) and self.runs_on(kind, group)


_REGISTRY: dict[str, CollectiveAlgorithm] = {}


def register_algorithm(algo: CollectiveAlgorithm) -> CollectiveAlgorithm:
    """Add ``algo`` to the registry; a name already taken (or a rule's name) is refused."""
    if algo.name in _REGISTRY or algo.name in RULES:
        raise ClusterSimError(f"collective algorithm {algo.name!r} is already registered; pick another name")
    unknown = sorted(set(algo.costs) - set(COLLECTIVE_KINDS))
    if unknown or not algo.costs:
        raise ClusterSimError(
            f"collective algorithm {algo.name!r}: costs must map some of {', '.join(COLLECTIVE_KINDS)}, got {unknown}"
        )
    if algo.requires is not None and algo.requires not in FEATURES:
        raise ClusterSimError(
            f"collective algorithm {algo.name!r} requires unknown feature {algo.requires!r}; "
            f"known: {', '.join(FEATURES)}"
        )
    _REGISTRY[algo.name] = algo
    return algo


def algorithm_names() -> tuple[str, ...]:
    """Every value ``algorithm=`` accepts: the rules, then the registered algorithms."""
    return (*RULES, *_REGISTRY)


def get_algorithm(name: str) -> CollectiveAlgorithm:
    """A registered algorithm by name."""
    if name not in _REGISTRY:
        raise ClusterSimError(f"unknown collective algorithm {name!r}; use one of: {', '.join(algorithm_names())}")
    return _REGISTRY[name]


def node_features(cluster: Cluster) -> frozenset[str]:
    """The FEATURES a resolved cluster's nodes offer (NVLS: the preset's NVSwitch, not overridden)."""
    node = cluster.node
    nvls = node.nvls and node.switched and cluster.intra.id == node.intra_link
    return frozenset({"nvls"} if nvls else ())


def check_algorithm(
    name: str,
    features: Collection[str] = (),
    *,
    where: str = "this node",
    what: str = "collective algorithm",
) -> None:
    """One-line error unless ``name`` is a rule or a registered algorithm the node can run."""
    if name in RULES:
        return
    if name not in _REGISTRY:
        raise ClusterSimError(f"unknown {what} {name!r}; use one of: {', '.join(algorithm_names())}")
    req = _REGISTRY[name].requires
    if req is not None and req not in features:
        ok = [n for n in algorithm_names() if n in RULES or _REGISTRY[n].requires in (None, *features)]
        raise ClusterSimError(
            f"{what} {name!r} needs {FEATURES[req]}, which {where} lacks; use one of: {', '.join(ok)}"
        )


def _check(nbytes: float, algorithm: str, features: Collection[str]) -> None:
    if nbytes < 0:
        raise ClusterSimError(f"message size must be >= 0 bytes, got {nbytes}")
    check_algorithm(algorithm, features)


def _candidates(kind: str, group: CommGroup, algorithm: str, features: Collection[str]) -> list[str]:
    if algorithm == "default":
        return list(DEFAULT_RULE)
    if algorithm == "auto":
        return [a.name for a in _REGISTRY.values() if a.tuned and a.usable(kind, group, features)]
    return [algorithm] if _REGISTRY[algorithm].usable(kind, group, features) else ["ring"]


def _best(kind: str, nbytes: float, group: CommGroup, algorithm: str, features: Collection[str]) -> tuple[str, float]:
    """The algorithm that runs and its seconds without BASE_LATENCY_S (ties: registry order)."""
    names = _candidates(kind, group, algorithm, features)
    return min(((n, _REGISTRY[n].costs[kind](nbytes, group)) for n in names), key=lambda nt: nt[1])


def choose_algorithm(
    kind: str, nbytes: float, group: CommGroup, algorithm: str = "auto", *, features: Collection[str] = ()
) -> str:
    """Name of the algorithm that ``algorithm`` runs for this collective (a rule picks per call)."""
    if kind not in COLLECTIVE_KINDS:
        raise ClusterSimError(f"collective kind must be one of {', '.join(COLLECTIVE_KINDS)}, not {kind!r}")
    _check(nbytes, algorithm, features)
    return _best(kind, nbytes, group, algorithm, features)[0]


def _time(kind: str, nbytes: float, group: CommGroup, algorithm: str, features: Collection[str]) -> float:
    _check(nbytes, algorithm, features)
    if group.size == 1 or nbytes == 0:
        return 0.0
    return BASE_LATENCY_S + _best(kind, nbytes, group, algorithm, features)[1]


def all_reduce_time(
    nbytes: float, group: CommGroup, algorithm: str = "default", *, features: Collection[str] = ()
) -> float:
    """Seconds to all-reduce a buffer of ``nbytes`` across ``group``.

    ``features`` are the node capabilities (:func:`node_features`) that gate nvls.
    """
    return _time("all_reduce", nbytes, group, algorithm, features)


def all_gather_time(
    nbytes: float, group: CommGroup, algorithm: str = "default", *, features: Collection[str] = ()
) -> float:
    """Seconds to all-gather into a buffer of ``nbytes`` (the gathered size) across ``group``."""
    return _time("all_gather", nbytes, group, algorithm, features)


def reduce_scatter_time(
    nbytes: float, group: CommGroup, algorithm: str = "default", *, features: Collection[str] = ()
) -> float:
    """Seconds to reduce-scatter a buffer of ``nbytes`` (the full input) across ``group``."""
    return _time("reduce_scatter", nbytes, group, algorithm, features)


def all_to_all_time(nbytes: float, group: CommGroup) -> float:
    """Seconds for an all-to-all in which every rank holds ``nbytes`` split evenly over ranks.

    The share for ranks on the same node crosses the intra-node fabric, the rest the rank's NIC
    share; both run at once, so the slower decides.
    """
    _check(nbytes, "default", ())
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
    _check(nbytes, "default", ())
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


# ---- the algorithms ---------------------------------------------------------------------------------


def _tree_latency(group: CommGroup) -> float:
    net_levels = math.ceil(math.log2(group.nodes)) if group.spans_nodes else 0
    return 2.0 * ((group.local - 1) * group.intra_latency_s + net_levels * group.net_latency_s)


def _ring_all_reduce(nbytes: float, group: CommGroup) -> float:
    n = group.size
    return 2.0 * (n - 1) / n * nbytes / group.ring_bytes_s + 2.0 * (n - 1) * group.hop_latency_s


def _ring_all_gather(nbytes: float, group: CommGroup) -> float:
    n = group.size
    bw = (n - 1) / n * nbytes / group.ring_bytes_s
    return bw + (n - 1) * group.hop_latency_s


def _tree_all_reduce(nbytes: float, group: CommGroup) -> float:
    n = group.size
    return 2.0 * (n - 1) / n * nbytes / group.ring_bytes_s + _tree_latency(group)


def _tree_all_gather(nbytes: float, group: CommGroup) -> float:
    n = group.size
    bw = (n - 1) / n * nbytes / group.ring_bytes_s
    return bw + _tree_latency(group) / 2.0


def _hier_all_reduce(nbytes: float, group: CommGroup) -> float:
    g, m = group.local, group.nodes
    t = 0.0
    if g > 1:  # reduce-scatter then all-gather inside the node
        t += 2.0 * ((g - 1) / g * nbytes / group.intra_bytes_s + (g - 1) * group.intra_latency_s)
    if m > 1:  # each rank all-reduces its 1/g shard across nodes on its own NIC share
        per_rank = group.net_bytes_s / g
        t += 2.0 * (m - 1) / m * (nbytes / g) / per_rank + 2.0 * math.ceil(math.log2(m)) * group.net_latency_s
    return t


def _hier_all_gather(nbytes: float, group: CommGroup) -> float:
    return 0.5 * _hier_all_reduce(nbytes, group)


def _nvls_runs_on(kind: str, group: CommGroup) -> bool:
    return group.local > 1  # the switch reduces over the group's GPUs on one node: needs two of them


def _nvls_all_reduce(nbytes: float, group: CommGroup) -> float:
    g, m = group.local, group.nodes
    intra = (1.0 + 1.0 / g) * nbytes / (NVLS_EFFICIENCY * group.intra_bytes_s)
    if m == 1:
        return intra + NVLS_LATENCY_S
    # NVLSTree: each rank's S/g shard goes round a tree of nodes on its NIC share, pipelined with NVLS
    inter = 2.0 * (m - 1) / m * (nbytes / g) / (group.net_bytes_s / g)
    return max(intra, inter) + NVLS_LATENCY_S + 2.0 * math.ceil(math.log2(m)) * group.net_latency_s


register_algorithm(
    CollectiveAlgorithm(
        "ring",
        {"all_reduce": _ring_all_reduce, "all_gather": _ring_all_gather, "reduce_scatter": _ring_all_gather},
        summary="ring over all ranks; bandwidth-optimal, latency linear in n",
    )
)
register_algorithm(
    CollectiveAlgorithm(
        "tree",
        {"all_reduce": _tree_all_reduce, "all_gather": _tree_all_gather, "reduce_scatter": _tree_all_gather},
        summary="NCCL double binary tree across nodes, chain inside; latency logarithmic in nodes",
    )
)
register_algorithm(
    CollectiveAlgorithm(
        "hierarchical",
        {"all_reduce": _hier_all_reduce, "all_gather": _hier_all_gather, "reduce_scatter": _hier_all_gather},
        tuned=False,
        summary="reduce-scatter in the node, all-reduce across nodes, all-gather in the node",
    )
)
register_algorithm(
    CollectiveAlgorithm(
        "nvls",
        {"all_reduce": _nvls_all_reduce},
        runs_on=_nvls_runs_on,
        requires="nvls",
        summary="NVLink SHARP in-switch reduction; NVLSTree across nodes",
    )
)
