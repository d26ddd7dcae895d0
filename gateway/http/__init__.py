"""The HTTP service: partner callbacks, the operator API, keys and health."""

from gateway.http.app import create_app

__all__ = ["create_app"]
