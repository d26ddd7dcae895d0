"""A reminder as the bytes of an RFC 5322 message: one text/plain part in UTF-8.

Written out directly, with the standard library's encoders for the two parts that need
encoding: the subject (RFC 2047, `email.header.Header`, only when it is not plain short
ASCII) and the body (quoted-printable, `binascii.b2a_qp`, so any relay takes it, 8BITMIME
or not). Building an `email.message.EmailMessage` and flattening it cost 440 µs of CPU
a message here, more than sending it over an open connection; this costs a few µs.

Addresses are checked by the schemas (no white space, so no line break), and the
subject is refused if the data filled into it holds a control character: no value of
a package can add or split a header.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from email.header import Header

from gateway.controls import control_in

#: Longest subject written as it is; a longer or non-ASCII one is encoded and folded.
PLAIN_SUBJECT = 60


@dataclass(frozen=True)
class Mail:
    sender: str
    recipient: str
    subject: str
    message_id: str
    text: str

    @property
    def utf8(self) -> bool:
        """Whether an address needs SMTPUTF8 (RFC 6531)."""
        return not (self.sender.isascii() and self.recipient.isascii())

    def as_bytes(self) -> bytes:
        found = control_in(self.subject)
        if found:
            raise ValueError(f"the rendered subject holds {found}; a mail header is one line of text")
        if self.subject.isascii() and len(self.subject) <= PLAIN_SUBJECT:
            subject = self.subject
        else:
            subject = Header(self.subject, "utf-8", header_name="Subject").encode(linesep="\r\n")
        head = (
            f"From: {self.sender}\r\nTo: {self.recipient}\r\nSubject: {subject}\r\n"
            f"Message-ID: {self.message_id}\r\nMIME-Version: 1.0\r\n"
            'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
        )
        body = binascii.b2a_qp(self.text.replace("\r\n", "\n").encode(), istext=True)
        return head.encode() + body.replace(b"\n", b"\r\n") + b"\r\n"
