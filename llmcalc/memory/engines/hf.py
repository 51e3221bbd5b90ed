"""Hugging Face transformers ``generate``: nothing pre-allocated, the cache grows with the tokens.

Follows transformers 4.45+ (through 5.x): DynamicCache holds K and V of every position of every
request (no blocks); the prefill runs the whole prompt at once; only the last position's logits
are computed (``logits_to_keep``) and copied to fp32 for sampling. Before 4.45 the prefill made
fp32 logits for every prompt position (``--engine-version 4.44``).
"""

from __future__ import annotations

import math

from ...dtypes import DTYPE_BYTES
from ...spec import ModelSpec
from ...units import fmt_bytes, fmt_count
from ..activations import layer_tensors, local, working_set
from ..inference import engine_rows, growing_stage
from ..placement import Stage
from ..settings import MemorySettings
from ..stage import StageMemory, add_reserve, whole_bytes
from . import parse_version
from .common import CUDA_CONTEXT_CUBLAS, Device

ALL_LOGITS = (4, 45)  # from 4.45 generate asks the model for the last position's logits only


def prefill_activations(m: ModelSpec, s: MemorySettings, st: Stage, chunk: int) -> float:
    """Bytes of the working set of a prefill of ``chunk`` tokens, one layer at a time
    (activations.working_set, eager kernels included): the largest over the layer kinds of the stage."""
    par = s.parallel
    e = DTYPE_BYTES[s.compute_dtype]
    loc = local(m, s.attention_impl, math.ceil(chunk / par.cp), s.seq, par.tp, False)
    kinds = ([False] if st.dense else []) + ([True] if st.moe else [])
    return max(working_set(m, layer_tensors(m, s.attention_impl, e, moe, training=False), loc, e)
               for moe in kinds)


def stage(m: ModelSpec, s: MemorySettings, st: Stage, dev: Device) -> StageMemory:
    e = DTYPE_BYTES[s.compute_dtype]
    r = engine_rows(m, s, st, CUDA_CONTEXT_CUBLAS, "CUDA context and cuBLAS handles (measured, H100)")
    each = min(s.prompt or s.seq, s.seq)  # generate prefills the prompt whole; the context then grows to seq
    prompt = s.batch * each
    r.add("activations", whole_bytes(prefill_activations(m, s, st, prompt)),
          f"prefill of {s.batch} x {each:,} tokens at once, one layer at a time",
          how=("by the largest working set of one layer's forward over {} tokens (memory/activations.working_set)", prompt))
    positions = prompt if parse_version(s.engine_version) < ALL_LOGITS else s.batch
    logits = positions * m.vocab_size * (e + 4) if st.last else 0
    r.add("logits", whole_bytes(logits), (f"{fmt_count(positions, 'position')} x {m.vocab_size:,} vocab, 16-bit + "
                                          "fp32 copy" if st.last else "not on this stage"),
          how=("{} positions x {} vocab x ({} + 4) B", positions, m.vocab_size, e) if st.last else ("0",))
    add_reserve(r, s.reserve, "--reserve")
    notes = [f"transformers {s.engine_version} generate: DynamicCache grows with the sequence (no pool); "
             f"it must fit in {s.gpu_util:g} x {fmt_bytes(dev.total)}"]
    return growing_stage(r, m, s, st, dev.total * s.gpu_util, s.seq, notes, per_request_rows=("activations", "logits"))
