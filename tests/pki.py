"""Certificates made in-process for the TLS tests, and an HTTPS server on loopback that shows
one of them (flavour-neutral: not generated).

    ca = Authority("Test CA")
    leaf = ca.issue(dns=["other.example"])                  # a CA-issued server certificate
    own = self_signed(dns=["node1"])                          # as Incus makes its own
    with TlsServer(leaf, tmp_path) as server:                 # https://127.0.0.1:<port>
        ...
        server.requests       # ["GET /1.0", ...]: what reached it after a handshake
        server.client_certificates   # DER of each client certificate shown to it
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.hostile_server import sync_answer

#: What the loopback server answers to GET /1.0: an untrusted client's view of an Incus server.
SERVER_INFO = {
    "auth": "untrusted",
    "api_version": "1.0",
    "api_status": "stable",
    "api_extensions": [],
    "auth_methods": ["tls"],
}


@attrs.frozen
class Issued:
    """A certificate and its key, as PEM; the chain is the certificate and its issuers."""

    certificate: bytes
    key: bytes
    chain: bytes

    @property
    def der(self) -> bytes:
        return ssl.PEM_cert_to_DER_cert(self.certificate.decode())

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """certificate and key as ``name.crt`` and ``name.key`` in directory."""
        directory.mkdir(parents=True, exist_ok=True)
        certificate, key = directory / f"{name}.crt", directory / f"{name}.key"
        certificate.write_bytes(self.certificate)
        key.write_bytes(self.key)
        key.chmod(0o600)
        return certificate, key


def _names(dns: Sequence[str], ips: Sequence[str]) -> x509.SubjectAlternativeName:
    return x509.SubjectAlternativeName(
        [x509.DNSName(name) for name in dns]
        + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    )


def _build(
    subject: str,
    issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey | None,
    *,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    ca: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    if dns or ips:
        builder = builder.add_extension(_names(dns, ips), critical=False)
    if signer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
    certificate = builder.sign(signer or key, hashes.SHA256())
    return certificate, key


def _pem(certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    return certificate.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Authority:
    """A certificate authority that issues server certificates."""

    def __init__(self, name: str = "Test CA") -> None:
        self._certificate, self._key = _build(name, None, None, ca=True)
        self.certificate, self.key = _pem(self._certificate, self._key)

    def issue(
        self, *, dns: Sequence[str] = (), ips: Sequence[str] = (), subject: str = "server"
    ) -> Issued:
        certificate, key = _build(subject, self._certificate.subject, self._key, dns=dns, ips=ips)
        pem, key_pem = _pem(certificate, key)
        return Issued(certificate=pem, key=key_pem, chain=pem + self.certificate)


def self_signed(
    *, dns: Sequence[str] = (), ips: Sequence[str] = (), subject: str = "root@node1"
) -> Issued:
    """A self-signed certificate that is no CA, as Incus makes a server's own."""
    certificate, key = _build(subject, None, None, dns=dns, ips=ips)
    pem, key_pem = _pem(certificate, key)
    return Issued(certificate=pem, key=key_pem, chain=pem)


class TlsServer:
    """An HTTPS server on 127.0.0.1 showing one certificate chain; it answers every request
    with ``info`` (SERVER_INFO unless changed) and closes the connection. With ``clients``
    (PEM), it asks for a client certificate issued by one of those and records what each
    client showed."""

    def __init__(self, shown: Issued, directory: Path, *, clients: bytes | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        certificate, key = directory / "served.crt", directory / "served.key"
        certificate.write_bytes(shown.chain)
        key.write_bytes(shown.key)
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certificate, key)
        if clients is not None:
            self._context.load_verify_locations(cadata=clients.decode())
            self._context.verify_mode = ssl.CERT_OPTIONAL
        self._host = "127.0.0.1"
        self.info = dict(SERVER_INFO)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.requests: list[str] = []
        self.client_certificates: list[bytes | None] = []

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.getsockname()[1])

    def url(self, host: str = "127.0.0.1") -> str:
        """Its URL, naming it by ``host`` (an address or a name of 127.0.0.1)."""
        return f"https://{host}:{self.port}"

    def __enter__(self) -> TlsServer:
        self._listener = socket.create_server((self._host, 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._listener is not None and self._thread is not None
        # Shutting the listener down wakes the accept (Linux), and it returns an error.
        self._listener.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self._listener.close()

    def _serve(self) -> None:
        assert self._listener is not None
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(10)
                self._answer(connection)

    def _answer(self, connection: socket.socket) -> None:
        try:
            with self._context.wrap_socket(connection, server_side=True) as tls:
                self.client_certificates.append(tls.getpeercert(binary_form=True))
                received = b""
                while b"\r\n\r\n" not in received:
                    chunk = tls.recv(65536)
                    if not chunk:
                        return
                    received += chunk
                method, target, _ = received.split(b"\r\n", 1)[0].decode().split(" ", 2)
                self.requests.append(f"{method} {target}")
                tls.sendall(_closing(self.info))
        except (OSError, ssl.SSLError, ValueError):
            return


def _closing(metadata: object) -> bytes:
    head, body = sync_answer(metadata).split(b"\r\n\r\n", 1)
    return head + b"\r\nConnection: close\r\n\r\n" + body
