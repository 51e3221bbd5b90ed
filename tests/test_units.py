from __future__ import annotations

import pytest

from llmcalc.units import (UnitError, fmt_bytes, fmt_seconds, parse_bytes, parse_count,
                           parse_length, parse_seconds)


@pytest.mark.parametrize("text,expected", [("8k", 8192), ("128k", 131072), ("4000", 4000), ("1M", 2**20)])
def test_lengths_are_binary(text, expected):
    assert parse_length(text) == expected


@pytest.mark.parametrize("text,expected", [("15T", 15e12), ("6.4M", 6.4e6), ("300e9", 3e11), ("2B", 2e9)])
def test_counts_are_decimal(text, expected):
    assert parse_count(text) == expected


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
