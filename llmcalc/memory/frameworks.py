"""Training frameworks: the defaults each one really runs with, which decide the peak of a step.

Every field is a default the explicit options override (settings.MemorySettings). Sources are the
framework's own code and recipes at the release named in `source`:

- loss: full (the model returns b·s·V logits and the loss takes log-softmax over all of them),
  chunked (logits and loss in pieces of the sequence; each piece's backward buffers alive one at a
  time), fused (linear + cross-entropy in one kernel over token chunks; no b·s·V tensor is kept).
- loss_dtype: fp32 where the loss upcasts the logits, else the compute dtype.
- inplace_loss: the full loss is one autograd Function that keeps the upcast softmax and writes the
  logits' gradient into it (Megatron-Core's _VocabParallelCrossEntropy, fused or not, core 0.9 to 0.15),
  where torch's log-softmax keeps its output and allocates two gradients.
- keeps_logits: the training loop holds the model's logits through backward (a plain loop doing
  ``out = model(...); out.loss.backward()``); HF Trainer and torchtune drop them first.
- adapter_dtype: PEFT keeps LoRA weights in fp32 over a 16-bit base (autocast_adapter_dtype), so the
  adapter's input copy is fp32; LitGPT and torchtune keep them in the compute dtype.
- optimizer_impl: foreach (torch.optim's default on CUDA: one params-sized temporary, the
  sqrt of the second moment, during step), fused (none), or sharded (the framework's own kernels).
- step_grad_copy: under 16-bit gradients the optimizer steps on an fp32 copy of its shard of them (GradCopy),
  made in step(). Megatron-LM's Float16Optimizer and distributed optimizer: main_param.grad = model_grad.float(),
  freed at the next zero_grad (its dist_optimizer doc: fp16 weights and grads 20 B/param, 4 + 16/d distributed,
  against bf16 with fp32 grads' 18 and 6 + 12/d). DeepSpeed ZeRO 1-2 (stage_1_and_2.py step) flattens a parameter
  group's 16-bit gradient partition and casts it to fp32, both alive at the cast, then steps and frees it; ZeRO-3
  (stage3.py _prepare_fp32_grad_for_sub_group) does it per sub-group of sub_group_size elements (1e9 by default).
- persistent_grads: gradients live in buffers allocated once (Megatron's contiguous fp32 main_grad,
  DeepSpeed's partitions), so they exist during forward; torch's zero_grad(set_to_none=True), the
  default since torch 2.0, frees them after each step instead.
- The framework's own model code: native_activations (torch's own GELU/SiLU kernels, which keep one
  input, where HF runs gelu_new as a Python formula keeping four); ties_embeddings (False: LitGPT's GPT has no weight tying, so a
  tied checkpoint's embedding is copied into its own lm_head, convert_hf_checkpoint.py); repeats_kv
  (LitGPT and torchtune expand k and v to every query head before SDPA, LitGPT model.py
  CausalSelfAttention, torchtune modules/attention.py); upcast_in_model (torchtune's TransformerDecoder
  returns self.output(h).float() when the output is not chunked, outside a compiled loss); fused_qkv_lora
  (LitGPT's fused qkv projection and its LoRAQKVLinear: v a view of the qkv output, which stays alive
  without GQA's k/v copies; one adapter dropout and input copy for q, k and v; the adapters' output
  zero-padded to the enabled widths and kept by autograd, lora.py).
- QLoRA: nf4_double_quant (bitsandbytes compress_statistics: LitGPT's --quantize bnb.nf4 leaves it off,
  fp32 absmax per 64 weights = 4.5 bits); quantizes_head (Lightning's BitsandbytesPrecision converts every
  nn.Linear, the LM head too; transformers' bitsandbytes integration skips lm_head); nf4_from_fp16 (Lightning quantizes
  from an fp16 copy, so each dequantized weight comes back fp16 and is cast to bf16: two copies at once); kbit_fp32 (PEFT's prepare_model_for_kbit_training casts every
  parameter that is not 4-bit, embeddings, norms and head, to fp32, and the Trainer runs under bf16
  autocast); qlora_optimizer (LitGPT's QLoRA uses bitsandbytes' PagedAdamW: 32-bit states in CUDA
  unified memory, outside PyTorch's allocator).
All measured on H100 and H200 with LitGPT 0.5.13, PEFT 0.21, bitsandbytes 0.50.2, torch 2.11
(tests/data/gpu_frameworks.json).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

LOSSES = ("full", "chunked", "fused", "te")
DEFAULT_LOSS_CHUNKS = 8  # torchtune's num_output_chunks; also --loss chunked under a framework without one


class GradCopy(NamedTuple):
    """The fp32 gradient copy a framework's step makes from 16-bit gradients (Framework.step_grad_copy)."""

    nbytes: int  # per value of the optimizer's shard, at the moment the copy peaks
    note: str
    zero3_group: float = 0.0  # under ZeRO-3, made this many values at a time (0: the whole shard at once)
    min_zero: int = 0  # the ZeRO stages whose optimizer makes it (DeepSpeed's stage 0 runs other optimizers)
    table: str = ""  # the framework's own bytes-per-parameter statement, for the precision note


MEGATRON_COPY = GradCopy(4, "fp32 copy of the 16-bit gradients the step reads (Megatron: main_param.grad = "
                         "model_grad.float()), one value per master weight",
                         table="with Adam 20 B/param, 4 + 16/d over d ranks, as Megatron tabulates")
DEEPSPEED_COPY = GradCopy(6, "the 16-bit gradient partition flattened and cast to the fp32 copy the step reads, both "
                          "alive at the cast (DeepSpeed: flatten(averaged_gradients).to(fp32))", zero3_group=1e9,
                          min_zero=1)


@dataclass(frozen=True)
class Framework:
    name: str
    source: str
    loss: str = "full"
    loss_chunks: int = DEFAULT_LOSS_CHUNKS  # chunked: pieces of the sequence
    loss_chunk_tokens: int | None = None  # chunked: pieces of this many tokens instead (LitGPT: 128)
    loss_dtype: str | None = "fp32"  # None: the compute dtype
    keeps_logits: bool = False
    inplace_loss: bool = False
    adapter_dtype: str | None = "fp32"  # None: the compute dtype
    lora_targets: tuple[str, ...] = ("q", "v")
    lora_dropout: float = 0.0
    recompute: str = "none"
    qlora_recompute: str | None = None  # PEFT's prepare_model_for_kbit_training turns checkpointing on
    offload_checkpoints: bool = False  # checkpointed layer inputs kept in host memory
    optimizer_impl: str = "foreach"
    optimizer: str = "adamw"
    precision: str | None = None  # None: from --dtype (precision.train_precision)
    persistent_grads: bool = False
    step_grad_copy: GradCopy | None = None
    comm_buckets: float = 0.0  # elements of gradient-reduction buckets held per GPU (DeepSpeed)
    ties_embeddings: bool = True
    repeats_kv: bool = False
    upcast_in_model: bool = False
    native_activations: bool = False
    fused_kernels: bool = False  # Transformer Engine's fused RMSNorm and Megatron's fused SwiGLU (activations.py)
    fused_qkv_lora: bool = False
    nf4_double_quant: bool = True
    quantizes_head: bool = False
    nf4_from_fp16: bool = False
    kbit_fp32: bool = False
    qlora_optimizer: str | None = None  # LitGPT: bitsandbytes' PagedAdamW under --quantize bnb.*
    zero: int = 0  # the ZeRO stage it runs unless told (FSDP: 3, FULL_SHARD)
    compute_dtype: str | None = None  # fp32 weights computed in this dtype (FSDP's MixedPrecisionPolicy param_dtype)


FRAMEWORKS: dict[str, Framework] = {f.name: f for f in (
    Framework("hf", "transformers 5 Trainer: ForCausalLMLoss upcasts logits to fp32; Trainer drops the outputs "
              "before backward; optim adamw_torch_fused; gradient checkpointing as --recompute says (off unless given); QLoRA "
              "through PEFT's "
              "prepare_model_for_kbit_training: checkpointing on, non-4-bit parameters in fp32 under bf16 autocast",
              optimizer_impl="fused", qlora_recompute="full", kbit_fp32=True),
    Framework("torch", "a hand-written PyTorch loop (torch 2.x): out = model(...); out.loss.backward(); "
              "opt.step(); opt.zero_grad(): the outputs held through the step, torch.optim AdamW (foreach on CUDA), "
              "HF model code and PEFT adapters",
              keeps_logits=True),
    Framework("litgpt", "LitGPT finetune/lora.py: bf16-true, lm_head and loss in 128-token chunks without an fp32 "
              "upcast, logits held by the loop, LoRA on query and value, lora_dropout 0.05, torch AdamW (foreach); "
              "its GPT keeps an untied lm_head, expands k/v to every head and zero-pads the fused qkv adapter; "
              "QLoRA: bnb.nf4 without double quantization, the LM head quantized too, PagedAdamW",
              loss="chunked", loss_chunk_tokens=128, loss_dtype=None, keeps_logits=True, adapter_dtype=None,
              lora_dropout=0.05, precision="bf16", ties_embeddings=False, repeats_kv=True, fused_qkv_lora=True, native_activations=True,
              nf4_double_quant=False, quantizes_head=True, nf4_from_fp16=True, qlora_optimizer="paged-adamw"),
    Framework("torchtune", "torchtune 0.6 single-device recipes: bf16, CEWithChunkedOutputLoss (8 chunks, each "
              "upcast to fp32), logits deleted before backward, activation checkpointing on, Llama-3 LoRA on "
              "q_proj, v_proj, output_proj and the MLP (lora_dropout 0.0), AdamW fused; k and v expanded to every head",
              loss="chunked", loss_chunks=8, adapter_dtype=None, lora_targets=("q", "v", "o", "gate", "up", "down"),
              recompute="full", repeats_kv=True, upcast_in_model=True, native_activations=True,
              optimizer_impl="fused", precision="bf16"),
    Framework("unsloth", "Unsloth 2025: fused chunked cross-entropy, 'unsloth' gradient checkpointing (layer inputs "
              "offloaded to CPU), LoRA on all seven linears (lora_dropout 0), adamw_8bit",
              loss="fused", adapter_dtype=None, lora_targets=("all",), recompute="full", offload_checkpoints=True,
              optimizer="adamw-8bit", optimizer_impl="fused"),
    Framework("megatron", "Megatron-LM core 0.9: bf16 weights with a contiguous fp32 main_grad buffer, fp32 master "
              "weights and Adam states (distributed optimizer = ZeRO-1), vocab-parallel fp32 cross-entropy, Transformer "
              "Engine's fused RMSNorm (input + rstd) and the fused SwiGLU (fc1's output only; core 0.15's MoE "
              "experts weigh it by the routing probabilities, so no expert output is kept for them)",
              adapter_dtype=None, optimizer_impl="sharded", precision="mixed-fp32-grads", persistent_grads=True,
              step_grad_copy=MEGATRON_COPY, fused_kernels=True, inplace_loss=True),
    Framework("deepspeed", "DeepSpeed 0.15 ZeRO: fp16/bf16 weights and grads, fp32 master and Adam states, "
              "reduce_bucket_size 5e8 elements (one bucket; two under ZeRO-3, where overlap_comm is on)",
              optimizer_impl="sharded", precision="mixed", persistent_grads=True, comm_buckets=5e8,
              step_grad_copy=DEEPSPEED_COPY),
    Framework("fsdp", "PyTorch FSDP2 with MixedPrecisionPolicy(bf16): fp32 sharded parameters and states, "
              "bf16 all-gathered layers, gradients reduce-scattered per layer (fully_shard: ZeRO-3 unless --zero)",
              optimizer_impl="foreach", precision="fp32", zero=3, compute_dtype="bf16"),
)}
# PEFT runs under the HF Trainer: the same defaults, named for the adapter library
FRAMEWORKS["peft"] = replace(FRAMEWORKS["hf"], name="peft", source="PEFT 0.13+ LoraConfig under the HF Trainer: "
                             "adapters in fp32 (autocast_adapter_dtype), Llama targets q_proj, v_proj, lora_dropout 0.0; "
                             "QLoRA checkpoints (prepare_model_for_kbit_training)")
DEFAULT_FRAMEWORK = "hf"
