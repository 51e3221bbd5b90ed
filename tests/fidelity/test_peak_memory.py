"""The peak of a real training step on CPU against `memory`'s peak_allocated.

Optional (`scripts/fidelity.sh tests/fidelity/test_peak_memory.py`; needs torch, transformers, peft):
tests/fidelity/peak.py runs forward, loss, backward, AdamW step and zero_grad of small Llama-shaped
models and counts live tensor bytes with a dispatch-level tracker. The loop is the `torch` framework's:
outputs held through the step, foreach AdamW. LoRA uses dropout 0 here because CPU dropout keeps its
mask in the input dtype where CUDA keeps one byte (the H100 runs in tests/test_peaks.py cover it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from llmcalc.memory import MemorySettings, memory_breakdown
from llmcalc.presets import load_model

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

sys.path.insert(0, str(Path(__file__).parent))
from peak import Case, measure  # noqa: E402

pytestmark = pytest.mark.fidelity

SMALL = dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=4, vocab_size=8000, max_position_embeddings=4096, tie_word_embeddings=False,
             rms_norm_eps=1e-5)
CASES = [
    Case("full", SMALL, 512),
    Case("full-eager", SMALL, 256, attn="eager"),
    Case("full-ckpt", SMALL, 1024, ckpt=True),
    Case("full-fp32-autocast", SMALL, 512, weights="fp32-autocast"),
    Case("lora-qv", SMALL, 512, lora="qv"),
    Case("lora-all-b2", SMALL, 512, batch=2, lora="all"),
    Case("lora-qv-ckpt", SMALL, 1024, lora="qv", ckpt=True),
]


def _predicted(case: Case, tmp_path) -> dict:
    from transformers import LlamaConfig

    LlamaConfig(**case.config).save_pretrained(tmp_path)
    m = load_model(str(tmp_path / "config.json"))
    kw = dict(seq=case.seq, batch=case.batch, attention_impl=case.attn, framework="torch", dtype="bf16",
              precision="bf16" if case.weights == "bf16" else "mixed-fp32-grads",
              recompute="full" if case.ckpt else "none")
    if case.lora:
        kw.update(finetune="lora", lora_rank=case.rank, lora_dropout=case.dropout,
                  lora_targets=("q", "v") if case.lora == "qv" else ("all",))
    return memory_breakdown(m, None, MemorySettings(**kw)).summary


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_cpu_peak_matches_memory(case, tmp_path):
    measured = measure(case, "cpu")
    predicted = _predicted(case, tmp_path)
    print(json.dumps({**measured, "predicted": predicted["peak_allocated"], "predicted_at": predicted["peak_at"]}))
    assert predicted["peak_allocated"] == pytest.approx(measured["peak"], rel=0.05)
