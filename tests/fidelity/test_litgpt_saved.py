"""What LitGPT's own LoRA model keeps for backward, per token and layer, against `memory --framework litgpt`.

Optional, and skipped unless LitGPT is installed beside the fidelity requirements. LitGPT 0.5.13 pins a
huggingface-hub older than transformers 5 needs, so install it without its dependencies:

    pip install --no-deps litgpt==0.5.13 && pip install lightning==2.6.6 jsonargparse==4.41.0

Each saved tensor is seen once through saved_tensors_hooks (parameters and buffers left out); the
per-token figure is the slope between two sequence lengths, so per-layer constants (index tensors,
norm weights cast to fp32) drop out. Dropout 0: CPU keeps its mask in the input dtype, where CUDA keeps
one byte (the H100 runs in tests/test_framework_peaks.py cover dropout).
"""

from __future__ import annotations

import pytest

from llmcalc.memory import MemorySettings, memory_breakdown
from llmcalc.presets import load_model

torch = pytest.importorskip("torch")
lora = pytest.importorskip("litgpt.lora")

pytestmark = pytest.mark.fidelity


def _saved_in_layer(name: str, tokens: int) -> int:
    """Bytes the second block of a two-block LitGPT model saves for backward (the first block's input
    needs no gradient, so its norm keeps less)."""
    cfg = lora.Config.from_name(name, n_layer=2, lora_r=32, lora_alpha=16, lora_dropout=0.0, lora_query=True,
                                lora_key=False, lora_value=True, lora_projection=False, lora_mlp=False,
                                lora_head=False)
    torch.manual_seed(0)
    model = lora.GPT(cfg).to(torch.bfloat16)
    lora.mark_only_lora_as_trainable(model)
    model.max_seq_length = tokens
    skip = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen: dict[int, int] = {}
    inside = [False]
    model.transformer.h[1].register_forward_pre_hook(lambda *_: inside.__setitem__(0, True))
    model.transformer.h[1].register_forward_hook(lambda *_: inside.__setitem__(0, False))

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if inside[0] and key not in skip:
            seen[key] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, 1000, (1, tokens))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, lm_head_chunk_size=128)
    return sum(seen.values())


@pytest.mark.parametrize("litgpt_name, preset", [("Llama-3.2-1B", "llama-3.2-1b"), ("Llama-2-7b-hf", "llama-2-7b")])
def test_litgpt_layer_saves_what_memory_says(litgpt_name, preset):
    """Llama-3.2-1B (GQA: k and v expanded to every head) and Llama-2-7B (MHA: v a view of the fused
    qkv output), LoRA r=32 on q and v: measured 91,400 and 172,808 bytes per token with LitGPT 0.5.13."""
    per_token = (_saved_in_layer(litgpt_name, 256) - _saved_in_layer(litgpt_name, 128)) / 128
    s = MemorySettings(seq=256, finetune="lora", lora_rank=32, framework="litgpt", lora_dropout=0.0)
    predicted = memory_breakdown(load_model(preset), None, s).value("activations/per_layer") / 256
    assert predicted == pytest.approx(per_token, rel=0.005)
