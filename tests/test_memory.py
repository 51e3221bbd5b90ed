"""Memory per GPU against papers, seeds and hand derivations (never against the code's own output).

Sources: ZeRO paper (Rajbhandari et al. 2020) Fig. 1; Korthikanti et al. 2022 Table 2 / §4;
the systems article's exercise 4 (seeds/002) and DESIGN.md examples 10 and 13; QLoRA (Dettmers
et al. 2023) §3; the tensors HF modules save (tests/fidelity measures them with torch).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmcalc.memory import MemorySettings, memory_breakdown, mini_seq_pieces, model_state_bytes
from llmcalc.presets import load_model
from llmcalc.spec import ModelSpec, Parallelism, SpecError

from .conftest import run, run_json, value

GiB = 2**30
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# A 7.5B-parameter model for the ZeRO figure: L(4h² + 2hF) + V·h with h = 4000, F = 4h, L = 39,
# V = 3000, no biases, parameter-free norms: 39 x 192e6 + 12e6 = 7.5e9 exactly.
ZERO_MODEL = """
zero-7.5b:
  hidden_size: 4000
  num_hidden_layers: 39
  num_attention_heads: 32
  head_dim: 125
  vocab_size: 3000
  intermediate_size: 16000
  max_position_embeddings: 2048
  mlp_type: plain
  norm_type: layernorm
  norm_affine: false
  position_embedding: rotary
  tie_word_embeddings: true
  attention_bias: false
  attention_out_bias: false
  mlp_bias: false
"""

# GPT-3 175B as Korthikanti et al. size it: h 12288, a 96, L 96, s 2048, F = 4h, GeLU, dropout.
GPT3 = ModelSpec(name="gpt3-175b", hidden_size=12288, num_hidden_layers=96, num_attention_heads=96,
                 vocab_size=50257, intermediate_size=4 * 12288, max_position_embeddings=2048, mlp_type="plain",
                 norm_type="layernorm", norm_bias=True, position_embedding="learned", tie_word_embeddings=True,
                 attention_bias=True, attention_out_bias=True, mlp_bias=True, hidden_act="gelu", dropout=0.1)


# -- ZeRO paper, Figure 1 -----------------------------------------------------------------------

ZERO_FIG1 = {0: 120.0, 1: 31.4, 2: 16.6, 3: 1.9}  # GB per GPU, Ψ = 7.5B, N_d = 64, K = 12


@pytest.mark.parametrize("stage,gb", sorted(ZERO_FIG1.items()))
def test_zero_figure_1_core(stage, gb):
    psi, nd, k = 7.5e9, 64, 12
    exact = {0: (2 + 2 + k) * psi, 1: 2 * psi + 2 * psi + k * psi / nd,
             2: 2 * psi + (2 + k) * psi / nd, 3: (2 + 2 + k) * psi / nd}[stage]
    got = sum(model_state_bytes(psi, "mixed", "adamw", stage, nd).values())
    assert got == exact
    assert round(got / 1e9, 1) == gb


@pytest.mark.parametrize("stage,gb", sorted(ZERO_FIG1.items()))
def test_zero_figure_1_through_the_cli(tmp_path, stage, gb):
    path = tmp_path / "zero.yaml"
    path.write_text(ZERO_MODEL)
    data = run_json("memory", "--model", str(path), "--gpus", "64", "--zero", str(stage))
    assert data["inputs"]["dp"] == 64
    assert round(value(data, "model_states") / 1e9, 1) == gb
    assert value(data, "params_per_gpu") == 7_500_000_000


# -- Korthikanti et al. 2022: activations per layer ---------------------------------------------

def _gpt3(tp: int = 1, sp: bool = False, recompute: str = "none"):
    layout = Parallelism(gpus=tp, tp=tp, sp=sp)
    return memory_breakdown(GPT3, None, MemorySettings(seq=2048, batch=1, attention_impl="eager",
                                                       recompute=recompute, parallel=layout))


S, B, H, A, L = 2048, 1, 12288, 96, 96
# The one named difference: each LayerNorm also saves its fp32 mean and rstd (8 B per token, two
# norms per layer); Korthikanti counts the 16-bit tensors only.
LN_STATS = 2 * 8 * S * B


def test_korthikanti_no_parallelism():
    # sbh(34 + 5as/h): attention 11sbh + 5as²b, MLP 19sbh, norms 4sbh
    assert _gpt3().value("activations/per_layer") == S * B * H * (34 + 5 * A * S / H) + LN_STATS


@pytest.mark.parametrize("t", [8])
def test_korthikanti_tensor_parallel(t):
    # sbh(10 + 24/t + 5as/(ht)): norms, their outputs and the dropout masks stay whole under TP
    assert _gpt3(t).value("activations/per_layer") == S * B * H * (10 + 24 / t + 5 * A * S / (H * t)) + LN_STATS


def test_korthikanti_sequence_parallel():
    t = 8  # sbh(34/t + 5as/(ht)): SP splits the rest
    got = _gpt3(t, sp=True).value("activations/per_layer")
    assert got == pytest.approx(S * B * H * (34 / t + 5 * A * S / (H * t)) + LN_STATS / t, rel=1e-12)


def test_korthikanti_selective_and_full_recompute():
    t = 8
    selective = _gpt3(t, recompute="selective")
    # selective drops the 5as/(ht) term for every layer; one layer's is rebuilt during backward
    assert selective.value("activations/layers") == L * (S * B * H * (10 + 24 / t) + LN_STATS)
    assert selective.value("activations/transient") == S * B * H * 5 * A * S / (H * t)
    full = _gpt3(t, recompute="full")
    assert full.value("activations/layers") == L * 2 * S * B * H  # each layer's input, 2sbh


def test_llama_differs_for_the_right_reasons():
    """Llama-2-7B under SDPA (HF's default): no dropout masks, no s x s terms, RMSNorm's fp32 copy
    of its input, a SwiGLU MLP keeping four F-wide tensors; per token per layer, bf16:"""
    h, F, a = 4096, 11008, 32
    norms = 2 * (4 * h + 4 + 2 * h)  # fp32 input copy, fp32 rstd, normalized input (two norms)
    attention = 2 * h + 2 * h + 2 * 2 * h + 4 * a + 2 * h  # proj input, q, k and v, fp32 lse, output
    mlp = 2 * h + 4 * 2 * F  # input; gate output, act(gate), up, their product
    s = 4096
    b = memory_breakdown(load_model("llama-2-7b"), None, MemorySettings(seq=s))
    assert b.value("activations/per_layer") == s * (norms + attention + mlp)
    assert b.get("activations/per_layer/dropout") is None and b.get("activations/per_layer/scores") is None
    eager = memory_breakdown(load_model("llama-2-7b"), None, MemorySettings(seq=s, attention_impl="eager"))
    # eager: the s x s softmax in fp32 plus its bf16 copy (6as per token); no log-sum-exp, no kept kernel
    # output (the out-projection keeps its own input)
    assert eager.value("activations/per_layer") - b.value("activations/per_layer") == s * (6 * a * s - 4 * a)


def test_eager_gqa_repeats_kv_sdpa_does_not():
    s, h, kv_width = 1024, 4096, 8 * 128  # llama-3-8b: 32 heads, 8 kv heads of 128
    sdpa = memory_breakdown(load_model("llama-3-8b"), None, MemorySettings(seq=s))
    eager = memory_breakdown(load_model("llama-3-8b"), None, MemorySettings(seq=s, attention_impl="eager"))
    diff = eager.value("activations/per_layer/attention") - sdpa.value("activations/per_layer/attention")
    assert diff == s * (2 * 2 * (h - kv_width) - 4 * 32)  # k, v repeated to 32 heads; no fp32 lse


# -- logits, Mini-Sequence ------------------------------------------------------------------------

def test_example_13_logits_at_128k():
    data = run_json("memory", "--model", "llama-3.1-8b", "--seq", "131072", "--batch", "1", "--dtype", "fp16")
    s, V = 131072, 128256
    assert value(data, "logits") >= s * V * 2  # DESIGN example 13: at least the 16-bit logits
    assert value(data, "logits") == 3 * s * V * 4  # fp32 log-probs + their gradient + the logits' gradient
    assert value(data, "logits/log_probs") == s * V * 4


def test_mini_sequence_divides_the_lm_head_and_mlp_intermediates():
    m, s, M = load_model("llama-3.2-1b"), 8192, 4
    one = memory_breakdown(m, None, MemorySettings(seq=s))
    four = memory_breakdown(m, None, MemorySettings(seq=s, mini_seq=M))
    assert four.value("logits") == 3 * (s // M) * 128256 * 4
    # the per-layer MLP intermediates (4 F-wide bf16 tensors, F = 8192) are no longer kept per layer;
    # one chunk of s/M tokens is rebuilt at a time
    inner = s * 4 * 8192 * 2
    assert one.value("activations/layers") - four.value("activations/layers") == 16 * inner
    assert four.value("activations/transient") == inner / M
    assert four.value("total") < one.value("total")


def test_mini_seq_pieces_are_the_closed_form_terms():
    m, s = load_model("llama-3.2-1b"), 4096
    p = mini_seq_pieces(m, MemorySettings(seq=s))
    b = memory_breakdown(m, None, MemorySettings(seq=s))
    assert p.w_mem == sum(b.value(k) for k in ("weights", "gradients", "optimizer", "reserve"))
    assert p.i_mlp == 4 * 8192 * 2  # SwiGLU's four F-wide bf16 tensors
    assert p.i_head == 3 * 128256 * 4  # the loss's three fp32 b·s·V buffers
    assert p.layers == 16
    assert s * p.layers * (p.a_mem + p.i_mlp) == pytest.approx(b.value("activations/layers"))
    assert s * p.i_head == b.value("logits")


# -- inference: KV cache (seed exercise 4, DESIGN example 10) -------------------------------------

def test_example_10_kv_per_gpu_under_tp2():
    data = run_json("memory", "--mode", "infer", "--model", "llama-2-70b", "--gpu", "a800", "--gpus", "2",
                    "--tp", "2", "--batch", "1", "--seq", "4000", "--dtype", "fp16")
    assert value(data, "kv_cache") == 655_360_000
    assert data["inputs"]["tp"] == 2 and data["inputs"]["attention_impl"] == "flash"


def test_seed_exercise_4_kv_per_request():
    # L·S·g·d·2·sizeof(fp16) = 80 x 4000 x 8 x 128 x 2 x 2 = 1.31e9 B: "about 1.3 GB" per request
    data = run_json("memory", "--mode", "infer", "--model", "llama-2-70b", "--seq", "4000", "--dtype", "fp16")
    assert value(data, "kv_per_request") == 80 * 4000 * 8 * 128 * 2 * 2 == 1_310_720_000


def test_kv_heads_replicate_once_tp_exceeds_them():
    def kv(tp):
        return run_json("memory", "--mode", "infer", "--model", "llama-3-8b", "--gpus", str(tp), "--seq", "8192")
    assert value(kv(8), "kv_cache") == 32 * 8192 * 2 * 1 * 128 * 2  # 8 kv heads over 8 ranks: one each
    assert value(kv(16), "kv_cache") == value(kv(8), "kv_cache")  # 16 ranks: still one (replicated)


def test_mla_caches_one_latent_replicated_over_tp():
    for tp in (1, 8):
        data = run_json("memory", "--mode", "infer", "--model", "deepseek-v3", "--gpus", str(tp), "--seq", "1000",
                        "--engine", "hf")
        assert value(data, "kv_per_token") == 61 * (512 + 64) * 2  # kv_lora_rank + rope dim, no factor 2
        # vLLM's V0 engine pads the 576-value latent to 640 (256-byte aligned); V1 keeps 576
        v0 = run_json("memory", "--mode", "infer", "--model", "deepseek-v3", "--gpus", str(tp), "--seq", "1000",
                      "--engine-version", "0.7.3")
        v1 = run_json("memory", "--mode", "infer", "--model", "deepseek-v3", "--gpus", str(tp), "--seq", "1000",
                      "--engine-version", "0.10.2")
        assert value(v0, "kv_per_token") == 61 * 640 * 2 and value(v1, "kv_per_token") == 61 * 576 * 2


def test_sliding_window_layers_keep_the_window():
    data = run_json("memory", "--mode", "infer", "--model", "gemma-2-9b", "--seq", "8192", "--engine", "hf")
    assert value(data, "kv_cache") == (21 * 4096 + 21 * 8192) * 2 * 8 * 256 * 2
    # vLLM sizes every layer for the whole context (0.6.5+; the hybrid manager of 0.9.1+ only
    # credits the window in the concurrency)
    vllm = run_json("memory", "--mode", "infer", "--model", "gemma-2-9b", "--seq", "8192")
    assert value(vllm, "kv_cache") == 42 * 8192 * 2 * 8 * 256 * 2


def test_int4_weights_carry_a_scale_per_group():
    # Llama-2-7B linears: 6,738,415,616 - 2 x 131,072,000 (embedding, head) - 266,240 (norms)
    linears, rest = 6_476_005_376, 262_410_240
    data = run_json("memory", "--mode", "infer", "--model", "llama-2-7b", "--dtype", "int4", "--group-size", "128",
                    "--engine", "hf")
    assert value(data, "weights/scales") == linears // 128 * 2
    assert value(data, "weights") == linears // 2 + linears // 128 * 2 + rest * 2  # 4.125 bits + 16-bit rest


# -- training: precision, optimizers, fine-tuning, offload ----------------------------------------

N7B = 6_738_415_616


@pytest.mark.parametrize("precision,per_param", [("mixed", 16), ("mixed-fp32-grads", 18), ("fp32", 16), ("bf16", 8)])
def test_precision_profiles(precision, per_param):
    data = run_json("memory", "--model", "llama-2-7b", "--precision", precision)
    assert sum(value(data, k) for k in ("weights", "gradients", "optimizer")) == per_param * N7B


@pytest.mark.parametrize("optimizer,state_bytes", [("adamw", 8), ("adamw-8bit", 2), ("sgd", 0),
                                                   ("sgd-momentum", 4), ("lion", 4)])
def test_optimizer_states(optimizer, state_bytes):
    data = run_json("memory", "--model", "llama-2-7b", "--optimizer", optimizer)
    assert value(data, "optimizer/master") == 4 * N7B
    assert value(data, "optimizer") == (4 + state_bytes) * N7B


def test_adafactor_factored_state_is_rows_plus_columns():
    data = run_json("memory", "--model", "llama-2-7b", "--optimizer", "adafactor")
    h, F, V = 4096, 11008, 32000
    per_layer = 4 * (h + h) + 3 * (h + F) + 2 * h  # q, k, v, o, gate, up, down; two norm vectors
    assert value(data, "optimizer/adafactor_v") == 4 * (32 * per_layer + 2 * (V + h) + h)


def data_input(data: dict, key: str):
    return data["inputs"][key]


def test_can_i_fine_tune_7b_on_a_24gb_card():
    base = ["memory", "--model", "llama-2-7b", "--gpu", "rtx-4090", "--seq", "2048"]
    qlora = run_json(*base, "--finetune", "qlora", "--lora-targets", "all")
    # r = 16 on q, k, v, o, gate, up, down: 32 x 16 x (4 x (4096 + 4096) + 3 x (4096 + 11008))
    adapters = 32 * 16 * (4 * (4096 + 4096) + 3 * (4096 + 11008))
    assert adapters == 39_976_960  # what PEFT prints for this setup
    assert value(qlora, "trainable_per_gpu") == adapters
    linears, rest = 6_476_005_376, 262_410_240  # NF4 + double quantization: 4 + 8/64 + 32/(64·256) bits
    # PEFT's prepare_model_for_kbit_training casts the rest (embeddings, norms, head) to fp32
    assert value(qlora, "weights/frozen") == round(linears * (4 + 8 / 64 + 32 / (64 * 256)) / 8 + rest * 4)
    assert value(qlora, "gradients") == 2 * adapters and value(qlora, "optimizer") == 12 * adapters
    assert value(qlora, "fits") is True  # PEFT's prepare_model_for_kbit_training checkpoints by default
    assert data_input(qlora, "recompute") == "full"
    assert value(run_json(*base, "--finetune", "qlora", "--lora-targets", "all", "--recompute", "none"), "fits") is False
    assert value(run_json(*base), "fits") is False  # full fine-tuning needs 16 B/param: 108 GB


def test_offload_moves_optimizer_to_cpu():
    data = run_json("memory", "--model", "llama-2-7b", "--gpus", "8", "--zero", "2", "--offload", "optimizer")
    shard = math.ceil(N7B / 8)
    assert value(data, "optimizer") == 0 and value(data, "gradients") == 0
    # master, m, v, and the gradient partition as DeepSpeed keeps it on the host: the fp32 master's .grad (4 B)
    assert value(data, "cpu") == 12 * shard + 4 * shard


def test_megatron_activation_offloading_keeps_the_other_layers_and_one_in_transit():
    """Megatron-Core's --cpu-offloading-num-layers 12 on Llama-2-7B's 32 layers: Transformer Engine sends the first
    12 layers' saved tensors to host memory as the forward goes on, freeing each a window later (the last as the
    forward ends) and bringing them back a group ahead in backward, so the GPU holds 32 - 12 + 1 layers' worth and
    the host 12; everything else is as without it. Megatron refuses it beside recomputation and pipelines."""
    base = ("memory", "--model", "llama-2-7b", "--seq", "2048", "--framework", "megatron", "--recompute", "none")
    plain, away = run_json(*base), run_json(*base, "--offload-layers", "12")
    layer = value(plain, "activations/layers") / 32
    assert value(plain, "activations/per_layer") == pytest.approx(layer, abs=1)
    assert value(away, "activations/layers") == pytest.approx(21 * layer, abs=1)
    assert value(away, "cpu/activations") == pytest.approx(12 * layer, abs=1)
    assert value(plain, "total") - value(away, "total") == pytest.approx(11 * layer * 1.13, rel=1e-3)  # + slack
    for more, words in ((("--pp", "2", "--gpus", "2"), "no --pp"), (("--recompute", "full"), "--recompute none"),
                        (("--offload-layers", "32"), "below the model's 32 layers")):
        out = run(*base, "--offload-layers", "12", *more)
        assert out.exit_code == 2 and words in out.stderr, out.stderr
    assert run("memory", "--model", "llama-2-7b", "--offload-layers", "4").exit_code == 2  # HF's stack: no such knob


def test_activation_offloading_sends_the_first_layers_dense_ones_first():
    """DeepSeek-V3's first 3 layers are dense, the other 58 MoE: offloading 3 layers sends the 3 dense layers'
    tensors (smaller than an MoE layer's) and keeps one of them in transit; offloading 4 adds an MoE layer's,
    which is then the one in transit."""
    base = ("memory", "--model", "deepseek-v3", "--gpus", "64", "--ep", "64", "--seq", "2k", "--framework", "megatron",
            "--recompute", "none")
    plain = run_json(*base)
    three, four = (run_json(*base, "--offload-layers", n) for n in ("3", "4"))
    moe_layer, dense = value(plain, "activations/per_layer"), value(three, "cpu/activations") / 3
    assert dense < moe_layer
    assert value(three, "activations/layers") == pytest.approx(value(plain, "activations/layers") - 2 * dense, abs=2)
    assert value(four, "cpu/activations") == pytest.approx(3 * dense + moe_layer, abs=2)
    assert value(four, "activations/layers") == pytest.approx(value(plain, "activations/layers") - 3 * dense, abs=2)


def test_pipeline_first_stage_holds_p_micro_batches():
    data = run_json("memory", "--model", "llama-2-7b", "--gpus", "4", "--pp", "4", "--seq", "2048")
    assert value(data, "stage") == 0 and value(data, "in_flight") == 4
    assert value(data, "activations/layers") == 4 * 8 * value(data, "activations/per_layer")


# -- the CLI contract ---------------------------------------------------------------------------

def test_json_rows_and_summary():
    data = run_json("memory", "--model", "llama-2-7b", "--gpu", "a100-80gb", "--gpu-memory", "80GB")
    names = {r["name"] for r in data["rows"]}
    assert {"weights", "gradients", "optimizer", "optimizer/master", "optimizer/adam_m", "optimizer/adam_v",
            "activations", "logits", "kv_cache", "reserve", "total"} <= names
    # the peak is the larger of the start of backward (gradients not yet allocated: torch's zero_grad
    # frees them) and the optimizer step; the caching allocator's slack and the reserve go on top
    backward = sum(value(data, k) for k in ("weights", "optimizer", "activations", "logits"))
    step = sum(value(data, k) for k in ("weights", "gradients", "optimizer", "optimizer_step"))
    assert value(data, "peak_backward") == backward and value(data, "peak_step") == step
    assert value(data, "peak_allocated") == max(backward, step)
    assert value(data, "total") == value(data, "peak_allocated") + value(data, "allocator") + value(data, "reserve")
    assert value(data, "capacity") == 80_000_000_000 and isinstance(value(data, "fits"), bool)
    assert data["inputs"]["precision"] == "mixed" and data["inputs"]["reserve"] == round(0.67 * GiB)
    assert "fits" not in run_json("memory", "--model", "gpt2")["summary"]  # no GPU: nothing to fit


@pytest.mark.parametrize("fmt", ["", "--csv", "--markdown"])
def test_formats_render(fmt):
    result = run("memory", "--model", "gpt2", "--gpu", "t4", *([fmt] if fmt else []))
    assert result.exit_code == 0, result.output
    assert "kv_cache" in result.stdout and "activations/per_layer" in result.stdout


def test_check_exit_codes():
    assert run("memory", "--model", "llama-2-70b", "--gpu", "a100-80gb", "--check").exit_code == 1
    assert run("memory", "--model", "gpt2", "--gpu", "a100-80gb", "--seq", "1024", "--check").exit_code == 0
    no_gpu = run("memory", "--model", "gpt2", "--check")
    assert no_gpu.exit_code == 2 and "--gpu" in no_gpu.stderr


@pytest.mark.parametrize("args", [
    ["--gpus", "8", "--tp", "3"],  # 8 GPUs do not split into TP 3
    ["--tp", "3"],  # 32 heads do not split over 3 ranks
    ["--gpus", "4", "--tp", "2", "--dp", "4"],  # 2 x 4 != 4
    ["--zero", "1", "--offload", "params"],  # parameter offload needs ZeRO-3
    ["--mode", "infer", "--zero", "2"],
    ["--precision", "mixed", "--dtype", "int4"],
    ["--finetune", "lora", "--lora-targets", "qkv"],
])
def test_bad_input_is_one_line_exit_2(args):
    result = run("memory", "--model", "llama-2-7b", *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


# -- properties ---------------------------------------------------------------------------------

MODELS = ["gpt2", "llama-3.2-1b", "llama-2-7b", "mistral-7b", "mixtral-8x7b", "gemma-2-9b", "deepseek-v3"]


def _total(name, **kw):
    return memory_breakdown(load_model(name), None, MemorySettings(**kw))


@FAST
@given(name=st.sampled_from(MODELS), mode=st.sampled_from(["train", "infer"]), seq=st.integers(1, 20000),
       more=st.integers(1, 5000), batch=st.integers(1, 8), impl=st.sampled_from(["eager", "sdpa", "flash"]),
       recompute=st.sampled_from(["none", "selective", "full"]))
def test_memory_never_decreases_with_seq_or_batch(name, mode, seq, more, batch, impl, recompute):
    kw = {"mode": mode, "attention_impl": impl, "recompute": recompute if mode == "train" else "none"}
    base = _total(name, seq=seq, batch=batch, **kw).value("total")
    assert _total(name, seq=seq + more, batch=batch, **kw).value("total") >= base
    assert _total(name, seq=seq, batch=batch + 1, **kw).value("total") >= base


@FAST
@given(name=st.sampled_from(MODELS), dp=st.sampled_from([2, 4, 8, 64]), seq=st.integers(1, 8192))
def test_zero_stages_never_increase_memory(name, dp, seq):
    totals = [_total(name, seq=seq, zero=z, parallel=Parallelism(gpus=dp, dp=dp)).value("total") for z in range(4)]
    assert totals[3] <= totals[2] <= totals[1] <= totals[0]


@FAST
@given(name=st.sampled_from(MODELS), seq=st.integers(1, 16384), batch=st.integers(1, 4),
       impl=st.sampled_from(["eager", "sdpa"]), mini=st.sampled_from([1, 2, 4]))
def test_recomputation_never_increases_activations(name, seq, batch, impl, mini):
    mini = min(mini, seq)
    # at the start of backward: the saved activations beside the larger of the loss's buffers and the
    # one layer being rebuilt (they are not alive together)
    act = [_total(name, seq=seq, batch=batch, attention_impl=impl, recompute=r, mini_seq=mini).summary["peak_backward"]
           for r in ("full", "selective", "none")]
    assert act[0] <= act[1] <= act[2]


@FAST
@given(name=st.sampled_from(MODELS), mode=st.sampled_from(["train", "infer"]))
def test_more_tp_never_increases_weights_per_gpu(name, mode):
    m = load_model(name)
    weights = []
    for tp in (1, 2, 4, 8, 16):
        try:
            b = memory_breakdown(m, None, MemorySettings(mode=mode, seq=128, parallel=Parallelism(gpus=tp, tp=tp)))
        except SpecError:  # heads that do not split over tp ranks
            continue
        weights.append(b.value("weights"))
    assert weights == sorted(weights, reverse=True)


def test_factorized_embedding_weights_per_gpu():
    # OPT-350m: 331,196,416 parameters in transformers' OPTForCausalLM (512-wide embedding with
    # project_in/out around the 1024-wide blocks); memory must hold exactly those.
    from llmcalc.hfconfig import load

    m = load(str(Path(__file__).parent / "data" / "hf" / "opt-350m.json"))
    b = memory_breakdown(m, None, MemorySettings(seq=512))
    assert b.summary["params_per_gpu"] == 331_196_416


def test_eager_inference_working_set_by_hand():
    # GPT-2, one prefill chunk of 1024 tokens in bf16, eager attention (HF repeats k/v to every head;
    # GPT-2's softmax keeps the dtype, so the scores and the probabilities are alive together):
    # residual + normed input 2·2h, q 2h, k and v 2·2h, output 2h, scores + probabilities 2 x 2·a·s;
    # the attention core outweighs the MLP's 2 x 2F.
    h, a, s, F = 768, 12, 1024, 3072
    attention = 2 * h + 2 * 2 * h + 2 * h + 2 * 2 * a * s
    assert attention > 2 * 2 * F
    b = memory_breakdown(load_model("gpt2"), None, MemorySettings(mode="infer", seq=s, attention_impl="eager",
                                                                  engine="hf"))
    assert b.value("activations") == s * (2 * 2 * h + attention)


def test_megatron_recompute_modules_drop_their_outputs():
    """Megatron-Core's selective recomputation by module (core 0.15 recompute_modules). mla_up_proj's checkpoint
    keeps only its inputs, the latents: DeepSeek-V3 drops q and the decompressed k, v (128 heads x (192 + 192 +
    128) x 2 B = 131,072 B a token a layer), the q_b and kv_b inputs (the normed latents, (1536 + 512) x 2 B) and
    the latent norms' fp32 rstd (2 x 4 B): 135,176 B, rebuilt one layer at a time into the freed storage from a
    copy the checkpoint keeps (twice the bytes). moe_act drops the experts' activation output, top-8 copies x
    2048 x 2 B = 32,768 B a token a MoE layer. The stage (PP 4, the first: 3 dense + 12 MoE layers, 4
    micro-batches in flight) keeps the rest; core_attn alone (the default) drops nothing under flash attention."""
    common = dict(mode="train", seq=4096, batch=1, zero=1, framework="megatron", attention_impl="flash",
                  parallel=Parallelism(gpus=256, tp=1, pp=4, dp=64, ep=64))
    m = load_model("deepseek-v3")
    plain = memory_breakdown(m, None, MemorySettings(recompute="selective", **common))
    up = memory_breakdown(m, None, MemorySettings(recompute="selective", recompute_modules=("mla_up_proj",), **common))
    both = memory_breakdown(m, None, MemorySettings(recompute="selective", recompute_modules=("mla_up_proj", "moe_act"),
                                                    **common))
    tokens, layers, flight = 4096, 15, 4
    dropped = 128 * (192 + 192 + 128) * 2 + (1536 + 512) * 2 + 2 * 4
    assert dropped == 135_176
    assert plain.value("activations/layers") - up.value("activations/layers") == flight * layers * tokens * dropped
    assert up.value("activations/transient") == 2 * tokens * dropped
    assert up.value("activations/layers") - both.value("activations/layers") == flight * 12 * tokens * 32_768
    assert up.inputs["recompute_modules"] == ["mla_up_proj"]
    with pytest.raises(SpecError, match="needs --recompute selective"):
        MemorySettings(recompute="full", recompute_modules=("mla_up_proj",), **common)
    with pytest.raises(SpecError, match="--recompute-modules must be one of"):
        MemorySettings(recompute="selective", recompute_modules=("attention",), **common)
    with pytest.raises(SpecError, match="give --framework megatron"):
        MemorySettings(recompute="selective", recompute_modules=("moe_act",), **{**common, "framework": "hf"})
    dense = MemorySettings(recompute="selective", recompute_modules=("mla_up_proj",), **common)
    with pytest.raises(SpecError, match="mla_up_proj needs multi-latent attention; llama-3.1-8b has none"):
        memory_breakdown(load_model("llama-3.1-8b"), None, dataclasses.replace(dense, parallel=Parallelism(gpus=1)))
    assert run("max-seq", "--model", "deepseek-v3", "--gpu", "b200", "--gpus", "64", "--pp", "4", "--ep", "16",
               "--framework", "megatron", "--recompute", "selective", "--recompute-modules", "mla_up_proj"
               ).exit_code == 0  # its probe without recomputation (the mini-seq pieces) too


@pytest.mark.parametrize("accum, flight", [(None, 4), (1, 1), (2, 2), (8, 4)])
def test_a_stage_holds_at_most_the_steps_micro_batches(accum, flight):
    """1F1B's first stage of four holds p - 0 = 4 micro-batches in flight, or every one a step has where it has
    fewer (Narayanan et al. 2021): min(m, p - i)."""
    import llmcalc

    b = llmcalc.memory("llama-3-8b", gpu="h100", gpus=4, pp=4, seq="2k", **({"grad_accum": accum} if accum else {}))
    assert b.summary["in_flight"] == flight
    if accum is None:  # not stated: the pipeline's p micro-batches, whose gradients accumulate, as --grad-accum 4's
        four = llmcalc.memory("llama-3-8b", gpu="h100", gpus=4, pp=4, seq="2k", grad_accum=4)
        assert b.summary["total"] == four.summary["total"]


@pytest.mark.parametrize("precision, optimizer, says", [
    ("mixed", "adamw", "2 + 2 + 12 = 16 B/param"),  # the ZeRO paper's own sentence
    ("mixed", "lion", "2 weights + 2 grads + 4 master + 4 momentum = 12 B/param"),  # one fp32 buffer
    ("mixed", "adamw-8bit", "2 weights + 2 grads + 4 master + 1 adam_m + 1 adam_v = 10 B/param"),
    ("bf16", "sgd", "2 weights + 2 grads = 4 B/param"),
])
def test_the_precision_note_adds_up_the_optimizer_it_names(precision, optimizer, says):
    from llmcalc.memory.states import precision_note

    assert says in precision_note(precision, optimizer)


def _counted(rows) -> float:
    """The rows a table's total is made of: those with a share and no ancestor with one (a part is in its whole)."""
    shared = {row.name for row in rows if row.total == "total" and row.name != "total"}  # not the host's rows
    return sum(row.value for row in rows if row.name in shared
               and not any(row.name.startswith(other + "/") for other in shared))


def test_the_rows_in_the_total_add_up_to_it():
    """Over a seeded grid of training settings (frameworks, losses, optimizer in backward, CP, PP, ZeRO, LoRA,
    recomputation, Mini-Sequence, precision): whatever moment the peak is, the rows left in the total add up to it
    (the logits output a torch loop holds at an optimizer-step peak, a fused loss's forward chunk gone when the
    in-backward step's gradient is the larger moment, ZeRO-3's gathered layers freed before the step)."""
    import random

    import llmcalc

    space = dict(model=["llama-3.1-8b", "gpt2", "qwen3-30b-a3b", "llama-3.2-1b"],
                 framework=["hf", "torch", "megatron", "deepspeed", "fsdp", "litgpt", "torchtune", "unsloth"],
                 loss=["full", "chunked", "fused", "te"], optimizer_in_backward=[False, True], cp=[1, 2], pp=[1, 2],
                 dp=[1, 2], grad_accum=[1, 4], finetune=["full", "lora", "qlora"], seq=[256, 2048, 8192, 32768],
                 batch=[1, 4], recompute=["none", "full", "selective"], zero=[0, 1, 2, 3], mini_seq=[1, 4],
                 precision=["mixed", "mixed-fp32-grads", "bf16"])
    rng, checked = random.Random(0), 0
    while checked < 300:
        kw = {key: rng.choice(values) for key, values in space.items()}
        model, kw["gpus"] = kw.pop("model"), kw["cp"] * kw["pp"] * kw.pop("dp")
        try:
            r = llmcalc.memory(model, gpu="h100", **kw)
        except SpecError:  # a combination the frameworks refuse
            continue
        assert _counted(r.rows) == pytest.approx(r.value("total"), abs=1), (model, kw)
        checked += 1


@pytest.mark.parametrize("precision, plain, distributed", [("mixed", 20, (4, 16)), ("mixed-fp32-grads", 18, (6, 12))])
def test_megatron_optimizer_bytes_per_parameter_match_its_own_table(precision, plain, distributed):
    """Megatron-LM's distributed-optimizer doc (docs/user-guide/features/dist_optimizer.md): bytes per parameter,
    fp16 weights and grads 20 (non-distributed) and 4 + 16/d (distributed); bf16 weights with fp32 grads 18 and
    6 + 12/d. The 16-bit grads' extra 4 B is the fp32 copy step() makes (main_param.grad = model_grad.float()),
    freed by the next zero_grad, so it counts at the optimizer step's moment."""
    m, d = load_model("llama-2-7b"), 8
    rows = ("weights", "gradients", "optimizer", "optimizer_step")
    for zero, nd, expect in ((0, 1, plain), (1, d, distributed[0] + distributed[1] / d)):
        s = MemorySettings(mode="train", seq=1024, framework="megatron", precision=precision, zero=zero,
                           parallel=Parallelism(gpus=nd, dp=nd))
        b = memory_breakdown(m, None, s)
        params = b.summary["params_per_gpu"]
        assert sum(b.value(r) for r in rows) == pytest.approx(expect * params, rel=1e-6)
        if precision == "mixed" and not zero:  # the copy outweighs a 1k-token micro-batch's activations
            assert b.summary["peak_at"] == "optimizer step"


def test_megatrons_gradient_copy_explains_itself():
    """The optimizer_step row of 16-bit gradients under Megatron: what it is, whose share, and its count (not
    "= optimizer/master", which only happens to be the same size)."""
    out = run_json("memory", "--model", "llama-2-7b", "--framework", "megatron", "--precision", "mixed", "--gpus", "8",
                   "--zero", "1", "--seq", "4096", "--explain")
    row = next(r for r in out["rows"] if r["name"] == "optimizer_step")
    assert "main_param.grad = model_grad.float()), one value per master weight, this GPU's share under ZeRO-1" in row["note"]
    assert " ".join(str(row["formula"]).split()).startswith("ceil(6,738,415,616 params / 8 ranks) x 4 B")
    assert any("the step adds an fp32 copy of the 16-bit gradients, 4 B a value it holds" in n for n in out["notes"])
    moe = run_json("memory", "--model", "mixtral-8x7b", "--framework", "megatron", "--precision", "mixed", "--gpus",
                   "64", "--ep", "8", "--zero", "1", "--explain")  # experts shard over their own 8 ranks
    row = next(r for r in moe["rows"] if r["name"] == "optimizer_step")
    assert " ".join(str(row["formula"]).split()).startswith(
        "ceil(1,605,636,096 params / 64 ranks) x 4 B + ceil(5,637,144,576 expert params / 8 ranks) x 4 B")


def test_deepspeeds_step_flattens_and_casts_the_gradient_partition():
    """DeepSpeed ZeRO 1-2 (stage_1_and_2.py step): flatten(averaged_gradients) makes a 16-bit copy of the
    partition, .to(fp32) an fp32 one, both alive at the cast: 2 + 4 = 6 B per value this GPU steps,
    ceil(6,738,415,616 / 8) x 6 B for Llama 2 7B over 8 ranks. ZeRO-3 (stage3.py) does it per sub-group of
    sub_group_size = 1e9 values: 6 GB for Llama 3.1 405B, whose 8-way shard is 50.7B values. Stage 0 runs
    DeepSpeed's other optimizers: none counted."""
    seven, big = load_model("llama-2-7b"), load_model("llama-3.1-405b")

    def step(m, zero):
        s = MemorySettings(mode="train", seq=1024, framework="deepspeed", zero=zero, parallel=Parallelism(gpus=8, dp=8))
        return memory_breakdown(m, None, s).value("optimizer_step")

    assert step(seven, 2) == step(seven, 1) == math.ceil(6_738_415_616 / 8) * 6
    assert step(big, 3) == 1e9 * 6
    assert step(seven, 0) == 0
    out = run_json("memory", "--model", "llama-3.1-405b", "--framework", "deepspeed", "--zero", "3", "--gpus", "8",
                   "--explain")
    row = next(r for r in out["rows"] if r["name"] == "optimizer_step")
    assert "to(fp32)), one sub-group of 1,000,000,000 values at a time" in row["note"]
    assert " ".join(str(row["formula"]).split()).startswith("1,000,000,000 values (a sub-group) x 6 B")


def test_a_release_past_the_newest_modelled_is_named_as_the_one_modelled():
    """--engine-version past the releases llmcalc models warns that the numbers follow the newest, and the notes and
    inputs name that one too (they had said "SGLang 0.7.3" over 0.5.5's numbers)."""
    with pytest.warns(UserWarning, match="--engine-version 0.7.3 is newer than the sglang releases llmcalc models; "
                                         "the numbers follow 0.5.5"):
        out = run_json("memory", "--mode", "infer", "--model", "llama-3.1-8b", "--gpu", "h100", "--engine", "sglang",
                       "--engine-version", "0.7.3")
    assert out["inputs"]["engine_version"] == "0.5.5"
    assert any(n.startswith("SGLang 0.5.5: KV = ") for n in out["notes"])
