"""The Mini-Sequence Transformer's closed form for the longest sequence (Luo et al. 2024, seed 001).

S_max = (M - W) / (I/M + L·A): W what does not grow with the sequence, I the per-token
intermediates that chunking divides (MLP and LM head), A the other per-token activations of one
layer, L the layers held at once; checkpointing (--recompute full) replaces L by sqrt(L), as the
seed writes it. The pieces come from the same tensors as memory_breakdown.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..dtypes import DTYPE_BYTES
from ..spec import ModelSpec
from .activations import layer_tensors, local
from .per_gpu import memory_breakdown
from .placement import stages, trainable
from .recompute import DEFAULT_RECOMPUTE_MODULES
from .saved import offloaded_layers, sorted_out
from .settings import MemorySettings


@dataclass(frozen=True)
class MiniSeqPieces:
    """The per-token pieces of the closed form, bytes per GPU.

    w_mem: what does not grow with the sequence: weights + gradients + optimizer + reserve.
    i_mlp: per token, one layer's MLP intermediates (the F-wide tensors: what M chunks);
    i_head: per token, the LM head's loss buffers (3 x V in the loss dtype; / TP, / CP);
    i_mem = i_mlp + i_head, the seed's I_mem.
    a_mem: per token per layer, the other saved activations (at the given seq: eager's s x s scores
      make it grow with seq; flash/sdpa keep it constant), the seed's A_mem.
    layers: layers whose activations are held at once (layers on the stage x micro-batches in flight).

    memory_breakdown's total ≈ w_mem + S·(layers·(a_mem + i_mlp) + i_head) with M = 1, and
    w_mem + S·(layers·a_mem + i_mem/M) with M mini-sequences. Embedding, final-norm and transient
    terms are left out.
    """

    w_mem: float
    i_mlp: float
    i_head: float
    a_mem: float
    layers: int

    @property
    def i_mem(self) -> float:
        return self.i_mlp + self.i_head


def mini_seq_pieces(m: ModelSpec, s: MemorySettings) -> MiniSeqPieces:
    """W_mem, I_mem and A_mem for ``s`` (training), from the same tensors as memory_breakdown."""
    b = memory_breakdown(m, None, dataclasses.replace(s, mode="train", mini_seq=1, recompute="none",
                                                      recompute_modules=DEFAULT_RECOMPUTE_MODULES))
    par = s.parallel
    st = stages(m, par.pp)[0]
    loc = local(m, s.attention_impl, s.batch * math.ceil(s.seq / par.cp), s.seq, par.tp, par.sp, etp=par.expert_tp)
    items = layer_tensors(m, s.attention_impl, DTYPE_BYTES[s.compute_dtype], m.is_moe and m.moe_layers >= m.dense_layers)
    kind = sorted_out(items, 1, trainable(m, s.finetune, s.lora_targets))
    sizes = loc.sizes(kind.sizes)
    inner = sum(sizes[i] for i in kind.inner)
    layer = sum(sizes[i] for i, _ in kind.groups)
    tokens = s.batch * s.seq
    w_mem = b.value("weights") + b.value("gradients") + b.value("optimizer") + b.value("reserve")
    i_head = 3 * DTYPE_BYTES[s.loss_dtype] * -(-m.vocab_size // par.tp) / par.cp
    held = offloaded_layers(s, st)[1]  # all of them, or those Megatron's activation offloading leaves on the GPU
    return MiniSeqPieces(w_mem=w_mem, i_mlp=inner / tokens, i_head=i_head, a_mem=(layer - inner) / tokens,
                         layers=held * max(1, par.pp))


def closed_form_max_seq(p: MiniSeqPieces, usable: float, mini_seq: int, recompute: str) -> tuple[int, str]:
    """(tokens, the formula used): without chunking every layer keeps its MLP intermediates,
    (M - W) / (L·(A + I_mlp) + I_head); with M chunks only one chunk of one layer's is alive,
    (M - W) / (I/M + L·A); full recomputation puts sqrt(L) for L."""
    layers = math.sqrt(p.layers) if recompute == "full" else p.layers
    per_token = (layers * (p.a_mem + p.i_mlp) + p.i_head if mini_seq == 1
                 else p.i_mem / mini_seq + layers * p.a_mem)
    closed = (usable - p.w_mem) / per_token if usable > p.w_mem else 0
    form = "L·(A + I_mlp) + I_head" if mini_seq == 1 else f"I/{mini_seq} + L·A"
    return int(closed), form.replace("L·", "sqrt(L)·") if recompute == "full" else form
