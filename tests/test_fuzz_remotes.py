"""Property-based fuzzing (Hypothesis) of the incus CLI's files as the SDK reads them
(issue 14): whatever config.yml, the system-wide config.yml, servercerts/<name>.crt,
client.crt, client.key and client.ca hold (any YAML, any text, any bytes), reading them,
connecting to a remote from them, and adding a remote beside them raise an IncusError or
succeed, and what succeeds holds: the remotes read have the declared types, and config.yml
written with a remote added reads back with it and everything else unchanged.

Example counts: tests/fuzz_settings.py (300 a property in the suite proper and CI, 30 in a
bare ``pytest`` run; FUZZ_EXAMPLES overrides). Nothing here connects anywhere but to a
closed port on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from incus_images import IncusError, add_remote, load_remotes
from incus_images._remotes.adding import _new_client_certificate
from incus_images._remotes.connect import remote_endpoint, simplestreams_remote
from incus_images._remotes.writing import _config_text
from tests.fuzz_settings import FEWER, SLOW
from tests.helpers import closed_port

# Shrinking a failure builds the repr of the recursive strategies, which Hypothesis warns is
# large; under filterwarnings=error that warning would replace the failure's own report.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)

PAIR = _new_client_certificate()
CONFIG = """\
default-remote: local
remotes:
  prod:
    addr: https://127.0.0.1:41535
    project: default
  mirror:
    addr: https://127.0.0.1:41536/streams
    protocol: simplestreams
    public: true
"""

# --------------------------------------------------------------------------------------------
# Strategies.

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(["https://127.0.0.1:8443", "unix://", "unix:///x.sock", "tls", "yes", "~"]),
)
#: Any YAML value, nested.
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
#: A remote's fields, each present or not, of any type.
remote_fields = st.dictionaries(
    st.sampled_from(["addr", "project", "protocol", "public", "auth_type", "keepalive"]),
    values,
    max_size=6,
)
#: Documents shaped like a configuration, with anything in the places of its values.
shaped = st.fixed_dictionaries(
    {},
    optional={
        "default-remote": values,
        "remotes": st.dictionaries(st.text(max_size=12), remote_fields, max_size=4) | values,
        "aliases": values,
    },
)


def dumped(value: Any) -> str:
    return yaml.safe_dump(value, allow_unicode=True)


config_texts = st.one_of(
    shaped.map(dumped),
    values.map(dumped),
    st.text(max_size=300),
    st.text(alphabet="[]{}:-,&*!|>'\"#?\n \tab", max_size=120),
)
config_bytes = st.one_of(
    config_texts.map(lambda text: text.encode("utf-8", errors="surrogatepass")),
    st.binary(max_size=300),
)

PEM_FILES = [PAIR.certificate, PAIR.key, PAIR.certificate + PAIR.key]
#: Anything at a certificate's or key's place: bytes, real PEM spliced, cut or padded.
pem_bytes = st.one_of(
    st.binary(max_size=400),
    st.sampled_from(PEM_FILES),
    st.tuples(st.sampled_from(PEM_FILES), st.integers(0, 3000), st.binary(max_size=40)).map(
        lambda cut: cut[0][: cut[1]] + cut[2] + cut[0][cut[1] :]
    ),
    st.tuples(st.sampled_from(PEM_FILES), st.integers(0, 3000)).map(lambda cut: cut[0][: cut[1]]),
    st.sampled_from(PEM_FILES).map(
        lambda pem: pem.replace(b"CERTIFICATE", b"CERTIFICATE\x00").replace(b"\n", b"\r\n")
    ),
)


# --------------------------------------------------------------------------------------------
# Fixtures: a configuration directory of each example's own, and no system-wide one unless
# the example writes it.


@pytest.fixture(scope="module")
def environment() -> Iterator[Path]:
    """$INCUS_GLOBAL_CONF of this module (module-scoped: Hypothesis runs many examples in one
    test function, and a function-scoped fixture would be shared by them unnoticed)."""
    saved = {name: os.environ.get(name) for name in ("INCUS_GLOBAL_CONF", "INCUS_REMOTE")}
    with tempfile.TemporaryDirectory(prefix="fuzz-global-") as directory:
        os.environ["INCUS_GLOBAL_CONF"] = directory
        os.environ.pop("INCUS_REMOTE", None)
        try:
            yield Path(directory)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@contextlib.contextmanager
def configured() -> Iterator[Path]:
    """A configuration directory of one example's own: CONFIG and a client certificate."""
    with tempfile.TemporaryDirectory(prefix="fuzz-conf-") as directory:
        conf = Path(directory)
        write(conf / "config.yml", CONFIG.encode())
        write(conf / "client.crt", PAIR.certificate)
        write(conf / "client.key", PAIR.key)
        yield conf


def assert_refusal_names(error: IncusError, *paths: Path) -> None:
    """An error from a file names it (one of them, when several were read)."""
    assert any(str(path) in str(error) for path in paths), str(error)


# --------------------------------------------------------------------------------------------
# config.yml


@SLOW
@given(data=config_bytes, global_data=st.none() | config_bytes)
@example(data=b"a: &x [*x]\n", global_data=None)
@example(data=b"remotes: &r {x: *r}\n", global_data=None)
@example(data=b"remotes:\n  x: " + b"[" * 40 + b"]" * 40 + b"\n", global_data=None)
@example(data=b"[" * 1000 + b"]" * 1000, global_data=None)  # RecursionError once
@example(data=b"\xef\xbb\xbfremotes: {}\n", global_data=None)
@example(data=b"remotes: !!python/object:os.system {}\n", global_data=None)
@example(data=b"remotes: {x: {addr: !!binary aGk=}}\n", global_data=None)
@example(data=CONFIG.encode(), global_data=b"remotes: {prod: {addr: 1}, g: {}}")
def test_any_config_is_read_or_refused_naming_it(
    environment: Path, data: bytes, global_data: bytes | None
) -> None:
    global_path = environment / "config.yml"
    if global_data is not None:
        write(global_path, global_data)
    try:
        with tempfile.TemporaryDirectory(prefix="fuzz-conf-") as directory:
            read_and_add(write(Path(directory) / "config.yml", data), global_path)
    finally:
        global_path.unlink(missing_ok=True)


def read_and_add(path: Path, global_path: Path) -> None:
    try:
        config = load_remotes(path.parent)
    except IncusError as exc:
        assert_refusal_names(exc, path, global_path)
        return
    assert config.remotes["local"].addr == "unix://"
    for name, remote in config.remotes.items():
        assert remote.name == name
        assert isinstance(remote.addr, str)
        assert isinstance(remote.protocol, str)
        assert isinstance(remote.public, bool)
        assert remote.project is None or isinstance(remote.project, str)
        with contextlib.suppress(IncusError):
            remote_endpoint(remote)
    # Written with a remote added, it reads back with it and the rest unchanged.
    try:
        text = _config_text(path, "added", {"addr": "https://127.0.0.1:1", "public": True})
    except IncusError as exc:
        assert_refusal_names(exc, path)
        return
    path.write_text(text)
    again = load_remotes(path.parent)
    assert again.remotes["added"].addr == "https://127.0.0.1:1"
    assert {name: r for name, r in again.remotes.items() if name != "added"} == dict(config.remotes)


# --------------------------------------------------------------------------------------------
# Certificates and keys


ROLES = ["servercerts/prod.crt", "client.crt", "client.key", "client.ca"]


@SLOW
@given(role=st.sampled_from(ROLES), data=pem_bytes)
@example(role="client.key", data=b"")
@example(role="servercerts/prod.crt", data=PAIR.certificate * 200)
def test_any_certificate_file_is_used_or_refused_naming_it(
    environment: Path, role: str, data: bytes
) -> None:
    with configured() as conf:
        if role != "client.ca":
            write(conf / "servercerts" / "prod.crt", PAIR.certificate)
        path = write(conf / role, data)
        config = load_remotes(conf)
        try:
            target = remote_endpoint(config.remote("prod"))
        except IncusError as exc:
            assert_refusal_names(exc, path)
        else:
            assert target.endpoint is not None
            assert target.endpoint.ssl_context is not None
        if role == "servercerts/prod.crt":
            write(conf / "servercerts" / "mirror.crt", data)
            try:
                _, pem = simplestreams_remote(config.remote("mirror"))
            except IncusError as exc:
                assert_refusal_names(exc, conf / "servercerts" / "mirror.crt")
            else:
                assert pem is not None and pem.startswith("-----BEGIN CERTIFICATE-----")


@FEWER
@given(
    role=st.sampled_from(["config.yml", "client.crt", "client.key"]),
    data=st.one_of(pem_bytes, config_bytes),
)
def test_add_remote_beside_any_file_fails_as_an_incus_error(
    environment: Path, role: str, data: bytes
) -> None:
    # The server's port is closed: the call can only fail, but what it reads first may not
    # fail otherwise, and nothing of it stays but the lock.
    with configured() as conf:
        path = write(conf / role, data)
        before = {entry.name: entry.read_bytes() for entry in conf.iterdir()}
        with pytest.raises(IncusError):
            add_remote("new", f"https://127.0.0.1:{closed_port()}", config_dir=conf, timeout=5)
        after = {entry.name: entry.read_bytes() for entry in conf.iterdir()}
        assert after == dict(before, **{"config.yml.lock": b""}), path
