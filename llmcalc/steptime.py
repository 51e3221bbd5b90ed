"""Time of one training step for a layout: compute at a share of peak, plus what each kind of
parallelism adds, exposed or hidden by the conventions below.

Per GPU of the busiest pipeline stage (the one with the most layers, or the last with its LM head),
for one micro-batch of ``mb`` sequences (``mb·seq/cp`` tokens):

- compute: the stage's GEMM FLOPs (forward; backward = 2 x forward) over TP at kernels.matmul_efficiency
  of the dtype's dense peak (MAMF_SHARE of the GPU's measured best-shape matmul rate); the causal
  attention core at ATTENTION_EFFICIENCY of the share of the 16-bit peak its kernel reaches on the GPU
  (kernels.py; unfused, Links.unfused: the whole square's GEMMs at the 16-bit GEMM share or their scores'
  bytes at HBM speed, and softmax's and dropout's passes over the scores: kernels.UNFUSED_BYTES); the LM
  head in 16 bits and the loss's passes over the logits (memory/loss.LOSS_BYTES); the memory-bound kernels at
  ``serving.FLOAT_BANDWIDTH`` of HBM: those inside TP's regions (activations, dropout, rotary) move
  ELEMENTWISE_TRAFFIC bytes per byte they save for backward (Korthikanti et al. 2022's 24sbh/t), the norms and
  residual adds TP repeats on every rank their own REPLICATED_BYTES (split by TP with sequence parallelism);
- weight traffic: each of a layer's three GEMMs takes at least its weights' bytes at that HBM share
  (_gemms), which binds for routed experts fed few tokens each (tokens x top_k x ep / experts);
- recompute: full recomputation repeats the layers' forward, selective the modules named (Megatron-Core's
  recompute_modules, _redo_work): core_attn the attention core, mla_up_proj MLA's up-projections, moe_act the
  experts' activation, mlp a dense MLP, moe an MoE layer with its dispatch and combine, shared_experts its shared one;
- TP (tpcomm.py): each pair of TP linears (attention, dense MLP, shared expert) all-reduces the activation once
  forward and once backward (with sequence parallelism an all-gather and a reduce-scatter each way), 2(t-1)/t x
  the activation over the TP link at LINK_EFFICIENCY plus a latency a collective; the forward's exposed, the
  backward's under the column-parallel GEMMs (Layout.tp_async; always with SP); an MoE layer without EP adds its
  dispatcher's gather and scatter, synchronous; overlapped (Layout.tp_overlap), tpcomm.TP_OVERLAP_EXPOSED of the
  linears' stays exposed and the GEMMs they run under share the SMs (UB_SMS);
- CP: ring attention passes K and V around the cp ranks, (cp-1) chunks forward and twice that
  backward; the bytes hide behind the attention core's own compute, each step's latency does not;
- EP: each MoE layer's token traffic, exposed (collectives.moe_traffic); with Layout.ep_overlap (Megatron-Core 0.14's
  overlap_moe_expert_parallel_comm: one micro-batch's forward beside another's backward, layer by layer)
  only what outlasts those layers' forward and backward compute, where Megatron allows it (no full
  recomputation; virtual stages in a pipeline); a step's unpaired first forward and last backward are
  not counted;
- experts: each MoE layer's fixed work per routed expert on the rank (Links.expert_overhead, by default
  EXPERT_OVERHEAD, per micro-batch), exposed;
- PP: the activation sent to the next stage and its gradient returned, once per micro-batch per
  virtual stage, point to point (one NIC), exposed; the 1F1B bubble (p-1)/v micro-batches (Narayanan
  et al. 2021);
- DP: once per step the gradients (Layout.grad_bytes each) are reduced (all-reduce, or ZeRO-1/2's
  reduce-scatter plus the parameters' all-gather, Layout.param_bytes each) under the last backward (the
  all-gather under the next step's first forward); ZeRO-3/FSDP gathers the parameters for forward and
  backward and reduce-scatters the gradients every micro-batch, under that micro-batch's compute;
- optimizer: the Adam step over this GPU's share of the fp32 master weights and states, memory-bound, after the
  last backward (exposure.optimizer_step);
- offload: the first Layout.offload layers' saved activations to host memory and back, each copy under its share
  of the layers' compute, what outlasts it exposed (exposure.offload_exposed).

A collective runs on the intra-node link (NVLink, xGMI) when its group fits in a node, else at the
inter-node bandwidth per GPU (times the ranks of the group each node holds: collectives.link; an
all-to-all has no rings to spread, so its bytes for other nodes leave through the GPU's own NIC:
collectives.all_to_all).
Megatron-Core's rank order (tp, cp, dp, pp from fastest-varying; for the experts, core 0.10's folding:
etp, ep, expert dp, pp) decides which groups fit.
"""

from __future__ import annotations

from typing import NamedTuple

from .collectives import link, moe_traffic
from .exposure import dp_exposed, dp_traffic, exposed_send, optimizer_step
from .flops import forward
from .kernels import (MATMUL_EFFICIENCY, UNFUSED_BANDWIDTH, UNFUSED_BYTES, UNFUSED_DROPOUT_BYTES, UNFUSED_DROPOUT_FORWARD_BYTES,
                      UNFUSED_FORWARD_BYTES, UNFUSED_GEMM_BYTES)
from .memory.loss import LOSS_BYTES
from .memory.placement import stage_layers
from .memory.recompute import DEFAULT_RECOMPUTE_MODULES
from .params import attention_linears
from .serving import FLOAT_BANDWIDTH
from .spec import ModelSpec
from .tpcomm import column_inputs, tp_time

# Bytes of HBM traffic by memory-bound kernels per byte a layer saves for backward; fitted with
# kernels.MAMF_SHARE and ATTENTION_EFFICIENCY over the published runs (scripts/fit_steptime.py --grid).
ELEMENTWISE_TRAFFIC = 5.0
# The kernels TP repeats on every rank (sequence parallelism splits them): per token of a layer, forward, in bytes a
# width. Two norms each read their 16-bit input and write their output (2 x 4); two residual adds (Megatron's fused
# bias-dropout-add) each read the branch's output and the residual and write the sum (2 x 6), and with dropout a
# 1-byte mask (2 x 1). Counted by their bytes, not fitted: Korthikanti et al. 2022 Table 4 has sequence parallelism
# save 0.5 ms of a 22B layer's 7.7 ms forward on 8 A100s; these 22 bytes a width take 0.60 ms there at 90% of HBM
# bandwidth, 7/8 of which (0.53 ms) sequence parallelism saves (tests/test_plan_layer_times.py).
REPLICATED_BYTES, REPLICATED_DROPOUT_BYTES = 20, 2
# Overlapped, the collectives run in Transformer Engine's userbuffers kernels on UB_SMS of the GPU's SMs, which the
# GEMMs under them go without (TE 2.8 initialize_ub defaults: num_sm 16 for the "pipeline" and "bulk" overlaps,
# set_sm_margin; TE 1.x took the SMs without the margin). Those are proj and fc2 forward (reduce-scatter) and the
# qkv and fc1 data and weight gradients: of Llama 3 70B's layer GEMMs, 0.35 of the forward's FLOPs and 0.55 of all
# three passes' (GPT-3's 0.42 and 0.53); the others' all-gathers run on the copy engines. A recipe's own userbuffers
# config sets other counts (Links.ub_sms; NeMo's and Megatron-Bridge's tuned FP8 ones come to about 4).
UB_SMS, UB_SHARE_FORWARD, UB_SHARE = 16, 0.35, 0.55
# Gradients are reduced in fp32 by default: Megatron-LM's training script accumulates and all-reduces them in
# fp32 under bf16 (arguments.py: accumulate_allreduce_grads_in_fp32, core 0.8-0.15), as the megatron
# framework's fp32 main_grad buffer holds them; Megatron-Bridge's recipes and NeMo's grad_sync_dtype reduce bf16, and
# Megatron-LM's fp16 training of 2021-2022 kept and all-reduced fp16 ones unless told otherwise (arguments.py then:
# --accumulate-allreduce-grads-in-fp32 off by default, forced on for bf16 only).
GRAD_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# Each MoE layer's fixed cost per routed expert on the rank, per micro-batch (forward + backward), exposed: TE 2.8's
# GroupedLinear runs one cuBLASLt GEMM per expert, each with its descriptors and heuristic, beside per-expert quantize
# kernels under FP8, and Megatron-Core 0.15's dispatcher syncs the host on the token counts before every MoE layer's
# experts, so the host's per-expert work is not hidden. Fitted over the ten Megatron-Core MoE runs of
# tests/test_plan_published.py (Megatron-Bridge 25.11's DeepSeek-V3 and Qwen3 on H100, B200 and GB200, with 4-32
# experts a rank; the Megatron-Core MoE README's Mixtral): six of the nine Megatron-Bridge runs would each need
# 0.34-0.61 ms alone. It is added to the experts' GEMM time, not hidden under it, as the small experts it is
# fitted on show. Eager PyTorch's autograd loop over small SwiGLU experts, forward + backward, takes 0.32-0.38 ms
# an expert on an H100 where its host binds (tests/data/gpu_kernels.json).
EXPERT_OVERHEAD = 0.4e-3
PARAM_BYTES = 2  # ZeRO's parameter all-gathers move the 16-bit weights (FP8 parameters: 1)
# Where a GPU holds several of a layer's experts, Megatron-Core 0.15's all-to-all dispatcher sorts the tokens it
# receives by local expert after the dispatch and back before the combine (token_dispatcher.py sort_chunks_by_idxs):
# each pass reads and writes top_k 16-bit copies of a token, 2 x (2 + 2) bytes a width, over the tokens its expert
# TP group gathered. Timed where selective recomputation's moe repeats the dispatch.
SORT_BYTES = 8


class Links(NamedTuple):
    """What a layout's compute and collectives run at, per GPU, one direction, bytes per second."""

    peak: float  # dense FLOP/s in the compute dtype (the layers' GEMMs)
    peak16: float  # dense 16-bit FLOP/s: attention and the LM head stay in 16 bits
    hbm: float  # memory bandwidth
    node_gpus: int  # GPUs sharing the fast domain
    intra: float
    inter: float
    efficiency: float  # share of peak the GEMMs reach (matmul_efficiency)
    attention: float  # share of the 16-bit peak the attention core reaches (attention_efficiency)
    efficiency16: float = MATMUL_EFFICIENCY  # the LM head's share of the 16-bit peak (plan.links_of: the GPU's)
    weight_bytes: float = 2  # per weight the GEMMs read: the compute dtype's (Transformer Engine's cached FP8 copy: 1)
    expert_overhead: float = EXPERT_OVERHEAD  # seconds per routed expert a GPU holds, per MoE layer and micro-batch
    sms: int = 0  # streaming multiprocessors (GPUSpec.sm_count; 0: not known)
    ub_sms: int = UB_SMS  # of them, what TE's userbuffers kernels hold under the GEMMs they overlap
    unfused: bool = False  # the attention core writes its s x s scores to HBM (kernels.UNFUSED_BYTES)
    peer: float = 0.0  # a switchless mesh's bandwidth to each peer in a node (GPUSpec.link_bandwidth; 0: a switch)
    host: float = 0.0  # a copy to or from host memory (GPUSpec.host_bandwidth; 0: not known)


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


class Layout(NamedTuple):
    """One way to lay a training step out: degrees, sharding, recomputation and batching."""

    tp: int
    pp: int
    dp: int
    cp: int = 1
    ep: int = 1
    vpp: int = 1  # virtual stages per pipeline rank (interleaved 1F1B)
    zero: int = 1  # 0 plain DP; 1/2 sharded optimizer (Megatron's distributed optimizer); 3 FSDP
    recompute: str = "none"
    sp: bool = False
    micro_batch: int = 1
    micro_batches: int = 1  # per step per pipeline: global batch / (dp x micro_batch)
    tp_overlap: bool = False  # TP collectives split into chunks under the GEMMs (Transformer Engine userbuffers)
    pp_overlap: bool = True  # interleaved 1F1B's sends under the next chunk (Megatron's overlap_p2p_comm)
    dp_overlap: bool = True  # gradient reduction under the backward (Megatron's overlap_grad_reduce/param_gather)
    grad_bytes: int = GRAD_BYTES["fp32"]  # per gradient value reduced over DP
    param_bytes: int = PARAM_BYTES  # per parameter all-gathered by the distributed optimizer or FSDP
    etp: int = 0  # ranks a routed expert is split over; 0: TP's (spec.Parallelism.etp)
    ep_overlap: bool = False  # MoE token traffic under another micro-batch's compute (overlap_moe_expert_parallel_comm)
    backward_prefetch: str = "pre"  # ZeRO-3: the backward's next all-gather under (pre) or after (post) a gradient
    tp_async: bool = True  # the column-parallel input gradient's TP collective under its weight gradient (tpcomm.py)
    offload: int = 0  # layers whose saved activations wait in host memory (Megatron's cpu_offloading_num_layers)

    @property
    def expert_tp(self) -> int:
        return self.etp or self.tp


class StepTime(NamedTuple):
    """Seconds per optimizer step on the busiest GPU, by what they are spent on."""

    compute: float
    recompute: float
    tp: float
    cp: float
    ep: float
    experts: float
    pp: float
    bubble: float
    dp: float
    optimizer: float = 0.0
    offload: float = 0.0  # activation offloading's host copies beyond what the layers' compute hides (exposure.py)

    @property
    def total(self) -> float:
        return sum(self)


class MicroBatch(NamedTuple):
    """One micro-batch on the busiest rank, in seconds: what a step is made of."""

    gemm: float  # the rank's layers' GEMMs, a third of forward + backward (_gemms: FLOPs or weight traffic)
    attention: float  # the attention core, a third of forward + backward (flash kernels: the forward)
    elementwise: float  # forward memory-bound kernels
    head: float  # forward LM head and a third of the loss's passes (the last stage)
    redo: float  # what recomputation repeats
    tp: float
    cp: float
    ep: float
    send: float  # one activation (or its gradient) to the next stage
    gemm_forward: float  # the GEMMs' forward alone (gemm where no weight traffic binds)
    core_forward: float  # the attention core's forward alone, which recomputation repeats (attention but unfused)
    experts: float = 0.0  # the MoE layers' fixed work per routed expert (EXPERT_OVERHEAD)
    moe_layers: int = 0  # MoE layers on this rank

    @property
    def compute(self) -> float:
        """Forward and backward (backward = 2 x forward)."""
        return 3 * (self.gemm + self.attention + self.elementwise + self.head)

    @property
    def total(self) -> float:
        return self.compute + self.redo + self.tp + self.cp + self.ep + self.experts

    @property
    def layers_forward(self) -> float:
        """The rank's layers' forward, without the LM head."""
        return self.gemm_forward + self.core_forward + self.elementwise


def micro_batch(c: ModelCost, links: Links, lay: Layout, seq: int) -> MicroBatch:
    """One micro-batch of ``lay`` on its busiest rank (the module docstring's terms)."""
    tp, cp, pp = lay.tp, lay.cp, lay.pp
    tokens = lay.micro_batch * seq / cp  # per micro-batch, this GPU's share of each sequence
    rate, rate16, hbm = links.peak * links.efficiency, links.peak16 * links.efficiency16, links.hbm * FLOAT_BANDWIDTH
    dense = _gemms(tokens * (c.matmul - c.experts) / tp / rate, c.weights / tp, links, lay, hbm)  # a layer's GEMMs
    if lay.tp_overlap and tp > 1 and links.sms > links.ub_sms:  # some of them on the SMs userbuffers leaves
        slower = links.ub_sms / (links.sms - links.ub_sms)
        dense = dense[0] * (1 + UB_SHARE * slower), dense[1] * (1 + UB_SHARE_FORWARD * slower)
    experts = _gemms(tokens * c.experts / tp / rate, c.expert_weights / (lay.expert_tp * lay.ep), links, lay, hbm)
    gemm1, forward1 = dense[0] + experts[0], dense[1] + experts[1]
    if links.unfused:  # the whole square's GEMMs (their FLOPs or their scores' bytes), softmax's and dropout's bytes
        slow = links.hbm * UNFUSED_BANDWIDTH
        squares = max(c.square / rate16, c.square_bytes / slow)
        attention1 = tokens / tp * (squares + c.softmax_bytes / slow)
        core1 = tokens / tp * (squares + c.softmax_forward / slow)  # its forward, which recomputation repeats
    else:
        attention1 = core1 = tokens * c.core / tp / (links.peak16 * links.attention)
    # the LM head's GEMM and the loss's memory-bound passes over the logits (a third here, compute takes 3x)
    head = tokens * (c.head / rate16 + c.loss / 3 / hbm) / tp
    fullest, last = stage_layers(c.layers, pp, lay.vpp)
    per_layer = gemm1 + attention1
    layers, head = (fullest, 0.0) if fullest * per_layer > last * per_layer + head else (last, head)
    gemm, attention, gemm_forward, core = layers * gemm1, layers * attention1, layers * forward1, layers * core1
    # the kernels inside TP's regions by Korthikanti's 24 bytes a width they save, the norms and residual adds by
    # their own bytes, split by TP only with sequence parallelism
    moved = c.hidden * 24 / tp * ELEMENTWISE_TRAFFIC + c.norm_bytes / (tp if lay.sp else 1)
    elementwise = tokens * layers * moved / hbm
    # the MoE layers on this rank (dense ones lead the first stage), and those whose tokens the all-to-all dispatcher
    # moves over EP (without EP, the dispatcher's gather and scatter over the expert-TP ranks: tpcomm.tp_time)
    moe = min(layers, c.moe_layers)
    routed = moe if lay.ep > 1 else 0
    full, selective = lay.recompute == "full", lay.recompute == "selective"
    redo = gemm_forward + core + elementwise if full else 0.0
    if selective:  # moe repeats the experts' forward GEMMs as full recomputation does (experts[1])
        redo = core * c.redo_core + layers * (tokens * (c.redo_matmul / tp / rate + c.redo_bytes / tp / hbm)
                                              + experts[1] * c.redo_moe)
        if c.redo_moe and routed and c.routed_experts > lay.ep:  # and the received tokens' sorts (SORT_BYTES)
            redo += moe * tokens * SORT_BYTES * c.top_k * c.hidden * lay.expert_tp / tp / hbm
    cp_time = send = 0.0
    redo_moe = moe_redone(c, lay)
    tp_comm = tp_time(c, links, lay, tokens, layers, moe, routed, rate) if tp > 1 else 0.0
    if cp > 1:  # ring: (cp-1) K,V chunks forward, K,V and their gradients backward
        bw, lat = link(cp, tp, links)
        # each of the cp-1 steps waits out its K/V's latency; the bytes hide behind the attention core
        transfer = layers * 3 * (cp - 1) * tokens * c.kv / tp * 2 / bw
        cp_time = layers * 3 * (cp - 1) * lat + max(0.0, transfer - 3 * attention)
    ep_time = moe_traffic(c, links, lay, tokens / tp if lay.sp else tokens, routed,
                          3 * routed / layers * (gemm + attention + elementwise), redo_moe)
    if pp > 1:  # Megatron's scatter/gather: each TP rank sends its 1/t slice, re-gathered over NVLink
        bw, lat = link(pp, tp * cp * lay.dp, links, rings=False)
        send = tokens * c.hidden * 2 / tp / bw + lat
    # the rank's routed experts' fixed work; recomputing the MoE layers repeats the forward's third of it
    experts_time = moe * c.routed_experts / lay.ep * links.expert_overhead * (4 / 3 if redo_moe else 1)
    return MicroBatch(gemm, attention, elementwise, head, redo, tp_comm, cp_time, ep_time, send, gemm_forward, core,
                      experts_time, moe)


def moe_redone(c: ModelCost, lay: Layout) -> bool:
    """Whether recomputation repeats the MoE layers' forward (dispatch, combine, experts): full, or moe's module."""
    return lay.recompute == "full" or lay.recompute == "selective" and c.redo_moe


def _gemms(flops: float, weights: float, links: Links, lay: Layout, hbm: float) -> tuple[float, float]:
    """GEMMs over ``weights`` values of this GPU that take ``flops`` seconds forward: (a third of forward +
    backward, forward alone). Each of forward, data gradient and weight gradient takes its FLOPs' time or its
    weight traffic's at ``hbm`` bytes a second, whichever is longer (a roofline per GEMM; the activations' bytes,
    tokens x width against weights' width x width, are left out). Conditionals, not max(): it runs per layout."""
    read = weights * links.weight_bytes / hbm  # forward and data gradient read the compute copy
    accumulate = weights * 2 * lay.grad_bytes / hbm  # the weight gradient adds into the main gradient in place
    forward = flops if flops > read else read
    return (2 * forward + (flops if flops > accumulate else accumulate)) / 3, forward


def step_time(c: ModelCost, links: Links, lay: Layout, seq: int, grads: tuple[float, float] | None,
              mb: MicroBatch | None = None, traffic: tuple[float, float] | None = None,
              optimizer: float | None = None, offload: float = 0.0) -> StepTime:
    """One optimizer step of ``lay`` (``grads``: the dense and routed-expert parameters of this GPU's stage,
    whose gradients data parallelism reduces and whose optimizer states it steps). ``mb``, ``traffic`` and
    ``optimizer``, where the caller has them memoized (the planner): the layout's micro_batch, its
    exposure.dp_traffic and exposure.optimizer_step, which then stand for ``grads``; ``offload``: the exposed
    seconds of activation offloading's copies (exposure.offload_exposed, which needs the memory model's bytes)."""
    mb = mb or micro_batch(c, links, lay, seq)
    m, compute, per_mb = lay.micro_batches, mb.compute, mb.total
    dp = dp_exposed(lay, traffic if traffic is not None else dp_traffic(lay, links, grads), per_mb, compute)
    return StepTime(compute=m * compute, recompute=m * mb.redo, tp=m * mb.tp, cp=m * mb.cp, ep=m * mb.ep,
                    experts=m * mb.experts, pp=m * lay.vpp * 2 * exposed_send(mb, lay),
                    bubble=(lay.pp - 1) / lay.vpp * per_mb, dp=dp,
                    optimizer=optimizer if optimizer is not None else optimizer_step(lay, links, grads),
                    offload=offload)
