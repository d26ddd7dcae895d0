"""Agency Gateway: encrypted, field-minimized case packages to contracted partners."""

from gateway.hookspecs import hookimpl

__all__ = ["hookimpl"]
