"""Cases from a CSV or XLSX file, one per row, through a column mapping (``mapping.py``).

Rows are numbered as a spreadsheet shows them: the header is row 1, the first case row
2. A row's problems name its row and column (and the field), never the value: cells
hold personal data, and error output ends up in terminals and tickets. Fully empty rows
are skipped. XLSX files are read with openpyxl in read-only mode, row by row, so a large
file is never held in memory; :func:`check_table` reads the file once to check every row,
:func:`cases` reads it again to hand over the valid ones.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.errors import InvalidInput
from gateway.onboarding.files import write_private
from gateway.placement.mapping import Mapping, Target, convert
from schemas.case import Case

SUFFIXES = (".csv", ".xlsx")
#: Problems named in a refusal; the rest are counted.
SHOWN = 5


@dataclass(frozen=True)
class Problem:
    row: int
    column: str | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"column {self.column!r} ({self.path})" if self.column else f"field {self.path}"
        return f"row {self.row}, {where}: {self.message}"


@dataclass
class Report:
    """What a check of the whole file found."""

    header: list[str]
    rows: int = 0
    invalid: dict[int, list[Problem]] = field(default_factory=dict)

    @property
    def valid(self) -> int:
        return self.rows - len(self.invalid)


def is_table(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


@contextlib.contextmanager
def open_rows(path: Path, mapping: Mapping) -> Iterator[tuple[list[str], Iterator[tuple[int, list[Any]]]]]:
    """The header and an iterator of (row number, cells), fully empty rows skipped."""
    if path.suffix.lower() == ".csv":
        with _csv_rows(path, mapping) as opened:
            yield opened
        return
    with _xlsx_rows(path, mapping) as opened:
        yield opened


@contextlib.contextmanager
def _csv_rows(path: Path, mapping: Mapping) -> Iterator[tuple[list[str], Iterator[tuple[int, list[Any]]]]]:
    try:
        handle = path.open(encoding=mapping.options.encoding, newline="")
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.reader(handle, delimiter=mapping.options.delimiter)
        try:
            header = [h.strip() for h in next(reader, [])]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise InvalidInput(f"{path}: row 1: {exc}") from None
        yield header, _numbered(path, reader)


def _numbered(path: Path, rows: Iterator[Any]) -> Iterator[tuple[int, list[Any]]]:
    number = 1
    try:
        for row in rows:
            number += 1
            cells = list(row)
            if any(c not in (None, "") and str(c).strip() for c in cells):
                yield number, cells
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InvalidInput(f"{path}: row {number + 1}: {exc}") from None


@contextlib.contextmanager
def _xlsx_rows(path: Path, mapping: Mapping) -> Iterator[tuple[list[str], Iterator[tuple[int, list[Any]]]]]:
    import openpyxl  # here, not at start-up: every gateway command would load it (~40 ms)

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile, KeyError, OSError... for a bad file
        raise InvalidInput(f"{path}: not a readable XLSX workbook ({type(exc).__name__})") from None
    try:
        sheet_name = mapping.options.sheet or book.sheetnames[0]
        if sheet_name not in book.sheetnames:
            raise InvalidInput(f"{path}: no sheet {sheet_name!r} (sheets: {', '.join(book.sheetnames)})")
        rows = book[sheet_name].iter_rows(values_only=True)
        first = next(rows, ())
        header = ["" if h is None else str(h).strip() for h in first]
        yield header, _numbered(path, rows)
    finally:
        book.close()


def check_header(path: Path, header: list[str], mapping: Mapping) -> None:
    """Every column the mapping names is in the header, once."""
    for column in dict.fromkeys(mapping.columns()):
        count = header.count(column)
        if count != 1:
            found = ", ".join(repr(h) for h in header if h) or "nothing"
            problem = "appears twice in" if count else "is not in"
            raise InvalidInput(
                f"{path}: column {column!r} ({mapping.source}) {problem} the header row (row 1: {found})"
            )


def case_of(number: int, cells: list[Any], index: dict[str, int], mapping: Mapping) -> Case | list[Problem]:
    """The row's case, or every problem it has."""
    data: dict[str, Any] = {}
    problems: list[Problem] = []
    for target in mapping.targets:
        if target.column is None:
            _put(data, target.keys, target.constant, constant=True)
            continue
        at = index[target.column]
        cell = cells[at] if at < len(cells) else None
        if cell is None or (isinstance(cell, str) and not cell.strip()):
            continue
        try:
            _put(data, target.keys, convert(cell, target, mapping.options), constant=False)
        except ValueError as exc:
            problems.append(Problem(number, target.column, target.path, str(exc)))
    if problems:
        return problems
    try:
        return Case.model_validate(_prune(data))
    except ValidationError as exc:
        return [_problem(number, err["loc"], err["msg"], mapping) for err in exc.errors()]


def _put(data: dict[str, Any], keys: tuple[str | int, ...], value: Any, *, constant: bool) -> None:
    """Set ``value`` at ``keys``; objects and list items made on the way remember
    whether a cell (not only a constant) filled them, see `_prune`."""
    current: Any = data
    for key, following in zip(keys, keys[1:], strict=False):
        if isinstance(current, list):
            while len(current) <= int(key):
                current.append({"__cells__": False})
            current = current[int(key)]
        else:
            current = current.setdefault(key, [] if isinstance(following, int) else {"__cells__": False})
        if isinstance(current, dict) and not constant:
            current["__cells__"] = True
    current[keys[-1]] = value


def _prune(value: Any) -> Any:
    """Drop list items and objects that only constants filled (a second phone whose
    column is empty in this row, with its constant label): they are not there."""
    if isinstance(value, list):
        return [_prune(v) for v in value if not isinstance(v, dict) or v.get("__cells__", True)]
    if isinstance(value, dict):
        return {
            k: _prune(v) for k, v in value.items()
            if k != "__cells__" and not (isinstance(v, dict) and not v.get("__cells__", True))
        }
    return value


def _problem(number: int, loc: tuple[Any, ...], message: str, mapping: Mapping) -> Problem:
    """A model error at ``loc``, named by the mapped column it came from."""
    path = "".join(f"[{k}]" if isinstance(k, int) else (f".{k}" if i else str(k)) for i, k in enumerate(loc))
    target = _target_for(loc, mapping.targets)
    message = message.removeprefix("Value error, ")
    if target is None:
        return Problem(number, None, path, message)
    return Problem(number, target.column, target.path, message if target.column else f"constant {message}")


def _target_for(loc: tuple[Any, ...], targets: tuple[Target, ...]) -> Target | None:
    for target in targets:
        if target.keys == tuple(loc):
            return target
    return None


def check_table(path: Path, mapping: Mapping) -> Report:
    """Read every row; report the invalid ones (a case id on two rows included)."""
    seen: dict[str, int] = {}
    with open_rows(path, mapping) as (header, rows):
        check_header(path, header, mapping)
        report = Report(header)
        index = {name: header.index(name) for name in mapping.columns()}
        for number, cells in rows:
            report.rows += 1
            outcome = case_of(number, cells, index, mapping)
            if isinstance(outcome, list):
                report.invalid[number] = outcome
            elif outcome.case_id in seen:
                column = _column_of("case_id", mapping)
                report.invalid[number] = [
                    Problem(number, column, "case_id", f"the same case is on row {seen[outcome.case_id]}")
                ]
            else:
                seen[outcome.case_id] = number
    return report


def _column_of(path: str, mapping: Mapping) -> str | None:
    return next((t.column for t in mapping.targets if t.path == path), None)


def refusal(path: Path, report: Report) -> InvalidInput:
    problems = [p for row in sorted(report.invalid) for p in report.invalid[row]]
    shown = "; ".join(str(p) for p in problems[:SHOWN])
    more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
    return InvalidInput(
        f"{path}: {len(report.invalid)} of {report.rows} rows are invalid, nothing placed "
        f"(--skip-invalid places the others): {shown}{more}"
    )


def write_rejects(path: Path, mapping: Mapping, report: Report, rejects: Path) -> None:
    """The invalid rows as they were, with their row number and problems, as CSV
    readable by the owner only (the rows are personal data)."""
    out = _Lines()
    writer = csv.writer(out)
    writer.writerow(["row", "problems", *report.header])
    with open_rows(path, mapping) as (_, rows):
        for number, cells in rows:
            if number in report.invalid:
                problems = "; ".join(str(p).split(", ", 1)[1] for p in report.invalid[number])
                writer.writerow([number, problems, *("" if c is None else c for c in cells)])
    write_private(rejects, "".join(out.lines).encode("utf-8-sig"))


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)


def cases(path: Path, mapping: Mapping, report: Report) -> Iterator[tuple[int, Case]]:
    """The valid rows' cases, in order, read again from the file checked into
    ``report``; InvalidInput if the file changed since."""
    stamp = _stamp(path)
    with open_rows(path, mapping) as (header, rows):
        if header != report.header:
            raise InvalidInput(f"{path}: the file changed after it was checked; run the command again")
        index = {name: header.index(name) for name in mapping.columns()}
        for number, cells in rows:
            if number in report.invalid:
                continue
            outcome = case_of(number, cells, index, mapping)
            if isinstance(outcome, list) or _stamp(path) != stamp:
                raise InvalidInput(f"{path}: the file changed after it was checked; run the command again")
            yield number, outcome


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns
