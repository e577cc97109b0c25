"""One timed transfer in a process of its own, so that scripts/bench.py can read its peak RSS.

    python scripts/bench_child.py upload sync|async|httpx ENDPOINT PATH
    python scripts/bench_child.py export sync|async|httpx ENDPOINT FINGERPRINT TARGET

``httpx`` is the reference: plain httpx with no SDK around it (a file body with its
Content-Length for uploads; ``iter_raw`` to a file, no verification, for exports).
Prints one JSON line: {"fingerprint": ...} or {"files": [...]}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


def upload_sync(endpoint: str, path: str) -> dict[str, object]:
    from incus_images import Client, Image

    with Client(endpoint) as client:
        image = client.images.create(path, wait=True)
    assert isinstance(image, Image)
    return {"fingerprint": image.fingerprint}


def upload_async(endpoint: str, path: str) -> dict[str, object]:
    from incus_images import AsyncClient, Image

    async def run() -> dict[str, object]:
        async with AsyncClient(endpoint) as client:
            image = await client.images.create(path, wait=True)
        assert isinstance(image, Image)
        return {"fingerprint": image.fingerprint}

    return asyncio.run(run())


def _raw_client(endpoint: str):  # type: ignore[no-untyped-def]
    import httpx

    transport = httpx.HTTPTransport(uds=endpoint.removeprefix("unix://"))
    return httpx.Client(transport=transport, base_url="http://incus", timeout=600)


def upload_httpx(endpoint: str, path: str) -> dict[str, object]:
    import os

    with _raw_client(endpoint) as client, open(path, "rb") as body:
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(os.fstat(body.fileno()).st_size),
        }
        started = client.post("/1.0/images", content=body, headers=headers).json()
        waited = client.get(f"{started['operation']}/wait", params={"timeout": "600"}).json()
    return {"fingerprint": waited["metadata"]["metadata"]["fingerprint"]}


def export_sync(endpoint: str, fingerprint: str, target: str) -> dict[str, object]:
    from incus_images import Client

    with Client(endpoint) as client:
        files = client.images.export(fingerprint, target)
    return {"files": [str(f) for f in files]}


def export_async(endpoint: str, fingerprint: str, target: str) -> dict[str, object]:
    from incus_images import AsyncClient

    async def run() -> dict[str, object]:
        async with AsyncClient(endpoint) as client:
            files = await client.images.export(fingerprint, target)
        return {"files": [str(f) for f in files]}

    return asyncio.run(run())


def export_httpx(endpoint: str, fingerprint: str, target: str) -> dict[str, object]:
    with (
        _raw_client(endpoint) as client,
        client.stream("GET", f"/1.0/images/{fingerprint}/export") as response,
        open(target, "wb") as out,
    ):
        for chunk in response.iter_raw():
            out.write(chunk)
    return {"files": [target]}


def main(argv: list[str]) -> int:
    operation, flavour, *args = argv
    runner = globals()[f"{operation}_{flavour}"]
    started = time.perf_counter()
    result = runner(*args)
    result["seconds_inside"] = round(time.perf_counter() - started, 3)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
