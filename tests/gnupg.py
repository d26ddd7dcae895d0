"""GnuPG's own ``gpg`` command playing a partner that takes only OpenPGP (as a
partner's operator would run it), for the OpenPGP tests; the ``gpg`` fixture
(tests/conftest.py) makes it once per session.

The partner's keys (Ed25519 to sign, Cv25519 to encrypt, no passphrase) live in a
throwaway GnuPG home, 0700, whose agent is stopped at the end."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.toolchains import debian_tool


@dataclass(frozen=True)
class Gpg:
    """The partner's GnuPG: its home, its complete key, an expired one, a sign-only one."""

    home: Path
    binary: str
    partner: str
    expired: str
    sign_only: str

    def __call__(self, *args: str | Path, check: bool = True, stdin: bytes | None = None
                 ) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
        command = [self.binary, "--homedir", str(self.home), "--batch", "--no-tty", "--quiet",
                   "--pinentry-mode", "loopback", "--passphrase", "", "--status-fd", "2"]  # fmt: skip
        return subprocess.run(
            [*command, *map(str, args)], input=stdin, capture_output=True, check=check, timeout=60
        )

    def new_key(
        self, uid: str, usage: str, *, subkey: bool, at: str | None = None, expires: str = "1y"
    ) -> str:
        faked = ["--faked-system-time", at] if at else []
        self(*faked, "--quick-gen-key", uid, "ed25519", usage, expires)
        fingerprint = self.fingerprints(uid)[0]
        if subkey:
            self(*faked, "--quick-add-key", fingerprint, "cv25519", "encr", "1y")
        return fingerprint

    def fingerprints(self, key: str) -> list[str]:
        """The fingerprints of ``key``'s primary key, then of its subkeys, in order."""
        listing = self("--with-colons", "--list-keys", key).stdout.decode()
        return re.findall(r"^fpr:+([0-9A-F]{40}):", listing, re.M)

    def revoke_subkey(self, fingerprint: str, number: int) -> str:
        """Revoke the key's ``number``-th subkey (1: the first), as its owner does with
        ``gpg --edit-key``, answered on the command fd; return the subkey's fingerprint."""
        answers = f"key {number}\nrevkey\ny\n0\n\ny\nsave\n"  # no reason given, empty note, confirm
        self("--command-fd", "0", "--edit-key", fingerprint, stdin=answers.encode())
        return self.fingerprints(fingerprint)[number]

    def export(self, fingerprint: str) -> bytes:
        return self("--armor", "--export", fingerprint).stdout

    def signed_by(self, result: subprocess.CompletedProcess[bytes]) -> list[str]:
        """The primary fingerprints of the valid signatures gpg reported."""
        lines = result.stderr.decode(errors="replace").splitlines()
        status = [line.split() for line in lines if line.startswith("[GNUPG:] ")]
        return [fields[-1] for fields in status if fields[1] == "VALIDSIG"]


@contextmanager
def partner_gnupg() -> Iterator[Gpg]:
    binary = debian_tool("gpg", "gnupg")
    home = Path(tempfile.mkdtemp(prefix="gpg-"))  # short: the agent's socket lives in it
    home.chmod(0o700)
    maker = Gpg(home, binary, "", "", "")
    keys = Gpg(
        home, binary,
        partner=maker.new_key("PGP Agency <ops@pgp-agency.example>", "cert,sign", subkey=True),
        expired=maker.new_key("Lapsed <old@pgp-agency.example>", "cert,sign", subkey=True,
                              at="20200101T000000"),
        sign_only=maker.new_key("No Encryption <sig@pgp-agency.example>", "cert,sign", subkey=False),
    )  # fmt: skip
    try:
        yield keys
    finally:
        gpgconf = shutil.which("gpgconf")
        if gpgconf:
            subprocess.run([gpgconf, "--homedir", str(home), "--kill", "all"], check=False, timeout=30)
        shutil.rmtree(home, ignore_errors=True)
