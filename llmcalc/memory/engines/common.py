"""What the engine modules share: the device they size for, and the memory outside torch's weights."""

from __future__ import annotations

from typing import NamedTuple

from ...spec import ModelSpec
from ..placement import Stage

GiB = 2**30
MiB = 2**20
NVLINK_BYTES_PER_S = 100e9  # one-direction GPU-to-GPU bandwidth above any PCIe x16 link: NVLink/xGMI

# A CUDA process's memory outside torch's allocator, measured on an H100 (torch 2.11, CUDA 13;
# scripts/measure_gpu.py): the context right after init, and with cuBLAS's handles once a bf16
# matmul has run.
CUDA_CONTEXT = 0.52 * GiB
CUDA_CONTEXT_CUBLAS = 0.67 * GiB
# NCCL and custom all-reduce buffers per GPU with TP/PP >= 2: NVLink/NVSwitch peers about 1.8 GiB
# (vLLM PR 10511: non_torch 3.58 GiB at TP 2 against 1.79 GiB at TP 1 on H100), PCIe peers about
# 0.1 GiB (vLLM logs: RTX 4090 TP 2 0.25 GiB; L40S TP 8 0.21 GiB of non-torch memory in all).
NCCL_LINKED = 1.75 * GiB
NCCL_PCIE = 0.1 * GiB


class Device(NamedTuple):
    """The GPU as the engine sees it: the total the driver reports, its name, and whether its
    peers are linked by NVLink/NVSwitch (NCCL and custom all-reduce set up larger buffers)."""

    total: int
    name: str
    linked: bool


def nccl_bytes(dev: Device, par) -> float:
    """NCCL's buffers on each GPU of an instance that spans GPUs (TP, PP or CP 2 or more, or experts split over
    ranks; 0 on one GPU, and for data-parallel replicas of a dense model, which serve independently)."""
    if par.tp * par.pp * par.cp < 2 and par.ep < 2:
        return 0.0
    return NCCL_LINKED if dev.linked else NCCL_PCIE


def rope_cache_bytes(m: ModelSpec, e: float) -> float:
    """The rotary cos/sin table built with the model: max_position x rotary_dim in the model dtype
    (vLLM's RotaryEmbedding.cos_sin_cache; it is inside "Model loading took": Llama-3.1-8B's
    131072 x 128 x 2 B = 32 MiB is the gap between 14.958 GiB of weights and the 14.9888 logged)."""
    if m.position_embedding != "rotary":
        return 0.0
    return m.max_position_embeddings * (m.qk_rope_head_dim or m.qk_head_dim) * e


def vocab_padding_bytes(m: ModelSpec, st: Stage, tp: int, e: float, multiple: int = 64) -> float:
    """vLLM pads the embedding and the head to a multiple of 64 rows before splitting them over TP."""
    extra = (-m.vocab_size) % multiple * m.embed_dim * e / tp
    tables = (1 if st.first else 0) + (1 if st.last and not m.tie_word_embeddings else 0)
    return extra * tables
