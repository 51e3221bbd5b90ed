"""Peak CUDA memory of training steps the way the frameworks run them, for tests/data/gpu_frameworks.json.

    python scripts/measure_frameworks_cuda.py OUT.json [group ...]

Groups (all by default):
  compile   torchtune-style full fine-tuning of a Llama-3.2-3B-shaped model (HF modules, random init),
            batch 2 x 4096, no checkpointing, eager vs each layer and the loss under torch.compile,
            full fp32 logits vs 8-chunk output and loss (torchtune's CEWithChunkedOutputLoss).
  litgpt    LitGPT's own GPT/LoRA modules under Lightning Fabric: bf16-true LoRA, bitsandbytes NF4
            QLoRA with PagedAdamW (bitsandbytes as installed, and with MatMul4Bit patched to keep its
            input as bitsandbytes < 0.43.2 did), bf16-mixed LoRA (fp32 frozen base under autocast),
            and Llama-3.2-1B (LitGPT keeps an untied lm_head).
  peft      HF + PEFT QLoRA: Linear4bit base layers, prepare_model_for_kbit_training, autocast bf16.
  loss      the loss alone on Llama-3 sized logits: eager, compiled, chunked (torchtune's variants).
  compile-lora  what one PEFT LoRA layer keeps, eager vs compiled.
  alloc     the caching allocator: reserved vs allocated over steps of varying sequence length.
Needs a GPU, torch, transformers, peft, lightning, litgpt and bitsandbytes. Each case is separate:
one that fails records its error and the rest go on. Bytes are relative to the allocation before
the model was built; `whole_run` is max_memory_allocated over everything since then (what LitGPT prints).
"""

from __future__ import annotations

import gc
import json
import sys
import time
import traceback

import torch
import torch.nn.functional as F

CUDA = torch.device("cuda")
GiB = 2**30


class Meter:
    """Per-phase peaks of allocated, active and reserved bytes from the CUDA allocator."""

    def __init__(self) -> None:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        self.base = torch.cuda.memory_allocated()
        self.base_reserved = torch.cuda.memory_reserved()
        self.whole = 0
        self.phase = "init"
        self.peaks: dict[str, dict] = {}
        torch.cuda.reset_peak_memory_stats()

    def mark(self, phase: str) -> None:
        torch.cuda.synchronize()
        st = torch.cuda.memory_stats()
        alloc = st["allocated_bytes.all.peak"] - self.base
        self.whole = max(self.whole, alloc)
        rec = self.peaks.setdefault(self.phase, {"allocated": 0, "active": 0, "reserved": 0})
        rec["allocated"] = max(rec["allocated"], alloc)
        rec["active"] = max(rec["active"], st["active_bytes.all.peak"] - self.base)
        rec["reserved"] = max(rec["reserved"], st["reserved_bytes.all.peak"] - self.base_reserved)
        torch.cuda.reset_peak_memory_stats()
        self.phase = phase

    def live(self) -> int:
        return torch.cuda.memory_allocated() - self.base

    def summary(self) -> dict:
        self.mark("done")
        steps = {k: v for k, v in self.peaks.items() if k != "init"}
        last = max((k for k in steps if k.startswith("s")), default=None)
        out = {"whole_run": self.whole, "phases": self.peaks}
        if last:
            idx = last.split("_")[0]
            mine = [v for k, v in steps.items() if k.startswith(idx + "_")]
            out["step_peak_allocated"] = max(v["allocated"] for v in mine)
            out["step_peak_active"] = max(v["active"] for v in mine)
            out["step_peak_reserved"] = max(v["reserved"] for v in mine)
        return out


# ----------------------------------------------------------------------------------------------- models
LLAMA_32_3B = dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                   num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
                   max_position_embeddings=131072, rms_norm_eps=1e-5)
LLAMA_31_8B = dict(LLAMA_32_3B, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                   tie_word_embeddings=False)
LLAMA_32_1B = dict(LLAMA_32_3B, hidden_size=2048, num_hidden_layers=16, num_attention_heads=32)


def hf_llama(cfg: dict, dtype=torch.bfloat16):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    with torch.device(CUDA):
        return LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation="sdpa")).to(dtype)


# ---------------------------------------------------------------------------------------------- compile
def hf_step(meter, model, opt, ids, i: int, autocast: bool = False) -> None:
    """One transformers training step, its phases marked on ``meter`` (forward, backward, step); the loss
    is freed on return, as a training loop's next iteration frees it."""
    meter.mark(f"s{i}_forward")
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    meter.mark(f"s{i}_backward")
    loss.backward()
    meter.mark(f"s{i}_step")
    opt.step()
    opt.zero_grad(set_to_none=True)


def torchtune_like(name: str, compiled: bool, chunked: bool, batch=2, seq=4096, steps=3, cfg=None, lora=None,
                   ckpt=False) -> dict:
    """torchtune full_finetune_single_device (0.5): bf16 weights and AdamW states, the model returns fp32
    logits (TransformerDecoder: self.output(h).float()) or 8 bf16 chunks; logits deleted before backward;
    compile=True compiles each decoder layer and the loss. lora: PEFT targets (r=8, alpha 16, dropout 0)
    for lora_finetune_single_device; ckpt: activation checkpointing of every layer."""
    meter = Meter()
    model = hf_llama(cfg or LLAMA_32_3B)
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=lora),
                               autocast_adapter_dtype=False).base_model.model
        if ckpt:
            model.enable_input_require_grads()
    layers = model.model.layers
    if compiled:
        for layer in layers:
            layer.compile()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
    V = model.config.vocab_size

    def ce_sum(logits, labels):
        return F.cross_entropy(logits.float(), labels, reduction="sum")

    def ce_full(logits, labels):
        return F.cross_entropy(logits, labels)

    ce_chunk = torch.compile(ce_sum) if compiled else ce_sum
    ce = torch.compile(ce_full) if compiled else ce_full
    ids = torch.randint(0, V, (batch, seq), device=CUDA)
    t0 = time.time()
    for i in range(steps):
        meter.mark(f"s{i}_forward")
        h = model.model(input_ids=ids, use_cache=False).last_hidden_state  # a KV cache makes dynamo recompile per layer
        if chunked:
            chunks = [model.lm_head(c) for c in h.tensor_split(8, dim=1)]
            labels = ids.tensor_split(8, dim=1)
            loss = sum(ce_chunk(c.reshape(-1, V), lab.reshape(-1)) for c, lab in zip(chunks, labels)) / ids.numel()
            del chunks
        else:
            logits = model.lm_head(h).float()
            loss = ce(logits.reshape(-1, V), ids.reshape(-1))
            del logits
        del h
        meter.mark(f"s{i}_backward")
        loss.backward()
        meter.mark(f"s{i}_step")
        opt.step()
        opt.zero_grad(set_to_none=True)
        del loss
    out = {"case": name, "model": f"{model.config.num_hidden_layers}-layer Llama, h {model.config.hidden_size} "
           "(HF modules, random init)", "batch": batch, "seq": seq, "lora": lora, "gradient_checkpointing": ckpt,
           "compiled": compiled, "loss": "chunked" if chunked else "full", "seconds": round(time.time() - t0, 1)}
    out.update(meter.summary())
    del model, opt
    return out


def saved_per_layer(compiled: bool, seq=4096, count_input=False) -> dict:
    """Bytes one Llama-3.2-3B layer keeps for backward (live after forward, batch 1), eager vs compiled."""
    model = hf_llama(LLAMA_32_3B)
    layer = model.model.layers[0]
    if compiled:
        layer.compile()
    h = model.config.hidden_size
    pos = torch.arange(seq, device=CUDA)[None]
    emb = model.model.rotary_emb(torch.zeros(1, device=CUDA, dtype=torch.bfloat16), pos)
    for _ in range(2):  # the first call compiles
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        # count_input: the input is made inside the window and dropped by the caller, so it counts if kept
        x = torch.randn(1, seq, h, device=CUDA, dtype=torch.bfloat16, requires_grad=True)
        if not count_input:
            before = torch.cuda.memory_allocated()
        y = layer(x, position_embeddings=emb, position_ids=pos)
        y = y[0] if isinstance(y, tuple) else y
        torch.cuda.synchronize()
        if count_input:
            x = None  # the caller's reference goes: what the graph keeps of it stays counted
        kept = torch.cuda.memory_allocated() - before - y.numel() * y.element_size()
        y.sum().backward()
        del y, x
    inter = model.config.intermediate_size
    del model
    return {"case": f"layer-saved-{'compiled' if compiled else 'eager'}{'-with-input' if count_input else ''}",
            "seq": seq, "hidden": h,
            "intermediate": inter, "kept_bytes": kept, "per_token": kept / seq}


# ---------------------------------------------------------------------------------------------- litgpt
def patch_bnb_keeps_input(enabled: bool = True):
    """bitsandbytes < 0.43.2 (PR #1270): MatMul4Bit kept its input A for backward (ctx.tensors = (A, B)).
    Returns the call that undoes the patch (a no-op when not enabled)."""
    if not enabled:
        return lambda: None
    from bitsandbytes.autograd._functions import MatMul4Bit

    orig = MatMul4Bit.forward

    def forward(ctx, A, B, out=None, bias=None, quant_state=None):
        res = orig(ctx, A, B, out, bias, quant_state)
        if any(ctx.needs_input_grad[:2]):
            ctx.tensors = (A, ctx.tensors[1])
        return res

    MatMul4Bit.forward = staticmethod(forward)

    def undo() -> None:
        MatMul4Bit.forward = staticmethod(orig)

    return undo


def litgpt_case(name: str, model_name: str, method: str, batch: int, seq: int, rank=32, precision="bf16-true",
                old_bnb=False, steps=3, keep_outputs=False) -> dict:
    """LitGPT finetune/lora.py's loop: lm_head in 128-token chunks, chunked_cross_entropy, fabric.backward,
    AdamW (PagedAdamW under bitsandbytes), zero_grad; LoRA on query and value, dropout 0.05.
    keep_outputs: like LitGPT, the loop's logits live on until the next forward replaces them."""
    import lightning as L
    from litgpt.lora import GPT, Config, mark_only_lora_as_trainable
    from litgpt.utils import chunked_cross_entropy

    undo = patch_bnb_keeps_input(old_bnb)
    meter = Meter()
    plugins = None
    if method == "qlora":
        from lightning.fabric.plugins import BitsandbytesPrecision

        plugins, precision = BitsandbytesPrecision("nf4", torch.bfloat16), None
    fabric = L.Fabric(devices=1, accelerator=CUDA.type, precision=precision, plugins=plugins)
    config = Config.from_name(model_name, lora_r=rank, lora_alpha=16, lora_dropout=0.05, lora_query=True,
                              lora_key=False, lora_value=True, lora_projection=False, lora_mlp=False, lora_head=False)
    with fabric.init_module(empty_init=False):
        model = GPT(config)
    mark_only_lora_as_trainable(model)
    model = fabric.setup_module(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if method == "qlora":
        import bitsandbytes as bnb

        opt = bnb.optim.PagedAdamW(trainable, lr=2e-4, weight_decay=0.0, betas=(0.9, 0.95))
    else:
        opt = torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.0, betas=(0.9, 0.95))
    opt = fabric.setup_optimizers(opt)
    model.max_seq_length = seq
    after_setup = meter.live()
    ids = torch.randint(0, config.vocab_size, (batch, seq), device=CUDA)
    for i in range(steps):
        meter.mark(f"s{i}_forward")
        logits = model(ids, lm_head_chunk_size=128)
        logits[-1] = logits[-1][..., :-1, :]
        loss = chunked_cross_entropy(logits, ids[..., 1:])
        meter.mark(f"s{i}_backward")
        fabric.backward(loss)
        meter.mark(f"s{i}_step")
        opt.step()
        opt.zero_grad()
        if not keep_outputs:
            del logits, loss
    out = {"case": name, "framework": "litgpt", "keep_outputs": keep_outputs, "model": model_name, "method": method, "precision": precision or "bnb nf4",
           "batch": batch, "seq": seq, "rank": rank, "bnb_keeps_input": old_bnb, "after_setup": after_setup,
           "params": sum(p.numel() for p in model.parameters()), "trainable": sum(p.numel() for p in trainable)}
    out.update(meter.summary())
    undo()  # the cases after this one run bitsandbytes as installed
    del model, opt, fabric
    return out


# ------------------------------------------------------------------------------------------------ peft
def peft_qlora(name: str, targets, batch=1, seq=1024, steps=3, old_bnb=False) -> dict:
    """HF + PEFT QLoRA as the PEFT docs run it: NF4 double-quantized Linear4bit layers (compute bf16),
    prepare_model_for_kbit_training (non-4-bit params to fp32, gradient checkpointing), LoRA r=8
    dropout 0.05, autocast bf16 (Trainer bf16=True), outputs dropped before backward, fused AdamW."""
    import bitsandbytes as bnb
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    undo = patch_bnb_keeps_input(old_bnb)
    meter = Meter()
    model = hf_llama(LLAMA_32_1B)
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for cname, child in list(parent.named_children()):
                if isinstance(child, torch.nn.Linear):
                    q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=False,
                                          compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4",
                                          device="meta")
                    q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                                 quant_type="nf4").to(CUDA)
                    setattr(parent, cname, q)
                    del child
    gc.collect()
    model.is_loaded_in_4bit = True
    model = prepare_model_for_kbit_training(model)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=targets,
                                             task_type="CAUSAL_LM"))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=2e-4, fused=True)
    after_setup = meter.live()
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), device=CUDA)
    model.train()
    for i in range(steps):
        hf_step(meter, model, opt, ids, i, autocast=True)
    dtypes: dict[str, int] = {}
    for p in model.parameters():
        dtypes[str(p.dtype)] = dtypes.get(str(p.dtype), 0) + p.numel()
    out = {"case": name, "framework": "peft", "model": "llama-3.2-1b (random init)", "method": "qlora",
           "targets": targets, "batch": batch, "seq": seq, "bnb_keeps_input": old_bnb, "after_setup": after_setup,
           "param_dtypes": dtypes, "gradient_checkpointing": bool(getattr(model, "is_gradient_checkpointing", True))}
    out.update(meter.summary())
    undo()
    del model, opt
    return out


def loss_buffers(name: str, variant: str, tokens=8192, vocab=128256, chunks=8) -> dict:
    """The loss alone on bf16 logits of tokens x vocab (a leaf that needs grad): live bytes beyond the logits
    after forward, and the peaks of forward and backward beyond them. variant: eager (F.cross_entropy on
    logits.float()), compiled (the same function under torch.compile), compiled-fp32-input (the upcast
    eager, the loss compiled: torchtune's non-chunked path), chunked / chunked-compiled (8 pieces,
    each upcast inside the loss, torchtune's CEWithChunkedOutputLoss)."""
    torch.manual_seed(0)
    x = torch.randn(tokens, vocab, device=CUDA, dtype=torch.bfloat16, requires_grad=True)
    y = torch.randint(0, vocab, (tokens,), device=CUDA)

    def ce(z, t):
        return F.cross_entropy(z.float(), t, reduction="sum")

    fn = torch.compile(ce) if "compiled" in variant else ce
    res = {"case": name, "variant": variant, "tokens": tokens, "vocab": vocab, "logits_bytes": x.numel() * 2}

    def forward():
        if variant.startswith("chunked"):
            return sum(fn(a, b) for a, b in zip(x.tensor_split(chunks), y.tensor_split(chunks)))
        return FP32_CE(x.float(), y) if variant == "compiled-fp32-input" else fn(x, y)

    return {**res, **_loss_peaks(forward, x)}


FP32_CE = torch.compile(F.cross_entropy)


def _loss_peaks(forward, leaf) -> dict:
    """Bytes beyond what exists before: the forward's peak, what it leaves, backward's peak and what that
    leaves (the leaf's gradient). Run twice; the second (compiled already) is reported."""
    for _ in range(2):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        loss = forward()
        torch.cuda.synchronize()
        res = {"forward_peak": torch.cuda.max_memory_allocated() - base,
               "after_forward": torch.cuda.memory_allocated() - base}
        torch.cuda.reset_peak_memory_stats()
        loss.backward()
        torch.cuda.synchronize()
        res.update(backward_peak=torch.cuda.max_memory_allocated() - base,
                   after_backward=torch.cuda.memory_allocated() - base)
        leaf.grad = None
        del loss
    return res


def chunked_head_loss(name: str, compiled: bool, tokens=8192, hidden=3072, vocab=128256, chunks=8) -> dict:
    """torchtune's chunked output: each chunk's logits from its own LM-head matmul (hidden state a leaf that
    needs grad, head frozen), the loss per chunk with the upcast inside (compiled or eager). Bytes beyond
    the hidden state and the head: after forward, and the backward peak."""
    torch.manual_seed(0)
    hs = torch.randn(tokens, hidden, device=CUDA, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(vocab, hidden, device=CUDA, dtype=torch.bfloat16) * 0.02
    y = torch.randint(0, vocab, (tokens,), device=CUDA)

    def ce(z, t):
        return F.cross_entropy(z.float(), t, reduction="sum")

    fn = torch.compile(ce) if compiled else ce
    res = {"case": name, "compiled": compiled, "tokens": tokens, "vocab": vocab, "chunks": chunks,
           "logits_bytes": tokens * vocab * 2}

    def forward():
        outs = [F.linear(c, w) for c in hs.tensor_split(chunks)]
        return sum(fn(o, t) for o, t in zip(outs, y.tensor_split(chunks)))

    return {**res, **_loss_peaks(forward, hs)}


def lora_layer_saved(compiled: bool, targets, seq=4096) -> dict:
    """Bytes one Llama-3.2-3B layer with PEFT LoRA (r=8, dropout 0) keeps for backward, eager vs compiled."""
    from peft import LoraConfig, get_peft_model

    model = hf_llama(LLAMA_32_3B)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets))
    base_model = model.base_model.model.model
    layer = base_model.layers[0]
    if compiled:
        layer.compile()
    h = base_model.config.hidden_size
    x = torch.randn(1, seq, h, device=CUDA, dtype=torch.bfloat16, requires_grad=True)
    pos = torch.arange(seq, device=CUDA)[None]
    emb = base_model.rotary_emb(x, pos)
    for _ in range(2):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        y = layer(x, position_embeddings=emb, position_ids=pos)
        y = y[0] if isinstance(y, tuple) else y
        torch.cuda.synchronize()
        kept = torch.cuda.memory_allocated() - before - y.numel() * y.element_size()
        y.sum().backward()
        del y
    del model
    return {"case": f"lora-layer-saved-{'compiled' if compiled else 'eager'}", "targets": targets, "seq": seq,
            "kept_bytes": kept, "per_token": kept / seq}


# ----------------------------------------------------------------------------------------------- alloc
def allocator(name: str, lora: bool, ckpt: bool, seqs: list[int], batch=1) -> dict:
    """Reserved vs allocated per step of a Llama-3.2-1B-shaped model as sequence lengths vary."""
    meter = Meter()
    model = hf_llama(LLAMA_32_1B)
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM"))
        if ckpt:
            model.enable_input_require_grads()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    steps = []
    for i, s in enumerate(seqs):
        ids = torch.randint(0, model.config.vocab_size, (batch, s), device=CUDA)
        hf_step(meter, model, opt, ids, i)
        meter.mark(f"s{i}_end")
        ph = [meter.peaks[f"s{i}_{p}"] for p in ("forward", "backward", "step")]
        steps.append({"seq": s, "allocated": max(p["allocated"] for p in ph),
                      "reserved": max(p["reserved"] for p in ph),
                      "reserved_now": torch.cuda.memory_reserved() - meter.base_reserved})
    out = {"case": name, "model": "llama-3.2-1b (random init)", "lora": lora, "gradient_checkpointing": ckpt,
           "batch": batch, "alloc_conf": __import__("os").environ.get("PYTORCH_CUDA_ALLOC_CONF", ""), "steps": steps}
    del model, opt
    return out


GROUPS = {
    "litgpt": [
        lambda: litgpt_case("litgpt-7b-lora-b2s512", "Llama-2-7b-hf", "lora", 2, 512),
        lambda: litgpt_case("litgpt-7b-qlora-b2s512", "Llama-2-7b-hf", "qlora", 2, 512),
        lambda: litgpt_case("litgpt-7b-qlora-b2s512-bnb042", "Llama-2-7b-hf", "qlora", 2, 512, old_bnb=True),
        lambda: litgpt_case("litgpt-1b-lora-b1s512", "Llama-3.2-1B", "lora", 1, 512),
        lambda: litgpt_case("litgpt-7b-lora-bf16mixed-b1s1304", "Llama-2-7b-hf", "lora", 1, 1304, rank=8,
                            precision="bf16-mixed"),
    ],
    "peft": [
        lambda: peft_qlora("peft-qlora-qv-b1s1024", ["q_proj", "v_proj"]),
        lambda: peft_qlora("peft-qlora-all-b2s1024", "all-linear", batch=2),
        lambda: peft_qlora("peft-qlora-qv-b1s1024-bnb042", ["q_proj", "v_proj"], old_bnb=True),
    ],
    "compile": [
        lambda: saved_per_layer(False),
        lambda: saved_per_layer(True),
        lambda: torchtune_like("tt3b-eager-full", False, False),
        lambda: torchtune_like("tt3b-compile-full", True, False),
        lambda: torchtune_like("tt3b-compile-chunked", True, True),
        lambda: torchtune_like("tt3b-eager-chunked", False, True),
    ],
    "loss": [lambda v=v: loss_buffers(f"loss-{v}", v) for v in
             ("eager", "compiled", "compiled-fp32-input", "chunked", "chunked-compiled")],
    "tt8b": [
        lambda: torchtune_like("tt8b-lora-qv-ckpt-compile-chunked", True, True, 2, 2048, cfg=LLAMA_31_8B,
                               lora=["q_proj", "v_proj"], ckpt=True),
        lambda: torchtune_like("tt8b-lora-qv-ckpt-eager-chunked", False, True, 2, 2048, cfg=LLAMA_31_8B,
                               lora=["q_proj", "v_proj"], ckpt=True),
    ],
    "recheck": [
        lambda: litgpt_case("litgpt-7b-qlora-b2s512-bnb042-held", "Llama-2-7b-hf", "qlora", 2, 512, old_bnb=True,
                            keep_outputs=True),
        lambda: saved_per_layer(True, count_input=True),
        lambda: saved_per_layer(False, count_input=True),
        lambda: chunked_head_loss("chunked-head-loss-compiled", True),
        lambda: chunked_head_loss("chunked-head-loss-eager", False),
    ],
    "compile-lora": [
        lambda: lora_layer_saved(False, ["q_proj", "v_proj"]),
        lambda: lora_layer_saved(True, ["q_proj", "v_proj"]),
        lambda: lora_layer_saved(False, "all-linear"),
        lambda: lora_layer_saved(True, "all-linear"),
    ],
    "alloc": [
        lambda: allocator("alloc-lora-ckpt-varlen", True, True, [2048, 512, 1536, 4096, 1024, 3000, 4096], batch=2),
        lambda: allocator("alloc-full-ckpt-s4096", False, True, [4096, 4096, 4096]),
        lambda: allocator("alloc-lora-varlen", True, False, [2048, 512, 1536, 4096, 1024, 3000, 4096]),
    ],
}


def main() -> None:
    path = sys.argv[1]
    groups = sys.argv[2:] or list(GROUPS)
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "device": torch.cuda.get_device_name(0)}
    for mod in ("peft", "bitsandbytes", "lightning", "litgpt"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - a missing package only skips its cases
            versions[mod] = f"missing: {e}"
    doc = {"script": "scripts/measure_frameworks_cuda.py", "versions": versions, "cases": []}
    for g in groups:
        for fn in GROUPS[g]:
            t0 = time.time()
            try:
                res = fn()
            except Exception:  # noqa: BLE001 - record and go on to the next case
                res = {"group": g, "error": traceback.format_exc()[-1500:]}
            res["wall_s"] = round(time.time() - t0, 1)
            doc["cases"].append(res)
            print(json.dumps({k: v for k, v in res.items() if k != "phases"}), flush=True)
            with open(path, "w") as f:
                json.dump(doc, f, indent=1)
            gc.collect()
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
