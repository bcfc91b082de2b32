"""Hardware catalogue: GPUs, links and node presets, loaded from ``hwmodels/data/*.yaml``.

Adding hardware is adding data: each YAML entry carries a ``sources`` mapping (``default`` plus
per-field keys) so every figure the tool prints can be traced to a datasheet or measurement.
Units follow the field names; bandwidths are SI GB/s, link bandwidths are per direction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hwmodels.dtypes import normalize_dtype
from hwmodels.errors import ClusterSimError, UnknownNameError

#: Dtypes the catalogue holds peaks for (int8 in TOPS). int4 is a weight format here, not a peak.
PEAK_DTYPES: tuple[str, ...] = ("fp64", "fp32", "tf32", "bf16", "fp16", "fp8", "int8")

LinkKind = Literal["nvlink", "pcie", "infiniband", "roce", "ethernet"]
_NIC_KINDS = ("infiniband", "roce", "ethernet")

Positive = Annotated[float, Field(gt=0)]
_FROZEN = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _key(name: str) -> str:
    """Lookup key: case-, space- and underscore-insensitive, without a leading 'nvidia'."""
    key = "-".join(str(name).strip().lower().replace("_", " ").replace("-", " ").split())
    return key.removeprefix("nvidia-")


class _Spec(BaseModel):
    """Common part of catalogue entries: an id and the citations for its figures."""

    model_config = _FROZEN

    id: str
    name: str
    sources: dict[str, str]

    def __hash__(self) -> int:  # sources is a dict; the id identifies an entry
        return hash((type(self).__name__, self.id))

    @property
    def source(self) -> str:
        """The default citation of this entry."""
        return self.sources["default"]

    @classmethod
    def _source_keys(cls) -> set[str]:
        return {"default"} | set(cls.model_fields) - {"id", "name", "sources", "aliases"}

    def source_for(self, field: str) -> str:
        """Citation for one figure (a field name, or a dtype for a GPU peak): its own key, else default."""
        return self.sources.get(field, self.sources["default"])

    @model_validator(mode="after")
    def _check_sources(self) -> _Spec:
        if not self.sources.get("default", "").strip():
            raise ValueError("sources needs a non-empty 'default' citation")
        unknown = sorted(set(self.sources) - self._source_keys())
        if unknown:
            raise ValueError(f"sources has unknown keys {unknown}; use field names or 'default'")
        empty = sorted(k for k, v in self.sources.items() if not v.strip())
        if empty:
            raise ValueError(f"sources {empty} are empty")
        return self


class DensePeaks(BaseModel):
    """Dense peak TFLOP/s per dtype (int8 in TOPS); None where the GPU has no such unit."""

    model_config = _FROZEN

    fp64: Positive | None
    fp32: Positive | None
    tf32: Positive | None
    bf16: Positive | None
    fp16: Positive | None
    fp8: Positive | None
    int8: Positive | None


class GPUSpec(_Spec):
    """One GPU model: datasheet peaks, memory, clocks, power and its links."""

    aliases: tuple[str, ...] = ()
    dense_tflops: DensePeaks
    memory_gb: Positive = Field(
        description="marketed memory capacity, which vendors state in GiB: 80 = 80 x 2^30 bytes (85.9 GB)"
    )
    memory_bandwidth_gbps: Positive
    l2_mb: Positive
    sms: int = Field(gt=0)
    base_clock_mhz: Positive
    boost_clock_mhz: Positive
    tdp_w: Positive
    idle_w: Positive
    nvlink: str | None
    nvlink_bandwidth_gbps: Positive | None
    pcie: str
    same_silicon_as: str | None = Field(
        default=None, description="a GPU with the same die, board, clocks and power: its calibrated profile applies"
    )

    @classmethod
    def _source_keys(cls) -> set[str]:
        return super()._source_keys() | set(PEAK_DTYPES)

    @model_validator(mode="after")
    def _check_figures(self) -> GPUSpec:
        if (self.nvlink is None) != (self.nvlink_bandwidth_gbps is None):
            raise ValueError("nvlink and nvlink_bandwidth_gbps must both be set or both be null")
        if self.idle_w >= self.tdp_w:
            raise ValueError(f"idle_w={self.idle_w} must be below tdp_w={self.tdp_w}")
        if self.base_clock_mhz > self.boost_clock_mhz:
            raise ValueError(f"base_clock_mhz={self.base_clock_mhz} exceeds boost_clock_mhz={self.boost_clock_mhz}")
        return self

    def supports(self, dtype: str) -> bool:
        """Whether the catalogue has a compute peak for ``dtype`` on this GPU."""
        d = normalize_dtype(dtype)
        return d in PEAK_DTYPES and getattr(self.dense_tflops, d) is not None

    def peak_tflops(self, dtype: str) -> float:
        """Dense peak in TFLOP/s (TOPS for int8) for ``dtype``; a one-line error if there is none."""
        d = normalize_dtype(dtype)
        value = getattr(self.dense_tflops, d) if d in PEAK_DTYPES else None
        if value is None:
            alt = next((a for a in ("bf16", "fp16") if a != d and self.supports(a)), "fp32")
            if d not in PEAK_DTYPES:
                raise ClusterSimError(f"the catalogue has no {d} compute peak (a weight format); use precision {alt}")
            raise ClusterSimError(f"{self.id} has no {d} tensor cores; use precision {alt}")
        return float(value)

    def peak_flops(self, dtype: str) -> float:
        """Dense peak in FLOP/s (op/s for int8) for ``dtype``."""
        return self.peak_tflops(dtype) * 1e12

    @property
    def memory_bytes(self) -> float:
        """Memory capacity in bytes: ``memory_gb`` is the marketed figure, which vendors state in GiB (an "80GB"
        H100 holds 80 x 2^30 bytes; CUDA sees 79.18 GiB of it), so memory_gb x 2^30."""
        return self.memory_gb * 2**30

    @property
    def memory_bandwidth_bytes_per_s(self) -> float:
        """Peak memory bandwidth in bytes/s."""
        return self.memory_bandwidth_gbps * 1e9

    def to_row(self) -> dict[str, Any]:
        """Flat dict of the figures for tables and JSON; peaks as ``<dtype>_tflops`` (int8: ``int8_tops``)."""
        row: dict[str, Any] = {"id": self.id, "name": self.name}
        for d in PEAK_DTYPES:
            row[f"{d}_tops" if d == "int8" else f"{d}_tflops"] = getattr(self.dense_tflops, d)
        row.update(self.model_dump(exclude={"id", "name", "aliases", "dense_tflops", "sources"}))
        return row


class LinkSpec(_Spec):
    """One interconnect class: nominal per-direction bandwidth, NCCL efficiency, per-step latency."""

    kind: LinkKind
    bandwidth_gbps: Positive
    efficiency: float = Field(gt=0, le=1)
    latency_us: Positive

    @property
    def bandwidth_bytes_per_s(self) -> float:
        """Nominal bandwidth per direction in bytes/s."""
        return self.bandwidth_gbps * 1e9

    @property
    def effective_bandwidth_bytes_per_s(self) -> float:
        """Bandwidth per direction that NCCL reaches for large messages (nominal x efficiency)."""
        return self.bandwidth_bytes_per_s * self.efficiency

    @property
    def latency_s(self) -> float:
        """Per-step latency in seconds."""
        return self.latency_us * 1e-6


class NodeSpec(_Spec):
    """A node preset: GPU type and count, intra-node link, NICs and host power."""

    gpu: str
    gpus_per_node: int = Field(gt=0)
    intra_link: str
    switched: bool
    nics_per_node: int = Field(ge=0)
    nic_link: str
    host_power_w: Positive
    cpu: str
    nvls: bool = Field(
        default=False, description="the NVSwitch reduces in-switch (NVLink SHARP, NVSwitch gen 3+): collective nvls"
    )
    # Host memory tiers (training offload, parameter servers); None = not catalogued for this node.
    cpu_sockets: int | None = Field(default=None, gt=0, description="CPU sockets (NUMA nodes) of the host")
    cpu_cores: int | None = Field(default=None, gt=0, description="physical CPU cores of the host, all sockets")
    host_memory_gb: Positive | None = Field(default=None, description="host DRAM capacity, GB")
    host_memory_bandwidth_gbps: Positive | None = Field(
        default=None, description="peak host DRAM bandwidth of all sockets (channels x transfer rate x 8 B), GB/s"
    )
    gpus_per_pcie_uplink: int | None = Field(
        default=None, gt=0, description="GPUs that share one x16 link to the CPU (behind one PCIe switch); 1 = direct"
    )
    nvme_gb: Positive | None = Field(default=None, description="local NVMe capacity for data and offload, GB")
    nvme_bandwidth_gbps: Positive | None = Field(
        default=None, description="aggregate sequential bandwidth of the local NVMe drives, GB/s"
    )

    @model_validator(mode="after")
    def _check_nvls(self) -> NodeSpec:
        if self.nvls and not self.switched:
            raise ValueError("nvls: true needs switched: true (NVLink SHARP reduces inside the NVSwitch)")
        return self

    def host_figure(self, field: str, what: str) -> float:
        """A host-tier figure (``host_memory_gb``, ``nvme_bandwidth_gbps``, ...), or a one-line error naming the
        node and the field to add to hwmodels/data/nodes.yaml when it is not catalogued."""
        value = getattr(self, field)
        if value is None:
            raise ClusterSimError(
                f"node {self.id} has no {field} in hwmodels/data/nodes.yaml, which {what} needs; add it (with a source)"
            )
        return float(value)

    @property
    def gpu_spec(self) -> GPUSpec:
        """The catalogue entry of this node's GPU."""
        return get_gpu(self.gpu)

    @property
    def intra_link_spec(self) -> LinkSpec:
        """The catalogue entry of the intra-node link."""
        return get_link(self.intra_link)

    @property
    def nic_link_spec(self) -> LinkSpec:
        """The catalogue entry of the NIC link."""
        return get_link(self.nic_link)


@dataclass(frozen=True)
class Catalogue:
    """Validated catalogue: entries by id, and GPU lookup keys (ids and aliases) to ids."""

    gpus: dict[str, GPUSpec]
    links: dict[str, LinkSpec]
    nodes: dict[str, NodeSpec]
    gpu_keys: dict[str, str]


def _one_line(err: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'entry'}: {e['msg']}" for e in err.errors())


def _parse(model: type[_Spec], entries: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = {}
    for id_, data in (entries or {}).items():
        if not isinstance(data, Mapping):
            raise ClusterSimError(f"{where}: entry {id_!r} must be a mapping")
        try:
            out[str(id_)] = model(id=str(id_), **data)
        except ValidationError as err:
            raise ClusterSimError(f"{where}: entry {id_!r}: {_one_line(err)}") from None
    return out


def build_catalogue(gpus: Mapping[str, Any], links: Mapping[str, Any], nodes: Mapping[str, Any]) -> Catalogue:
    """Validate raw entries (id -> fields) and cross-references; a ClusterSimError names the bad entry."""
    g = _parse(GPUSpec, gpus, "gpus.yaml")
    lk = _parse(LinkSpec, links, "links.yaml")
    n = _parse(NodeSpec, nodes, "nodes.yaml")

    def link(ref: str | None, kinds: tuple[str, ...], where: str) -> LinkSpec:
        if ref not in lk:
            raise ClusterSimError(f"{where} refers to unknown link {ref!r}; links.yaml has: {', '.join(sorted(lk))}")
        if lk[ref].kind not in kinds:
            raise ClusterSimError(f"{where}={ref!r} is a {lk[ref].kind} link; expected {' or '.join(kinds)}")
        return lk[ref]

    keys: dict[str, str] = {}
    for gid, spec in g.items():
        link(spec.pcie, ("pcie",), f"gpus.yaml: {gid}.pcie")
        if spec.nvlink is not None:
            nv = link(spec.nvlink, ("nvlink",), f"gpus.yaml: {gid}.nvlink")
            if abs(spec.nvlink_bandwidth_gbps - 2 * nv.bandwidth_gbps) > 1e-6:
                raise ClusterSimError(
                    f"gpus.yaml: {gid}.nvlink_bandwidth_gbps={spec.nvlink_bandwidth_gbps} should be 2x "
                    f"{nv.id}.bandwidth_gbps={nv.bandwidth_gbps} (total bidirectional vs per direction)"
                )
        for k in (gid, *spec.aliases):
            if keys.setdefault(_key(k), gid) != gid:
                raise ClusterSimError(f"gpus.yaml: name {k!r} of {gid} already names {keys[_key(k)]}")
    for nid, node in n.items():
        if node.gpu not in g:
            raise ClusterSimError(f"nodes.yaml: {nid}.gpu={node.gpu!r} is not in gpus.yaml")
        intra = link(node.intra_link, ("nvlink", "pcie"), f"nodes.yaml: {nid}.intra_link")
        link(node.nic_link, _NIC_KINDS, f"nodes.yaml: {nid}.nic_link")
        if node.switched and intra.id != g[node.gpu].nvlink:
            raise ClusterSimError(
                f"nodes.yaml: {nid} is switched but intra_link={intra.id!r} is not its GPU's nvlink "
                f"{g[node.gpu].nvlink!r}"
            )
    return Catalogue(gpus=g, links=lk, nodes=n, gpu_keys=keys)


def _read(filename: str) -> dict[str, Any]:
    text = resources.files("hwmodels").joinpath("data").joinpath(filename).read_text(encoding="utf-8")
    return yaml.safe_load(text) or {}


@lru_cache(maxsize=1)
def load_catalogue() -> Catalogue:
    """The packaged catalogue, read and validated once."""
    return build_catalogue(
        _read("gpus.yaml").get("gpus", {}),
        _read("links.yaml").get("links", {}),
        _read("nodes.yaml").get("nodes", {}),
    )


def get_gpu(name: str) -> GPUSpec:
    """GPU by id or alias, case-insensitive ('h100', 'A100-SXM4-80GB', 'NVIDIA H100 80GB HBM3')."""
    cat = load_catalogue()
    gid = cat.gpu_keys.get(_key(name))
    if gid is None:
        raise UnknownNameError("GPU", name, cat.gpus, hint="`clustersim gpus` lists them")
    return cat.gpus[gid]


def list_gpus() -> list[GPUSpec]:
    """All GPUs, in catalogue order."""
    return list(load_catalogue().gpus.values())


def get_link(name: str) -> LinkSpec:
    """Link by id, case-insensitive."""
    links = load_catalogue().links
    by_key = {_key(k): v for k, v in links.items()}
    if _key(name) not in by_key:
        raise UnknownNameError("link", name, links, hint="`clustersim nodes` lists them")
    return by_key[_key(name)]


def list_links() -> list[LinkSpec]:
    """All links, in catalogue order."""
    return list(load_catalogue().links.values())


def get_node(name: str) -> NodeSpec:
    """Node preset by id, case-insensitive."""
    nodes = load_catalogue().nodes
    by_key = {_key(k): v for k, v in nodes.items()}
    if _key(name) not in by_key:
        raise UnknownNameError("node", name, nodes, hint="`clustersim nodes` lists them")
    return by_key[_key(name)]


def list_nodes() -> list[NodeSpec]:
    """All node presets, in catalogue order."""
    return list(load_catalogue().nodes.values())


def default_node_for_gpu(gpu_id: str) -> NodeSpec:
    """The first node preset holding this GPU (id or alias)."""
    gid = get_gpu(gpu_id).id
    for node in load_catalogue().nodes.values():
        if node.gpu == gid:
            return node
    raise ClusterSimError(f"no node preset holds {gid}; pass cluster.node or add one to hwmodels/data/nodes.yaml")
