"""Where to connect: the local daemon's unix socket, or an HTTPS server with certificates.

Shared by both flavours. Finding the local socket connects to candidate sockets (a blocking
call that returns at once on a unix socket), so it is the one piece of I/O outside ``_async/``.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import SplitResult, unquote, urlsplit

import attrs
import httpx

from ._errors import IncusConnectionError, InvalidInputError
from ._validate import text as checked_text

if TYPE_CHECKING:
    from ._tls import ClientCertificate

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

    @classmethod
    def https(
        cls, base_url: str, *, ssl_context: ssl.SSLContext, verify_pem: str | None = None
    ) -> Endpoint:
        return cls(
            display=base_url, base_url=base_url, ssl_context=ssl_context, verify_pem=verify_pem
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
    from ._tls import read_client_certificate

    if isinstance(cert, tuple):
        if len(cert) != 2:
            raise InvalidInputError(
                f"cert must be a path or a (certificate, key) pair, got {cert!r}"
            )
        return read_client_certificate(_path(cert[0], "cert"), _path(cert[1], "cert"))
    return read_client_certificate(_path(cert, "cert"), None)


def _tls(verify: VerifyArg, cert: CertificateArg) -> tuple[ssl.SSLContext, str | None]:
    """The TLS context of verify= and cert=, and the PEM text of a verify= file."""
    # Here only: a client of the local socket never needs TLS (3 ms of its start-up).
    from ._tls import client_context, read_trusted_certificates

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


def _https_base_url(text: str, parts: SplitResult) -> str:
    """The base URL ``https://host:port`` of an https endpoint (port 8443 when omitted), or an
    InvalidInputError naming ``text``. Nothing but scheme, host and port may be given."""
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
    return base_url


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
        context, verify_pem = _tls(verify, cert)
        return Endpoint.https(
            _https_base_url(text, parts), ssl_context=context, verify_pem=verify_pem
        )
    if scheme == "http":
        raise InvalidInputError(
            f"endpoint {text!r}: Incus serves its API over HTTPS only; use https://"
        )
    raise InvalidInputError(
        f"endpoint {text!r}: expected unix:///path/to/unix.socket or https://host[:port]"
    )


#: The most members a cluster's member list may hold, given by the caller or learnt from the
#: cluster. Incus clusters have a few dozen members, rarely a few hundred (every member
#: heartbeats every other one, and the database has a handful of voters): a longer list is
#: no cluster's. The cap bounds the work one answer can cause: an answer of 100,000 URLs
#: blocked the event loop for 4 to 6 minutes before (merged pairwise), and is now refused
#: in 0.07 s, most of it reading the JSON.
MAX_CLUSTER_MEMBERS = 1000

#: Longer than any https://host:port (a DNS name has at most 253 characters).
_MAX_MEMBER_URL = 300

#: Entries quoted in a warning about an answer's unusable entries.
_QUOTED_ENTRIES = 3


def member_endpoint(url: object, like: Endpoint) -> Endpoint:
    """Another member of the cluster ``like`` belongs to, reached the same way (every member
    serves the cluster's certificate): ``https://host[:port]`` and nothing else, checked as
    strictly as a caller's endpoint; else an InvalidInputError."""
    if not isinstance(url, str):
        # Not its repr: a server's number may have more digits than int's repr allows.
        raise InvalidInputError(
            f"cluster member of type {type(url).__name__} is not an https:// URL"
        )
    if len(url) > _MAX_MEMBER_URL:
        raise InvalidInputError(f"cluster member {url!r:.100} is too long for an https:// URL")
    text = checked_text(url, "cluster member")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError as exc:
        raise InvalidInputError(f"cluster member {text!r:.100}: {exc}") from None
    if parts.scheme.lower() != "https":
        raise InvalidInputError(f"cluster member {text!r:.100} is not an https:// URL")
    base_url = _https_base_url(text, parts)
    return attrs.evolve(like, display=base_url, base_url=base_url, socket_path=None)


@attrs.frozen
class LearntMembers:
    """What an answer to ``GET /1.0/cluster/members?recursion=1`` gives a client: the members
    to use, or why none is used."""

    #: The members named, each checked and reached as the member that answered; once each
    #: (by base URL), in the answer's order.
    endpoints: tuple[Endpoint, ...] = ()
    #: How many entries were left out as unusable (not an object with an https:// URL).
    skipped: int = 0
    #: The first few of them, quoted and cut short, for the log.
    skipped_examples: tuple[str, ...] = ()
    #: Why nothing from the answer is used, or None.
    refused: str | None = None


def learnt_members(metadata: object, like: Endpoint) -> LearntMembers:
    """The members a cluster lists, reached as ``like`` is. An answer that is not a list, or
    lists more than MAX_CLUSTER_MEMBERS entries, is refused whole (before any entry is looked
    at); an entry that is not a member with a usable ``https://host:port`` is skipped (each
    entry is checked on its own and pinned by the same certificate, so a bad one says nothing
    against the others). Never raises; linear in the answer's size."""
    if not isinstance(metadata, list):
        return LearntMembers(refused=f"the answer is a {type(metadata).__name__}, not a list")
    if len(metadata) > MAX_CLUSTER_MEMBERS:
        return LearntMembers(
            refused=f"it lists {len(metadata)} members, more than the {MAX_CLUSTER_MEMBERS} a "
            "client takes from a cluster"
        )
    found: dict[str, Endpoint] = {}
    skipped: list[object] = []
    for member in metadata:
        try:
            # recursion=1 gives objects; anything else (a bare URL too) is not a member.
            url = member.get("url") if isinstance(member, dict) else None
            endpoint = member_endpoint(url, like)
        except InvalidInputError:
            skipped.append(member)
            continue
        found.setdefault(endpoint.base_url, endpoint)
    return LearntMembers(
        endpoints=tuple(found.values()),
        skipped=len(skipped),
        skipped_examples=tuple(_quoted(entry) for entry in skipped[:_QUOTED_ENTRIES]),
    )


def _quoted(entry: object) -> str:
    """An entry as a log shows it: its start only (it may be any size)."""
    if isinstance(entry, dict):
        entry = entry.get("url", entry)
    if isinstance(entry, str):
        return f"{entry[:60]!r:.80}"  # escapes make a repr up to ten times longer
    if isinstance(entry, int) and not isinstance(entry, bool) and entry.bit_length() > 64:
        return "a very large number"  # whose repr is long, or past 4,300 digits refused
    if isinstance(entry, int | float) or entry is None:
        return repr(entry)
    return f"a JSON {'array' if isinstance(entry, list) else 'object'}"


def parse_members(
    urls: Sequence[object], *, cert: CertificateArg = None, verify: VerifyArg = True
) -> list[Endpoint]:
    """The members of a cluster, each ``https://host[:port]``, reached with one TLS setting
    (every member serves the cluster's certificate); at most MAX_CLUSTER_MEMBERS, none twice."""
    if not isinstance(urls, list | tuple) or not urls:
        raise InvalidInputError("give a cluster's members as a non-empty list of https:// URLs")
    if len(urls) > MAX_CLUSTER_MEMBERS:
        raise InvalidInputError(
            f"{len(urls)} cluster members given: a client takes at most {MAX_CLUSTER_MEMBERS}"
        )
    first, *others = urls
    if not isinstance(first, str) or not first.lower().startswith("https://"):
        raise InvalidInputError(f"cluster member {first!r:.100} is not an https:// URL")
    endpoint = parse_endpoint(first, cert=cert, verify=verify)
    assert endpoint is not None
    members = {endpoint.base_url: endpoint}
    for url in others:
        member = member_endpoint(url, endpoint)
        if member.base_url in members:
            raise InvalidInputError(f"cluster member {url!r} is given twice")
        members[member.base_url] = member
    return list(members.values())
