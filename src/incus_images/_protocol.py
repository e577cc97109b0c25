"""Sans-IO core of the Incus images API: what to send, and what an answer means.

Nothing here performs I/O, so both flavours share it and it is tested without a server.
Request paths are built only from input that passed :mod:`._validate` (or, for what the server
sent, the converter's identifier checks); alias names are percent-encoded as one path segment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import attrs
import cattrs
import httpx

from ._converter import converter
from ._errors import (
    AmbiguousFingerprintError,
    APIError,
    ChecksumMismatchError,
    ConflictError,
    ForbiddenError,
    ImageExistsError,
    IncusConnectionError,
    IncusError,
    IncusTimeoutError,
    LeftBehind,
    NotFoundError,
    OperationError,
    OperationGoneError,
    PreconditionFailedError,
    UnexpectedResponseError,
    note_left_behind,
)
from ._models import Operation, OperationStatus

__all__ = [
    "Call",
    "Envelope",
    "WaitResult",
]

T = TypeVar("T")

IMAGES = "/1.0/images"
ALIASES = "/1.0/images/aliases"
OPERATIONS = "/1.0/operations"
PROFILES = "/1.0/profiles"

_FULL_FINGERPRINT = re.compile(r"[0-9a-f]{64}")

#: Longest server error text quoted in a message: error bodies can be huge (a failed export
#: can carry a whole image), so messages quote a bounded prefix, never the body.
MAX_QUOTED_ERROR = 500
#: Error bodies longer than this are not parsed as JSON at all.
MAX_ERROR_BODY = 64 * 1024
#: Most JSON values (objects, arrays, strings, numbers) an answer may hold: a listing of ten
#: thousand images holds about 600,000. Parsed, a value costs Python 64 bytes at worst
#: ('{"a":1},' repeated), so the bound keeps the client's memory in check whatever a server
#: sends.
MAX_JSON_VALUES = 1_000_000
#: Answers smaller than this cannot hold too many values to matter.
_DENSITY_CHECKED_FROM = 1024 * 1024

AMBIGUOUS_MESSAGE = "More than one image matches"
DUPLICATE_IMAGE_MESSAGE = "Image with same fingerprint already exists"
#: How incusd refuses an upload whose X-Incus-fingerprint is not the hash of its bytes:
#: "fingerprints don't match, got <actual> expected <sent>" (incusd 6.0.4).
FINGERPRINT_MISMATCH = re.compile(
    r"fingerprints don't match, got ([0-9a-f]{64}) expected ([0-9a-f]{64})"
)
WAIT_DEADLINE_MESSAGE = "context deadline exceeded"


# --------------------------------------------------------------------------------------------
# Request paths, from validated input only.


def named_path(collection: str, name: str) -> str:
    """The URL path of a named object: the name percent-encoded as a single segment.

    Dots are encoded too, so that the names ``.`` and ``..`` cannot become dot segments that
    an HTTP library would resolve into another endpoint.
    """
    return f"{collection}/" + quote(name, safe="").replace(".", "%2E")


def alias_path(name: str) -> str:
    return named_path(ALIASES, name)


def image_path(fingerprint: str, *suffix: str) -> str:
    return "/".join((IMAGES, fingerprint, *suffix))


# --------------------------------------------------------------------------------------------
# Requests and answers.


@attrs.frozen(kw_only=True)
class Call:
    """One request, plus what it is for (used in every error message about it)."""

    method: str
    path: str
    #: What the call does, as in "Could not <action> on <server>": ``get image 'ab12'``.
    action: str
    params: Mapping[str, str] = attrs.field(factory=dict)
    headers: Mapping[str, str | bytes] = attrs.field(factory=dict)
    json: Any = None
    #: Whether the ``project`` query parameter applies (operations are global).
    project_scoped: bool = True


@attrs.frozen
class Envelope:
    """A successful Incus response."""

    #: ``sync`` or ``async``.
    type: str
    metadata: Any
    #: The ETag header, used as If-Match on the next write.
    etag: str | None = None
    #: The operation URL of an async response.
    operation: str = ""


def _bounded(text: str) -> str:
    text = text.strip()
    if len(text) > MAX_QUOTED_ERROR:
        return text[:MAX_QUOTED_ERROR] + f"... ({len(text)} characters)"
    return text


class ImplausibleJSON(ValueError):
    """JSON no Incus sends, refused before (or instead of) parsing it."""


def loads(body: bytes, *, max_values: int = MAX_JSON_VALUES) -> Any:
    """Parse a JSON answer; ValueError for anything that is not plausible Incus JSON (such
    as more than ``max_values`` JSON values)."""
    if len(body) >= _DENSITY_CHECKED_FROM:
        # Counting costs a few ms for the largest answer; a parse of a hostile one, GiBs.
        values = body.count(b"{") + body.count(b"[") + body.count(b",") + body.count(b'"') // 2
        if values > max_values:
            raise ImplausibleJSON(
                f"it holds about {values} JSON values, more than the {max_values} expected"
            )
    try:
        return json.loads(body)
    except RecursionError:
        raise ImplausibleJSON("its JSON nests deeper than Python can read") from None


def server_error_text(body: bytes) -> tuple[str, int | None]:
    """The ``error`` text and ``error_code`` of an error body, bounded; raw text otherwise."""
    if len(body) <= MAX_ERROR_BODY:
        try:
            data = loads(body)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), str):
            code = data.get("error_code")
            text = _bounded(data["error"]) or "(no error message)"
            return text, code if type(code) is int else None
    head = body[: MAX_QUOTED_ERROR + 1].decode("utf-8", errors="replace")
    if not head.strip():
        return "(empty response body)", None
    return _bounded(head) if len(body) <= MAX_QUOTED_ERROR else head[
        :MAX_QUOTED_ERROR
    ] + "...", None


_STATUS_ERRORS: dict[int, tuple[type[APIError], str]] = {
    403: (ForbiddenError, " The server does not trust this client for this request."),
    404: (NotFoundError, ""),
    409: (ConflictError, ""),
    412: (PreconditionFailedError, " It changed since it was read."),
}


def api_error(call: Call, server: str, status: int, body: bytes) -> APIError:
    """The exception for an error answer to call."""
    message, error_code = server_error_text(body)
    if AMBIGUOUS_MESSAGE in message:
        cls: type[APIError] = AmbiguousFingerprintError
        hint = " The fingerprint prefix is ambiguous: give more of its digits."
    else:
        cls, hint = _STATUS_ERRORS.get(status, (APIError, ""))
    return cls(
        f"Could not {call.action} on {server}: {message} "
        f"(HTTP {status} from {call.method} {call.path}).{hint}",
        server=server,
        method=call.method,
        url=call.path,
        status_code=status,
        error_code=error_code,
        server_message=message,
    )


def unexpected(call: Call, server: str, detail: str) -> UnexpectedResponseError:
    """The exception for an answer that makes no sense (``detail`` says why)."""
    return UnexpectedResponseError(
        f"Could not {call.action} on {server}: unexpected answer to "
        f"{call.method} {call.path}: {detail}",
        server=server,
        method=call.method,
        url=call.path,
    )


def parse_envelope(call: Call, server: str, response: httpx.Response) -> Envelope:
    """Interpret a complete response; raise the mapped error for an error answer."""
    body = response.content
    if response.status_code >= 400:
        raise api_error(call, server, response.status_code, body)
    try:
        data = loads(body)
    except ImplausibleJSON as exc:
        raise unexpected(call, server, str(exc)) from None
    except ValueError:
        raise unexpected(call, server, f"not JSON: {server_error_text(body)[0]}") from None
    if not isinstance(data, dict) or data.get("type") not in ("sync", "async", "error"):
        raise unexpected(call, server, "not an Incus response envelope")
    if data["type"] == "error":
        # Incus answers some failures with an error body under a 2xx status.
        code = data.get("error_code")
        status = code if type(code) is int and code >= 400 else response.status_code
        raise api_error(call, server, status, body)
    return Envelope(
        type=data["type"],
        metadata=data.get("metadata"),
        etag=response.headers.get("etag"),
        operation=str(data.get("operation") or ""),
    )


STRUCTURE_ERRORS = (
    cattrs.BaseValidationError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    RecursionError,
)


def structure(call: Call, server: str, data: Any, cls: type[T]) -> T:
    """Turn response metadata into a model; a malformed answer raises an
    UnexpectedResponseError."""
    try:
        return converter.structure(data, cls)
    except STRUCTURE_ERRORS as exc:
        raise unexpected(call, server, f"cannot read it as {cls.__name__}: {exc!r:.500}") from None


def structure_list(call: Call, server: str, data: Any, cls: type[T]) -> list[T]:
    """A list of models, read one by one: the first bad item ends it (cattrs would collect an
    error for every item of a long hostile list first, at great cost)."""
    if not isinstance(data, list):
        raise unexpected(call, server, f"expected a list, got {type(data).__name__}")
    items = []
    for index, item in enumerate(data):
        try:
            items.append(converter.structure(item, cls))
        except STRUCTURE_ERRORS as exc:
            raise unexpected(
                call, server, f"item {index} cannot be read as {cls.__name__}: {exc!r:.500}"
            ) from None
    return items


def fingerprints_from_urls(call: Call, server: str, urls: Any) -> list[str]:
    """Turn ``["/1.0/images/<fp>", ...]`` into sorted fingerprints."""
    if not isinstance(urls, list):
        raise unexpected(call, server, f"expected a list of image URLs, got {type(urls).__name__}")
    fingerprints = []
    for url in urls:
        if not isinstance(url, str) or not url.startswith(IMAGES + "/"):
            raise unexpected(call, server, f"not an image URL: {url!r:.100}")
        fingerprint = url[len(IMAGES) + 1 :].split("?", 1)[0]
        # Callers put these into request paths: as strict as a caller's own fingerprint.
        if not _FULL_FINGERPRINT.fullmatch(fingerprint):
            raise unexpected(call, server, f"not an image URL: {url!r:.100}")
        fingerprints.append(fingerprint)
    return sorted(fingerprints)


def stored_fingerprint(finished: Operation) -> str | None:
    """The fingerprint a finished image operation reports (``metadata.fingerprint``), when it
    is a full fingerprint; anything else the server put there is not used."""
    metadata = finished.metadata if isinstance(finished.metadata, dict) else {}
    reported = metadata.get("fingerprint")
    if isinstance(reported, str) and _FULL_FINGERPRINT.fullmatch(reported):
        return reported
    return None


_TOKEN_SECRET = re.compile(r"[0-9A-Za-z]{1,128}")


def token_secret(call: Call, server: str, token: Operation) -> str:
    """The secret a token operation holds (``metadata.secret``), checked: it goes into later
    requests' query strings and bodies."""
    metadata = token.metadata if isinstance(token.metadata, dict) else {}
    secret = metadata.get("secret")
    if not isinstance(secret, str) or not _TOKEN_SECRET.fullmatch(secret):
        raise unexpected(
            call, server, f"the token operation holds no usable secret: {secret!r:.80}"
        )
    return secret


def transport_error(call: Call, server: str, exc: httpx.TransportError) -> IncusError:
    """The exception for a request that got no answer."""
    context: dict[str, Any] = {"server": server, "method": call.method, "url": call.path}
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return IncusTimeoutError(
            f"Could not {call.action} on {server}: no answer in time ({detail})", **context
        )
    return IncusConnectionError(
        f"Could not {call.action}: the connection to {server} failed: {detail}", **context
    )


def socket_error(call: Call, server: str, exc: OSError) -> IncusError:
    """The exception for a failed read straight from the socket (see Connection.body)."""
    context: dict[str, Any] = {"server": server, "method": call.method, "url": call.path}
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        return IncusTimeoutError(
            f"Could not {call.action} on {server}: no data in time ({detail})", **context
        )
    return IncusConnectionError(
        f"Could not {call.action}: the connection to {server} failed: {detail}", **context
    )


# --------------------------------------------------------------------------------------------
# Operations.


@attrs.frozen
class WaitResult:
    """What one long-poll of ``/1.0/operations/{id}/wait`` said."""

    #: The operation in its latest state, when the server sent it.
    operation: Operation | None = None
    #: The failure text of incusd 6.0.4, which sends an error body instead of the operation.
    failure: str | None = None
    failure_code: int | None = None

    @property
    def finished(self) -> bool:
        return self.failure is not None or (self.operation is not None and self.operation.done)


def parse_wait(call: Call, server: str, response: httpx.Response) -> WaitResult:
    """Interpret a /wait answer in both the 6.0.4 and the 6.0.5+ shapes."""
    if response.status_code == 404:
        raise OperationGoneError(
            f"Could not {call.action} on {server}: the server no longer knows the operation "
            "(Incus forgets finished operations about 5 s after they end), so its outcome "
            "is unknown",
            server=server,
            method=call.method,
            url=call.path,
            status_code=404,
        )
    if response.status_code >= 400:
        raise api_error(call, server, response.status_code, response.content)
    try:
        data = loads(response.content)
    except ValueError:
        raise unexpected(call, server, "not JSON") from None
    if isinstance(data, dict) and data.get("type") == "error":
        # incusd 6.0.4: HTTP 200 with an error body for both a failure and a timed-out wait.
        message, code = server_error_text(response.content)
        if message == WAIT_DEADLINE_MESSAGE:
            return WaitResult()
        return WaitResult(failure=message, failure_code=code)
    envelope = parse_envelope(call, server, response)
    return WaitResult(operation=structure(call, server, envelope.metadata, Operation))


def record_interruption(
    exc: BaseException, left: LeftBehind, sentence: str, *, any_error: bool = False
) -> None:
    """Record on a transfer's exception what the transfer left behind (``sentence``: how far
    it got, and what that means); the exception is then raised as it is.

    A lost connection or a timeout, and anything from outside (KeyboardInterrupt, task
    cancellation), get the record. Another error the SDK or the server reported is left as
    it is, unless ``any_error`` (the transfer's state alone says what is left, whatever
    stopped it). An error whose record says more than that a request may have been applied
    keeps it.
    """
    if isinstance(exc, IncusError):
        if not any_error and not isinstance(exc, IncusConnectionError | IncusTimeoutError):
            return
        if exc.left_behind not in (None, LeftBehind.MAY_BE_APPLIED):
            return
    note_left_behind(exc, left, sentence)


def operation_failure(
    action: str,
    server: str,
    operation: Operation | None,
    message: str,
    *,
    error_code: int | None = None,
    fingerprint: str | None = None,
) -> OperationError | ChecksumMismatchError:
    """The exception for an operation that ended without success (an upload refused for its
    ``fingerprint=``: a ChecksumMismatchError).

    fingerprint names the image concerned when the operation itself does not (incusd 6.0.4
    reports a failed wait without the operation's metadata).
    """
    where = f"operation {operation.id}" if operation is not None else "the operation"
    context: dict[str, Any] = {
        "server": server,
        "operation": operation,
        "server_message": message,
        "error_code": error_code,
    }
    if operation is not None and operation.status_code == OperationStatus.CANCELLED:
        return OperationError(f"Could not {action} on {server}: {where} was cancelled", **context)
    if mismatch := FINGERPRINT_MISMATCH.search(message):
        # The upload's fingerprint= is not the hash of the bytes: incusd stores nothing.
        return note_left_behind(
            ChecksumMismatchError(
                f"Could not {action} on {server}: {where} failed: the bytes sent hash to "
                f"{mismatch[1]}, not to the fingerprint given, {mismatch[2]}",
                fingerprint=mismatch[2],
                **context,
            ),
            LeftBehind.NOTHING,
            "the server refused the image, so nothing was stored",
        )
    if DUPLICATE_IMAGE_MESSAGE in message:
        metadata = operation.metadata if operation is not None else None
        reported = metadata.get("fingerprint") if isinstance(metadata, dict) else None
        fingerprint = reported if isinstance(reported, str) and reported else fingerprint
        return ImageExistsError(
            f"Could not {action} on {server}: image {fingerprint or '(fingerprint unknown)'} "
            "is already stored there",
            fingerprint=fingerprint,
            **context,
        )
    return OperationError(
        f"Could not {action} on {server}: {where} failed: {_bounded(message)}",
        fingerprint=fingerprint,
        **context,
    )
