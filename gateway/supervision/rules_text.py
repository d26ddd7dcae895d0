"""The text side of the rule packs, and the base every rule shares.

Collectors who know a filter exists write ``坐 牢``, ``坐，牢``, full-width ``ＡＲＲＥＳＴ`` or
``Jail``. So both the text and the phrase are NFKC-normalised (full-width to half-width)
and case-folded, and:

- a phrase with Chinese (or any non-ASCII) characters may have whitespace, punctuation or
  invisible characters between any two of its characters;
- an ASCII phrase is matched as whole words, with any run of non-word characters between
  its words. Gaps inside an English word are *not* tolerated: "car rest" must not read
  as "arrest".

"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import cached_property
from zoneinfo import ZoneInfo

from pydantic import Field

from gateway.supervision.base import Breach, Channel, Contact, Rule, local_time

_GAP = r"[\W_]*"  # \W is Unicode-aware: CJK characters are word characters, punctuation is not


def normalise(text: str) -> str:
    """The form both sides are compared in: NFKC, case-folded."""
    return unicodedata.normalize("NFKC", text).casefold()


def _pattern(phrase: str) -> str:
    norm = normalise(phrase).strip()
    if norm.isascii():
        words = [re.escape(word) for word in norm.split()]
        return r"(?<!\w)" + r"[\W_]+".join(words) + r"(?!\w)"
    return _GAP.join(re.escape(char) for char in norm if not char.isspace())


class PhraseList:
    """A fixed list of phrases; ``find`` says which of them a text contains."""

    def __init__(self, phrases: Iterable[str]) -> None:
        self.phrases = tuple(phrases)
        self._compiled = [(phrase, re.compile(_pattern(phrase))) for phrase in self.phrases]

    def find(self, text: str) -> list[str]:
        """The listed phrases (as listed, not as written in ``text``) that ``text`` contains."""
        norm = normalise(text)
        return [phrase for phrase, pattern in self._compiled if pattern.search(norm)]


class _PhraseRule(Rule):
    """Compiles its phrase list once per loaded pack."""

    @cached_property
    def matcher(self) -> PhraseList:
        return PhraseList(self._phrases())

    def _phrases(self) -> list[str]:
        raise NotImplementedError


class Disclosure(_PhraseRule):
    """A third party must not be told of the debt: these words give it away."""

    words: list[str] = Field(min_length=1)

    def _phrases(self) -> list[str]:
        return self.words

    def check(self, contact: Contact, earlier: Sequence[Contact], zone: ZoneInfo) -> Breach | None:
        if contact.target != "third_party" or not contact.text:
            return None
        words = self.matcher.find(contact.text)
        if not words:
            return None
        return self.breach(
            f"the {contact.channel} contact with a third party at {local_time(contact.at, zone)} spoke "
            f"of the debt ({', '.join(words)})",
            phrases=words,
            partner=contact.partner,
        )


class OptOut(_PhraseRule):
    channels: frozenset[Channel]
    phrases: list[str] = Field(min_length=1)

    def _phrases(self) -> list[str]:
        return self.phrases


class BannedPhrases(_PhraseRule):
    zh: list[str] = Field(min_length=1)
    en: list[str] = Field(min_length=1)

    def _phrases(self) -> list[str]:
        return self.zh + self.en


def text_breaches(
    banned: BannedPhrases, opt_out: OptOut | None, text: str | None, channel: str
) -> list[Breach]:
    """What a message breaks by its wording: banned phrases, a missing opt-out notice.

    A message on an opt-out channel reported without its text fails too: nothing shows
    the notice was there, and the record is what an examiner will ask for.
    """
    found = []
    if text and (phrases := banned.matcher.find(text)):
        found.append(
            banned.breach(
                f"the {channel} text contains banned wording: {', '.join(phrases)}", phrases=phrases
            )
        )
    if opt_out and channel in opt_out.channels and not (text and opt_out.matcher.find(text)):
        problem = "carries no opt-out notice" if text else "was reported without its text"
        found.append(opt_out.breach(f"the {channel} message {problem}", channel=channel))
    return found
