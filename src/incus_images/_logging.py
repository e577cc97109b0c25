"""What the SDK tells a service through the standard logging module, and what it never tells.

Everything goes to the ``incus_images`` logger:

    DEBUG    each request (method, path, server; the answer's status, size and time), the start
             of an upload, a relay or a copy, and each operation waited for
    INFO     the end of a transfer: an upload stored and verified, an export verified and
             renamed into place, a copy done
    WARNING  a request repeated on the same server, or sent to another cluster member

Never logged: a query string (a download secret travels as ``?secret=``), a body, a header
value, a certificate or a key. Messages are %-formatted by logging itself, so a level that is
off costs one method call and no formatting.
"""

from __future__ import annotations

import logging
import time
from typing import TypeGuard

import httpx

from ._protocol import Call

logger = logging.getLogger("incus_images")


def log_answer(call: Call, server: str, status: int, size: int | None, started: float) -> None:
    """One request, once its answer (or, for a streamed body, its head) arrived."""
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "%s %s on %s: %d%s in %.1f ms",
            call.method,
            # The path only: the parameters (call.params) may hold a secret.
            call.path,
            server,
            status,
            "" if size is None else f", {size} bytes",
            (time.monotonic() - started) * 1000,
        )


class RedactSecrets(logging.Filter):
    """Hide the value of a ``secret`` query parameter in httpx's own request log.

    httpx logs every request's full URL at INFO on the ``httpx`` logger; ``images.get()`` and
    ``export()`` with ``secret=`` send the secret in the query string, as the Incus API wants
    it, so a service logging at INFO would write it out. The record is kept, with the value
    replaced.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(map(_has_secret, record.args)):
            record.args = tuple(
                arg.copy_set_param("secret", "REDACTED") if _has_secret(arg) else arg
                for arg in record.args
            )
        return True


def _has_secret(arg: object) -> TypeGuard[httpx.URL]:
    return isinstance(arg, httpx.URL) and "secret" in arg.params


def redact_httpx_secrets() -> None:
    """Put RedactSecrets on httpx's logger, once."""
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(known, RedactSecrets) for known in httpx_logger.filters):
        httpx_logger.addFilter(RedactSecrets())
