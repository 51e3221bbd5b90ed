"""Time of one training step for a layout: compute at a share of peak, plus what each kind of
parallelism adds, exposed or hidden by the conventions below.

Per GPU of the busiest pipeline stage (the one with the most layers, or the last with its LM head, whichever
takes longer a micro-batch, every term below counted),
for one micro-batch of ``mb`` sequences (``mb·seq/cp`` tokens):

- compute: the stage's GEMM FLOPs (forward; backward = 2 x forward) over TP at kernels.matmul_efficiency
  of the dtype's dense peak (MAMF_SHARE of the GPU's measured best-shape matmul rate); the causal
  attention core at ATTENTION_EFFICIENCY of the share of the 16-bit peak its kernel reaches on the GPU
  (kernels.py; unfused, Links.unfused: the whole square's GEMMs at the 16-bit GEMM share or their scores'
  bytes at HBM speed, and softmax's and dropout's passes over the scores: kernels.UNFUSED_BYTES); the LM
  head in 16 bits and the loss's passes over the logits (memory/loss.LOSS_BYTES); the memory-bound kernels at
  ``serving.FLOAT_BANDWIDTH`` of HBM: those inside TP's regions (activations, dropout, rotary) move
  ELEMENTWISE_TRAFFIC bytes per byte they save for backward (Korthikanti et al. 2022's 24sbh/t), the norms and
  residual adds TP repeats on every rank their own modelcost.REPLICATED_BYTES (split by TP with sequence parallelism);
- weight traffic: each of a layer's three GEMMs takes at least its weights' bytes at that HBM share
  (_gemms), which binds for routed experts fed few tokens each (tokens x top_k x ep / experts);
- recompute: full recomputation repeats the layers' forward, selective the modules named (Megatron-Core's
  recompute_modules, modelcost._redo_work): core_attn the attention core, mla_up_proj MLA's up-projections, moe_act the
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
  recomputation; virtual stages in a pipeline), the passes it cannot pair exposed in full (collectives.ep_unpaired:
  the first forward and last backward, or an interleaved pipeline's warm-up and cool-down);
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

from .collectives import ep_unpaired, link, moe_traffic
from .exposure import dp_exposed, dp_traffic, exposed_send, optimizer_step
from .kernels import MATMUL_EFFICIENCY, UNFUSED_BANDWIDTH
from .memory.placement import stage_layers
from .modelcost import ModelCost
from .serving import FLOAT_BANDWIDTH
from .tpcomm import tp_time

# Bytes of HBM traffic by memory-bound kernels per byte a layer saves for backward; fitted with
# kernels.MAMF_SHARE and ATTENTION_EFFICIENCY over the published runs (scripts/fit_steptime.py --grid).
ELEMENTWISE_TRAFFIC = 5.0
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
    ep_alone: float = 0.0  # ep where no other micro-batch's compute runs beside it (--ep-overlap's unpaired passes)

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
    fullest, last = stage_layers(c.layers, pp)
    send = 0.0
    if pp > 1:  # Megatron's scatter/gather: each TP rank sends its 1/t slice, re-gathered over NVLink
        bw, lat = link(pp, tp * cp * lay.dp, links, rings=False)
        send = tokens * c.hidden * 2 / tp / bw + lat
    # the kernels inside TP's regions by Korthikanti's 24 bytes a width they save, the norms and residual adds by
    # their own bytes, split by TP only with sequence parallelism: a layer's elementwise seconds
    moved = tokens * (c.hidden * 24 / tp * ELEMENTWISE_TRAFFIC + c.norm_bytes / (tp if lay.sp else 1)) / hbm
    layer = (gemm1, forward1, attention1, core1, experts[1], moved, send)
    if fullest == last:
        return _on_rank(c, links, lay, tokens, last, head, layer)
    # the busier of a fullest middle rank and the last (fewer layers beside the LM head), by all it does a micro-batch.
    # Every term grows with a rank's layers and only the compute with the head, so where the extra layers' compute
    # alone outweighs the head the fullest rank is the busier without timing the last.
    busiest = _on_rank(c, links, lay, tokens, fullest, 0.0, layer)
    if (fullest - last) * (gemm1 + attention1 + moved) >= head:
        return busiest
    return max(busiest, _on_rank(c, links, lay, tokens, last, head, layer), key=lambda mb: mb.total)


def _on_rank(c: ModelCost, links: Links, lay: Layout, tokens: float, layers: int, head: float,
             layer: tuple) -> MicroBatch:
    """micro_batch's terms for a rank of ``layers`` layers (and ``head``, its LM head's time, on the last), from a
    layer's (micro_batch's locals)."""
    tp, cp = lay.tp, lay.cp
    gemm1, forward1, attention1, core1, experts_forward, moved, send = layer
    gemm, attention, gemm_forward, core = layers * gemm1, layers * attention1, layers * forward1, layers * core1
    elementwise = layers * moved
    # the MoE layers on this rank (dense ones lead the first stage), and those whose tokens the all-to-all dispatcher
    # moves over EP (without EP, the dispatcher's gather and scatter over the expert-TP ranks: tpcomm.tp_time)
    moe = min(layers, c.moe_layers)
    routed = moe if lay.ep > 1 else 0
    rate = links.peak * links.efficiency
    redo = gemm_forward + core + elementwise if lay.recompute == "full" else 0.0
    if lay.recompute == "selective":  # moe repeats the experts' forward GEMMs as full recomputation does
        hbm = links.hbm * FLOAT_BANDWIDTH
        redo = core * c.redo_core + layers * (tokens * (c.redo_matmul / tp / rate + c.redo_bytes / tp / hbm)
                                              + experts_forward * c.redo_moe)
        if c.redo_moe and routed and c.routed_experts > lay.ep:  # and the received tokens' sorts (SORT_BYTES)
            redo += moe * tokens * SORT_BYTES * c.top_k * c.hidden * lay.expert_tp / tp / hbm
    cp_time = 0.0
    redo_moe = moe_redone(c, lay)
    tp_comm = tp_time(c, links, lay, tokens, layers, moe, routed, rate) if tp > 1 else 0.0
    if cp > 1:  # ring: (cp-1) K,V chunks forward, K,V and their gradients backward
        bw, lat = link(cp, tp, links)
        # each of the cp-1 steps waits out its K/V's latency; the bytes hide behind the attention core
        transfer = layers * 3 * (cp - 1) * tokens * c.kv / tp * 2 / bw
        cp_time = layers * 3 * (cp - 1) * lat + max(0.0, transfer - 3 * attention)
    ep_time, ep_alone = moe_traffic(c, links, lay, tokens / tp if lay.sp else tokens, routed,
                                    3 * routed / layers * (gemm + attention + elementwise), redo_moe)
    # the rank's routed experts' fixed work; recomputing the MoE layers repeats the forward's third of it
    experts_time = moe * c.routed_experts / lay.ep * links.expert_overhead * (4 / 3 if redo_moe else 1)
    return MicroBatch(gemm, attention, elementwise, head, redo, tp_comm, cp_time, ep_time, send, gemm_forward, core,
                      experts_time, moe, ep_alone)


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
    dp = dp_exposed(lay, traffic if traffic is not None else dp_traffic(lay, links, grads), per_mb, compute, c.layers)
    return StepTime(compute=m * compute, recompute=m * mb.redo, tp=m * mb.tp, cp=m * mb.cp,
                    ep=m * mb.ep + ep_unpaired(lay) * (mb.ep_alone - mb.ep),
                    experts=m * mb.experts, pp=m * lay.vpp * 2 * exposed_send(mb, lay),
                    bubble=(lay.pp - 1) / lay.vpp * per_mb, dp=dp,
                    optimizer=optimizer if optimizer is not None else optimizer_step(lay, links, grads),
                    offload=offload)
