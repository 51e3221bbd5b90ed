"""Inference memory per GPU: weights in their dtype, the KV cache of ``batch`` requests of ``seq``
tokens (kvcache.py, in vLLM's 16-token blocks), the working set of one prefill chunk, the last
position's logits, and a reserve; usable memory is capacity x ``gpu_util`` (vLLM's
gpu_memory_utilization).
"""

from __future__ import annotations

import math

from ..breakdown import Quantity, Rows
from ..dtypes import DTYPE_BYTES
from ..kvcache import block_rounded, kv_cache_bytes, kv_values_per_token_layer
from ..spec import ModelSpec
from ..units import fmt_bytes, fmt_params
from .activations import layer_tensors, local, working_set
from .placement import ParamSplit, Stage, stage_params
from .settings import MemorySettings
from .stage import RESERVE_NOTE, StageMemory, stage_note, whole_bytes


def add_weights(r: Rows, p: ParamSplit, s: MemorySettings) -> None:
    """Weights in ``s.dtype`` (ParamSplit.weight_bytes): quantized ones as linears, scales and the 16-bit rest."""
    parts = p.weight_bytes(s.dtype, s.group_size)
    total = sum(parts.values())
    nbytes = DTYPE_BYTES[s.dtype]
    if "weights" in parts:
        r.add("weights", whole_bytes(total), f"{nbytes:g} B/param x {fmt_params(p.total)} params")
        return
    r.add("weights/quantized", whole_bytes(parts["quantized"]), f"{nbytes * 8:g} bits x {fmt_params(p.quantizable)} linear weights")
    if parts["scales"]:
        r.add("weights/scales", whole_bytes(parts["scales"]), f"16-bit scale per {s.group_size} weights (zero points not counted)")
    r.add("weights/unquantized", whole_bytes(parts["unquantized"]), "embeddings, norms, biases, head in 16-bit")
    bits = (parts["quantized"] + parts["scales"]) * 8 / p.quantizable
    r.add("weights", whole_bytes(total), f"{bits:.3g} bits per quantized weight")


def prefill_activations(m: ModelSpec, s: MemorySettings, st: Stage) -> tuple[float, int]:
    """(bytes, tokens) of one prefill chunk's working set, one layer at a time (activations.working_set):
    the largest over the layer kinds the stage holds."""
    par = s.parallel
    chunk = math.ceil(min(s.prefill_chunk, s.batch * s.seq) / par.cp)
    e = DTYPE_BYTES[s.compute_dtype]
    loc = local(m, s.attention_impl, chunk, s.seq, par.tp, False)
    kinds = ([False] if st.dense else []) + ([True] if st.moe else [])
    return max(working_set(m, layer_tensors(m, s.attention_impl, e, moe, training=False), loc, e)
               for moe in kinds), chunk


def _kv_note(m: ModelSpec, s: MemorySettings, st: Stage, context: int) -> str:
    tp = s.parallel.tp
    heads = "MLA latent (replicated over TP)" if m.is_mla else \
        f"2 x {math.ceil(m.kv_heads / tp)} kv heads x {m.qk_head_dim}" + \
        (" (replicated: TP > kv heads)" if tp > m.kv_heads else "")
    return f"{s.batch} x {context} tokens x {st.layers} layers x {heads} x {DTYPE_BYTES[s.kv_dtype]:g} B"


def infer_stage(m: ModelSpec, s: MemorySettings, st: Stage) -> StageMemory:
    """Every inference row of one pipeline stage's GPU, its total and its summary entries."""
    par = s.parallel
    p = stage_params(m, par, st)
    r = Rows("byte")
    add_weights(r, p, s)
    r.add("gradients", 0, "inference")
    r.add("optimizer", 0, "inference")
    act, chunk = prefill_activations(m, s, st)
    r.add("activations", whole_bytes(act), f"one prefill chunk of {chunk} tokens, one layer at a time")
    e = DTYPE_BYTES[s.compute_dtype]
    logits = s.batch * m.vocab_size * (e + 4) if st.last else 0  # last position's logits + fp32 copy (sampler)
    r.add("logits", whole_bytes(logits), "last position per request, 16-bit + fp32" if st.last else "not on this stage")
    context = block_rounded(s.seq, s.kv_block)
    kv = kv_cache_bytes(m, context, s.batch, DTYPE_BYTES[s.kv_dtype], par.tp, par.cp, st.layers)
    r.add("kv_cache", whole_bytes(kv), _kv_note(m, s, st, context))
    r.add("reserve", whole_bytes(s.reserve), RESERVE_NOTE)
    total = r["weights"] + r["activations"] + r["logits"] + r["kv_cache"] + r["reserve"]
    r.add("total", whole_bytes(total), "per GPU")
    per_token = kv_values_per_token_layer(m, par.tp) * DTYPE_BYTES[s.kv_dtype] * st.layers
    summary = {"kv_per_token": Quantity(whole_bytes(per_token), "byte"), "kv_per_request": Quantity(whole_bytes(kv / s.batch), "byte"),
               "params_per_gpu": Quantity(whole_bytes(p.total), "params"), "stage": Quantity(st.index, "count")}
    notes = [f"KV cache in {s.kv_dtype}, {s.kv_block}-token blocks (vLLM); {s.attention_impl} attention; "
             f"usable = capacity x {s.gpu_util:g} (vLLM gpu_memory_utilization); reserve {fmt_bytes(s.reserve)}"]
    if par.pp > 1:
        notes.append(stage_note(st, par.pp, 1))
    return StageMemory(r, total, {}, summary, notes)
