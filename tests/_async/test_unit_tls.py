"""The one rule by which a server is checked against certificates from a file (issue 14, item
2), with real TLS on loopback, in both flavours: through a remote's ``servercerts/`` file and
through ``verify=FILE`` alike.

The file's first certificate is pinned: a server showing exactly it is accepted whatever name
it carries. Any other certificate must chain to one of the file and carry the host's name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from incus_images import AsyncClient, IncusConnectionError
from tests.pki import Authority, Issued, TlsServer, self_signed

pytestmark = pytest.mark.anyio

#: What a client over HTTPS asks first, once: whether its server is a cluster's member.
CLUSTERED = "GET /1.0/cluster/members?recursion=1"

#: serve(shown, clients=None): an HTTPS server on loopback showing ``shown``.
Serve = Callable[..., TlsServer]


@pytest.fixture(scope="module")
def ca() -> Authority:
    return Authority("Test CA")


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's configuration directory for this test, and no system-wide one."""
    directory = tmp_path / "conf"
    directory.mkdir()
    monkeypatch.setenv("INCUS_CONF", str(directory))
    monkeypatch.setenv("INCUS_GLOBAL_CONF", str(tmp_path / "global"))
    monkeypatch.delenv("INCUS_REMOTE", raising=False)
    return directory


def verifying_with(conf: Path, how: str, url: str, pem: bytes) -> AsyncClient:
    """A client of url that verifies it against pem: as a remote whose servercerts/ file holds
    it (a public remote: no client certificate), or with verify= a file holding it."""
    trusted = conf / f"trusted-{len(list(conf.glob('trusted-*')))}.pem"
    trusted.write_bytes(pem)
    if how == "verify":
        return AsyncClient(url, verify=trusted)
    (conf / "config.yml").write_text(f"remotes:\n  r:\n    addr: {url}\n    public: true\n")
    (conf / "servercerts").mkdir(exist_ok=True)
    (conf / "servercerts" / "r.crt").unlink(missing_ok=True)
    # A symbolic link, as a bundle often is: the rule is the file's, wherever it lies.
    (conf / "servercerts" / "r.crt").symlink_to(trusted)
    return AsyncClient(remote="r")


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """Starts an HTTPS server on loopback showing a certificate; all stop after the test."""
    servers: list[TlsServer] = []

    def start(shown: Issued, clients: bytes | None = None) -> TlsServer:
        server = TlsServer(shown, tmp_path / f"server{len(servers)}", clients=clients)
        servers.append(server.__enter__())
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


HOW = pytest.mark.parametrize("how", ["remote", "verify"])


@HOW
async def test_a_ca_issued_certificate_for_another_name_is_refused(
    how: str, conf: Path, ca: Authority, serve: Serve, tmp_path: Path
) -> None:
    server = serve(ca.issue(dns=["other.example"], ips=["10.1.2.3"]))
    async with verifying_with(conf, how, server.url(), ca.certificate) as client:
        with pytest.raises(IncusConnectionError) as caught:
            await client.server_info()
    assert "mismatch, certificate is not valid for '127.0.0.1'" in str(caught.value)
    assert server.requests == []  # refused at the handshake: nothing was sent


@HOW
async def test_a_bundle_holding_the_ca_refuses_another_name_too(
    how: str, conf: Path, ca: Authority, serve: Serve
) -> None:
    # As a bundle of public CAs would be: the CA is one of several, and not the first.
    bundle = Authority("Another CA").certificate + self_signed().certificate + ca.certificate
    server = serve(ca.issue(dns=["other.example"]))
    async with verifying_with(conf, how, server.url(), bundle) as client:
        with pytest.raises(IncusConnectionError, match="mismatch, certificate is not valid for"):
            await client.server_info()
    assert server.requests == []
    right = serve(ca.issue(ips=["127.0.0.1"]))
    async with verifying_with(conf, how, right.url(), bundle) as client:
        assert not (await client.server_info()).trusted
    assert right.requests == [CLUSTERED, "GET /1.0"]


@HOW
async def test_the_pinned_certificate_is_accepted_whatever_its_name(
    how: str, conf: Path, ca: Authority, serve: Serve
) -> None:
    # As Incus makes its own: self-signed, named after its host, not its address.
    own = self_signed(dns=["node1"], subject="root@node1")
    server = serve(own)
    async with verifying_with(conf, how, server.url(), own.certificate) as client:
        assert not (await client.server_info()).trusted
    # A CA-issued certificate pinned by itself (the CLI pins whatever the server showed),
    # without its CA: it is its own anchor, and its name does not matter either.
    leaf = ca.issue(dns=["other.example"])
    pinned = serve(leaf)
    async with verifying_with(conf, how, pinned.url(), leaf.certificate) as client:
        assert not (await client.server_info()).trusted
    assert server.requests == pinned.requests == [CLUSTERED, "GET /1.0"]


@HOW
async def test_only_the_first_certificate_is_pinned(
    how: str, conf: Path, ca: Authority, serve: Serve
) -> None:
    own = self_signed(dns=["node1"])
    leaf = ca.issue(dns=["other.example"])
    server = serve(leaf)
    # The leaf is in the file, but second: it verifies, and its name must match.
    pem = own.certificate + leaf.certificate
    async with verifying_with(conf, how, server.url(), pem) as client:
        with pytest.raises(IncusConnectionError, match="mismatch, certificate is not valid for"):
            await client.server_info()
    assert server.requests == []


@HOW
@pytest.mark.parametrize(
    ("names", "host"),
    [({"ips": ["127.0.0.1"]}, "127.0.0.1"), ({"dns": ["localhost"]}, "localhost")],
)
async def test_a_ca_issued_certificate_with_the_right_name_is_accepted(
    how: str, names: dict[str, list[str]], host: str, conf: Path, ca: Authority, serve: Serve
) -> None:
    server = serve(ca.issue(**names))
    async with verifying_with(conf, how, server.url(host), ca.certificate) as client:
        assert not (await client.server_info()).trusted
    assert server.requests == [CLUSTERED, "GET /1.0"]


async def test_a_certificate_no_file_certificate_issued_is_refused(
    conf: Path, ca: Authority, serve: Serve
) -> None:
    server = serve(Authority("Stranger CA").issue(ips=["127.0.0.1"]))
    async with verifying_with(conf, "remote", server.url(), ca.certificate) as client:
        with pytest.raises(IncusConnectionError, match="certificate verify failed"):
            await client.server_info()
    assert server.requests == []


async def test_a_remote_presents_its_client_certificate(
    conf: Path, ca: Authority, serve: Serve
) -> None:
    client_pair = self_signed(subject="user@host")
    client_pair.write(conf, "client")
    server = serve(ca.issue(ips=["127.0.0.1"]), clients=client_pair.certificate)
    (conf / "config.yml").write_text(f"remotes:\n  r:\n    addr: {server.url()}\n")
    (conf / "servercerts").mkdir()
    (conf / "servercerts" / "r.crt").write_bytes(ca.certificate)
    async with AsyncClient(remote="r") as client:
        await client.server_info()
    # On every connection (the first asks whether the server is a cluster's member).
    assert server.client_certificates
    assert set(server.client_certificates) == {client_pair.der}
