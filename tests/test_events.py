"""The event parser, without I/O: frames incusd 6.0.4 sent (``tests/data/events``, captured from
a throwaway daemon while an image was created, aliased, renamed, updated, exported and deleted,
in the default project and in another), and frames a hostile server could send."""

from __future__ import annotations

import copy
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from incus_images import Operation, OperationStatus, _events
from incus_images._converter import make_converter
from incus_images._events import (
    ALIAS_ACTIONS,
    IMAGE_ACTIONS,
    MAX_EVENT_BYTES,
    EventRequestor,
    ImageEvent,
    LifecycleEvent,
    OperationEvent,
    parse_event,
)

DATA = Path(__file__).resolve().parent / "data" / "events"
FINGERPRINT = "4044c93708473a4ed3d355d48efba833ec5954d1d672936276104dd437d8c724"
ROOT = EventRequestor(username="root", protocol="unix", address="@")


def frame(name: str) -> bytes:
    return (DATA / f"{name}.json").read_bytes()


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(frame(name))
    return data


def frames() -> list[str]:
    return sorted(path.stem for path in DATA.glob("*.json") if not path.stem.startswith("stream"))


def skipped(caplog: pytest.LogCaptureFixture, data: bytes | str) -> str:
    """Parse a frame that must be skipped with one WARNING; return the WARNING's text."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="incus_images"):
        assert parse_event(data) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    return warnings[0].getMessage()


# --------------------------------------------------------------------------------------------
# What incusd sent.


def test_image_created() -> None:
    event = parse_event(frame("image-created"))
    assert event == ImageEvent(
        action="image-created",
        fingerprint=FINGERPRINT,
        project="default",
        location="none",
        requestor=ROOT,
        at=datetime(2026, 12, 6, 11, 8, 17, 890836, tzinfo=UTC),
    )


def test_an_image_in_another_project_has_the_query_stripped() -> None:
    event = parse_event(frame("image-created-project"))
    assert isinstance(event, ImageEvent)
    assert (event.fingerprint, event.project) == (FINGERPRINT, "p2")
    assert fixture("image-created-project")["metadata"]["source"].endswith("?project=p2")


def test_an_alias_name_is_percent_decoded() -> None:
    event = parse_event(frame("image-alias-created-escaped"))
    assert isinstance(event, ImageEvent)
    assert (event.action, event.alias, event.fingerprint) == (
        "image-alias-created",
        "sp ace/x",
        None,
    )
    assert fixture("image-alias-created-escaped")["metadata"]["source"].endswith("sp%20ace%2Fx")


def test_a_rename_names_the_new_alias_and_the_old_one() -> None:
    event = parse_event(frame("image-alias-renamed"))
    assert isinstance(event, ImageEvent)
    assert (event.alias, event.old_alias) == ("second", "first")


def test_an_alias_in_another_project() -> None:
    event = parse_event(frame("image-alias-deleted-project"))
    assert isinstance(event, ImageEvent)
    assert (event.action, event.alias, event.project) == ("image-alias-deleted", "inp2", "p2")


def test_an_operation_event_holds_the_operation() -> None:
    event = parse_event(frame("operation-downloading-running-metadata"))
    assert isinstance(event, OperationEvent)
    assert isinstance(event.operation, Operation)
    assert event.operation.id == "4532fc2e-2089-4a6f-9fe7-726d8b24a3e7"
    assert event.operation.status_code == OperationStatus.RUNNING
    assert event.operation.metadata == {"fingerprint": FINGERPRINT, "size": "371"}
    assert (event.project, event.at.tzinfo) == ("default", UTC)


def test_a_deletion_operation_names_its_image() -> None:
    event = parse_event(frame("operation-deleting-pending-project"))
    assert isinstance(event, OperationEvent)
    assert event.operation.resources == {"images": [f"/1.0/images/{FINGERPRINT}?project=p2"]}


def test_other_lifecycle_events_stay_generic() -> None:
    event = parse_event(frame("project-created"))
    assert event == LifecycleEvent(
        action="project-created",
        source="/1.0/projects/p2",
        project="p2",
        location="none",
        requestor=ROOT,
        at=datetime(2026, 12, 6, 11, 8, 18, 29861, tzinfo=UTC),
    )


def test_types_not_modelled_are_skipped_quietly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="incus_images"):
        assert parse_event(frame("logging")) is None
    assert caplog.records == []


@pytest.mark.parametrize("name", frames())
def test_every_captured_frame_is_read_with_the_keys_the_parser_knows(name: str) -> None:
    """Fixtures cannot drift: an operation is read by the strict converter, and a lifecycle
    event holds no key the parser does not read."""
    data = fixture(name)
    assert set(data) <= {"type", "timestamp", "metadata", "location", "project"}
    if data["type"] == "operation":
        make_converter(strict=True).structure(data["metadata"], Operation)
    if data["type"] == "lifecycle":
        assert set(data["metadata"]) <= {"action", "source", "context", "requestor"}
        assert (parse_event(frame(name)) is not None) is True
    if data["type"] == "lifecycle" and data["metadata"]["action"].startswith("image-"):
        assert data["metadata"]["action"] in IMAGE_ACTIONS | ALIAS_ACTIONS
        assert isinstance(parse_event(frame(name)), ImageEvent)


def test_the_default_project_stream_in_order() -> None:
    """The whole stream a default-project listener got, as typed events in order."""
    stream = json.loads((DATA / "stream-default-project.json").read_text())
    events = [parse_event(item) for item in stream]
    image_events = [
        (e.action, e.fingerprint or e.alias) for e in events if isinstance(e, ImageEvent)
    ]
    assert image_events == [
        ("image-created", FINGERPRINT),
        ("image-alias-created", "first"),
        ("image-alias-created", "sp ace/x"),
        ("image-alias-renamed", "second"),
        ("image-updated", FINGERPRINT),
        ("image-retrieved", FINGERPRINT),
        ("image-alias-deleted", "second"),
    ]
    # The image was deleted from the default project while p2 still held it: incusd 6.0.4
    # sent no image-deleted then, only the operation.
    deletions = [
        e.operation.status
        for e in events
        if isinstance(e, OperationEvent) and e.operation.description == "Deleting image"
    ]
    assert deletions == ["Pending", "Running", "Success"]
    assert all(e is not None for e in events)


def test_a_refresh_names_the_old_image_twice() -> None:
    """incusd 6.0.4, when a refresh finds a newer image: image-created and image-refreshed
    both name the image that was replaced, never the new one (f99a... was replaced by
    4951...), so a watcher learns the new fingerprint only by reading the image's aliases."""
    old = "f99aebe879ef27f8cf0af4c13838739ed39f14644a437bd3d21090834de46b90"
    created = parse_event(frame("image-created-by-refresh"))
    refreshed = parse_event(frame("image-refreshed"))
    assert isinstance(created, ImageEvent)
    assert isinstance(refreshed, ImageEvent)
    assert (created.action, created.fingerprint) == ("image-created", old)
    assert (refreshed.action, refreshed.fingerprint) == ("image-refreshed", old)


def test_an_alias_update_and_a_secret() -> None:
    updated = parse_event(frame("image-alias-updated"))
    secret = parse_event(frame("image-secret-created"))
    assert isinstance(updated, ImageEvent)
    assert (updated.action, updated.alias) == ("image-alias-updated", "a1")
    assert isinstance(secret, ImageEvent)
    assert secret.action == "image-secret-created"
    assert secret.fingerprint is not None


def test_a_token_operation_carries_its_secret_to_every_listener() -> None:
    """The download secret of an image travels in the token operation's event: whatever shows
    or logs an OperationEvent must not show its metadata."""
    event = parse_event(frame("operation-token-pending"))
    assert isinstance(event, OperationEvent)
    assert event.operation.class_ == "token"
    assert event.operation.metadata is not None
    assert set(event.operation.metadata) == {"secret"}


def test_operation_events_may_arrive_out_of_order() -> None:
    """incusd 6.0.4 delivered a refresh operation's Success before a Running stamped earlier:
    the stream's order is not the order of the changes, and a consumer must not let a late
    Running undo a final status."""
    stream = json.loads((DATA / "stream-pull-secret-refresh.json").read_text())
    events = [parse_event(item) for item in stream]
    assert all(e is not None for e in events)
    first_refresh = [
        e
        for e in events
        if isinstance(e, OperationEvent) and e.operation.description == "Refreshing image"
    ][:4]
    assert [e.operation.status for e in first_refresh] == [
        "Pending",
        "Running",
        "Success",
        "Running",
    ]
    assert first_refresh[3].at < first_refresh[2].at
    assert len({e.operation.id for e in first_refresh}) == 1


# --------------------------------------------------------------------------------------------
# What a hostile server could send.


def changed(name: str, change: Any) -> bytes:
    data = copy.deepcopy(fixture(name))
    change(data)
    return json.dumps(data).encode()


def test_a_frame_that_is_not_json(caplog: pytest.LogCaptureFixture) -> None:
    assert "cannot be read" in skipped(caplog, b"{not json")
    skipped(caplog, b"\xff\xfe")
    skipped(caplog, b"")


@pytest.mark.parametrize("text", ["[]", "1", '"x"', "null", '{"type": "lifecycle"}'])
def test_json_that_is_not_an_event(caplog: pytest.LogCaptureFixture, text: str) -> None:
    skipped(caplog, text)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(type=1),
        lambda d: d.update(timestamp=1_700_000_000),
        lambda d: d.update(timestamp="2026-12-06T11:08:17"),  # no time zone
        lambda d: d.update(timestamp="0001-01-01T00:00:00Z"),
        lambda d: d.update(timestamp="yesterday"),
        lambda d: d.update(metadata=[]),
        lambda d: d.update(project=True),
        lambda d: d.update(location=["none"]),
        lambda d: d["metadata"].update(action=None),
        lambda d: d["metadata"].update(source=7),
        lambda d: d["metadata"].update(requestor="root"),
        lambda d: d["metadata"]["requestor"].update(username=0),
        lambda d: d["metadata"].update(context=[1]),
    ],
)
def test_a_lifecycle_event_with_wrong_types(caplog: pytest.LogCaptureFixture, change: Any) -> None:
    skipped(caplog, changed("image-created", change))


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["metadata"].update(id="../../1.0/images"),
        lambda d: d["metadata"].update(status_code="200"),
        lambda d: d["metadata"].update(may_cancel=1),
        lambda d: d["metadata"].update(resources={"images": "x"}),
        lambda d: d.update(metadata="operation"),
    ],
)
def test_an_operation_event_with_wrong_types(caplog: pytest.LogCaptureFixture, change: Any) -> None:
    skipped(caplog, changed("operation-downloading-running", change))


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("image-created", "/1.0/images/" + FINGERPRINT[:12]),  # a prefix is not an id
        ("image-created", "/1.0/images/" + "g" * 64),
        ("image-created", "/1.0/images/" + FINGERPRINT + "/export"),
        ("image-created", "/1.0/images/%34" + FINGERPRINT[1:] + "%2Fx"),
        ("image-created", "/1.0/instances/" + FINGERPRINT),
        ("image-created", "/1.0/images/aliases/first"),
        ("image-created", ""),
        ("image-alias-created", "/1.0/images/aliases/"),
        ("image-alias-created", "/1.0/images/aliases/a/b"),
        ("image-alias-created", "/1.0/images/aliases/%ff"),  # not UTF-8
        ("image-alias-created", "/1.0/images/aliases/nul%00"),
        ("image-alias-created", "/1.0/images/" + FINGERPRINT),
        ("image-alias-created", "/1.0/images/aliases/x?project=%ff"),
    ],
)
def test_a_source_that_names_no_valid_image_or_alias(
    caplog: pytest.LogCaptureFixture, name: str, source: str
) -> None:
    message = skipped(caplog, changed(name, lambda d: d["metadata"].update(source=source)))
    assert "cannot be read" in message


def test_a_fingerprint_in_capitals_is_read_in_lower_case() -> None:
    source = "/1.0/images/" + FINGERPRINT.upper()
    event = parse_event(changed("image-created", lambda d: d["metadata"].update(source=source)))
    assert isinstance(event, ImageEvent)
    assert event.fingerprint == FINGERPRINT


def test_a_percent_encoded_fingerprint_is_decoded() -> None:
    source = "/1.0/images/%34" + FINGERPRINT[1:]
    event = parse_event(changed("image-created", lambda d: d["metadata"].update(source=source)))
    assert isinstance(event, ImageEvent)
    assert event.fingerprint == FINGERPRINT


def test_a_bad_old_alias_name(caplog: pytest.LogCaptureFixture) -> None:
    skipped(
        caplog,
        changed("image-alias-renamed", lambda d: d["metadata"]["context"].update(old_name=3)),
    )
    skipped(
        caplog,
        changed("image-alias-renamed", lambda d: d["metadata"]["context"].update(old_name="")),
    )


def test_the_frame_project_wins_and_the_query_fills_in() -> None:
    without = changed("image-created-project", lambda d: d.pop("project"))
    event = parse_event(without)
    assert isinstance(event, ImageEvent)
    assert event.project == "p2"


def test_a_huge_frame_is_refused_unread(caplog: pytest.LogCaptureFixture) -> None:
    huge = b'{"type": "lifecycle", "x": "' + b"a" * MAX_EVENT_BYTES + b'"}'
    started = time.monotonic()
    message = skipped(caplog, huge)
    assert time.monotonic() - started < 0.5
    assert f"{len(huge)} bytes" in message
    assert len(message) < 500


def test_a_frame_just_under_the_limit_is_read() -> None:
    data = fixture("image-created")
    data["metadata"]["context"] = {"pad": ""}
    room = MAX_EVENT_BYTES - len(json.dumps(data).encode())
    data["metadata"]["context"] = {"pad": "a" * room}
    body = json.dumps(data).encode()
    assert len(body) == MAX_EVENT_BYTES
    assert isinstance(parse_event(body), ImageEvent)


def test_deep_nesting_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    skipped(caplog, b"[" * 100_000 + b"]" * 100_000)


def test_a_lone_surrogate_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    skipped(
        caplog,
        changed(
            "image-alias-created",
            lambda d: d["metadata"].update(source="/1.0/images/aliases/\ud800"),
        ),
    )
    skipped(caplog, '{"type": "lifecycle\ud800"}')
    skipped(caplog, b'{"type": "lifecycle", "project": "\\ud800"}')


def test_a_warning_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    message = skipped(caplog, b"{" + b"x" * 100_000)
    assert len(message) < 500
    source = "/1.0/images/aliases/" + "a/" * 100_000
    message = skipped(
        caplog, changed("image-alias-created", lambda d: d["metadata"].update(source=source))
    )
    assert len(message) < 500


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["metadata"].update(may_cancel="yes"),
        lambda d: d["metadata"].update(id="not-an-id"),
        lambda d: d.update(timestamp="late"),
        lambda d: d.update(extra="{" * 10),
    ],
)
def test_a_warning_never_shows_a_secret(caplog: pytest.LogCaptureFixture, change: Any) -> None:
    """A WARNING never quotes the frame: it may be a token operation's, with a download secret
    (here at the frame's start, where a quoted prefix would hold it)."""
    data = fixture("operation-token-pending")
    secret = data["metadata"]["metadata"]["secret"]
    change(data)
    operation = data.pop("metadata")
    operation = {"metadata": operation.pop("metadata"), **operation}
    bad = json.dumps({"metadata": operation, **data}).encode()
    assert bad.index(secret.encode()) < 50
    if b"extra" in bad:
        bad = bad[:-1]  # no longer JSON
    message = skipped(caplog, bad)
    assert secret not in message
    assert secret[:16] not in caplog.text


def test_a_streams_skip_warnings_are_spaced_and_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [100.0]
    monkeypatch.setattr(_events.time, "monotonic", lambda: now[0])
    warnings = _events.SkipWarnings()
    caplog.set_level(logging.WARNING, logger="incus_images")
    for _ in range(500):
        assert _events.parse_event(b"not json", warnings=warnings) is None
    now[0] += _events.SKIP_WARNING_SECONDS
    assert _events.parse_event(b"[]", warnings=warnings) is None
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 2
    assert "(and 499 more skipped" in messages[1]
