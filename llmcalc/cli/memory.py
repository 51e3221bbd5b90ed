"""`llmcalc memory`, and the options it shares with `max-seq` and `max-batch` (cli/limits.py).

Imported only when one of those three commands runs, so it may import the memory core.
"""

from __future__ import annotations

import functools
from types import MappingProxyType
from typing import Annotated, Mapping, Optional

import typer

from ..dtypes import FLOAT_DTYPES
from ..memory import ATTENTION_IMPLS, FINETUNES, MODES, PRECISIONS
from ..memory.engines import ENGINES
from ..memory.frameworks import FRAMEWORKS, LOSSES
from ..spec import Parallelism, SpecError
from ..units import parse_bytes, parse_length
from .common import (BatchOpt, CheckOpt, CsvOpt, DtypeOpt, ExitCode, GenericOpt, GpuOpt, JsonOpt, KvDtypeOpt,
                     MdOpt, ModelOpt, Optimizer, Recompute, SeqOpt, TpOpt, _each, _emit, _fmt, _gpus, _models,
                     _split, app, choices, default_seq, unused, with_options)

# -- the options memory, max-seq and max-batch share -------------------------------------------
Mode = choices("Mode", MODES)
Precision = choices("Precision", PRECISIONS)
AttentionImpl = choices("AttentionImpl", ATTENTION_IMPLS)
Finetune = choices("Finetune", FINETUNES)
LossDtype = choices("LossDtype", FLOAT_DTYPES)

ModeOpt = Annotated[Mode, typer.Option("--mode", help="train: weights, gradients, optimizer, activations; infer: weights, KV cache.")]
PpOpt = Annotated[Optional[int], typer.Option("--pp", help="Pipeline-parallel degree.")]
DpOpt = Annotated[Optional[int], typer.Option("--dp", help="Data-parallel degree (default: the GPUs left over).")]
CpOpt = Annotated[Optional[int], typer.Option("--cp", help="Context-parallel degree (splits the sequence).")]
EpOpt = Annotated[Optional[int], typer.Option("--ep", help="Expert-parallel degree (MoE experts split over DP ranks).")]
SpOpt = Annotated[Optional[bool], typer.Option("--sp/--no-sp", help="Sequence parallelism with TP (splits norm/dropout activations).")]
PrecisionOpt = Annotated[Optional[Precision], typer.Option("--precision", help="Training bytes/param: mixed = 2+2+12 (ZeRO), mixed-fp32-grads = 18 (HF), fp32, bf16. Default: mixed (fp32 with --dtype fp32).")]
TrainOptimizerOpt = Annotated[Optional[Optimizer], typer.Option("--optimizer", help="Optimizer whose states are held (adamw: m and v). Default: the framework's (adamw; unsloth adamw-8bit).")]
ZeroOpt = Annotated[int, typer.Option("--zero", min=0, max=3, help="ZeRO stage: 1 shards optimizer states, 2 + gradients, 3 + weights (FSDP full-shard).")]
MemRecomputeOpt = Annotated[Optional[Recompute], typer.Option("--recompute", help="Activation recomputation: none, selective (s x s terms), full (layer inputs only). Default: the framework's (torchtune, unsloth and QLoRA under hf/peft: full; else none).")]
AttentionImplOpt = Annotated[Optional[AttentionImpl], typer.Option("--attention-impl", help="Attention kernel: eager stores s x s scores; sdpa/flash do not. Default: sdpa (train), flash (infer).")]
LossDtypeOpt = Annotated[Optional[LossDtype], typer.Option("--loss-dtype", help="Dtype of the logits in the loss. Default: the framework's (fp32: HF, torchtune and Megatron upcast; litgpt: the compute dtype).")]
Framework = choices("Framework", FRAMEWORKS)
FrameworkOpt = Annotated[Optional[Framework], typer.Option("--framework", help="train: the training framework whose defaults to follow (loss, recompute, LoRA targets, optimizer kernel, gradient buffers). Default: hf.")]
Loss = choices("Loss", LOSSES)
LossOpt = Annotated[Optional[Loss], typer.Option("--loss", help="train: cross-entropy implementation: full (b·s·V fp32 logits), chunked, fused (linear + loss, no logits). Default: the framework's.")]
OptInBwdOpt = Annotated[bool, typer.Option("--optimizer-in-backward", help="train: each parameter steps from a backward hook and frees its gradient (torchtune's optimizer_in_bwd).")]
GradAccumOpt = Annotated[int, typer.Option("--grad-accum", min=1, help="train: micro-batches per optimizer step (> 1 keeps the gradients allocated through forward and backward).")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="train: layers and loss under torch.compile (inductor keeps fewer activations; the loss fuses its upcast).")]
BnbOpt = Annotated[Optional[str], typer.Option("--bitsandbytes", help="train, qlora: the bitsandbytes release (before 0.43.2 its 4-bit matmul kept every linear's input for backward). Default: a current one.")]
LoraDropoutOpt = Annotated[Optional[float], typer.Option("--lora-dropout", help="LoRA dropout probability (> 0 keeps a mask and an input copy per adapter). Default: the framework's (PEFT 0.0, LitGPT 0.05).")]
MiniSeqOpt = Annotated[int, typer.Option("--mini-seq", min=1, help="Mini-Sequence chunks M of the MLP and LM head (1 = off).")]
OffloadOpt = Annotated[Optional[str], typer.Option("--offload", help="optimizer, params and/or activations (comma list): ZeRO-Offload to CPU memory; activations: checkpointed layer inputs in host memory (needs --recompute full).")]
FinetuneOpt = Annotated[Finetune, typer.Option("--finetune", help="full, lora (frozen base in --dtype) or qlora (4-bit NF4 base).")]
LoraRankOpt = Annotated[int, typer.Option("--lora-rank", min=1, help="LoRA rank r.")]
LoraTargetsOpt = Annotated[Optional[str], typer.Option("--lora-targets", help="Comma list of linears (q,k,v,o,gate,up,down) or all. Default: the framework's (hf/peft/litgpt q,v; torchtune q,v,o; unsloth all).")]
GroupSizeOpt = Annotated[int, typer.Option("--group-size", min=1, help="Weights per 16-bit scale for int4/fp4 weights.")]
GpuUtilOpt = Annotated[Optional[float], typer.Option("--gpu-util", help="Usable fraction of GPU memory: train 1.0; infer the engine's (vLLM gpu_memory_utilization 0.9, 0.92 from 0.20; SGLang mem_fraction_static; TensorRT-LLM free_gpu_memory_fraction).")]
GpuMemoryOpt = Annotated[Optional[str], typer.Option("--gpu-memory", help="Override the GPU's capacity (80GB = 80e9, 80GiB = 80 x 2^30).")]
ReserveOpt = Annotated[Optional[str], typer.Option("--reserve", help="Fixed bytes outside PyTorch's allocator: train 0.67GiB (CUDA context with cuBLAS, measured on H100; fragmentation is the allocator row); infer 0 (the engine models its own).")]
Engine = choices("Engine", ENGINES)
EngineOpt = Annotated[Optional[Engine], typer.Option("--engine", help="infer: the serving engine whose accounting to follow (default vllm).")]
EngineVersionOpt = Annotated[Optional[str], typer.Option("--engine-version", help="infer: the engine release to follow (vllm default 0.7.3, the V0 engine; 0.8+ is V1).")]
PrefillChunkOpt = Annotated[Optional[str], typer.Option("--max-num-batched-tokens", "--prefill-chunk", help="infer: tokens per prefill step (vLLM max_num_batched_tokens, SGLang chunked_prefill_size, TensorRT-LLM max_num_tokens). Default: the engine's.")]
MaxNumSeqsOpt = Annotated[Optional[int], typer.Option("--max-num-seqs", min=1, help="infer, vllm: concurrent sequences (sizes the sampler's profile). Default: the release's.")]
EnforceEagerOpt = Annotated[bool, typer.Option("--enforce-eager", help="infer, vllm: no CUDA graphs.")]
KeepOpt = Annotated[Optional[str], typer.Option("--keep-16bit", help="infer: modules whose weights stay 16-bit under a quantized --dtype or checkpoint (comma list of names or re:patterns, e.g. lm_head,model.layers.0,mlp.gate).")]
BlockSizeOpt = Annotated[Optional[int], typer.Option("--block-size", min=1, help="infer: KV block (page) size in tokens. Default: the engine's (vLLM 16).")]


def memory_options(
    gpus: Annotated[Optional[int], typer.Option("--gpus", help="Number of GPUs (default: the product of the degrees).")] = None,
    tp: TpOpt = None, pp: PpOpt = None, dp: DpOpt = None, cp: CpOpt = None, ep: EpOpt = None, sp: SpOpt = None,
    dtype: DtypeOpt = None,
    precision: PrecisionOpt = None,
    optimizer: TrainOptimizerOpt = None,
    zero: ZeroOpt = 0,
    recompute: MemRecomputeOpt = None,
    attention_impl: AttentionImplOpt = None,
    kv_dtype: KvDtypeOpt = None,
    loss_dtype: LossDtypeOpt = None,
    framework: FrameworkOpt = None,
    loss: LossOpt = None,
    mini_seq: MiniSeqOpt = 1,
    offload: OffloadOpt = None,
    finetune: FinetuneOpt = Finetune.full,
    lora_rank: LoraRankOpt = 16,
    lora_targets: LoraTargetsOpt = None,
    lora_dropout: LoraDropoutOpt = None,
    bitsandbytes: BnbOpt = None,
    compile_: CompileOpt = False,
    grad_accum: GradAccumOpt = 1,
    optimizer_in_backward: OptInBwdOpt = False,
    group_size: GroupSizeOpt = 128,
    gpu_util: GpuUtilOpt = None,
    gpu_memory: GpuMemoryOpt = None,
    reserve: ReserveOpt = None,
    prefill_chunk: PrefillChunkOpt = None,
    engine: EngineOpt = None,
    engine_version: EngineVersionOpt = None,
    max_num_seqs: MaxNumSeqsOpt = None,
    enforce_eager: EnforceEagerOpt = False,
    block_size: BlockSizeOpt = None,
    keep_16bit: KeepOpt = None,
) -> None:
    """The options `memory`, `max-seq` and `max-batch` share: a signature template, never called."""


@app.command()
@with_options(memory_options)
def memory(
    ctx: typer.Context,
    model: ModelOpt,
    gpu: GpuOpt = None,
    mode: ModeOpt = Mode.train,
    batch: BatchOpt = 1,
    seq: SeqOpt = None,
    check: CheckOpt = False,
    generic: GenericOpt = False,
    json_: JsonOpt = False, csv_: CsvOpt = False, markdown: MdOpt = False,
    **options,
) -> None:
    """Memory per GPU: weights, gradients, optimizer states, activations, logits, KV cache; does it fit?

    Example: llmcalc memory --model llama-2-7b --gpu a100-80gb --seq 4096 --recompute full --zero 3 --gpus 8
    """
    from ..memory import memory_breakdown

    fmt = _fmt(json_, csv_, markdown)
    if check and not gpu and not options["gpu_memory"]:
        raise SpecError("--check needs --gpu (or --gpu-memory) to say whether it fits")
    common = settings_from_options(mode=mode, **options)

    def one(m, g):
        settings = memory_settings(ctx, common, default_seq(m, seq), batch)
        warn_unread(ctx, m, g, settings)
        return memory_breakdown(m, g, settings)

    results = _each(_models(model, generic), _gpus(gpu), one)
    _emit(results, fmt)
    if check and not all(r.summary.get("fits") for r in results):
        raise typer.Exit(ExitCode.CHECK_FAILED)


@functools.lru_cache(maxsize=64)  # the same options at every point of a sweep over seq (read-only: shared)
def settings_from_options(**o) -> Mapping:
    """MemorySettings keyword arguments (all but seq) from the shared memory/limits options."""
    value = lambda x: x.value if x is not None else None  # noqa: E731 - enum or None
    knobs = dict(prefill_chunk=parse_length(o["prefill_chunk"]) if o["prefill_chunk"] else None,
                 max_num_seqs=o["max_num_seqs"], enforce_eager=o["enforce_eager"], kv_block=o["block_size"])
    return MappingProxyType(dict(
        mode=o["mode"].value, batch=o.get("batch", 1), dtype=value(o["dtype"]), precision=value(o["precision"]),
        optimizer=value(o["optimizer"]), zero=o["zero"], recompute=value(o["recompute"]),
        attention_impl=value(o["attention_impl"]), kv_dtype=value(o["kv_dtype"]), loss_dtype=value(o["loss_dtype"]),
        framework=value(o["framework"]), loss=value(o["loss"]), lora_dropout=o["lora_dropout"],
        bitsandbytes=o["bitsandbytes"], compile=o["compile_"], grad_accum=o["grad_accum"],
        optimizer_in_backward=o["optimizer_in_backward"], mini_seq=o["mini_seq"], offload=tuple(_split(o["offload"] or "")), finetune=o["finetune"].value,
        lora_rank=o["lora_rank"], lora_targets=tuple(_split(o["lora_targets"])) if o["lora_targets"] is not None else None, group_size=o["group_size"],
        gpu_util=o["gpu_util"], gpu_memory=parse_bytes(o["gpu_memory"]) if o["gpu_memory"] else None,
        reserve=parse_bytes(o["reserve"]) if o["reserve"] is not None else None,
        engine=value(o["engine"]), engine_version=o["engine_version"], **knobs,
        keep_16bit=tuple(_split(o["keep_16bit"] or "")),
        parallel=Parallelism.resolve(o["gpus"], o["tp"], o["pp"], o["dp"], o["cp"], o["ep"], o["sp"],
                                     mode=o["mode"].value)))


_RESOLVED: dict[tuple[int, int], tuple] = {}  # (id(ctx), id(mapping)) -> (ctx, mapping, its MemorySettings)


def memory_settings(ctx: typer.Context, common: Mapping, seq: int, batch: int):
    """MemorySettings(seq=seq, batch=batch, **common) for a mapping settings_from_options gave: resolved
    and checked once per command line (every point of a sweep gets the same mapping and context), then
    copied at each seq and batch by MemorySettings.at, which checks those two as the constructor does.
    Until a construction succeeds each call constructs in full, so a point that cannot be built fails as
    it always did; a new command line constructs afresh (with its own warnings)."""
    from ..memory import MemorySettings

    known = _RESOLVED.get((id(ctx), id(common)))
    if known is not None and known[0] is ctx and known[1] is common:
        return known[2].at(seq, batch)
    settings = MemorySettings(**{**common, "seq": seq, "batch": batch})
    if len(_RESOLVED) >= 64:
        _RESOLVED.clear()
    _RESOLVED[id(ctx), id(common)] = (ctx, common, settings)
    return settings


# MemorySettings fields whose option has another parameter name
_PARAM_OF = {"compile": "compile_", "kv_block": "block_size"}


def warn_unread(ctx: typer.Context, m, gpu, settings) -> None:
    """One stderr warning per option the user set that this estimate never reads (memory/usage.py)."""
    from ..memory.usage import unread

    idle = unread(m, gpu, settings)
    if "keep_16bit" not in idle and settings.keep_16bit:
        from ..quant import unmatched

        for pattern in unmatched(m, settings.keep_16bit):
            unused(f"--keep-16bit {pattern}", f"on {m.name}: it names no module (they read like "
                   "model.layers.0.mlp.down_proj, lm_head)", True)
    given = _given(ctx)
    for field, reason in idle.items():
        name = _PARAM_OF.get(field, field)
        if name in given:
            unused(given[name], reason, True)


@functools.lru_cache(maxsize=8)  # a sweep asks at every point; the sources are fixed once the line is parsed
def _given(ctx: typer.Context) -> dict[str, str]:
    """Parameter name -> flag of each option given on the command line or in the environment, not a
    default (click's ParameterSource)."""
    return {p.name: p.opts[0] for p in ctx.command.params if p.opts and
            getattr(ctx.get_parameter_source(p.name), "name", "") in ("COMMANDLINE", "ENVIRONMENT")}
