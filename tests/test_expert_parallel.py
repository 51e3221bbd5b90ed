"""Expert tensor parallelism (--etp): Megatron-Core's MoE parallel folding (core 0.10+), where each routed
expert is split over etp ranks and the ep x etp ranks sharing a layer's experts come out of its
tp x cp x dp ranks. Hand derivations for Qwen3-30B-A3B: 48 layers, hidden 2048, 128 experts of
3 x 2048 x 768 weights, 8 routed a token."""

from __future__ import annotations

import json
import math

import pytest

from llmcalc import modelcost, steptime
from llmcalc.exposure import dp_exposed, dp_traffic
from llmcalc.memory.activations import local
from llmcalc.memory.placement import layer_params
from llmcalc.plan import Constraints, Planner, Target, etp_choices
from llmcalc.presets import load_model
from llmcalc.spec import Parallelism, SpecError
from llmcalc.steptime import Layout, Links, ModelCost

from .conftest import run

EXPERT = 3 * 2048 * 768  # one Qwen3-30B-A3B expert's weights


def test_etp_defaults_to_tp_and_the_expert_group_folds_over_tp_dp_cp():
    legacy = Parallelism(gpus=16, tp=2, dp=8, ep=8)
    assert legacy.expert_tp == 2 and legacy.expert_replicas == 1  # dp 8 / ep 8
    folded = Parallelism(gpus=16, tp=2, dp=8, ep=16, etp=1)  # EP 16 spans the 2 TP ranks of 8 DP ranks
    assert folded.expert_tp == 1 and folded.expert_replicas == 1  # 2 x 8 / (16 x 1)
    assert Parallelism(gpus=16, tp=2, dp=8, ep=4, etp=1).expert_replicas == 4  # 16 / 4


@pytest.mark.parametrize("kwargs, words", [
    (dict(gpus=16, tp=2, dp=8, ep=16), "--ep 16 must divide dp x cp = 8"),
    (dict(gpus=16, tp=4, dp=4, ep=16, etp=2), "--ep 16 must divide tp / etp x dp x cp = 8"),
    (dict(gpus=16, tp=4, dp=4, etp=3), "--etp 3 must divide --tp 4"),
    (dict(gpus=16, tp=2, dp=8, etp=0), "--etp must be a whole number of at least 1"),
])
def test_impossible_expert_layouts_are_refused(kwargs, words):
    with pytest.raises(SpecError, match=words):
        Parallelism(**kwargs)


def test_an_expert_splits_over_etp_ranks_not_tp():
    m = load_model("qwen3-30b-a3b")
    tp_split = layer_params(m, Parallelism(gpus=16, tp=2, dp=8, ep=8), True)
    whole = layer_params(m, Parallelism(gpus=16, tp=2, dp=8, ep=8, etp=1), True)
    assert tp_split.experts == 128 / 8 * EXPERT / 2
    assert whole.experts == 128 / 8 * EXPERT


def test_lora_adapters_on_experts_split_over_etp_ranks_not_tp():
    """Mixtral 8x7B, rank 16 on every linear, TP 2, EP 2 (4 experts a GPU): the attention adapters split over TP,
    each expert's three (gate and up 4096 -> 14336, down 14336 -> 4096: 3 x 16 x 18432 each) over etp."""
    from llmcalc.memory.placement import lora_params, trainable, whole_model

    m = load_model("mixtral-8x7b")
    targets, stage = trainable(m, "lora", ("all",)), whole_model(m)
    attention = 16 * ((4096 + 4096) * 2 + (4096 + 1024) * 2)  # q and o 4096 -> 4096, k and v 4096 -> 1024
    experts = 4 * 3 * 16 * 18432
    for etp in (1, 2):
        par = Parallelism(gpus=4, tp=2, ep=2, dp=2, etp=etp)
        assert lora_params(m, par, stage, targets, 16) == (32 * attention / 2, 32 * experts / etp)


def test_expert_adapters_states_shard_over_the_expert_data_parallel_ranks():
    """ZeRO-1 over TP 2 x DP 4 with EP 4 and whole experts (etp 1): the dense adapters' fp32 master, m and v
    (12 B each) shard over the 4 DP ranks, the experts' over the 2 ranks that hold the same experts."""
    from llmcalc.memory import MemorySettings, memory_breakdown
    from llmcalc.memory.placement import lora_params, trainable, whole_model

    m = load_model("mixtral-8x7b")
    par = Parallelism(gpus=8, tp=2, dp=4, ep=4, etp=1)
    assert (par.replicas, par.expert_replicas) == (4, 2)
    dense, experts = lora_params(m, par, whole_model(m), trainable(m, "lora", ("all",)), 16)
    assert experts == 32 * 2 * 3 * 16 * 18432  # 2 experts a GPU, 32 layers, 3 linears of 4096 + 14336
    b = memory_breakdown(m, None, MemorySettings(seq=1024, finetune="lora", lora_rank=16, lora_targets=("all",),
                                                 precision="mixed", optimizer="adamw", zero=1, parallel=par))
    optimizer = {r.name: r.value for r in b.rows}["optimizer"]
    assert optimizer == 12 * (math.ceil(dense / 4) + math.ceil(experts / 2))


def test_the_expert_input_is_gathered_over_the_experts_etp_ranks():
    """Megatron's all-to-all dispatcher: each TP rank dispatches its sequence-parallel shard (1/tp of the tokens)
    and an expert split over etp ranks all-gathers theirs: k x h values per token x etp / tp."""
    m = load_model("qwen3-30b-a3b")
    for etp, divisor in ((1, 4), (2, 2), (4, 1)):
        assert local(m, "flash", 4096, 4096, tp=4, sp=True, etp=etp).divisor("x") == divisor
    assert local(m, "flash", 4096, 4096, tp=4, sp=False, etp=1).divisor("x") == 1
    assert local(m, "flash", 4096, 4096, tp=4, sp=True).divisor("x") == 1  # etp defaults to TP's


def test_memory_takes_etp_from_the_command_line():
    args = ("memory", "--model", "qwen3-30b-a3b", "--framework", "megatron", "--gpus", "16", "--tp", "2", "--sp",
            "--zero", "1", "--json")
    folded = run(*args, "--ep", "16", "--etp", "1")
    assert folded.exit_code == 0 and json.loads(folded.stdout)["inputs"]["etp"] == 1
    refused = run(*args, "--ep", "16")
    assert refused.exit_code == 2 and "--etp 1 lets EP span TP" in refused.stderr


COST = ModelCost(layers=4, moe_layers=4, hidden=1000, matmul=24e6, core=2e6, head=100e6, kv=250, top_k=2)
LINKS = Links(peak=1e15, peak16=1e15, hbm=2e12, node_gpus=8, intra=400e9, inter=50e9, efficiency=0.7, attention=0.3)


def test_moe_token_traffic_by_hand():
    """TP 2 with SP, EP 4, 8 GPUs, 1000 tokens: each GPU dispatches its 500 tokens x 2 copies x 1000 x 2 B = 2 MB.
    Experts whole (etp 1): the all-to-all over 4 adjacent ranks keeps 1/4 of it. Split over 2 ranks (etp 2): the
    EP ranks sit 2 apart (still in the node), and each all-gather or reduce-scatter moves the other rank's 2 MB.
    Four of each a layer (dispatch, combine, and their gradients). TP keeps only the attention's pair of linears:
    forward its all-gather and reduce-scatter, backward the output gradient's gather, the input's re-gather and the
    input gradient's scatter, each moving the other rank's 1 MB; none hides (this cost has no q/k/v FLOPs)."""
    lay = Layout(tp=2, pp=1, dp=4, ep=4, sp=True, micro_batch=1, micro_batches=1, etp=1)
    link = 400e9 * 0.75
    a2a = 2e6 * 3 / 4 / link + 15e-6
    whole = steptime.micro_batch(COST, LINKS, lay, 1000)
    assert whole.ep == pytest.approx(4 * 4 * a2a)
    split = steptime.micro_batch(COST, LINKS, lay._replace(etp=2), 1000)
    assert split.ep == pytest.approx(4 * 4 * (a2a + 2e6 / link + 15e-6))
    assert whole.tp == pytest.approx(4 * 5 * (1000 * 1000 * 2 * (1 / 2) / link + 15e-6))


def test_expert_gradients_reduce_over_the_expert_data_parallel_ranks():
    """1 GB of expert gradients, fp32 reduce-scatter and 16-bit all-gather, exposed: TP 2 x DP 8 with EP 4 and whole
    experts leaves 4 replicas of each expert (16 / (4 x 1)), 4 x 1 ranks apart: two in each 8-GPU node, so two
    NICs at 50 GB/s; split over TP's 2 ranks, 16 / (4 x 2) = 2 replicas, 8 ranks apart: one NIC."""
    lay = Layout(tp=2, pp=1, dp=8, ep=4, sp=True, micro_batch=1, micro_batches=1, etp=1, zero=1, dp_overlap=False)
    two = 2 * 50e9 * 0.75
    folded = dp_exposed(lay, dp_traffic(lay, LINKS, (0.0, 1e9)), 1.0, 1.0)
    assert folded == pytest.approx(3 / 4 * 1e9 * 4 / two + 30e-6 + 3 / 4 * 1e9 * 2 / two + 30e-6)
    legacy = dp_exposed(lay._replace(etp=2), dp_traffic(lay._replace(etp=2), LINKS, (0.0, 1e9)), 1.0, 1.0)
    across = 50e9 * 0.75  # one rank of the group a node: one NIC
    assert legacy == pytest.approx(1 / 2 * 1e9 * 4 / across + 30e-6 + 1 / 2 * 1e9 * 2 / across + 30e-6)


def test_the_planner_searches_whole_experts_beside_tp_split_ones():
    m = load_model("qwen3-30b-a3b")
    assert etp_choices(m, 4, Constraints()) == [4, 1]
    assert etp_choices(m, 4, Constraints(etp=2)) == [2] and etp_choices(m, 3, Constraints(etp=2)) == []
    assert etp_choices(load_model("llama-3.1-8b"), 4, Constraints()) == [4]
    from llmcalc.cluster import load_cluster

    p = Planner(m, load_cluster("2xdgx-h100"), Target(gpus=16, seq=4096, global_batch=64),
                Constraints(tp=2, ep=16))
    ranked = p.search(3)
    assert ranked and all(r.layout.expert_tp == 1 and r.layout.ep == 16 for r in ranked)  # only EP 16 x etp 1 folds
    out = run("plan", "--model", "qwen3-30b-a3b", "--cluster", "dgx-h100", "--nodes", "2", "--seq", "4k",
              "--global-batch", "64", "--tp", "2", "--ep", "16", "--json")
    best = json.loads(out.stdout)["summary"]["layouts"][0]
    assert out.exit_code == 0 and best["etp"] == 1 and "etp1" in best["layout"]


def test_overlapped_moe_traffic_costs_what_outlasts_the_paired_compute():
    """Megatron-Core's overlap_moe_expert_parallel_comm: a micro-batch's all-to-alls run under another's compute
    (3 x the layers' forward: GEMMs, attention, memory-bound kernels), so only the excess stays; Megatron refuses
    it under full recomputation and in a pipeline without virtual stages, where all of it stays."""
    slow = LINKS._replace(intra=4e9)  # a link slow enough that the traffic outlasts the compute
    lay = Layout(tp=1, pp=1, dp=8, ep=8, micro_batch=1, micro_batches=1, etp=1)
    plain = steptime.micro_batch(COST, slow, lay, 1000)
    hidden = steptime.micro_batch(COST, slow, lay._replace(ep_overlap=True), 1000)
    compute = 3 * (plain.gemm + plain.attention + plain.elementwise)
    assert plain.ep > compute and hidden.ep == pytest.approx(plain.ep - compute)
    assert steptime.micro_batch(COST, LINKS, lay._replace(ep_overlap=True), 1000).ep == 0  # NVLink: all hidden
    full = lay._replace(recompute="full")
    assert steptime.micro_batch(COST, slow, full._replace(ep_overlap=True), 1000).ep == \
        steptime.micro_batch(COST, slow, full, 1000).ep
    plain_pp = lay._replace(pp=2, dp=4, ep=4)
    assert steptime.micro_batch(COST, slow, plain_pp._replace(ep_overlap=True), 1000).ep == \
        steptime.micro_batch(COST, slow, plain_pp, 1000).ep


def test_overlap_pairs_micro_batches_so_the_unpaired_passes_stay_exposed():
    """combined_1f1b pairs micro-batch i's backward with i+1's forward: one micro-batch leaves nothing hidden, m of
    them hide m - 1 micro-batches' worth; interleaved, only the steady phase pairs, and the first stage's warm-up
    runs its chunk forwards alone, as many cool-down backwards: Megatron-Core's 2(p - 1) + (v - 1)p and the one the
    overlap adds (p 4, v 2: 6 + 4 + 1 = 11 chunks of half a micro-batch, 5.5 micro-batches)."""
    slow = LINKS._replace(intra=4e9)
    lay = Layout(tp=1, pp=1, dp=8, ep=8, micro_batch=1, micro_batches=1, etp=1, ep_overlap=True)
    mb = steptime.micro_batch(COST, slow, lay, 1000)
    alone = steptime.micro_batch(COST, slow, lay._replace(ep_overlap=False), 1000).ep
    assert mb.ep_alone == alone > mb.ep
    assert steptime.step_time(COST, slow, lay, 1000, (0.0, 0.0), mb).ep == pytest.approx(alone)
    eight = lay._replace(micro_batches=8)
    assert steptime.step_time(COST, slow, eight, 1000, (0.0, 0.0), mb).ep == pytest.approx(7 * mb.ep + alone)
    piped = lay._replace(pp=4, vpp=2, dp=2, ep=2, micro_batches=8)
    mb = steptime.micro_batch(COST, slow, piped, 1000)
    assert steptime.step_time(COST, slow, piped, 1000, (0.0, 0.0), mb).ep == \
        pytest.approx(8 * mb.ep + 5.5 * (mb.ep_alone - mb.ep))
    # the first stage holds that extra warm-up chunk's activations too: 11 + 1 running chunks, 6 micro-batches
    from llmcalc.plan import in_flight

    assert in_flight(piped, 0) == 6 and in_flight(piped._replace(ep_overlap=False), 0) == 5.5


def test_without_ep_or_with_a_shared_expert_the_mlps_tp_collectives_stay():
    """EP 1: Megatron's dispatcher gathers an MoE layer's tokens over TP and scatters them back, synchronous both
    ways (4 one-way collectives a layer), and there is no EP traffic; a shared expert (DeepSeek) keeps its own pair
    of TP linears beside the routed experts' all-to-all. With SP and no GEMM FLOPs to hide under (this cost has
    none), a pair of linears takes 5 (forward gather and scatter; backward gather, re-gather and scatter)."""
    link = 400e9 * 0.75
    one = 1000 * 1000 * 2 * (1 / 2) / link + 15e-6  # one all-gather's or reduce-scatter's worth over TP 2
    lay = Layout(tp=2, pp=1, dp=4, ep=1, sp=True, micro_batch=1, micro_batches=1)
    no_ep = steptime.micro_batch(COST, LINKS, lay, 1000)
    assert no_ep.ep == 0 and no_ep.tp == pytest.approx(4 * (5 + 4) * one)
    shared = steptime.micro_batch(COST._replace(shared=True), LINKS, lay._replace(ep=4, etp=1), 1000)
    assert shared.tp == pytest.approx(4 * (5 + 5) * one) and shared.ep > 0
    both = steptime.micro_batch(COST._replace(shared=True), LINKS, lay, 1000)
    assert both.tp == pytest.approx(4 * (5 + 5 + 4) * one)  # EP 1 with a shared expert: the dispatcher's too
    # whole experts on every rank (etp 1, EP 1): each rank runs its own sequence shard through them, nothing moves
    assert steptime.micro_batch(COST, LINKS, lay._replace(etp=1), 1000).tp == pytest.approx(4 * 5 * one)
    # userbuffers overlap the linears' collectives, not the dispatcher's
    overlapped = steptime.micro_batch(COST, LINKS, lay._replace(tp_overlap=True), 1000)
    assert overlapped.tp == pytest.approx(4 * (0.3 * 2 * 2 * one + 4 * one))
    assert modelcost.model_cost(load_model("deepseek-v3"), 4096).shared
    assert not modelcost.model_cost(load_model("qwen3-30b-a3b"), 4096).shared


def test_a_dense_model_refuses_etp():
    dense = load_model("llama-3.2-1b")
    with pytest.raises(SpecError, match="--etp splits routed experts; llama-3.2-1b is dense"):
        Planner(dense, load_cluster_for_tests(), Target(gpus=8, seq=2048, global_batch=64), Constraints(tp=2, etp=1))
    out = run("memory", "--model", "llama-3.2-1b", "--gpus", "2", "--tp", "2", "--etp", "1")
    assert out.exit_code == 2 and "is dense" in out.stderr


def load_cluster_for_tests():
    from llmcalc.cluster import load_cluster

    return load_cluster("dgx-h100")


def test_a_degree_tuple_stays_when_only_whole_experts_fit():
    """Qwen3-30B-A3B at 16k on two DGX H100 nodes, TP 4 x EP 2, no recomputation: TP-split experts gather four
    ranks' tokens and do not fit, whole ones do; the search must judge the tuple by its leanest of each split."""
    from llmcalc.cluster import load_cluster

    p = Planner(load_model("qwen3-30b-a3b"), load_cluster("2xdgx-h100"), Target(gpus=16, seq=16384, global_batch=256),
                Constraints(tp=4, pp=1, ep=2, recompute=("none",)))
    ranked = {(r.layout.tp, r.layout.cp, r.layout.dp, r.layout.ep): r.layout for r in p.search(5)}
    assert ranked[(4, 1, 4, 2)].expert_tp == 1


def test_the_busiest_pipeline_rank_is_judged_by_all_it_does():
    """DeepSeek-V3's 61 layers over 32 stages: middle ranks hold 2 (both MoE), the last 1 beside the LM head. The
    head's GEMM alone outweighs a layer's GEMMs and attention, but each MoE layer also carries 256 / 8 = 32 experts'
    fixed work (32 x 0.4 ms = 12.8 ms a micro-batch) and its all-to-all, so the middle rank is the one a step waits
    for (found by a user audit: the last rank was timed)."""
    from llmcalc.cluster import cluster_of
    from llmcalc.plan import links_of
    from llmcalc.presets import load_gpu

    m = load_model("deepseek-v3")
    links = links_of(cluster_of(load_gpu("h100")), "bf16")
    lay = Layout(tp=2, pp=32, dp=4, ep=8, etp=1, zero=1, micro_batch=1, micro_batches=256, sp=True)
    cost = modelcost.model_cost(m, 4096)
    mb = steptime.micro_batch(cost, links, lay, 4096)
    assert (mb.moe_layers, mb.head) == (2, 0.0)
    assert mb.experts == pytest.approx(2 * 32 * steptime.EXPERT_OVERHEAD)
    last = steptime.micro_batch(cost._replace(layers=32), links, lay, 4096)  # 32 layers: an even split, 1 each
    assert last.moe_layers == 1 and last.head > 0 and mb.total > last.total
