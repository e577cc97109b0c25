"""The catalogue part of scripts/bench.py: a simplestreams server read (issue 16).

    python scripts/bench.py --only catalogue [--rounds 5] [--catalogue-images 5000]
                            [--catalogue-export 1] [--workdir /var/tmp]

Two servers of the project's own (scripts/simplestreams_server.py, HTTPS on loopback, in this
process's threads, serving from memory), each variant a fresh process (interpreter start,
import, the work, exit), interleaved with the others and rotated every round; peak RSS from GNU
time. Ratios are medians of per-round ratios.

* **list**: a catalogue of ``--catalogue-images`` images (``synthetic_catalogue``, 3.7 MB of
  products at 5,000), read cold:

  * ``sdk``: ``SimpleStreams(url, certificate=pem).images.list()``, printing how many;
  * ``sdk-async``: the same with AsyncSimpleStreams;
  * ``sdk-json``: ``sdk``, then every image printed as JSON, as the CLI prints its listing
    (the SDK has no JSON output of its own: ``attrs.asdict`` and ``json.dump``, as a user
    would write it, so most of what it adds is attrs's and json's, not the SDK's);
  * ``incus-cli``: ``incus image list NAME: --format json`` with a fresh configuration and an
    empty cache every round (``cli_environment``; the untimed ``remote add`` before it).

  Targets: ``sdk`` at most 1.25x ``incus-cli`` (``list()``, what the issue holds to it);
  the SDK's peak RSS under 200 MiB.
* **export**: a unified image of ``--catalogue-export`` GiB of random bytes (or MiB with an M
  suffix) published on a server of its own:

  * ``sdk-sync``, ``sdk-async``: ``images.export(fingerprint, path)``, which reads the
    catalogue, downloads, checks size and SHA-256 while downloading and renames into place;
  * ``httpx-sync``, ``httpx-async``: plain httpx streaming the file to disk and hashing it as
    it arrives (no size checks, no rename): what the HTTP stack costs by itself, no target;
  * ``curl-sha256``: ``curl -o FILE URL && sha256sum FILE`` in one shell, the hash checked
    against the fingerprint afterwards: the same work done one step after the other (the SDK
    hashes as the bytes arrive, in a thread of its own);
  * ``curl-openssl``: the same with ``openssl dgst -sha256``, no target: coreutils' sha256sum
    does not use the CPU's SHA instructions, OpenSSL (and so Python's hashlib) does, and on
    such a CPU it is several times faster, a stricter reference;
  * ``curl``: the download alone, the floor (no target).

  Target: the SDK at most 1.1x ``curl-sha256``; its peak RSS under 64 MiB, as every transfer's.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench_common import (
    MIB,
    RSS_LIMIT_MIB,
    Run,
    check_rss,
    compare,
    interleave,
    make_image,
    report,
    run_child,
    show_run,
    size_text,
)
from simplestreams_server import SimpleStreamsServer, cli_environment, synthetic_catalogue

LIST_VARIANTS = ["sdk", "sdk-async", "sdk-json", "incus-cli"]
EXPORT_VARIANTS = [
    "sdk-sync",
    "sdk-async",
    "httpx-sync",
    "httpx-async",
    "curl-sha256",
    "curl-openssl",
    "curl",
]
#: What the curl variants run after the download (``-r``: sha256sum's output format).
HASHERS = {"curl-sha256": "sha256sum", "curl-openssl": "openssl dgst -sha256 -r", "curl": None}
#: Issue 16: the SDK's time over the reference's (None: reported, no target).
LIST_TARGETS: dict[str, float | None] = {"sdk": 1.25, "sdk-async": None, "sdk-json": None}
EXPORT_TARGETS: dict[str, float | None] = {"sdk-sync": 1.10, "sdk-async": 1.10}
LIST_REFERENCE = "incus-cli"
EXPORT_REFERENCE = "curl-sha256"
LIST_RSS_LIMIT_MIB = 200
REMOTE = "bench"


def list_programs(url: str, certificate_pem: str) -> dict[str, str]:
    """The SDK's list variants (``python -c``), as a user would write them."""
    server = f"({url!r}, certificate={certificate_pem!r})"
    return {
        "sdk": (
            "from incus_images import SimpleStreams\n"
            f"with SimpleStreams{server} as server:\n"
            "    print(len(server.images.list()))\n"
        ),
        "sdk-async": (
            "import asyncio\n"
            "from incus_images import AsyncSimpleStreams\n"
            "async def main():\n"
            f"    async with AsyncSimpleStreams{server} as server:\n"
            "        print(len(await server.images.list()))\n"
            "asyncio.run(main())\n"
        ),
        "sdk-json": (
            "import json, sys, attrs\n"
            "from incus_images import SimpleStreams\n"
            f"with SimpleStreams{server} as server:\n"
            "    images = server.images.list()\n"
            "json.dump([attrs.asdict(image) for image in images], sys.stdout, default=str)\n"
        ),
    }


def export_programs(
    url: str, certificate_pem: str, fingerprint: str, target: str, *, file_url: str, cafile: str
) -> dict[str, str]:
    """The export variants in Python (``python -c``): the SDK's, and plain httpx's (the file
    streamed to disk and hashed as it arrives, the hash compared, nothing renamed)."""
    server = f"({url!r}, certificate={certificate_pem!r})"
    call = f"images.export({fingerprint!r}, {target!r})"
    client = f"verify=ssl.create_default_context(cafile={cafile!r})"
    check = f"assert digest.hexdigest() == {fingerprint!r}\n"
    return {
        "httpx-sync": (
            "import hashlib, ssl, httpx\n"
            "digest = hashlib.sha256()\n"
            f"with httpx.Client({client}) as client:\n"
            f"    with client.stream('GET', {file_url!r}) as answer:\n"
            f"        with open({target!r}, 'wb') as out:\n"
            "            for chunk in answer.iter_raw():\n"
            "                digest.update(chunk)\n"
            "                out.write(chunk)\n" + check
        ),
        "httpx-async": (
            "import asyncio, hashlib, ssl, httpx\n"
            "digest = hashlib.sha256()\n"
            "async def main():\n"
            f"    async with httpx.AsyncClient({client}) as client:\n"
            f"        async with client.stream('GET', {file_url!r}) as answer:\n"
            f"            with open({target!r}, 'wb') as out:\n"
            "                async for chunk in answer.aiter_raw():\n"
            "                    digest.update(chunk)\n"
            "                    out.write(chunk)\n"
            "asyncio.run(main())\n" + check
        ),
        "sdk-sync": (
            "from incus_images import SimpleStreams\n"
            f"with SimpleStreams{server} as server:\n"
            f"    print(server.{call})\n"
        ),
        "sdk-async": (
            "import asyncio\n"
            "from incus_images import AsyncSimpleStreams\n"
            "async def main():\n"
            f"    async with AsyncSimpleStreams{server} as server:\n"
            f"        print(await server.{call})\n"
            "asyncio.run(main())\n"
        ),
    }


class CatalogueBench:
    """The list and export measurements, each on a server of its own, in ``workdir``."""

    def __init__(self, workdir: Path, *, images: int, export_size: int) -> None:
        self.workdir = workdir
        self.images = images
        self.export_size = export_size
        self.python = sys.executable
        #: The exported image's size in bytes (the tar is a little larger than asked).
        self.image_bytes = 0
        self.env = dict(os.environ)

    def run(self, rounds: int, verdicts: list[tuple[str, bool]]) -> None:
        self.list(rounds, verdicts)
        self.export(rounds, verdicts)

    def list(self, rounds: int, verdicts: list[tuple[str, bool]]) -> None:
        files = synthetic_catalogue(self.images)
        sizes = ", ".join(f"{name} {len(body) / MIB:.1f} MiB" for name, body in files.items())
        print(f"\ncatalogue list, {self.images} images ({sizes}); load average {_load()}")
        with SimpleStreamsServer.from_files(files) as server:
            programs = list_programs(server.url, server.certificate_pem)

            def measure(variant: str) -> Run:
                if variant == "incus-cli":
                    with tempfile.TemporaryDirectory(prefix="cli-", dir=self.workdir) as scratch:
                        env = cli_environment(
                            scratch, server.url, server.certificate_pem, name=REMOTE
                        )
                        argv = ["incus", "image", "list", f"{REMOTE}:", "--format", "json"]
                        run, out = run_child(argv, env)
                    listed = len(json.loads(out))
                elif variant == "sdk-json":
                    run, out = run_child([self.python, "-c", programs[variant]], self.env)
                    listed = len(json.loads(out))
                else:
                    run, out = run_child([self.python, "-c", programs[variant]], self.env)
                    listed = int(out)
                if listed != self.images:
                    raise RuntimeError(f"{variant} listed {listed} images, not {self.images}")
                return run

            runs = interleave(LIST_VARIANTS, rounds, measure, show_run)
        title = f"list of {self.images} images"
        report(title, runs, LIST_REFERENCE, LIST_TARGETS, verdicts)
        check_rss(title, runs, LIST_RSS_LIMIT_MIB, verdicts)
        print(f"  load average after: {_load()}")

    def export(self, rounds: int, verdicts: list[tuple[str, bool]]) -> None:
        shown = size_text(self.export_size)
        print(f"\ncatalogue export, {shown}; writing an incompressible image ...", flush=True)
        image = self.workdir / "catalogue-image.tar"
        make_image(image, self.export_size)
        data = image.read_bytes()
        self.image_bytes = len(data)
        image.unlink()
        server = SimpleStreamsServer()
        fingerprint = server.add_image(data, aliases=["bench/export"], os="bench", release="1")
        del data  # the server holds the one copy
        certificate = self.workdir / "catalogue-server.crt"
        print(f"  load average {_load()}")
        with server:
            certificate.write_text(server.certificate_pem)
            url = f"{server.url}/images/{fingerprint}/incus_combined.tar.gz"

            def measure(variant: str) -> Run:
                out_dir = Path(tempfile.mkdtemp(prefix="export-", dir=self.workdir))
                try:
                    return self._export_once(variant, server, fingerprint, url, out_dir)
                finally:
                    shutil.rmtree(out_dir)

            runs = interleave(EXPORT_VARIANTS, rounds, measure, show_run)
        certificate.unlink()
        title = f"export of {shown}"
        report(title, runs, EXPORT_REFERENCE, {**EXPORT_TARGETS, "curl": None}, verdicts)
        for variant in ("sdk-sync", "sdk-async"):
            compare(runs, variant, "httpx-" + variant.removeprefix("sdk-"), None, verdicts, "")
            compare(runs, variant, "curl-openssl", None, verdicts, "")
            compare(runs, variant, "curl", None, verdicts, "")  # the download alone
        check_rss(title, runs, RSS_LIMIT_MIB, verdicts)
        print(f"  load average after: {_load()}")

    def _export_once(
        self,
        variant: str,
        server: SimpleStreamsServer,
        fingerprint: str,
        url: str,
        out_dir: Path,
    ) -> Run:
        certificate = self.workdir / "catalogue-server.crt"
        target = out_dir / "image.tar"
        if variant.startswith(("sdk-", "httpx-")):
            programs = export_programs(
                server.url,
                server.certificate_pem,
                fingerprint,
                str(target),
                file_url=url,
                cafile=str(certificate),
            )
            run, _ = run_child([self.python, "-c", programs[variant]], self.env)
        else:
            curl = f"curl -sS --fail --cacert {certificate} -o {target} {url}"
            hasher = HASHERS[variant]
            command = curl if hasher is None else f"{curl} && {hasher} {target}"
            run, out = run_child(["sh", "-c", command], self.env)
            if hasher is not None and out.split()[0] != fingerprint:
                raise RuntimeError(f"{variant}: the download hashes to {out.split()[0]}")
        written = target.stat().st_size
        if written != self.image_bytes:
            raise RuntimeError(f"{variant} wrote {written} bytes, not {self.image_bytes}")
        return run


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())
