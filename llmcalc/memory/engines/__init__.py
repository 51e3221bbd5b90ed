"""Inference memory as each serving engine accounts for it: one module per engine.

Every engine module exposes ``stage(m, s, st, dev) -> StageMemory``: the rows of one pipeline
stage's GPU, and in ``summary`` the KV pool (``kv_cache_budget`` bytes, ``kv_cache_capacity``
tokens) and ``max_concurrency`` (requests of ``s.seq`` tokens). Engines that pre-allocate the pool
(vLLM, SGLang, TensorRT-LLM) fill the memory they are given with it; the others (llama.cpp, plain
transformers) allocate what the requests need, and their capacity is what would fit.

Each module names the release whose behaviour it follows, and where releases differ.
"""

from __future__ import annotations

import functools
import importlib
from typing import NamedTuple

from ...dtypes import DTYPES, GGUF_DTYPES
from ...spec import SpecError, check_choice


class Engine(NamedTuple):
    module: str
    default_version: str
    # The share of device memory the engine takes unless told otherwise, from each release on;
    # () where the engine works its fraction out itself (SGLang, TensorRT-LLM: --gpu-util overrides).
    default_util: tuple[tuple[tuple[int, ...], float], ...]
    knobs: tuple[str, ...] = ()  # the MemorySettings engine knobs it reads (usage.py warns of the rest)
    # Whether it refuses a context beyond the model's max_position_embeddings: vLLM's "User-specified
    # max_model_len is greater than the derived max_model_len" (VLLM_ALLOW_LONG_MAX_MODEL_LEN lifts it),
    # SGLang's context_length check (SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN), TensorRT-LLM's
    # max_seq_len from the config; llama.cpp only warns past n_ctx_train and transformers runs on.
    caps_context: bool = True
    # The releases modelled: before ``first`` (the engine's first public release) a version is a typo;
    # after ``newest`` the numbers follow ``newest`` and say so.
    first: str = "0.1"
    newest: str | None = None  # None: default_version
    # KV-cache dtypes it can hold: vLLM and SGLang kv_cache_dtype (auto = the model's, fp8 variants;
    # SGLang fp4_e2m1), TensorRT-LLM's quantized KV (fp8, int8, nvfp4), llama.cpp's --cache-type-k/v
    # (f32, f16, bf16, q8_0, q4_0 ...), transformers' QuantizedCache (int4, int8 through quanto or HQQ).
    kv_dtypes: tuple[str, ...] = ("fp32", "bf16", "fp16", "fp8")
    context_parallel: bool = False  # splits one request's context over GPUs (--cp)
    # Weight formats it loads: vLLM and SGLang also read GGUF files; TensorRT-LLM builds from
    # checkpoints (no GGUF); llama.cpp runs GGUF (its f32/f16/bf16 and quantized types) only;
    # transformers dequantizes a GGUF file to the torch dtype on load, so it never holds one.
    weights: tuple[str, ...] = DTYPES
    # Settings it reads because it allocates as it goes, with no pool to absorb them: the attention
    # kernel's working set (engines/hf.py, llamacpp.py), a fixed --reserve beside its total, and the prompt
    # its prefill holds whole (transformers).
    reads: tuple[str, ...] = ()
    # Weight dtypes whose matmuls accumulate in 16 bits (GPUSpec.acc16_flops): llama.cpp multiplies F16 weights with
    # cuBLAS's CUBLAS_COMPUTE_16F (ggml-cuda's ggml_cuda_op_mul_mat_cublas; fp32 on AMD CDNA, whose presets have no
    # 16-bit-accumulate figure); its quantized types run its own int8 kernels.
    acc16: tuple[str, ...] = ()


ENGINES: dict[str, Engine] = {
    # gpu_memory_utilization: 0.9, 0.92 from 0.20 (vllm/config/cache.py)
    # Default: the last release whose default engine was V0, as most published start-up logs show
    # it; --engine-version 0.8 and later follow the V1 engine (see vllm.py).
    "vllm": Engine("vllm", "0.7.3", (((0,), 0.9), ((0, 20), 0.92)),
                   ("prefill_chunk", "max_num_seqs", "enforce_eager", "kv_block"), newest="0.31"),  # tests/data: a 0.31 log
    "sglang": Engine("sglang", "0.5.5", (), ("prefill_chunk", "kv_block"),
                     kv_dtypes=("fp32", "bf16", "fp16", "fp8", "fp4")),
    # TensorRT-LLM's Mapping has a cp_size (context parallelism for long prompts)
    "trtllm": Engine("trtllm", "1.0", (), ("prefill_chunk", "kv_block"), first="0.5",
                     kv_dtypes=("fp32", "bf16", "fp16", "fp8", "int8", "fp4"), context_parallel=True,
                     weights=tuple(d for d in DTYPES if d not in GGUF_DTYPES)),
    "llamacpp": Engine("llamacpp", "b6000", (((0,), 1.0),), ("prefill_chunk",), caps_context=False,
                       first="b1", newest="b7000", kv_dtypes=("fp32", "fp16", "bf16", "q8_0", "q4_0"),
                       weights=("fp32", "fp16", "bf16", *GGUF_DTYPES), reads=("attention_impl", "reserve"),
                       acc16=("fp16",)),
    # transformers: 5.17 measured on an H100 and an H200 (tests/data/gpu_serving.json), 5.23's configs
    # counted (tests/fidelity)
    "hf": Engine("hf", "5.17", (((0,), 1.0),), caps_context=False, first="4.0", newest="5.23",
                 kv_dtypes=("fp32", "bf16", "fp16", "int8", "int4"), reads=("attention_impl", "reserve", "prompt"),
                 weights=tuple(d for d in DTYPES if d not in GGUF_DTYPES)),
}
# The running-request cap of the engines whose memory does not set it (vLLM's max_num_seqs does: engines/vllm.py):
# SGLang's max_running_requests on an 80 GB GPU (server_args, 0.5), TensorRT-LLM's max_batch_size (LLM API default).
# --max-num-seqs sets it; latency's replay and max-batch apply it.
RUNNING_CAP = {"sglang": 1024, "trtllm": 2048}
KNOB_FLAGS = {"prefill_chunk": "--max-num-batched-tokens", "max_num_seqs": "--max-num-seqs",
              "enforce_eager": "--enforce-eager", "kv_block": "--block-size"}
DEFAULT_ENGINE = "vllm"


@functools.lru_cache(maxsize=64)  # read again at every point of a sweep
def parse_version(text: str, flag: str = "--engine-version") -> tuple[int, ...]:
    """'0.6.4', 'v0.10.2', 'b4747' -> a comparable tuple of integers; ``flag`` names the option in the error."""
    digits = str(text).strip()
    digits = digits[1:] if digits[:1] in ("v", "V", "b", "B") else digits
    parts = digits.split(".")
    if not all(part.isascii() and part.isdigit() and len(part) <= 6 for part in parts):
        raise SpecError(f"{flag} {text!r} is not a release number (e.g. 0.10.2)")
    return tuple(int(part) for part in parts)


def accumulates16(engine: str | None, dtype: str) -> bool:
    """Whether ``engine``'s matmuls over ``dtype`` weights accumulate in 16 bits (Engine.acc16)."""
    return dtype in ENGINES[engine or DEFAULT_ENGINE].acc16


NVIDIA_ONLY = ("trtllm",)  # TensorRT-LLM builds CUDA engines: NVIDIA GPUs alone
NO_POOL = ("hf",)  # transformers' DynamicCache grows with each token: no KV pool is set aside


# The lowest CUDA compute capability on which each engine loads fp8 weights. vLLM's Fp8Config.get_min_capability
# (80 in 0.9-0.10; below 8.9 a Marlin W8A16 kernel dequantizes as it reads), SGLang's the same; TensorRT-LLM's
# FP8 needs Ada or Hopper; transformers' FineGrainedFP8 below 8.9 dequantizes the whole model to bf16 on load.
FP8_MIN_CAPABILITY = {"vllm": 8.0, "sglang": 8.0, "trtllm": 8.9, "hf": 8.9}
NAMES = {"vllm": "vLLM", "sglang": "SGLang", "trtllm": "TensorRT-LLM", "llamacpp": "llama.cpp", "hf": "transformers"}


def check_engine_gpu(engine: str | None, gpu, dtype: str | None = None) -> None:
    """An engine the GPU can run: TensorRT-LLM only on NVIDIA's (a GPU whose preset names no vendor passes), and
    fp8 weights only from FP8_MIN_CAPABILITY on."""
    if gpu is None:
        return
    if engine in NVIDIA_ONLY and gpu.vendor.lower() not in ("", "nvidia"):
        raise SpecError(f"TensorRT-LLM runs on NVIDIA GPUs; {gpu.name} is {gpu.vendor}'s: --engine vllm, sglang or "
                        "llamacpp")
    least = FP8_MIN_CAPABILITY.get(engine or DEFAULT_ENGINE)
    cc = gpu.compute_capability
    if dtype == "fp8" and least and cc is not None and cc < least:
        held = " (it would dequantize them to bf16 on load: --dtype bf16)" if engine == "hf" else \
            ": --dtype int8 or int4 (GPTQ/AWQ kernels), or bf16"
        raise SpecError(f"{NAMES[engine or DEFAULT_ENGINE]} runs fp8 weights from compute capability {least:.1f}; "
                        f"{gpu.name} is {cc:.1f}{held}")


def resolve_engine(name: str | None, version: str | None, kv_dtype: str = "bf16", cp: int = 1,
                   dtype: str | None = None, kv_given: bool = True) -> tuple[str, str, dict]:
    """(engine, version, defaults for the settings left unset) for MemorySettings; a weight format,
    a KV dtype or a context split the engine does not offer is refused."""
    name = name or DEFAULT_ENGINE
    check_choice("--engine", name, tuple(ENGINES))
    engine = ENGINES[name]
    if dtype is not None and dtype not in engine.weights:
        raise SpecError(f"--dtype {dtype}: {name} does not hold weights in it; it loads "
                        f"{', '.join(engine.weights)}")
    if kv_dtype not in engine.kv_dtypes:
        which = f"--dtype {dtype} (the KV cache's too, without --kv-dtype)" if not kv_given and dtype else \
            f"--kv-dtype {kv_dtype}"
        raise SpecError(f"{which}: {name} holds its KV cache in {', '.join(engine.kv_dtypes)}")
    if cp > 1 and not engine.context_parallel:
        raise SpecError(f"--cp {cp}: {name} does not split one request's context over GPUs; use --tp or --pp "
                        "(--engine trtllm has context parallelism)")
    version = version or engine.default_version
    release = parse_version(version)
    if release < parse_version(engine.first):
        raise SpecError(f"--engine-version {version}: {name}'s first release was {engine.first}; give the release you run")
    newest = engine.newest or engine.default_version
    if release[:len(parse_version(newest))] > parse_version(newest):  # 0.31.2 is a 0.31 release
        import warnings

        warnings.warn(f"--engine-version {version} is newer than the {name} releases llmcalc models; the numbers "
                      f"follow {newest}", UserWarning, stacklevel=2)
        version, release = newest, parse_version(newest)  # and so do the notes and inputs that name the release
    utils = [u for since, u in engine.default_util if release >= since]
    return name, version, {"gpu_util": utils[-1]} if utils else {}


def engine_module(name: str):
    """The module that models ``name`` (imported on first use: only the chosen engine loads)."""
    return importlib.import_module(f"{__name__}.{ENGINES[name].module}")
