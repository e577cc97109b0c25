"""How a client reaches a remote of the CLI's configuration: address, certificates, TLS."""

from __future__ import annotations

import ssl

import attrs

from .._endpoint import Endpoint, parse_endpoint
from .._errors import InvalidInputError
from .config import Remote, _existing, _read_pem, load_remotes

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
    remote) and the pinned server certificate, else the system's CA bundle."""
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
            raise InvalidInputError(
                f"Remote {found.name!r} has the address {addr!r:.100}: a unix socket is named "
                "by its absolute path, unix:///path/unix.socket"
            )
        # Taken literally, as the CLI does (it may hold '#', '?' or '%').
        return RemoteTarget(endpoint=parse_endpoint(path), project=project)
    if not addr.startswith("https://"):
        raise InvalidInputError(
            f"Remote {found.name!r} has the address {addr!r:.100}: expected https:// or unix://"
        )
    pinned = _existing(found.server_certificate)
    pinned_pem = _read_pem(pinned, "the pinned server certificate") if pinned else None
    pair = None
    if not found.public:
        certificate, key = _existing(found.client_certificate), _existing(found.client_key)
        if certificate is None or key is None:
            raise InvalidInputError(
                f"Remote {found.name!r} needs the client certificate and key "
                f"{found.client_certificate} and {found.client_key}, which do not exist "
                "(add the remote with a trust token to make them)"
            )
        pair = (str(certificate), str(key))
    if pinned_pem is not None:
        context = _pinned_context(pinned_pem)
    elif (ca := _existing(found.client_ca)) is not None:
        context = _verified_context(str(ca))
    else:
        context = _verified_context(None)
    if pair is not None:
        _load_client_certificate(context, pair)
    endpoint = parse_endpoint(addr, verify=context)
    assert endpoint is not None
    return RemoteTarget(endpoint=attrs.evolve(endpoint, verify_pem=pinned_pem), project=project)


def simplestreams_remote(name: object) -> tuple[str, str | None]:
    """(URL, pinned certificate PEM or None) of a simplestreams remote of the CLI."""
    found = _lookup(name)
    if found.protocol != "simplestreams":
        raise InvalidInputError(
            f"Remote {found.name!r} ({found.addr}) is not a simplestreams image server "
            f"(its protocol is {found.protocol!r})"
            + (f": use it as Client(remote={found.name!r})" if found.protocol == "incus" else "")
        )
    pinned = _existing(found.server_certificate)
    return found.addr, _read_pem(pinned, "the pinned server certificate") if pinned else None


def _pinned_context(pem: str) -> ssl.SSLContext:
    """Trust exactly this certificate. Incus names its certificate after its host name, not
    after the address it is reached at, so the name is not checked: the pinned certificate
    is the server's identity (the CLI checks the name the certificate itself carries)."""
    try:
        context = ssl.create_default_context(cadata=pem)
    except ssl.SSLError as exc:
        raise InvalidInputError(f"the pinned server certificate is not usable: {exc}") from None
    context.check_hostname = False
    return context


def _verified_context(cafile: str | None) -> ssl.SSLContext:
    """Verify the server and its name against a CA file, else the system's CA bundle (the
    one ``verify=True`` uses)."""
    if cafile is None:
        import certifi

        cafile = certifi.where()
    try:
        return ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise InvalidInputError(f"cannot use the CA certificate {cafile}: {exc}") from None


def _insecure_context() -> ssl.SSLContext:
    """Only to read the certificate a server shows; nothing is sent over it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _load_client_certificate(context: ssl.SSLContext, pair: tuple[str, str]) -> None:
    try:
        context.load_cert_chain(pair[0], pair[1])
    except (ssl.SSLError, OSError) as exc:
        raise InvalidInputError(
            f"cannot load the client certificate {pair[0]} (key {pair[1]}): {exc}"
        ) from None
