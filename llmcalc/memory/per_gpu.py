"""memory_breakdown, memory per GPU: the rows of the stage that needs the most memory, and whether it fits."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ..breakdown import Breakdown, Quantity
from ..spec import ModelSpec, SpecError
from .engines import check_engine_gpu
from .placement import check_interleaving, check_layout, stages
from .recompute import check_recompute_modules
from .settings import MemorySettings

if TYPE_CHECKING:  # annotations only: a GPU lookup loads it
    from ..gpuspec import GPUSpec


def as_shipped(m: ModelSpec, s: MemorySettings) -> bool:
    """Inference of a quantized checkpoint in its own layout: no --dtype overrides its quantization_config."""
    return bool(m.quant_method) and not s.dtype_given and s.mode == "infer"


def memory_breakdown(m: ModelSpec, gpu: GPUSpec | None, s: MemorySettings) -> Breakdown:
    """Bytes per GPU for ``s.mode``: every row in bytes, the total, and whether it fits ``gpu``.

    Pure and cheap (no I/O, a few hundred arithmetic operations): the limits search calls it
    dozens of times. Monotone in seq and batch. Under pipeline parallelism the first and the
    last stage are computed and the larger reported (summary ``stage``).
    """
    check_layout(m, s.parallel)
    check_interleaving(m, s.parallel.pp, s.vpp)
    if as_shipped(m, s):
        s = dataclasses.replace(s, dtype=m.quant_dtype, weight_format="checkpoint")
    capacity = s.gpu_memory or (gpu.usable_bytes if gpu else None)
    if s.fp8 and gpu is not None:  # a GPU that can run the recipe; TN-only FP8 GEMMs keep transposes (fp8.py)
        from .fp8 import check_gpu, tn_only

        check_gpu(s.fp8, gpu.name, gpu.compute_capability)
        if s.fp8_transposes is None:
            s = dataclasses.replace(s, fp8_transposes=tn_only(gpu.compute_capability))
    if s.mode == "train":  # each mode imports only its own module (start-up time)
        from .training import train_stage

        s = attention_on(s, gpu)

        check_recompute_modules(m, s.recompute_modules)
        if m.tie_word_embeddings and not s.fw.ties_embeddings:  # LitGPT copies a tied embedding into its lm_head
            m = dataclasses.replace(m, tie_word_embeddings=False)

        res = max((train_stage(m, s, st) for st in stages(m, s.parallel.pp)), key=lambda x: x.total)
    else:  # the engine's pool is as small as its tightest stage (vLLM and SGLang take the minimum)
        from .inference import infer_stage

        check_engine_gpu(s.engine, gpu, s.dtype)
        dev = device(gpu, capacity)
        res = min((infer_stage(m, s, st, dev) for st in stages(m, s.parallel.pp)),
                  key=lambda x: (x.fits is not False, x.summary["kv_cache_capacity"]))
    if capacity is None and s.mode == "infer":
        res.notes.append("no --gpu: the engine sized for an 80 GiB device")
    summary = {"total": Quantity(round(res.total), "byte")}
    if capacity is not None:
        usable = int(capacity * s.gpu_util) if res.usable is None else int(res.usable)
        fits = res.total <= usable if res.fits is None else res.fits
        summary.update(capacity=Quantity(int(capacity), "byte"), usable=Quantity(usable, "byte"),
                       fits=fits, headroom=Quantity(usable - round(res.total), "byte"))
    if res.cpu:
        summary["cpu"] = Quantity(round(sum(res.cpu.values())), "byte")
    summary.update(res.summary)
    what = "training" if s.mode == "train" else "inference"
    return Breakdown(command="memory", title=f"Memory per GPU of {m.name}, {what}", model=m.name,
                     gpu=gpu.name if gpu else None, rows=res.rows.build(), summary=summary,
                     inputs=_inputs(s), notes=tuple(res.notes))


FLASH_CAPABILITY = 7.5  # FlashAttention 1 runs on Turing and later, FlashAttention 2 on Ampere (8.0) and later


def attention_on(s: MemorySettings, gpu: GPUSpec | None) -> MemorySettings:
    """Training's attention as the GPU runs it: Megatron-Core's Transformer Engine has no fused kernel before Ampere and
    runs its unfused core, which keeps the s x s scores (kernels.attention_kernel, as `plan` times it); FlashAttention
    asked of a GPU older than Turing is refused."""
    from ..gpuspec import AMPERE

    cc = gpu.compute_capability if gpu else None
    if cc is None:
        return s
    if s.attention_impl == "flash" and cc < FLASH_CAPABILITY:
        raise SpecError(f"--attention-impl flash needs compute capability {FLASH_CAPABILITY} or later (FlashAttention); "
                        f"{gpu.name} has {cc}: use sdpa (PyTorch's memory-efficient kernel) or eager")
    if s.framework == "megatron" and not s.attention_given and cc < AMPERE:
        return dataclasses.replace(s, attention_impl="eager")
    return s


def device(gpu: GPUSpec | None, capacity: int | None):
    """The device an engine sizes for: the driver's total (or --gpu-memory), the name, NVLink or not.
    Without a GPU the engines size for an 80 GiB card (stated in the notes)."""
    from .engines.common import NVLINK_BYTES_PER_S, Device

    if capacity is None:
        return Device(80 * 2**30, "unspecified 80 GiB GPU", True)
    return Device(int(capacity), gpu.name if gpu else "GPU", bool(gpu and gpu.interconnect_bandwidth >= NVLINK_BYTES_PER_S))


def _inputs(s: MemorySettings) -> dict:
    """The settings a reader needs to reproduce the numbers, in the order the caption shows them."""
    par = s.parallel
    inputs = {"mode": s.mode, "seq": s.seq, "batch": s.batch, "dtype": s.dtype,
              **({"prompt": s.prompt} if s.prompt is not None else {})}
    if s.mode == "train":
        inputs.update(precision=s.precision, optimizer=s.optimizer, zero=s.zero, recompute=s.recompute)
        if s.recompute == "selective":
            inputs.update(recompute_modules=list(s.recompute_modules))
    inputs.update(attention_impl=s.attention_impl)
    if s.mode == "train":
        inputs.update(framework=s.framework, loss=s.loss, loss_dtype=s.loss_dtype, compile=s.compile,
                      grad_accum=s.grad_accum, optimizer_in_backward=s.optimizer_in_backward,
                      mini_seq=s.mini_seq, offload=list(s.offload), finetune=s.finetune)
        if s.offload_layers:
            inputs.update(offload_layers=s.offload_layers)
        if s.vpp > 1:
            inputs.update(vpp=s.vpp)
        if s.fp8:
            inputs.update(fp8=s.fp8, fp8_params=s.fp8_params)
            if s.fp8 != "mxfp8":  # MXFP8 keeps both directions on every GPU
                inputs.update(fp8_transposes=s.fp8_transposes is not False)
        if s.finetune != "full":
            inputs.update(lora_rank=s.lora_rank, lora_targets=list(s.lora_targets))
        if s.finetune == "qlora":
            inputs.update(bitsandbytes=s.bitsandbytes or "current")
    else:
        if s.weight_format or s.keep_16bit:
            inputs.update(weight_format=s.weight_format or "dtype", keep_16bit=list(s.keep_16bit))
        inputs.update(engine=s.engine, engine_version=s.engine_version, kv_dtype=s.kv_dtype,
                      group_size=s.group_size, max_num_batched_tokens=s.prefill_chunk, max_num_seqs=s.max_num_seqs,
                      block_size=s.kv_block, enforce_eager=s.enforce_eager)
    inputs.update(gpus=par.gpus, tp=par.tp, pp=par.pp, dp=par.dp, cp=par.cp, ep=par.ep, etp=par.etp, sp=par.sp,
                  gpu_util=s.gpu_util, reserve=Quantity(s.reserve, "byte"),
                  gpu_memory=Quantity(s.gpu_memory, "byte"))
    return inputs
