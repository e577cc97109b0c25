"""Helpers for tests of both flavours (flavour-neutral: not generated)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
from tiny_image import split_image, unified_image

from incus_images import IncusError, LeftBehind
from incus_images._transfer.multipart import (
    MultipartParser,
    PartData,
    PartEnded,
    PartStarted,
    multipart_boundary,
)

#: The base URL the SDK uses on a unix socket (respx routes match it).
UNIX_BASE = "http://incus"
#: A socket nobody listens on: the endpoint of the clients that unit tests mock with respx.
OFFLINE_SERVER = "unix:///nonexistent/incus.sock"


def notes_of(error: BaseException) -> list[str]:
    """The notes (PEP 678) on an exception."""
    return list(getattr(error, "__notes__", []))


def assert_left(error: BaseException, left: LeftBehind | None, *said: str) -> None:
    """The error records that the call left ``left`` behind (None: an interruption from outside,
    which keeps its class and has only the note), in a note holding each of ``said``; its
    message says none of that."""
    notes = " ".join(notes_of(error))
    if left is not None:
        assert isinstance(error, IncusError), repr(error)
        assert error.left_behind is left, (error.left_behind, str(error), notes)
    missing = [words for words in said if words not in notes]
    assert not missing, f"{missing} not in the notes: {notes!r} ({error})"
    assert not [words for words in said if words in str(error)], str(error)


def unique(prefix: str = "t") -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def sync_envelope(metadata: Any) -> dict[str, Any]:
    """An Incus sync envelope, as incusd sends it."""
    return {
        "type": "sync",
        "status": "Success",
        "status_code": 200,
        "operation": "",
        "error_code": 0,
        "error": "",
        "metadata": metadata,
    }


def sync_response(
    metadata: Any, status: int = 200, headers: dict[str, str] | None = None
) -> httpx.Response:
    """An answer carrying a sync envelope."""
    return httpx.Response(status, json=sync_envelope(metadata), headers=headers)


#: What a client over HTTPS asks its server once, at its first call: which members its cluster
#: has (a server that is no cluster's answers as incusd 6.0.4 does, not_clustered()).
CLUSTER_MEMBERS = "/1.0/cluster/members"


def not_clustered() -> httpx.Response:
    """incusd 6.0.4's answer to the members question on a server that is not clustered."""
    return error_response(500, "Server is not clustered")


#: What a client sends to read the images a server holds before an import (the survey: an
#: import that may clean up after a failure never deletes what was there before).
SURVEY = "GET /1.0/images?recursion=0"


def mock_survey(router: Any, *held: str) -> Any:
    """Answer the survey of a mocked server: it holds the images ``held``."""
    return router.get("/1.0/images", params={"recursion": "0"}).mock(
        return_value=sync_response([f"/1.0/images/{fingerprint}" for fingerprint in held])
    )


def error_response(status: int, message: str, *, http_status: int | None = None) -> httpx.Response:
    """An Incus error envelope (incusd ends it with a newline)."""
    body = {
        "type": "error",
        "status": "",
        "status_code": 0,
        "operation": "",
        "error_code": status,
        "error": message,
        "metadata": None,
    }
    return httpx.Response(
        http_status if http_status is not None else status,
        content=(json.dumps(body) + "\n").encode(),
        headers={"Content-Type": "application/json"},
    )


def deadline_604() -> httpx.Response:
    """incusd 6.0.4's /wait answer for a wait that timed out (the operation runs on): an error
    body with HTTP 200 (6.0.5+ answers with the operation)."""
    return error_response(500, "context deadline exceeded", http_status=200)


def operation(
    op_id: str = "6b9d4f3e-1111-4222-8333-444455556666",
    *,
    status_code: int = 103,
    metadata: Any = None,
    err: str = "",
    description: str = "Downloading image",
    resources: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """An Operation object as incusd 6.0.x sends it."""
    status = {103: "Running", 105: "Pending", 200: "Success", 400: "Failure", 401: "Cancelled"}
    return {
        "id": op_id,
        "class": "task",
        "description": description,
        "created_at": "2026-11-26T17:31:44.295220911Z",
        "updated_at": "2026-11-26T17:31:44.305932309Z",
        "status": status[status_code],
        "status_code": status_code,
        "resources": resources if resources is not None else {},
        "metadata": metadata,
        "may_cancel": False,
        "err": err,
        "location": "none",
    }


def accepted_response(op: dict[str, Any]) -> httpx.Response:
    """The 202 answer that starts an operation."""
    body = {
        "type": "async",
        "status": "Operation created",
        "status_code": 100,
        "operation": f"/1.0/operations/{op['id']}",
        "error_code": 0,
        "error": "",
        "metadata": op,
    }
    return httpx.Response(202, json=body, headers={"Location": f"/1.0/operations/{op['id']}"})


def image(fingerprint: str, **overrides: Any) -> dict[str, Any]:
    """An Image object as incusd 6.0.4 sends it for a local upload."""
    body = {
        "auto_update": False,
        "properties": {"os": "tiny"},
        "public": False,
        "expires_at": "0001-01-01T00:00:00Z",
        "profiles": ["default"],
        "aliases": [],
        "architecture": "x86_64",
        "cached": False,
        "filename": "tiny.tar.gz",
        "fingerprint": fingerprint,
        "size": 290,
        "type": "container",
        "created_at": "2023-11-14T22:13:20Z",
        "last_used_at": "0001-01-01T00:00:00Z",
        "uploaded_at": "2026-11-26T17:31:44.970029755Z",
        "project": "default",
    }
    body.update(overrides)
    return body


def etagged(fingerprint: str, etag: str, **fields: Any) -> httpx.Response:
    """The image as incusd answers a GET of it, with its ETag."""
    return sync_response(image(fingerprint, **fields), headers={"ETag": etag})


def closed_port() -> int:
    """A loopback TCP port nobody listens on: connections to it are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again


def random_pieces(data: bytes, rng: random.Random, largest: int) -> Iterator[bytes]:
    """data in pieces of random sizes up to largest, empty ones included."""
    position = 0
    while position < len(data):
        size = rng.randint(0, largest)
        yield data[position : position + size]
        position += size


def wait_raw(raw: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    """Wait (plain httpx) for the operation a 202 answer started; return its final state."""
    assert response.status_code == 202, response.text
    op_url = response.json()["operation"]
    waited = raw.get(f"{op_url}/wait", params={"timeout": "60"}).json()
    if waited["type"] == "error":  # incusd 6.0.4 reports failures this way
        raise AssertionError(f"operation failed: {waited['error']}")
    return dict(waited["metadata"])


def upload_split_raw(
    raw: httpx.Client, metadata: bytes, rootfs: bytes, *, rootfs_part: str = "rootfs"
) -> str:
    """Upload a split image with plain httpx (multipart: metadata, then rootfs); return its fp."""
    files = [
        ("metadata", ("meta.tar.gz", metadata, "application/octet-stream")),
        (rootfs_part, ("rootfs.tar.gz", rootfs, "application/octet-stream")),
    ]
    finished = wait_raw(raw, raw.post("/1.0/images", files=files))
    fingerprint = str(finished["metadata"]["fingerprint"])
    assert fingerprint == sha256(metadata, rootfs)
    return fingerprint


def deleted_afterwards(raw: httpx.Client) -> Iterator[list[str]]:
    """For a fixture: the fingerprints a test appends to the list are deleted from the daemon
    (behind the SDK's back) after it."""
    fingerprints: list[str] = []
    yield fingerprints
    for fingerprint in fingerprints:
        response = raw.delete(f"/1.0/images/{fingerprint}")
        if response.status_code != 404:
            wait_raw(raw, response)


def stored_fingerprints(raw_api: httpx.Client) -> set[str]:
    """The fingerprints the daemon stores, read behind the SDK's back."""
    response = raw_api.get("/1.0/images", params={"recursion": "0"})
    assert response.status_code == 200, response.text
    return {url.rsplit("/", 1)[-1] for url in response.json()["metadata"]}


def stored_image(raw_api: httpx.Client, fingerprint: str) -> dict[str, Any] | None:
    """The daemon's record of the image, or None when it has no such image."""
    response = raw_api.get(f"/1.0/images/{fingerprint}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return dict(response.json()["metadata"])


def assert_nothing_new_stored(raw_api: httpx.Client, before: set[str]) -> None:
    """The daemon's image list stays as it was, looked at several times over two seconds (an
    upload the daemon had accepted would show up within that time)."""
    for attempt in range(5):
        if attempt:
            time.sleep(0.5)
        assert stored_fingerprints(raw_api) == before


def everything_under(root: Path) -> list[str]:
    """Every path below root, hidden temporary files included."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def incompressible_image() -> bytes:
    """A unified image of about 8 MiB that does not compress (a random payload)."""
    return unified_image(payload_size=8 * 1024 * 1024)


def multipart_parts(content_type: str, body: bytes) -> list[tuple[str | None, str | None, bytes]]:
    """(name, filename, data) of every part of a multipart body, read with the SDK's parser."""
    boundary = multipart_boundary(content_type)
    assert boundary is not None
    parser = MultipartParser(boundary)
    parts: list[tuple[str | None, str | None, bytes]] = []
    for event in parser.feed(body):
        if isinstance(event, PartStarted):
            parts.append((event.name, event.filename, b""))
        elif isinstance(event, PartData):
            name, filename, so_far = parts[-1]
            parts[-1] = (name, filename, so_far + bytes(event.data))
        else:
            assert isinstance(event, PartEnded)
    parser.close()
    return parts


def upload_raw(raw: httpx.Client, data: bytes) -> str:
    """Upload a unified image with plain httpx; return its fingerprint."""
    response = raw.post(
        "/1.0/images", content=data, headers={"Content-Type": "application/octet-stream"}
    )
    return str(wait_raw(raw, response)["metadata"]["fingerprint"])


def store_image_to_export(raw: httpx.Client, data: bytes, *, split: bool) -> str:
    """Store data as a unified image, or a split image with an 8 MiB random rootfs, behind
    the SDK's back (so that an export test does not depend on the SDK's upload)."""
    if not split:
        return upload_raw(raw, data)
    metadata, _ = split_image()
    return upload_split_raw(raw, metadata, os.urandom(8 * 1024 * 1024))


#: An answer in a ScriptedWire's table: a response, or a function of the request.
Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]


def request_line(request: httpx.Request) -> str:
    """'METHOD /raw/path?query', as a request went out."""
    return f"{request.method} {request.url.raw_path.decode()}"


def sent(mock: Any) -> list[str]:
    """Every request a respx mock received, as 'METHOD /raw/path?query', in order."""
    return [request_line(call.request) for call in mock.calls]


def raw_header(request: httpx.Request, name: bytes) -> list[bytes]:
    """The raw bytes of every header called name, as they went on the wire."""
    return [value for key, value in request.headers.raw if key.lower() == name]


class ScriptedWire:
    """Mocked servers (respx) that answer from a table keyed by (server, method, path): the
    answers in turn, the last one from then on; any request not in the table gets a 599.

    ``servers`` names each host ("source.test": "S"); requests are recorded as
    "<server> <METHOD> <raw path>" (the server and its space left out when it is "")."""

    def __init__(self, mock: Any, servers: Mapping[str, str]) -> None:
        self.mock = mock
        self._servers = servers
        self._table: dict[tuple[str, str, str], list[Answer]] = {}
        mock.route().mock(side_effect=self._answer)

    def on(self, who: str, method: str, path: str, *answers: Answer) -> None:
        """Answer (who, method, path) with answers in turn, the last one from then on."""
        self._table[(who, method, path)] = list(answers)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode().split("?", 1)[0]
        answers = self._table.get((self._servers[request.url.host], request.method, path))
        if not answers:
            return error_response(599, f"unexpected request {request.method} {path}")
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, httpx.Response):
            # A fresh copy each time: a response object can be sent only once.
            return httpx.Response(
                answer.status_code, headers=answer.headers, content=answer.content
            )
        return answer(request)

    def sent(self) -> list[str]:
        """Every request, in order."""
        lines = []
        for call in self.mock.calls:
            who = self._servers[call.request.url.host]
            line = request_line(call.request)
            lines.append(f"{who} {line}" if who else line)
        return lines

    def requests(self, who: str, method: str, path: str) -> list[httpx.Request]:
        return [
            call.request
            for call in self.mock.calls
            if self._servers[call.request.url.host] == who
            and call.request.method == method
            and call.request.url.raw_path.decode().split("?", 1)[0] == path
        ]

    def bodies(self, who: str, method: str, path: str) -> list[Any]:
        """The JSON bodies of those requests."""
        return [json.loads(request.content) for request in self.requests(who, method, path)]


class ScriptedDaemon:
    """One mocked daemon on the unix socket, answered from a ScriptedWire's table: the same
    calls without the server's name."""

    def __init__(self, mock: Any) -> None:
        self._wire = ScriptedWire(mock, {"incus": ""})

    def on(self, method: str, path: str, *answers: Answer) -> None:
        self._wire.on("", method, path, *answers)

    def sent(self) -> list[str]:
        """Every request as 'METHOD /raw/path?query', in order."""
        return self._wire.sent()

    def requests(self, method: str, path: str) -> list[httpx.Request]:
        return self._wire.requests("", method, path)

    def bodies(self, method: str, path: str) -> list[Any]:
        return self._wire.bodies("", method, path)


def run_bench_part(part: str, workdir: Path, *options: str) -> tuple[str, list[tuple[str, str]]]:
    """Run ``scripts/bench.py --only part`` with options, its files under workdir; its
    output and its verdicts (("met   " or "MISSED", what)). It must finish, with no
    traceback; it may exit 1 (a target missed, as it may be in a short run: start-up then
    outweighs the work)."""
    root = Path(__file__).resolve().parent.parent
    argv = [sys.executable, str(root / "scripts" / "bench.py"), "--only", part, *options]
    result = subprocess.run(
        [*argv, "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=root,
    )
    assert result.returncode in (0, 1), result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    out = result.stdout
    verdicts = re.findall(r"^  (met   |MISSED) (.*)$", out.split("\ntargets:\n")[1], re.MULTILINE)
    return out, verdicts
