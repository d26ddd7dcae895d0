"""The plugin manager: built-in adapters from an explicit tuple, others by entry point."""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

import pluggy

from gateway.errors import ConfigError
from gateway.plugin import hookspecs
from gateway.plugin.adapter import Adapter

#: Built-in plugins, registered in this order before any third-party one.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "plugins.agency_http",
    "plugins.arbitration_http",
    "plugins.sms_http",
    "plugins.email_smtp",
)
ENTRY_POINT_GROUP = "gateway"


def get_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("gateway")
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if load_entrypoints:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    pm.check_pending()
    return pm


def adapters(pm: pluggy.PluginManager) -> dict[str, type[Adapter]]:
    found: dict[str, type[Adapter]] = {}

    def register(cls: type[Adapter]) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise ConfigError(f"a plugin registered {cls!r}, which is not an Adapter subclass")
        if cls.name in found:
            raise ConfigError(f"two plugins register an adapter named {cls.name!r}")
        found[cls.name] = cls

    pm.hook.gateway_register_adapters(register=register)
    return found


def describe(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """What `gateway plugins` prints: each plugin, its version and hooks and adapters."""
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    by_plugin: dict[str, list[str]] = {}
    for cls in adapters(pm).values():
        by_plugin.setdefault(cls.__module__.rsplit(".", 1)[0], []).append(cls.name)
    out = []
    for name, plugin in pm.list_name_plugin():
        dist = dists.get(id(plugin))
        module = getattr(plugin, "__name__", name)
        out.append(
            {
                "name": name,
                "builtin": name in BUILTIN_PLUGINS,
                "version": dist.version if dist else metadata.version("agency-gateway"),
                "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
                "adapters": sorted(by_plugin.get(module, [])),
            }
        )
    return out
