"""The software the planner assumes: GEMMs at a share of the GPU's measured best-shape matmul rate (fp8's too), the attention
core at its kernel's measured forward share, interleaved sends under the next chunk; through the real CLI."""

from __future__ import annotations

import json

import pytest

from llmcalc import kernels, modelcost, steptime
from llmcalc.presets import load_gpu, load_model

from .conftest import run
from .test_hostile import _fails_cleanly


def test_gemms_reach_a_share_of_the_gpus_measured_best_shape_rate():
    """H100: stas00's MAMF gives bf16 794.5 of 989.4 and fp8 1402.6 of 1978.9 TFLOP/s; the training GEMMs reach
    0.86 of each: 0.86 x 794.5 / 989.4 = 69.1% of the bf16 peak, 0.86 x 1402.6 / 1978.9 = 61.0% of the fp8 one. An
    A100's MAMF (271.2 of 312) is a larger share of its peak, so its GEMMs reach more of it (74.8%); an MI300X's
    (668 of 1307.4) a smaller one (44.0%). The 40 GB A100 and the A800 have the A100 SXM's GA100 at its clocks."""
    h100, a100 = load_gpu("h100"), load_gpu("a100-80gb")
    assert kernels.matmul_efficiency("bf16", h100) == pytest.approx(0.86 * 794.5 / 989.4)
    assert kernels.matmul_efficiency("bf16", h100) == pytest.approx(0.691, abs=1e-3)
    assert kernels.matmul_efficiency("fp8", h100) == pytest.approx(0.86 * 1402.6 / 1978.9)
    assert kernels.matmul_efficiency("fp8", h100) == pytest.approx(0.610, abs=1e-3)
    assert kernels.matmul_efficiency("bf16", a100) == pytest.approx(0.86 * 271.2 / 312) == pytest.approx(0.748, abs=1e-3)
    mi300x = load_gpu("mi300x")
    assert kernels.matmul_efficiency("bf16", mi300x) == pytest.approx(0.86 * mi300x.matmul_share("bf16"))
    assert kernels.matmul_efficiency("bf16", mi300x) == pytest.approx(0.440, abs=1e-3)
    for same, as_ in (("a100-40gb", a100), ("a800", a100), ("mi325x", mi300x)):
        assert kernels.matmul_efficiency("bf16", load_gpu(same)) == kernels.matmul_efficiency("bf16", as_)


def test_an_unmeasured_dtype_scales_the_gpus_measured_bf16_share():
    """MI300X has a bf16 MAMF (0.511 of its peak) and no fp8 one: fp8 takes the bf16 share scaled as prefill's
    (0.45 / 0.65), 0.86 x 0.511 x 0.692 = 0.304 of the fp8 peak, 1.38x the bf16 rate (not the flat 0.70 x
    0.692, which would run fp8 2.2x as fast as the measured bf16)."""
    mi300x = load_gpu("mi300x")
    fp8 = kernels.matmul_efficiency("fp8", mi300x)
    assert fp8 == pytest.approx(0.86 * 668.4 / 1307.4 * 0.45 / 0.65)
    assert fp8 * mi300x.peak("fp8") / (kernels.matmul_efficiency("bf16", mi300x) * mi300x.peak("bf16")) == \
        pytest.approx(1.38, abs=0.01)


def test_a_gpu_without_measurements_scales_fp8_as_prefill_does():
    """No matmul_tflops (L40S) or no fp8 figure: the serving prefill ratio, 0.45 / 0.65."""
    assert kernels.matmul_efficiency("fp8", load_gpu("l40s")) == pytest.approx(0.70 * 0.45 / 0.65)
    assert kernels.matmul_efficiency("fp8") == pytest.approx(0.70 * 0.45 / 0.65)


def test_auto_attention_is_cudnn_where_measured_and_flashattention_2_elsewhere():
    """Transformer Engine runs cuDNN's fused attention on Hopper (H100: 0.61 of the peak in the FA3 paper's
    Fig. 5) and FlashAttention-2 on Ampere (A100: 0.73); a kernel a GPU has no figure for runs as FA2."""
    h100, a100 = load_gpu("h100"), load_gpu("a100-80gb")
    assert kernels.attention_kernel(h100) == "cudnn" and kernels.attention_kernel(a100) == "fa2"
    assert kernels.attention_efficiency(h100) == pytest.approx(0.41 * 0.61)
    assert kernels.attention_efficiency(h100, "fa2") == pytest.approx(0.41 * 0.35)
    assert kernels.attention_efficiency(h100, "fa3") == pytest.approx(0.41 * 0.65)
    assert kernels.attention_efficiency(a100, "cudnn") == kernels.attention_efficiency(a100) == \
        pytest.approx(0.41 * 0.73)


def test_the_cli_offers_the_cores_kernels():
    from llmcalc.cli.plan import AttentionKernel

    assert tuple(k.value for k in AttentionKernel) == kernels.ATTENTION_KERNELS


def _plan(*extra: str) -> dict:
    out = run("plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--gpus", "8", "--seq", "8k", "--top", "1",
              "--json", *extra)
    assert out.exit_code == 0, out.stderr
    return json.loads(out.stdout)


def test_flashattention_2_is_slower_on_h100_and_says_so():
    auto, fa2 = _plan(), _plan("--attention-kernel", "fa2")
    assert auto["inputs"]["attention_kernel"] == "auto" and fa2["inputs"]["attention_kernel"] == "fa2"
    assert fa2["summary"]["step_time"] > auto["summary"]["step_time"]
    assert any("attention core (cudnn) at 25%" in n for n in auto["notes"])
    assert any("attention core (fa2) at 14%" in n for n in fa2["notes"])


def test_an_unknown_kernel_is_one_line_and_exit_2():
    _fails_cleanly(run("plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--gpus", "8", "--attention-kernel", "fa4"),
                   "fa4")


@pytest.mark.parametrize("gpu, kernel, says", [
    ("a100", "fa3", "runs on Hopper"), ("b200", "fa3", "runs on Hopper"), ("mi300x", "cudnn", "is made by AMD"),
    ("v100", "fa3", "compute capability 7.0"), ("v100", "cudnn", "use fa2 or unfused, or auto")])
def test_a_kernel_the_gpu_cannot_run_is_refused(gpu, kernel, says):
    """FlashAttention-3 is Hopper's alone, cuDNN's fused attention NVIDIA's from Ampere; the flash class (fa2) runs
    from Volta (PyTorch SDPA's memory-efficient kernel before Ampere) and on ROCm: naming one a GPU cannot run is a
    one-line error, not a plan timed as something else."""
    _fails_cleanly(run("plan", "--model", "llama-3.1-8b", "--gpu", gpu, "--gpus", "8", "--dtype", "fp16",
                       "--attention-kernel", kernel), says)


def test_auto_before_ampere_is_the_unfused_core():
    """Transformer Engine's choice on a V100 (compute capability 7.0), which runs no fused kernel: its unfused
    attention, with the s x s scores in HBM, and so no context parallelism."""
    v100 = load_gpu("v100")
    assert kernels.attention_kernel(v100) == "unfused" and kernels.attention_kernel(load_gpu("mi300x")) == "fa2"
    out = run("plan", "--model", "llama-3.1-8b", "--gpu", "v100", "--gpus", "8", "--seq", "2k", "--top", "1",
              "--dtype", "fp16")
    assert out.exit_code == 0, out.stderr
    assert "attention core unfused" in " ".join(out.stdout.split())
    _fails_cleanly(run("plan", "--model", "llama-3.1-8b", "--gpu", "v100", "--gpus", "8", "--seq", "8k", "--cp", "2",
                       "--dtype", "fp16"), "drop --cp")


@pytest.mark.parametrize("fields, problem", [
    ("  attention_kernels: {fa4: 0.5}\n", "fa4"),
    ("  attention_kernels: {cudnn: 1.5}\n", "fraction"),
    ("  attention_kernels: [cudnn]\n", "attention_kernels"),
    ("  matmul_tflops: {bf16: 2000}\n", "matmul_tflops.bf16"),
    ("  matmul_tflops: {bf16: fast}\n", "matmul_tflops.bf16"),
    ("  acc16_tflops: {bf16: 400}\n", "acc16_tflops.bf16 must be the 16-bit-accumulate rate"),
    ("  acc16_tflops: {bf16: 2000}\n", "acc16_tflops.bf16"),
    ("  acc16_tflops: {fp8: 1000}\n", "acc16_tflops.fp8"),
])
def test_a_gpu_file_with_impossible_kernel_figures_is_refused(tmp_path, fields, problem):
    gpu = tmp_path / "odd.yaml"
    gpu.write_text("odd:\n  memory_gib: 80\n  memory_bandwidth_tb_s: 3\n  tflops: {bf16: 900}\n" + fields)
    _fails_cleanly(run("plan", "--model", "llama-3.1-8b", "--gpu", str(gpu), "--gpus", "8"), problem)


def test_presets_show_gives_kernel_shares_as_fractions_and_matmuls_as_rates():
    out = run("presets", "show", "h100")
    assert out.exit_code == 0
    lines = {line.split("│")[0].strip(): line for line in out.stdout.splitlines() if "│" in line}
    assert "cudnn 0.61, fa3 0.65" in lines["attention_kernels"] and "FLOP/s" not in lines["attention_kernels"]
    assert "bf16 794 TFLOP/s" in lines["matmul_flops"]


def test_no_pp_overlap_pays_every_interleaved_send():
    fixed = ("--pp", "4", "--vpp", "2", "--tp", "1", "--cp", "1", "--micro-batch", "1", "--gpus", "32")

    def pp_comm(*extra: str) -> float:
        out = run("plan", "--model", "llama-3.1-8b", "--gpu", "a100-80gb", "--seq", "4k", "--top", "1", "--json",
                  *fixed, *extra)
        assert out.exit_code == 0, out.stderr
        d = json.loads(out.stdout)
        return next(r["value"] for r in d["rows"] if r["name"] == "pp_comm"), d["inputs"]["pp_overlap"]

    (hidden, on), (paid, off) = pp_comm(), pp_comm("--no-pp-overlap")
    assert on is True and off is False and paid > hidden >= 0


def test_fp16_borrows_bf16s_measurement_only_at_the_same_peak():
    """Gaudi 3's fp16 peak is a quarter of its bf16 peak: bf16's 1,243 TFLOP/s says nothing about fp16 there."""
    gaudi3, h100 = load_gpu("gaudi3"), load_gpu("h100")
    assert gaudi3.matmul_share("fp16") is None
    assert kernels.matmul_efficiency("fp16", gaudi3) == pytest.approx(0.70)  # unmeasured: MATMUL_EFFICIENCY
    assert h100.matmul_share("fp16") == pytest.approx(794.5 / 989.4)
    assert kernels.matmul_efficiency("fp16", h100) == kernels.matmul_efficiency("bf16", h100)
    assert kernels.matmul_efficiency("fp8", gaudi3) == pytest.approx(0.86 * 1289.5 / 1835)


def test_a_kernel_the_gpu_has_no_figure_for_says_what_it_is_timed_as():
    from llmcalc.trainplan import kernel_text

    assert kernel_text(load_gpu("a100-80gb"), "cudnn") == "cudnn, timed as fa2: no cudnn figure for a100-80gb"
    assert kernel_text(load_gpu("h100"), "auto") == "cudnn"
    # no figure: A100's FlashAttention-2 share (0.73) scaled by the GPU's MAMF share over A100's (271.2 / 312), by hand
    assert "fa2, at 0.66 of the peak: no attention figure for b300" in kernel_text(load_gpu("b300"), "auto")
    assert round(0.73 * (1769 / 2250) / (271.2 / 312), 2) == 0.66  # B300: 1,769 of 2,250 dense bf16 TFLOP/s
    mi300x = round(0.73 * (668.4 / 1307.4) / (271.2 / 312), 3)  # 0.429: below its own GEMMs' 0.511
    assert f"at {mi300x:g} of the peak" in kernel_text(load_gpu("mi300x"), "auto")
    assert kernel_text(load_gpu("b200"), "auto") == "cudnn"


@pytest.mark.parametrize("gpu, peak, cudnn, fa2", [("b200", 2250, 1384, 400), ("gb200", 2500, 1584, 414),
                                                   ("gb300", 2500, 1899, 418)])
def test_blackwell_attention_figures_are_nvidias_measurements(gpu, peak, cudnn, fa2):
    """NVIDIA cudnn-frontend's SDPA training benchmark (benchmark/sdpa_benchmark_training/artifacts at commits 0b1577c
    and b372d39: BF16 forward, head dim 128, 8k tokens, TFLOP/s with causal FLOPs halved): cuDNN's fused attention and
    FlashAttention-2 (flash-attn 2.7.4 on B200, PyTorch's flash backend on GB200/GB300) over the dense BF16 peak.
    GB300's cuDNN runs 1.2x GB200's at the same peak: Blackwell Ultra doubles the SFU's exp2 rate softmax needs."""
    g = load_gpu(gpu)
    assert g.attention_kernels["cudnn"] == pytest.approx(cudnn / peak, abs=0.005)
    assert g.attention_share == pytest.approx(fa2 / peak, abs=0.005)
    assert kernels.attention_efficiency(g) == pytest.approx(kernels.ATTENTION_EFFICIENCY * cudnn / peak, abs=0.003)


def test_the_notes_and_formulas_follow_the_overlap_flags():
    out = run("plan", "--model", "llama-3.1-8b", "--gpu", "b200", "--gpus", "16", "--seq", "8k", "--top", "1",
              "--zero", "0,1", "--no-dp-overlap", "--no-pp-overlap", "--explain")
    assert out.exit_code == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "ZeRO 0-2's DP exposed" in text and "PP sends exposed" in text
    assert "all exposed (llmcalc/exposure.py dp_exposed)" in text


def test_the_cli_lists_the_cores_gradient_and_fp8_choices():
    """cli/plan.py names the gradient dtypes by hand, so that loading it does not import steptime."""
    from llmcalc import steptime
    from llmcalc.cli.plan import BackwardPrefetch, Fp8Recipe, GradReduce
    from llmcalc.exposure import BACKWARD_PREFETCH
    from llmcalc.memory.fp8 import RECIPES

    assert tuple(k.value for k in GradReduce) == tuple(steptime.GRAD_BYTES)
    assert tuple(k.value for k in BackwardPrefetch) == BACKWARD_PREFETCH
    assert tuple(k.value for k in Fp8Recipe) == RECIPES


# -- the unfused attention core --------------------------------------------------------------------

def _gpt(dropout: float = 0.1, hidden: int = 6144, heads: int = 64, layers: int = 48):
    """Korthikanti et al.'s 22B GPT (48 layers, width 6144, 64 heads of 96, 2k tokens) on GPT-2's blocks, dropout
    0.1; other shapes as asked."""
    import dataclasses

    return dataclasses.replace(load_model("gpt2"), name="gpt", hidden_size=hidden, num_hidden_layers=layers,
                               num_attention_heads=heads, num_key_value_heads=heads, vocab_size=51200,
                               intermediate_size=4 * hidden, max_position_embeddings=2048, dropout=dropout)


def _a100_links(kernel: str):
    from llmcalc.cluster import cluster_of
    from llmcalc.plan import links_of

    return links_of(cluster_of(load_gpu("a100-80gb"), 8), "bf16", kernel)


# an A100's: 61% of its HBM bandwidth for the unfused core's passes (kernels.UNFUSED_BANDWIDTH), 0.86 of its MAMF
HBM, RATE16 = 2.039e12 * 0.61, 271.2e12 * 0.86  # (233 TFLOP/s)


@pytest.mark.parametrize("dropout, softmax, seconds, flash_ratio", [(0.1, 7 + 10, 1.043e-3, 3.78),
                                                                    (0.0, 7, 0.683e-3, 2.48)])
def test_an_unfused_core_moves_its_scores_through_hbm(dropout, softmax, seconds, flash_ratio):
    """By hand, TP 8 on an A100, 4 sequences of 2,048 tokens: each GPU holds 8 of the 64 heads, so a token has
    8 x 2048 scores a layer. The GEMMs move 12 bytes a score over forward and backward (a third: 4) and compute the
    whole square, 4 x 2048 x 6144 / 8 FLOPs a token forward, 2 x (96 + 96) a score: at a head dim of 96 the bytes
    bind (3.22e-12 s a score at 0.61 of the HBM bandwidth, against 1.65e-12). The causal softmax moves 7 bytes a
    score, dropout 10 more."""
    links = _a100_links("unfused")
    assert links.unfused and links.attention == 0.0
    cost = modelcost.model_cost(_gpt(dropout), 2048)
    lay = steptime.Layout(tp=8, pp=1, dp=1, sp=True, micro_batch=4, micro_batches=1)
    scores = 8 * 2048
    flops, gemm_bytes = 4 * 2048 * 6144 / 8 / RATE16, scores * 12 / 3 / HBM
    assert gemm_bytes > flops
    mb = steptime.micro_batch(cost, links, lay, 2048)
    assert mb.attention == pytest.approx(48 * 4 * 2048 * (gemm_bytes + scores * softmax / 3 / HBM), rel=1e-6)
    assert mb.attention / 48 == pytest.approx(seconds, rel=0.01)  # a layer, a third of forward + backward
    # FlashAttention-2 times the causal half at 0.41 x 0.73 of the peak, 0.28 ms a layer
    flash = steptime.micro_batch(cost, _a100_links("fa2"), lay, 2048)
    assert flash.attention == pytest.approx(48 * 4 * 2048 * 2 * 2048 * 6144 / 8 / (312e12 * 0.41 * 0.73), rel=1e-3)
    assert mb.attention / flash.attention == pytest.approx(flash_ratio, rel=0.01)


def test_an_unfused_cores_gemms_bind_on_their_flops_at_a_head_dim_of_256():
    """Heads of 256 on an A100: 2 x (256 + 256) FLOPs a score at 233 TFLOP/s (4.39e-12 s) outlast the GEMMs' 4 bytes
    a score at 1.24 TB/s (3.22e-12 s)."""
    cost = modelcost.model_cost(_gpt(0.1, hidden=4096, heads=16, layers=36), 2048)
    lay = steptime.Layout(tp=4, pp=1, dp=1, micro_batch=1, micro_batches=1)
    scores = 16 // 4 * 2048
    flops = 2 * 2048 * (2 * 4096) / 4 / RATE16  # the whole square, forward, a token
    assert flops > scores * 12 / 3 / HBM
    mb = steptime.micro_batch(cost, _a100_links("unfused"), lay, 2048)
    assert mb.attention == pytest.approx(36 * 2048 * (flops + scores * 17 / 3 / HBM), rel=1e-6)


def test_recomputation_repeats_an_unfused_cores_forward():
    """Selective recomputation rebuilds the core's forward: the GEMMs' forward third and softmax's and dropout's
    forward bytes (3 + 5 a score), not a third of forward + backward (17 / 3)."""
    cost = modelcost.model_cost(_gpt(), 2048)
    links = _a100_links("unfused")
    lay = steptime.Layout(tp=8, pp=1, dp=1, sp=True, recompute="selective", micro_batch=4, micro_batches=1)
    scores = 8 * 2048
    forward = 48 * 4 * 2048 * (scores * 12 / 3 / HBM + scores * (3 + 5) / HBM)
    mb = steptime.micro_batch(cost, links, lay, 2048)
    assert mb.redo == pytest.approx(forward, rel=1e-6) and mb.core_forward == pytest.approx(forward, rel=1e-6)
    full = steptime.micro_batch(cost, links, lay._replace(recompute="full"), 2048)
    assert full.redo == pytest.approx(full.gemm_forward + forward + full.elementwise, rel=1e-9)


def test_unfused_attention_has_no_context_parallelism():
    """Megatron-Core's ring attention runs inside Transformer Engine's fused kernels: the search leaves CP out, and
    asking for both is one line and exit 2."""
    from llmcalc.plan import Constraints, SpecError

    with pytest.raises(SpecError, match="--cp 2 needs a fused attention kernel"):
        Constraints(cp=2, attention_kernel="unfused")
    from llmcalc.cluster import load_cluster
    from llmcalc.plan import Planner, Target

    def cps(kernel: str) -> set[int]:
        p = Planner(load_model("llama-3.1-8b"), load_cluster("dgx-h100"), Target(gpus=64, seq=32768, global_batch=64),
                    Constraints(attention_kernel=kernel))
        return {r.layout.cp for r in p.search(8)}

    assert cps("unfused") == {1} and cps("fa2") != {1}
    _fails_cleanly(run("plan", "--model", "llama-3.1-8b", "--gpu", "h100", "--gpus", "64", "--seq", "32k", "--cp", "2",
                       "--attention-kernel", "unfused"), "--cp 2 needs a fused attention kernel")


def test_unfused_attention_keeps_the_scores_in_memory():
    """The planner's memory for an unfused core is the memory model's eager attention: without recomputation each
    layer keeps its s x s terms (Korthikanti et al.'s 5as bytes a token with dropout: the probabilities, the dropped
    ones and the 1-byte mask), which selective recomputation drops."""
    from llmcalc.cluster import load_cluster
    from llmcalc.memory.placement import stages
    from llmcalc.memory.settings import MemorySettings
    from llmcalc.memory.training import train_stage
    from llmcalc.plan import Constraints, Planner, Target
    from llmcalc.spec import Parallelism

    m = _gpt()
    target = Target(gpus=8, seq=2048, global_batch=4)
    unfused, flash = (Planner(m, load_cluster("dgx-a100"), target, Constraints(attention_kernel=k, tp=8))
                      for k in ("unfused", "fa2"))
    none = steptime.Layout(tp=8, pp=1, dp=1, sp=True, zero=0, recompute="none", micro_batch=4, micro_batches=1)
    par = Parallelism(gpus=8, tp=8, dp=1, sp=True)
    eager, fused = (train_stage(m, MemorySettings(seq=2048, batch=4, zero=0, recompute="none", framework="megatron",
                                                  parallel=par, attention_impl=impl), stages(m, 1)[0])
                    for impl in ("eager", "flash"))
    assert unfused.memory(none) == pytest.approx(eager.total, rel=1e-9)
    assert flash.memory(none) == pytest.approx(fused.total, rel=1e-9)
    scores = 4 * 2048 * 8 * 2048  # 4 sequences x 2048 queries x 8 heads a GPU x 2048 keys

    def gained(row: str) -> float:
        row = "activations/per_layer/" + row
        return eager.rows[row] - (fused.rows[row] if row in fused.rows else 0.0)

    assert gained("scores") == pytest.approx(4 * scores) and gained("dropout") == pytest.approx(1 * scores)
    selective = none._replace(recompute="selective")
    assert unfused.memory(selective) == pytest.approx(flash.memory(selective), rel=0.01)


def test_megatrons_fused_softmax_keeps_16_bit_probabilities():
    """Hugging Face's Llama code upcasts the softmax to fp32 (4 B a score kept, and its 2-byte cast back); Megatron's
    fused scale-mask-softmax keeps its 16-bit output (2 B a score), as the planner's unfused core assumes."""
    from llmcalc.memory.activations import layer_tensors

    m = load_model("llama-3.1-8b")  # rotary positions, no dropout

    def kept(fused: bool) -> float:  # bytes a token a key a layer, saved for backward
        return sum(t.nbytes for t in layer_tensors(m, "eager", 2, fused=fused) if t.per_key)

    assert kept(False) == (4 + 2) * 32 and kept(True) == 2 * 32


def test_the_notes_say_how_an_unfused_core_is_timed():
    out = run("plan", "--model", "llama-3.1-8b", "--gpu", "a100-80gb", "--gpus", "8", "--seq", "4k", "--top", "1",
              "--json", "--attention-kernel", "unfused")
    assert out.exit_code == 0, out.stderr
    assert any("attention core unfused (the whole s x s square's GEMMs at 75% of the 16-bit peak, 19 bytes a score "
               "through HBM)" in n for n in json.loads(out.stdout)["notes"])
    assert _plan("--attention-kernel", "unfused")["summary"]["step_time"] > _plan()["summary"]["step_time"]


def test_fp16_gradients_halve_the_reduction_and_go_with_fp16_training():
    """Megatron-LM's fp16 training of 2021-2022 reduced fp16 gradients: 2 bytes a value, as bf16's; asked beside bf16
    training (which Megatron reduces in fp32 or bf16) it is one line and exit 2."""
    from llmcalc.cluster import load_cluster
    from llmcalc.plan import Constraints, Planner, SpecError, Target

    def dp_and_memory(grads: str) -> tuple[float, float]:
        p = Planner(load_model("llama-3.1-8b"), load_cluster("dgx-a100"), Target(gpus=16, seq=4096, global_batch=64,
                    dtype="fp16"), Constraints(grad_reduce=grads, dp_overlap=False))
        lay = steptime.Layout(tp=1, pp=1, dp=16, zero=1, micro_batch=1, micro_batches=4, dp_overlap=False,
                              grad_bytes=steptime.GRAD_BYTES[grads])
        return p.time(lay).dp, p.memory(lay)

    (dp32, mem32), (dp16, mem16) = dp_and_memory("fp32"), dp_and_memory("fp16")
    # exposed, ZeRO-1 reduce-scatters the gradients and all-gathers the 16-bit parameters: 4 + 2 bytes, then 2 + 2
    assert dp16 / dp32 == pytest.approx(4 / 6, rel=0.01)
    assert mem32 - mem16 == pytest.approx(2 * 8.03e9, rel=0.01)  # 2 bytes less for each gradient, none sharded
    with pytest.raises(SpecError, match="--grad-reduce fp16 goes with --dtype fp16"):
        Planner(load_model("llama-3.1-8b"), load_cluster("dgx-a100"), Target(gpus=16, seq=4096, global_batch=64),
                Constraints(grad_reduce="fp16"))
    _fails_cleanly(run("plan", "--model", "llama-3.1-8b", "--gpu", "a100-80gb", "--gpus", "16", "--grad-reduce",
                       "fp16"), "--grad-reduce fp16 goes with --dtype fp16")
    out = run("plan", "--model", "llama-3.1-8b", "--gpu", "a100-80gb", "--gpus", "16", "--grad-reduce", "fp16",
              "--dtype", "fp16", "--json")
    assert out.exit_code == 0, out.stderr


def test_a_dtype_the_gpu_has_no_tensor_cores_for_warns():
    """A V100 has fp16 tensor cores and no bf16 ones: a bf16 plan is timed at its fp16 peak (the presets' stand-in),
    with one line saying so; --dtype fp16 says nothing."""
    from llmcalc.cli.common import Implausible

    args = ("plan", "--model", "llama-3.1-8b", "--gpu", "v100", "--gpus", "8", "--seq", "2k", "--top", "1")
    with pytest.warns(Implausible, match="v100 has no bf16 tensor cores"):
        assert run(*args).exit_code == 0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", Implausible)
        assert run(*args, "--dtype", "fp16").exit_code == 0


def test_megatron_on_a_gpu_before_ampere_saves_the_unfused_cores_scores_as_plan_sizes_it():
    """Transformer Engine runs no fused attention before Ampere, so Megatron-Core on a V100 keeps the s x s scores:
    `memory --framework megatron` takes eager there unless told, and reads plan's best layout to the byte."""
    from .conftest import run_json

    plan = run_json("plan", "--model", "llama-3-8b", "--gpu", "v100", "--gpus", "64", "--seq", "2k", "--top", "1",
                    "--dtype", "fp16")
    best = plan["summary"]["layouts"][0]
    args = ("memory", "--model", "llama-3-8b", "--mode", "train", "--framework", "megatron", "--gpu", "v100",
            "--gpus", "64", "--tp", str(best["tp"]), "--pp", str(best["pp"]), "--zero", str(best["zero"]),
            "--batch", str(best["micro_batch"]), "--grad-accum", str(best["grad_accum"]),
            "--recompute", best["recompute"], "--seq", "2048", "--dtype", "fp16")
    memory = run_json(*args)
    assert memory["inputs"]["attention_impl"] == "eager" and memory["summary"]["total"] == best["memory"]
    assert run_json(*args, "--attention-impl", "sdpa")["summary"]["total"] < best["memory"]  # as asked
    out = run("memory", "--model", "llama-3-8b", "--mode", "train", "--gpu", "v100", "--attention-impl", "flash")
    assert out.exit_code == 2 and "--attention-impl flash needs compute capability 7.5" in out.stderr


def test_the_attention_fallback_names_which_matmul_share_it_scales_to():
    from llmcalc.trainplan import kernel_text

    assert kernel_text(load_gpu("mi300x"), "auto").endswith("scaled to its best-shape matmul share")  # stas00's MAMF
    assert kernel_text(load_gpu("tpu-v5p"), "auto").endswith("scaled to the matmul share assumed without a figure")
