"""A small terminal table: aligned columns, box-drawing rules, optional ANSI styles.

Rendering a table with rich costs ~35 ms of imports and layout per call, a third of the CLI's
whole start-up budget; this draws the same kind of table in a fraction of a millisecond.
Styles are applied only when the stream is a terminal and NO_COLOR is unset.
"""

from __future__ import annotations

import os
from typing import TextIO

_ANSI = {"bold": "1", "dim": "2", "cyan": "36", "green": "32", "red": "31", "yellow": "33"}
_Row = tuple[list[str], str | None, list[str | None]]  # cells, row style, cell styles


def use_color(stream: TextIO) -> bool:
    return (not os.environ.get("NO_COLOR") and hasattr(stream, "isatty") and stream.isatty())


def paint(text: str, style: str | None, color: bool) -> str:
    if not (style and color and text):
        return text
    codes = ";".join(_ANSI[s] for s in style.split() if s in _ANSI)
    return f"\x1b[{codes}m{text}\x1b[0m" if codes else text


class Table:
    """Columns are (header, justify) with justify "left" or "right"; rows are lists of str."""

    def __init__(self, columns: list[tuple[str, str]], title: str = "", caption: str = "") -> None:
        self.columns = columns
        self.title = title
        self.caption = caption
        self.rows: list[_Row] = []

    def add_row(self, cells: list[str], style: str | None = None,
                cell_styles: list[str | None] | None = None) -> None:
        self.rows.append((cells, style, cell_styles or [None] * len(cells)))

    def add_section(self) -> None:
        self.rows.append(([], "section", []))

    def render(self, color: bool = False) -> str:
        """The table as text, one line per row; ANSI styles only when color is true."""
        keep = self._kept_columns()
        columns = [self.columns[i] for i in keep]
        rows = [_pick(row, keep) for row in self.rows]
        widths = _widths(columns, rows)
        justify = [j for _, j in columns]
        out = [paint(self.title, "bold", color)] if self.title else []
        out.append(_line([h for h, _ in columns], [None] * len(widths), "bold", widths, justify, color))
        rule = "─┼─".join("─" * w for w in widths)
        out.append(rule.replace("─", "━").replace("┼", "╇"))
        for cells, style, styles in rows:
            out.append(rule if style == "section" else _line(cells, styles, style, widths, justify, color))
        if self.caption:
            out.append(paint(self.caption, "dim", color))
        return "\n".join(out) + "\n"

    def _kept_columns(self) -> list[int]:
        """Indices of the columns to draw: the first, and any with a non-empty cell in some row.

        A column empty in every row (e.g. a share column when no row has a total) is dropped.
        """
        return [i for i in range(len(self.columns))
                if i == 0 or any(i < len(cells) and cells[i] for cells, _, _ in self.rows)]


def _pick(row: _Row, keep: list[int]) -> _Row:
    """The row's cells and cell styles in the kept columns, padded with "" and None."""
    cells, style, styles = row
    if style == "section":
        return [], style, []
    return ([cells[i] if i < len(cells) else "" for i in keep], style,
            [styles[i] if i < len(styles) else None for i in keep])


def _widths(columns: list[tuple[str, str]], rows: list[_Row]) -> list[int]:
    """Each column's width: its widest cell, header included."""
    widths = [len(h) for h, _ in columns]
    for cells, _, _ in rows:
        for i, cell in enumerate(cells):
            widths[i] = max(widths[i], len(cell))
    return widths


def _line(cells: list[str], styles: list[str | None], row_style: str | None, widths: list[int],
          justify: list[str], color: bool) -> str:
    """One row, padded to the widths; a cell's own style wins over the row's."""
    parts = []
    for i, width in enumerate(widths):
        text = cells[i] if i < len(cells) else ""
        padded = text.rjust(width) if justify[i] == "right" else text.ljust(width)
        parts.append(paint(padded, styles[i] if i < len(styles) and styles[i] else row_style, color))
    return " │ ".join(parts).rstrip()
