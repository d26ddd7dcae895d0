"""The supervisor dashboard: server-rendered pages under ``/ui`` of ``gateway serve``."""

from gateway.http.ui.site import mount

__all__ = ["mount"]
