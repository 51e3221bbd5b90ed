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

from ...breakdown import Rows
from ...dtypes import DTYPE_BYTES
from ...spec import ModelSpec
from ...units import fmt_bytes
from ..inference import add_weights
from ..placement import Stage, stage_params
from ..settings import MemorySettings
from ..stage import StageMemory, whole_bytes
from .common import Device, kv_bytes_per_token, pool_result, stage_notes
from .hf import CUDA_CONTEXT
from .vllm import NCCL_LINKED, NCCL_PCIE, forward_peak

FREE_FRACTION = 0.9  # KvCacheConfig.free_gpu_memory_fraction
MAX_NUM_TOKENS = 8192  # the LLM API's max_num_tokens: the profiled step's tokens
TOKENS_PER_BLOCK = 32


def stage(m: ModelSpec, s: MemorySettings, st: Stage, dev: Device) -> StageMemory:
    par = s.parallel
    e = DTYPE_BYTES[s.compute_dtype]
    r = Rows("byte")
    add_weights(r, m, stage_params(m, par, st), s)
    r.add("gradients", 0, "inference")
    r.add("optimizer", 0, "inference")
    nccl = (NCCL_LINKED if dev.linked else NCCL_PCIE) if par.gpus > 1 else 0
    r.add("non_torch", whole_bytes(CUDA_CONTEXT + nccl), "CUDA context" + (", NCCL" if nccl else ""))
    tokens = s.prefill_chunk or MAX_NUM_TOKENS
    r.add("activations", whole_bytes(forward_peak(m, st, tokens, par.tp, e)),
          f"profiled prefill of {tokens:,} tokens (max_num_tokens)")
    r.add("logits", 0, "last positions only: negligible")
    frac = s.gpu_util if s.gpu_util < 1 else FREE_FRACTION
    left = dev.total - sum(r[k] for k in ("weights", "non_torch", "activations"))
    r.add("reserve", whole_bytes(max(left, 0) * (1 - frac)), f"1 - free_gpu_memory_fraction of what the step left")
    notes = [f"TensorRT-LLM {s.engine_version} (PyTorch backend): KV = {frac:g} x (total - profiled peak) = "
             f"{frac:g} x {fmt_bytes(max(left, 0))}; {s.kv_block or TOKENS_PER_BLOCK}-token blocks"]
    return pool_result(r, s, st, dev.total, left * frac, kv_bytes_per_token(m, s, st), s.kv_block or TOKENS_PER_BLOCK,
                       None, notes + stage_notes(s, st))
