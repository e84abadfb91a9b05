"""Errors of the accounts service; api/status.py maps each to one gRPC status code.

The adapters raise only these: psycopg, psycopg_pool, minio and nats errors are translated
where they are caught (adapters/db/pool.py, adapters/storage.py, adapters/bus.py).

AccountsError
├── InvalidArgument   (field violations, optional failure code)  -> INVALID_ARGUMENT
├── NotFound                                                      -> NOT_FOUND
├── AlreadyExists                                                 -> ALREADY_EXISTS
├── Unauthenticated                                               -> UNAUTHENTICATED
├── Unavailable       (database, storage or NATS unreachable)     -> UNAVAILABLE
│   ├── ObjectMissing (a storage key that does not exist)
│   └── PublishFailed (JetStream did not confirm an event)
├── DatabaseFault     (PostgreSQL refused a statement: our bug)   -> INTERNAL
└── Overloaded        (past a limit; retry_after_seconds)         -> RESOURCE_EXHAUSTED + RetryInfo
"""

from __future__ import annotations


class AccountsError(Exception):
    """Base of every error the servicer translates."""


class InvalidArgument(AccountsError):
    def __init__(self, field: str, description: str, code: str = "") -> None:
        super().__init__(f"{field}: {description}")
        self.violations: list[tuple[str, str]] = [(field, description)]
        self.code = code

    @classmethod
    def many(cls, violations: list[tuple[str, str]], code: str = "") -> InvalidArgument:
        err = cls(*violations[0], code=code)
        err.violations = list(violations)
        err.args = ("; ".join(f"{f}: {d}" for f, d in violations),)
        return err


class NotFound(AccountsError):
    pass


class AlreadyExists(AccountsError):
    pass


class Unauthenticated(AccountsError):
    pass


class Unavailable(AccountsError):
    pass


class ObjectMissing(Unavailable):
    """No object at that storage key (never stored, or removed meanwhile)."""


class PublishFailed(Unavailable):
    """The event was not confirmed by JetStream; it stays in the outbox and is retried."""


class DatabaseFault(AccountsError):
    """PostgreSQL refused a statement for a reason other than being unreachable."""


class Overloaded(AccountsError):
    """Past a limit of this process (a full database pool, the upload rate): nothing was done,
    and the caller may retry after `retry_after_seconds`."""

    def __init__(
        self, retry_after_seconds: float, message: str = "overloaded, retry later"
    ) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
