"""`gateway place FILE.csv|FILE.xlsx --mapping M.toml`: a case per row, through the
example mapping; every row checked before anything is placed."""

from __future__ import annotations

import csv
import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from gateway.errors import InvalidInput
from gateway.placement.mapping import load_mapping
from tests.helpers import EXAMPLES, invoke, workspace_sql

MAPPING = EXAMPLES / "mappings" / "cases.toml"
HEADER = [
    "Case No", "Name", "ID Number", "Mobile", "Home Phone", "Email", "Province", "City", "Address",
    "Product", "Account", "Currency", "Principal", "Outstanding", "Interest", "Fees", "Overdue Since",
    "DPD", "Last Due", "Last Payment",
]


def row(n: int, *, typed: bool = False) -> list[Any]:
    """Case ``n`` as the bank's export writes it; ``typed``: as spreadsheet cells
    (numbers and dates), else as text."""
    overdue, last_due = date(2026, 1 + n % 12, 1 + n % 28), date(2026, 1 + n % 12, 1 + n % 28)
    values: list[Any] = [
        f"C-T-{n:05d}", f"Debtor {n}", f"11010119900307{n:04d}", f"138{n:08d}",
        f"010 6555 {n % 10000:04d}" if n % 3 == 0 else "", f"d{n}@example.com" if n % 2 else "",
        "北京市", "北京市", f"建国路 {n} 号", "credit_card", f"622202020011{n:04d}", "CNY",
        48000 + n, 52310.45 + n, 3120.45, 1190, overdue.strftime("%d/%m/%Y"), 197, last_due,
        date(2026, 4, 9),
    ]
    if typed:
        values[3] = int(values[3])  # a mobile number typed as a number
        values[16] = datetime(overdue.year, overdue.month, overdue.day)
    else:
        values[18], values[19] = last_due.isoformat(), "2026-04-09"
    return values


def write_csv(path: Path, rows: list[list[Any]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def write_xlsx(path: Path, rows: list[list[Any]]) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER)
    for values in rows:
        sheet.append(values)
    book.save(path)
    return path


def place(ws: Path, *args: str | Path) -> Any:
    return invoke("-c", ws, "place", *args, "--partner", "acme-collect", "--purpose", "collection",
                  "--mapping", MAPPING)


def placed_cases(ws: Path) -> dict[str, dict[str, Any]]:
    with workspace_sql(ws) as sql:
        return {r["case_id"]: r for r in sql("SELECT case_id, id, partner_id FROM packages")}


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_a_thousand_rows_are_placed_through_the_mapping(onboarded: Path, tmp_path: Path, kind: str) -> None:
    rows = [row(n, typed=kind == "xlsx") for n in range(1000)]
    path = (write_csv if kind == "csv" else write_xlsx)(tmp_path / f"cases.{kind}", rows)
    result = place(onboarded, path, "--quiet")
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.stdout.splitlines()]
    assert [case_id for case_id, _ in lines] == [f"C-T-{n:05d}" for n in range(1000)]
    assert "placed 1000 of 1000 cases with acme-collect" in result.stderr
    assert set(placed_cases(onboarded)) == {case_id for case_id, _ in lines}
    # What the partner receives, read back from the signed package: typed, normalized.
    shown = invoke("-c", onboarded, "package", "show", lines[3][1], "--json")
    data = json.loads(shown.stdout)["claims"]["data"]
    assert [phone["number"] for phone in data["debtor"]["phones"]] == ["+8613800000003", "+861065550003"]
    assert data["loan"]["outstanding"] == "52313.45" and data["loan"]["overdue_since"] == "2026-04-04"
    assert data["debtor"]["name"] == "Debtor 3" and data["loan"]["overdue_days"] == 197


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_an_invalid_row_is_named_by_row_and_column_and_nothing_is_placed(
    onboarded: Path, tmp_path: Path, kind: str
) -> None:
    rows = [row(n, typed=kind == "xlsx") for n in range(1000)]
    rows[499][3] = "12345"  # not a phone number: spreadsheet row 501
    rows[700][16] = "31/02/2026"  # no such day: row 702
    path = (write_csv if kind == "csv" else write_xlsx)(tmp_path / f"cases.{kind}", rows)
    result = place(onboarded, path)
    assert result.exit_code == 1
    assert "2 of 1000 rows are invalid, nothing placed" in result.output
    assert "row 501, column 'Mobile' (debtor.phones[0].number): is not a valid phone number" in result.output
    bad_date = "row 702, column 'Overdue Since' (loan.overdue_since): is not a date written %d/%m/%Y"
    assert bad_date in result.output
    assert "12345" not in result.output  # cells are personal data: named, never quoted
    assert placed_cases(onboarded) == {}


def test_skip_invalid_places_the_rest_and_writes_the_rejects(onboarded: Path, tmp_path: Path) -> None:
    rows = [row(n) for n in range(20)]
    rows[4][11] = "yuan"  # not an ISO 4217 code: row 6
    rows[9][0] = rows[2][0]  # the same case twice: row 11
    path = write_csv(tmp_path / "cases.csv", rows)
    result = place(onboarded, path, "--skip-invalid", "--quiet")
    assert result.exit_code == 0, result.output
    rejects = tmp_path / "cases.rejects.csv"
    assert f"2 of 20 rows are invalid, not placed: see {rejects}" in result.stderr
    assert "placed 18 of 18 cases with acme-collect" in result.stderr
    assert rejects.stat().st_mode & 0o777 == 0o600
    with rejects.open(encoding="utf-8-sig") as fh:
        written = list(csv.DictReader(fh))
    assert [(r["row"], r["Case No"]) for r in written] == [("6", "C-T-00004"), ("11", "C-T-00002")]
    assert written[0]["problems"].startswith("column 'Currency' (loan.currency): String should match")
    assert written[1]["problems"] == "column 'Case No' (case_id): the same case is on row 4"
    assert len(placed_cases(onboarded)) == 18


def mapping_with(tmp_path: Path, old: str, new: str) -> Path:
    text = MAPPING.read_text()
    assert old in text
    path = tmp_path / "mapping.toml"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ('"loan.currency" = "Currency"\n', "", "loan.currency is required by the case model and not mapped"),
        ('"debtor.phones[1].', '"debtor.phones[2].',
         "debtor.phones[2] is mapped but debtor.phones[1] is not"),
        ('"debtor.name"', '"debtor.nmae"', "fields.debtor.nmae: no field 'nmae' here"),
        ('"debtor.email" = "Email"', '"debtor" = "Email"', "fields.debtor: names a whole object"),
        ('format = "%d/%m/%Y"', 'format = "%d/%m"', "does not name a day, a month and a year"),
        ('"loan.product" = "Product"', '"loan.product" = { value = "x", column = "Product" }',
         "give either column"),
        ('{ value = "resident_id" }', '{ value = "licence" }',
         "fields.debtor.id_type: the value is not one of resident_id, passport, ssn, other"),
        ('phone_region = "CN"', 'phone_region = "XX"', "'XX' is not a region code"),
    ],
)
def test_the_mapping_is_checked_before_any_row(tmp_path: Path, old: str, new: str, problem: str) -> None:
    path = mapping_with(tmp_path, old, new)
    with pytest.raises(InvalidInput, match=problem.replace("[", r"\[").replace("]", r"\]")):
        load_mapping(path)


def test_a_column_missing_from_the_header_is_refused_at_once(onboarded: Path, tmp_path: Path) -> None:
    path = mapping_with(tmp_path, '"debtor.name" = "Name"', '"debtor.name" = "Full Name"')
    cases = write_csv(tmp_path / "cases.csv", [row(1)])
    result = invoke("-c", onboarded, "place", cases, "--partner", "acme-collect", "--purpose", "collection",
                    "--mapping", path)
    assert result.exit_code == 1
    assert f"column 'Full Name' ({path}) is not in the header row" in result.output
