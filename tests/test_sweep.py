"""--sweep NAME=VALUES: one row per value, the same numbers as one run at that value, in every format."""

from __future__ import annotations

import csv
import io
import json

import pytest

from .conftest import run, run_json
from .test_hostile import _fails_cleanly


def test_each_row_is_the_single_run_at_that_value():
    data = run_json("memory", "--model", "llama-3.1-8b", "--gpu", "h100", "--mode", "infer", "--sweep", "seq=1k..8k")
    assert data["command"] == "memory" and data["sweep"] == "seq"
    assert [row["seq"] for row in data["rows"]] == [1024, 2048, 4096, 8192]  # doubling, in tokens
    for row in data["rows"]:
        one = run_json("memory", "--model", "llama-3.1-8b", "--gpu", "h100", "--mode", "infer", "--seq", str(row["seq"]))
        assert row["total"] == one["summary"]["total"] and row["max_concurrency"] == one["summary"]["max_concurrency"]
        assert row["kv_cache"] == next(r["value"] for r in one["rows"] if r["name"] == "kv_cache")


def test_a_range_ends_at_its_upper_bound_and_lists_are_taken_as_given():
    rows = run_json("flops", "--model", "gpt2", "--sweep", "batch=1..12")["rows"]
    assert [r["batch"] for r in rows] == [1, 2, 4, 8, 12]
    assert rows[4]["total"] == 12 * rows[0]["total"]  # FLOPs per step scale with the batch
    gpus = run_json("memory", "--model", "gpt2", "--sweep", "gpu=h100,l40s")["rows"]
    assert [r["gpu"] for r in gpus] == ["h100", "l40s"] and gpus[0]["headroom"] > gpus[1]["headroom"]


def test_csv_and_table_carry_the_same_rows():
    args = ["params", "--model", "gpt2", "--sweep", "dtype=bf16,fp8,int4"]
    rows = list(csv.DictReader(io.StringIO(run(*args, "--csv").stdout)))
    assert [r["dtype"] for r in rows] == ["bf16", "fp8", "int4"]
    assert int(rows[0]["weight_bytes"]) == 2 * 124_439_808  # bf16: 2 B per parameter
    table = run(*args).stdout
    assert "params over dtype: gpt2" in table and "237 MiB" in table


def test_comparisons_label_each_row():
    rows = run_json("memory", "--model", "gpt2,llama-2-7b", "--sweep", "batch=1,2")["rows"]
    assert [(r["batch"], r["model"]) for r in rows] == [(1, "gpt2"), (1, "llama-2-7b"), (2, "gpt2"), (2, "llama-2-7b")]


def test_check_fails_when_any_point_fails():
    result = run("max-seq", "--model", "llama-3.2-1b", "--gpu", "l40s", "--sweep", "mini_seq=1,8", "--min", "20k", "--check")
    assert result.exit_code == 1 and "29,304 tok" in result.stdout


@pytest.mark.parametrize("spec, says", [
    ("seq", "give NAME=VALUES"),
    ("nonsense=1,2", "give NAME=VALUES"),
    ("json=1", "give NAME=VALUES"),
    ("batch=0..4", "starts at 1"),
    ("batch=8..2", "runs backwards"),
    ("batch=a..b", "not a whole number"),
    ("batch=x,y", "not a valid int"),
    ("seq=1..1e30", "too large"),
    ("batch=" + ",".join(["1"] * 10_001), "at most 10,000"),
    ("seq=1k,0", "--sweep seq=0: '0' must be more than zero"),
])
def test_bad_sweeps_fail_in_one_line(spec, says):
    _fails_cleanly(run("memory", "--model", "gpt2", "--sweep", spec), says)


def test_an_option_the_sweep_replaces_is_said_to_change_nothing():
    from llmcalc.cli.common import UnusedOption

    with pytest.warns(UnusedOption, match="--seq has no effect beside --sweep seq=..., whose values replace it"):
        points = run_json("memory", "--model", "gpt2", "--sweep", "seq=512,1k", "--seq", "4k")
    assert [p["seq"] for p in points["rows"]] == [512, 1024]


def test_every_command_sweeps():
    for args in (["flops", "--model", "gpt2", "--sweep", "batch=1,2"],
                 ["mfu", "--model", "gpt2", "--gpu", "h100", "--step-time", "1", "--sweep", "batch=1,2"],
                 ["latency", "--model", "gpt2", "--gpu", "h100", "--sweep", "batch=1,2"],
                 ["max-seq", "--model", "gpt2", "--gpu", "h100", "--sweep", "batch=1,2"]):
        data = json.loads(run(*args, "--json").stdout)
        assert [r["batch"] for r in data["rows"]] == [1, 2], args


@pytest.mark.parametrize("args, name, points", [
    (["memory", "--model", "llama-3.1-8b", "--gpu", "h100"], "batch", ["1", "3", "64"]),
    (["memory", "--model", "llama-3.1-8b", "--gpu", "h100", "--mode", "infer", "--engine", "sglang"], "batch", ["1", "9"]),
    (["memory", "--model", "mixtral-8x7b", "--gpu", "h100", "--finetune", "qlora", "--framework", "litgpt"],
     "seq", ["1k", "3000", "8k"]),
    (["max-batch", "--model", "llama-3.1-8b", "--gpu", "h100"], "seq", ["1k", "5000", "32k"]),
    (["max-seq", "--model", "llama-3.2-1b", "--gpu", "l40s"], "batch", ["1", "5"]),
    (["latency", "--model", "llama-3.1-8b", "--gpu", "h100", "--gpus", "2"], "batch", ["1", "17", "256"]),
    (["flops", "--model", "gpt2", "--tokens", "1T", "--gpu", "h100"], "seq", ["1k", "1500"]),
    (["mfu", "--model", "gpt2", "--gpu", "h100", "--step-time", "100"], "batch", ["1", "2"]),
])
def test_every_column_of_every_row_is_the_single_run(args, name, points):
    """All of a row, each point in sweep order, against a run of its own (what is shared between points
    in one sweep must not leak from one point into the next)."""
    rows = run_json(*args, "--sweep", f"{name}=" + ",".join(points))["rows"]
    assert len(rows) == len(points)
    for typed, row in zip(points, rows):
        one = run_json(*args, f"--{name.replace('_', '-')}", typed)
        named = {r["name"]: r["value"] for r in one["rows"]}
        expected = {key: one["summary"][key] if key in one["summary"] else named[key] for key in row if key != name}
        assert row == {name: row[name], **expected}, typed


def test_calling_the_command_directly_answers_as_typer_would(monkeypatch):
    """The sweep converts the options once and calls the command itself (typer's wrapper would convert them
    at every point); through the wrapper, as where typer is not laid out as expected, the rows are the same."""
    from llmcalc.cli import sweep

    args = ["memory", "--model", "gpt2", "--gpu", "h100", "--mode", "infer", "--engine", "sglang",
            "--attention-impl", "flash", "--sweep", "batch=1,4"]
    direct = run(*args, "--json")
    monkeypatch.setattr(sweep, "_converted", lambda callback: (callback, lambda name, value: value))
    wrapped = run(*args, "--json")
    assert (wrapped.stdout, wrapped.stderr) == (direct.stdout, direct.stderr) and direct.exit_code == 0


def test_a_command_line_resolves_its_settings_afresh():
    """A sweep resolves the memory settings once; another command line (in this process too) resolves them
    again, with the warnings that brings."""
    for _ in range(2):
        with pytest.warns(UserWarning, match="newer than the vllm releases"):
            result = run("memory", "--model", "gpt2", "--mode", "infer", "--engine-version", "0.99", "--sweep",
                         "batch=1,2", "--json")
        assert result.exit_code == 0


def test_a_failed_check_names_the_point_it_failed_at():
    out = run("memory", "--model", "llama-3-70b", "--gpu", "h100", "--sweep", "seq=2k..4k", "--check")
    assert out.exit_code == 1
    assert [line.split(":")[0] for line in out.stderr.splitlines() if line.startswith("check failed")] == \
        ["check failed at seq=2048", "check failed at seq=4096"]
    out = run("plan", "--model", "llama-3-8b", "--gpu", "h100", "--sweep", "gpus=8,16", "--check",
              "--min-mfu", "0.9")
    assert out.exit_code == 1 and "check failed at gpus=16: llama-3-8b: the fastest layout's MFU" in out.stderr


def test_the_columns_keep_their_order_when_the_first_point_does_not_fit():
    with pytest.warns(UserWarning, match="no layout fits 8 x h100-sxm"):  # a CSV row cannot say why: stderr does
        out = run("plan", "--model", "mixtral-8x7b", "--gpu", "h100", "--sweep", "gpus=8..16", "--csv")
    assert out.stdout.splitlines()[0].split(",") == ["gpus", "layout", "step_time", "mfu", "memory", "found"]


def test_a_latency_sweep_answers_every_point_and_says_which_are_overloaded():
    """Sweeping the GPU count: 70B in bf16 leaves no room for a KV cache on one H100, a point that does not fit (not
    an error that ends the sweep); 2 requests/s overload two H100s (infeasible, whatever the replay's times), four
    serve them."""
    data = run_json("latency", "--model", "llama-3.1-70b", "--gpu", "h100", "--prompt", "2k", "--output", "256",
                    "--request-rate", "2", "--sweep", "gpus=1,2,4")
    rows = {row["gpus"]: row for row in data["rows"]}
    assert rows[1]["feasible"] is False and rows[1].get("overloaded") is None
    assert rows[2]["overloaded"] is True and rows[2]["feasible"] is False
    assert rows[4]["overloaded"] is False and rows[4]["feasible"] is True


def test_a_latency_sweep_with_a_target_says_which_points_meet_it():
    """70B fp8 on 2 H100s, 2k in / 256 out: 40 clients keep the expected TPOT at 49.9 ms, 41 at 50.7 ms. Both are
    feasible (50 ms is above the bound); only the first meets the target, as --check and serve-plan judge it."""
    data = run_json("latency", "--model", "llama-3.1-70b", "--gpu", "2xh100", "--dtype", "fp8", "--prompt", "2k",
                    "--output", "256", "--tpot-target", "50ms", "--sweep", "concurrency=40,41")
    rows = {row["concurrency"]: row for row in data["rows"]}
    assert rows[40]["feasible"] and rows[41]["feasible"]
    assert rows[40]["meets"] is True and rows[41]["meets"] is False
