"""Files of the key store and the workspace written safely: directories made with their
mode exactly, files written atomically with their mode from the first byte."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

#: Modes set explicitly, whatever the umask: keys directories and secrets are the
#: owner's only; other directories (the workspace, partners/) the owner's and its group's.
KEYS_DIR_MODE = 0o700
DIR_MODE = 0o750
PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
CONFIG_MODE = 0o640


def make_dir(path: Path, mode: int) -> None:
    """Create ``path`` and its missing parents with ``mode`` exactly (a umask only takes
    bits away from what mkdir asks, and a permissive one leaves them); a directory that
    existed keeps its mode."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode)
            directory.chmod(mode)


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` atomically with ``mode`` from the first byte: a new file of a
    unique name, never one left behind with other permissions, renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, mode)
            fh = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
        with fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically, readable by the owner only (0600), in a directory
    made the owner's only if it is new."""
    make_dir(path.parent, KEYS_DIR_MODE)
    write_file(path, data, PRIVATE_MODE)


def write_public(path: Path, data: bytes) -> None:
    """Write a public file (a JWKS, a verifier key) atomically, 0644."""
    make_dir(path.parent, KEYS_DIR_MODE)
    write_file(path, data, PUBLIC_MODE)
