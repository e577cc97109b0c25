"""The blocking client in the places users run it: plain scripts and notebook cells."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

from tiny_image import unified_image

from incus_images import Client, Image


def test_sync_client_inside_a_running_event_loop(incusd: Any) -> None:
    async def notebook_cell() -> tuple[str, list[str]]:
        assert asyncio.get_running_loop().is_running()
        # No `with` block: a plain script or notebook cell just calls it.
        client = Client(incusd.endpoint)
        image = client.images.create(unified_image(), wait=True)
        assert isinstance(image, Image)
        try:
            return image.fingerprint, client.images.list(recursion=0)
        finally:
            client.images.delete(image.fingerprint, wait=True)
            client.close()

    fingerprint, listed = asyncio.run(notebook_cell())
    assert fingerprint in listed


def test_plain_script_without_a_with_block_leaks_nothing(incusd: Any) -> None:
    script = (
        "from incus_images import Client\n"
        "print(len(Client().images.list()))\n"
        "client = Client()\n"
        "client.images.list(recursion=0)\n"
        "del client\n"
        "print('done')\n"
    )
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c", script],
        env={**os.environ, "INCUS_SOCKET": incusd.socket_path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "done"
    assert "ResourceWarning" not in result.stderr, result.stderr
