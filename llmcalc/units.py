"""Parse sizes people type ("8k", "15T", "80GiB", "650ms") and format base units for people.

Conventions (README "Units"):
- Sequence lengths: k = 1024 (context windows are powers of two: 8k = 8192, 128k = 131072), and so a step's
  tokens, a whole number of sequences (4M = 4,194,304 = 512 x 8k: Llama 2 and 3's "4M tokens" a step).
- Other counts (tokens, GPU-hours, parameters): decimal, k = 1e3, M = 1e6, B/G = 1e9, T = 1e12.
- Bytes: "GB" = 1e9 and "GiB" = 2**30, exactly as written; memory is displayed in binary units.
- Durations: plain numbers are seconds; ms, us, s, min, h, d suffixes.
"""

from __future__ import annotations

import math
import re

_NUMBER = r"\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*"
_DECIMAL = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15}
_BINARY_LEN = {"": 1, "k": 1024, "m": 1024**2}
_BYTES = {"": 1, "b": 1,
          "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "pb": 1e15,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50}
_SECONDS = {"": 1, "s": 1, "ms": 1e-3, "us": 1e-6, "min": 60, "m": 60, "h": 3600, "d": 86400}


class UnitError(ValueError):
    pass


MAX_LENGTH = 2**31  # tokens: far beyond any context, small enough to keep every product finite
# The largest values llmcalc computes with, whether typed, given as an option or read from a file:
MAX_QUANTITY = 10**15  # any count, size or duration (a petabyte, a quadrillion tokens)
MAX_LAYERS = 10**4  # layer counts (the deepest published models have ~200); loops run over layers
MAX_NORMS = 8  # norms_per_layer: 1 (parallel block) to 4 (Gemma-2), each a saved tensor a loop runs over


def _split(text: str, table: dict[str, float], what: str, example: str, zero: bool = False) -> float:
    """A number with a unit suffix; counts, lengths and durations must be above zero (zero: a size may be 0)."""
    text = str(text)
    if text.isascii() and text.isdigit() and len(text) < 16:  # "4096": no suffix, no regex to compile
        value = float(text)
    else:
        match = re.fullmatch(_NUMBER + r"([A-Za-z]*)\s*", text)
        if not match or match.group(2).lower() not in table:
            raise UnitError(f"cannot read {text!r} as {what} (try e.g. {example})")
        value = float(match.group(1)) * table[match.group(2).lower()]
    if not math.isfinite(value) or value > MAX_QUANTITY:
        raise UnitError(f"{text!r} is too large to be {what} (at most 10^15: a petabyte, a quadrillion tokens)")
    if value < 0 or (value == 0 and not zero):
        raise UnitError(f"{text!r} must be {'at least zero' if zero else 'more than zero'} to be {what} (e.g. {example})")
    return value


def parse_count(text: str | float) -> float:
    """Decimal count: '15T' -> 15e12, '6.4M' -> 6.4e6, '300e9' -> 3e11."""
    if isinstance(text, (int, float)):
        return float(text)
    return _split(text, _DECIMAL, "a count", "15T, 6.4M, 300e9")


def parse_length(text: str | int) -> int:
    """Sequence length in tokens: '8k' -> 8192, '128k' -> 131072, '4000' -> 4000."""
    value = _split(text, _BINARY_LEN, "a token length", "4096, 8k, 128k")
    if value != int(value):
        raise UnitError(f"a token length must be a whole number, got {text!r}")
    if value > MAX_LENGTH:
        raise UnitError(f"{text!r} tokens is longer than llmcalc handles (at most {MAX_LENGTH:,})")
    return int(value)


def parse_batch_tokens(text: str | float) -> int:
    """A step's tokens, sequences x a power-of-two length, so k = 1024 and M = 2**20 as for lengths:
    '4M' -> 4194304, '1024k' -> 1048576, '4e6' -> 4000000."""
    value = _split(str(text), _BINARY_LEN, "a step's tokens", "4M, 1024k, 4194304")  # an API number as typed
    if value != int(value):
        suffixed = str(text).strip()[-1:].isalpha()  # 4.2M, not 4000.5: say what the suffix made of it
        read = f" ({value:,.1f} tokens: k and M are 1024 and 2^20 here, as in a length)" if suffixed else ""
        raise UnitError(f"a step's tokens must be a whole number, at least 1, got {text!r}{read}; 4M is 4,194,304, "
                        "4e6 is 4,000,000")
    return int(value)


def parse_bytes(text: str | float) -> int:
    """'80GB' -> 80e9, '80GiB' -> 80 * 2**30; a bare number is bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    return int(round(_split(text, _BYTES, "a memory size", "80GB, 80GiB", zero=True)))


def parse_seconds(text: str | float) -> float:
    """'650ms' -> 0.65, '0.755' -> 0.755, '2h' -> 7200."""
    if isinstance(text, (int, float)):
        return float(text)
    return _split(text, _SECONDS, "a duration", "650ms, 0.755, 2h")


def parse_overhead(text: str | float) -> float:
    """A duration that may be zero (--request-overhead 0: nothing in front of the engine)."""
    if isinstance(text, (int, float)):
        return float(text)
    return _split(text, _SECONDS, "a duration", "5ms, 50us, 0", zero=True)


# -- display ----------------------------------------------------------------------------------

# The quantity each setting holds, by its name (the CLI's options and the Python API's keywords alike).
_SETTING_KINDS = {**dict.fromkeys(("seq", "prompt", "output", "prefill_chunk", "multiple_of", "minimum",
                                   "max_num_batched_tokens", "max_model_len"), "length"),
                  **dict.fromkeys(("gpu_memory", "reserve"), "bytes"),
                  **dict.fromkeys(("step_time", "ttft_target", "tpot_target", "measured_ttft", "measured_itl"),
                                  "seconds"),
                  **dict.fromkeys(("step_overhead", "request_overhead", "expert_overhead"), "overhead"),
                  **dict.fromkeys(("tokens", "tokens_per_s", "gpu_hours"), "count"),
                  "batch_tokens": "batch_tokens"}


def counted(text: str) -> tuple[int | None, str]:
    """``N x NAME`` (``8xh100``, ``4 × dgx-h100``): the count and the name, as `--gpu` and `--cluster` read
    them; (None, text) when not counted, or when a file of that name exists (``2xg.yaml``)."""
    match = re.fullmatch(r"\s*(\d+)\s*[x\u00d7]\s*([A-Za-z].*)", text) if text[:1].isspace() or text[:1].isdigit() \
        else None
    if match is None:
        return None, text
    from .safeio import exists

    return (None, text) if exists(text) else (int(match[1]), match[2])


def setting_parser(name: str):
    """The parser for the setting called ``name`` ("8k", "80GB", "650ms", "15T"), or None for a plain value."""
    kind = _SETTING_KINDS.get(name)
    return {"length": parse_length, "bytes": parse_bytes, "seconds": parse_seconds, "overhead": parse_overhead,
            "count": parse_count, "batch_tokens": parse_batch_tokens}[kind] if kind else None


def _scaled(value: float, steps: list[tuple[float, str]], digits: int = 3) -> str:
    for scale, suffix in steps:
        if abs(value) >= scale:
            return f"{_sig(value / scale, digits)} {suffix}".rstrip()
    scale, suffix = steps[-1]
    return f"{_sig(value / scale, digits)} {suffix}".rstrip()


def _sig(x: float, digits: int) -> str:
    """Round to `digits` significant figures but never hide integer digits: 1234.5 -> '1,235'."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}"
    magnitude = int(math.floor(math.log10(abs(x))))
    decimals = max(0, digits - 1 - magnitude)
    return f"{x:,.{decimals}f}"


def fmt_decimal(n: float) -> str:
    """A large count as parse_count reads it back: 2e12 -> '2T', 6.4e6 -> '6.4M', 300e9 -> '300B'; else '%g'."""
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "B"), (1e6, "M")):
        if abs(n) >= scale:
            return f"{n / scale:g}{suffix}"
    return f"{n:g}"


def fmt_params(n: float) -> str:
    if abs(n) < 1000:
        return f"{n:,.0f}"
    return _scaled(n, [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"), (1, "")], 4)


def fmt_bytes(n: float) -> str:
    """Binary units (GiB): what nvidia-smi and torch.cuda report."""
    return _scaled(n, [(2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "B")])


def fmt_flops(n: float) -> str:
    return _scaled(n, [(1e24, "YFLOP"), (1e21, "ZFLOP"), (1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"),
                       (1e6, "MFLOP"), (1, "FLOP")])


def fmt_rate(n: float, unit: str) -> str:
    if unit == "FLOP/s":
        return _scaled(n, [(1e18, "EFLOP/s"), (1e15, "PFLOP/s"), (1e12, "TFLOP/s"), (1e9, "GFLOP/s"), (1, "FLOP/s")])
    if unit == "byte/s":
        return _scaled(n, [(1e12, "TB/s"), (1e9, "GB/s"), (1e6, "MB/s"), (1, "B/s")])
    return _scaled(n, [(1e9, "G tok/s"), (1e6, "M tok/s"), (1e3, "K tok/s"), (1, "tok/s")])


def fmt_seconds(s: float) -> str:
    if s >= 86400 * 2:
        return f"{_sig(s / 86400, 3)} days"
    if s >= 3600:
        return f"{_sig(s / 3600, 3)} h"
    if s >= 60:
        return f"{_sig(s / 60, 3)} min"
    if s >= 1 or s == 0:
        return f"{_sig(s, 3)} s"
    if s >= 1e-3:
        return f"{_sig(s * 1e3, 3)} ms"
    return f"{_sig(s * 1e6, 3)} µs"


def fmt_value(value: float, unit: str) -> str:
    """One number in its unit, for people; JSON and CSV keep the raw base-unit value."""
    if unit == "params":
        return fmt_params(value)
    if unit == "byte":
        return fmt_bytes(value)
    if unit == "FLOP":
        return fmt_flops(value)
    if unit in ("FLOP/s", "byte/s", "token/s"):
        return fmt_rate(value, unit)
    if unit == "s":
        return fmt_seconds(value)
    if unit == "ratio":
        return f"{value * 100:.2f} %"
    if unit == "token":
        return f"{value:,.0f} tok" if abs(value) < 2**53 else f"{value:,.6g} tok"
    if float(value).is_integer() and abs(value) < 2**53:  # counts: every digit, where a float holds them exactly
        return f"{int(value):,}"
    if 1e5 <= abs(value) < 1e15:  # a large fractional count (GPU-hours) in whole units, not .6g's exponent
        return f"{value:,.0f}"
    return f"{value:,.6g}"


def fmt_count(n: int, word: str) -> str:
    """``3 steps``, ``1 step``: a whole count with its noun, plural unless one."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"
