"""Reading split files (CSV with header, or whitespace-separated lines) and locating them."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence

from data_pipeline.errors import DataError


def find_first(root: str, candidates: Sequence[str], what: str, *, kind: str = "any") -> str:
    """Returns root/candidate for the first candidate that exists, else a DataError listing all."""
    for rel in candidates:
        path = os.path.join(root, rel)
        if (
            (kind == "dir" and os.path.isdir(path))
            or (kind == "file" and os.path.isfile(path))
            or (kind == "any" and os.path.exists(path))
        ):
            return path
    tried = ", ".join(repr(c) for c in candidates)
    raise DataError(root, f"{what} not found (looked for {tried})")


def read_csv_rows(path: str) -> list[tuple[int, list[str]]]:
    """Rows of a comma-separated split file as (line number, fields); a header row is kept."""
    if not os.path.isfile(path):
        raise DataError(path, "split file is missing")
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [(i + 1, [c.strip() for c in row]) for i, row in enumerate(csv.reader(f))]
    return [(n, r) for n, r in rows if any(r)]


def read_whitespace_rows(path: str) -> list[tuple[int, list[str]]]:
    """Rows of a whitespace-separated split file as (line number, fields), blank lines dropped."""
    if not os.path.isfile(path):
        raise DataError(path, "split file is missing")
    with open(path, encoding="utf-8-sig") as f:
        rows = [(i + 1, line.split()) for i, line in enumerate(f)]
    return [(n, r) for n, r in rows if r]


def require_rows(path: str, rows: Iterable) -> None:
    if not list(rows):
        raise DataError(path, "split file is empty (no clips listed)")
