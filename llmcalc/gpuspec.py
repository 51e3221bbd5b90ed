"""An accelerator's specification: a frozen dataclass of datasheet figures, validated on construction.

Its own module, beside spec.py's model and layout: only the commands that take a GPU load it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .dtypes import DTYPES
from .spec import SpecError, _positive, check_choice

# What a GPU preset that leaves its reference system out is taken to have (gpus/*.yaml header):
DEFAULT_NODE_GPUS = 8  # GPUs in one fast domain: an 8-GPU server, the usual training node
DEFAULT_NETWORK_BANDWIDTH = 12.5e9  # B/s per GPU, one direction: one 100 Gb/s port per GPU, a quarter of a
# DGX H100's 400 Gb/s and half a DGX A100's 200 Gb/s: conservative for a training cluster (an 8-card PCIe
# cloud server can have less, e.g. 100 Gb/s for all 8: pass a cluster preset for it)

AMPERE = 8.0  # the first with a fused kernel Transformer Engine runs (auto picks the unfused core before it)
# Attention kernels a preset may give a measured share for besides FlashAttention-2 (its attention_share):
# cuDNN's fused attention (what Transformer Engine runs on Hopper and later) and FlashAttention-3.
MEASURED_KERNELS = ("cudnn", "fa3")


@dataclass(frozen=True)
class GPUSpec:
    """One accelerator: dense peak compute per dtype, memory, bandwidths (datasheet figures).

    ``node_gpus`` and ``network_bandwidth`` describe the GPU's reference system (a DGX/HGX board, an
    NVL72 rack, a TPU slice): how many GPUs share its fast domain (NVLink/NVSwitch, xGMI, ICI), whose
    GPU-to-GPU bandwidth is ``interconnect_bandwidth``, and the bandwidth per GPU, one direction,
    between domains (InfiniBand/RoCE/EFA NICs: a DGX H100's 8 x 400 Gb/s is 50e9 B/s per GPU).
    A preset that leaves them out gets DEFAULT_NODE_GPUS (8) and DEFAULT_NETWORK_BANDWIDTH
    (12.5e9 B/s, one 100 Gb/s port per GPU); 0 network bandwidth means nodes without a network.
    """

    name: str
    memory_bytes: int  # nominal: what the datasheet offers (an "80 GB" A100 is 80 GiB), for display
    memory_bandwidth: float  # HBM/GDDR bytes per second
    interconnect_bandwidth: float  # GPU-to-GPU bytes per second, one direction; 0 = PCIe only
    peak_flops: Mapping[str, float] = field(default_factory=dict)  # FLOP/s per dtype, dense
    vendor: str = ""
    tdp_w: float | None = None
    source: str = ""
    aliases: tuple[str, ...] = ()
    notes: str = ""
    device_memory_bytes: int | None = None  # the driver's total (mem_get_info()[1]): an "80 GB" H100 shows 79.18 GiB
    device_memory_source: str = ""
    node_gpus: int = DEFAULT_NODE_GPUS  # GPUs in the reference system's fast domain
    network_bandwidth: float = DEFAULT_NETWORK_BANDWIDTH  # B/s per GPU, one direction, between domains
    attention_share: float | None = None  # FlashAttention-2 forward's share of the 16-bit peak, as measured
    attention_kernels: Mapping[str, float] = field(default_factory=dict)  # other kernels' shares (cudnn, fa3)
    matmul_flops: Mapping[str, float] = field(default_factory=dict)  # measured best-shape matmul FLOP/s per dtype
    compute_capability: float | None = None  # NVIDIA's CUDA compute capability (9.0: Hopper); None elsewhere
    sm_count: int | None = None  # streaming multiprocessors (NVIDIA), whose share a kernel holds
    # B/s one direction of each direct link to a peer where the GPUs of a node form a full mesh without a switch
    # (AMD Infinity Fabric, Gaudi's scale-up RoCE ports): a group of r of them reaches (r - 1) links' worth,
    # r - 1 rings over disjoint links (RCCL), at most interconnect_bandwidth; 0: a switch (NVSwitch) gives any
    # group the whole interconnect_bandwidth (None)
    link_bandwidth: float | None = None
    # B/s one direction a copy between this GPU's memory and its host's pinned memory reaches, per GPU when all copy
    # at once (activation offloading's D2H and H2D, plan's offload term); None: not known, no offloading planned
    host_bandwidth: float | None = None
    host_memory_bytes: int | None = None  # the reference node's host memory over its GPUs (offloading's bound)
    # FLOP/s per dtype of matmuls that accumulate in 16 bits, where that differs from peak_flops (fp32 accumulate):
    # GeForce cards run fp16 (and fp8) accumulation at twice the rate (NVIDIA's Ada and Blackwell whitepapers)
    acc16_flops: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"GPU {self.name!r}"
        _positive(where, "memory", self.memory_bytes)
        if self.device_memory_bytes is not None:
            _positive(where, "device_memory", self.device_memory_bytes)
        _positive(where, "memory_bandwidth", self.memory_bandwidth)
        if min(self.interconnect_bandwidth, self.link_bandwidth or 0, self.host_bandwidth or 0) < 0:
            raise SpecError(f"{where}: interconnect, link and host bandwidths cannot be negative")
        check_count(where, "node_gpus", self.node_gpus)
        check_bandwidth(where, "network_bandwidth", self.network_bandwidth)
        for kernel in self.attention_kernels:
            check_choice(f"{where}: attention_kernels kernel", kernel, MEASURED_KERNELS)
        for field_name, share in {"attention_share": self.attention_share,
                                  **{f"attention_kernels.{k}": v for k, v in self.attention_kernels.items()}}.items():
            if share is not None and not 0 < share <= 1:
                raise SpecError(f"{where}: {field_name} must be a fraction of the 16-bit peak in (0, 1], got {share}")
        if not self.peak_flops:
            raise SpecError(f"{where}: needs at least one peak compute figure (tflops)")
        if self.sm_count is not None:
            check_count(where, "sm_count", self.sm_count)
        cc = self.compute_capability
        if cc is not None and (isinstance(cc, bool) or not isinstance(cc, (int, float)) or not 1 <= cc < 100):
            raise SpecError(f"{where}: compute_capability must be a CUDA compute capability such as 9.0, got {cc!r}")
        for dtype, value in self.peak_flops.items():
            check_choice(f"{where}: tflops dtype", dtype, DTYPES)
            _positive(where, f"tflops.{dtype}", value)
        _check_acc16(where, self.acc16_flops, self.peak_flops)
        for dtype, value in self.matmul_flops.items():  # a measurement, so below the peak (boost clocks aside)
            check_choice(f"{where}: matmul_tflops dtype", dtype, DTYPES)
            if dtype not in self.peak_flops:
                raise SpecError(f"{where}: matmul_tflops.{dtype} has no tflops.{dtype} peak to be measured against")
            if not 0 < value <= 1.1 * self.peak_flops[dtype]:
                raise SpecError(f"{where}: matmul_tflops.{dtype} must be a measured rate of at most 1.1 x the dense "
                                f"peak ({self.peak_flops[dtype] / 1e12:g}), got {value / 1e12:g}")

    @property
    def usable_bytes(self) -> int:
        """The capacity every fit is judged against: the driver's total where known, else nominal."""
        return self.device_memory_bytes or self.memory_bytes

    def collective_bandwidth(self, ranks: int) -> float:
        """B/s one direction a collective among ``ranks`` GPUs moves per GPU: inside the reference node its links'
        (mesh_bandwidth); past node_gpus a ring's hops between nodes go through each GPU's share of the network, the
        slowest link it crosses (TP 16 on DGX H100s: 50 GB/s, not NVLink's 450)."""
        inside = mesh_bandwidth(self.interconnect_bandwidth, self.link_bandwidth, min(ranks, self.node_gpus))
        if ranks > self.node_gpus and not self.network_bandwidth:
            raise SpecError(f"{ranks} GPUs span nodes of {self.node_gpus} {self.name}, whose preset states no network "
                            "between them (network_gb_s 0); give its bandwidth per GPU")
        return inside if ranks <= self.node_gpus else min(inside, self.network_bandwidth)

    def peak_label(self, dtype: str, acc16: bool = False) -> str:
        """The figure peak() reads, named: the dtype's, its 16-bit-accumulate rate where asked and known, or its
        stand-in, said as one (a V100's bf16 is its fp16)."""
        if acc16 and dtype in self.acc16_flops:
            return f"{dtype} (16-bit accumulate)"
        stand_in = STAND_INS.get(dtype)
        if dtype in self.peak_flops or stand_in not in self.peak_flops:
            return dtype
        return f"{stand_in} (no {dtype} peak: its {stand_in} stands in)"

    def matmul_share(self, dtype: str) -> float | None:
        """The share of the dense ``dtype`` peak a best-shape matmul reaches, as measured; None unmeasured.
        fp16 and bf16 stand in for each other where their peaks are the same (not on Gaudi 3)."""
        for candidate in (dtype, STAND_INS.get(dtype)):
            if candidate in self.matmul_flops and self.peak(candidate) == self.peak(dtype):
                return self.matmul_flops[candidate] / self.peak(candidate)
        return None

    def peak(self, dtype: str, acc16: bool = False) -> float:
        """Dense peak FLOP/s for a compute dtype; fp16/bf16 stand in for each other. ``acc16``: matmuls that
        accumulate in 16 bits (llama.cpp's fp16 GEMMs), at acc16_flops where the GPU has the figure."""
        if acc16 and dtype in self.acc16_flops:
            return self.acc16_flops[dtype]
        for candidate in (dtype, STAND_INS.get(dtype)):
            if candidate in self.peak_flops:
                return self.peak_flops[candidate]
        have = ", ".join(sorted(self.peak_flops))
        raise SpecError(f"GPU {self.name!r} has no published {dtype} peak; choose --dtype from: {have}")


def _check_acc16(where: str, acc16: Mapping[str, float], peaks: Mapping[str, float]) -> None:
    """A 16-bit-accumulate rate is its dtype's peak at most twice over (GeForce's ratio), never below it."""
    for dtype, value in acc16.items():
        if not peaks.get(dtype, 0) <= value <= 2.05 * peaks.get(dtype, 0):
            raise SpecError(f"{where}: acc16_tflops.{dtype} must be the 16-bit-accumulate rate, from tflops.{dtype} "
                            f"to twice it, got {value / 1e12:g}")


def mesh_bandwidth(interconnect: float, link: float | None, ranks: int) -> float:
    """B/s one direction per GPU of a collective among ``ranks`` GPUs of one node: the whole ``interconnect``
    behind a switch (``link`` None or 0), else r - 1 peer links (GPUSpec.link_bandwidth), at most that."""
    return min(interconnect, (ranks - 1) * link) if link and ranks > 1 else interconnect


STAND_INS = {"bf16": "fp16", "fp16": "bf16"}  # 16-bit formats one another's peak stands in for


def check_count(where: str, key: str, value: object) -> None:
    """GPUs in a fast domain, nodes in a cluster: a positive whole number (at most a million)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 1_000_000:
        raise SpecError(f"{where}: {key} must be a positive whole number, got {value!r}")


def check_bandwidth(where: str, key: str, value: object) -> None:
    """A link's bytes per second: a finite number >= 0 (0: no such link)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1e18:
        raise SpecError(f"{where}: {key} must be a number >= 0 (B/s), got {value!r}")
