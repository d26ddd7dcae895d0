"""The one error hierarchy of the gateway.

::

    GatewayError                  every error the gateway raises on purpose
    ├── ConfigError               gateway.toml missing or invalid
    ├── KeyStoreError             a key file missing, unreadable or of the wrong kind
    ├── ProfileError              a partner profile file is invalid (names file and field)
    ├── NotFound                  an id (partner, package, case) that does not exist
    ├── Conflict                  the action contradicts the current state
    ├── PolicyViolation           a placement or contact the rules forbid
    ├── InvalidInput              input from outside that fails validation
    ├── Unauthorized              missing or wrong credentials or signature
    ├── Forbidden                 authenticated, but not allowed to do this
    ├── SealingError              a package could not be signed or encrypted
    ├── StorageError              the database refused or failed a statement
    └── DeliveryError             talking to a partner failed
        ├── Retryable             worth another try later
        │   ├── PartnerUnavailable    5xx, 408/425/429, refused or reset connection
        │   └── PartnerTimeout        no answer in time
        └── PartnerRejected       permanent: the partner refused the package (other 4xx)

Each class carries the HTTP status the API answers it with (an RFC 9457 problem
document); the CLI prints the message and exits 1.

Adapters translate foreign exceptions (aiohttp, SMTP) into these at their boundary;
retries live in the core, never inside an adapter. Messages say what went wrong and how
to fix it, because the CLI prints them as they are.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class; ``str(error)`` is a complete sentence fit for the operator."""

    http_status = 500


class ConfigError(GatewayError):
    pass


class KeyStoreError(GatewayError):
    pass


class ProfileError(GatewayError):
    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        super().__init__(f"{source}: {field}: {problem}")


class NotFound(GatewayError):
    http_status = 404


class Conflict(GatewayError):
    http_status = 409


class PolicyViolation(GatewayError):
    http_status = 422

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        super().__init__(f"refused by rule {rule}: {message}")


class InvalidInput(GatewayError):
    http_status = 400

    def __init__(self, message: str, *, status: int = 400) -> None:
        self.http_status = status
        super().__init__(message)


class Unauthorized(GatewayError):
    http_status = 401


class Forbidden(GatewayError):
    http_status = 403


class SealingError(GatewayError):
    pass


class StorageError(GatewayError):
    pass


class TransactionConflict(StorageError):
    """The database undid a transaction to settle a conflict with another one (a
    serialization failure or a deadlock): nothing of it was stored, and running it again
    is safe. The group writer does so itself (see `gateway.storage.groups`)."""


class DeliveryError(GatewayError):
    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class Retryable(DeliveryError):
    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status)


class PartnerUnavailable(Retryable):
    pass


class PartnerTimeout(Retryable):
    pass


class PartnerRejected(DeliveryError):
    pass


class NotSent(DeliveryError):
    """The attempt stopped before anything of the package left (see
    :func:`gateway.plugin.adapter.before_sending`): no attempt is counted, the package
    goes again."""
