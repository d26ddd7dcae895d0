"""Errors of the audit log, under the gateway's one hierarchy::

    GatewayError
    └── AuditError              the audit log cannot do what was asked (no checkpoint
        │                       yet, an index outside the log, a key that does not match)
        └── VerificationFailed  the log or a bundle does not verify: names the first bad
                                entry index (or checkpoint size) and what is wrong
"""

from __future__ import annotations

from gateway.errors import GatewayError


class AuditError(GatewayError):
    pass


class VerificationFailed(AuditError):
    """The first problem found, in log order, so an auditor knows where to look."""

    def __init__(
        self,
        problem: str,
        *,
        index: int | None = None,
        last: int | None = None,
        size: int | None = None,
    ) -> None:
        # A signed root only says that some entry of a range is wrong, not which one:
        # then `index` is the first of the range and `last` its end, both named.
        self.index = index
        self.last = last
        self.size = size
        self.problem = problem
        if index is not None and last is not None and last > index:
            where = f"entries {index}..{last}: "
        elif index is not None:
            where = f"entry {index}: "
        elif size is not None:
            where = f"checkpoint at size {size}: "
        else:
            where = ""
        super().__init__(f"audit log does not verify: {where}{problem}")
