"""Tensor parallelism's collectives in one micro-batch (steptime's tp term): what each layer moves and what of it
stays exposed.

Each layer has a pair of TP-split linears in its attention (q/k/v column-parallel, the output projection
row-parallel) and one in its MLP (gate and up, then down). A pair's forward all-reduces the row-parallel output
(with sequence parallelism a reduce-scatter there and an all-gather of the column-parallel input, the same bytes),
exposed. Backward, the column-parallel linear's input gradient is all-reduced (reduce-scatter with SP):

- sync (Megatron-LM before 2021-09, the Megatron-DeepSpeed forks MT-NLG and BLOOM ran): after the GEMMs, exposed;
- async (Megatron-LM's --async-tensor-model-parallel-allreduce from 2021-09, on by default since 2022;
  Megatron-Core 0.15 tensor_parallel/layers.py and Transformer Engine's linears): issued before the weight
  gradient's GEMM and hidden under it. With SP (Megatron-LM from 2022-04, always so) the row-parallel linear's
  output gradient is first all-gathered (exposed: both its GEMMs wait for it) and the column-parallel input, kept
  sharded, is re-gathered under the input gradient's GEMM (Korthikanti et al. 2022 Table 4: SP saves 0.5 ms of a 22B
  layer's 7.7 ms forward but only 0.1 ms of its 11.9 ms backward).

Overlapped with the GEMMs by Transformer Engine's userbuffers (Layout.tp_overlap), TP_OVERLAP_EXPOSED of every
collective stays exposed instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .collectives import link

if TYPE_CHECKING:
    from .steptime import Layout, Links, ModelCost

TP_OVERLAP_EXPOSED = 0.3  # share of TP communication still exposed when overlapped with the GEMMs


def tp_time(c: "ModelCost", links: "Links", lay: "Layout", tokens: float, layers: int, moe: int, routed: int,
            rate: float) -> float:
    """The rank's TP collectives in one micro-batch of ``tokens`` over ``layers`` (``moe`` of them MoE layers,
    ``routed`` of those with EP, whose experts' own collectives are EP's); ``rate``: the GEMMs' FLOP/s, whose
    weight and input gradients hide the async backward collectives.

    A layer's pairs of TP linears: the attention's, a dense MLP's, an MoE layer's shared expert's, each hiding its
    backward under its own column-parallel GEMMs. An MoE layer without EP adds its dispatcher's gather and scatter
    over TP (Megatron-Core's token_dispatcher.py), synchronous both ways. Full recomputation repeats every pair's
    forward; selective recomputation a dense MLP's (mlp), a shared expert's (shared_experts, moe) and the
    dispatcher's (moe)."""
    tp = lay.tp
    bw, lat = link(tp, 1, links)
    half = tokens * c.hidden * 2 * (tp - 1) / tp / bw  # an all-gather's or reduce-scatter's bytes; an all-reduce's: 2x
    one, whole = half + lat, 2 * half + lat  # an all-gather or a reduce-scatter; an all-reduce
    forward = 2 * one if lay.sp else whole  # a pair's forward: all-gather and reduce-scatter with SP, else all-reduce
    dispatched, shared = moe - routed, moe if c.shared else 0
    linears = ((layers, c.attn_in), (layers - moe, c.dense_in), (shared, c.shared_in))  # pairs, their FLOPs a token
    pairs = 2 * layers - moe + shared + dispatched
    forwards = pairs * (2 if lay.recompute == "full" else 1)
    if lay.recompute == "selective":
        forwards += (layers - moe) * c.redo_mlp + moe * c.redo_shared + dispatched * c.redo_moe
    if lay.tp_overlap:  # chunked under the GEMMs (TE userbuffers): what the first chunk waits stays exposed
        return (forwards + pairs) * forward * TP_OVERLAP_EXPOSED
    if lay.sp:  # overlapped whatever tp_async says: Megatron's SP backward has re-gathered its input so since 2022-04
        backward = dispatched * 2 * one
        for n, flops in linears:  # the gather exposed; the re-gather and the scatter under the data and weight GEMMs
            exposed = one - tokens * flops / tp / rate
            backward += n * (one + 2 * exposed) if exposed > 0 else n * one
    elif lay.tp_async:
        backward = dispatched * whole
        for n, flops in linears:
            exposed = whole - tokens * flops / tp / rate
            backward += n * exposed if exposed > 0 else 0.0
    else:
        backward = pairs * whole
    return forwards * forward + backward
