"""`llmcalc memory`."""

from __future__ import annotations

import typer

from ..spec import Parallelism, SpecError
from ..units import parse_bytes, parse_length
from .common import (BatchOpt, CheckOpt, CsvOpt, ExitCode, GenericOpt, GpuOpt, JsonOpt, MdOpt, Mode, ModelOpt,
                     ModeOpt, SeqOpt, _each, _emit, _fmt, _gpus, _models, _split, app, default_seq,
                     memory_options, with_options)


@app.command()
@with_options(memory_options)
def memory(
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
    from ..memory import MemorySettings, memory_breakdown

    fmt = _fmt(json_, csv_, markdown)
    if check and not gpu and not options["gpu_memory"]:
        raise SpecError("--check needs --gpu (or --gpu-memory) to say whether it fits")
    common = settings_from_options(mode=mode, batch=batch, **options)

    def one(m, g):
        return memory_breakdown(m, g, MemorySettings(seq=default_seq(m, seq), **common))

    results = _each(_models(model, generic), _gpus(gpu), one)
    _emit(results, fmt)
    if check and not all(r.summary.get("fits") for r in results):
        raise typer.Exit(ExitCode.CHECK_FAILED)


def settings_from_options(**o) -> dict:
    """MemorySettings keyword arguments (all but seq) from the shared memory/limits options."""
    from ..memory import DEFAULT_PREFILL_CHUNK, DEFAULT_RESERVE

    value = lambda x: x.value if x is not None else None  # noqa: E731 - enum or None
    return dict(
        mode=o["mode"].value, batch=o.get("batch", 1), dtype=value(o["dtype"]), precision=value(o["precision"]),
        optimizer=o["optimizer"].value, zero=o["zero"], recompute=o["recompute"].value,
        attention_impl=value(o["attention_impl"]), kv_dtype=value(o["kv_dtype"]), loss_dtype=o["loss_dtype"].value,
        mini_seq=o["mini_seq"], offload=tuple(_split(o["offload"] or "")), finetune=o["finetune"].value,
        lora_rank=o["lora_rank"], lora_targets=tuple(_split(o["lora_targets"])), group_size=o["group_size"],
        gpu_util=o["gpu_util"], gpu_memory=parse_bytes(o["gpu_memory"]) if o["gpu_memory"] else None,
        reserve=parse_bytes(o["reserve"]) if o["reserve"] is not None else DEFAULT_RESERVE,
        prefill_chunk=parse_length(o["prefill_chunk"]) if o["prefill_chunk"] else DEFAULT_PREFILL_CHUNK,
        parallel=Parallelism.resolve(o["gpus"], o["tp"], o["pp"], o["dp"], o["cp"], o["ep"], o["sp"],
                                     mode=o["mode"].value))
