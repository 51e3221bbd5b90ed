"""Model states per GPU: weights, gradients, fp32 master weights, optimizer states.

ZeRO paper (Rajbhandari et al. 2020, §3 and Fig. 1): with mixed precision and Adam each parameter
costs 2 + 2 + 12 bytes; stage 1 shards the optimizer over the N_d data-parallel ranks, stage 2
also the gradients, stage 3 also the weights (FSDP full-shard is ZeRO-3). ZeRO-Offload moves the
optimizer (and the reduced gradients) to CPU memory; ZeRO-Infinity also the parameter shard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..dtypes import DTYPE_BYTES
from ..params import OPTIMIZERS
from ..units import fmt_params
from .placement import ParamSplit
from .precision import PRECISIONS
from .settings import MemorySettings

QLORA_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8  # QLoRA §3: NF4 + double-quantized absmax = 4.127 bits
NF4_BYTES = (4 + 32 / 64) / 8  # bitsandbytes NF4 without double quantization: fp32 absmax per 64 = 4.5 bits


def state_rows(optimizer: str, precision: str) -> list[tuple[str, float]]:
    """(row name, bytes per value) of the fp32 master copy and each optimizer state (params.OPTIMIZERS)."""
    prec = PRECISIONS[precision]
    opt = OPTIMIZERS[optimizer]
    per_state = prec.state if opt.nbytes is None else opt.nbytes
    rows = [("optimizer/master", prec.master)] if prec.master else []
    return rows + [(name, per_state) for name in opt.states]


def precision_note(precision: str, optimizer: str) -> str:
    """The bytes per trainable parameter under ``precision`` with ``optimizer``: the precision's own sourced
    sentence where it is Adam's (two states at its width), else the sum written out (state_rows)."""
    prec, opt = PRECISIONS[precision], OPTIMIZERS[optimizer]
    if len(opt.states) == 2 and opt.nbytes in (None, prec.state):
        return prec.source
    # a factored state (Adafactor) is rows + cols values a matrix, not one a parameter: said apart
    states = [(name.split("/")[1], b) for name, b in state_rows(optimizer, precision)
              if not (opt.factored and name in opt.states)]
    parts = [("weights", prec.weights), ("grads", prec.grads)] + states
    return (f"{precision} precision with {optimizer}: " + " + ".join(f"{b:g} {name}" for name, b in parts)
            + f" = {sum(b for _, b in parts):g} B/param" + (", and its state's rows + cols values a matrix"
                                                             if opt.factored else ""))


def _state_parts(psi: float, precision: str, optimizer: str, zero: int, state_values: float | None):
    """(row, values, bytes per value, sharded by ZeRO) of each model state: the one list behind
    model_state_bytes and model_state_hows."""
    prec = PRECISIONS[precision]
    yield "weights", psi, prec.weights, zero >= 3
    yield "gradients", psi, prec.grads, zero >= 2
    for name, b in state_rows(optimizer, precision):
        yield name, psi if name == "optimizer/master" or state_values is None else state_values, b, zero >= 1


def model_state_bytes(psi: float, precision: str = "mixed", optimizer: str = "adamw", zero: int = 0,
                      nd: int = 1, state_values: float | None = None) -> dict[str, float]:
    """Per-GPU bytes of weights, gradients, master weights and each optimizer state (ZeRO paper).

    psi parameters replicated over nd data-parallel ranks. With mixed precision and Adam (K = 12):
    stage 0 (2 + 2 + K)Ψ, 1 2Ψ + 2Ψ + KΨ/N_d, 2 2Ψ + (2 + K)Ψ/N_d, 3 (4 + K)Ψ/N_d (Fig. 1: Ψ = 7.5B,
    N_d = 64 -> 120, 31.4, 16.6, 1.9 GB). state_values: values per optimizer state when not one per
    parameter (Adafactor's rows + cols). A sharded state is ceil(n / nd): ZeRO pads partitions to equal size.
    """
    return {name: b * (math.ceil(n / nd) if sharded else n)
            for name, n, b, sharded in _state_parts(psi, precision, optimizer, zero, state_values)}


def model_state_hows(psi: float, precision: str = "mixed", optimizer: str = "adamw", zero: int = 0,
                     nd: int = 1, state_values: float | None = None, what: str = "params") -> dict[str, tuple]:
    """model_state_bytes as formulas (breakdown.formula), the same keys."""
    return {name: ("ceil({} " + what + " / {} ranks) x {} B", n, nd, b) if sharded else ("{} " + what + " x {} B", n, b)
            for name, n, b, sharded in _state_parts(psi, precision, optimizer, zero, state_values)}


@dataclass
class States:
    """One GPU's model-state rows before rendering: weight sub-rows, the weights row, gradients,
    optimizer sub-rows, what went to CPU memory, and the notes they need."""

    weights: float
    weight_note: str
    weight_rows: dict[str, float] = field(default_factory=dict)
    gradients: float = 0.0
    optimizer: dict[str, float] = field(default_factory=dict)
    trainable: float = 0.0  # parameters with gradients and optimizer states, this GPU
    notes: list[str] = field(default_factory=list)
    hows: dict[str, tuple] = field(default_factory=dict)  # each row's formula (breakdown.formula)


def full_states(p: ParamSplit, s: MemorySettings, nd: int, nd_e: int) -> States:
    """Full training: every parameter has gradients and states; routed experts shard over nd_e ranks."""
    psi = p.total
    factored = p.factored if OPTIMIZERS[s.optimizer].factored else None  # Shazeer & Stern 2018: rows + cols
    dense_args = (p.linear + p.other, s.precision, s.optimizer, s.zero, nd,
                  factored and factored * (p.linear + p.other) / psi)
    expert_args = (p.experts, s.precision, s.optimizer, s.zero, nd_e, factored and factored * p.experts / psi)
    dense, experts = model_state_bytes(*dense_args), model_state_bytes(*expert_args)
    both = {k: dense[k] + experts[k] for k in dense}
    note = f"{PRECISIONS[s.precision].weights:g} B/param x {fmt_params(psi)} params" + \
        (f" / {nd} (ZeRO-3)" if s.zero >= 3 else "")
    hows = model_state_hows(*dense_args)
    if p.experts:
        expert_hows = model_state_hows(*expert_args, "expert params")
        hows = {k: ("{} + {}", hows[k], expert_hows[k]) for k in hows}
    return States(weights=both["weights"], weight_note=note, gradients=both["gradients"],
                  optimizer=_optimizer_only(both), trainable=psi, hows=hows)


def adapter_states(p: ParamSplit, s: MemorySettings, replicas: tuple[int, int], split: tuple[float, float],
                   targets: frozenset, head: float = 0.0) -> States:
    """LoRA / QLoRA: a frozen base plus trainable adapters (Hu et al. 2021; Dettmers et al. 2023).

    The frozen base's linears are stored in ``dtype`` (QLoRA: NF4 with double-quantized scales,
    QLORA_BYTES, or with fp32 scales, NF4_BYTES, as the framework quantizes), embeddings, norms and head
    in the compute dtype (fp32 where PEFT's k-bit preparation casts them); only the adapters have
    gradients and optimizer states. replicas: the dense weights' and the routed experts' (their adapters'
    states shard over each's, as full training's do); split: the adapters on each, this GPU (placement.lora_params).
    head: LM-head parameters on this GPU, quantized with the linears where the framework does so (LitGPT).
    """
    (nd, nd_e), adapters = replicas, sum(split)
    dense, experts = (model_state_bytes(n, s.precision, s.optimizer, s.zero, r) for n, r in zip(split, replicas))
    states = {k: dense[k] + experts[k] for k in dense}
    dq = s.fw.nf4_double_quant
    other = "fp32" if s.finetune == "qlora" and s.fw.kbit_fp32 else s.compute_dtype
    if s.finetune == "qlora":
        q = p.quantizable + (head if s.fw.quantizes_head else 0.0)
        frozen = q * (QLORA_BYTES if dq else NF4_BYTES) + (p.total - q) * DTYPE_BYTES[other]
        frozen_how = ("{} quantized params x {} B + {} params x {} B", q, QLORA_BYTES if dq else NF4_BYTES, p.total - q,
                      DTYPE_BYTES[other])
    else:
        frozen = sum(p.weight_bytes(s.dtype, s.group_size).values())
        frozen_how = ("{} B", frozen)
        other = s.dtype if s.dtype in DTYPE_BYTES and DTYPE_BYTES[s.dtype] >= 2 else s.compute_dtype
    rows = {"weights/frozen": math.ceil(frozen / nd) if s.zero >= 3 else frozen,
            "weights/adapters": states["weights"]}
    hows = model_state_hows(split[0], s.precision, s.optimizer, s.zero, nd, what="adapter params")
    if split[1]:
        expert_hows = model_state_hows(split[1], s.precision, s.optimizer, s.zero, nd_e, what="expert adapter params")
        hows = {k: ("{} + {}", hows[k], expert_hows[k]) for k in hows}
    hows |= {"weights/frozen": ("ceil(({}) / {} ranks)", frozen_how, nd) if s.zero >= 3 else frozen_how,
             "weights/adapters": hows["weights"]}
    kind = s.dtype if s.finetune != "qlora" else \
        "NF4 with double-quantized scales, 4.127 bits" if dq else "NF4 with fp32 scales, 4.5 bits"
    rest = "embeddings/norms" if s.finetune == "qlora" and s.fw.quantizes_head else "embeddings/norms/head"
    note = (f"{s.finetune}: frozen base linears{' and head' if rest == 'embeddings/norms' else ''} in {kind}, "
            f"{rest} in {other}; "
            f"rank-{s.lora_rank} adapters on {', '.join(sorted(targets))}: {fmt_params(adapters)} trainable params per GPU, "
            "with their gradients and optimizer states")
    return States(weights=sum(rows.values()), weight_note="frozen base + adapters", weight_rows=rows,
                  gradients=states["gradients"], optimizer=_optimizer_only(states), trainable=adapters,
                  notes=[note], hows=hows)


def _optimizer_only(states: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in states.items() if k.startswith("optimizer/")}


STATE_NOTES = {"optimizer/master": "fp32 master weights", "optimizer/adam_m": "first moment",
               "optimizer/adam_v": "second moment", "optimizer/momentum": "momentum"}


def state_note(name: str, s: MemorySettings) -> str:
    """The note of one optimizer/ sub-row."""
    b = dict(state_rows(s.optimizer, s.precision))[name]
    if name == "optimizer/adafactor_v":
        return f"{b:g} B x (rows + cols) per matrix, factored second moment"
    return f"{b:g} B/param, {STATE_NOTES[name]}"
