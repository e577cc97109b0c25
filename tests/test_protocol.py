"""Unit tests of the sans-IO protocol core (incus_images._protocol): no server, no I/O."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import unquote

import httpx
import pytest

from incus_images._errors import (
    AmbiguousFingerprintError,
    APIError,
    ChecksumMismatchError,
    ConflictError,
    ForbiddenError,
    ImageExistsError,
    IncusConnectionError,
    IncusError,
    IncusTimeoutError,
    InvalidInputError,
    LeftBehind,
    NotFoundError,
    OperationError,
    OperationGoneError,
    PreconditionFailedError,
    UnexpectedResponseError,
    note_left_behind,
)
from incus_images._models import Image, Operation, OperationStatus
from incus_images._protocol import (
    ALIASES,
    MAX_ERROR_BODY,
    MAX_QUOTED_ERROR,
    Call,
    Envelope,
    WaitResult,
    alias_path,
    api_error,
    operation_failure,
    parse_envelope,
    parse_wait,
    record_interruption,
    server_error_text,
    transport_error,
)
from incus_images._requests import ImageChanges, ImagePatch, ImagePut
from incus_images._transfer.plan import list_header
from incus_images._transfer.sources import looks_like_json
from incus_images._validate import (
    alias_name,
    filename_header,
    fingerprint_prefix,
    full_fingerprint,
    new_alias_name,
    operation_id,
    properties_map,
)
from tests.helpers import error_response, operation, sync_response

FP = "6bcb9190f8bea56cb09463728faddd8b72e996506d3575f0e027cdbbe0440c05"
OTHER_FP = "0" * 63 + "1"
SERVER = "unix:///run/incus/unix.socket"
OP_ID = "41b69ae9-44bf-4b27-a0e5-23d3b8614fbf"
LATER = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)

GET_CALL = Call(method="GET", path=f"/1.0/images/{FP[:12]}", action=f"get image '{FP[:12]}'")
WAIT_CALL = Call(
    method="GET",
    path=f"/1.0/operations/{OP_ID}/wait",
    action=f"wait for operation {OP_ID}",
    project_scoped=False,
)


def op_model(status_code: int = 103, metadata: object = None, err: str = "") -> Operation:
    return Operation(
        id=OP_ID,
        class_="task",
        status={103: "Running", 200: "Success", 400: "Failure", 401: "Cancelled"}[status_code],
        status_code=status_code,
        metadata=metadata,  # type: ignore[arg-type]
        err=err,
    )


def raw_response(status: int, content: bytes, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=content, headers=headers)


# --------------------------------------------------------------------------------------------
# fingerprint_prefix / full_fingerprint


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a", "a"),
        ("A", "a"),
        ("0", "0"),
        ("6BcB91", "6bcb91"),
        (FP, FP),
        (FP.upper(), FP),
        ("f" * 64, "f" * 64),
    ],
)
def test_fingerprint_prefix_accepts_hex_of_any_case(value: str, expected: str) -> None:
    assert fingerprint_prefix(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "_",
        "%",
        "g",
        "../x",
        "0" * 65,
        FP + "0",
        "ab cd",
        " ab",
        "ab\n",
        "ab/cd",
        "ab%25",
        "\uff10",  # FULLWIDTH DIGIT ZERO: a digit to Unicode, not hex to Incus
        "0x12",
    ],
)
def test_fingerprint_prefix_refuses_non_hex(value: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        fingerprint_prefix(value)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, IncusError)
    # The message names the input and the argument.
    assert repr(value) in str(info.value)
    assert "fingerprint" in str(info.value)


@pytest.mark.parametrize("value", [None, 12, b"abcd", ["ab"], 1.5, True])
def test_fingerprint_prefix_refuses_non_strings(value: object) -> None:
    with pytest.raises(InvalidInputError, match="must be a string") as info:
        fingerprint_prefix(value)
    assert isinstance(info.value, ValueError)
    assert type(value).__name__ in str(info.value)


def test_fingerprint_prefix_names_the_argument() -> None:
    with pytest.raises(InvalidInputError, match=r"^target 'xyz' is not a fingerprint"):
        fingerprint_prefix("xyz", argument="target")


def test_full_fingerprint_accepts_64_digits_only() -> None:
    assert full_fingerprint(FP.upper()) == FP
    with pytest.raises(InvalidInputError, match="64 hex digits") as info:
        full_fingerprint(FP[:63])
    assert repr(FP[:63]) in str(info.value)
    with pytest.raises(InvalidInputError):
        full_fingerprint(FP + "a")
    with pytest.raises(InvalidInputError):
        full_fingerprint("_" * 64)
    with pytest.raises(InvalidInputError):
        full_fingerprint(None)


# --------------------------------------------------------------------------------------------
# Alias names and paths


@pytest.mark.parametrize("name", ["a", "with space", "a/b", "ü☃", ".", "..", "%", "-"])
def test_alias_name_accepts_any_non_empty_text(name: str) -> None:
    assert alias_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "must not be empty"),
        ("nul\x00x", "NUL"),
        ("\ud800", "lone surrogate"),
        ("tab\there", "U\\+0009"),
        ("esc\x1b[2J", "U\\+001B"),
        ("del\x7f", "U\\+007F"),
        ("c1\x85", "U\\+0085"),
        ("c1\x9b31m", "U\\+009B"),
        ("evil\u202egnp.exe", "U\\+202E"),
        ("\u202aleft", "U\\+202A"),
        ("iso\u2066late", "U\\+2066"),
        ("iso\u2069late", "U\\+2069"),
        ("x" * 256, "256 characters long"),
    ],
)
def test_a_new_alias_name_follows_one_rule(name: str, why: str) -> None:
    with pytest.raises(InvalidInputError, match=why):
        new_alias_name(name)


@pytest.mark.parametrize("name", ["a", "debian/12", "ü☃ 日本", "x" * 255, "\u200fmark", "a\u2065b"])
def test_a_new_alias_name_may_be_any_other_text(name: str) -> None:
    assert new_alias_name(name) == name
    # A lookup takes what a new name may be, and more (aliases other clients made).
    assert alias_name(name) == name
    assert alias_name("tab\there") == "tab\there"


def test_alias_name_refuses_empty_nul_and_non_strings() -> None:
    with pytest.raises(InvalidInputError, match="must not be empty") as info:
        alias_name("")
    assert isinstance(info.value, ValueError)
    with pytest.raises(InvalidInputError, match="NUL") as info:
        alias_name("a\x00b")
    assert "'a\\x00b'" in str(info.value)
    for value in (None, 3, b"name"):
        with pytest.raises(InvalidInputError, match="must be a string"):
            alias_name(value)


@pytest.mark.parametrize(
    "name",
    [
        "plain",
        "a/b",
        "/",
        "a?b=c",
        "a#frag",
        "100%",
        "%2F",
        "%2e%2e",
        "with space",
        ".",
        "..",
        "...",
        "../images",
        "../../1.0",
        "./x",
        "x/..",
        "a\\b",
        "a;b",
        "a+b&c",
        "ü☃",
        "~user",
    ],
)
def test_alias_path_is_one_segment_that_decodes_to_the_name(name: str) -> None:
    path = alias_path(name)
    prefix = ALIASES + "/"
    assert path.startswith(prefix)
    segment = path[len(prefix) :]
    for char in "/?#. \\":
        assert char not in segment, (name, segment)
    assert unquote(segment) == name

    # What httpx actually sends: the same single segment, never normalised elsewhere.
    for url in (
        httpx.URL("http://incus" + path),
        httpx.Client(base_url="http://incus").build_request("GET", path).url,
    ):
        raw = url.raw_path.decode("ascii")
        assert raw == path
        assert raw.startswith(prefix)
        assert "/" not in raw[len(prefix) :]
        assert url.query == b""
        assert url.fragment == ""


def test_alias_path_encodes_dots_so_dot_segments_cannot_appear() -> None:
    assert alias_path(".") == "/1.0/images/aliases/%2E"
    assert alias_path("..") == "/1.0/images/aliases/%2E%2E"
    assert alias_path("a.b") == "/1.0/images/aliases/a%2Eb"
    assert alias_path("a/b") == "/1.0/images/aliases/a%2Fb"
    assert alias_path("%") == "/1.0/images/aliases/%25"
    assert alias_path(" ") == "/1.0/images/aliases/%20"
    # Already-encoded-looking text is encoded again, not passed through.
    assert alias_path("%2E%2E") == "/1.0/images/aliases/%252E%252E"


# --------------------------------------------------------------------------------------------
# properties, headers, patch bodies


def test_properties_map_accepts_strings_and_copies() -> None:
    given = {"os": "Übuntu ☃", "weird": "a&b=c d+e%", "k": "v"}
    checked = properties_map(given)
    assert checked == given
    assert checked is not given
    assert properties_map(None) == {}
    assert properties_map({}) == {}


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (["a", "b"], "must be a mapping"),
        ("os=x", "must be a mapping"),
        ({"": "x"}, "a key must not be empty"),
        ({1: "x"}, "a key must be a string, got int"),
        ({"o\x00s": "x"}, "contains a NUL character"),
        ({"os": "deb\x00ian"}, r"properties\['os'\] 'deb\\x00ian' contains a NUL character"),
        ({"os": "\udc80"}, "lone surrogate"),
        ({"\ud800": "x"}, "lone surrogate"),
        ({"os": 1}, r"properties\['os'\] must be a string, got int"),
        ({"os": None}, r"properties\['os'\] must be a string"),
        ({"os": ""}, r"properties\['os'\] is empty"),
    ],
)
def test_properties_map_refuses(value: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match) as info:
        properties_map(value)
    assert isinstance(info.value, ValueError)


def test_list_header_is_url_encoded() -> None:
    assert list_header("alias", ["a b", "c&d", "ü"]) == "alias=a+b&alias=c%26d&alias=%C3%BC"
    assert list_header("profile", []) == ""


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tiny.tar.gz", b"tiny.tar.gz"),
        ("Übung ☃.tar.xz", "Übung ☃.tar.xz".encode()),
        ('a b;c="d"', b'a b;c="d"'),
    ],
)
def test_filename_header_is_utf8_bytes(name: str, expected: bytes) -> None:
    header = filename_header(name)
    assert isinstance(header, bytes)
    assert header == expected


@pytest.mark.parametrize("name", ["a\r\nX-Evil: 1", "a\nb", "a\rb", "a\x00b", "a\tb", "a\x7fb"])
def test_filename_header_refuses_control_characters(name: str) -> None:
    with pytest.raises(InvalidInputError, match=r"control characters|NUL character") as info:
        filename_header(name)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("value", ["", None, b"x.tar", 5])
def test_filename_header_refuses_empty_and_non_strings(value: object) -> None:
    with pytest.raises(InvalidInputError, match=r"must not be empty|must be a string"):
        filename_header(value)


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (b"{", True),
        (b'{"source": {}}', True),
        (b" \t\r\n{", True),
        (b"null", True),
        (b"\n null", True),
        (b"\x1f\x8b\x08\x00", False),  # gzip
        (b"\xfd7zXZ\x00", False),  # xz
        (b"metadata.yaml\x00\x00", False),  # plain tar
        (b"hsqs", False),  # squashfs
        (b"", False),
        (b"   ", False),
        (b"[1, 2]", False),  # Go cannot decode an array into ImagesPost: an upload
        (b"nul", False),
        (b"x{", False),
    ],
)
def test_looks_like_json(first: bytes, expected: bool) -> None:
    assert looks_like_json(first) is expected


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # Properties alone: a PATCH that deletes what is not wanted (sent empty).
        (
            ImageChanges(properties={"keep": "2", "new": "ü"}),
            ImagePatch(properties={"os": "", "old": "", "keep": "2", "new": "ü"}),
        ),
        (ImageChanges(properties={}), ImagePatch(properties={"os": "", "old": "", "keep": ""})),
        (ImageChanges(public=True), ImagePatch(public=True)),
        (
            ImageChanges(auto_update=True, properties={"os": "x"}),
            ImagePatch(auto_update=True, properties={"os": "x", "old": "", "keep": ""}),
        ),
        # Profiles or an expiry only a PUT sets: everything else goes back as it was read.
        (
            ImageChanges(profiles=[]),
            ImagePut(
                public=False,
                auto_update=True,
                properties={"os": "tiny", "old": "x", "keep": "1"},
                profiles=[],
            ),
        ),
        (
            ImageChanges(public=True, properties={"a": "b"}, expires_at=LATER),
            ImagePut(
                public=True,
                auto_update=True,
                properties={"a": "b"},
                profiles=["default", "gpu"],
                expires_at=LATER,
            ),
        ),
    ],
)
def test_image_changes_keep_everything_not_given(changes: ImageChanges, expected: object) -> None:
    current = Image(
        fingerprint=FP,
        public=False,
        auto_update=True,
        properties={"os": "tiny", "old": "x", "keep": "1"},
        profiles=["default", "gpu"],
    )
    assert changes.body_for(current) == expected
    assert not changes.empty
    assert ImageChanges().empty


# --------------------------------------------------------------------------------------------
# operation_id


def test_operation_id_from_operation_id_and_urls() -> None:
    assert operation_id(op_model()) == OP_ID
    assert operation_id(OP_ID) == OP_ID
    assert operation_id(f"/1.0/operations/{OP_ID}") == OP_ID
    assert operation_id(f"/1.0/operations/{OP_ID}?project=dev") == OP_ID
    assert operation_id(f"{OP_ID}?secret=abc") == OP_ID


@pytest.mark.parametrize(
    "value",
    [
        "",
        "/1.0/operations/",
        "../images",
        f"/1.0/operations/{OP_ID}/wait",
        f"https://host:8443/1.0/operations/{OP_ID}",
        f"/1.0/images/{FP}",
        "a b",
        "a%2Fb",
        "?",
        "x" * 129,
    ],
)
def test_operation_id_refuses_junk(value: str) -> None:
    with pytest.raises(InvalidInputError, match="is not an operation id") as info:
        operation_id(value)
    assert repr(value) in str(info.value)


def test_operation_id_refuses_non_operations() -> None:
    for value in (None, 42, {"id": OP_ID}, b"abc"):
        with pytest.raises(InvalidInputError, match="must be an Operation, an id or a URL"):
            operation_id(value)
    with pytest.raises(InvalidInputError, match="is not an operation id"):
        operation_id(Operation(id="../x"))


# --------------------------------------------------------------------------------------------
# Server error text and API errors


def test_server_error_text_reads_incus_error_bodies() -> None:
    body = error_response(404, 'Image "ffff" not found').content
    assert body.endswith(b"\n")
    assert server_error_text(body) == ('Image "ffff" not found', 404)


def test_server_error_text_ignores_non_integer_error_codes() -> None:
    body = json.dumps({"type": "error", "error": "boom", "error_code": "500"}).encode()
    assert server_error_text(body) == ("boom", None)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"404 page not found\n", "404 page not found"),
        (b'{"no": "error key"}', '{"no": "error key"}'),
        (b"[1, 2, 3]", "[1, 2, 3]"),
        (b"", "(empty response body)"),
        (b" \r\n\t", "(empty response body)"),
    ],
)
def test_server_error_text_of_other_bodies(body: bytes, expected: str) -> None:
    assert server_error_text(body) == (expected, None)


def test_server_error_text_of_undecodable_bytes_does_not_raise() -> None:
    text, code = server_error_text(b"\xff\xfe\x00binary")
    assert "binary" in text
    assert code is None


def test_server_error_text_bounds_a_long_json_error() -> None:
    # Under MAX_ERROR_BODY the JSON is read and its error text quoted, bounded.
    body = json.dumps({"type": "error", "error": "e" * 60_000, "error_code": 500}).encode()
    assert len(body) <= MAX_ERROR_BODY
    text, code = server_error_text(body)
    assert len(text) < 1024
    assert text.startswith("e" * MAX_QUOTED_ERROR)
    assert code == 500
    # Over it, the body is not parsed at all: a bounded prefix of the raw text is quoted.
    body = json.dumps({"type": "error", "error": "e" * 100_000, "error_code": 500}).encode()
    assert len(body) > MAX_ERROR_BODY
    text, code = server_error_text(body)
    assert len(text) < 1024
    assert text.startswith('{"type": "error", "error": "eee')
    assert code is None
    huge_small_json = json.dumps({"error": "y" * 10_000, "error_code": 404}).encode()
    text, code = server_error_text(huge_small_json)
    assert len(text) < 1024
    assert "(10000 characters)" in text
    assert code == 404


@pytest.mark.parametrize(
    "body",
    [
        b"x" * (10 * 1024 * 1024),
        b'{"type":"error","error":"' + b"z" * (10 * 1024 * 1024) + b'","error_code":500}',
        "ü".encode() * (5 * 1024 * 1024),
    ],
    ids=["raw", "json", "multibyte"],
)
def test_a_10_mib_error_body_is_quoted_bounded(body: bytes) -> None:
    assert len(body) >= 10 * 1024 * 1024
    text, _ = server_error_text(body)
    assert 0 < len(text) < 1024
    error = api_error(GET_CALL, SERVER, 500, body)
    assert len(str(error)) < 1024
    assert error.server_message is not None
    assert len(error.server_message) < 1024


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (403, ForbiddenError),
        (404, NotFoundError),
        (409, ConflictError),
        (412, PreconditionFailedError),
        (400, APIError),
        (500, APIError),
        (501, APIError),
        (502, APIError),
    ],
)
def test_api_error_class_by_status(status: int, cls: type[APIError]) -> None:
    error = api_error(GET_CALL, SERVER, status, error_response(status, "some failure").content)
    assert type(error) is cls
    assert error.status_code == status
    assert error.error_code == status
    assert error.server == SERVER
    assert error.method == "GET"
    assert error.url == GET_CALL.path
    assert error.server_message == "some failure"


def test_api_error_message_names_action_server_status_method_and_path() -> None:
    call = Call(method="DELETE", path="/1.0/images/aliases/x%2Fy", action="delete alias 'x/y'")
    error = api_error(call, SERVER, 404, error_response(404, "Image alias not found").content)
    message = str(error)
    assert message == (
        f"Could not delete alias 'x/y' on {SERVER}: Image alias not found "
        "(HTTP 404 from DELETE /1.0/images/aliases/x%2Fy)."
    )
    assert error.message == message


def test_api_error_hints() -> None:
    forbidden = api_error(GET_CALL, SERVER, 403, error_response(403, "not authorized").content)
    assert "does not trust this client" in str(forbidden)
    changed = api_error(GET_CALL, SERVER, 412, error_response(412, "ETag doesn't match").content)
    assert "changed since it was read" in str(changed)


def test_ambiguous_prefix_is_its_own_error_though_incus_says_500() -> None:
    body = error_response(500, "More than one image matches").content
    error = api_error(GET_CALL, SERVER, 500, body)
    assert type(error) is AmbiguousFingerprintError
    assert isinstance(error, APIError)
    assert error.status_code == 500
    assert "ambiguous" in str(error)
    assert FP[:12] in str(error)


def test_other_500_errors_stay_plain_api_errors() -> None:
    body = error_response(500, 'Invalid filter: "x"').content
    error = api_error(GET_CALL, SERVER, 500, body)
    assert type(error) is APIError
    assert not isinstance(error, AmbiguousFingerprintError)


# --------------------------------------------------------------------------------------------
# parse_envelope


def test_parse_envelope_sync_with_etag() -> None:
    response = sync_response({"fingerprint": FP}, headers={"ETag": '"abc"'})
    envelope = parse_envelope(GET_CALL, SERVER, response)
    assert envelope == Envelope(type="sync", metadata={"fingerprint": FP}, etag='"abc"')
    assert envelope.operation == ""


def test_parse_envelope_created_with_null_metadata() -> None:
    envelope = parse_envelope(GET_CALL, SERVER, sync_response(None, status=201))
    assert envelope.type == "sync"
    assert envelope.metadata is None
    assert envelope.etag is None


def test_parse_envelope_async_keeps_the_operation_url() -> None:
    body = {
        "type": "async",
        "status": "Operation created",
        "status_code": 100,
        "operation": f"/1.0/operations/{OP_ID}",
        "error_code": 0,
        "error": "",
        "metadata": operation(OP_ID),
    }
    envelope = parse_envelope(GET_CALL, SERVER, httpx.Response(202, json=body))
    assert envelope.type == "async"
    assert envelope.operation == f"/1.0/operations/{OP_ID}"
    assert envelope.metadata["id"] == OP_ID


def test_parse_envelope_error_status_raises_mapped_error() -> None:
    response = error_response(404, 'Image "ffffff" not found')
    with pytest.raises(NotFoundError, match=r'Image "ffffff" not found \(HTTP 404 from GET'):
        parse_envelope(GET_CALL, SERVER, response)


def test_parse_envelope_error_envelope_under_200_raises() -> None:
    response = error_response(409, "Alias already exists", http_status=200)
    with pytest.raises(ConflictError) as info:
        parse_envelope(GET_CALL, SERVER, response)
    assert info.value.status_code == 409
    assert info.value.server_message == "Alias already exists"


def test_parse_envelope_error_envelope_without_code_under_200() -> None:
    body = json.dumps({"type": "error", "error": "odd", "error_code": 0}).encode()
    with pytest.raises(APIError, match="odd") as info:
        parse_envelope(GET_CALL, SERVER, raw_response(200, body))
    assert info.value.status_code == 200


def test_parse_envelope_error_envelope_with_junk_code_raises_incus_error() -> None:
    body = json.dumps({"type": "error", "error": "odd", "error_code": "abc"}).encode()
    with pytest.raises(IncusError):
        parse_envelope(GET_CALL, SERVER, raw_response(200, body))


def test_parse_envelope_non_json_raises_unexpected_response_quoting_the_body() -> None:
    with pytest.raises(UnexpectedResponseError, match="not JSON: <html>gateway</html>") as info:
        parse_envelope(GET_CALL, SERVER, raw_response(200, b"<html>gateway</html>"))
    assert not isinstance(info.value, APIError)
    assert info.value.server == SERVER
    assert info.value.method == "GET"
    assert info.value.url == GET_CALL.path
    assert f"Could not get image '{FP[:12]}' on {SERVER}" in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"null",
        b'"sync"',
        b'{"metadata": {}}',
        b'{"type": "weird", "metadata": {}}',
    ],
)
def test_parse_envelope_refuses_non_envelopes(body: bytes) -> None:
    with pytest.raises(UnexpectedResponseError, match="not an Incus response envelope"):
        parse_envelope(GET_CALL, SERVER, raw_response(200, body))


# --------------------------------------------------------------------------------------------
# parse_wait: incusd 6.0.4 and 6.0.5+ answers


def test_wait_604_deadline_means_still_running() -> None:
    response = error_response(500, "context deadline exceeded", http_status=200)
    result = parse_wait(WAIT_CALL, SERVER, response)
    assert result == WaitResult()
    assert result.finished is False
    assert result.operation is None
    assert result.failure is None


def test_wait_604_failure_carries_message_and_code() -> None:
    response = error_response(500, "Image with same fingerprint already exists", http_status=200)
    result = parse_wait(WAIT_CALL, SERVER, response)
    assert result.finished is True
    assert result.failure == "Image with same fingerprint already exists"
    assert result.failure_code == 500
    assert result.operation is None

    response = error_response(404, "Instance not found", http_status=200)
    result = parse_wait(WAIT_CALL, SERVER, response)
    assert (result.failure, result.failure_code) == ("Instance not found", 404)


def test_wait_604_message_merely_containing_deadline_is_a_failure() -> None:
    response = error_response(500, "upload: context deadline exceeded", http_status=200)
    result = parse_wait(WAIT_CALL, SERVER, response)
    assert result.finished is True
    assert result.failure == "upload: context deadline exceeded"


@pytest.mark.parametrize(
    ("status_code", "finished"),
    [(103, False), (105, False), (200, True), (400, True), (401, True)],
)
def test_wait_605_returns_the_operation(status_code: int, finished: bool) -> None:
    err = "Unsupported compression" if status_code == 400 else ""
    body = operation(OP_ID, status_code=status_code, err=err, metadata={"size": "12"})
    result = parse_wait(WAIT_CALL, SERVER, sync_response(body))
    assert result.failure is None
    assert result.operation is not None
    assert result.operation.id == OP_ID
    assert result.operation.status_code == status_code
    assert result.operation.err == err
    assert result.operation.class_ == "task"
    assert result.finished is finished


def test_wait_404_means_operation_gone() -> None:
    response = error_response(404, "Operation not found")
    with pytest.raises(OperationGoneError) as info:
        parse_wait(WAIT_CALL, SERVER, response)
    assert isinstance(info.value, OperationError)
    assert info.value.status_code == 404
    assert info.value.server == SERVER
    assert info.value.url == WAIT_CALL.path
    assert OP_ID in str(info.value)
    assert "no longer knows the operation" in str(info.value)


def test_wait_other_error_status_raises_api_error() -> None:
    with pytest.raises(ForbiddenError):
        parse_wait(WAIT_CALL, SERVER, error_response(403, "not authorized"))
    with pytest.raises(APIError, match=r"strconv\.Atoi"):
        parse_wait(WAIT_CALL, SERVER, error_response(500, 'strconv.Atoi: parsing "x"'))


def test_wait_non_json_and_malformed_operation() -> None:
    with pytest.raises(UnexpectedResponseError, match="not JSON"):
        parse_wait(WAIT_CALL, SERVER, raw_response(200, b"garbage"))
    with pytest.raises(UnexpectedResponseError, match="cannot read it as Operation"):
        parse_wait(WAIT_CALL, SERVER, sync_response({"status_code": 200}))


# --------------------------------------------------------------------------------------------
# operation_failure


def test_operation_failure_cancelled() -> None:
    op = op_model(status_code=OperationStatus.CANCELLED)
    error = operation_failure("upload image", SERVER, op, "")
    assert type(error) is OperationError
    assert str(error) == f"Could not upload image on {SERVER}: operation {OP_ID} was cancelled"
    assert error.operation is op
    assert error.server == SERVER


def test_operation_failure_duplicate_uses_the_operations_fingerprint() -> None:
    op = op_model(
        status_code=400,
        metadata={"fingerprint": FP, "size": "289"},
        err="Image with same fingerprint already exists",
    )
    error = operation_failure(
        "upload image", SERVER, op, op.err, error_code=500, fingerprint=OTHER_FP
    )
    assert isinstance(error, ImageExistsError)
    assert isinstance(error, ConflictError)
    assert isinstance(error, OperationError)
    assert error.fingerprint == FP
    assert FP in str(error)
    assert SERVER in str(error)
    assert "already stored" in str(error)
    assert error.operation is op
    assert error.error_code == 500


def test_operation_failure_duplicate_604_falls_back_to_the_argument() -> None:
    message = "Image with same fingerprint already exists"
    error = operation_failure("upload image", SERVER, None, message, fingerprint=FP)
    assert isinstance(error, ImageExistsError)
    assert error.fingerprint == FP
    assert FP in str(error)
    assert error.operation is None

    # An operation without metadata also falls back.
    op = op_model(status_code=400, metadata=None, err=message)
    error = operation_failure("upload image", SERVER, op, message, fingerprint=FP)
    assert isinstance(error, ImageExistsError)
    assert error.fingerprint == FP


def test_operation_failure_duplicate_without_any_fingerprint() -> None:
    message = "Image with same fingerprint already exists"
    error = operation_failure("upload image", SERVER, None, message)
    assert isinstance(error, ImageExistsError)
    assert error.fingerprint is None
    assert "fingerprint unknown" in str(error)


def test_operation_failure_generic() -> None:
    op = op_model(status_code=400, err="Unsupported compression")
    error = operation_failure(
        "upload image", SERVER, op, "Unsupported compression", error_code=400, fingerprint=FP
    )
    assert type(error) is OperationError
    assert str(error) == (
        f"Could not upload image on {SERVER}: operation {OP_ID} failed: Unsupported compression"
    )
    assert error.fingerprint == FP
    assert error.error_code == 400
    assert error.server_message == "Unsupported compression"

    no_op = operation_failure("delete image", SERVER, None, "x" * 5000)
    assert "the operation failed" in str(no_op)
    assert len(str(no_op)) < 1024


# --------------------------------------------------------------------------------------------
# transport_error


def test_transport_error_connect_is_a_connection_error() -> None:
    error = transport_error(GET_CALL, SERVER, httpx.ConnectError("[Errno 111] refused"))
    assert type(error) is IncusConnectionError
    assert isinstance(error, ConnectionError)
    assert SERVER in str(error)
    assert GET_CALL.action in str(error)
    assert "[Errno 111] refused" in str(error)
    assert (error.server, error.method, error.url) == (SERVER, "GET", GET_CALL.path)


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout("timed out"), httpx.ConnectTimeout(""), httpx.PoolTimeout("p")]
)
def test_transport_error_timeouts_are_timeout_errors(exc: httpx.TransportError) -> None:
    error = transport_error(GET_CALL, SERVER, exc)
    assert type(error) is IncusTimeoutError
    assert isinstance(error, TimeoutError)
    assert "no answer in time" in str(error)
    assert SERVER in str(error)
    # An exception without text is named by its type.
    assert (str(exc) or type(exc).__name__) in str(error)


def test_transport_error_other_transport_failures_are_connection_errors() -> None:
    error = transport_error(GET_CALL, SERVER, httpx.RemoteProtocolError("peer closed"))
    assert type(error) is IncusConnectionError
    assert "peer closed" in str(error)


# --------------------------------------------------------------------------------------------
# What a failure left behind: left_behind and a note, never the message (issue 15).


def test_note_left_behind_sets_the_attribute_and_a_note_and_keeps_the_message() -> None:
    error = OperationError("Could not upload image 'x' on unix:///s: disk full")
    assert error.left_behind is None
    assert note_left_behind(error, LeftBehind.NOTHING, "nothing was stored") is error
    assert error.left_behind is LeftBehind.NOTHING
    assert error.__notes__ == ["incus_images: nothing was stored."]
    assert str(error) == "Could not upload image 'x' on unix:///s: disk full"
    # A later record, by the caller that cleaned up, replaces the attribute; notes add up.
    note_left_behind(error, LeftBehind.DELETED, "image ab was deleted again")
    assert error.left_behind is LeftBehind.DELETED
    assert len(error.__notes__) == 2


def test_left_behind_is_a_string_enum() -> None:
    assert LeftBehind.MAY_BE_STORED == "image may be stored"
    assert {member.value for member in LeftBehind} >= {"nothing", "image deleted again"}


def test_an_interruption_from_outside_gets_the_note_only() -> None:
    interrupt = KeyboardInterrupt()
    note_left_behind(interrupt, LeftBehind.MAY_BE_STORED, "the image may be stored")
    assert interrupt.__notes__ == ["incus_images: the image may be stored."]
    assert not hasattr(interrupt, "left_behind")


def test_amended_copies_keep_their_notes_apart() -> None:
    error = note_left_behind(IncusError("first"), LeftBehind.NOTHING, "nothing was sent")
    amended = error._amended("first, with more")
    amended.add_note("only on the copy")
    assert error.__notes__ == ["incus_images: nothing was sent."]
    assert amended.__notes__[-1] == "only on the copy"
    assert amended.left_behind is LeftBehind.NOTHING


def test_record_interruption_records_lost_connections_timeouts_and_outside_interruptions() -> None:
    lost = IncusConnectionError("connection lost")
    late = IncusTimeoutError("too late")
    interrupt = KeyboardInterrupt()
    for error in (lost, late, interrupt):
        record_interruption(error, LeftBehind.MAY_BE_STORED, "the image may be stored")
        assert error.__notes__ == ["incus_images: the image may be stored."]
    assert lost.left_behind is late.left_behind is LeftBehind.MAY_BE_STORED


def test_record_interruption_leaves_the_servers_and_the_sdks_own_errors_alone() -> None:
    refused = APIError("refused")
    record_interruption(refused, LeftBehind.MAY_BE_STORED, "the image may be stored")
    assert refused.left_behind is None
    assert not hasattr(refused, "__notes__")
    # Unless the transfer's state alone says what is left, whatever stopped it.
    record_interruption(refused, LeftBehind.NOTHING, "nothing was stored", any_error=True)
    assert refused.left_behind is LeftBehind.NOTHING


def test_record_interruption_keeps_a_record_that_says_more() -> None:
    deleted = note_left_behind(IncusConnectionError("lost"), LeftBehind.DELETED, "deleted")
    record_interruption(deleted, LeftBehind.MAY_BE_STORED, "the image may be stored")
    assert deleted.left_behind is LeftBehind.DELETED
    assert len(deleted.__notes__) == 1
    # "A request may have been applied" says less than what the transfer knows.
    applied = note_left_behind(IncusConnectionError("lost"), LeftBehind.MAY_BE_APPLIED, "maybe")
    record_interruption(applied, LeftBehind.NOTHING, "nothing was stored")
    assert applied.left_behind is LeftBehind.NOTHING


def test_a_refused_fingerprint_is_a_checksum_mismatch_that_stored_nothing() -> None:
    wrong = "b" * 64
    message = f"fingerprints don't match, got {FP} expected {wrong}"
    error = operation_failure("upload image 'x'", SERVER, None, message)
    assert isinstance(error, ChecksumMismatchError)
    assert not isinstance(error, OperationError)
    assert error.fingerprint == wrong
    assert error.server_message == message
    assert error.left_behind is LeftBehind.NOTHING
    assert f"hash to {FP}, not to the fingerprint given, {wrong}" in str(error)
