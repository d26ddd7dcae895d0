"""Message templates of the SMS and email adapters: ``{field.path}`` slots.

Slots are filled only from the package's minimized data, never from the full case, so
a message cannot carry a field the profile did not list; :func:`check_template` refuses
such a slot when the partner is onboarded rather than when a message is sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from gateway.errors import DeliveryError
from gateway.placement.minimize import parse_path
from schemas.partner import PartnerProfile

SLOT = re.compile(r"\{([^{}]*)\}")


def slots(text: str) -> list[str]:
    return SLOT.findall(text)


def values(data: Any, path: str) -> list[Any]:
    """Every value at ``path`` (``a.b[].c``) in ``data``, lists walked in order."""
    found = [data]
    for seg in parse_path(path):
        step = []
        for item in found:
            value = item.get(seg.name) if isinstance(item, dict) else None
            if value is None:
                continue
            if seg.is_list:
                step.extend(value if isinstance(value, list) else [])
            else:
                step.append(value)
        found = step
    return [v for v in found if v is not None and not isinstance(v, dict | list)]


def first(data: dict[str, Any], path: str, what: str) -> str:
    """The first value at ``path``; a package without one cannot be sent (permanent)."""
    found = values(data, path)
    if not found:
        raise DeliveryError(f"{what}: the package has no value at {path!r}; it cannot be sent")
    return str(found[0])


def render(text: str, data: dict[str, Any]) -> str:
    return SLOT.sub(lambda m: first(data, m.group(1), f"template slot {{{m.group(1)}}}"), text)


def check_template(text: str, listed: Iterable[str], where: str) -> None:
    """Every slot must name a field the purpose's policy lets out (and does not drop)."""
    allowed = set(listed)
    for slot in slots(text):
        try:
            parse_path(slot)
        except ValueError:
            raise ValueError(f"{where}: malformed slot {{{slot}}}") from None
        if slot not in allowed:
            raise ValueError(
                f"{where}: slot {{{slot}}} is not a field of the policy for this purpose; "
                f"list it under [policy.PURPOSE.fields] or remove it from the template"
            )


def check_profile_messages(
    profile: PartnerProfile, texts: dict[str, list[str]], recipient_field: str
) -> None:
    """Onboarding check of a messaging partner: for each purpose a template exists, its
    slots and the recipient field are all fields that purpose's policy sends."""
    for purpose, policy in profile.policy.items():
        if purpose not in texts:
            raise ValueError(f"adapter_config.templates has no template for purpose {purpose!r}")
        sent = {path for path, rule in policy.fields.items() if rule.transform != "drop"}
        if recipient_field not in sent:
            raise ValueError(
                f"adapter_config.recipient_field {recipient_field!r} is not sent for {purpose!r}; "
                f"list it under [policy.{purpose}.fields]"
            )
        for text in texts[purpose]:
            check_template(text, sent, f"adapter_config.templates.{purpose}")
