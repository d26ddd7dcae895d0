"""Column mappings: how the columns of a CSV or XLSX file of cases become ``Case`` fields.

A mapping is a TOML file with an ``[options]`` table and a ``[fields]`` table that names,
for each field path of ``Case`` (lists indexed: ``debtor.phones[0].number``), the column
it is read from, or a constant::

    [options]
    phone_region = "CN"          # numbers written without a country code
    date_format = "%Y-%m-%d"     # dates written as text (XLSX date cells need none)

    [fields]
    case_id = "Case No"
    "debtor.id_type" = { value = "resident_id" }
    "loan.overdue_since" = { column = "Overdue since", format = "%d/%m/%Y" }

Each field's type comes from the ``Case`` model (text, integer, decimal, date, one of a
set of words, a phone number), so the mapping never repeats it. :func:`load_mapping`
checks the whole mapping before any row is read: every path a leaf of ``Case``, list
indexes from 0 without gaps, every required field of ``Case`` (and of each list item or
optional object mapped) mapped, formats usable.
"""

from __future__ import annotations

import re
import tomllib
import typing
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.config import first_error
from gateway.errors import InvalidInput
from gateway.placement.minimize import _unwrap
from schemas.case import Case, PhoneNumber

Kind = Literal["text", "integer", "decimal", "date", "choice", "phone"]
#: A field path with list indexes: ``debtor.phones[0].number``.
_SEGMENT = re.compile(r"^([a-z_][a-z0-9_]*)(?:\[(\d{1,3})\])?$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Options(_Model):
    phone_region: str = Field(default="CN", description="region of numbers without a country code")
    date_format: str = Field(default="%Y-%m-%d", description="strptime format of dates written as text")
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="CSV only")
    encoding: str = Field(default="utf-8-sig", description="CSV only")
    sheet: str | None = Field(default=None, description="XLSX only: the sheet (default: the first)")

    @field_validator("phone_region")
    @classmethod
    def _region(cls, value: str) -> str:
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a region code phone numbers know (e.g. CN, HK, GB)")
        return value

    @field_validator("date_format")
    @classmethod
    def _date_format(cls, value: str) -> str:
        return check_date_format(value)


class Rule(_Model):
    column: str | None = Field(default=None, min_length=1, description="the column's header")
    value: str | int | float | bool | date | None = Field(default=None, description="a constant")
    format: str | None = Field(default=None, description="date fields: strptime format of this column")


class MappingFile(_Model):
    options: Options = Field(default_factory=Options)
    fields: dict[str, Rule | str] = Field(min_length=1)


@dataclass(frozen=True)
class Target:
    """One mapped field: where it goes, what type it has, where its value comes from."""

    path: str
    keys: tuple[str | int, ...]
    kind: Kind
    column: str | None
    constant: Any
    date_format: str
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mapping:
    source: str
    options: Options
    targets: tuple[Target, ...]

    def columns(self) -> list[str]:
        return [t.column for t in self.targets if t.column is not None]


def check_date_format(fmt: str) -> str:
    sample = datetime(2001, 2, 3)
    try:
        parsed = datetime.strptime(sample.strftime(fmt), fmt)
    except ValueError:
        raise ValueError(f"{fmt!r} is not a usable date format (e.g. %Y-%m-%d, %d/%m/%Y)") from None
    if parsed.date() != sample.date():
        raise ValueError(f"{fmt!r} does not name a day, a month and a year (e.g. %d/%m/%Y)")
    return fmt


def load_mapping(path: Path) -> Mapping:
    """Read and check a mapping file; InvalidInput naming the file and the key."""
    source = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        parsed = MappingFile.model_validate(data)
    except OSError as exc:
        raise InvalidInput(f"{source}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{source}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        raise InvalidInput(f"{source}: {first_error(exc)}") from None
    targets = []
    for field_path, given in parsed.fields.items():
        rule = Rule(column=given) if isinstance(given, str) else given
        try:
            targets.append(_target(field_path, rule, parsed.options))
        except ValueError as exc:
            raise InvalidInput(f"{source}: fields.{field_path}: {exc}") from None
    try:
        check_complete(targets)
    except ValueError as exc:
        raise InvalidInput(f"{source}: fields: {exc}") from None
    return Mapping(source, parsed.options, tuple(targets))


def _target(path: str, rule: Rule, options: Options) -> Target:
    if (rule.column is None) == (rule.value is None):
        raise ValueError("give either column = \"HEADER\" or value = CONSTANT")
    keys, kind, choices = resolve(path)
    if rule.format is not None and kind != "date":
        raise ValueError(f"format is for date fields; this is a {kind} field")
    fmt = check_date_format(rule.format) if rule.format else options.date_format
    target = Target(path, keys, kind, rule.column, rule.value, fmt, choices)
    if rule.value is not None:
        # A constant is converted like a cell, once, here: a bad one fails at the start.
        try:
            target = replace(target, constant=convert(rule.value, target, options))
        except ValueError as exc:
            raise ValueError(f"the value {exc}") from None
    return target


def resolve(path: str) -> tuple[tuple[str | int, ...], Kind, tuple[str, ...]]:
    """The keys of ``path`` in a nested case dict, the kind of its leaf, and the words
    it may hold if it is a choice."""
    current: Any = Case
    keys: list[str | int] = []
    phone = False
    for part in path.split("."):
        match = _SEGMENT.match(part)
        if match is None:
            raise ValueError("not a field path (write e.g. debtor.phones[0].number)")
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            raise ValueError(f"{keys[-1]} has no sub-fields")
        name, index = match[1], match[2]
        field = current.model_fields.get(name)
        if field is None:
            raise ValueError(f"no field {name!r} here (known: {', '.join(current.model_fields)})")
        current, is_list = _unwrap(field.annotation)
        if is_list != (index is not None):
            hint = f"write {name}[0], {name}[1]... (a list)" if is_list else f"{name} is not a list"
            raise ValueError(hint)
        keys += [name, int(index)] if index is not None else [name]
        phone = field.metadata == typing.get_args(PhoneNumber)[1].metadata
    if isinstance(current, type) and issubclass(current, BaseModel):
        raise ValueError("names a whole object; map its fields one by one")
    kind = _kind(current, phone)
    choices = tuple(str(c) for c in typing.get_args(current)) if kind == "choice" else ()
    return tuple(keys), kind, choices


def _kind(annotation: Any, phone: bool) -> Kind:
    if phone:
        return "phone"
    if typing.get_origin(annotation) is Literal:
        return "choice"
    if annotation is int:
        return "integer"
    if annotation is Decimal:
        return "decimal"
    if annotation is date:
        return "date"
    return "text"


def check_complete(targets: list[Target]) -> None:
    """Every required field mapped: of ``Case``, and of each list item and optional
    object that has a mapped field; list indexes from 0 without gaps."""
    mapped = {t.keys for t in targets}
    parents = {t.keys[:i] for t in targets for i in range(1, len(t.keys))}
    for keys in sorted(parents, key=lambda k: tuple(map(str, k))):
        if isinstance(keys[-1], int) and keys[-1] > 0 and keys[:-1] + (keys[-1] - 1,) not in parents:
            raise ValueError(f"{_dotted(keys)} is mapped but {_dotted(keys[:-1] + (keys[-1] - 1,))} is not")
    for keys in [(), *parents]:
        model = _model_at(keys)
        if model is None:
            continue
        for name, field in model.model_fields.items():
            if field.is_required() and keys + (name,) not in mapped | parents:
                inner, is_list = _unwrap(field.annotation)
                shown = _dotted(keys + (name,)) + ("[0]" if is_list else "")
                raise ValueError(f"{shown} is required by the case model and not mapped")


def _model_at(keys: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The model of the object at ``keys``; None for a list itself (its items count)."""
    current: Any = Case
    is_list = False
    for key in keys:
        if isinstance(key, int):
            is_list = False
            continue
        current, is_list = _unwrap(current.model_fields[key].annotation)
    if is_list or not (isinstance(current, type) and issubclass(current, BaseModel)):
        return None
    return current


def _dotted(keys: tuple[str | int, ...]) -> str:
    out = ""
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out


#: Largest integer a spreadsheet stores exactly; longer numbers (ID numbers) are rounded.
EXACT = 2**53


def cell_text(value: Any) -> str:
    """A cell as text: spreadsheet numbers without a spurious ``.0``; a number too long
    to be exact (an ID number typed into a number cell) refused."""
    if isinstance(value, bool):
        raise ValueError("is TRUE/FALSE, not text")
    if isinstance(value, float):
        if abs(value) >= EXACT:
            raise ValueError("is stored as a number too long to be exact; format the column as text")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value).strip()


def convert(value: Any, target: Target, options: Options) -> Any:
    """The cell ``value`` as the field's type; ValueError saying what is wrong (never
    quoting the value: it is personal data)."""
    kind = target.kind
    if kind == "date":
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        text = cell_text(value)
        try:
            return datetime.strptime(text, target.date_format).date()
        except ValueError:
            raise ValueError(f"is not a date written {target.date_format}") from None
    if kind == "integer":
        text = cell_text(value)
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ValueError("is not a whole number")
        return int(text)
    if kind == "decimal":
        text = cell_text(value).replace(",", "")
        if not re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)", text):
            raise ValueError("is not a number")
        return Decimal(text)
    if kind == "phone":
        return e164(cell_text(value), options.phone_region)
    text = cell_text(value)
    if kind == "choice" and text not in target.choices:
        raise ValueError(f"is not one of {', '.join(target.choices)}")
    return text


def e164(text: str, region: str) -> str:
    """A phone number in E.164 (``+8613812341999``); ValueError if it is not a valid one."""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        raise ValueError(f"is not a phone number (numbers without +country are read as {region})") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError(f"is not a valid phone number (numbers without +country are read as {region})")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
