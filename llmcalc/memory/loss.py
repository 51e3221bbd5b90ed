"""The loss's buffers: what the LM head and cross-entropy hold at the peak of a training step.

N = b · s/cp · V/tp logits (vocab-parallel under TP, s/M tokens at a time with Mini-Sequence),
e = the compute dtype's bytes, lb = the loss dtype's (fp32 when the logits are upcast).

- full (HF ForCausalLMLoss, Megatron): the LM head writes N·e logits; the upcast copy (N·lb) lives
  while log-softmax runs; log-softmax saves its output (N·lb). Backward starts with two more N·lb
  buffers, the log-probs' gradient and the logits' (measured: the peak op is
  _log_softmax_backward_data; tests/fidelity/peak.py).
- full, in place (Megatron-Core's vocab-parallel cross-entropy, cross_entropy.py, core 0.9 to 0.15): the
  forward upcasts the N·e logits to N·lb and turns that copy into the softmax in place, the one tensor it
  saves; backward writes the gradient into the softmax and autograd casts it back to the logits' dtype
  (N·e). So N·(e + lb) at both moments, where log-softmax reaches N·3·lb at the start of backward.
- chunked (LitGPT chunked_cross_entropy, torchtune CEWithChunkedOutputLoss): the same tensors, but
  the upcast and the backward buffers exist for one of C chunks at a time; the log-probs of every
  chunk stay saved.
- te (Transformer Engine's parallel_cross_entropy, TE 2.x, which Megatron-Core calls with
  cross_entropy_fusion_impl "te" and Megatron-Bridge's performance recipes set): Triton kernels compute
  the loss in fp32 registers and write the gradient into the N·e logits in place, the one tensor saved;
  backward scales it in place (transformer_engine/pytorch/cross_entropy.py, triton/cross_entropy.py at
  v2.8). So N·e at both moments.
- fused (Liger-Kernel FusedLinearCrossEntropy, Unsloth, torchtune's linear CE): no b·s·V tensor is
  kept; the forward computes the hidden state's gradient (b·s·h·e, saved) chunk by chunk, each chunk's
  logits (about b·s·h elements: Liger sizes chunks to BT·h/V tokens) in e and fp32.
- compiled (torch.compile, measured on H200 with torch 2.11 on 8192 x 128256 logits, tests/data/
  gpu_frameworks.json): inductor fuses the upcast, log-softmax and its backward; the loss keeps only
  its e-byte input and writes the gradient in e (one chunk at a time when chunked). Where the model
  upcasts before a compiled loss (torchtune's unchunked output), the fp32 copy is the kept input and
  the gradient is fp32: 8 B per logit at the start of backward.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ..dtypes import DTYPE_BYTES
from ..spec import ModelSpec
from .frameworks import DEFAULT_LOSS_CHUNKS
from .settings import MemorySettings


# HBM bytes per logit each implementation moves, forward and backward (plan's step time): full, Megatron-Core's
# vocab-parallel loss (cross_entropy.py, core 0.8-0.15), upcasts (2 + 4), takes the max (4), subtracts it,
# exponentiates and divides in place (8 each), sums (4), and in backward scales in place (8) and casts to bf16
# (4 + 2): 52; chunked makes the same passes a piece at a time; te, Transformer Engine's Triton loss, reads the
# 16-bit logits twice and writes the gradient over them (6), then scales it in place (4): 10; fused, as
# flash-attn's Triton loss (llm-foundry's default) moves them: one read forward, a read and the gradient's write
# back: 6 (Liger's fused linear loss makes about as many passes over each chunk's logits).
LOSS_BYTES = {"full": 52, "chunked": 52, "te": 10, "fused": 6}


class LossBuffers(NamedTuple):  # one per point of a sweep
    """Bytes the loss holds: at its forward peak and at the start of backward, with each moment's rows."""

    forward: float
    backward: float
    kept: float  # logits the training loop still holds at the optimizer step
    fwd_rows: tuple[tuple[str, float, str], ...]
    bwd_rows: tuple[tuple[str, float, str], ...]
    note: str

    @property
    def peak(self) -> float:
        return max(self.forward, self.backward)

    def at_backward(self, extra: float = 0.0) -> bool:
        """Whether the start of backward, with ``extra`` bytes beside the loss's, outweighs its forward peak."""
        return self.backward + extra >= self.forward

    def rows(self, extra: float = 0.0) -> tuple[tuple[str, float, str], ...]:
        """The rows of the larger moment (at_backward)."""
        return self.bwd_rows if self.at_backward(extra) else self.fwd_rows


def _phase(forward: float, backward: float, kept: float, fwd_rows, bwd_rows, note: str) -> LossBuffers:
    return LossBuffers(forward, backward, kept, tuple((n, v, w) for n, v, w in fwd_rows if v),
                       tuple((n, v, w) for n, v, w in bwd_rows if v), note)


def loss_buffers(m: ModelSpec, s: MemorySettings) -> LossBuffers:
    """The loss's buffers on the last pipeline stage's GPU (module docstring)."""
    par, e, lb = s.parallel, DTYPE_BYTES[s.compute_dtype], DTYPE_BYTES[s.loss_dtype]
    tokens = s.batch * math.ceil(-(-s.seq // s.mini_seq) / par.cp)
    n = tokens * -(-m.vocab_size // par.tp)
    upcast = lb > e
    if s.loss == "fused" and s.mini_seq == 1:
        grad_in = tokens * m.hidden_size * e
        chunk = tokens * m.hidden_size * (e + 4)  # one chunk's logits in e and fp32, about b·s·h values
        rows = [("logits/hidden_grad", grad_in, "fused linear cross-entropy: the hidden state's gradient, "
                 "computed in forward"), ("logits/chunk", chunk, "one token chunk's logits, in the compute dtype and fp32")]
        return _phase(grad_in + chunk, grad_in, 0.0, rows, rows[:1], "fused linear cross-entropy: no b·s·V logits kept")
    if s.loss == "te":
        row = ("logits/output", n * e, f"LM head output in {s.compute_dtype}; TE's fused cross-entropy writes the "
               "gradient into it")
        return _phase(n * e, n * e, 0.0, [row], [row], "Transformer Engine's fused cross-entropy, gradient in place")
    chunks = 1 if s.mini_seq > 1 else _chunks(s)
    if s.compile and s.mini_seq == 1:
        return _compiled(s, n, e, lb if upcast and s.fw.upcast_in_model and chunks == 1 else e, chunks)
    mini = f"LM head and loss over s/{s.mini_seq} tokens at a time (Mini-Sequence)" if s.mini_seq > 1 else None
    if s.loss == "full" and s.fw.inplace_loss:
        return _in_place(s, n, e, lb, mini)
    kept = n * e if s.fw.keeps_logits and s.mini_seq == 1 else 0.0
    out_row = ("logits/output", n * e, f"LM head output in {s.compute_dtype}")
    saved = ("logits/log_probs", n * lb, f"log-softmax in {s.loss_dtype}, kept for backward")
    copy = ("logits/upcast", n * lb / chunks if upcast else 0.0,
            f"{s.loss_dtype} copy of the logits while log-softmax runs" + (f", one of {chunks} chunks" if chunks > 1 else ""))
    grad = ("logits/grad", 2 * n * lb / chunks,
            "gradients of the log-probs and of the logits" + (f", one of {chunks} chunks at a time" if chunks > 1 else ""))
    forward = n * e + copy[1] + n * lb
    backward = kept + n * lb + grad[1]
    kept_row = ("logits/output", kept, f"LM head output in {s.compute_dtype}, held by the training loop")
    how = {"full": "full cross-entropy over b·s·V logits", "chunked": f"chunked cross-entropy in {chunks} pieces",
           "fused": "fused cross-entropy"}[s.loss]
    return _phase(forward, backward, kept, [out_row, copy, saved], [kept_row, saved, grad], mini or how)


def _compiled(s: MemorySettings, n: float, e: float, lb: float, chunks: int) -> LossBuffers:
    """The loss under torch.compile (module docstring): its input kept in lb bytes (the logits, or the
    model's fp32 upcast of them), the gradient in lb for one of ``chunks`` pieces at a time."""
    dtype = s.compute_dtype if lb == e else s.loss_dtype
    saved = ("logits/saved", n * lb, f"the compiled loss's input in {dtype}, kept for backward")
    upcast = ("logits/output", n * e if lb > e else 0.0, f"LM head output in {s.compute_dtype} while it is upcast")
    grad = ("logits/grad", n * lb / chunks, f"the logits' gradient in {dtype}" +
            (f", one of {chunks} chunks at a time" if chunks > 1 else ""))
    how = "compiled " + (f"chunked cross-entropy in {chunks} pieces" if chunks > 1 else "cross-entropy") + \
        ", upcast and log-softmax fused"
    return _phase(n * lb + upcast[1], n * lb + grad[1], n * e if s.fw.keeps_logits else 0.0,
                  [upcast, saved], [saved, grad], how)


def _in_place(s: MemorySettings, n: float, e: float, lb: float, mini: str | None) -> LossBuffers:
    """Megatron's vocab-parallel cross-entropy (module docstring): the upcast softmax is saved and becomes the
    gradient; the logits live through the forward, the gradient's cast back through the backward."""
    upcast = lb > e
    out = ("logits/output", n * e, f"LM head output in {s.compute_dtype}, while the loss upcasts it")
    softmax = ("logits/softmax", n * lb, f"softmax in {s.loss_dtype}, saved; backward writes the gradient into it")
    cast = ("logits/grad", n * e if upcast else 0.0, f"the logits' gradient cast back to {s.compute_dtype}")
    return _phase(out[1] * upcast + n * lb, n * lb + cast[1], 0.0, [out, softmax] if upcast else [softmax],
                  [softmax, cast], mini or "vocab-parallel cross-entropy, gradient computed in place")


def head_pieces(s: MemorySettings) -> int:
    """How many pieces the LM head and loss run in per micro-batch: Mini-Sequence's M, else the loss's chunks."""
    return s.mini_seq if s.mini_seq > 1 else _chunks(s)


def _chunks(s: MemorySettings) -> int:
    if s.loss != "chunked":
        return 1
    fw = s.fw if s.fw.loss == "chunked" else None  # --loss chunked under a framework without one: 8 chunks
    if fw and fw.loss_chunk_tokens:
        return max(1, -(-s.seq // fw.loss_chunk_tokens))
    return min(fw.loss_chunks if fw else DEFAULT_LOSS_CHUNKS, s.seq)
