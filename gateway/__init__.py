"""Agency Gateway: encrypted, field-minimized case packages to contracted partners."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.plugin.hookspecs import hookimpl

__all__ = ["hookimpl"]


def __getattr__(name: str) -> Any:
    # Imported when first asked for, not with the package: a process that needs only a
    # small part of it (an audit verify worker) then starts without pluggy and click.
    if name == "hookimpl":
        from gateway.plugin.hookspecs import hookimpl

        return hookimpl
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
