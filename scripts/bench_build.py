"""The build part of scripts/bench.py: an image made from a directory (issue 17).

    python scripts/bench.py --only build [--rounds 3] [--build-size 1] [--build-small-files 50000]
                            [--workdir /var/tmp]

A throwaway incusd of its own; a root filesystem of ``--build-size`` GiB (or MiB with an M
suffix): four large files of random bytes and ``--build-small-files`` small ones (1 KiB of
random bytes each, 1,000 to a directory), beside a metadata.yaml for the reference. Each variant
runs in a fresh process, interleaved with the others and rotated every round; peak RSS from GNU
time; the image is deleted after every run. Ratios are medians of per-round ratios.

* ``sdk-sync``: ``client.images.create(ImageBuild.from_directory(ROOT), wait=True)``
  (scripts/bench_child.py ``build``): the tree read, tarred, gzipped and hashed while it is
  uploaded, with the SDK's default compression (gzip, level 6: GNU gzip's default);
* ``sdk-async``: the same with AsyncClient;
* ``tar-import``: what people do today, in one shell: ``tar -czf FILE metadata.yaml rootfs``
  (GNU tar running gzip at its default level, 6), then ``incus image import FILE``, then
  ``rm FILE``.

Targets: each SDK variant at most 1.0x ``tar-import``; its peak RSS under 64 MiB; and no
temporary file: the SDK's children run in an empty working directory with an empty TMPDIR of
their own, watched (every 5 ms) while they run: no file may appear in either, even briefly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench_common import (
    HERE,
    MIB,
    RSS_LIMIT_MIB,
    Run,
    check_rss,
    interleave,
    report,
    run_child,
    show_run,
    size_text,
)
from throwaway_incusd import ThrowawayIncusd, unix_request

BUILD_VARIANTS = ["sdk-sync", "sdk-async", "tar-import"]
BUILD_TARGETS: dict[str, float | None] = {"sdk-sync": 1.0, "sdk-async": 1.0}
REFERENCE = "tar-import"
LARGE_FILES = 4
SMALL_FILE_SIZE = 1024
PER_DIRECTORY = 1000
#: How often the watcher looks for temporary files.
WATCH_SECONDS = 0.005


def make_tree(directory: Path, size: int, small_files: int) -> Path:
    """directory/rootfs of about size bytes (LARGE_FILES random files, small_files small
    ones), and directory/metadata.yaml for the reference's tarball; returns the rootfs."""
    root = directory / "rootfs"
    root.mkdir(parents=True)
    large = max(size - small_files * SMALL_FILE_SIZE, 0) // LARGE_FILES
    for number in range(LARGE_FILES):
        with open(root / f"large-{number}.bin", "wb") as file:
            left = large
            while left:
                chunk = os.urandom(min(left, 8 * MIB))
                file.write(chunk)
                left -= len(chunk)
    for number in range(small_files):
        folder = root / "small" / f"{number // PER_DIRECTORY:04}"
        if number % PER_DIRECTORY == 0:
            folder.mkdir(parents=True)
        (folder / f"{number:06}").write_bytes(os.urandom(SMALL_FILE_SIZE))
    (directory / "metadata.yaml").write_text(
        "architecture: x86_64\ncreation_date: 1700000000\nproperties:\n  os: bench\n"
    )
    return root


def count_files(*directories: Path) -> int:
    return sum(len(files) + len(dirs) for d in directories for _, dirs, files in os.walk(d))


@contextmanager
def watched(*directories: Path) -> Iterator[list[int]]:
    """Watch directories in a thread while the block runs; the list holds the most entries
    (files and folders, at any depth) seen in them at once."""
    most = [count_files(*directories)]
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(WATCH_SECONDS):
            most[0] = max(most[0], count_files(*directories))

    thread = threading.Thread(target=watch, name="watch temporary files", daemon=True)
    thread.start()
    try:
        yield most
    finally:
        stop.set()
        thread.join()
        most[0] = max(most[0], count_files(*directories))


def _sdk_parent() -> str:
    """The directory the SDK is imported from here: the children start in another working
    directory, where an editable install may find another one (or none)."""
    found = subprocess.run(
        [sys.executable, "-c", "import incus_images; print(incus_images.__path__[0])"],
        capture_output=True,
        text=True,
        check=True,
    )
    return str(Path(found.stdout.strip()).parent)


class BuildBench:
    def __init__(self, workdir: Path, parent_dir: str | None, *, size: int, small_files: int):
        self.workdir = workdir
        self.parent_dir = parent_dir
        self.size = size
        self.small_files = small_files
        #: Entries seen in the SDK children's working directory and TMPDIR, per run.
        self.temporary: list[int] = []

    def run(self, rounds: int, verdicts: list[tuple[str, bool]]) -> None:
        tree = self.workdir / "build-tree"
        print(
            f"\nwriting a {size_text(self.size)} tree ({LARGE_FILES} large files, "
            f"{self.small_files} small ones) ...",
            flush=True,
        )
        root = make_tree(tree, self.size, self.small_files)
        cwd, tmp = self.workdir / "build-cwd", self.workdir / "build-tmp"
        cwd.mkdir()
        tmp.mkdir()
        config = self.workdir / "build-cli-config"
        config.mkdir()
        try:
            with ThrowawayIncusd(parent_dir=self.parent_dir) as daemon:
                print(f"incusd (throwaway for builds, pid {daemon.pid})", flush=True)
                env = dict(
                    os.environ,
                    INCUS_DIR=str(daemon.directory),
                    INCUS_CONF=str(config),
                    TMPDIR=str(tmp),
                    PYTHONPATH=_sdk_parent(),
                )

                def measure(variant: str) -> Run:
                    run = self._measure(variant, daemon, env, root, cwd, tmp)
                    self._delete_all(daemon)
                    return run

                runs = interleave(BUILD_VARIANTS, rounds, measure, show_run)
        finally:
            shutil.rmtree(tree, ignore_errors=True)
            shutil.rmtree(cwd, ignore_errors=True)
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(config, ignore_errors=True)
        self._report(runs, verdicts)

    def _measure(
        self,
        variant: str,
        daemon: ThrowawayIncusd,
        env: dict[str, str],
        root: Path,
        cwd: Path,
        tmp: Path,
    ) -> Run:
        if variant == REFERENCE:
            image = cwd / "image.tar.gz"
            script = (
                f"tar -czf {image} -C {root.parent} metadata.yaml rootfs"
                f" && incus image import {image} --quiet && rm {image}"
            )
            run, _ = run_child(["sh", "-c", script], env)
            return run
        flavour = variant.removeprefix("sdk-")
        argv = [sys.executable, str(HERE / "bench_child.py"), "build", flavour]
        with watched(cwd, tmp) as most:
            run, _ = run_child([*argv, f"unix://{daemon.socket_path}", str(root)], env, cwd=cwd)
        self.temporary.append(most[0])
        return run

    @staticmethod
    def _delete_all(daemon: ThrowawayIncusd) -> None:
        _, body = unix_request(daemon.socket_path, "GET", "/1.0/images")
        for url in body["metadata"]:
            status, answer = unix_request(daemon.socket_path, "DELETE", url)
            if status == 202:
                operation = answer["metadata"]["id"]
                path = f"/1.0/operations/{operation}/wait?timeout=600"
                unix_request(daemon.socket_path, "GET", path, timeout=700)

    def _report(self, runs: dict[str, list[Run]], verdicts: list[tuple[str, bool]]) -> None:
        title = f"build of {size_text(self.size)} ({self.small_files} small files)"
        report(title, runs, REFERENCE, BUILD_TARGETS, verdicts)
        check_rss(title, runs, RSS_LIMIT_MIB, verdicts)
        if self.temporary:
            most = max(self.temporary)
            print(f"  entries seen in the SDK's working directory and TMPDIR: at most {most}")
            verdicts.append((f"{title}: no temporary file", most == 0))
