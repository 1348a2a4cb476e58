"""The inference gate (one model call at a time behind a bounded, timed queue) and the release of freed memory."""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from focus_tool.errors import ConfigError, FocusError

MAX_WAITING = 16  # callers that may queue behind the running inference (the server's --queue default)
TIMEOUT_S = 120.0  # longest wait in that queue, seconds (--timeout)


class ServiceBusy(FocusError):
    """The inference queue is full, or the wait for the model timed out; retry later."""


class InferenceGate:
    """One inference at a time; at most ``max_waiting`` callers queue, each for at most ``timeout_s`` seconds."""

    def __init__(self, *, max_waiting: int = MAX_WAITING, timeout_s: float = TIMEOUT_S) -> None:
        if max_waiting < 0:
            raise ConfigError(f"the queue length must be >= 0, got {max_waiting}; pass 0 to refuse while busy")
        if not 0 < timeout_s <= threading.TIMEOUT_MAX:  # also refuses nan and inf (a lock cannot wait that long)
            raise ConfigError(f"the queue timeout must be a finite number of seconds > 0, got {timeout_s}; e.g. 120")
        self.max_waiting = max_waiting
        self.timeout_s = timeout_s
        self._run = threading.Lock()
        self._count = threading.Lock()
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Callers currently queued (not counting the one running)."""
        return self._waiting

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold the model for one inference; raises ServiceBusy when the queue is full or the wait times out."""
        if self._run.acquire(blocking=False):
            try:
                yield
            finally:
                self._run.release()
            return
        with self._count:
            if self._waiting >= self.max_waiting:
                raise ServiceBusy(
                    f"the model is busy and {self._waiting} request(s) are already queued; retry in a few seconds"
                )
            self._waiting += 1
        try:
            acquired = self._run.acquire(timeout=self.timeout_s)
        finally:
            with self._count:
                self._waiting -= 1
        if not acquired:
            raise ServiceBusy(f"waited {self.timeout_s:.0f} s for the model without getting a turn; retry later")
        try:
            yield
        finally:
            self._run.release()


# ---------------------------------------------------------------------------------------------------- the service

TRIM_AFTER_PIXELS = 4_000_000  # after an image this large (48 MB+ in Pillow) freed memory is handed back


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(None)
        trim: Callable[[int], int] = libc.malloc_trim
        return trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Return freed heap memory to the OS. glibc keeps what a thread freed in that thread's malloc arena, so each
    worker thread that once decoded a 40 MP image would keep ~200 MB (4 threads: +730 MB instead of +220 MB).
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
