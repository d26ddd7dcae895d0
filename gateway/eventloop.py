"""The event loop of the long-running commands, `serve` and `dispatch`.

uvloop (libuv, with its own TLS and socket transports) takes less CPU than asyncio's own
loop for the same work: about 15% less a package dispatched over HTTPS and 10-20% a
message over SMTP; callbacks cost the same (docs/benchmarks.md has the figures). It is an
optional extra, ``pip install 'agency-gateway[uvloop]'``; ``event_loop`` in gateway.toml
says which loop runs: ``auto`` (uvloop where installed), ``asyncio`` or ``uvloop``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from gateway.errors import ConfigError

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """Run ``main`` to its end on the loop ``choice`` names (see the module docstring)."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                main.close()
                raise ConfigError(
                    "event_loop = 'uvloop' in gateway.toml, but uvloop is not installed: "
                    "pip install 'agency-gateway[uvloop]', or set event_loop = 'auto'"
                ) from None
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def name(choice: str = "auto") -> str:
    """The loop ``choice`` comes to here: ``uvloop`` or ``asyncio``."""
    if choice == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"
