"""Who may be contacted, and how: third parties, and the requests people make.

Third parties (an emergency contact, a relative, a colleague) are told apart by the
bank-side identity of their number or address (``Contact.number``), the same whichever
partner called. A rule that needs that identity flags a contact reported without one:
it cannot tell whether the person was contacted before or asked not to be.

Requests (opt out of a medium, cease, represented by an attorney, not at work, a third
party's "do not call me") bind the partner that heard them from the moment they were
made, and everyone else, the gateway's own messages included, from the moment the
gateway learnt of them (`Request.binds`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from pydantic import Field

from gateway.supervision.base import (
    CONVERSATION,
    Breach,
    Channel,
    Contact,
    Outcome,
    Request,
    RequestKind,
    Rule,
    Situation,
    Target,
    local_time,
    ranked,
)

CALLS: frozenset[Channel] = frozenset({"voice", "ai_voice"})


def _third_party(contact: Contact) -> bool:
    return contact.target == "third_party"


class _AboutThirdParties(Rule):
    """A rule on contacts with third parties: a contact with the debtor leaves what it
    finds as it was (`Rule.unchanged_by`), unless a subclass says otherwise."""

    def unchanged_by(self, contact: Contact, before: Situation) -> bool:
        return not _third_party(contact)


class ThirdPartyAfterUnreachable(_AboutThirdParties):
    """Third parties only once the debtor could not be reached (失联): ``failed_attempts``
    failed calls in a row since the debtor last spoke with a caller.

    Judged on the calls on record when the third-party contact was reported: those made
    before it that the gateway had learnt of by then (``Contact.learnt``). A call reported
    after it does not count for it, so a late report neither withdraws nor adds a breach
    of this rule, and its breaches do not depend on the order reports arrive in.
    """

    failed_attempts: int = Field(ge=1)
    failed_outcomes: frozenset[Outcome]
    channels: frozenset[Channel] = CALLS

    def hits(self, situation: Situation) -> Iterator[tuple[Contact, Any]]:
        if not situation.third_parties:
            return
        calls: list[Contact] = []  # the debtor's calls so far, in time order
        for contact in situation.contacts:
            if contact.target == "debtor" and contact.channel in self.channels:
                calls.append(contact)
            elif _third_party(contact):
                failures = self.failures(calls, contact.learnt)
                if failures < self.failed_attempts:
                    yield contact, failures

    def unchanged_by(self, contact: Contact, before: Situation) -> bool:
        # A call counts for a third-party contact only if the gateway had learnt of it by
        # the time it learnt of that contact (`failures`): one learnt of after every
        # third-party contact on record counts for none of them.
        learnt_before = all(t.learnt < contact.learnt for t in before.third_parties)
        return super().unchanged_by(contact, before) and learnt_before

    def failures(self, calls: Iterable[Contact], known: datetime) -> int:
        """Failed calls in a row since the debtor was last reached, among ``calls`` the
        gateway had learnt of by ``known``."""
        failures = 0
        for call in calls:
            if call.learnt > known:
                continue
            if call.outcome in self.failed_outcomes:
                failures += 1
            elif call.outcome in CONVERSATION:
                failures = 0
        return failures

    def describe(self, contact: Contact, detail: Any, situation: Situation) -> Breach:
        return self.breach(
            contact,
            f"third party contacted at {local_time(contact.at, situation.zone)} after {detail} failed "
            f"calls to the debtor since the debtor was last reached; {self.failed_attempts} are required",
            failed_attempts=detail,
            required=self.failed_attempts,
            partner=contact.partner,
        )


class ThirdPartyCaps(_AboutThirdParties):
    """Calls to third parties about one debtor: at most ``daily`` a local day and
    ``total`` in all, every partner together."""

    daily: int = Field(ge=1)
    total: int = Field(ge=1)
    channels: frozenset[Channel] = CALLS

    def hits(self, situation: Situation) -> Iterator[tuple[Contact, Any]]:
        def counts(contact: Contact) -> bool:
            return _third_party(contact) and contact.channel in self.channels

        contacts = situation.third_parties  # the only ones counted
        per_day = {id(c): n for c, n, _ in ranked(contacts, counts, lambda c: situation.day(c.at))}
        for contact, rank, _ in ranked(contacts, counts, lambda c: "all"):
            if per_day[id(contact)] > self.daily or rank > self.total:
                yield contact, (per_day[id(contact)], rank)

    def describe(self, contact: Contact, detail: Any, situation: Situation) -> Breach:
        day_rank, rank = detail
        return self.breach(
            contact,
            f"third-party call at {local_time(contact.at, situation.zone)} is number {day_rank} that "
            f"day and {rank} in all; at most {self.daily} a day and {self.total} in all",
            day_count=day_rank,
            total_count=rank,
            daily_limit=self.daily,
            total_limit=self.total,
        )


class ThirdPartyOnce(_AboutThirdParties):
    """A third party is contacted at most once (a second time only at their request,
    which is not modelled): every later contact with the same number or address breaches."""

    def hits(self, situation: Situation) -> Iterator[tuple[Contact, Any]]:
        first: dict[str, Contact] = {}
        for contact in situation.third_parties:
            if contact.number is None:
                yield contact, None
            elif contact.number not in first:
                first[contact.number] = contact
            else:
                yield contact, first[contact.number].at

    def describe(self, contact: Contact, detail: Any, situation: Situation) -> Breach:
        if detail is None:
            return _unknown(self, contact, situation, "whether this third party was contacted before")
        return self.breach(
            contact,
            f"the same third party was contacted again at {local_time(contact.at, situation.zone)}, "
            f"after {local_time(detail, situation.zone)}; a third party may be asked once, only to "
            "locate the debtor",
            number=contact.number,
            first_contact_at=detail.isoformat(),
        )


class ThirdPartyStop(_AboutThirdParties):
    """A third party who refused or asked not to be contacted is not contacted again."""

    def hits(self, situation: Situation) -> Iterator[tuple[Contact, Any]]:
        asked = [r for r in situation.requests if r.kind == "stop_third_party"]
        refusals: list[Contact] = []
        for contact in situation.third_parties:
            if contact.number is None:
                yield contact, None
                continue
            stop = _stopped_by(contact, refusals, asked)
            if contact.outcome == "refused":
                refusals.append(contact)
            if stop is not None:
                yield contact, stop

    def describe(self, contact: Contact, detail: Any, situation: Situation) -> Breach:
        if detail is None:
            return _unknown(self, contact, situation, "whether this third party asked not to be contacted")
        return self.breach(
            contact,
            f"third party contacted at {local_time(contact.at, situation.zone)} after refusing or "
            f"asking not to be contacted at {local_time(detail, situation.zone)}",
            number=contact.number,
            asked_at=detail.isoformat(),
        )


def _stopped_by(contact: Contact, refusals: list[Contact], asked: list[Request]) -> datetime | None:
    """When the third party of ``contact`` refused or asked to be left alone, if they did."""
    for refusal in refusals:
        known = refusal.partner == contact.partner or contact.at >= refusal.learnt
        if refusal.number == contact.number and refusal.at < contact.at and known:
            return refusal.at
    for request in asked:
        if request.number == contact.number and request.binds(contact):
            return request.at
    return None


def _unknown(rule: Rule, contact: Contact, situation: Situation, what: str) -> Breach:
    return rule.breach(
        contact,
        f"the {contact.channel} contact at {local_time(contact.at, situation.zone)} was reported without a "
        f"number or address the gateway knows, so it cannot tell {what}",
        number=None,
        partner=contact.partner,
    )


#: How each request reads in a message.
_ASKED = {
    "opt_out": "not to use this medium",
    "cease": "to cease communication",
    "attorney": "to deal with the attorney representing them",
    "workplace": "not to be contacted at work",
}


class _AfterRequest(Rule):
    """A rule broken by contacting someone after a request forbade it."""

    alone = True  # each contact against the requests, whatever the other contacts

    def forbids(self, request: Request, contact: Contact) -> bool:
        raise NotImplementedError

    def hits(self, situation: Situation) -> Iterator[tuple[Contact, Any]]:
        if not situation.requests:
            return
        for contact in situation.contacts:
            found = (r for r in situation.requests if self.forbids(r, contact) and r.binds(contact))
            if (request := next(found, None)) is not None:
                yield contact, request

    def describe(self, contact: Contact, detail: Any, situation: Situation) -> Breach:
        zone = situation.zone
        unknown = " (the number contacted is unknown)" if contact.number is None and detail.number else ""
        return self.breach(
            contact,
            f"{contact.channel} contact at {local_time(contact.at, zone)}{unknown} after the request "
            f"{_ASKED.get(detail.kind, detail.kind)} made at {local_time(detail.at, zone)}",
            request=detail.kind,
            requested_at=detail.at.isoformat(),
            partner=contact.partner,
            channel=contact.channel,
        )


class MediumOptOut(_AfterRequest):
    """A medium the person asked not to be used (telephone, text, email...) is not used,
    by any partner nor by the gateway. ``media`` says which channels make one medium."""

    media: dict[str, frozenset[Channel]] = Field(min_length=1)

    def medium(self, channel: str | None) -> str | None:
        return next((name for name, channels in self.media.items() if channel in channels), None)

    def forbids(self, request: Request, contact: Contact) -> bool:
        medium = self.medium(contact.channel)
        if request.kind != "opt_out" or contact.target != "debtor" or medium is None:
            return False
        same_number = request.number is None or contact.number in (None, request.number)
        return self.medium(request.channel) == medium and same_number


class StopAll(_AfterRequest):
    """After ``request`` (cease communication; represented by an attorney) nobody of
    ``targets`` is contacted about the debtor's debts."""

    request: RequestKind
    targets: frozenset[Target]

    def forbids(self, request: Request, contact: Contact) -> bool:
        return request.kind == self.request and contact.target in self.targets


class Workplace(_AfterRequest):
    """No contact at the place of work once the person said the employer forbids it:
    the number named in the request, or every number on file labelled ``work``."""

    def forbids(self, request: Request, contact: Contact) -> bool:
        if request.kind != "workplace" or contact.target != "debtor":
            return False
        if request.number is not None:
            return contact.number in (None, request.number)
        return contact.place == "work"
