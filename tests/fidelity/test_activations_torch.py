"""Activation rows against the bytes real Hugging Face modules save for backward.

Optional (needs torch and transformers; `pytest -m fidelity tests/fidelity`): small GPT-2 and
Llama configs run one training forward on CPU under torch.autograd.graph.saved_tensors_hooks;
the unique storages saved (parameters excluded) are compared with memory.py's rows.

Two CPU kernels store things differently from CUDA and are corrected for, by name: dropout keeps
its mask in the input dtype (CUDA's fused kernel: 1-byte bool), and LayerNorm keeps mean/rstd in
the input dtype (CUDA: fp32). SDPA with dropout falls back to the math kernel on CPU, so the SDPA
cases use dropout 0 (on CUDA the flash/efficient kernels regenerate the mask).
"""

from __future__ import annotations

import pytest

from llmcalc.memory import MemorySettings, layer_tensors, memory_breakdown
from llmcalc.spec import ModelSpec

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.fidelity

B, S = 2, 64


def _gpt2(dropout: float, act: str) -> tuple[ModelSpec, object]:
    cfg = transformers.GPT2Config(n_embd=128, n_layer=2, n_head=4, vocab_size=1000, n_positions=256,
                                  activation_function=act, attn_pdrop=dropout, resid_pdrop=dropout,
                                  embd_pdrop=dropout)
    spec = ModelSpec(name="tiny-gpt2", hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                     vocab_size=1000, intermediate_size=512, max_position_embeddings=256, mlp_type="plain",
                     norm_type="layernorm", norm_bias=True, position_embedding="learned", tie_word_embeddings=True,
                     attention_bias=True, attention_out_bias=True, mlp_bias=True, hidden_act=act, dropout=dropout)
    return spec, cfg


def _llama(kv_heads: int) -> tuple[ModelSpec, object]:
    cfg = transformers.LlamaConfig(hidden_size=128, intermediate_size=352, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=kv_heads, vocab_size=1000,
                                   max_position_embeddings=256)
    spec = ModelSpec(name="tiny-llama", hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=kv_heads, vocab_size=1000, intermediate_size=352,
                     max_position_embeddings=256, mlp_type="gated", norm_type="rmsnorm",
                     position_embedding="rotary", tie_word_embeddings=False, attention_bias=False,
                     attention_out_bias=False, mlp_bias=False, hidden_act="silu")
    return spec, cfg


def _mixtral() -> tuple[ModelSpec, object]:
    cfg = transformers.MixtralConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
                                     max_position_embeddings=256, num_local_experts=4, num_experts_per_tok=2)
    spec = ModelSpec(name="tiny-mixtral", hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=1000, intermediate_size=256, max_position_embeddings=256,
                     mlp_type="gated", norm_type="rmsnorm", position_embedding="rotary", tie_word_embeddings=False,
                     attention_bias=False, attention_out_bias=False, mlp_bias=False, hidden_act="silu",
                     num_experts=4, num_experts_per_tok=2)
    return spec, cfg


def measure(model, ids, autocast: bool = False) -> tuple[int, int]:
    """(bytes saved by decoder layer 1, bytes saved in total), unique storages, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}
    layer1: set[int] = set()
    inside = [False]
    blocks = model.transformer.h if hasattr(model, "transformer") else model.model.layers
    hooks = [blocks[1].register_forward_pre_hook(lambda *a: inside.__setitem__(0, True)),
             blocks[1].register_forward_hook(lambda *a: inside.__setitem__(0, False))]

    def pack(t):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in seen:
            seen[ptr] = storage.nbytes()
            if inside[0]:
                layer1.add(ptr)
        return t

    with (torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
          torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)):
        model(input_ids=ids, labels=ids)
    for h in hooks:
        h.remove()
    return sum(seen[p] for p in layer1), sum(seen.values())


def _cpu_correction(spec: ModelSpec, impl: str, e: int) -> float:
    """Bytes per layer that CPU kernels store on top of what CUDA stores (see the module docstring)."""
    tokens = B * S
    extra = 0.0
    if impl == "sdpa" and spec.position_embedding == "learned":
        # GPT-2's fused c_attn: q, k, v are strided views of one [b, s, 3h] output, which the views
        # keep alive (what the rows count); the CPU kernel also stores contiguous copies of q and v
        extra += 2 * e * spec.hidden_size * tokens
    for t in layer_tensors(spec, impl, e, spec.is_moe):
        if t.group == "dropout":  # mask in the input dtype instead of 1 B
            extra += (e - 1) * t.nbytes * tokens * (S if t.per_key else 1)
        if t.what.endswith("mean, rstd (fp32)"):  # LayerNorm statistics in the input dtype
            extra += (2 * e - 8) * tokens
    return extra


CASES = [
    ("gpt2, dropout 0.1, gelu_new, eager", lambda: _gpt2(0.1, "gelu_new"), "eager"),
    ("gpt2, dropout 0.1, gelu, eager", lambda: _gpt2(0.1, "gelu"), "eager"),
    ("gpt2, no dropout, gelu_new, sdpa", lambda: _gpt2(0.0, "gelu_new"), "sdpa"),
    ("llama MHA, eager", lambda: _llama(4), "eager"),
    ("llama GQA, eager", lambda: _llama(2), "eager"),
    ("llama GQA, sdpa", lambda: _llama(2), "sdpa"),
    ("mixtral, 4 experts top-2, sdpa", _mixtral, "sdpa"),
]

MODELS = {"learned": "GPT2LMHeadModel", "dense": "LlamaForCausalLM", "moe": "MixtralForCausalLM"}


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("label,build,impl", CASES, ids=[c[0] for c in CASES])
def test_saved_bytes_match_the_activation_rows(label, build, impl, dtype):
    spec, cfg = build()
    cfg._attn_implementation = impl
    torch.manual_seed(0)
    kind = "learned" if spec.position_embedding == "learned" else "moe" if spec.is_moe else "dense"
    model_cls = getattr(transformers, MODELS[kind])
    model = model_cls(cfg).to(getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype])).train()
    ids = torch.randint(0, spec.vocab_size, (B, S))
    layer, total = measure(model, ids)

    settings = MemorySettings(seq=S, batch=B, dtype=dtype, attention_impl=impl)
    rows = memory_breakdown(spec, None, settings)
    e = 4 if dtype == "fp32" else 2
    expected_layer = rows.value("activations/per_layer") + _cpu_correction(spec, impl, e)
    expected_total = (rows.value("activations") + rows.value("logits/log_probs")
                      + spec.num_hidden_layers * _cpu_correction(spec, impl, e)
                      + (B * S * spec.hidden_size * (e - 1) if spec.dropout else 0)  # embedding dropout mask
                      + (B * S * (2 * e - 8) if spec.norm_type == "layernorm" else 0))  # final LayerNorm's statistics
    err_layer = layer / expected_layer - 1
    err_total = total / expected_total - 1
    print(f"{label} {dtype}: layer measured {layer:,} modelled {expected_layer:,.0f} ({err_layer:+.2%}); "
          f"total measured {total:,} modelled {expected_total:,.0f} ({err_total:+.2%})")
    assert abs(err_layer) < 0.001
    assert abs(err_total) < 0.01


def test_autocast_fp32_weights_saves_more_than_the_16_bit_rows():
    """torch.autocast over fp32 weights (HF Trainer's bf16=True on an fp32 model, the 18 B/param
    accounting) keeps the residual stream and norms in fp32 and a 16-bit copy of the weights and
    of every linear's input: the rows (16-bit activations) undercount it; the gap is recorded."""
    spec, cfg = _llama(2)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).train()
    layer, _ = measure(model, torch.randint(0, spec.vocab_size, (B, S)), autocast=True)
    rows = memory_breakdown(spec, None, MemorySettings(seq=S, batch=B, precision="mixed-fp32-grads"))
    weight_copies = sum(p.numel() for p in model.model.layers[1].parameters() if p.dim() == 2) * 2
    gap = (layer - weight_copies) / rows.value("activations/per_layer") - 1
    print(f"autocast layer: measured {layer:,} (of which bf16 weight copies {weight_copies:,}); "
          f"activation rows {rows.value('activations/per_layer'):,}; gap {gap:+.1%}")
    assert 0 < gap < 0.6
