"""FP8 training under Transformer Engine (Megatron-Core's TE layers): what it changes in a 16-bit step's memory.

Read off Transformer Engine 1.8 (delayed scaling; NeMo 24.07, Megatron-Core 0.8) and 2.8 (current scaling,
MXFP8; Megatron-Core 0.15), pytorch/module/linear.py, layernorm_linear.py and base.py:

- A TE linear keeps its input for the weight gradient as FP8, 1 byte an element (MXFP8: plus one e8m0 scale
  per 32), where a 16-bit run keeps 2: the q/k/v and MLP norms' outputs, the down projection's input, the
  experts' inputs. The norms still keep their 16-bit input; attention runs in 16 bits (fp8_dpa is off by
  default) and keeps what it keeps in a 16-bit run.
- The out-projection's input is the attention kernel's output, which the kernel keeps anyway. Under delayed
  scaling TE saves an FP8 copy beside it; Megatron-Core 0.15 with TE 2.6+ saves the original input under the
  other recipes (transformer/attention.py, save_original_input), so no copy.
- FP8 weights: each block linear's weight is cast once a step and cached across micro-batches (Megatron passes
  is_first_microbatch; base.py get_weight_workspace): 1 byte a weight, 2 where the GPU's FP8 GEMMs take only
  the TN layout and TE keeps the transpose as well (Hopper, Ada and RTX 50: compute capability below 10.0,
  or 12.x; utils.is_non_tn_fp8_gemm_supported). MXFP8 keeps both directions, each with its scales:
  2 x (1 + 1/32). The copies are of every block weight this GPU computes with, whatever the ZeRO stage:
  under ZeRO-3 that is what Megatron FSDP's keep_fp8_transpose_cache holds (an upper bound without it).
- FP8 parameters (Megatron's --fp8-param-gather, Megatron-Bridge's FP8 recipes): under per-tensor scaling
  these copies are the block weights themselves, gathered in 1 byte, and no 16-bit copy is kept; MXFP8
  parameters are gathered through a 16-bit buffer (Megatron-Core's param_and_grad_buffer), which stays.
  The fp32 master stays with the optimizer either way. Under ZeRO-3 (Megatron FSDP, core 0.15
  megatron_fsdp/param_and_grad_buffer.py) the FP8 parameters are sharded in a 1-byte buffer like any other,
  gathered a layer at a time, and their transposes dropped after use (keep_fp8_transpose_cache off): this
  GPU keeps its 1-byte shard, and the gathered layers hold FP8 weights (with transposes where TN-only).
- The embedding and the LM head stay 16-bit: Megatron's output layer is not a TE module.
"""

from __future__ import annotations

from ..spec import SpecError, check_choice

RECIPES = ("delayed", "current", "mxfp8")  # TE's DelayedScaling, Float8CurrentScaling, MXFP8BlockScaling
MX_SCALE = 1 / 32  # MXFP8: one e8m0 scale byte per 32 elements, in each direction kept
FP8_GPU = 8.9  # FP8 tensor cores from Ada and Hopper on
MX_GPU = 10.0  # MXFP8 from Blackwell on
PARAMS_ZERO0 = ("--fp8-params needs the distributed optimizer or FSDP (--zero 1 or more): Megatron asserts "
                "--fp8-param-gather goes with one of them (training/arguments.py, core 0.15)")
PARAMS_ZERO3 = ("--fp8-params with --zero 3 is not modelled for MXFP8 (how Megatron FSDP shards MXFP8 parameters): "
                "use --fp8-recipe current or delayed, or --zero 1")


def saved_input(recipe: str) -> float:
    """Bytes per element of the input a TE linear keeps for its weight gradient."""
    return 1 + (MX_SCALE if recipe == "mxfp8" else 0)


def proj_copy(recipe: str) -> bool:
    """Whether the out-projection keeps an FP8 copy of the attention output beside the kernel's own."""
    return recipe == "delayed"


def weight_copy(recipe: str, transposes: bool | None) -> float:
    """Bytes per block-linear weight of its cached FP8 copies (None: transposes kept, as on Hopper)."""
    if recipe == "mxfp8":
        return 2 * (1 + MX_SCALE)
    return 2.0 if transposes is None or transposes else 1.0


def params_in_fp8(recipe: str) -> bool:
    """Whether FP8 parameters replace the 16-bit block weights and are gathered in 1 byte (not MXFP8's)."""
    return recipe != "mxfp8"


def params_refusal(recipe: str, zero: int) -> str | None:
    """Why FP8 parameters under ``recipe`` cannot go with ZeRO stage ``zero`` (None: they can): Megatron gathers
    them only through the distributed optimizer or FSDP, and Megatron FSDP's MXFP8 parameters are not modelled."""
    if zero == 0:
        return PARAMS_ZERO0
    return PARAMS_ZERO3 if zero >= 3 and not params_in_fp8(recipe) else None


def check_gpu(recipe: str, name: str, cc: float | None) -> None:
    """Refuse a recipe the GPU cannot run: FP8 before Ada/Hopper, MXFP8 before Blackwell (unknown: allowed)."""
    if cc is None:
        return
    if cc < FP8_GPU:
        raise SpecError(f"{name} (compute capability {cc:.1f}) has no FP8 tensor cores: --fp8 needs {FP8_GPU} or later")
    if recipe == "mxfp8" and cc < MX_GPU:
        raise SpecError(f"MXFP8 needs Blackwell (compute capability {MX_GPU:.1f}); {name} is {cc:.1f}: use delayed "
                        "or current scaling")


def tn_only(compute_capability: float | None) -> bool:
    """TE keeps an FP8 weight's transpose unless the GPU runs non-TN FP8 GEMMs: compute capability 10.x-11.x
    or 13+ (Blackwell datacentre parts). Unknown: kept (Hopper)."""
    cc = compute_capability
    return cc is None or not (10 <= cc < 12 or cc >= 13)


def check(s) -> None:
    """FP8 settings that do not go together (MemorySettings, training only)."""
    if s.fp8 is None:
        if s.fp8_params:
            raise SpecError("--fp8-params needs --fp8 (the FP8 recipe whose copies become the weights)")
        return
    check_choice("--fp8", s.fp8, RECIPES)
    if s.mode != "train":
        raise SpecError("--fp8 only applies to --mode train (FP8 inference weights: --dtype fp8)")
    if s.framework != "megatron":
        raise SpecError("--fp8 models Transformer Engine's layers as Megatron-Core runs them: add --framework megatron")
    if s.finetune != "full" or s.precision not in ("mixed", "mixed-fp32-grads"):
        raise SpecError("--fp8 trains 16-bit weights with fp32 master copies: full fine-tuning with --precision "
                        "mixed or mixed-fp32-grads")
    if s.compile:
        raise SpecError("--fp8 with --compile is not modelled (Megatron runs Transformer Engine's layers uncompiled)")
    if "params" in s.offload:
        raise SpecError("--fp8 with --offload params is not modelled (the FP8 copies of offloaded weights)")
    why = params_refusal(s.fp8, s.zero) if s.fp8_params else None
    if why:
        raise SpecError(why)
