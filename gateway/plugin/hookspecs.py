"""Every hook a gateway plugin can implement.

Hooks are few and hand over objects; the real work happens on those objects, whose
async methods the core awaits (pluggy itself is synchronous). A plugin is a module with
``@hookimpl`` functions, installed through the ``gateway`` entry-point group; see
docs/plugins.md for one example of each hook.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click
from pluggy import HookimplMarker, HookspecMarker

if TYPE_CHECKING:
    from gateway.config import Settings
    from gateway.inbound.formats import CallbackFormat
    from gateway.onboarding.custody import KeyCustody
    from gateway.placement.transforms import Transform
    from gateway.plugin.adapter import Adapter
    from gateway.plugin.events import Event

hookspec = HookspecMarker("gateway")
hookimpl = HookimplMarker("gateway")


@hookspec
def gateway_register_adapters(register: Callable[[type[Adapter]], None]) -> None:
    """Called once when the plugin manager is built, to collect partner adapters.

    :param register: call it with each :class:`gateway.plugin.adapter.Adapter` subclass
        the plugin provides; the class's ``name`` is what profiles put in ``adapter``.
    :return: nothing; registering twice under one name is an error.
    """


@hookspec
def gateway_register_commands(cli: click.Group) -> None:
    """Called once when the ``gateway`` command is built, to add a plugin's commands.

    :param cli: the top-level ``gateway`` click group; call ``cli.add_command(...)``.
        A command that opens the workspace can use
        :func:`gateway.cli.common.with_gateway`.
    :return: nothing.
    """


@hookspec
def gateway_register_rule_packs(register: Callable[[str, Path], None]) -> None:
    """Called when a rule pack is looked up, to add a jurisdiction's pack without a fork.

    :param register: call it with the pack's name (what ``rule_pack`` in gateway.toml
        says) and the path of its TOML file, written like the built-in packs: one table
        per rule, each with the ``source`` it rests on.
    :return: nothing; a name the gateway or another plugin already has is an error.
    """


@hookspec
def gateway_register_transforms(register: Callable[[Transform], None]) -> None:
    """Called when profiles are checked or cases minimized, to add field transforms.

    :param register: call it with each :class:`gateway.placement.transforms.Transform`
        (e.g. a national-ID scheme); profiles name it in ``transform = "..."`` and give
        its options in ``options = {...}``.
    :return: nothing; a name already taken is an error.
    """


@hookspec
def gateway_register_callback_formats(register: Callable[[CallbackFormat], None]) -> None:
    """Called when callbacks are received, to add formats other than Standard Webhooks
    with our event schema (e.g. an SMS provider's delivery receipts).

    :param register: call it with each :class:`gateway.inbound.formats.CallbackFormat`;
        a profile chooses one with ``callback_format = "..."``.
    :return: nothing; a name already taken is an error.
    """


@hookspec
def gateway_event(event: Event) -> None:
    """Called after each committed audited action (placement, delivery, dead package,
    violation, suspension, recall, attestation, checkpoint...), for alerting and SIEM.

    The action is already committed: an exception here is logged and never undoes or
    blocks it. Do slow work elsewhere (queue it); this runs on the event loop.

    :param event: a :class:`gateway.plugin.events.Event`: the action's kind, time,
        partner, case token and details (pseudonymous tokens, no personal data).
    :return: nothing.
    """


@hookspec(firstresult=True)
def gateway_key_custody(settings: Settings) -> KeyCustody | None:
    """Called once per workspace opened, to choose where the bank's private keys live.

    :param settings: the workspace's settings; ``settings.key_custody`` names the
        custody wanted (``"files"``, the built-in, keeps keys as 0600 files in
        ``keys/``).
    :return: a :class:`gateway.onboarding.custody.KeyCustody` if this plugin provides
        the custody named, else None (the next plugin is asked).
    """
