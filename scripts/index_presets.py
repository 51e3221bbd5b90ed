#!/usr/bin/env python3
"""Rewrite presets/index/<kind>.json from the shipped YAML presets (llmcalc/presetindex.py says why).

Run it after editing a file under presets/; tests/test_presets_index.py fails until you do.
Usage: python scripts/index_presets.py [--check]   (--check: exit 1, naming them, if any index is stale)
"""

from __future__ import annotations

import sys

from llmcalc import presets


def main() -> int:
    check = "--check" in sys.argv[1:]
    builtin, stale = presets.builtin_dir(), []
    for kind in presets.KINDS:
        target, text = presets.index_text(kind)
        if target.exists() and target.read_text(encoding="utf-8") == text:
            continue
        stale.append(str(target.relative_to(builtin.parent)))
        if not check:
            target.parent.mkdir(exist_ok=True)
            target.write_text(text, encoding="utf-8")
    verb = "stale" if check else "rewritten"
    print(f"{verb}: {', '.join(stale)}" if stale else "the preset index is up to date")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
