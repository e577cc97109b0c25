"""The exception hierarchy: everything the SDK raises derives from :class:`IncusError`.

::

    IncusError
    ├── IncusConnectionError        (also ConnectionError) the server could not be reached
    ├── IncusTimeoutError           (also TimeoutError)    a request or a wait ran out of time
    ├── InvalidInputError           (also ValueError)      refused before anything was sent
    ├── APIError                    the server answered with an error
    │   ├── ForbiddenError          403: the client is not trusted for this
    │   ├── NotFoundError           404
    │   ├── ConflictError           409, or an upload of an image that already exists
    │   │   └── ImageExistsError    (also OperationError)
    │   ├── PreconditionFailedError 412: the object changed since it was read (ETag)
    │   └── AmbiguousFingerprintError  a fingerprint prefix matches several images
    ├── OperationError              a background operation failed or was cancelled
    │   └── OperationGoneError      the server no longer knows the operation
    └── TransferError               an upload or export did not complete as it must
        └── ChecksumMismatchError   the bytes do not hash to the image's fingerprint

Every error carries the context it was raised in as attributes (``server``, and where they apply
``method``, ``url``, ``status_code``, ``error_code``, ``server_message``, ``operation``,
``fingerprint``); attributes that do not apply are None. The message alone says what failed,
on which image or alias, and on which server.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from ._models import Operation

__all__ = [
    "APIError",
    "AmbiguousFingerprintError",
    "ChecksumMismatchError",
    "ConflictError",
    "ForbiddenError",
    "ImageExistsError",
    "IncusConnectionError",
    "IncusError",
    "IncusTimeoutError",
    "InvalidInputError",
    "NotFoundError",
    "OperationError",
    "OperationGoneError",
    "PreconditionFailedError",
    "TransferError",
]


class IncusError(Exception):
    """Base class of every error this SDK raises."""

    def __init__(
        self,
        message: str,
        *,
        server: str | None = None,
        method: str | None = None,
        url: str | None = None,
        status_code: int | None = None,
        error_code: int | None = None,
        server_message: str | None = None,
        operation: Operation | None = None,
        fingerprint: str | None = None,
    ) -> None:
        super().__init__(message)
        #: What happened, to what, on which server (also ``str(error)``).
        self.message: str = message
        #: The server, as the client names it: ``unix:///run/incus/unix.socket``, ``https://…``.
        self.server: str | None = server
        #: The HTTP method of the request that failed, when one did.
        self.method: str | None = method
        #: The path of the request that failed (``/1.0/images/…``), when one did.
        self.url: str | None = url
        #: The HTTP status of the failed response.
        self.status_code: int | None = status_code
        #: Incus's own ``error_code`` from the error body (usually equal to the HTTP status).
        self.error_code: int | None = error_code
        #: The server's error text, bounded in length.
        self.server_message: str | None = server_message
        #: The operation concerned, in its last known state.
        self.operation: Operation | None = operation
        #: The full fingerprint of the image concerned, when it is known.
        self.fingerprint: str | None = fingerprint

    def __str__(self) -> str:
        return self.message

    def _amended(self, message: str, **changes: Any) -> Self:
        """A copy of this error, of the same class, with a new message and attributes."""
        amended = copy.copy(self)
        amended.args = (message,)
        amended.message = message
        for name, value in changes.items():
            setattr(amended, name, value)
        return amended


class IncusConnectionError(IncusError, ConnectionError):
    """The server could not be reached, or the connection broke (including TLS failures)."""


class IncusTimeoutError(IncusError, TimeoutError):
    """A request, or a wait for an operation, did not finish in the time allowed."""


class InvalidInputError(IncusError, ValueError):
    """An argument was refused before any request was sent."""


class APIError(IncusError):
    """The server answered a request with an error."""


class ForbiddenError(APIError):
    """403: the server does not trust this client for the request."""


class NotFoundError(APIError):
    """404: the image, alias, project or operation does not exist (or is not visible)."""


class ConflictError(APIError):
    """The object already exists (409, or a duplicate image upload)."""


class PreconditionFailedError(APIError):
    """412: the object changed between reading it and writing it, and retries ran out."""


class AmbiguousFingerprintError(APIError):
    """A fingerprint prefix matches more than one image; give more digits."""


class OperationError(IncusError):
    """A background operation on the server failed or was cancelled."""


class OperationGoneError(OperationError):
    """The server no longer knows the operation: its outcome cannot be learnt.

    Incus forgets a finished operation about five seconds after it ends.
    """


class ImageExistsError(ConflictError, OperationError):
    """The uploaded image is already stored on the server; ``fingerprint`` names it."""


class TransferError(IncusError):
    """An upload or export did not complete; nothing was left under the target name."""


class ChecksumMismatchError(TransferError):
    """The transferred bytes do not hash to the image's fingerprint."""
