"""Clusters: GPUs of one preset in nodes, with the bandwidth per GPU inside a node and between nodes.

A training-layout planner prices a collective by where its group lies: inside one fast domain (a
node: NVLink/NVSwitch board, NVL72 rack, xGMI node, TPU ICI slice) at ``intra_bandwidth``, or across
nodes (InfiniBand/RoCE/EFA NICs) at ``inter_bandwidth``; both per GPU, one direction, in B/s.

A cluster preset (presets/clusters/*.yaml, or a user's clusters/ directory or YAML file) states
``gpu`` (a GPU preset), ``gpus_per_node`` and ``network_gb_s`` (per GPU, one direction, decimal GB/s);
``intra_gb_s`` defaults to the GPU preset's ``interconnect_gb_s``. ``load_cluster("4xdgx-h100")``
counts nodes as ``--gpu 8xh100`` counts GPUs: N x NAME is N of the named thing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from . import presets
from .gpuspec import GPUSpec, check_bandwidth, check_count
from .presets import PresetError
from .spec import SpecError
from .units import counted

CLUSTER_KEYS = ("gpu", "gpus_per_node", "intra_gb_s", "network_gb_s", "aliases", "source", "notes")
REQUIRED = ("gpu", "gpus_per_node", "network_gb_s")


@dataclass(frozen=True)
class Cluster:
    """Nodes of ``gpus_per_node`` GPUs; bandwidths in B/s per GPU, one direction.

    ``nodes`` is None unless the user counted them (``4xdgx-h100``); ``gpus`` is then nodes x
    gpus_per_node. An inter_bandwidth of 0 means nodes without a network between them.
    """

    name: str
    gpu: GPUSpec
    gpus_per_node: int
    intra_bandwidth: float  # B/s per GPU, one direction, inside a node (NVLink/NVSwitch/xGMI/ICI)
    inter_bandwidth: float  # B/s per GPU, one direction, between nodes (InfiniBand/RoCE/EFA)
    nodes: int | None = None  # when the user said how many
    source: str = ""
    aliases: tuple[str, ...] = ()
    notes: str = ""
    reference: bool = False  # a GPU preset's reference node (--gpu), not a cluster preset

    def __post_init__(self) -> None:
        where = f"cluster {self.name!r}"
        check_count(where, "gpus_per_node", self.gpus_per_node)
        check_bandwidth(where, "intra_bandwidth", self.intra_bandwidth)
        check_bandwidth(where, "inter_bandwidth", self.inter_bandwidth)
        if self.nodes is not None:
            check_count(where, "nodes", self.nodes)

    @property
    def preset(self) -> str | None:
        """The cluster preset's name; None for a GPU preset's reference node."""
        return None if self.reference else self.name

    @property
    def gpus(self) -> int | None:
        """All the GPUs, when the nodes were counted."""
        return None if self.nodes is None else self.nodes * self.gpus_per_node


def load_cluster(text: str) -> Cluster:
    """A cluster from a preset name or alias, a YAML file (``my.yaml``, ``presets.yaml:NAME``), either
    one counted in nodes (``4xdgx-h100``). Unknown names suggest the nearest ones."""
    nodes, rest = _counted(text)
    name, path, fields = presets.find("clusters", rest)
    return from_fields(name, fields, str(path), nodes)


def _counted(text: str) -> tuple[int | None, str]:
    """(nodes, the cluster named) for ``N x NAME``; (None, text) otherwise or for a file of that name."""
    nodes, name = counted(text)
    if nodes is not None and not 0 < nodes <= 1_000_000:
        raise PresetError(f"cluster {text!r}: the node count must be a whole number from 1 to 1,000,000")
    return nodes, name


def cluster_of(gpu: GPUSpec, gpus_per_node: int | None = None) -> Cluster:
    """The GPU's own reference node as a Cluster (named after the GPU): its node_gpus (or
    ``gpus_per_node``), its interconnect inside a node and its network between nodes."""
    return Cluster(name=gpu.name, gpu=gpu, gpus_per_node=gpu.node_gpus if gpus_per_node is None else gpus_per_node,
                   intra_bandwidth=gpu.interconnect_bandwidth, inter_bandwidth=gpu.network_bandwidth,
                   source=f"GPU preset {gpu.name}: node_gpus, interconnect_gb_s, network_gb_s", reference=True)


def from_fields(name: str, fields: dict, where: str, nodes: int | None = None) -> Cluster:
    """A Cluster from preset fields; every error one line naming the file, the cluster and the field."""
    _check(name, fields, where)
    gpu = _gpu(name, fields["gpu"], where)
    intra = fields.get("intra_gb_s")
    try:
        return Cluster(name=name, gpu=gpu, gpus_per_node=fields["gpus_per_node"],
                       intra_bandwidth=gpu.interconnect_bandwidth if intra is None else intra * 1e9,
                       inter_bandwidth=fields["network_gb_s"] * 1e9, nodes=nodes,
                       source=str(fields.get("source") or ""), notes=str(fields.get("notes") or ""),
                       aliases=tuple(str(alias) for alias in fields.get("aliases") or ()))
    except SpecError as exc:
        raise PresetError(f"{where}: {exc}") from None


def _check(name: str, fields: dict, where: str) -> None:
    """Known keys only, the required ones present, each of its type: before any GPU is looked up."""
    unknown = [key for key in fields if key not in CLUSTER_KEYS]
    if unknown:
        hint = presets._did_you_mean(str(unknown[0]), CLUSTER_KEYS)
        raise PresetError(f"{where}: unknown field {unknown[0]!r} in cluster {name!r}{hint}")
    missing = [key for key in REQUIRED if fields.get(key) is None]
    if missing:
        raise PresetError(f"{where}: cluster {name!r} is missing {', '.join(missing)}")
    for key, ok, want in _TYPES:
        if fields.get(key) is not None and not ok(fields[key]):
            raise PresetError(f"{where}: {name}.{key} must be {want}, got {fields[key]!r}")
    presets._alias_list(name, Path(where), fields)  # a list of names, or a one-line error


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 1_000_000


def _rate(value: Any) -> bool:
    return presets._is_number(value) and 0 <= value <= 1e9  # GB/s


_TYPES = (("gpu", lambda v: isinstance(v, str) and v.strip() != "", "a GPU preset name or file"),
          ("gpus_per_node", _whole, "a positive whole number"),
          ("intra_gb_s", _rate, "a number of GB/s >= 0"), ("network_gb_s", _rate, "a number of GB/s >= 0"),
          ("source", lambda v: isinstance(v, str), "text"), ("notes", lambda v: isinstance(v, str), "text"))


def _gpu(name: str, gpu: str, where: str) -> GPUSpec:
    try:
        return presets.load_gpu(gpu)
    except PresetError as exc:
        raise PresetError(f"{where}: {name}.gpu: {exc}") from None


def all_clusters() -> Iterable[Cluster]:
    for name, (path, fields) in presets.catalog("clusters")[0].items():
        yield from_fields(name, fields, str(path))


def cluster_to_dict(cluster: Cluster) -> dict[str, Any]:
    """Every field of a resolved cluster, the GPU by name, bandwidths in B/s (`presets show`, JSON)."""
    return {"name": cluster.name, "gpu": cluster.gpu.name, "gpus_per_node": cluster.gpus_per_node,
            "intra_bandwidth": cluster.intra_bandwidth, "inter_bandwidth": cluster.inter_bandwidth,
            "nodes": cluster.nodes, "gpus": cluster.gpus, "aliases": list(cluster.aliases),
            "source": cluster.source, "notes": cluster.notes}


SERVER_GPUS = 16  # a node this size or smaller is one server (DGX-2: 16), whose GPUs a job takes whole


def hardware(gpu: str | None, cluster: str | None, gpus: int | None = None, nodes: int | None = None,
             per_node: int | None = None):
    """(Cluster, GPU count) from a cluster preset (with --nodes, or its own NxNAME count) or a GPU preset
    and its reference node; --gpus-per-node overrides the node size."""
    from .presets import load_gpu

    if gpu and cluster:
        raise SpecError("give --cluster (a system preset) or --gpu (a GPU and its reference node), not both")
    if not gpu and not cluster:
        raise SpecError("plan needs the hardware: --cluster dgx-h100 (with --nodes) or --gpu h100 --gpus N")
    for flag, value in (("--gpus", gpus), ("--nodes", nodes), ("--gpus-per-node", per_node)):
        if value is not None and value < 1:
            raise SpecError(f"{flag} must be at least 1, got {value}")
    where = load_cluster(cluster) if cluster else cluster_of(load_gpu(gpu), per_node)
    if cluster and per_node is not None:
        where = replace(where, gpus_per_node=per_node)
    counts = {flag: n for flag, n in (("--gpus", gpus), ("--nodes", nodes and nodes * where.gpus_per_node),
                                      (f"--cluster {cluster}", where.gpus)) if n}
    if len(set(counts.values())) > 1:
        said = ", ".join(f"{flag} says {n:,} GPUs" for flag, n in counts.items())
        raise SpecError(f"the GPU counts disagree ({said}); give one")
    if not counts:
        raise SpecError("how many GPUs? give --gpus N or --nodes N")
    n, node = next(iter(counts.values())), where.gpus_per_node
    if n > node and n % node and node <= SERVER_GPUS:  # a rack-scale NVLink domain (NVL72) is often used in part
        import warnings

        warnings.warn(f"{n:,} GPUs are {n / node:.3g} nodes of {node}: the last is partly used, and groups are placed "
                      f"as if every node were full (--gpus-per-node sets the node size)", stacklevel=2)
    return where, n
