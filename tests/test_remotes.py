"""Unit tests of the incus CLI's remotes (incus_images._remotes): reading the configuration,
decoding trust tokens, and writing files as the CLI does. No network: a test that could
reach a server fails if it tries.

Every test works in tmp_path: $INCUS_CONF and $INCUS_GLOBAL_CONF point there, so the
machine's own ~/.config/incus and /etc/incus are never read or written.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import incus_images._remotes.writing as files_module
from incus_images import (
    AsyncClient,
    AsyncSimpleStreams,
    Client,
    ConfigurationError,
    InvalidInputError,
    LeftBehind,
    Remote,
    SimpleStreams,
    add_remote,
    load_remotes,
)
from incus_images._remotes.adding import _Added, _Certificate, _new_client_certificate
from incus_images._remotes.config import _DEFAULT_CONFIG_YAML, config_directory, remote_name
from incus_images._remotes.connect import remote_endpoint
from incus_images._remotes.tokens import decode_token, host_port
from incus_images._remotes.writing import _config_text, _save, write_atomically
from tests.helpers import assert_left

FINGERPRINT = "21d3f7cbe0c68493e9c5a7c39cddc330b06eb7b214385ad5d60f86a132d3cabb"
SECRET = "f3eaacd7d52974af94acaec117c56a22303f7b17e63749ebce26aa283ff70bb6"

#: config.yml as `incus remote add` leaves it (incus 6.0.4), with a remote added by a token.
CLI_CONFIG = """\
default-remote: local
remotes:
  images:
    addr: https://images.linuxcontainers.org
    protocol: simplestreams
    public: true
  local:
    addr: unix://
    protocol: incus
    public: false
  prod:
    addr: https://127.0.0.1:41535
    project: default
    protocol: incus
    public: false
aliases: {}
"""


@pytest.fixture(autouse=True)
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's configuration directory for this test (empty), and no system-wide one."""
    directory = tmp_path / "conf"
    monkeypatch.setenv("INCUS_CONF", str(directory))
    monkeypatch.setenv("INCUS_GLOBAL_CONF", str(tmp_path / "global"))
    monkeypatch.delenv("INCUS_REMOTE", raising=False)
    return directory


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Connecting fails, and fails the test: add_remote probes in threads of its own, which
    report what they meet as the call's error, so the attempts are checked at the end too."""
    attempts: list[object] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        attempts.append(args)
        raise AssertionError(f"a unit test tried to connect: {args!r}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    yield attempts
    assert not attempts, f"a unit test tried to connect: {attempts}"


@pytest.fixture(scope="module")
def pair() -> _Certificate:
    return _new_client_certificate()


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def with_client_certificate(directory: Path, pair: _Certificate) -> None:
    write(directory / "client.crt", pair.certificate.decode())
    write(directory / "client.key", pair.key.decode(), 0o600)


def token(**overrides: Any) -> str:
    fields: dict[str, Any] = {
        "client_name": "tok",
        "fingerprint": FINGERPRINT,
        "addresses": ["127.0.0.1:41535"],
        "secret": SECRET,
        "expires_at": "0001-01-01T00:00:00Z",
    }
    fields.update(overrides)
    fields = {key: value for key, value in fields.items() if value is not ...}
    return base64.b64encode(json.dumps(fields).encode()).decode()


def tree(directory: Path) -> dict[str, str]:
    """Every file below directory, with its mode."""
    if not directory.exists():
        return {}
    return {
        str(path.relative_to(directory)): oct(path.stat().st_mode & 0o777)
        for path in sorted(directory.rglob("*"))
    }


# --------------------------------------------------------------------------------------------
# Reading the configuration.


def test_without_a_config_file_the_builtin_remotes_are_known(conf: Path) -> None:
    config = load_remotes()
    assert config.directory == conf
    assert config.default_remote == "local"
    assert sorted(config.remotes) == ["images", "local"]
    images = config.remotes["images"]
    assert (images.addr, images.protocol, images.public) == (
        "https://images.linuxcontainers.org",
        "simplestreams",
        True,
    )
    local = config.remotes["local"]
    assert (local.addr, local.protocol, local.public) == ("unix://", "incus", False)
    assert local.server_certificate == conf / "servercerts" / "local.crt"


def test_the_local_remote_is_the_local_socket_discovery() -> None:
    target = remote_endpoint("local")
    assert target.endpoint is None
    assert target.project is None


def test_a_cli_written_config_is_read(conf: Path) -> None:
    write(conf / "config.yml", CLI_CONFIG)
    config = load_remotes()
    assert config.path == conf / "config.yml"
    prod = config.remote("prod")
    assert prod == Remote(
        name="prod",
        addr="https://127.0.0.1:41535",
        protocol="incus",
        public=False,
        project="default",
        auth_type="tls",  # the CLI's default for a private remote
        server_certificate=conf / "servercerts" / "prod.crt",
        client_certificate=conf / "client.crt",
        client_key=conf / "client.key",
        client_ca=conf / "client.ca",
    )
    assert config.remote("images").auth_type is None


def test_default_remote_comes_from_the_file_then_the_environment(
    conf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(conf / "config.yml", CLI_CONFIG.replace("default-remote: local", "default-remote: prod"))
    assert load_remotes().default_remote == "prod"
    monkeypatch.setenv("INCUS_REMOTE", "images")
    assert load_remotes().default_remote == "images"
    write(conf / "config.yml", "remotes: {}\n")
    monkeypatch.delenv("INCUS_REMOTE")
    assert load_remotes().default_remote == "local"


def test_local_is_static_and_images_only_a_default(conf: Path) -> None:
    # A file without images: the CLI no longer knows it. local is always there, with only its
    # project taken from the file.
    write(
        conf / "config.yml",
        "remotes:\n  local:\n    addr: https://evil.example\n    project: p1\n",
    )
    config = load_remotes()
    assert sorted(config.remotes) == ["local"]
    assert config.remotes["local"].addr == "unix://"
    assert remote_endpoint("local").project == "p1"


def test_scalars_are_read_as_yaml_v2_reads_them(conf: Path) -> None:
    write(
        conf / "config.yml",
        "remotes:\n"
        "  a: {addr: 'https://a.example:8443', project: 0123, public: y}\n"
        "  b: {addr: https://b.example:8443, project: ~, public: off, protocol: ''}\n"
        "  c: {addr: https://c.example:8443, unknown: [1, 2], keepalive: 30}\n",
    )
    remotes = load_remotes().remotes
    assert (remotes["a"].project, remotes["a"].public) == ("0123", True)
    assert (remotes["b"].project, remotes["b"].public, remotes["b"].protocol) == (
        None,
        False,
        "incus",
    )
    assert remotes["c"].addr == "https://c.example:8443"


def test_system_wide_remotes_are_added_unless_the_user_names_them(
    conf: Path, tmp_path: Path
) -> None:
    write(conf / "config.yml", CLI_CONFIG)
    write(
        tmp_path / "global" / "config.yml",
        "remotes:\n  prod: {addr: 'https://other:8443'}\n  corp: {addr: 'https://corp:8443'}\n",
    )
    remotes = load_remotes().remotes
    assert remotes["prod"].addr == "https://127.0.0.1:41535"
    assert not remotes["prod"].is_global
    assert remotes["corp"].is_global
    assert remotes["corp"].server_certificate == tmp_path / "global" / "servercerts" / "corp.crt"
    # Client certificates are the user's (cliconfig/remote.go, getConnectionArgs).
    assert remotes["corp"].client_certificate == conf / "client.crt"


def test_a_remote_of_its_own_client_certificate_uses_it(conf: Path, pair: _Certificate) -> None:
    write(conf / "config.yml", CLI_CONFIG)
    with_client_certificate(conf / "clientcerts", pair)
    (conf / "clientcerts" / "client.crt").rename(conf / "clientcerts" / "prod.crt")
    (conf / "clientcerts" / "client.key").rename(conf / "clientcerts" / "prod.key")
    prod = load_remotes().remote("prod")
    assert prod.client_certificate == conf / "clientcerts" / "prod.crt"
    assert prod.client_key == conf / "clientcerts" / "prod.key"


def test_config_dir_is_found_as_the_cli_finds_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert config_directory({"INCUS_CONF": "/x/y", "HOME": str(home)}) == Path("/x/y")
    assert config_directory({"HOME": str(home)}) == home / ".config" / "incus"
    monkeypatch.setenv("SOMEWHERE", str(tmp_path))
    # The CLI expands variables in $INCUS_CONF (Go's os.ExpandEnv: unset ones are empty).
    assert config_directory({"INCUS_CONF": "$SOMEWHERE/c${UNSET_VAR}"}) == tmp_path / "c"


def test_an_explicit_config_dir_wins(tmp_path: Path) -> None:
    other = tmp_path / "other"
    write(other / "config.yml", CLI_CONFIG)
    assert "prod" in load_remotes(other).remotes
    assert "prod" not in load_remotes().remotes
    with pytest.raises(InvalidInputError, match="config_dir must be a path"):
        load_remotes(42)  # type: ignore[arg-type]


def broken_configuration(error: BaseException, path: Path | None) -> None:
    """A file of the CLI's configuration, not an argument: a ConfigurationError naming it."""
    assert isinstance(error, ConfigurationError), repr(error)
    assert not isinstance(error, ValueError)
    if path is not None:
        assert error.path == str(path)
        assert str(path) in str(error)


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("remotes: [\n", "not valid YAML"),
        ("- a\n- b\n", "the document must be a mapping"),
        ("remotes: [a, b]\n", "remotes must be a mapping"),
        ("remotes:\n  prod: https://x\n", "remote 'prod' must be a mapping"),
        ("remotes:\n  prod: {addr: [1]}\n", "remotes.prod.addr must be a string"),
        ("remotes:\n  prod: {addr: x, public: 'true'}\n", "remotes.prod.public must be true"),
        ("remotes:\n  prod: {addr: x, public: 2}\n", "remotes.prod.public must be true"),
        ("default-remote: {a: 1}\n", "default-remote must be a string"),
        ("a: 1\n---\nb: 2\n", "not valid YAML"),
    ],
)
def test_a_garbled_config_names_the_file(conf: Path, content: str, complaint: str) -> None:
    path = write(conf / "config.yml", content)
    with pytest.raises(ConfigurationError, match=complaint) as caught:
        load_remotes()
    broken_configuration(caught.value, path)


def test_a_config_that_is_not_text_or_too_large_is_refused(conf: Path) -> None:
    path = conf / "config.yml"
    path.parent.mkdir()
    path.write_bytes(b"remotes: {}\n# \xff\xfe\n")
    with pytest.raises(ConfigurationError, match="not UTF-8") as caught:
        load_remotes()
    broken_configuration(caught.value, path)
    path.write_bytes(b"#" * (1024 * 1024 + 1))
    with pytest.raises(ConfigurationError, match="larger than") as caught:
        load_remotes()
    broken_configuration(caught.value, path)
    path.unlink()
    path.mkdir()  # a directory where the file should be
    with pytest.raises(ConfigurationError, match="is a directory, not a regular file") as caught:
        load_remotes()
    broken_configuration(caught.value, path)


def test_an_unreadable_config_is_refused_with_the_oserror_as_cause(conf: Path) -> None:
    conf.mkdir()
    path = conf / "config.yml"
    path.symlink_to(path.name)  # a loop: opening it fails (ELOOP), even for root
    with pytest.raises(ConfigurationError, match="Cannot read") as caught:
        load_remotes()
    broken_configuration(caught.value, path)
    assert isinstance(caught.value.__cause__, OSError)


def test_an_empty_config_file_is_an_empty_configuration(conf: Path) -> None:
    write(conf / "config.yml", "")
    assert sorted(load_remotes().remotes) == ["local"]


def test_an_unknown_remote_lists_the_known_ones(conf: Path) -> None:
    with pytest.raises(InvalidInputError) as caught:
        Client(remote="prod")
    message = str(caught.value)
    assert "'prod'" in message
    assert "images, local" in message
    assert "does not exist" in message  # no config.yml: built-in remotes only
    write(conf / "config.yml", CLI_CONFIG)
    with pytest.raises(InvalidInputError, match="known remotes: images, local, prod"):
        AsyncClient(remote="staging")


def test_an_https_remote_uses_the_client_and_pinned_certificates(
    conf: Path, pair: _Certificate
) -> None:
    write(conf / "config.yml", CLI_CONFIG)
    with_client_certificate(conf, pair)
    pinned = write(conf / "servercerts" / "prod.crt", pair.certificate.decode())
    target = remote_endpoint("prod")
    assert target.project is None  # "default" is not selected explicitly, as by the CLI
    endpoint = target.endpoint
    assert endpoint is not None
    assert endpoint.base_url == "https://127.0.0.1:41535"
    assert endpoint.verify_pem == pinned.read_text()  # what a copy's daemon pins too
    assert endpoint.ssl_context is not None
    # Incus names its certificate after its host, not its address: the pin is the identity.
    assert endpoint.ssl_context.check_hostname is False
    assert endpoint.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert endpoint.ssl_context.cert_store_stats()["x509"] == 1  # only the pinned one


def test_without_a_pinned_certificate_the_system_bundle_verifies(
    conf: Path, pair: _Certificate
) -> None:
    write(conf / "config.yml", CLI_CONFIG)
    with_client_certificate(conf, pair)
    endpoint = remote_endpoint("prod").endpoint
    assert endpoint is not None
    assert endpoint.ssl_context is not None
    assert endpoint.ssl_context.check_hostname is True
    assert endpoint.verify_pem is None


def test_the_remote_project_is_used_unless_project_says_otherwise(
    conf: Path, pair: _Certificate
) -> None:
    write(conf / "config.yml", CLI_CONFIG.replace("project: default", "project: dev"))
    with_client_certificate(conf, pair)
    assert Client(remote="prod").project == "dev"
    assert Client(remote="prod", project="qa").project == "qa"
    assert AsyncClient(remote="prod").project == "dev"
    assert Client(remote="prod").server == "https://127.0.0.1:41535"


def test_remote_is_given_instead_of_endpoint_cert_and_verify(conf: Path) -> None:
    for extra in ({"verify": False}, {"cert": "x.crt"}):
        with pytest.raises(InvalidInputError, match="without endpoint=, cert= or verify="):
            Client(remote="local", **extra)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="without endpoint="):
        Client("unix:///x.sock", remote="local")


def test_a_remote_object_is_accepted(tmp_path: Path) -> None:
    other = tmp_path / "other"
    write(other / "config.yml", CLI_CONFIG.replace("project: default", "project: dev"))
    remote = load_remotes(other).remote("prod")
    with pytest.raises(ConfigurationError, match="needs the client certificate") as caught:
        Client(remote=remote)
    broken_configuration(caught.value, other / "client.crt")
    local = load_remotes(other).remote("local")
    assert Client(remote=local).project is None


def test_a_private_remote_without_client_certificate_is_refused(conf: Path) -> None:
    write(conf / "config.yml", CLI_CONFIG)
    with pytest.raises(ConfigurationError) as caught:
        Client(remote="prod")
    broken_configuration(caught.value, conf / "client.crt")


def test_a_public_remote_needs_no_client_certificate(conf: Path) -> None:
    write(conf / "config.yml", "remotes:\n  pub: {addr: 'https://127.0.0.1:9', public: true}\n")
    endpoint = remote_endpoint("pub").endpoint
    assert endpoint is not None
    assert endpoint.base_url == "https://127.0.0.1:9"


def test_a_garbled_pinned_certificate_names_the_file(conf: Path, pair: _Certificate) -> None:
    write(conf / "config.yml", CLI_CONFIG)
    with_client_certificate(conf, pair)
    path = write(conf / "servercerts" / "prod.crt", "not a certificate\n")
    with pytest.raises(ConfigurationError, match="holds no PEM certificate") as caught:
        Client(remote="prod")
    broken_configuration(caught.value, path)


def test_a_remote_address_that_cannot_be_used_is_the_configuration(conf: Path) -> None:
    write(conf / "config.yml", "remotes:\n  p: {addr: 'https://host:99999', public: true}\n")
    with pytest.raises(ConfigurationError, match="Port out of range") as caught:
        Client(remote="p")
    broken_configuration(caught.value, None)
    assert "'p'" in str(caught.value)


def test_a_simplestreams_remote_whose_address_cannot_be_used_is_the_configuration(
    conf: Path,
) -> None:
    write(
        conf / "config.yml",
        "remotes:\n  m: {addr: 'http://mirror.example', protocol: simplestreams, public: true}\n",
    )
    with pytest.raises(ConfigurationError, match="over HTTPS") as caught:
        SimpleStreams.from_remote("m")
    broken_configuration(caught.value, None)


def test_a_unix_remote_is_its_socket(conf: Path) -> None:
    write(
        conf / "config.yml",
        "remotes:\n  other: {addr: 'unix:///run/other/unix.socket', project: p}\n"
        "  bad: {addr: 'unix://relative.socket'}\n  ftp: {addr: 'ftp://x'}\n",
    )
    target = remote_endpoint("other")
    assert target.endpoint is not None
    assert target.endpoint.socket_path == "/run/other/unix.socket"
    assert target.project == "p"
    with pytest.raises(ConfigurationError, match="absolute path"):
        remote_endpoint("bad")
    with pytest.raises(ConfigurationError, match="expected https:// or unix://"):
        remote_endpoint("ftp")


def test_a_simplestreams_remote_points_at_simplestreams_from_remote() -> None:
    with pytest.raises(InvalidInputError) as caught:
        Client(remote="images")
    assert "SimpleStreams.from_remote('images')" in str(caught.value)
    assert SimpleStreams.from_remote("images") == SimpleStreams(
        "https://images.linuxcontainers.org"
    )
    assert AsyncSimpleStreams.from_remote("images", timeout=5) == AsyncSimpleStreams(
        "https://images.linuxcontainers.org", timeout=5
    )


def test_simplestreams_from_remote_carries_the_pinned_certificate(
    conf: Path, pair: _Certificate
) -> None:
    write(
        conf / "config.yml",
        "remotes:\n  mirror: {addr: 'https://mirror.example/streams', protocol: simplestreams,"
        " public: true}\n  prod: {addr: 'https://p:8443'}\n",
    )
    write(conf / "servercerts" / "mirror.crt", pair.certificate.decode())
    source = SimpleStreams.from_remote("mirror")
    assert source.url == "https://mirror.example/streams"
    assert source.certificate == pair.certificate.decode()
    with pytest.raises(InvalidInputError, match=r"use it as Client\(remote='prod'\)"):
        SimpleStreams.from_remote("prod")
    with pytest.raises(InvalidInputError, match="No remote 'nope'"):
        SimpleStreams.from_remote("nope")
    assert SimpleStreams.from_remote(load_remotes().remote("mirror")) == source


def test_oidc_and_oci_remotes_are_refused_clearly(conf: Path) -> None:
    write(
        conf / "config.yml",
        "remotes:\n  o: {addr: 'https://o:8443', auth_type: oidc}\n"
        "  reg: {addr: 'https://docker.io', protocol: oci, public: true}\n",
    )
    with pytest.raises(InvalidInputError, match="OIDC"):
        Client(remote="o")
    with pytest.raises(InvalidInputError, match="'oci' protocol"):
        Client(remote="reg")


@pytest.mark.parametrize(
    "name", ["", "a:b", "a/b", ".", "..", "tab\tname", "x" * 101, "nul\x00", 3, None]
)
def test_bad_remote_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidInputError):
        remote_name(name)


def test_good_remote_names_pass() -> None:
    for name in ("prod", "my remote", "prod-2.example", "ünï", "x" * 100):
        assert remote_name(name) == name


# --------------------------------------------------------------------------------------------
# Trust tokens.


def test_a_token_is_decoded() -> None:
    decoded = decode_token(token())
    assert decoded.client_name == "tok"
    assert decoded.fingerprint == FINGERPRINT
    assert decoded.addresses == ("127.0.0.1:41535",)
    assert decoded.secret == SECRET
    assert decoded.expires_at is None  # Go's zero time: no expiry
    assert not decoded.expired()
    assert SECRET not in repr(decoded)


def test_a_real_cli_token_is_decoded() -> None:
    # Printed by `incus config trust add tok1` (incus 6.0.4).
    printed = (
        "eyJjbGllbnRfbmFtZSI6InRvazEiLCJmaW5nZXJwcmludCI6IjIxZDNmN2NiZTBjNjg0OTNlOWM1YTdjMzlj"
        "ZGRjMzMwYjA2ZWI3YjIxNDM4NWFkNWQ2MGY4NmExMzJkM2NhYmIiLCJhZGRyZXNzZXMiOlsiMTI3LjAuMC4x"
        "OjQxNTM1Il0sInNlY3JldCI6ImYzZWFhY2Q3ZDUyOTc0YWY5NGFjYWVjMTE3YzU2YTIyMzAzZjdiMTdlNjM3"
        "NDllYmNlMjZhYTI4M2ZmNzBiYjYiLCJleHBpcmVzX2F0IjoiMDAwMS0wMS0wMVQwMDowMDowMFoifQ=="
    )
    decoded = decode_token(printed)
    assert (decoded.client_name, decoded.fingerprint, decoded.secret) == (
        "tok1",
        FINGERPRINT,
        SECRET,
    )
    assert decoded.encoded == printed


def test_token_expiry() -> None:
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    future = "2999-03-23T17:38:37.753398689-04:00"  # Go writes nanoseconds
    assert decode_token(token(expires_at=past)).expired()
    later = decode_token(token(expires_at=future))
    assert not later.expired()
    assert later.expires_at == datetime.fromisoformat("2999-03-23T17:38:37.753398-04:00")
    assert decode_token(token(expires_at=...)).expires_at is None


def test_a_wrapped_and_padded_token_still_decodes() -> None:
    text = token()
    wrapped = "\n  " + "\n".join(text[i : i + 60] for i in range(0, len(text), 60)) + "\n"
    assert decode_token(wrapped).encoded == text


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("not base64!", "not base64 of JSON"),
        (token()[:-3], "not base64 of JSON"),  # padding cut
        (base64.b64encode(b"\xff\xfe not json").decode(), "not base64 of JSON"),
        (base64.b64encode(b"[1, 2]").decode(), "not an object"),
        (base64.b64encode(b"[" * 10_000 + b"]" * 10_000).decode(), "nests too deep"),
        (token(client_name=""), "'client_name' must be a non-empty string"),
        (token(client_name=5), "'client_name' must be a non-empty string"),
        (token(client_name="a\nb"), "not a printable name"),
        (token(fingerprint=...), "'fingerprint' must be a non-empty string"),
        (token(fingerprint="ab" * 31), "64 hex digits"),
        (token(fingerprint="zz" * 32), "64 hex digits"),
        (token(secret=12), "'secret' must be a non-empty string"),
        (token(secret="a b\n"), "'secret' is not printable"),
        (token(addresses="127.0.0.1:8443"), "'addresses' must be a non-empty list"),
        (token(addresses=[]), "'addresses' must be a non-empty list"),
        (token(addresses=[f"10.0.0.{i}:1" for i in range(65)]), "more than 64 addresses"),
        (token(addresses=[8443]), "not host:port"),
        (token(expires_at=0), "RFC 3339"),
        (token(expires_at="tomorrow"), "RFC 3339"),
        (token(expires_at="2030-01-01T00:00:00"), "no time zone"),
        ("eyJ" * 30_000, "longer than"),
        ("", "must not be empty"),
        (None, "must be a string"),
    ],
)
def test_a_bad_token_is_refused(value: object, complaint: str) -> None:
    with pytest.raises(InvalidInputError, match=complaint):
        decode_token(value)


@pytest.mark.parametrize(
    "address",
    [
        "https://127.0.0.1:8443",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:+80",
        "user@host:8443",
        "host:8443/path",
        "host:8443?x",
        "[fe80::1%eth0]:8443",
        "[not-v6]:8443",
        "::1:8443",
        "999.1.1.1:8443",
        "1.2.3:8443",
        "-bad-.example:8443",
        "under_score.example:8443",
        "a..b:8443",
        "spa ce:8443",
        "x" * 300 + ":1",
    ],
)
def test_token_addresses_must_be_host_and_port(address: str) -> None:
    with pytest.raises(InvalidInputError, match="not host:port"):
        decode_token(token(addresses=["127.0.0.1:8443", address]))


def test_token_addresses_that_are_host_and_port() -> None:
    assert host_port("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert host_port("[::1]:8443") == ("::1", 8443)
    assert host_port("[2001:db8::5]:1") == ("2001:db8::5", 1)
    assert host_port("incus-1.example.org:65535") == ("incus-1.example.org", 65535)
    assert host_port("localhost:8443") == ("localhost", 8443)


def test_an_expired_token_is_refused_before_anything_is_sent_or_written(conf: Path) -> None:
    expired = token(expires_at="2020-01-01T00:00:00Z")
    with pytest.raises(InvalidInputError, match="expired at 2020-01-01") as caught:
        add_remote("prod", expired)
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was sent")
    assert not conf.exists()


def test_add_remote_checks_its_arguments_before_anything(conf: Path) -> None:
    for name in ("a:b", "../x", ""):
        with pytest.raises(InvalidInputError, match="remote name"):
            add_remote(name, token())
    with pytest.raises(InvalidInputError, match="public=True adds a public image server"):
        add_remote("prod", token(), public=True)
    with pytest.raises(InvalidInputError, match="a public remote has no project"):
        add_remote("prod", "https://127.0.0.1:9", public=True, project="p")
    with pytest.raises(InvalidInputError, match="https:// URL"):
        add_remote("prod", "http://127.0.0.1:9")
    with pytest.raises(InvalidInputError, match="https:// URL"):
        add_remote("prod", "unix:///run/incus/unix.socket")
    with pytest.raises(InvalidInputError, match="not base64"):
        add_remote("prod", "garbage")
    with pytest.raises(InvalidInputError, match="accept_certificate must be True or False"):
        add_remote("prod", token(), accept_certificate="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="timeout"):
        add_remote("prod", token(), timeout=-1)
    assert not conf.exists()


def test_add_remote_without_a_configuration_directory_is_refused_before_anything(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the configuration goes is the environment's, not an argument."""
    monkeypatch.setattr("incus_images._remotes.adding._given_directory", lambda _: None)
    with pytest.raises(ConfigurationError, match="no configuration directory") as caught:
        add_remote("prod", "https://127.0.0.1:9")
    broken_configuration(caught.value, None)


def test_an_existing_remote_is_refused_as_by_the_cli(conf: Path) -> None:
    # Without a config.yml the CLI knows images and local: it refuses those names too.
    with pytest.raises(InvalidInputError, match="Remote 'images' exists already as <https://"):
        add_remote("images", token())
    write(conf / "config.yml", CLI_CONFIG)
    with pytest.raises(InvalidInputError, match="'prod' exists already") as caught:
        add_remote("prod", "https://127.0.0.1:9")
    assert "incus remote remove prod" in str(caught.value)
    with pytest.raises(InvalidInputError, match="'local' exists already"):
        add_remote("local", token())


# --------------------------------------------------------------------------------------------
# The client certificate.


def test_the_client_certificate_is_made_as_the_cli_makes_it(
    pair: _Certificate, tmp_path: Path
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    certificate = x509.load_pem_x509_certificate(pair.certificate)
    key = serialization.load_pem_private_key(pair.key, password=None)
    assert pair.key.startswith(b"-----BEGIN EC PRIVATE KEY-----")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp384r1"
    assert isinstance(certificate.signature_hash_algorithm, hashes.SHA384)
    assert certificate.subject == certificate.issuer
    organization = certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert organization[0].value == "Linux Containers"
    assert "@" in str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime == timedelta(days=3650)
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.digital_signature
    assert usage.value.key_encipherment
    assert not usage.value.key_cert_sign
    extended = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(extended) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert not constraints.value.ca
    assert 0 < certificate.serial_number < 2**128
    # It loads as a TLS client certificate.
    with_client_certificate(tmp_path, pair)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key")


# --------------------------------------------------------------------------------------------
# Writing the configuration.


def test_write_atomically_replaces_with_the_mode(tmp_path: Path) -> None:
    target = write(tmp_path / "f.txt", "old", 0o644)
    write_atomically(target, b"new", 0o600)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_write_atomically_leaves_the_old_file_when_it_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write(tmp_path / "f.txt", "old")

    def fail(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files_module.os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        write_atomically(target, b"new", 0o644)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


PEM = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


def added(server: bool = True, client: _Certificate | None = None) -> _Added:
    return _Added(
        entry={
            "addr": "https://127.0.0.1:8443",
            "project": "default",
            "protocol": "incus",
            "public": False,
        },
        server_pem=PEM if server else None,
        client=client,
    )


def test_a_new_configuration_is_what_the_cli_writes(conf: Path, pair: _Certificate) -> None:
    _save(conf, conf / "config.yml", "prod", added(client=pair))
    expected = CLI_CONFIG.replace("41535", "8443")
    assert (conf / "config.yml").read_text() == expected
    assert tree(conf) == {
        "client.crt": "0o644",
        "client.key": "0o600",
        "config.yml": "0o644",
        "servercerts": "0o750",
        "servercerts/prod.crt": "0o644",
    }
    assert stat.S_IMODE(conf.stat().st_mode) == 0o750
    assert (conf / "client.key").read_bytes() == pair.key
    assert "prod" in load_remotes().remotes


def test_an_existing_configuration_keeps_what_it_holds(conf: Path) -> None:
    original = (
        "# my remotes\n"
        "default-remote: zeta\n"
        "remotes:\n"
        "  alpha:\n    addr: https://a.example:8443\n    project: 0123\n    keepalive: 30\n"
        "  zeta:\n    addr: 'https://z.example:8443'\n    public: yes\n"
        "aliases:\n  ls: list -c ns\n"
        "something_new: [1, 2]\n"
    )
    path = write(conf / "config.yml", original, 0o640)
    _save(conf, path, "prod", added(server=False))
    written = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert written.index("alpha:") < written.index("prod:") < written.index("zeta:")
    assert "project: 0123" in written  # kept as written, not as the number 83
    assert "keepalive: 30" in written
    assert "public: yes" in written
    assert "ls: list -c ns" in written
    assert "something_new:" in written
    config = load_remotes()
    assert config.default_remote == "zeta"
    assert config.remotes["alpha"].project == "0123"
    assert config.remotes["prod"].addr == "https://127.0.0.1:8443"
    assert not (conf / "servercerts").exists()


def test_a_configuration_without_remotes_gets_them(conf: Path) -> None:
    for original in ("", "default-remote: local\n", "remotes:\n"):
        path = write(conf / "config.yml", original)
        _save(conf, path, "prod", added(server=False))
        assert sorted(load_remotes().remotes) == ["local", "prod"]


def test_a_symlinked_configuration_is_written_where_it_points(conf: Path, tmp_path: Path) -> None:
    real = write(tmp_path / "dotfiles" / "incus.yml", CLI_CONFIG)
    conf.mkdir()
    (conf / "config.yml").symlink_to(real)
    _save(conf, conf / "config.yml", "other", added(server=False))
    assert (conf / "config.yml").is_symlink()
    assert "other:" in real.read_text()


def test_names_that_yaml_would_read_otherwise_are_quoted(conf: Path) -> None:
    text = _config_text(None, "yes", {"addr": "https://x:1", "project": "null", "public": False})
    write(conf / "config.yml", text)
    assert load_remotes().remote("yes").project == "null"
    assert "  'yes':\n    addr: https://x:1\n    project: 'null'\n    public: false\n" in text
    assert (
        text.replace(
            "  'yes':\n    addr: https://x:1\n    project: 'null'\n    public: false\n", ""
        )
        == _DEFAULT_CONFIG_YAML
    )


def test_a_remote_that_appeared_meanwhile_is_not_written_twice(conf: Path) -> None:
    path = write(conf / "config.yml", CLI_CONFIG)
    with pytest.raises(ConfigurationError, match="appeared") as caught:
        _save(conf, path, "prod", added())
    broken_configuration(caught.value, path)
    assert path.read_text() == CLI_CONFIG
    assert not (conf / "servercerts").exists()


def test_long_values_stay_on_one_line(conf: Path) -> None:
    addr = "https://" + "a" * 60 + ".example:8443"
    text = _config_text(None, "x" * 100, {"addr": addr, "project": "p " * 60, "public": False})
    path = write(conf / "config.yml", text)
    remote = load_remotes().remote("x" * 100)
    assert (remote.addr, remote.project) == (addr, "p " * 60)
    assert f"    addr: {addr}\n" in path.read_text()


def test_a_client_certificate_that_appeared_meanwhile_is_not_overwritten(
    conf: Path, pair: _Certificate
) -> None:
    write(conf / "client.crt", "theirs")
    with pytest.raises(ConfigurationError, match="appeared") as caught:
        _save(conf, conf / "config.yml", "prod", added(client=pair))
    broken_configuration(caught.value, conf / "client.crt")
    assert (conf / "client.crt").read_text() == "theirs"
    assert not (conf / "config.yml").exists()


# --------------------------------------------------------------------------------------------
# Files of the configuration that are not what they should be (issue 14, item 7): each is
# refused with a ConfigurationError naming it (issue 15), and none can make a call hang.


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.mkdir()


def _oversize(path: Path) -> None:
    # Valid content first: only the size is wrong.
    path.write_bytes(VALID[path.name] + b"#" * (1024 * 1024))


def _dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 16)


FAULTS = {
    "fifo": _fifo,
    "directory": _directory,
    "oversize": _oversize,
    "dev-zero": _dev_zero,
    "garbage": _garbage,
}

#: What each file holds when it is right (filled in by the files fixture).
VALID: dict[str, bytes] = {}


@pytest.fixture
def files(conf: Path, tmp_path: Path, pair: _Certificate) -> dict[str, Path]:
    """A working configuration with a remote 'prod', a client certificate and a pinned server
    certificate, and a system-wide configuration; the paths of its files by role."""
    write(conf / "config.yml", CLI_CONFIG)
    with_client_certificate(conf, pair)
    write(conf / "servercerts" / "prod.crt", pair.certificate.decode())
    write(tmp_path / "global" / "config.yml", "remotes:\n  shared: {addr: 'https://s:1'}\n")
    VALID.update(
        {
            "config.yml": CLI_CONFIG.encode(),
            "client.crt": pair.certificate,
            "client.key": pair.key,
            "client.ca": pair.certificate,
            "prod.crt": pair.certificate,
        }
    )
    assert remote_endpoint("prod").endpoint is not None
    return {
        "config.yml": conf / "config.yml",
        "global config.yml": tmp_path / "global" / "config.yml",
        "servercerts/prod.crt": conf / "servercerts" / "prod.crt",
        "client.crt": conf / "client.crt",
        "client.key": conf / "client.key",
        "client.ca": conf / "client.ca",
    }


@pytest.mark.timeout(30)
@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize(
    "role",
    [
        "config.yml",
        "global config.yml",
        "servercerts/prod.crt",
        "client.crt",
        "client.key",
        "client.ca",
    ],
)
def test_a_file_of_the_configuration_that_is_no_file_of_its_kind_is_refused(
    files: dict[str, Path], role: str, fault: str
) -> None:
    path = files[role]
    if role == "client.ca":
        # client.ca is read when no server certificate is pinned.
        files["servercerts/prod.crt"].unlink()
    if fault == "oversize" and role == "global config.yml":
        VALID["config.yml"] = path.read_bytes()
    path.unlink(missing_ok=True)
    FAULTS[fault](path)
    with pytest.raises(ConfigurationError) as caught:
        remote_endpoint("prod")
    assert str(path) in str(caught.value)
    assert not isinstance(caught.value, ValueError)
    if role != "client.key":  # a pair that does not load is named by its certificate
        assert caught.value.path == str(path)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "nested",
    ["[" * 100_000 + "]" * 100_000, "{a: " * 100_000 + "}" * 100_000, "- " * 100_000 + "x"],
)
def test_a_deeply_nested_config_is_refused_naming_it(conf: Path, nested: str) -> None:
    path = write(conf / "config.yml", f"remotes:\n  x:\n    {nested}\n")
    with pytest.raises(ConfigurationError, match="nests deeper than") as caught:
        load_remotes()
    broken_configuration(caught.value, path)


@pytest.mark.timeout(30)
def test_add_remote_refuses_a_config_that_is_a_fifo_before_anything_is_sent(conf: Path) -> None:
    conf.mkdir()
    os.mkfifo(conf / "config.yml")
    with pytest.raises(ConfigurationError, match="is a FIFO, not a regular file") as caught:
        add_remote("new", "https://127.0.0.1:9")
    broken_configuration(caught.value, conf / "config.yml")


# --------------------------------------------------------------------------------------------
# What add_remote checks before anything is sent (issue 14, items 5 and 6). A connection
# attempt fails these tests (no_network).


@pytest.mark.parametrize(
    ("there", "missing"), [("client.key", "client.crt"), ("client.crt", "client.key")]
)
def test_half_a_client_key_pair_is_refused_before_anything_is_sent(
    conf: Path, pair: _Certificate, there: str, missing: str
) -> None:
    write(conf / there, (pair.key if there == "client.key" else pair.certificate).decode())
    before = tree(conf)
    for target in (token(), "https://127.0.0.1:9"):
        with pytest.raises(ConfigurationError, match="go together") as caught:
            add_remote("prod", target)
        message = str(caught.value)
        assert f"{conf / there} is there but {conf / missing} is not" in message
        broken_configuration(caught.value, conf / missing)
        assert_left(caught.value, LeftBehind.NOTHING, "nothing was sent")
    assert tree(conf) == dict(before, **{"config.yml.lock": "0o644"})


def test_a_remote_with_half_a_client_key_pair_names_the_missing_file(
    conf: Path, pair: _Certificate
) -> None:
    write(conf / "config.yml", CLI_CONFIG)
    write(conf / "client.crt", pair.certificate.decode())
    with pytest.raises(ConfigurationError, match=r"client\.key does not exist") as caught:
        Client(remote="prod")
    broken_configuration(caught.value, conf / "client.key")
    assert str(conf / "client.crt") not in str(caught.value).split(";")[1]


def test_a_configuration_that_cannot_take_the_remote_is_refused_before_anything_is_sent(
    conf: Path, pair: _Certificate
) -> None:
    with_client_certificate(conf, pair)
    write(conf / "servercerts", "a file where the directory should be")
    with pytest.raises(ConfigurationError, match="servercerts is not a directory") as caught:
        add_remote("prod", token())
    broken_configuration(caught.value, conf / "servercerts")
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was sent")


def test_a_client_certificate_that_does_not_load_is_refused_before_anything_is_sent(
    conf: Path, pair: _Certificate
) -> None:
    write(conf / "client.crt", pair.certificate.decode())
    write(conf / "client.key", _new_client_certificate().key.decode(), 0o600)  # another's
    with pytest.raises(ConfigurationError, match="cannot load the client certificate") as caught:
        add_remote("prod", token())
    broken_configuration(caught.value, conf / "client.crt")
