"""Measure on a CUDA GPU what the CPU cannot: the memory the driver reports, the CUDA context, and the
peak of real fine-tuning steps (transformers + peft, randomly initialised from a config).

Not part of the test suite. Run on a machine with a GPU, torch, transformers and peft:

    python scripts/measure_gpu.py OUT.json

The JSON it writes is kept as test data (tests/data/gpu_measured.json) with the versions it ran on.
"""

from __future__ import annotations

import gc
import json
import sys
import time

import torch

GiB = 2**30

# Llama-3.2-1B's published config.json (shape only; weights are random).
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, head_dim=64, vocab_size=128256, max_position_embeddings=131072,
                tie_word_embeddings=True, rms_norm_eps=1e-5, rope_theta=500000.0)


def device_facts() -> dict:
    torch.cuda.init()
    props = torch.cuda.get_device_properties(0)
    x = torch.empty(1, device="cuda")
    free, total = torch.cuda.mem_get_info()
    after_init = {"used": total - free, "torch_reserved": torch.cuda.memory_reserved()}
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    (a @ a).sum().item()
    torch.cuda.synchronize()
    free2, _ = torch.cuda.mem_get_info()
    after_gemm = {"used": total - free2, "torch_reserved": torch.cuda.memory_reserved()}
    del a, x
    return {"name": props.name, "total_memory": props.total_memory, "mem_get_info_total": total,
            "after_init": after_init, "after_bf16_gemm": after_gemm}


def train_case(name: str, seq: int, batch: int, attn: str, lora: str | None, ckpt: bool,
               weights: str, rank: int = 8) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    dtype = torch.float32 if weights == "fp32-autocast" else torch.bfloat16
    cfg = LlamaConfig(**LLAMA_1B, attn_implementation=attn, torch_dtype=dtype)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(dtype)
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if lora:
        from peft import LoraConfig, get_peft_model
        targets = ["q_proj", "v_proj"] if lora == "qv" else "all-linear"
        model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.05,
                                                 target_modules=targets, task_type="CAUSAL_LM"))
        if ckpt:
            model.enable_input_require_grads()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    model.train()
    after_load = torch.cuda.memory_allocated() - base
    ids = torch.randint(0, LLAMA_1B["vocab_size"], (batch, seq), device="cuda")
    phases = {}
    for step in range(2):  # the second step has optimizer states from the start
        torch.cuda.reset_peak_memory_stats()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=weights == "fp32-autocast"):
            out = model(input_ids=ids, labels=ids)
        phases[f"step{step}_after_forward"] = torch.cuda.memory_allocated() - base
        phases[f"step{step}_forward_peak"] = torch.cuda.max_memory_allocated() - base
        out.loss.backward()
        phases[f"step{step}_after_backward"] = torch.cuda.memory_allocated() - base
        phases[f"step{step}_backward_peak"] = torch.cuda.max_memory_allocated() - base
        opt.step()
        opt.zero_grad(set_to_none=True)
        phases[f"step{step}_after_step"] = torch.cuda.memory_allocated() - base
        phases[f"step{step}_peak_allocated"] = torch.cuda.max_memory_allocated() - base
        phases[f"step{step}_peak_reserved"] = torch.cuda.max_memory_reserved()
        del out
    n_train = sum(p.numel() for p in trainable)
    n_all = sum(p.numel() for p in model.parameters())
    res = {"case": name, "model": "llama-3.2-1b (random init)", "seq": seq, "batch": batch, "attn": attn,
           "lora": lora, "lora_rank": rank if lora else None, "gradient_checkpointing": ckpt,
           "weights": weights, "optimizer": "torch AdamW (fp32 states for fp32 params, bf16 for bf16)",
           "trainable_params": n_train, "total_params": n_all, "after_load": after_load, **phases}
    del model, opt, trainable, ids
    gc.collect()
    torch.cuda.empty_cache()
    return res


CASES = [
    ("full-bf16-sdpa", 1024, 1, "sdpa", None, False, "bf16"),
    ("full-fp32-autocast-sdpa", 1024, 1, "sdpa", None, False, "fp32-autocast"),
    ("lora-qv-sdpa", 1024, 1, "sdpa", "qv", False, "bf16"),
    ("lora-qv-sdpa-b2s2048", 2048, 2, "sdpa", "qv", False, "bf16"),
    ("lora-qv-eager", 1024, 1, "eager", "qv", False, "bf16"),
    ("lora-all-sdpa", 2048, 1, "sdpa", "all", False, "bf16"),
    ("lora-qv-sdpa-ckpt-b2s2048", 2048, 2, "sdpa", "qv", True, "bf16"),
    ("full-bf16-sdpa-ckpt-s4096", 4096, 1, "sdpa", None, True, "bf16"),
]


def main(path: str) -> None:
    import peft
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
           "cuda": torch.version.cuda, "device": device_facts(), "cases": []}
    for case in CASES:
        t = time.perf_counter()
        try:
            res = train_case(*case)
        except Exception as exc:  # record and go on: one failed case must not lose the others
            res = {"case": case[0], "error": f"{type(exc).__name__}: {exc}"[:500]}
        res["seconds"] = round(time.perf_counter() - t, 2)
        out["cases"].append(res)
        print(json.dumps(res), flush=True)
        with open(path, "w") as f:
            json.dump(out, f, indent=1)
    print(json.dumps(out["device"]))


if __name__ == "__main__":
    main(sys.argv[1])
