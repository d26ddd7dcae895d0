"""The plugin manager: built-in plugins from an explicit tuple, others by entry point,
and what each registering hook collected."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy

from gateway.config import Settings
from gateway.errors import ConfigError
from gateway.inbound.formats import STANDARD_WEBHOOKS, CallbackFormat
from gateway.onboarding.custody import KeyCustody
from gateway.placement.transforms import BUILTIN as BUILTIN_TRANSFORMS
from gateway.placement.transforms import Transform
from gateway.plugin import hookspecs
from gateway.plugin.adapter import Adapter

#: Built-in plugins, registered in this order before any third-party one.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "gateway.onboarding.file_custody",
    "gateway.onboarding.hsm",
    "plugins.agency_http",
    "plugins.arbitration_http",
    "plugins.sms_http",
    "plugins.email_smtp",
    "plugins.sftp_batch",
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


def _collect(what: str, fits: Callable[[Any], bool]) -> tuple[dict[str, Any], Callable[[Any], None]]:
    """A dict and the ``register`` function a registering hook is called with: each
    object registered under its ``name``, refused if it is not one or the name is taken."""
    found: dict[str, Any] = {}

    def register(obj: Any) -> None:
        if not fits(obj):
            raise ConfigError(f"a plugin registered {obj!r}, which is not a {what}")
        if obj.name in found:
            raise ConfigError(f"two plugins register a {what} named {obj.name!r}")
        found[obj.name] = obj

    return found, register


def adapters(pm: pluggy.PluginManager) -> dict[str, type[Adapter]]:
    found, register = _collect(
        "gateway.plugin.adapter.Adapter subclass", lambda c: isinstance(c, type) and issubclass(c, Adapter)
    )
    pm.hook.gateway_register_adapters(register=register)
    return found


def transforms(pm: pluggy.PluginManager) -> dict[str, Transform]:
    """The built-in field transforms and every plugin's."""
    found, register = _collect("gateway.placement.transforms.Transform", lambda t: isinstance(t, Transform))
    for builtin in BUILTIN_TRANSFORMS.values():
        register(builtin)
    pm.hook.gateway_register_transforms(register=register)
    return found


def callback_formats(pm: pluggy.PluginManager) -> dict[str, CallbackFormat]:
    """The built-in callback format (Standard Webhooks) and every plugin's."""
    found, register = _collect(
        "gateway.inbound.formats.CallbackFormat", lambda f: isinstance(f, CallbackFormat)
    )
    register(STANDARD_WEBHOOKS)
    pm.hook.gateway_register_callback_formats(register=register)
    return found


def rule_packs(pm: pluggy.PluginManager) -> dict[str, Path]:
    """The rule packs plugins add, by name, with the path of each one's TOML file."""
    found: dict[str, Path] = {}

    def register(name: str, path: Path) -> None:
        if name in found:
            raise ConfigError(f"two plugins register a rule pack named {name!r}")
        found[name] = Path(path)

    pm.hook.gateway_register_rule_packs(register=register)
    return found


def key_custody(pm: pluggy.PluginManager, settings: Settings) -> KeyCustody:
    """The key custody that ``settings.key_custody`` names."""
    custody: KeyCustody | None = pm.hook.gateway_key_custody(settings=settings)
    if custody is None:
        raise ConfigError(
            f"key_custody = {settings.key_custody!r}: no installed plugin provides it "
            "(`gateway plugins` lists them; the built-in one is \"files\")"
        )
    return custody


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
