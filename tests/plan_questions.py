"""How a published run (tests/plan_cases.Case) becomes the question `llmcalc plan` answers for it.

The cluster is the run's own: its GPU, NVLink domain and, where the source states it, its network
(NETWORK, per GPU). The target is its global batch of sequences. The constraints are what the run's
framework could do at the time, never the answer: a layout the framework lacked cannot be what the
authors should have picked. Everything the source states and the planner could vary (recomputation,
ZeRO stage, sequence parallelism, micro-batch, virtual stages) is fixed to the published value;
what the source leaves out (``Case.assumed``, an unstated micro-batch or vpp) is searched.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

from llmcalc.flops import RECOMPUTE

from .plan_cases import Case, entries

# Frameworks that shard data only: llm-foundry and the IBM blog run FSDP, no TP, PP or CP.
PURE_FSDP = {"mosaicml-llm-foundry", "pytorch-fsdp-blog"}
# Before context parallelism (Megatron-Core 0.5, 2024) and without FSDP (ZeRO-3): Megatron-LM 2021/2022;
# DeepSpeed's pipeline engine (MT-NLG, BLOOM) shards only the optimizer (ZeRO-1) beside PP.
NO_CP = {"megatron-lm-2021", "korthikanti-2022", "bloom", "mt-nlg"}
NO_ZERO3 = {"bloom", "mt-nlg", "megatron-core-readme", "megatron-core-moe", "nemo-24.07", "megatron-bridge-25.11"}
# Megatron-LM before its distributed optimizer (2022): plain data parallelism only.
PLAIN_DP = {"megatron-lm-2021", "korthikanti-2022"}
# DeepSpeed's pipeline engine runs plain 1F1B: no interleaved virtual stages.
NO_INTERLEAVING = {"bloom", "mt-nlg"}
# TP collectives overlapped with the GEMMs (Transformer Engine userbuffers): the Megatron-Core README's runs
# set --tp-comm-overlap; NVIDIA's performance recipes behind the NeMo and Megatron-Bridge tables set a
# userbuffers config for each TP > 1 model (Megatron-Bridge scripts/performance, llama3_70b_*_config:
# cfg.comm_overlap.tp_comm_overlap_cfg; llama3_8b: tp_comm_overlap=TP > 1).
TP_OVERLAP = {"megatron-core-readme", "nemo-24.07", "megatron-bridge-25.11"}
# The SMs the userbuffers kernels hold under the overlapped GEMMs: Transformer Engine's defaults (16) for the
# Megatron-Core README's --tp-comm-overlap without a config; the recipes' tuned FP8 configs (Megatron-Bridge v0.2.0
# training/comm_overlap.py, as NeMo's tp_overlap_configs: userbuffers_fp8_h100_h8192_tp4_mbs1_seqlen8192 and
# ..._h16384_tp8_cp2...) run proj and fc2 forward by ring exchange (1 SM) and the bulk qkv/fc1 overlaps on 2-24 SMs
# without a margin, which FLOP-weighted over Llama 3 70B's and 405B's layers slow the GEMMs as about 4 SMs would.
TUNED_UB_SMS = {"nemo-24.07": 4, "megatron-bridge-25.11": 4}
# Before Megatron-LM overlapped its communication (--overlap-grad-reduce 2023-08, overlap_p2p_comm by default
# 2023-10), and DeepSpeed's pipeline engine, which reduces the gradients after its schedule: sends and
# gradient reductions exposed.
BEFORE_OVERLAP = {"megatron-lm-2021", "korthikanti-2022", "bloom", "mt-nlg"}
# The column-parallel backward's TP all-reduce issued after the GEMMs (llmcalc/tpcomm.py "sync"): Megatron-LM before
# --async-tensor-model-parallel-allreduce (2021-09, after Narayanan et al.'s runs), and the Megatron-DeepSpeed forks
# MT-NLG and BLOOM ran (bigscience-workshop/Megatron-DeepSpeed megatron/mpu/layers.py: copy_to_tensor_model_parallel_
# region's synchronous all-reduce). Korthikanti et al. 2022 overlap it with the weight gradient (their §6.2).
TP_SYNC = {"megatron-lm-2021", "bloom", "mt-nlg"}
# MT-NLG's published TFLOP/s count the recomputed forward (Megatron's eq. 3), so it recomputed: "full" is
# read from the source's own FLOP count, not searched.
RECOMPUTE_FROM_FLOPS = {"mt-nlg"}
# llm-foundry's MPT trains with flash-attn's fused cross-entropy (its default loss_fn); Megatron-Bridge's performance
# scripts set cross_entropy_fusion_impl "te", Transformer Engine's (v0.2.0 scripts/performance/utils/helpers.py).
FUSED_LOSS = {"mosaicml-llm-foundry"}
# FSDP's backward all-gather issued after each unit's gradient computation: Composer's FSDPConfig default
# backward_prefetch='BACKWARD_POST', which llm-foundry's benchmark sweep leaves as it is (scripts/train/benchmarking/
# sweep.sh passes no --fsdp_config_backward_prefetch). The IBM blog's stack states none: PyTorch's BACKWARD_PRE.
PREFETCH_POST = {"mosaicml-llm-foundry"}
TE_LOSS = {"megatron-bridge-25.11"}
# Attention without Transformer Engine: llm-foundry's flash-attn, the IBM blog's PyTorch SDPA (its flash
# backend is FlashAttention-2), Meta's Llama 3 stack (trained before FlashAttention-3). The Megatron-Core,
# NeMo and Megatron-Bridge runs use TE, whose auto choice is cuDNN's fused attention on Hopper.
FLASH_ATTENTION_2 = {"mosaicml-llm-foundry", "pytorch-fsdp-blog", "llama3-paper"}
# Before FlashAttention (2022; Megatron-LM took it up in 2023): Megatron-LM's CoreAttention writes the s x s scores to
# HBM around its fused scale-mask-softmax and dropout (the terms Korthikanti et al.'s selective recomputation drops),
# as do the Megatron-DeepSpeed forks MT-NLG (2021) and BLOOM (trained March-July 2022) ran.
UNFUSED = {"megatron-lm-2021", "korthikanti-2022", "mt-nlg", "bloom"}

# Gradients kept and reduced in bf16: NeMo 24.07's Llama 3 FP8 runs set optim.grad_sync_dtype bf16
# (NeMo-Framework-Launcher 24.07, examples/training/llama/h100/llama3_8b_fp8.sh and llama3_70b_fp8.sh);
# Megatron-Bridge 25.11's performance scripts set grad_reduce_in_fp32=False (v0.2.0, scripts/performance/
# llama3_llm_pretrain.py, llama31_llm_pretrain.py). Megatron-LM's own script keeps fp32.
BF16_GRADS = {"nemo-24.07", "megatron-bridge-25.11"}
# Megatron-LM's fp16 training of 2021-2022 kept and reduced fp16 gradients: the papers say "mixed precision", and the
# code's GPT-3 175B example script of the time runs --fp16 without --accumulate-allreduce-grads-in-fp32, which
# arguments.py forced on for bf16 only (Megatron-LM at 2021-04, examples/pretrain_gpt3_175B.sh).
FP16_GRADS = {"megatron-lm-2021", "korthikanti-2022"}
# FP8 runs: Transformer Engine's recipe by the source's precision label (NeMo 24.07: fp8 with amax_history_len
# 1024, delayed scaling; Megatron-Bridge: FP8-CS current scaling, FP8-MX MXFP8), and FP8 parameters where the
# recipe gathers them (Megatron-Bridge's mixed-precision presets set fp8_param_gather=True,
# training/mixed_precision.py at v0.2.0), beside the distributed optimizer or Megatron FSDP (its 1-byte shards).
FP8_RECIPE = {"fp8": "delayed", "fp8-cs": "current", "fp8-mx": "mxfp8"}
# MoE all-to-all overlapped with another micro-batch's compute: the Megatron-Bridge recipes that set moe_a2a_overlap
# (v0.2.0 scripts/performance/configs/qwen3/workload_base_configs.py: Qwen3-235B-A22B on B200 and H100, Qwen3-30B-A3B
# on H100; the B200 FP8-MX config is the FP8-CS one; DeepSeek-V3 sets it on H100 only, not in this survey).
EP_OVERLAP = {"mbridge2511-qwen3-235b-a22b-64xb200-fp8-mx", "mbridge2511-qwen3-235b-a22b-256xh100-fp8-cs",
              "mbridge2511-qwen3-30b-a3b-16xh100-fp8-cs"}
FP8_PARAMS = {"megatron-bridge-25.11"}
# Activation offloading (Megatron-Core's cpu_offloading_num_layers, core 0.5 on, 2024): searched for the runs on
# Megatron-Core, whose recipes use it (Megatron-Bridge v0.2.0 scripts/performance/configs/llama3/
# workload_base_configs.py: Llama 3 70B on GB200 offloads 20-40 layers, on B200 5); the other stacks had none.
OFFLOAD = {"megatron-core-readme", "megatron-core-moe", "nemo-24.07", "megatron-bridge-25.11"}
# What selective recomputation rebuilds, where a recipe names its modules: Megatron-Bridge's DeepSeek-V3 on B200 and
# GB200 recompute MLA's up-projections (v0.2.0 scripts/performance/configs/deepseek/workload_base_configs.py:
# recompute_modules=["mla_up_proj"], under the recipe's selective granularity, recipes/deepseek/deepseek_v3.py).
RECOMPUTE_MODULES = {"mbridge2511-deepseekv3-256xb200-fp8-mx": ("mla_up_proj",),
                     "mbridge2511-deepseekv3-256xgb200-fp8-mx": ("mla_up_proj",),
                     "mbridge2511-deepseekv3-256xgb200-bf16": ("mla_up_proj",),
                     # GB300: the experts' activation (v0.2.0 DEEPSEEK_V3_GB300_BASE_CONFIG: recompute_modules=["moe_act"])
                     "mbridge2511-deepseekv3-256xgb300-fp8-mx": ("moe_act",),
                     "mbridge2511-deepseekv3-256xgb300-bf16": ("moe_act",)}

# The entry's own network text -> GB/s per GPU, one direction (8 GPUs a node in each).
NETWORK = {
    "400 Gbps inter-node, GPUDirect RDMA": 400 / 8 / 8,  # IBM blog, A100 cluster
    "800 Gbps inter-node": 800 / 8 / 8,  # IBM blog, H100 cluster
    "1600 Gbps node-node interconnect (RoCE)": 1600 / 8 / 8,  # llm-foundry's A100 sections
    "Omni-Path (4 OPA links per node, non-blocking fat tree)": 4 * 100 / 8 / 8,  # BLOOM's Jean Zay
}


class Question(NamedTuple):
    case: Case
    cluster: object  # llmcalc.cluster.Cluster
    target: object  # llmcalc.plan.Target
    constraints: object  # llmcalc.plan.Constraints

    @property
    def published(self) -> tuple[int, int, int, int, int]:
        c = self.case
        return c.tp, c.cp, c.pp, c.dp, c.ep


@functools.lru_cache(maxsize=1)
def _networks() -> dict[str, str | None]:
    return {e["id"]: (e.get("interconnect") or {}).get("inter") for e in entries()}


@functools.lru_cache(maxsize=1)
def _precisions() -> dict[str, str]:
    """Each entry's own precision label (Case.dtype folds every FP8 recipe into "fp8")."""
    return {e["id"]: str(e.get("dtype", "")).lower() for e in entries()}


def question(c: Case) -> Question:
    from llmcalc.cluster import cluster_of
    from llmcalc.plan import SEARCHED_ZERO, Constraints, Target
    from llmcalc.presets import load_gpu

    cluster = cluster_of(load_gpu(c.gpu), c.gpus_per_node)
    network = NETWORK.get(_networks()[c.id])
    if network:
        cluster = dataclasses.replace(cluster, inter_bandwidth=network * 1e9)
    fixed = dict(tp=1, pp=1, cp=1) if c.group in PURE_FSDP else dict(cp=1) if c.group in NO_CP else {}
    zeros = (c.zero,)
    if "zero" in c.assumed and c.group in PURE_FSDP:  # PyTorch FSDP's SHARD_GRAD_OP or FULL_SHARD: no ZeRO-1
        zeros = (2, 3)
    elif "zero" in c.assumed:  # searched, within what the framework had (a stated stage is kept as it is)
        zeros = tuple(z for z in SEARCHED_ZERO if not (c.group in NO_ZERO3 and z == 3)
                      and not (c.group in PLAIN_DP and z > 0))
    searched = "recompute" in c.assumed and c.group not in RECOMPUTE_FROM_FLOPS
    cons = Constraints(recompute=RECOMPUTE if searched else (c.recompute,), zero=zeros,
                       sp=None if "sp" in c.assumed else c.sp, tp_overlap=c.group in TP_OVERLAP,
                       tp_async=c.group not in TP_SYNC,
                       tp_overlap_sms=TUNED_UB_SMS.get(c.group, 16),
                       recompute_modules=RECOMPUTE_MODULES.get(c.id, ("core_attn",)),
                       ep_overlap=c.id in EP_OVERLAP,
                       pp_overlap=c.group not in BEFORE_OVERLAP, dp_overlap=c.group not in BEFORE_OVERLAP,
                       micro_batch=c.micro_batch, vpp=1 if c.group in NO_INTERLEAVING else c.vpp, unpipelined=True,
                       loss="fused" if c.group in FUSED_LOSS else "te" if c.group in TE_LOSS else None,
                       attention_kernel=("fa2" if c.group in FLASH_ATTENTION_2 else "unfused" if c.group in UNFUSED
                                         else "auto"),
                       backward_prefetch="post" if c.group in PREFETCH_POST else "pre",
                       grad_reduce="bf16" if c.group in BF16_GRADS else "fp16" if c.group in FP16_GRADS else "fp32",
                       fp8_recipe=FP8_RECIPE.get(_precisions()[c.id], "delayed") if c.dtype == "fp8" else None,
                       fp8_params=c.dtype == "fp8" and c.group in FP8_PARAMS,
                       offload=None if c.group in OFFLOAD else 0, **fixed)
    dtype = "fp16" if c.group in FP16_GRADS else c.dtype  # the same peak as bf16 on the A100s they ran on
    return Question(c, cluster, Target(gpus=c.gpus, seq=c.seq, global_batch=c.global_batch, dtype=dtype), cons)


class Answer(NamedTuple):
    """What the planner says about a published run."""

    rank: int | None  # of the published degrees among the planner's fitting degree tuples (1 = fastest)
    fits: bool  # some variant of the published degrees fits the memory model
    mfu: float | None  # predicted, for the fastest fitting variant of the published degrees
    top: tuple  # the planner's three fastest degree tuples


def answer(q: Question, depth: int = 3) -> Answer:
    from llmcalc.plan import Planner, Ranked
    from llmcalc.trainplan import record

    c = q.case
    p = Planner(c.model, q.cluster, q.target, q.constraints)
    ranked = p.search(depth)
    degrees = [(r.layout.tp, r.layout.cp, r.layout.pp, r.layout.dp, r.layout.ep) for r in ranked]
    fitting = p.fitting(q.published)
    rank = degrees.index(q.published) + 1 if q.published in degrees else None
    mfu = None
    if fitting:  # the published degrees' fastest fitting variant, its MFU by the planner's own record, over
        best = min(fitting, key=lambda lay: p.time(lay).total)  # the BF16 peak as the sources' (FP8 runs too)
        mfu = record(Ranked(best, p.time(best), p.memory(best), p.usable), c.model, q.target,
                     q.cluster.gpu.peak("bf16"))["mfu"]
    return Answer(rank, bool(fitting), mfu, tuple(degrees[:3]))
