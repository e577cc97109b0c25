"""The incus CLI's remotes and trust tokens, against a real incusd and the real incus CLI
(issue 8), in both flavours.

A throwaway daemon of this module's own serves HTTPS on loopback (token settings and trust
entries stay out of the other tests' daemon). Every CLI configuration is a temporary
directory: $INCUS_CONF, $HOME and $INCUS_GLOBAL_CONF point into tmp_path for the SDK and
for every incus command, so the machine's own configuration is never read or written.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
from tiny_image import unified_image

from incus_images import (
    AsyncClient,
    ConfigurationError,
    ForbiddenError,
    Image,
    IncusConnectionError,
    InvalidInputError,
    LeftBehind,
    NotFoundError,
    add_remote,
    load_remotes,
)
from incus_images._remotes import decode_token
from tests.conftest import Certificates, _daemon, _unavailable
from tests.helpers import assert_left, unique

pytestmark = [pytest.mark.anyio, pytest.mark.incusd]


@attrs.frozen
class Server:
    daemon: Any
    url: str
    #: SHA-256 of the certificate it serves (DER).
    fingerprint: str
    certificates: Certificates


@pytest.fixture(scope="module")
def server(certificates: Certificates) -> Iterator[Server]:
    if shutil.which("incus") is None:
        _unavailable("the incus CLI is not installed (scripts/install-incus.sh installs it)")
    daemon = _daemon()
    try:
        url = daemon.enable_https()
        daemon.trust(certificates.client_cert)
        der = ssl.PEM_cert_to_DER_cert(Path(daemon.server_certificate).read_text())
        yield Server(daemon, url, hashlib.sha256(der).hexdigest(), certificates)
    finally:
        daemon.stop()


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of the test's own: the SDK reads $INCUS_CONF=<home>/conf."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("INCUS_CONF", str(home / "conf"))
    monkeypatch.setenv("INCUS_GLOBAL_CONF", str(home / "global"))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("INCUS_REMOTE", raising=False)
    monkeypatch.delenv("INCUS_PROJECT", raising=False)
    return home / "conf"


def incus(
    *args: str, conf: Path, incus_dir: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the real incus CLI with this configuration directory (and only loopback servers)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("INCUS_")}
    env.update(
        INCUS_CONF=str(conf),
        INCUS_GLOBAL_CONF=str(conf.parent / "global"),
        HOME=str(conf.parent),
    )
    if incus_dir is not None:
        env["INCUS_DIR"] = incus_dir
    result = subprocess.run(
        ["incus", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"incus {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result


def new_token(server: Server, tmp_path: Path, name: str | None = None) -> str:
    """A trust token, made by the CLI on the daemon's socket (`incus config trust add`)."""
    scratch = tmp_path / "token-maker" / "conf"
    result = incus(
        "config",
        "trust",
        "add",
        name or unique("tok"),
        "--quiet",
        conf=scratch,
        incus_dir=str(server.daemon.directory),
    )
    return result.stdout.strip()


def files(directory: Path) -> dict[str, str]:
    """Every file below directory, with its mode (what a failed add must not change), but
    the lock add_remote leaves (config.yml.lock: it is never removed)."""
    if not directory.exists():
        return {}
    return {
        str(path.relative_to(directory)): oct(path.stat().st_mode & 0o777)
        for path in sorted(directory.rglob("*"))
        if path.name != "config.yml.lock"
    }


def trusted_fingerprints(server: Server) -> set[str]:
    """The fingerprints of the certificates the daemon trusts."""
    listed = server.daemon.request("GET", "/1.0/certificates?recursion=1")["metadata"]
    return {entry["fingerprint"] for entry in listed}


def trusted_configuration(conf: Path, certificates: Certificates) -> None:
    """A configuration holding a client certificate the daemon trusts already."""
    conf.mkdir(parents=True, exist_ok=True)
    shutil.copy(certificates.client_cert, conf / "client.crt")
    shutil.copy(certificates.client_key, conf / "client.key")
    (conf / "client.key").chmod(0o600)


def retokened(token: str, **changes: Any) -> str:
    fields = json.loads(base64.b64decode(token))
    fields.update(changes)
    return base64.b64encode(json.dumps(fields).encode()).decode()


def image_fingerprints(conf: Path, remote: str) -> list[str]:
    """What `incus image list REMOTE:` shows, as full fingerprints."""
    listed = incus("image", "list", f"{remote}:", "--format", "csv", "-c", "F", conf=conf)
    return sorted(line for line in listed.stdout.split() if line)


async def upload(server: Server, *, public: bool = False) -> str:
    async with AsyncClient(server.daemon.endpoint) as local:
        image = await local.images.create(
            unified_image(properties={"remote-test": unique()}), public=public, wait=True
        )
        assert isinstance(image, Image)
        return image.fingerprint


async def delete(server: Server, *fingerprints: str) -> None:
    async with AsyncClient(server.daemon.endpoint) as local:
        for fingerprint in fingerprints:
            await local.images.delete(fingerprint, wait=True)


# --------------------------------------------------------------------------------------------
# Remotes the CLI added, read by the SDK.


async def test_a_remote_the_cli_added_by_url_is_used(server: Server, isolated: Path) -> None:
    trusted_configuration(isolated, server.certificates)
    incus("remote", "add", "srv", server.url, "--accept-certificate", conf=isolated)
    fingerprint = await upload(server)
    try:
        async with AsyncClient(remote="srv") as client:
            assert client.server == server.url
            assert (await client.server_info()).trusted
            assert fingerprint in await client.images.list(recursion=0)
            assert (await client.images.get(fingerprint)).fingerprint == fingerprint
    finally:
        await delete(server, fingerprint)


async def test_a_remote_the_cli_added_with_a_token_is_used(
    server: Server, isolated: Path, tmp_path: Path
) -> None:
    # The CLI makes its own client certificate here.
    incus("remote", "add", "srv", new_token(server, tmp_path), conf=isolated)
    assert (isolated / "client.crt").exists()
    fingerprint = await upload(server)
    try:
        async with AsyncClient(remote="srv") as client:
            assert (await client.server_info()).trusted
            assert fingerprint in await client.images.list(recursion=0)
        async with AsyncClient(remote="srv", project="default") as client:
            assert client.project == "default"
            assert fingerprint in await client.images.list(recursion=0)
    finally:
        await delete(server, fingerprint)


# --------------------------------------------------------------------------------------------
# Remotes the SDK adds, used by the CLI.


async def test_a_token_is_redeemed_and_the_cli_uses_the_remote(
    server: Server, isolated: Path, tmp_path: Path
) -> None:
    remote = add_remote("prod", new_token(server, tmp_path))
    assert (remote.addr, remote.project) == (server.url, "default")
    assert files(isolated) == {
        "client.crt": "0o644",
        "client.key": "0o600",
        "config.yml": "0o644",
        "servercerts": "0o750",
        "servercerts/prod.crt": "0o644",
    }
    assert (isolated / "config.yml.lock").stat().st_size == 0
    pinned = ssl.PEM_cert_to_DER_cert((isolated / "servercerts" / "prod.crt").read_text())
    assert hashlib.sha256(pinned).hexdigest() == server.fingerprint
    fingerprint = await upload(server)
    try:
        assert image_fingerprints(isolated, "prod") == [fingerprint]
        listed = incus("remote", "list", "--format", "csv", conf=isolated).stdout
        assert f"prod,{server.url},incus,tls,NO,NO,NO" in listed
        assert "images,https://images.linuxcontainers.org,simplestreams" in listed
        async with AsyncClient(remote=remote) as client:
            assert (await client.server_info()).trusted
            assert fingerprint in await client.images.list(recursion=0)
    finally:
        await delete(server, fingerprint)


async def test_a_token_is_redeemed_with_the_existing_client_certificate(
    server: Server, isolated: Path, tmp_path: Path
) -> None:
    incus("remote", "generate-certificate", conf=isolated)
    certificate = (isolated / "client.crt").read_bytes()
    add_remote("prod", new_token(server, tmp_path))
    assert (isolated / "client.crt").read_bytes() == certificate
    assert image_fingerprints(isolated, "prod") == []


async def test_a_client_trusted_already_does_not_use_the_token_up(
    server: Server, isolated: Path, tmp_path: Path
) -> None:
    trusted_configuration(isolated, server.certificates)
    token = new_token(server, tmp_path)
    add_remote("prod", token)
    assert image_fingerprints(isolated, "prod") == []
    add_remote("prod", token, config_dir=tmp_path / "second")  # a new client: still good


async def test_the_first_address_that_answers_is_used(
    server: Server, isolated: Path, tmp_path: Path
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"  # closed again: refuses connections
    token = new_token(server, tmp_path)
    real = decode_token(token).addresses[0]
    add_remote("prod", retokened(token, addresses=[dead, real]))
    async with AsyncClient(remote="prod") as client:
        assert (await client.server_info()).trusted


async def test_a_url_needs_accept_certificate_for_a_self_signed_server(
    server: Server, isolated: Path
) -> None:
    trusted_configuration(isolated, server.certificates)
    before = files(isolated)
    with pytest.raises(IncusConnectionError) as caught:
        add_remote("srv", server.url)
    assert "not trusted by the system" in str(caught.value)
    assert server.fingerprint in str(caught.value)
    assert "accept_certificate=True" in str(caught.value)
    assert files(isolated) == before
    remote = add_remote("srv", server.url, accept_certificate=True)
    assert remote.auth_type == "tls"
    assert "    auth_type: tls\n" in (isolated / "config.yml").read_text()
    assert image_fingerprints(isolated, "srv") == []
    async with AsyncClient(remote="srv") as client:
        assert (await client.server_info()).trusted


async def test_a_url_of_a_server_that_does_not_trust_the_client_is_refused(
    server: Server, isolated: Path
) -> None:
    with pytest.raises(ForbiddenError, match="does not trust this client") as caught:
        add_remote("srv", server.url, accept_certificate=True)
    assert "trust token" in str(caught.value)
    assert files(isolated) == {}


async def test_a_public_remote_sees_public_images_only(server: Server, isolated: Path) -> None:
    remote = add_remote(
        "pub", server.url.removeprefix("https://"), accept_certificate=True, public=True
    )
    assert (remote.public, remote.project, remote.auth_type) == (True, None, None)
    assert files(isolated) == {
        "config.yml": "0o644",
        "servercerts": "0o750",
        "servercerts/pub.crt": "0o644",
    }
    public, private = await upload(server, public=True), await upload(server)
    try:
        async with AsyncClient(remote="pub") as client:
            assert not (await client.server_info()).trusted
            assert await client.images.list(recursion=0) == [public]
        assert image_fingerprints(isolated, "pub") == [public]
    finally:
        await delete(server, public, private)


# --------------------------------------------------------------------------------------------
# Tokens that must not work.


async def test_an_expired_token_is_refused_before_anything_is_sent(
    server: Server, isolated: Path, tmp_path: Path
) -> None:
    server.daemon.request("PATCH", "/1.0", {"config": {"core.remote_token_expiry": "1S"}})
    try:
        token = new_token(server, tmp_path)
    finally:
        server.daemon.request("PATCH", "/1.0", {"config": {"core.remote_token_expiry": ""}})
    expires_at = decode_token(token).expires_at
    assert expires_at is not None
    time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.2)
    with pytest.raises(InvalidInputError, match="expired") as caught:
        add_remote("prod", token)
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was sent")
    assert files(isolated) == {}


async def test_a_reused_token_is_refused(server: Server, isolated: Path, tmp_path: Path) -> None:
    token = new_token(server, tmp_path)
    add_remote("prod", token, config_dir=tmp_path / "first")
    with pytest.raises(ForbiddenError) as caught:
        add_remote("prod", token)
    message = str(caught.value)
    assert "refused the trust token" in message
    assert "No matching certificate add operation found" in message
    assert "works once" in message
    assert files(isolated) == {}


async def test_a_tampered_token_is_refused_and_writes_nothing(
    server: Server, isolated: Path, tmp_path: Path
) -> None:
    token = new_token(server, tmp_path)
    secret = decode_token(token).secret
    with pytest.raises(ForbiddenError, match="refused the trust token"):
        add_remote("prod", retokened(token, secret=secret[::-1]))
    with pytest.raises(InvalidInputError, match="not a usable trust token"):
        add_remote("prod", token[:10] + "!" + token[11:])
    with pytest.raises(InvalidInputError, match="not a usable trust token"):
        add_remote("prod", retokened(token, addresses=[f"https://{server.url}"]))
    assert files(isolated) == {}
    # None of these used the token up.
    add_remote("prod", token)
    assert image_fingerprints(isolated, "prod") == []


@contextlib.contextmanager
def impostor(certificates: Certificates) -> Iterator[tuple[str, list[bytes]]]:
    """A TLS server on loopback with another certificate; yields its address and what each
    connection sent after the handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates.other_cert, certificates.other_key)
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                try:
                    with context.wrap_socket(connection, server_side=True) as tls:
                        tls.settimeout(5)
                        received.append(tls.recv(65536))
                except (OSError, ssl.SSLError):
                    received.append(b"")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}", received
    finally:
        listener.close()
        thread.join(10)


async def test_a_server_with_another_certificate_never_sees_the_token(
    server: Server, isolated: Path, tmp_path: Path
) -> None:
    token = new_token(server, tmp_path)
    with impostor(server.certificates) as (address, received):
        with pytest.raises(IncusConnectionError) as caught:
            add_remote("prod", retokened(token, addresses=[address]))
        message = str(caught.value)
        assert "not the one the trust token names" in message
        assert server.fingerprint in message
    assert received
    assert all(data == b"" for data in received)
    # A wrong fingerprint in the token: the real server is refused just the same.
    other = hashlib.sha256(
        ssl.PEM_cert_to_DER_cert(Path(server.certificates.other_cert).read_text())
    ).hexdigest()
    with pytest.raises(IncusConnectionError, match="not the one the trust token names"):
        add_remote("prod", retokened(token, fingerprint=other))
    assert files(isolated) == {}
    add_remote("prod", token)  # never sent: still good


# --------------------------------------------------------------------------------------------
# Nothing spends a token that the configuration could not take (issue 14, items 5 and 6).


async def test_half_a_client_key_pair_spends_no_token(
    server: Server, isolated: Path, tmp_path: Path
) -> None:
    token = new_token(server, tmp_path)
    before = trusted_fingerprints(server)
    isolated.mkdir(parents=True)
    halves = {
        "client.crt": server.certificates.client_cert,
        "client.key": server.certificates.client_key,
    }
    for there, source in halves.items():
        shutil.copy(source, isolated / there)
        # The configuration's state, not an argument: a ConfigurationError (issue 15).
        with pytest.raises(ConfigurationError, match="go together") as caught:
            add_remote("prod", token)
        assert str(isolated / there) in str(caught.value)
        assert_left(caught.value, LeftBehind.NOTHING, "nothing was sent")
        (isolated / there).unlink()
    assert trusted_fingerprints(server) == before
    assert files(isolated) == {}
    add_remote("prod", token)  # never sent: still good
    assert image_fingerprints(isolated, "prod") == []


async def test_a_configuration_that_cannot_take_the_remote_spends_no_token(
    server: Server, isolated: Path, tmp_path: Path
) -> None:
    token = new_token(server, tmp_path)
    before = trusted_fingerprints(server)
    isolated.mkdir(parents=True)
    (isolated / "servercerts").write_text("a file where the directory should be")
    with pytest.raises(ConfigurationError, match="servercerts is not a directory") as caught:
        add_remote("prod", token)
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was sent")
    assert trusted_fingerprints(server) == before
    (isolated / "servercerts").unlink()
    add_remote("prod", token)


async def test_a_failure_after_the_token_keeps_the_client_certificate_it_made_trusted(
    server: Server, isolated: Path, tmp_path: Path
) -> None:
    with pytest.raises(NotFoundError) as caught:
        add_remote("prod", new_token(server, tmp_path), project="no-such-project")
    assert "its new certificate was kept" in "".join(caught.value.__notes__)
    assert files(isolated) == {"client.crt": "0o644", "client.key": "0o600"}
    der = ssl.PEM_cert_to_DER_cert((isolated / "client.crt").read_text())
    assert hashlib.sha256(der).hexdigest() in trusted_fingerprints(server)
    # As the note says: by its URL now, with the certificate the server trusts.
    add_remote("prod", server.url, accept_certificate=True)
    assert image_fingerprints(isolated, "prod") == []


#: A child process: waits for a line on stdin (so that all start together), adds its remote
#: with its token, and prints what became of it.
CHILD = """
import json, sys
from incus_images import IncusError, add_remote
name, token, conf = json.loads(sys.argv[1])
sys.stdin.readline()
try:
    add_remote(name, token, config_dir=conf, timeout=60)
    print("added")
except IncusError as exc:
    print(f"{type(exc).__name__}: {exc}")
"""


async def test_processes_adding_with_tokens_at_once_all_succeed_and_all_remain(
    server: Server, isolated: Path, tmp_path: Path
) -> None:
    before = trusted_fingerprints(server)
    names = [f"p{index}" for index in range(4)]
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                json.dumps([name, new_token(server, tmp_path), str(isolated)]),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    outcomes = [child.communicate(timeout=100)[0].strip() for child in children]
    assert outcomes == ["added"] * len(names)
    assert set(load_remotes(isolated).remotes) == {*names, "images", "local"}
    assert sorted(path.name for path in (isolated / "servercerts").iterdir()) == [
        f"{name}.crt" for name in names
    ]
    # One client certificate, made by the first and used by the others, which found the
    # server trusting it already: one trust entry, and no token spent for nothing.
    der = ssl.PEM_cert_to_DER_cert((isolated / "client.crt").read_text())
    assert trusted_fingerprints(server) - before == {hashlib.sha256(der).hexdigest()}
    for name in names:
        assert image_fingerprints(isolated, name) == []
