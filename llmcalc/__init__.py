"""llmcalc: size transformer LLMs before you rent GPUs (parameters, FLOPs, memory, MFU, latency)."""

import sys as _sys
import types as _types

__version__ = "0.1.0"

# The Python API (llmcalc/api.py), imported on first use so the CLI's start-up does not pay for it: a function for
# each command but the presets listing (max-seq is max_seq, serve-plan serve_plan).
# params, flops, memory and plan are also the core modules of those names: each such module is callable
# and runs the API function, so `llmcalc.memory(...)` works whether or not the module was imported.
_API = ("params", "flops", "memory", "mfu", "latency", "max_seq", "max_batch", "serve_plan", "plan", "Result")
_MODULES = ("params", "flops", "memory", "plan")
__all__ = ["__version__", *_API]


class _CallableModule(_types.ModuleType):
    """A core module that is also the API function of its name (llmcalc.params(...) is api.params(...))."""

    def __call__(self, *args, **kwargs):
        from . import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


def _make_callable(module_name: str) -> None:
    _sys.modules[module_name].__class__ = _CallableModule


def __dir__() -> list[str]:  # the API's names too, though they load on first use (tab completion, help)
    return sorted({*globals(), *_API})


def __getattr__(name: str):
    if name in _MODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    if name in _API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'llmcalc' has no attribute {name!r}")
