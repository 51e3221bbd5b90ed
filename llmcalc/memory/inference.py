"""Inference memory per GPU, as the chosen serving engine accounts for it (memory/engines).

Shared here: the weights rows, the rows every engine starts from, and the two ways engines close
them: ``pool_result`` for a pre-allocated KV pool (vLLM, SGLang, TensorRT-LLM), ``growing_stage``
for a cache allocated as requests need it (transformers, llama.cpp).
"""

from __future__ import annotations

import math

from ..breakdown import Quantity, Row, Rows
from ..dtypes import DTYPE_BYTES, FLOAT_DTYPES, UNQUANTIZED_BYTES
from ..kvcache import kv_cache_bytes, kv_how, kv_values_per_token_layer
from ..spec import ModelSpec
from ..units import fmt_bytes, fmt_count, fmt_params
from .memo import ignoring
from .placement import ParamSplit, Stage, stage_params
from .settings import MemorySettings
from .stage import StageMemory, stage_notes, whole_bytes


def weight_format(m: ModelSpec, s: MemorySettings):
    """(quant.WeightFormat or None, share of the linears kept 16-bit) for these settings: the
    checkpoint's own layout, or --dtype's rule with the --keep-16bit modules."""
    if s.dtype in FLOAT_DTYPES or (s.weight_format != "checkpoint" and not s.keep_16bit):
        return None, 0.0  # a 16/32-bit dtype keeps every module as it is
    from ..quant import checkpoint_layout, kept_fraction

    return checkpoint_layout(m, s.keep_16bit) if s.weight_format == "checkpoint" else \
        (None, kept_fraction(m, s.keep_16bit))


def add_weights(r: Rows, m: ModelSpec, p: ParamSplit, s: MemorySettings, buffers: float = 0.0, what: str = "") -> None:
    """Weights in ``s.dtype`` (ParamSplit.weight_bytes): quantized ones as linears, scales and the
    16-bit rest (a checkpoint's own layout and kept modules: weight_format); plus ``buffers`` bytes
    the model builds beside them (``what`` they are)."""
    fmt, kept = weight_format(m, s)
    parts = p.weight_bytes(s.dtype, s.group_size, fmt, kept, m.hidden_size)
    total = sum(parts.values()) + buffers
    nbytes = DTYPE_BYTES[s.dtype]
    extra = f" + {what} {fmt_bytes(buffers)}" if buffers else ""
    if buffers:
        r.add("weights/buffers", whole_bytes(buffers), what, how=("{} B", whole_bytes(buffers)))
    plus = " + weights/buffers" if buffers else ""
    if "weights" in parts:
        r.add("weights", whole_bytes(total), f"{nbytes:g} B/param x {fmt_params(p.total)} params{extra}",
              how=("{} params x {} B" + plus, p.total, nbytes))
        return
    quantized = p.quantizable * (1 - kept)
    r.add("weights/quantized", whole_bytes(parts["quantized"]), f"{nbytes * 8:g} bits x {fmt_params(quantized)} linear weights",
          how=("{} quantized params x {} B", quantized, nbytes))
    if parts["scales"]:
        how = f"{fmt.method} scales" + (" and zero points" if fmt.zero_points else "") if fmt else \
            f"16-bit scale per {s.group_size} weights (zero points not counted)"
        r.add("weights/scales", whole_bytes(parts["scales"]), how, how=("{} B", whole_bytes(parts["scales"])))
    kept_note = f"; {kept:.1%} of the linears kept ({', '.join(fmt.skip if fmt else s.keep_16bit)})" if kept else ""
    r.add("weights/unquantized", whole_bytes(parts["unquantized"]), "embeddings, norms, biases, head in 16-bit" + kept_note,
          how=("{} params x {} B", p.other + p.quantizable * kept, UNQUANTIZED_BYTES))
    bits = (parts["quantized"] + parts["scales"]) * 8 / quantized if quantized else 0.0
    r.add("weights", whole_bytes(total), f"{bits:.3g} bits per quantized weight{extra}",
          how=("weights/quantized" + (" + weights/scales" if parts["scales"] else "") + " + weights/unquantized" + plus,))


def kv_note(m: ModelSpec, s: MemorySettings, st: Stage, context: int, windows: bool = True) -> str:
    """The KV cache in words; ``windows``: sliding-window layers keep their window (kvcache.cached_positions)."""
    tp = s.parallel.tp
    heads = "MLA latent (replicated over TP)" if m.is_mla else \
        f"2 x {math.ceil(m.kv_heads / tp)} kv heads x {m.qk_head_dim}" + \
        (" (replicated: TP > kv heads)" if tp > m.kv_heads else "")
    windowed = m.window_layers * st.layers // m.num_hidden_layers if windows and m.sliding_window else 0
    positions = f"{context:,} tokens x {st.layers} layers" if not windowed or m.sliding_window >= context else \
        (f"({windowed} window layers x {m.sliding_window:,} + {st.layers - windowed} layers x {context:,}) tokens")
    return f"{s.batch} x {positions} x {heads} x {DTYPE_BYTES[s.kv_dtype]:g} B"


# The rows besides the KV cache that an engine's memory holds (each engine adds those it has).
OVERHEAD_ROWS = ("weights", "non_torch", "activations", "logits", "cuda_graphs", "reserve")


def engine_rows(m: ModelSpec, s: MemorySettings, st: Stage, non_torch: float, note: str,
                buffers: float = 0.0, what: str = "") -> Rows:
    """The rows every engine starts from: the stage's weights (add_weights; ``buffers`` the model
    builds beside them), no gradients or optimizer, and ``non_torch`` bytes outside torch."""
    return Rows("byte").extend(_engine_rows(m, s, st, non_torch, note, buffers, what))


@ignoring("seq", "batch")
def _engine_rows(m: ModelSpec, s: MemorySettings, st: Stage, non_torch: float, note: str, buffers: float,
                 what: str) -> tuple[Row, ...]:
    r = Rows("byte")
    add_weights(r, m, stage_params(m, s.parallel, st), s, buffers, what)
    r.add("gradients", 0, "inference", how=("0",))
    r.add("optimizer", 0, "inference", how=("0",))
    r.add("non_torch", whole_bytes(non_torch), note, how=("{} B", whole_bytes(non_torch)))
    return r.build()


def kv_bytes_per_token(m: ModelSpec, s: MemorySettings, st: Stage, values: float | None = None) -> float:
    """KV bytes per token over the stage's layers on one GPU, every layer sized for the full
    context; ``values`` per token per layer overrides kvcache's count (an engine's own padding)."""
    par = s.parallel
    per_layer = kv_values_per_token_layer(m, par.tp) if values is None else values
    return per_layer * DTYPE_BYTES[s.kv_dtype] * st.layers / par.cp


def _overhead(r: Rows) -> int:
    return whole_bytes(sum(r[name] for name in OVERHEAD_ROWS if name in r))


def _overhead_how(r: Rows) -> str:
    """The rows _overhead sums, as a formula's text."""
    return " + ".join(name for name in OVERHEAD_ROWS if name in r)


def _kv_summary(budget: float, tokens: int, concurrency: float, per_token: float, per_request: float,
                st: Stage) -> dict:
    return {"kv_cache_budget": Quantity(whole_bytes(budget), "byte"), "kv_cache_capacity": Quantity(tokens, "token"),
            "max_concurrency": Quantity(round(concurrency, 4), "count"),
            "kv_per_token": Quantity(whole_bytes(per_token), "byte"),
            "kv_per_request": Quantity(whole_bytes(per_request), "byte"), "stage": Quantity(st.index, "count")}


def growing_stage(r: Rows, m: ModelSpec, s: MemorySettings, st: Stage, usable: float, context: int,
                  notes: list[str], windows: bool = True, per_request_rows: tuple[str, ...] = ()) -> StageMemory:
    """Close the rows of an engine that allocates the KV cache for the requests it holds: the
    cache of ``s.batch`` requests of ``context`` positions (sliding-window layers keeping their
    window unless ``windows`` is False), the total, whether it fits ``usable``, and the capacity:
    the tokens the room left would hold, and the requests of ``s.seq`` it would, each with its share of
    ``per_request_rows`` too (transformers' prefill activations grow with the batch, as max-batch finds)."""
    par = s.parallel
    per_token = kv_bytes_per_token(m, s, st)
    if windows:
        kv = kv_cache_bytes(m, context, s.batch, DTYPE_BYTES[s.kv_dtype], par.tp, par.cp, st.layers)
        how = kv_how(m, context, s.batch, DTYPE_BYTES[s.kv_dtype], par.tp, par.cp, st.layers)
    else:
        kv = s.batch * context * per_token
        how = ("{} requests x {} tokens x {} B per token", s.batch, context, per_token)
    r.add("kv_cache", whole_bytes(kv), kv_note(m, s, st, context, windows), how=how)
    other = _overhead(r)
    total = other + whole_bytes(kv)
    r.add("total", total, "per GPU", how=(_overhead_how(r) + " + kv_cache",))
    room = max(0.0, usable - other)
    per_request = kv / s.batch
    grows = sum(r[name] for name in per_request_rows if name in r)  # what each request adds besides its KV
    requests = max(0.0, (usable - other + grows) / (per_request + grows / s.batch)) if per_request else 0.0
    summary = _kv_summary(room, int(room // per_token) if per_token else 0, requests, per_token, per_request, st)
    return StageMemory(r, total, {}, summary, notes + stage_notes(st, par.pp), usable=usable, fits=total <= usable)


def pool_result(r: Rows, s: MemorySettings, st: Stage, usable: float, per_token: float, block: int,
                notes: list[str], blocks_per_request: float | None = None,
                tokens_by_concurrency: bool = False, held_per_request: float | None = None,
                max_seqs: int | None = None) -> StageMemory:
    """Close the rows of an engine that pre-allocates its KV pool: the pool is what the other rows
    leave of ``usable``, in ``block``-token blocks; ``kv_cache`` holds ``s.batch`` requests of
    ``s.seq`` tokens (each holding ``held_per_request`` blocks; None: ``blocks_per_request``) and
    ``kv_free`` the rest. Summary: capacity and concurrency at ``s.seq`` as the engine prints them
    (``blocks_per_request`` a request; None: whole-context blocks); ``tokens_by_concurrency``: the
    capacity is reported as concurrency x seq (vLLM 0.24+); ``max_seqs``: the requests it runs at once."""
    other = _overhead(r)
    budget = max(math.floor(usable) - other, 0)
    blocks = math.floor(budget / (per_token * block)) if per_token else 0
    per_request = blocks_per_request or math.ceil(s.seq / block)
    held = held_per_request or per_request
    concurrency = blocks / per_request
    tokens = int(concurrency * s.seq) if tokens_by_concurrency else blocks * block
    needed = whole_bytes(s.batch * held * block * per_token)
    fits = other <= usable and blocks >= s.batch * held and blocks > 0
    free = budget - needed if fits else 0
    r.add("kv_cache", needed, f"{fmt_count(s.batch, 'request')} of {fmt_count(s.seq, 'token')} in {block}-token blocks",
          how=("{} requests x {} blocks x {} tokens x {} B per token", s.batch, held, block, per_token))
    r.add("kv_free", free, f"the rest of the pool, which holds {tokens:,} tokens in all: {concurrency:.2f} requests "
          f"of {fmt_count(s.seq, 'token')}",
          how=("{} B usable - ({}) - kv_cache", math.floor(usable), _overhead_how(r)) if fits else ("0",))
    total = other + needed + free
    r.add("total", total, "per GPU: what the engine takes" if fits else "per GPU: what these requests need",
          how=(_overhead_how(r) + " + kv_cache + kv_free",))
    summary = {**_kv_summary(budget, tokens, concurrency, per_token, needed / s.batch, st),
               "kv_blocks": Quantity(blocks, "count"),
               **({"max_num_seqs": Quantity(max_seqs, "count")} if max_seqs else {})}
    if other > usable:
        notes.append(f"does not fit: weights {fmt_bytes(r['weights'])} + the engine's own {fmt_bytes(other - r['weights'])}"
                     f" > {fmt_bytes(usable)} it may use; no room for a KV cache")
    elif not fits:
        notes.append(f"does not fit: {fmt_count(s.batch, 'request')} of {s.seq:,} tokens need {s.batch * held:,.0f} "
                     f"{block}-token KV blocks ({fmt_bytes(needed)}), the pool holds {blocks:,} "
                     f"({fmt_bytes(blocks * block * per_token)})")
    if fits and max_seqs and s.batch > max_seqs:  # the cache holds them; the scheduler runs max_num_seqs, the rest wait
        notes.append(f"{s.batch:,} requests fit the KV cache, but the engine runs {max_seqs:,} at once "
                     f"(max_num_seqs); the rest wait")
    return StageMemory(r, total, {}, summary, notes + stage_notes(st, s.parallel.pp), usable=usable, fits=fits)


def infer_stage(m: ModelSpec, s: MemorySettings, st: Stage, dev) -> StageMemory:
    """Every inference row of one pipeline stage's GPU, as ``s.engine`` sizes it."""
    from .engines import engine_module

    return engine_module(s.engine).stage(m, s, st, dev)
