"""The per-``model_type`` mappings from a Hugging Face ``config.json`` to ModelSpec fields.

Each mapping reads the config the way the model's ``transformers`` implementation builds its
modules, so the parameter count equals ``sum(p.numel() for p in model.parameters())`` (checked in
tests/fidelity/). Defaults for absent keys are those of the model's ``transformers`` config class.
Keys a mapping does not read (rotary fractions, scalar multipliers, ids) add no parameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .spec import SpecError

if TYPE_CHECKING:  # hfconfig imports this module; Fields is needed for annotations only
    from .hfconfig import Fields


DROPOUT_KEYS = ("dropout", "attention_dropout", "attn_pdrop", "resid_pdrop", "embd_pdrop", "emb_pdrop",
                "hidden_dropout", "residual_dropout", "embedding_dropout", "activation_dropout",
                "attention_probs_dropout_prob", "hidden_dropout_prob")


# -- shared readers -------------------------------------------------------------------------------

def _dropout(c: Fields) -> float:
    """The largest training dropout probability the config states (0 when none)."""
    values = [c.get(k) for k in DROPOUT_KEYS]
    return float(max((v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)), default=0.0))


def _head_dim(c: Fields, hidden: int, heads: int) -> int | None:
    """head_dim only when it differs from hidden_size / num_attention_heads (Gemma, Qwen3)."""
    d = c.get("head_dim")
    if d is None or (heads > 0 and hidden % heads == 0 and d == hidden // heads):  # heads <= 0: refused later
        return None
    return c.int("head_dim")


def _window(c: Fields, layers: int, every: int | None = None, gate: str | None = None,
            first_full: str | None = None, default: int | None = None) -> dict:
    """sliding_window and how many layers use it.

    layer_types (newer configs) lists each layer; otherwise every ``every``-th layer is global
    (Gemma 2: 2, Gemma 3: sliding_window_pattern), or, for Qwen, the window is off unless
    ``use_sliding_window`` and applies to layers from ``max_window_layers`` on; else all layers.
    """
    stated = "sliding_window" in c.raw  # a stated null switches the window off; absent: class default
    window = c.get("sliding_window", default=None if stated else default)
    if gate and not c.flag(gate, False):
        return {}
    if window is None or window is False:
        return {}
    if not isinstance(window, int) or isinstance(window, bool) or window <= 0:
        raise SpecError(f"{c.where}: sliding_window must be a positive number of tokens or null, got {window!r}")
    types = c.get("layer_types")
    if isinstance(types, list) and types:
        n = sum(t == "sliding_attention" for t in types)
    elif every:
        n = layers - layers // every
    elif first_full:
        n = layers - min(layers, c.int(first_full, default=layers))
    else:
        n = layers
    if n == 0:
        return {}
    return {"sliding_window": window, "sliding_window_layers": None if n == layers else n}


def _standard(c: Fields, *, tie: bool, norm: str = "rmsnorm", mlp: str = "gated", act: str = "silu",
              bias: bool = False, mlp_bias: bool = False) -> dict:
    """The fields every Llama-descended config names the same way (rotary; attention_bias on q, k, v, o)."""
    h, heads = c.int("hidden_size"), c.int("num_attention_heads")
    attn_bias = c.flag("attention_bias", bias)
    return {
        "hidden_size": h, "num_hidden_layers": c.int("num_hidden_layers"), "num_attention_heads": heads,
        "num_key_value_heads": c.int("num_key_value_heads", default=heads), "head_dim": _head_dim(c, h, heads),
        "vocab_size": c.int("vocab_size"), "intermediate_size": c.int("intermediate_size"),
        "max_position_embeddings": c.int("max_position_embeddings"),
        "mlp_type": mlp, "hidden_act": str(c.get("hidden_act", default=act)), "norm_type": norm,
        "position_embedding": "rotary", "tie_word_embeddings": c.flag("tie_word_embeddings", tie),
        "attention_bias": attn_bias, "attention_out_bias": attn_bias,
        "mlp_bias": c.flag("mlp_bias", mlp_bias), "dropout": _dropout(c),
    }


def _moe(c: Fields, experts: str, width: str | None, dense: int = 0, defaults: tuple = (0, None, None),
         **extra) -> dict:
    """Routed experts: count, top-k, expert width (None: intermediate_size), dense layers; a field the file
    leaves out takes its transformers config class's default (``defaults``: count, top-k, width; checked on
    transformers 5.23), as from_pretrained reads it, so an MoE config without its count is not read as dense."""
    count, top, wide = defaults
    n = c.int(experts, default=count)
    if n == 0:
        return {}
    out = {"num_experts": n, "num_experts_per_tok": c.int("num_experts_per_tok", default=top),
           "moe_intermediate_size": c.int(width, default=wide) if width else None, "num_dense_layers": dense}
    return {**out, **extra}


def _sparse_steps(c: Fields, layers: int) -> int:
    """Qwen-MoE: dense layers are mlp_only_layers plus those off the decoder_sparse_step grid."""
    only = set(c.ints("mlp_only_layers"))
    step = c.int("decoder_sparse_step", default=1, minimum=1)
    return sum(1 for i in range(layers) if i in only or (i + 1) % step)


# -- one mapping per model_type ------------------------------------------------------------------

def _gpt2(c: Fields) -> dict:  # GPT2LMHeadModel: Conv1D c_attn/c_proj/c_fc, all biased, learned positions
    h, heads = c.int("n_embd", "hidden_size"), c.int("n_head", "num_attention_heads")
    return {"hidden_size": h, "num_hidden_layers": c.int("n_layer", "num_hidden_layers"),
            "num_attention_heads": heads, "num_key_value_heads": heads, "vocab_size": c.int("vocab_size"),
            "intermediate_size": c.int("n_inner", default=4 * h),
            "max_position_embeddings": c.int("n_positions", "max_position_embeddings"),
            "mlp_type": "plain", "hidden_act": str(c.get("activation_function", default="gelu_new")),
            "norm_type": "layernorm", "norm_bias": True, "position_embedding": "learned",
            "tie_word_embeddings": c.flag("tie_word_embeddings", True), "attention_bias": True,
            "attention_out_bias": True, "mlp_bias": True, "dropout": _dropout(c)}


def _gpt_bigcode(c: Fields) -> dict:  # StarCoder/SantaCoder: GPT-2 with multi-query attention
    out = _gpt2(c)
    out["hidden_act"] = str(c.get("activation_function", default="gelu_pytorch_tanh"))
    return {**out, "num_key_value_heads": 1 if c.flag("multi_query", True) else out["num_attention_heads"]}


def _gpt_neox(c: Fields) -> dict:  # Pythia, GPT-NeoX-20B: fused biased qkv, 2 LayerNorms, untied embed_out
    bias = c.flag("attention_bias", True)
    return {**_standard(c, tie=False, norm="layernorm", mlp="plain", act="gelu", bias=bias, mlp_bias=True),
            "norm_bias": True, "parallel_attn": c.flag("use_parallel_residual", True)}


def _gptj(c: Fields) -> dict:  # GPT-J: one ln_1 feeds attention and MLP in parallel; lm_head has a bias
    # GPT-2's field names and shape; rotary_dim (partial rotary) adds no parameters
    return {**_gpt2(c), "norms_per_layer": 1, "parallel_attn": True, "position_embedding": "rotary",
            "tie_word_embeddings": c.flag("tie_word_embeddings", False), "attention_bias": False,
            "attention_out_bias": False, "lm_head_bias": True}


def _opt(c: Fields) -> dict:  # OPT: learned positions offset by 2; post-LN variants drop the final norm
    h, heads = c.int("hidden_size"), c.int("num_attention_heads")
    bias = c.flag("enable_bias", True)
    pre_norm = c.flag("do_layer_norm_before", True)
    proj = c.int("word_embed_proj_dim", default=h)
    out = {"hidden_size": h, "num_hidden_layers": c.int("num_hidden_layers"), "num_attention_heads": heads,
           "num_key_value_heads": heads, "vocab_size": c.int("vocab_size"),
           "intermediate_size": c.int("ffn_dim"), "max_position_embeddings": c.int("max_position_embeddings"),
           "position_offset": 2, "mlp_type": "plain",
           "hidden_act": str(c.get("activation_function", default="relu")), "norm_type": "layernorm",
           "norm_affine": c.flag("layer_norm_elementwise_affine", True), "norm_bias": True,
           "final_norm": pre_norm and not c.flag("_remove_final_layer_norm", False),
           "position_embedding": "learned", "tie_word_embeddings": c.flag("tie_word_embeddings", True),
           "attention_bias": bias, "attention_out_bias": bias, "mlp_bias": bias, "dropout": _dropout(c),
           # OPT-350m: a vocab x 512 embedding with bias-free project_in (512 -> h) / project_out (h -> 512)
           "embedding_proj_dim": proj if proj != h else None}
    return out


def _bloom(c: Fields) -> dict:  # BLOOM: ALiBi, LayerNorm after the embedding, biases everywhere
    h = c.int("hidden_size", "n_embed")
    heads = c.int("n_head", "num_attention_heads")
    return {"hidden_size": h, "num_hidden_layers": c.int("n_layer", "num_hidden_layers"),
            "num_attention_heads": heads, "num_key_value_heads": heads, "vocab_size": c.int("vocab_size"),
            "intermediate_size": c.int("n_inner", default=4 * h),
            # ALiBi has no position table; 2048 is the training length (BLOOM paper), not a limit
            "max_position_embeddings": c.int("seq_length", "max_position_embeddings", default=2048),
            "mlp_type": "plain", "hidden_act": "gelu", "norm_type": "layernorm", "norm_bias": True,
            "embedding_norm": True, "position_embedding": "alibi",
            "tie_word_embeddings": c.flag("tie_word_embeddings", True), "attention_bias": True,
            "attention_out_bias": True, "mlp_bias": True, "dropout": _dropout(c)}


def _falcon(c: Fields) -> dict:  # Falcon: fused qkv; MQA (7B) or grouped kv (new_decoder_architecture)
    h = c.int("hidden_size", "n_embed")
    heads = c.int("num_attention_heads", "n_head")
    new_arch = c.flag("new_decoder_architecture", False)
    parallel = c.flag("parallel_attn", True)
    if new_arch:
        kv = c.int("num_kv_heads", "n_head_kv", default=heads)
    else:
        kv = 1 if c.flag("multi_query", True) else heads
    norms = 2 if not parallel else (c.int("num_ln_in_parallel_attn", default=2) if new_arch else 1)
    bias = c.flag("bias", False)
    return {"hidden_size": h, "num_hidden_layers": c.int("num_hidden_layers", "n_layer"),
            "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": c.int("vocab_size"),
            "intermediate_size": c.int("ffn_hidden_size", default=4 * h),
            "max_position_embeddings": c.int("max_position_embeddings", default=2048),
            "mlp_type": "plain", "hidden_act": str(c.get("activation", default="gelu")),
            "norm_type": "layernorm", "norm_bias": True, "norms_per_layer": norms, "parallel_attn": parallel,
            "position_embedding": "alibi" if c.flag("alibi", False) else "rotary",
            "tie_word_embeddings": c.flag("tie_word_embeddings", True), "attention_bias": bias,
            "attention_out_bias": bias, "mlp_bias": bias, "dropout": _dropout(c)}


def _llama(c: Fields) -> dict:  # Llama 1-3, and the shape most later configs copy
    return _standard(c, tie=False)


def _mistral(c: Fields) -> dict:  # Mistral: Llama + sliding window on every layer
    out = _standard(c, tie=False)
    return {**out, **_window(c, out["num_hidden_layers"], default=4096)}


def _mixtral(c: Fields) -> dict:  # Mixtral: Mistral with 8 SwiGLU experts of intermediate_size, no bias router
    out = _mistral(c)
    return {**out, **_moe(c, "num_local_experts", None, defaults=(8, 2, None))}  # MixtralConfig


def _qwen2(c: Fields) -> dict:  # Qwen2/2.5: bias on q, k, v only (hard-wired in transformers)
    out = _standard(c, tie=False)
    out.update(attention_bias=True, attention_out_bias=False)
    return {**out, **_window(c, out["num_hidden_layers"], gate="use_sliding_window", first_full="max_window_layers")}


def _qwen2_moe(c: Fields) -> dict:  # Qwen1.5/2-MoE: qkv bias; experts + one shared expert behind a sigmoid gate
    out = _standard(c, tie=False)
    out.update(attention_bias=c.flag("qkv_bias", True), attention_out_bias=False)
    layers = out["num_hidden_layers"]
    shared = c.int("shared_expert_intermediate_size", default=5632)  # Qwen2MoeConfig's default
    moe = _moe(c, "num_experts", "moe_intermediate_size", dense=_sparse_steps(c, layers), defaults=(60, 4, 1408),
               **({"num_shared_experts": 1, "shared_expert_intermediate_size": shared,
                   "shared_expert_gate": True} if shared else {}))
    return {**out, **moe, **_window(c, layers, gate="use_sliding_window", first_full="max_window_layers")}


def _qwen3(c: Fields) -> dict:  # Qwen3: explicit head_dim, RMSNorm(head_dim) on q and k
    out = {**_standard(c, tie=False), "qk_norm": "head"}
    return {**out, **_window(c, out["num_hidden_layers"], gate="use_sliding_window", first_full="max_window_layers")}


def _qwen3_moe(c: Fields) -> dict:  # Qwen3-MoE: Qwen3 attention, routed experts only
    out = _qwen3(c)
    return {**out, **_moe(c, "num_experts", "moe_intermediate_size", dense=_sparse_steps(c, out["num_hidden_layers"]),
                          defaults=(128, 8, 768))}  # Qwen3MoeConfig


def _gemma(c: Fields) -> dict:  # Gemma: GeGLU, head_dim 256, tied head; "gelu" in configs means tanh GELU
    out = _standard(c, tie=True, act="gelu_pytorch_tanh")
    act = c.get("hidden_activation", "hidden_act", default="gelu_pytorch_tanh")
    return {**out, "hidden_act": "gelu_pytorch_tanh" if act == "gelu" else str(act)}


def _gemma2(c: Fields) -> dict:  # Gemma 2: 4 norms per block, every other layer slides
    out = _gemma(c)
    return {**out, "norms_per_layer": 4, **_window(c, out["num_hidden_layers"], every=2, default=4096)}


def _gemma3_text(c: Fields) -> dict:  # Gemma 3: Gemma 2 + q/k RMSNorm(head_dim); 5 local : 1 global
    out = _gemma(c)
    every = c.int("sliding_window_pattern", default=6, minimum=1)
    return {**out, "norms_per_layer": 4, "qk_norm": "head", **_window(c, out["num_hidden_layers"], every=every, default=4096)}


def _phi(c: Fields) -> dict:  # Phi-1/1.5/2: parallel block with one LayerNorm, biases everywhere, biased lm_head
    # partial_rotary_factor adds no parameters
    out = _standard(c, tie=False, norm="layernorm", mlp="plain", act="gelu_new", bias=True, mlp_bias=True)
    return {**out, "norm_bias": True, "norms_per_layer": 1, "parallel_attn": True, "lm_head_bias": True,
            "qk_norm": "head" if c.flag("qk_layernorm", False) else "none"}


def _phi3(c: Fields) -> dict:  # Phi-3: Llama shapes with fused qkv/gate_up; sliding window on all layers
    out = _standard(c, tie=False)
    out.update(attention_bias=False, attention_out_bias=False, mlp_bias=False)
    return {**out, **_window(c, out["num_hidden_layers"])}


def _starcoder2(c: Fields) -> dict:  # StarCoder2: LayerNorm, plain GELU MLP, use_bias on every linear
    bias = c.flag("use_bias", True)  # norm_type / mlp_type keys: transformers always builds LayerNorm, plain MLP
    out = _standard(c, tie=True, norm="layernorm", mlp="plain", act="gelu_pytorch_tanh", bias=bias, mlp_bias=bias)
    return {**out, "norm_bias": True, **_window(c, out["num_hidden_layers"])}


def _olmo(c: Fields) -> dict:  # OLMo 1: LayerNorm without weight or bias
    return {**_standard(c, tie=False, norm="layernorm"), "norm_affine": False}


def _olmo2(c: Fields) -> dict:  # OLMo 2: post-norms (2 per block) and RMSNorm over all q / all k heads
    return {**_standard(c, tie=False), "qk_norm": "full"}


def _olmoe(c: Fields) -> dict:  # OLMoE: OLMo 2-style full q/k norms, 64 experts of intermediate_size
    return {**_standard(c, tie=False), "qk_norm": "full", **_moe(c, "num_experts", None, defaults=(64, 8, None))}


def _granite(c: Fields) -> dict:  # Granite 3: Llama + scalar multipliers (no parameters)
    # embedding_multiplier, residual_multiplier, attention_multiplier, logits_scaling: scalars, no parameters
    return _standard(c, tie=False)


def _granitemoe(c: Fields) -> dict:  # Granite MoE: fused experts, bias-free router
    return {**_granite(c), **_moe(c, "num_local_experts", None, defaults=(8, 2, None))}  # GraniteMoeConfig


def _cohere(c: Fields) -> dict:  # Command R: parallel block, one bias-free LayerNorm, per-head q/k norms
    out = _standard(c, tie=True, norm="layernorm")  # logit_scale: a scalar, no parameters
    return {**out, "norms_per_layer": 1, "parallel_attn": True,
            "qk_norm": "full" if c.flag("use_qk_norm", False) else "none"}


def _cohere2(c: Fields) -> dict:  # Command R7B: Cohere + 3 sliding : 1 global layers
    out = _cohere(c)
    every = c.int("sliding_window_pattern", default=4, minimum=1)
    return {**out, **_window(c, out["num_hidden_layers"], every=every, default=4096)}


def _deepseek(c: Fields) -> dict:
    """DeepSeek-V2/V3: Multi-head Latent Attention (V2-Lite: q_lora_rank null, no q compression);
    routed + shared experts after first_k_dense_replace dense layers.

    V3's e_score_correction_bias is an nn.Buffer in transformers, not a Parameter, so router_bias
    stays false to match sum(p.numel() for p in model.parameters()) (the checkpoint stores it:
    n_routed_experts more values per MoE layer). num_nextn_predict_layers (the multi-token
    prediction module) is not built by transformers, so it is not counted.
    """
    out = _standard(c, tie=False)
    out.pop("head_dim")
    layers = out["num_hidden_layers"]
    first, freq = c.int("first_k_dense_replace", default=0, minimum=0), c.int("moe_layer_freq", default=1, minimum=1)
    dense = sum(1 for i in range(layers) if i < first or i % freq)  # DeepSeek's layer rule
    mla = {"q_lora_rank": c.int("q_lora_rank") if c.get("q_lora_rank") else None,
           "kv_lora_rank": c.int("kv_lora_rank"), "qk_nope_head_dim": c.int("qk_nope_head_dim"),
           "qk_rope_head_dim": c.int("qk_rope_head_dim"), "v_head_dim": c.int("v_head_dim")}
    moe = _moe(c, "n_routed_experts", "moe_intermediate_size", dense=dense,
               num_shared_experts=c.int("n_shared_experts", default=0), router_bias=False)
    return {**out, **mla, **moe}


def _mpt(c: Fields) -> dict:  # MPT: ALiBi, fused Wqkv, no biases (no_bias), tied head
    h, heads = c.int("d_model", "hidden_size"), c.int("n_heads", "num_attention_heads")
    attn = c.get("attn_config", default={})
    bias = not c.flag("no_bias", True)
    if not isinstance(attn, dict) or not isinstance(attn.get("alibi", False), bool):
        raise SpecError(f"{c.where}: attn_config must be a mapping whose alibi is true or false, got {attn!r}")
    alibi = attn.get("alibi", False)
    return {"hidden_size": h, "num_hidden_layers": c.int("n_layers", "num_hidden_layers"),
            "num_attention_heads": heads, "num_key_value_heads": heads, "vocab_size": c.int("vocab_size"),
            "intermediate_size": c.int("expansion_ratio", default=4) * h,
            "max_position_embeddings": c.int("max_seq_len", "max_position_embeddings"),
            "mlp_type": "plain", "hidden_act": "gelu", "norm_type": "layernorm", "norm_bias": bias,
            "position_embedding": "alibi" if alibi or not c.flag("learned_pos_emb", True) else "learned",
            "tie_word_embeddings": True, "attention_bias": bias, "attention_out_bias": bias,
            "mlp_bias": bias, "dropout": _dropout(c)}


def _stablelm(c: Fields) -> dict:  # StableLM 2: LayerNorm with bias, optional qkv bias, partial rotary
    out = _standard(c, tie=False, norm="layernorm")
    out.update(attention_bias=c.flag("use_qkv_bias", False), attention_out_bias=False)
    parallel = c.flag("use_parallel_residual", False)
    out.update(norm_bias=True, norms_per_layer=1 if parallel else 2, parallel_attn=parallel)
    if c.flag("qk_layernorm", False):  # one LayerNorm(head_dim, bias=False) per q and per kv head
        out.update(qk_norm="full", qk_norm_bias=False)
    return out


def _smollm3(c: Fields) -> dict:  # SmolLM3: Llama with NoPE layers (no parameters) and a tied head
    # no_rope_layers / no_rope_layer_interval only switch rotary off per layer: no parameters
    out = _standard(c, tie=True)
    return {**out, **_window(c, out["num_hidden_layers"], gate="use_sliding_window", first_full="max_window_layers")}


def _ernie4_5(c: Fields) -> dict:  # ERNIE 4.5 dense: Llama with use_bias on every linear, tied head
    bias = c.flag("use_bias", False)
    return _standard(c, tie=True, bias=bias, mlp_bias=bias)


def _internlm2(c: Fields) -> dict:  # InternLM2 (remote code): fused wqkv and wo biased by `bias`
    bias = c.flag("bias", False)
    return _standard(c, tie=False, bias=bias, mlp_bias=False)


MAPPERS = {
    "gpt2": _gpt2, "gpt_bigcode": _gpt_bigcode, "gpt_neox": _gpt_neox, "gptj": _gptj, "opt": _opt,
    "bloom": _bloom, "falcon": _falcon,
    "llama": _llama, "mistral": _mistral, "mixtral": _mixtral,
    "qwen2": _qwen2, "qwen2_moe": _qwen2_moe, "qwen3": _qwen3, "qwen3_moe": _qwen3_moe,
    "gemma": _gemma, "gemma2": _gemma2, "gemma3_text": _gemma3_text, "phi": _phi, "phi3": _phi3,
    "starcoder2": _starcoder2, "olmo": _olmo, "olmo2": _olmo2, "olmoe": _olmoe,
    "granite": _granite, "granitemoe": _granitemoe,
    "cohere": _cohere, "cohere2": _cohere2, "deepseek_v2": _deepseek, "deepseek_v3": _deepseek,
    "mpt": _mpt, "stablelm": _stablelm, "smollm3": _smollm3, "ernie4_5": _ernie4_5, "internlm2": _internlm2,
}


def map_generic(c: Fields) -> dict:
    """Best effort for an unknown model_type: the standard Llama-style field names."""
    h = c.int("hidden_size", "n_embd", "d_model")
    heads = c.int("num_attention_heads", "n_head", "n_heads")
    inner = c.int("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size", default=4 * h)
    out = {"hidden_size": h, "num_hidden_layers": c.int("num_hidden_layers", "n_layer", "n_layers"),
           "num_attention_heads": heads, "num_key_value_heads": c.int("num_key_value_heads", default=heads),
           "head_dim": _head_dim(c, h, heads), "vocab_size": c.int("vocab_size"), "intermediate_size": inner,
           "max_position_embeddings": c.int("max_position_embeddings", "n_positions", "max_seq_len", default=2048),
           "mlp_type": "gated", "hidden_act": str(c.get("hidden_act", "activation_function", default="silu")),
           "norm_type": "rmsnorm", "position_embedding": "rotary",
           "tie_word_embeddings": c.flag("tie_word_embeddings", False),
           "attention_bias": c.flag("attention_bias", False), "attention_out_bias": c.flag("attention_bias", False),
           "mlp_bias": c.flag("mlp_bias", False), "dropout": _dropout(c)}
    return {**out, **_window(c, out["num_hidden_layers"])}
