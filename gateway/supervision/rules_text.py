"""The text side of the rule packs: banned wording, the opt-out notice, disclosure to
third parties, threats of suit on time-barred debts.

Collectors who know a filter exists write ``坐 牢``, ``坐，牢``, full-width ``ＡＲＲＥＳＴ`` or
``Jail``. So both the text and the phrase are NFKC-normalised (full-width to half-width)
and case-folded, and:

- a phrase with Chinese (or any non-ASCII) characters may have whitespace, punctuation or
  invisible characters between any two of its characters. Chinese has no word
  boundaries, so a phrase that occurs inside an innocent word (公安 in 办公安排) lists
  that word under ``unless``: a match inside one of them does not count;
- an ASCII phrase is matched as whole words, with any run of non-word characters between
  its words. Gaps inside an English word are *not* tolerated: "car rest" must not read
  as "arrest". A trailing ``*`` takes the word's endings too (``garnish*``: garnished,
  garnishment);
- a group with ``near`` counts only in a sentence that also holds one of those words
  (法院 is a threat next to 传票 or 抓, not in "disputes go to the court of ...").

Each group of phrases names its own source, and a breach carries the sources of the
groups it matched.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import cached_property
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from gateway.supervision.base import Breach, Channel, Contact, ContactRule, local_time

_GAP = r"[\W_]*"  # \W is Unicode-aware: CJK characters are word characters, punctuation is not
#: Where a sentence ends, for ``near`` and for negated opt-out notices.
#: Texts whose banned-wording verdicts `BannedPhrases` keeps (by digest).
JUDGED_TEXTS = 256
_SENTENCE = re.compile(r"[。！？!?；;\n]+|\.(?=\s|$)")


def normalise(text: str) -> str:
    """The form both sides are compared in: NFKC, case-folded."""
    return unicodedata.normalize("NFKC", text).casefold()


def _pattern(phrase: str) -> str:
    norm = normalise(phrase).strip()
    stem = norm.endswith("*")
    norm = norm.rstrip("*").strip()
    if norm.isascii():
        words = [re.escape(word) for word in norm.split()]
        return r"(?<!\w)" + r"[\W_]+".join(words) + (r"\w*" if stem else "") + r"(?!\w)"
    return _GAP.join(re.escape(char) for char in norm if not char.isspace())


def sentences(text: str, normalised: bool = False) -> list[str]:
    """``text`` normalised (unless it is already) and cut into sentences."""
    return [part for part in _SENTENCE.split(text if normalised else normalise(text)) if part.strip()]


class PhraseList:
    """A fixed list of phrases; ``find`` says which of them a text contains."""

    def __init__(self, phrases: Iterable[str], unless: Iterable[str] = ()) -> None:
        self.phrases = tuple(phrases)
        # Reported as listed, a word's ``*`` left off.
        self._compiled = [(phrase.rstrip("*"), re.compile(_pattern(phrase))) for phrase in self.phrases]
        self._unless = [re.compile(_pattern(phrase)) for phrase in unless]

    def find(self, text: str, normalised: bool = False) -> list[str]:
        """The listed phrases (as listed, not as written in ``text``) that ``text`` contains."""
        norm = text if normalised else normalise(text)
        excluded = [m.span() for pattern in self._unless for m in pattern.finditer(norm)]
        return [
            phrase
            for phrase, pattern in self._compiled
            if any(not _inside(m.span(), excluded) for m in pattern.finditer(norm))
        ]

    def first_at(self, text: str) -> list[int]:
        """Where each match starts in the normalised ``text``."""
        return sorted(m.start() for _, pattern in self._compiled for m in pattern.finditer(text))


def _inside(span: tuple[int, int], covers: Sequence[tuple[int, int]]) -> bool:
    return any(start <= span[0] and span[1] <= end for start, end in covers)


class PhraseGroup(BaseModel):
    """Phrases that rest on one source."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(min_length=1)
    phrases: list[str] = Field(min_length=1)
    unless: list[str] = Field(default_factory=list, description="innocent words a match may sit in")
    near: list[str] = Field(default_factory=list, description="count only in a sentence with one of these")

    @cached_property
    def matcher(self) -> PhraseList:
        return PhraseList(self.phrases, self.unless)

    @cached_property
    def context(self) -> PhraseList:
        return PhraseList(self.near)

    def find(self, text: str, normalised: bool = False) -> list[str]:
        if not self.near:
            return self.matcher.find(text, normalised)
        found: list[str] = []
        for sentence in sentences(text, normalised):
            if self.context.find(sentence, normalised=True):
                found += [p for p in self.matcher.find(sentence, normalised=True) if p not in found]
        return found


class _PhraseRule(ContactRule):
    """Compiles its phrase list once per loaded pack."""

    @cached_property
    def matcher(self) -> PhraseList:
        return PhraseList(self._phrases())

    def _phrases(self) -> list[str]:
        raise NotImplementedError


class Disclosure(_PhraseRule):
    """A third party must not be told of the debt: these words give it away. On the
    ``text_required`` channels a third-party contact reported without its text is
    flagged, since nothing shows what the third party was told."""

    words: list[str] = Field(min_length=1)
    text_required: frozenset[Channel] = frozenset()

    def _phrases(self) -> list[str]:
        return self.words

    def judge(self, contact: Contact, zone: ZoneInfo) -> Breach | None:
        if contact.target != "third_party":
            return None
        when = local_time(contact.at, zone)
        if not contact.text:
            if contact.channel not in self.text_required:
                return None
            return self.breach(
                contact,
                f"the {contact.channel} contact with a third party at {when} was reported without its "
                "text; nothing shows the debt was not disclosed",
                partner=contact.partner,
                text=None,
            )
        words = self.matcher.find(contact.text)
        if not words:
            return None
        return self.breach(
            contact,
            f"the {contact.channel} contact with a third party at {when} spoke of the debt "
            f"({', '.join(words)})",
            phrases=words,
            partner=contact.partner,
        )


class OptOut(_PhraseRule):
    """Electronic messages carry a way to opt out. A phrase counts only when no negation
    comes before it in its sentence: "You cannot opt out" is no notice."""

    channels: frozenset[Channel]
    phrases: list[str] = Field(min_length=1)
    negations: list[str] = Field(default_factory=list)

    def _phrases(self) -> list[str]:
        return self.phrases

    @cached_property
    def negation(self) -> PhraseList:
        return PhraseList(self.negations)

    def offers(self, text: str) -> bool:
        """Whether ``text`` tells the reader how to opt out, not that they cannot."""
        for sentence in sentences(text):
            negated = self.negation.first_at(sentence)
            for start in self.matcher.first_at(sentence):
                if not any(n < start for n in negated):
                    return True
        return False

    def message_breach(self, contact: Contact | None, text: str | None, channel: str) -> Breach | None:
        if channel not in self.channels or (text and self.offers(text)):
            return None
        problem = "carries no opt-out notice" if text else "was reported without its text"
        return self.breach(contact, f"the {channel} message {problem}", channel=channel)

    def judge(self, contact: Contact, zone: ZoneInfo) -> Breach | None:
        return self.message_breach(contact, contact.text, contact.channel)


class BannedPhrases(ContactRule):
    """Wording no collector may use, in groups by source."""

    groups: list[PhraseGroup] = Field(min_length=1)

    @cached_property
    def judged(self) -> dict[bytes, tuple[tuple[str, ...], tuple[str, ...]]]:
        """What `found` found in the texts judged lately, by a digest of the text (the
        text itself is not kept: a partner's report may hold personal data). The
        gateway's own messages repeat one template each, judged before every send."""
        return {}

    def found(self, text: str) -> tuple[list[str], list[str]]:
        """The banned phrases in ``text``, and the sources of their groups."""
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        known = self.judged.get(key)
        if known is None:
            if len(self.judged) >= JUDGED_TEXTS:
                self.judged.clear()
            phrases, sources = self._find(text)
            known = self.judged[key] = (tuple(phrases), tuple(sources))
        return list(known[0]), list(known[1])

    def _find(self, text: str) -> tuple[list[str], list[str]]:
        phrases: list[str] = []
        sources: list[str] = []
        norm = normalise(text)  # once for every group
        for group in self.groups:
            if hit := [p for p in group.find(norm, normalised=True) if p not in phrases]:
                phrases += hit
                sources += [group.source] if group.source not in sources else []
        return phrases, sources

    def text_breach(self, contact: Contact | None, text: str | None, channel: str) -> Breach | None:
        phrases, sources = self.found(text) if text else ([], [])
        if not phrases:
            return None
        message = f"the {channel} text contains banned wording: {', '.join(phrases)}"
        return Breach(self.id, "; ".join(sources), message, {"phrases": phrases}, contact)

    def judge(self, contact: Contact, zone: ZoneInfo) -> Breach | None:
        return self.text_breach(contact, contact.text, contact.channel)


class TimeBarredSuit(_PhraseRule):
    """No suit and no threat of suit to collect a time-barred debt (the contact's debt
    was past its limitation period on the contact's local day)."""

    phrases: list[str] = Field(min_length=1)

    def _phrases(self) -> list[str]:
        return self.phrases

    def judge(self, contact: Contact, zone: ZoneInfo) -> Breach | None:
        if not (contact.time_barred and contact.text):
            return None
        found = self.matcher.find(contact.text)
        if not found:
            return None
        return self.breach(
            contact,
            f"the {contact.channel} text at {local_time(contact.at, zone)} speaks of suing "
            f"({', '.join(found)}) on a time-barred debt",
            phrases=found,
            debt=contact.debt,
        )


def text_breaches(
    banned: BannedPhrases, opt_out: OptOut | None, text: str | None, channel: str
) -> list[Breach]:
    """What a message breaks by its wording: banned phrases, a missing opt-out notice.

    A message on an opt-out channel reported without its text fails too: nothing shows
    the notice was there, and the record is what an examiner will ask for.
    """
    found = [banned.text_breach(None, text, channel)]
    if opt_out is not None:
        found.append(opt_out.message_breach(None, text, channel))
    return [breach for breach in found if breach is not None]
