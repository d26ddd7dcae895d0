"""What is read from a key file, remembered until the file changes.

Every package and every callback needs key files (the bank's signing key, partners'
key sets, the key-encryption keys of the data keys), and a rotation, a partner's new
key set or a restored file must count from the next use. Reading and parsing them each
time cost more than the cryptography they serve; a ``stat`` per use tells whether the
file changed.

A file is known by inode, size, mtime and ctime: the gateway replaces a key file by
renaming a new one over it, which gives it another inode. A file changed less than
`SETTLE_SECONDS` ago is read every time, because file times are only as fine as the
kernel's clock tick: two writes within one tick could look the same.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
#: Files changed more recently than this are read at every use, not remembered.
SETTLE_SECONDS = 2.0

_Stamp = tuple[int, int, int, int]


class FileCache:
    """Values made from files (`load`), each remembered until its file changes."""

    def __init__(self) -> None:
        # Keyed by (what, file name as a string): a Path is slower to build and hash.
        self._values: dict[tuple[str, str], tuple[_Stamp, Any]] = {}

    def load(self, what: str, path: str | Path, loader: Callable[[Path], T]) -> T:
        """``loader(path)``, remembered under ``what`` until the file changes. A missing
        file is the loader's to report (it knows which command creates it)."""
        name = os.fspath(path)
        try:
            st = os.stat(name)
        except FileNotFoundError:
            return loader(Path(name))
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        hit = self._values.get((what, name))
        if hit is not None and hit[0] == stamp:
            value: T = hit[1]
            return value
        value = loader(Path(name))
        if time.time() - max(st.st_mtime_ns, st.st_ctime_ns) / 1e9 > SETTLE_SECONDS:
            self._values[(what, name)] = (stamp, value)
        return value
