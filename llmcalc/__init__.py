"""llmcalc: size transformer LLMs before you rent GPUs (parameters, FLOPs, memory, MFU, latency)."""

__version__ = "0.1.0"
