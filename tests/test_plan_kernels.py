"""The software the planner assumes: fp8 GEMMs at the GPU's measured fp8/bf16 matmul ratio, the attention
core at its kernel's measured forward share, interleaved sends under the next chunk; through the real CLI."""

from __future__ import annotations

import json

import pytest

from llmcalc import steptime
from llmcalc.presets import load_gpu

from .conftest import run
from .test_hostile import _fails_cleanly


def test_fp8_gemms_reach_the_measured_fp8_share_against_bf16s():
    """H100: stas00's MAMF gives bf16 794.5 of 989.4 and fp8 1402.6 of 1978.9 TFLOP/s, so the training GEMMs'
    70% of the bf16 peak becomes 70% x (1402.6 / 1978.9) / (794.5 / 989.4) = 61.8% of the fp8 peak."""
    h100 = load_gpu("h100")
    assert steptime.matmul_efficiency("bf16", h100) == pytest.approx(0.70)
    assert steptime.matmul_efficiency("fp8", h100) == pytest.approx(0.70 * (1402.6 / 1978.9) / (794.5 / 989.4))
    assert steptime.matmul_efficiency("fp8", h100) == pytest.approx(0.618, abs=1e-3)


def test_a_gpu_without_measurements_scales_fp8_as_prefill_does():
    """No matmul_tflops (L40S) or no fp8 figure: the serving prefill ratio, 0.45 / 0.65."""
    assert steptime.matmul_efficiency("fp8", load_gpu("l40s")) == pytest.approx(0.70 * 0.45 / 0.65)
    assert steptime.matmul_efficiency("fp8") == pytest.approx(0.70 * 0.45 / 0.65)


def test_auto_attention_is_cudnn_where_measured_and_flashattention_2_elsewhere():
    """Transformer Engine runs cuDNN's fused attention on Hopper (H100: 0.61 of the peak in the FA3 paper's
    Fig. 5) and FlashAttention-2 on Ampere (A100: 0.73); a kernel a GPU has no figure for runs as FA2."""
    h100, a100 = load_gpu("h100"), load_gpu("a100-80gb")
    assert steptime.attention_kernel(h100) == "cudnn" and steptime.attention_kernel(a100) == "fa2"
    assert steptime.attention_efficiency(h100) == pytest.approx(0.41 * 0.61)
    assert steptime.attention_efficiency(h100, "fa2") == pytest.approx(0.41 * 0.35)
    assert steptime.attention_efficiency(h100, "fa3") == pytest.approx(0.41 * 0.65)
    assert steptime.attention_efficiency(a100, "fa3") == steptime.attention_efficiency(a100) == pytest.approx(0.41 * 0.73)


def test_the_cli_offers_the_cores_kernels():
    from llmcalc.cli.plan import AttentionKernel

    assert tuple(k.value for k in AttentionKernel) == steptime.ATTENTION_KERNELS


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


@pytest.mark.parametrize("fields, problem", [
    ("  attention_kernels: {fa4: 0.5}\n", "fa4"),
    ("  attention_kernels: {cudnn: 1.5}\n", "fraction"),
    ("  attention_kernels: [cudnn]\n", "attention_kernels"),
    ("  matmul_tflops: {bf16: 2000}\n", "matmul_tflops.bf16"),
    ("  matmul_tflops: {bf16: fast}\n", "matmul_tflops.bf16"),
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
    assert steptime.matmul_efficiency("fp16", gaudi3) == pytest.approx(0.70)
    assert h100.matmul_share("fp16") == pytest.approx(794.5 / 989.4)
    # never beyond the best-shape benchmark: Gaudi 3's fp8 share (0.703) is above its bf16 one (0.677)
    assert steptime.matmul_efficiency("fp8", gaudi3) == pytest.approx(1289.5 / 1835)


def test_a_kernel_the_gpu_has_no_figure_for_says_what_it_is_timed_as():
    from llmcalc.trainplan import kernel_text

    assert kernel_text(load_gpu("a100-80gb"), "fa3") == "fa3, timed as fa2: no fa3 figure for a100-80gb"
    assert kernel_text(load_gpu("h100"), "auto") == "cudnn"
    assert "0.73 reference" in kernel_text(load_gpu("b200"), "auto")


def test_the_notes_and_formulas_follow_the_overlap_flags():
    out = run("plan", "--model", "llama-3.1-8b", "--gpu", "b200", "--gpus", "16", "--seq", "8k", "--top", "1",
              "--zero", "0,1", "--no-dp-overlap", "--no-pp-overlap", "--explain")
    assert out.exit_code == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "DP's exposed" in text and "PP sends exposed" in text
    assert "all exposed (llmcalc/steptime.py _dp_time)" in text


def test_the_cli_lists_the_cores_gradient_and_fp8_choices():
    """cli/plan.py names the gradient dtypes by hand, so that loading it does not import steptime."""
    from llmcalc import steptime
    from llmcalc.cli.plan import Fp8Recipe, GradReduce
    from llmcalc.memory.fp8 import RECIPES

    assert tuple(k.value for k in GradReduce) == tuple(steptime.GRAD_BYTES)
    assert tuple(k.value for k in Fp8Recipe) == RECIPES
