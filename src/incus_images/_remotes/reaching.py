"""Reaching the server a remote is added for, within the one deadline of the call: the
certificate it shows (a token's addresses probed together), and a few JSON calls bounded in
size and time."""

from __future__ import annotations

import hashlib
import hmac
import queue
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from .. import _api as api
from .._endpoint import Endpoint
from .._errors import (
    ConflictError,
    IncusConnectionError,
    IncusError,
    IncusTimeoutError,
    LeftBehind,
    note_left_behind,
)
from .._protocol import Call, Envelope, parse_envelope, unexpected
from .._tls import client_context
from .tokens import TrustToken, host_port

#: Without a timeout (timeout=None), how long showing a certificate may take a server: an
#: address that swallows packets must not hold the call for ever.
PROBE_WITHOUT_TIMEOUT = 10.0


class Deadline:
    """The one deadline of an add_remote call, counted from its start (None: none)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._ends = None if seconds is None else time.monotonic() + seconds

    def left(self) -> float | None:
        """Seconds left (0 once it passed), or None without a deadline."""
        return None if self._ends is None else max(0.0, self._ends - time.monotonic())

    def expired(self) -> bool:
        return self.left() == 0.0

    def remaining(self, doing: str) -> float | None:
        """Seconds left for ``doing`` (None: no deadline); IncusTimeoutError if none is."""
        left = self.left()
        if left is not None and left <= 0:
            raise IncusTimeoutError(
                f"Could not {doing}: add_remote ran out of its timeout={self.seconds:g} s"
            )
        return left


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def peer_certificate(host: str, port: int, context: ssl.SSLContext, deadline: Deadline) -> bytes:
    """The DER certificate the server at host:port shows over a TLS handshake with context,
    by the deadline (a connect, then a handshake that CPython bounds as a whole by the
    socket's timeout)."""
    with socket.create_connection(
        (host, port), timeout=deadline.remaining(f"connect to {host}:{port}")
    ) as raw:
        raw.settimeout(deadline.remaining(f"shake hands with {host}:{port}"))
        with context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the server showed no certificate")
    return der


def find_token_server(token: TrustToken, deadline: Deadline) -> tuple[str, bytes]:
    """(URL, certificate) of the first of the token's addresses to show the certificate the
    token names. The addresses are probed together, each in a thread of its own, so that an
    address that swallows packets (a token of a server on a wildcard address lists every
    address of its machine) costs no more than the deadline, and hides none that answers.
    Any address showing the token's certificate is the server that made the token."""
    if deadline.seconds is None:
        deadline = Deadline(PROBE_WITHOUT_TIMEOUT)
    addresses = list(dict.fromkeys(token.addresses))  # each once: one outcome each
    results: queue.SimpleQueue[tuple[str, bytes | BaseException]] = queue.SimpleQueue()
    for address in addresses:
        # Daemon threads: one stuck in a name lookup, which nothing bounds, must not keep
        # the interpreter from exiting; its socket steps end by the deadline anyway.
        threading.Thread(
            target=_probe, args=(address, deadline, results), name="incus-probe", daemon=True
        ).start()
    outcomes: dict[str, str] = {}
    wrong = []
    while len(outcomes) < len(addresses):
        try:
            address, result = results.get(timeout=deadline.left())
        except queue.Empty:
            break
        url = f"https://{address}"
        if isinstance(result, bytes):
            shown = fingerprint(result)
            if hmac.compare_digest(shown, token.fingerprint):
                return url, result
            wrong.append(url)
            outcomes[address] = f"shows the certificate {shown}"
        else:
            outcomes[address] = _reason(result)
    silent = [address for address in addresses if address not in outcomes]
    tried = "; ".join(
        f"https://{address} ({outcomes.get(address, 'no certificate in time')})"
        for address in addresses
    )
    if wrong:
        raise IncusConnectionError(
            f"{', '.join(wrong)} shows a certificate whose fingerprint is not the one the "
            f"trust token names ({token.fingerprint}): it is not the server that made the "
            f"token, so the token was not sent; tried: {tried}",
            server=wrong[0],
        )
    if silent:
        raise note_left_behind(
            IncusTimeoutError(
                f"None of the trust token's addresses showed its certificate within "
                f"timeout={deadline.seconds:g} s; tried: {tried}"
            ),
            LeftBehind.NOTHING,
            "nothing was sent: the token was not used",
        )
    raise note_left_behind(
        IncusConnectionError(f"None of the trust token's addresses answers; tried: {tried}"),
        LeftBehind.NOTHING,
        "nothing was sent: the token was not used",
    )


def _probe(
    address: str, deadline: Deadline, results: queue.SimpleQueue[tuple[str, bytes | BaseException]]
) -> None:
    try:
        result: bytes | BaseException = peer_certificate(
            *host_port(address), client_context(False), deadline
        )
    except BaseException as exc:  # noqa: BLE001 - reported to the caller's thread
        result = exc
    results.put((address, result))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | IncusTimeoutError):
        return "no certificate in time"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class Server:
    """A few JSON calls to the server being added, through the client's own connection
    (the same TLS rule, bounded answers, the call's deadline in every network step and the
    same error mapping), each within what is left of the deadline."""

    def __init__(self, url: str, context: ssl.SSLContext, deadline: Deadline) -> None:
        # add_remote is blocking: the blocking twin of the client's connection.
        from .._sync._connection import Connection

        self.url = url
        self._deadline = deadline
        self._connection = Connection(
            Endpoint.https(url, ssl_context=context),
            project=None,
            timeout=deadline.left(),
            # One server is added, whatever cluster it belongs to.
            ask_members=False,
        )

    def close(self) -> None:
        self._connection.close()

    def send(self, call: Call) -> Envelope:
        left = self._deadline.remaining(f"{call.action} on {self.url}")
        response = self._connection.send(call, deadline=left)
        return parse_envelope(call, self.url, response)

    def info(self) -> dict[str, Any]:
        call = api.server_info()
        metadata = self.send(call).metadata
        if not isinstance(metadata, dict) or not isinstance(metadata.get("auth"), str):
            raise unexpected(call, self.url, "GET /1.0 holds no server information")
        return metadata

    def project(self, requested: str | None, info: Mapping[str, Any]) -> str:
        """The project the CLI would choose (cmd/incus/remote.go, findProject): the one
        asked for, once the server shows it; else the only project this client may use;
        else none (the default project)."""
        if requested is not None:
            self.send(api.project(requested))
            return requested
        extensions = info.get("api_extensions")
        if not isinstance(extensions, list) or "projects" not in extensions:
            return ""
        call = api.projects()
        names = _project_names(call, self.url, self.send(call).metadata)
        if len(names) == 1:
            return names[0]
        if not names or "default" in names:
            return ""
        # The server's state, not an argument of the caller's: a conflict to resolve by
        # naming one.
        raise ConflictError(
            f"{self.url} lets this client use several projects ({', '.join(names)}) and not "
            "the default one: name the one to use with project=",
            server=self.url,
        )


def _project_names(call: Call, server: str, urls: object) -> list[str]:
    if not isinstance(urls, list):
        raise unexpected(call, server, "the project list is not a list")
    names = []
    for url in urls:
        if not isinstance(url, str) or not url.startswith("/1.0/projects/"):
            raise unexpected(call, server, f"not a project URL: {url!r:.100}")
        name = unquote(url.removeprefix("/1.0/projects/").split("?", 1)[0])
        if not name or "/" in name or not name.isprintable() or len(name) > 255:
            raise unexpected(call, server, f"not a project URL: {url!r:.100}")
        names.append(name)
    return sorted(names)


def connection_failed(url: str, exc: BaseException) -> IncusError:
    """The error for a server whose certificate could not be read (exc from
    peer_certificate)."""
    if isinstance(exc, IncusError):
        return exc
    if isinstance(exc, TimeoutError):
        return IncusTimeoutError(f"Could not connect to {url}: no answer in time", server=url)
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return IncusConnectionError(f"Could not connect to {url}: {detail}", server=url)
