"""The longest sequence and the largest batch that fit: integer search on memory_breakdown.

Memory grows monotonically with seq and batch, so an exponential probe followed by a binary
search finds the boundary exactly: at the answer it fits, one step (``multiple_of``) more does
not. Because the search calls the same memory model, `memory` at the answer agrees with it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, TYPE_CHECKING

from .breakdown import Breakdown, Quantity, Rows
from .memory import MemorySettings, closed_form_max_seq, memory_breakdown, mini_seq_pieces
from .memory.engines import ENGINES, NO_POOL, RUNNING_CAP
from .spec import ModelSpec, SpecError
from .traffic import MAX_CLIENTS
from .units import fmt_bytes, fmt_count

if TYPE_CHECKING:  # annotations only: a GPU lookup loads it
    from .gpuspec import GPUSpec

SEARCH_CAP = 2**27  # 134M tokens: beyond any real context (sliding-window models can reach it)
# Every sequence costs memory (KV cache or activations), so with capacity at most 10^15 bytes
# (spec.py's magnitude cap) the batch search stops on memory long before 2^50.
BATCH_SEARCH_CAP = 2**50


def largest(fits: Callable[[int], bool], cap: int = SEARCH_CAP) -> int:
    """The largest k in [0, cap] with fits(k), for fits monotone (true then false); fits(0) assumed."""
    if not fits(1):
        return 0
    lo = 1
    while lo * 2 <= cap and fits(lo * 2):
        lo *= 2
    hi = min(lo * 2, cap + 1)  # fits(lo) holds; fits(hi) fails or hi is past the cap
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def seq_probe(mini_seq: int = 1, cp: int = 1) -> int:
    """A sequence length every layout accepts (two chunks per context-parallel rank, as Megatron-Core's causal load
    balancing splits it, and a token per Mini-Sequence chunk): max-seq's settings are built with it, as the length
    itself is what is searched."""
    return max(mini_seq, 2 * cp if cp > 1 else 1)


def _capacity_needed(gpu: GPUSpec | None, s: MemorySettings, command: str) -> None:
    if gpu is None and s.gpu_memory is None:
        raise SpecError(f"{command} needs --gpu (or --gpu-memory) to know how much memory there is")


def _memory_rows(b: Breakdown, prefix: str = "") -> list:
    """The top-level memory rows (weights ... total) of a memory breakdown, for the limit tables."""
    return [r._replace(name=prefix + r.name) for r in b.rows if "/" not in r.name]


def _dominant(b: Breakdown) -> str:
    """The largest part of the total (the KV pool's unused rest, kv_free, is room, not a consumer)."""
    rows = [r for r in b.rows if "/" not in r.name and r.total == "total" and r.name not in ("total", "cpu", "kv_free")]
    return max(rows, key=lambda r: r.value).name


def _max_seq_note(best: int, multiple_of: int, tokens: str, capped_by: str | None) -> str:
    """max_seq's note: what it is, or, where nothing fits, what the rows below it show (``tokens``, the probe)."""
    note = f"no length fits: the rows below are the memory at {tokens}" if not best else \
        "longest sequence that fits" + (f" (multiple of {multiple_of})" if multiple_of > 1 else "")
    return note + (f"; {capped_by} refuses more than the model's context" if capped_by else "")


def _next_total(r: Rows, beyond: Breakdown, tokens: str, nxt: int, capped: bool) -> None:
    r.add("next_total", beyond.summary["total"], f"at {tokens}" + (" (memory_max_seq + 1)" if capped else "")
          + ("" if beyond.summary["fits"] else ": does not fit"), total=None, how=("by the memory total at {} tokens", nxt))


def max_seq_breakdown(m: ModelSpec, gpu: GPUSpec | None, s: MemorySettings, multiple_of: int = 1,
                      minimum: int | None = None) -> Breakdown:
    """The longest sequence (a multiple of ``multiple_of``) whose memory fits, and why it stops.

    Beside it, the Mini-Sequence write-up's closed form (seed): S_max = (M - W) / (I/M + L·A),
    with checkpointing (--recompute full) (M - W) / (I/M + sqrt(L)·A); W, I, A from the same tensors.
    """
    _capacity_needed(gpu, s, "max-seq")
    if multiple_of < 1:
        raise SpecError(f"--multiple-of must be at least 1, got {multiple_of}")
    if s.balanced_cp:  # Megatron-Core splits the sequence into 2 x cp equal chunks: only such lengths run
        multiple_of = math.lcm(multiple_of, 2 * s.parallel.cp)

    def at(seq: int) -> Breakdown:  # below one token per context-parallel rank, probe at one per rank
        seq = max(seq, seq_probe(cp=s.parallel.cp))
        return memory_breakdown(m, gpu, dataclasses.replace(s, seq=seq, mini_seq=min(s.mini_seq, seq)))

    k = largest(lambda k: at(k * multiple_of).summary["fits"], SEARCH_CAP // multiple_of)
    memory_best, context = k * multiple_of, m.max_position_embeddings
    capped = s.mode == "infer" and ENGINES[s.engine].caps_context and memory_best > context
    best = context // multiple_of * multiple_of if capped else memory_best
    shown = at(max(best, multiple_of))
    beyond = at((k + 1) * multiple_of)
    usable = shown.summary["usable"]

    r = Rows("byte")
    nxt = (k + 1) * multiple_of
    tokens = f"{nxt:,} token{'s' * (nxt != 1)}"
    r.add("max_seq", best, _max_seq_note(best, multiple_of, tokens, s.engine if capped else None), unit="token",
          total=None,
          how=("min(memory_max_seq, {} context)", context) if capped else
          (f"by the largest multiple of {multiple_of} whose memory total fits {{}} B usable (binary search)", usable))
    if capped:
        r.add("memory_max_seq", memory_best, "what memory alone would hold", unit="token", total=None,
              how=(f"by the largest multiple of {multiple_of} whose memory total fits {{}} B usable", usable))
    for row in _memory_rows(shown):
        r.add(row.name, row.value, row.note, total=row.total, how=row.how)
    if best:  # else the rows above are that memory
        _next_total(r, beyond, tokens, nxt, capped)
    summary = {"max_seq": Quantity(best, "token"), "total": shown.summary.quantity("total"),
               "usable": shown.summary.quantity("usable"), "capacity": shown.summary.quantity("capacity"),
               "dominant": _dominant(shown), "context": Quantity(context, "token"),
               "beyond_context": best > context}
    unbounded = beyond.summary["fits"]  # memory stopped growing (sliding windows, bounded kernels)
    summary["limited_by_memory"] = not unbounded and not capped
    if capped:
        summary["memory_max_seq"] = Quantity(memory_best, "token")
        notes = [f"the model's {context:,}-token context decides: memory would hold {memory_best:,} tokens, but "
                 f"{s.engine} refuses a longer max_model_len than the model's (--engine llamacpp or hf runs on)"]
    elif unbounded:
        notes = [f"memory does not limit the sequence: still fits at the {best:,}-token search cap"]
    elif best:
        notes = [f"binary search on the memory model: {best:,} tokens fit, {(k + 1) * multiple_of:,} do not"]
    else:
        notes = [f"even {fmt_count(multiple_of, 'token')} {'does' if multiple_of == 1 else 'do'} not fit: {_dominant(shown)} dominates"]
    if best > context:
        notes.append(f"longer than the model's {context:,}-token context: {m.past_context}")
    if s.mode == "train":
        p = mini_seq_pieces(m, s)
        closed, form = closed_form_max_seq(p, usable, s.mini_seq, s.recompute)
        summary["closed_form_max_seq"] = Quantity(closed, "token")
        notes.append(f"Mini-Sequence closed form (M - W) / ({form}) = {closed:,} tokens "
                     f"(W {fmt_bytes(p.w_mem)}, I {fmt_bytes(p.i_mem)}/token, "
                     f"A {fmt_bytes(p.a_mem)}/token/layer)")
    if minimum is not None:
        summary["minimum"] = Quantity(minimum, "token")
        summary["meets_minimum"] = best >= minimum
    return Breakdown(command="max-seq", title=f"Longest sequence for {m.name} ({s.mode})", model=m.name,
                     gpu=gpu.name if gpu else None, rows=r.build(), summary=summary,
                     inputs=shown.inputs.merged(seq=None, multiple_of=multiple_of),
                     notes=tuple(notes) + shown.notes)


def meets_targets(result: Breakdown) -> bool:
    """A latency estimate (expected_latency) meets its targets: the engine's expected times as ``latency`` judges
    them (a batch's last first token), and the roofline bound too; memory is the memory search's to judge."""
    return all(result.summary.get(f"{key}{kind}_met", True) for key in ("ttft", "tpot") for kind in ("", "_expected"))


def _batch_limits(memory: int, latency: int | None, seqs: int | None) -> tuple[int, tuple, tuple | None]:
    """(the batch, its formula, (what limits it, a note saying so) where more than memory could)."""
    limits = {k: v for k, v in (("memory", memory), ("latency", latency), ("max_num_seqs", seqs)) if v is not None}
    final = min(limits.values())
    terms = ["memory_max_batch"] + (["latency_max_batch"] if latency is not None else []) + \
        (["{} max_num_seqs"] if seqs is not None else [])
    how = (f"min({', '.join(terms)})", *([seqs] if seqs is not None else [])) if len(terms) > 1 else (terms[0],)
    if len(limits) == 1:
        return final, how, None
    decides = next(k for k, v in limits.items() if v == final)
    return final, how, (decides, ", ".join(f"{k} allows {v:,}" for k, v in limits.items()) + f": {decides} decides")


def _running_cap(s: MemorySettings, shown: Breakdown) -> int | None:
    """The most requests an engine runs at once, more queue however many fit: vLLM's max_num_seqs (its memory row),
    SGLang's and TensorRT-LLM's cap (--max-num-seqs, else engines.RUNNING_CAP, as latency's replay); None in training
    and for engines without one."""
    if s.mode != "infer":
        return None
    if "max_num_seqs" in shown.summary:
        return int(shown.summary["max_num_seqs"])
    if s.engine not in (*RUNNING_CAP, "llamacpp"):  # transformers' generate runs the whole batch it is given
        return None
    return s.max_num_seqs or RUNNING_CAP.get(s.engine)  # llama.cpp: its slots (-np), where given


def _alone_misses(one: Breakdown) -> str:
    """What one request alone misses, where no batch meets the targets: each time against its target, the expected
    one where it misses, else the roofline bound (at --efficiency: a bound set below the expected rates can miss
    where the expected time meets the target)."""
    from .units import fmt_seconds

    missed = []
    for key in ("ttft", "tpot"):
        target = one.summary.get(key + "_target")
        if target is None:
            continue
        if not one.summary.get(f"{key}_expected_met", True):
            missed.append(f"{key.upper()} {fmt_seconds(one.summary[key])} (expected) against {fmt_seconds(target)}")
        elif not one.summary.get(f"{key}_met", True):
            missed.append(f"{key.upper()} bound {fmt_seconds(one.summary[key + '_bound'])} against "
                          f"{fmt_seconds(target)} (the roofline at --efficiency; expected {fmt_seconds(one.summary[key])})")
    return "even one request misses the targets: " + ", ".join(missed or ["a bound"])


def batch_settings(s: MemorySettings, prompt: int | None) -> MemorySettings:
    """max-batch's settings with the requests' ``prompt``, where the engine's prefill holds it (ENGINES' reads)."""
    if prompt and s.mode == "infer" and "prompt" in ENGINES[s.engine].reads:
        return dataclasses.replace(s, prompt=prompt)
    return s


def batch_latency(m: ModelSpec, gpu: GPUSpec | None, s: MemorySettings, prompt: int | None, output: int,
                  efficiency: float | None, targets: dict) -> Callable[[int], Breakdown]:
    """max-batch's latency check: b concurrent requests a replica -> their expected latency, b clients in a closed loop
    as `latency --concurrency` replays them (prompts arriving while others decode, so a TPOT target counts the prefill
    chunks that share its steps; transformers' generate: one batch of b), and the bound of one request at
    ``efficiency``; the engine launched as the memory search sizes it (its release, --gpu-util, step budget and
    running cap). ``prompt`` None: the context less the output."""
    from .expected_latency import latency_estimate
    from .throughput import ServeSettings
    from .traffic import Load

    if s.mode != "infer" or gpu is None:
        raise SpecError("latency targets need --mode infer and a --gpu")
    par, engine, prompt = s.parallel, s.engine or "vllm", prompt or max(s.seq - output, 1)
    serve = dict(prompt=prompt, output=output, tp=par.tp, dp=par.dp, dtype=s.dtype, kv_dtype=s.kv_dtype,
                 compute_efficiency=efficiency, engine_version=s.engine_version, gpu_util=s.gpu_util)
    batched = engine == "hf"  # transformers' generate batches no server: its concurrent requests are one batch

    def at(b: int) -> Breakdown:
        load = None if batched else Load(prompt, max(output, 1), concurrency=b * par.dp)
        return latency_estimate(m, gpu, ServeSettings(batch=b * par.dp if batched else 1, **serve), engine, load=load,
                                chunk=s.prefill_chunk, max_seqs=s.max_num_seqs, **targets)
    return at


def max_batch_breakdown(m: ModelSpec, gpu: GPUSpec | None, s: MemorySettings,
                        latency: Callable[[int], Breakdown] | None = None) -> Breakdown:
    """The most sequences (train: micro-batch; infer: concurrent requests of ``s.seq`` tokens) that fit.

    Inference follows the engine (``s.engine``): requests of ``s.seq`` tokens fit while the KV pool
    holds them, each in whole blocks (vLLM: 16 tokens), the test `memory` makes (vLLM V0's printed
    max_concurrency, pool tokens / seq, counts partial blocks), and the engine runs at most its
    max_num_seqs at once. With ``latency`` (batch -> a latency Breakdown with summary ``feasible``), also
    the largest batch meeting the latency targets; the answer is the least of them.
    """
    _capacity_needed(gpu, s, "max-batch")

    def at(batch: int) -> Breakdown:
        return memory_breakdown(m, gpu, dataclasses.replace(s, batch=batch))

    best = largest(lambda b: at(b).summary["fits"], BATCH_SEARCH_CAP)
    shown, beyond = at(max(best, 1)), at(best + 1)
    fast = None
    if latency is not None:
        # past memory's answer the clients queue; a replay runs MAX_CLIENTS at most
        search = min(max(best, 1) * 2, MAX_CLIENTS // s.parallel.dp)
        fast = largest(lambda b: meets_targets(latency(b)), search)
    seqs = _running_cap(s, shown)
    final, how, decides = _batch_limits(best, fast, seqs)

    r = Rows("byte")
    r.add("max_batch", final, "concurrent requests" if s.mode == "infer" else "micro-batch", unit="count", total=None,
          how=how)
    capped = beyond.summary["fits"]  # never with a real capacity; said rather than passed off as the limit
    r.add("memory_max_batch", best, f"memory: {best:,} fit, {best + 1:,} do not" if not capped else
          f"memory: at least {best:,} fit (the search stops there)", unit="count", total=None,
          how=("by the largest batch whose memory total fits {} B usable (binary search)", shown.summary["usable"]))
    if fast is not None:
        r.add("latency_max_batch", fast, "largest batch whose expected latency meets the targets" if fast < search
              else f"at least {fast:,} meet the targets (the search stops there)", unit="count", total=None,
              how=("by the largest batch whose expected times, and bounds, meet the targets (binary search)",))
    for row in _memory_rows(shown):
        r.add(row.name, row.value, row.note, total=row.total, how=row.how)
    r.add("next_total", beyond.summary["total"], f"at {best + 1:,}" + ("" if capped else ": does not fit"), total=None,
          how=("by the memory total at a batch of {}", best + 1))
    summary = {"max_batch": final, "memory_max_batch": best, "total": shown.summary.quantity("total"),
               "usable": shown.summary.quantity("usable"), "dominant": _dominant(shown),
               "limited_by_memory": not capped}
    notes = [f"memory does not limit the batch: {best + 1:,} still fit; check --gpu-memory"] if capped else []
    if s.mode == "infer":
        summary.update(kv_cache_capacity=shown.summary.quantity("kv_cache_capacity"),
                       max_concurrency=shown.summary.quantity("max_concurrency"))
        pooled = s.engine not in NO_POOL  # without a pool: the cache that would fit beside the batch's peak
        notes.append(f"{s.engine}: the KV pool holds {shown.summary['kv_cache_capacity']:,} tokens, "
                     f"{shown.summary['max_concurrency']:.2f} requests of {fmt_count(s.seq, 'token')}" if pooled else
                     f"{s.engine}: no KV pool; the cache of {shown.summary['kv_cache_capacity']:,} tokens would fit, "
                     f"{shown.summary['max_concurrency']:.2f} requests of {fmt_count(s.seq, 'token')}")
    if fast is not None:
        summary["latency_max_batch"] = fast
        notes += [_alone_misses(latency(1))] if fast == 0 else []
    if decides:
        summary["limited_by"] = decides[0]
        notes.append(decides[1])
    return Breakdown(command="max-batch", title=f"Largest batch for {m.name} ({s.mode})", model=m.name,
                     gpu=gpu.name if gpu else None, rows=r.build(), summary=summary,
                     inputs=shown.inputs.merged(batch=None), notes=tuple(notes) + shown.notes)
