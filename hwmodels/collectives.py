"""Collective communication cost: latency + bytes / bandwidth over a :class:`CommGroup`.

Algorithms (``n`` ranks, ``g`` per node, ``m`` nodes, message ``S`` bytes, per-hop latency a):

* ring: all-reduce moves ``2(n-1)/n * S`` through the slowest hop, in ``2(n-1)`` steps;
  all-gather and reduce-scatter move ``(n-1)/n * S`` in ``n-1`` steps (S = the full buffer).
* tree: NCCL's intra-node chain + inter-node double binary tree; the same bandwidth term as the
  ring, but ``2((g-1) a_intra + ceil(log2 m) a_net)`` latency, so it wins for small messages.
  (NCCL's tuner offers tree for all-reduce only; the all-gather/reduce-scatter tree here charges
  half that latency, close to what NCCL >= 2.23's PAT does, and like PAT runs only with one rank
  per node: elsewhere ``auto`` and a forced ``tree`` run the ring for them, as NCCL does.)
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

* ``default``: the faster of ``ring/fitted`` and ``tree/fitted`` for every call, the model's rule before
  the choice was configurable; the published-table validation was fitted with it.
* ``auto``: NCCL's tuner (``ncclTopoTuneModel`` / ``ncclTopoGetAlgoTime`` in NVIDIA/nccl
  src/graph/tuning.cc): predict latency + bytes / bandwidth for every algorithm NCCL could run on
  this group and collective (ring, tree, nvls where the node has it) and take the fastest. Latency
  makes tree/NVLSTree win small messages at scale and bandwidth makes ring (or nvls) win large ones.
  ``hierarchical`` is not a candidate: NCCL has no such algorithm, a framework has to ask for it.
* a registered name forces that algorithm (NCCL picks the protocol); ``name/protocol`` forces both.
  Where it cannot run on a group or does not implement a
  collective (nvls with one GPU of the group per node, nvls all-gather) the ring runs, as NCCL
  re-enables the ring when ``NCCL_ALGO`` leaves a collective nothing (tuning.cc, "at least set
  ring algo available").

Protocols (NCCL's LL, LL128, Simple; constants from NVIDIA/nccl src/graph/tuning.cc at commit
b6475625, see ``PROTOCOLS``): NCCL moves data in one of three wire formats. LL sends 8-byte lines of
4 B data + 4 B flag (half the wire, lowest latency), LL128 128-byte lines with 8 B of flags (120/128
of the wire on NVLink/IB), Simple plain chunks behind a fence (full bandwidth, highest latency). NCCL's
tuner predicts ``latency + bytes / bandwidth`` for every (algorithm, protocol) pair and runs the
fastest; this module does the same with its own calibrated latencies and bandwidths:

* bandwidth: the algorithm's fitted (Simple) bandwidth x the tuner's per-protocol factor (ring LL
  1/4 for all-reduce or across nodes, else 1/3, capped at the tuner's LL ceiling; ring LL128 0.92,
  0.7 with one rank per node; tree x0.92, LL /3.8, LL128 x7/9 in one node or x120/128 across nodes,
  times the tuner's tree correction for mid sizes).
* latency: the fitted per-step link latencies (``latency_us`` in links.yaml, fitted to 8-128 B
  all-reduces, which NCCL runs with LL) are LL's; LL128 and Simple add the tuner's differences
  ``baseLat[p] - baseLat[LL]`` once and ``hwLat[link][p] - hwLat[link][LL]`` per step. A ring counts
  its steps as the tuner does: ``2(n-1)`` steps of which ``2m`` (all-reduce) or ``m-1``
  (all-gather/reduce-scatter) cross the network, the rest NVLink/PCIe.

Names: ``ring``, ``tree`` (and ``nvls``, Simple only) take the fastest of their protocols, as
``NCCL_ALGO=<name>`` leaves NCCL free to pick one; ``<name>/ll``, ``/ll128``, ``/simple`` force one
(``NCCL_ALGO`` + ``NCCL_PROTO``); ``<name>/fitted`` is the single-protocol cost the model had before
protocols (fitted LL latency + fitted Simple bandwidth: the envelope of the nccl-tests curve, optimistic
at mid sizes where neither protocol has both). ``default`` still takes the faster of ``ring/fitted`` and
``tree/fitted``, so its numbers (and the training validation fitted with it) are unchanged; ``auto``
searches every tuned algorithm x protocol. ``hierarchical`` (a framework composition, not an NCCL
algorithm) has only its fitted cost. Validation against published nccl-tests figures:
simulator/data/validation/nccl_published.csv, tests/hwmodels/test_nccl_published.py, docs/collectives.md.

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
from functools import lru_cache
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

# ---- NCCL protocols ---------------------------------------------------------------------------------
# Constants from NVIDIA/nccl src/graph/tuning.cc at commit b6475625fbcaa2c3c0e50eed2fa1255d7514d4a2
# (NCCL ~2.20-2.22, read through the code search tool): baseLat, hwLat, llMaxBws and the "model
# refinements" in ncclTopoTuneModel, treeCorrectionFactor in ncclTopoGetAlgoTime. Latencies in us.

#: Protocol names, in NCCL's order (NCCL_PROTO=LL,LL128,Simple).
PROTOCOLS: tuple[str, ...] = ("ll", "ll128", "simple")

#: The pre-protocol single cost (fitted LL latency + fitted Simple bandwidth), selectable as ``name/fitted``.
FITTED = "fitted"

#: tuning.cc baseLat[algo][proto], us (Tree {6.8, 14.0, 0}, Ring {6.6, 14.0, 8.4}).
NCCL_BASE_LAT_US: dict[str, dict[str, float]] = {
    "tree": {"ll": 6.8, "ll128": 14.0, "simple": 0.0},
    "ring": {"ll": 6.6, "ll128": 14.0, "simple": 8.4},
}

#: tuning.cc hwLat[link][algo][proto], us per step (NVLINK, PCI, NET rows; Tree and Ring columns).
NCCL_HW_LAT_US: dict[str, dict[str, dict[str, float]]] = {
    "nvlink": {"tree": {"ll": 0.6, "ll128": 1.25, "simple": 28.0}, "ring": {"ll": 0.6, "ll128": 1.9, "simple": 3.4}},
    "pcie": {"tree": {"ll": 1.0, "ll128": 1.9, "simple": 28.0}, "ring": {"ll": 1.0, "ll128": 2.5, "simple": 5.7}},
    "net": {"tree": {"ll": 5.0, "ll128": 8.5, "simple": 28.0}, "ring": {"ll": 2.7, "ll128": 4.0, "simple": 14.0}},
}

#: tuning.cc llMaxBws, GB/s busbw ceiling of LL: one node (Ampere/Hopper row: 87.7), two nodes, more
#: (Intel-CPU row: 39.0, 20.4). NCCL indexes by GPU generation in one node and CPU vendor across
#: nodes; CommGroup carries neither, so the Ampere/Hopper and Intel figures are taken.
NCCL_LL_MAX_BUSBW_GBPS: tuple[float, float, float] = (87.7, 39.0, 20.4)

#: tuning.cc bandwidth refinements as factors on the algorithm's Simple bandwidth.
RING_LL_FACTOR = (1.0 / 4.0, 1.0 / 3.0)  # all-reduce or multi-node; all-gather/reduce-scatter in one node
RING_LL128_FACTOR = (0.92, 0.7)  # "120/128" with >= 2 ranks per node; one rank per node (ppn < 2)
TREE_FACTOR = 0.92  # busBw * .92 for every tree protocol
TREE_LL_FACTOR = 1.0 / 3.8
TREE_LL128_FACTOR = (7.0 / 9.0, 120.0 / 128.0)  # one node; across nodes

#: tuning.cc treeCorrectionFactor[proto][log2(bytes / 64)] for 64 B .. 256 MB (tree only).
# fmt: off
TREE_CORRECTION: dict[str, tuple[float, ...]] = {
    "ll": (1.0, 1.0, 1.0, 1.0, .9, .8, .7, .7, .7, .7, .6, .5, .4, .4, .5, .6, .7, .8, .9, 1.0, 1.0, 1.0, 1.0),
    "ll128": (1.0, 1.0, 1.0, 1.0, 1.0, .9, .8, .8, .8, .7, .6, .6, .6, .6, .6, .6, .8, .9, .9, .9, .9, 1.0, 1.0),
    "simple": (.9, .9, .9, .9, .9, .9, .9, .8, .7, .6, .6, .5, .5, .5, .5, .6, .7, .8, .7, .7, .8, .9, .9),
}
# fmt: on

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
    #: collective kind -> protocol -> seconds without BASE_LATENCY_S; a kind missing here runs ``costs``
    protocol_costs: Mapping[str, Mapping[str, CostFn]] = field(default_factory=dict, compare=False)

    def protocols(self, kind: str) -> tuple[str, ...]:
        """Protocols this algorithm runs ``kind`` with (``fitted`` alone where it has no protocol model)."""
        return tuple(self.protocol_costs.get(kind, {})) or (FITTED,)

    def cost(self, kind: str, protocol: str) -> CostFn:
        """The cost function of ``kind`` with ``protocol`` (``fitted``: the single-protocol cost)."""
        if protocol == FITTED:
            return self.costs[kind]
        return self.protocol_costs[kind][protocol]

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
    bad = sorted({p for by_kind in algo.protocol_costs.values() for p in by_kind} - set(PROTOCOLS))
    if bad or set(algo.protocol_costs) - set(algo.costs):
        raise ClusterSimError(
            f"collective algorithm {algo.name!r}: protocol_costs must map kinds it has costs for to some of "
            f"{', '.join(PROTOCOLS)}, got {bad or sorted(set(algo.protocol_costs) - set(algo.costs))}"
        )
    _REGISTRY[algo.name] = algo
    _cached_time.cache_clear()
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
    base, protocol = split_algorithm(name)
    if base not in _REGISTRY:
        raise ClusterSimError(
            f"unknown {what} {name!r}; use one of: {', '.join(algorithm_names())} "
            f"(an algorithm may take /{', /'.join((*PROTOCOLS, FITTED))}, e.g. ring/ll128)"
        )
    algo = _REGISTRY[base]
    offered = {p for kind in algo.costs for p in algo.protocols(kind)} | {FITTED}
    if protocol is not None and protocol not in offered:
        raise ClusterSimError(f"{what} {name!r}: {base} runs protocols {', '.join(sorted(offered))}, not {protocol!r}")
    name = base
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


def split_algorithm(name: str) -> tuple[str, str | None]:
    """``"ring/ll128"`` -> ``("ring", "ll128")``; a bare name -> ``(name, None)`` (NCCL picks the protocol)."""
    base, sep, protocol = name.partition("/")
    return (base, protocol.lower() if sep else None)


def is_algorithm(name: str) -> bool:
    """Whether ``algorithm=`` accepts ``name`` (rule, registered name, or ``name/protocol``), ignoring features."""
    try:
        check_algorithm(name, FEATURES)
    except ClusterSimError:
        return False
    return True


def _candidates(kind: str, group: CommGroup, algorithm: str, features: Collection[str]) -> list[tuple[str, str]]:
    """(algorithm, protocol) pairs the rule or name may run for this collective."""
    if algorithm == "default":
        return [(a, FITTED) for a in DEFAULT_RULE]
    if algorithm == "auto":
        usable = [a for a in _REGISTRY.values() if a.tuned and a.usable(kind, group, features)]
        return [(a.name, p) for a in usable for p in a.protocols(kind)]
    base, protocol = split_algorithm(algorithm)
    algo = _REGISTRY[base]
    if not algo.usable(kind, group, features):  # NCCL re-enables the ring ("at least set ring algo available")
        algo = _REGISTRY["ring"]
    if protocol is None:
        return [(algo.name, p) for p in algo.protocols(kind)]
    if protocol != FITTED and protocol not in algo.protocols(kind):  # e.g. tree/ll for an all-gather
        algo = _REGISTRY["ring"] if protocol in _REGISTRY["ring"].protocols(kind) else algo
        protocol = protocol if protocol in algo.protocols(kind) else FITTED
    return [(algo.name, protocol)]


def _best(
    kind: str, nbytes: float, group: CommGroup, algorithm: str, features: Collection[str]
) -> tuple[str, str, float]:
    """The (algorithm, protocol) that runs and its seconds without BASE_LATENCY_S (ties: registry order)."""
    pairs = _candidates(kind, group, algorithm, features)
    timed = [(a, p, _REGISTRY[a].cost(kind, p)(nbytes, group)) for a, p in pairs]
    return min(timed, key=lambda apt: apt[2])


def choose_algorithm(
    kind: str, nbytes: float, group: CommGroup, algorithm: str = "auto", *, features: Collection[str] = ()
) -> str:
    """Name of the algorithm that ``algorithm`` runs for this collective (a rule picks per call)."""
    if kind not in COLLECTIVE_KINDS:
        raise ClusterSimError(f"collective kind must be one of {', '.join(COLLECTIVE_KINDS)}, not {kind!r}")
    _check(nbytes, algorithm, features)
    return _best(kind, nbytes, group, algorithm, features)[0]


def choose_protocol(
    kind: str, nbytes: float, group: CommGroup, algorithm: str = "auto", *, features: Collection[str] = ()
) -> tuple[str, str]:
    """(algorithm, protocol) that ``algorithm`` runs for this collective, e.g. ``("ring", "ll128")``.

    The protocol is ``fitted`` where the pair has no protocol model (``default``, ``hierarchical``).
    """
    if kind not in COLLECTIVE_KINDS:
        raise ClusterSimError(f"collective kind must be one of {', '.join(COLLECTIVE_KINDS)}, not {kind!r}")
    _check(nbytes, algorithm, features)
    algo, protocol, _ = _best(kind, nbytes, group, algorithm, features)
    return algo, protocol


def _time(kind: str, nbytes: float, group: CommGroup, algorithm: str, features: Collection[str]) -> float:
    _check(nbytes, algorithm, features)
    if group.size == 1 or nbytes == 0:
        return 0.0
    return _cached_time(kind, float(nbytes), group, algorithm, frozenset(features), tuple(_REGISTRY))


@lru_cache(maxsize=1 << 16)
def _cached_time(
    kind: str, nbytes: float, group: CommGroup, algorithm: str, features: frozenset[str], registered: tuple[str, ...]
) -> float:
    """:func:`_time` after its checks, memoised: a training step asks for the same few collectives many times
    and ``auto`` prices every algorithm x protocol pair. ``registered`` (the registry's names) keys the cache,
    so an algorithm registered later is seen."""
    return BASE_LATENCY_S + _best(kind, nbytes, group, algorithm, features)[2]


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
        inter = (n - g) / n * nbytes / (group.all_to_all_net_bytes_s / g)
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
    # NVLSTree: each rank's S/g shard is reduced up a tree of nodes and broadcast back down on its NIC share,
    # pipelined with NVLS. A tree node sends (and receives) its shard twice, up and down, whatever the node
    # count: NCCL's tuner takes a tree's algorithm bandwidth as half its bus bandwidth (tuning.cc, ratio .5),
    # not a ring's n / 2(n-1). (Was 2(m-1)/m of the shard: 475 GB/s busbw on 4 DGX H100 where NVIDIA quotes
    # ~370-380 for NVLS+Tree and users measure 320-357; nccl_published.csv.)
    # Two nodes only swap their shards: once per direction.
    inter = (1.0 if m == 2 else 2.0) * (nbytes / g) / (group.net_bytes_s / g)
    return max(intra, inter) + NVLS_LATENCY_S + 2.0 * math.ceil(math.log2(m)) * group.net_latency_s


# ---- protocol variants (NCCL's tuner structure with this model's calibrated links) --------------------


def _intra_class(group: CommGroup) -> str:
    """tuning.cc hwLat row of the intra-node link. CommGroup has no link kind: anything up to PCIe 5
    x16's 64 GB/s nominal is taken as PCIe, faster as NVLink."""
    return "pcie" if group.intra_bytes_s <= 64e9 else "nvlink"


def _delta_s(table: Mapping[str, float], protocol: str) -> float:
    """Extra seconds of ``protocol`` over LL in a tuning.cc latency row (LL's own cost is the fitted one)."""
    return (table[protocol] - table["ll"]) * 1e-6


def _ll_cap_bytes_s(group: CommGroup) -> float:
    return NCCL_LL_MAX_BUSBW_GBPS[min(group.nodes, 3) - 1] * 1e9


def _tree_correction(protocol: str, nbytes: float) -> float:
    idx = max(0, int(nbytes) // 64).bit_length() - 1
    table = TREE_CORRECTION[protocol]
    return table[idx] if 0 <= idx < len(table) else 1.0


def _ring_protocol_cost(kind: str, protocol: str) -> CostFn:
    """Ring ``kind`` with ``protocol``: tuning.cc's step count (2m of an all-reduce's 2(n-1) steps cross
    the network, m-1 of an all-gather's n-1) at this model's link latencies plus the protocol's extra."""
    all_reduce = kind == "all_reduce"

    def cost(nbytes: float, group: CommGroup) -> float:
        n, m = group.size, group.nodes
        steps = 2 * (n - 1) if all_reduce else n - 1
        inter = 0 if m == 1 else min(steps, 2 * m if all_reduce else m - 1)
        intra_row, net_row = NCCL_HW_LAT_US[_intra_class(group)]["ring"], NCCL_HW_LAT_US["net"]["ring"]
        latency = (
            _delta_s(NCCL_BASE_LAT_US["ring"], protocol)
            + (steps - inter) * (group.intra_latency_s + _delta_s(intra_row, protocol))
            + inter * (group.net_latency_s + _delta_s(net_row, protocol))
        )
        bw = group.ring_bytes_s
        if protocol == "ll":
            bw = min(bw * RING_LL_FACTOR[0 if all_reduce or m > 1 else 1], _ll_cap_bytes_s(group))
        elif protocol == "ll128":
            bw *= RING_LL128_FACTOR[0 if group.local >= 2 else 1]
        return steps / n * nbytes / bw + latency

    return cost


def _tree_protocol_cost(protocol: str) -> CostFn:
    """Tree all-reduce with ``protocol``: chain in the node, double binary tree across nodes."""

    def cost(nbytes: float, group: CommGroup) -> float:
        intra_row, net_row = NCCL_HW_LAT_US[_intra_class(group)]["tree"], NCCL_HW_LAT_US["net"]["tree"]
        net_levels = math.ceil(math.log2(group.nodes)) if group.spans_nodes else 0
        latency = _delta_s(NCCL_BASE_LAT_US["tree"], protocol) + 2.0 * (
            (group.local - 1) * (group.intra_latency_s + _delta_s(intra_row, protocol))
            + net_levels * (group.net_latency_s + _delta_s(net_row, protocol))
        )
        bw = group.ring_bytes_s * TREE_FACTOR
        if protocol == "ll":
            bw = min(bw * TREE_LL_FACTOR, _ll_cap_bytes_s(group))
        elif protocol == "ll128":
            bw *= TREE_LL128_FACTOR[0 if group.nodes == 1 else 1]
        bw *= _tree_correction(protocol, nbytes)
        n = group.size
        return 2.0 * (n - 1) / n * nbytes / bw + latency

    return cost


register_algorithm(
    CollectiveAlgorithm(
        "ring",
        {"all_reduce": _ring_all_reduce, "all_gather": _ring_all_gather, "reduce_scatter": _ring_all_gather},
        summary="ring over all ranks; bandwidth-optimal, latency linear in n",
        protocol_costs={k: {p: _ring_protocol_cost(k, p) for p in PROTOCOLS} for k in COLLECTIVE_KINDS},
    )
)


def _tree_runs_on(kind: str, group: CommGroup) -> bool:
    """NCCL's tree is an all-reduce algorithm; its all-gather/reduce-scatter counterpart, PAT (NCCL >= 2.23),
    runs only with one rank per node (NVIDIA/nccl src/enqueue.cc: PAT needs nRanks == nNodes)."""
    return kind == "all_reduce" or (group.local == 1 and group.nodes > 1)


register_algorithm(
    CollectiveAlgorithm(
        "tree",
        {"all_reduce": _tree_all_reduce, "all_gather": _tree_all_gather, "reduce_scatter": _tree_all_gather},
        runs_on=_tree_runs_on,
        summary="NCCL double binary tree across nodes, chain inside; latency logarithmic in nodes",
        protocol_costs={"all_reduce": {p: _tree_protocol_cost(p) for p in PROTOCOLS}},  # tree AG/RS: fitted
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
        protocol_costs={"all_reduce": {"simple": _nvls_all_reduce}},  # NVLS runs Simple only (tuning.cc)
    )
)
