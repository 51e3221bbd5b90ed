"""What is alive at a training step's peak (training.train_stage): the start of backward or the optimizer step,
and the rows of the other moment, which keep their value but leave the total."""

from __future__ import annotations

from ..breakdown import Rows
from .loss import LossBuffers


def beside_the_loss(lb: LossBuffers | None, loss: float, step: float, rebuilt_wins: bool) -> tuple[float, float, bool]:
    """(the loss's bytes at the backward peak, the in-backward step's gradient beside them, whether that gradient is
    alive there): where the loss's forward moment outweighs its backward one with the gradient, the gradient is not."""
    if not step or not lb or rebuilt_wins:
        return loss, step, True
    return max(lb.forward, lb.backward + step), 0.0, lb.at_backward(step)


def mark_phase(r: Rows, at_backward: bool, persistent: bool, no_loss: bool, autocast: bool, stepped: bool = False,
               held: bool = False) -> None:
    """Rows not alive at the peak keep their value but leave the total (no share). ``stepped``: the optimizer in
    backward with its gradient alive at the peak. ``held``: the training loop still holds the logits output at the
    optimizer step (loss.LossBuffers.kept), which stays in; ZeRO-3's gathered layers are freed by then."""
    gone = _gone(at_backward, persistent, no_loss, autocast, stepped)
    alive = ("logits/output",) if held and not at_backward else ()
    if not at_backward and not autocast and "weights/gathered" in r:
        _leaves_the_total(r, "weights", " (its gathered layers freed at the peak)")
        _leaves_the_total(r, "weights/gathered", " (not alive at the peak)")
    for row in [row for row in r.build() if row.name.partition("/")[0] in gone and row.name not in alive]:
        if row.name in gone or row.total:  # a gone row or one of its parts
            why = "" if not row.value or row.name not in gone else \
                " (only its output, held by the loop, alive at the peak)" if alive and row.name == "logits" else \
                " (not alive at the peak)"
            r.add(row.name, row.value, row.note + why, total=None, how=row.how)


def _gone(at_backward: bool, persistent: bool, no_loss: bool, autocast: bool, stepped: bool) -> tuple[str, ...]:
    """The rows of the moment that is not the peak."""
    if not at_backward:
        return ("activations", "logits") + (("weights",) if autocast else ())
    return (() if stepped else ("optimizer_step",)) + (("logits",) if no_loss else ()) + \
        (() if persistent else ("gradients",))


def _leaves_the_total(r: Rows, name: str, why: str) -> None:
    row = r.row(name)
    r.add(name, row.value, row.note + why, total=None, how=row.how)


def peak_note(at_backward: bool, persistent: bool, accum: int = 1, inbwd: bool = False) -> str:
    if at_backward:
        grads = "each gradient stepped and freed as it lands (optimizer in backward)" if inbwd else \
            f"gradients accumulating over {accum} micro-batches" if accum > 1 else \
            "gradients in persistent buffers" if persistent else "gradients not yet allocated (freed by zero_grad)"
        return f"peak at the start of backward: saved activations and the loss's buffers alive, {grads}"
    return "peak in the optimizer step: every gradient and the step's temporaries, activations already freed"
