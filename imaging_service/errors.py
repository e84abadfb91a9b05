"""Errors of the imaging worker; the handler turns each into an outcome, the servicer into a code.

    ImagingError
    ├── SourceMissing        the original avatar is not in storage        permanent (SOURCE_MISSING)
    ├── UserGone             accounts no longer knows the user            done, nothing to report
    ├── AccountsRejected     accounts refused the report as malformed     permanent, logged
    ├── QueueUnavailable     NATS unreachable or the consumer not ready   UNAVAILABLE
    ├── Overloaded           too many previews running or waiting         RESOURCE_EXHAUSTED
    └── TransientError       worth a retry with back-off                  nak(delay) / UNAVAILABLE
        ├── StorageUnavailable   S3 unreachable, 5xx, bucket missing
        ├── AccountsUnavailable  accounts unreachable, deadline, auth
        └── RenderUnavailable    the render pool broke (a worker process died)

render.ImageRejected (bad input, permanent) is the renderer's own and is not repeated here; the
render pool raises it too, as TOO_COMPLEX, for a render killed past its time budget.
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
