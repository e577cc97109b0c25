"""Adding a remote as ``incus remote add`` does: by trust token or by URL.

The arguments (the name, the token or URL) are refused with InvalidInputError, the
configuration they go into (its files, its directory) with ConfigurationError, a server that
will not trust this client with ForbiddenError; what can be checked locally is checked before
anything is sent.
"""

from __future__ import annotations

import os
import pwd
import secrets
import socket
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import _api as api
from .._endpoint import parse_endpoint
from .._errors import (
    ConfigurationError,
    ForbiddenError,
    IncusConnectionError,
    IncusError,
    InvalidInputError,
    LeftBehind,
    UnexpectedResponseError,
    note_left_behind,
)
from .._small_files import configuration_file, exists
from .._tls import (
    ClientCertificate,
    TrustedCertificates,
    client_context,
    read_client_certificate,
    trusted_certificates,
)
from .._validate import boolean, seconds, text
from .config import CONFIG_FILE, Remote, _given_directory, load_remotes, remote_name
from .reaching import (
    Deadline,
    Server,
    connection_failed,
    find_token_server,
    fingerprint,
    peer_certificate,
)
from .tokens import TrustToken, decode_token
from .writing import (
    _Added,
    _Certificate,
    _config_text,
    _save,
    check_writable,
    configuration_lock,
    keep_client_certificate,
    kept_note,
)

# --------------------------------------------------------------------------------------------
# Adding a remote.


def _new_client_certificate() -> _Certificate:
    """A client certificate as the CLI makes one (lxc/incus shared/tls/cert.go,
    GenerateMemCert(client=true)): EC P-384, self-signed with ECDSA-SHA384 for ten years,
    ``O=Linux Containers, CN=user@host``, client authentication only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    try:
        user = pwd.getpwuid(os.getuid()).pw_name or "UNKNOWN"
    except KeyError:
        user = "UNKNOWN"
    # cryptography refuses a common name over 64 characters (Go does not check).
    common_name = f"{user}@{socket.gethostname() or 'UNKNOWN'}"[:64]
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Linux Containers"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.now(UTC).replace(microsecond=0)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(secrets.randbelow(2**128 - 1) + 1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=10 * 365))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )
    return _Certificate(
        certificate=certificate.public_bytes(serialization.Encoding.PEM),
        key=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    )


#: Without a timeout (timeout=None), how long add_remote waits while another holds the
#: configuration's lock: one that holds it longer is stuck, not busy.
LOCK_WAIT_WITHOUT_TIMEOUT = 60.0


def _client_certificate(
    directory: Path, name: str, *, generate: bool
) -> tuple[ClientCertificate | None, _Certificate | None]:
    """The client certificate to present: the remote's own (clientcerts/, when both files
    are there, as the CLI takes it), else client.crt and client.key; when there is none and
    ``generate``, a new one (the configuration gets it only once the server trusts it).
    Half a pair is refused: the CLI could not use it, and making a new one would need the
    place the half holds."""
    own = directory / "clientcerts" / f"{name}.crt", directory / "clientcerts" / f"{name}.key"
    if exists(own[0]) and exists(own[1]):
        return read_client_certificate(*own, refuse=configuration_file), None
    certificate, key = directory / "client.crt", directory / "client.key"
    if exists(certificate) and exists(key):
        return read_client_certificate(certificate, key, refuse=configuration_file), None
    if exists(certificate) or exists(key):
        there, missing = (certificate, key) if exists(certificate) else (key, certificate)
        half = ConfigurationError(
            f"{there} is there but {missing} is not: a client certificate and its key go "
            f"together. Put {missing.name} back, or move {there.name} away so that a new pair "
            "is made",
            path=str(missing),
        )
        raise note_left_behind(half, LeftBehind.NOTHING, "nothing was sent")
    if not generate:
        return None, None
    new = _new_client_certificate()
    return ClientCertificate(new.certificate, new.key, "the new client certificate"), new


def _pinned(server_pem: str) -> TrustedCertificates:
    return trusted_certificates(
        server_pem.encode("ascii"), "the server's certificate", refuse=_sent_by_the_server
    )


def _sent_by_the_server(message: str, path: str | None) -> IncusError:
    """The refusal of a certificate the server showed: its answer, not the caller's input."""
    return UnexpectedResponseError(message)


def add_remote(
    name: str,
    token_or_url: str,
    *,
    accept_certificate: bool = False,
    project: str | None = None,
    public: bool = False,
    timeout: float | None = 30.0,
    config_dir: str | os.PathLike[str] | None = None,
) -> Remote:
    """Add a remote to the incus CLI's configuration, as ``incus remote add`` does; return it.

    ``token_or_url`` is a trust token (``incus config trust add NAME`` prints it on the
    server): the token's addresses are tried together and the server is the first to show
    the certificate the token names (that certificate is then pinned); the client
    certificate (made as the CLI makes it when the configuration has none) is sent with the
    token, and the server trusts it from then on. An expired token is refused before anything
    is sent. Or a URL (``https://host[:port]``): a server that trusts the client certificate
    already, or with ``public=True`` a public image server. A server whose certificate the
    system does not trust is refused unless ``accept_certificate=True``, which pins the
    certificate it shows.

    ``project`` is the project the remote uses (checked on the server); None: as the CLI
    chooses (the only project this client may use, else the default one). ``config_dir``:
    the CLI's configuration directory (None: ``$INCUS_CONF``, else ``~/.config/incus``).
    ``timeout`` bounds the whole call, waiting for the lock included (None: no bound, but
    the lock is waited for at most 60 s, and a server's certificate at most 10 s).

    Calls in several processes may add remotes to one configuration at once: each holds an
    advisory lock (``config.yml.lock`` beside config.yml, which stays) while it reads, adds
    and writes. Everything that can be checked locally (the configuration, the client
    certificate, that the files can be written) is checked before anything is sent.
    config.yml, ``servercerts/<name>.crt`` and a new ``client.crt``/``client.key`` (mode
    0600) are written atomically, and only once the remote is added: a failure writes
    nothing, except a new client certificate that a redeemed token made the server trust
    (kept, so that the server's trust is not lost). A remote of that name that exists
    already is refused, as the CLI does.
    """
    checked = remote_name(name, "remote")
    value = text(token_or_url, "token_or_url", empty=False).strip()
    accept = boolean(accept_certificate, "accept_certificate")
    is_public = boolean(public, "public")
    wanted = None if project is None else text(project, "project", empty=False)
    deadline = Deadline(seconds(timeout, "timeout"))
    token = url = None
    if "://" in value or "." in value or ":" in value:
        if is_public and wanted is not None:
            raise InvalidInputError("a public remote has no project: leave project= out")
        url = _https_url(value)
    else:
        if is_public:
            raise InvalidInputError(
                "public=True adds a public image server by its URL, not with a trust token"
            )
        token = decode_token(value)
        if token.expired():
            assert token.expires_at is not None
            expired = InvalidInputError(
                f"The trust token for {token.client_name!r} expired at "
                f"{token.expires_at.isoformat()}: ask the server for a new one "
                "(`incus config trust add NAME`)"
            )
            raise note_left_behind(expired, LeftBehind.NOTHING, "nothing was sent")
    directory = _given_directory(config_dir)
    if directory is None:
        raise ConfigurationError(
            "There is no configuration directory to add the remote to: set $INCUS_CONF or "
            "$HOME, or pass config_dir="
        )
    wait = deadline.left()
    with configuration_lock(directory, LOCK_WAIT_WITHOUT_TIMEOUT if wait is None else wait):
        client, new = _checked_locally(directory, checked, generate=token is not None)
        if token is not None:
            added = _add_from_token(token, directory, client, new, wanted, deadline)
        else:
            assert url is not None
            added = _add_from_url(url, client, accept, is_public, wanted, deadline)
        _save(directory, directory / CONFIG_FILE, checked, added)
        return load_remotes(directory).remote(checked)


def _checked_locally(
    directory: Path, name: str, *, generate: bool
) -> tuple[ClientCertificate | None, _Certificate | None]:
    """Check, under the lock and before anything is sent, that the remote can be added here
    (the configuration reads, has no remote of that name, and can take it; the files can be
    written; the client certificate loads); return the client certificate to present."""
    config = load_remotes(directory)
    if name in config.remotes:
        raise InvalidInputError(
            f"Remote {name!r} exists already as <{config.remotes[name].addr}> in "
            f"{config.path}; remove it first (`incus remote remove {name}`)"
        )
    _config_text(directory / CONFIG_FILE, name, {"addr": "https://check:8443"})
    check_writable(directory)
    client, new = _client_certificate(directory, name, generate=generate)
    if client is not None:
        client_context(False, client)  # a certificate that does not load is refused now
    return client, new


def _https_url(value: str) -> str:
    """``https://host:port`` of a URL (or of a bare ``host[:port]``, as the CLI takes it)."""
    url = value if "://" in value else f"https://{value}"
    scheme = urlsplit(url).scheme.lower()
    if scheme != "https":
        raise InvalidInputError(
            f"{value!r:.100}: add a remote by its https:// URL (the local daemon is the "
            "built-in remote 'local'), or by a trust token"
        )
    endpoint = parse_endpoint(url, verify=False)
    assert endpoint is not None
    return endpoint.base_url


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def _add_from_token(
    token: TrustToken,
    directory: Path,
    client: ClientCertificate | None,
    new: _Certificate | None,
    project: str | None,
    deadline: Deadline,
) -> _Added:
    url, der = find_token_server(token, deadline)
    server_pem = ssl.DER_cert_to_PEM_cert(der)
    assert client is not None
    server = Server(url, client_context(_pinned(server_pem), client), deadline)
    redeemed = False
    try:
        # A client certificate the server trusts already (added before) needs no token:
        # it is not sent, and stays usable.
        if server.info()["auth"] != "trusted":
            call = api.join_with_token(token.client_name, token.encoded)
            try:
                server.send(call)
            except ForbiddenError as exc:
                raise exc._amended(
                    f"{url} refused the trust token for {token.client_name!r}: "
                    f"{exc.server_message} (a token works once, until it expires or is "
                    "revoked: ask the server for a new one)"
                ) from None
            redeemed = True
        info = server.info()
        if info["auth"] != "trusted":
            raise ForbiddenError(
                f"{url} accepted the trust token but does not trust this client",
                server=url,
            )
        chosen = server.project(project, info)
    except IncusError as exc:
        if redeemed:
            _kept_after_redeeming(exc, directory, new)
        raise
    finally:
        server.close()
    entry: dict[str, Any] = {"addr": url}
    if chosen:
        entry["project"] = chosen
    entry.update(protocol="incus", public=False)
    return _Added(entry=entry, server_pem=server_pem, client=new)


def _kept_after_redeeming(exc: IncusError, directory: Path, new: _Certificate | None) -> None:
    """After the server took the token, it trusts the client certificate: a new one is kept
    (the remote can then be added by its URL), and the error says so."""
    if new is not None:
        try:
            keep_client_certificate(directory, new)
        except (OSError, IncusError) as failed:
            exc.add_note(
                f"The server trusts a new client certificate that could not be kept: {failed}"
            )
            return
        exc.add_note(kept_note(directory))
    else:
        exc.add_note(
            "The server trusts this client now: add the remote again with its URL instead "
            "of the token"
        )


def _add_from_url(
    url: str,
    client: ClientCertificate | None,
    accept: bool,
    public: bool,
    project: str | None,
    deadline: Deadline,
) -> _Added:
    host, port = _address(url)
    server_pem = None
    try:
        peer_certificate(host, port, client_context(True), deadline)
    except ssl.SSLCertVerificationError as exc:
        try:
            der = peer_certificate(host, port, client_context(False), deadline)
        except (OSError, IncusError) as again:
            raise connection_failed(url, again) from None
        if not accept:
            raise IncusConnectionError(
                f"The certificate of {url} is not trusted by the system's CA bundle "
                f"({exc.verify_message}; its SHA-256 fingerprint is {fingerprint(der)}): "
                "pass accept_certificate=True to pin it, or add the remote with a trust token",
                server=url,
            ) from None
        server_pem = ssl.DER_cert_to_PEM_cert(der)
    except OSError as exc:
        raise connection_failed(url, exc) from None
    verify = _pinned(server_pem) if server_pem else True
    server = Server(url, client_context(verify, None if public else client), deadline)
    try:
        info = server.info()
        if public or info.get("public") is True:
            # As the CLI writes a public remote: address and public only.
            return _Added(entry={"addr": url, "public": True}, server_pem=server_pem)
        methods = info.get("auth_methods")
        if isinstance(methods, list) and "tls" not in methods:
            # Not the caller's argument: the server will trust no client certificate.
            raise ForbiddenError(
                f"{url} does not accept client certificates (tls), so it cannot trust this client",
                server=url,
            )
        if info["auth"] != "trusted":
            which = client.where if client else "no client certificate"
            raise ForbiddenError(
                f"{url} does not trust this client ({which}): add the remote with a trust "
                "token (`incus config trust add NAME` on the server prints one), or with "
                "public=True if it is a public image server",
                server=url,
            )
        chosen = server.project(project, info)
    finally:
        server.close()
    entry: dict[str, Any] = {"addr": url, "auth_type": "tls"}
    if chosen:
        entry["project"] = chosen
    entry.update(protocol="incus", public=False)
    return _Added(entry=entry, server_pem=server_pem)
