"""Training precisions: bytes per trainable parameter, and how --precision and --dtype default from each other."""

from __future__ import annotations

from dataclasses import dataclass

from ..dtypes import FLOAT_DTYPES, GGUF_DTYPES, HALF_DTYPES
from ..spec import SpecError, check_choice


@dataclass(frozen=True)
class Precision:
    """Bytes per trainable parameter: working weights, gradients, fp32 master copy, each optimizer state."""

    weights: float
    grads: float
    master: float  # 0: the working weights are the fp32 copy the optimizer updates
    state: float  # bytes per optimizer state value (8-bit Adam overrides: 1)
    source: str


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision(4, 4, 0, 4, "fp32 weights, grads and states: 4 + 4 + 8 = 16 B/param with Adam"),
    "mixed": Precision(2, 2, 4, 4, "ZeRO paper §3: 16-bit weights and grads, fp32 master, m, v: 2 + 2 + 12 = 16 B/param"),
    "mixed-fp32-grads": Precision(2, 4, 4, 4, "16-bit weights (2), fp32 gradients (4: Megatron-Core's main_grad), "
                                  "fp32 master, m, v (12) = 18 B/param (Megatron-Core's distributed-optimizer doc; "
                                  "Hugging Face's mixed precision)"),
    "bf16": Precision(2, 2, 0, 2, "pure 16-bit: weights, grads and states in bf16: 2 + 2 + 4 = 8 B/param with Adam"),
}


def train_precision(precision: str | None, dtype: str | None, finetune: str) -> tuple[str, str]:
    """Training's (precision, dtype): each defaults from the other; full training needs them to agree."""
    if precision is None:
        precision = "fp32" if dtype in ("fp32", "tf32") else "mixed"
    check_choice("--precision", precision, tuple(PRECISIONS))
    if dtype is None:
        dtype = "fp32" if precision == "fp32" else "bf16"
    if dtype in GGUF_DTYPES:
        raise SpecError(f"--dtype {dtype} is a llama.cpp inference format; training holds weights in bf16, fp16 "
                        "or fp32 (a LoRA base also int8, int4 or fp4)")
    if finetune == "qlora" and dtype not in FLOAT_DTYPES:
        raise SpecError(f"--finetune qlora holds the frozen base in NF4; --dtype sets the dtype it computes in "
                        f"(bf16, fp16 or fp32), not {dtype}")
    if finetune == "full":
        if precision == "fp32" and dtype not in ("fp32", "tf32"):
            raise SpecError(f"--precision fp32 (given, or the --framework's: FSDP keeps fp32 shards and computes in "
                            f"bf16) trains fp32 weights; --dtype {dtype} contradicts it: leave --dtype out, or give "
                            "--precision mixed for 16-bit weights")
        if precision != "fp32" and dtype not in HALF_DTYPES:
            raise SpecError(f"--precision {precision} needs a 16-bit --dtype (bf16 or fp16), got {dtype}; "
                            "quantized weights train only as a frozen base: --finetune lora or qlora")
    return precision, dtype
