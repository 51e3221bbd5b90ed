"""What --help says of each option: the metavars that say what a value may be."""

from __future__ import annotations

from typing import Callable

# What each value may be, as --help shows it (click's own metavars say only <str> or <int>).
METAVARS = {
    "model": "<preset|file|hub-id>[,...]", "gpu": "[Nx]<gpu>[,...]", "config": "<config.json|dir|hub-id>",
    "seq": "<tokens: 8k>", "prompt": "<tokens: 4000>", "output": "<tokens: 256>", "minimum": "<tokens: 32k>",
    "prefill_chunk": "<tokens: 8k>", "gpu_memory": "<bytes: 80GB>", "reserve": "<bytes: 1GiB>",
    "ttft_target": "<time: 650ms>", "tpot_target": "<time: 50ms>", "step_time": "<time: 1.2s>",
    "tokens": "<count: 15T>", "tokens_per_s": "<count: 3.5k>", "gpu_hours": "<count: 6.4M>",
    "sweep": "<name=a,b|A..B>", "png": "<file.png>", "out": "<file.yaml>", "gpu_util": "<fraction: 0.9>",
    "efficiency": "<fraction: 0.4>", "lora_dropout": "<fraction: 0.05>",
}


def describe(command) -> None:
    """Metavars that say what a value may be, and shell completion of preset names for --model/--gpu."""
    for param in command.params:
        if param.name in METAVARS:
            param.metavar = METAVARS[param.name]
        if param.name in ("model", "gpu"):
            param._custom_shell_complete = _complete_presets("models" if param.name == "model" else "gpus")


def _complete_presets(kind: str) -> Callable:
    def complete(ctx, param, incomplete: str) -> list[str]:
        from ..presets import catalog

        head, _, last = incomplete.rpartition(",")  # a,b compares: complete the last name
        prefix = head + "," if head else ""
        return [prefix + name for name in sorted(catalog(kind)[0]) if name.startswith(last.lower())]

    return complete
