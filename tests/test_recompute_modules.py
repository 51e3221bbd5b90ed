"""Megatron-Core's recompute modules beyond the attention core (core 0.15 transformer_layer.py, moe_layer.py): what
each checkpoint drops from memory and what recomputing it costs, by hand (mla_up_proj and moe_act: test_memory.py,
test_plan.py)."""

from __future__ import annotations

import pytest

from llmcalc import modelcost, steptime
from llmcalc.memory.per_gpu import memory_breakdown
from llmcalc.memory.settings import MemorySettings
from llmcalc.presets import load_model
from llmcalc.spec import Parallelism, SpecError

from .conftest import run
from .test_hostile import _fails_cleanly

TOKENS = 4096


def _dropped(name: str, *modules: str) -> tuple[float, float]:
    """(bytes a token a layer the modules drop, bytes a token rebuilt at once) on one GPU, 4k tokens."""
    common = dict(mode="train", seq=TOKENS, batch=1, zero=1, framework="megatron", attention_impl="flash",
                  recompute="selective", parallel=Parallelism(gpus=1))
    m = load_model(name)
    plain = memory_breakdown(m, None, MemorySettings(**common))
    named = memory_breakdown(m, None, MemorySettings(recompute_modules=("core_attn", *modules), **common))
    layers = m.moe_layers if {"moe", "moe_act", "shared_experts"} & set(modules) else m.num_hidden_layers
    gone = plain.value("activations/layers") - named.value("activations/layers")
    return gone / TOKENS / layers, named.value("activations/transient") / TOKENS


def test_mlp_keeps_only_the_dense_mlps_input():
    """Llama 3.1 8B (width 4096, SwiGLU of 14336): the checkpoint keeps the layer's hidden state, its fused norm's
    input, and drops the norm's fp32 rstd (4 B), fc1's input (2 x 4096), fc1's gate and up outputs (2 x 2 x 14336)
    and the activation's output (2 x 14336): 94,212 B a token a layer, rebuilt one layer at a time (once: a plain
    checkpoint, not an output-discarding one)."""
    dropped = 4 + 2 * 4096 + 2 * 2 * 14336 + 2 * 14336
    assert dropped == 94_212
    assert _dropped("llama-3.1-8b", "mlp") == (dropped, dropped)


def test_moe_drops_the_router_the_experts_and_the_shared_expert():
    """DeepSeek-V3 (width 7168, 256 experts of 2048, top-8, a shared expert of 2048): the router's fp32
    probabilities (4 x 256), the routing indices and weights (40 x 8 + 4), the 8 experts' inputs (8 x 2 x 7168), their
    fc1 outputs (8 x 2 x 2 x 2048) and activations (8 x 2 x 2048), the shared expert's (2 x 2 x 2048 + 2 x 2048):
    226,628 B a token an MoE layer. moe covers moe_act and shared_experts; named beside it, moe_act's own
    output-discarding checkpoint refills the activation once more (experts.py nests it in moe's recompute)."""
    shared = 2 * 2 * 2048 + 2 * 2048
    experts = 8 * 2 * 2 * 2048 + 8 * 2 * 2048
    dropped = 4 * 256 + (40 * 8 + 4) + 8 * 2 * 7168 + experts + shared
    assert dropped == 226_628
    assert _dropped("deepseek-v3", "moe") == _dropped("deepseek-v3", "moe", "shared_experts") == (dropped, dropped)
    assert _dropped("deepseek-v3", "moe", "moe_act") == (dropped, dropped + 8 * 2 * 2048)
    assert _dropped("deepseek-v3", "shared_experts") == (shared, shared)
    assert _dropped("deepseek-v3", "moe_act") == (8 * 2 * 2048, 2 * 8 * 2 * 2048)  # output-discarding: twice
    # Mixtral, all MoE (8 experts of 14336, top-2, width 4096, no shared expert)
    assert _dropped("mixtral-8x7b", "moe")[0] == 4 * 8 + (40 * 2 + 4) + 2 * 2 * 4096 + 2 * 2 * 2 * 14336 + 2 * 2 * 14336


def test_the_mlps_rebuilt_tensors_are_freed_before_the_attentions_are_rebuilt():
    """DeepSeek-V3 with mla_up_proj and moe: the MLP's checkpoint frees its 226,628 B a token when its backward ends,
    before the attention's refills MLA's 135,176 B twice over (270,352 B): the larger is the transient."""
    assert _dropped("deepseek-v3", "mla_up_proj", "moe")[1] == max(226_628, 2 * 135_176) == 270_352


@pytest.mark.parametrize("model, modules, problem", [
    ("mixtral-8x7b", "mlp", "mixtral-8x7b's layers are all MoE"),
    ("llama-3.1-8b", "moe", "moe needs routed experts"),
    ("mixtral-8x7b", "shared_experts", "shared_experts needs shared experts"),
])
def test_a_module_the_model_lacks_is_refused(model, modules, problem):
    _fails_cleanly(run("memory", "--model", model, "--gpu", "h100", "--gpus", "8", "--tp", "8", "--framework",
                       "megatron", "--recompute", "selective", "--recompute-modules", modules), problem)
    with pytest.raises(SpecError, match=problem):
        memory_breakdown(load_model(model), None, MemorySettings(
            mode="train", seq=4096, framework="megatron", recompute="selective", recompute_modules=(modules,)))


def test_moe_beside_the_overlapped_all_to_all_is_refused():
    """Megatron-Core 0.15's overlapped MoE layers (--ep-overlap) run outside MoELayer.forward, where moe's checkpoint
    is: the module would save nothing."""
    _fails_cleanly(run("plan", "--model", "mixtral-8x7b", "--gpu", "h100", "--gpus", "64", "--recompute", "selective",
                       "--recompute-modules", "moe", "--ep-overlap"), "moe does nothing beside --ep-overlap")
    assert run("plan", "--model", "mixtral-8x7b", "--gpu", "h100", "--gpus", "64", "--recompute", "selective",
               "--recompute-modules", "moe_act", "--ep-overlap", "--top", "1").exit_code == 0


def test_recomputing_modules_repeats_their_forward_work():
    """The FLOPs a token a layer: Llama 3.1 8B's MLP, 3 GEMMs of 4096 x 14336 (2 FLOPs a weight), on every layer,
    and its SwiGLU's 6 bytes a width; DeepSeek-V3's MoE layer, the router (2 x 7168 x 256) and the shared expert
    (3 GEMMs of 7168 x 2048), on 58 of its 61 layers, the 8 routed experts' activations and the dispatcher's
    permutation of the tokens and back; their GEMMs are the micro-batch's own experts' forward (their FLOPs or their weights' traffic, as full recomputation repeats)."""
    mlp = modelcost.model_cost(load_model("llama-3.1-8b"), 4096, modules=("core_attn", "mlp"))
    assert mlp.redo_matmul == 3 * 2 * 4096 * 14336 and mlp.redo_bytes == 6 * 14336
    assert mlp.redo_mlp and not mlp.redo_moe and mlp.redo_core
    moe = modelcost.model_cost(load_model("deepseek-v3"), 4096, modules=("moe",))
    per_moe_layer = 2 * 7168 * 256 + 3 * 2 * 7168 * 2048
    assert moe.redo_matmul == pytest.approx(per_moe_layer * 58 / 61, rel=1e-9)
    permute = (2 + 2) * 8 * 7168 + (2 * 8 + 2) * 7168  # 8 copies of each token read and written; 8 read, 1 written
    assert moe.redo_bytes == pytest.approx((6 * (8 + 1) * 2048 + permute) * 58 / 61)
    assert moe.redo_moe and moe.redo_shared == 1 and not moe.redo_mlp and not moe.redo_core
    # nested: shared_experts' checkpoint inside moe's recompute runs the shared expert once more; moe_act's refill
    # the experts' activation
    shared = 3 * 2 * 7168 * 2048
    both = modelcost.model_cost(load_model("deepseek-v3"), 4096, modules=("moe", "shared_experts"))
    assert both.redo_matmul - moe.redo_matmul == pytest.approx(shared * 58 / 61) and both.redo_shared == 2
    act = modelcost.model_cost(load_model("deepseek-v3"), 4096, modules=("moe", "moe_act"))
    assert act.redo_bytes - moe.redo_bytes == pytest.approx(6 * 8 * 2048 * 58 / 61)


def test_recomputed_modules_repeat_their_collectives_and_fixed_work():
    """A dense MLP's checkpoint repeats its forward TP collective: 5 a layer, not 4 (without SP, synchronous, each
    an all-reduce; async, the repeated one is a forward one, exposed all the same). With SP, its all-gather and
    reduce-scatter again. An MoE layer's repeats the dispatch and combine (6 all-to-alls, not 4) and each routed
    expert's fixed work (4/3 of it, as full recomputation does)."""
    from llmcalc.cluster import load_cluster
    from llmcalc.collectives import link
    from llmcalc.plan import links_of

    links = links_of(load_cluster("dgx-h100"), "bf16")
    bw, lat = link(2, 1, links)
    one = 4096 * 2 * 4096 * (1 / 2) / bw + lat  # an all-gather or a reduce-scatter of a micro-batch over TP 2
    dense = modelcost.model_cost(load_model("llama-3.1-8b"), 4096)
    lay = steptime.Layout(tp=2, pp=1, dp=4, sp=False, recompute="selective", micro_batch=1, micro_batches=1,
                          tp_async=False)
    plain = steptime.micro_batch(dense, links, lay, 4096)
    again = steptime.micro_batch(dense._replace(redo_mlp=True), links, lay, 4096)
    assert again.tp == pytest.approx(plain.tp * 5 / 4)
    hidden = steptime.micro_batch(dense._replace(redo_mlp=True), links, lay._replace(tp_async=True), 4096)
    assert hidden.tp - steptime.micro_batch(dense, links, lay._replace(tp_async=True), 4096).tp == \
        pytest.approx(plain.tp / 4)
    sp = lay._replace(sp=True)
    assert steptime.micro_batch(dense._replace(redo_mlp=True), links, sp, 4096).tp - \
        steptime.micro_batch(dense, links, sp, 4096).tp == pytest.approx(32 * 2 * one)
    mixtral = modelcost.model_cost(load_model("mixtral-8x7b"), 4096)
    ep = steptime.Layout(tp=1, pp=1, dp=8, ep=8, recompute="selective", micro_batch=1, micro_batches=1)
    plain = steptime.micro_batch(mixtral, links, ep, 4096)
    moe = modelcost.model_cost(load_model("mixtral-8x7b"), 4096, modules=("core_attn", "moe"))
    again = steptime.micro_batch(moe, links, ep, 4096)
    assert again.ep == pytest.approx(plain.ep * 6 / 4) and again.experts == pytest.approx(plain.experts * 4 / 3)
    # and the experts' GEMMs forward, as full recomputation repeats them: its redo less the attention core's, the
    # dense GEMMs' and the memory-bound kernels', plus the router's FLOPs and the activation's bytes
    full = steptime.micro_batch(mixtral, links, ep._replace(recompute="full"), 4096)
    dense = 32 * 4096 * (mixtral.matmul - mixtral.experts) / links.peak / links.efficiency  # attention's GEMMs
    extra = 32 * 4096 * (moe.redo_matmul / links.peak / links.efficiency + moe.redo_bytes / (links.hbm * 0.9))
    assert again.redo - plain.redo == pytest.approx(full.redo - full.core_forward - full.elementwise - dense + extra)
    # without EP the dispatcher gathers and scatters the experts' tokens over TP: again, as mlp's pair, each layer
    tp = ep._replace(tp=2, dp=4, ep=1, sp=True)
    assert steptime.micro_batch(moe, links, tp, 4096).tp - steptime.micro_batch(mixtral, links, tp, 4096).tp == \
        pytest.approx(32 * 2 * one)
    # DeepSeek-V3's shared expert keeps its TP linears beside EP: their forward again in the 58 MoE layers, for each
    # repeat (shared_experts' checkpoint; moe's with it nested inside)
    ds = load_model("deepseek-v3")
    lay = steptime.Layout(tp=2, pp=1, dp=4, ep=8, sp=True, recompute="selective", micro_batch=1, micro_batches=1)
    bw, lat = link(2, 1, links)
    one = 4096 * 2 * 7168 * (1 / 2) / bw + lat
    base = steptime.micro_batch(modelcost.model_cost(ds, 4096), links, lay, 4096).tp
    for modules, extra in ((("shared_experts",), 1), (("moe", "shared_experts"), 2)):
        cost = modelcost.model_cost(ds, 4096, modules=("core_attn", *modules))
        assert steptime.micro_batch(cost, links, lay, 4096).tp - base == pytest.approx(58 * extra * 2 * one)


def test_moe_repeats_the_sort_of_the_received_tokens_where_a_gpu_holds_several_experts():
    """Qwen3-30B-A3B over EP 8 holds 16 of its 128 experts a GPU: recomputing moe repeats the dispatcher's sort of the
    tokens it receives by local expert and back (sort_chunks_by_idxs), 2 x (2 + 2) bytes a width for each of the 8
    copies of a token, over 48 MoE layers x 4096 tokens, at 90% of the H100's HBM bandwidth. With one expert a GPU
    there is nothing to sort."""
    from llmcalc.cluster import load_cluster
    from llmcalc.plan import links_of

    links = links_of(load_cluster("dgx-h100"), "bf16")
    moe = modelcost.model_cost(load_model("qwen3-30b-a3b"), 4096, modules=("core_attn", "moe"))
    lay = steptime.Layout(tp=1, pp=1, dp=8, ep=8, etp=1, recompute="selective", micro_batch=1, micro_batches=1)
    sorted_ = steptime.micro_batch(moe, links, lay, 4096).redo
    one_each = steptime.micro_batch(moe._replace(routed_experts=8), links, lay, 4096).redo
    assert sorted_ - one_each == pytest.approx(48 * 4096 * 8 * 8 * 2048 / (links.hbm * 0.9))


def test_plan_and_memory_take_the_new_modules():
    out = run("plan", "--model", "deepseek-v3", "--gpu", "h100", "--gpus", "1024", "--seq", "4k", "--global-batch",
              "8192", "--recompute", "selective", "--recompute-modules", "mla_up_proj,mlp", "--top", "1", "--json")
    assert out.exit_code == 0, out.stderr
    out = run("memory", "--model", "deepseek-v3", "--gpu", "h200", "--gpus", "256", "--pp", "16", "--ep", "16",
              "--framework", "megatron", "--recompute", "selective", "--recompute-modules", "moe", "--seq", "4k")
    assert out.exit_code == 0, out.stderr
    assert "MoE layers' tensors recomputed" in " ".join(out.stdout.split())

