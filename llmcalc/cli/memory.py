"""`llmcalc memory`, and the options it shares with `max-seq` and `max-batch` (cli/limits.py).

Imported only when one of those three commands runs, so it may import the memory core.
"""

import functools
from types import MappingProxyType
from typing import Annotated, Callable, Mapping, Optional

import typer

from ..dtypes import FLOAT_DTYPES
from ..memory import ATTENTION_IMPLS, FINETUNES, MODES, PRECISIONS
from ..memory.engines import DEFAULT_ENGINE, ENGINES
from ..memory.fp8 import RECIPES as FP8_RECIPES
from ..memory.frameworks import DEFAULT_FRAMEWORK, FRAMEWORKS, LOSSES
from ..memory.settings import DEFAULT_ATTENTION_IMPL, DEFAULT_GPU_UTIL, DEFAULT_RESERVE
from ..spec import Parallelism, SpecError
from ..units import fmt_bytes, parse_bytes, parse_length
from .common import (BatchOpt, CheckOpt, CsvOpt, Dtype, Engine, GenericOpt, GpuOpt, JsonOpt, KvDtypeOpt,
                     MdOpt, ModelOpt, Optimizer, Recompute, SeqOpt, _each, _emit, _fmt, _gpus, _models,
                     _split, app, choices, default_seq, unused)
from .checks import fail_check, first_note
from .helpfmt import FINETUNING, HARDWARE, INFERENCE, PARALLELISM, PRECISION, RUNTIME, TRAINING, by_mode


# -- defaults another option decides, as --help states them (from the core's own tables) ------
def _per_framework(pick: Callable, qlora: str | None = None) -> str:
    """A training default the framework sets: --framework's default's value, then where the others
    differ ("full; chunked under litgpt, torchtune; fused under unsloth"); ``qlora``: the Framework
    field that overrides it under --finetune qlora."""
    base = pick(FRAMEWORKS[DEFAULT_FRAMEWORK])
    differ: dict[object, list[str]] = {}
    qlora_differ: dict[object, list[str]] = {}
    for name, fw in FRAMEWORKS.items():
        if pick(fw) != base:
            differ.setdefault(pick(fw), []).append(name)
        if qlora and getattr(fw, qlora) not in (None, pick(fw)):
            qlora_differ.setdefault(getattr(fw, qlora), []).append(name)
    return "; ".join([str(base)] + [f"{value} under {', '.join(names)}" for value, names in differ.items()]
                     + [f"{value} for QLoRA under {', '.join(names)}" for value, names in qlora_differ.items()])


def _engine_utils() -> str:
    """Each engine's default share of GPU memory (engines.ENGINES' default_util)."""
    def since(release: tuple[int, ...]) -> str:
        return ".".join(map(str, release))

    shares = [f"{name} {e.default_util[0][1]}" + "".join(f" ({u} from {since(r)})" for r, u in e.default_util[1:])
              for name, e in ENGINES.items() if e.default_util]
    own = [name for name, e in ENGINES.items() if not e.default_util]
    return ", ".join(shares + ([f"{' and '.join(own)} their own"] if own else []))


# -- the options memory, max-seq and max-batch share -------------------------------------------
Mode = choices("Mode", MODES)
Precision = choices("Precision", PRECISIONS)
AttentionImpl = choices("AttentionImpl", ATTENTION_IMPLS)
Finetune = choices("Finetune", FINETUNES)
LossDtype = choices("LossDtype", FLOAT_DTYPES)

ModeOpt = Annotated[Mode, typer.Option("--mode", rich_help_panel=RUNTIME, help="train: weights, gradients, optimizer, activations; infer: weights, KV cache.")]
MemTpOpt = Annotated[Optional[int], typer.Option("--tp", rich_help_panel=PARALLELISM, show_default=by_mode(1, "the GPUs --pp x --cp x --dp leave"), help="Tensor-parallel degree.")]
PpOpt = Annotated[Optional[int], typer.Option("--pp", rich_help_panel=PARALLELISM, show_default="1", help="Pipeline-parallel degree.")]
VppOpt = Annotated[int, typer.Option("--vpp", rich_help_panel=PARALLELISM, min=1, help="train, --framework megatron: virtual pipeline stages per rank (interleaved 1F1B; the first stage holds p + (p-1)/v micro-batches once --grad-accum gives that many).")]
DpOpt = Annotated[Optional[int], typer.Option("--dp", rich_help_panel=PARALLELISM, show_default="the GPUs --tp x --pp x --cp leave", help="Data-parallel degree.")]
CpOpt = Annotated[Optional[int], typer.Option("--cp", rich_help_panel=PARALLELISM, show_default="1", help="Context-parallel degree (splits the sequence).")]
EpOpt = Annotated[Optional[int], typer.Option("--ep", rich_help_panel=PARALLELISM, show_default="1", help="Expert-parallel degree (MoE experts split over DP ranks; over TP ranks too with --etp 1).")]
EtpOpt = Annotated[Optional[int], typer.Option("--etp", rich_help_panel=PARALLELISM, show_default="--tp", help="Expert tensor-parallel degree: ranks each routed expert is split over (1: EP may span TP ranks, Megatron-Core's MoE parallel folding).")]
SpOpt = Annotated[Optional[bool], typer.Option("--sp/--no-sp", rich_help_panel=PARALLELISM, show_default="off, as Megatron-LM's --sequence-parallel (plan turns it on with TP)", help="Sequence parallelism with TP (splits norm/dropout activations).")]
MemDtypeOpt = Annotated[Optional[Dtype], typer.Option("--dtype", rich_help_panel=PRECISION, show_default="bf16; in train mode fp32 with --precision fp32, in infer a quantized checkpoint's own format", help="Weights and compute dtype (train: of mixed or bf16 precision, or the frozen LoRA base).")]
PrecisionOpt = Annotated[Optional[Precision], typer.Option("--precision", rich_help_panel=PRECISION, show_default=_per_framework(lambda f: f.precision or "mixed") + "; fp32 with --dtype fp32", help="train: bytes/param: mixed = 2+2+12 (ZeRO), mixed-fp32-grads = 18 (HF), fp32, bf16.")]
TrainOptimizerOpt = Annotated[Optional[Optimizer], typer.Option("--optimizer", rich_help_panel=TRAINING, show_default=_per_framework(lambda f: f.optimizer, "qlora_optimizer"), help="train: the optimizer whose states are held (adamw: m and v).")]
ZeroOpt = Annotated[Optional[int], typer.Option("--zero", rich_help_panel=PARALLELISM, min=0, max=3, show_default="0; 3 with --framework fsdp", help="train: ZeRO stage: 1 shards optimizer states, 2 + gradients, 3 + weights (FSDP full-shard).")]
MemRecomputeOpt = Annotated[Optional[Recompute], typer.Option("--recompute", rich_help_panel=TRAINING, show_default=_per_framework(lambda f: f.recompute, "qlora_recompute"), help="train: activation recomputation: none, selective (s x s terms), full (layer inputs only).")]
AttentionImplOpt = Annotated[Optional[AttentionImpl], typer.Option("--attention-impl", rich_help_panel=RUNTIME, show_default=by_mode(DEFAULT_ATTENTION_IMPL["train"], DEFAULT_ATTENTION_IMPL["infer"]), help="Attention kernel: eager stores s x s scores; sdpa/flash do not.")]
LossDtypeOpt = Annotated[Optional[LossDtype], typer.Option("--loss-dtype", rich_help_panel=PRECISION, show_default=_per_framework(lambda f: f.loss_dtype or "the compute dtype"), help="train: dtype of the logits in the loss (fp32 where the framework upcasts them).")]
Framework = choices("Framework", FRAMEWORKS)
FrameworkOpt = Annotated[Optional[Framework], typer.Option("--framework", rich_help_panel=TRAINING, show_default=DEFAULT_FRAMEWORK, help="train: the training framework whose defaults to follow (loss, recompute, LoRA targets, optimizer kernel, gradient buffers).")]
Loss = choices("Loss", LOSSES)
LossOpt = Annotated[Optional[Loss], typer.Option("--loss", rich_help_panel=TRAINING, show_default=_per_framework(lambda f: f.loss), help="train: cross-entropy implementation: full (b·s·V fp32 logits), chunked, fused (linear + loss, no logits), te (Transformer Engine's, the gradient written into the 16-bit logits; megatron).")]
OptInBwdOpt = Annotated[bool, typer.Option("--optimizer-in-backward", rich_help_panel=TRAINING, help="train: each parameter steps from a backward hook and frees its gradient (torchtune's optimizer_in_bwd).")]
GradAccumOpt = Annotated[Optional[int], typer.Option("--grad-accum", rich_help_panel=TRAINING, min=1, show_default="not stated: 1, and enough to fill a pipeline", help="train: micro-batches per optimizer step (> 1 keeps the gradients allocated through forward and backward; with --pp, the most a stage holds in flight).")]
CompileOpt = Annotated[bool, typer.Option("--compile", rich_help_panel=TRAINING, help="train: layers and loss under torch.compile (inductor keeps fewer activations; the loss fuses its upcast).")]
Fp8Recipe = choices("Fp8Recipe", FP8_RECIPES)
Fp8Opt = Annotated[Optional[Fp8Recipe], typer.Option("--fp8", rich_help_panel=PRECISION, show_default="off: 16-bit GEMMs", help="train, --framework megatron: Transformer Engine's FP8 GEMMs under this scaling recipe: linear inputs kept in 1 byte, FP8 weight copies cached (with transposes where FP8 GEMMs are TN-only: Hopper, Ada, RTX 50).")]
Fp8ParamsOpt = Annotated[bool, typer.Option("--fp8-params", rich_help_panel=PRECISION, help="train, with --fp8: the block weights are held in FP8 only (Megatron's --fp8-param-gather), no 16-bit copy.")]
BnbOpt = Annotated[Optional[str], typer.Option("--bitsandbytes", rich_help_panel=FINETUNING, show_default="a current release", help="train, qlora: the bitsandbytes release (before 0.43.2 its 4-bit matmul kept every linear's input for backward).")]
LoraDropoutOpt = Annotated[Optional[float], typer.Option("--lora-dropout", rich_help_panel=FINETUNING, show_default=_per_framework(lambda f: f.lora_dropout), help="LoRA dropout probability (> 0 keeps a mask and an input copy per adapter).")]
MiniSeqOpt = Annotated[int, typer.Option("--mini-seq", rich_help_panel=TRAINING, min=1, help="train: Mini-Sequence chunks M of the MLP and LM head (1 = off).")]
RecomputeModulesOpt = Annotated[Optional[str], typer.Option("--recompute-modules", rich_help_panel=TRAINING, show_default="core_attn (the s x s terms)", help="train, with --recompute selective: Megatron-Core's modules to recompute (comma list): core_attn, mla_up_proj (MLA's up-projections and rope), moe_act (the experts' activation), mlp (a dense layer's MLP), moe (an MoE layer: router, dispatch, experts), shared_experts.")]
OffloadLayersOpt = Annotated[int, typer.Option("--offload-layers", rich_help_panel=TRAINING, min=0, help="train, --framework megatron: the saved activations of this many layers wait in host memory (Megatron-Core's cpu_offloading_num_layers; --recompute none, no --pp).")]
OffloadOpt = Annotated[Optional[str], typer.Option("--offload", rich_help_panel=TRAINING, help="train: optimizer, params and/or activations (comma list): ZeRO-Offload to CPU memory; activations: checkpointed layer inputs in host memory (needs --recompute full).")]
FinetuneOpt = Annotated[Finetune, typer.Option("--finetune", rich_help_panel=FINETUNING, help="full, lora (frozen base in --dtype) or qlora (4-bit NF4 base).")]
LoraRankOpt = Annotated[int, typer.Option("--lora-rank", rich_help_panel=FINETUNING, min=1, help="LoRA rank r.")]
LoraTargetsOpt = Annotated[Optional[str], typer.Option("--lora-targets", rich_help_panel=FINETUNING, show_default=_per_framework(lambda f: ",".join(f.lora_targets)), help="Comma list of linears (q,k,v,o,gate,up,down) or all.")]
GroupSizeOpt = Annotated[int, typer.Option("--group-size", rich_help_panel=PRECISION, min=1, help="Weights per 16-bit scale for int4/fp4 weights.")]
GpuUtilOpt = Annotated[Optional[float], typer.Option("--gpu-util", rich_help_panel=HARDWARE, show_default=by_mode(DEFAULT_GPU_UTIL["train"], "the engine's") + ": " + _engine_utils(), help="Usable fraction of GPU memory (vLLM gpu_memory_utilization, SGLang mem_fraction_static, TensorRT-LLM free_gpu_memory_fraction).")]
GpuMemoryOpt = Annotated[Optional[str], typer.Option("--gpu-memory", rich_help_panel=HARDWARE, show_default="the GPU's", help="Override the GPU's capacity (80GB = 80e9, 80GiB = 80 x 2^30).")]
ReserveOpt = Annotated[Optional[str], typer.Option("--reserve", rich_help_panel=HARDWARE, show_default=by_mode(f"{DEFAULT_RESERVE['train'] / 2**30:.2f}GiB", DEFAULT_RESERVE["infer"]), help="Fixed bytes outside PyTorch's allocator: train: the CUDA context with cuBLAS, measured on H100 (fragmentation is the allocator row); infer: none (the engine models its own).")]
EngineOpt = Annotated[Optional[Engine], typer.Option("--engine", rich_help_panel=INFERENCE, show_default=DEFAULT_ENGINE, help="infer: the serving engine whose accounting to follow.")]
EngineVersionOpt = Annotated[Optional[str], typer.Option("--engine-version", rich_help_panel=INFERENCE, show_default=", ".join(f"{n} {e.default_version}" for n, e in ENGINES.items()), help="infer: the engine release to follow (vllm 0.8+ is the V1 engine).")]
PrefillChunkOpt = Annotated[Optional[str], typer.Option("--max-num-batched-tokens", "--prefill-chunk", rich_help_panel=INFERENCE, show_default="the engine's", help="infer: tokens per prefill step (vLLM max_num_batched_tokens, SGLang chunked_prefill_size, TensorRT-LLM max_num_tokens).")]
MaxNumSeqsOpt = Annotated[Optional[int], typer.Option("--max-num-seqs", rich_help_panel=INFERENCE, min=1, show_default="the release's", help="infer, vllm: concurrent sequences (sizes the sampler's profile).")]
EnforceEagerOpt = Annotated[bool, typer.Option("--enforce-eager", rich_help_panel=INFERENCE, help="infer, vllm: no CUDA graphs.")]
KeepOpt = Annotated[Optional[str], typer.Option("--keep-16bit", rich_help_panel=PRECISION, help="infer: modules whose weights stay 16-bit under a quantized --dtype or checkpoint (comma list of names or re:patterns, e.g. lm_head,model.layers.0,mlp.gate).")]
BlockSizeOpt = Annotated[Optional[int], typer.Option("--block-size", rich_help_panel=INFERENCE, min=1, show_default="the engine's (vllm 16)", help="infer: KV block (page) size in tokens.")]


def memory_options(
    gpus: Annotated[Optional[int], typer.Option("--gpus", rich_help_panel=HARDWARE, show_default="the product of the degrees",
                                                help="Number of GPUs.")] = None,
    tp: MemTpOpt = None, pp: PpOpt = None, vpp: VppOpt = 1, dp: DpOpt = None, cp: CpOpt = None, ep: EpOpt = None,
    etp: EtpOpt = None, sp: SpOpt = None,
    dtype: MemDtypeOpt = None,
    precision: PrecisionOpt = None,
    optimizer: TrainOptimizerOpt = None,
    zero: ZeroOpt = None,
    recompute: MemRecomputeOpt = None,
    recompute_modules: RecomputeModulesOpt = None,
    attention_impl: AttentionImplOpt = None,
    kv_dtype: KvDtypeOpt = None,
    loss_dtype: LossDtypeOpt = None,
    framework: FrameworkOpt = None,
    loss: LossOpt = None,
    mini_seq: MiniSeqOpt = 1,
    offload: OffloadOpt = None,
    offload_layers: OffloadLayersOpt = 0,
    finetune: FinetuneOpt = Finetune.full,
    lora_rank: LoraRankOpt = 16,
    lora_targets: LoraTargetsOpt = None,
    lora_dropout: LoraDropoutOpt = None,
    bitsandbytes: BnbOpt = None,
    compile_: CompileOpt = False,
    fp8: Fp8Opt = None,
    fp8_params: Fp8ParamsOpt = False,
    grad_accum: GradAccumOpt = None,
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


def _annotated(hint):
    """Python 3.10's get_type_hints wraps a None-defaulted ``Annotated[...]`` in Optional, hiding the
    typer.Option inside from typer; unwrap it (3.11 no longer adds the Optional)."""
    import typing

    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and len(args) == 2 and type(None) in args:
        inner = args[0] if args[1] is type(None) else args[1]
        if typing.get_origin(inner) is typing.Annotated:
            return inner
    return hint


def with_options(template: Callable) -> Callable[[Callable], Callable]:
    """Give a command the template's options as well; they arrive in its ``**options``.

    Typer reads a command's options from its signature, so the wrapper carries the command's own
    parameters followed by the template's, with their annotations resolved.
    """
    import functools
    import inspect
    import typing

    def decorate(fn: Callable) -> Callable:
        hints = {name: _annotated(hint) for name, hint in {**typing.get_type_hints(template, include_extras=True),
                                                           **typing.get_type_hints(fn, include_extras=True)}.items()}
        own = [p for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD]
        params = [p.replace(annotation=hints[p.name])
                  for p in own + list(inspect.signature(template).parameters.values())]

        @functools.wraps(fn)
        def command(**kwargs):
            return fn(**kwargs)

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate


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
    if check:
        fail_check(results, lambda b: not b.summary.get("fits"), lambda b: first_note(
            b, "does not fit", default=f"needs {fmt_bytes(b.value('total'))} a GPU, "
                                       f"{fmt_bytes(b.summary.get('usable', 0))} usable"))


@functools.lru_cache(maxsize=64)  # the same options at every point of a sweep over seq (read-only: shared)
def settings_from_options(**o) -> Mapping:
    """MemorySettings keyword arguments (all but seq and batch) from the shared memory/limits options."""
    value = lambda x: x.value if x is not None else None  # noqa: E731 - enum or None
    knobs = dict(prefill_chunk=parse_length(o["prefill_chunk"]) if o["prefill_chunk"] else None,
                 max_num_seqs=o["max_num_seqs"], enforce_eager=o["enforce_eager"], kv_block=o["block_size"])
    return MappingProxyType(dict(
        mode=o["mode"].value, dtype=value(o["dtype"]), precision=value(o["precision"]),
        optimizer=value(o["optimizer"]), zero=o["zero"], recompute=value(o["recompute"]),
        **({"recompute_modules": tuple(_split(o["recompute_modules"]))} if o["recompute_modules"] is not None else {}),
        attention_impl=value(o["attention_impl"]), kv_dtype=value(o["kv_dtype"]), loss_dtype=value(o["loss_dtype"]),
        framework=value(o["framework"]), loss=value(o["loss"]), lora_dropout=o["lora_dropout"],
        bitsandbytes=o["bitsandbytes"], compile=o["compile_"], grad_accum=o["grad_accum"], vpp=o["vpp"],
        fp8=value(o["fp8"]), fp8_params=o["fp8_params"],
        optimizer_in_backward=o["optimizer_in_backward"], mini_seq=o["mini_seq"],
        offload=tuple(_split(o["offload"] or "")), offload_layers=o["offload_layers"], finetune=o["finetune"].value,
        lora_rank=o["lora_rank"], lora_targets=tuple(_split(o["lora_targets"])) if o["lora_targets"] is not None else None, group_size=o["group_size"],
        gpu_util=o["gpu_util"], gpu_memory=parse_bytes(o["gpu_memory"]) if o["gpu_memory"] else None,
        reserve=parse_bytes(o["reserve"]) if o["reserve"] is not None else None,
        engine=value(o["engine"]), engine_version=o["engine_version"], **knobs,
        keep_16bit=tuple(_split(o["keep_16bit"] or "")),
        parallel=Parallelism.resolve(o["gpus"], o["tp"], o["pp"], o["dp"], o["cp"], o["ep"], o["sp"],
                                     mode=o["mode"].value, etp=o["etp"])))


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
    if ctx.info_name == "max-batch" and settings.engine != "hf":  # a running-request cap max-batch applies itself
        idle.pop("max_num_seqs", None)
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
