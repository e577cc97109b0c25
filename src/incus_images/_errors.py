"""The exception hierarchy: everything the SDK raises derives from :class:`IncusError`.

::

    IncusError
    ├── IncusConnectionError        (also ConnectionError) the server could not be reached
    ├── IncusTimeoutError           (also TimeoutError)    a request or a wait ran out of time
    ├── InvalidInputError           (also ValueError)      an argument was refused
    ├── ConfigurationError          a file of the incus CLI's configuration cannot be used
    ├── UnexpectedResponseError     the server's answer makes no sense
    ├── APIError                    the server answered with an error
    │   ├── ForbiddenError          403: the client is not trusted for this
    │   ├── NotFoundError           404
    │   ├── ConflictError           409, or a request the object's state rules out
    │   │   └── ImageExistsError    (also OperationError)
    │   ├── PreconditionFailedError 412: the object changed since it was read (ETag)
    │   └── AmbiguousFingerprintError  a fingerprint prefix matches several images
    ├── OperationError              a background operation failed or was cancelled
    │   └── OperationGoneError      the server no longer knows the operation
    └── TransferError               an upload, export or copy did not complete as it must
        ├── ChecksumMismatchError   the bytes do not hash to the image's fingerprint
        └── ImageDataError          the image data given could not be read, or changed

Every error carries the context it was raised in as attributes (``server``, and where they apply
``method``, ``url``, ``status_code``, ``error_code``, ``server_message``, ``operation``,
``fingerprint``); attributes that do not apply are None. The message says what failed, to
what, and on which server. What a failed call left behind is not in the message: it is
``left_behind`` (a :class:`LeftBehind`) and a note (PEP 678) with the sentence that explains
it, both set by :func:`note_left_behind`, the one place that sets them.
"""

from __future__ import annotations

import copy
import enum
from typing import TYPE_CHECKING, Any, Self, TypeVar

if TYPE_CHECKING:
    from ._models import Operation

__all__ = [
    "APIError",
    "AmbiguousFingerprintError",
    "ChecksumMismatchError",
    "ConfigurationError",
    "ConflictError",
    "ForbiddenError",
    "ImageDataError",
    "ImageExistsError",
    "IncusConnectionError",
    "IncusError",
    "IncusTimeoutError",
    "InvalidInputError",
    "LeftBehind",
    "NotFoundError",
    "OperationError",
    "OperationGoneError",
    "PreconditionFailedError",
    "TransferError",
    "UnexpectedResponseError",
    "note_left_behind",
]


class LeftBehind(enum.StrEnum):
    """What a failed call left behind, as its error's ``left_behind`` says (a note on the
    error says it in a sentence, naming the image)."""

    #: Nothing: nothing was stored on the server, changed there, or written to a file (the
    #: call was refused before it sent anything, or stopped before the server could keep it).
    NOTHING = "nothing"
    #: The image may be stored, or still be stored (its last bytes had been sent, or the
    #: server had accepted it): look for it (``fingerprint``, when known) before retrying.
    MAY_BE_STORED = "image may be stored"
    #: A request that changes something may have reached the server and been applied (its
    #: connection broke after it was sent; it is never sent twice): check before repeating it.
    MAY_BE_APPLIED = "request may be applied"
    #: The image is stored and complete: the call did what it was for, and only a last
    #: step (reading the image back) failed.
    STORED = "image stored"
    #: The image the call brought in was deleted again (it did not verify, or what the call
    #: had to do with it afterwards failed).
    DELETED = "image deleted again"
    #: The image was on the server before the call began, and stays as it was.
    KEPT = "image there before"
    #: The image the call brought in had to be deleted again, and deleting it failed too: it
    #: is still on the server (``fingerprint``).
    STILL_THERE = "image still there"


ErrorT = TypeVar("ErrorT", bound=BaseException)


def note_left_behind(error: ErrorT, left: LeftBehind, sentence: str) -> ErrorT:
    """Record what the failed call left behind: ``error.left_behind`` (an IncusError) and a
    note with ``sentence`` (any exception: an interruption from outside, Ctrl-C's
    KeyboardInterrupt or a cancellation, keeps its own class and gets the note only).

    The one place that sets both. A later record replaces the attribute (the caller that
    cleaned up knows best); each record's note stays."""
    if isinstance(error, IncusError):
        error.left_behind = left
    error.add_note(f"incus_images: {sentence}.")
    return error


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
        #: What the failed call left behind, when the call knows (a note says it in a
        #: sentence); None when it does not say.
        self.left_behind: LeftBehind | None = None

    def __str__(self) -> str:
        return self.message

    def _amended(self, message: str, **changes: Any) -> Self:
        """A copy of this error, of the same class, with a new message and attributes (and
        its notes: a note added to one is not added to the other)."""
        amended = copy.copy(self)
        amended.args = (message,)
        amended.message = message
        if hasattr(self, "__notes__"):
            amended.__notes__ = list(self.__notes__)
        for name, value in changes.items():
            setattr(amended, name, value)
        return amended


class IncusConnectionError(IncusError, ConnectionError):
    """The server could not be reached, or the connection broke (including TLS failures)."""


class IncusTimeoutError(IncusError, TimeoutError):
    """A request, or a wait for an operation, did not finish in the time allowed."""


class InvalidInputError(IncusError, ValueError):
    """An argument of the call was refused; the message names it.

    Refused before any request is sent, except the chunks of an iterable or file given as
    image data, which can only be checked as they are sent: the upload is then stopped
    before its end, and nothing is stored (``left_behind``).
    """


class ConfigurationError(IncusError):
    """A file of the incus CLI's configuration (config.yml, ``servercerts/``, ``client.crt``
    and its key, ``client.ca``), or its directory, cannot be read, used or written as it is;
    ``path`` names it.

    Found before anything is sent to a server, except by ``add_remote()`` writing what it
    added: then nothing was written, and the message says that the remote was not added.
    """

    def __init__(self, message: str, *, path: str | None = None, **context: Any) -> None:
        super().__init__(message, **context)
        #: The file or directory concerned (for a certificate and its key: the certificate).
        self.path: str | None = path


class UnexpectedResponseError(IncusError):
    """The server's answer makes no sense: not an Incus answer, fields of the wrong type,
    values the API does not allow, an image other than the one asked for."""


class APIError(IncusError):
    """The server answered a request with an error."""


class ForbiddenError(APIError):
    """403: the server does not trust this client for the request (``status_code`` is None
    when the server had said so already, in ``GET /1.0``, and the SDK did not ask)."""


class NotFoundError(APIError):
    """404: the image, alias, project or operation does not exist (or is not visible)."""


class ConflictError(APIError):
    """The object already exists (409, or a duplicate image upload), or the request conflicts
    with the object's state (publishing a running instance without ``force=True``, pushing a
    virtual-machine image); then ``status_code`` is None: the SDK refused before asking."""


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
    """An upload, export or copy did not complete as it must; an export leaves nothing under
    the target name."""


class ChecksumMismatchError(TransferError):
    """The bytes do not hash to the image's fingerprint: an export's, an upload's (the server
    stored another fingerprint than the bytes sent, or refused the ``fingerprint=`` given), a
    copy stored under another fingerprint than the source's."""


class ImageDataError(TransferError):
    """The image data given to ``create()`` could not be read (its ``__cause__`` is the
    OSError of a file, a path or an iterable), or changed while it was sent."""
