"""Consuming the job's dataset on the driver: result rows as soon as they finish, and a watchdog
that stops a job in which nothing progresses (a job never waits forever)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any, Callable, Mapping

from ..errors import M3DDMError

logger = logging.getLogger(__name__)


def stall_timeout(cfg: Mapping[str, Any] | None) -> float | None:
    """``ray.stall_timeout_s`` of the job config in seconds (None or 0: no limit)."""
    value = ((cfg or {}).get("ray") or {}).get("stall_timeout_s")
    return float(value) if value else None


def collect_rows(ds, cfg: Mapping[str, Any] | None = None, expected: int | None = None, *,
                 on_row: Callable[[dict], list[dict]] | None = None
                 ) -> tuple[list[dict], BaseException | None]:
    """Every row ``ds`` produces and the exception that stopped it (None when it finished): when Ray
    gives up (retry limits exhausted) the rows that finished are kept.

    With ``expected`` rows, a watchdog (:class:`StallWatchdog`, ``cfg["ray"]["stall_timeout_s"]``)
    stops the run with :class:`JobStalled` when no row arrives for that long while rows are still
    pending. ``on_row`` maps each row that arrives to the result rows it completes (the segment
    pieces of a clip are held until all are in). Rows are read without prefetch, so a finished row
    reaches the driver at once
    (``iter_rows`` holds it back until the next block is ready, so one stuck clip would hide the
    rows finished before it).
    """
    results: list[dict] = []
    timeout = (stall_timeout(cfg) or 0.0) if expected else 0.0
    dog = StallWatchdog(timeout, lambda: (expected or 0) - len(results))
    try:
        with dog:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
                for row in batch.to_pylist():
                    results.extend(on_row(row) if on_row is not None else [row])
                dog.progress()
    except Exception as exc:  # noqa: BLE001 - Ray gave up (retries exhausted) or the watchdog fired
        if dog.fired and not isinstance(exc, JobStalled):  # Ray re-raised it wrapped
            exc = JobStalled(dog.message())
        return results, exc
    return results, None


class JobStalled(M3DDMError):
    """No row of the job finished within ``ray.stall_timeout_s`` while rows were pending."""


class StallWatchdog:
    """Raises :class:`JobStalled` in the main thread when :meth:`progress` is not called for
    ``timeout_s`` seconds (0 / None: off).

    A thread watches the clock and, on a stall, sends this process ``SIGUSR1``, whose handler
    raises in the main thread -- that also wakes a main thread blocked inside Ray's result queue, so
    the dataset's generator is closed and Ray Data shuts its operators down. Used as a context
    manager around the loop that consumes the results. Off the main thread (no signal handler can
    be installed there) it only logs the stall.
    """

    def __init__(self, timeout_s: float | None, pending: Callable[[], int], poll_s: float = 0.5):
        self.timeout_s = float(timeout_s or 0)
        self.pending = pending
        self.poll_s = min(poll_s, max(self.timeout_s / 4, 0.05)) if self.timeout_s else poll_s
        self._last = time.monotonic()
        self._done = threading.Event()
        self._fired = False
        self._old_handler = None
        self._armed = False
        self._thread: threading.Thread | None = None

    def progress(self) -> None:
        """A row finished: restart the clock."""
        self._last = time.monotonic()

    @property
    def fired(self) -> bool:
        """Whether the watchdog saw a stall."""
        return self._fired

    def message(self) -> str:
        """The one-line stall error."""
        return self._message()

    def _message(self) -> str:
        return (f"no row finished for {self.timeout_s:g} s while {self.pending()} rows were pending "
                "(ray.stall_timeout_s); the job was stopped -- check the Ray dashboard / logs for a stuck "
                "or unplaceable stage, or raise --set ray.stall_timeout_s=SECONDS for very long clips")

    def _handler(self, signum, frame):  # noqa: ARG002 - signal handler signature
        if self._fired and not self._done.is_set():
            raise JobStalled(self._message())

    def _watch(self) -> None:
        sent = 0.0
        while not self._done.wait(self.poll_s):
            if not self._fired and (time.monotonic() - self._last <= self.timeout_s or self.pending() <= 0):
                continue
            if not self._fired:
                self._fired = True
                logger.error("%s", self._message())
            if not self._armed:
                return  # not on the main thread: nothing can be interrupted
            if time.monotonic() - sent > 5.0:  # again later if something swallowed the first one
                sent = time.monotonic()
                os.kill(os.getpid(), signal.SIGUSR1)

    def __enter__(self) -> "StallWatchdog":
        if self.timeout_s <= 0:
            return self
        if threading.current_thread() is threading.main_thread():
            self._old_handler = signal.signal(signal.SIGUSR1, self._handler)
            self._armed = True
        self._last = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="m3ddm-stall-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        if self._armed:
            signal.signal(signal.SIGUSR1, self._old_handler)


