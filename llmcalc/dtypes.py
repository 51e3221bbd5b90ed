"""One table of the number formats llmcalc knows: bytes per value and what computes with them.

Weight-only quantized formats (int8, int4, fp4; GPTQ/AWQ style) are dequantized and multiplied in
16-bit; fp8 checkpoints run fp8 matmuls on Hopper (W8A8) but hand bf16 activations between layers.
Activations and the KV cache stay in the format itself only for float formats of 16 bits or more
(vLLM's kv_cache_dtype "auto": the model's activation dtype).
"""

from typing import NamedTuple


# A NamedTuple, not a frozen dataclass: this module loads on every CLI call and a NamedTuple
# class is built ~7x faster (about 55 us against 380 us). Modules defining such classes on every
# call's path do without `from __future__ import annotations`: typing would compile each field's
# annotation string anew (~20 us a field).
class Dtype(NamedTuple):
    nbytes: float  # bytes per stored value; int4/fp4 are half a byte (never integer-divide it away)
    matmul: str  # the dtype whose peak FLOP/s the matmuls run at
    activations: str  # the dtype activations (and, by default, the KV cache) are held in


DTYPE_TABLE: dict[str, Dtype] = {
    "fp32": Dtype(4, "fp32", "fp32"),
    "tf32": Dtype(4, "tf32", "tf32"),
    "bf16": Dtype(2, "bf16", "bf16"),
    "fp16": Dtype(2, "fp16", "fp16"),
    "fp8": Dtype(1, "fp8", "bf16"),
    "int8": Dtype(1, "bf16", "bf16"),
    "fp4": Dtype(0.5, "bf16", "bf16"),
    "int4": Dtype(0.5, "bf16", "bf16"),
    # llama.cpp's GGUF file types: bits per weight averaged over every tensor of the file (blocks
    # with their scales; the mixes keep attn_v, ffn_down and the output in wider types). q8_0 and
    # q4_0 are their block layouts (34 and 18 bytes per 32 weights); the k-quant mixes the averages
    # llama.cpp's quantize README lists for Llama-2-7B. Dequantized to f16 to multiply; f16 KV cache.
    "q8_0": Dtype(8.5 / 8, "fp16", "fp16"),
    "q6_k": Dtype(6.56 / 8, "fp16", "fp16"),
    "q5_k_m": Dtype(5.68 / 8, "fp16", "fp16"),
    "q4_k_m": Dtype(4.84 / 8, "fp16", "fp16"),
    "q4_0": Dtype(4.5 / 8, "fp16", "fp16"),
    "q3_k_m": Dtype(3.91 / 8, "fp16", "fp16"),
    "q2_k": Dtype(3.35 / 8, "fp16", "fp16"),
}
DTYPES = tuple(DTYPE_TABLE)
DTYPE_BYTES = {name: d.nbytes for name, d in DTYPE_TABLE.items()}
# Formats that hold activations and KV as they are (not weight-only quantized).
FLOAT_DTYPES = tuple(name for name, d in DTYPE_TABLE.items() if d.activations == name)
HALF_DTYPES = ("bf16", "fp16")
# Whole-file averages: every parameter (embedding and head too) at the format's bits per weight.
GGUF_DTYPES = ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "q3_k_m", "q2_k")

# Quantized checkpoints (GPTQ/AWQ layout): block linears in the format, one fp16 scale per group of
# sub-byte weights (zero points not counted); embeddings, norms, biases and head stay 16-bit.
DEFAULT_GROUP_SIZE = 128
SCALE_BYTES = 2
UNQUANTIZED_BYTES = 2


def matmul_dtype(weights: str) -> str:
    """The dtype matmuls run at for weights stored in ``weights``."""
    return DTYPE_TABLE[weights].matmul


def activation_dtype(weights: str) -> str:
    """The dtype activations and (by default) the KV cache are held in for weights in ``weights``."""
    return DTYPE_TABLE[weights].activations

# Weights stored in groups, each with one 16-bit scale (placement.ParamSplit.weight_bytes): the sub-byte
# formats that are neither floats nor GGUF (whose blocks are in their bytes per weight).
GROUPED_DTYPES = tuple(d for d, b in DTYPE_BYTES.items() if b < 1 and d not in FLOAT_DTYPES and d not in GGUF_DTYPES)
