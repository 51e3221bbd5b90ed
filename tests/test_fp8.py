"""FP8 training memory under Transformer Engine (llmcalc/memory/fp8.py), derived by hand from what TE 1.8 / 2.8
keep (module/linear.py, layernorm_linear.py, base.py), and the planner's gradient and FP8 settings."""

from __future__ import annotations

import pytest

from llmcalc.memory import MemorySettings, memory_breakdown
from llmcalc.presets import load_gpu, load_model
from llmcalc.spec import SpecError

from .conftest import run, run_json, value

# Llama-3-8B: h 4096, 32 heads of 128, 8 KV heads, MLP 14336, 32 layers
H, F, LAYERS = 4096, 14336, 32
BLOCK_LINEARS = LAYERS * (2 * H * H + 2 * H * 1024 + 3 * H * F)  # q, o; k, v; gate, up, down
SEQ = 1024


def _mem(gpu=None, **kw):
    s = MemorySettings(seq=SEQ, framework="megatron", **kw)
    return memory_breakdown(load_model("llama-3-8b"), load_gpu(gpu) if gpu else None, s)


def test_linears_keep_their_inputs_in_one_byte():
    """Per token and layer: q/k/v's and the MLP's normed inputs and down's input drop from 2 bytes to 1; under
    delayed scaling the out-projection keeps a 1-byte copy of the attention output too (h bytes)."""
    bf16 = _mem().value("activations/layers")
    delayed = _mem(fp8="delayed").value("activations/layers")
    current = _mem(fp8="current").value("activations/layers")
    assert bf16 - delayed == LAYERS * SEQ * (H + H + F - H)
    assert bf16 - current == LAYERS * SEQ * (H + H + F)
    mx = _mem(fp8="mxfp8").value("activations/layers")
    assert mx - current == pytest.approx(LAYERS * SEQ * (H + H + F) / 32)  # one e8m0 scale per 32 elements


@pytest.mark.parametrize("gpu, recipe, per_weight", [
    (None, "delayed", 2),  # no GPU: as on Hopper, the transpose cached beside each FP8 weight
    ("h100", "current", 2),  # compute capability 9.0: TN-only FP8 GEMMs
    ("b200", "current", 1),  # 10.0: TE keeps no transpose
    ("b200", "mxfp8", 2 * (1 + 1 / 32)),  # both directions, each with its scales
])
def test_fp8_weight_copies(gpu, recipe, per_weight):
    b = _mem(gpu, fp8=recipe)
    assert b.value("weights/fp8") == pytest.approx(BLOCK_LINEARS * per_weight, abs=1)
    assert b.value("weights") == pytest.approx(_mem(gpu).value("weights") + BLOCK_LINEARS * per_weight, abs=1)


def test_fp8_parameters_replace_the_16bit_block_weights():
    plain = _mem(fp8="current", zero=1)
    params = _mem(fp8="current", fp8_params=True, zero=1)  # beside the distributed optimizer, as Megatron needs
    assert params.value("weights/fp8") == plain.value("weights/fp8")
    assert params.value("weights/16bit") == pytest.approx(plain.value("weights/16bit") - 2 * BLOCK_LINEARS, abs=1)
    assert params.value("gradients") == plain.value("gradients")  # the gradients and master copies are unchanged


@pytest.mark.parametrize("gpu, per_weight", [("h100", 2), ("b200", 1)])
def test_megatron_fsdp_shards_fp8_parameters(gpu, per_weight):
    """Llama-3-8B under ZeRO-3 over 8 GPUs with FP8 parameters (current scaling): Megatron FSDP keeps each GPU's
    shard of the block linears in 1 byte and of the rest (embedding, head, norms) in 16 bits, and gathers two
    layers, their linears in FP8 with the transposes a TN-only GPU (H100) makes for them, their norms in 16 bits;
    no whole-model FP8 copy. Gradients and master weights are those of the 16-bit run."""
    from llmcalc.spec import Parallelism

    total = 8_030_261_248
    kw = dict(zero=3, parallel=Parallelism.resolve(gpus=8))
    params = _mem(gpu, fp8="current", fp8_params=True, **kw)
    assert params.value("weights/fp8") == pytest.approx(BLOCK_LINEARS / 8, abs=1)
    assert params.value("weights/16bit") == pytest.approx((total - BLOCK_LINEARS) * 2 / 8, abs=1)
    layer = BLOCK_LINEARS / LAYERS
    assert params.value("weights/gathered") == pytest.approx(2 * (layer * per_weight + 2 * H * 2), abs=1)
    copies = _mem(gpu, fp8="current", **kw)  # without FP8 parameters: 16-bit shards and every weight's FP8 copy
    assert copies.value("weights/fp8") == pytest.approx(BLOCK_LINEARS * per_weight, abs=1)
    assert params.value("gradients") == copies.value("gradients")
    assert params.value("optimizer") == copies.value("optimizer")
    assert params.value("weights") < copies.value("weights") / 4
    alone = _mem(gpu, fp8="current", fp8_params=True, zero=3)  # one replica: nothing to gather, no transposes kept
    assert alone.value("weights/fp8") == pytest.approx(BLOCK_LINEARS, abs=1) and "weights/gathered" not in alone.rows


def test_plain_mlp_and_moe_inputs():
    """GPT-2 (GELU MLP of 3072, h 768, 12 layers): every linear input drops to 1 byte, down's too (delayed
    scaling's out-projection copy adds h back). Mixtral: the router keeps the MLP norm's 16-bit output, so only
    the experts' k = 2 inputs and down's go to FP8."""
    def acts(model, **kw):
        return memory_breakdown(load_model(model), None, MemorySettings(seq=SEQ, framework="megatron", **kw))
    gpt2 = acts("gpt2").value("activations/layers") - acts("gpt2", fp8="current").value("activations/layers")
    assert gpt2 == 12 * SEQ * (768 + 768 + 3072)
    mix = acts("mixtral-8x7b").value("activations/layers") - acts("mixtral-8x7b", fp8="current").value("activations/layers")
    assert mix == 32 * SEQ * (4096 + 2 * 4096 + 2 * 14336)  # q/k/v input; 2 expert inputs; 2 experts' down inputs


def test_mxfp8_parameters_keep_the_16bit_buffer():
    plain = _mem("b200", fp8="mxfp8", zero=1)
    params = _mem("b200", fp8="mxfp8", fp8_params=True, zero=1)
    assert params.value("weights") == plain.value("weights")


@pytest.mark.parametrize("gpu, recipe, words", [("a100-80gb", "current", "no FP8 tensor cores"),
                                                ("h100", "mxfp8", "MXFP8 needs Blackwell")])
def test_gpus_that_cannot_run_the_recipe(gpu, recipe, words):
    with pytest.raises(SpecError, match=words):
        _mem(gpu, fp8=recipe)


@pytest.mark.parametrize("kw, words", [
    (dict(fp8="current", framework="hf"), "--framework megatron"),
    (dict(fp8="current", framework="megatron", compile=True), "--compile"),
    (dict(fp8_params=True, framework="megatron"), "--fp8-params needs --fp8"),
    (dict(fp8="e5m2", framework="megatron"), "--fp8"),
    (dict(fp8="current", framework="megatron", mode="infer"), "--mode train"),
    (dict(fp8="current", framework="megatron", finetune="lora"), "full fine-tuning"),
    (dict(fp8="current", framework="megatron", fp8_params=True), "--zero 1 or more"),
    (dict(fp8="mxfp8", framework="megatron", fp8_params=True, zero=3,
          parallel=__import__("llmcalc.spec").spec.Parallelism.resolve(gpus=8)), "--zero 3"),
])
def test_fp8_refusals(kw, words):
    with pytest.raises(SpecError, match=words.replace("-", r"\-")):
        MemorySettings(seq=SEQ, **kw)


def test_cli_fp8_memory():
    data = run_json("memory", "--model", "llama-3-8b", "--gpu", "b200", "--seq", "1k", "--framework", "megatron",
                    "--fp8", "current")
    assert data["inputs"]["fp8"] == "current" and data["inputs"]["fp8_transposes"] is False
    assert value(data, "weights/fp8") == pytest.approx(BLOCK_LINEARS, abs=1)
    refused = run("memory", "--model", "llama-3-8b", "--fp8", "current")
    assert refused.exit_code == 2 and "--framework megatron" in refused.output


def test_plan_gradient_bytes_and_fp8_settings():
    """--grad-reduce bf16 halves the gradients' memory and dp_comm's reduce-scatter; --fp8-params gathers the block
    linears in 1 byte and the embedding, norms and head (1.05 B of Llama-3-8B's 8.03 B) in 2."""
    from llmcalc.cluster import cluster_of
    from llmcalc.plan import Constraints, Planner, Target, variants

    m = load_model("llama-3-8b")
    cluster = cluster_of(load_gpu("h100"), 8)
    t = Target(gpus=16, seq=4096, global_batch=64, dtype="fp8")
    deg = (1, 1, 1, 16, 1)
    timed = {}
    for grads, params in (("fp32", False), ("bf16", False), ("bf16", True)):
        c = Constraints(zero=(1,), recompute=("none",), micro_batch=1, dp_overlap=False, grad_reduce=grads,
                        fp8_recipe="current", fp8_params=params)
        p = Planner(m, cluster, t, c)
        lay = next(variants(m, t, c, deg))
        assert (lay.grad_bytes, lay.param_bytes) == ({"fp32": 4, "bf16": 2}[grads], 1 if params else 2)
        timed[grads, params] = (p.time(lay).dp, p.memory(lay))
    # without overlap, ZeRO-1's step exposes the reduce-scatter (grad bytes) and the all-gather (param bytes)
    (dp32, mem32), (dp16, mem16), (dp8, mem8) = timed.values()
    assert dp16 / dp32 == pytest.approx((2 + 2) / (4 + 2), rel=0.02)
    total = 8_030_261_248
    gathered = (BLOCK_LINEARS + 2 * (total - BLOCK_LINEARS)) / total  # bytes a parameter: 1.13
    assert dp8 / dp32 == pytest.approx((2 + gathered) / (4 + 2), rel=0.02)
    assert mem32 - mem16 == pytest.approx(2 * 8.03e9, rel=1e-3)  # two bytes a parameter less (persistent buffers)
    assert mem16 - mem8 == pytest.approx(2 * BLOCK_LINEARS, rel=1e-3)  # FP8 parameters: no 16-bit block weights


@pytest.mark.parametrize("kw, words", [
    (dict(dtype="bf16", fp8_params=True), "--fp8-params needs --dtype fp8"),
    (dict(dtype="fp8", fp8_recipe="mxfp8"), "MXFP8 needs Blackwell"),
    (dict(dtype="bf16", fp8_recipe="current"), "--fp8-recipe needs --dtype fp8"),
    (dict(dtype="fp8", fp8_params=True, zero=3, fp8_recipe="mxfp8", gpu="b200"), "--zero 3"),
    (dict(dtype="fp8", fp8_params=True, zero=0), "--zero 1 or more"),
])
def test_plan_fp8_refusals(kw, words):
    import llmcalc

    dtype, gpu = kw.pop("dtype"), kw.pop("gpu", "h100")
    with pytest.raises(SpecError, match=words.replace("-", r"\-")):
        llmcalc.plan("llama-3-8b", gpu=gpu, gpus=8, seq=4096, global_batch=64, dtype=dtype, **kw)


def test_plan_gathers_fsdps_fp8_parameters_in_one_byte():
    """FP8 parameters under ZeRO-3 (current scaling): the planner searches FSDP with them, gathering 1 byte a
    parameter, so its DP traffic is below the 16-bit parameters' and its memory below the FP8 copies'."""
    import llmcalc

    kw = dict(gpu="h100", gpus=8, seq=4096, global_batch=64, dtype="fp8", zero=3, tp=1, pp=1, micro_batch=1,
              recompute="full")
    fsdp, copies = llmcalc.plan("llama-3-8b", fp8_params=True, **kw), llmcalc.plan("llama-3-8b", **kw)
    assert fsdp.summary["memory"] < copies.summary["memory"] - 8e9  # no whole-model FP8 copy (2 B a weight on H100)
    assert 0 < fsdp.value("dp_comm") < copies.value("dp_comm")  # the exposed floor of smaller gathers
