"""One timed transfer in a process of its own, so that scripts/bench.py can read its peak RSS.

    python scripts/bench_child.py upload sync|async|httpx ENDPOINT PATH
    python scripts/bench_child.py export sync|async|httpx ENDPOINT FINGERPRINT TARGET
    python scripts/bench_child.py copy sync|async SPEC
    python scripts/bench_child.py build sync|async ENDPOINT ROOT
    python scripts/bench_child.py calls sync|async|httpx|httpx_async ENDPOINT FINGERPRINT COUNT

``httpx`` is the reference: plain httpx with no SDK around it (a file body with its
Content-Length for uploads; ``iter_raw`` to a file, no verification, for exports).
``build`` streams the directory ROOT into the server as an image
(``create(ImageBuild.from_directory(ROOT))``, every default).
Prints one JSON line: {"fingerprint": ...} or {"files": [...]}.

SPEC (for copies, see scripts/bench_copy.py) is JSON: {"fingerprint": FP, "mode": "pull" |
"push" | "relay" | null, "target": CLIENT, "source": CLIENT}, where CLIENT is {"endpoint":
"unix://..." | "https://...", "cert": [CRT, KEY], "verify": SERVER_CRT} (cert and verify only
over HTTPS). A copy also reports wall-clock times (time.time()), to be set against the
daemons' own operation events: "main_at" (this script's code starts), "imported_at" (the SDK is
imported and the clients made) and "returned_at" (images.copy() returned).

``calls`` reads one image COUNT times in a loop to warm up, then COUNT times more, and reports
the client's CPU time per call of the second loop (``time.process_time``) and its wall time;
its ``httpx`` references send the same GET and ``json.loads`` the body.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable


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


def build_sync(endpoint: str, root: str) -> dict[str, object]:
    from incus_images import Client, Image, ImageBuild

    with Client(endpoint) as client:
        image = client.images.create(ImageBuild.from_directory(root), wait=True)
    assert isinstance(image, Image)
    return {"fingerprint": image.fingerprint}


def build_async(endpoint: str, root: str) -> dict[str, object]:
    from incus_images import AsyncClient, Image, ImageBuild

    async def run() -> dict[str, object]:
        async with AsyncClient(endpoint) as client:
            image = await client.images.create(ImageBuild.from_directory(root), wait=True)
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


def _client_args(spec: dict[str, object]) -> tuple[str, dict[str, object]]:
    endpoint = str(spec["endpoint"])
    if endpoint.startswith("unix://"):
        return endpoint, {}
    crt, key = spec["cert"]  # type: ignore[misc]
    return endpoint, {"cert": (crt, key), "verify": spec["verify"]}


def copy_sync(spec_json: str) -> dict[str, object]:
    from incus_images import Client, Image

    imported_at = time.time()
    spec = json.loads(spec_json)
    target_endpoint, target_args = _client_args(spec["target"])
    source_endpoint, source_args = _client_args(spec["source"])
    with (
        Client(target_endpoint, **target_args) as target,  # type: ignore[arg-type]
        Client(source_endpoint, **source_args) as source,  # type: ignore[arg-type]
    ):
        image = target.images.copy(spec["fingerprint"], source, mode=spec["mode"])
        returned_at = time.time()
    assert isinstance(image, Image)
    return {
        "fingerprint": image.fingerprint,
        "imported_at": imported_at,
        "returned_at": returned_at,
    }


def copy_async(spec_json: str) -> dict[str, object]:
    from incus_images import AsyncClient, Image

    imported_at = time.time()
    spec = json.loads(spec_json)
    target_endpoint, target_args = _client_args(spec["target"])
    source_endpoint, source_args = _client_args(spec["source"])

    async def run() -> dict[str, object]:
        async with (
            AsyncClient(target_endpoint, **target_args) as target,  # type: ignore[arg-type]
            AsyncClient(source_endpoint, **source_args) as source,  # type: ignore[arg-type]
        ):
            image = await target.images.copy(spec["fingerprint"], source, mode=spec["mode"])
            returned_at = time.time()
        assert isinstance(image, Image)
        return {
            "fingerprint": image.fingerprint,
            "imported_at": imported_at,
            "returned_at": returned_at,
        }

    return asyncio.run(run())


def _loop(call: Callable[[], object], count: int) -> dict[str, object]:
    """Warm up with count calls, then time count more: client CPU and wall time per call."""
    for _ in range(count):
        call()
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        call()
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started_wall
    return {"cpu_us": cpu / count * 1e6, "wall_us": wall / count * 1e6}


async def _async_loop(call: Callable[[], Awaitable[object]], count: int) -> dict[str, object]:
    for _ in range(count):
        await call()
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    for _ in range(count):
        await call()
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started_wall
    return {"cpu_us": cpu / count * 1e6, "wall_us": wall / count * 1e6}


def calls_sync(endpoint: str, fingerprint: str, count: str) -> dict[str, object]:
    from incus_images import Client

    with Client(endpoint) as client:
        return _loop(lambda: client.images.get(fingerprint), int(count))


def calls_async(endpoint: str, fingerprint: str, count: str) -> dict[str, object]:
    from incus_images import AsyncClient

    async def run() -> dict[str, object]:
        async with AsyncClient(endpoint) as client:
            return await _async_loop(lambda: client.images.get(fingerprint), int(count))

    return asyncio.run(run())


def calls_httpx(endpoint: str, fingerprint: str, count: str) -> dict[str, object]:
    with _raw_client(endpoint) as client:
        path = f"/1.0/images/{fingerprint}"
        return _loop(lambda: json.loads(client.get(path).content), int(count))


def calls_httpx_async(endpoint: str, fingerprint: str, count: str) -> dict[str, object]:
    import httpx

    async def get_and_parse(client: httpx.AsyncClient, path: str) -> object:
        return json.loads((await client.get(path)).content)

    async def run() -> dict[str, object]:
        transport = httpx.AsyncHTTPTransport(uds=endpoint.removeprefix("unix://"))
        async with httpx.AsyncClient(transport=transport, base_url="http://incus") as client:
            path = f"/1.0/images/{fingerprint}"
            return await _async_loop(lambda: get_and_parse(client, path), int(count))

    return asyncio.run(run())


def main(argv: list[str]) -> int:
    main_at = time.time()
    # No argparse: its import would land inside the start-up this child's figures time.
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    runner = globals().get("_".join(argv[:2])) if len(argv) >= 2 else None
    if not callable(runner) or argv[0].startswith("_"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    operation, args = argv[0], argv[2:]
    started = time.perf_counter()
    result = runner(*args)
    if operation == "copy":
        result["main_at"] = main_at
    result["seconds_inside"] = round(time.perf_counter() - started, 3)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
