"""Unit tests of what uploads and exports share: the Hasher, Progress, and the tqdm adapter."""

from __future__ import annotations

import hashlib
import io
import random
import sys
import threading
import types
from collections.abc import Iterator

import pytest

import incus_images._transfer.reports
import incus_images._transfer.threads
from incus_images._transfer.reports import Progress
from incus_images._transfer.threads import CHUNK_SIZE, Hasher
from incus_images.progress import TqdmProgress
from tests.helpers import random_pieces

WORKER = "incus-images-sha256"


def workers() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == WORKER}


class Gate:
    """Stands in for hashlib.sha256(): its update() waits until the gate opens."""

    def __init__(self, opened: threading.Event) -> None:
        self._real = hashlib.sha256()
        self._opened = opened

    def update(self, data: bytes | memoryview) -> None:
        assert self._opened.wait(timeout=30), "the test never opened the gate"
        self._real.update(data)

    def hexdigest(self) -> str:
        return self._real.hexdigest()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Make every new Hasher hash only while the returned event is set (a slow consumer)."""
    opened = threading.Event()
    monkeypatch.setattr(
        incus_images._transfer.threads,
        "hashlib",
        types.SimpleNamespace(sha256=lambda: Gate(opened)),
    )
    yield opened
    opened.set()  # never leave a worker stuck


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A settable time.monotonic for incus_images._transfer.reports (only there)."""
    now = [1000.0]
    monkeypatch.setattr(
        incus_images._transfer.reports, "time", types.SimpleNamespace(monotonic=lambda: now[0])
    )
    return now


# --------------------------------------------------------------------------------------------
# Hasher


@pytest.mark.parametrize(
    "inline_limit",
    [0, 1, 4 * CHUNK_SIZE, 10**12],
    ids=["always-threaded", "threaded-after-a-byte", "default", "always-inline"],
)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_digest_equals_hashlib_for_random_splits(inline_limit: int, seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(6 * CHUNK_SIZE + rng.randint(0, 1000))
    hasher = Hasher(inline_limit=inline_limit)
    for piece in random_pieces(data, rng, 3 * CHUNK_SIZE // 4):
        hasher.update(piece if rng.random() < 0.5 else memoryview(piece))
        if hasher.backlogged:
            hasher.wait_for_room()
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def test_digest_of_nothing() -> None:
    assert Hasher().hexdigest() == hashlib.sha256().hexdigest()


def test_small_streams_are_hashed_inline() -> None:
    before = workers()
    hasher = Hasher(inline_limit=4 * CHUNK_SIZE)
    data = bytes(range(256)) * 4096  # 1 MiB
    for _ in range(4):
        hasher.update(data)
    assert workers() == before
    assert hasher.hexdigest() == hashlib.sha256(data * 4).hexdigest()
    assert workers() == before


def test_large_streams_are_hashed_on_a_worker_that_ends_with_the_digest() -> None:
    before = workers()
    hasher = Hasher(inline_limit=CHUNK_SIZE)
    data = random.Random(5).randbytes(CHUNK_SIZE)
    for _ in range(3):
        hasher.update(data)
    started = workers() - before
    assert len(started) == 1
    (worker,) = started
    assert worker.is_alive()
    assert worker.daemon  # an abort never waits for it
    assert hasher.hexdigest() == hashlib.sha256(data * 3).hexdigest()
    assert not worker.is_alive()


def test_hexdigest_twice_gives_the_same_digest() -> None:
    hasher = Hasher(inline_limit=0)
    hasher.update(b"x" * (2 * CHUNK_SIZE))
    first = hasher.hexdigest()
    assert hasher.hexdigest() == first == hashlib.sha256(b"x" * (2 * CHUNK_SIZE)).hexdigest()


def test_a_small_remainder_below_a_batch_is_hashed_too() -> None:
    """Bytes past the inline limit that never fill a batch are hashed by hexdigest()."""
    hasher = Hasher(inline_limit=10)
    hasher.update(b"a" * 10)
    hasher.update(b"b" * 5)
    assert hasher.hexdigest() == hashlib.sha256(b"a" * 10 + b"b" * 5).hexdigest()


def test_backlog_turns_on_and_wait_for_room_returns_once_it_drains(
    gate: threading.Event,
) -> None:
    hasher = Hasher(inline_limit=0, backlog=1024)
    data = b"z" * CHUNK_SIZE
    hasher.update(data)  # one batch handed to the (stuck) worker
    hasher.update(data)
    assert hasher.backlogged
    waiter = threading.Thread(target=hasher.wait_for_room)
    waiter.start()
    waiter.join(timeout=0.02)
    assert waiter.is_alive()  # no room while the worker is stuck
    gate.set()
    waiter.join(timeout=30)
    assert not waiter.is_alive()
    assert not hasher.backlogged
    assert hasher.hexdigest() == hashlib.sha256(data * 2).hexdigest()


def test_no_backlog_below_the_limit(gate: threading.Event) -> None:
    hasher = Hasher(inline_limit=0, backlog=4 * CHUNK_SIZE)
    hasher.update(b"z" * CHUNK_SIZE)
    assert not hasher.backlogged
    gate.set()
    hasher.wait_for_room()  # returns at once when there is room
    assert hasher.hexdigest() == hashlib.sha256(b"z" * CHUNK_SIZE).hexdigest()


def test_update_itself_never_blocks_on_the_backlog(gate: threading.Event) -> None:
    """The producer decides when to wait (from a worker thread, in async code)."""
    hasher = Hasher(inline_limit=0, backlog=1)
    for _ in range(5):
        hasher.update(b"q" * CHUNK_SIZE)  # would hang here if update() waited
    assert hasher.backlogged
    hasher.close()


def test_close_without_digest_does_not_hang_even_with_a_stuck_worker(
    gate: threading.Event,
) -> None:
    before = workers()
    hasher = Hasher(inline_limit=0)
    hasher.update(b"w" * (3 * CHUNK_SIZE))
    (worker,) = workers() - before
    hasher.close()  # returns although the worker cannot finish yet
    assert worker.is_alive()
    gate.set()
    worker.join(timeout=30)
    assert not worker.is_alive()


def test_close_before_any_thread_and_twice() -> None:
    hasher = Hasher()
    hasher.update(b"small")
    hasher.close()
    hasher.close()


def test_close_after_hexdigest() -> None:
    hasher = Hasher(inline_limit=0)
    hasher.update(b"x" * CHUNK_SIZE)
    hasher.hexdigest()
    hasher.close()


# --------------------------------------------------------------------------------------------
# Progress


class Calls(list[tuple[int, int | None]]):
    def __call__(self, done: int, total: int | None) -> None:
        self.append((done, total))


def test_progress_first_call_is_zero_and_total(clock: list[float]) -> None:
    calls = Calls()
    progress = Progress(calls, 500)
    assert calls == []
    progress.start()
    assert calls == [(0, 500)]


def test_progress_is_throttled_by_its_interval(clock: list[float]) -> None:
    calls = Calls()
    progress = Progress(calls, 1000, interval=0.5)
    progress.start()
    clock[0] += 0.1
    progress.advance(10)
    clock[0] += 0.3
    progress.advance(10)
    assert calls == [(0, 1000)]  # 0.4 s since the last report
    assert progress.done == 20
    clock[0] += 0.1
    progress.advance(5)
    assert calls == [(0, 1000), (25, 1000)]  # 0.5 s: reported, with everything so far
    clock[0] += 0.49
    progress.advance(1)
    assert calls[-1] == (25, 1000)
    clock[0] += 0.01
    progress.advance(1)
    assert calls[-1] == (27, 1000)
    assert len(calls) == 3


def test_progress_default_interval_is_a_tenth_of_a_second(clock: list[float]) -> None:
    calls = Calls()
    progress = Progress(calls, None)
    progress.start()
    clock[0] += 0.09
    progress.advance(1)
    assert len(calls) == 1
    clock[0] += 0.01
    progress.advance(1)
    assert calls == [(0, None), (2, None)]


def test_progress_finish_reports_the_final_value_once(clock: list[float]) -> None:
    calls = Calls()
    progress = Progress(calls, 300)
    progress.start()
    progress.advance(100)
    progress.advance(200)  # the clock stands still: neither is reported
    assert calls == [(0, 300)]
    progress.finish()
    assert calls == [(0, 300), (300, 300)]
    progress.finish()
    assert calls == [(0, 300), (300, 300)]


def test_progress_finish_does_not_repeat_a_final_value_already_reported(
    clock: list[float],
) -> None:
    calls = Calls()
    progress = Progress(calls, 300)
    progress.start()
    clock[0] += 1
    progress.advance(300)
    assert calls == [(0, 300), (300, 300)]
    progress.finish()
    assert calls == [(0, 300), (300, 300)]


def test_progress_finish_right_after_start_does_not_repeat_zero(clock: list[float]) -> None:
    calls = Calls()
    progress = Progress(calls, 0)
    progress.start()
    progress.finish()
    assert calls == [(0, 0)]


def test_progress_with_unknown_total(clock: list[float]) -> None:
    calls = Calls()
    progress = Progress(calls, None)
    progress.start()
    clock[0] += 1
    progress.advance(7)
    progress.advance(8)
    progress.finish()
    assert calls == [(0, None), (7, None), (15, None)]


def test_progress_without_a_callback_still_counts(clock: list[float]) -> None:
    progress = Progress(None, 10)
    progress.start()
    clock[0] += 1
    progress.advance(4)
    progress.finish()
    assert progress.done == 4


def test_progress_with_the_real_clock_starts_and_ends_exactly() -> None:
    calls = Calls()
    progress = Progress(calls, 10_000)
    progress.start()
    for _ in range(100):
        progress.advance(100)
    progress.finish()
    assert calls[0] == (0, 10_000)
    assert calls[-1] == (10_000, 10_000)
    assert calls.count((10_000, 10_000)) == 1
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})


# --------------------------------------------------------------------------------------------
# TqdmProgress


def test_tqdm_bar_follows_the_calls() -> None:
    out = io.StringIO()
    with TqdmProgress("importing", file=out) as bar:
        bar(0, 4096)
        assert bar.bar.total == 4096
        assert bar.bar.n == 0
        bar(1024, 4096)
        assert bar.bar.n == 1024
        bar(4096, 4096)
        assert bar.bar.n == 4096
    assert "importing" in out.getvalue()
    assert "100%" in out.getvalue()


def test_tqdm_bar_with_unknown_then_known_total() -> None:
    with TqdmProgress(file=io.StringIO()) as bar:
        bar(0, None)
        bar(10, None)
        assert bar.bar.total is None
        assert bar.bar.n == 10
        bar(30, 100)
        assert bar.bar.total == 100
        assert bar.bar.n == 30


def test_tqdm_options_go_to_tqdm() -> None:
    with TqdmProgress("x", file=io.StringIO(), unit="bytes", leave=False) as bar:
        assert bar.bar.unit == "bytes"
        assert bar.bar.leave is False
        assert bar.bar.desc == "x"


def test_tqdm_context_manager_closes_the_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []
    with TqdmProgress(file=io.StringIO()) as bar:
        original = bar.bar.close

        def close() -> None:
            closed.append(True)
            original()

        monkeypatch.setattr(bar.bar, "close", close)
        assert closed == []
    assert closed == [True]


def test_tqdm_context_manager_closes_the_bar_on_error() -> None:
    bars: list[TqdmProgress] = []

    def interrupted_import() -> None:
        with TqdmProgress(file=io.StringIO()) as bar:
            bars.append(bar)
            bar(5, 10)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_import()
    assert bars[0].bar.n == 5
    assert bars[0].bar.disable  # tqdm disables a closed bar


def test_tqdm_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with pytest.raises(ImportError, match=r"incus_images\[progress\]"):
        TqdmProgress("x")
