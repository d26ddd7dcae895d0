"""The bank-side journal of a file partner's batches: what makes a resend whole.

A batch is written here (``BATCH.json``: its packages and its files, fsynced, 0600)
before its upload begins, and marked sent (``BATCH.sent``) once its manifest is in
place. A package delivered again (the gateway died mid-upload, or the upload failed)
is found here: its batch is uploaded again whole, under the same id, rather than the
package joining a new one; a package of a batch already sent is answered at once. Both
files go after ``retain_days``. The journal is local to the workspace (the folder
`Resources.state_dir` names), so file partners are dispatched from one host.
"""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

from gateway.onboarding.files import write_private
from plugins.sftp_batch.files import Batch


class Spool:
    def __init__(self, folder: Path, retain_days: int) -> None:
        self.folder = folder
        self.retain = retain_days * 86400.0
        self._index: dict[str, str] | None = None

    def _load(self) -> dict[str, str]:
        if self._index is None:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._index = {}
            cutoff = time.time() - self.retain
            for path in sorted(self.folder.glob("*.json")):
                if path.stat().st_mtime < cutoff:
                    path.with_suffix(".sent").unlink(missing_ok=True)
                    path.unlink()
                    continue
                for package_id in json.loads(path.read_bytes())["packages"]:
                    self._index[package_id] = path.stem
        return self._index

    def batch_of(self, package_id: str) -> str | None:
        return self._load().get(package_id)

    def write(self, batch: Batch) -> None:
        """Journal ``batch``: from now on its packages belong to it."""
        index = self._load()
        record = {
            "batch_id": batch.batch_id,
            "packages": list(batch.packages),
            "files": [[name, base64.b64encode(content).decode()] for name, content in batch.files],
        }
        write_private(self.folder / f"{batch.batch_id}.json", json.dumps(record).encode())
        self._sync()
        for package_id in batch.packages:
            index[package_id] = batch.batch_id

    def read(self, batch_id: str) -> Batch:
        record = json.loads((self.folder / f"{batch_id}.json").read_bytes())
        files = tuple((name, base64.b64decode(text)) for name, text in record["files"])
        return Batch(record["batch_id"], tuple(record["packages"]), files)

    def is_sent(self, batch_id: str) -> bool:
        return (self.folder / f"{batch_id}.sent").exists()

    def mark_sent(self, batch_id: str) -> None:
        write_private(self.folder / f"{batch_id}.sent", b"")
        self._sync()

    def _sync(self) -> None:
        """The folder's entries on disk: a new name survives a power cut."""
        fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
