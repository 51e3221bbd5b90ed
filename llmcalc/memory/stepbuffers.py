"""What an optimizer step allocates beside the model states (memory/training.py's optimizer_step row): torch's
foreach temporary, and the fp32 copy Megatron and DeepSpeed make of 16-bit gradients (frameworks.GradCopy)."""

from __future__ import annotations

from .precision import PRECISIONS
from .settings import MemorySettings
from .states import States


def step_buffers(s: MemorySettings, states: States) -> dict[str, float]:
    """What step() allocates beside the states, by the optimizer row it mirrors. torch.optim's foreach
    Adam/AdamW (the default on CUDA) makes one temporary the size of the second moment, its square root,
    for the whole parameter group (torch/optim/adam.py, _multi_tensor_adam); the fused kernels (HF's
    adamw_torch_fused, torchtune's fused=True, DeepSpeed, Megatron) make none. Megatron and DeepSpeed step on
    an fp32 copy of 16-bit gradients, one value per master weight (Framework.step_grad_copy)."""
    if "optimizer" in s.offload:
        return {}
    out = {}
    at_once = _copy_values(s, states)[0]
    if at_once:
        out["optimizer/master"] = at_once * s.fw.step_grad_copy.nbytes
    if s.fw.optimizer_impl == "foreach" and s.optimizer in ("adam", "adamw"):
        out["optimizer/adam_v"] = states.optimizer.get("optimizer/adam_v", 0.0)
    return out


def _copy_values(s: MemorySettings, states: States) -> tuple[float, float]:
    """(values of the fp32 gradient copy alive at once, values the GPU steps): the optimizer's shard (its master
    weights), made at once, or under ZeRO-3 a framework's sub-group at a time; (0, 0) without a copy (fp32
    gradients, or no framework copy)."""
    copy, prec = s.fw.step_grad_copy, PRECISIONS[s.precision]
    if not copy or s.zero < copy.min_zero or prec.grads >= 4 or not prec.master or \
            not states.optimizer.get("optimizer/master"):
        return 0.0, 0.0
    values = states.optimizer["optimizer/master"] / prec.master
    return (min(values, copy.zero3_group) if s.zero >= 3 and copy.zero3_group else values), values


STEP_BUFFER_NOTES = {"optimizer/adam_v": "foreach AdamW: sqrt of the second moment during step()"}


def copy_scope(s: MemorySettings, states: States) -> str:
    """Whose values a step temporary holds at once: a sub-group of them, or this GPU's share under ZeRO."""
    at_once, stepped = _copy_values(s, states)
    if at_once < stepped:
        return f", one sub-group of {s.fw.step_grad_copy.zero3_group:,.0f} values at a time"
    return f", this GPU's share under ZeRO-{s.zero}" if s.zero and s.parallel.replicas > 1 else ""


def copy_note(s: MemorySettings, states: States) -> str:
    """The precision note's addition where the step copies 16-bit gradients to fp32 (else "")."""
    copy = s.fw.step_grad_copy
    if not _copy_values(s, states)[0] or "optimizer" in s.offload:
        return ""
    return (f"; the step adds an fp32 copy of the 16-bit gradients, {copy.nbytes} B a value it holds at its peak "
            f"(optimizer_step{copy_scope(s, states)}{'; ' + copy.table if copy.table else ''})")


def step_buffer_note(s: MemorySettings, parts: dict, states: States) -> str:
    """The optimizer_step row's note: what each temporary is, and whose share of it this GPU holds."""
    return "; ".join((s.fw.step_grad_copy.note if k == "optimizer/master" else STEP_BUFFER_NOTES[k])
                     + copy_scope(s, states) for k in parts)


def step_how(s: MemorySettings, parts: dict, states: States) -> tuple:
    """The optimizer_step row's formula: the fp32 gradient copy by its count (optimizer/master's, at the copy's
    bytes a value, dense and expert parts alike; a ZeRO-3 sub-group by its size), the foreach temporary as the row
    it mirrors."""
    nbytes = s.fw.step_grad_copy.nbytes if s.fw.step_grad_copy else 0
    at_once, stepped = _copy_values(s, states)

    def rebytes(how: tuple) -> tuple | None:  # "... x {} B" with the copy's bytes, through "{} + {}" sums
        if how[0] == "{} + {}":
            parts = [rebytes(h) for h in how[1:]]
            return None if None in parts else ("{} + {}", *parts)
        return (*how[:-1], nbytes) if how[0].endswith("x {} B") else None

    hows = []
    for k in parts:
        if k != "optimizer/master":
            hows.append((k,))
        elif at_once < stepped:
            hows.append(("{} values (a sub-group) x {} B", at_once, nbytes))
        else:
            hows.append(rebytes(states.hows.get(k, ("",))) or ("{} B", parts[k]))
    return hows[0] if len(hows) == 1 else ("{} + {}", *hows)
