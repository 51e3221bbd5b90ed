"""The Python API gives the CLI's numbers, takes the CLI's strings, and shows itself in Jupyter."""

from __future__ import annotations

import subprocess
import sys

import pytest

import llmcalc
from llmcalc.spec import SpecError

from .conftest import run_json

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
                       (lambda: llmcalc.max_batch("gpt2", bogus=1), "llmcalc.max_batch() got an unexpected")):
        with pytest.raises(TypeError) as info:
            call()
        assert says in str(info.value) and "__init__" not in str(info.value)


def test_dir_lists_the_api():
    import llmcalc

    assert {"params", "flops", "memory", "mfu", "latency", "max_seq", "max_batch", "plan", "Result"} <= set(dir(llmcalc))
