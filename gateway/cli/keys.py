"""``gateway keys ...``: the bank's own keys."""

from __future__ import annotations

from typing import Any

import click

from gateway.cli.common import actor, echo_json, settings_of, with_gateway
from gateway.core import Gateway
from gateway.errors import GatewayError
from gateway.onboarding import rotation
from gateway.onboarding.keys import KeyStore
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
    click.echo(
        f"signing key rotated: {done.old_kid} -> {done.new_kid} ({done.alg}); "
        "old public key kept in jwks.json"
    )


@keys.command("jwks")
@click.pass_obj
def keys_jwks(obj: dict[str, Any]) -> None:
    """Print the bank's public key set (what /.well-known/jwks.json serves)."""
    try:
        echo_json(KeyStore(settings_of(obj).keys_dir).public_jwks())
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None
