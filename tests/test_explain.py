"""--explain: every row's formula, written out with its numbers, must compute the row's value.

The formulas are checked by tests/explain_eval.py, which reads the text as arithmetic (numbers as
written, `x` as multiplication, other rows by name), independently of the code that computed the
rows; so a formula that drifts from its code fails here. Rows computed by a search or by more terms
than a line holds say ``by`` what instead, and only the rows listed in BY may do so.
"""

from __future__ import annotations

import json
import re

import pytest

import llmcalc
from llmcalc.breakdown import formula
from llmcalc.cli import app
from llmcalc.presets import catalog

from .conftest import run, runner
from .explain_eval import evaluate


def wide(*args: str, width: int = 200):
    return runner().invoke(app, list(args), env={"COLUMNS": str(width), "NO_COLOR": "1"})

# The rows whose formula may be a description ("by ...") rather than arithmetic.
BY = {"activations", "activations/embedding", "activations/head", "ttft", "tpot",
      "activations/previous_step", "activations/transient", "tpot", "decode/compute", "decode/memory", "max_seq",
      "memory_max_seq", "max_batch", "memory_max_batch", "latency_max_batch", "next_total",
      "expected/prefill_communication", "expected/decode_communication", "tpot_bound",
      # under load, from the scheduler's replay (schedule.py)
      "queue_wait", "e2e", "output_tokens_per_s", "requests_per_s", "mean_batch", "max_batch",
      # plan: the exposed data-parallel time, a max of overlaps (exposure.dp_exposed)
      "dp_comm"}


def assert_formulas_compute(b, elsewhere: bool = False) -> None:
    """``elsewhere``: a formula may name rows of another breakdown (a limit's copy of the memory rows
    names the memory breakdown's sub-rows); such a formula is not evaluated here."""
    values = {row.name: row.value for row in b.rows}
    for row in b.rows:
        text = formula(row.how)
        assert text, f"{b.command}: row {row.name} has no formula"
        if text.startswith("by "):
            assert row.name in BY or row.name.startswith(("logits/", "activations/per_layer/")), f"{row.name}: {text}"
            continue
        if elsewhere and any(name not in values for name in re.findall(r"[a-z_]+/[\w/]+", text)):
            continue
        got = evaluate(text, values)
        assert got == pytest.approx(row.value, rel=1e-3, abs=1e-9), f"{b.command} {row.name} = {text} = {got}, not {row.value}"


@pytest.mark.parametrize("model", sorted(catalog("models")[0]))
def test_params_and_flops_formulas_of_every_preset(model):
    assert_formulas_compute(llmcalc.params(model))
    assert_formulas_compute(llmcalc.flops(model, seq="2k", batch=2, attention="causal", recompute="selective",
                                          formula="detailed"))


@pytest.mark.parametrize("settings", [
    dict(formula="palm", recompute="full"), dict(formula="6nd", recompute="selective", grad_accum=4),
    dict(formula="detailed", recompute="full", seq="8k")])
def test_flops_formulas_of_each_counting_rule(settings):
    assert_formulas_compute(llmcalc.flops("mixtral-8x7b", **{"seq": "4k", **settings}))


TRAIN = [
    dict(model="llama-3.1-8b"),
    dict(model="llama-3.1-70b", gpus=8, zero=3, batch=2, seq="4k"),
    dict(model="mixtral-8x7b", gpus=16, tp=2, pp=2, ep=4, zero=1),
    dict(model="llama-3.1-8b", finetune="qlora"),
    dict(model="llama-3.1-8b", finetune="lora", zero=3, gpus=4),
    dict(model="qwen3-8b", offload="optimizer", zero=2, gpus=2),
    dict(model="llama-3.1-8b", optimizer="paged-adamw-8bit"),
    dict(model="gemma-2-9b", recompute="full", framework="deepspeed", zero=3, gpus=8),
    dict(model="llama-3.1-8b", framework="unsloth", finetune="qlora", recompute="full"),
    dict(model="llama-3.1-8b", optimizer="adafactor"),
    dict(model="llama-3.1-8b", optimizer_in_backward=True, framework="torchtune"),
    dict(model="llama-3.1-8b", mini_seq=4, loss="fused"),
    dict(model="llama-3.1-8b", offload="params,optimizer", zero=3, gpus=2),
    dict(model="llama-3.1-8b", grad_accum=4, framework="megatron", gpus=8, tp=2, pp=2, sp=True),
    dict(model="llama-3.1-8b", framework="megatron", fp8="delayed", gpus=8, zero=1),
    dict(model="mixtral-8x7b", framework="megatron", fp8="current", fp8_params=True, gpus=8, ep=8, zero=1),
    dict(model="qwen3-30b-a3b", framework="megatron", gpus=16, tp=2, sp=True, ep=16, etp=1, zero=1),
    dict(model="llama-3.1-8b", framework="megatron", loss="te", gpus=8, tp=2, sp=True, zero=1),
    dict(model="llama-3.1-8b", framework="megatron", fp8="current", fp8_params=True, gpus=8, tp=2, sp=True, zero=3),
    dict(model="mixtral-8x7b", framework="megatron", fp8="current", fp8_params=True, gpus=8, ep=4, zero=3),
    dict(model="deepseek-v3", framework="megatron", recompute="none", offload_layers=10, gpus=64, ep=64, seq="2k"),
]


@pytest.mark.parametrize("settings", TRAIN, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_training_memory_formulas(settings):
    assert_formulas_compute(llmcalc.memory(**settings, gpu="h100", mode="train"))


INFER = [
    dict(model="llama-3.1-8b"), dict(model="llama-3.1-70b", gpus=4, tp=4, batch=8, seq="8k"),
    dict(model="mixtral-8x7b", gpus=2, tp=2, dtype="int4"), dict(model="gemma-2-9b"),
    dict(model="deepseek-v3", gpus=8, tp=8, dtype="fp8"), dict(model="qwen3-8b", gpus=2, pp=2),
]


@pytest.mark.parametrize("engine", ["vllm", "sglang", "trtllm", "hf", "llamacpp"])
@pytest.mark.parametrize("settings", INFER, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()))
def test_inference_memory_formulas(engine, settings):
    if engine == "llamacpp" and "dtype" in settings:
        pytest.skip("llama.cpp loads GGUF types, not int4/fp8")
    assert_formulas_compute(llmcalc.memory(**settings, gpu="h200", mode="infer", engine=engine))


def test_latency_mfu_and_limit_formulas():
    for b in (llmcalc.latency("llama-3.1-70b", gpu="h100", gpus=4, tp=4, batch=8, prompt=2000, output=200),
              llmcalc.latency("mixtral-8x7b", gpu="a100-80gb", gpus=2, tp=2, overlap=False),
              llmcalc.mfu("llama-3.1-8b", gpu="h100", gpus=8, step_time="1.2s", batch=8, seq="8k", recompute="full"),
              llmcalc.latency("llama-3.1-8b", gpu="h100", prompt=2000, output=200, concurrency=8),
              llmcalc.latency("llama-3.1-8b", gpu="h100", batch=16, prompt="8k", output=64, engine="sglang"),
              llmcalc.mfu("llama-3.1-8b", gpu="h100", gpus=8, tokens="1T", gpu_hours="100k")):
        assert_formulas_compute(b)
    for b in (llmcalc.max_seq("llama-3.1-8b", gpu="h100", mode="infer", engine="hf"),
              llmcalc.max_seq("llama-3.1-8b", gpu="h100", mode="train"),
              llmcalc.max_batch("llama-3.1-70b", gpu="h100", gpus=2, tp=2, seq="4k", mode="infer")):
        assert_formulas_compute(b, elsewhere=True)


def test_seed_exercise_4_kv_cache_reads_as_the_article_writes_it():
    """Llama-2-70B, 4000 tokens, fp16: 2 x 80 x 8 x 128 x 4000 x 2 B = 1.31 GB (seed article, exercise 4)."""
    b = llmcalc.memory("llama-2-70b", gpu="a100-80gb", mode="infer", engine="hf", seq=4000, dtype="fp16",
                       kv_dtype="fp16", gpus=8, tp=8, reserve=0)
    text = formula(next(r for r in b.rows if r.name == "kv_cache").how)
    assert text == "1 requests x 80 layers x 4,000 tokens x 2 x 1 kv heads x 128 head dim x 2 B"
    assert evaluate(text, {}) * 8 == pytest.approx(1.31e9, rel=0.01)  # 8 kv heads over 8 GPUs


def test_formula_writes_numbers_for_reading():
    assert formula(("{} layers x ({})", 32, ("{} x {}", 4096, 14336))) == "32 layers x (4,096 x 14,336)"
    assert formula(("{} FLOP/s x {}", 989.4e12, 0.8)) == "9.894e14 FLOP/s x 0.8"
    assert formula(("{} tokens", 8192.0)) == "8,192 tokens"
    assert formula(()) == ""


def test_explain_through_the_cli():
    out = wide("memory", "--model", "llama-2-70b", "--gpu", "a100-80gb", "--gpus", "8", "--tp", "8", "--mode", "infer",
              "--engine", "hf", "--seq", "4000", "--explain")
    assert out.exit_code == 0, out.output
    assert "How each row is computed:" in out.stdout
    assert "kv_cache    = 1 requests x 80 layers x 4,000 tokens x 2 x 1 kv heads x 128 head dim x 2 B = 156 MiB" \
        in out.stdout
    narrow = wide("params", "--model", "llama-2-7b", "--explain", width=80)
    assert all(len(line) <= 80 for line in narrow.stdout.splitlines())
    assert re.search(r"attention/qkv +=  ?32 layers x \(\(4,096 x 4,096\) \+ \(4,096 x 4,096\) \+", narrow.stdout)


def test_explain_in_machine_formats():
    plain = json.loads(run("params", "--model", "gpt2", "--json").stdout)
    assert not any("formula" in row for row in plain["rows"])
    rows = json.loads(run("params", "--model", "gpt2", "--json", "--explain").stdout)["rows"]
    assert {r["name"]: r["formula"] for r in rows}["lm_head"] == "0 (tied)"
    csv = run("flops", "--model", "gpt2", "--seq", "1k", "--csv", "--explain").stdout.splitlines()
    assert csv[0].endswith(",formula") and any(line.endswith(",2 x forward") for line in csv)
    md = run("params", "--model", "gpt2,llama-2-7b", "--markdown", "--explain").stdout
    assert "How each row of gpt2 is computed" in md and "- `total` = embedding + attention + mlp + norm + lm_head" in md


def test_explain_with_a_sweep_says_it_has_no_effect():
    from llmcalc.cli.common import UnusedOption

    with pytest.warns(UnusedOption, match="--explain has no effect with --sweep"):
        assert run("params", "--model", "gpt2", "--sweep", "dtype=bf16,fp8", "--explain").exit_code == 0


def test_the_api_explains_too():
    text = llmcalc.params("gpt2").explain()
    assert text.splitlines()[0] == "embedding/token = 50,257 vocab x 768 width = 38.60 M"
