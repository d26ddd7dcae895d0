"""Agency Gateway: encrypted, field-minimized case packages to contracted partners."""

from gateway.plugin.hookspecs import hookimpl

__all__ = ["hookimpl"]
