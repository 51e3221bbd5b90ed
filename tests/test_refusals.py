"""What is refused (one `error:` line, exit 2) and what is warned about, class by class.

Each case stands for a class a hostile-input battery found (numbers beyond any size, malformed
quantization configs, regexes that backtrack, engine releases that never existed, combinations an
engine does not offer, files an import would clobber); the mechanism is tested, not the example.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import run, run_json
from .test_hostile import GOOD_CONFIG, _fails_cleanly

HUGE = "1" + "0" * 400


@pytest.mark.parametrize("args, says", [
    (["flops", "--model", "gpt2", "--batch", HUGE], "--batch is a 401-digit number"),
    (["mfu", "--model", "gpt2", "--gpu", "h100", "--step-time", "1", "--gpus", "10" + "0" * 16], "at most 10^15"),
    (["memory", "--model", "gpt2", "--gpu-util", "nan"], "--gpu-util is nan"),
    (["latency", "--model", "gpt2", "--gpu", "h100", "--efficiency", "inf"], "--efficiency is inf"),
    (["--model", "gpt2"], "No such option"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--engine-version", "-1"], "not a release number"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--engine-version", "1..2"], "not a release number"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--engine-version", "0.0.0"], "first release was 0.1"),
    (["memory", "--model", "llama-3-8b", "--finetune", "qlora", "--bitsandbytes", "\u00b2"], "release number"),
    (["memory", "--model", "llama-3-8b", "--finetune", "qlora", "--dtype", "int8"], "NF4"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--kv-dtype", "q4_k_m"], "vllm holds its KV cache in"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--cp", "2", "--gpus", "2"], "does not split"),
    (["memory", "--model", "llama-3-8b", "--cp", "4", "--gpus", "4", "--seq", "2"], "2-token sequence"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--dtype", "int4", "--keep-16bit", "re:("],
     "not a regular expression"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--dtype", "int4", "--keep-16bit", "re:(a*)*b"],
     "exponential time"),
    (["max-batch", "--model", "gpt2", "--gpu", "h100", "--prompt", "2147483647", "--output", "2147483647"],
     "more than 2,147,483,648"),
    (["flops", "--model", "gpt2", "--gpu", "h100", "--tokens", "1e30"], "at most 10^15"),
    (["memory", "--model", "gpt2", "--gpu-memory", "1e30"], "at most 10^15"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--engine", "llamacpp", "--dtype", "fp8"],
     "llamacpp does not hold weights in it"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--engine", "hf", "--dtype", "q4_k_m"],
     "hf does not hold weights in it"),
    (["memory", "--model", "llama-3-8b", "--finetune", "lora", "--dtype", "q4_k_m"], "llama.cpp inference format"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--dtype", "int4", "--keep-16bit",
      ",".join(f"model.layers.{i}" for i in range(65))], "at most 64"),
    (["memory", "--model", "deepseek-v3", "--gpu", "h100", "--finetune", "lora"],
     "LoRA targets q,v (--lora-targets, else the framework's default): deepseek-v3 has no linear 'q'"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--dtype", "tf32"],
     "--dtype tf32 (the KV cache's too, without --kv-dtype): vllm holds its KV cache in"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--engine", "hf", "--dtype", "fp8", "--kv-dtype", "fp8"],
     "--kv-dtype fp8: hf holds its KV cache in"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--engine", "trtllm", "--gpu", "mi300x"],
     "TensorRT-LLM runs on NVIDIA GPUs; mi300x is AMD's: --engine vllm, sglang or llamacpp"),
    (["latency", "--model", "llama-3-8b", "--engine", "trtllm", "--gpu", "tpu-v5e"], "TensorRT-LLM runs on NVIDIA GPUs"),
    (["memory", "--model", "gpt2", "--sweep", "batch=1,2", "--sweep=seq=128,256"], "--sweep is given twice"),
    (["latency", "--model", "gpt2", "--gpu", "h100", "--engine", "hf", "--concurrency", "1", "--batch", "4",
      "--prompt", "256"], "--batch is a batch arriving together; with --concurrency or --request-rate leave it at 1"),
    # fp8 weights below each engine's minimum compute capability (vLLM's Fp8Config, TensorRT-LLM's FP8, transformers')
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--dtype", "fp8", "--gpu", "v100"],
     "vLLM runs fp8 weights from compute capability 8.0; v100 is 7.0: --dtype int8 or int4"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--dtype", "fp8", "--gpu", "a100", "--engine", "trtllm"],
     "TensorRT-LLM runs fp8 weights from compute capability 8.9; a100-80gb is 8.0"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--dtype", "fp8", "--gpu", "a100", "--engine", "hf"],
     "(it would dequantize them to bf16 on load: --dtype bf16)"),
    (["memory", "--model", "gpt2", "--gpu-memory", "80"], "--gpu-memory is 80 bytes, under a mebibyte (a bare number "
                                                          "is bytes: 80 is 80 B); write the unit, 80GB or 80GiB"),
    # the TP an inference layout takes from --gpus is named as the user typed it, with the way to split otherwise
    (["memory", "--model", "llama-3-70b", "--gpu", "h100", "--gpus", "3", "--mode", "infer"],
     "TP 3 (--gpus 3 as one instance; --tp sets it) must divide the 64 attention heads"),
    (["memory", "--model", "llama-3-70b", "--gpu", "h100", "--gpus", "6", "--dp", "2", "--mode", "infer"],
     "TP 3 (--gpus 6 over pp x cp x dp = 2; --tp sets it) must divide the 64 attention heads"),
    (["latency", "--model", "llama-3-70b", "--gpu", "h100", "--gpus", "3"],
     "TP 3 (--gpus 3 as one instance; --tp sets it) must divide the 64 attention heads"),
    (["memory", "--model", "llama-3-70b", "--gpu", "h100", "--gpus", "3", "--tp", "3", "--mode", "infer"],
     "--tp 3 must divide the 64 attention heads"),
])
def test_refused_in_one_line(args, says):
    _fails_cleanly(run(*args), says)


@pytest.mark.parametrize("args, says", [
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--engine-version", "999"], "newer than the vllm releases"),
    (["memory", "--model", "llama-3-8b", "--mode", "infer", "--dtype", "int4", "--keep-16bit", "lm_haed"],
     "--keep-16bit lm_haed has no effect on llama-3-8b: it names no module"),
    (["flops", "--model", "gpt2", "--formula", "palm", "--attention", "causal"], "--attention has no effect"),
    (["mfu", "--model", "gpt2", "--gpu", "h100", "--step-time", "1", "--attention", "causal"], "--attention has no"),
    (["max-batch", "--model", "gpt2", "--gpu", "h100", "--output", "100"], "--output has no effect"),
    (["latency", "--model", "gpt2", "--gpu", "h100", "--prompt", "100000"], "longer than gpt2's 1,024-token"),
    (["max-batch", "--model", "gpt2", "--gpu", "h100", "--prompt", "100000"], "longer than gpt2's 1,024-token"),
    (["params", "--model", "llama-2-7b", "--generic"], "--generic has no effect"),
])
def test_warned_and_answered(args, says):
    with pytest.warns(UserWarning, match=says):
        assert run(*args).exit_code == 0


def _config(tmp_path, **changes) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**GOOD_CONFIG, **changes}))
    return str(path)


@pytest.mark.parametrize("changes, says", [
    ({"model_type": "mistral", "sliding_window": -5}, "sliding_window must be a positive number"),
    ({"model_type": "mistral", "sliding_window": "4096"}, "sliding_window must be a positive number"),
    ({"model_type": "gemma3_text", "sliding_window_pattern": 0}, "sliding_window_pattern must be at least 1"),
    ({"model_type": "mpt", "d_model": 64, "n_heads": 4, "n_layers": 2, "max_seq_len": 256,
      "attn_config": {"alibi": "false"}}, "alibi is true or false"),
    ({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": "x"}}, "group_size must be"),
    ({"quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": True}}, "group_size must be"),
    ({"quantization_config": {"quant_method": "gptq", "bits": 4, "dynamic": 5}}, "dynamic must map"),
    ({"quantization_config": {"quant_method": "gptq", "bits": 4, "dynamic": {"-:(": {}}}}, "not a regular expression"),
    ({"quantization_config": {"quant_method": "fp8", "weight_block_size": 128}}, "weight_block_size must be a list"),
    ({"quantization_config": {"quant_method": "fp8", "weight_block_size": [0, 0]}}, "weight_block_size must be"),
    ({"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {
        "num_bits": 4, "type": "int", "strategy": ["group"]}}}}}, "strategy"),
    ({"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {
        "num_bits": 8, "type": "float", "strategy": "block", "block_structure": "ab"}}}}}, "block_structure must be"),
])
def test_malformed_configs(tmp_path, changes, says):
    _fails_cleanly(run("params", "--model", _config(tmp_path, **changes)), says)


def test_a_yaml_node_that_contains_itself(tmp_path):
    """`a: &a [*a]` builds a list inside itself: refused, where a walk over it would never end;
    an alias shared by two keys (a YAML merge) is fine."""
    loop = tmp_path / "loop.yaml"
    loop.write_text("a: &a [*a]\n")
    _fails_cleanly(run("params", "--model", str(loop)), "contains itself")
    shared = tmp_path / "shared.yaml"
    shared.write_text("base: &b {hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, vocab_size: 100, "
                      "intermediate_size: 128, max_position_embeddings: 256, mlp_type: gated, norm_type: rmsnorm, "
                      "position_embedding: rotary, tie_word_embeddings: false, attention_bias: false, "
                      "attention_out_bias: false, mlp_bias: false}\nm1: *b\nm2: *b\n")
    assert run_json("params", "--model", f"{shared}:m2")["model"] == "m2"


def test_norms_per_layer_is_bounded(tmp_path):
    """Each norm is a saved tensor the activation model loops over: 10^15 of them would never finish."""
    model = tmp_path / "m.yaml"
    model.write_text("hidden_size: 64\nnum_hidden_layers: 2\nnum_attention_heads: 4\nvocab_size: 100\n"
                     "intermediate_size: 128\nmax_position_embeddings: 256\nnorms_per_layer: 10000000\n")
    _fails_cleanly(run("memory", "--model", str(model)), "norms_per_layer")


@pytest.mark.parametrize("extra, says", [
    ("device_memory_gib: 1000\n", "far more than the datasheet"),
    ("tdp_w: -1\n", "tdp_w cannot be negative"),
    ("host_gb_s: -5\n", "host_gb_s cannot be negative"),
    ("vendor: [1, 2]\n", "vendor must be text"),
    ("aliases: abc\n", "aliases must be a list"),
    ("compute_capability: 900\n", "compute_capability must be a CUDA compute capability"),
    ("compute_capability: nine\n", "compute_capability must be a number"),
    ("sm_count: 0\n", "sm_count must be a positive whole number"),
    ("sm_count: 13.5\n", "sm_count must be a positive whole number"),
])
def test_gpu_files_are_sane(tmp_path, extra, says):
    gpu = tmp_path / "g.yaml"
    gpu.write_text("memory_gib: 80\nmemory_bandwidth_tb_s: 3.35\ntflops: {bf16: 989}\n" + extra)
    _fails_cleanly(run("presets", "show", str(gpu)), says)


def test_keep_16bit_matches_in_one_pass():
    """The combined matcher keeps what the patterns name: Llama-2-7B's down_proj is h·i of each block's
    4h² + 3hi linear weights (h 4096, i 11008), every layer alike."""
    from llmcalc.presets import load_model
    from llmcalc.quant import kept_fraction

    m = load_model("llama-2-7b")
    h, i = 4096, 11008
    assert kept_fraction(m, ("re:.*down_proj",)) == pytest.approx(h * i / (4 * h * h + 3 * h * i))
    assert kept_fraction(m, ("model.layers.0",)) == pytest.approx(1 / 32)
    assert kept_fraction(m, ("mlp.gate",)) == 0  # a router, which a dense model has not


def test_only_names_that_match_nothing_are_warned(recwarn):
    """A dotted name is checked on the layers it spells; a re: pattern is the user's own."""
    args = ["memory", "--model", "llama-2-7b", "--mode", "infer", "--dtype", "int4", "--keep-16bit"]
    assert run(*args, r"model.layers.31,re:.*layers\.17\..*,lm_head,mlp.down_proj").exit_code == 0
    assert not [w for w in recwarn if "names no module" in str(w.message)]
    with pytest.warns(UserWarning, match="model.layers.32 has no effect"):
        run(*args, "model.layers.32")


def test_import_never_clobbers(tmp_path):
    config = _config(tmp_path)
    existing = tmp_path / "notes.txt"
    existing.write_text("keep me")
    _fails_cleanly(run("presets", "import", config, "--name", "m", "--out", str(existing)), "pass --force")
    assert existing.read_text() == "keep me"
    _fails_cleanly(run("presets", "import", config, "--name", "m", "--out", config), "the config being imported")
    _fails_cleanly(run("presets", "import", config, "--name", "m", "--out", str(tmp_path / "new") + "/"),
                   "is a directory")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    _fails_cleanly(run("presets", "import", config, "--name", "m", "--out", str(fifo)), "not a regular file")
    assert run("presets", "import", config, "--name", "m", "--out", str(existing), "--force").exit_code == 0
    assert "hidden_size: 64" in existing.read_text()
    written = json.loads(run("presets", "--json", "import", config, "--name", "m", "--out", str(tmp_path / "x.yaml")).stdout)
    assert written == {"kind": "model", "name": "m", "path": str(tmp_path / "x.yaml")}


def test_presets_show_in_every_format():
    csv_rows = run("presets", "--csv", "show", "h100").stdout.splitlines()
    assert csv_rows[0] == "kind,field,value,unit" and "GPU,memory_bytes,85899345920,byte" in csv_rows
    markdown = run("presets", "show", "h100", "--markdown").stdout
    assert markdown.startswith("### GPU h100-sxm") and "| memory_bytes | 80.0 GiB |" in markdown
    assert "| compute_capability | 9.0 |" in markdown  # a version, not the number 9
    assert run_json("presets", "show", "h100")["kind"] == "GPU"


def _cli(args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(f"{sys.executable} -m llmcalc {args}", shell=True, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **env})


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_output_that_cannot_be_written():
    """A full disk on stdout is one line and exit 2; on stderr, a warning is given up on in silence."""
    for fmt in ("", "--json", "--csv"):
        full = _cli(f"params --model gpt2 {fmt} >/dev/full")
        assert full.returncode == 2 and full.stderr == \
            "error: cannot write the output: No space left on device; write it somewhere else\n"
    quiet = _cli("memory --model llama-2-7b --seq 100000 2>/dev/full >/dev/null")
    assert quiet.returncode == 0
    strict = _cli("memory --model llama-2-7b --seq 100000 >/dev/null", PYTHONWARNINGS="error")
    assert strict.returncode == 0 and strict.stderr.startswith("warning: --seq 100,000 is longer")


@pytest.mark.parametrize("args, says", [
    (["mfu", "--model", "gpt2", "--gpu", "h100", "--step-time", "-1"], "'-1' must be more than zero to be a duration"),
    (["flops", "--model", "gpt2", "--tokens", "-5"], "'-5' must be more than zero to be a count"),
    (["presets", "show", "4xh100"], "a count (4x) prefixes a cluster's nodes (4xdgx-h100) or --gpu's GPUs; the GPU "
                                   "preset itself: llmcalc presets show h100"),
])
def test_a_near_miss_is_named_for_what_it_is(args, says):
    """A negative number is a sign too many, not an unreadable one; a GPU counted like a cluster is told apart."""
    out = run(*args)
    assert out.exit_code == 2 and says in out.stderr, out.stderr


def test_file_errors_name_the_file_the_user_gave(tmp_path):
    """config.json's errors name its path, as YAML's do; a YAML preset handed to import is told it needs none; a GPU
    file's negative peak is echoed as written, in TFLOP/s."""
    config = tmp_path / "odd.json"
    config.write_text(json.dumps({**GOOD_CONFIG, "num_attention_heads": 30}))
    out = run("params", "--model", str(config))
    assert out.exit_code == 2 and f"{config}: model 'odd': num_attention_heads (30) does not divide" in out.stderr
    preset = tmp_path / "mine.yaml"
    preset.write_text("hidden_size: 64\n")
    out = run("presets", "import", str(preset), "--name", "mine")
    assert out.exit_code == 2 and "presets import reads a Hugging Face config.json; a YAML preset needs no import" \
        in out.stderr
    gpu = tmp_path / "g.yaml"
    gpu.write_text("memory_gib: 80\nmemory_bandwidth_tb_s: 1\ntflops: {bf16: -1}\n")
    out = run("flops", "--model", "gpt2", "--gpu", str(gpu), "--tokens", "1e9")
    assert out.exit_code == 2 and "tflops.bf16 must be a positive number of TFLOP/s, got -1" in out.stderr


def test_deepspeeds_pipeline_refuses_zero_2_and_3():
    """DeepSpeed's PipelineEngine asserts a ZeRO stage below 2 ("ZeRO-2 and ZeRO-3 are incompatible with pipeline
    parallelism"); ZeRO-1 beside a pipeline is what it runs."""
    base = ("memory", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--gpus", "8", "--seq", "2048",
            "--framework", "deepspeed", "--pp", "2")
    for zero in ("2", "3"):
        out = run(*base, "--zero", zero)
        assert out.exit_code == 2 and f"refuses ZeRO-{zero} beside --pp" in out.stderr
    assert run(*base, "--zero", "1").exit_code == 0


def test_megatron_context_parallelism_needs_two_equal_chunks_a_rank():
    """Megatron-Core splits the sequence into 2 x cp equal chunks (get_batch_on_this_cp_rank, for causal balance):
    1,001 tokens over CP 2 is refused; max-seq searches only such lengths, 8 x 4,996 over CP 4."""
    base = ("--model", "llama-2-7b", "--gpu", "h100", "--framework", "megatron")
    out = run("memory", *base, "--seq", "1001", "--cp", "2", "--gpus", "2")
    assert out.exit_code == 2 and "give a --seq that is a multiple of 4" in out.stderr
    assert run("memory", *base, "--seq", "1024", "--cp", "2", "--gpus", "2").exit_code == 0
    data = run_json("max-seq", "--model", "llama-3.1-8b", "--gpu", "h100", "--framework", "megatron", "--cp", "4",
                    "--gpus", "4", "--zero", "1", "--recompute", "full")
    assert data["summary"]["max_seq"] % 8 == 0 and data["summary"]["max_seq"] > 8
