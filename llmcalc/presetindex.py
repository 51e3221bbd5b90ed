"""The shipped presets parsed ahead of time, so that looking one up need not import yaml.

presets/index/<kind>.json holds, for each shipped YAML file of that kind, the CRC-32 of its text and
its entries as safeio.load_yaml reads them. Importing PyYAML costs about 11 ms (its reader compiles a
large Unicode pattern), an eighth of llmcalc's start-up; the C JSON parser reads an index in well under
a millisecond. The index is a cache that can be stale but never wrong: a file whose text no longer has
its recorded CRC (edited in a checkout) is parsed from its YAML instead. `python scripts/index_presets.py`
rewrites the index, and tests/test_presets_index.py fails while it is stale.
"""

from __future__ import annotations

import functools
import zlib
from pathlib import Path
from typing import Any, Iterable

FORMAT = 1  # bumped when the layout below changes; an index of another format is ignored


def index_path(builtin: Path, kind: str) -> Path:
    return builtin / "index" / f"{kind}.json"


def checksum(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


@functools.lru_cache(maxsize=None)
def _index(builtin: Path, kind: str) -> dict[str, tuple[int, Any]]:
    """File name -> (CRC-32 of its text, its parsed entries); empty when there is no usable index."""
    import json

    try:
        data = json.loads(index_path(builtin, kind).read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            return {}
        return {entry["file"]: (entry["crc32"], entry["presets"]) for entry in data["files"]}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):  # missing or damaged: parse the YAML
        return {}


def lookup(path: Path, text: str, builtin: Path) -> Any | None:
    """The parsed content of the shipped file ``path`` whose text is ``text``, from the index; None
    when ``path`` is not a shipped preset file or the index does not hold this text of it."""
    if path.parent.parent != builtin:
        return None
    crc, data = _index(builtin, path.parent.name).get(path.name, (None, None))
    return data if crc == checksum(text) else None


def build(files: Iterable[tuple[Path, str]], parse) -> str:
    """The index of a kind's shipped ``files`` (path, text), each parsed by ``parse(path, text)``, as
    JSON text. A value JSON would not give back unchanged (a YAML date, a non-string key) is refused."""
    import json

    entries = []
    for path, text in files:
        data = parse(path, text)
        try:
            same = json.loads(json.dumps(data)) == data
        except (TypeError, ValueError):
            same = False
        if not same:
            raise ValueError(f"{path.name}: holds a value JSON cannot carry (a date or a non-text key); quote it")
        entries.append({"file": path.name, "crc32": checksum(text), "presets": data})
    return json.dumps({"format": FORMAT, "files": entries}, indent=1, ensure_ascii=False) + "\n"
