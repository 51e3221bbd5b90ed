"""Where llmcalc/ is getting complex: functions with cyclomatic complexity over 10, modules over 300 lines.

Run as `python scripts/complexity.py` (needs radon, in the test extra). tests/test_structure.py
uses the same helpers to enforce the hard limits: cc <= 20 (radon grade C) and 400 lines.
"""

from __future__ import annotations

from pathlib import Path

from radon.complexity import add_inner_blocks, cc_visit
from radon.visitors import Function

PACKAGE = Path(__file__).resolve().parent.parent / "llmcalc"
WARN_CC = 10
WARN_LINES = 300


def modules(package: Path = PACKAGE) -> list[Path]:
    return sorted(package.rglob("*.py"))


def relative(path: Path, package: Path = PACKAGE) -> str:
    """The path as the repository names it, e.g. llmcalc/spec.py."""
    return path.relative_to(package.parent).as_posix()


def complexities(package: Path = PACKAGE) -> list[tuple[str, int, str, int]]:
    """(path, line, name, cc) of every function, method and closure; class aggregates are left out."""
    found = []
    for path in modules(package):
        for block in add_inner_blocks(cc_visit(path.read_text(encoding="utf-8"))):
            if isinstance(block, Function):
                found.append((relative(path, package), block.lineno, block.fullname, block.complexity))
    return found


def line_counts(package: Path = PACKAGE) -> dict[str, int]:
    """Physical lines of each module."""
    return {relative(path, package): len(path.read_text(encoding="utf-8").splitlines())
            for path in modules(package)}


def main() -> None:
    complex_ = sorted((f for f in complexities() if f[3] > WARN_CC), key=lambda f: (-f[3], f[0], f[1]))
    print(f"functions with cc > {WARN_CC}:")
    for path, line, name, cc in complex_:
        print(f"  {cc:3d}  {path}:{line} {name}")
    long = sorted(((n, path) for path, n in line_counts().items() if n > WARN_LINES), reverse=True)
    print(f"modules over {WARN_LINES} lines:")
    for n, path in long:
        print(f"  {n:4d}  {path}")


if __name__ == "__main__":
    main()
