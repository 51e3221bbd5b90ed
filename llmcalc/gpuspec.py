"""An accelerator's specification: a frozen dataclass of datasheet figures, validated on construction.

Its own module, beside spec.py's model and layout: only the commands that take a GPU load it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .dtypes import DTYPES
from .spec import SpecError, _positive, check_choice


@dataclass(frozen=True)
class GPUSpec:
    """One accelerator: dense peak compute per dtype, memory, bandwidths (datasheet figures)."""

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

    def __post_init__(self) -> None:
        where = f"GPU {self.name!r}"
        _positive(where, "memory", self.memory_bytes)
        if self.device_memory_bytes is not None:
            _positive(where, "device_memory", self.device_memory_bytes)
        _positive(where, "memory_bandwidth", self.memory_bandwidth)
        if self.interconnect_bandwidth < 0:
            raise SpecError(f"{where}: interconnect bandwidth cannot be negative")
        if not self.peak_flops:
            raise SpecError(f"{where}: needs at least one peak compute figure (tflops)")
        for dtype, value in self.peak_flops.items():
            check_choice(f"{where}: tflops dtype", dtype, DTYPES)
            _positive(where, f"tflops.{dtype}", value)

    @property
    def usable_bytes(self) -> int:
        """The capacity every fit is judged against: the driver's total where known, else nominal."""
        return self.device_memory_bytes or self.memory_bytes

    def peak(self, dtype: str) -> float:
        """Dense peak FLOP/s for a compute dtype; fp16/bf16 stand in for each other."""
        for candidate in (dtype, {"bf16": "fp16", "fp16": "bf16"}.get(dtype)):
            if candidate in self.peak_flops:
                return self.peak_flops[candidate]
        have = ", ".join(sorted(self.peak_flops))
        raise SpecError(f"GPU {self.name!r} has no published {dtype} peak; choose --dtype from: {have}")
