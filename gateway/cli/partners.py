"""``gateway partners ...``: onboarding, status and offboarding of partners."""

from __future__ import annotations

from pathlib import Path

import click

from gateway.cli.common import actor, echo_json, table, with_gateway
from gateway.core import Gateway
from gateway.onboarding import golive, kit, registry
from gateway.placement import recall as recalls


@click.group()
def partners() -> None:
    """Onboard partners from profile files, list them, suspend and reinstate them."""


@partners.command("add")
@click.argument("profile", type=click.Path(path_type=Path))
@click.option("--update", is_flag=True, help="Replace the profile of an existing partner.")
@with_gateway
async def partners_add(gw: Gateway, profile: Path, update: bool) -> None:
    """Validate PROFILE (TOML) and onboard the partner it describes."""
    record, what = await registry.add(gw, profile, actor=actor(), update=update)
    click.echo(
        f"{record.id}: {what} ({record.profile.kind}, adapter {record.profile.adapter}, "
        f"profile {record.profile_digest[:19]}...)"
    )


@partners.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@with_gateway
async def partners_list(gw: Gateway, as_json: bool) -> None:
    """All partners with their status and contract."""
    records = await registry.list_all(gw)
    rows = [
        {
            "id": r.id,
            "kind": r.profile.kind,
            "status": r.status,
            "adapter": r.profile.adapter,
            "contract": r.profile.contract.number,
            "valid_to": str(r.profile.contract.valid_to),
            "purposes": ",".join(r.profile.policy),
        }
        for r in records
    ]
    if as_json:
        echo_json(rows)
    elif not rows:
        click.echo("no partners yet; onboard one with `gateway partners add PROFILE.toml`")
    else:
        click.echo(table(rows))


@partners.command("show")
@click.argument("partner_id")
@with_gateway
async def partners_show(gw: Gateway, partner_id: str) -> None:
    """The stored profile and status of one partner, as JSON."""
    r = await registry.get(gw, partner_id)
    echo_json(
        {
            "status": r.status,
            "status_reason": r.status_reason,
            "profile_digest": r.profile_digest,
            "source": r.source,
            "created_at": r.created_at,
            "updated_at": r.updated_at,
            "profile": r.profile.model_dump(mode="json"),
        }
    )


@partners.command("suspend")
@click.argument("partner_id")
@click.option("--reason", required=True, help="Why; recorded in the audit log (no personal data).")
@with_gateway
async def partners_suspend(gw: Gateway, partner_id: str, reason: str) -> None:
    """Stop all placements to a partner until it is reinstated."""
    await registry.set_status(gw, partner_id, "suspended", reason=reason, actor=actor())
    click.echo(f"{partner_id}: suspended")


@partners.command("reinstate")
@click.argument("partner_id")
@click.option("--reason", default="", help="Why; recorded in the audit log (no personal data).")
@with_gateway
async def partners_reinstate(gw: Gateway, partner_id: str, reason: str) -> None:
    """Allow placements to a suspended partner again."""
    await registry.set_status(gw, partner_id, "active", reason=reason, actor=actor())
    click.echo(f"{partner_id}: active")


@partners.command("offboard")
@click.argument("partner_id")
@click.option("--reason", required=True,
              help="Why, in general terms; sent with each recall notice and recorded in the audit log "
              "(no personal data).")
@with_gateway
async def partners_offboard(gw: Gateway, partner_id: str, reason: str) -> None:
    """Recall every open case of a partner and end the relationship."""
    done = await recalls.offboard(gw, partner_id, reason, actor=actor())
    click.echo(
        f"{partner_id}: offboarded; {len(done.recalled)} case(s) recalled, deletion attestations due; "
        f"{len(done.secrets_removed)} webhook secret(s) removed"
    )

@partners.command("webhook-secret")
@click.argument("partner_id")
@with_gateway
async def partners_webhook_secret(gw: Gateway, partner_id: str) -> None:
    """Add a whsec_ secret for v1 callback signatures (older ones stay valid).

    The secret is written to a 0600 file for handover to the partner, never printed.
    """
    path, secret_id = await registry.add_webhook_secret(gw, partner_id, actor=actor())
    click.echo(f"new secret {secret_id} appended to {path} (hand the last line to the partner securely)")


@partners.command("webhook-secret-list")
@click.argument("partner_id")
@with_gateway
async def partners_webhook_secret_list(gw: Gateway, partner_id: str) -> None:
    """The ids of the partner's whsec_ secrets, oldest first (never the secrets)."""
    for secret_id in await registry.webhook_secret_ids(gw, partner_id):
        click.echo(secret_id)


@partners.command("webhook-secret-remove")
@click.argument("partner_id")
@click.argument("secret_ids", nargs=-1)
@click.option("--all", "remove_all", is_flag=True, help="Remove every secret of the partner.")
@click.option("--reason", default="", help="Why; recorded in the audit log (no personal data).")
@with_gateway
async def partners_webhook_secret_remove(
    gw: Gateway, partner_id: str, secret_ids: tuple[str, ...], remove_all: bool, reason: str
) -> None:
    """Remove whsec_ secrets by id (see webhook-secret-list): callbacks signed with
    them are refused from then on."""
    if remove_all == bool(secret_ids):
        raise click.UsageError("name the secret ids to remove, or --all")
    ids = None if remove_all else secret_ids
    removed = await registry.remove_webhook_secrets(gw, partner_id, ids, reason=reason, actor=actor())
    left = len(gw.keys.webhook_secret_ids(partner_id))
    click.echo(f"{partner_id}: webhook secret {', '.join(removed) or '(none)'} removed; {left} left")


@partners.command("kit")
@click.argument("partner_id")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option(
    "--gateway-url", required=True, metavar="URL",
    help="This gateway's address as the partner reaches it, e.g. https://gateway.bank.example",
)
@with_gateway
async def partners_kit(gw: Gateway, partner_id: str, directory: Path, gateway_url: str) -> None:
    """Write the partner kit into DIRECTORY (new or empty): PARTNER.md, the bank's JWKS,
    the JSON Schemas of the partner's data, samples sealed to test-only keys, and code."""
    files = await kit.write_kit(gw, partner_id, directory, gateway_url)
    click.echo(f"{partner_id}: kit of {sum(p.is_file() for p in files)} files in {directory}")
    click.echo("hand over the whole folder; test-only/ holds keys made for the kit, not the partner's")


@partners.command("test")
@click.argument("partner_id")
@click.option("--purpose", default=None, help="Policy whose data the package shows [default: the first].")
@click.option(
    "--timeout", default=300.0, show_default=True, type=click.FloatRange(min=1),
    help="Seconds to wait for the partner's signed test report.",
)
@with_gateway
async def partners_test(gw: Gateway, partner_id: str, purpose: str | None, timeout: float) -> None:
    """Go-live test: send the partner a test package of synthetic data and wait for its
    signed report on it (at this gateway's callback URL, so `gateway serve` must run).
    Each step is told in plain words and audited; exit status 1 if one fails."""

    def report(step: golive.Step) -> None:
        click.echo(f"{'ok' if step.ok else 'FAILED':6}  {step.name}: {step.text}")
        if step.ok and step.name == "package":
            click.echo(f"        waiting up to {timeout:g} s for the partner's signed report...")

    if not await golive.run(gw, partner_id, purpose, timeout=timeout, actor=actor(), report=report):
        raise click.ClickException(f"{partner_id}: go-live test failed (see above)")
    click.echo(f"{partner_id}: go-live test passed")
