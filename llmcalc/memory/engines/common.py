"""What the engine modules share: the device they size for, the KV page, and the pool's summary."""

from __future__ import annotations

import math
from typing import NamedTuple

from ...breakdown import Quantity, Rows
from ...dtypes import DTYPE_BYTES
from ...kvcache import kv_values_per_token_layer
from ...spec import ModelSpec
from ...units import fmt_bytes
from ..placement import ParamSplit, Stage
from ..settings import MemorySettings
from ..stage import StageMemory, stage_note, whole_bytes

GiB = 2**30
MiB = 2**20
NVLINK_BYTES_PER_S = 100e9  # one-direction GPU-to-GPU bandwidth above any PCIe x16 link: NVLink/xGMI


class Device(NamedTuple):
    """The GPU as the engine sees it: the total the driver reports, its name, and whether its
    peers are linked by NVLink/NVSwitch (NCCL and custom all-reduce set up larger buffers)."""

    total: int
    name: str
    linked: bool

    @property
    def gib(self) -> float:
        return self.total / GiB


def values_per_token_layer(m: ModelSpec, tp: int) -> float:
    """KV values one TP rank caches per token per layer (kvcache.py): vLLM's and SGLang's
    max(1, kv_heads // tp) heads, and MLA's replicated latent."""
    return kv_values_per_token_layer(m, tp)


def kv_bytes_per_token(m: ModelSpec, s: MemorySettings, st: Stage, values: float | None = None) -> float:
    """KV bytes per token over the stage's layers on one GPU (every layer sized for the full context)."""
    per_layer = values_per_token_layer(m, s.parallel.tp) if values is None else values
    return per_layer * DTYPE_BYTES[s.kv_dtype] * st.layers


def rope_cache_bytes(m: ModelSpec, e: float) -> float:
    """The rotary cos/sin table built with the model: max_position x rotary_dim in the model dtype
    (vLLM's RotaryEmbedding.cos_sin_cache; it is inside "Model loading took": Llama-3.1-8B's
    131072 x 128 x 2 B = 32 MiB is the gap between 14.958 GiB of weights and the 14.9888 logged)."""
    if m.position_embedding != "rotary":
        return 0.0
    return m.max_position_embeddings * (m.qk_rope_head_dim or m.qk_head_dim) * e


def vocab_padding_bytes(m: ModelSpec, p: ParamSplit, st: Stage, tp: int, e: float, multiple: int = 64) -> float:
    """vLLM pads the embedding and the head to a multiple of 64 rows before splitting them over TP."""
    extra = (-m.vocab_size) % multiple * m.embed_dim * e / tp
    tables = (1 if st.first else 0) + (1 if st.last and not m.tie_word_embeddings else 0)
    return extra * tables


def requests_note(tokens: int, seq: int, concurrency: float) -> str:
    return f"{tokens:,} tokens: {concurrency:.2f} requests of {seq:,} tokens"


def pool_result(r: Rows, s: MemorySettings, st: Stage, usable: float, budget: float, per_token: float,
                block: int, concurrency_blocks: float | None, notes: list[str],
                tokens_by_concurrency: bool = False) -> StageMemory:
    """Close a pre-allocating engine's rows (the pool takes what the other rows leave of ``usable``,
    so ``budget`` is usable minus them): the KV pool of ``budget`` bytes in ``block``-token
    blocks; ``kv_cache`` holds ``s.batch`` requests of ``s.seq`` tokens (each needing
    ``concurrency_blocks`` blocks; None: whole-context blocks) and ``kv_free`` the rest of the pool.
    Summary: capacity and concurrency at ``s.seq``; ``tokens_by_concurrency``: the capacity is
    reported as concurrency x seq (vLLM 0.24+)."""
    budget = max(budget, 0.0)
    blocks = math.floor(budget / (per_token * block)) if per_token else 0
    per_request = concurrency_blocks or math.ceil(s.seq / block)
    concurrency = blocks / per_request if per_request else 0.0
    tokens = int(concurrency * s.seq) if tokens_by_concurrency else blocks * block
    needed = whole_bytes(s.batch * per_request * block * per_token)
    other = whole_bytes(sum(r[name] for name in ("weights", "non_torch", "activations", "logits", "cuda_graphs",
                                                 "reserve") if name in r))
    fits = other <= usable and blocks >= s.batch * per_request and blocks > 0
    free = math.floor(usable) - other - needed if fits else 0  # the pool is what the others leave of usable
    r.add("kv_cache", needed, f"{s.batch} request(s) of {s.seq:,} tokens in {block}-token blocks")
    r.add("kv_free", free, "the rest of the pool: " + requests_note(tokens, s.seq, concurrency))
    total = other + needed + free
    r.add("total", total, "per GPU: what the engine takes" if fits else "per GPU: what these requests need")
    summary = {"kv_cache_budget": Quantity(whole_bytes(budget), "byte"),
               "kv_cache_capacity": Quantity(tokens, "token"),
               "max_concurrency": Quantity(round(concurrency, 4), "count"),
               "kv_per_token": Quantity(whole_bytes(per_token), "byte"),
               "kv_per_request": Quantity(whole_bytes(needed / s.batch), "byte"),
               "kv_blocks": Quantity(blocks, "count"), "stage": Quantity(st.index, "count")}
    if other > usable:
        notes.append(f"does not fit: weights {fmt_bytes(r['weights'])} + the engine's own {fmt_bytes(other - r['weights'])}"
                     f" > {fmt_bytes(usable)} it may use; no room for a KV cache")
    elif not fits:
        notes.append(f"does not fit: {s.batch} request(s) of {s.seq:,} tokens need {fmt_bytes(needed)} of KV, "
                     f"the pool holds {fmt_bytes(blocks * block * per_token)}")
    res = StageMemory(r, total, {}, summary, notes)
    res.usable, res.fits = usable, fits
    return res


def stage_notes(s: MemorySettings, st: Stage) -> list[str]:
    return [stage_note(st, s.parallel.pp, 1)] if s.parallel.pp > 1 else []
