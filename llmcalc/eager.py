"""What an eager transformers forward moves through HBM beside its GEMMs and attention: every pointwise op
(the norms, the rotary embedding, the activation, the residual adds, the cache's copy of the new keys and
values) is its own kernel that reads its inputs and writes its output. Serving engines fuse these (vLLM's
RMSNorm, rotary and SiLU-and-mul kernels, TensorRT-LLM's plugins), so their share is inside the prefill's
compute share; an eager engine (serving.EAGER) pays them on top.

Counted op by op from transformers' eager Llama decoder layer (5.17-5.23, sdpa attention), each op reading
and writing whole tensors of ``a``-byte activations, per token:

- RMSNorm in fp32: upcast (a + 4), square (8), mean (4), scale by the rsqrt (8), downcast (4 + a), weight
  (2a): 28 + 4a a channel; a LayerNorm is one kernel, 2a;
- each residual add: 3a a channel, two a layer;
- rotary (rotate_half): x cos (2a), negate half (a), concatenate (2a), x sin (2a), add (3a): 10a a rotated
  channel of q and of k, and each of q and k reads the cos and sin of its head width (4a a channel of it);
- the cache's concatenation of the new keys and values: 2a a channel (DynamicCache's torch.cat, which at a
  decode step also copies the whole cache: serving.CONCAT_CACHE);
- the MLP's activation: 2a a channel (FORMULA_ACTIVATIONS 18a), and a gated MLP's product 3a more; a routed
  token is also gathered, weighted and summed back (ROUTED).

Checked against a count of every aten op of real layers (tests/fidelity/test_eager_bytes.py: Llama, Qwen, Mistral,
GPT-2 within 1%, Qwen3-MoE and OLMoE within 5%), and timed on an H100 and an H200 (tests/data/gpu_serving.json).
Not checked: MLA, whose eager attention re-expands the cached latents each step (transformers 5.23); the count
covers its norms and rotary part only.
"""

from __future__ import annotations

from .spec import ModelSpec

# The share of HBM bandwidth transformers' pointwise kernels reach. Profiled eager prefill of Llama-3.1-8B and
# Llama-3.2-1B (transformers 5.17, PyTorch 2.11), the kernels that are neither GEMMs nor attention, over the
# bytes this module counts: H100 0.56-0.65 (0.61 for 8B at 4k and 16k tokens), H200 0.41-0.51 (the same
# 132 SMs fill its faster memory less; a cuBLAS GEMV there reaches 0.70 against the H100's 0.76).
ELEMENTWISE_BANDWIDTH = 0.6


# A routed token's bookkeeping, in multiples of a a hidden channel: gathered to its expert, weighted, its k outputs
# summed back (Qwen3-MoE's grouped path, transformers 5.23: 6a a routed token plus 2a once, counted as 7a).
# Mixtral's router upcasts the hidden state to fp32 and renormalises besides: its layer counts 10% more.
ROUTED = 7

# Activations transformers writes as a Python formula, one kernel an op: NewGELUActivation's tanh approximation
# (GPT-2) is eight, cube, scale, add, scale, tanh, add one, half, product: 18a a channel (counted as above).
FORMULA_ACTIVATIONS = ("gelu_new", "gelu_fast")


def _norm(m: ModelSpec, a: float) -> float:
    return 28 + 4 * a if m.norm_type == "rmsnorm" else 2 * a


def unfused_bytes(m: ModelSpec, tokens: float, act_bytes: float = 2, tp: int = 1) -> float:
    """HBM bytes of the pointwise kernels of ``tokens`` tokens through every layer, on one GPU of a TP group:
    the norms, residual adds and a routed token's gather and scatter work on whole hidden vectors on every GPU,
    the rest on its shard (a kv head replicated where TP exceeds them, as kvcache counts it)."""
    a, h = act_bytes, m.hidden_size
    heads, kv_heads = m.num_attention_heads // tp, -(-m.kv_heads // tp)  # per GPU
    q, k, v = heads * m.qk_head_dim, kv_heads * m.qk_head_dim, kv_heads * m.v_dim
    if m.is_mla:  # the rotary part only: every head's rope slice of q, one shared rope key; the latent caches
        q, k, v = heads * m.qk_rope_head_dim, m.qk_rope_head_dim, m.kv_lora_rank
    rope = m.position_embedding == "rotary"
    rot_dim = m.qk_rope_head_dim if m.is_mla else m.qk_head_dim
    latent = (m.q_lora_rank or 0) + m.kv_lora_rank if m.is_mla else 0  # MLA's latent norms
    attention = ((m.norms_per_layer * h + latent) * _norm(m, a) + 2 * 3 * a * h + (4 * a * rot_dim if rope else 0)
                 + (10 * a * (q + k) if rope else 0) + 2 * a * (k + v))
    if m.qk_norm != "none":  # per head or over the whole width, it reads every q and k channel
        attention += _norm(m, a) * (heads + kv_heads) * m.qk_head_dim
    activation = 18 * a if m.hidden_act in FORMULA_ACTIVATIONS else 2 * a
    gated = activation + (3 * a if m.mlp_type == "gated" else 0)
    dense_mlp = gated * m.intermediate_size / tp
    moe_mlp = (m.num_experts_per_tok * (gated * m.expert_size / tp + ROUTED * a * h)
               + gated * m.shared_expert_size / tp) if m.is_moe else 0
    return tokens * (m.num_hidden_layers * attention + m.dense_layers * dense_mlp + m.moe_layers * moe_mlp)
