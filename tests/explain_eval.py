"""Evaluate a row's written-out formula (breakdown.formula) back to a number, independently of the
code that computed the row: numbers are read as written, `x` is multiplication, words are labels
(dropped) unless they name another row (its value) or a function (min, max, ceil)."""

from __future__ import annotations

import math
import re

TOKEN = re.compile(r"\s*(?:(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:e[+-]?\d+)?)"
                   r"|(?P<word>[A-Za-z_][\w/.\-']*)|(?P<op>[-+*/(),^]))")
FUNCTIONS = {"min": "min", "max": "max", "ceil": "math.ceil", "floor": "math.floor"}


def evaluate(text: str, rows: dict[str, float]) -> float:
    out, pos = [], 0
    while pos < len(text.rstrip()):
        match = TOKEN.match(text, pos)
        assert match, f"cannot read {text[pos:]!r} in {text!r}"
        pos = match.end()
        if match["num"]:
            out.append(match["num"].replace(",", ""))
        elif match["op"]:
            out.append("**" if match["op"] == "^" else match["op"])
        elif match["word"] == "x":
            out.append("*")
        elif match["word"] in rows:
            out.append(repr(float(rows[match["word"]])))
        elif match["word"] in FUNCTIONS:
            out.append(FUNCTIONS[match["word"]])
    expr = " ".join(out)
    while re.search(r"\(\s*\)", expr):  # a parenthesised label, e.g. "(weight and bias)"
        expr = re.sub(r"(?<![\w)])\s*\(\s*\)", "", expr)
    return float(eval(expr, {"math": math, "__builtins__": {"min": min, "max": max}}))  # noqa: S307 - digits and operators only
