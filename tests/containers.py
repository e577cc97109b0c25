"""Containers on a real daemon, to look inside an image (plain httpx on the daemon's socket,
behind the SDK's back): launch one, run a command in it, read a file with its owner."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import httpx

from tests.helpers import UNIX_BASE, unique


def _done(raw: httpx.Client, response: httpx.Response, what: str) -> dict[str, Any]:
    """The finished operation of a 202 answer; fails the test, saying what, if it failed."""
    assert response.status_code == 202, f"{what}: {response.text}"
    waited = raw.get(f"{response.json()['operation']}/wait", params={"timeout": "120"}).json()
    metadata = waited.get("metadata") or {}
    error = waited.get("error") or metadata.get("err")
    assert not error, f"{what}: {error}"
    return dict(metadata)


@attrs.frozen
class Shown:
    """What a file in a container is, as the files API answers."""

    uid: int
    gid: int
    mode: int
    type: str
    content: bytes


class Container:
    """A running container on a daemon, seen through its socket."""

    def __init__(self, raw: httpx.Client, name: str) -> None:
        self.raw = raw
        self.name = name

    def run(self, *command: str) -> str:
        """Run command in the container; its standard output (it must exit 0)."""
        started = self.raw.post(
            f"/1.0/instances/{self.name}/exec",
            json={
                "command": list(command),
                "record-output": True,
                "interactive": False,
                "wait-for-websocket": False,
                "environment": {"PATH": "/bin:/sbin:/usr/bin"},
            },
        )
        finished = _done(self.raw, started, f"exec {command}")["metadata"]
        output = {
            stream: self.raw.get(url).text for stream, url in (finished.get("output") or {}).items()
        }
        assert finished["return"] == 0, f"{command} exited {finished['return']}: {output}"
        return output.get("1", "")

    def file(self, path: str) -> Shown:
        """A file of the container, with its owner and mode, through the files API."""
        response = self.raw.get(f"/1.0/instances/{self.name}/files", params={"path": path})
        assert response.status_code == 200, f"{path}: {response.text}"
        headers = response.headers
        return Shown(
            uid=int(headers["X-Incus-uid"]),
            gid=int(headers["X-Incus-gid"]),
            mode=int(headers["X-Incus-mode"], 8),
            type=headers["X-Incus-type"],
            content=response.content,
        )


@contextmanager
def running_container(socket_path: str, fingerprint: str) -> Iterator[Container]:
    """A container made from the image and started (its create templates rendered), stopped
    and deleted afterwards."""
    name = unique("built")
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=socket_path), base_url=UNIX_BASE, timeout=120
    ) as raw:
        source = {"type": "image", "fingerprint": fingerprint}
        created = raw.post("/1.0/instances", json={"name": name, "source": source})
        try:
            _done(raw, created, f"create {name}")
            state = {"action": "start", "timeout": 30}
            _done(raw, raw.put(f"/1.0/instances/{name}/state", json=state), f"start {name}")
            yield Container(raw, name)
        finally:
            stop = {"action": "stop", "force": True}
            response = raw.put(f"/1.0/instances/{name}/state", json=stop)
            if response.status_code == 202:
                raw.get(f"{response.json()['operation']}/wait", params={"timeout": "60"})
            response = raw.delete(f"/1.0/instances/{name}")
            if response.status_code == 202:
                raw.get(f"{response.json()['operation']}/wait", params={"timeout": "60"})
