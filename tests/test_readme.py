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


def test_readme_python_example_prints_what_it_shows(capsys):
    """The Python API example runs and prints the text block under it."""
    import re

    readme = SCRIPT.parents[1].joinpath("README.md").read_text()
    code, shown = re.search(r"## Python API.*?```python\n(.*?)```\n\n```text\n(.*?)```", readme, re.S).groups()
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out == shown
