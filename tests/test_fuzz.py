"""Property-based fuzzing (Hypothesis) of every input check and of the response parsing.

Two promises are checked with arbitrary values:

* Input: every validator and every argument check refuses bad input with an IncusError
  (InvalidInputError) and nothing else, and whatever it accepts honours its contract: a
  fingerprint prefix is 1 to 64 lower-case hex digits, an alias name is one path segment, a
  header value can be sent, and no accepted string holds a NUL or a lone surrogate.
* Output: whatever a server sends (any bytes, any JSON, nested as deep as it likes), parsing it
  raises an IncusError or gives a model whose fields have exactly the declared types, taken
  from the JSON as they were (no coercion), with a 64-hex fingerprint and a UUID operation id.

The minimal failing inputs Hypothesis once found (eleven bugs, all fixed) are kept as
``@example``s, and each has a small deterministic test of its own at the end of the file.

300 examples a property in the suite proper and CI (about a minute), 30 in a bare
``pytest`` run (see tests/fuzz_settings.py). For a long run:
``FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import math
import os
import re
import socket
import threading
import types
import typing
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import attrs
import h11
import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import incus_images._protocol as protocol
from incus_images import IncusError, InvalidInputError, SimpleStreams
from incus_images import _validate as validate
from incus_images._architectures import ARCHITECTURES
from incus_images._async._copying import MODES, CopyOptions, copy_options
from incus_images._converter import make_converter
from incus_images._endpoint import Endpoint, parse_endpoint
from incus_images._errors import APIError, OperationGoneError
from incus_images._models import (
    Image,
    ImageAlias,
    ImageSource,
    Operation,
    ServerEnvironment,
    ServerInfo,
)
from incus_images._protocol import (
    ALIASES,
    IMAGES,
    MAX_QUOTED_ERROR,
    Call,
    Envelope,
    WaitResult,
    alias_path,
    api_error,
    fingerprints_from_urls,
    parse_envelope,
    parse_wait,
    server_error_text,
    stored_fingerprint,
    structure,
    token_secret,
)
from incus_images._transfer.files import (
    check_export_target,
    make_directories,
    remove_made_directories,
    rootfs_path,
    temporary_name,
)
from incus_images._transfer.plan import PreparedUpload, prepare_upload
from incus_images._transfer.sources import Source, open_source
from tests.fuzz_settings import FEWER, FUZZ, SLOW

# Shrinking a failure builds the repr of the recursive strategies, which Hypothesis warns is
# large; under filterwarnings=error that warning would replace the failure's own report.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"
)

# --------------------------------------------------------------------------------------------
# Settings: tests/fuzz_settings.py (FUZZ, SLOW, FEWER; THOROUGH says how many examples).

FP = "6bcb9190f8bea56cb09463728faddd8b72e996506d3575f0e027cdbbe0440c05"
OP_ID = "41b69ae9-44bf-4b27-a0e5-23d3b8614fbf"
SERVER = "unix:///run/incus/unix.socket"
CALL = Call(method="GET", path=f"{IMAGES}/{FP}", action=f"get image '{FP[:12]}'")
WAIT_CALL = Call(
    method="GET",
    path=f"/1.0/operations/{OP_ID}/wait",
    action=f"wait for operation {OP_ID}",
    project_scoped=False,
)

_FULL_FP = re.compile(r"[0-9a-f]{64}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

# --------------------------------------------------------------------------------------------
# Strategies: arbitrary values.

#: Characters that break things: NUL, lone surrogates (high, low, surrogateescape range),
#: controls, separators of paths, URLs and headers, odd spaces.
NASTY = "\x00\ud800\udbff\udc80\udcff\udfff\x01\x1f\x7f\x85\n\r\t /\\.%?#@:[]&=+\"'\u2028\ufeff\xa0"
HEX = "0123456789abcdefABCDEF"

nasty_text = st.text(st.sampled_from(NASTY + "aZ09-_é日"), max_size=12)
any_text = st.text(st.characters(exclude_categories=()), max_size=24)  # every code point
_texts = st.one_of(any_text, nasty_text, st.text(max_size=40))
# Deferred: a strategy's repr is printed in failure reports; nested ones would be huge.
texts = st.deferred(lambda: _texts)
hex_text = st.text(st.sampled_from(HEX), max_size=70)
full_fingerprints = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)

numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.sampled_from([400, 309, 308]).map(lambda exponent: 10**exponent),  # too big for a float
    st.sampled_from([1e308, -1e308, 5e-324, -0.0, 0.0, 1e7 + 1]),
    st.floats(),  # nan and inf included
    st.decimals(),
    st.fractions(),
    st.complex_numbers(max_magnitude=1e10),
)


class _PathLike:
    def __init__(self, value: str | bytes) -> None:
        self.value = value

    def __fspath__(self) -> str | bytes:
        return self.value

    def __repr__(self) -> str:
        return f"PathLike({self.value!r})"


class _AsyncChunks:
    """An async iterable of bytes (never iterated here)."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        raise AssertionError("not iterated by input checks")


odd_objects = st.sampled_from(
    [
        object(),
        object,
        print,
        len,
        Ellipsis,
        NotImplemented,
        type,
        Exception("x"),
        range(3),
        memoryview(b"abc"),
        bytearray(b"x"),
        _AsyncChunks(),
        _PathLike(b"/tmp"),
        _PathLike("/nonexistent"),
        Path("/"),
        Operation(id=OP_ID),
        ImageAlias(name="a"),
    ]
)

scalars = st.one_of(st.none(), st.booleans(), numbers, texts, st.binary(max_size=24), odd_objects)
_anything = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(texts, st.integers(), st.none()), inner, max_size=4),
        st.sets(st.one_of(st.text(max_size=5), st.integers()), max_size=4),
        st.iterables(inner, max_size=3),
    ),
    max_leaves=8,
)
anything = st.deferred(lambda: _anything)

# JSON values, as json.loads makes them (NaN and Infinity included: Python reads them).
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([400, 19]).map(lambda exponent: 10**exponent),
    st.floats(),
    texts,
)
_json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=12,
)
json_values = st.deferred(lambda: _json_values)


def callables() -> st.SearchStrategy[Any]:
    return st.sampled_from([print, len, lambda *args: None, functools.partial(print, end="")])


# --------------------------------------------------------------------------------------------
# Oracles.


def sendable(value: object) -> str:
    """A string the server can receive exactly: no NUL, and valid UTF-8 (no lone surrogate)."""
    assert type(value) is str, f"not a str: {value!r}"
    assert "\x00" not in value, f"NUL accepted: {value!r}"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise AssertionError(f"a lone surrogate was accepted: {value!r}") from None
    return value


def utf8(value: str, where: str) -> None:
    """Text read from a server is valid UTF-8: the converter refuses lone surrogates (JSON can
    spell them as escapes), since such text could never be sent back."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise AssertionError(
            f"{where}: a lone surrogate was read into a model: {value!r}"
        ) from None


def sendable_header(name: str, value: str | bytes) -> None:
    """httpx encodes str header values as ASCII, and h11 sends only valid field values."""
    if isinstance(value, str):
        assert value.isascii(), f"header {name}: non-ASCII str {value!r}"
        value = value.encode("ascii")
    try:
        h11.Request(method="POST", target="/", headers=[("Host", "incus"), (name, value)])
    except h11.LocalProtocolError as exc:
        raise AssertionError(f"header {name}: {value!r} cannot be sent: {exc}") from None


def usable_timeout(value: float) -> None:
    """A duration the blocking client can wait for: sockets and thread waits accept it."""
    assert value <= threading.TIMEOUT_MAX, value
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.settimeout(value)
        except (OverflowError, ValueError) as exc:
            raise AssertionError(
                f"timeout {value!r} accepted; a socket refuses it: {exc}"
            ) from None


def refused(check: Callable[[], object]) -> bool:
    """Run check; True when it refused with InvalidInputError (anything else propagates)."""
    try:
        check()
    except InvalidInputError:
        return True
    return False


def outcome(call: Callable[[], Any]) -> tuple[Any, IncusError | None]:
    """(result, None), or (None, the IncusError); any other exception propagates."""
    try:
        return call(), None
    except IncusError as exc:
        return None, exc


# --------------------------------------------------------------------------------------------
# Validators of _validate.py


@FUZZ
@given(value=st.one_of(anything, hex_text, hex_text.map(lambda text: text + "\n")))
def test_fingerprint_prefix(value: object) -> None:
    try:
        prefix = validate.fingerprint_prefix(value)
    except InvalidInputError:
        assert not (isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{1,64}", value))
        return
    assert isinstance(value, str)
    assert re.fullmatch(r"[0-9a-f]{1,64}", prefix), prefix
    assert prefix == value.lower()
    assert quote(prefix, safe="") == prefix  # one plain path segment


@FUZZ
@given(value=st.one_of(anything, hex_text, full_fingerprints, full_fingerprints.map(str.upper)))
def test_full_fingerprint(value: object) -> None:
    try:
        fingerprint = validate.full_fingerprint(value)
    except InvalidInputError:
        assert not (isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value))
        return
    assert isinstance(value, str)
    assert _FULL_FP.fullmatch(fingerprint)
    assert fingerprint == value.lower()


def one_path_segment(path: str, collection: str, name: str) -> None:
    assert path.startswith(collection + "/")
    segment = path[len(collection) + 1 :]
    assert segment and "/" not in segment and segment not in (".", "..")
    assert "?" not in segment and "#" not in segment
    assert unquote(segment) == name
    url = httpx.URL("http://incus" + path)
    assert url.raw_path.decode("ascii").split("?")[0] == path


@FUZZ
@given(value=st.one_of(anything, texts))
@example(value="\ud800")
@example(value="a\x00b")
def test_alias_name(value: object) -> None:
    try:
        name = validate.alias_name(value)
    except InvalidInputError:
        return
    assert name is value
    assert sendable(name)
    one_path_segment(alias_path(name), ALIASES, name)


@FUZZ
@given(value=st.one_of(anything, texts))
@example(value="\u202e")
@example(value="x" * 256)
@example(value="\x9b")
def test_new_alias_name(value: object) -> None:
    try:
        name = validate.new_alias_name(value)
    except InvalidInputError:
        return
    assert name is value
    assert isinstance(name, str)
    assert 0 < len(name) <= 255
    assert sendable(name)
    assert not any(
        unicodedata.category(char) == "Cc"
        or "\u202a" <= char <= "\u202e"
        or "\u2066" <= char <= "\u2069"
        for char in name
    )


@FUZZ
@given(value=st.one_of(anything, texts))
@example(value="\udcff")
@example(value="default\x00")
def test_profile_name(value: object) -> None:
    try:
        name = validate.profile_name(value)
    except InvalidInputError:
        return
    assert name is value
    assert sendable(name)


@pytest.mark.parametrize("check", [validate.alias_name, validate.profile_name])
@FUZZ
@given(
    values=st.one_of(
        anything, st.lists(texts, max_size=4), st.tuples(texts, texts), st.lists(anything)
    )
)
def test_names_list(check: Callable[..., str], values: object) -> None:
    try:
        names = validate.names_list(values, "aliases", check)
    except InvalidInputError:
        return
    assert type(names) is list
    if values is None:
        assert names == []
        return
    assert isinstance(values, Sequence) and not isinstance(values, str | bytes)
    assert names == list(values)
    assert len(set(names)) == len(names)
    for name in names:
        check(name)  # each passes the check on its own
        sendable(name)


@FUZZ
@given(value=st.one_of(anything, callables()))
def test_callback(value: object) -> None:
    assert refused(lambda: validate.callback(value, "progress")) == (
        value is not None and not callable(value)
    )


@FUZZ
@given(
    target=st.one_of(anything, hex_text, full_fingerprints),
    description=st.one_of(st.none(), texts, anything),
)
@example(target=FP, description="\ud800")
@example(target=FP, description="a\x00")
def test_alias_fields(target: object, description: object) -> None:
    try:
        fields = validate.alias_fields(target, description)
    except InvalidInputError:
        return
    assert re.fullmatch(r"[0-9a-f]{1,64}", fields["target"])
    if description is None:
        assert set(fields) == {"target"}
    else:
        assert set(fields) == {"target", "description"}
        assert fields["description"] == description
        sendable(fields["description"])


@FUZZ
@given(
    value=st.one_of(
        anything,
        st.dictionaries(texts, texts, max_size=4),
        st.dictionaries(texts, anything, max_size=3),
        st.dictionaries(anything.filter(lambda key: _hashable(key)), texts, max_size=3),
    )
)
@example(value={"os": "\ud800"})
@example(value={"o\x00s": "x"})
def test_properties_map(value: object) -> None:
    try:
        checked = validate.properties_map(value)
    except InvalidInputError:
        return
    assert type(checked) is dict
    if value is None:
        assert checked == {}
        return
    assert isinstance(value, Mapping)
    assert checked == dict(value)
    for key, item in checked.items():
        assert sendable(key) and sendable(item)  # non-empty too
    # The body is JSON, encoded as httpx does: it must encode.
    json.dumps(checked, ensure_ascii=False).encode("utf-8")


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


@pytest.mark.parametrize("allow_zero", [False, True])
@FUZZ
@given(value=st.one_of(anything, numbers, st.floats(min_value=0, max_value=1e12)))
@example(value=10**400)  # an int too large for a float
def test_seconds(allow_zero: bool, value: object) -> None:
    try:
        result = validate.seconds(value, "timeout", allow_zero=allow_zero)
    except InvalidInputError:
        return
    if value is None:
        assert result is None
        return
    assert type(result) is float
    assert isinstance(value, int | float) and not isinstance(value, bool)
    assert math.isfinite(result) and result == value
    assert result > 0 or (allow_zero and result == 0)
    usable_timeout(result)


@FUZZ
@given(value=anything)
def test_boolean_and_optional_boolean(value: object) -> None:
    assert refused(lambda: validate.boolean(value, "wait")) == (type(value) is not bool)
    optional_refused = refused(lambda: validate.optional_boolean(value, "public"))
    assert optional_refused == (value is not None and type(value) is not bool)
    if not optional_refused:
        assert validate.optional_boolean(value, "public") is value


@FUZZ
@given(value=st.one_of(anything, texts, st.text(st.sampled_from(" \ta.é"), max_size=5)))
@example(value=" image.tar.gz")  # h11 refuses leading or trailing whitespace in a header
def test_filename_header(value: object) -> None:
    try:
        header = validate.filename_header(value)
    except InvalidInputError:
        return
    assert isinstance(value, str) and value
    sendable(value)
    assert header == value.encode("utf-8")
    sendable_header("X-Incus-filename", header)


operation_ids = st.one_of(
    st.uuids().map(str),
    st.text(st.sampled_from("0123456789abcdefAZ-_/?."), max_size=20),
    st.uuids().map(lambda value: f"/1.0/operations/{value}"),
    st.uuids().map(lambda value: f"/1.0/operations/{value}?project=x"),
)


@FUZZ
@given(
    value=st.one_of(
        anything,
        operation_ids,
        st.builds(Operation, id=st.one_of(operation_ids, anything)),
    )
)
@example(value=Operation(id=0))  # type: ignore[arg-type]
def test_operation_id(value: object) -> None:
    try:
        op_id = validate.operation_id(value)
    except InvalidInputError:
        return
    assert isinstance(value, str | Operation)
    assert re.fullmatch(r"[0-9A-Za-z-]{1,128}", op_id)
    assert quote(op_id, safe="") == op_id


@FUZZ
@given(
    value=st.one_of(anything, st.text(st.sampled_from("0123456789abcdefXYZ-+/=_"), max_size=130))
)
def test_secret_token(value: object) -> None:
    expected = isinstance(value, str) and re.fullmatch(r"[0-9A-Za-z]{1,128}", value) is not None
    assert refused(lambda: validate.secret_token(value)) == (not expected)
    if expected:
        assert quote(value, safe="") == value  # type: ignore[arg-type]


@FUZZ
@given(
    value=st.one_of(anything, st.sampled_from([*MODES, "PULL", "pull ", ""])),
    choices=st.sampled_from([MODES, ("container", "virtual-machine")]),
)
def test_choice(value: object, choices: tuple[str, ...]) -> None:
    expected = isinstance(value, str) and value in choices
    assert refused(lambda: validate.choice(value, "mode", choices)) == (not expected)
    if expected:
        assert validate.choice(value, "mode", choices) is value


@FUZZ
@given(value=st.one_of(anything, texts), empty=st.booleans())
def test_text(value: object, empty: bool) -> None:
    try:
        result = validate.text(value, "description", empty=empty)
    except InvalidInputError:
        return
    assert result is value
    sendable(result)
    assert empty or result


# Every string argument: a valid value with a NUL or a lone surrogate put into it is refused.
STRING_ARGUMENTS: dict[str, Callable[[str], object]] = {
    "alias_name": validate.alias_name,
    "profile_name": validate.profile_name,
    "names_list": lambda name: validate.names_list([name], "aliases", validate.alias_name),
    "alias description": lambda text: validate.alias_fields(FP, text),
    "property key": lambda text: validate.properties_map({text: "value"}),
    "property value": lambda text: validate.properties_map({"key": text}),
    "filename": validate.filename_header,
    "operation_id": validate.operation_id,
    "secret": validate.secret_token,
    "SimpleStreams url": lambda text: SimpleStreams("https://" + text),
    "endpoint": lambda text: parse_endpoint("/run/" + text),
    "project": lambda text: _client_project(text),
}


def _client_project(project: str) -> None:
    from incus_images import AsyncClient

    AsyncClient("/nonexistent/incus.sock", project=project)


@pytest.mark.parametrize("argument", sorted(STRING_ARGUMENTS))
@FUZZ
@given(
    prefix=st.text(st.sampled_from("abc09"), max_size=4),
    bad=st.sampled_from(["\x00", "\ud800", "\udbff", "\udc80", "\udfff"]),
    suffix=st.text(st.sampled_from("abc09"), max_size=4),
)
def test_nul_and_lone_surrogates_are_refused_in_every_string_argument(
    argument: str, prefix: str, bad: str, suffix: str
) -> None:
    value = "a" + prefix + bad + suffix
    with pytest.raises(InvalidInputError):
        STRING_ARGUMENTS[argument](value)


# --------------------------------------------------------------------------------------------
# Input checks elsewhere: endpoint, export target, upload sources and arguments, copies.


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with a file, an empty file, directories and a FIFO, for path arguments."""
    root = tmp_path_factory.mktemp("fuzz-sandbox")
    (root / "file").write_bytes(b"\x1f\x8b\x08 not json")
    (root / "json").write_bytes(b'  {"source": {}}')
    (root / "empty").write_bytes(b"")
    (root / "dir").mkdir()
    (root / "dir" / "inside").write_bytes(b"x")
    (root / "taken").write_bytes(b"x")
    (root / "taken.root").mkdir()  # a split export's rootfs could not be written
    os.mkfifo(root / "fifo")
    return root


path_names = st.one_of(
    st.sampled_from(
        [
            "file",
            "json",
            "empty",
            "dir",
            "dir/",
            "dir/inside",
            "dir/new",
            "taken",
            "fifo",
            "missing",
            "missing/new",
            "missing/new/",
            "file/",
            "file/sub/",
            "a" * 256 + "/",
            "",
            ".",
            "new.tar.gz",
            "a" * 250,
            "a" * 251,
            "a" * 255,
            "a" * 256,
            "é" * 126,
            "é" * 128,
        ]
    ),
    st.text(st.sampled_from("\x00\ud800\udc80\udcff\n é.ab-"), min_size=1, max_size=10),
    st.text(st.characters(exclude_categories=(), exclude_characters="/"), max_size=20),
)


def under(sandbox: Path, name: str, as_path: bool) -> str | Path:
    joined = f"{sandbox}/{name}"
    return Path(joined) if as_path else joined


class _OddTarget:
    """Stand-ins for values that are not paths at all."""


non_paths = st.one_of(
    st.none(),
    numbers,
    st.binary(max_size=8),
    st.lists(st.text(max_size=3), max_size=2),
    st.sampled_from([_PathLike(b"/tmp/x"), object(), _OddTarget()]),
)


@SLOW
@given(name=path_names, as_path=st.booleans(), other=st.one_of(st.none(), non_paths))
@example(name="a" * 256, as_path=False, other=None)  # longer than any file name
@example(name="x\x00", as_path=False, other=None)
def test_check_export_target(sandbox: Path, name: str, as_path: bool, other: object) -> None:
    target_path = under(sandbox, name, as_path) if other is None else other
    try:
        checked = check_export_target(target_path)  # type: ignore[arg-type]
    except InvalidInputError:
        return
    target = checked.path
    assert isinstance(target, Path)
    assert isinstance(target_path, str | os.PathLike)
    sendable(str(target))
    os.fsencode(target)
    if target.is_dir():
        return
    if checked.make_directory:
        # A directory to make: what mkdir -p will do must work, and leave nothing once undone.
        made = make_directories(target)
        assert made and made[0] == target and target.is_dir()
        remove_made_directories(made)
        assert not target.exists()
        return
    assert target.parent.is_dir()
    for path in (target, rootfs_path(target)):
        assert not path.exists() or path.is_file()
    # What the export will do: create the temporary files beside both targets.
    for path in (target, rootfs_path(target)):
        temporary = path.with_name(temporary_name(path.name))
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except (OSError, ValueError) as exc:
            raise AssertionError(
                f"{target_path!r} was accepted but {temporary} cannot be created: {exc}"
            ) from None
        os.close(fd)
        os.unlink(temporary)
        assert len(path.name.encode("utf-8", "surrogateescape")) <= 255


def sources(sandbox_names: bool = True) -> st.SearchStrategy[Any]:
    return st.one_of(
        anything,
        st.binary(max_size=16),
        st.binary(max_size=16).map(bytearray),
        st.binary(max_size=16).map(memoryview),
        st.binary(max_size=16).map(io.BytesIO),
        st.text(max_size=8).map(io.StringIO),
        st.lists(st.one_of(st.binary(max_size=4), texts, st.integers()), max_size=3),
        st.lists(st.binary(max_size=4), max_size=3).map(iter),
        st.just(_AsyncChunks()),
        st.tuples(path_names, st.booleans()).map(lambda pair: ("sandbox", *pair)),
    )


def _source_value(sandbox: Path, data: object) -> object:
    if isinstance(data, tuple) and len(data) == 3 and data[0] == "sandbox":
        return under(sandbox, data[1], data[2])
    return data


@SLOW
@given(data=sources(), accept_async=st.booleans())
@example(data=("sandbox", "x\x00", False), accept_async=False)
@example(data=("sandbox", "\ud800", False), accept_async=False)
def test_open_source(sandbox: Path, data: object, accept_async: bool) -> None:
    data = _source_value(sandbox, data)
    try:
        source = open_source(data, "image_data", accept_async=accept_async)
    except InvalidInputError:
        return
    assert isinstance(source, Source)
    assert source.size is None or (type(source.size) is int and source.size > 0)
    if isinstance(data, bytes | bytearray | memoryview):
        assert source.kind == "bytes" and source.value == bytes(data)
        assert source.size == len(source.value) > 0
    elif isinstance(data, str | os.PathLike):
        assert source.kind == "path"
        path = sendable(source.value)
        assert os.path.isfile(path) and os.path.getsize(path) == source.size
    elif source.kind == "async_iterable":
        assert accept_async
    else:
        assert source.kind in ("file", "iterable")


@FEWER
@given(
    image_data=st.one_of(
        st.binary(min_size=1, max_size=16).map(lambda data: b"\x1f\x8b" + data),
        st.sampled_from([b'{"source": {}}', b"  null", b"\n\t{"]),
        sources(),
    ),
    rootfs=st.one_of(st.none(), st.none(), st.binary(min_size=1, max_size=8), anything),
    filename=st.one_of(st.none(), texts, st.sampled_from([" a", "a ", "a\tb", "é.tar"])),
    public=st.one_of(st.booleans(), anything),
    auto_update=st.one_of(st.booleans(), anything),
    properties=st.one_of(st.none(), st.dictionaries(texts, texts, max_size=3), anything),
    wait=st.one_of(st.booleans(), anything),
    image_type=st.one_of(st.none(), st.sampled_from(["container", "virtual-machine"]), anything),
    aliases=st.one_of(st.none(), st.lists(texts, max_size=3), anything),
    profiles=st.one_of(st.none(), st.lists(texts, max_size=3), anything),
    fingerprint=st.one_of(st.none(), full_fingerprints, hex_text, anything),
    progress=st.one_of(st.none(), callables(), anything),
    accept_async=st.booleans(),
)
@example(
    image_data=b"\x1f\x8b\x08",
    rootfs=None,
    filename=" ",
    public=False,
    auto_update=False,
    properties=None,
    wait=False,
    image_type=None,
    aliases=None,
    profiles=None,
    fingerprint=None,
    progress=None,
    accept_async=False,
)
def test_prepare_upload(
    sandbox: Path,
    image_data: object,
    rootfs: object,
    filename: object,
    public: object,
    auto_update: object,
    properties: object,
    wait: object,
    image_type: object,
    aliases: object,
    profiles: object,
    fingerprint: object,
    progress: object,
    accept_async: bool,
) -> None:
    try:
        prepared = prepare_upload(
            _source_value(sandbox, image_data),
            rootfs,
            filename=filename,  # type: ignore[arg-type]
            public=public,  # type: ignore[arg-type]
            auto_update=auto_update,  # type: ignore[arg-type]
            properties=properties,
            wait=wait,  # type: ignore[arg-type]
            image_type=image_type,  # type: ignore[arg-type]
            aliases=aliases,
            profiles=profiles,
            fingerprint=fingerprint,
            progress=progress,
            accept_async=accept_async,
        )
    except InvalidInputError:
        return
    assert isinstance(prepared, PreparedUpload)
    for name, value in prepared.headers.items():
        sendable_header(name, value)
    for name in [*prepared.aliases, *prepared.profiles]:
        sendable(name)
    assert len(set(prepared.aliases)) == len(prepared.aliases)
    assert type(public) is bool and type(auto_update) is bool and type(wait) is bool
    if fingerprint is not None:
        assert prepared.headers["X-Incus-fingerprint"] == str(fingerprint).lower()
        assert _FULL_FP.fullmatch(str(prepared.headers["X-Incus-fingerprint"]))
    assert progress is None or callable(progress)
    for segment in prepared.plan.segments:
        assert isinstance(segment.framing, bytes)


https_endpoints = st.builds(
    lambda host, port, tail: f"https://{host}{port}{tail}",
    st.one_of(
        st.sampled_from(["127.0.0.1", "[::1]", "incus.example", "localhost", "[", "[::1", "]"]),
        texts,
        st.text(st.sampled_from("abz09.-[]:%@é"), max_size=10),
    ),
    st.one_of(st.just(""), st.integers(-5, 70000).map(lambda port: f":{port}"), texts),
    st.sampled_from(["", "/", "/x", "?a", "#f"]),
)
unix_endpoints = st.one_of(
    texts.map(lambda path: f"unix://{path}"),
    texts.map(lambda path: f"unix:///{path}"),
    st.text(st.sampled_from("ab/%0fF#?"), max_size=8).map(lambda path: f"unix:///{path}"),
    texts.map(lambda path: f"/{path}"),
)


@FEWER
@given(
    endpoint=st.one_of(
        anything,
        https_endpoints,
        unix_endpoints,
        st.one_of(https_endpoints, unix_endpoints).map(_PathLike),
        st.sampled_from(["HTTPS://A", "http://x", "ftp://x", "unix:", "unix://host/x", "incus"]),
    ),
    cert=st.one_of(st.none(), st.none(), anything, st.sampled_from(["file", ("file", "file")])),
    verify=st.one_of(st.just(False), st.just(True), anything, st.sampled_from(["file", "dir"])),
)
@example(endpoint="https://[", cert=None, verify=False)
def test_parse_endpoint(sandbox: Path, endpoint: object, cert: object, verify: object) -> None:
    def in_sandbox(value: object) -> object:
        if value in ("file", "dir"):
            return str(sandbox / str(value))
        if value == ("file", "file"):
            return (str(sandbox / "file"), str(sandbox / "file"))
        return value

    try:
        resolved = parse_endpoint(endpoint, cert=in_sandbox(cert), verify=in_sandbox(verify))  # type: ignore[arg-type]
    except InvalidInputError:
        return
    if endpoint is None:
        assert resolved is None
        return
    assert isinstance(resolved, Endpoint)
    sendable(resolved.display)
    sendable(resolved.base_url)
    if resolved.socket_path is not None:
        path = sendable(resolved.socket_path)
        assert path.startswith("/")
        os.fsencode(path)
        assert resolved.ssl_context is None
        assert resolved.base_url == "http://incus"
    else:
        assert resolved.ssl_context is not None
        try:
            url = httpx.URL(resolved.base_url)
        except (httpx.InvalidURL, ValueError) as exc:
            raise AssertionError(
                f"{endpoint!r} was accepted as {resolved.base_url!r}: {exc!r}"
            ) from None
        assert url.scheme == "https" and url.host and url.port is not None
        assert 0 < url.port < 65536 and url.raw_path in (b"", b"/")


@FUZZ
@given(
    url=st.one_of(
        anything,
        https_endpoints,
        texts.map(lambda text: "https://images.example/" + text),
        st.sampled_from(["https://", "https://[", "https://a:99999", "http://x", "https://a b"]),
    ),
    certificate=st.one_of(st.none(), st.none(), texts, anything),
)
@example(url="https://[", certificate=None)
def test_simplestreams(url: object, certificate: object) -> None:
    try:
        server = SimpleStreams(url, certificate=certificate)  # type: ignore[arg-type]
    except InvalidInputError:
        return
    sendable(server.url)
    assert server.url.isprintable()
    parts = urlsplit(server.url)
    assert parts.scheme.lower() == "https" and parts.hostname
    assert not parts.query and not parts.fragment and "@" not in parts.netloc
    assert parts.port is None or 0 < parts.port < 65536
    if server.certificate is not None:
        sendable(server.certificate)


@FUZZ
@given(
    mode=st.one_of(st.none(), st.sampled_from(MODES), anything),
    aliases=st.one_of(st.none(), st.lists(texts, max_size=3), anything),
    copy_aliases=st.one_of(st.booleans(), anything),
    public=st.one_of(st.none(), st.booleans(), anything),
    auto_update=st.one_of(st.none(), st.booleans(), anything),
    profiles=st.one_of(st.none(), st.lists(texts, max_size=3), anything),
    image_type=st.one_of(st.none(), st.sampled_from(["container", "virtual-machine"]), anything),
    progress=st.one_of(st.none(), callables(), anything),
    wait=st.one_of(st.booleans(), anything),
    timeout=st.one_of(st.none(), st.floats(), st.integers(), anything),
    reuse=st.one_of(st.booleans(), anything),
    architecture=st.one_of(st.none(), st.sampled_from(["x86_64", "arm64", "aarch64"]), anything),
)
def test_copy_options(
    mode: object,
    aliases: object,
    reuse: object,
    architecture: object,
    copy_aliases: object,
    public: object,
    auto_update: object,
    profiles: object,
    image_type: object,
    progress: object,
    wait: object,
    timeout: object,
) -> None:
    try:
        options = copy_options(
            mode=mode,
            aliases=aliases,
            reuse=reuse,
            architecture=architecture,
            copy_aliases=copy_aliases,
            public=public,
            auto_update=auto_update,
            profiles=profiles,
            image_type=image_type,
            progress=progress,
            wait=wait,
            timeout=timeout,
        )
    except InvalidInputError:
        return
    assert isinstance(options, CopyOptions)
    left = options.budget.left()
    assert left is None or (math.isfinite(left) and left >= 0)
    assert options.mode is None or options.mode in MODES
    assert type(options.copy_aliases) is bool and type(options.wait) is bool
    assert type(options.reuse) is bool
    assert options.architecture is None or options.architecture in ARCHITECTURES
    assert options.public is None or type(options.public) is bool
    assert options.auto_update is None or type(options.auto_update) is bool
    assert options.image_type in (None, "container", "virtual-machine")
    assert options.progress is None or callable(options.progress)
    for name in [*options.aliases, *(options.profiles or [])]:
        sendable(name)
    assert len(set(options.aliases)) == len(options.aliases)


# --------------------------------------------------------------------------------------------
# The converter: model-shaped JSON with damage, and arbitrary JSON.

CONVERTERS = {False: make_converter(strict=False), True: make_converter(strict=True)}
STRICTNESS = pytest.mark.parametrize("strict", [False, True], ids=["lenient", "strict"])


@contextlib.contextmanager
def protocol_converter(strict: bool) -> Iterator[None]:
    """Make _protocol (structure, parse_wait) use this converter for the duration."""
    saved = protocol.converter
    protocol.converter = CONVERTERS[strict]
    try:
        yield
    finally:
        protocol.converter = saved


JSON_KEYS = {(Operation, "class_"): "class"}
UTC_OFFSETS = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
timestamps = st.one_of(
    st.builds(
        lambda moment, zone: moment.replace(tzinfo=zone).isoformat(),
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
        st.sampled_from(UTC_OFFSETS),
    ),
    # Go's form: "Z" and nanoseconds.
    st.datetimes(min_value=datetime(1, 1, 2)).map(
        lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
    ),
    st.sampled_from(
        [
            "0001-01-01T00:00:00Z",
            "2026-11-26T17:31:44.295220911Z",
            "2023-11-14T22:13:20Z",
            "2023-11-14T22:13:20",  # no time zone
            "2023-13-14T22:13:20Z",
            "",
        ]
    ),
)
FIELD_VALUES: dict[tuple[type[Any], str], st.SearchStrategy[Any]] = {
    (Image, "fingerprint"): st.one_of(full_fingerprints, full_fingerprints, hex_text),
    (ImageAlias, "target"): st.one_of(full_fingerprints, st.just(""), hex_text),
    (Operation, "id"): st.one_of(st.uuids().map(str), st.uuids().map(str), texts),
}


def _json_key(cls: type[Any], name: str) -> str:
    return JSON_KEYS.get((cls, name), name)


def _non_none(annotation: Any) -> list[Any]:
    return [arg for arg in typing.get_args(annotation) if arg is not type(None)]


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def value_strategy(annotation: Any) -> st.SearchStrategy[Any]:
    """Valid JSON for a field of this type."""
    if _is_union(annotation):
        return value_strategy(_non_none(annotation)[0])
    if annotation is Any:
        return json_values
    if annotation is str:
        return texts
    if annotation is bool:
        return st.booleans()
    if annotation is int:
        return st.one_of(st.integers(min_value=0, max_value=2**40), st.integers())
    if annotation is datetime:
        return timestamps
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        return st.lists(value_strategy(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(texts, value_strategy(args[1]), max_size=3)
    if attrs.has(annotation):
        return model_json(annotation)
    raise AssertionError(f"no strategy for {annotation!r}")


@functools.cache
def _field_strategies(cls: type[Any]) -> list[tuple[str, bool, st.SearchStrategy[Any]]]:
    hints = typing.get_type_hints(cls)
    return [
        (
            _json_key(cls, field.name),
            field.default is attrs.NOTHING,
            FIELD_VALUES[cls, field.name]
            if (cls, field.name) in FIELD_VALUES
            else value_strategy(hints[field.name]),
        )
        for field in attrs.fields(cls)
    ]


@st.composite
def model_json(draw: st.DrawFn, cls: type[Any]) -> dict[str, Any]:
    """A JSON object shaped like the model: most fields valid or absent, a few damaged (junk
    of any JSON type, or null), and now and then a key the model does not know."""
    fields = _field_strategies(cls)
    damaged = draw(st.sets(st.integers(0, len(fields) - 1), max_size=2))
    data: dict[str, Any] = {}
    for index, (key, required, valid) in enumerate(fields):
        if index in damaged:
            how = draw(st.sampled_from(["junk", "null", "absent"]))
        elif required:
            how = "valid"
        else:
            how = draw(st.sampled_from(["valid", "valid", "absent"]))
        if how == "absent":
            continue
        data[key] = None if how == "null" else draw(json_values if how == "junk" else valid)
    if draw(st.integers(0, 7)) == 0:
        data[draw(texts)] = draw(json_values)  # an unknown key (a newer server's field)
    return data


def check_value(value: Any, raw: Any, annotation: Any, where: str) -> None:
    """value was taken from the JSON value raw as a field of this type, with no coercion."""
    if _is_union(annotation):
        if raw is None:
            assert value is None, where
            return
        annotation = _non_none(annotation)[0]
    if annotation is Any:
        assert value is raw or value == raw, where
    elif annotation in (str, int, bool):
        assert type(raw) is annotation, (
            f"{where}: {type(raw).__name__} {raw!r:.60} became {value!r:.60}"
        )
        assert type(value) is annotation and value == raw, where
        if annotation is str:
            utf8(value, where)
    elif annotation is datetime:
        assert type(raw) is str, f"{where}: {raw!r:.60} became {value!r:.60}"
        assert value is None or (type(value) is datetime and value.tzinfo is not None), where
    elif typing.get_origin(annotation) is list:
        assert type(raw) is list, f"{where}: {type(raw).__name__} {raw!r:.60} became {value!r:.60}"
        assert type(value) is list and len(value) == len(raw), where
        for index, (item, raw_item) in enumerate(zip(value, raw, strict=True)):
            check_value(item, raw_item, typing.get_args(annotation)[0], f"{where}[{index}]")
    elif typing.get_origin(annotation) is dict:
        assert type(raw) is dict, f"{where}: {type(raw).__name__} {raw!r:.60} became {value!r:.60}"
        assert type(value) is dict and list(value) == list(raw), where
        for key, item in value.items():
            utf8(key, where)
            check_value(item, raw[key], typing.get_args(annotation)[1], f"{where}[{key!r}]")
    elif attrs.has(annotation):
        check_model(value, raw, annotation, where)
    else:
        raise AssertionError(f"{where}: unexpected annotation {annotation!r}")


def check_model(model: Any, raw: Any, cls: type[Any], where: str = "") -> None:
    """model is a valid cls built from raw: declared types, values as sent, identifiers."""
    where = where or cls.__name__
    assert type(model) is cls, where
    assert type(raw) is dict, f"{where}: built from a {type(raw).__name__}"
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        key = _json_key(cls, field.name)
        value = getattr(model, field.name)
        path = f"{where}.{field.name}"
        if (cls, field.name) == (Image, "aliases") and raw.get(key) is not None:
            # Inside an image, aliases get the image's fingerprint and type.
            assert type(raw[key]) is list and len(value) == len(raw[key]), path
            for index, (alias, raw_alias) in enumerate(zip(value, raw[key], strict=True)):
                assert type(alias) is ImageAlias and type(raw_alias) is dict, path
                assert alias.target == model.fingerprint and alias.type == model.type, path
                for name in ("name", "description"):
                    if raw_alias.get(name) is not None:
                        check_value(getattr(alias, name), raw_alias[name], str, f"{path}[{index}]")
            continue
        if raw.get(key) is None:
            assert field.default is not attrs.NOTHING, f"{path}: required, but missing"
            default = field.default
            if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
                default = default.factory()  # type: ignore[attr-defined]
            assert value == default, f"{path}: {value!r:.60} instead of the default"
            continue
        check_value(value, raw[key], hints[field.name], path)
    if cls is Image:
        assert _FULL_FP.fullmatch(model.fingerprint), where
    if cls is ImageAlias:
        assert model.target == "" or _FULL_FP.fullmatch(model.target), where
    if cls is Operation:
        assert _UUID.fullmatch(model.id), where


def check_structured(result: Any, data: Any, target: Any) -> None:
    if target == list[Image]:
        assert type(data) is list, f"list[Image] built from a {type(data).__name__}: {data!r:.60}"
        assert type(result) is list and len(result) == len(data)
        for image, raw in zip(result, data, strict=True):
            check_model(image, raw, Image)
    else:
        check_model(result, data, target)


def structure_property(target: Any, value: Any, strict: bool) -> None:
    """structure() gives a valid model of target taken from value as it is, or an IncusError."""
    with protocol_converter(strict):
        result, error = outcome(lambda: structure(CALL, SERVER, value, target))
    if error is None:
        check_structured(result, value, target)


#: Minimal examples Hypothesis found (see the tests at the end of the file).
STRING_AS_LIST = {"fingerprint": FP, "profiles": "default"}
#: ... and a JSON array read as an object whose fields all have defaults.
ARRAY_AS_SOURCE = {"fingerprint": FP, "update_source": []}


@STRICTNESS
@FUZZ
@given(value=st.one_of(model_json(Image), model_json(Image), json_values))
@example(value=STRING_AS_LIST)
def test_structure_image(strict: bool, value: Any) -> None:
    structure_property(Image, value, strict)


@STRICTNESS
@FUZZ
@given(value=st.one_of(st.lists(model_json(Image), max_size=3), json_values))
@example(value={})
def test_structure_image_list(strict: bool, value: Any) -> None:
    structure_property(list[Image], value, strict)


@STRICTNESS
@FUZZ
@given(value=st.one_of(model_json(ImageAlias), model_json(ImageAlias), json_values))
def test_structure_image_alias(strict: bool, value: Any) -> None:
    structure_property(ImageAlias, value, strict)


@pytest.mark.parametrize(
    "strict",
    [
        pytest.param(False, id="lenient"),
        pytest.param(True, id="strict"),
    ],
)
@FUZZ
@given(value=st.one_of(model_json(ImageSource), model_json(ImageSource), json_values))
@example(value=[])
def test_structure_image_source(strict: bool, value: Any) -> None:
    structure_property(ImageSource, value, strict)


@STRICTNESS
@FUZZ
@given(value=st.one_of(model_json(Operation), model_json(Operation), json_values))
@example(value={"id": OP_ID, "resources": {"images": "abc"}})
def test_structure_operation(strict: bool, value: Any) -> None:
    structure_property(Operation, value, strict)


@STRICTNESS
@FUZZ
@given(value=st.one_of(model_json(ServerInfo), model_json(ServerInfo), json_values))
@example(value=[])
def test_structure_server_info(strict: bool, value: Any) -> None:
    structure_property(ServerInfo, value, strict)


@STRICTNESS
@FUZZ
@given(value=st.one_of(model_json(ServerEnvironment), model_json(ServerEnvironment), json_values))
@example(value=[])
def test_structure_server_environment(strict: bool, value: Any) -> None:
    structure_property(ServerEnvironment, value, strict)


# --------------------------------------------------------------------------------------------
# Response parsing: any bytes, any JSON, any depth.

statuses = st.one_of(
    st.sampled_from([200, 201, 202, 204, 400, 403, 404, 409, 412, 500, 503]),
    st.integers(min_value=100, max_value=599),
)


def _dumps(value: Any, ascii_only: bool) -> bytes:
    if ascii_only:
        return json.dumps(value).encode()
    # Lone surrogates become invalid UTF-8: what a broken server could send.
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


envelopes = st.fixed_dictionaries(
    {"type": st.sampled_from(["sync", "async", "error"])},
    optional={
        "metadata": st.one_of(model_json(Operation), model_json(Image), json_values),
        "operation": st.one_of(st.just(f"/1.0/operations/{OP_ID}"), json_values),
        "error": json_values,
        "error_code": st.one_of(statuses, json_values),
        "status_code": json_values,
    },
)


def deep(depth: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * depth + b"]" * depth
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b'[{"a":' * depth + b"[]" + b"}]" * depth


depths = st.one_of(
    st.integers(min_value=1, max_value=200_000),
    st.integers(min_value=850, max_value=1100),  # around the interpreter's recursion limit
)
deep_bodies = st.builds(
    lambda depth, kind, wrap: wrap.replace(b"@", deep(depth, kind)),
    depths,
    st.sampled_from(["array", "object", "mixed"]),
    st.sampled_from(
        [
            b"@",
            b'{"type":"sync","metadata":@}',
            b'{"type":"sync","metadata":{"fingerprint":"' + FP.encode() + b'","properties":@}}',
            b'{"type":"sync","metadata":{"id":"' + OP_ID.encode() + b'","metadata":@}}',
            b'{"type":"error","error":@,"error_code":500}',
            b'{"type":"error","error":"x","error_code":@}',
        ]
    ),
)
bodies = st.one_of(
    st.binary(max_size=200),
    st.builds(_dumps, json_values, st.booleans()),
    st.builds(_dumps, envelopes, st.booleans()),
    deep_bodies,
)


def response(status: int, body: bytes, etag: str | None = None) -> httpx.Response:
    headers = {"etag": etag} if etag is not None else {}
    return httpx.Response(status, content=body, headers=headers)


@STRICTNESS
@SLOW
@given(status=statuses, body=bodies, etag=st.one_of(st.none(), st.text('abc"-0', max_size=6)))
@example(status=200, body=deep(100_000, "array"), etag=None)
def test_parse_envelope(strict: bool, status: int, body: bytes, etag: str | None) -> None:
    with protocol_converter(strict):
        envelope, error = outcome(
            lambda: parse_envelope(CALL, SERVER, response(status, body, etag))
        )
    if error is not None:
        if status >= 400:
            assert isinstance(error, APIError) and error.status_code == status
        assert isinstance(error.message, str) and SERVER in error.message
        return
    assert status < 400
    assert isinstance(envelope, Envelope)
    assert envelope.type in ("sync", "async")
    assert type(envelope.operation) is str
    assert envelope.etag == etag


@STRICTNESS
@SLOW
@given(status=statuses, body=bodies)
@example(status=200, body=deep(100_000, "array"))
def test_parse_wait(strict: bool, status: int, body: bytes) -> None:
    with protocol_converter(strict):
        result, error = outcome(lambda: parse_wait(WAIT_CALL, SERVER, response(status, body)))
    if error is not None:
        if status == 404:
            assert isinstance(error, OperationGoneError)
        elif status >= 400:
            assert isinstance(error, APIError) and error.status_code == status
        return
    assert status < 400
    assert isinstance(result, WaitResult)
    if result.operation is not None:
        check_model(result.operation, json.loads(body)["metadata"], Operation)
    assert result.failure is None or type(result.failure) is str
    assert result.failure_code is None or type(result.failure_code) is int


@SLOW
@given(body=bodies)
@example(body=deep(30_000, "array"))
def test_server_error_text(body: bytes) -> None:
    text, code = server_error_text(body)
    assert type(text) is str and text.strip()
    assert len(text) <= MAX_QUOTED_ERROR + len("... (1234567890 characters)")
    assert code is None or type(code) is int


@SLOW
@given(status=statuses, body=bodies)
@example(status=500, body=deep(30_000, "object"))
def test_api_error(status: int, body: bytes) -> None:
    error = api_error(CALL, SERVER, status, body)
    assert isinstance(error, APIError)
    assert error.status_code == status and error.server == SERVER
    assert SERVER in str(error) and CALL.path in str(error)
    assert error.error_code is None or type(error.error_code) is int


image_urls = st.one_of(
    full_fingerprints.map(lambda fp: f"{IMAGES}/{fp}"),
    full_fingerprints.map(lambda fp: f"{IMAGES}/{fp}?project=default"),
    st.text(st.sampled_from(HEX + "/?.%"), max_size=70).map(lambda text: f"{IMAGES}/{text}"),
    json_values,
)


@FUZZ
@given(urls=st.one_of(st.lists(image_urls, max_size=4), json_values))
def test_fingerprints_from_urls(urls: Any) -> None:
    fingerprints, error = outcome(lambda: fingerprints_from_urls(CALL, SERVER, urls))
    if error is not None:
        return
    assert type(urls) is list and len(fingerprints) == len(urls)
    assert fingerprints == sorted(fingerprints)
    for fingerprint in fingerprints:
        assert _FULL_FP.fullmatch(fingerprint)


metadata_values = st.one_of(
    st.none(),
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            "fingerprint": st.one_of(full_fingerprints, hex_text, json_values),
            "secret": st.one_of(
                st.text(st.sampled_from("0123456789abcdefXY-/ \x00é"), max_size=130), json_values
            ),
        },
    ),
)


@FUZZ
@given(metadata=metadata_values)
def test_stored_fingerprint_and_token_secret(metadata: Any) -> None:
    operation = Operation(id=OP_ID, status_code=200, metadata=metadata)
    fingerprint = stored_fingerprint(operation)
    assert fingerprint is None or _FULL_FP.fullmatch(fingerprint)
    if isinstance(metadata, dict) and fingerprint is None:
        reported = metadata.get("fingerprint")
        assert not (isinstance(reported, str) and _FULL_FP.fullmatch(reported))
    secret, error = outcome(lambda: token_secret(CALL, SERVER, operation))
    if error is None:
        assert re.fullmatch(r"[0-9A-Za-z]{1,128}", secret)
        assert quote(secret, safe="") == secret


# --------------------------------------------------------------------------------------------
# Deterministic tests of the bugs the properties found (minimal inputs from Hypothesis).


# --------------------------------------------------------------------------------------------
# The bugs found, one deterministic test each, with the minimal input Hypothesis reported.


def test_a_timeout_too_large_for_a_float_is_invalid_input() -> None:
    from incus_images import AsyncClient

    with pytest.raises(InvalidInputError):
        validate.seconds(10**400, "timeout")
    with pytest.raises(InvalidInputError):
        AsyncClient("/nonexistent/incus.sock", timeout=10**400)


@pytest.mark.parametrize("filename", [" image.tar.gz", "image.tar.gz "])
def test_a_filename_h11_cannot_send_is_invalid_input(filename: str) -> None:
    with pytest.raises(InvalidInputError):
        validate.filename_header(filename)


def test_an_operation_whose_id_is_not_a_string_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError):
        validate.operation_id(Operation(id=0))  # type: ignore[arg-type]


@pytest.mark.parametrize("endpoint", ["https://[", "https://[::1", "A://[]"])
def test_an_endpoint_urlsplit_refuses_is_invalid_input(endpoint: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_endpoint(endpoint, verify=False)


def test_a_simplestreams_url_urlsplit_refuses_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError):
        SimpleStreams("https://[")


def test_a_percent_encoded_nul_in_a_unix_endpoint_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError):
        parse_endpoint("unix:///run/a%00b")


@pytest.mark.parametrize("endpoint", ["https://a\x7f", "https://\xa0", "https://xn--a"])
def test_an_https_host_httpx_refuses_is_invalid_input(endpoint: str) -> None:
    # Accepted today, and then the client's first request raises httpx.InvalidURL.
    with pytest.raises(InvalidInputError):
        parse_endpoint(endpoint, verify=False)


@STRICTNESS
@pytest.mark.parametrize(
    ("target", "value"),
    [
        (Image, STRING_AS_LIST),  # profiles ['d', 'e', 'f', 'a', 'u', 'l', 't']
        (Image, {"fingerprint": FP, "profiles": {}}),  # profiles []
        (list[Image], {}),  # images.list() -> [] for a metadata of {}
        (Operation, {"id": OP_ID, "resources": {"images": "abc"}}),
        (ServerEnvironment, {"addresses": ""}),
    ],
    ids=[
        "image-profiles-str",
        "image-profiles-object",
        "image-list-object",
        "op-resources",
        "environment-addresses",
    ],
)
def test_a_string_or_object_is_not_read_as_a_list(strict: bool, target: Any, value: Any) -> None:
    with protocol_converter(strict), pytest.raises(IncusError):
        structure(CALL, SERVER, value, target)


@pytest.mark.parametrize(
    ("target", "value", "strict"),
    [
        pytest.param(ImageSource, [], False, id="image-source-lenient"),
        pytest.param(Image, ARRAY_AS_SOURCE, False, id="image-update-source-lenient"),
        pytest.param(ServerInfo, [], False, id="server-info-lenient"),
        pytest.param(ServerInfo, [], True, id="server-info-strict"),
        pytest.param(ServerEnvironment, [], True, id="server-environment-strict"),
        pytest.param(ServerInfo, "", True, id="server-info-empty-string"),
    ],
)
def test_an_array_is_not_read_as_an_object(target: Any, value: Any, strict: bool) -> None:
    with protocol_converter(strict), pytest.raises(IncusError):
        structure(CALL, SERVER, value, target)
