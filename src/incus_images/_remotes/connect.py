"""How a client reaches a remote of the CLI's configuration: address, certificates, TLS.

A remote this SDK cannot use in the way asked (an image server as a Client, an OIDC remote)
is refused as the caller's argument (InvalidInputError); an entry or a file of the
configuration that cannot be used (an address that is neither https:// nor unix://, missing
or broken certificates) is a ConfigurationError naming it. Both before anything is sent.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import attrs

from .._endpoint import Endpoint, parse_endpoint
from .._errors import ConfigurationError, InvalidInputError
from .._small_files import configuration_file, exists, read_small_file_if_any
from .._tls import (
    TrustedCertificates,
    client_context,
    read_client_certificate,
    trusted_certificates,
)
from .config import Remote, load_remotes

# --------------------------------------------------------------------------------------------
# Connecting to a remote.


@attrs.frozen
class RemoteTarget:
    """Where a client of a remote connects, and the project it uses there."""

    #: None: the local daemon, found as the CLI finds it.
    endpoint: Endpoint | None
    project: str | None


def _lookup(remote: object) -> Remote:
    if isinstance(remote, Remote):
        return remote
    return load_remotes().remote(remote)


def _not_an_incus_server(remote: Remote) -> InvalidInputError:
    if remote.protocol == "simplestreams":
        return InvalidInputError(
            f"Remote {remote.name!r} ({remote.addr}) is a simplestreams image server, not an "
            "Incus server: use it as the source of a copy, "
            f"images.copy(..., SimpleStreams.from_remote({remote.name!r}))"
        )
    return InvalidInputError(
        f"Remote {remote.name!r} ({remote.addr}) speaks the {remote.protocol!r} protocol, "
        "not Incus's: this SDK cannot use it"
    )


def remote_endpoint(remote: object) -> RemoteTarget:
    """Resolve a remote (its name, or a :class:`Remote`) as the CLI connects to it: the
    local socket for ``unix://``; over HTTPS the client certificate (none for a public
    remote) and the pinned server certificate, else ``client.ca``, else the system's CA
    bundle (a file's certificates are checked by ``_tls``'s rule: the first pinned, any
    other for the remote's host name)."""
    found = _lookup(remote)
    if found.protocol != "incus":
        raise _not_an_incus_server(found)
    if found.auth_type == "oidc":
        raise InvalidInputError(
            f"Remote {found.name!r} authenticates with OIDC, which this SDK does not support; "
            "add the server as another remote with a trust token (a client certificate)"
        )
    # The CLI does not select the default project explicitly (cliconfig/remote.go).
    project = found.project if found.project not in (None, "default") else None
    addr = found.addr
    if addr.startswith("unix:"):
        path = addr.removeprefix("unix:").removeprefix("//")
        if not path:
            return RemoteTarget(endpoint=None, project=project)
        if not path.startswith("/"):
            raise ConfigurationError(
                f"Remote {found.name!r} has the address {addr!r:.100}: a unix socket is named "
                "by its absolute path, unix:///path/unix.socket"
            )
        # Taken literally, as the CLI does (it may hold '#', '?' or '%').
        return RemoteTarget(endpoint=_endpoint(found, path), project=project)
    if not addr.startswith("https://"):
        raise ConfigurationError(
            f"Remote {found.name!r} has the address {addr!r:.100}: expected https:// or unix://"
        )
    pinned = _trusted_if_any(found.server_certificate, "the pinned server certificate")
    client = None
    if not found.public:
        certificate, key = found.client_certificate, found.client_key
        missing = [str(path) for path in (certificate, key) if path is None or not exists(path)]
        if certificate is None or key is None or missing:
            raise ConfigurationError(
                f"Remote {found.name!r} needs the client certificate {certificate} and its "
                f"key {key}; {' and '.join(missing)} "
                f"{'does' if len(missing) == 1 else 'do'} not exist (add the remote with a "
                "trust token to make them)",
                path=missing[0] if missing else None,
            )
        client = read_client_certificate(certificate, key, refuse=configuration_file)
    verify: TrustedCertificates | bool = True
    if pinned is not None:
        verify = pinned
    elif (ca := _trusted_if_any(found.client_ca, "the client CA certificate")) is not None:
        verify = ca
    endpoint = _endpoint(found, addr, verify=client_context(verify, client))
    verify_pem = pinned.pem if pinned is not None else None
    return RemoteTarget(endpoint=attrs.evolve(endpoint, verify_pem=verify_pem), project=project)


def _endpoint(remote: Remote, address: str, verify: ssl.SSLContext | bool = True) -> Endpoint:
    """Where the remote's address leads; an address the CLI's configuration should not hold
    is a ConfigurationError (parse_endpoint judges it as a caller's argument)."""
    try:
        endpoint = parse_endpoint(address, verify=verify)
    except InvalidInputError as exc:
        raise ConfigurationError(
            f"Remote {remote.name!r} has an address that cannot be used: {exc}"
        ) from None
    assert endpoint is not None
    return endpoint


def _trusted_if_any(path: Path | None, what: str) -> TrustedCertificates | None:
    """The certificates of a file of the CLI's configuration; None if there is none."""
    data = None if path is None else read_small_file_if_any(path, what, refuse=configuration_file)
    if data is None:
        return None
    return trusted_certificates(data, f"{what} {path}", path=str(path), refuse=configuration_file)


def simplestreams_remote(name: object) -> tuple[str, str | None]:
    """(URL, pinned certificate PEM or None) of a simplestreams remote of the CLI."""
    found = _lookup(name)
    if found.protocol != "simplestreams":
        raise InvalidInputError(
            f"Remote {found.name!r} ({found.addr}) is not a simplestreams image server "
            f"(its protocol is {found.protocol!r})"
            + (f": use it as Client(remote={found.name!r})" if found.protocol == "incus" else "")
        )
    pinned = _trusted_if_any(found.server_certificate, "the pinned server certificate")
    return found.addr, pinned.pem if pinned is not None else None
