"""The training memory model taken apart, so a layout search can price thousands of micro-batch sizes and
pipeline schedules without rebuilding every row.

Every training row is linear in the micro-batch (each saved tensor, the loss's buffers and the rebuilt
layer are so many bytes per sequence), and the activations of the layers a stage holds scale with the
micro-batches in flight. So the peak of one stage is

    backward(mb, flight) = fixed + mb x (per_sequence + flight x per_flight)
    allocated = max(backward, step);  total = allocated + slack x (allocated - base) + reserve

where step (the optimizer step's moment), base (what the allocator's slack is not charged on) and the
rest are read off ``train_stage`` itself at one and two sequences: the same model the memory command
prints, not a second one. tests/test_plan.py checks the pieces against train_stage at other sizes.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from ..spec import ModelSpec
from .placement import Stage
from .saved import in_flight
from .settings import MemorySettings
from .training import ALLOCATOR_SLACK, train_stage

FLIGHT_ROWS = ("activations/layers", "activations/embedding", "activations/weight_copies")


class StagePieces(NamedTuple):
    """One pipeline stage's peak memory as a function of micro-batch size and micro-batches in flight."""

    fixed: float  # allocated at the backward peak whatever the batch: weights, optimizer, persistent grads
    per_sequence: float  # per sequence of the micro-batch, once: head, loss buffers, the rebuilt layer
    per_flight: float  # per sequence per micro-batch in flight: the saved activations of the stage's layers
    step: float  # allocated at the optimizer step (no activations)
    base: float  # bytes the allocator's slack does not apply to (resident weights, optimizer, buffers)
    reserve: float

    def total(self, micro_batch: int, flight: float) -> float:
        """Bytes per GPU at the stage's peak: as train_stage's ``total`` row."""
        backward = self.fixed + micro_batch * (self.per_sequence + flight * self.per_flight)
        allocated = max(backward, self.step)
        return allocated + ALLOCATOR_SLACK * (allocated - self.base) + self.reserve


def stage_pieces(m: ModelSpec, s: MemorySettings, st: Stage) -> StagePieces:
    """Read the pieces off train_stage at one and at two sequences per micro-batch (``s.batch`` ignored)."""
    one = train_stage(m, dataclasses.replace(s, batch=1), st)
    two = train_stage(m, dataclasses.replace(s, batch=2), st)
    b1, b2 = one.summary["peak_backward"].value, two.summary["peak_backward"].value
    flight = in_flight(s, st)
    rows = one.rows
    per_flight = sum(rows[name] for name in FLIGHT_ROWS if name in rows) / flight
    slope = b2 - b1
    allocated = one.summary["peak_allocated"].value
    return StagePieces(fixed=b1 - slope, per_sequence=slope - flight * per_flight, per_flight=per_flight,
                       step=one.summary["peak_step"].value, base=allocated - rows["allocator"] / ALLOCATOR_SLACK,
                       reserve=rows["reserve"])
