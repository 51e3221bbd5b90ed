"""`llmcalc latency`."""

import dataclasses
from typing import Annotated, Optional

import typer

from ..spec import Parallelism
from ..units import fmt_seconds, parse_length, parse_overhead, parse_seconds
from .common import (Attention, BatchOpt, CsvOpt, Dtype, DtypeOpt, Engine, GenericOpt,
                     GpusOpt, JsonOpt, KvDtypeOpt, MdOpt, ModelOpt, TpOpt, _each, _emit, _fmt, _models, app,
                     require_gpus, unused, within_context)
from .checks import fail_check, first_note
from .helpfmt import HARDWARE, MODEL, OUTPUT, PARALLELISM, RUNTIME, TARGETS
from .memory import EngineVersionOpt, _engine_utils

# The engine as launched, shared with serve-plan: what sizes its KV cache and its scheduler's defaults.
ServeUtilOpt = Annotated[Optional[float], typer.Option("--gpu-util", rich_help_panel=HARDWARE, show_default="the engine's: " + _engine_utils(), help="Usable fraction of GPU memory as launched (vLLM --gpu-memory-utilization, SGLang --mem-fraction-static, TensorRT-LLM free_gpu_memory_fraction): sizes the KV cache.")]
MaxModelLenOpt = Annotated[Optional[str], typer.Option("--max-model-len", rich_help_panel=RUNTIME, show_default="--prompt + --output", help="The longest request the engine admits (vLLM --max-model-len): sizes its profile run, and vLLM will not start unless its KV cache holds one such request (32k).")]



@app.command()
def latency(
    model: ModelOpt,
    gpu: Annotated[str, typer.Option("--gpu", "-g", rich_help_panel=HARDWARE, help="GPU preset name or YAML file; a,b compares.")],
    gpus: GpusOpt = 1,
    tp: TpOpt = None,
    batch: BatchOpt = 1,
    prompt: Annotated[str, typer.Option("--prompt", rich_help_panel=RUNTIME, help="Prompt tokens per request (4000, 8k).")] = "1024",
    output: Annotated[str, typer.Option("--output", rich_help_panel=RUNTIME, help="Output tokens per request.")] = "256",
    dtype: DtypeOpt = Dtype.bf16,
    kv_dtype: KvDtypeOpt = None,
    attention: Annotated[Attention, typer.Option("--attention", rich_help_panel=MODEL, help="Attention FLOPs: causal (what kernels compute) or full.")] = Attention.causal,
    efficiency: Annotated[Optional[float], typer.Option("--efficiency", rich_help_panel=HARDWARE, show_default="0.8 of compute, 0.9 of bandwidth", help="Fraction of peak compute and, unless --bw-efficiency, of bandwidth reachable; 1.0 = physical bound.")] = None,
    bw_efficiency: Annotated[Optional[float], typer.Option("--bw-efficiency", rich_help_panel=HARDWARE, show_default="--efficiency when given, else 0.9", help="Fraction of memory bandwidth reachable.")] = None,
    overlap: Annotated[bool, typer.Option("--overlap/--no-overlap", rich_help_panel=PARALLELISM, help="Hide TP communication behind compute (lower bound) or add it.")] = True,
    engine: Annotated[Engine, typer.Option("--engine", rich_help_panel=RUNTIME, help="Serving engine whose step costs and scheduler apply.")] = Engine.vllm,
    concurrency: Annotated[Optional[int], typer.Option("--concurrency", rich_help_panel=RUNTIME, show_default="one request at a time", help="Clients in a closed loop, each sending its next request when the last ends (vLLM benchmark_serving --max-concurrency).")] = None,
    request_rate: Annotated[Optional[float], typer.Option("--request-rate", rich_help_panel=RUNTIME, show_default="one request at a time", help="Requests per second arriving at random (Poisson), open loop.")] = None,
    max_num_batched_tokens: Annotated[Optional[str], typer.Option("--max-num-batched-tokens", rich_help_panel=RUNTIME, show_default="the engine's", help="Tokens per engine step: the chunked-prefill budget.")] = None,
    max_num_seqs: Annotated[Optional[int], typer.Option("--max-num-seqs", rich_help_panel=RUNTIME, show_default="the engine's", help="Running requests at most.")] = None,
    prefill_efficiency: Annotated[Optional[float], typer.Option("--prefill-efficiency", rich_help_panel=HARDWARE, show_default="by compute dtype: 0.65 16-bit, 0.45 fp8, at most 0.81 of the GPU's measured matmul share", help="Expected: share of the dense peak prefill reaches.")] = None,
    decode_efficiency: Annotated[Optional[float], typer.Option("--decode-efficiency", rich_help_panel=HARDWARE, show_default="by weight format: 0.9 16-bit, 0.85 fp8, 0.5-0.83 quantized", help="Expected: share of HBM bandwidth decode reaches.")] = None,
    step_overhead: Annotated[Optional[str], typer.Option("--step-overhead", rich_help_panel=RUNTIME, show_default="by engine: 50us with CUDA graphs, 0.9ms eager (hf), beside the GPU's work", help="Expected: fixed cost per layer per step (50us).")] = None,
    request_overhead: Annotated[Optional[str], typer.Option("--request-overhead", rich_help_panel=RUNTIME, show_default="5ms for HTTP engines, 4ms hf (generate's setup), 0 llamacpp", help="Expected: once per request in TTFT: API server, tokenizer.")] = None,
    measured_ttft: Annotated[Optional[str], typer.Option("--measured-ttft", rich_help_panel=RUNTIME, show_default="none", help="Calibrate: the mean TTFT measured at these settings (406ms); fits --prefill-efficiency, or --request-overhead where no plausible efficiency gives it.")] = None,
    measured_itl: Annotated[Optional[str], typer.Option("--measured-itl", rich_help_panel=RUNTIME, show_default="none", help="Calibrate: the mean inter-token latency measured at these settings (18.6ms); fits --decode-efficiency, or --step-overhead where no plausible efficiency gives it.")] = None,
    calibrate: Annotated[Optional[str], typer.Option("--calibrate", rich_help_panel=RUNTIME, show_default="none", help="Calibrate from a vLLM benchmark result (--save-result JSON) run on this model and GPU; then predict these settings.")] = None,
    ttft_target: Annotated[Optional[str], typer.Option("--ttft-target", rich_help_panel=TARGETS, help="Time-to-first-token target (650ms).")] = None,
    tpot_target: Annotated[Optional[str], typer.Option("--tpot-target", rich_help_panel=TARGETS, help="Time-per-output-token target (50ms).")] = None,
    check: Annotated[bool, typer.Option("--check", rich_help_panel=OUTPUT, help="Exit 1 when the layout does not fit, a target is beyond the bound or missed by the expected value, or the server is overloaded.")] = False,
    engine_version: EngineVersionOpt = None,
    gpu_util: ServeUtilOpt = None,
    max_model_len: MaxModelLenOpt = None,
    generic: GenericOpt = False,
    json_: JsonOpt = False, csv_: CsvOpt = False, markdown: MdOpt = False,
) -> None:
    """Expected serving latency with its band, beside the roofline bound: TTFT, TPOT, e2e, tokens/s.

    Example: llmcalc latency --model llama-3.1-70b --gpu h100 --gpus 2 --dtype fp8 --prompt 2k --output 256 --concurrency 16
    """
    from ..expected_latency import latency_estimate
    from ..traffic import load_of
    from ..serving import Efficiencies
    from ..throughput import ServeSettings

    fmt = _fmt(json_, csv_, markdown)
    layout = Parallelism.resolve(gpus, tp=tp, mode="infer")
    settings = ServeSettings(
        batch=batch, prompt=parse_length(prompt), output=parse_length(output), tp=layout.tp, dp=layout.dp,
        dtype=dtype.value, kv_dtype=kv_dtype.value if kv_dtype else None, attention=attention.value,
        compute_efficiency=efficiency, bandwidth_efficiency=bw_efficiency,
        overlap=overlap, tp_implied=layout.tp_implied, engine_version=engine_version, gpu_util=gpu_util,
        max_model_len=parse_length(max_model_len) if max_model_len else None)
    targets = dict(ttft_target=parse_seconds(ttft_target) if ttft_target else None,
                   tpot_target=parse_seconds(tpot_target) if tpot_target else None)
    eff = Efficiencies(compute=prefill_efficiency, bandwidth=decode_efficiency,
                       layer_overhead=parse_overhead(step_overhead) if step_overhead is not None else None,
                       request_overhead=parse_overhead(request_overhead) if request_overhead is not None else None)
    load = load_of(settings.prompt, settings.output, concurrency, request_rate)
    chunk = parse_length(max_num_batched_tokens) if max_num_batched_tokens else None
    if engine.value == "hf":  # generate has no scheduler: each call prefills its batch whole, then decodes it
        unused("--max-num-batched-tokens", "with --engine hf (generate prefills the whole batch at once)",
               chunk is not None)
        unused("--max-num-seqs", "with --engine hf (no scheduler: the --batch requests run together)",
               max_num_seqs is not None)
        unused("--max-model-len", "with --engine hf (generate's cache grows with each request, to no set limit)",
               max_model_len is not None)
        settings = dataclasses.replace(settings, max_model_len=None)

    measured, measured_at = _measurement(measured_ttft, measured_itl, calibrate, settings)

    def one(m, g):
        within_context(m, settings.context, "--max-model-len" if max_model_len else "--prompt + --output", engine.value)
        return latency_estimate(m, g, settings, engine.value, eff, load, chunk, max_num_seqs, **targets, measured=measured,
                                measured_at=measured_at)

    results = _each(_models(model, generic), require_gpus(gpu), one)
    _emit(results, fmt)
    if check:
        fail_check(results, _fails, _why_not)


def _fails(b) -> bool:
    """--check: the layout does not fit, a target is beyond the bound or missed by the expected value (as serve-plan
    judges a layout), or the replayed server is overloaded."""
    s = b.summary
    return not s.get("meets", s.get("feasible", True))  # an overloaded server is not feasible


def _why_not(b) -> str:
    """A failed --check's reason: the engine would not start, the layout does not fit, a target, the load."""
    s = b.summary
    if s.get("fits") is False:
        return first_note(b, "vLLM refuses to start", "does not fit:",
                          default="does not fit on the GPUs (see `llmcalc memory --mode infer`)")
    reasons = [n for n in b.notes if "not reachable" in n] if not s.get("feasible", True) else []
    reasons += [f"the expected {key.upper()} misses the {fmt_seconds(s[key + '_target'])} target"
                for key in ("ttft", "tpot") if s.get(f"{key}_expected_met") is False
                and not any(n.startswith(f"{key} target") for n in reasons)]  # said once: unreachable says it all
    reasons += ["overloaded: the queue grows without bound"] if s.get("overloaded") else []
    return "; ".join(reasons) or "a target is not met"


def _measurement(ttft: str | None, itl: str | None, path: str | None, settings) -> tuple:
    """(measured TTFT, ITL) and where they were measured: at these settings (--measured-*), or at the
    settings a benchmark result file records (--calibrate)."""
    import dataclasses

    if path is None:
        return (parse_seconds(ttft) if ttft else None, parse_seconds(itl) if itl else None), None
    from ..calibrate import read_benchmark
    from ..traffic import load_of
    from ..spec import SpecError

    if ttft or itl:
        raise SpecError("--calibrate reads the measurement from its file; leave out --measured-ttft/--measured-itl")
    bench = read_benchmark(path)
    at = dataclasses.replace(settings, batch=1, prompt=bench.prompt, output=max(bench.output, 2))
    clients = bench.concurrency or 0
    rate = bench.request_rate if not clients else None  # with both, the clients bound what is in flight
    load = load_of(bench.prompt, max(bench.output, 2), clients if clients > 1 else None, rate)
    where = f"{path}: {bench.prompt:,} in / {bench.output:,} out, " + \
        (f"{clients} clients" if clients > 1 else f"{rate:g} req/s" if rate else "one at a time")
    return (bench.ttft, bench.itl), (at, load, where)
