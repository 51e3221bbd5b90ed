"""Hostile and mistaken input: every file and option a user can hand llmcalc ends in a one-line error with
exit code 2 (or a result), never a traceback or a hang; nothing is written outside the directory named.
The files are built here, not shipped. The fuzz tests are derandomized (the same examples every run);
explore with `pytest tests/test_hostile.py -k fuzzed --hypothesis-seed=N`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import run, run_json

GOOD_CONFIG = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "vocab_size": 100, "intermediate_size": 128, "max_position_embeddings": 256}


def _fails_cleanly(result, says: str = "") -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line and not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert says in lines[0], lines[0]


def _bomb(levels: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        lines.append(f"{chr(97 + i)}: &{chr(97 + i)} [" + ",".join([f"*{chr(96 + i)}"] * 9) + "]")
    return "\n".join(lines) + f"\nhidden_size: *{chr(97 + levels)}\n"


@pytest.mark.parametrize("name, content, says", [
    ("latin1.yaml", "notes: caf\xe9\nhidden_size: 64\n".encode("latin-1"), "not UTF-8"),
    ("utf16.yaml", "hidden_size: 64\n".encode("utf-16"), "UTF-16"),
    ("dup.yaml", b"hidden_size: 64\nhidden_size: 128\n", "appears twice"),
    ("bomb.yaml", _bomb().encode(), "YAML aliases"),
    ("list.yaml", b"- 1\n- 2\n", "mapping"),
    ("entry.yaml", b"m1: 5\n", "mapping of fields"),
    ("deep.json", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("nan.json", json.dumps({**GOOD_CONFIG, "hidden_size": "x"}).replace('"x"', "NaN").encode(), "NaN"),
    ("huge.json", json.dumps({**GOOD_CONFIG, "hidden_size": 10**400}).encode(), "hidden_size is a 401-digit number"),
    ("huge_dropout.yaml", b"dropout: 1" + b"0" * 400 + b"\n", "dropout is a 401-digit number"),
    ("dup.json", b'{"hidden_size": 64, "hidden_size": 1}', "appears twice"),
    ("inf.json", json.dumps(GOOD_CONFIG).replace('"hidden_size": 64', '"hidden_size": 1e400').encode(), "hidden_size"),
    ("bad.json", b'{"model_type": "llama",\n "hidden_size": }', "bad.json:2: malformed JSON"),
])
def test_hostile_model_files(tmp_path, name, content, says):
    path = tmp_path / name
    path.write_bytes(content)
    ref = f"{path}:m1" if name == "entry.yaml" else str(path)
    _fails_cleanly(run("params", "--model", ref), says)


def test_oversized_file_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"x: " + b"1" * (5 * 2**20) + b"\n")
    _fails_cleanly(run("params", "--model", str(path)), "too large")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_never_opened(tmp_path):
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    _fails_cleanly(run("params", "--model", str(fifo)), "not a regular file")


@pytest.mark.parametrize("text", ["x" * 300, "a/" + "b" * 300, "bad\nname", "nul\0byte"])
def test_odd_model_names_fail_on_one_line(text):
    result = run("params", "--model", text)
    _fails_cleanly(result)


def test_user_preset_with_bad_aliases(tmp_path, monkeypatch):
    models = tmp_path / "config" / "llmcalc" / "presets" / "models"
    models.mkdir(parents=True)
    (models / "mine.yaml").write_text("m1:\n  aliases: 5\n  hidden_size: 64\n")
    _fails_cleanly(run("params", "--model", "llama-2-7b"), "aliases must be a list")


def test_gpu_file_that_drives_a_number_to_infinity(tmp_path):
    gpu = tmp_path / "tiny.yaml"
    gpu.write_text("g1:\n  memory_gib: 80\n  memory_bandwidth_tb_s: 3\n  tflops: {bf16: 1.0e-300}\n")
    _fails_cleanly(run("flops", "--model", "llama-2-7b", "--gpu", str(gpu), "--tokens", "1e12", "--json"),
                   "train_time")


@pytest.mark.parametrize("name", ["../../evil", "", ".", "..", "a/b", ".hidden", "x" * 101, "-x", "--json"])
def test_import_names_stay_inside_the_preset_directory(tmp_path, name):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(GOOD_CONFIG))
    _fails_cleanly(run("presets", "import", str(config), f"--name={name}"), "is empty" if not name else "preset name")
    assert not (tmp_path / "evil.yaml").exists() and not list((tmp_path / "config").rglob("*.yaml"))


def test_import_out_must_be_a_writable_file(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(GOOD_CONFIG))
    (tmp_path / "afile").write_text("")
    _fails_cleanly(run("presets", "import", str(config), "--name", "ok", "--out", str(tmp_path)), "is a directory")
    _fails_cleanly(run("presets", "import", str(config), "--name", "ok", "--out", str(tmp_path / "afile" / "x.yaml")),
                   "cannot write")


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmcalc", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


def test_process_edges():
    """A closed pipe ends quietly with 0; an ASCII-only stdout gets ASCII borders; bare llmcalc shows help."""
    piped = subprocess.run(f"{sys.executable} -m llmcalc presets | head -1", shell=True, capture_output=True,
                           text=True, timeout=60)
    assert piped.returncode == 0 and "Traceback" not in piped.stderr
    status = subprocess.run([sys.executable, "-c", "import subprocess, sys; p = subprocess.Popen([sys.executable, "
                             "'-m', 'llmcalc', 'presets'], stdout=subprocess.PIPE); p.stdout.close(); "
                             "sys.exit(p.wait())"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "Traceback" not in status.stderr
    ascii_out = _cli("params", "--model", "llama-2-7b", PYTHONIOENCODING="ascii")
    assert ascii_out.returncode == 0 and "|" in ascii_out.stdout and "Traceback" not in ascii_out.stderr
    bare = _cli()
    assert bare.returncode == 0 and "Usage" in bare.stdout


COMMANDS = ["params", "flops", "memory", "max-seq", "max-batch", "latency", "mfu"]
FLAGS = ["--seq", "--batch", "--gpus", "--tp", "--pp", "--dtype", "--gpu", "--tokens", "--lora-rank", "--zero",
         "--reserve", "--gpu-memory", "--step-time", "--tokens-per-s", "--grad-accum", "--compile", "--framework",
         "--finetune", "--mode", "--recompute", "--optimizer", "--bitsandbytes", "--offload", "--json", "--csv"]
VALUES = st.one_of(st.sampled_from(["0", "-1", "1", "8", "4k", "1e400", "nan", "inf", "", "abc", "h100", "fp4",
                                    "lora", "infer", "full", "80GB", "650ms", "0.0001", "9" * 30, "litgpt"]),
                   st.text(max_size=8))


@settings(max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(COMMANDS), model=st.sampled_from(["llama-2-7b", "mixtral-8x7b", "gpt2", "nope", ""]),
       options=st.lists(st.tuples(st.sampled_from(FLAGS), VALUES), max_size=4))
def test_fuzzed_command_lines_never_trace_back(command, model, options):
    args = [command, "--model", model]
    for flag, value in options:
        args += [flag] if flag in ("--compile", "--json", "--csv") else [flag, value]
    result = run(*args)
    assert result.exit_code in (0, 1, 2), (args, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    if result.exit_code == 2:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
        assert len(errors) == 1 and "Traceback" not in result.stderr, (args, result.stderr)
    elif "--json" in args and "--csv" not in args:
        json.loads(result.stdout, parse_constant=lambda token: pytest.fail(f"{token} in JSON: {args}"))


@pytest.mark.parametrize("args, says", [
    (["memory", "--model", "llama-2-7b", "--seq", ""], "--seq is empty"),
    (["memory", "--model", "llama-2-7b", "--gpu-memory="], "--gpu-memory is empty"),
    (["flops", "--model", "llama-2-7b", "--gpu", "h100", "--tokens", "0"], "more than zero"),
    (["latency", "--model", "llama-2-7b", "--gpu", "h100", "--ttft-target", "0"], "more than zero"),
    (["memory", "--model", "llama-2-7b", "--finetune", "lora", "--lora-targets", ",,,"], "names no linear"),
    (["mfu", "--model", "llama-2-7b", "--gpu", "h100", "--step-time", "1e-9", "--seq", "4096"], "MFU comes out"),
])
def test_silent_nonsense_is_refused(args, says):
    _fails_cleanly(run(*args), says)


def test_gpu_peak_must_be_a_number(tmp_path):
    gpu = tmp_path / "g.yaml"
    gpu.write_text("g1:\n  memory_gib: 80\n  memory_bandwidth_tb_s: 3\n  tflops: {bf16: true}\n")
    _fails_cleanly(run("flops", "--model", "llama-2-7b", "--gpu", str(gpu), "--tokens", "1T"), "tflops.bf16 must be a positive number")


@pytest.mark.parametrize("args, says", [
    (["memory", "--model", "llama-2-7b", "--seq", "500000"], "longer than llama-2-7b's 4,096-token context"),
    (["memory", "--model", "llama-2-7b", "--lora-rank", "8"], "--lora-rank has no effect"),
    (["memory", "--model", "llama-2-7b", "--kv-dtype", "fp8"], "--kv-dtype has no effect in training"),
    (["memory", "--model", "llama-2-7b", "--mode", "infer", "--optimizer", "sgd"], "--optimizer has no effect"),
    (["mfu", "--model", "llama-2-7b", "--gpu", "h100", "--tokens-per-s", "1000", "--batch", "4"], "--batch has no effect"),
    (["max-batch", "--model", "llama-2-7b", "--gpu", "h100", "--prompt", "1000", "--seq", "2000"], "--prompt has no"),
    (["flops", "--model", "llama-2-7b", "--gpus", "8"], "--gpus has no effect"),
])
def test_warnings_are_one_line_and_the_result_stands(args, says):
    with pytest.warns(UserWarning, match=says):
        result = run(*args)
    assert result.exit_code == 0


@pytest.mark.parametrize("source, key, value, says", [
    ("qwen1.5-moe-a2.7b.json", "decoder_sparse_step", 0, "at least 1"),
    ("qwen1.5-moe-a2.7b.json", "mlp_only_layers", 5, "list of layer numbers"),
    ("deepseek-v2-lite.json", "moe_layer_freq", 0, "at least 1"),
    ("deepseek-v2-lite.json", "num_hidden_layers", 10**16, "plausible"),
    ("gemma-2-2b.json", "num_attention_heads", 0, "positive"),
])
def test_config_fields_that_would_divide_by_zero_or_loop_forever(tmp_path, source, key, value, says):
    from pathlib import Path

    config = json.loads((Path(__file__).parent / "data" / "hf" / source).read_text())
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**config, key: value}))
    _fails_cleanly(run("params", "--model", str(path)), says)


FIELD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**70), st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=6), st.lists(st.integers(-2, 40), max_size=3), st.just({}))
CONFIG_KEYS = sorted(GOOD_CONFIG) + ["num_key_value_heads", "head_dim", "model_type", "tie_word_embeddings",
                                     "num_local_experts", "num_experts_per_tok", "sliding_window", "rope_scaling",
                                     "decoder_sparse_step", "mlp_only_layers", "hidden_act", "quantization_config"]


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(CONFIG_KEYS), FIELD_VALUES, max_size=3),
       command=st.sampled_from(["params", "memory", "flops"]))
def test_fuzzed_configs_never_trace_back(tmp_path, changes, command):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**GOOD_CONFIG, **changes}))
    result = run(command, "--model", str(path), "--json", "--seq", "128")
    assert result.exit_code in (0, 1, 2), (changes, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (changes, repr(result.exception))
    if result.exit_code == 2:
        assert len([line for line in result.stderr.splitlines() if line.startswith("error")]) == 1, result.stderr
    else:
        json.loads(result.stdout, parse_constant=lambda token: pytest.fail(f"{token} in JSON: {changes}"))


def test_max_batch_never_answers_with_its_search_cap():
    """A petabyte of memory: the answer is memory's own limit, whole digits, never the search bound."""
    from llmcalc.limits import BATCH_SEARCH_CAP, SEARCH_CAP

    data = run_json("max-batch", "--model", "llama-2-7b", "--gpu", "h100", "--gpu-memory", "1e15B", "--seq", "1")
    best = data["summary"]["memory_max_batch"]
    assert best not in (SEARCH_CAP, BATCH_SEARCH_CAP) and best > 10**8
    assert data["summary"]["limited_by_memory"] is True
    # the engine runs at most max_num_seqs (vLLM's 256) of them at once, however many fit
    assert data["summary"]["max_batch"] == 256 and data["summary"]["limited_by"] == "max_num_seqs"
    # each one-token request holds a whole 16-token block: K and V of 32 layers x 4096 x 2 B = 512 KiB per token,
    # 8 MiB a block (vLLM V0 prints pool tokens / max_model_len, 16 times as many, as its concurrency)
    assert best == pytest.approx(0.9e15 / (16 * 2 * 32 * 4096 * 2), rel=0.01)
    assert data["summary"]["max_concurrency"] == pytest.approx(16 * best, rel=0.01)
    table = run("max-batch", "--model", "llama-2-7b", "--gpu", "h100", "--gpu-memory", "1e15B", "--seq", "1").stdout
    assert f"{best:,}" in table and "e+" not in table


def test_directories_from_the_environment_that_cannot_be_used(tmp_path, monkeypatch):
    """A preset directory that is a file, or a named one that is missing, is skipped with a warning;
    a Hugging Face cache that is a file is a one-line error; with no home at all, presets still load."""
    afile = tmp_path / "afile"
    afile.write_text("")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(afile))
    with pytest.warns(UserWarning, match="afile/llmcalc/presets: it is not a directory"):
        assert run("params", "--model", "llama-2-7b").exit_code == 0
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("LLMCALC_PRESETS", str(tmp_path / "missing"))
    with pytest.warns(UserWarning, match=r"missing \(from \$LLMCALC_PRESETS\): it does not exist"):
        assert run("presets").exit_code == 0
    monkeypatch.setenv("HF_HUB_CACHE", str(afile))
    _fails_cleanly(run("params", "--model", "org/model"), "is not a directory")


def test_no_home_directory(monkeypatch):
    """HOME unset and no password entry: Path.home() raises; built-ins still load, the rest says why."""
    from pathlib import Path

    from llmcalc import presets

    def nowhere(cls=None):
        raise RuntimeError("Could not determine home directory.")

    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(Path, "home", classmethod(nowhere))
    presets.catalog.cache_clear()
    assert run("params", "--model", "llama-2-7b").exit_code == 0
    _fails_cleanly(run("params", "--model", "org/model"), "HOME is unset")
    _fails_cleanly(run("presets", "import", "org/model", "--name", "x"), "HOME is unset")


def test_an_error_is_the_only_line_and_shows_control_characters_escaped():
    """The run's warnings are dropped when it fails, and user text cannot split or repaint the line."""
    bad = _cli("memory", "--model", "llama-2-7b", "--lora-rank", "8", "--seq", "0")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error:")
    odd = _cli("params", "--model", "a\nb\x1b[31mc")
    assert odd.returncode == 2 and odd.stderr.count("\n") == 1 and "\x1b" not in odd.stderr
    assert "a\\nb\\x1b[31mc" in odd.stderr
    warned = _cli("memory", "--model", "llama-2-7b", "--lora-rank", "8", "--json")
    assert warned.returncode == 0 and warned.stderr.startswith("warning: --lora-rank has no effect")
    json.loads(warned.stdout)
