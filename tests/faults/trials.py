"""The trials: one call of the SDK under one fault, and the promises it is checked against.

Every trial is checked against the SDK's promises:

* it ends in success or in a subclass of IncusError (KeyboardInterrupt or cancellation only
  where the trial injected them), within a deadline;
* no partial file: nothing under an export's target name that is not a complete, verified
  export, and nothing at all after a call that failed ("placed" counts complete exports a
  failed call left); no temporary file (``.*.partial``) beside it;
* no orphan image: a failed call leaves no image on the daemon unless its error says the image
  may still be stored ("stored, and said so", counted apart); a call that did not fail stored
  exactly the image asked for.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tiny_image import split_image, unified_image

from incus_images import AsyncClient, Client, Image, LeftBehind, Operation
from tests.helpers import sha256

from .fault import DOWN, UP, Fault, Traffic
from .flavours import Interrupter
from .site import IN_PROCESS, Site

#: The client's per-step timeout: short in stall trials, so that a stall can outlast it.
TIMEOUT = 10.0
STALL_TIMEOUT = 1.0

#: The calls under test: create() from bytes, a path, and split (bytes + a rootfs path);
#: export() of a unified and a split image to a file and into a directory; operations.wait()
#: on an upload (it succeeds) and on a download token cancelled meanwhile (it fails); list();
#: copy() from the faulted site into a project of the same daemon, relayed by the client or
#: pulled by the daemon (through the proxy: its download is faulted too).
OPS = (
    "create-bytes",
    "create-path",
    "create-split",
    "export-file",
    "export-dir",
    "export-split-file",
    "export-split-dir",
    "wait-upload",
    "wait-token",
    "list",
    "copy-relay",
    "copy-pull",
)
#: The project a copy trial copies into (images of its own), on the site's daemon.
COPY_PROJECT = "fault-copies"
FLAVOURS = ("sync", "async")
TRANSPORTS = ("https", "unix")
#: The calls under which the second daemon is killed.
KILL_OPS = ("create-bytes", "create-split", "export-file", "export-split-file")

#: The calls all of whose bytes on the unix socket go through httpx's transport (the body of
#: an export or a relay is read straight from the socket, beneath any transport).
IN_PROCESS_OPS = frozenset(
    {"create-bytes", "create-path", "create-split", "wait-upload", "wait-token", "list"}
)
#: The faults at a byte offset that the in-process injector strikes instead of the proxy.
IN_PROCESS_KINDS = frozenset({"close", "reset", "interrupt"})

#: Words with which an error says that the image is, or may be, on the server after all.
SAID_STORED = (
    "may still store",
    "is still on the server",
    "still stored",
    "may be stored",
    "may have been stored",
    "was stored",
    "is stored",
)
#: What an error's ``left_behind`` says when the image is, or may be, on the server after all.
STORED_RECORDS = frozenset(
    {LeftBehind.MAY_BE_STORED, LeftBehind.STORED, LeftBehind.STILL_THERE, LeftBehind.KEPT}
)


def injector_for(op: str, transport: str, kind: str, *, directed: bool) -> str:
    """Which injector strikes a fault of this ``kind`` (``directed``: at a byte offset) under
    this call: in process where a transport strikes as the proxy would, else the proxy of
    ``transport`` (the package's docstring says why)."""
    if transport == "unix" and directed and op in IN_PROCESS_OPS and kind in IN_PROCESS_KINDS:
        return IN_PROCESS
    return transport


def notes_and_message(error: BaseException) -> str:
    return " ".join([str(error), *getattr(error, "__notes__", [])])


def says_stored(error: BaseException) -> bool:
    """Whether the error (or a note on it) says the image is or may be on the server. An error
    that says it deleted the image again does not, unless it adds that it is still there.

    The SDK's own errors record it (``left_behind``); an interruption from outside (Ctrl-C, a
    cancellation) keeps its class and says it in a note only."""
    left = getattr(error, "left_behind", None)
    if left is not None:
        return left in STORED_RECORDS
    text = notes_and_message(error).lower().replace("nothing was stored", "")
    if "deleted again" in text and "still on the server" not in text:
        return False
    return any(words in text for words in SAID_STORED)


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """Everything a trial does, drawn from the seed: replayable with ``--only``."""

    label: str  # "#17", or "kill #3"
    op: str
    flavour: str
    transport: str
    fault: Fault
    timeout: float = TIMEOUT
    finish_after: float = 0.2  # wait-token: when the harness cancels the token
    payload: int | None = None  # create: the image's random payload (None: the site's)
    #: What strikes: IN_PROCESS, or the proxy of ``transport`` (default: injector_for's choice).
    injector: str = ""

    def __post_init__(self) -> None:
        if not self.injector:
            directed = self.fault.direction is not None
            chosen = injector_for(self.op, self.transport, self.fault.kind, directed=directed)
            object.__setattr__(self, "injector", chosen)

    def describe(self) -> str:
        where = f"{self.transport} in process" if self.injector == IN_PROCESS else self.transport
        return f"{self.label} {self.op} {self.flavour} {where}: {self.fault.describe()}"


@dataclasses.dataclass
class TrialResult:
    spec: TrialSpec
    fired: bool = False
    outcome: str = "?"
    message: str = ""
    partial_files: list[str] = dataclasses.field(default_factory=list)
    #: The complete, verified export a failed call left under the target names anyway.
    placed: list[str] = dataclasses.field(default_factory=list)
    temp_files: list[str] = dataclasses.field(default_factory=list)
    orphans: list[str] = dataclasses.field(default_factory=list)
    stored_said_so: list[str] = dataclasses.field(default_factory=list)
    broken: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    traffic: Traffic | None = None
    #: Kill trials: what the restarted daemon kept.
    restarted: bool = False
    daemon_leftovers: list[str] = dataclasses.field(default_factory=list)
    image_lost: bool = False

    def line(self) -> str:
        verdict = "BROKEN: " + "; ".join(self.broken) if self.broken else "ok"
        fired = "struck" if self.fired else "did not strike"
        return (
            f"{self.spec.describe()} ({fired}) -> {self.outcome} in {self.seconds:.2f} s: {verdict}"
        )


class Ledger:
    """Images that failed calls left on the daemons: each counted against the trial that left
    it, as said (its error says the image may be stored) or as an orphan. An image that
    appears only after its trial was checked is counted there when it turns up."""

    def __init__(self, sites: Sequence[Site]) -> None:
        self.sites = list(sites)
        #: Failed creates whose image was not there when checked: it may still appear.
        self._late: dict[str, tuple[TrialResult, BaseException]] = {}

    def account_stored(self, record: TrialResult, fingerprint: str, error: BaseException) -> None:
        if says_stored(error):
            record.stored_said_so.append(fingerprint)
        else:
            record.orphans.append(fingerprint)
            record.broken.append(
                f"the call failed ({type(error).__name__}) without saying so, but stored "
                f"image {fingerprint[:12]}"
            )

    def watch_late(self, fingerprint: str, record: TrialResult, error: BaseException) -> None:
        self._late[fingerprint] = (record, error)

    def claim_late(self, fingerprint: str) -> bool:
        """An image a failed earlier trial left to appear late: count it there, delete it."""
        entry = self._late.pop(fingerprint, None)
        if entry is None:
            return False
        record, error = entry
        self.account_stored(record, fingerprint, error)
        for site in self.sites:
            if fingerprint in site.images():
                site.delete_image(fingerprint)
        return True

    def sweep(self) -> None:
        """At the end: the images failed trials left to appear late."""
        for site in self.sites:
            site.settle()
            for fingerprint in site.images() & set(self._late):
                self.claim_late(fingerprint)


class Trial:
    """One call under one fault: prepare, call, check, clean up."""

    expect_failure = False

    def __init__(self, ledger: Ledger, site: Site, spec: TrialSpec, directory: Path) -> None:
        self.ledger = ledger
        self.site = site
        self.spec = spec
        self.directory = directory
        self.before = site.images()

    #: Bytes the progress callback reports in all (sync interrupts draw their offset from it).
    progress_total = 0

    def call(self, client: Any, progress: Interrupter | None) -> Any:
        raise NotImplementedError

    def check(self, result: Any, error: BaseException | None, record: TrialResult) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Undo what the trial stored (called after check)."""

    def new_images(self, record: TrialResult, exclude: set[str]) -> None:
        """Images that appeared during the trial and nobody asked for are orphans (an image
        a failed earlier trial left to appear late is counted against that trial)."""
        for fingerprint in sorted(self.site.images() - self.before - exclude):
            if self.ledger.claim_late(fingerprint):
                continue
            record.orphans.append(fingerprint)
            record.broken.append(f"image {fingerprint[:12]} appeared and nobody said so")
            self.site.delete_image(fingerprint)

    def stray_files(self, record: TrialResult, expected: set[str]) -> None:
        for name in sorted(os.listdir(self.directory)):
            if name in expected:
                continue
            if name.startswith(".") and name.endswith(".partial"):
                record.temp_files.append(name)
            else:
                record.partial_files.append(name)


class CreateTrial(Trial):
    def __init__(self, ledger: Ledger, site: Site, spec: TrialSpec, directory: Path) -> None:
        super().__init__(ledger, site, spec, directory)
        self.sources: set[str] = set()
        self.kwargs: dict[str, Any] = {}
        payload = spec.payload or site.payload
        if spec.op == "create-split":
            metadata, rootfs = split_image(payload_size=payload)
            (directory / "rootfs.tar.gz").write_bytes(rootfs)
            self.sources.add("rootfs.tar.gz")
            self.data: Any = metadata
            self.kwargs["rootfs"] = directory / "rootfs.tar.gz"
            self.fingerprint = sha256(metadata, rootfs)
            self.progress_total = len(metadata) + len(rootfs)
        else:
            data = unified_image(payload_size=payload)
            self.data = data
            if spec.op == "create-path":
                self.data = directory / "image.tar.gz"
                self.data.write_bytes(data)
                self.sources.add("image.tar.gz")
            self.fingerprint = sha256(data)
            self.progress_total = len(data)

    def call(self, client: Any, progress: Interrupter | None) -> Any:
        return client.images.create(self.data, wait=True, progress=progress, **self.kwargs)

    def check(self, result: Any, error: BaseException | None, record: TrialResult) -> None:
        self.site.settle()
        stored = self.fingerprint in self.site.images()
        if error is None:
            if not isinstance(result, Image) or result.fingerprint != self.fingerprint:
                record.broken.append(f"create() returned {result!r:.100}, not the image")
            if not stored:
                record.broken.append("create() succeeded but the image is not stored")
        elif stored:
            self.ledger.account_stored(record, self.fingerprint, error)
        else:
            self.ledger.watch_late(self.fingerprint, record, error)
        self.new_images(record, {self.fingerprint})
        self.stray_files(record, self.sources)

    def cleanup(self) -> None:
        if self.fingerprint in self.site.images():
            self.site.delete_image(self.fingerprint)


class ExportTrial(Trial):
    def __init__(self, ledger: Ledger, site: Site, spec: TrialSpec, directory: Path) -> None:
        super().__init__(ledger, site, spec, directory)
        self.split = "split" in spec.op
        self.fingerprint = site.exports["split" if self.split else "unified"]
        self.into_directory = spec.op.endswith("-dir")
        self.target = directory if self.into_directory else directory / "image.tar.gz"
        self.progress_total = site.payloads[self.fingerprint]

    def call(self, client: Any, progress: Interrupter | None) -> Any:
        return client.images.export(self.fingerprint, self.target, progress=progress)

    def check(self, result: Any, error: BaseException | None, record: TrialResult) -> None:
        expected: set[str] = set()
        if error is None:
            problem = self._verify(result)
            if problem is None:
                expected = {Path(path).name for path in result}
            else:
                record.broken.append(problem)
        self.stray_files(record, expected)
        if error is not None and record.partial_files and self._complete(record.partial_files):
            record.placed, record.partial_files = record.partial_files, []
            record.broken.append(
                f"the call failed ({type(error).__name__}), yet the complete, verified export "
                f"is in place: {record.placed}"
                + (
                    " (its error says nothing was written)"
                    if "nothing was written" in notes_and_message(error)
                    else ""
                )
            )
        if record.partial_files:
            record.broken.append(f"files left: {record.partial_files}")
        if record.temp_files:
            record.broken.append(f"temporary files left: {record.temp_files}")
        self.site.settle()
        self.new_images(record, set())

    def _complete(self, names: list[str]) -> bool:
        """Whether the files left are the whole export, verified."""
        if len(names) != 1 + self.split:
            return False
        if self.into_directory:
            names = sorted(names, key=lambda name: not name.startswith("meta-"))
            return self._verify([self.directory / name for name in names]) is None
        return self._verify([self.directory / name for name in sorted(names)]) is None

    def _verify(self, result: Any) -> str | None:
        if not isinstance(result, list) or not result:
            return f"export() returned {result!r:.100}"
        paths = [Path(path) for path in result]
        if any(path.parent != self.directory for path in paths):
            return f"export() wrote outside its directory: {paths}"
        if not self.into_directory:
            wanted = [self.target] + ([self.target.with_name("image.tar.gz.root")] * self.split)
            if paths != wanted:
                return f"export() wrote {paths}, not {wanted}"
        elif len(paths) != 1 + self.split:
            return f"export() wrote {paths}"
        digest = hashlib.sha256()
        for path in paths:
            digest.update(path.read_bytes())
        if digest.hexdigest() != self.fingerprint:
            return f"the files export() wrote hash to {digest.hexdigest()[:12]}, not the image"
        return None


class WaitTrial(Trial):
    """operations.wait() on an upload started behind the SDK's back (it succeeds), or on a
    download token the harness cancels after ``finish_after`` (it fails: OperationError)."""

    def __init__(self, ledger: Ledger, site: Site, spec: TrialSpec, directory: Path) -> None:
        super().__init__(ledger, site, spec, directory)
        self.timer: threading.Timer | None = None
        self.fingerprint: str | None = None
        if spec.op == "wait-upload":
            self.expect_failure = False
            data = unified_image(payload_size=4096)
            self.fingerprint = sha256(data)
            self.op_id = site.start_upload(data)
        else:
            self.expect_failure = True
            self.op_id = site.create_token()
            self.timer = threading.Timer(spec.finish_after, site.cancel_operation, [self.op_id])
            self.timer.daemon = True

    def call(self, client: Any, progress: Interrupter | None) -> Any:
        if self.timer is not None:
            self.timer.start()
        return client.operations.wait(self.op_id)

    def check(self, result: Any, error: BaseException | None, record: TrialResult) -> None:
        if error is None and not (isinstance(result, Operation) and result.succeeded):
            record.broken.append(f"wait() returned {result!r:.100}, not a finished operation")
        if error is None and self.expect_failure:
            record.broken.append("wait() succeeded on a cancelled operation")
        self.site.settle()
        self.new_images(record, {self.fingerprint} if self.fingerprint else set())
        self.stray_files(record, set())

    def cleanup(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer.join()
        self.site.cancel_operation(self.op_id)
        self.site.wait_operation(self.op_id)
        if self.fingerprint is not None:
            self.site.delete_image(self.fingerprint)


class ListTrial(Trial):
    def call(self, client: Any, progress: Interrupter | None) -> Any:
        return client.images.list()

    def check(self, result: Any, error: BaseException | None, record: TrialResult) -> None:
        if error is None:
            listed = [image.fingerprint for image in result]
            if listed != sorted(self.before):
                record.broken.append(f"list() returned {len(listed)} images, not the stored ones")
        self.site.settle()
        self.new_images(record, set())
        self.stray_files(record, set())


class CopyTrial(Trial):
    """copy() of the site's unified image (private: a pull needs a download secret) from the
    faulted source into COPY_PROJECT of the same daemon, whose client talks to the daemon's
    own socket. The source keeps its image; the target holds the copy if the call succeeded,
    and otherwise nothing unless the error says it may; a download secret the pull was given
    is cancelled, or the error says it is still valid."""

    def __init__(self, ledger: Ledger, site: Site, spec: TrialSpec, directory: Path) -> None:
        super().__init__(ledger, site, spec, directory)
        self.fingerprint = site.exports["unified"]
        self.mode = spec.op.removeprefix("copy-")
        self.progress_total = site.payloads[self.fingerprint]
        site.ensure_project(COPY_PROJECT)
        self.tokens_before = set(site.tokens())

    def call(self, client: Any, progress: Interrupter | None) -> Any:
        target_options: dict[str, Any] = {"project": COPY_PROJECT, "timeout": self.spec.timeout}
        endpoint = self.site.daemon.endpoint
        options = {"mode": self.mode, "progress": progress}
        if isinstance(client, AsyncClient):

            async def copy() -> Any:
                async with AsyncClient(endpoint, **target_options) as target:
                    return await target.images.copy(self.fingerprint, client, **options)

            return copy()
        with Client(endpoint, **target_options) as target:
            return target.images.copy(self.fingerprint, client, **options)

    def check(self, result: Any, error: BaseException | None, record: TrialResult) -> None:
        self.site.settle()
        copied = self.site.images(COPY_PROJECT)
        if self.fingerprint not in self.site.images():
            record.broken.append("the source lost its image")
        if error is None:
            if not isinstance(result, Image) or result.fingerprint != self.fingerprint:
                record.broken.append(f"copy() returned {result!r:.100}, not the image")
            if self.fingerprint not in copied:
                record.broken.append("copy() succeeded but the target has no copy")
        elif self.fingerprint in copied:
            self.ledger.account_stored(record, self.fingerprint, error)
        for fingerprint in sorted(copied - {self.fingerprint}):
            record.orphans.append(fingerprint)
            record.broken.append(f"the target holds image {fingerprint[:12]} nobody asked for")
        left = sorted(set(self.site.tokens()) - self.tokens_before)
        if left and (error is None or "still valid" not in notes_and_message(error)):
            record.broken.append(f"download secrets left valid without a word: {left}")
        self.stray_files(record, set())

    def cleanup(self) -> None:
        for fingerprint in self.site.images(COPY_PROJECT):
            self.site.delete_image(fingerprint, COPY_PROJECT)
        for token in set(self.site.tokens()) - self.tokens_before:
            self.site.cancel_operation(token)


def trial_class(op: str) -> type[Trial]:
    if op.startswith("copy-"):
        return CopyTrial
    if op.startswith("create-"):
        return CreateTrial
    if op.startswith("export-"):
        return ExportTrial
    if op.startswith("wait-"):
        return WaitTrial
    return ListTrial


def body_direction(op: str) -> str | None:
    """The direction of the call's body, where interruptions strike (None: it has none)."""
    if op.startswith("create-"):
        return UP
    if op.startswith("export-") or op == "copy-relay":
        return DOWN
    return None
