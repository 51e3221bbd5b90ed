"""memory/usage.py: the settings an estimate never reads, and the CLI's one warning for each one set.

The claim `unread` makes is checked against the estimate itself: changing a field it names must
leave every row and summary value as it was. Without that check a rule could hide an option that
does change the answer.
"""

from __future__ import annotations

import dataclasses

import pytest

from llmcalc.memory import MemorySettings, memory_breakdown
from llmcalc.memory.usage import RULES, unread
from llmcalc.presets import load_gpu, load_model
from llmcalc.spec import Parallelism

from .conftest import run

# A value other than the default for every field a rule can name.
OTHER = {"kv_dtype": "fp8", "lora_rank": 64, "lora_targets": ("q", "k", "v", "o"), "lora_dropout": 0.1,
         "bitsandbytes": "0.42.0", "optimizer": "sgd", "loss_dtype": "bf16", "group_size": 32,
         "keep_16bit": ("lm_head",), "attention_impl": "eager", "prefill_chunk": 1024, "max_num_seqs": 8,
         "enforce_eager": True, "kv_block": 32, "gpu_util": 0.5, "reserve": 2**30}

SETTINGS = [  # (model, gpu, settings): training and inference under several engines and formats
    ("llama-2-7b", None, dict(mode="train")),
    ("llama-2-7b", "h100", dict(mode="train", finetune="lora")),
    ("llama-2-7b", "h100", dict(mode="train", finetune="qlora")),
    ("llama-2-7b", "h100", dict(mode="infer")),
    ("llama-2-7b", "h100", dict(mode="infer", engine="sglang")),
    ("llama-2-7b", "h100", dict(mode="infer", engine="trtllm")),
    ("llama-2-7b", "h100", dict(mode="infer", engine="llamacpp", dtype="q4_k_m")),
    ("llama-2-7b", "h100", dict(mode="infer", engine="hf", dtype="int4")),
    ("llama-3.1-8b", "l40s", dict(mode="infer", dtype="int4")),
]


def _answer(b) -> tuple:
    return tuple((r.name, r.value) for r in b.rows), tuple(sorted(b.summary.quantities().items()))


@pytest.mark.parametrize("model, gpu, kwargs", SETTINGS)
def test_an_unread_setting_leaves_the_answer_unchanged(model, gpu, kwargs):
    m, g = load_model(model), load_gpu(gpu) if gpu else None
    s = MemorySettings(seq=2048, parallel=Parallelism(gpus=2, tp=2), **kwargs)
    names = unread(m, g, s)
    assert names, "every case leaves some option idle"
    for name in names:
        if name == "sp":
            varied = dataclasses.replace(s, parallel=dataclasses.replace(s.parallel, sp=not s.parallel.sp))
        else:
            varied = MemorySettings(seq=2048, parallel=s.parallel, **{**kwargs, name: OTHER[name]})
        assert _answer(memory_breakdown(m, g, varied)) == _answer(memory_breakdown(m, g, s)), name


def test_what_is_read_is_not_reported():
    m, g = load_model("llama-2-7b"), load_gpu("h100")
    assert not {"lora_rank", "lora_targets", "lora_dropout", "bitsandbytes"} & set(
        unread(m, g, MemorySettings(mode="train", finetune="qlora")))
    infer = unread(m, g, MemorySettings(mode="infer", engine="hf", dtype="int4"))
    assert not {"attention_impl", "group_size", "keep_16bit", "kv_dtype"} & set(infer)
    assert "group_size" in unread(m, g, MemorySettings(mode="infer", dtype="fp8"))  # fp8 has no groups


def test_every_rule_names_a_field_with_an_option():
    """A rule about a field the CLI cannot set would never warn: each one maps to a memory option."""
    import inspect

    from llmcalc.cli.memory import _PARAM_OF, memory

    options = set(inspect.signature(memory).parameters)
    fields = {name for rule in RULES for name in rule.fields}
    assert {_PARAM_OF.get(f, f) for f in fields} <= options


@pytest.mark.parametrize("args, flag", [
    (["--mode", "infer", "--attention-impl", "eager"], "--attention-impl"),
    (["--mode", "infer", "--tp", "2", "--gpus", "2", "--sp"], "--sp"),
    (["--mode", "infer", "--engine", "sglang", "--max-num-seqs", "8"], "--max-num-seqs"),
    (["--mode", "infer", "--engine", "llamacpp", "--block-size", "32"], "--block-size"),
    (["--mode", "infer", "--keep-16bit", "lm_head"], "--keep-16bit"),
    (["--lora-rank", "16"], "--lora-rank"),  # the default value, typed: still idle
    (["--group-size", "64"], "--group-size"),
    (["--gpu-util", "0.9"], "--gpu-util"),
    (["--mode", "infer", "--lora-rank", "8"], "--lora-rank"),
    (["--mode", "infer", "--reserve", "10GiB"], "--reserve"),
])
def test_each_idle_option_gets_one_warning(args, flag):
    with pytest.warns(UserWarning, match=f"^{flag} has no effect") as seen:
        result = run("memory", "--model", "llama-2-7b", *args, "--json")
    assert result.exit_code == 0
    assert sum(str(w.message).startswith(flag) for w in seen) == 1


@pytest.mark.parametrize("args", [
    ["--mode", "infer", "--engine", "hf", "--attention-impl", "eager"],
    ["--mode", "infer", "--dtype", "int4", "--group-size", "64", "--keep-16bit", "lm_head"],
    ["--finetune", "lora", "--lora-rank", "8", "--gpu", "h100", "--gpu-util", "0.9"],
    ["--tp", "2", "--gpus", "2", "--sp"],
])
def test_options_that_count_are_not_warned(args, recwarn):
    result = run("memory", "--model", "llama-2-7b", *args, "--json")
    assert result.exit_code == 0
    assert not [w for w in recwarn if "has no effect" in str(w.message)]


def test_the_comparison_sees_a_change():
    """The check above would pass vacuously if _answer missed a change: a read setting must move it."""
    m, g = load_model("llama-2-7b"), load_gpu("h100")
    base = dict(mode="infer", engine="hf", seq=2048)
    assert _answer(memory_breakdown(m, g, MemorySettings(**base))) != \
        _answer(memory_breakdown(m, g, MemorySettings(**base, attention_impl="eager")))
