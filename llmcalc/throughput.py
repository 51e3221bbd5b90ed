"""Roofline latency bounds (TTFT, TPOT) of a serving instance: prefill and each decode step at the longest of their
compute, memory and communication times (utilization.py has the MFU of a measured run)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .breakdown import Breakdown, Quantity, Rows
from .dtypes import DTYPE_BYTES, activation_dtype, matmul_dtype
from .spec import ModelSpec, SpecError
from .units import fmt_bytes, fmt_count, fmt_flops, fmt_rate, fmt_seconds

if TYPE_CHECKING:  # annotations only: a GPU lookup loads it
    from .gpuspec import GPUSpec


# Default efficiencies for `latency`: the article finds an A800 reaches at most ~80% of its
# 312 TFLOP/s; large-matmul benchmarks give 79-87% on A100 and 80% on H100 (stas00 MAMF).
# Streaming reads reach ~90% of datasheet HBM bandwidth. 1.0 gives the physical bound.
COMPUTE_EFFICIENCY = 0.8
BANDWIDTH_EFFICIENCY = 0.9


DECODE_SAMPLES = 2048  # decode steps evaluated exactly; longer outputs are sampled evenly (piecewise linear)


# Engines that allocate every request's whole context at start: llama.cpp's KV cache holds n_ctx = slots x the
# context cells from llama-server's launch (llama_kv_cache's constructor), so max_model_len, not the request, must fit.
RESERVES_CONTEXT = ("llamacpp",)


@dataclass(frozen=True)
class ServeSettings:
    """One serving instance spans ``tp`` GPUs; ``dp`` instances split the ``batch`` requests."""

    batch: int = 1
    prompt: int = 1024
    output: int = 256
    tp: int = 1
    dp: int = 1
    dtype: str = "bf16"  # weights
    kv_dtype: str | None = None  # None: the activation dtype of dtype (dtypes.py), as `memory`
    attention: str = "causal"  # what serving kernels compute
    compute_efficiency: float | None = None  # None: COMPUTE_EFFICIENCY
    bandwidth_efficiency: float | None = None  # None: compute_efficiency when that was given, else the default
    overlap: bool = True  # communication hidden behind compute (a lower bound) or added to it
    tp_implied: bool = False  # tp is what --gpus leaves, not a --tp typed (spec.Parallelism.tp_implied: its messages)
    # The engine as launched (memory/engines): its release (None: the modelled default), its share of GPU memory
    # (None: the engine's own, vLLM's gpu_memory_utilization 0.9) and the longest request it admits (None: prompt + output), which sizes
    # vLLM's profile run and its start-up check that one such request fits in the KV cache.
    engine_version: str | None = None
    gpu_util: float | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None  # the engine's knobs as launched (None: its defaults), as `memory` sizes them
    prefill_chunk: int | None = None  # max_num_batched_tokens
    weight_only: bool = False  # fp8 weights on a GPU without fp8 tensor cores: matmuls in 16 bits (launch.on_gpu)

    def __post_init__(self) -> None:
        for key in ("batch", "prompt", "tp", "dp"):
            if getattr(self, key) < 1:
                raise SpecError(f"--{key} must be at least 1, got {getattr(self, key)}")
        if self.output < 0:
            raise SpecError(f"--output cannot be negative, got {self.output}")
        if self.max_model_len is not None and self.max_model_len < self.prompt + self.output:
            raise SpecError(f"--max-model-len {self.max_model_len:,} is shorter than --prompt + --output "
                            f"({self.prompt + self.output:,}): the engine would refuse every request; raise it or "
                            "leave it out (the requests' own length)")
        given = self.compute_efficiency
        if self.bandwidth_efficiency is None:  # one --efficiency scales both unless told apart
            object.__setattr__(self, "bandwidth_efficiency", BANDWIDTH_EFFICIENCY if given is None else given)
        if given is None:
            object.__setattr__(self, "compute_efficiency", COMPUTE_EFFICIENCY)
        for key, flag in (("compute_efficiency", "--efficiency"), ("bandwidth_efficiency", "--bw-efficiency")):
            if not 0 < getattr(self, key) <= 1:
                raise SpecError(f"{flag} must be in (0, 1], got {getattr(self, key)}")

    @property
    def compute_dtype(self) -> str:
        """The dtype the matmuls run at (dtypes.py: weight-only formats in 16-bit, fp8 as W8A8 unless weight_only)."""
        return activation_dtype(self.dtype) if self.weight_only else matmul_dtype(self.dtype)

    @property
    def cache_dtype(self) -> str:
        return self.kv_dtype or activation_dtype(self.dtype)

    @property
    def context(self) -> int:
        """The engine's max_model_len: what it sizes its profile run and its start-up check by."""
        return self.max_model_len or self.prompt + self.output

    def engine_settings(self) -> dict:
        """The launch settings MemorySettings takes (engine release, memory share, knobs) for this instance."""
        return dict(engine_version=self.engine_version, gpu_util=self.gpu_util, max_num_seqs=self.max_num_seqs,
                    prefill_chunk=self.prefill_chunk)


def tp_allreduce_bytes(m: ModelSpec, tokens: float, tp: int, act_bytes: float) -> float:
    """Bytes one GPU sends for tensor parallelism over ``tokens`` tokens: two all-reduces of tokens x hidden
    values per layer (Megatron-LM), of which a ring moves 2(t-1)/t per GPU."""
    return 2 * m.num_hidden_layers * tokens * m.hidden_size * act_bytes * 2 * (tp - 1) / tp


def weight_bytes_read(m: ModelSpec, batch: int, dtype: str) -> float:
    """Weights one forward step reads, stored in ``dtype`` (ParamSplit.weight_bytes: quantized linears,
    their scales and the 16-bit rest): all matmul weights; for MoE only the experts some token picks.

    An untied input embedding is a lookup (b rows), not read whole. With uniform routing a
    batch of b tokens touches E·(1 - (1 - k/E)^b) of the E experts in each MoE layer.
    """
    from .memory.placement import model_params
    from .params import expert_params

    p = model_params(m)
    lookup = 0 if m.tie_word_embeddings else m.vocab_size * m.embed_dim
    idle = m.moe_layers * m.num_experts * (1 - m.num_experts_per_tok / m.num_experts) ** batch * expert_params(m) \
        if m.is_moe else 0
    read = p._replace(other=p.other - lookup, experts=p.experts - idle)
    return sum(read.weight_bytes(dtype).values())


def _fit(m: ModelSpec, gpu: GPUSpec, s: ServeSettings, engine: str | None, requests: int):
    """One instance's memory (`memory --mode infer`) for ``requests``, each of the context the engine reserves."""
    from .memory import MemorySettings, memory_breakdown
    from .spec import Parallelism

    layout = Parallelism(gpus=s.tp * s.dp, tp=s.tp, dp=s.dp, tp_implied=s.tp_implied)
    return memory_breakdown(m, gpu, MemorySettings(
        mode="infer", seq=s.context if engine in RESERVES_CONTEXT else s.prompt + s.output, batch=requests,
        prompt=s.prompt, dtype=s.dtype, kv_dtype=s.cache_dtype, parallel=layout, **({"engine": engine} if engine else {}),
        **s.engine_settings()))


def _misfit(fit: dict, s: ServeSettings, engine: str | None, requests: int) -> str:
    """Why the layout does not fit; for llama.cpp, the n_ctx it allocates at start and how to shrink it."""
    held = (f" for n_ctx = {requests} slot(s) x {s.context:,} tokens, allocated at start (fewer slots, "
            "--max-num-seqs, or a shorter --max-model-len)" if engine in RESERVES_CONTEXT else "")
    return (f"does not fit: {fmt_bytes(fit['total'])} per GPU needed{held}, {fmt_bytes(fit['usable'])} usable "
            "(see `llmcalc memory --mode infer`)")


def latency_breakdown(m: ModelSpec, gpu: GPUSpec, s: ServeSettings, ttft_target: float | None = None,
                      tpot_target: float | None = None, engine: str | None = None, slots: int | None = None) -> Breakdown:
    """Roofline lower bounds: time to first token (prefill) and time per output token (decode).

    Each phase takes max(compute, memory[, communication]) per GPU: FLOPs / (tp · peak · e_c)
    and the bytes one GPU reads (its weight shard and KV cache, replicated heads and MLA latents
    included) / (bandwidth · e_b). Tensor parallelism adds two all-reduces of b·q·h values per
    layer (Megatron-LM); a ring moves 2(t-1)/t of them per GPU over the interconnect. With
    ``overlap`` (default) communication hides behind compute, giving a lower bound; without it,
    it is added. The first output token comes from prefill; each later one is a decode step
    whose context grows by one, and tpot is their mean. The same layout must fit in memory
    (`memory --mode infer`, as ``engine`` sizes it: vLLM's pool by default; llama.cpp's n_ctx, ``slots`` contexts,
    else one a request); a target below its bound, or a layout that does not fit, is not ``feasible``.
    """
    from .flops import attended_pairs, forward
    from .kvcache import kv_cache_bytes, kv_values_per_token_layer

    from .launch import on_gpu, weight_only_notes

    s = on_gpu(s, gpu, engine or "vllm")
    requests = -(-s.batch // s.dp)  # per instance
    launched = slots or requests
    t = s.tp
    fit = _fit(m, gpu, s, engine, launched)
    from .memory.engines import accumulates16

    acc16 = accumulates16(engine, s.dtype)  # llama.cpp's fp16 GEMMs accumulate in fp16
    peak = gpu.peak(s.compute_dtype, acc16) * s.compute_efficiency  # per GPU
    bandwidth = gpu.memory_bandwidth * s.bandwidth_efficiency  # per GPU
    act_b = DTYPE_BYTES[activation_dtype(s.dtype)]  # activations communicated in 16 bits or more
    kv_bytes = DTYPE_BYTES[s.cache_dtype]
    link = gpu.collective_bandwidth(t)

    def allreduce_seconds(tokens: int) -> float:
        if t == 1:
            return 0.0
        if not link:
            raise SpecError(f"{gpu.name} has no GPU-to-GPU bandwidth in its preset; set interconnect_gb_s")
        return tp_allreduce_bytes(m, tokens, t, act_b) / link

    def combine(compute: float, memory: float, comm: float) -> float:
        return max(compute, memory, comm) if s.overlap else max(compute, memory) + comm

    # prefill: every prompt token of every request through the model, KV written once, each request's logits at its
    # last position alone (flops.forward's logits); a batch arriving together has its first tokens when all its
    # prompts are through (the seed article's exercise 3)
    prefill_flops = requests * forward(m, s.prompt, s.prompt, s.attention, logits=1)["forward"]
    prefill_bytes = weight_bytes_read(m, requests * s.prompt, s.dtype) / t \
        + kv_cache_bytes(m, s.prompt, requests, kv_bytes, t)  # on one GPU
    pre = (prefill_flops / (t * peak), prefill_bytes / bandwidth, allreduce_seconds(requests * s.prompt))
    ttft = combine(*pre)

    # decode: one token per request per step; FLOPs and KV reads grow with the context
    L, core_per_pair = m.num_hidden_layers, 2 * m.num_attention_heads * (m.qk_head_dim + m.v_dim)
    base_flops = forward(m, 1, 1, s.attention)["forward"] - core_per_pair * L * attended_pairs(1, 1, s.attention)
    weights_read = weight_bytes_read(m, requests, s.dtype) / t
    comm = allreduce_seconds(requests)
    steps = max(s.output - 1, 1)  # at least one step, so tpot is defined
    sample = range(steps) if steps <= DECODE_SAMPLES else \
        [round(i * (steps - 1) / (DECODE_SAMPLES - 1)) for i in range(DECODE_SAMPLES)]
    # compute, memory, combined: sums over the evaluated steps. What every step shares, worked out once
    # (a 10,000-point sweep runs this loop 2.5 million times):
    # one query attends, and a layer keeps, min(context, window) positions on its windowed layers and
    # the whole context on the rest (flops.attended_pairs, kvcache.cached_positions); a step reads
    # kv_cache_bytes = requests x positions x (values per token and layer x bytes per value).
    W, window, flops_rate, kv_per_value = m.window_layers, m.sliding_window, t * peak, kv_values_per_token_layer(m, t) * kv_bytes
    compute = memory = both = 0.0
    for i in sample:
        context = s.prompt + i + 1
        positions = W * min(context, window or context) + (L - W) * context
        c = requests * (base_flops + core_per_pair * positions) / flops_rate
        mem = (weights_read + requests * positions * kv_per_value) / bandwidth
        compute, memory, both = compute + c, memory + mem, both + combine(c, mem, comm)
    dec = [compute, memory, both]
    n = len(sample)
    tpot = dec[2] / n
    e2e = ttft + tpot * (s.output - 1) if s.output > 1 else ttft

    r = Rows("s", total=None)
    phases = ("max({}, {}, {})" if s.overlap else "max({}, {}) + {}")
    r.add("ttft", ttft, "lower bound: time to first token" + (f", all {requests} prompts prefilled" if requests > 1
                                                              else ""),
          how=(phases, "prefill/compute", "prefill/memory", "prefill/communication"))
    bound = ("compute", "memory", "communication")
    rates = (gpu.peak(s.compute_dtype, acc16), s.compute_efficiency, gpu.memory_bandwidth, s.bandwidth_efficiency)
    r.add("prefill/compute", pre[0], f"{fmt_flops(prefill_flops)} at {s.compute_efficiency:.0%} of {t} x "
          f"{gpu.peak_label(s.compute_dtype, acc16)} peak",
          how=("{} FLOP / ({} GPUs x {} FLOP/s x {} efficiency)", prefill_flops, t, rates[0], rates[1]))
    r.add("prefill/memory", pre[1], f"{fmt_bytes(prefill_bytes)} per GPU at {s.bandwidth_efficiency:.0%} of HBM",
          how=("{} B / ({} B/s x {} efficiency)", prefill_bytes, rates[2], rates[3]))
    def allreduce_how(tokens: int) -> tuple:
        return ("2 x {} layers x {} tokens x {} hidden x {} B x 2 x ({} - 1) / {} GPUs / {} B/s", m.num_hidden_layers,
                tokens, m.hidden_size, act_b, t, t, link) if t > 1 else ("0",)

    r.add("prefill/communication", pre[2], f"TP all-reduce over {fmt_rate(link, 'byte/s')}" if t > 1 else "no TP",
          how=allreduce_how(requests * s.prompt))
    r.add("tpot", tpot, f"mean over {fmt_count(steps, 'decode step')}",
          how=(f"by the mean over {n} sampled decode steps of " + phases, "compute", "memory", "communication"))
    r.add("decode/compute", dec[0] / n, how=("by the mean over {} sampled steps of the step's FLOPs / ({} GPUs x {} "
                                             "FLOP/s x {} efficiency)", n, t, rates[0], rates[1]))
    r.add("decode/memory", dec[1] / n, "weight shard + KV cache read per step, per GPU",
          how=("by the mean over {} sampled steps of ({} B weights + the KV cache at the step's context) / ({} B/s x {} "
               "efficiency)", n, weights_read, rates[2], rates[3]))
    r.add("decode/communication", comm, how=allreduce_how(requests))
    r.add("e2e", e2e, f"ttft + {max(s.output - 1, 0)} decode steps", how=("ttft + tpot x {}", max(s.output - 1, 0)))
    r.add("decode_tokens_per_s", s.batch / tpot, unit="token/s", note="all requests, while decoding",
          how=("{} requests / tpot", s.batch))
    summary = {"ttft": Quantity(ttft, "s"), "tpot": Quantity(tpot, "s"), "e2e": Quantity(e2e, "s"),
               "prefill_bound": bound[pre.index(max(pre))],
               "decode_bound": bound[0 if dec[0] >= dec[1] else 1], "requests_per_instance": requests,
               "fits": fit.summary["fits"], "memory_total": fit.summary.quantity("total"),
               "usable": fit.summary.quantity("usable")}
    notes = weight_only_notes(s, gpu)
    for name, target, value in (("ttft", ttft_target, ttft), ("tpot", tpot_target, tpot)):
        if target is not None:
            summary[f"{name}_target"] = Quantity(target, "s")
            summary[f"{name}_met"] = value <= target
            if value > target:
                notes.append(f"{name} target {fmt_seconds(target)} is below the {fmt_seconds(value)} bound: "
                             "not reachable on this hardware")
    if not fit.summary["fits"]:
        notes.append(_misfit(fit.summary, s, engine, launched))
    summary["feasible"] = fit.summary["fits"] and all(summary.get(f"{n}_met", True) for n in ("ttft", "tpot"))
    return Breakdown(
        command="latency", title=f"Latency bounds of {m.name} on {s.tp * s.dp} x {gpu.name}",
        model=m.name, gpu=gpu.name, rows=r.build(), summary=summary,
        inputs={"batch": s.batch, "prompt": s.prompt, "output": s.output, "gpus": s.tp * s.dp, "tp": s.tp,
                "dp": s.dp, "dtype": s.dtype, "compute_dtype": s.compute_dtype, "kv_dtype": s.cache_dtype,
                "attention": s.attention, "compute_efficiency": s.compute_efficiency,
                "bandwidth_efficiency": s.bandwidth_efficiency, "overlap": s.overlap,
                "ttft_target": Quantity(ttft_target, "s"), "tpot_target": Quantity(tpot_target, "s"),
                # the engine as the memory model launched it (its release and share resolved)
                "engine_version": fit.inputs.get("engine_version"), "gpu_util": fit.inputs.get("gpu_util"),
                "max_model_len": s.max_model_len, "max_num_seqs": s.max_num_seqs,
                "max_num_batched_tokens": s.prefill_chunk},
        notes=(f"roofline: each phase is max(compute, memory{', communication' if s.overlap else ''})"
               + ("" if s.overlap else " + communication"),
               f"efficiency: {s.compute_efficiency:.0%} of peak {s.compute_dtype} compute, "
               f"{s.bandwidth_efficiency:.0%} of memory bandwidth (1.0 = physical bound)", *notes),
    )
