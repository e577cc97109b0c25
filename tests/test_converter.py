"""Unit tests of the cattrs converter (incus_images._converter) and the models it builds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import cattrs
import pytest

import incus_images._protocol
from incus_images._converter import converter, make_converter, parse_timestamp
from incus_images._models import Image, ImageAlias, ImageSource, Operation, OperationStatus
from tests.helpers import image, operation

FP = "6bcb9190f8bea56cb09463728faddd8b72e996506d3575f0e027cdbbe0440c05"

STRICT = make_converter(strict=True)
LENIENT = make_converter()


def test_the_run_time_converter_is_lenient_and_tests_run_strict() -> None:
    # The module-level converter ignores unknown keys (a newer server must not break us) ...
    assert converter.structure({"fingerprint": FP, "future_field": 1}, Image).fingerprint == FP
    # ... while conftest makes _protocol use a strict one for the whole test session.
    with pytest.raises(cattrs.BaseValidationError):
        incus_images._protocol.converter.structure({"fingerprint": FP, "future_field": 1}, Image)


# --------------------------------------------------------------------------------------------
# Strict and lenient


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (Image, image(FP, api_extension_field="x")),
        (Operation, {**operation(), "unknown": 1}),
        (ImageAlias, {"name": "a", "target": FP, "description": "", "extra": True}),
        (ImageSource, {"alias": "a", "server": "https://x", "mystery": "y"}),
    ],
)
def test_unknown_keys_strict_refuses_lenient_ignores(cls: type[Any], data: dict[str, Any]) -> None:
    with pytest.raises(cattrs.ClassValidationError) as info:
        STRICT.structure(data, cls)
    assert any(isinstance(error, cattrs.ForbiddenExtraKeysError) for error in info.value.exceptions)
    assert isinstance(LENIENT.structure(data, cls), cls)


def test_unknown_keys_nested_in_an_image_alias_or_source() -> None:
    data = image(FP, aliases=[{"name": "a", "description": "", "nested_extra": 1}])
    with pytest.raises(cattrs.ClassValidationError):
        STRICT.structure(data, Image)
    assert LENIENT.structure(data, Image).aliases[0].name == "a"
    data = image(FP, update_source={"alias": "a", "nested_extra": 1})
    with pytest.raises(cattrs.ClassValidationError):
        STRICT.structure(data, Image)
    assert LENIENT.structure(data, Image).update_source == ImageSource(alias="a")


def test_a_full_incus_image_reads_strictly() -> None:
    source = {
        "alias": "debian/12",
        "certificate": "",
        "protocol": "simplestreams",
        "server": "https://images.linuxcontainers.org",
        "image_type": "container",
    }
    result = STRICT.structure(
        image(
            FP,
            public=True,
            auto_update=True,
            cached=True,
            properties={"os": "Übuntu ☃", "weird": "a&b=c"},
            profiles=["default", "x"],
            update_source=source,
        ),
        Image,
    )
    assert result.fingerprint == FP
    assert result.filename == "tiny.tar.gz"
    assert result.size == 290
    assert result.architecture == "x86_64"
    assert result.type == "container"
    assert (result.public, result.auto_update, result.cached) == (True, True, True)
    assert result.properties == {"os": "Übuntu ☃", "weird": "a&b=c"}
    assert result.profiles == ["default", "x"]
    assert result.update_source == ImageSource(**source)
    assert result.project == "default"
    assert result.created_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# null means absent


def test_null_collections_become_defaults() -> None:
    result = STRICT.structure(
        image(FP, properties=None, aliases=None, profiles=None, update_source=None), Image
    )
    assert result.properties == {}
    assert result.aliases == []
    assert result.profiles == []
    assert result.update_source is None


def test_null_scalars_become_defaults() -> None:
    result = STRICT.structure(
        image(FP, filename=None, size=None, public=None, project=None, type=None), Image
    )
    assert (result.filename, result.size, result.public, result.project, result.type) == (
        "",
        0,
        False,
        "",
        "",
    )
    op = STRICT.structure(
        {**operation(), "resources": None, "metadata": None, "err": None, "class": None},
        Operation,
    )
    assert op.resources == {}
    assert op.metadata is None
    assert op.err == ""
    assert op.class_ == ""


def test_defaults_are_not_shared_between_results() -> None:
    first = STRICT.structure(image(FP, properties=None), Image)
    second = STRICT.structure(image(FP, properties=None), Image)
    assert first.properties is not second.properties


def test_missing_fingerprint_is_refused() -> None:
    with pytest.raises(cattrs.ClassValidationError):
        STRICT.structure({"filename": "x"}, Image)
    with pytest.raises(cattrs.ClassValidationError):
        STRICT.structure({"fingerprint": None}, Image)


# --------------------------------------------------------------------------------------------
# Timestamps


def test_zero_time_becomes_none() -> None:
    result = STRICT.structure(image(FP), Image)
    assert result.expires_at is None
    assert result.last_used_at is None
    assert parse_timestamp("0001-01-01T00:00:00Z") is None
    assert parse_timestamp(None) is None


def test_nanosecond_timestamps_are_cut_to_microseconds() -> None:
    assert parse_timestamp("2026-11-26T17:31:44.970029755Z") == datetime(
        2026, 11, 26, 17, 31, 44, 970029, tzinfo=UTC
    )
    assert parse_timestamp("2026-11-26T17:31:44.9Z") == datetime(
        2026, 11, 26, 17, 31, 44, 900000, tzinfo=UTC
    )
    result = STRICT.structure(image(FP), Image)
    assert result.uploaded_at == datetime(2026, 11, 26, 17, 31, 44, 970029, tzinfo=UTC)


def test_timestamps_are_timezone_aware() -> None:
    parsed = parse_timestamp("2026-11-26T19:31:44.123456789+02:00")
    assert parsed is not None
    assert parsed.utcoffset() == timedelta(hours=2)
    assert parsed == datetime(2026, 11, 26, 17, 31, 44, 123456, tzinfo=UTC)
    result = STRICT.structure(image(FP, created_at="2023-11-14T22:13:20-05:30"), Image)
    assert result.created_at is not None
    assert result.created_at.tzinfo is not None
    assert result.created_at.utcoffset() == -timedelta(hours=5, minutes=30)
    op = STRICT.structure(operation(), Operation)
    for stamp in (op.created_at, op.updated_at):
        assert stamp is not None
        assert stamp.utcoffset() == timedelta(0)


def test_aware_datetimes_pass_through() -> None:
    stamp = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-3)))
    assert parse_timestamp(stamp) is stamp


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("2023-11-14T22:13:20", ValueError),  # no zone
        (datetime(2030, 1, 1), ValueError),  # naive
        ("yesterday", ValueError),
        (1700000000, TypeError),
        (["2023-11-14T22:13:20Z"], TypeError),
    ],
)
def test_bad_timestamps_are_refused(value: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_timestamp(value)
    with pytest.raises(cattrs.ClassValidationError):
        STRICT.structure(image(FP, created_at=value), Image)


# --------------------------------------------------------------------------------------------
# Operation: "class" <-> class_, done and succeeded


def test_operation_class_key_becomes_class_() -> None:
    op = STRICT.structure({**operation(), "class": "websocket"}, Operation)
    assert op.class_ == "websocket"
    assert not hasattr(op, "class")


def test_operation_class_underscore_key_is_not_the_json_name() -> None:
    data = {"id": "6b9d4f3e-1111-4222-8333-444455556666", "class_": "task"}
    with pytest.raises(cattrs.ClassValidationError):
        STRICT.structure(data, Operation)
    assert LENIENT.structure(data, Operation).class_ == ""


def test_operation_fields_as_incus_sends_them() -> None:
    data = operation(
        "41b69ae9-44bf-4b27-a0e5-23d3b8614fbf",
        status_code=200,
        metadata={"fingerprint": FP, "size": "289"},
        resources={"images": [f"/1.0/images/{FP}"]},
    )
    op = STRICT.structure(data, Operation)
    assert op.id == "41b69ae9-44bf-4b27-a0e5-23d3b8614fbf"
    assert op.status == "Success"
    assert op.status_code == OperationStatus.SUCCESS
    assert op.metadata == {"fingerprint": FP, "size": "289"}  # size stays a string
    assert op.resources == {"images": [f"/1.0/images/{FP}"]}
    assert op.description == "Downloading image"
    assert op.may_cancel is False
    assert op.location == "none"


@pytest.mark.parametrize(
    ("status_code", "done", "succeeded"),
    [
        (0, False, False),
        (OperationStatus.RUNNING, False, False),
        (OperationStatus.CANCELLING, False, False),
        (OperationStatus.PENDING, False, False),
        (OperationStatus.SUCCESS, True, True),
        (OperationStatus.FAILURE, True, False),
        (OperationStatus.CANCELLED, True, False),
    ],
)
def test_operation_done_and_succeeded(status_code: int, done: bool, succeeded: bool) -> None:
    op = Operation(id="x", status_code=status_code)
    assert op.done is done
    assert op.succeeded is succeeded


# --------------------------------------------------------------------------------------------
# Aliases inside an Image


def test_image_aliases_get_the_image_as_target_and_its_type() -> None:
    data = image(
        FP,
        type="virtual-machine",
        aliases=[{"name": "a", "description": "first"}, {"name": "b/c", "description": ""}],
    )
    result = STRICT.structure(data, Image)
    assert result.aliases == [
        ImageAlias(name="a", target=FP, description="first", type="virtual-machine"),
        ImageAlias(name="b/c", target=FP, description="", type="virtual-machine"),
    ]


def test_image_aliases_in_lenient_mode_too() -> None:
    data = image(FP, aliases=[{"name": "a", "description": "d", "unknown": 1}])
    result = LENIENT.structure(data, Image)
    assert result.aliases == [ImageAlias(name="a", target=FP, description="d", type="container")]


def test_null_inside_a_standalone_alias_and_an_update_source() -> None:
    alias = STRICT.structure({"name": "a", "target": FP, "description": None}, ImageAlias)
    assert alias == ImageAlias(name="a", target=FP)
    result = STRICT.structure(image(FP, update_source={"alias": None, "server": "x"}), Image)
    assert result.update_source == ImageSource(server="x")


@pytest.mark.parametrize("conv", [STRICT, LENIENT], ids=["strict", "lenient"])
def test_null_inside_image_aliases_means_absent(conv: cattrs.Converter) -> None:
    data = image(FP, aliases=[{"name": "a", "description": None}])
    result = conv.structure(data, Image)
    assert result.aliases == [ImageAlias(name="a", target=FP, description="", type="container")]


def test_a_standalone_alias_keeps_its_own_target() -> None:
    data = {"name": "a", "description": "d", "target": FP, "type": "container"}
    assert STRICT.structure(data, ImageAlias) == ImageAlias(**data)
