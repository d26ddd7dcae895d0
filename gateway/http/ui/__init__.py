"""The supervisor dashboard: server-rendered pages under ``/ui`` of ``gateway serve``."""

from gateway.http.ui.web import mount

__all__ = ["mount"]
