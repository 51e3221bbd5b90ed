"""What a training step's compute kernels reach on a GPU (steptime's rates): the GEMMs' share of the dense peak,
the attention kernel a plan times and its share of the 16-bit peak, and what an unfused attention core moves
through HBM instead.

The compute constants are fitted together over the published runs of tests/test_plan_published.py (Megatron-LM
2021, Korthikanti et al. 2022, Megatron-Core, llm-foundry, Llama 3, BLOOM, MT-NLG, IBM FSDP;
scripts/fit_steptime.py --grid; the README states the fit's counts).
"""

from __future__ import annotations

from .gpuspec import AMPERE, MEASURED_KERNELS
from .serving import COMPUTE, mamf_share
from .spec import SpecError, check_choice

# Share of its best-shape matmul rate (the preset's measured MAMF, stas00's benchmark) the GEMMs of a training step
# reach. On an H100 SXM (tests/data/gpu_kernels.json, gpu_sustained.json): a Llama layer's twelve GEMMs at 8192
# tokens ran at 0.842 of it, and a long 8192-cube GEMM, once the 700 W limit held its clock, at 0.857 (bf16) and
# 0.878 (FP8). The share of the peak then follows the GPU: A100 0.75 (MAMF 0.87), H100 0.69 (0.80), B200 0.67,
# GB200 0.63, MI300X 0.44 (0.51). Fitted over the published runs too (scripts/fit_steptime.py --grid: 0.85).
MAMF_SHARE = 0.86
# A GPU without a measured MAMF: this share of its dense peak (about MAMF_SHARE of a typical 0.82). Latency's
# prefill share (serving.COMPUTE, 0.65) lumps attention and the memory-bound kernels in; here they are timed on
# their own, so this is higher.
MATMUL_EFFICIENCY = 0.70
# The causal attention core (its FLOPs counted causal, half the square) runs at this fraction of the share
# of peak its kernel's forward reaches on the GPU (attention_figure: FlashAttention-2 A100 0.73,
# H100 0.35; cuDNN's fused attention H100 0.61): the backward, masked tiles and short heads keep training
# attention below the kernel's best. The kernels alone do better: forward + backward at 0.68-0.89 of their
# forward's share on an H100 (tests/data/gpu_kernels.json). The fit carries costs the published runs have
# beyond them: priced at the kernels' own figures (with llm-foundry's runs on the Triton FlashAttention its
# benchmarks used), the Megatron-Core, NeMo and Megatron-Bridge runs come out about 10% fast and fewer runs
# fall within 15%, while plain PyTorch blocks come within -4% to +11% (+5% to +18% as fitted).
ATTENTION_EFFICIENCY = 0.41
# A GPU whose preset states none: a kernel written for it, as FlashAttention-2 for the A100 (0.73 of its peak),
# reaching as much of the GPU's own best-shape matmul share as FA2 reaches of the A100's (271.2 of 312 TFLOP/s,
# stas00's MAMF): MI300X 0.73 x 0.511 / 0.869 = 0.43. Attention's GEMMs are the same tensor-core work as the
# layers', so no kernel outruns them; at 0.73 flat, an MI300X's attention ran at 954 TFLOP/s beside 668 for its
# best GEMM.
REFERENCE_ATTENTION_SHARE, REFERENCE_MAMF_SHARE = 0.73, 271.2 / 312
# --attention-kernel; auto: Transformer Engine's choice; unfused: the s x s scores through HBM (UNFUSED_BYTES)
ATTENTION_KERNELS = ("auto", "fa2", *MEASURED_KERNELS, "unfused")
# An unfused attention core (Megatron-LM's CoreAttention before FlashAttention, 2020-2022: baddbmm, its fused causal
# scale-mask-softmax, dropout, bmm) writes the whole s x s square of 16-bit scores to HBM and reads it back. Per
# score (an element of heads x s x s), forward: the QK^T GEMM writes it (2 B); softmax reads the unmasked triangle
# and writes whole rows, the masked half as zeros (1 + 2 B on average; scaled_upper_triang_masked_softmax.h); the PV
# GEMM reads the probabilities (2 B). Backward: dP = dO V^T is written (2 B) and dV reads P (2 B); softmax's
# backward reads P and dP on the triangle and writes dS (1 + 1 + 2 B); dQ and dK read dS (4 B): 7 + 12 bytes, 12 of
# them the GEMMs' own (UNFUSED_GEMM_BYTES), 4 of the 12 and 3 of the 7 forward. Attention dropout adds 5 B each way:
# forward reads P and writes its output and a 1-byte mask; backward reads dP and the mask and writes. The GEMMs
# compute the whole square, the masked half too, at the 16-bit GEMM share, taking their FLOPs' time or their bytes',
# whichever is longer; softmax's and dropout's passes add theirs. Hugging Face's eager attention moves more: its
# scale, mask and fp32 softmax are separate passes.
UNFUSED_BYTES, UNFUSED_GEMM_BYTES, UNFUSED_DROPOUT_BYTES = 19, 12, 10
UNFUSED_FORWARD_BYTES, UNFUSED_DROPOUT_FORWARD_BYTES = 3, 5  # of the non-GEMM bytes, forward
# The share of HBM bandwidth the unfused core's passes reach (its square's GEMMs where their bytes bind, softmax,
# dropout): the batched K=head-dim GEMMs writing the square, the masked softmax over 2k-wide rows and dropout's RNG
# fall short of a streaming copy's 0.9 (serving.FLOAT_BANDWIDTH). Korthikanti et al. 2022 Table 4 isolates the core's
# forward for a 22B layer on A100 (selective recomputation repeats it: 1.3 ms); its 12 bytes a score over 8 heads x 4
# x 2048^2 scores take that at 0.61 of the A100's 2.039 TB/s (tests/test_plan_layer_times.py).
UNFUSED_BANDWIDTH = 0.61


# The CUDA compute capabilities each named kernel runs on, by its own requirements: FlashAttention-3 Hopper alone
# (flash-attention's hopper/ README: H100/H800, CUDA 12.3+); cuDNN's fused flash attention Ampere and later (the
# cuDNN frontend's SDPA; Transformer Engine's FusedAttention backends); fa2, the flash class, Volta and later:
# FlashAttention-2 itself from Ampere (its README), PyTorch SDPA's memory-efficient kernel before it, and AMD's ROCm
# port. (lowest, highest or None)
KERNEL_CAPABILITY = {"fa3": (9.0, 9.0), "fa2": (7.0, None), "cudnn": (8.0, None)}


def attention_kernel(gpu, kernel: str = "auto") -> str:
    """The kernel ``kernel`` names on ``gpu``: auto is what Transformer Engine (the planner's Megatron-Core)
    runs, cuDNN's fused attention where the GPU has a figure for it (TE prefers it on Hopper and later since
    1.2), FlashAttention-2 elsewhere, and TE's unfused attention on an NVIDIA GPU older than Ampere, which runs no
    fused kernel. A named kernel the GPU cannot run is refused (KERNEL_CAPABILITY)."""
    check_choice("--attention-kernel", kernel, ATTENTION_KERNELS)
    if kernel == "auto":
        if gpu.compute_capability is not None and gpu.compute_capability < AMPERE:
            return "unfused"
        return "cudnn" if "cudnn" in gpu.attention_kernels and _runs_on(gpu, "cudnn") else "fa2"
    if not _runs_on(gpu, kernel):
        low, high = KERNEL_CAPABILITY[kernel]
        needs = "Hopper (compute capability 9.0)" if high else f"an NVIDIA GPU of compute capability {low} or later"
        cc = gpu.compute_capability
        has = f"has compute capability {cc}" if cc is not None else f"is made by {gpu.vendor or 'another vendor'}"
        others = [k for k in KERNEL_CAPABILITY if _runs_on(gpu, k)] + ["unfused"]
        raise SpecError(f"--attention-kernel {kernel} runs on {needs}; {gpu.name} {has}: use "
                        f"{' or '.join(others)}, or auto")
    return kernel


def _runs_on(gpu, kernel: str) -> bool:
    """Whether ``kernel`` runs on ``gpu`` (KERNEL_CAPABILITY; the unfused core anywhere; fa2 also on a GPU without a
    CUDA compute capability, by AMD's ROCm port or as the stand-in for a vendor's own fused kernel; anything on an
    NVIDIA GPU whose preset states none)."""
    if kernel not in KERNEL_CAPABILITY:
        return True
    low, high = KERNEL_CAPABILITY[kernel]
    cc = gpu.compute_capability
    if cc is None:
        return kernel == "fa2" or gpu.vendor.lower() == "nvidia"
    return low <= cc and (high is None or cc <= high)


def attention_figure(gpu, kernel: str = "auto") -> tuple[str, float, str]:
    """(the kernel, the share of the 16-bit peak its forward reaches on ``gpu``, whose figure that is): its
    own measurement; else FlashAttention-2's (FA3 and cuDNN's fused attention gain on Hopper's own paths,
    elsewhere they are FA2-class kernels); else "reference", REFERENCE_ATTENTION_SHARE scaled to the GPU's matmul
    share (REFERENCE_MAMF_SHARE; where unmeasured, the typical 0.81 matmul_efficiency assumes), no more."""
    name = attention_kernel(gpu, kernel)
    if name == "unfused":  # timed by its GEMMs and bytes (UNFUSED_BYTES), no share of the peak
        return name, 0.0, name
    if name in gpu.attention_kernels:
        return name, gpu.attention_kernels[name], name
    if gpu.attention_share:
        return name, gpu.attention_share, "fa2"
    gemms = mamf_share("bf16", gpu) or MATMUL_EFFICIENCY / MAMF_SHARE  # unmeasured: the share the GEMMs assume
    scale = min(1.0, gemms / REFERENCE_MAMF_SHARE)
    return name, round(REFERENCE_ATTENTION_SHARE * scale, 3), "reference"


def attention_efficiency(gpu, kernel: str = "auto") -> float:
    """The causal attention core's share of the 16-bit peak on ``gpu`` (ATTENTION_EFFICIENCY x its kernel's); 0 for
    the unfused core, which is timed by its GEMMs and bytes instead (steptime.micro_batch)."""
    return ATTENTION_EFFICIENCY * attention_figure(gpu, kernel)[1]


def matmul_efficiency(dtype: str, gpu=None) -> float:
    """The share of the dense ``dtype`` peak training GEMMs reach: MAMF_SHARE of the GPU's best-shape matmul share
    of that peak (serving.mamf_share: H100 bf16 0.86 x 0.803, fp8 0.86 x 0.709); where that is not known,
    MATMUL_EFFICIENCY scaled as latency's prefill share scales (serving.COMPUTE: fp8 kernels reach less of their
    doubled peak)."""
    share = mamf_share(dtype, gpu)
    return MAMF_SHARE * share if share else MATMUL_EFFICIENCY * COMPUTE.get(dtype, COMPUTE["bf16"]) / COMPUTE["bf16"]
