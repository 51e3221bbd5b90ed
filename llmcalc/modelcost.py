"""The model's per-token pieces the step-time model (steptime.py) times: a layer's FLOPs, bytes and widths at one
sequence length, computed once per plan."""

from __future__ import annotations

from typing import NamedTuple

from .flops import forward
from .kernels import (UNFUSED_BYTES, UNFUSED_DROPOUT_BYTES, UNFUSED_DROPOUT_FORWARD_BYTES, UNFUSED_FORWARD_BYTES,
                      UNFUSED_GEMM_BYTES)
from .memory.loss import LOSS_BYTES
from .memory.recompute import DEFAULT_RECOMPUTE_MODULES
from .params import attention_linears
from .spec import ModelSpec
from .tpcomm import column_inputs

# The kernels TP repeats on every rank (sequence parallelism splits them): per token of a layer, forward, in bytes a
# width. Two norms each read their 16-bit input and write their output (2 x 4); two residual adds (Megatron's fused
# bias-dropout-add) each read the branch's output and the residual and write the sum (2 x 6), and with dropout a
# 1-byte mask (2 x 1). Counted by their bytes, not fitted: Korthikanti et al. 2022 Table 4 has sequence parallelism
# save 0.5 ms of a 22B layer's 7.7 ms forward on 8 A100s; these 22 bytes a width take 0.60 ms there at 90% of HBM
# bandwidth, 7/8 of which (0.53 ms) sequence parallelism saves (tests/test_plan_layer_times.py).
REPLICATED_BYTES, REPLICATED_DROPOUT_BYTES = 20, 2


class ModelCost(NamedTuple):
    """The model's per-token pieces at one sequence length, computed once per plan."""

    layers: int
    moe_layers: int
    hidden: int
    matmul: float  # forward matmul FLOPs per token of one layer (projections, MLP or active experts)
    core: float  # forward attention core FLOPs per token of one layer (causal, at this seq)
    head: float  # forward LM head FLOPs per token
    kv: int  # K and V values per token of one layer (for the CP ring)
    top_k: int  # experts each token is sent to
    shared: bool = False  # an MoE layer also runs a shared expert (TP-split like a dense MLP)
    experts: float = 0.0  # of matmul, the routed experts' share (averaged over the layers)
    weights: float = 0.0  # other block-linear weights, averaged over the layers (matmul less experts, / 2)
    expert_weights: float = 0.0  # all routed experts' weights, averaged over the layers
    loss: float = 0.0  # HBM bytes the cross-entropy moves per token (LOSS_BYTES x vocabulary), on the last stage
    routed_experts: int = 0  # routed experts in an MoE layer
    redo_core: bool = True  # selective recomputation rebuilds the attention core (Megatron-Core's core_attn)
    redo_matmul: float = 0.0  # and these forward FLOPs per token, averaged over the layers, split by TP
    redo_bytes: float = 0.0  # and these HBM bytes per token (activations), averaged over the layers, split by TP
    redo_mlp: bool = False  # a dense layer's MLP (mlp): its forward TP collective again
    redo_moe: bool = False  # an MoE layer (moe): its dispatch and combine, TP collectives, per-expert work again
    redo_shared: int = 0  # its shared expert's forwards repeated (shared_experts, moe): their TP collectives again
    # An unfused core (kernels.UNFUSED_BYTES), per token of one layer: its GEMMs over the whole s x s square, forward
    square: float = 0.0  # FLOPs
    square_bytes: float = 0.0  # and the scores' bytes they move (a third of forward + backward: the same share)
    softmax_bytes: float = 0.0  # softmax's and dropout's passes, a third of forward + backward
    softmax_forward: float = 0.0  # and forward
    attn_in: float = 0.0  # forward FLOPs per token of a layer's column-parallel attention linears (q, k, v)
    attn_width: int = 0  # the width TP gathers into them: the hidden size (0), or MLA's latents (tpcomm.py)
    dense_in: float = 0.0  # and of a dense layer's MLP input linears (gate and up)
    shared_in: float = 0.0  # and of an MoE layer's shared expert's
    norm_bytes: float = 0.0  # HBM bytes per token of a layer's kernels TP repeats on every rank (REPLICATED_BYTES)


def model_cost(m: ModelSpec, seq: int, loss: str = "full",
               modules: tuple[str, ...] = DEFAULT_RECOMPUTE_MODULES) -> ModelCost:
    """Per-token, per-layer forward FLOPs from flops.forward (causal attention, as flash kernels run; an unfused core
    computes the whole square and moves kernels.UNFUSED_BYTES a score, and dropout's where the model has it); ``loss``:
    the cross-entropy's implementation (LOSS_BYTES); ``modules``: what selective recomputation rebuilds
    (_redo_work)."""
    f, full = forward(m, seq, seq, "causal"), forward(m, seq, seq, "full")
    L, scores, drop = m.num_hidden_layers, m.num_attention_heads * seq, m.dropout > 0
    core = f["attention/scores"] + f["attention/reduce"]
    head = f["forward"] - f["attention"] - f["mlp"]
    matmul = (f["attention"] - core + f["mlp"]) / (L * seq)
    experts = f["mlp/experts"] / (L * seq) if m.is_moe else 0.0  # 2 x top_k experts' weights, averaged
    return ModelCost(layers=L, moe_layers=m.moe_layers, hidden=m.hidden_size, matmul=matmul, core=core / (L * seq),
                     head=head / seq, kv=m.kv_heads * (m.qk_head_dim + m.v_dim), top_k=m.num_experts_per_tok,
                     shared=bool(m.is_moe and m.shared_expert_size),
                     experts=experts, weights=(matmul - experts) / 2,  # a linear's FLOPs: 2 x tokens x weights
                     expert_weights=experts * m.num_experts / (2 * m.num_experts_per_tok) if m.is_moe else 0.0,
                     loss=m.vocab_size * LOSS_BYTES[loss], routed_experts=m.num_experts if m.is_moe else 0,
                     redo_core="core_attn" in modules, **_redo_work(m, f, seq, modules),
                     square=(full["attention/scores"] + full["attention/reduce"]) / (L * seq),
                     square_bytes=scores * UNFUSED_GEMM_BYTES / 3,
                     softmax_bytes=scores * (UNFUSED_BYTES - UNFUSED_GEMM_BYTES + UNFUSED_DROPOUT_BYTES * drop) / 3,
                     softmax_forward=scores * (UNFUSED_FORWARD_BYTES + UNFUSED_DROPOUT_FORWARD_BYTES * drop),
                     **column_inputs(m, f, seq),
                     norm_bytes=m.hidden_size * (REPLICATED_BYTES + REPLICATED_DROPOUT_BYTES * drop))


def _redo_work(m: ModelSpec, f, seq: int, modules: tuple[str, ...]) -> dict:
    """What Megatron-Core's recompute modules repeat besides the attention core, per token averaged over the
    layers (``f``: flops.forward's rows; a pipeline stage of MoE layers alone is charged the average): mla_up_proj the
    q_b and kv_b GEMMs; mlp a dense layer's MLP GEMMs, moe an MoE layer's router and shared expert (the routed
    experts' GEMMs: micro_batch), shared_experts the shared expert; and each MLP's activation, whose fused kernel
    reads fc1's output (2 x width for a gated MLP) and writes its width, 2 bytes each (moe_act: the experts' alone,
    for each of the top_k copies). moe also repeats the dispatcher's token permutation (moe_utils.permute reads and
    writes top_k copies of each 16-bit token) and unpermutation (reads the top_k outputs, writes the sum):
    (2 + 2) x top_k + (2 x top_k + 2) bytes a width. Nested in moe's, moe_act's refill and shared_experts'
    checkpoint repeat once more."""
    L, moe = m.num_hidden_layers, "moe" in modules
    act = 6 if m.mlp_type == "gated" else 4  # bytes a width of the activation's pass
    shared = (moe + ("shared_experts" in modules)) * bool(m.is_moe and m.shared_expert_size)  # forwards repeated
    routed = [n for n in ("mlp/router", "mlp/experts", "mlp/shared_experts") if n in f]
    flops = sum(2 * lin.fan_in * lin.fan_out for name, lin in attention_linears(m).items()
                if name in ("q_b", "kv_b")) if "mla_up_proj" in modules else 0.0
    work = act * m.dense_layers * m.intermediate_size / L if "mlp" in modules else 0.0
    flops += (f["mlp"] - sum(f[n] for n in routed)) / (L * seq) if "mlp" in modules else 0.0
    if m.is_moe:
        # the routed experts' own GEMMs: micro_batch's forward for them (their FLOPs or their weights' traffic)
        flops += sum(f[n] * (shared if n == "mlp/shared_experts" else moe) for n in routed if n != "mlp/experts") / (
            L * seq)
        work += act * m.moe_layers / L * (m.expert_size * m.num_experts_per_tok * (("moe_act" in modules) + moe)
                                          + m.shared_expert_size * shared)
        work += moe * m.moe_layers / L * m.hidden_size * (6 * m.num_experts_per_tok + 2)  # permute + unpermute
    return dict(redo_matmul=flops, redo_bytes=work, redo_mlp="mlp" in modules, redo_moe=moe, redo_shared=shared)
