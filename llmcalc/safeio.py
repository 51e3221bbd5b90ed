"""Reading what users hand us: regular files only, kilobytes not gigabytes, UTF-8, bounded YAML and JSON.

Every preset, GPU file and config.json passes through here before anything computes, so a hostile or
mistaken file ends in one line that names it and the fix (spec.SpecError, exit code 2), never in a
traceback or a hang: a FIFO or device is refused before it is opened, a file is read no further than
MAX_FILE_BYTES, YAML may use at most MAX_ALIASES aliases (no "billion laughs") and no key twice, and
JSON nesting is bounded by the parser's own recursion limit.
"""

from __future__ import annotations

import codecs
import functools
import os
import re
import stat
from pathlib import Path
from typing import Any

from .spec import SpecError

MAX_FILE_BYTES = 2**20  # a model or GPU file is kilobytes (the largest shipped preset file ~30 KB); 1 MiB parses in < 1 s
MAX_NUMBER = 10**100  # no size, count or rate comes near it; beyond it float() overflows somewhere (10^309)
MAX_ALIASES = 64
_ALIAS = r"(?:^|[\s\[{,:-])\*[^\s,\[\]{}]+"  # a YAML alias; compiled (by re) only for a text with many '*'


def shown(path: Path | str) -> str:
    """A path as one printable line: control characters escaped, very long names shortened."""
    text = one_line(path)
    return text if len(text) <= 160 else text[:100] + "..." + text[-40:]


def user_path(text: str) -> Path:
    """Path(text) with a leading ~ or ~user expanded; left as written when there is no such home
    (HOME unset, an unknown user: Path.expanduser raises RuntimeError)."""
    try:
        return Path(text).expanduser()
    except (RuntimeError, KeyError, OSError, ValueError):
        return Path(text)


def env_dir(variable: str, *fallback: str) -> Path | None:
    """$variable, else the home directory joined with ``fallback`` (XDG's rule); None when neither
    exists: HOME unset and no password entry (Path.home raises RuntimeError) or an empty $variable."""
    if os.environ.get(variable):
        return user_path(os.environ[variable])
    try:
        return Path.home().joinpath(*fallback)
    except (RuntimeError, KeyError, OSError):
        return None


def listable(directory: Path, named_by: str | None = None) -> bool:
    """Whether ``directory`` can be searched. One that exists but is a file or cannot be read is
    skipped with a warning (a mistake worth knowing about); a missing one is skipped in silence,
    unless ``named_by`` (an environment variable) named it explicitly."""
    import warnings

    try:
        if directory.is_dir():
            if os.access(directory, os.R_OK | os.X_OK):
                return True
            problem = "cannot be read (permission denied)"
        elif any(parent.exists() and not parent.is_dir() for parent in (directory, *directory.parents)):
            problem = "is not a directory"
        elif named_by:
            problem = "does not exist"
        else:
            return False
    except (OSError, ValueError):  # a name the OS refuses (too long, NUL)
        problem = "cannot be used as a directory name"
    where = f" (from ${named_by})" if named_by else ""
    warnings.warn(f"skipping {shown(directory)}{where}: it {problem}", UserWarning, stacklevel=2)
    return False


def exists(text: str, test: str = "exists") -> bool:
    """Path(text).exists() (or another Path test: "is_dir") answering False for names the OS refuses
    (too long, NUL bytes) instead of raising."""
    try:
        return getattr(Path(text), test)()
    except (OSError, ValueError):
        return False


def read_text(path: Path, what: str = "file") -> str:
    """The text of a regular UTF-8 file of at most MAX_FILE_BYTES; anything else is a one-line SpecError.
    One non-blocking open and an fstat of what was opened: a FIFO neither blocks nor is read."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError) as exc:
        if os.path.isdir(path):
            raise SpecError(f"{shown(path)}: is a directory, not a {what}") from None
        raise SpecError(f"cannot read {shown(path)}: {getattr(exc, 'strerror', None) or exc}") from None
    info = os.fstat(fd)  # before fdopen, which refuses a directory with an OSError of its own
    problem = (f"is a directory, not a {what}" if stat.S_ISDIR(info.st_mode) else
               f"not a regular file (a pipe, socket or device); save the {what} to a file first"
               if not stat.S_ISREG(info.st_mode) else
               f"{info.st_size:,} bytes is too large for a {what} (at most {MAX_FILE_BYTES:,})"
               if info.st_size > MAX_FILE_BYTES else None)
    if problem:
        os.close(fd)
        raise SpecError(f"{shown(path)}: {problem}")
    with os.fdopen(fd, "rb") as handle:
        try:  # the size fstat gave (not a 1 MiB buffer for every few-KB file), then on to MAX_FILE_BYTES + 1
            want = info.st_size + 1  # if there is more: a file that grew, or /proc's, which say 0
            data = handle.read(want)
            if len(data) == want <= MAX_FILE_BYTES:
                data += handle.read(MAX_FILE_BYTES + 1 - want)
        except OSError as exc:
            raise SpecError(f"cannot read {shown(path)}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(f"{shown(path)}: too large for a {what} (at most {MAX_FILE_BYTES:,} bytes)")
    return decode(data, path)


def decode(data: bytes, path: Path | str) -> str:
    """UTF-8 (a BOM allowed); UTF-16/32 and other encodings are named, with the fix."""
    for bom, enc in ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                     (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16")):
        if data.startswith(bom):
            raise SpecError(f"{shown(path)}: {enc} text; save it as UTF-8")
    try:  # utf-8-sig, as its codec does it (a BOM dropped, offsets after it), without loading the codec
        return (data[3:] if data.startswith(codecs.BOM_UTF8) else data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{shown(path)}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                        "save it as UTF-8") from None


def load_yaml(text: str, path: Path | str) -> Any:
    """Parse YAML safely: no Python objects, at most MAX_ALIASES aliases, no duplicate keys."""
    import yaml

    aliases = len(re.findall(_ALIAS, text, re.MULTILINE)) if text.count("*") > MAX_ALIASES else 0  # no alias without a '*'
    if aliases > MAX_ALIASES:
        raise SpecError(f"{shown(path)}: {aliases} YAML aliases (at most {MAX_ALIASES}); write the values out")
    try:
        return finite(yaml.load(text, Loader=_loader()), path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{shown(path)}{line}: malformed YAML: {problem}") from None
    except RecursionError:
        raise SpecError(f"{shown(path)}: YAML nested too deeply") from None


@functools.lru_cache(maxsize=None)
def _loader():
    """libyaml's safe loader (about 10x faster) when present, refusing a key given twice in one mapping."""
    import yaml
    from yaml.constructor import ConstructorError

    class NoDuplicates(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        def construct_mapping(self, node, deep=False):
            seen = set()  # scalar keys by resolved tag and text: no construction, so no cost on every load
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    key = (key_node.tag, key_node.value)
                    if key in seen:
                        raise ConstructorError(None, None, f"key {key_node.value!r} appears twice in one mapping",
                                               key_node.start_mark)
                    seen.add(key)
            return super().construct_mapping(node, deep)

    return NoDuplicates


def finite(data: Any, path: Path | str) -> Any:
    """``data`` unchanged if every number in it is finite and below MAX_NUMBER (YAML's .inf and .nan,
    JSON's 1e400, a 400-digit integer) and no node contains itself (YAML can alias a node into its
    own children: `a: &a [*a]`); else a SpecError naming the key. Shared aliases are fine."""
    stack, open_nodes = [("", data, False)], set()
    while stack:
        where, item, leaving = stack.pop()
        if leaving:
            open_nodes.discard(id(item))
        elif isinstance(item, (dict, list)):
            if id(item) in open_nodes:
                raise SpecError(f"{shown(path)}: {one_line(where) or 'the value'} contains itself (a YAML alias "
                                "to an enclosing node); write the values out")
            open_nodes.add(id(item))
            stack.append((where, item, True))
            children = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((f"{where}.{key}" if where and isinstance(item, dict) else
                          str(key) if isinstance(item, dict) else f"{where}[{key}]", value, False)
                         for key, value in children)
        elif isinstance(item, (int, float)) and not isinstance(item, bool) and not abs(item) < MAX_NUMBER:
            shown_value = item if isinstance(item, float) else f"a {len(str(abs(item)))}-digit number"
            raise SpecError(f"{shown(path)}: {one_line(where) or 'the value'} is {shown_value}; give a finite number")
    return data


def one_line(text: object) -> str:
    """Text as one printable line (control characters escaped)."""
    text = str(text)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def load_json(text: str, path: Path | str) -> Any:
    """Parse JSON; malformed, too deep or non-finite input is a one-line SpecError naming the line."""
    import json

    def refuse(token: str) -> float:
        raise SpecError(f"{shown(path)}: {token} is not a number JSON allows")

    def no_duplicates(pairs: list) -> dict:
        keys = [key for key, _ in pairs]
        if len(set(keys)) < len(keys):
            twice = next(key for key in keys if keys.count(key) > 1)
            raise SpecError(f"{shown(path)}: key {one_line(twice)!r} appears twice in one object; keep one")
        return dict(pairs)

    try:
        return finite(json.loads(text, parse_constant=refuse, object_pairs_hook=no_duplicates), path)
    except json.JSONDecodeError as exc:
        raise SpecError(f"{shown(path)}:{exc.lineno}: malformed JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise SpecError(f"{shown(path)}: JSON nested too deeply") from None
    except SpecError:
        raise
    except ValueError as exc:  # e.g. an integer longer than Python's 4300-digit limit
        raise SpecError(f"{shown(path)}: malformed JSON: {str(exc).splitlines()[0]}") from None
