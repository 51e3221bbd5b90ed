"""TensorRT-LLM, PyTorch backend (the LLM API and trtllm-serve default since 0.17): the KV pool is
a fraction of the memory a profiled step leaves.

Follows TensorRT-LLM 1.0 (tensorrt_llm/_torch/pyexecutor/_util.py KvCacheCreator): after the
weights load it runs a dummy prefill of max_num_tokens (8192) tokens, then
KV = free_gpu_memory_fraction (0.9) x (total - peak), where the peak is the weights, the
activations and everything outside torch (CUDA context, NCCL, CUDA graphs), in 32-token blocks
(KvCacheConfig.tokens_per_block). The TensorRT engine path instead takes the fraction of the
memory free after its build-time activation reservation; not modelled.
"""

from __future__ import annotations

from ...dtypes import DTYPE_BYTES
from ...spec import ModelSpec
from ...units import fmt_bytes
from ..inference import engine_rows, kv_bytes_per_token, pool_result
from ..placement import Stage
from ..settings import MemorySettings
from ..stage import StageMemory, whole_bytes
from .common import CUDA_CONTEXT_CUBLAS, Device, nccl_bytes
from .vllm import forward_peak

FREE_FRACTION = 0.9  # KvCacheConfig.free_gpu_memory_fraction
MAX_NUM_TOKENS = 8192  # the LLM API's max_num_tokens: the profiled step's tokens
TOKENS_PER_BLOCK = 32


def stage(m: ModelSpec, s: MemorySettings, st: Stage, dev: Device) -> StageMemory:
    e = DTYPE_BYTES[s.compute_dtype]
    nccl = nccl_bytes(dev, s.parallel)
    r = engine_rows(m, s, st, CUDA_CONTEXT_CUBLAS + nccl, "CUDA context" + (", NCCL" if nccl else ""))
    tokens = s.prefill_chunk or MAX_NUM_TOKENS
    r.add("activations", whole_bytes(forward_peak(m, st, tokens, s.parallel.tp, e)),
          f"profiled prefill of {tokens:,} tokens (max_num_tokens)",
          how=("by vLLM's profiled forward peak of {} tokens (memory/engines/vllm.forward_peak)", tokens))
    r.add("logits", 0, "last positions only: negligible", how=("0",))
    frac = FREE_FRACTION if s.gpu_util is None else s.gpu_util
    left = max(dev.total - sum(r[k] for k in ("weights", "non_torch", "activations")), 0)
    # The pool is what the rows leave of the device: frac x (total - profiled peak).
    r.add("reserve", whole_bytes(left * (1 - frac)), "1 - free_gpu_memory_fraction of what the step left",
          how=("(1 - {}) x ({} B on the device - weights - non_torch - activations)", frac, dev.total))
    block = s.kv_block or TOKENS_PER_BLOCK
    notes = [f"TensorRT-LLM {s.engine_version} (PyTorch backend): KV = {frac:g} x (total - profiled peak) = "
             f"{frac:g} x {fmt_bytes(left)}; {block}-token blocks"]
    return pool_result(r, s, st, dev.total, kv_bytes_per_token(m, s, st), block, notes)
