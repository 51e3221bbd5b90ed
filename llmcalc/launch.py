"""The serving engine as launched: the KV cache it sizes for its longest request, whether it starts at all, and
llama-server's slots (n_ctx = slots x the context, allocated at start)."""

from __future__ import annotations

from .traffic import Load, per_instance
from .spec import ModelSpec
from .throughput import ServeSettings

UNCAPPED = 10**9  # no cap on a step's tokens or running requests
# Engines that serve FP8 weights weight-only on a GPU without FP8 tensor cores, from Ampere (compute capability 8.0):
# vLLM's FP8 Marlin kernel (fp8.py's apply_fp8_marlin_linear), which SGLang calls too.
WEIGHT_ONLY_FP8 = ("vllm", "sglang")


def on_gpu(s: ServeSettings, gpu, engine: str) -> ServeSettings:
    """``s`` as ``engine`` runs it on ``gpu``: fp8 weights without fp8 tensor cores weight-only, matmuls in 16 bits;
    elsewhere as it is (a GPU or engine that cannot run them is refused by the peak's lookup)."""
    if s.weight_only or s.dtype != "fp8" or "fp8" in gpu.peak_flops or engine not in WEIGHT_ONLY_FP8:
        return s
    if (gpu.compute_capability or 0) < 8.0:
        return s
    import dataclasses

    return dataclasses.replace(s, weight_only=True)


def weight_only_notes(s: ServeSettings, gpu) -> list[str]:
    """What on_gpu did, said."""
    return [f"{s.dtype} weights on {gpu.name}, which has no {s.dtype} tensor cores: run weight-only (vLLM's FP8 "
            f"Marlin), matmuls in {s.compute_dtype}"] if s.weight_only else []


def refuses_to_start(m: ModelSpec, gpu, s: ServeSettings, engine: str) -> str:
    """Why vLLM would not start with --max-model-len, or "": its KV cache must hold one request that long (V1
    vllm/v1/core/kv_cache_utils.py check_enough_kv_cache_memory; V0 raise_if_cache_size_invalid), counted as the
    memory model counts a request's blocks (a sliding-window layer's only its window, from 0.9.1)."""
    if s.max_model_len is None or engine != "vllm":
        return ""
    b = _launched(m, gpu, s, engine)
    if _starts(m, b, s.context):
        return ""
    capacity = int(b.summary.get("kv_cache_capacity") or 0)
    longest = _longest_start(m, gpu, s, engine)
    lower = f"lower it to {longest:,} or " if longest >= s.prompt + s.output else ""
    return (f"vLLM refuses to start: its KV cache holds {capacity:,} tokens, less than one request of "
            f"--max-model-len {s.max_model_len:,} needs; {lower}raise --gpu-util")


def _starts(m: ModelSpec, b, context: int) -> bool:
    """Whether the pool holds one request of ``context``: its whole blocks (max_concurrency at least 1), and its tokens
    but where sliding windows hold fewer (V0's raise_if_cache_size_invalid; max_concurrency is rounded)."""
    whole = b.summary.get("max_concurrency", 1.0) >= 1
    return whole and (bool(m.window_layers) or b.summary.get("kv_cache_capacity", context) >= context)


def _longest_start(m: ModelSpec, gpu, s: ServeSettings, engine: str) -> int:
    """The longest max_model_len the engine starts with, searched (limits.largest, as max-seq searches it): the pool
    at one length is not the pool at another (V0's profile run grows with max_model_len). Past 32k V0 chunks its
    prefill, a smaller profile run, so the lengths above are searched first, as a range of their own."""
    from .limits import largest

    def starts(n: int) -> bool:
        return _starts(m, _launched(m, gpu, s, engine, n), n)

    chunked = 32768
    if s.max_model_len > chunked and starts(chunked + 1):
        return chunked + largest(lambda k: starts(chunked + k), s.max_model_len - chunked)
    return largest(starts, min(s.max_model_len, chunked))


def pool(m: ModelSpec, gpu, s: ServeSettings, engine: str, load: Load, seqs: int) -> tuple[int, int]:
    """(KV tokens, running requests) a replay under ``load`` allows: the engine's pool and ``seqs``, its cap;
    llama-server's n_ctx = slots x the context, allocated at start, and its slots (launch_slots); no tokens where
    one context does not fit beside the weights (replay refuses)."""
    slots = launch_slots(m, gpu, s, engine, load, seqs)
    if slots is None:
        return kv_capacity(m, gpu, s, engine), seqs
    return (slots * s.context if kv_capacity(m, gpu, s, engine) >= s.context else 0), slots


def launch_slots(m: ModelSpec, gpu, s: ServeSettings, engine: str, load: Load | None, cap: int) -> int | None:
    """llama-server's slots (-np) under load: ``cap`` (--max-num-seqs), else a client's each, else as many contexts as
    its memory holds (filled_slots: an open loop has no count to size them by). None for other engines, no load."""
    if engine != "llamacpp" or load is None:
        return None
    if cap != UNCAPPED:
        return cap
    return per_instance(load, s.dp).concurrency if load.concurrency else max(1, filled_slots(m, gpu, s))


def filled_slots(m: ModelSpec, gpu, s: ServeSettings) -> int:
    """llama-server's slots where nothing sets them: as many of the context as its memory holds (0: none), searched
    with the slots' own buffers (each adds a row of logits), below what one slot's pool divides into."""
    from .limits import largest

    most = int(_launched(m, gpu, s, "llamacpp").summary.get("max_concurrency") or 0)
    return largest(lambda n: bool(_launched(m, gpu, s, "llamacpp", slots=n).summary.get("fits")), most) if most else 0


def kv_capacity(m: ModelSpec, gpu, s: ServeSettings, engine: str) -> int:
    """Tokens the engine's KV cache holds on this layout (the memory model, `memory --mode infer`)."""
    return int(_launched(m, gpu, s, engine).summary.get("kv_cache_capacity") or 0)


def _launched(m: ModelSpec, gpu, s: ServeSettings, engine: str, context: int | None = None, slots: int = 1):
    """One instance's memory as the engine launched sizes it, for requests of max_model_len (ServeSettings.context,
    or ``context``); ``slots``: llama-server's, each a context's cells."""
    from .memory import MemorySettings, memory_breakdown
    from .spec import Parallelism

    return memory_breakdown(m, gpu, MemorySettings(mode="infer", seq=context or s.context, batch=slots, engine=engine,
                                                   dtype=s.dtype, kv_dtype=s.cache_dtype,
                                                   parallel=Parallelism(gpus=s.tp, tp=s.tp), **s.engine_settings()))
