"""Cluster topology: nodes of N GPUs on an intra-node fabric, NICs into a two-level fat tree.

The collective cost models see a group of ranks only through :class:`CommGroup`: how many
members share a node, how many nodes it spans, and the bandwidth and latency of each level.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hwmodels.catalogue import GPUSpec, LinkSpec, NodeSpec, default_node_for_gpu, get_gpu, get_link, get_node
from hwmodels.errors import ClusterSimError


class ClusterSpec(BaseModel):
    """What a user writes under ``cluster:``. A node preset fills in whatever is not given."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    gpu: str = Field(description="GPU id, e.g. h100-sxm5-80gb (`clustersim gpus` lists them)")
    num_gpus: int = Field(gt=0)
    node: str | None = Field(default=None, description="node preset id, e.g. dgx-h100; default: the GPU's preset")
    gpus_per_node: int | None = Field(default=None, gt=0)
    intra_link: str | None = None
    nics_per_node: int | None = Field(default=None, ge=0)
    nic_link: str | None = None
    nodes_per_leaf: int = Field(default=32, gt=0, description="nodes under one leaf switch (DGX SuperPOD unit: 32)")
    oversubscription: float = Field(default=1.0, ge=1.0, description="leaf up-links : down-links bandwidth ratio")
    rail_optimized: bool = Field(
        default=True,
        description="NIC i of every node on leaf (rail) switch i, as DGX SuperPOD; false: all of a node's NICs on "
        "one top-of-rack switch, so traffic leaves the leaf after nodes_per_leaf / nics_per_node nodes",
    )
    ecmp_efficiency: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="share of bandwidth left by ECMP hash collisions on traffic that crosses the spine (1 = adaptive "
        "routing; Meta's RoCE fabric gained up to 40% on AllReduce from E-ECMP + QP scaling, i.e. about 0.7)",
    )

    @field_validator("gpu")
    @classmethod
    def _canonical_gpu(cls, v: str) -> str:
        return get_gpu(v).id

    @field_validator("node")
    @classmethod
    def _canonical_node(cls, v: str | None) -> str | None:
        return None if v is None else get_node(v).id

    @model_validator(mode="after")
    def _check(self) -> ClusterSpec:
        per_node = self.resolve().gpus_per_node
        if self.num_gpus > per_node and self.num_gpus % per_node:
            raise ClusterSimError(
                f"cluster.num_gpus={self.num_gpus} is not a multiple of gpus_per_node={per_node}; "
                "use whole nodes or set cluster.gpus_per_node"
            )
        return self

    def resolve(self) -> Cluster:
        """The resolved cluster: catalogue objects in place of ids, preset values filled in."""
        gpu = get_gpu(self.gpu)
        node = get_node(self.node) if self.node else default_node_for_gpu(gpu.id)
        if self.node and get_gpu(node.gpu).id != gpu.id:
            raise ClusterSimError(
                f"node preset {node.id!r} holds {node.gpu}, not {gpu.id}; pick a matching cluster.node or leave it out"
            )
        return Cluster(
            gpu=gpu,
            node=node,
            num_gpus=self.num_gpus,
            gpus_per_node=self.gpus_per_node or node.gpus_per_node,
            intra=get_link(self.intra_link or node.intra_link),
            nics_per_node=node.nics_per_node if self.nics_per_node is None else self.nics_per_node,
            nic=get_link(self.nic_link or node.nic_link),
            nodes_per_leaf=self.nodes_per_leaf,
            oversubscription=self.oversubscription,
            rail_optimized=self.rail_optimized,
            ecmp_efficiency=self.ecmp_efficiency,
        )


@dataclass(frozen=True)
class Cluster:
    """A resolved cluster. ``comm_group`` describes any group of ranks on it."""

    gpu: GPUSpec
    node: NodeSpec
    num_gpus: int
    gpus_per_node: int
    intra: LinkSpec
    nics_per_node: int
    nic: LinkSpec
    nodes_per_leaf: int = 32
    oversubscription: float = 1.0
    rail_optimized: bool = True
    ecmp_efficiency: float = 1.0

    @cached_property
    def num_nodes(self) -> int:
        """Nodes the cluster's GPUs fill (at least one)."""
        return max(1, math.ceil(self.num_gpus / self.gpus_per_node))

    @property
    def leaf_nodes(self) -> int:
        """Nodes a group can span before its traffic crosses the spine: a rail switch reaches ``nodes_per_leaf``
        nodes on one rail; a top-of-rack switch with the same ports takes all NICs of fewer nodes."""
        if self.rail_optimized or self.nics_per_node <= 1:
            return self.nodes_per_leaf
        return max(1, self.nodes_per_leaf // self.nics_per_node)

    @property
    def node_nic_bytes_s(self) -> float:
        """Achievable network bandwidth out of one node, per direction (all NICs)."""
        return self.nics_per_node * self.nic.effective_bandwidth_bytes_per_s

    def comm_group(self, size: int, stride: int = 1) -> CommGroup:
        """A group of ``size`` ranks whose rank ids are ``stride`` apart (Megatron-style placement).

        TP groups are contiguous (stride 1); a DP group of a TP8 job has stride 8 and so one
        member per node. All groups of the same kind communicate at once, so a group's share of
        the node's NICs is proportional to its members on the node.
        """
        if size <= 0 or stride <= 0:
            raise ClusterSimError(f"group size and stride must be positive, got size={size} stride={stride}")
        if size * stride > max(self.num_gpus, size):
            raise ClusterSimError(f"a group of {size} ranks at stride {stride} does not fit in {self.num_gpus} GPUs")
        local = min(size, max(1, self.gpus_per_node // stride)) if stride < self.gpus_per_node else 1
        nodes = math.ceil(size / local)
        net = a2a = 0.0
        if nodes > 1:
            if self.nics_per_node <= 0:
                raise ClusterSimError(
                    f"node {self.node.id} has no NICs; a group spanning {nodes} nodes needs nics_per_node > 0"
                )
            net = a2a = self.node_nic_bytes_s * local / self.gpus_per_node
            ring, spread = self.spine_factors(nodes, local, max(1, stride // self.gpus_per_node))
            net, a2a = net * ring, a2a * spread
        return CommGroup(
            size=size,
            local=local,
            nodes=nodes,
            intra_bytes_s=self.intra.effective_bandwidth_bytes_per_s,
            intra_latency_s=self.intra.latency_s,
            net_bytes_s=net,
            net_latency_s=self.nic.latency_s,
            a2a_net_bytes_s=a2a,
        )

    def spine_factors(self, nodes: int, local: int, node_step: int = 1) -> tuple[float, float]:
        """Share of its NIC bandwidth a group keeps when it spans more than one leaf switch: (for rings, trees and
        point-to-point; for all-to-all). ``node_step``: nodes between consecutive members (a DP group of a
        TP x PP job placed PP-outermost is one node apart; DP outermost, TP x PP / gpus-per-node apart).

        Every group of a kind communicates at once and each GPU is in one of them. A ring over members spread
        across leaves crosses the spine only at the leaf boundaries: each group with ``m`` members under a leaf
        sends one flow out of it (and takes one in, the other direction of the full-duplex links), so the leaf's
        up-links (its down-links / oversubscription) carry ``1 / m`` of a NIC per GPU under it each way and slow
        the ring only when ``oversubscription > m``. An
        all-to-all sends the share ``f`` of its traffic that goes to other leaves through them all at once, so
        it keeps ``1 / (f x oversubscription)`` of its bandwidth. Flows through the spine also lose
        ``ecmp_efficiency`` to hash collisions."""
        span = (nodes - 1) * node_step + 1
        if span <= self.leaf_nodes:
            return 1.0, 1.0
        under_leaf = min(nodes, max(1, math.ceil(self.leaf_nodes / node_step)))  # the group's nodes under one leaf
        members = under_leaf * (1 if self.rail_optimized else local)  # on one rail leaf, or on one ToR
        ring = min(1.0, members / self.oversubscription) * self.ecmp_efficiency
        crossing = 1.0 - under_leaf / nodes
        spread = min(1.0, 1.0 / (crossing * self.oversubscription)) * self.ecmp_efficiency if crossing > 0 else 1.0
        return ring, spread


@dataclass(frozen=True)
class CommGroup:
    """A communicating group as the collective models see it.

    ``net_bytes_s`` is this group's share of its nodes' network bandwidth (per direction) as rings, trees
    and point-to-point transfers see it, zero when the group lives inside one node; all-to-all traffic sees
    :attr:`all_to_all_net_bytes_s` (:meth:`Cluster.spine_factors`).
    """

    size: int
    local: int
    nodes: int
    intra_bytes_s: float
    intra_latency_s: float
    net_bytes_s: float = 0.0
    net_latency_s: float = 0.0
    #: the group's NIC share for all-to-all traffic (lower than ``net_bytes_s`` through an oversubscribed spine);
    #: None: the same as ``net_bytes_s``
    a2a_net_bytes_s: float | None = None

    @property
    def all_to_all_net_bytes_s(self) -> float:
        """Network bandwidth of the group's all-to-all traffic (per direction, the group's share of its NICs)."""
        return self.net_bytes_s if self.a2a_net_bytes_s is None else self.a2a_net_bytes_s

    @property
    def spans_nodes(self) -> bool:
        """Whether the group crosses the network (more than one node)."""
        return self.nodes > 1

    @property
    def ring_bytes_s(self) -> float:
        """Bandwidth of the slowest hop a ring over all members crosses."""
        if not self.spans_nodes:
            return self.intra_bytes_s
        return min(self.intra_bytes_s, self.net_bytes_s) if self.local > 1 else self.net_bytes_s

    @property
    def hop_latency_s(self) -> float:
        """Latency of one hop, s: the network's if the group spans nodes, else the intra-node link's."""
        return self.net_latency_s if self.spans_nodes else self.intra_latency_s
