"""Finding the local daemon as the incus CLI does, against a real incusd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import incus_images._endpoint
from incus_images import AsyncClient, IncusConnectionError

pytestmark = pytest.mark.anyio


@pytest.fixture
def no_system_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Point the system socket paths into tmp_path: tests never reach a daemon they did not
    start (a packaged daemon on this machine must not answer in their place)."""
    paths = [str(tmp_path / "run-incus.socket"), str(tmp_path / "var-lib-incus.socket")]
    monkeypatch.setattr(incus_images._endpoint, "SYSTEM_SOCKETS", tuple(paths))
    monkeypatch.delenv("INCUS_SOCKET", raising=False)
    monkeypatch.delenv("INCUS_DIR", raising=False)
    return paths


async def test_incus_socket_is_tried_first(
    incusd: Any, no_system_daemon: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INCUS_SOCKET", incusd.socket_path)
    monkeypatch.setenv("INCUS_DIR", "/nonexistent")
    async with AsyncClient() as client:
        assert isinstance(await client.images.list(), list)
        assert client.server == f"unix://{incusd.socket_path}"


async def test_incus_dir_is_used_when_incus_socket_does_not_answer(
    incusd: Any, no_system_daemon: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("INCUS_SOCKET", str(tmp_path / "dead.socket"))
    monkeypatch.setenv("INCUS_DIR", str(incusd.directory))
    async with AsyncClient() as client:
        assert isinstance(await client.images.list(recursion=0), list)
        assert client.server == f"unix://{incusd.socket_path}"


async def test_no_answer_names_every_path_tried(
    no_system_daemon: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dead_socket = tmp_path / "dead.socket"
    monkeypatch.setenv("INCUS_SOCKET", str(dead_socket))
    monkeypatch.setenv("INCUS_DIR", str(tmp_path / "incus-dir"))
    async with AsyncClient() as client:
        with pytest.raises(IncusConnectionError) as caught:
            await client.images.list()
    message = str(caught.value)
    for path in [str(dead_socket), str(tmp_path / "incus-dir" / "unix.socket"), *no_system_daemon]:
        assert path in message
