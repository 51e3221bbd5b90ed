"""memory/memo.py: the parts of an estimate memoized across a sweep's points never read the
settings they ignore, and an estimate is the same whether its parts come from the memo or not."""

from __future__ import annotations

import sys

import pytest

from llmcalc.memory import MemorySettings, memory_breakdown, memo
from llmcalc.memory.usage import unread
from llmcalc.presets import load_gpu, load_model
from llmcalc.spec import Parallelism, SpecError

CASES = [  # (model, gpu, settings): training and inference, the frameworks, layouts and engines
    ("llama-3.1-8b", "h100", dict(mode="train")),
    ("llama-3.1-8b", None, dict(mode="train", finetune="lora", framework="litgpt")),
    ("llama-2-7b", "h100", dict(mode="train", finetune="qlora", bitsandbytes="0.42.0", framework="litgpt")),
    ("llama-3.2-1b", "l40s", dict(mode="train", finetune="qlora", framework="peft")),
    ("llama-3.1-8b", "h100", dict(mode="train", dtype="fp32", finetune="lora", recompute="full")),
    ("gpt2", "h100", dict(mode="train", attention_impl="eager", mini_seq=4, framework="litgpt")),
    ("mixtral-8x7b", "h100", dict(mode="train", zero=3, parallel=Parallelism.resolve(16, tp=2, pp=2, ep=2))),
    ("deepseek-v3", "h100", dict(mode="train", recompute="selective", compile=True,
                                 parallel=Parallelism.resolve(64, tp=8, pp=8))),
    ("llama-3.1-8b", "h100", dict(mode="train", framework="unsloth", finetune="lora", loss="fused")),
    ("llama-3.1-8b", "h100", dict(mode="train", zero=2, offload=("optimizer",), framework="deepspeed",
                                  parallel=Parallelism.resolve(4))),
    ("llama-3.1-8b", "h100", dict(mode="train", framework="torchtune", optimizer_in_backward=True)),
    ("llama-3.1-8b", "h100", dict(mode="infer")),
    ("gemma-2-9b", "a100-80gb", dict(mode="infer", engine_version="0.10.2", dtype="int4", keep_16bit=("lm_head",))),
    ("deepseek-v3", "h200", dict(mode="infer", engine_version="0.6.4", parallel=Parallelism.resolve(16, pp=2, mode="infer"))),
    ("llama-3.1-8b", "h100", dict(mode="infer", engine="sglang")),
    ("llama-3.1-8b", "h100", dict(mode="infer", engine="trtllm", parallel=Parallelism.resolve(2, cp=2, mode="infer"))),
    ("llama-3.1-8b", "h100", dict(mode="infer", engine="hf", attention_impl="eager")),
    ("llama-3.1-8b", None, dict(mode="infer", engine="llamacpp", dtype="q4_k_m")),
]
POINTS = [(1024, 1), (1024, 7), (4096, 3), (8192, 1), (4096, 16)]  # (seq, batch): the sweep's points


def _clear() -> None:
    for part, _ in memo.PARTS:
        part.cache_clear()


def _answer(b) -> dict:
    return b.to_dict() | {"units": b.summary.quantities(), "shares": [b.share(r) for r in b.rows]}


class _Refusing:
    """Settings that refuse to be read for ``free``: what a part memoized ignoring them gets."""

    def __init__(self, s: MemorySettings, free: tuple[str, ...]) -> None:
        self._s, self._free = s, free

    def __getattr__(self, name: str):
        if name in self._free:
            raise AssertionError(f"a part memoized ignoring {name} read it")
        return getattr(self._s, name)


@pytest.mark.parametrize("model, gpu, kwargs", CASES)
def test_no_memoized_part_reads_what_it_ignores(monkeypatch, model, gpu, kwargs):
    m, g = load_model(model), load_gpu(gpu) if gpu else None
    for part, free in memo.PARTS:  # each call computes the part afresh, on settings refusing its free fields
        raw = part.__wrapped__
        monkeypatch.setattr(sys.modules[part.__module__], part.__name__,
                            lambda m, s, *args, raw=raw, free=free: raw(m, _Refusing(s, free), *args))
    for seq, batch in POINTS:
        settings = MemorySettings(seq=seq, batch=batch, **kwargs)
        memory_breakdown(m, g, settings)
        unread(m, g, settings)


@pytest.mark.parametrize("model, gpu, kwargs", CASES)
def test_a_sweep_gives_each_point_its_own_answer(model, gpu, kwargs):
    """The points in sweep order, the memo kept from one to the next, against each point computed afresh."""
    m, g = load_model(model), load_gpu(gpu) if gpu else None
    _clear()
    swept = [_answer(memory_breakdown(m, g, MemorySettings(seq=seq, batch=batch, **kwargs))) for seq, batch in POINTS]
    for (seq, batch), answer in zip(POINTS, swept):
        _clear()
        assert answer == _answer(memory_breakdown(m, g, MemorySettings(seq=seq, batch=batch, **kwargs))), (seq, batch)


def test_every_memoized_part_is_checked():
    """Each part is reached by some case above: a part no case calls would go unchecked."""
    _clear()
    for model, gpu, kwargs in CASES:
        m, g, settings = load_model(model), load_gpu(gpu) if gpu else None, MemorySettings(**kwargs)
        memory_breakdown(m, g, settings)
        unread(m, g, settings)
    assert [part.__name__ for part, _ in memo.PARTS if not part.cache_size()] == []


@pytest.mark.parametrize("model, gpu, kwargs", CASES)
def test_settings_at_another_seq_and_batch_are_what_the_constructor_builds(model, gpu, kwargs):
    """MemorySettings.at, each point of a sweep from one resolved settings: the same fields, or the same error."""
    base = MemorySettings(**kwargs)
    for seq, batch in POINTS + [(1, 1), (2, 3), (0, 1), (1, 0), (-5, 0), (8, True), (2.0, 1), (1, "2")]:
        try:
            expected = MemorySettings(seq=seq, batch=batch, **kwargs)
        except SpecError as refused:
            with pytest.raises(SpecError) as seen:
                base.at(seq, batch)
            assert str(seen.value) == str(refused), (seq, batch)
            continue
        assert vars(base.at(seq, batch)) == vars(expected), (seq, batch)
