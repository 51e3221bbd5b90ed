"""Memory per GPU for training and inference, derived from the architecture's tensors.

Where each row comes from (module:function):
  weights, weights/shard, weights/gathered, weights/frozen, weights/adapters  training.add_weights
    (bytes per parameter: states.full_states / states.adapter_states; parameters: placement.stage_params)
  weights, weights/quantized, weights/scales, weights/unquantized, weights/buffers (inference)
                                              inference.add_weights (placement.ParamSplit.weight_bytes;
                                              a checkpoint's own layout: quant.WeightFormat)
  gradients                                   training.add_gradients (states.model_state_bytes)
  optimizer, optimizer/master, optimizer/adam_m, ...  training.add_optimizer (states.state_rows)
  activations, activations/per_layer/*, activations/layers, /embedding, /head, /transient
                                              training.add_activations (tensors: activations.layer_tensors)
  non_torch, activations, logits, cuda_graphs, reserve (inference)
                                              engines.<engine>.stage (engines/vllm.py ... hf.py)
  logits, logits/log_probs, logits/grad       training.add_logits
  logits/softmax, logits/output (in-place loss)  training.add_logits (loss._in_place: Megatron's)
  kv_cache, kv_free, summary kv_cache_*, max_concurrency
                                              inference.pool_result / inference.growing_stage
  reserve, total, cpu/*                       training.train_stage; the inference closers above
  summary capacity, usable, fits, headroom    per_gpu.memory_breakdown

The package imports a submodule only when one of its names is first used (``__getattr__``
below), so `params`, which needs only placement, stays quick to start.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Public names -> the submodule that defines them.
_EXPORTS = {
    "memory_breakdown": "per_gpu",
    "MemorySettings": "settings", "Precision": "precision", "PRECISIONS": "precision", "MODES": "settings",
    "FINETUNES": "settings", "OFFLOADS": "settings", "ATTENTION_IMPLS": "settings", "KV_BLOCK": "settings",
    "DEFAULT_RESERVE": "settings",
    "check_layout": "placement", "ParamSplit": "placement", "model_params": "placement",
    "Saved": "activations", "layer_tensors": "activations",
    "model_state_bytes": "states", "state_rows": "states", "QLORA_BYTES": "states",
    "MiniSeqPieces": "minisequence", "mini_seq_pieces": "minisequence", "closed_form_max_seq": "minisequence",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


from .. import _make_callable  # noqa: E402 - llmcalc.memory(...) is the API function (llmcalc/__init__.py)

_make_callable(__name__)
