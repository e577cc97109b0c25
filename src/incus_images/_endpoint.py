"""Where to connect: the local daemon's unix socket, or an HTTPS server with certificates.

Shared by both flavours. Finding the local socket connects to candidate sockets (a blocking
call that returns at once on a unix socket), so it is the one piece of I/O outside ``_async/``.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import TypeAlias
from urllib.parse import unquote, urlsplit

import attrs
import httpx

from ._errors import IncusConnectionError, InvalidInputError
from ._tls import (
    ClientCertificate,
    client_context,
    read_client_certificate,
    read_trusted_certificates,
)
from ._validate import text as checked_text

__all__ = [
    "SYSTEM_SOCKETS",
    "CertificateArg",
    "Endpoint",
    "VerifyArg",
    "candidate_sockets",
    "discover_socket",
    "parse_endpoint",
]

#: A client certificate: a PEM file holding both certificate and key, or (certificate, key).
CertificateArg: TypeAlias = (
    str | os.PathLike[str] | tuple[str | os.PathLike[str], str | os.PathLike[str]] | None
)
#: Server verification: True (the system's CA bundle), a CA/server certificate PEM file,
#: an ssl.SSLContext of your own, or False (no verification: only on explicit request).
VerifyArg: TypeAlias = bool | str | os.PathLike[str] | ssl.SSLContext

#: Where the packaged daemon listens, in the order the incus CLI looks.
SYSTEM_SOCKETS: tuple[str, ...] = ("/run/incus/unix.socket", "/var/lib/incus/unix.socket")

#: Host name used in URLs sent over a unix socket (incusd ignores it).
_UNIX_BASE_URL = "http://incus"


@attrs.frozen
class Endpoint:
    """A resolved place to send requests to."""

    #: How the server is named in messages: ``unix:///path/unix.socket`` or ``https://host:port``.
    display: str
    #: The httpx base URL.
    base_url: str
    #: The unix socket path, or None for HTTPS.
    socket_path: str | None = None
    #: The TLS context for HTTPS, or None for a unix socket.
    ssl_context: ssl.SSLContext | None = None
    #: The PEM text the server is verified against, when ``verify=`` named a file: what a
    #: daemon that connects to this server for a copy should pin too.
    verify_pem: str | None = None

    #: The project a client uses unless told otherwise (incus-user confines each user to
    #: their own).
    default_project: str | None = None

    @classmethod
    def unix(cls, path: str, *, project: str | None = None) -> Endpoint:
        return cls(
            display=f"unix://{path}",
            base_url=_UNIX_BASE_URL,
            socket_path=path,
            default_project=project,
        )


def candidate_sockets(environ: Mapping[str, str]) -> list[str]:
    """The unix sockets to try, in order: $INCUS_SOCKET, $INCUS_DIR/unix.socket, system paths."""
    candidates = []
    if environ.get("INCUS_SOCKET"):
        candidates.append(environ["INCUS_SOCKET"])
    if environ.get("INCUS_DIR"):
        candidates.append(os.path.join(environ["INCUS_DIR"], "unix.socket"))
    candidates.extend(SYSTEM_SOCKETS)
    # Keep the first of duplicates (INCUS_DIR=/var/lib/incus names a system path again).
    return list(dict.fromkeys(candidates))


def _answers(path: str, timeout: float) -> str | None:
    """Return None when something accepts connections on path, else why not."""
    if not os.path.exists(path):
        return "does not exist"
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        probe.close()
    return None


def _writable(path: str) -> bool:
    """Whether this process's user may connect to the socket at path (root always may)."""
    return os.access(path, os.W_OK)


def discover_socket(environ: Mapping[str, str] | None = None, *, timeout: float = 2.0) -> Endpoint:
    """Find the local daemon as the incus CLI does; raise naming every path tried."""
    environ = os.environ if environ is None else environ
    tried = []
    for path in candidate_sockets(environ):
        # A user who is not an Incus administrator cannot write to the daemon's socket; the
        # incus CLI then uses incus-user's beside it, as this does.
        user_path = path + ".user"
        if (
            path != environ.get("INCUS_SOCKET")
            and os.path.basename(path) == "unix.socket"
            and not _writable(path)
            and os.path.exists(user_path)
        ):
            if _writable(user_path):
                # Not probed: incus-user sets a user up on each new connection, and a probe's
                # set-up races the first request's (seen: a duplicate project, then a reset).
                # It gives each user a project of their own.
                return Endpoint.unix(user_path, project=f"user-{os.geteuid()}")
            tried.append(f"{user_path} (incus-user: permission denied)")
        reason = _answers(path, timeout)
        if reason is None:
            return Endpoint.unix(path)
        tried.append(f"{path} ({reason})")
    raise IncusConnectionError(
        "No Incus daemon answers on any local socket; tried: "
        + "; ".join(tried)
        + ". Start incusd, or pass the endpoint, e.g. Client('unix:///path/to/unix.socket')."
    )


def _path(value: object, argument: str) -> str:
    """A path argument: str or os.PathLike of str, with no NUL and no lone surrogate."""
    if not isinstance(value, str | os.PathLike):
        raise InvalidInputError(f"{argument} must be a path, got {type(value).__name__}")
    path = os.fspath(value)
    if not isinstance(path, str):
        raise InvalidInputError(f"{argument} must be a str path, got {type(path).__name__}")
    return checked_text(path, argument)


def _client_certificate(cert: CertificateArg) -> ClientCertificate | None:
    if cert is None:
        return None
    if isinstance(cert, tuple):
        if len(cert) != 2:
            raise InvalidInputError(
                f"cert must be a path or a (certificate, key) pair, got {cert!r}"
            )
        return read_client_certificate(_path(cert[0], "cert"), _path(cert[1], "cert"))
    return read_client_certificate(_path(cert, "cert"), None)


def _tls(verify: VerifyArg, cert: CertificateArg) -> tuple[ssl.SSLContext, str | None]:
    """The TLS context of verify= and cert=, and the PEM text of a verify= file."""
    if isinstance(verify, ssl.SSLContext):
        if cert is not None:
            raise InvalidInputError(
                "give the client certificate either as cert= or inside the SSLContext passed "
                "as verify=, not both (the SDK does not modify a context it was given)"
            )
        return verify, None
    if isinstance(verify, bool):
        return client_context(verify, _client_certificate(cert)), None
    if isinstance(verify, str | os.PathLike):
        # The file's first certificate is pinned (a server's own, as Incus makes them, is
        # accepted whatever name it carries, as the incus CLI does); any other certificate
        # the server shows must chain to one in the file and carry the host's name.
        trusted = read_trusted_certificates(_path(verify, "verify"), "verify= file")
        return client_context(trusted, _client_certificate(cert)), trusted.pem
    raise InvalidInputError(
        f"verify must be True, False, a certificate file path or an ssl.SSLContext, got {verify!r}"
    )


def parse_endpoint(
    endpoint: str | os.PathLike[str] | None,
    *,
    cert: CertificateArg = None,
    verify: VerifyArg = True,
) -> Endpoint | None:
    """Check and resolve an explicit endpoint; None means "discover the local socket later".

    Accepted: ``unix:///abs/path`` (or ``unix:/abs/path``), a plain socket path, and
    ``https://host[:port]`` (port 8443 when omitted).
    """
    if endpoint is None:
        if cert is not None:
            raise InvalidInputError("cert= is only used with an https:// endpoint")
        return None
    text = _path(endpoint, "endpoint")
    if not text:
        raise InvalidInputError("endpoint must not be empty (omit it to find the local daemon)")
    if text.startswith("/"):
        # A bare path is a file name, taken literally (it may contain '#', '?' or '%').
        if cert is not None:
            raise InvalidInputError("cert= is only used with an https:// endpoint")
        return Endpoint.unix(text)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError as exc:
        raise InvalidInputError(f"endpoint {text!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "unix":
        path = checked_text(unquote(parts.path), "endpoint path")
        if parts.netloc or not path.startswith("/") or parts.query or parts.fragment:
            raise InvalidInputError(
                f"endpoint {text!r}: a unix endpoint is an absolute path, e.g. "
                "unix:///run/incus/unix.socket (percent-encode '#', '?' and '%' in it)"
            )
        if cert is not None:
            raise InvalidInputError("cert= is only used with an https:// endpoint")
        return Endpoint.unix(path)
    if scheme == "https":
        if not parts.hostname:
            raise InvalidInputError(f"endpoint {text!r} has no host name")
        if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
            raise InvalidInputError(
                f"endpoint {text!r}: give only scheme, host and port, e.g. https://host:8443"
            )
        try:
            port = 8443 if parts.port is None else parts.port
        except ValueError as exc:
            raise InvalidInputError(f"endpoint {text!r}: {exc}") from exc
        if not 0 < port < 65536:
            raise InvalidInputError(f"endpoint {text!r}: port {port} is out of range")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        base_url = f"https://{host}:{port}"
        try:
            # What httpx will not take later must not get this far (its host is decoded from
            # IDNA only when connecting).
            httpx.URL(base_url).host  # noqa: B018
        except (httpx.InvalidURL, ValueError) as exc:
            raise InvalidInputError(f"endpoint {text!r}: {exc}") from None
        context, verify_pem = _tls(verify, cert)
        return Endpoint(
            display=base_url, base_url=base_url, ssl_context=context, verify_pem=verify_pem
        )
    if scheme == "http":
        raise InvalidInputError(
            f"endpoint {text!r}: Incus serves its API over HTTPS only; use https://"
        )
    raise InvalidInputError(
        f"endpoint {text!r}: expected unix:///path/to/unix.socket or https://host[:port]"
    )


def member_endpoint(url: str, like: Endpoint) -> Endpoint:
    """Another member of the cluster ``like`` belongs to, reached the same way (every member
    serves the cluster's certificate). ``url`` comes from the server: checked as strictly as
    a caller's endpoint."""
    endpoint = parse_endpoint(url, verify=False)
    if endpoint is None or endpoint.socket_path is not None:
        raise InvalidInputError(f"cluster member {url!r} is not an https:// address")
    return attrs.evolve(
        like, display=endpoint.display, base_url=endpoint.base_url, socket_path=None
    )


def member_urls(metadata: object) -> list[str]:
    """The HTTPS URLs in a ``GET /1.0/cluster/members?recursion=1`` answer that are usable."""
    urls = []
    for member in metadata if isinstance(metadata, list) else []:
        url = member.get("url") if isinstance(member, dict) else None
        if isinstance(url, str) and url.startswith("https://") and len(url) < 300:
            try:
                parse_endpoint(url, verify=False)
            except InvalidInputError:
                continue
            urls.append(url)
    return urls


def parse_members(
    urls: Sequence[object], *, cert: CertificateArg = None, verify: VerifyArg = True
) -> list[Endpoint]:
    """The members of a cluster, each ``https://host[:port]``, reached with one TLS setting
    (every member serves the cluster's certificate)."""
    if isinstance(urls, str | bytes) or not urls:
        raise InvalidInputError("give a cluster's members as a non-empty list of https:// URLs")
    members: list[Endpoint] = []
    for url in urls:
        if not isinstance(url, str) or not url.lower().startswith("https://"):
            raise InvalidInputError(f"cluster member {url!r:.100} is not an https:// URL")
        member = (
            parse_endpoint(url, cert=cert, verify=verify)
            if not members
            else member_endpoint(url, members[0])
        )
        assert member is not None
        if any(known.base_url == member.base_url for known in members):
            raise InvalidInputError(f"cluster member {url!r} is given twice")
        members.append(member)
    return members
