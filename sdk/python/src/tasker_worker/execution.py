"""Running handlers off the worker's loop: a pool of daemon threads, and what a finished
attempt hands back to the loop.

Threads are daemons on purpose. Python cannot stop a thread, so a handler that ignores its
cancellation flag keeps its thread until it returns; a daemon thread at least does not keep the
process alive after the worker has shut down (``concurrent.futures`` would join it at exit).
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .protocol import StepRef


@dataclass
class FinishedAttempt:
    """How one handler call ended: its return value, or the exception it raised."""

    step: StepRef
    returned: Any = None
    raised: BaseException | None = None
    elapsed: float = 0.0


class Wakeup:
    """A socket pair the loop polls, so that threads (and signal handlers) can wake it."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def fileno(self) -> int:
        return self._reader.fileno()

    def wake(self) -> None:
        try:
            self._writer.send(b"\0")
        except (BlockingIOError, OSError):
            pass  # already full of wake-ups, or closed at shutdown: either way nothing to do

    def drain(self) -> None:
        try:
            while self._reader.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


class StepThreadPool:
    """At most ``max_threads`` daemon threads, started as needed and reused. The worker never
    submits more calls than it has free slots, so a submitted call starts at once."""

    def __init__(self, max_threads: int, name: str) -> None:
        self._max_threads = max_threads
        self._name = name
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: list[threading.Thread] = []

    def submit(self, call: Callable[[], None]) -> None:
        with self._lock:
            if self._idle > 0:
                self._idle -= 1  # an idle thread is waiting; it takes this call
            else:
                thread = threading.Thread(
                    target=self._serve,
                    name=f"{self._name}-{len(self._threads) + 1}",
                    daemon=True,
                )
                self._threads.append(thread)
                thread.start()
        self._calls.put(call)

    def _serve(self) -> None:
        while True:
            call = self._calls.get()
            if call is None:
                return
            call()
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Lets every thread end once its current call returns (without waiting for it)."""
        with self._lock:
            for _ in self._threads:
                self._calls.put(None)
            self._threads.clear()
            self._idle = 0

    @property
    def thread_count(self) -> int:
        return len(self._threads)


def run_attempt(
    step: StepRef,
    call: Callable[[], Any],
    deliver: Callable[[FinishedAttempt], None],
) -> Callable[[], None]:
    """A pool call that runs ``call`` (the handler), times it, and delivers how it ended."""

    def attempt() -> None:
        started = time.monotonic()
        try:
            finished = FinishedAttempt(step, returned=call())
        except BaseException as error:  # noqa: BLE001 - every ending must reach the loop
            finished = FinishedAttempt(step, raised=error)
        finished.elapsed = time.monotonic() - started
        deliver(finished)

    return attempt
