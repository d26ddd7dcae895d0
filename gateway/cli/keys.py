"""``gateway keys ...``: the bank's own keys."""

from __future__ import annotations

from typing import Any

import click

from gateway.cli.common import actor, echo_json, settings_of, with_gateway
from gateway.core import Gateway
from gateway.errors import GatewayError
from gateway.onboarding import registry, rotation
from gateway.plugin.manager import get_plugin_manager, key_custody


@click.group()
def keys() -> None:
    """The bank's keys: generate, rotate, publish."""


@keys.command("generate")
@click.pass_obj
def keys_generate(obj: dict[str, Any]) -> None:
    """Create any missing bank key (signing, pseudonymization, audit log) where the key
    custody keeps them (files, or a token); keep existing ones."""
    settings = settings_of(obj)
    try:
        made = key_custody(get_plugin_manager(), settings).generate(settings.signing_alg)
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(", ".join(made) + " generated" if made else "all keys present; nothing changed")


@keys.command("rotate")
@click.option(
    "--alg",
    type=click.Choice(["ES256", "EdDSA"]),
    default=None,
    help="Algorithm of the new key [default: same as now].",
)
@with_gateway
async def keys_rotate(gw: Gateway, alg: str | None) -> None:
    """Replace the signing key; the old public key stays in the published JWKS."""
    done = await rotation.rotate_signing_key(gw, alg, actor=actor())
    dash = "-- " if done.old_kid.startswith("-") else ""
    click.echo(
        f"signing key rotated: {done.old_kid} -> {done.new_kid} ({done.alg}); old public key kept in "
        f"jwks.json until `gateway keys retire {dash}{done.old_kid}`"
    )


@keys.command("retire")
@click.argument("kid")
@click.option(
    "--compromised", is_flag=True, help="Take the key out of the published set at once, not later."
)
@with_gateway
async def keys_retire(gw: Gateway, kid: str, compromised: bool) -> None:
    """Retire an old signing key: published only until the packages it signed expire.

    A KID that begins with '-' goes after '--': `gateway keys retire -- -Xy...`.
    """
    until = await registry.retire_signing_key(gw, kid, compromised=compromised, actor=actor())
    click.echo(
        f"{kid} retired as compromised: no longer published"
        if until is None
        else f"{kid} retired: published until {until}, then left out"
    )


@keys.command("jwks")
@click.pass_obj
def keys_jwks(obj: dict[str, Any]) -> None:
    """Print the bank's public key set (what /.well-known/jwks.json serves)."""
    try:
        echo_json(key_custody(get_plugin_manager(), settings_of(obj)).public_jwks())
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None
