"""Utilisation of a measured run (MFU, HFU) and roofline latency bounds (TTFT, TPOT).

MFU (PaLM, Chowdhery et al. 2022, App. B) = achieved model FLOP/s / peak FLOP/s, with model
FLOPs per token 6N + 12·L·H·Q·T; HFU counts the FLOPs the hardware really ran, recomputation
included (llm-foundry: HFU = MFU x 4/3 under full activation checkpointing).
"""

from __future__ import annotations

from dataclasses import dataclass

from .breakdown import Breakdown, Rows
from .flops import flops_breakdown
from .spec import GPUSpec, ModelSpec, SpecError


@dataclass(frozen=True)
class Measurement:
    """What a run measured; exactly one of the three rates must be given.

    step_time: seconds per optimizer step of batch x grad_accum sequences (whole job);
    tokens_per_s: tokens per second, of the whole job unless per_gpu;
    gpu_hours with tokens: a whole training run (Llama 3: 15T tokens in 6.4M H100-hours).
    """

    step_time: float | None = None
    tokens_per_s: float | None = None
    per_gpu: bool = False
    gpu_hours: float | None = None
    tokens: float | None = None  # the run's token budget (needed with gpu_hours)

    def __post_init__(self) -> None:
        given = [k for k in ("step_time", "tokens_per_s", "gpu_hours") if getattr(self, k) is not None]
        if len(given) != 1:
            raise SpecError("give exactly one of --step-time, --tokens-per-s or --gpu-hours "
                            f"(got {', '.join('--' + g.replace('_', '-') for g in given) or 'none'})")
        for key in given + (["tokens"] if self.tokens is not None else []):
            if getattr(self, key) <= 0:
                raise SpecError(f"--{key.replace('_', '-')} must be positive")
        if self.gpu_hours is not None and self.tokens is None:
            raise SpecError("--gpu-hours needs --tokens (how many tokens those hours trained)")


def mfu_breakdown(m: ModelSpec, gpu: GPUSpec, run: Measurement, seq: int, batch: int = 1,
                  grad_accum: int = 1, gpus: int = 1, dtype: str = "bf16", formula: str = "palm",
                  attention: str = "full", recompute: str = "none") -> Breakdown:
    """MFU and HFU of a measured run, and the time its token budget takes at that rate."""
    if gpus < 1:
        raise SpecError(f"--gpus must be at least 1, got {gpus}")
    model = flops_breakdown(m, seq, batch, grad_accum, attention, "none", formula)
    hardware = flops_breakdown(m, seq, batch, grad_accum, attention, recompute, formula)
    per_token = model.value("model_flops") / model.summary["tokens_per_step"] if formula == "palm" \
        else model.value("per_token/total")
    hw_per_token = per_token * hardware.value("total") / model.value("total")
    if run.step_time is not None:
        tokens_per_s = model.summary["tokens_per_step"] / run.step_time
    elif run.tokens_per_s is not None:
        tokens_per_s = run.tokens_per_s * (gpus if run.per_gpu else 1)
    else:  # gpu_hours: the whole run's tokens over its GPU-seconds, per GPU
        tokens_per_s = run.tokens / (run.gpu_hours * 3600) * gpus
    peak = gpu.peak(dtype)
    achieved = per_token * tokens_per_s / gpus  # per GPU

    r = Rows("ratio", total=None)
    r.add("model_flops_per_token", per_token, unit="FLOP",
          note="PaLM 6N + 12LHQT" if formula == "palm" else f"{formula} formula, per token")
    r.add("tokens_per_s", tokens_per_s, unit="token/s", note=f"whole job, {gpus} GPU(s)")
    r.add("tokens_per_s_per_gpu", tokens_per_s / gpus, unit="token/s")
    r.add("achieved_flops_per_s", achieved, unit="FLOP/s", note="model FLOP/s per GPU")
    r.add("peak_flops_per_s", peak, unit="FLOP/s", note=f"{gpu.name} dense {dtype}")
    r.add("mfu", achieved / peak, note="achieved / peak")
    r.add("hfu", per_token and achieved / peak * hw_per_token / per_token,
          note=f"with {recompute} recomputation" if recompute != "none" else "no recomputation: = MFU")
    summary = {"mfu": r["mfu"], "hfu": r["hfu"], "achieved_flops_per_s": achieved,
               "tokens_per_s": tokens_per_s}
    units = {"mfu": "ratio", "hfu": "ratio", "achieved_flops_per_s": "FLOP/s", "tokens_per_s": "token/s"}
    if run.tokens is not None:
        summary["train_time"] = run.tokens / tokens_per_s
        summary["train_flops"] = run.tokens * per_token
        units.update(train_time="s", train_flops="FLOP")
    return Breakdown(
        command="mfu", title=f"MFU of {m.name} on {gpus} x {gpu.name}", model=m.name, gpu=gpu.name,
        rows=r.build(), summary=summary, summary_units=units,
        inputs={"seq": seq, "batch": batch, "grad_accum": grad_accum, "gpus": gpus, "dtype": dtype,
                "formula": formula, "attention": attention, "recompute": recompute,
                "step_time": run.step_time, "tokens_per_s": run.tokens_per_s, "per_gpu": run.per_gpu,
                "gpu_hours": run.gpu_hours, "tokens": run.tokens},
        notes=(f"MFU counts {formula} model FLOPs per token; peak is the dense {dtype} datasheet figure",),
    )


# Default efficiencies for `latency`: the article finds an A800 reaches at most ~80% of its
# 312 TFLOP/s; large-matmul benchmarks give 79-87% on A100 and 80% on H100 (stas00 MAMF).
# Streaming reads reach ~90% of datasheet HBM bandwidth. 1.0 gives the physical bound.
COMPUTE_EFFICIENCY = 0.8
BANDWIDTH_EFFICIENCY = 0.9


@dataclass(frozen=True)
class ServeSettings:
    """One serving instance spans ``tp`` GPUs; ``dp`` instances split the ``batch`` requests."""

    batch: int = 1
    prompt: int = 1024
    output: int = 256
    tp: int = 1
    dp: int = 1
    dtype: str = "bf16"
    kv_dtype: str | None = None  # None: same as dtype
    attention: str = "causal"  # what serving kernels compute
    compute_efficiency: float = COMPUTE_EFFICIENCY
    bandwidth_efficiency: float = BANDWIDTH_EFFICIENCY
    overlap: bool = True  # communication hidden behind compute (a lower bound) or added to it

    def __post_init__(self) -> None:
        for key in ("batch", "prompt", "tp", "dp"):
            if getattr(self, key) < 1:
                raise SpecError(f"--{key} must be at least 1, got {getattr(self, key)}")
        if self.output < 0:
            raise SpecError(f"--output cannot be negative, got {self.output}")
        for key in ("compute_efficiency", "bandwidth_efficiency"):
            if not 0 < getattr(self, key) <= 1:
                raise SpecError(f"--efficiency must be in (0, 1], got {getattr(self, key)}")


def weight_bytes_read(m: ModelSpec, batch: int, bytes_per_param: float) -> float:
    """Weights one decode step reads: all of a dense model; for MoE the experts some token picks.

    With uniform routing a batch of b tokens touches E·(1 - (1 - k/E)^b) of E experts per layer.
    """
    from .params import count, expert_params

    total = count(m)["total"]
    if not m.is_moe:
        return total * bytes_per_param
    e, k = m.num_experts, m.num_experts_per_tok
    untouched = e * (1 - k / e) ** batch
    return (total - m.moe_layers * untouched * expert_params(m)) * bytes_per_param


def latency_breakdown(m: ModelSpec, gpu: GPUSpec, s: ServeSettings, ttft_target: float | None = None,
                      tpot_target: float | None = None) -> Breakdown:
    """Roofline lower bounds: time to first token (prefill) and time per output token (decode).

    Each phase takes max(compute, memory[, communication]): FLOPs / (tp · peak · e_c) and
    bytes / (tp · bandwidth · e_b). Tensor parallelism adds two all-reduces of b·q·h values per
    layer (Megatron-LM); a ring moves 2(t-1)/t of them per GPU over the interconnect. With
    ``overlap`` (default) communication hides behind compute, giving a lower bound; without it,
    it is added. Decode is averaged over the ``output`` steps (context grows from prompt + 1).
    A target below its bound is unreachable on this hardware: summary ``feasible`` is false.
    """
    from .flops import attended_pairs, forward
    from .kvcache import cached_positions, kv_values_per_token_layer
    from .spec import DTYPE_BYTES

    requests = -(-s.batch // s.dp)  # per instance
    t = s.tp
    peak = gpu.peak(s.dtype) * t * s.compute_efficiency
    bandwidth = gpu.memory_bandwidth * t * s.bandwidth_efficiency
    w_bytes, kv_b = DTYPE_BYTES[s.dtype], DTYPE_BYTES[s.kv_dtype or s.dtype]
    act_b = max(DTYPE_BYTES[s.dtype], 2)  # activations stay 16-bit under int8/fp8 weights
    kv_per_position = kv_values_per_token_layer(m, 1) * kv_b  # whole instance (all TP ranks)
    link = gpu.interconnect_bandwidth

    def allreduce_seconds(tokens: int) -> float:
        if t == 1:
            return 0.0
        if not link:
            raise SpecError(f"{gpu.name} has no GPU-to-GPU bandwidth in its preset; set interconnect_gb_s")
        values = 2 * m.num_hidden_layers * tokens * m.hidden_size
        return values * act_b * 2 * (t - 1) / t / link

    def combine(*times: float) -> float:
        compute, memory, comm = times
        return max(compute, memory, comm) if s.overlap else max(compute, memory) + comm

    # prefill: every prompt token of every request through the model, KV written once
    prefill_flops = requests * forward(m, s.prompt, s.prompt, s.attention)["forward"]
    prefill_bytes = weight_bytes_read(m, requests * s.prompt, w_bytes) \
        + requests * cached_positions(m, s.prompt) * kv_per_position
    pre = (prefill_flops / peak, prefill_bytes / bandwidth, allreduce_seconds(requests * s.prompt))
    ttft = combine(*pre)

    # decode: one token per request per step; FLOPs and KV reads grow with the context
    one = forward(m, 1, 1, s.attention)
    core_per_pair = 2 * m.num_attention_heads * (m.qk_head_dim + m.v_dim)
    base_flops = one["forward"] - core_per_pair * attended_pairs(1, 1, s.attention) * m.num_hidden_layers
    weights_read = weight_bytes_read(m, requests, w_bytes)
    comm = allreduce_seconds(requests)
    steps = max(s.output, 1)
    dec_compute = dec_memory = decode_total = 0.0
    for i in range(steps):
        context = s.prompt + i + 1
        pairs = (m.window_layers * attended_pairs(1, context, "causal", m.sliding_window)
                 + (m.num_hidden_layers - m.window_layers) * context)
        c = requests * (base_flops + core_per_pair * pairs) / peak
        mem = (weights_read + requests * cached_positions(m, context) * kv_per_position) / bandwidth
        dec_compute, dec_memory = dec_compute + c, dec_memory + mem
        decode_total += combine(c, mem, comm)
    tpot = decode_total / steps
    e2e = ttft + decode_total if s.output else ttft

    r = Rows("s", total=None)
    r.add("ttft", ttft, "lower bound: time to first token")
    bound = ("compute", "memory", "communication")
    r.add("prefill/compute", pre[0], f"{prefill_flops:.3g} FLOP at {s.compute_efficiency:.0%} of {t} x peak")
    r.add("prefill/memory", pre[1], f"{prefill_bytes:.3g} B at {s.bandwidth_efficiency:.0%} of {t} x HBM")
    r.add("prefill/communication", pre[2], f"TP all-reduce over {link / 1e9:g} GB/s" if t > 1 else "no TP")
    r.add("tpot", tpot, f"mean over {steps} decode step(s)")
    r.add("decode/compute", dec_compute / steps)
    r.add("decode/memory", dec_memory / steps, "weights + KV cache read per step")
    r.add("decode/communication", comm)
    r.add("e2e", e2e, f"ttft + {s.output} output tokens")
    r.add("decode_tokens_per_s", requests * s.dp / tpot if tpot else 0, unit="token/s",
          note="all instances, while decoding")
    decode_bound = bound[max(range(2), key=lambda j: (dec_compute, dec_memory)[j])]
    summary = {"ttft": ttft, "tpot": tpot, "e2e": e2e, "prefill_bound": bound[pre.index(max(pre))],
               "decode_bound": decode_bound, "requests_per_instance": requests}
    notes = []
    for name, target, value in (("ttft", ttft_target, ttft), ("tpot", tpot_target, tpot)):
        if target is not None:
            summary[f"{name}_target"] = target
            summary[f"{name}_met"] = value <= target
            if value > target:
                notes.append(f"{name} target {target * 1e3:g} ms is below the {value * 1e3:.4g} ms bound: "
                             "not reachable on this hardware")
    summary["feasible"] = all(summary.get(f"{n}_met", True) for n in ("ttft", "tpot"))  # no target: true
    return Breakdown(
        command="latency", title=f"Latency bounds of {m.name} on {s.tp * s.dp} x {gpu.name}",
        model=m.name, gpu=gpu.name, rows=r.build(),
        summary=summary,
        summary_units={"ttft": "s", "tpot": "s", "e2e": "s", "ttft_target": "s", "tpot_target": "s"},
        inputs={"batch": s.batch, "prompt": s.prompt, "output": s.output, "tp": s.tp, "dp": s.dp,
                "dtype": s.dtype, "kv_dtype": s.kv_dtype or s.dtype, "attention": s.attention,
                "compute_efficiency": s.compute_efficiency,
                "bandwidth_efficiency": s.bandwidth_efficiency, "overlap": s.overlap},
        notes=(f"roofline: each phase is max(compute, memory{', communication' if s.overlap else ''})"
               + ("" if s.overlap else " + communication"),
               f"efficiency: {s.compute_efficiency:.0%} of peak {s.dtype} compute, "
               f"{s.bandwidth_efficiency:.0%} of memory bandwidth (1.0 = physical bound)", *notes),
    )
