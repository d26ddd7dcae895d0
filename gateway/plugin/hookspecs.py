"""Every hook a gateway plugin can implement.

Hooks are few and hand over objects; the real work happens on those objects, whose
async methods the core awaits (pluggy itself is synchronous).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    from gateway.plugin.adapter import Adapter

hookspec = HookspecMarker("gateway")
hookimpl = HookimplMarker("gateway")


@hookspec
def gateway_register_adapters(register: Callable[[type[Adapter]], None]) -> None:
    """Called once when the plugin manager is built, to collect partner adapters.

    :param register: call it with each :class:`gateway.plugin.adapter.Adapter` subclass the
        plugin provides; the class's ``name`` is what profiles put in ``adapter``.
    :return: nothing; registering twice under one name is an error.
    """
