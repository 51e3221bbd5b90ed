"""What training and inference both fill in for one pipeline stage's GPU, and the helpers they share."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..breakdown import Rows
from .placement import Stage

RESERVE_NOTE = "outside PyTorch's allocator: CUDA context, cuBLAS/NCCL workspaces"


@dataclass
class StageMemory:
    """One pipeline stage's rows, total, host-memory rows, summary entries and notes."""

    rows: Rows
    total: float
    cpu: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    usable: float | None = None  # inference engines: the memory the engine may take (None: capacity x gpu_util)
    fits: bool | None = None  # inference engines: their own rule (None: total <= usable)


def whole_bytes(x: float) -> int:
    """Bytes as an integer (fractional bytes come from int4 and averages; round to the nearest)."""
    return round(x)


def add_reserve(r: Rows, reserve: float, note: str = RESERVE_NOTE) -> None:
    """The reserve row: ``reserve`` bytes (--reserve) outside what the rest of the rows count."""
    r.add("reserve", whole_bytes(reserve), note, how=("{} B", whole_bytes(reserve)))


def stage_notes(st: Stage, pp: int) -> list[str]:
    """The pipeline-stage note of an inference stage, when there is more than one stage."""
    return [stage_note(st, pp, 1, train=False)] if pp > 1 else []


def stage_note(st: Stage, pp: int, in_flight: float, train: bool = True, vpp: int = 1) -> str:
    schedule = f"interleaved 1F1B, {vpp} virtual stages a rank" if vpp > 1 else "1F1B"
    flight = f", {in_flight:.3g} micro-batches in flight, {schedule}" if in_flight > 1 else ""
    last = "LM head and loss" if train else "LM head"
    role = f"first (embedding{flight})" if st.first else f"last ({last})" if st.last else \
        f"a middle one (an uneven split's extra layer{flight})"
    return f"pipeline stage {st.index} of {pp}: {role}, {st.layers} layers"
