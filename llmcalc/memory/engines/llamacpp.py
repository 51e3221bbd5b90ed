"""llama.cpp (llama-server / llama-cli): the KV cache of the whole context, allocated at start-up.

Follows llama.cpp b4747 through late-2025 master (src/llama-kv-cache.cpp, llama-context.cpp):
weights in the GGUF file type (``--dtype q4_k_m`` ...: bits per weight over the whole file);
KV = n_ctx x layers x (K + V) in f16 (``--kv-dtype`` for -ctk/-ctv), n_ctx padded to 256 cells,
one unified cache shared by the ``--batch`` slots (n_ctx = batch x seq); the compute buffer is
dominated by the fp32 logits of one 512-token micro-batch (n_ubatch) with flash attention (on by
default on CUDA in newer builds; ``--attention-impl eager`` for -fa off); the output buffer holds
one vocabulary row per slot.
"""

from __future__ import annotations

from ...dtypes import DTYPE_BYTES
from ...spec import ModelSpec
from ..inference import engine_rows, growing_stage
from ..placement import Stage
from ..settings import MemorySettings
from ..stage import StageMemory, add_reserve, whole_bytes
from .common import CUDA_CONTEXT, Device

N_UBATCH = 512  # llama.cpp's default physical micro-batch (-ub); the prefill chunk (--max-num-batched-tokens) overrides it
CELLS = 256  # n_ctx is padded to a multiple of 256 cells (GGML_PAD(n_ctx, 256))


def stage(m: ModelSpec, s: MemorySettings, st: Stage, dev: Device) -> StageMemory:
    r = engine_rows(m, s, st, CUDA_CONTEXT, "CUDA context (measured on an H100)")
    n_ctx = -(-s.batch * s.seq // CELLS) * CELLS
    ubatch = min(s.prefill_chunk or N_UBATCH, n_ctx)
    # The compute buffer llama.cpp reserves for its worst graph: f32 logits and one f32 hidden row per
    # token of a micro-batch (pythia-1.4B: 98.25 + 4 = 102.25 MiB logged; Qwen3-1.7B 296.75 + 4 =
    # 300.75), plus without flash attention one layer's f32 scores n_ctx x n_ubatch x heads (Phi-3-mini,
    # n_ctx 4096, n_ubatch 256: 159 MiB against 150 logged).
    compute = ubatch * (m.vocab_size + m.hidden_size) * 4
    if s.attention_impl == "eager":
        compute += n_ctx * ubatch * m.num_attention_heads * 4
    r.add("activations", whole_bytes(compute), f"compute buffer: f32 logits of a {ubatch}-token micro-batch (n_ubatch)"
          + ("" if s.attention_impl != "eager" else " + one layer's f32 scores (no flash attention)"),
          how=("{} tokens x ({} vocab + {} hidden) x 4 B" + (" + {} cells x {} tokens x {} heads x 4 B" if s.attention_impl
               == "eager" else ""), ubatch, m.vocab_size, m.hidden_size, n_ctx, ubatch, m.num_attention_heads))
    r.add("logits", whole_bytes(s.batch * m.vocab_size * 4), f"output buffer: one f32 vocabulary row per slot ({s.batch})",
          how=("{} slots x {} vocab x 4 B", s.batch, m.vocab_size))
    add_reserve(r, s.reserve, "--reserve")
    notes = [f"llama.cpp {s.engine_version}: n_ctx {n_ctx:,} cells ({s.batch} slot(s) x {s.seq:,}, padded to {CELLS}) "
             f"allocated at start-up; KV in {s.kv_dtype} ({DTYPE_BYTES[s.kv_dtype]:g} B)"]
    notes.append("every layer sized for n_ctx (sliding windows not credited)")
    return growing_stage(r, m, s, st, dev.total * s.gpu_util, n_ctx // s.batch, notes, windows=False)
