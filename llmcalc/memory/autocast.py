"""Autocast over fp32 frozen weights: the 16-bit weight copies its matmuls keep, and the fp32 residual stream.

torch.autocast casts an fp32 weight to bf16 for each matmul, and when the matmul's input needs a gradient
(LoRA adapters upstream) autograd keeps that copy for backward (grad_input = grad_output @ W16). Autocast
caches the cast only for leaf tensors that require grad, so a frozen weight is cast and kept once per call:
an LM head run in LitGPT's 128-token chunks keeps one copy per chunk. The fp32 embedding output makes the
residual stream, and so each checkpointed layer input, fp32.

Two setups run this way: LoRA over an fp32 base with mixed precision (LitGPT's bf16-mixed; settings.
autocast_base) and PEFT's prepare_model_for_kbit_training (Framework.kbit_fp32), which leaves the head as
the one fp32 linear beside the 4-bit ones. Measured on H100: LitGPT 0.5.13 bf16-mixed LoRA on Llama-2-7B,
PEFT 0.21 QLoRA on Llama-3.2-1B (tests/data/gpu_frameworks.json).
"""

from __future__ import annotations

from ..dtypes import DTYPE_BYTES
from ..spec import ModelSpec
from .loss import head_pieces
from .placement import Stage, layer_params
from .settings import MemorySettings


def fp32_frozen(s: MemorySettings) -> str | None:
    """Which frozen linears are fp32 under autocast: "all", "head" (PEFT's k-bit preparation) or None."""
    if s.autocast_base:
        return "all"
    if s.mode == "train" and s.finetune == "qlora" and s.fw.kbit_fp32 and s.compute_dtype != "fp32":
        return "head"
    return None


def stream_bytes(s: MemorySettings) -> float:
    """Bytes per element of the residual stream: fp32 when the embedding is fp32 under autocast."""
    return 4.0 if fp32_frozen(s) else float(DTYPE_BYTES[s.compute_dtype])


def weight_copies(m: ModelSpec, s: MemorySettings, st: Stage) -> tuple[float, float, str]:
    """(kept until backward, rebuilt one layer at a time, note) of autocast's 16-bit weight copies, this GPU.

    A layer rebuilt by full recomputation casts its weights again in backward: one layer's copies at a time."""
    which = fp32_frozen(s)
    if which is None:
        return 0.0, 0.0, ""
    e, par = DTYPE_BYTES[s.compute_dtype], s.parallel
    kinds = [(layer_params(m, par, moe).quantizable * e, n) for moe, n in ((False, st.dense), (True, st.moe)) if n]
    layers = sum(b * n for b, n in kinds) if which == "all" else 0.0
    rebuilt = 0.0
    if s.recompute == "full" and layers:
        layers, rebuilt = 0.0, max(b for b, _ in kinds)
    calls = head_pieces(s) if st.last else 0  # one cast per LM-head matmul (LitGPT: per 128 tokens)
    head = calls * -(-m.vocab_size // par.tp) * m.hidden_size * e
    parts = ([f"{st.dense + st.moe} layers' linears"] if layers else []) + \
        ([f"the LM head x {calls} calls" if calls > 1 else "the LM head"] if head else [])
    note = (f"{s.compute_dtype} casts of fp32 frozen weights kept by autocast's matmuls: {' + '.join(parts)}"
            if parts else "")
    return layers + head, rebuilt, note
