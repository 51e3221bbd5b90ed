"""SGLang: a static pool of ``mem_fraction_static`` x the free memory holds the weights and the KV.

Follows SGLang 0.5.3-0.5.9 (sglang/srt/model_executor/model_runner.py profile_max_num_token,
server_args.py): with ``free`` the memory free after NCCL's set-up and before the weights,
KV budget = mem_fraction_static x free - weights, cut into per-token cells (page size 1);
activations and CUDA graphs live in the (1 - mem_fraction_static) rest. Unless given
(``--gpu-util``), mem_fraction_static = (gpu_mem - reserved) / gpu_mem with reserved (MiB) =
512 + 1.5 x chunked_prefill_size + 2 x cuda_graph_max_bs + 1024 x tp x pp / 8, at least 10 GiB on
GPUs over 60 GiB; 0.4.8-0.5.2 reserved (9.5 + tp x pp / 2) GiB on 35-90 GiB GPUs, and before
0.4.6 the fraction came from the TP degree alone (0.88 ... 0.79).
"""

from __future__ import annotations

from ...spec import ModelSpec
from ...units import fmt_bytes
from ..inference import engine_rows, kv_bytes_per_token, pool_result
from ..placement import Stage
from ..settings import MemorySettings
from ..stage import StageMemory, whole_bytes
from . import parse_version
from .common import CUDA_CONTEXT_CUBLAS, MiB, Device, nccl_bytes

# (GPU memory below GiB, chunked_prefill_size, cuda_graph_max_bs for tp < 4, for tp >= 4): 0.5.5+
TIERS = ((20, 2048, 8, 8), (35, 2048, 24, 80), (60, 4096, 32, 160), (160, 8192, 256, 512), (1e9, 16384, 512, 512))
TP_TABLE = ((16, 0.79), (8, 0.81), (4, 0.85), (2, 0.87), (1, 0.88))  # before 0.4.6 (0.3.0: 0.83 at TP 8)


def mem_fraction_static(s: MemorySettings, dev: Device, v: tuple) -> tuple[float, str]:
    """SGLang's default mem_fraction_static for this GPU and layout, and how it was chosen."""
    par = s.parallel
    gpu_mib = dev.total / MiB
    if v < (0, 4, 6):
        frac = next(f for tp, f in TP_TABLE if par.tp >= tp)
        return frac, f"TP {par.tp} table"
    if v < (0, 5, 3):
        gib = gpu_mib / 1024
        reserved = (2.8 + par.gpus / 10 if gib < 35 else 9.5 + par.gpus / 2 if gib < 90 else
                    12 + par.gpus / 2 if gib < 160 else 32) * 1024
    else:
        _, chunk, small, large = next(t for t in TIERS if gpu_mib / 1024 < t[0])
        chunk = s.prefill_chunk or chunk
        max_bs = small if par.tp < 4 else large
        reserved = 512 + max(chunk, 2048) * 1.5 + max_bs * 2 + par.tp * par.pp / 8 * 1024
        if gpu_mib > 60 * 1024:
            reserved = max(reserved, 10 * 1024)
    return round((gpu_mib - reserved) / gpu_mib, 3), f"{reserved / 1024:.2f} GiB reserved"


def stage(m: ModelSpec, s: MemorySettings, st: Stage, dev: Device) -> StageMemory:
    v = parse_version(s.engine_version)
    nccl = nccl_bytes(dev, s.parallel)
    context = CUDA_CONTEXT_CUBLAS + nccl
    r = engine_rows(m, s, st, context, "CUDA context" + (" and NCCL buffers" if nccl else "") + ", before the pool")
    frac, how = (s.gpu_util, "--gpu-util") if s.gpu_util is not None else mem_fraction_static(s, dev, v)
    free = dev.total - context
    r.add("activations", 0, "inside the reserve below", how=("0",))
    r.add("logits", 0, "inside the reserve below", how=("0",))
    r.add("reserve", whole_bytes((1 - frac) * free), "(1 - mem_fraction_static) x free: activations, CUDA graphs, sampler",
          how=("(1 - {}) x ({} B on the device - non_torch)", frac, dev.total))
    # The pool is what the rows leave of the device: mem_fraction_static x free - weights.
    notes = [f"SGLang {s.engine_version}: KV = mem_fraction_static {frac:g} ({how}) x {fmt_bytes(free)} free - weights; "
             f"page size 1, {s.kv_dtype} cache"]
    return pool_result(r, s, st, dev.total, kv_bytes_per_token(m, s, st), s.kv_block or 1, notes)
