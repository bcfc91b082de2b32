"""clustersim's hardware models: what the hardware is and what things cost (pure functions, no SimPy)."""

from hwmodels import collectives
from hwmodels.catalogue import GPUSpec, LinkSpec, NodeSpec, get_gpu, get_link, get_node, list_gpus, list_nodes
from hwmodels.errors import ClusterSimError, UnknownNameError
from hwmodels.profile import Profile, datasheet_profile, load_profile
from hwmodels.topology import Cluster, ClusterSpec, CommGroup

__all__ = [
    "Cluster",
    "ClusterSimError",
    "ClusterSpec",
    "CommGroup",
    "GPUSpec",
    "LinkSpec",
    "NodeSpec",
    "Profile",
    "UnknownNameError",
    "collectives",
    "datasheet_profile",
    "get_gpu",
    "get_link",
    "get_node",
    "list_gpus",
    "list_nodes",
    "load_profile",
]
