"""The README's console examples are the tool's current output (scripts/update_readme.py mends them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "update_readme.py"


def test_readme_examples_match_the_tool():
    spec = importlib.util.spec_from_file_location("update_readme", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.README.read_text()
    assert module.updated(text) == text, "README examples are stale: run python scripts/update_readme.py"
