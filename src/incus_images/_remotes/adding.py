"""Adding a remote as ``incus remote add`` does: by trust token or by URL."""

from __future__ import annotations

import hashlib
import hmac
import os
import pwd
import secrets
import socket
import ssl
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs
import httpx

from .._endpoint import parse_endpoint
from .._errors import ForbiddenError, IncusConnectionError, IncusError, InvalidInputError
from .._logging import log_answer
from .._protocol import Call, Envelope, named_path, parse_envelope, transport_error, unexpected
from .._small_files import exists
from .._tls import (
    ClientCertificate,
    TrustedCertificates,
    client_context,
    read_client_certificate,
    trusted_certificates,
)
from .._validate import boolean, seconds, text
from .config import (
    _MAX_ANSWER_BYTES,
    CONFIG_FILE,
    Remote,
    _given_directory,
    load_remotes,
    remote_name,
)
from .files import (
    _config_text,
    _save,
    check_writable,
    configuration_lock,
    keep_client_certificate,
    kept_note,
)
from .tokens import TrustToken, decode_token, host_port

# --------------------------------------------------------------------------------------------
# Adding a remote.


@attrs.frozen
class _Certificate:
    """A client certificate the configuration does not hold yet (written on success)."""

    certificate: bytes
    key: bytes


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
        return read_client_certificate(*own), None
    certificate, key = directory / "client.crt", directory / "client.key"
    if exists(certificate) and exists(key):
        return read_client_certificate(certificate, key), None
    if exists(certificate) or exists(key):
        there, missing = (certificate, key) if exists(certificate) else (key, certificate)
        raise InvalidInputError(
            f"{there} is there but {missing} is not: a client certificate and its key go "
            f"together. Put {missing.name} back, or move {there.name} away so that a new pair "
            "is made; nothing was sent"
        )
    if not generate:
        return None, None
    new = _new_client_certificate()
    return ClientCertificate(new.certificate, new.key, "the new client certificate"), new


def _peer_certificate(host: str, port: int, context: ssl.SSLContext, timeout: float) -> bytes:
    """The DER certificate the server at host:port shows over a TLS handshake with context."""
    with (
        socket.create_connection((host, port), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise ssl.SSLError("the server showed no certificate")
    return der


def _pinned(server_pem: str) -> TrustedCertificates:
    return trusted_certificates(server_pem.encode("ascii"), "the server's certificate")


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


class _Server:
    """A few JSON calls to the server being added, bounded in size and time."""

    def __init__(self, url: str, context: ssl.SSLContext, timeout: float | None) -> None:
        self.url = url
        self._timeout = timeout
        # Straight to the server, as the certificate probe before it went (no proxy from the
        # environment).
        self._http = httpx.Client(base_url=url, verify=context, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def send(self, call: Call) -> Envelope:
        # httpx bounds each step by timeout; a server trickling its answer is bounded here.
        started = time.monotonic()
        deadline = None if self._timeout is None else started + 2 * self._timeout
        try:
            with self._http.stream(
                call.method, call.path, params=call.params, json=call.json
            ) as response:
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > _MAX_ANSWER_BYTES:
                        raise unexpected(call, self.url, "the answer is too large")
                    if deadline is not None and time.monotonic() > deadline:
                        raise httpx.ReadTimeout("the answer is too slow")
                answer = httpx.Response(
                    response.status_code, headers=response.headers, content=bytes(body)
                )
            log_answer(call, self.url, answer.status_code, len(body), started)
        except httpx.TransportError as exc:
            raise transport_error(call, self.url, exc) from None
        return parse_envelope(call, self.url, answer)

    def info(self) -> dict[str, Any]:
        call = Call(method="GET", path="/1.0", action="read the server's information")
        metadata = self.send(call).metadata
        if not isinstance(metadata, dict) or not isinstance(metadata.get("auth"), str):
            raise unexpected(call, self.url, "GET /1.0 holds no server information")
        return metadata

    def project(self, requested: str | None, info: Mapping[str, Any]) -> str:
        """The project the CLI would choose (cmd/incus/remote.go, findProject): the one
        asked for, once the server shows it; else the only project this client may use;
        else none (the default project)."""
        if requested is not None:
            self.send(
                Call(
                    method="GET",
                    path=named_path("/1.0/projects", requested),
                    action=f"find project {requested!r}",
                )
            )
            return requested
        extensions = info.get("api_extensions")
        if not isinstance(extensions, list) or "projects" not in extensions:
            return ""
        call = Call(method="GET", path="/1.0/projects", action="list the projects")
        names = _project_names(call, self.url, self.send(call).metadata)
        if len(names) == 1:
            return names[0]
        if not names or "default" in names:
            return ""
        raise InvalidInputError(
            f"{self.url} lets this client use several projects ({', '.join(names)}) and not "
            "the default one: name the one to use with project="
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


@attrs.frozen(kw_only=True)
class _Added:
    """What adding a remote writes: its config.yml entry and the certificates."""

    #: The entry, in the order of cliconfig.Remote's fields (yaml.v2 writes them so).
    entry: dict[str, Any]
    server_pem: str | None = None
    client: _Certificate | None = None


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
    server): the server is found at the first of the token's addresses that answers, and must
    show the certificate the token names (that certificate is then pinned); the client
    certificate (made as the CLI makes it when the configuration has none) is sent with the
    token, and the server trusts it from then on. An expired token is refused before anything
    is sent. Or a URL (``https://host[:port]``): a server that trusts the client certificate
    already, or with ``public=True`` a public image server. A server whose certificate the
    system does not trust is refused unless ``accept_certificate=True``, which pins the
    certificate it shows.

    ``project`` is the project the remote uses (checked on the server); None: as the CLI
    chooses (the only project this client may use, else the default one). ``config_dir``:
    the CLI's configuration directory (None: ``$INCUS_CONF``, else ``~/.config/incus``).
    ``timeout`` bounds waiting for the lock and each step with the server (None: no bound,
    but the lock is waited for at most 60 s, and a server's certificate at most 10 s).

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
    limit = seconds(timeout, "timeout")
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
            raise InvalidInputError(
                f"The trust token for {token.client_name!r} expired at "
                f"{token.expires_at.isoformat()}: ask the server for a new one "
                "(`incus config trust add NAME`); nothing was sent"
            )
    directory = _given_directory(config_dir)
    if directory is None:
        raise InvalidInputError(
            "There is no configuration directory to add the remote to: set $INCUS_CONF or "
            "$HOME, or pass config_dir="
        )
    with configuration_lock(directory, LOCK_WAIT_WITHOUT_TIMEOUT if limit is None else limit):
        client, new = _checked_locally(directory, checked, generate=token is not None)
        if token is not None:
            assert client is not None
            added = _add_from_token(token, directory, client, new, wanted, limit)
        else:
            assert url is not None
            added = _add_from_url(url, client, accept, is_public, wanted, limit)
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


def _connection_failed(url: str, exc: OSError) -> IncusConnectionError:
    return IncusConnectionError(f"Could not connect to {url}: {exc.strerror or exc}", server=url)


def _add_from_token(
    token: TrustToken,
    directory: Path,
    client: ClientCertificate,
    new: _Certificate | None,
    project: str | None,
    timeout: float | None,
) -> _Added:
    probe_timeout = 10.0 if timeout is None else timeout
    tried = []
    for address in token.addresses:
        url = f"https://{address}"
        try:
            der = _peer_certificate(*host_port(address), client_context(False), probe_timeout)
        except (OSError, ssl.SSLError) as exc:
            tried.append(
                f"{url} ({exc.strerror if isinstance(exc, OSError) and exc.strerror else exc})"
            )
            continue
        shown = _fingerprint(der)
        if not hmac.compare_digest(shown, token.fingerprint):
            raise IncusConnectionError(
                f"{url} shows a certificate whose fingerprint ({shown}) is not the one the "
                f"trust token names ({token.fingerprint}): it is not the server that made the "
                "token, so the token was not sent",
                server=url,
            )
        server_pem = ssl.DER_cert_to_PEM_cert(der)
        return _redeem(token, url, server_pem, directory, client, new, project, timeout)
    raise IncusConnectionError(
        "None of the trust token's addresses answers; tried: " + "; ".join(tried)
    )


def _redeem(
    token: TrustToken,
    url: str,
    server_pem: str,
    directory: Path,
    client: ClientCertificate,
    new: _Certificate | None,
    project: str | None,
    timeout: float | None,
) -> _Added:
    context = client_context(_pinned(server_pem), client)
    server = _Server(url, context, timeout)
    redeemed = False
    try:
        # A client certificate the server trusts already (added before) needs no token:
        # it is not sent, and stays usable.
        if server.info()["auth"] != "trusted":
            call = Call(
                method="POST",
                path="/1.0/certificates",
                action=f"join with the trust token for {token.client_name!r}",
                json={"trust_token": token.encoded},
            )
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
    timeout: float | None,
) -> _Added:
    host, port = _address(url)
    probe_timeout = 10.0 if timeout is None else timeout
    server_pem = None
    try:
        _peer_certificate(host, port, client_context(True), probe_timeout)
    except ssl.SSLCertVerificationError as exc:
        try:
            der = _peer_certificate(host, port, client_context(False), probe_timeout)
        except (OSError, ssl.SSLError) as again:
            raise _connection_failed(url, again) from None
        if not accept:
            raise IncusConnectionError(
                f"The certificate of {url} is not trusted by the system's CA bundle "
                f"({exc.verify_message}; its SHA-256 fingerprint is {_fingerprint(der)}): "
                "pass accept_certificate=True to pin it, or add the remote with a trust token",
                server=url,
            ) from None
        server_pem = ssl.DER_cert_to_PEM_cert(der)
    except OSError as exc:
        raise _connection_failed(url, exc) from None
    verify = _pinned(server_pem) if server_pem else True
    server = _Server(url, client_context(verify, None if public else client), timeout)
    try:
        info = server.info()
        if public or info.get("public") is True:
            # As the CLI writes a public remote: address and public only.
            return _Added(entry={"addr": url, "public": True}, server_pem=server_pem)
        methods = info.get("auth_methods")
        if isinstance(methods, list) and "tls" not in methods:
            raise InvalidInputError(f"{url} does not accept client certificates (tls)")
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
