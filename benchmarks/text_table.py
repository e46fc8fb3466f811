"""A titled table for the benchmark scripts' output: columns, rows, printed as markdown."""
from __future__ import annotations


class Table:
    def __init__(self, title: str = ""):
        self.title = title
        self.columns: list[str] = []
        self.rows: list[tuple[str, ...]] = []

    def add_column(self, name: str, justify: str = "left") -> None:
        """`justify` is accepted for the reader's benefit only: markdown viewers align numbers anyway."""
        self.columns.append(name)

    def add_row(self, *cells: str) -> None:
        self.rows.append(tuple(cells))

    def __str__(self) -> str:
        lines = [f"{self.title}\n"] if self.title else []
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + " --- |" * len(self.columns))
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"
