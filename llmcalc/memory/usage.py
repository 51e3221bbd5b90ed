"""Which settings an estimate never reads: the core's answer to "did my option do anything?".

`memory_breakdown` reads a MemorySettings field only where the mode, the engine, the framework
or the weights' format give it a meaning (an engine knob that engine lacks, LoRA options with
nothing to adapt, a group size for 16-bit weights). `unread` names those fields with the reason;
a front end intersects them with what the user set and says so, rather than ignoring it in silence.
Options that contradict the mode outright (--zero in inference) are refused by MemorySettings itself.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, TYPE_CHECKING

from ..dtypes import FLOAT_DTYPES, GGUF_DTYPES, GROUPED_DTYPES
from ..spec import ModelSpec
from .engines import ENGINES, KNOB_FLAGS, RUNNING_CAP
from .per_gpu import as_shipped
from .settings import MemorySettings

if TYPE_CHECKING:  # annotations only: a GPU lookup loads it
    from ..gpuspec import GPUSpec



class Rule(NamedTuple):
    fields: tuple[str, ...]
    unread: Callable[[ModelSpec, GPUSpec | None, MemorySettings], bool]
    reason: Callable[[MemorySettings], str]


def _train(s: MemorySettings) -> bool:
    return s.mode == "train"


def _weights_dtype(m: ModelSpec, s: MemorySettings) -> str:
    return m.quant_dtype if as_shipped(m, s) else s.dtype


_NO_LORA = "without --finetune lora or qlora (full fine-tuning has no adapters)"
_INFER = "in inference (it keeps no optimizer and computes no loss)"
RULES: tuple[Rule, ...] = (
    Rule(("kv_dtype",), lambda m, g, s: _train(s), lambda s: "in training (it keeps no KV cache)"),
    Rule(("lora_rank", "lora_targets", "lora_dropout"), lambda m, g, s: _train(s) and s.finetune == "full",
         lambda s: _NO_LORA),
    Rule(("bitsandbytes",), lambda m, g, s: _train(s) and s.finetune != "qlora",
         lambda s: "without --finetune qlora (only QLoRA runs on bitsandbytes' 4-bit matmul)"),
    Rule(("optimizer", "loss_dtype"), lambda m, g, s: not _train(s), lambda s: _INFER),
    Rule(("lora_rank", "lora_targets"), lambda m, g, s: not _train(s),
         lambda s: "in inference (serving LoRA adapters is not modelled: the base model is sized)"),
    Rule(("reserve",), lambda m, g, s: not _train(s) and "reserve" not in ENGINES[s.engine].reads,
         lambda s: f"with --engine {s.engine} (it sizes its own memory outside the pool; lower --gpu-util instead)"),
    Rule(("group_size",), lambda m, g, s: s.dtype not in GROUPED_DTYPES or as_shipped(m, s)
         or (_train(s) and s.finetune == "qlora"),
         lambda s: "unless --dtype int4 or fp4 quantizes the weights (only they are stored in groups; "
                   "QLoRA's NF4 and a checkpoint's own layout fix theirs)"),
    Rule(("keep_16bit",), lambda m, g, s: not _train(s) and _weights_dtype(m, s) in FLOAT_DTYPES + GGUF_DTYPES,
         lambda s: f"with {s.dtype} weights ("
                   + ("a GGUF file's mix of types is fixed)" if s.dtype in GGUF_DTYPES else "nothing is quantized)")),
    Rule(("attention_impl",), lambda m, g, s: not _train(s) and "attention_impl" not in ENGINES[s.engine].reads,
         lambda s: f"with --engine {s.engine} (it picks its own attention kernel)"),
    Rule(("sp",), lambda m, g, s: not _train(s),
         lambda s: "in inference (the engines keep no activations between steps to split by sequence)"),
    *(Rule((knob,), lambda m, g, s, k=knob: not _train(s) and k not in ENGINES[s.engine].knobs,
           lambda s, k=knob: f"on the memory of --engine {s.engine} (its running-request cap, which latency and "
                             "max-batch apply)" if k == "max_num_seqs" and s.engine in RUNNING_CAP
           else f"with --engine {s.engine} (it has no such setting)") for knob in KNOB_FLAGS),
    Rule(("gpu_util",), lambda m, g, s: _train(s) and g is None and s.gpu_memory is None,
         lambda s: "without --gpu or --gpu-memory (there is no capacity to compare with)"),
)


def unread(m: ModelSpec, gpu: GPUSpec | None, s: MemorySettings) -> dict[str, str]:
    """MemorySettings field (``sp`` for ``s.parallel.sp``) -> why an estimate under ``s`` ignores it."""
    return {name: rule.reason(s) for rule in RULES if rule.unread(m, gpu, s) for name in rule.fields}
