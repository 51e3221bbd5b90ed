"""Time of one training step for a layout: compute at a share of peak, plus what each kind of
parallelism adds, exposed or hidden by the conventions below.

Per GPU of the busiest pipeline stage, for one micro-batch of ``mb`` sequences (``mb·seq/cp`` tokens):

- compute: the stage's matmul FLOPs (forward, backward = 2 x forward, recomputation) over TP, at
  ``serving.COMPUTE`` of the dtype's dense peak (the matmul share ``latency`` uses), plus the
  memory-bound kernels (norms, activation functions, dropout, residual adds, rotary, softmax), which
  move ``ELEMENTWISE_TRAFFIC`` bytes per byte a layer saves for backward (Korthikanti et al. 2022's
  sbh(34/t) with sequence parallelism, sbh(10 + 24/t) without) at ``serving.FLOAT_BANDWIDTH`` of HBM;
- TP: two all-reduces per layer forward, two backward, two more in a full recomputation (Megatron-LM;
  with sequence parallelism a reduce-scatter and an all-gather move the same bytes), each
  2(t-1)/t x the activation over the TP link at ``LINK_EFFICIENCY`` plus its latency, all exposed;
- CP: ring attention passes K and V around the cp ranks, (cp-1) chunks forward and twice that
  backward; the bytes hide behind the attention core's own compute, each step's latency does not;
- EP: an all-to-all dispatch and combine per MoE layer forward, twice that backward, exposed;
- PP: the activation sent to the next stage and its gradient returned, once per micro-batch per
  virtual stage, exposed; the 1F1B bubble (p-1)/v micro-batches (Narayanan et al. 2021);
- DP: the gradients reduced once per step (all-reduce, or ZeRO-1/2's reduce-scatter plus the
  parameters' all-gather: the same bytes), overlapped with the backward of the last micro-batch;
  ZeRO-3/FSDP all-gathers the parameters for forward and again for backward and reduce-scatters the
  gradients every micro-batch, overlapped with that micro-batch's compute.

A collective runs on the intra-node link (NVLink, xGMI) when its group fits in a node, else at the
inter-node bandwidth per GPU. Megatron-Core's rank order (tp, cp, ep, dp, pp from fastest-varying)
decides which groups fit: TP ranks are adjacent, then CP, then DP; PP ranks are farthest apart.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .flops import forward, palm_per_token
from .serving import COMPUTE, FLOAT_BANDWIDTH
from .spec import ModelSpec

# The three compute constants are fitted together over the 252 published runs of tests/plan_cases.py
# (Megatron-LM 2021, Korthikanti et al. 2022, Megatron-Core, llm-foundry, Llama 3, BLOOM, MT-NLG, IBM FSDP;
# scripts/fit_steptime.py): the median |error| of MFU is 9%.
# Share of the dense peak the GEMMs reach in training. Latency's prefill share (serving.COMPUTE, 0.65)
# lumps attention and the memory-bound kernels in; here they are timed on their own, so this is higher,
# and below best-shape matmul benchmarks (A100 87%, H100 80%: stas00's MAMF).
MATMUL_EFFICIENCY = 0.70
# Bytes of HBM traffic by memory-bound kernels per byte a layer saves for backward.
ELEMENTWISE_TRAFFIC = 2.0
# The causal attention core (its FLOPs counted causal, half the square) runs at this fraction of the share
# of peak FlashAttention-2's forward reaches on the GPU (GPUSpec.attention_share: A100 0.73, H100 0.35):
# the backward, masked tiles and short heads keep training attention below the kernel's best.
ATTENTION_EFFICIENCY = 0.41
REFERENCE_ATTENTION_SHARE = 0.73  # a GPU whose preset states none: a kernel written for it, as FA2 for A100
LINK_EFFICIENCY = 0.75  # share of a link's bandwidth NCCL collectives reach (serving.LINK_EFFICIENCY)
LINK_LATENCY = {"intra": 15e-6, "inter": 30e-6}  # per collective: NVLink ring start-up; an IB hop
TP_OVERLAP_EXPOSED = 0.3  # share of TP communication still exposed when overlapped with the GEMMs
DP_EXPOSED_FLOOR = 0.1  # the share of the gradient reduction no backward hides (the last buckets)
GRAD_BYTES = 2  # gradients reduced in the 16-bit dtype (Megatron-Core and FSDP defaults)


class Links(NamedTuple):
    """What a layout's collectives run over, per GPU, one direction, bytes per second."""

    peak: float  # dense FLOP/s in the compute dtype
    hbm: float  # memory bandwidth
    node_gpus: int  # GPUs sharing the fast domain
    intra: float
    inter: float
    efficiency: float  # share of peak the matmuls reach (matmul_efficiency)
    attention: float  # share of peak the attention core reaches (attention_efficiency)


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
    model_flops: float  # PaLM 6N + 12LHQT per token: the MFU numerator


def model_cost(m: ModelSpec, seq: int) -> ModelCost:
    """Per-token, per-layer forward FLOPs from flops.forward (causal attention, as flash kernels run)."""
    f = forward(m, seq, seq, "causal")
    L = m.num_hidden_layers
    core = f["attention/scores"] + f["attention/reduce"]
    head = f["forward"] - f["attention"] - f["mlp"]
    return ModelCost(layers=L, moe_layers=m.moe_layers, hidden=m.hidden_size,
                     matmul=(f["attention"] - core + f["mlp"]) / (L * seq), core=core / (L * seq),
                     head=head / seq, kv=m.kv_heads * (m.qk_head_dim + m.v_dim), top_k=m.num_experts_per_tok,
                     model_flops=palm_per_token(m, seq))


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


class StepTime(NamedTuple):
    """Seconds per optimizer step on the busiest GPU, by what they are spent on."""

    compute: float
    recompute: float
    tp: float
    cp: float
    ep: float
    pp: float
    bubble: float
    dp: float

    @property
    def total(self) -> float:
        return sum(self)


def _link(group: int, stride: int, links: Links) -> tuple[float, float]:
    """(bandwidth, latency) of a collective over ``group`` ranks ``stride`` apart.

    Inside a node: the GPU's NVLink/xGMI bandwidth. Across nodes, NCCL runs one ring per channel, each
    leaving the node through its own NIC; with k ranks of the group in each node the k NICs carry k
    rings at once, so the collective moves at k x the per-GPU network bandwidth, at most the NVLink's.
    """
    if group * stride <= links.node_gpus:
        return links.intra * LINK_EFFICIENCY, LINK_LATENCY["intra"]
    k = max(1, links.node_gpus // stride)
    return min(links.intra, k * links.inter) * LINK_EFFICIENCY, LINK_LATENCY["inter"]


class MicroBatch(NamedTuple):
    """One micro-batch on the busiest rank, in seconds: what a step is made of."""

    gemm: float  # forward GEMMs of the rank's layers
    attention: float  # forward causal attention core
    elementwise: float  # forward memory-bound kernels
    head: float  # forward LM head (the last stage)
    redo: float  # what recomputation repeats
    tp: float
    cp: float
    ep: float
    send: float  # one activation (or its gradient) to the next stage

    @property
    def compute(self) -> float:
        """Forward and backward (2 x forward)."""
        return 3 * (self.gemm + self.attention + self.elementwise + self.head)

    @property
    def total(self) -> float:
        return self.compute + self.redo + self.tp + self.cp + self.ep


def micro_batch(c: ModelCost, links: Links, lay: Layout, seq: int) -> MicroBatch:
    """One micro-batch of ``lay`` on its busiest rank (the module docstring's terms)."""
    tp, cp, pp, v = lay.tp, lay.cp, lay.pp, lay.vpp
    tokens = lay.micro_batch * seq / cp  # per micro-batch, this GPU's share of each sequence
    # the busiest rank: v virtual stages of ceil(L / (p v)) layers each (an uneven split's extra layers
    # sit on middle ranks; memory/placement.stages)
    layers = v * math.ceil(c.layers / (pp * v))
    rate = links.peak * links.efficiency
    gemm = tokens * layers * c.matmul / tp / rate
    attention = tokens * layers * c.core / tp / (links.peak * links.attention)
    saved = c.hidden * (34 / tp if lay.sp or tp == 1 else 10 + 24 / tp) * 2  # Korthikanti's bytes per token
    elementwise = tokens * layers * saved * ELEMENTWISE_TRAFFIC / (links.hbm * FLOAT_BANDWIDTH)
    full = lay.recompute == "full"
    redo = gemm + attention + elementwise if full else attention if lay.recompute == "selective" else 0.0
    tp_time = cp_time = ep_time = send = 0.0
    if tp > 1:  # 4 collectives per layer (6 with full recomputation) of the activation
        bw, lat = _link(tp, 1, links)
        tp_time = layers * (6 if full else 4) * (tokens * c.hidden * 2 * 2 * (tp - 1) / tp / bw + lat)
        if lay.tp_overlap:  # only the first chunk of each waits; the GEMMs beside them slow by as much
            tp_time *= TP_OVERLAP_EXPOSED
    if cp > 1:  # ring: (cp-1) K,V chunks forward, K,V and their gradients backward
        bw, lat = _link(cp, tp, links)
        # each of the cp-1 steps waits out its K/V's latency; the bytes hide behind the attention core
        transfer = layers * 3 * (cp - 1) * tokens * c.kv / tp * 2 / bw
        cp_time = layers * 3 * (cp - 1) * lat + max(0.0, transfer - 3 * attention)
    if lay.ep > 1 and c.moe_layers:
        bw, lat = _link(lay.ep, tp * cp, links)
        a2a = tokens * c.top_k * c.hidden * 2 * (lay.ep - 1) / lay.ep / bw + lat
        ep_time = math.ceil(c.moe_layers / pp) * (6 if full else 4) * a2a
    if pp > 1:  # Megatron's scatter/gather: each TP rank sends its 1/t slice, re-gathered over NVLink
        bw, lat = _link(pp, tp * cp * lay.dp, links)
        send = tokens * c.hidden * 2 / tp / bw + lat
    return MicroBatch(gemm, attention, elementwise, tokens * c.head / tp / rate, redo, tp_time, cp_time, ep_time, send)


def step_time(c: ModelCost, links: Links, lay: Layout, seq: int, grads: float) -> StepTime:
    """One optimizer step of ``lay`` (``grads``: gradient values this GPU reduces over data parallelism)."""
    mb = micro_batch(c, links, lay, seq)
    m, compute, per_mb = lay.micro_batches, mb.compute, mb.total
    return StepTime(compute=m * compute, recompute=m * mb.redo, tp=m * mb.tp, cp=m * mb.cp, ep=m * mb.ep,
                    pp=m * lay.vpp * 2 * mb.send, bubble=(lay.pp - 1) / lay.vpp * per_mb,
                    dp=_dp_time(lay, links, grads, per_mb, compute))


def _dp_time(lay: Layout, links: Links, grads: float, per_mb: float, compute: float) -> float:
    """Exposed data-parallel communication: once per step (ZeRO 0-2), or every micro-batch (ZeRO-3)."""
    d = lay.dp * lay.cp
    if d == 1:
        return 0.0
    bw, lat = _link(lay.dp, lay.tp * lay.cp, links)
    ring = (d - 1) / d * grads * GRAD_BYTES / bw + lat
    if lay.zero >= 3:  # all-gather forward, all-gather backward, reduce-scatter: under each micro-batch
        return lay.micro_batches * max(3 * ring - per_mb, 0.0) + ring * DP_EXPOSED_FLOOR
    if lay.zero == 0:  # one all-reduce, started as the last micro-batch's backward frees gradients
        return max(2 * ring - 2 / 3 * compute, DP_EXPOSED_FLOOR * 2 * ring)
    # distributed optimizer: gradients reduce-scattered under the last backward, the updated parameters
    # all-gathered under the next step's first forward (Megatron-Core overlap_grad_reduce/param_gather)
    return max(ring - 2 / 3 * compute, DP_EXPOSED_FLOOR * ring) + max(ring - compute / 3, DP_EXPOSED_FLOOR * ring)


def attention_efficiency(gpu) -> float:
    """The causal attention core's share of the 16-bit peak on ``gpu`` (ATTENTION_EFFICIENCY x its kernel's)."""
    return ATTENTION_EFFICIENCY * (gpu.attention_share or REFERENCE_ATTENTION_SHARE)


def matmul_efficiency(dtype: str) -> float:
    """The share of the dense peak training GEMMs reach: MATMUL_EFFICIENCY for 16-bit, scaled for other
    dtypes as latency's prefill share scales (serving.COMPUTE: fp8 kernels reach less of their doubled peak)."""
    return MATMUL_EFFICIENCY * COMPUTE.get(dtype, COMPUTE["bf16"]) / COMPUTE["bf16"]
