"""The Python API gives the CLI's numbers, takes the CLI's strings, and shows itself in Jupyter."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

import llmcalc
from llmcalc.spec import SpecError

from .conftest import run_json

SERVE_PLAN = ["serve-plan", "--model", "llama-3.1-8b", "--gpu", "h100,a100-80gb", "--request-rate", "4", "--prompt", "1k",
              "--output", "128", "--ttft-target", "1s", "--tpot-target", "50ms", "--gpu-price", "h100=2.5,a100-80gb=1.6",
              "--max-gpus", "8"]

CASES = [  # (API call, the same question on the command line)
    (lambda: llmcalc.params("llama-2-7b", dtype="fp16"), ["params", "--model", "llama-2-7b", "--dtype", "fp16"]),
    (lambda: llmcalc.flops("gpt2", seq="1k", batch=8), ["flops", "--model", "gpt2", "--seq", "1k", "--batch", "8"]),
    (lambda: llmcalc.memory("llama-2-7b", "a100-80gb", zero=3, gpus=8, recompute="full"),
     ["memory", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--zero", "3", "--gpus", "8", "--recompute", "full"]),
    (lambda: llmcalc.memory("llama-3.1-8b", "h100", mode="infer", seq="8k", gpu_memory="80GB"),
     ["memory", "--model", "llama-3.1-8b", "--gpu", "h100", "--mode", "infer", "--seq", "8k", "--gpu-memory", "80GB"]),
    (lambda: llmcalc.memory("llama-2-7b", finetune="lora", lora_targets="q,v,o"),
     ["memory", "--model", "llama-2-7b", "--finetune", "lora", "--lora-targets", "q,v,o"]),
    (lambda: llmcalc.max_seq("llama-3.2-1b", "l40s", mini_seq=4), ["max-seq", "--model", "llama-3.2-1b", "--gpu", "l40s",
                                                                   "--mini-seq", "4"]),
    (lambda: llmcalc.max_batch("llama-2-70b", "a800", gpus=2, tp=2, seq=4000, dtype="fp16", gpu_memory="80GB",
                               gpu_util=0.95),
     ["max-batch", "--model", "llama-2-70b", "--gpu", "a800", "--gpus", "2", "--tp", "2", "--seq", "4000", "--dtype",
      "fp16", "--gpu-memory", "80GB", "--gpu-util", "0.95"]),
    (lambda: llmcalc.mfu("llama-3-70b", "h100", seq="8k", tokens="15T", gpu_hours="6.4M"),
     ["mfu", "--model", "llama-3-70b", "--gpu", "h100", "--seq", "8k", "--tokens", "15T", "--gpu-hours", "6.4M"]),
    (lambda: llmcalc.latency("llama-2-70b", "a800", gpus=8, prompt=3000, ttft_target="650ms"),
     ["latency", "--model", "llama-2-70b", "--gpu", "a800", "--gpus", "8", "--prompt", "3000", "--ttft-target", "650ms"]),
    (lambda: llmcalc.plan("mixtral-8x7b", gpu="h100", gpus=64, seq="4k", expert_overhead="1ms", recompute="none,full",
                          top=2),
     ["plan", "--model", "mixtral-8x7b", "--gpu", "h100", "--gpus", "64", "--seq", "4k", "--expert-overhead", "1ms",
      "--recompute", "none,full", "--top", "2"]),
    # serve-plan: the kinds as the CLI's "a,b" or a list, the prices as its text or a dict
    (lambda: llmcalc.serve_plan("llama-3.1-8b", "h100,a100-80gb", request_rate=4, prompt="1k", output=128,
                                ttft_target="1s", tpot_target="50ms", gpu_price="h100=2.5,a100-80gb=1.6", max_gpus=8),
     SERVE_PLAN),
    (lambda: llmcalc.serve_plan("llama-3.1-8b", ["h100", "a100-80gb"], request_rate=4, prompt=1024, output=128,
                                ttft_target=1, tpot_target=0.05, gpu_price={"h100": 2.5, "a100-80gb": 1.6}, max_gpus=8),
     SERVE_PLAN),
    (lambda: llmcalc.serve_plan("llama-3.1-70b", "h100", concurrency=32, prompt="2k", output=256, tpot_target="30ms",
                                dtype="fp8", engine="sglang", gpu_util=0.85, max_model_len="8k"),
     ["serve-plan", "--model", "llama-3.1-70b", "--gpu", "h100", "--concurrency", "32", "--prompt", "2k", "--output",
      "256", "--tpot-target", "30ms", "--dtype", "fp8", "--engine", "sglang", "--gpu-util", "0.85", "--max-model-len",
      "8k"]),
    # max-batch's own options: the context as prompt + output, latency targets, their efficiency
    (lambda: llmcalc.max_batch("llama-3.1-8b", "h100", prompt="2k", output="256", tpot_target="15ms"),
     ["max-batch", "--model", "llama-3.1-8b", "--gpu", "h100", "--prompt", "2k", "--output", "256", "--tpot-target",
      "15ms"]),
    (lambda: llmcalc.max_batch("llama-3.1-8b", "h100", prompt=2048, output=256, ttft_target=0.2, efficiency=0.5,
                               engine="sglang"),
     ["max-batch", "--model", "llama-3.1-8b", "--gpu", "h100", "--prompt", "2k", "--output", "256", "--ttft-target",
      "200ms", "--efficiency", "0.5", "--engine", "sglang"]),
    (lambda: llmcalc.max_batch("llama-3.1-8b", "h100", prompt="2k", output=256, engine="hf"),  # hf reads the prompt
     ["max-batch", "--model", "llama-3.1-8b", "--gpu", "h100", "--prompt", "2k", "--output", "256", "--engine", "hf"]),
    (lambda: llmcalc.max_batch("llama-3.1-8b", "h100", seq="4k", max_num_batched_tokens="4k", block_size="32"),
     ["max-batch", "--model", "llama-3.1-8b", "--gpu", "h100", "--seq", "4k", "--max-num-batched-tokens", "4k",
      "--block-size", "32"]),
    # counts as the CLI's digits
    (lambda: llmcalc.mfu("llama-2-7b", "h100", batch="16", grad_accum="2", step_time="20s"),
     ["mfu", "--model", "llama-2-7b", "--gpu", "h100", "--batch", "16", "--grad-accum", "2", "--step-time", "20s"]),
]


@pytest.mark.parametrize("call, cli", CASES, ids=lambda x: x[0] if isinstance(x, list) else "")
def test_the_api_answers_as_the_cli_does(call, cli):
    import json

    assert json.loads(json.dumps(call().to_dict())) == run_json(*cli)  # plan's choices are tuples, JSON's lists


def test_results_show_themselves():
    r = llmcalc.memory("llama-3.1-8b", "h100", mode="infer")
    assert isinstance(r, llmcalc.Result)
    assert r._repr_markdown_().startswith("### Memory per GPU of llama-3.1-8b, inference")
    html = r._repr_html_()
    assert html.startswith("<b>Memory per GPU") and "<td>kv_cache</td>" in html
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install pandas"):
            r.to_pandas()
    else:
        frame = r.to_pandas()
        assert list(frame.columns) == ["name", "value", "unit", "share", "note"] and len(frame) == len(r.rows)


def test_specs_pass_through_and_errors_are_spec_errors():
    from llmcalc.presets import load_gpu, load_model

    spec = load_model("gpt2")
    assert llmcalc.params(spec).value("total") == llmcalc.params("gpt2").value("total") == 124_439_808
    assert llmcalc.memory(spec, load_gpu("h100"), mode="infer").gpu == "h100-sxm"
    with pytest.raises(SpecError, match="needs a gpu"):
        llmcalc.latency("gpt2", None)
    with pytest.raises(SpecError):
        llmcalc.memory("gpt2", zero=3, mode="infer")


def test_module_names_are_the_api_functions():
    """llmcalc.params is also the core module llmcalc.params; calling it runs the API either way."""
    import llmcalc.params as module

    assert module is llmcalc.params and callable(module) and module.params_breakdown
    assert llmcalc.params("gpt2").value("total") == 124_439_808


def test_importing_llmcalc_stays_light():
    code = "import sys, llmcalc; print(sorted(m for m in ('llmcalc.api', 'rich', 'typer') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]"


def test_latency_takes_data_parallel_replicas():
    """gpus=4, tp=2, dp=2: two instances of two GPUs each split the batch (it raised a TypeError before)."""
    r = llmcalc.latency("llama-3.1-8b", gpu="h100", gpus=4, tp=2, dp=2, batch=8)
    assert (r.inputs["tp"], r.inputs["dp"]) == (2, 2)


def test_an_unknown_keyword_names_the_function_and_the_nearest_setting():
    """A misspelt setting is the caller's TypeError, in the API's terms: the function called and the names it takes
    nearest to the one given, never a settings class's constructor."""
    import llmcalc

    for call, says in ((lambda: llmcalc.latency("gpt2", gpu="h100", promt=3), "llmcalc.latency() got an unexpected "
                        "keyword argument 'promt'; did you mean prompt?"),
                       (lambda: llmcalc.memory("gpt2", bacth=3), "did you mean batch?"),
                       (lambda: llmcalc.plan("gpt2", gpu="h100", gpus=8, max_pt=4), "did you mean max_tp?"),
                       (lambda: llmcalc.max_batch("gpt2", bogus=1), "llmcalc.max_batch() got an unexpected"),
                       (lambda: llmcalc.mfu("gpt2", "h100", step_tim=1), "llmcalc.mfu() got an unexpected keyword "
                        "argument 'step_tim'; did you mean step_time?")):
        with pytest.raises(TypeError) as info:
            call()
        assert says in str(info.value) and "__init__" not in str(info.value)


def test_dir_lists_the_api():
    """Every command but the presets listing is a function (README: "Python API"), serve-plan's too."""
    import llmcalc
    from llmcalc import api
    from llmcalc.cli import COMMAND_MODULES

    functions = {command.replace("-", "_") for command in COMMAND_MODULES} - {"presets"}
    assert functions | {"Result"} <= set(dir(llmcalc)) and functions <= set(api.__all__) <= set(llmcalc.__all__)
    assert all(callable(getattr(llmcalc, name)) for name in functions)


def _one_line(info) -> str:
    text = str(info.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_serve_plan_prices_and_ranks_as_the_cli():
    """4 requests/s of 128 output tokens: 512 tokens/s on the one A100 that meets the targets, the cheaper kind at
    $1.6/h: 1.6 / (512 x 3600 / 1e6) = $0.868 per million output tokens, ahead of the H100 at $2.5/h."""
    r = llmcalc.serve_plan("llama-3.1-8b", "h100,a100-80gb", request_rate=4, prompt="1k", output=128, ttft_target="1s",
                           tpot_target="50ms", gpu_price="h100=2.5,a100-80gb=1.6", max_gpus=8)
    best, other = r.summary["layouts"][:2]
    assert (best["gpu"], best["gpus"], other["gpu"]) == ("a100-80gb", 1, "h100-sxm")
    assert r.value("tokens_per_s") == best["tokens_per_s"] == 4 * 128
    assert best["usd_per_mtok"] == pytest.approx(1.6 / (512 * 3600 / 1e6))
    assert llmcalc.serve_plan("llama-3.1-8b", "h100", request_rate=4, tpot_target="50ms", gpu_price=2.5
                              ).summary["layouts"][0]["usd_per_hour"] == 2.5
    for call, says in ((lambda: llmcalc.serve_plan("llama-3.1-8b", "h100", request_rate=4), "needs a target"),
                       (lambda: llmcalc.serve_plan("llama-3.1-8b", None, request_rate=4, ttft_target=1), "needs a gpu"),
                       (lambda: llmcalc.serve_plan("llama-3.1-8b", "h100", ttft_target=1, max_gpus=0), "max_gpus"),
                       (lambda: llmcalc.serve_plan("llama-3.1-8b", "h100,a100", request_rate=4, ttft_target=1,
                                                   gpu_price={"h100": 2.5}), "has no price for a100")):
        with pytest.raises(SpecError) as info:
            call()
        assert says in _one_line(info)


def test_max_batch_takes_the_context_as_prompt_and_output_and_latency_targets():
    """prompt 2k + output 256 is a context of 2,304 tokens; a 15 ms TPOT target holds the clients to 33 where
    memory holds 194 (the CLI's --json, test_the_api_answers_as_the_cli_does)."""
    r = llmcalc.max_batch("llama-3.1-8b", "h100", prompt="2k", output="256", tpot_target="15ms")
    assert r.inputs["seq"] == 2048 + 256
    assert (r.summary["max_batch"], r.summary["memory_max_batch"], r.summary["limited_by"]) == (33, 194, "latency")
    assert llmcalc.max_batch("llama-3.1-8b", "h100", seq=2304).summary["max_batch"] == 194  # the same context
    hf = llmcalc.max_batch("llama-3.1-8b", "h100", prompt="2k", output=256, engine="hf")  # its prefill holds the prompt
    assert (hf.inputs["prompt"], hf.summary["max_batch"]) == (2048, 133)
    assert llmcalc.max_batch("llama-3.1-8b", "h100", seq=2304, engine="hf").summary["max_batch"] == 126
    with pytest.raises(SpecError) as info:
        llmcalc.max_batch("llama-3.1-8b", "h100", mode="train", seq="2k", tpot_target="15ms")
    assert "latency targets need --mode infer and a --gpu" in _one_line(info)
    with pytest.warns(UserWarning, match="efficiency has no effect without ttft_target or tpot_target"):
        llmcalc.max_batch("llama-3.1-8b", "h100", seq="2k", efficiency=0.5)


def test_numbers_are_checked_as_the_cli_checks_them():
    """A length or a count must be whole (the CLI: "a token length must be a whole number", "'2.5' is not a valid
    int"), whether given as a number or as the CLI's digits; whole floats and digit strings are the numbers they
    say: 8 x 4,096 tokens a step."""
    for call, says in ((lambda: llmcalc.flops("llama-2-7b", seq=4096.5), "seq: a token length must be a whole number"),
                       (lambda: llmcalc.flops("llama-2-7b", batch=2.5), "batch must be a whole number"),
                       (lambda: llmcalc.flops("llama-2-7b", grad_accum="two"), "grad_accum must be a whole number"),
                       (lambda: llmcalc.memory("llama-2-7b", gpus=2.5), "gpus must be a whole number"),
                       (lambda: llmcalc.mfu("llama-2-7b", "h100", batch="16.5", step_time=20), "batch must be"),
                       (lambda: llmcalc.latency("llama-2-7b", "h100", prompt=-3), "prompt: .*'-3'"),
                       (lambda: llmcalc.plan("llama-2-7b", gpu="h100", gpus=8, top=1.5), "top must be a whole")):
        with pytest.raises(SpecError) as info:
            call()
        assert re.search(says, _one_line(info))
    step = llmcalc.flops("llama-2-7b", seq=4096.0, batch="8").summary["tokens_per_step"]
    assert step == llmcalc.flops("llama-2-7b", seq="4k", batch=8).summary["tokens_per_step"] == 8 * 4096
    assert llmcalc.flops("llama-2-7b", tokens=1000.5).inputs["tokens"] == 1000.5  # a budget need not be whole (CLI)
    assert llmcalc.mfu("llama-2-7b", "h100", batch="16", step_time=10).value("mfu") == \
        llmcalc.mfu("llama-2-7b", "h100", batch=16, step_time="10s").value("mfu")


def test_a_bad_dtype_is_refused_with_the_choices_and_the_nearest():
    for call, key in ((lambda: llmcalc.params("llama-2-7b", dtype="bf17"), "dtype"),
                      (lambda: llmcalc.latency("llama-2-7b", "h100", dtype="bf17"), "dtype"),
                      (lambda: llmcalc.mfu("llama-2-7b", "h100", dtype="bf17", step_time=1), "dtype"),
                      (lambda: llmcalc.memory("llama-2-7b", "h100", mode="infer", kv_dtype="bf17"), "kv_dtype")):
        with pytest.raises(SpecError) as info:
            call()
        text = _one_line(info)
        assert text.startswith(f"{key} must be one of fp32, tf32, bf16, fp16, fp8,") and "did you mean bf16?" in text


def test_max_seq_refuses_a_length_it_would_ignore():
    with pytest.raises(SpecError) as info:
        llmcalc.max_seq("llama-3.2-1b", "l40s", seq="4k")
    assert "max-seq searches the whole context; a seq has no place in it" in _one_line(info)


def test_a_model_or_gpu_of_the_wrong_type_is_refused_in_one_line():
    from pathlib import Path

    from llmcalc.presets import load_gpu

    for call, says in ((lambda: llmcalc.params(7), "the model must be a preset name, a file path or a ModelSpec, "
                        "got int 7"),
                       (lambda: llmcalc.memory("gpt2", 5), "the gpu must be a preset name, a file path or a GPUSpec"),
                       (lambda: llmcalc.serve_plan("gpt2", [1], request_rate=1, ttft_target=1), "the gpu must be"),
                       (lambda: llmcalc.plan("gpt2", gpu=load_gpu("h100"), gpus=8), "the gpu must be a preset name "
                        "or a file path, got GPUSpec")):
        with pytest.raises(TypeError) as info:
            call()
        assert says in _one_line(info)
    config = Path(__file__).parent / "data" / "hf" / "falcon-7b.json"
    assert llmcalc.params(config).value("total") == llmcalc.params(str(config)).value("total") > 6e9


def test_an_unknown_row_names_the_nearest():
    r = llmcalc.params("gpt2")
    with pytest.raises(KeyError) as info:
        r.value("totl")
    assert "params has no row 'totl'; did you mean total?" in _one_line(info)
    with pytest.raises(KeyError, match="its rows: "):
        r.value("zzzzzz")
    assert r.get("totl") is None and r.value("total") == 124_439_808


def test_params_takes_the_training_precision_of_the_checkpoint():
    """As `params --precision`: a pure-bf16 checkpoint holds 2 + 2 + 2 B/param with AdamW, a mixed one 14."""
    assert llmcalc.params("llama-2-7b", precision="bf16").summary["checkpoint_bytes"] == 6_738_415_616 * 6
    assert llmcalc.params("llama-2-7b").to_dict() == run_json("params", "--model", "llama-2-7b")
