"""The SDK's main job, start to end, against the local Incus daemon.

    python scripts/demo.py

Uses the local daemon when one answers (as the incus CLI finds it); otherwise starts a
throwaway one for the purpose (needs root and incusd: scripts/install-incus.sh) and stops it
afterwards. It touches only what it creates: one image of its own and one alias, both removed
at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import uuid
from contextlib import ExitStack, suppress
from pathlib import Path

from throwaway_incusd import DaemonUnavailable, ThrowawayIncusd
from tiny_image import unified_image

from incus_images import Client, Image, IncusConnectionError, NotFoundError


def step(text: str) -> None:
    print(f"\n== {text}")


def connect(stack: ExitStack) -> Client:
    client = stack.enter_context(Client())
    try:
        client.images.list(recursion=0)
    except IncusConnectionError as exc:
        print(f"no local daemon answers ({exc})")
    else:
        print(f"using the local daemon at {client.server}")
        return client
    try:
        daemon = stack.enter_context(ThrowawayIncusd())
    except DaemonUnavailable as exc:
        sys.exit(f"cannot start a throwaway incusd either: {exc}")
    print(f"started a throwaway incusd (pid {daemon.pid}) at {daemon.socket_path}")
    return stack.enter_context(Client(daemon.endpoint))


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python scripts/demo.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
    ).parse_args(argv)
    with ExitStack() as stack:
        client = connect(stack)
        images = client.images
        alias = f"demo-{uuid.uuid4().hex[:8]}"

        step("build a small image and import it, with properties")
        data = unified_image({"os": "demo-linux", "release": "1"})
        image = images.create(
            data,
            filename="demo image ü.tar.gz",
            properties={"description": "incus_images demo ☃", "purpose": "a & b = c"},
            wait=True,
        )
        assert isinstance(image, Image)
        stack.callback(cleanup, client, image.fingerprint, alias)
        print(f"imported {image.fingerprint[:12]} ({image.size} bytes, {image.filename!r})")
        print(f"properties: {image.properties}")
        assert image.fingerprint == hashlib.sha256(data).hexdigest()

        step("give it an alias")
        created = images.create_alias(alias, image.fingerprint, description="the demo image")
        print(f"alias {created.name!r} -> {created.target[:12]} ({created.description!r})")

        step("list")
        for listed in images.list():
            names = ", ".join(a.name for a in listed.aliases) or "-"
            print(f"{listed.fingerprint[:12]}  {listed.type:9}  {listed.size:>8}  aliases: {names}")

        step("get it back by alias target and by a fingerprint prefix")
        target = images.get_alias(alias).target
        again = images.get(target[:8])
        print(f"{again.fingerprint[:12]} uploaded at {again.uploaded_at:%Y-%m-%d %H:%M:%S %Z}")

        step("update one property (the properties given replace them all: merge to keep them)")
        wanted = {**image.properties, "release": "2"}
        updated = images.update(image.fingerprint, wanted)
        print(f"properties now: {updated.properties}; public={updated.public}")
        assert updated.properties == wanted

        step("export it and verify")
        with tempfile.TemporaryDirectory() as directory:
            written = images.export(image.fingerprint, Path(directory) / "demo.tar.gz")
            digest = hashlib.sha256(written[0].read_bytes()).hexdigest()
            print(f"wrote {[str(p) for p in written]}")
            print(f"sha256 matches the fingerprint: {digest == image.fingerprint}")
            assert digest == image.fingerprint

        step("delete the alias and the image")
        images.delete_alias(alias)
        operation = images.delete(image.fingerprint, wait=True)
        print(f"operation {operation.id}: {operation.status}")
        try:
            images.get(image.fingerprint)
        except NotFoundError:
            print("the image is gone")
        print("\ndemo finished")
    return 0


def cleanup(client: Client, fingerprint: str, alias: str) -> None:
    """Remove what the demo made, if a step failed before doing so."""
    for remove in (
        lambda: client.images.delete_alias(alias),
        lambda: client.images.delete(fingerprint, wait=True),
    ):
        with suppress(NotFoundError):
            remove()


if __name__ == "__main__":
    sys.exit(main())
