"""KV-cache size: what inference keeps per token, per GPU.

Per token per layer: K and V of the kv heads (2 · kv_heads · head_dim values; GQA/MQA shrink
it), or for Multi-head Latent Attention one compressed latent plus the shared rope key
(kv_lora_rank + qk_rope_head_dim values, no factor 2; DeepSeek-V2 §2.1). Sliding-window layers
keep at most the window. Under tensor parallelism the kv heads split over the TP ranks; once TP
exceeds them each rank keeps one replicated head (vLLM); MLA's latent is replicated on every rank.
"""

from __future__ import annotations

import math

from .spec import ModelSpec


def block_rounded(context: int, block: int) -> int:
    """A context rounded up to whole KV blocks (vLLM's paged cache allocates 16-token blocks)."""
    return -(-context // block) * block


def kv_values_per_token_layer(m: ModelSpec, tp: int = 1) -> float:
    """Cached values per token per layer on one TP rank."""
    return _values(m, tp)[0]


def _values(m: ModelSpec, tp: int) -> tuple[float, tuple]:
    """Values per token per layer on one TP rank, and as a formula: MLA's latent and rope key, else K
    and V of the kv heads (kv_heads < tp: one replicated head per rank)."""
    if m.is_mla:
        return m.kv_lora_rank + m.qk_rope_head_dim, ("({} latent + {} rope key)", m.kv_lora_rank, m.qk_rope_head_dim)
    heads = math.ceil(m.kv_heads / tp)
    return 2 * heads * m.qk_head_dim, ("2 x {} kv heads x {} head dim", heads, m.qk_head_dim)


def _layers(m: ModelSpec, layers: int | None) -> tuple[int, int]:
    """(layers, of which windowed): a pipeline stage holds its proportional share of the windowed layers."""
    layers = m.num_hidden_layers if layers is None else layers
    return layers, m.window_layers * layers // m.num_hidden_layers


def cached_positions(m: ModelSpec, context: int, layers: int | None = None) -> int:
    """Token positions held over ``layers`` layers (default: all): windowed layers keep min(context, window)."""
    layers, windowed = _layers(m, layers)
    return windowed * min(context, m.sliding_window or context) + (layers - windowed) * context


def kv_how(m: ModelSpec, context: int, batch: int = 1, bytes_per_value: float = 2,
           tp: int = 1, cp: int = 1, layers: int | None = None) -> tuple:
    """kv_cache_bytes as a formula (breakdown.formula): requests x positions x values x bytes."""
    layers, windowed = _layers(m, layers)
    positions = ("{} layers x {} tokens", layers, context) if not windowed else \
        ("({} window layers x {} tokens + {} layers x {} tokens)", windowed, min(context, m.sliding_window or context),
         layers - windowed, context)
    if cp > 1:
        positions = ("ceil(({}) / {} CP)", positions, cp)
    return ("{} requests x {} x {} x {} B", batch, positions, _values(m, tp)[1], bytes_per_value)


def kv_cache_bytes(m: ModelSpec, context: int, batch: int = 1, bytes_per_value: float = 2,
                   tp: int = 1, cp: int = 1, layers: int | None = None) -> float:
    """KV cache of ``batch`` sequences of ``context`` tokens on one GPU of a TP x CP group,
    over ``layers`` layers (a pipeline stage's; default all).

    Seed exercise 4: Llama-2-70B, 4000 tokens, fp16: 2 · 80 · 8 · 128 · 4000 · 2 B = 1.31 GB.
    """
    positions = math.ceil(cached_positions(m, context, layers) / cp)  # CP splits the tokens
    return batch * positions * (kv_values_per_token_layer(m, tp) * bytes_per_value)
