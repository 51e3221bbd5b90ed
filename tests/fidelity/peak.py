"""The peak of one real training step, measured: live tensor bytes over forward, loss, backward and the
optimizer step of a Hugging Face model (optionally with PEFT LoRA), on CPU or CUDA.

On CUDA the allocator's own counters answer (torch.cuda.max_memory_allocated per phase). On CPU there
is no such counter, so `LiveBytes` counts it: a TorchDispatchMode that sees every tensor an operator
returns, counts each storage once when it first appears, and uncounts it when the storage is freed
(a weakref finalizer: PyTorch keeps one Python object per live storage). What it cannot see is an
operator's internal scratch space that never leaves the kernel; CUDA's counter does see that.

To look like a CUDA run, the CPU step uses what CUDA would: AdamW's foreach implementation (torch's
default on CUDA) and 1-byte dropout masks (checked by the activation tests).

Used by tests/fidelity/test_peak_memory.py and runnable by hand:

    python tests/fidelity/peak.py [cuda]
"""

from __future__ import annotations

import gc
import json
import sys
import weakref
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

PHASES = ("load", "forward", "loss", "backward", "step")


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages alive now, their peak, and the phase and operator the peak fell in."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.phase = "load"
        self.at_peak = ("load", "")
        self.phase_peak: dict[str, int] = {}
        self._sizes: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t, func)
        return out

    def _track(self, t: torch.Tensor, func) -> None:
        st = t.untyped_storage()
        key = st._cdata
        if key in self._sizes or st.nbytes() == 0:
            return
        n = st.nbytes()
        self._sizes[key] = n
        self.live += n
        weakref.finalize(st, self._free, key)
        if self.live > self.peak:
            self.peak, self.at_peak = self.live, (self.phase, str(func))
        self.phase_peak[self.phase] = max(self.phase_peak.get(self.phase, 0), self.live)

    def _free(self, key: int) -> None:
        self.live -= self._sizes.pop(key, 0)

    def enter(self, phase: str) -> None:
        self.phase = phase
        self.phase_peak[phase] = max(self.phase_peak.get(phase, 0), self.live)


@dataclass
class Case:
    """One training step to measure: a Llama-shaped model from a config and how it trains."""

    name: str
    config: dict
    seq: int
    batch: int = 1
    attn: str = "sdpa"
    lora: str | None = None  # None (full fine-tuning), "qv" or "all"
    rank: int = 8
    dropout: float = 0.0  # LoRA dropout (CPU keeps its mask in the input dtype, CUDA in 1 byte)
    ckpt: bool = False
    weights: str = "bf16"  # bf16 (pure 16-bit, states in bf16) or fp32-autocast (fp32 weights, bf16 autocast)
    extra: dict = field(default_factory=dict)


class CudaCounter:
    """The same interface as LiveBytes, read from the CUDA allocator."""

    def __init__(self) -> None:
        self.base = torch.cuda.memory_allocated()
        self.phase_peak: dict[str, int] = {}
        self.phase = "load"
        self.peak = 0
        self.at_peak = ("load", "")
        torch.cuda.reset_peak_memory_stats()

    @property
    def live(self) -> int:
        return torch.cuda.memory_allocated() - self.base

    def enter(self, phase: str) -> None:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - self.base
        self.phase_peak[self.phase] = max(self.phase_peak.get(self.phase, 0), peak)
        if peak > self.peak:
            self.peak, self.at_peak = peak, (self.phase, "")
        torch.cuda.reset_peak_memory_stats()
        self.phase = phase

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.enter("done")


def _build(case: Case, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    dtype = torch.float32 if case.weights == "fp32-autocast" else torch.bfloat16
    cfg = LlamaConfig(**case.config, attn_implementation=case.attn)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype)
    if case.ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if case.lora:
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "v_proj"] if case.lora == "qv" else "all-linear"
        model = get_peft_model(model, LoraConfig(r=case.rank, lora_alpha=2 * case.rank, lora_dropout=case.dropout,
                                                 target_modules=targets, task_type="CAUSAL_LM"))
        if case.ckpt:
            model.enable_input_require_grads()
    return model


def measure(case: Case, device: str = "cpu", steps: int = 2) -> dict:
    """Live bytes at the end of each phase and the peak within it, for the last of `steps` steps
    (the first step creates the optimizer states; the second has them from the start)."""
    gc.collect()
    counter = CudaCounter() if device == "cuda" else LiveBytes()
    with counter:
        model = _build(case, device)
        trainable = [p for p in model.parameters() if p.requires_grad]
        model.get_output_embeddings().register_forward_hook(lambda *_: counter.enter("loss"))
        opt = torch.optim.AdamW(trainable, lr=1e-5, foreach=True)
        model.train()
        ids = torch.randint(0, case.config["vocab_size"], (case.batch, case.seq), device=device)
        result = {"case": case.name, "device": device, "params": sum(p.numel() for p in model.parameters()),
                  "trainable": sum(p.numel() for p in trainable), "after_load": counter.live}
        for _ in range(steps):
            counter.phase_peak.clear()
            counter.peak = 0
            counter.enter("forward")
            with torch.autocast(device, dtype=torch.bfloat16, enabled=case.weights == "fp32-autocast"):
                out = model(input_ids=ids, labels=ids)  # the loss runs inside, from the LM head's hook on
            ends = {"loss": counter.live}
            counter.enter("backward")
            out.loss.backward()
            ends["backward"] = counter.live
            counter.enter("step")
            opt.step()
            opt.zero_grad(set_to_none=True)
            ends["step"] = counter.live
            del out
            counter.enter("done")
        result.update({f"end_{k}": v for k, v in ends.items()})
        result.update({f"peak_{k}": v for k, v in counter.phase_peak.items() if k in PHASES})
        result["peak"] = counter.peak
        result["peak_phase"], result["peak_op"] = counter.at_peak
        del model, opt, trainable
    gc.collect()
    return result


TINY = dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=8,
            num_key_value_heads=4, vocab_size=8000, max_position_embeddings=4096, tie_word_embeddings=False)

if __name__ == "__main__":
    dev = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    for c in (Case("full", TINY, 512), Case("lora-qv", TINY, 512, lora="qv")):
        print(json.dumps(measure(c, dev)))
