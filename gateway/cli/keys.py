"""``gateway keys ...``: the bank's own keys."""

from __future__ import annotations

from typing import Any, Literal

import click

from gateway.cli.common import actor, echo_json, settings_of, with_gateway
from gateway.core import Gateway
from gateway.errors import GatewayError
from gateway.onboarding import openpgp, registry, rotation
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


@keys.group("openpgp")
def keys_openpgp() -> None:
    """The bank's OpenPGP key, for file partners that take only OpenPGP.

    It signs their placement batches, manifests and recall notices; they encrypt
    nothing to it. The secret key is keys/bank/openpgp.key (0600, no passphrase), its
    public certificate keys/bank/openpgp.asc, which `export` prints for partners.
    """


REPLACE_HELP = "Replace an existing key (every OpenPGP partner must then import the new one)."


def _keystore(obj: dict[str, Any]) -> KeyStore:
    return KeyStore(settings_of(obj).keys_dir)


async def _set(
    gw: Gateway, key: openpgp.BankKey, how: Literal["generated", "imported"], replace: bool
) -> None:
    """Install ``key``, recorded in the audit log, and say so."""
    entry = await rotation.set_openpgp_key(gw, key, how, replace=replace, actor=actor())
    before = f" (replacing {entry.previous_fingerprint or 'an unreadable key'})" if entry.replaced else ""
    click.echo(
        f"bank OpenPGP key {how}: {key.fingerprint}{before}, recorded in the audit log; give partners "
        "`gateway keys openpgp export` and its fingerprint"
    )


@keys_openpgp.command("generate")
@click.option("--user-id", default=None, help='The key\'s user id [default: "BANK-NAME <BANK-ID>"].')
@click.option("--valid-days", type=click.IntRange(1, 3650), default=730, show_default=True,
              help="Days until the key expires; extend or replace it before then.")  # fmt: skip
@click.option("--replace", is_flag=True, help=REPLACE_HELP)
@with_gateway
async def keys_openpgp_generate(gw: Gateway, user_id: str | None, valid_days: int, replace: bool) -> None:
    """Make the bank's OpenPGP key (Ed25519 signing, Cv25519 encryption subkeys); an
    audit log entry records it."""
    settings = gw.settings
    uid = user_id or f"{settings.bank_name or settings.bank_id} <{settings.bank_id}>"
    await _set(gw, openpgp.new_bank_key(uid, valid_days), "generated", replace)


@keys_openpgp.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--replace", is_flag=True, help=REPLACE_HELP)
@with_gateway
async def keys_openpgp_import(gw: Gateway, file: str, replace: bool) -> None:
    """Take the bank's OpenPGP key from FILE (- for standard input): a secret key
    exported without a passphrase, e.g. `gpg --export-secret-keys --armor FPR`. Delete
    FILE once imported. An audit log entry records it (by fingerprint)."""
    with click.open_file(file, "rb") as handle:
        data = handle.read()
    key = openpgp.read_bank_key(data, "standard input" if file == "-" else file)
    await _set(gw, key, "imported", replace)


@keys_openpgp.command("export")
@click.pass_obj
def keys_openpgp_export(obj: dict[str, Any]) -> None:
    """Print the bank's public OpenPGP key (armored) for partners; its fingerprint goes
    to stderr, to be confirmed with them out of band."""
    try:
        key = openpgp.bank_key(_keystore(obj))
    except GatewayError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"fingerprint: {key.fingerprint}", err=True)
    click.echo(key.public(), nl=False)
