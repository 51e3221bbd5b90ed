"""`llmcalc plan`."""

from typing import Annotated, Optional

import typer

from .common import (CheckOpt, choices, CsvOpt, ExitCode, GenericOpt, JsonOpt, MdOpt, ModelOpt, SeqOpt, TokensOpt, _fmt,
                     _models, app, default_seq, unused)
from .checks import sweep_point
from ..memory.fp8 import RECIPES as FP8_RECIPES  # a table and nothing else: cheap to load
from .helpfmt import HARDWARE, PARALLELISM, PRECISION, RUNTIME, TARGETS, TRAINING

PlanDtype = choices("PlanDtype", ("bf16", "fp16", "fp8"))  # trainplan.TRAINING_DTYPES (not imported at startup)
AttentionKernel = choices("AttentionKernel", ("auto", "fa2", "cudnn", "fa3", "unfused"))  # kernels.ATTENTION_KERNELS
GradReduce = choices("GradReduce", ("fp32", "bf16", "fp16"))  # steptime.GRAD_BYTES
BackwardPrefetch = choices("BackwardPrefetch", ("pre", "post"))  # exposure.BACKWARD_PREFETCH
Fp8Recipe = choices("Fp8Recipe", FP8_RECIPES)
PlanLoss = choices("PlanLoss", ("full", "chunked", "fused", "te"))  # memory/frameworks.LOSSES
EXPERT_OVERHEAD = "0.4ms"  # steptime.EXPERT_OVERHEAD, as --help shows it (the core is not imported for --help)
IMPLAUSIBLE_OVERHEAD = 0.01  # seconds per expert: 25 x the fitted figure



@app.command("plan")
def plan(
    model: ModelOpt,
    gpu: Annotated[Optional[str], typer.Option("--gpu", "-g", rich_help_panel=HARDWARE, show_default="the --cluster's", help="GPU preset (its reference node: GPUs per node, NVLink and network bandwidth).")] = None,
    cluster: Annotated[Optional[str], typer.Option("--cluster", rich_help_panel=HARDWARE, show_default="none: give it or --gpu", help="Cluster preset (dgx-h100, gb200-nvl72, ...): GPU, node size and links.")] = None,
    gpus: Annotated[Optional[int], typer.Option("--gpus", rich_help_panel=HARDWARE, show_default="--nodes x --gpus-per-node", help="GPUs in all.")] = None,
    nodes: Annotated[Optional[int], typer.Option("--nodes", rich_help_panel=HARDWARE, show_default="none: give it or --gpus", help="Nodes (instead of --gpus).")] = None,
    gpus_per_node: Annotated[Optional[int], typer.Option("--gpus-per-node", rich_help_panel=HARDWARE, show_default="the preset's node", help="GPUs sharing one NVLink domain.")] = None,
    seq: SeqOpt = None,
    global_batch: Annotated[Optional[str], typer.Option("--global-batch", rich_help_panel=RUNTIME, show_default="the largest power of two within 4M tokens / --seq", help="Sequences per optimizer step.")] = None,
    batch_tokens: Annotated[Optional[str], typer.Option("--batch-tokens", rich_help_panel=RUNTIME, show_default="none: --global-batch", help="Tokens per optimizer step instead, a whole number of sequences (4M = 4,194,304: k and M as for --seq).")] = None,
    tokens: TokensOpt = None,
    dtype: Annotated[PlanDtype, typer.Option("--dtype", rich_help_panel=PRECISION, help="Matmul dtype (its peak and efficiency); weights, gradients and states as Megatron keeps them.")] = "bf16",
    loss: Annotated[Optional[PlanLoss], typer.Option("--loss", rich_help_panel=TRAINING, show_default="full (Megatron's vocab-parallel, in place)", help="Cross-entropy implementation: te is Transformer Engine's fused one (the gradient written into the 16-bit logits; Megatron-Bridge's recipes).")] = None,
    grad_reduce: Annotated[GradReduce, typer.Option("--grad-reduce", rich_help_panel=PRECISION, help="Gradients kept and reduced in fp32 (Megatron-LM's training script under bf16) or bf16 (Megatron-Bridge recipes, NeMo's grad_sync_dtype); fp16 with --dtype fp16 for Megatron-LM's fp16 training of 2021-2022.")] = "fp32",
    fp8_recipe: Annotated[Optional[Fp8Recipe], typer.Option("--fp8-recipe", rich_help_panel=PRECISION, show_default="delayed, with --dtype fp8", help="With --dtype fp8: Transformer Engine's scaling recipe (Megatron's --fp8-recipe); mxfp8 on Blackwell.")] = None,
    fp8_params: Annotated[bool, typer.Option("--fp8-params", rich_help_panel=PRECISION, help="With --dtype fp8: parameters held and gathered in FP8 (Megatron's --fp8-param-gather).")] = False,
    tp: Annotated[Optional[int], typer.Option("--tp", rich_help_panel=PARALLELISM, show_default="searched", help="Fix the tensor-parallel degree.")] = None,
    pp: Annotated[Optional[int], typer.Option("--pp", rich_help_panel=PARALLELISM, show_default="searched", help="Fix the pipeline-parallel degree.")] = None,
    cp: Annotated[Optional[int], typer.Option("--cp", rich_help_panel=PARALLELISM, show_default="searched", help="Fix the context-parallel degree.")] = None,
    ep: Annotated[Optional[int], typer.Option("--ep", rich_help_panel=PARALLELISM, show_default="searched (MoE)", help="Fix the expert-parallel degree.")] = None,
    etp: Annotated[Optional[int], typer.Option("--etp", rich_help_panel=PARALLELISM, show_default="searched: --tp's or 1 (MoE)", help="Fix the expert tensor-parallel degree (1: whole experts, EP spanning TP ranks).")] = None,
    dp: Annotated[Optional[int], typer.Option("--dp", rich_help_panel=PARALLELISM, show_default="searched", help="Fix the data-parallel degree.")] = None,
    vpp: Annotated[Optional[int], typer.Option("--vpp", rich_help_panel=PARALLELISM, show_default="searched", help="Fix the virtual pipeline stages per rank (above 1: pipelined layouts only).")] = None,
    max_tp: Annotated[Optional[int], typer.Option("--max-tp", rich_help_panel=PARALLELISM, show_default="GPUs per node", help="Largest tensor-parallel degree to try.")] = None,
    sp: Annotated[Optional[bool], typer.Option("--sp/--no-sp", rich_help_panel=PARALLELISM, show_default="on with TP", help="Sequence parallelism.")] = None,
    tp_overlap: Annotated[bool, typer.Option("--tp-overlap", rich_help_panel=PARALLELISM, help="TP collectives overlapped with the GEMMs (Transformer Engine).")] = False,
    tp_async: Annotated[bool, typer.Option("--tp-async/--no-tp-async", rich_help_panel=PARALLELISM, help="Without --tp-overlap: each column-parallel linear's backward TP all-reduce (reduce-scatter with SP) under its weight gradient's GEMM (Megatron-LM since 2021-09, Megatron-Core, Transformer Engine); --no-tp-async: after it, exposed (Megatron-DeepSpeed, Megatron-LM before 2021-09), and sequence parallelism, which always overlaps them, off unless --sp.")] = True,
    tp_overlap_sms: Annotated[Optional[int], typer.Option("--tp-overlap-sms", rich_help_panel=PARALLELISM, show_default="16, Transformer Engine's default config", help="With --tp-overlap: SMs the userbuffers kernels hold under the GEMMs they overlap (a recipe's own config: NeMo's tuned FP8 ones about 4).")] = None,
    ep_overlap: Annotated[bool, typer.Option("--ep-overlap", rich_help_panel=PARALLELISM, help="MoE all-to-all under another micro-batch's compute (Megatron-Core's overlap_moe_expert_parallel_comm; not with full recomputation).")] = False,
    pp_overlap: Annotated[bool, typer.Option("--pp-overlap/--no-pp-overlap", rich_help_panel=PARALLELISM, help="Interleaved pipeline sends under the next chunk (Megatron's overlap_p2p_comm, default since 2023).")] = True,
    dp_overlap: Annotated[bool, typer.Option("--dp-overlap/--no-dp-overlap", rich_help_panel=PARALLELISM, help="ZeRO 0-2: gradient reduction under the backward, parameter gathers under the forward (Megatron's --overlap-grad-reduce, --overlap-param-gather); ZeRO-3 prefetches as --backward-prefetch says.")] = True,
    backward_prefetch: Annotated[BackwardPrefetch, typer.Option("--backward-prefetch", rich_help_panel=PARALLELISM, help="ZeRO-3/FSDP: the backward's next all-gather issued before the current gradient computation, under it (pre: PyTorch FSDP's default BACKWARD_PRE, as FSDP2, DeepSpeed and Megatron FSDP prefetch), or after it, exposed (post: BACKWARD_POST, Composer's and llm-foundry's default).")] = "pre",
    attention_kernel: Annotated[AttentionKernel, typer.Option("--attention-kernel", rich_help_panel=TRAINING, help="Attention kernel: auto is Transformer Engine's choice, cuDNN's fused attention where the GPU preset gives a figure for it (H100, H200, H800), else FlashAttention-2, and the unfused core before Ampere; fa2 for flash-attn or PyTorch SDPA stacks (its memory-efficient kernel before Ampere; ROCm's port); fa3 on Hopper only; unfused for the s x s scores in HBM (Megatron-LM before FlashAttention; no CP). A kernel the GPU cannot run is refused.")] = "auto",
    zero_stages: Annotated[str, typer.Option("--zero", rich_help_panel=TRAINING, help="ZeRO stages to try: 0 plain DP, 1 distributed optimizer, 3 FSDP.")] = "0,1,3",
    recomputes: Annotated[str, typer.Option("--recompute", rich_help_panel=TRAINING, help="Recomputation to try: none, selective, full.")] = "none,selective,full",
    recompute_modules: Annotated[Optional[str], typer.Option("--recompute-modules", rich_help_panel=TRAINING, show_default="core_attn (the s x s terms)", help="What selective recomputation rebuilds: Megatron-Core's modules (comma list): core_attn, mla_up_proj (MLA's up-projections and rope), moe_act (the experts' activation), mlp (a dense layer's MLP), moe (an MoE layer: router, dispatch, experts), shared_experts.")] = None,
    expert_overhead: Annotated[Optional[str], typer.Option("--expert-overhead", rich_help_panel=TRAINING, show_default=f"{EXPERT_OVERHEAD} (Megatron-Core + Transformer Engine)", help="MoE: fixed work per routed expert a GPU holds, per MoE layer and micro-batch (TE's per-expert GEMM calls); less for a stack that runs one grouped GEMM, 0 leaves it out.")] = None,
    offload_layers: Annotated[str, typer.Option("--offload-layers", rich_help_panel=TRAINING, metavar="<layers|auto>", help="Activation offloading (Megatron-Core's cpu_offloading_num_layers; one pipeline stage, no recomputation, a dense model without CP): this many layers' saved activations wait in host memory, their copies timed at the GPU preset's host link (host_gb_s). auto: the fewest layers that make a layout fit, tried where a layout does not fit without and the GPU's host link is known; 0: none.")] = "auto",
    micro_batch: Annotated[Optional[int], typer.Option("--micro-batch", rich_help_panel=TRAINING, show_default="searched: 1, 2, 4, 8, 16", help="Fix the micro-batch (sequences).")] = None,
    gpu_util: Annotated[float, typer.Option("--gpu-util", rich_help_panel=HARDWARE, help="Usable fraction of each GPU's memory.")] = 1.0,
    top: Annotated[int, typer.Option("--top", rich_help_panel=TARGETS, help="Layouts to list.")] = 5,
    min_mfu: Annotated[Optional[float], typer.Option("--min-mfu", rich_help_panel=TARGETS, show_default="none", help="With --check: exit 1 below this MFU.")] = None,
    max_days: Annotated[Optional[float], typer.Option("--max-days", rich_help_panel=TARGETS, show_default="none", help="With --check: exit 1 when --tokens take longer, naming the fewest GPUs that would not.")] = None,
    check: CheckOpt = False,
    generic: GenericOpt = False,
    json_: JsonOpt = False, csv_: CsvOpt = False, markdown: MdOpt = False,
) -> None:
    """Search every training layout of a cluster (TP, PP, CP, EP, DP, ZeRO, recomputation, micro-batch), keep those that fit, rank them by step time.

    Example: llmcalc plan --model llama-3-70b --cluster dgx-h100 --nodes 8 --seq 8k --tokens 15T
    """
    from ..plan import Constraints, Target
    from ..planinputs import offload_count
    from ..cluster import hardware
    from ..trainplan import global_batch as batch_of, plan_breakdown
    from ..spec import SpecError
    from ..units import parse_batch_tokens, parse_count

    fmt = _fmt(json_, csv_, markdown)
    _check_targets(check, min_mfu, max_days, tokens)
    if gpu and "," in gpu:
        raise SpecError("plan takes one GPU kind; compare kinds with --sweep gpu=a,b")
    where, count = hardware(gpu, cluster, gpus, nodes, gpus_per_node)
    _warn_stand_in(where.gpu, PlanDtype(dtype).value)
    cons = Constraints(tp=tp, pp=pp, cp=cp, ep=ep, etp=etp, dp=dp, vpp=vpp, micro_batch=micro_batch, max_tp=max_tp,
                       recompute=recomputes, zero=zero_stages,
                       sp=sp, tp_overlap=tp_overlap, tp_async=tp_async, ep_overlap=ep_overlap, pp_overlap=pp_overlap, dp_overlap=dp_overlap,
                       backward_prefetch=BackwardPrefetch(backward_prefetch).value,
                       attention_kernel=AttentionKernel(attention_kernel).value,
                       gpu_util=gpu_util, grad_reduce=GradReduce(grad_reduce).value,
                       loss=PlanLoss(loss).value if loss else None,
                       fp8_recipe=Fp8Recipe(fp8_recipe).value if fp8_recipe else None, fp8_params=fp8_params,
                       offload=offload_count(offload_layers), **_given(tp_overlap_sms, recompute_modules, expert_overhead))
    _warn_tp(tp_overlap, tp_overlap_sms, tp_async, sp, tp)
    unused("--vpp", "with --pp 1 (virtual stages interleave a pipeline)", vpp is not None and vpp > 1 and pp == 1)
    unused("--backward-prefetch", "unless ZeRO-3 is searched (--zero 3, no --pp above 1, no MXFP8 parameters)",
           backward_prefetch != "pre" and not cons.zero3(PlanDtype(dtype).value))
    unused("--recompute-modules", "unless --recompute tries selective",
           recompute_modules is not None and "selective" not in cons.recompute)
    results = []
    for m in _models(model, generic):
        _warn_expert_overhead(expert_overhead, cons.expert_overhead, m)
        length = default_seq(m, seq)
        batch = batch_of(_sequences(global_batch), parse_batch_tokens(batch_tokens) if batch_tokens else None, length)
        target = Target(gpus=count, seq=length, global_batch=batch, tokens=parse_count(tokens) if tokens else None,
                        dtype=PlanDtype(dtype).value)
        results.append(plan_breakdown(m, where, target, cons, top, max_days * 86400 if max_days and check else None))
    _show(results, fmt)
    failed = [why for b in results if (why := _failed(b, min_mfu, max_days))] if check else []
    for why in failed:
        typer.echo(f"check failed{sweep_point()}: {why}", err=True)
    if failed:
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _sequences(text: str | None) -> int | None:
    """--global-batch: a whole number of sequences; a token count (4M) is --batch-tokens'."""
    from ..spec import SpecError

    if text is None:
        return None
    try:
        return int(text.replace(",", "").replace("_", ""))
    except ValueError:
        written = "".join(text.split())
        tokens = f"; for {written} tokens a step give --batch-tokens {written}" if written[-1:].isalpha() else ""
        raise SpecError(f"--global-batch counts sequences, a whole number (512), got {text!r}{tokens}") from None


def _check_targets(check: bool, min_mfu: float | None, max_days: float | None, tokens: str | None) -> None:
    """--min-mfu and --max-days: sensible values, --tokens for the days, and --check to act on them."""
    from ..spec import SpecError

    if max_days is not None and tokens is None:
        raise SpecError("--max-days needs --tokens (the run whose time it bounds)")
    if min_mfu is not None and not 0 < min_mfu <= 1:
        raise SpecError(f"--min-mfu is a fraction in (0, 1] (0.4 for 40%), got {min_mfu:g}")
    if max_days is not None and max_days <= 0:
        raise SpecError(f"--max-days must be positive, got {max_days:g}")
    unused("--min-mfu", "without --check", min_mfu is not None and not check)
    unused("--max-days", "without --check", max_days is not None and not check)


def _warn_stand_in(gpu, dtype: str) -> None:
    """A 16-bit dtype the GPU has no tensor cores for (V100's bf16) is timed at the other's peak (GPUSpec.peak): say
    so, and what such a GPU trains in."""
    from ..gpuspec import STAND_INS

    other = STAND_INS.get(dtype)
    if other and dtype not in gpu.peak_flops and other in gpu.peak_flops:
        import warnings

        from .common import Implausible

        warnings.warn(f"{gpu.name} has no {dtype} tensor cores: timed at its {other} peak as asked, but it trains in "
                      f"{other} (--dtype {other})", Implausible, stacklevel=2)


def _warn_tp(overlap: bool, sms: int | None, tp_async: bool, sp: bool | None, tp: int | None) -> None:
    """The TP options that have no effect beside the others, or without tensor parallelism."""
    unused("--sp", "with --tp 1 (sequence parallelism splits the TP group's norms and dropouts)", bool(sp) and tp == 1)
    unused("--tp-overlap", "with --tp 1 (no TP collectives to overlap)", overlap and tp == 1)
    unused("--tp-overlap-sms", "without --tp-overlap", sms is not None and not overlap)
    unused("--no-tp-async", "with --tp-overlap (userbuffers overlap every TP collective)", not tp_async and overlap)
    unused("--no-tp-async", "with --sp (Megatron's sequence parallelism overlaps its backward collectives always)",
           not tp_async and bool(sp) and not overlap)


def _given(tp_overlap_sms: int | None, recompute_modules: str | None, expert_overhead: str | None) -> dict:
    """The options given, as Constraints keywords (those left out keep Constraints' defaults)."""
    from ..units import parse_overhead

    given = {"tp_overlap_sms": tp_overlap_sms, "recompute_modules": recompute_modules,
             "expert_overhead": parse_overhead(expert_overhead) if expert_overhead is not None else None}
    return {key: value for key, value in given.items() if value is not None}


def _warn_expert_overhead(given: str | None, seconds: float, m) -> None:
    """--expert-overhead on a dense model changes nothing; beyond IMPLAUSIBLE_OVERHEAD it was likely meant in ms."""
    if given is None:
        return
    unused("--expert-overhead", f"for {m.name}, which has no routed experts", not m.is_moe)
    if seconds > IMPLAUSIBLE_OVERHEAD:
        import warnings

        from .common import Implausible

        warnings.warn(f"Implausible: --expert-overhead {given} is {seconds * 1e3:g} ms per expert per MoE layer and "
                      f"micro-batch (Megatron-Core with Transformer Engine: {EXPERT_OVERHEAD}); a bare number is "
                      "seconds", Implausible, stacklevel=2)


def _failed(b, min_mfu: float | None, max_days: float | None) -> str | None:
    """Why ``b`` fails --check (no layout fits, the best MFU below --min-mfu, --tokens longer than --max-days)."""
    s = b.summary
    if not s["found"]:
        within = s.get("gpus_within")
        return f"{b.model}: no layout fits" + (f" ({within:,} GPUs would meet --max-days)" if within else "")
    if min_mfu is not None and s["mfu"] < min_mfu:
        return f"{b.model}: the fastest layout's MFU {s['mfu']:.1%} is below --min-mfu {min_mfu:g} ({min_mfu * 100:g}%)"
    if max_days is not None and s["train_time"] > max_days * 86400:
        days = s["train_time"] / 86400
        within = s.get("gpus_within")
        return (f"{b.model}: --tokens take {days:,.1f} days on the fastest layout, over --max-days {max_days:g}"
                + (f" ({within:,} GPUs would do it)" if within else ""))
    return None


def _show(results: list, fmt: str) -> None:
    import warnings

    from .common import EXPLAIN, _emit, sweeping

    lost = [b for b in results if not b.summary["found"]]
    point = sweeping()
    if fmt in ("json", "csv") or point:
        if fmt == "csv" and not point:  # one table: every model's layouts, a model column first
            from ..report import render_listing
            from ..trainplan import LAYOUT_UNITS

            rows = [{"model": b.model, **x} for b in results for x in b.summary["layouts"]]
            render_listing({"layouts": rows}, LAYOUT_UNITS, fmt)
            if not rows:  # the header alone, so a script reads the same columns whether or not a layout fits
                _csv_header(results)
        else:
            _emit(results, fmt)
        for b in lost if fmt != "json" else ():  # a CSV row or a chart bar cannot say why: stderr does
            warnings.warn(f"{b.model}: {b.notes[-1]}", stacklevel=1)
        return
    import dataclasses

    from ..report import render, render_listing
    from ..trainplan import LAYOUT_UNITS

    for b in results:
        if b in lost:  # no table to draw: the reason, and the fewest GPUs that would do
            _say_why(b, fmt)
            continue
        render_listing({f"{b.title}: fastest layouts that fit": b.summary["layouts"]}, LAYOUT_UNITS, fmt)
        rest = {k: q for k, q in b.summary.quantities().items() if k not in ("layouts", "found")}
        render([dataclasses.replace(b, summary=rest, title=b.title + ": step time of the fastest layout")], fmt,
               explain=EXPLAIN["on"])


def _csv_header(results: list) -> None:
    import csv
    import sys

    from ..trainplan import layout_columns

    moe = any(b.inputs.get("expert_overhead") is not None for b in results)  # plan_breakdown states it for MoE only
    columns = layout_columns(moe, any(b.inputs.get("tokens") for b in results))
    csv.writer(sys.stdout, lineterminator="\n").writerow(["kind", "model", *columns])


def _say_why(b, fmt: str) -> None:
    import sys

    lines = [f"{b.title}: no layout fits", *(f"· {note}" for note in b.notes)]
    if fmt == "markdown":
        sys.stdout.write(f"### {lines[0]}\n\n" + "".join(f"- {note}\n" for note in b.notes))
        return
    from rich.text import Text

    from ..report import print_table

    print_table(Text(lines[0], style="bold"), sys.stdout, after=[Text(line, style="dim") for line in lines[1:]])
