"""Inference memory per GPU, as the chosen serving engine accounts for it (memory/engines).

Shared here: the weights rows, the working set of a prefill chunk, and the rows of engines that
allocate the KV cache as requests need it (``growing_stage``: transformers, llama.cpp).
"""

from __future__ import annotations

import math

from ..breakdown import Quantity, Rows
from ..dtypes import DTYPE_BYTES, FLOAT_DTYPES
from ..kvcache import kv_cache_bytes, kv_values_per_token_layer
from ..spec import ModelSpec
from ..units import fmt_bytes, fmt_params
from .activations import layer_tensors, local, working_set
from .placement import ParamSplit, Stage
from .settings import MemorySettings
from .stage import StageMemory, stage_note, whole_bytes


def weight_format(m: ModelSpec, s: MemorySettings):
    """(quant.WeightFormat or None, share of the linears kept 16-bit) for these settings: the
    checkpoint's own layout, or --dtype's with --keep-16bit modules."""
    if s.weight_format != "checkpoint" and not s.keep_16bit:
        return None, 0.0
    from ..quant import WeightFormat, checkpoint_format, kept_fraction

    if s.weight_format == "checkpoint":
        fmt = checkpoint_format(m, s.keep_16bit)
    else:
        fmt = WeightFormat("dtype", s.dtype, s.group_size if DTYPE_BYTES[s.dtype] < 1 else None, False, False,
                           s.keep_16bit)
    return fmt, kept_fraction(m, fmt.skip)


def add_weights(r: Rows, m: ModelSpec, p: ParamSplit, s: MemorySettings, buffers: float = 0.0, what: str = "") -> None:
    """Weights in ``s.dtype`` (ParamSplit.weight_bytes): quantized ones as linears, scales and the
    16-bit rest (a checkpoint's own layout and kept modules: weight_format); plus ``buffers`` bytes
    the model builds beside them (``what`` they are)."""
    fmt, kept = weight_format(m, s)
    if fmt is not None and s.dtype in FLOAT_DTYPES:
        fmt, kept = None, 0.0  # a 16/32-bit dtype keeps every module as it is
    parts = p.weight_bytes(s.dtype, s.group_size, fmt, kept, m.hidden_size)
    total = sum(parts.values()) + buffers
    nbytes = DTYPE_BYTES[s.dtype]
    extra = f" + {what} {fmt_bytes(buffers)}" if buffers else ""
    if buffers:
        r.add("weights/buffers", whole_bytes(buffers), what)
    if "weights" in parts:
        r.add("weights", whole_bytes(total), f"{nbytes:g} B/param x {fmt_params(p.total)} params{extra}")
        return
    quantized = p.quantizable * (1 - kept)
    r.add("weights/quantized", whole_bytes(parts["quantized"]), f"{nbytes * 8:g} bits x {fmt_params(quantized)} linear weights")
    if parts["scales"]:
        how = f"{fmt.method} scales" + (" and zero points" if fmt.zero_points else "") if fmt else \
            f"16-bit scale per {s.group_size} weights (zero points not counted)"
        r.add("weights/scales", whole_bytes(parts["scales"]), how)
    kept_note = f"; {kept:.1%} of the linears kept ({', '.join(fmt.skip)})" if kept else ""
    r.add("weights/unquantized", whole_bytes(parts["unquantized"]), "embeddings, norms, biases, head in 16-bit" + kept_note)
    bits = (parts["quantized"] + parts["scales"]) * 8 / quantized if quantized else 0.0
    r.add("weights", whole_bytes(total), f"{bits:.3g} bits per quantized weight{extra}")


def prefill_activations(m: ModelSpec, s: MemorySettings, st: Stage, chunk: int) -> float:
    """Bytes of the working set of a prefill of ``chunk`` tokens, one layer at a time
    (activations.working_set): the largest over the layer kinds the stage holds."""
    par = s.parallel
    e = DTYPE_BYTES[s.compute_dtype]
    loc = local(m, s.attention_impl, math.ceil(chunk / par.cp), s.seq, par.tp, False)
    kinds = ([False] if st.dense else []) + ([True] if st.moe else [])
    return max(working_set(m, layer_tensors(m, s.attention_impl, e, moe, training=False), loc, e)
               for moe in kinds)


def kv_note(m: ModelSpec, s: MemorySettings, st: Stage, context: int) -> str:
    tp = s.parallel.tp
    heads = "MLA latent (replicated over TP)" if m.is_mla else \
        f"2 x {math.ceil(m.kv_heads / tp)} kv heads x {m.qk_head_dim}" + \
        (" (replicated: TP > kv heads)" if tp > m.kv_heads else "")
    return f"{s.batch} x {context:,} tokens x {st.layers} layers x {heads} x {DTYPE_BYTES[s.kv_dtype]:g} B"


def growing_stage(r: Rows, m: ModelSpec, s: MemorySettings, st: Stage, usable: float, context: int,
                  notes: list[str], windows: bool = True) -> StageMemory:
    """Close the rows of an engine that allocates the KV cache for the requests it holds: the
    cache of ``s.batch`` requests of ``context`` positions (sliding-window layers keeping their
    window unless ``windows`` is False), the total, whether it fits ``usable``, and the capacity:
    the tokens (and requests of ``s.seq``) the room left would hold."""
    par = s.parallel
    per_token = kv_values_per_token_layer(m, par.tp) * DTYPE_BYTES[s.kv_dtype] * st.layers / par.cp
    if windows:
        kv = kv_cache_bytes(m, context, s.batch, DTYPE_BYTES[s.kv_dtype], par.tp, par.cp, st.layers)
    else:
        kv = s.batch * context * per_token
    r.add("kv_cache", whole_bytes(kv), kv_note(m, s, st, context))
    other = sum(r[k] for k in ("weights", "non_torch", "activations", "logits", "cuda_graphs", "reserve") if k in r)
    total = other + kv
    r.add("total", whole_bytes(total), "per GPU")
    room = max(0.0, usable - other)
    tokens = int(room // per_token) if per_token else 0
    per_request = kv / s.batch
    summary = {"kv_cache_budget": Quantity(whole_bytes(room), "byte"),
               "kv_cache_capacity": Quantity(tokens, "token"),
               "max_concurrency": Quantity(round(room / per_request, 4) if per_request else 0.0, "count"),
               "kv_per_token": Quantity(whole_bytes(per_token), "byte"),
               "kv_per_request": Quantity(whole_bytes(per_request), "byte"), "stage": Quantity(st.index, "count")}
    res = StageMemory(r, total, {}, summary, notes + ([stage_note(st, par.pp, 1)] if par.pp > 1 else []))
    res.usable, res.fits = usable, total <= usable
    return res


def infer_stage(m: ModelSpec, s: MemorySettings, st: Stage, dev) -> StageMemory:
    """Every inference row of one pipeline stage's GPU, as ``s.engine`` sizes it."""
    from .engines import engine_module

    return engine_module(s.engine).stage(m, s, st, dev)
