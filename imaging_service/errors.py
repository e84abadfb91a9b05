"""Errors of the imaging worker, raised by its adapters (storage, bus, accounts_client, the render
pool) in place of every library error; the handler turns each into a decision.Outcome, the
servicer into a status code.

    ImagingError
    ├── SourceMissing        the original avatar is not in storage        FAILED (SOURCE_MISSING)
    ├── UserGone             accounts no longer knows the user            DONE, nothing to report
    ├── AccountsRejected     accounts refused the report as malformed     FAILED, logged
    ├── QueueUnavailable     NATS unreachable or the consumer not ready   UNAVAILABLE
    ├── Overloaded           too many previews running or waiting         RESOURCE_EXHAUSTED
    └── TransientError       worth a retry with back-off                  RETRY / UNAVAILABLE
        ├── StorageUnavailable   S3 unreachable, 5xx, bucket missing
        ├── AccountsUnavailable  accounts unreachable, deadline, auth    WAITING_FOR_ACCOUNTS
        └── RenderUnavailable    the render pool broke (a worker process died)

image_policy's ImageRejected (bad input: FAILED with its code, INVALID_ARGUMENT) is not repeated
here; the render pool raises it too, as TOO_COMPLEX, for a render killed past its time budget.
"""

from __future__ import annotations


class ImagingError(Exception):
    """Base of every error the handler or servicer translates."""


class SourceMissing(ImagingError):
    pass


class UserGone(ImagingError):
    pass


class AccountsRejected(ImagingError):
    pass


class QueueUnavailable(ImagingError):
    pass


class Overloaded(ImagingError):
    """Refused at once rather than queued; the caller may retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientError(ImagingError):
    pass


class StorageUnavailable(TransientError):
    pass


class AccountsUnavailable(TransientError):
    pass


class RenderUnavailable(TransientError):
    pass
