from __future__ import annotations

import pytest

from llmcalc.units import (UnitError, fmt_bytes, fmt_seconds, fmt_value, parse_batch_tokens, parse_bytes, parse_count,
                           parse_length, parse_seconds)


@pytest.mark.parametrize("text,expected", [("8k", 8192), ("128k", 131072), ("4000", 4000), ("1M", 2**20)])
def test_lengths_are_binary(text, expected):
    assert parse_length(text) == expected


@pytest.mark.parametrize("text,expected", [("15T", 15e12), ("6.4M", 6.4e6), ("300e9", 3e11), ("2B", 2e9)])
def test_counts_are_decimal(text, expected):
    assert parse_count(text) == expected


# Llama 2's "4M tokens" a step is 1024 sequences of 4096 = 2**22 (its Table 1); Llama 3 405B's 16M at 8k, 2048 x 8192
@pytest.mark.parametrize("text,expected", [("4M", 1024 * 4096), ("16M", 2048 * 8192), ("1024k", 2**20),
                                           ("4e6", 4_000_000), (2**22, 2**22)])
def test_a_steps_tokens_are_binary_as_lengths_are(text, expected):
    assert parse_batch_tokens(text) == expected


@pytest.mark.parametrize("bad", ["0.5", "4q", "0", float("nan"), float("inf"), -4096, 4194304.5])
def test_a_steps_tokens_must_be_whole(bad):
    with pytest.raises(UnitError, match="step's tokens"):
        parse_batch_tokens(bad)


@pytest.mark.parametrize("text,expected", [("80GB", 80 * 10**9), ("80GiB", 80 * 2**30), ("512MiB", 2**29), ("1024", 1024)])
def test_bytes_exactly_as_written(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text,expected", [("650ms", 0.65), ("0.755", 0.755), ("2h", 7200), ("3d", 259200)])
def test_seconds(text, expected):
    assert parse_seconds(text) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["8q", "", "k", "0.5"])
def test_bad_lengths_name_the_problem(bad):
    with pytest.raises(UnitError, match="token length"):
        parse_length(bad)


def test_display():
    assert fmt_bytes(80 * 2**30) == "80.0 GiB"
    assert fmt_seconds(298_889) == "3.46 days"
    assert fmt_seconds(0.65) == "650 ms"
    assert fmt_value(5_068_673.6, "count") == "5,068,674"  # GPU-hours: every digit, no exponent
    assert fmt_value(5.91611, "count") == "5.91611"


def test_a_file_named_like_a_count_is_a_file(tmp_path, monkeypatch):
    """`--gpu 2xg.yaml` names a GPU file when one exists there; otherwise it is two GPUs of preset g.yaml."""
    from llmcalc.units import counted

    monkeypatch.chdir(tmp_path)
    assert counted("2xg.yaml") == (2, "g.yaml") and counted("8xh100") == (8, "h100") and counted("h100") == (None, "h100")
    (tmp_path / "2xg.yaml").write_text("g:\n  memory_gib: 80\n  memory_bandwidth_tb_s: 3\n  tflops: {bf16: 900}\n")
    assert counted("2xg.yaml") == (None, "2xg.yaml")


@pytest.mark.parametrize("seq", [0, -5, "0"])
def test_an_empty_or_negative_length_is_refused_however_given(seq):
    with pytest.raises(UnitError):
        parse_length(seq)


@pytest.mark.parametrize("n, text", [(2e12, "2T"), (1.5e13, "15T"), (3e11, "300B"), (6.4e6, "6.4M"), (0.3, "0.3"),
                                     (1e15, "1P")])
def test_a_large_count_is_written_as_it_is_typed(n, text):
    from llmcalc.units import fmt_decimal, parse_count

    assert fmt_decimal(n) == text and parse_count(text) == pytest.approx(n)
