"""Logging: one line per event, as text or JSON, every line redacted.

``configure(format)`` installs one handler on the root logger. Its filter passes every
record, whatever logger made it, through `gateway.supervision.redact.redact` (e-mail
addresses and long numbers go, whoever wrote the message), message, extra fields and
traceback alike. A JSON line holds ``at``, ``level``, ``logger``, ``msg`` and, when
known, ``request_id``, ``partner``, ``package``, ``case`` (the case's pseudonymous
token) and the record's other extra fields.

Code logs ids through ``extra={...}``: ``log.info("...", extra=context(partner=...))``.
The request id of the HTTP request being handled is added by itself (`REQUEST_ID`).
"""

from __future__ import annotations

import logging
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson

from gateway.supervision.redact import redact

Format = Literal["text", "json"]
#: The id of the HTTP request being handled (set by the access log middleware).
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
#: Attributes every LogRecord has: anything else on a record came through ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_KEY_ORDER = ("request_id", "partner", "package", "case")
_HANDLER_NAME = "gateway"


def context(**fields: Any) -> dict[str, Any]:
    """``extra`` for a log call: the fields given, without the empty ones."""
    return {k: v for k, v in fields.items() if v is not None}


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact(str(value))


class Redact(logging.Filter):
    """Every record leaves redacted: message (with its arguments), extras, traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = redact("".join(traceback.format_exception(*record.exc_info)).rstrip())
            record.exc_info = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, _clean(value))
        if getattr(record, "request_id", None) is None and (rid := REQUEST_ID.get()):
            record.request_id = rid
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
    ordered = {k: extra.pop(k) for k in _KEY_ORDER if k in extra}
    return {**ordered, **extra}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_extras(record),
        }
        if record.exc_text:
            line["error"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        line = f"{record.levelname} {record.name}: {record.getMessage()}" + (f"  {fields}" if fields else "")
        return line + (f"\n{record.exc_text}" if record.exc_text else "")


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (it may be swapped)."""

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


#: Environment variable choosing the log format of every command (serve and dispatch
#: also take --log-format).
FORMAT_ENV = "GATEWAY_LOG_FORMAT"


def configure(fmt: Format = "text", level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (stderr) as ``fmt``, redacted; replaces what an
    earlier call installed."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    handler: logging.Handler = logging.StreamHandler(stream) if stream else _Stderr()
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(Redact())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's own access log is replaced by ours (gateway.http.observe).
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def level(name: str) -> int:
    """A level's number from its name in gateway.toml (``info``)."""
    return int(logging.getLevelName(name.upper()))
