"""Tensor parallelism's collectives in one micro-batch (steptime's tp term): what each layer moves and what of it
stays exposed.

A layer has pairs of TP-split linears, a column-parallel one then a row-parallel one: its attention's (q/k/v, then
the output projection), a dense MLP's (gate and up, then down), an MoE layer's shared expert's. A pair's forward
all-reduces the row-parallel output; with sequence parallelism (SP) it all-gathers the column-parallel input and
reduce-scatters the output instead, each with its own latency (and MLA gathers its latents, not the hidden state:
tp_time). Backward, the column-parallel linear's input gradient is all-reduced (reduce-scattered with SP):

- sync (Megatron-LM before 2021-09, the Megatron-DeepSpeed forks MT-NLG and BLOOM ran): after the GEMMs, exposed;
- async (Megatron-LM's --async-tensor-model-parallel-allreduce from 2021-09, on by default since 2022;
  Megatron-Core 0.15 tensor_parallel/layers.py and Transformer Engine's linears): issued before the weight
  gradient's GEMM and hidden under it. With SP (Megatron-LM from 2022-04, always so) the row-parallel linear's
  output gradient is first all-gathered (exposed: both its GEMMs wait for it) and the column-parallel input, kept
  sharded, is re-gathered under the input gradient's GEMM (Korthikanti et al. 2022 Table 4: SP saves 0.5 ms of a 22B
  layer's 7.7 ms forward but only 0.1 ms of its 11.9 ms backward).

An MoE layer without EP has its token dispatcher gather the tokens over the expert-TP ranks and scatter them back
(Megatron-Core 0.15 token_dispatcher.py), synchronous both ways; with EP its traffic is EP's (collectives.py).
Under FP8, Transformer Engine gathers inputs and output gradients in FP8 (TE 2.8 module/linear.py and base.py:
gather_along_first_dim with the quantizer), 1 byte an element; reduce-scatters and all-reduces move 16 bits.
Overlapped with the GEMMs by Transformer Engine's userbuffers (Layout.tp_overlap), TP_OVERLAP_EXPOSED of the linears'
collectives stays exposed, the backward counted as the forward's again; the dispatcher's are not overlapped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .collectives import link
from .params import attention_linears, mlp_linears

if TYPE_CHECKING:
    from .spec import ModelSpec
    from .steptime import Layout, Links, ModelCost

TP_OVERLAP_EXPOSED = 0.3  # share of TP communication still exposed when overlapped with the GEMMs


def tp_time(c: "ModelCost", links: "Links", lay: "Layout", tokens: float, layers: int, moe: int, routed: int,
            rate: float) -> float:
    """The rank's TP collectives in one micro-batch of ``tokens`` over ``layers`` (``moe`` of them MoE layers,
    ``routed`` of those with EP, whose experts' own collectives are EP's); ``rate``: the GEMMs' FLOP/s, whose
    weight and input gradients hide the async backward collectives.

    A layer's pairs of TP linears: the attention's, a dense MLP's, an MoE layer's shared expert's, each hiding its
    backward under its own column-parallel GEMMs. The column-parallel input is the hidden state but in MLA, whose
    down-projections are duplicated on every rank (Megatron-Core 0.15 multi_latent_attention.py, TE's "duplicated"
    mode): its up-projections gather the q and kv latents and the rope key instead (ModelCost.attn_width). An MoE
    layer without EP adds its dispatcher's gather and scatter over the expert-TP ranks (token_dispatcher.py),
    synchronous both ways.
    Full recomputation repeats every pair's forward; selective recomputation a dense MLP's (mlp), a shared expert's
    (shared_experts, moe) and the dispatcher's (moe)."""
    tp, h = lay.tp, c.hidden
    bw, lat = link(tp, 1, links)
    per = tokens * (tp - 1) / tp / bw  # seconds an all-gather or a reduce-scatter takes per byte of width
    g = links.weight_bytes  # a gathered element: the compute dtype's (TE gathers FP8 inputs and output gradients)
    full, selective = lay.recompute == "full", lay.recompute == "selective"
    dispatched, shared = moe - routed, moe if c.shared else 0
    # (pairs, forwards repeated, FLOPs a token of the column-parallel GEMMs, width gathered into them)
    kinds = ((layers, 0, c.attn_in, c.attn_width or h),
             (layers - moe, (layers - moe) * c.redo_mlp if selective else 0, c.dense_in, h),
             (shared, shared * c.redo_shared if selective else 0, c.shared_in, h))
    dispatcher, et, exposed = 0.0, lay.expert_tp, 0.0
    if dispatched and et > 1:  # 16-bit gather and scatter over the expert-TP ranks each way, none overlapped
        ebw, elat = link(et, 1, links)
        each_way = 4 * h * tokens * (et - 1) / tp / ebw + 2 * elat  # each rank holds tokens / tp under SP
        dispatcher = dispatched * ((2 if full else 1 + (c.redo_moe if selective else 0)) + 1) * each_way
    for n, again, flops, width in kinds:
        if not n:
            continue
        # forward: the input's gather and the 16-bit output's scatter with SP, else the output's all-reduce
        forward = width * g * per + 2 * h * per + 2 * lat if lay.sp else 4 * h * per + lat
        exposed += (n * (2 if full else 1) + again) * forward
        if lay.tp_overlap:  # chunked under the GEMMs (TE userbuffers): what the first chunk waits stays exposed
            exposed += n * forward
            continue
        hide = tokens * flops / tp / rate  # the data or the weight gradient's GEMM (each the forward's FLOPs)
        if lay.sp:  # overlapped whatever tp_async says: Megatron's SP backward has re-gathered its input so from 2022-04
            # the output gradient's gather exposed; the input's re-gather and the input gradient's scatter hidden
            regather, scatter = width * g * per + lat - hide, 2 * width * per + lat - hide
            exposed += n * (h * g * per + lat + (regather if regather > 0 else 0.0) + (scatter if scatter > 0 else 0.0))
        elif lay.tp_async:  # the input gradient's all-reduce under the weight gradient
            late = 4 * width * per + lat - hide
            exposed += n * late if late > 0 else 0.0
        else:
            exposed += n * (4 * width * per + lat)
    return dispatcher + (exposed * TP_OVERLAP_EXPOSED if lay.tp_overlap else exposed)


def column_inputs(m: "ModelSpec", f, seq: int) -> dict:
    """ModelCost's column-parallel pieces, per token of a layer, from flops.forward's rows ``f`` over ``seq``: the
    attention's linears' forward FLOPs (attn_in) and the width TP gathers into them (attn_width: 0 for the hidden
    size; MLA's down-projections are duplicated on every rank, not split, so its up-projections, or a full-rank q,
    take the q and kv latents, the rope key gathered beside them); a dense layer's MLP gate and up (dense_in); an MoE
    layer's shared expert's (shared_in)."""
    split = [lin for name, lin in attention_linears(m).items() if name not in ("proj", "q_a", "kv_a")]
    width = (m.q_lora_rank or m.hidden_size) + m.kv_lora_rank + m.qk_rope_head_dim if m.is_mla else 0
    lins = mlp_linears(m, 1)
    inputs = sum(lin.weight for name, lin in lins.items() if name != "down") / sum(lin.weight for lin in lins.values())
    return dict(attn_in=2 * sum(lin.weight for lin in split), attn_width=width,
                dense_in=sum(f[r] for r in ("mlp/gate", "mlp/up") if r in f) / (max(m.dense_layers, 1) * seq),
                shared_in=inputs * f["mlp/shared_experts"] / (m.moe_layers * seq) if "mlp/shared_experts" in f else 0.0)
