"""Expected serving latency: the time an engine's benchmark shows, beside the roofline bound.

The bound (throughput.latency_breakdown) runs every phase at the hardware's ceiling. A real step
adds what the ceiling leaves out; each addition is a named default below, with the measurements it
comes from (tests/data/serving_measured.yaml), and each can be overridden:

- decode reads the weights and the KV cache at a fraction of HBM bandwidth that depends on the
  weight format: kernels that dequantize as they read reach less of it;
- prefill runs its matmuls (attention included) at a fraction of the compute dtype's dense peak;
- every step, prefill or decode, pays a fixed cost per layer: kernel launches, scheduling and
  sampling spread over the layers; small where the engine replays CUDA graphs, large in eager
  PyTorch, where Python launches every kernel;
- tensor parallelism adds two all-reduces per layer, each a latency plus its bytes over the link;
- a request served over HTTP pays the API server and tokenizer once, in its time to first token.

One request at a time (or ``batch`` arriving together): TTFT = request overhead + the prefill's
chunks; each decode step = max(compute, memory) + layers x per-layer cost + all-reduces, at the
mean context of the decode; e2e = TTFT + (output - 1) x TPOT. The band is the spread of
measured / expected over the validation set (BAND).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .dtypes import DTYPE_BYTES, FLOAT_DTYPES, GGUF_DTYPES
from .eager import ELEMENTWISE_BANDWIDTH, unfused_bytes
from .gpuspec import STAND_INS
from .spec import ModelSpec, SpecError

# Fraction of HBM bandwidth decode reaches, by weight format. 16-bit: vLLM 0.19.1 on H100, Llama-3.1-8B:
# ITL = 6.44 ms + 4.37e-5 ms per context token, whose slope is 0.89 of the KV bytes at 3.35 TB/s (vLLM
# FP8 KV-cache blog, 2025); llama.cpp f16 on RTX 4090 gives 0.90 with the same per-layer cost. fp8
# (W8A8): a scale per tensor, read as 16-bit does. Weight-only int8/int4 dequantize in the GEMV:
# gpt-fast on A100 (Llama-2-70B int8 52 ms/token, 7B int4 g32 5.1 ms): 0.65 and 0.50. GGUF block
# formats: llama.cpp on RTX 3090/4090, q8_0 0.83 and q4_0 0.64 (ggml-org/llama.cpp discussion 4225 and
# the ggml-backend benchmarks, Jan 2024); the other k-quants by their bits between those two.
BANDWIDTH = {"fp8": 0.85, "int8": 0.65, "int4": 0.50, "fp4": 0.50, "q8_0": 0.83, "q4_0": 0.64}
FLOAT_BANDWIDTH = 0.90

# Fraction of the dense peak prefill's matmuls reach, by compute dtype. 16-bit: TensorRT-LLM 0.5 batch-1
# first-token latency, Llama-2-7B fp16 on A100 at 2048 tokens 133 ms (0.68) and 70B TP 4 377 ms (0.62,
# with its all-reduces). fp8: the same table on H100 (0.39 at 2048 tokens) and NIM 1.8 Llama-3.3-70B fp8
# TP 2, 5000 tokens in 407 ms (0.47): fp8 kernels reach a smaller share of their doubled peak.
COMPUTE = {"fp32": 0.65, "tf32": 0.65, "bf16": 0.65, "fp16": 0.65, "fp8": 0.45, "int8": 0.45, "fp4": 0.35}
# A GPU whose best-shape matmuls reach less of their peak than an H100's (its measured MAMF, 0.803 of the bf16
# peak) reaches less in prefill too: at most this share of its MAMF, H100's 0.65 / 0.803 (MI300X: 0.81 x 0.511).
PREFILL_MAMF = 0.81


def mamf_share(dtype: str, gpu=None) -> float | None:
    """The share of the dense ``dtype`` peak the GPU's best-shape matmuls reach: measured (GPUSpec.matmul_share),
    or for a dtype without a figure its bf16 one scaled as COMPUTE scales (fp8 kernels reach less of their doubled
    peak); None where neither is known, or for a 16-bit dtype whose peak is not bf16's (Gaudi 3's fp16)."""
    if gpu is None:
        return None
    measured = gpu.matmul_share(dtype)
    if measured or dtype in STAND_INS:
        return measured
    base = gpu.matmul_share("bf16")
    return base * COMPUTE.get(dtype, COMPUTE["bf16"]) / COMPUTE["bf16"] if base else None


def prefill_share(dtype: str, gpu=None) -> float:
    """Prefill's share of the dense ``dtype`` peak: COMPUTE, at most PREFILL_MAMF of the GPU's MAMF share."""
    share, measured = COMPUTE.get(dtype, COMPUTE["bf16"]), mamf_share(dtype, gpu)
    return min(share, PREFILL_MAMF * measured) if measured else share

# Fixed cost per layer per step (seconds): kernel launches, scheduling and sampling spread over the
# layers. With CUDA graphs: vLLM 0.19.1 Llama-3.1-8B, 45 us on H100 and 55 us on B200 (the blog's fits
# above), 62 us for Qwen3-8B on vLLM 0.11 (GPUStack); llama.cpp f16 on RTX 4090, 56 us. Eager PyTorch
# (EAGER) launches each kernel from Python, asynchronously: the host's time runs beside the GPU's, and a
# step takes the longer of the two (Step.total). LitGPT (PyTorch 2.1) Llama-2-7B and 13B at batch 1 on
# A100-40GB decode at 32.3 and 40.3 ms a token, 1.01 ms for each of their 32 and 40 layers, while their
# weights read in 9.6 and 18.6 ms: host-bound, at one cost per layer for both. transformers 5.17 generate
# (PyTorch 2.11, about 45 kernels a layer) on H100 and H200 hosts: 0.63-1.1 ms a layer over 24 runs of
# Llama-3.2-1B and 3.1-8B, median 0.89 (tests/data/gpu_serving.json). The default is the median of all 26.
LAYER_OVERHEAD = {"vllm": 50e-6, "sglang": 50e-6, "trtllm": 50e-6, "llamacpp": 55e-6, "hf": 0.9e-3}
EAGER = ("hf",)  # engines whose host launches every kernel asynchronously, without CUDA graphs
# Engines whose cache appends by concatenation: transformers' DynamicCache (torch.cat), so every decode step copies
# every layer's cache, read and written, as a pointwise kernel (LitGPT, also run as hf, preallocates: at batch 1
# the copy is a few percent of its step).
CONCAT_CACHE = ("hf",)
# Prefill steps replay no (or only piecewise) CUDA graphs: TensorRT-LLM 0.5's batch-1 first-token latency
# at 128 prompt tokens, 7 ms for Llama-2-7B and 26 ms for 70B on TP 4 (H100), lies 94-150 us per layer
# above its bandwidth floor.
PREFILL_LAYER_OVERHEAD = {"vllm": 150e-6, "sglang": 150e-6, "trtllm": 150e-6, "llamacpp": 55e-6}  # EAGER: its layer one

# Per request, once, in TTFT: the HTTP server, tokenizer and scheduler (seconds). NIM 1.8 Llama-3.3-70B
# at 500 prompt tokens leaves about 3 ms beside its prefill; GPUStack's vLLM 0.11 ShareGPT run about
# 50 ms (a spread the band does not cover; --request-overhead sets it). llama.cpp's benchmark: none.
# transformers generate sets up its cache, logits processors and stopping criteria before the prefill: at a
# 128-token prompt its TTFT exceeds its TPOT (both host-bound) by 2.4-11.8 ms, median 4, over Llama-3.2-1B and
# 3.1-8B on an H100 and an H200 (tests/data/gpu_serving.json).
REQUEST_OVERHEAD = {"vllm": 5e-3, "sglang": 5e-3, "trtllm": 5e-3, "llamacpp": 0.0, "hf": 4e-3}

# An all-reduce's fixed latency (NCCL, small messages: nccl-tests on NVLink 8-20 us; PCIe about twice; a group
# spanning nodes over InfiniBand about 30 us: nccl-tests issues #128, 24 us for a 128-512 B reduce-scatter on two
# nodes of four, and #182, 40-48 us for an 8-256 B all-reduce on two nodes) and the share of the link's bandwidth
# its bytes get (nccl-tests bus bandwidth, 70-80% of the spec).
ALLREDUCE_LATENCY = {"linked": 15e-6, "pcie": 30e-6, "network": 30e-6}
LINK_EFFICIENCY = 0.75

# The spread of measured / expected over tests/data/serving_measured.yaml (one request at a time):
# 10th and 90th percentiles, rounded out. The band is expected x these.
BAND = (0.8, 1.25)


FLAGS = {"compute": "--prefill-efficiency", "bandwidth": "--decode-efficiency", "layer_overhead": "--step-overhead",
         "request_overhead": "--request-overhead"}


@dataclass(frozen=True)
class Efficiencies:
    """What a step reaches of the hardware, and what it pays besides; None: the default for the
    weight format, compute dtype or engine (the tables above)."""

    compute: float | None = None
    bandwidth: float | None = None
    layer_overhead: float | None = None  # seconds per layer per step
    request_overhead: float | None = None  # seconds, once per request, in TTFT
    fitted: tuple = ()  # the fields calibration set (calibrate.fit), for the notes

    def __post_init__(self) -> None:
        for key, flag in FLAGS.items():
            value = getattr(self, key)
            if value is None:
                continue
            if key in ("compute", "bandwidth") and not 0 < value <= 1:
                raise SpecError(f"{flag} must be in (0, 1], got {value:g}")
            if key.endswith("overhead") and not 0 <= value < 10:
                raise SpecError(f"{flag} must be between 0 and 10 s, got {value:g} s")


def bandwidth_efficiency(dtype: str) -> float:
    """The default share of HBM bandwidth decode reaches with weights stored in ``dtype``."""
    if dtype in FLOAT_DTYPES:
        return FLOAT_BANDWIDTH
    if dtype in BANDWIDTH:
        return BANDWIDTH[dtype]
    if dtype in GGUF_DTYPES:  # between q4_0 and q8_0 by bytes per weight (dtypes.py: the formats' own)
        lo, hi = DTYPE_BYTES["q4_0"], DTYPE_BYTES["q8_0"]
        share = (min(max(DTYPE_BYTES[dtype], lo), hi) - lo) / (hi - lo)
        return BANDWIDTH["q4_0"] + share * (BANDWIDTH["q8_0"] - BANDWIDTH["q4_0"])
    raise SpecError(f"no bandwidth efficiency for weights in {dtype}")


class Resolved(NamedTuple):
    """The efficiencies this estimate uses, defaults filled in, each with where it came from."""

    compute: float
    bandwidth: float
    layer_overhead: float
    request_overhead: float
    allreduce_latency: float
    sources: dict
    engine: str
    prefill_overhead: float  # seconds per layer per prefill step: the step cost, at least PREFILL_LAYER_OVERHEAD (EAGER: it)


def resolve(eff: Efficiencies, engine: str, dtype: str, compute_dtype: str, gpu) -> Resolved:
    """Fill in each efficiency the user did not set, saying which it is (for the notes); the all-reduce
    latency by whether ``gpu``'s peers are NVLink-linked (the threshold the memory engines use)."""
    from .memory.engines.common import NVLINK_BYTES_PER_S

    if engine not in LAYER_OVERHEAD:
        raise SpecError(f"no step-cost defaults for engine {engine!r}; choose one of {', '.join(LAYER_OVERHEAD)}")
    chosen = {"compute": (eff.compute, lambda: prefill_share(compute_dtype, gpu), f"{compute_dtype} prefill"),
              "bandwidth": (eff.bandwidth, lambda: bandwidth_efficiency(dtype), f"{dtype} weights"),
              "layer_overhead": (eff.layer_overhead, lambda: LAYER_OVERHEAD[engine], engine),
              "request_overhead": (eff.request_overhead, lambda: REQUEST_OVERHEAD[engine], engine)}
    values, sources = {}, {}
    for key, (given, default, why) in chosen.items():
        values[key] = default() if given is None else given
        sources[key] = "calibrated" if key in eff.fitted else "given" if given is not None else f"default for {why}"
    linked = gpu.interconnect_bandwidth >= NVLINK_BYTES_PER_S
    return Resolved(**values, allreduce_latency=ALLREDUCE_LATENCY["linked" if linked else "pcie"], sources=sources,
                    engine=engine, prefill_overhead=values["layer_overhead"] if engine in EAGER  # the same host launches
                    else max(values["layer_overhead"], PREFILL_LAYER_OVERHEAD[engine]))


class Step(NamedTuple):
    """One engine step's time and its parts (seconds)."""

    compute: float
    memory: float
    overhead: float
    communication: float
    flops: float = 0.0  # what compute and memory are the time of
    nbytes: float = 0.0
    eager: bool = False  # the host's overhead runs beside the GPU's work (EAGER), not after it
    unfused: float = 0.0  # EAGER: its pointwise kernels, each its own pass over HBM after the GEMMs (eager.py)
    unfused_bytes: float = 0.0  # what those kernels move

    @property
    def total(self) -> float:
        gpu = max(self.compute, self.memory) + self.unfused + self.communication
        return max(gpu, self.overhead) if self.eager else gpu + self.overhead


def allreduce_seconds(m: ModelSpec, tokens: float, steps: int, tp: int, act_bytes: float, gpu,
                      r: Resolved) -> float:
    """The TP all-reduces' bytes (throughput.tp_allreduce_bytes) at LINK_EFFICIENCY of the link the group runs
    over (GPUSpec.collective_bandwidth), and two fixed latencies per layer per step: the GPU's own link's, or the
    network's where the group spans nodes (past node_gpus)."""
    from .throughput import tp_allreduce_bytes

    if tp == 1:
        return 0.0
    link = gpu.collective_bandwidth(tp)
    if not link:
        raise SpecError("this GPU has no GPU-to-GPU bandwidth in its preset; set interconnect_gb_s")
    latency = ALLREDUCE_LATENCY["network"] if tp > gpu.node_gpus else r.allreduce_latency
    return (2 * m.num_hidden_layers * steps * latency
            + tp_allreduce_bytes(m, tokens, tp, act_bytes) / (link * LINK_EFFICIENCY))


class Expected(NamedTuple):
    """Expected times of one request (or ``batch`` arriving together: the mean over them), seconds."""

    ttft: float
    tpot: float
    e2e: float
    prefill: Step  # summed over the prefill's chunks
    decode: Step  # one decode step at the decode's mean context
    chunks: int
    waited: float  # the share of the prefill a request waits for its first token, on average (1: all of it)


@dataclass(frozen=True)
class Workload:
    """What one serving instance runs: ``requests`` prompts arriving together, each ``prompt`` tokens
    in and ``output`` out, on ``tp`` GPUs; prefill in chunks of at most ``chunk`` tokens (None: whole)."""

    requests: int
    prompt: int
    output: int
    tp: int
    dtype: str
    compute_dtype: str
    kv_dtype: str
    act_bytes: float
    attention: str = "causal"
    chunk: int | None = None


def expected(m: ModelSpec, gpu, w: Workload, r: Resolved) -> Expected:
    """TTFT, TPOT and e2e as the engine runs them (module docstring): the prefill in chunks, then
    decode steps costed at the decode's mean context (a step's time is linear in its context)."""
    prefill, steps = _prefill(m, gpu, w, r)
    context = w.prompt + max(w.output - 1, 0) / 2
    decode = _decode(m, gpu, w, r, context)
    # prompts prefill in arrival order: request i has its first token after the step that ends its prompt
    budget = -(-w.requests * w.prompt // steps)
    done = sum(-(-i * w.prompt // budget) for i in range(1, w.requests + 1)) / (w.requests * steps)
    ttft = r.request_overhead + prefill.total * done
    return Expected(ttft, decode.total, ttft + decode.total * max(w.output - 1, 0), prefill, decode, steps, done)


def _prefill(m: ModelSpec, gpu, w: Workload, r: Resolved) -> tuple[Step, int]:
    """Every request's prompt through the model in steps of at most ``chunk`` tokens (all requests'
    prompts in a row). Causal attention costs the same chunked or whole (each query sees its prefix);
    each step reads the weights once and pays the per-layer cost and the all-reduce latencies."""
    from .flops import forward
    from .kvcache import kv_cache_bytes
    from .throughput import weight_bytes_read

    tokens = w.requests * w.prompt
    steps = -(-tokens // min(w.chunk or tokens, tokens))
    flops = w.requests * forward(m, w.prompt, w.prompt, w.attention, logits=1)["forward"]  # each samples its last
    weights = steps * weight_bytes_read(m, -(-tokens // steps), w.dtype) / w.tp
    kv = kv_cache_bytes(m, w.prompt, w.requests, DTYPE_BYTES[w.kv_dtype], w.tp)  # written once
    return _pass(m, gpu, w, r, flops, weights + kv, tokens, steps, r.prefill_overhead), steps


def _decode(m: ModelSpec, gpu, w: Workload, r: Resolved, context: float) -> Step:
    """One decode step of every request at ``context`` positions: one new token each."""
    from .flops import forward
    from .kvcache import kv_cache_bytes
    from .throughput import weight_bytes_read

    keys = max(int(round(context)), 1)
    flops = w.requests * forward(m, 1, keys, w.attention)["forward"]
    kv = kv_cache_bytes(m, keys, w.requests, DTYPE_BYTES[w.kv_dtype], w.tp)
    nbytes = weight_bytes_read(m, w.requests, w.dtype) / w.tp + kv
    copied = 2 * kv if r.engine in CONCAT_CACHE else 0.0  # torch.cat's copy of the cache, read and written
    return _pass(m, gpu, w, r, flops, nbytes, w.requests, 1, r.layer_overhead, copied)


def peak(gpu, w: "Workload", r: Resolved) -> float:
    """The GPU's dense FLOP/s for this workload's matmuls as the engine runs them (16-bit accumulation where it does:
    memory/engines accumulates16)."""
    from .memory.engines import accumulates16

    return gpu.peak(w.compute_dtype, accumulates16(r.engine, w.dtype))


def _pass(m: ModelSpec, gpu, w: Workload, r: Resolved, flops: float, nbytes: float, tokens: int, steps: int,
          per_layer: float, copied: float = 0.0) -> Step:
    """``steps`` engine steps doing ``flops`` and reading ``nbytes`` per GPU over ``tokens`` tokens; an EAGER
    engine's pointwise kernels besides (eager.unfused_bytes, and the cache ``copied``, at ELEMENTWISE_BANDWIDTH)."""
    eager = r.engine in EAGER
    pointwise = unfused_bytes(m, tokens, w.act_bytes, w.tp) + copied if eager else 0.0
    return Step(flops / (w.tp * peak(gpu, w, r) * r.compute), nbytes / (gpu.memory_bandwidth * r.bandwidth),
                steps * m.num_hidden_layers * per_layer,
                allreduce_seconds(m, tokens, steps, w.tp, w.act_bytes, gpu, r), flops, nbytes,
                eager, pointwise / (gpu.memory_bandwidth * ELEMENTWISE_BANDWIDTH), pointwise)


def step_costs(m: ModelSpec, gpu, w: Workload, r: Resolved):
    """schedule.StepCosts for this instance: the coefficients _prefill and _decode use, per token,
    per attended pair and per cached position (all layers at full attention: a sliding window's
    saving is not credited under load), and an MoE's experts as a step's tokens touch them."""
    from .flops import forward
    from .kvcache import kv_cache_bytes
    from .schedule import StepCosts
    from .throughput import weight_bytes_read

    flop_rate = w.tp * peak(gpu, w, r) * r.compute
    byte_rate = gpu.memory_bandwidth * r.bandwidth
    L = m.num_hidden_layers
    per_pair = L * 2 * m.num_attention_heads * (m.qk_head_dim + m.v_dim)  # scores + weighted sum, per pair
    one = forward(m, 1, 1, "causal")
    head = one["dense/lm_head"]  # once per request a step schedules: the position it samples
    dense = one["forward"] - per_pair - head
    per_token = allreduce_seconds(m, 1, 0, w.tp, w.act_bytes, gpu, r)  # the bytes of one token
    per_step = allreduce_seconds(m, 0, 1, w.tp, w.act_bytes, gpu, r)  # the latencies of one step
    # weights a step of t tokens reads: W(t) = W_all - experts x (1 - k/E)^t, from W(1) and W(all experts)
    every = weight_bytes_read(m, 10**9, w.dtype) / w.tp / byte_rate
    share = m.num_experts_per_tok / m.num_experts if m.is_moe else 0.0
    experts = (every - weight_bytes_read(m, 1, w.dtype) / w.tp / byte_rate) / (1 - share) if m.is_moe else 0.0
    return StepCosts(dense / flop_rate, per_pair / flop_rate, every, kv_cache_bytes(m, 1, 1, DTYPE_BYTES[w.kv_dtype], w.tp)
                     / byte_rate, L * r.layer_overhead, L * r.prefill_overhead, per_token, per_step, experts, share,
                     head / flop_rate)
