"""`plan`: the step-time model by hand, the memory pieces against the memory model, the search's
invariants, and the command through the real CLI (published runs: test_plan_published.py)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from llmcalc import modelcost, steptime
from llmcalc.collectives import link
from llmcalc.memory.pieces import stage_pieces
from llmcalc.memory.placement import stages
from llmcalc.memory.saved import in_flight
from llmcalc.memory.settings import MemorySettings
from llmcalc.memory.training import train_stage
from llmcalc.plan import Constraints, Planner, Target
from llmcalc.presets import load_gpu, load_model
from llmcalc.spec import Parallelism
from llmcalc.steptime import Layout, Links, ModelCost
from llmcalc.fewest import smallest_fit

from .conftest import run, run_json


# -- the step-time model, by hand ------------------------------------------------------------------

COST = ModelCost(layers=4, moe_layers=0, hidden=1000, matmul=24e6, core=2e6, head=100e6, kv=250, top_k=0)
LINKS = Links(peak=1e15, peak16=1e15, hbm=2e12, node_gpus=8, intra=400e9, inter=50e9, efficiency=0.7, attention=0.3)


def test_one_step_by_hand():
    """TP 2 x PP 2 x DP 2 on one node, 4 micro-batches of one 1000-token sequence, sequence parallel, ZeRO-1."""
    lay = Layout(tp=2, pp=2, dp=2, micro_batch=1, micro_batches=4, sp=True, zero=1)
    # of the 24 MFLOP a token a layer, q/k/v 6 and the MLP's gate and up 8; the norms and residual adds move 20 B a width
    cost = COST._replace(attn_in=6e6, dense_in=8e6, norm_bytes=20 * 1000)
    t = steptime.step_time(cost, LINKS, lay, seq=1000, grads=(1e9, 0.0))
    tokens, layers = 1000, 2  # per micro-batch; 4 layers over 2 stages
    # forward: GEMMs at 70% of 1 PFLOP/s, attention at 30%, memory-bound kernels at 90% of 2 TB/s: those inside TP's
    # regions moving ELEMENTWISE_TRAFFIC x Korthikanti's 24 h / t bytes a token a layer, the norms and residual adds
    # 20 h / t (split by SP); the last stage (2 layers and the LM head) is the busiest
    gemm = tokens * layers * 24e6 / 2 / 0.7e15
    attention = tokens * layers * 2e6 / 2 / 0.3e15
    elementwise = tokens * layers * 1000 * (24 / 2 * steptime.ELEMENTWISE_TRAFFIC + 20 / 2) / (2e12 * 0.9)
    head = tokens * 100e6 / 2 / 0.7e15
    compute = 3 * (gemm + attention + elementwise) + 3 * head  # backward = 2 x forward
    # TP: per layer two pairs of linears (attention's, MLP's). Forward, each pair's all-gather and reduce-scatter, each
    # (t-1)/t of the 2-byte activation over NVLink at 75% (a half) + 15 us, exposed. Backward, the output
    # gradient's all-gather exposed; the input's re-gather and the input gradient's reduce-scatter under the pair's
    # column-parallel GEMMs (data and weight gradients, each its forward's FLOPs), what outlasts them exposed
    half = tokens * 1000 * 2 * (1 / 2) / (400e9 * 0.75)
    forward = 2 * 2 * (half + 15e-6)
    backward = sum(half + 15e-6 + 2 * max(0.0, half + 15e-6 - tokens * flops / 2 / 0.7e15) for flops in (6e6, 8e6))
    tp = layers * (forward + backward)
    assert t.compute == pytest.approx(4 * compute)
    assert t.tp == pytest.approx(4 * tp)
    # without SP: an all-reduce a pair each way; synchronous, all four exposed; async, the backward's under the GEMMs
    plain = lay._replace(sp=False)
    assert steptime.step_time(cost, LINKS, plain._replace(tp_async=False), 1000, (1e9, 0.0)).tp == \
        pytest.approx(4 * layers * 4 * (2 * half + 15e-6))
    assert steptime.step_time(cost, LINKS, plain, 1000, (1e9, 0.0)).tp == pytest.approx(4 * layers * (
        2 * (2 * half + 15e-6) + sum(max(0.0, 2 * half + 15e-6 - tokens * f / 2 / 0.7e15) for f in (6e6, 8e6))))
    # with SP the backward overlaps whatever tp_async says (Megatron's SP always re-gathers its input so)
    assert steptime.step_time(cost, LINKS, lay._replace(tp_async=False), 1000, (1e9, 0.0)).tp == t.tp
    # the bubble: (p - 1) / v of one micro-batch's time (Narayanan et al. 2021)
    assert t.bubble == pytest.approx((2 - 1) / 1 * (compute + tp))
    # PP: activation and gradient, each TP rank sending its half, per micro-batch
    assert t.pp == pytest.approx(4 * 2 * (tokens * 1000 * 2 / 2 / (400e9 * 0.75) + 15e-6))
    # DP over 2 ranks: the fp32 gradients' reduce-scatter (1/2 of 4 GB) under the last backward, the
    # 16-bit parameters' all-gather (1/2 of 2 GB) under the next step's first forward
    reduce = 0.5 * 1e9 * 4 / (400e9 * 0.75) + 15e-6
    gather = 0.5 * 1e9 * 2 / (400e9 * 0.75) + 15e-6
    assert t.dp == pytest.approx(max(reduce - 2 / 3 * compute, 0.1 * reduce) + max(gather - compute / 3, 0.1 * gather))
    assert t.recompute == t.cp == t.ep == 0
    # the optimizer: Adam over ZeRO-1's half of the 1e9 parameters, 36 B + the 2-byte model copy each, and the whole
    # fp32 gradient buffer's NaN check and zeroing (2 x 4 B a parameter), at 90% of 2 TB/s
    assert t.optimizer == pytest.approx((0.5e9 * (36 + 2) + 1e9 * 2 * 4) / (2e12 * 0.9))
    assert t.total == pytest.approx(sum(t))


def test_interleaving_divides_the_bubble_and_recomputation_repeats_the_forward():
    base = Layout(tp=1, pp=4, dp=1, micro_batch=1, micro_batches=8)
    one = steptime.step_time(COST, LINKS, base, 1000, (1e9, 0.0))
    two = steptime.step_time(COST._replace(layers=8), LINKS, base._replace(vpp=2), 1000, (1e9, 0.0))
    per_mb = one.compute / 8
    assert one.bubble == pytest.approx(3 * per_mb)  # (p - 1) micro-batches
    layers8 = steptime.step_time(COST._replace(layers=8), LINKS, base, 1000, (1e9, 0.0))
    assert two.bubble == pytest.approx(layers8.bubble / 2)  # (p - 1) / v
    full = steptime.step_time(COST, LINKS, base._replace(recompute="full"), 1000, (1e9, 0.0))
    assert full.recompute == pytest.approx(one.compute / 3 - 8 * (1000 * 100e6 / 0.7e15))  # forward without the head


def test_interleaved_sends_run_under_the_next_chunk_unless_told_otherwise():
    """Megatron's overlap_p2p_comm (default since 2023-10, interleaved schedule only): a send costs only what
    outlasts the next chunk's forward, (GEMMs + attention + memory-bound kernels) / v; plain 1F1B and
    --no-pp-overlap pay every send."""
    slow = LINKS._replace(inter=1e9)  # a slow network, so that a send outlasts a chunk
    lay = Layout(tp=1, pp=2, dp=8, vpp=2, micro_batch=1, micro_batches=4)
    mb = steptime.micro_batch(COST, slow, lay, 1000)
    chunk = (mb.gemm + mb.attention + mb.elementwise) / 2
    assert mb.send > chunk
    assert steptime.step_time(COST, slow, lay, 1000, (1e9, 0.0)).pp == pytest.approx(4 * 2 * 2 * (mb.send - chunk))
    exposed = steptime.step_time(COST, slow, lay._replace(pp_overlap=False), 1000, (1e9, 0.0)).pp
    assert exposed == pytest.approx(4 * 2 * 2 * mb.send)
    plain = lay._replace(vpp=1)
    assert steptime.step_time(COST, slow, plain, 1000, (1e9, 0.0)).pp == pytest.approx(
        4 * 2 * steptime.micro_batch(COST, slow, plain, 1000).send)


def test_without_dp_overlap_every_reduction_is_exposed():
    """Megatron-LM before --overlap-grad-reduce (2023-08): ZeRO 0's all-reduce (reduce-scatter + all-gather of
    the fp32 gradients) and ZeRO 1's reduce-scatter and 16-bit all-gather, all after or before the compute."""
    lay = Layout(tp=2, pp=2, dp=2, micro_batch=1, micro_batches=4, sp=True, zero=1, dp_overlap=False)
    reduce = 0.5 * 1e9 * 4 / (400e9 * 0.75) + 15e-6
    gather = 0.5 * 1e9 * 2 / (400e9 * 0.75) + 15e-6
    assert steptime.step_time(COST, LINKS, lay, 1000, (1e9, 0.0)).dp == pytest.approx(reduce + gather)
    zero0 = steptime.step_time(COST, LINKS, lay._replace(zero=0), 1000, (1e9, 0.0))
    assert zero0.dp == pytest.approx(2 * reduce)
    overlapped = steptime.step_time(COST, LINKS, lay._replace(dp_overlap=True), 1000, (1e9, 0.0))
    assert overlapped.dp < reduce + gather


def test_fsdp_backward_post_exposes_the_backward_all_gathers():
    """ZeRO-3 over 8 GPUs of one node, 3 micro-batches, 1e7 values in 4 layers: each micro-batch gathers the 16-bit
    parameters twice and reduce-scatters the fp32 gradients. Prefetched (BACKWARD_PRE) they hide under its compute
    but for its edges: the first layer's forward gather, which nothing precedes, and the last layer's reduce-scatter,
    which nothing follows, a quarter of each a micro-batch; with BACKWARD_POST each backward gather waits in full, the
    forward gather and the reduce-scatter still hide (but their edges). With 1e9 values the link binds: the three
    collectives outlast each micro-batch either way, and post costs what pre does."""
    lay = Layout(tp=1, pp=1, dp=8, micro_batch=1, micro_batches=3, zero=3)
    post_lay = lay._replace(backward_prefetch="post")
    bw = 400e9 * 0.75
    reduce, gather = 7 / 8 * 1e7 * 4 / bw + 15e-6, 7 / 8 * 1e7 * 2 / bw + 15e-6
    each = 2 * gather + reduce
    mb = steptime.micro_batch(COST, LINKS, lay, 1000)
    assert each < mb.total  # so that everything can hide
    edges = 3 * (gather + reduce) / 4  # 3 micro-batches x one of 4 layers' gather and reduce-scatter
    assert edges > 0.1 * each  # above the step's floor, DP_EXPOSED_FLOOR of one micro-batch's traffic
    assert steptime.step_time(COST, LINKS, lay, 1000, (1e7, 0.0)).dp == pytest.approx(edges)
    post = steptime.step_time(COST, LINKS, post_lay, 1000, (1e7, 0.0))
    assert post.dp == pytest.approx(3 * gather + edges)
    big_reduce, big_gather = 7 / 8 * 1e9 * 4 / bw + 15e-6, 7 / 8 * 1e9 * 2 / bw + 15e-6
    big_each = 2 * big_gather + big_reduce
    assert big_gather + big_reduce > mb.total
    bound = steptime.step_time(COST, LINKS, lay, 1000, (1e9, 0.0)).dp
    assert bound == pytest.approx(3 * (big_each - mb.total) + 3 * (big_gather + big_reduce) / 4)
    assert steptime.step_time(COST, LINKS, post_lay, 1000, (1e9, 0.0)).dp == pytest.approx(bound)
    zero1 = lay._replace(zero=1, backward_prefetch="post")  # ZeRO 0-2 gather once a step: nothing to prefetch
    assert steptime.step_time(COST, LINKS, zero1, 1000, (1e7, 0.0)).dp == \
        steptime.step_time(COST, LINKS, zero1._replace(backward_prefetch="pre"), 1000, (1e7, 0.0)).dp


def test_the_backward_prefetch_option_reaches_the_plan_and_is_checked():
    """--backward-prefetch post slows the FSDP layouts (only them) and names itself in the conventions and the
    dp_comm formula; a typo exits 2 with one line; where ZeRO-3 is not searched it says it has no effect."""
    base = ("plan", "--model", "llama-2-13b", "--gpu", "h100", "--gpus", "8", "--seq", "2048", "--global-batch",
            "16", "--zero", "3", "--recompute", "none", "--micro-batch", "2")
    pre, post = run_json(*base), run_json(*base, "--backward-prefetch", "post")
    assert post["summary"]["step_time"] > pre["summary"]["step_time"]
    mixed = (*base[:-6], "--zero", "1,3", "--recompute", "none", "--micro-batch", "2", "--tp", "2")
    zero1 = [{x["layout"]: x["step_time"] for x in run_json(*mixed, *more)["summary"]["layouts"] if "zero1" in x["layout"]}
             for more in ((), ("--backward-prefetch", "post"))]
    both = zero1[0].keys() & zero1[1].keys()
    assert both and all(zero1[0][k] == zero1[1][k] for k in both)
    text = " ".join(run(*base, "--backward-prefetch", "post", "--explain").stdout.split())
    assert "ZeRO-3's backward all-gathers exposed (BACKWARD_POST)" in text
    assert "the backward's all-gathers exposed (BACKWARD_POST)" in text
    bad = run(*base, "--backward-prefetch", "later")
    assert bad.exit_code == 2 and "later" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    from llmcalc.cli.common import UnusedOption

    with pytest.warns(UnusedOption, match="--backward-prefetch has no effect unless ZeRO-3 is searched"):
        assert run(*base[:-6], "--zero", "1", "--backward-prefetch", "post").exit_code == 0
    with pytest.warns(UnusedOption, match="--backward-prefetch has no effect unless ZeRO-3 is searched"):
        assert run(*base[:-6], "--zero", "1,3", "--pp", "2", "--backward-prefetch", "post").exit_code == 0


def test_a_switchless_mesh_gives_a_group_one_link_per_peer():
    """An MI300X node is a full mesh of 64 GB/s Infinity Fabric links, one direction, no switch: RCCL runs r - 1
    rings over disjoint links for r ranks, so TP 2 gets 64 GB/s and TP 8 all seven links (448), where an NVSwitch
    gives any group the whole 450; a pipeline send has one link. The serving model's all-reduce takes the same."""
    from llmcalc.presets import load_gpu

    mesh = LINKS._replace(intra=448e9, peer=64e9)
    assert link(2, 1, mesh)[0] == pytest.approx(64e9 * 0.75) and link(8, 1, mesh)[0] == pytest.approx(448e9 * 0.75)
    assert link(4, 2, mesh)[0] == pytest.approx(3 * 64e9 * 0.75)  # 4 ranks 2 apart, all inside the node
    assert link(4, 2, mesh, rings=False)[0] == pytest.approx(64e9 * 0.75)
    assert link(2, 1, LINKS)[0] == link(8, 1, LINKS)[0] == pytest.approx(400e9 * 0.75)  # a switch: all of it
    mi300x = load_gpu("mi300x")
    assert [mi300x.collective_bandwidth(r) for r in (1, 2, 4, 8)] == [448e9, 64e9, 192e9, 448e9]
    assert load_gpu("h100").collective_bandwidth(2) == 450e9
    tp2 = steptime.micro_batch(COST, mesh, Layout(tp=2, pp=1, dp=1, sp=True, micro_batch=1), 1000).tp
    assert tp2 == pytest.approx(steptime.micro_batch(COST, LINKS._replace(intra=64e9), Layout(
        tp=2, pp=1, dp=1, sp=True, micro_batch=1), 1000).tp)


def test_collectives_leave_the_node_at_the_network_times_the_ranks_a_node_holds():
    """DP over 16 GPUs with TP 1: 8 ranks a node, 8 NICs at once; with TP 8, one rank a node, one NIC."""
    wide = Layout(tp=1, pp=1, dp=16, micro_batches=1, zero=0)
    narrow = Layout(tp=8, pp=1, dp=2, micro_batches=1, zero=0)
    assert link(16, 1, LINKS)[0] == pytest.approx(min(400e9, 8 * 50e9) * 0.75)
    assert link(2, 8, LINKS)[0] == pytest.approx(50e9 * 0.75)
    assert link(4, 2, LINKS)[0] == pytest.approx(400e9 * 0.75)  # 8 GPUs: inside the node
    assert wide.dp * wide.tp == narrow.dp * narrow.tp == 16


def test_fp8_speeds_up_the_gemms_only():
    """Attention and the LM head stay 16-bit under an fp8 recipe (Transformer Engine)."""
    fp8 = LINKS._replace(peak=2e15, efficiency=0.7 * 0.45 / 0.65)
    lay = Layout(tp=1, pp=1, dp=1, micro_batches=1)
    a, b = steptime.micro_batch(COST, LINKS, lay, 1000), steptime.micro_batch(COST, fp8, lay, 1000)
    assert b.attention == a.attention and b.head == a.head and b.elementwise == a.elementwise
    assert b.gemm == pytest.approx(a.gemm * 0.7e15 / (2e15 * 0.7 * 0.45 / 0.65))


def test_routed_experts_take_their_weights_traffic_where_few_tokens_reach_each():
    """64 experts of 4M weights a layer, 2 routed per token, 1000 tokens: without EP each expert sees
    1000 x 2 / 64 = 31 tokens, so reading its weights (forward, data gradient) and adding into its fp32 main
    gradient (read + write) outlast its FLOPs; with EP 8 a GPU holds 8 experts and the FLOPs win again.
    The dense 12M weights stay compute bound (their FLOPs take 2 x 1000 x 12M / 0.7 PFLOP/s = 34 us)."""
    moe = COST._replace(moe_layers=4, top_k=2, matmul=24e6 + 16e6, experts=16e6, weights=12e6,
                        expert_weights=64 * 4e6)
    big = LINKS._replace(hbm=20e12)  # fast enough that the dense weights' traffic never binds
    hbm = 20e12 * 0.9
    dense = 1000 * 24e6 / 0.7e15
    experts = 1000 * 16e6 / 0.7e15  # 23 us of expert FLOPs a layer
    read, accumulate = 256e6 * 2 / hbm, 256e6 * 2 * 4 / hbm  # 28 us, 114 us
    assert read > experts and accumulate > experts
    lay = Layout(tp=1, pp=1, dp=8, micro_batch=1, micro_batches=1)
    mb = steptime.micro_batch(moe, big, lay, 1000)
    assert mb.gemm == pytest.approx(4 * (dense + (2 * read + accumulate) / 3))
    wide = steptime.micro_batch(moe, big, lay._replace(ep=8), 1000)
    assert wide.gemm == pytest.approx(4 * (dense + experts))  # 1/8 of the traffic: 3.6 and 14 us
    fp8 = steptime.micro_batch(moe, big._replace(weight_bytes=1), lay._replace(grad_bytes=2), 1000)
    # FP8 copies and bf16 main gradients: reading (14 us) falls below the FLOPs, accumulating (57 us) does not
    assert fp8.gemm == pytest.approx(4 * (dense + (2 * experts + accumulate / 2) / 3))


def test_the_loss_passes_over_the_logits_at_hbm_speed():
    """Megatron's vocab-parallel cross-entropy moves 52 bytes a logit (bf16 read + fp32 write 6, max 4, subtract
    8, exp 8, sum 4, divide 8; backward scale 8, cast back 6); TE's fused loss 10. Llama-3-8B's 128,256-word
    vocabulary, 1000 tokens on one GPU at 90% of 2 TB/s: a third counted in the forward LM head (compute = 3x)."""
    m = load_model("llama-3-8b")
    assert modelcost.model_cost(m, 4096).loss == 128256 * (6 + 4 + 8 + 8 + 4 + 8 + 8 + 6)
    assert modelcost.model_cost(m, 4096, "te").loss == 128256 * 10
    lossy = COST._replace(loss=128256 * 52)
    lay = Layout(tp=1, pp=1, dp=1, micro_batch=1, micro_batches=1)
    head = steptime.micro_batch(lossy, LINKS, lay, 1000).head
    assert head == pytest.approx(1000 * 100e6 / 0.7e15 + 1000 * 128256 * 52 / 3 / (2e12 * 0.9))


def test_an_all_to_all_across_nodes_leaves_through_each_gpus_own_nic():
    """EP 16 over two 8-GPU nodes: each GPU keeps 1/16 of its dispatch, sends 7/16 over NVLink and 8/16
    through its NIC at 50 GB/s (an all-to-all aggregates no rings), + 30 us; EP 8 stays inside the node."""
    moe = COST._replace(moe_layers=4, top_k=2)
    lay = Layout(tp=1, pp=1, dp=16, ep=16, micro_batch=1, micro_batches=1)
    sent = 1000 * 2 * 1000 * 2  # tokens x top_k x hidden x 2 bytes
    across = sent * 8 / 16 / (50e9 * 0.75) + 30e-6
    assert steptime.micro_batch(moe, LINKS, lay, 1000).ep == pytest.approx(4 * 4 * across)
    inside = sent * 7 / 8 / (400e9 * 0.75) + 15e-6
    assert steptime.micro_batch(moe, LINKS, lay._replace(dp=8, ep=8), 1000).ep == pytest.approx(4 * 4 * inside)


def test_overlapped_tp_gemms_share_the_sms_with_userbuffers():
    """--tp-overlap: Transformer Engine's userbuffers kernels hold 16 SMs (TE 2.8's num_sm for its pipelined and bulk
    overlaps), and the GEMMs under them (proj and fc2 forward, qkv and fc1 data and weight gradients: 0.35 of the
    forward's FLOPs, 0.55 of all three passes' for Llama 3 70B) run on the other 116 of an H100's 132, 132/116 as
    long. Not without overlap, at TP 1, or where the GPU preset gives no SM count."""
    lay = Layout(tp=2, pp=1, dp=4, micro_batch=1, micro_batches=1, sp=True)
    plain = steptime.micro_batch(COST, LINKS._replace(sms=132), lay, 1000)
    shared = steptime.micro_batch(COST, LINKS._replace(sms=132), lay._replace(tp_overlap=True), 1000)
    assert steptime.UB_SMS == 16
    assert shared.gemm == pytest.approx(plain.gemm * (1 + 0.55 * (132 / 116 - 1)))  # 1.076
    assert shared.gemm_forward == pytest.approx(plain.gemm_forward * (1 + 0.35 * 16 / 116))  # 1.048
    assert steptime.micro_batch(COST, LINKS, lay._replace(tp_overlap=True), 1000).gemm == plain.gemm  # no sm_count
    single = lay._replace(tp=1, dp=8, sp=False)
    assert (steptime.micro_batch(COST, LINKS._replace(sms=132), single._replace(tp_overlap=True), 1000).gemm
            == steptime.micro_batch(COST, LINKS._replace(sms=132), single, 1000).gemm)
    assert load_gpu("h100").sm_count == 132 and load_gpu("b200").sm_count == 148 and load_gpu("a100").sm_count == 108
    tuned = steptime.micro_batch(COST, LINKS._replace(sms=132, ub_sms=4), lay._replace(tp_overlap=True), 1000)
    assert tuned.gemm == pytest.approx(plain.gemm * (1 + 0.55 * 4 / 128))  # a recipe's own config: --tp-overlap-sms 4
    from llmcalc.cluster import cluster_of
    from llmcalc.plan import links_of

    links = links_of(cluster_of(load_gpu("h100")), "bf16", ub_sms=4)
    assert (links.sms, links.ub_sms) == (132, 4) and links_of(cluster_of(load_gpu("l40s")), "bf16").sms == 0
    with pytest.warns(UserWarning, match="--tp-overlap-sms has no effect without --tp-overlap"):
        run("plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--gpus", "8", "--tp-overlap-sms", "4", "--top", "1")


def test_selective_recomputation_repeats_the_modules_named():
    """--recompute-modules: selective recomputation repeats what it names. DeepSeek-V3's mla_up_proj is the q_b
    (1536 x 128 heads x 192) and kv_b (512 x 128 x (128 + 128)) GEMMs, 2 x (37,748,736 + 16,777,216) FLOPs a token
    a layer; moe_act the experts' fused SwiGLU, 8 copies x (2 x 2048 read + 2048 written) x 2 B = 98,304 B a token
    of each of the 58 MoE layers, averaged over the 61; core_attn (the default) the attention core."""
    m = load_model("deepseek-v3")
    up = modelcost.model_cost(m, 4096, modules=("mla_up_proj",))
    assert up.redo_matmul == 2 * (37_748_736 + 16_777_216) and not up.redo_core and up.redo_bytes == 0
    act = modelcost.model_cost(m, 4096, modules=("core_attn", "moe_act"))
    assert act.redo_bytes == pytest.approx(98_304 * 58 / 61) and act.redo_core and act.redo_matmul == 0
    lay = Layout(tp=2, pp=1, dp=4, micro_batch=1, micro_batches=1, sp=True, recompute="selective")
    cost = COST._replace(redo_core=False, redo_matmul=1e6, redo_bytes=4e3)
    mb = steptime.micro_batch(cost, LINKS, lay, 1000)
    assert mb.redo == pytest.approx(1000 * 4 * (1e6 / 2 / 0.7e15 + 4e3 / 2 / (2e12 * 0.9)))
    assert steptime.micro_batch(COST, LINKS, lay, 1000).redo == pytest.approx(mb.attention)  # core_attn
    assert modelcost.model_cost(m, 4096).redo_core  # the default rebuilds the attention core


def test_the_planner_fits_deepseek_v3_as_its_recipe_recomputes():
    """Megatron-Bridge's DeepSeek-V3 BF16 on 256 GB200s (TP 1, PP 4 x VPP 4, EP 64) recomputes MLA's up-projections:
    with them the published layout fits under selective recomputation, without them only with full."""
    base = ("plan", "--model", "deepseek-v3", "--gpu", "gb200", "--gpus", "256", "--seq", "4k", "--global-batch",
            "4096", "--tp", "1", "--pp", "4", "--vpp", "4", "--ep", "64", "--zero", "1", "--micro-batch", "1",
            "--recompute", "selective", "--top", "1")
    assert not run_json(*base)["summary"]["found"]
    out = run_json(*base, "--recompute-modules", "mla_up_proj")
    assert out["summary"]["found"] and out["inputs"]["recompute_modules"] == ["mla_up_proj"]
    assert out["summary"]["memory"] < 184.3 * 2**30
    dense = run("plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--gpus", "8", "--recompute-modules", "mla_up_proj")
    assert dense.exit_code == 2 and "needs multi-latent attention" in dense.stderr
    with pytest.warns(UserWarning, match="--recompute-modules has no effect unless --recompute tries selective"):
        run(*base[:-4], "--recompute", "none,full", "--recompute-modules", "mla_up_proj", "--top", "1")


def test_each_routed_expert_a_gpu_holds_costs_its_fixed_work():
    """0.4 ms (EXPERT_OVERHEAD) a micro-batch for each routed expert on the GPU in each of its MoE layers: 64
    experts in 3 of 4 layers (the dense one first); EP 8 leaves 8 a GPU; over two stages the busiest (the last,
    with the head) holds 2 MoE layers; full recomputation repeats the forward's third; a dense model has none. The
    step counts it per micro-batch and in the bubble. DeepSeek-V3's 3 dense layers lead the first of two stages:
    the second holds 31 layers, all MoE (not 31 x 58 / 61)."""
    moe = COST._replace(moe_layers=3, top_k=2, routed_experts=64)
    lay = Layout(tp=1, pp=1, dp=8, micro_batch=1, micro_batches=1)
    assert steptime.EXPERT_OVERHEAD == 0.4e-3
    assert steptime.micro_batch(moe, LINKS, lay, 1000).experts == pytest.approx(3 * 64 * 0.4e-3)
    assert steptime.micro_batch(moe, LINKS, lay._replace(ep=8), 1000).experts == pytest.approx(3 * 8 * 0.4e-3)
    staged = lay._replace(pp=2, dp=4, ep=4, micro_batches=4)
    mb = steptime.micro_batch(moe, LINKS, staged, 1000)
    assert mb.experts == pytest.approx(2 * 16 * 0.4e-3)
    full = steptime.micro_batch(moe, LINKS, staged._replace(recompute="full"), 1000)
    assert full.experts == pytest.approx(2 * 16 * 0.4e-3 * 4 / 3)
    assert steptime.micro_batch(COST, LINKS, lay, 1000).experts == 0
    t = steptime.step_time(moe, LINKS, staged, 1000, (1e9, 1e9))
    assert t.experts == pytest.approx(4 * mb.experts) and t.bubble == pytest.approx(mb.total)
    assert mb.total == pytest.approx(mb.compute + mb.redo + mb.tp + mb.cp + mb.ep + mb.experts)
    v3 = COST._replace(layers=61, moe_layers=58, top_k=8, routed_experts=256)
    assert steptime.micro_batch(v3, LINKS, lay._replace(pp=2, dp=4, ep=8), 1000).moe_layers == 31
    from llmcalc.cli.plan import EXPERT_OVERHEAD
    from llmcalc.units import parse_overhead

    assert parse_overhead(EXPERT_OVERHEAD) == steptime.EXPERT_OVERHEAD  # what --help shows as the default


@pytest.mark.parametrize("name, per_layer", [
    ("deepseek-v3", 58 * 256 * 3 * 7168 * 2048 / 61),  # 58 MoE layers of 256 SwiGLU experts, 2048 wide
    ("mixtral-8x7b", 8 * 3 * 4096 * 14336),  # every layer 8 experts, 14336 wide
])
def test_model_cost_counts_the_routed_experts_weights(name, per_layer):
    c = modelcost.model_cost(load_model(name), 4096)
    assert c.expert_weights == pytest.approx(per_layer)
    m = load_model(name)
    assert c.experts == pytest.approx(2 * m.num_experts_per_tok * per_layer / m.num_experts)
    assert c.routed_experts == m.num_experts  # 256, 8: each costs EXPERT_OVERHEAD where a GPU holds it


def test_a_cluster_without_a_network_is_refused_past_one_node(tmp_path):
    gpu = tmp_path / "lonely.yaml"
    gpu.write_text("lonely:\n  memory_gib: 80\n  memory_bandwidth_tb_s: 3\n  interconnect_gb_s: 400\n"
                   "  network_gb_s: 0\n  tflops: {bf16: 900}\n")
    assert run("plan", "--model", "llama-3.1-8b", "--gpu", str(gpu), "--gpus", "8", "--seq", "4k").exit_code == 0
    out = run("plan", "--model", "llama-3.1-8b", "--gpu", str(gpu), "--gpus", "16", "--seq", "4k")
    assert out.exit_code == 2 and "no network" in out.stderr


def test_one_gpu_nodes_without_nvlink_plan_over_the_network(tmp_path):
    """No GPU-to-GPU link, one GPU a node: every collective crosses the network at the GPU's own NIC."""
    gpu = tmp_path / "single.yaml"
    gpu.write_text("single:\n  memory_gib: 80\n  memory_bandwidth_tb_s: 3\n  interconnect_gb_s: 0\n"
                   "  network_gb_s: 50\n  tflops: {bf16: 900}\n")
    assert link(4, 1, LINKS._replace(node_gpus=1, intra=0.0))[0] == pytest.approx(50e9 * 0.75)
    out = run("plan", "--model", "llama-3.2-1b", "--gpu", str(gpu), "--gpus", "4", "--gpus-per-node", "1", "--seq", "2k")
    assert out.exit_code == 0, out.output


def test_an_uneven_split_checks_the_fuller_middle_stage():
    """126 layers on 16 stages: 7, 8 x 14, 7 (Llama 3); stage 1 holds 8 layers and 15 micro-batches in flight."""
    m = load_model("llama-3.1-405b")
    assert [(st.index, st.layers) for st in stages(m, 16)] == [(0, 7), (1, 8), (15, 7)]
    par = Parallelism(gpus=256, tp=8, pp=16, dp=2, sp=True)
    s = MemorySettings(seq=8192, zero=1, framework="megatron", parallel=par, attention_impl="flash")
    middle = train_stage(m, s, stages(m, 16)[1])
    assert middle.summary["in_flight"].value == 15
    from llmcalc.cluster import load_cluster

    p = Planner(m, load_cluster("dgx-h100"), Target(gpus=256, seq=8192, global_batch=64), Constraints())
    lay = Layout(tp=8, pp=16, dp=2, sp=True, zero=1, micro_batch=1, micro_batches=32)
    assert p.memory(lay) >= middle.total


# -- the memory model taken apart ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["llama-3-70b", "mixtral-8x7b", "gpt2"])
@pytest.mark.parametrize("tp,pp,cp", [(1, 1, 1), (8, 4, 1), (4, 2, 2)])
@pytest.mark.parametrize("recompute,zero", [("none", 1), ("selective", 0), ("full", 3)])
def test_pieces_give_the_memory_models_total(name, tp, pp, cp, recompute, zero):
    m = load_model(name)
    par = Parallelism(gpus=64, tp=tp, pp=pp, cp=cp, dp=64 // (tp * pp * cp), sp=tp > 1)
    s = MemorySettings(seq=4096, zero=zero, recompute=recompute, framework="megatron", parallel=par,
                       attention_impl="flash")
    for st in {stages(m, pp)[0], stages(m, pp)[-1]}:
        pieces = stage_pieces(m, s, st)
        for batch in (1, 3, 8):
            real = train_stage(m, dataclasses.replace(s, batch=batch), st).total
            assert pieces.total(batch, in_flight(s, st)) == pytest.approx(real, rel=1e-9)


# -- the search ------------------------------------------------------------------------------------

def _planner(model="llama-3-70b", gpus=64, **cons) -> Planner:
    from llmcalc.cluster import load_cluster

    return Planner(load_model(model), load_cluster("dgx-h100"), Target(gpus=gpus, seq=8192, global_batch=512),
                   Constraints(**cons))


def test_ranked_layouts_multiply_out_fit_and_come_fastest_first():
    p = _planner()
    ranked = p.search(8)
    assert len(ranked) == 8
    times = [r.time.total for r in ranked]
    assert times == sorted(times)
    seen = set()
    for r in ranked:
        lay = r.layout
        assert lay.tp * lay.pp * lay.cp * lay.dp == 64 and 512 % (lay.dp * lay.micro_batch) == 0
        assert lay.micro_batches == 512 // (lay.dp * lay.micro_batch)
        assert r.memory <= r.usable
        seen.add((lay.tp, lay.cp, lay.pp, lay.dp, lay.ep))
    assert len(seen) == 8  # one row per degree tuple


def test_fixed_degrees_and_allowed_sets_are_honoured():
    ranked = _planner(tp=8, recompute=("full",), zero=(1,)).search(5)
    assert ranked and all(r.layout.tp == 8 and r.layout.recompute == "full" and r.layout.zero == 1 for r in ranked)


def test_a_layout_the_search_drops_does_not_fit():
    """Every degree tuple missing from the answer has no fitting variant or is slower than the last shown."""
    p = _planner(gpus=16)
    ranked = p.search(50)
    shown = {(r.layout.tp, r.layout.cp, r.layout.pp, r.layout.dp, r.layout.ep) for r in ranked}
    from llmcalc.plan import degree_tuples, variants

    for deg in degree_tuples(p.m, 8, p.t, p.c):
        if deg not in shown:
            assert not any(p.fits(lay) for lay in variants(p.m, p.t, p.c, deg))


def test_smallest_fit_is_the_fewest_whole_nodes():
    from llmcalc.cluster import load_cluster

    m, cl = load_model("llama-3.1-405b"), load_cluster("dgx-h100")
    t, c = Target(gpus=8, seq=8192, global_batch=512), Constraints()
    fewest = smallest_fit(m, cl, t, c)
    assert fewest and fewest % 8 == 0
    assert Planner(m, cl, dataclasses.replace(t, gpus=fewest), c).search(1)
    assert not Planner(m, cl, dataclasses.replace(t, gpus=fewest - 8), c).search(1)


@pytest.mark.parametrize("model,gpus,cons", [
    ("llama-3-70b", 64, {}), ("llama-3.1-405b", 512, {"pp": 8, "cp": 2, "recompute": ("full",)}),
    ("mixtral-8x7b", 64, {"ep": 8, "pp": 2}), ("llama-3.1-8b", 16, {"tp": 2, "recompute": ("selective",)}),
])
def test_step_time_formulas_compute(model, gpus, cons):
    """--explain: each step-time row's formula, read back as arithmetic, is the row (tests/explain_eval.py)."""
    from llmcalc.cluster import load_cluster
    from llmcalc.trainplan import plan_breakdown

    from .test_explain import assert_formulas_compute

    b = plan_breakdown(load_model(model), load_cluster("dgx-h100"), Target(gpus=gpus, seq=8192, global_batch=512),
                       Constraints(**cons))
    assert b.summary["found"]
    assert_formulas_compute(b)


# -- through the CLI -------------------------------------------------------------------------------

QUESTION = ("plan", "--model", "llama-3-70b", "--cluster", "dgx-h100", "--nodes", "8", "--seq", "8k", "--tokens", "15T")


def test_json_contract():
    out = run(*QUESTION, "--json")
    assert out.exit_code == 0, out.output
    d = json.loads(out.stdout)
    layouts = d["summary"]["layouts"]
    assert len(layouts) == 5
    for x in layouts:  # DESIGN.md's plan contract
        assert {"tp", "pp", "dp", "cp", "ep", "zero", "recompute", "micro_batch", "step_time", "mfu", "memory"} <= set(x)
        assert x["tp"] * x["pp"] * x["cp"] * x["dp"] == 64 and 0 < x["mfu"] < 1
        # whole steps of 512 x 8192 tokens: 15e12 / 4,194,304 = 3,576,278.7, so 3,576,279 of them
        assert x["train_time"] == pytest.approx(3_576_279 * x["step_time"], rel=1e-12)
    rows = {r["name"]: r["value"] for r in d["rows"]}
    assert rows["step_time"] == pytest.approx(layouts[0]["step_time"])
    assert rows["step_time"] == pytest.approx(sum(v for k, v in rows.items() if k != "step_time"))


def test_the_python_api_answers_as_the_cli():
    import llmcalc

    r = llmcalc.plan("llama-3-70b", cluster="dgx-h100", nodes=8, seq="8k", tokens="15T", recompute="none,full")
    cli = json.loads(run(*QUESTION, "--recompute", "none,full", "--json").stdout)
    assert r.summary["layouts"] == cli["summary"]["layouts"]
    assert r.explain().startswith("compute = ")


def test_table_names_the_layouts_and_the_step_times_parts():
    out = run(*QUESTION)
    assert out.exit_code == 0, out.output
    for word in ("fastest layouts that fit", "step_time", "bubble", "tp_comm", "dp_comm", "mfu"):
        assert word in out.stdout


def test_chart_stacks_the_step_time_and_csv_is_one_table():
    chart = run("plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--gpus", "16", "--seq", "4k", "--sweep",
                "gpus=16,32", "--chart")
    assert chart.exit_code == 0 and "gpus=32" in chart.stdout and "compute" in chart.stdout
    csv = run(*QUESTION, "--csv").stdout.splitlines()
    assert csv[0].startswith("kind,model,layout,step_time,mfu") and len(csv) == 6  # a header and the five layouts


def test_check_fails_below_the_mfu_or_past_the_days():
    """A failed --check says why on stderr, one line a model; the thresholds alone warn that they do nothing."""
    from llmcalc.cli.common import UnusedOption

    assert run(*QUESTION, "--check", "--min-mfu", "0.3").exit_code == 0
    low = run(*QUESTION, "--check", "--min-mfu", "0.9")
    assert low.exit_code == 1 and "check failed: llama-3-70b: the fastest layout's MFU" in low.stderr
    assert "below --min-mfu 0.9 (90%)" in low.stderr
    late = run(*QUESTION, "--check", "--max-days", "30")  # 15T tokens on 64 GPUs: years
    assert late.exit_code == 1 and "days on the fastest layout, over --max-days 30" in late.stderr
    assert run(*QUESTION, "--check", "--max-days", "100000").exit_code == 0
    with pytest.warns(UnusedOption, match="--min-mfu has no effect without --check"):
        assert run(*QUESTION, "--min-mfu", "0.9").exit_code == 0


def test_a_cluster_too_small_says_how_many_gpus_would_do():
    args = ("plan", "--model", "llama-3.1-405b", "--gpu", "h100", "--gpus", "8", "--seq", "8k")
    out = run(*args)
    text = " ".join(out.stdout.split())
    assert out.exit_code == 0 and "no layout fits" in text and "the fewest GPUs any layout fits on" in text
    d = json.loads(run(*args, "--json").stdout)
    assert d["summary"]["found"] is False and d["summary"]["min_gpus"] % 8 == 0
    assert run(*args, "--check").exit_code == 1


def test_the_fewest_gpus_are_counts_a_fixed_pipeline_divides():
    """--pp 3 on 8-GPU nodes: 8, 16, 32 ... GPUs cannot hold three stages, so the search steps by 24 (the least
    common multiple) above a node and by 3 within one (found by a user audit: it said none fits on any count).
    Llama 2 13B on A100-40GB: 13B x 16 B/param over 3 GPUs is 69 GB each, over 6 (TP 2) 35 GB with recomputation."""
    for args, fewest in ((("--model", "llama-2-13b", "--gpu", "a100-40gb", "--seq", "4k"), 6),
                         (("--model", "llama-3-70b", "--gpu", "h100", "--seq", "8k"), 24)):
        d = json.loads(run("plan", *args, "--gpus", "3", "--pp", "3", "--json").stdout)["summary"]
        assert d["found"] is False and d["min_gpus"] == fewest
        assert json.loads(run("plan", *args, "--gpus", str(fewest), "--pp", "3", "--json").stdout)["summary"]["found"]


def test_the_fewest_gpus_on_a_rack_step_by_its_power_of_two_share():
    """GB200 NVL72 with --pp 5: 72-GPU steps (lcm 360) would leave DP a factor 9 no 512-sequence batch divides; the
    search steps by lcm(8, 5) = 40 instead, and the count it names runs (a review found "none on any count").
    Llama 3.1 405B with --pp 3 on 8-GPU H100 servers cannot fit at TP 8 (17B parameters a GPU): none, where a TP 16
    the plan never tries had named 192."""
    base = ("plan", "--model", "llama-3.1-405b", "--seq", "8k", "--json")
    d = json.loads(run(*base, "--cluster", "gb200-nvl72", "--gpus", "5", "--pp", "5").stdout)["summary"]
    assert d["found"] is False and d["min_gpus"] == 40
    assert json.loads(run(*base, "--cluster", "gb200-nvl72", "--gpus", "40", "--pp", "5").stdout)["summary"]["found"]
    d = json.loads(run(*base, "--gpu", "h100", "--gpus", "192", "--pp", "3").stdout)
    assert d["summary"]["min_gpus"] is None and any("none fits on any count with --pp 3" in n for n in d["notes"])


def test_a_deadline_search_steps_by_counts_a_fixed_pipeline_divides():
    """--max-days with --pp 3 on 8-GPU servers: the search steps by 24 (it had tried 8, 16, 32 ..., none of which
    three stages divide, and said no GPU count fits). Llama 3 8B, 1T tokens of 8k: 96 GPUs, about 17 days."""
    d = json.loads(run("plan", "--model", "llama-3-8b", "--gpu", "h100", "--gpus", "3", "--pp", "3", "--seq", "8k",
                       "--tokens", "1T", "--max-days", "30", "--check", "--json").stdout)
    assert d["summary"]["gpus_within"] % 24 == 0 and d["summary"]["train_time_within"] <= 30 * 86400


def test_a_count_that_leaves_a_server_part_full_is_warned_about():
    import warnings

    with pytest.warns(UserWarning, match="60 GPUs are 7.5 nodes of 8: the last is partly used"):
        assert run("plan", "--model", "llama-3-8b", "--cluster", "dgx-h100", "--gpus", "60", "--top", "1").exit_code == 0
    quiet = [("--cluster", "gb200-nvl72", "--gpus", "100"), ("--gpu", "h100", "--gpus", "4"),
             ("--gpu", "h100", "--gpus", "1"), ("--cluster", "dgx-h100", "--nodes", "3")]
    for args in quiet:  # a rack-scale domain used in part, part of one server, whole servers
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            assert run("plan", "--model", "llama-3-8b", *args, "--top", "1").exit_code == 0, args


def test_an_uneven_pipeline_split_says_how_megatron_runs_it():
    """80 layers over 4 stages x 7 virtual stages (28 chunks) do not divide: Megatron-LM's arguments.py refuses that
    unless the first and last stages' layers or a custom layout are given; each rank still holds 80 / 4 = 20."""
    d = json.loads(run("plan", "--model", "llama-3-70b", "--gpu", "h100", "--gpus", "64", "--seq", "8k", "--pp", "4",
                       "--vpp", "7", "--top", "1", "--json").stdout)
    assert any("80 layers do not split evenly over 4 stages x 7 virtual (timed with 20 on the fullest rank)" in n
               and "--pipeline-model-parallel-layout" in n for n in d["notes"])
    even = json.loads(run("plan", "--model", "llama-3-70b", "--gpu", "h100", "--gpus", "64", "--seq", "8k", "--pp",
                          "4", "--vpp", "5", "--top", "1", "--json").stdout)
    assert not any("split evenly" in n for n in even["notes"])


def test_a_steps_tokens_read_as_the_help_writes_them():
    """--batch-tokens 4M is 4 x 2^20 tokens, 512 sequences of 8k: the default batch, written out (Llama 2 and 3's
    "4M tokens")."""
    base = ("plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--gpus", "16", "--seq", "8k", "--json")
    given = json.loads(run(*base, "--batch-tokens", "4M").stdout)
    assert given["inputs"]["global_batch"] == 512
    assert given["summary"]["layouts"] == json.loads(run(*base).stdout)["summary"]["layouts"]


def test_a_budget_smaller_than_a_step_takes_one_step():
    d = json.loads(run("plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--gpus", "8", "--seq", "8k", "--tokens",
                       "1000", "--json").stdout)["summary"]["layouts"][0]
    assert d["train_time"] == d["step_time"]


def test_vpp_fixed_lists_only_interleaved_pipelines():
    d = json.loads(run("plan", "--model", "llama-3-8b", "--gpu", "h100", "--gpus", "8", "--seq", "8k", "--vpp", "2",
                       "--json").stdout)["summary"]["layouts"]
    assert d and all(x["vpp"] == 2 and x["pp"] > 1 for x in d)
    from llmcalc.cli.common import UnusedOption

    with pytest.warns(UnusedOption, match="--vpp has no effect with --pp 1"):  # moot, as in a sweep over pp
        one = run("plan", "--model", "llama-3-8b", "--gpu", "h100", "--gpus", "8", "--seq", "8k", "--vpp", "2",
                  "--pp", "1", "--json")
    assert all(x["pp"] == 1 and x["vpp"] == 1 for x in json.loads(one.stdout)["summary"]["layouts"])
    # a recipe's stated vpp applied where a pipeline is (the published-run survey's question): pp 1 stays in
    import llmcalc

    both = llmcalc.plan("llama-3-8b", gpu="h100", gpus=8, seq="8k", vpp=2, unpipelined=True).summary["layouts"]
    assert {x["pp"] == 1 for x in both} == {True, False} and all(x["vpp"] == 2 for x in both if x["pp"] > 1)


def test_part_of_a_node_is_named_when_it_is_enough():
    """Llama-3-8B with Adam needs 16 bytes a parameter (128 GB) before activations: not one 80 GB H100, but two."""
    d = json.loads(run("plan", "--model", "llama-3-8b", "--gpu", "h100", "--gpus", "1", "--seq", "8k",
                       "--json").stdout)["summary"]
    assert d["found"] is False and d["min_gpus"] == 2


def test_a_missed_deadline_names_the_gpus_that_meet_it():
    """Llama-3.1-8B, 1T tokens at 8k on 8 H100s takes months; the count named meets 30 days on its own fastest
    layout, the next smaller count the bisection tried does not, and the failed check says it."""
    import llmcalc
    from llmcalc.cluster import load_cluster
    from llmcalc.plan import Constraints, Target
    from llmcalc.presets import load_model
    from llmcalc.fewest import gpus_within

    r = llmcalc.plan("llama-3.1-8b", gpu="h100", gpus=8, seq="8k", tokens="1T", max_days=30, top=1)
    within = r.summary["gpus_within"]
    assert r.summary["train_time"] > 30 * 86400 and within % 8 == 0
    assert r.summary["train_time_within"] <= 30 * 86400
    per_gpu = r.summary["train_time"] * 8  # GPU-seconds on the asked 8: the count needed, at no better scaling
    assert within >= per_gpu / (30 * 86400)
    fewer = llmcalc.plan("llama-3.1-8b", gpu="h100", gpus=within - 8, seq="8k", tokens="1T", top=1)
    assert fewer.summary["train_time"] > 30 * 86400
    args = ("plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--gpus", "8", "--seq", "8k", "--tokens", "1T",
            "--max-days", "30", "--check")
    out = run(*args)
    assert out.exit_code == 1 and f"({within:,} GPUs would do it)" in out.stderr
    # a deadline the batch cannot reach: 16 sequences cap data parallelism at 16, and doubling stops paying
    gpus, time, at, cheaper = gpus_within(load_model("llama-3.1-8b"), load_cluster("dgx-h100"),
                                          Target(gpus=8, seq=8192, global_batch=16, tokens=1e12), Constraints(), 3600)
    assert gpus == 0 and time > 3600 and at >= 16 and cheaper is None


def test_nodes_count_syntax_and_gpu_reference_node_agree():
    a = json.loads(run("plan", "--model", "llama-3.1-8b", "--cluster", "2xdgx-h100", "--seq", "4k", "--json").stdout)
    b = json.loads(run("plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--gpus", "16", "--seq", "4k",
                       "--json").stdout)
    assert a["summary"]["layouts"] == b["summary"]["layouts"]


@pytest.mark.parametrize("args,words", [
    (("--cluster", "dgx-h100", "--gpu", "h100", "--gpus", "8"), "not both"),
    (("--gpu", "h100"), "how many GPUs"),
    (("--seq", "4k"), "needs the hardware"),
    (("--gpu", "h100", "--gpus", "8", "--zero", "5"), "--zero"),
    (("--gpu", "h100", "--gpus", "8", "--batch-tokens", "1000"), "whole number"),
    # 4e6 is decimal: 488.3 sequences of 8192, so the message offers 488 x 8192 and 489 x 8192
    (("--gpu", "h100", "--gpus", "8", "--seq", "8k", "--batch-tokens", "4e6"), "give 3,997,696 (488 sequences) or "
                                                                              "4,005,888 (489 sequences)"),
    (("--gpu", "h100", "--gpus", "8", "--global-batch", "8", "--batch-tokens", "4M"), "not both"),
    (("--gpu", "h100", "--gpus", "8", "--max-days", "3"), "--max-days needs --tokens"),
    (("--cluster", "dgx-h1000", "--nodes", "2"), "did you mean"),
    (("--cluster", "dgx-h100", "--nodes", "2", "--gpus", "8"), "disagree"),
    (("--cluster", "8xdgx-h100", "--nodes", "4"), "disagree"),
    (("--gpu", "h100", "--gpus", "0"), "at least 1"),
    (("--gpu", "h100", "--gpus", "64", "--pp", "3"), "TP x PP x CP fixed at 3 (--pp 3) does not divide 64 GPUs"),
    (("--gpu", "h100", "--gpus", "64", "--tp", "3"), "--tp 3 must divide llama-3.1-8b's 32 attention heads"),
    (("--gpu", "h100", "--gpus", "3", "--tp", "3"), "--tp 3 must divide llama-3.1-8b's 32 attention heads"),
    (("--gpu", "h100", "--gpus", "64", "--micro-batch", "3"), "--micro-batch 3 does not divide the 512-sequence"),
    (("--gpu", "h100", "--gpus", "64", "--dp", "3"), "no layout multiplies out"),
    (("--gpu", "h100", "--gpus", "8", "--recompute", "selctive"), "did you mean selective?"),
    (("--gpu", "h100", "--gpus", "8", "--grad-reduce", "bf15"), "'fp16'; did you mean bf16?"),
    (("--gpu", "h100", "--gpus", "64", "--zero", "3", "--pp", "4"), "--zero 3 (FSDP) shards whole models"),
    (("--gpu", "h100", "--gpus", "64", "--ep", "4"), "llama-3.1-8b is dense: --ep 4 needs routed experts"),
    (("--model", "mixtral-8x7b", "--gpu", "h100", "--gpus", "64", "--ep", "16"),
     "--ep 16 must divide mixtral-8x7b's 8 routed experts (each GPU holds a whole share): try --ep 8"),
    (("--gpu", "a100", "--gpus", "8", "--dtype", "fp8"), "no published fp8 peak (no fp8 tensor cores): --dtype bf16 "
                                                         "or fp16"),
    (("--gpu", "h100", "--gpus", "64", "--micro-batch", "1000"), "--micro-batch 1000"),
    (("--gpu", "h100", "--gpus", "64", "--pp", "2", "--vpp", "100"), "--vpp 100"),
    (("--gpu", "h100", "--gpus", "1000000000"), "more than any cluster"),
    (("--gpu", "h100", "--gpus", "8", "--min-mfu", "40", "--check"), "fraction"),
    (("--gpu", "h100", "--gpus", "8", "--gpu-util", "5"), "--gpu-util"),
    (("--gpu", "h100,a100", "--gpus", "8"), "one GPU kind"),
    (("--gpu", "h100", "--gpus", "8", "--expert-overhead", "2s"), "--expert-overhead"),
    (("--gpu", "h100", "--gpus", "8", "--expert-overhead", "-1ms"), "duration"),
    (("--gpu", "h100", "--gpus", "8", "--tp-overlap", "--tp-overlap-sms", "100"), "--tp-overlap-sms"),
    (("--gpu", "h100", "--gpus", "8", "--recompute-modules", "attention"), "--recompute-modules must be one of"),
])
def test_bad_input_is_one_line_and_exit_2(args, words):
    out = run("plan", "--model", "llama-3.1-8b", *args)
    assert out.exit_code == 2, out.output
    assert words in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_expert_overhead_is_an_option():
    """Mixtral on 64 H100s at PP 2 (16 of the 32 layers a rank) and EP 8 (one of the 8 experts a GPU), 32
    micro-batches: 32 x 16 x 1 x 0.4 ms by default, 1 ms each when asked, none with 0 (a grouped GEMM under CUDA
    graphs); a dense model's plan has no figure to show."""
    args = ("plan", "--model", "mixtral-8x7b", "--gpu", "h100", "--gpus", "64", "--seq", "4k", "--top", "1", "--tp", "1",
            "--pp", "2", "--ep", "8", "--recompute", "none")

    def row(out: dict) -> float:
        lay = out["summary"]["layouts"][0]
        assert (lay["pp"], lay["ep"], lay["grad_accum"], lay["recompute"]) == (2, 8, 32, "none")
        return next(r["value"] for r in out["rows"] if r["name"] == "expert_overhead")

    default = run_json(*args)
    assert row(default) == pytest.approx(32 * 16 * 1 * 0.4e-3) and default["inputs"]["expert_overhead"] == 0.4e-3
    assert row(run_json(*args, "--expert-overhead", "1ms")) == pytest.approx(32 * 16 * 1e-3)
    assert row(run_json(*args, "--expert-overhead", "0")) == 0
    dense = run_json("plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--gpus", "8")
    assert dense["inputs"]["expert_overhead"] is None and "expert_overhead" not in [r["name"] for r in dense["rows"]]
    with pytest.warns(UserWarning, match="--expert-overhead has no effect for llama-3.1-8b"):
        run("plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--gpus", "8", "--expert-overhead", "1ms")
    with pytest.warns(UserWarning, match="Implausible: --expert-overhead 0.5 is 500 ms"):  # seconds, not ms
        run(*args, "--expert-overhead", "0.5")


def test_plan_offers_the_memory_models_losses():
    from llmcalc.cli.plan import PlanLoss
    from llmcalc.memory.frameworks import LOSSES

    assert tuple(x.value for x in PlanLoss) == LOSSES


def test_mla_gathers_its_latents_not_the_hidden_state():
    """DeepSeek-V3's MLA under TP: its down-projections are duplicated on every rank (Megatron-Core 0.15, TE's
    "duplicated" mode), so sequence parallelism gathers the q latent (1536), the kv latent (512) and the rope key (64)
    into the column-parallel up-projections, not the 7168-wide hidden state, and those up-projections (q_b, kv_b) are
    what hides the backward. Overlapped (30% of every collective exposed, forward and backward alike), the 61
    attention pairs move 2 x (7168 - 2112) fewer widths a token each way."""
    from llmcalc.cluster import load_cluster
    from llmcalc.collectives import link
    from llmcalc.plan import links_of

    cost = modelcost.model_cost(load_model("deepseek-v3"), 4096)
    assert cost.attn_width == 1536 + 512 + 64
    assert cost.attn_in == 2 * (1536 * 128 * (128 + 64) + 512 * 128 * (128 + 128))
    links = links_of(load_cluster("dgx-h100"), "bf16")
    lay = steptime.Layout(tp=2, pp=1, dp=4, ep=8, sp=True, tp_overlap=True, micro_batch=1, micro_batches=1)
    bw, _ = link(2, 1, links)
    per = 4096 * 2 * (1 / 2) / bw
    wide = steptime.micro_batch(cost._replace(attn_width=0), links, lay, 4096).tp
    assert wide - steptime.micro_batch(cost, links, lay, 4096).tp == pytest.approx(0.3 * 2 * 61 * (7168 - 2112) * per)


def test_fp8_gathers_move_one_byte_an_element():
    """Under FP8, Transformer Engine quantizes a column-parallel linear's input before sequence parallelism gathers
    it, and the output gradient before its backward gather (TE 2.8 linear.py gather_along_first_dim with the
    quantizer); the reduce-scatters stay 16-bit. Overlapped (30% of each exposed, backward as forward), Llama 3 8B's
    64 pairs of linears move one byte less a width in each gather: 0.3 x 2 x 64 x 4096 x 4096 tokens x (t-1)/t."""
    from llmcalc.cluster import load_cluster
    from llmcalc.plan import links_of

    cost = modelcost.model_cost(load_model("llama-3-8b"), 4096)
    lay = Layout(tp=2, pp=1, dp=4, sp=True, tp_overlap=True, micro_batch=1, micro_batches=1)
    bf16, fp8 = (links_of(load_cluster("dgx-h100"), d) for d in ("bf16", "fp8"))
    bw, _ = link(2, 1, bf16)
    saved = steptime.micro_batch(cost, bf16, lay, 4096).tp - steptime.micro_batch(cost, fp8, lay, 4096).tp
    assert saved == pytest.approx(0.3 * 2 * 64 * 4096 * 4096 * (1 / 2) / bw)


def test_fp16_training_unscales_its_gradients_in_the_optimizer_step():
    """Under fp16's loss scaling the stepped fp32 gradients are unscaled and checked for inf before Adam
    (torch._amp_foreach_non_finite_check_and_unscale_): 8 more bytes a stepped parameter, so an 8B model's ZeRO-1
    share over 8 GPUs (all of its parameters over 8) takes 8 / 8 bytes a parameter more, at 90% of the A100's HBM."""
    from llmcalc.cluster import load_cluster
    from llmcalc.plan import Constraints, Planner, Target

    m = load_model("llama-3.1-8b")
    lay = Layout(tp=1, pp=1, dp=8, zero=1, micro_batch=1, micro_batches=8)

    def optimizer(dtype: str) -> float:
        p = Planner(m, load_cluster("dgx-a100"), Target(gpus=8, seq=4096, global_batch=64, dtype=dtype), Constraints())
        return p.time(lay).optimizer, sum(p.grads(lay))

    (fp16, params), (bf16, _) = optimizer("fp16"), optimizer("bf16")
    assert fp16 - bf16 == pytest.approx(params / 8 * 8 / (2.039e12 * 0.9))


@pytest.mark.parametrize("layers, pp, expect", [(126, 16, (8, 7)), (80, 4, (20, 20)), (61, 32, (2, 1)), (32, 1, (32, 32)),
                                                (70, 12, (6, 5))])
def test_a_ranks_layers_are_the_same_interleaved_or_not(layers, pp, expect):
    """(fullest rank, last rank) layers: the remainder of an uneven split on the middle ranks, then the last. Llama 3
    405B's 126 layers over 16 ranks: 14 middle ranks of 8, the first and last of 7 (Meta's 16 x 8 one-layer chunks
    with the first chunk the embedding alone and the last the head alone); BLOOM's 70 over 12: 10 x 6 + 5 + 5.
    Interleaving sizes the chunks, not a rank's total (before, 126 / (16 x 8) left the last rank 0 layers)."""
    from llmcalc.memory.placement import stage_layers

    assert stage_layers(layers, pp) == expect


def test_a_deadline_names_the_power_of_two_that_costs_fewer_gpu_hours():
    """Llama-3-70B, 2T tokens at 8k on H100s within 30 days: 896 GPUs are the fewest (29.7 days), but the 256-sequence
    batch splits evenly over 1,024, which take 20.5 days: fewer GPU-hours, and the note says so (user audit)."""
    out = run("plan", "--model", "llama-3-70b", "--gpu", "h100", "--gpus", "512", "--seq", "8k", "--tokens", "2T",
              "--max-days", "30", "--check", "--json")
    note = next(n for n in json.loads(out.stdout)["notes"] if n.startswith("within 30 days"))
    assert "896 GPUs" in note and "1,024 GPUs train in 20.5 days on 21% fewer GPU-hours" in note
