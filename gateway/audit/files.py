"""Reading files that come from outside (an audit bundle, a key file an auditor names).

Only regular files are read: a symbolic link (which could point anywhere, at
``/dev/zero`` or out of the bundle), a device, a FIFO (which would hang the reader) or a
socket is refused by name before it is opened. The file is then opened without
following a link and without blocking, and checked again on the open descriptor, so
one swapped in between is refused too. What is read is capped: a small file by its
size, a stream of lines by the length of each line.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gateway.audit.errors import AuditError

#: A signed checkpoint note is a few hundred bytes; a verifier key under a hundred.
NOTE_MOST = 64 * 1024
VKEY_MOST = 4 * 1024
#: An entries.jsonl line: one entry's canonical JSON, a few kilobytes at most.
LINE_MOST = 1 << 20

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a plain file")


def check_directory(path: Path) -> None:
    """`path` is a directory itself, not a link to one."""
    mode = os.lstat(path).st_mode
    if not stat.S_ISDIR(mode):
        raise AuditError(f"{path}: not a directory ({_kind(mode)})")


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading in binary, if it is a regular file (see the module
    docstring); FileNotFoundError if there is nothing there."""
    before = os.lstat(path)
    if not stat.S_ISREG(before.st_mode):
        raise AuditError(f"{path}: not a regular file ({_kind(before.st_mode)}); only plain files are read")
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:  # ELOOP: made a link since; ENXIO: a FIFO with no writer
        raise AuditError(f"{path}: cannot be opened as a plain file ({exc.strerror})") from None
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino):
            raise AuditError(f"{path}: was replaced while being opened; only plain files are read")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(path: Path, most: int) -> bytes:
    """The bytes of a small regular file, refused if it holds more than `most`."""
    with open_regular(path) as file:
        data = file.read(most + 1)
    if len(data) > most:
        raise AuditError(f"{path}: larger than {most} bytes, too large for what it should hold")
    return data


def read_text_capped(path: Path, most: int) -> str:
    """`read_capped`, as UTF-8 text."""
    try:
        return read_capped(path, most).decode("utf-8")
    except UnicodeDecodeError:
        raise AuditError(f"{path}: not UTF-8 text") from None


class LineTooLong(Exception):
    """Line `number` (from 0) is longer than the cap."""

    def __init__(self, number: int) -> None:
        self.number = number
        super().__init__(f"line {number + 1} is too long")


def capped_lines(file: BinaryIO, most: int = LINE_MOST) -> Iterator[tuple[int, bytes]]:
    """The lines of `file`, numbered from 0 (split at ``\n`` only, each with it), none
    over `most` bytes: a longer one raises LineTooLong, having read no more than the
    cap of it."""
    number = 0
    while line := file.readline(most + 1):
        if len(line) > most:
            raise LineTooLong(number)
        yield number, line
        number += 1
