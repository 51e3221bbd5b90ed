"""The one result type every command returns: ordered rows with units, plus a summary.

Like the nanoGPT notebook's OrderedDict: hierarchical names with "/" (``attention/qkv``), each
row a plain number in a base unit. Tables, JSON, CSV and Markdown all render from it.
"""

# No `from __future__ import annotations`: it makes this module's NamedTuples slower to build (see dtypes.Dtype).

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, NamedTuple

from .spec import SpecError

# Base units. Display conversion lives in units.py; values here are never pre-formatted.
UNITS = ("params", "FLOP", "FLOP/s", "byte", "byte/s", "s", "token", "token/s", "ratio", "count")


class Row(NamedTuple):  # a NamedTuple: built ~30 times a point of a sweep, and on every CLI call's import
    """One named number in a base unit: a line of a table, an entry of the JSON's rows. Built by
    Rows.add, which checks the unit."""

    name: str
    value: float
    unit: str
    note: str = ""  # the convention behind the number, e.g. "2 B/param"
    total: str | None = "total"  # the row this one's share is taken of; None: no share column
    how: tuple = ()  # its formula, (template, *terms), written out by formula() only when asked (--explain)


def formula(how: tuple) -> str:
    """A row's formula with its numbers in: ``("{} layers x {} x {}", 32, 4096, 4096)`` reads
    ``32 layers x 4,096 x 4,096``. A term may itself be a formula (a sub-expression)."""
    if not how:
        return ""
    template, *terms = how
    return template.format(*map(_term, terms))


def _term(value: Any) -> str:
    if isinstance(value, tuple):
        return formula(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if abs(value) < 1e12 and float(value).is_integer():  # counts and shapes exactly: 4,096 x 14,336
        return f"{int(value):,}"
    mantissa, _, exponent = f"{value:.4g}".partition("e")  # rates and totals to 4 digits: 9.894e14
    return mantissa + (f"e{int(exponent)}" if exponent else "")


class Quantity(NamedTuple):  # a NamedTuple: breakdown loads on every CLI call (see dtypes.Dtype)
    """A value and its base unit; unit None for labels, flags and plain counts (``stage``, ``fits``)."""

    value: Any
    unit: str | None = None


_quantity = tuple.__new__  # Quantity(value) without its Python-level __new__
_ROW_UNITS = frozenset(UNITS)
_KNOWN = _ROW_UNITS | {None}  # a summary entry may have none (a label, a flag, a plain count)


class Quantities(Mapping):
    """Named values that carry their units: reads as plain values (the JSON contract), and
    ``unit(key)`` says how to show one. Built from a mapping of Quantity or plain values."""

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        if isinstance(items, Quantities):
            items = items._items
        # Quantity entries as given, plain values as they are (unitless; wrapped only when asked for as
        # a Quantity): a sweep builds two of these per point, most of their values plain.
        self._items: dict[str, Any] = dict(items or {})
        if not {q.unit for q in self._items.values() if isinstance(q, Quantity)} <= _KNOWN:
            key, q = next((k, q) for k, q in self._items.items() if isinstance(q, Quantity) and q.unit not in _KNOWN)
            raise ValueError(f"unknown unit {q.unit!r} for {key!r}")

    def __getitem__(self, key: str) -> Any:
        q = self._items[key]
        return q.value if isinstance(q, Quantity) else q

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def quantity(self, key: str) -> Quantity:
        q = self._items[key]
        return q if isinstance(q, Quantity) else _quantity(Quantity, (q, None))

    def quantities(self) -> dict[str, Quantity]:
        """Every entry with its unit."""
        return {key: self.quantity(key) for key in self._items}

    def merged(self, **changes: Any) -> "Quantities":
        """A copy with entries replaced or added, units kept (``{**q, ...}`` would drop them)."""
        return Quantities({**self._items, **changes})

    def unit(self, key: str) -> str | None:
        q = self._items.get(key)
        return q.unit if isinstance(q, Quantity) else None

    def __repr__(self) -> str:
        return f"Quantities({self.quantities()!r})"


_isfinite = math.isfinite
_PLAIN = frozenset((int, float, bool, str, type(None)))  # types with no .value of their own


def _check_finite(b: "Breakdown") -> None:
    """Infinity or NaN never reaches a table or the JSON (which must stay strict): the input that drove a
    number there (a GPU file's tiny peak, a zero time) is named by the row it broke."""
    values = [r.value for r in b.rows] + [q.value if isinstance(q, Quantity) else q for q in b.summary._items.values()]
    if set(map(type, values)) <= _PLAIN and all(map(_isfinite, [v for v in values if type(v) is float])):
        return  # plain values, every float finite: checked in C (a sweep builds a Breakdown per point)
    names = [r.name for r in b.rows] + list(b.summary)
    for name, value in zip(names, values):
        number = getattr(value, "value", value)
        if isinstance(number, float) and not _isfinite(number):
            raise SpecError(f"{b.command}: {name} comes out as {number} from these inputs; check the GPU's figures "
                            "and the options for a zero or an implausible size")


@dataclass(frozen=True)
class Breakdown:
    """Rows, a summary and the inputs; summary and inputs entries are Quantity or plain values."""

    command: str
    rows: tuple[Row, ...]
    summary: Mapping[str, Any] = field(default_factory=dict)
    inputs: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # assumptions a reader needs to trust the numbers
    model: str | None = None
    gpu: str | None = None
    title: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "summary", Quantities(self.summary))
        object.__setattr__(self, "inputs", Quantities(self.inputs))
        _check_finite(self)

    def value(self, name: str) -> float:
        for row in self.rows:
            if row.name == name:
                return row.value
        raise KeyError(name)

    def get(self, name: str, default: float | None = None) -> float | None:
        try:
            return self.value(name)
        except KeyError:
            return default

    def share(self, row: Row) -> float | None:
        """Fraction of the row's reference total, or None when it has none."""
        if row.total is None or row.total == row.name:
            return 1.0 if row.total == row.name else None
        ref = self.get(row.total)
        if not ref:
            return None
        return row.value / ref

    def to_dict(self, formulas: bool = False) -> dict[str, Any]:
        """The JSON contract of DESIGN.md: base units, plain numbers, nothing formatted; with
        ``formulas`` (--explain) each row also carries its formula written out."""
        return {
            "command": self.command,
            "model": self.model,
            "gpu": self.gpu,
            "inputs": dict(self.inputs),
            "rows": [{"name": r.name, "value": r.value, "unit": r.unit, **_share(self.share(r)),
                      **({"note": r.note} if r.note else {}),
                      **({"formula": formula(r.how)} if formulas and r.how else {})} for r in self.rows],
            "summary": dict(self.summary),
            "notes": list(self.notes),
        }


def _share(share: float | None) -> dict:
    """A row's share of the total it counts toward, as the table's share column; none for a row that counts toward
    none (a count, a rate, or a part not alive at the memory peak)."""
    return {} if share is None else {"share": share}


_row = tuple.__new__  # Row(...) without its Python-level __new__


class Rows:
    """An ordered builder so the core reads like the notebook: ``rows.add("mlp/up", n)``."""

    def __init__(self, unit: str, total: str | None = "total") -> None:
        self.unit = unit
        self.total = total
        self._rows: dict[str, Row] = {}
        self._sums: dict[str, list[str]] = {}

    def add(self, name: str, value: float, note: str = "", unit: str | None = None,
            total: str | None | type(...) = ..., how: tuple = ()) -> float:
        """A row; ``how`` is its formula, (template, *terms) with one ``{}`` per term (see formula())."""
        unit = unit or self.unit
        if unit not in _ROW_UNITS:
            raise ValueError(f"unknown unit {unit!r} for row {name!r}")
        row = _row(Row, (name, value, unit, note, self.total if total is ... else total, how))
        self._rows[name] = row
        return value

    def extend(self, rows: Iterable[Row]) -> "Rows":
        """Rows already built (a memoized part's), in their order."""
        for row in rows:
            self._rows[row.name] = row
        return self

    def sum(self, name: str, parts: Iterable[str], note: str = "", total: str | None | type(...) = ...) -> float:
        """A sub-total row that is, by construction, the sum of its parts (its formula names them)."""
        parts = list(parts)
        self._sums[name] = parts
        return self.add(name, sum(self._rows[p].value for p in parts), note, total=total,
                        how=(" + ".join(["{}"] * len(parts)), *parts))

    def row(self, name: str) -> Row:
        return self._rows[name]

    def parts(self, name: str) -> list[str] | None:
        """The rows a sub-total sums, or None for a row of its own."""
        return self._sums.get(name)

    def children(self, prefix: str) -> list[str]:
        return [n for n in self._rows if n.startswith(prefix + "/") and n.count("/") == prefix.count("/") + 1]

    def __getitem__(self, name: str) -> float:
        return self._rows[name].value

    def __contains__(self, name: str) -> bool:
        return name in self._rows

    def build(self) -> tuple[Row, ...]:
        return tuple(self._rows.values())
