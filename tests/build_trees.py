"""Root filesystems to build images from (issue 17), and the ordinary user who builds them.

Flavour-neutral: the trees are made on disk as root (a device node needs root to make), then
handed to ``nobody`` (uid 65534) where an ordinary user would own them. ``run_as_nobody``
runs a build in a child process that has dropped to that user.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from tiny_image import BUSYBOX

#: The ordinary user the builds run as (Debian's nobody and nogroup).
NOBODY = 65534

#: An init that lives until Incus stops it (incus stop sends SIGPWR).
INIT = b"#!/bin/sh\ntrap 'exit 0' PWR TERM INT\nwhile :; do sleep 1 & wait $!; done\n"

#: The template of /etc/hostname, and what the image's metadata says of it.
HOSTNAME_TEMPLATE = b"{{ container.name }}\n"
TEMPLATES = {"/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"}}
PROPERTIES = {"os": "busybox", "release": "issue-17", "description": "built from a directory"}


@contextmanager
def nobodys_directory() -> Iterator[Path]:
    """A fresh directory that nobody owns and may reach (pytest's tmp_path is root's alone),
    removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="incus-build-"))
    try:
        os.chown(directory, NOBODY, NOBODY)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def give_to_nobody(root: Path) -> None:
    """Every path under root (root included, symlinks themselves) owned by nobody."""
    os.lchown(root, NOBODY, NOBODY)
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lchown(os.path.join(parent, name), NOBODY, NOBODY)


def busybox_tree(root: Path) -> Path:
    """A root filesystem that starts: busybox-static as its userland (its applets symlinks to
    it), an init, and one of each kind of file the image must keep. Returns the templates
    directory (beside root) that holds hostname.tpl. Owned by nobody throughout.

    * ``/usr/bin/suid``: mode 4755 (setuid);
    * ``/root/hard-a`` and ``/root/hard-b``: one file, two names (a hard link);
    * ``/root/link`` -> ``hard-a`` and ``/root/abs-link`` -> ``/bin/busybox`` (symlinks);
    * ``/root/null``: the character device 1:3, outside /dev (incusd leaves rootfs/dev/ out);
    * ``/root/fifo``: a named pipe;
    * ``/etc/hostname``: a placeholder the template replaces.
    """
    if not os.path.exists(BUSYBOX):
        raise FileNotFoundError(f"{BUSYBOX} is missing: install Debian's busybox-static package")
    root.mkdir()
    for name in ("bin", "sbin", "etc", "dev", "proc", "sys", "tmp", "root", "run", "usr/bin"):
        (root / name).mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    (root / "root").chmod(0o700)
    shutil.copyfile(BUSYBOX, root / "bin/busybox")
    (root / "bin/busybox").chmod(0o755)
    applets = subprocess.run(
        [BUSYBOX, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "sbin/init").write_bytes(INIT)
    (root / "sbin/init").chmod(0o755)
    (root / "etc/hostname").write_text("placeholder\n")
    (root / "usr/bin/suid").write_bytes(b"#!/bin/sh\necho setuid\n")
    (root / "root/hard-a").write_bytes(os.urandom(4096))
    os.link(root / "root/hard-a", root / "root/hard-b")
    (root / "root/link").symlink_to("hard-a")
    (root / "root/abs-link").symlink_to("/bin/busybox")
    os.mknod(root / "root/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(root / "root/fifo", 0o644)
    give_to_nobody(root)
    # After chown: the kernel clears the setuid bit of a file whose owner changes (as root too).
    (root / "usr/bin/suid").chmod(0o4755)
    (root / "root/null").chmod(0o666)  # mknod's mode passes through the umask
    templates = root.parent / "templates"
    templates.mkdir()
    (templates / "hostname.tpl").write_bytes(HOSTNAME_TEMPLATE)
    give_to_nobody(templates)
    return templates


#: Runs as root until the SDK is imported (all of it: it imports some modules when first
#: used), then as nobody: builds the image that argv[1] (JSON) describes into a file.
AS_NOBODY = r"""
import importlib, json, os, pkgutil, sys
import incus_images
from incus_images import ImageBuild

for module in pkgutil.walk_packages(incus_images.__path__, "incus_images."):
    importlib.import_module(module.name)
spec = json.loads(sys.argv[1])
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
os.environ["HOME"] = "/nonexistent"
os.chdir(spec["cwd"])
result = {"uid": os.getuid(), "gid": os.getgid()}
try:
    build = ImageBuild.from_directory(spec["root"], **spec["options"])
    result["fingerprint"] = build.write(spec["out"])
    result["skipped"] = list(build.skipped)
except Exception as exc:
    result["error"] = type(exc).__name__
    result["message"] = str(exc)
print(json.dumps(result))
"""


def run_as_nobody(root: Path, out: Path, **options: Any) -> dict[str, Any]:
    """Build root into out (``ImageBuild.from_directory(root, **options).write(out)``) as
    nobody, in a child process, from root's parent directory. The result: ``uid``, ``gid``,
    and ``fingerprint`` and ``skipped``, or ``error`` (the exception's class name) and
    ``message``."""
    spec = {"root": str(root), "out": str(out), "cwd": str(root.parent), "options": options}
    done = subprocess.run(
        [sys.executable, "-c", AS_NOBODY, json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["uid"], result["gid"]) == (NOBODY, NOBODY)
    return result


@contextmanager
def when_opened(path: Path, action: Callable[[], object]) -> Iterator[threading.Event]:
    """Run action once, in a thread of its own, as soon as this process holds path open (the
    builder is reading it); the event is set once it ran."""
    fired, stop = threading.Event(), threading.Event()
    target = str(path)

    def watch() -> None:
        while not stop.is_set():
            for fd in os.listdir("/proc/self/fd"):
                with suppress(OSError):  # closed since it was listed
                    if os.readlink(f"/proc/self/fd/{fd}") == target:
                        action()
                        fired.set()
                        return
            time.sleep(0.0002)

    thread = threading.Thread(target=watch, name=f"when-opened {path.name}", daemon=True)
    thread.start()
    try:
        yield fired
    finally:
        stop.set()
        thread.join()
