"""PARTNER.md: the kit's guide for the partner's engineers, from ``templates/PARTNER.md``.

The code it shows is read from ``templates/code/``, the very files the kit carries and
the tests run, so the guide cannot drift from code that works.
"""

from __future__ import annotations

from pathlib import Path
from string import Template
from typing import Any

from schemas.partner import PartnerProfile

TEMPLATES = Path(__file__).with_name("templates")
#: Placeholder -> snippet file under templates/code/.
SNIPPETS = {
    "python_open": "python/open_package.py",
    "python_sign": "python/sign_callback.py",
    "node_open": "node/open-package.mjs",
    "node_sign": "node/sign-callback.mjs",
    "java_open": "java/OpenPackage.java",
    "java_sign": "java/SignCallback.java",
    "go_open": "go/open_package.go",
    "go_sign": "go/sign_callback.go",
    "csharp_open": "csharp/OpenPackage.cs",
    "csharp_sign": "csharp/SignCallback.cs",
}


def snippets() -> dict[str, str]:
    return {name: (TEMPLATES / "code" / path).read_text().rstrip() for name, path in SNIPPETS.items()}


def contract(profile: PartnerProfile, config: Any) -> tuple[str, str]:
    """The request the partner's endpoint receives, and what the gateway keeps of the answer."""
    endpoint = profile.endpoint.rstrip("/")
    if profile.adapter == "agency_http":
        request = (
            f"POST {endpoint}{config.packages_path}\nContent-Type: application/jose\n"
            "Idempotency-Key: pkg_...\n\n<the compact JWE, ASCII>"
        )
        answer = 'your id for the case is stored: answer `{"reference": "AC-88123"}` (a string or number)'
    elif profile.adapter == "arbitration_http":
        request = (
            f"POST {endpoint}{config.filings_path}\nContent-Type: application/json\n"
            'Idempotency-Key: pkg_...\n\n{"package": "<the compact JWE>", "case_ref": "case_...", '
            '"purpose": "arbitration"}'
        )
        answer = 'your filing number is stored: answer `{"filing_number": "..."}`'
    else:
        request = f"(adapter {profile.adapter}: the bank describes its request to {endpoint})"
        answer = "the adapter reads your reference from the answer"
    return f"```\n{request}\n```", answer


def feed(profile: PartnerProfile, config: Any) -> str:
    """The status feed section: the gateway polls one only if the profile names its path."""
    path = getattr(config, "status_feed_path", None) or getattr(config, "status_path", None)
    where = (
        f"The bank polls `GET {profile.endpoint.rstrip('/')}{path}?since=<cursor>` every "
        f"{config.poll_interval:g} seconds."
        if path
        else "Your profile names no feed today; ask the bank to set its path if you need one."
    )
    return (
        "### If you cannot push: a status feed\n\n"
        f"{where} The first request has no `since`. Answer\n\n```json\n"
        '{"events": [{"id": "ev-1001", "type": "accepted", "case_ref": "case_...", '
        '"occurred_at": "2026-11-20T10:15:00+08:00"}],\n "cursor": "opaque-position"}\n```\n\n'
        "Each event is a status event plus an `id`, unique per event (an event seen twice is "
        "applied once). The gateway sends `cursor` back as `since` next time; a `null` cursor "
        "keeps the previous one. One page is fetched per poll; an event the bank refuses is "
        "skipped, and you are not told."
    )


def render(values: dict[str, str]) -> str:
    return Template((TEMPLATES / "PARTNER.md").read_text()).substitute({**values, **snippets()})
