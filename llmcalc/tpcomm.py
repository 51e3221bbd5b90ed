"""Tensor parallelism's collectives in one micro-batch (steptime's tp term): what each layer moves and what of it
stays exposed.

Each layer has a pair of TP-split linears in its attention (q/k/v column-parallel, the output projection
row-parallel) and one in its MLP (gate and up, then down). A pair's forward all-reduces the row-parallel output
(with sequence parallelism a reduce-scatter there and an all-gather of the column-parallel input, the same bytes),
exposed. Backward, the column-parallel linear's input gradient is all-reduced (reduce-scatter with SP):

- sync (Megatron-LM before 2021-09, the Megatron-DeepSpeed forks MT-NLG and BLOOM ran): after the GEMMs, exposed;
- async (Megatron-LM's --async-tensor-model-parallel-allreduce from 2021-09, on by default since 2022;
  Megatron-Core 0.15 tensor_parallel/layers.py and Transformer Engine's linears): issued before the weight
  gradient's GEMM and hidden under it. With SP the row-parallel linear's output gradient is first all-gathered
  (exposed: both its GEMMs wait for it) and the column-parallel input, kept sharded, is re-gathered under the input
  gradient's GEMM (Korthikanti et al. 2022 Table 4: SP saves 0.5 ms of a 22B layer's 7.7 ms forward but only 0.1 ms of
  its 11.9 ms backward).

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
    ``routed`` of those with EP, whose experts' own collectives replace the MLP's unless a shared expert keeps
    them); ``rate``: the GEMMs' FLOP/s, whose weight and input gradients hide the async backward collectives. Full
    recomputation repeats the forward's; a selectively recomputed MLP its forward one (an MoE layer's where it has
    one)."""
    tp = lay.tp
    bw, lat = link(tp, 1, links)
    half = tokens * c.hidden * 2 * (tp - 1) / tp / bw  # an all-gather's or reduce-scatter's bytes; an all-reduce's: 2x
    whole = 2 * half + lat
    mlp_pairs = layers - (0 if c.shared else routed)
    pairs = layers + mlp_pairs
    forwards = pairs * (2 if lay.recompute == "full" else 1)
    if lay.recompute == "selective":
        forwards += (layers - moe) * c.redo_mlp + moe * (c.redo_shared if c.shared else c.redo_moe and lay.ep == 1)
    if lay.tp_overlap:  # chunked under the GEMMs (TE userbuffers): what the first chunk waits stays exposed
        return (forwards + pairs) * whole * TP_OVERLAP_EXPOSED
    if not lay.tp_async:
        return (forwards + pairs) * whole
    # each pair's column-parallel GEMMs (weight and input gradients alike: the forward's FLOPs), per layer; mlp_in is
    # averaged over all the layers. Conditionals, not max(): it runs per layout.
    hide_attn = tokens * c.attn_in / tp / rate
    hide_mlp = tokens * c.mlp_in * layers / mlp_pairs / tp / rate if mlp_pairs else 0.0
    if lay.sp:  # the output gradient's gather exposed; the input's re-gather and the input gradient's scatter hidden
        one = half + lat
        attn, mlp = one - hide_attn, one - hide_mlp
        backward = pairs * one + 2 * (layers * attn if attn > 0 else 0.0) + 2 * (mlp_pairs * mlp if mlp > 0 else 0.0)
    else:
        attn, mlp = whole - hide_attn, whole - hide_mlp
        backward = (layers * attn if attn > 0 else 0.0) + (mlp_pairs * mlp if mlp > 0 else 0.0)
    return forwards * whole + backward
