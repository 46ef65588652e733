"""Consuming the job's dataset on the driver: result rows as soon as they finish, a watchdog that
stops a job in which nothing progresses (a job never waits forever), and the progress lines of a
job whose output is a log rather than a terminal (:class:`ProgressLog`)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Mapping, Sequence

from ..errors import M3DDMError
from .progress import output_frames, progress_line

logger = logging.getLogger(__name__)


def _ray_seconds(cfg: Mapping[str, Any] | None, key: str) -> float | None:
    """``ray.<key>`` of the job config in seconds (None or 0: no limit)."""
    value = ((cfg or {}).get("ray") or {}).get(key)
    return float(value) if value else None


def stall_timeout(cfg: Mapping[str, Any] | None) -> float | None:
    """``ray.stall_timeout_s`` of the job config in seconds (None or 0: no limit)."""
    return _ray_seconds(cfg, "stall_timeout_s")


def actor_start_timeout(cfg: Mapping[str, Any] | None) -> float | None:
    """``ray.actor_start_timeout_s`` of the job config in seconds (None or 0: no limit)."""
    return _ray_seconds(cfg, "actor_start_timeout_s")


def progress_interval(cfg: Mapping[str, Any] | None) -> float | None:
    """``ray.progress_interval_s`` of the job config in seconds (None or 0: no progress lines)."""
    return _ray_seconds(cfg, "progress_interval_s")


def interactive() -> bool:
    """Whether stdout and stderr are both a terminal (else the job writes to a log: cron,
    ``ray job submit``, a redirect)."""
    return sys.stdout.isatty() and sys.stderr.isatty()


def set_progress_output() -> None:
    """Who shows the job's progress, set on the current ``ray.data.DataContext`` (before the
    dataset is built: a dataset keeps the context it was created with).

    In an interactive terminal Ray Data's progress bars stay. In a log Ray Data's progress is off
    (``enable_progress_bars`` and ``enable_operator_progress_bars``: Ray Data would log a block of
    about 20 lines every 10 s) and so is its note saying so (the ``ray.data._internal.progress``
    logger at ERROR); :class:`ProgressLog` writes one line per ``ray.progress_interval_s`` instead.
    Ray Data's start and finish lines of each dataset remain.
    """
    import ray.data

    if interactive():
        return
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


class ProgressLog:
    """The driver's count of finished rows, written as one :func:`~.progress.progress_line` every
    ``interval_s`` seconds (:meth:`tick`, called by the :class:`StallWatchdog`'s thread, so a line
    also comes while no row arrives) and once more at the end (:meth:`finish`).

    Off (every method counts, none writes) with ``interval_s`` None or 0. :meth:`for_job` turns it
    off in an interactive terminal, where Ray Data's progress bars show. Lines go to ``write``
    (default: stdout, flushed, where the job's summary goes).
    """

    def __init__(self, total: int, interval_s: float | None, *, write: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.total = int(total)
        self.interval_s = float(interval_s or 0)
        self.write = write or _print_line
        self.clock = clock
        self.done = self.errors = self.frames = 0
        self._t0 = clock()
        self._next = self._t0 + self.interval_s
        self._lock = threading.Lock()

    @classmethod
    def for_job(cls, cfg: Mapping[str, Any] | None, total: int) -> "ProgressLog":
        """The progress log of a job over ``total`` rows: ``ray.progress_interval_s`` of ``cfg``
        when the output is a log, off in an interactive terminal (:func:`interactive`)."""
        return cls(total, 0 if interactive() else progress_interval(cfg))

    @property
    def enabled(self) -> bool:
        """Whether lines are written."""
        return self.interval_s > 0

    def arrived(self, row: Mapping[str, Any]) -> None:
        """A row came out of the dataset: count its output frames (a segment's piece included)."""
        self.frames += output_frames(row)

    def finished(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Result rows are complete (a whole output each, any status)."""
        self.done += len(rows)
        self.errors += sum(1 for r in rows if r.get("status") == "error")

    def line(self) -> str:
        """The current progress line."""
        return progress_line(self.done, self.total, self.errors, self.frames, self.clock() - self._t0)

    def tick(self) -> None:
        """Write the line when ``interval_s`` has passed since the last one."""
        if not self.enabled or self.clock() < self._next:
            return
        with self._lock:
            now = self.clock()
            if now < self._next:
                return
            self._next = now + self.interval_s
            self.write(self.line())

    def finish(self) -> None:
        """Write the last line (all rows in, or the job stopped)."""
        if self.enabled:
            with self._lock:
                self.write(self.line())


def _print_line(text: str) -> None:
    print(text, flush=True)


def pools_not_started(pools: Mapping[str, str], since: float) -> list[str] | None:
    """The stages of ``pools`` (stage -> class name of its Ray Data actor, e.g. ``"coarse" ->
    "CoarseStage"``) with no actor that finished starting (placed, ``__init__`` done, model loaded:
    a start time in Ray's actor table) at or after ``since`` (``time.time()`` seconds; actors of
    earlier jobs in the same Ray session do not count). An actor that started and has ended since
    counts (Ray Data ends a pool's actors once its input is done). None when Ray's actor table
    cannot be read (then nothing is known).
    """
    try:
        from ray._private.state import actors  # the GCS actor table (no dashboard needed)

        table = actors()
    except Exception as exc:  # noqa: BLE001 - a private API: without it the stall watchdog remains
        logger.debug("actor table unavailable (%s); pool start-up is not watched", exc)
        return None
    started = set()
    for entry in table.values():
        start = float(entry.get("StartTime") or 0) / 1000.0  # 0 until the creation task has finished
        if start <= 0 or start < since - 1.0:
            continue
        name = str(entry.get("ActorClassName") or "")
        for stage, cls in pools.items():
            if f"MapBatches({cls})" in name:
                started.add(stage)
    return [stage for stage in pools if stage not in started]


def collect_rows(ds, cfg: Mapping[str, Any] | None = None, expected: int | None = None, *,
                 on_row: Callable[[dict], list[dict]] | None = None,
                 pools: Mapping[str, str] | None = None, progress: ProgressLog | None = None,
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

    The actor pools start in the background, all at once and while the first tasks run (Ray Data
    would otherwise start them one after the other, each waiting for its actors:
    :func:`~.job._set_execution_context`). With ``pools`` (stage -> actor class name) the same
    watchdog ends the run when one of them has no started actor after ``ray.actor_start_timeout_s``
    (:func:`pools_not_started`), naming the stage.

    ``progress`` counts every row that arrives and every result row, and the watchdog's thread
    writes its line every interval; the caller writes the last one (:meth:`ProgressLog.finish`),
    after any work that follows the dataset.
    """
    results: list[dict] = []
    timeout = (stall_timeout(cfg) or 0.0) if expected else 0.0
    start_timeout = (actor_start_timeout(cfg) or 0.0) if pools else 0.0
    since = time.time()
    dog = StallWatchdog(timeout, lambda: (expected or 0) - len(results), start_timeout_s=start_timeout,
                        start_check=(lambda: pools_not_started(pools, since)) if pools else None,
                        on_poll=progress.tick if progress is not None and progress.enabled else None)
    try:
        with dog:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
                for row in batch.to_pylist():
                    done = on_row(row) if on_row is not None else [row]
                    results.extend(done)
                    if progress is not None:
                        progress.arrived(row)
                        progress.finished(done)
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
    be installed there) it only logs the stall. ``on_poll`` (e.g. :meth:`ProgressLog.tick`) is
    called by the same thread at every poll, also with both timeouts off.
    """

    def __init__(self, timeout_s: float | None, pending: Callable[[], int], poll_s: float = 0.5, *,
                 start_timeout_s: float | None = None,
                 start_check: Callable[[], Sequence[str] | None] | None = None, check_every_s: float = 2.0,
                 on_poll: Callable[[], None] | None = None):
        self.timeout_s = float(timeout_s or 0)
        self.on_poll = on_poll
        self.pending = pending
        # the start-up watch: ``start_check()`` names the pools without a started actor (None: unknown)
        self.start_timeout_s = float(start_timeout_s or 0) if start_check is not None else 0.0
        self.start_check = start_check
        self.check_every_s = check_every_s
        self._started = self.start_timeout_s <= 0
        self._not_started: list[str] = []
        self._checked = 0.0
        shortest = min([t for t in (self.timeout_s, self.start_timeout_s) if t > 0], default=0.0)
        self.poll_s = min(poll_s, max(shortest / 4, 0.05)) if shortest else poll_s
        self._t0 = time.monotonic()
        self._last = time.monotonic()
        self._done = threading.Event()
        self._fired = False
        self._old_handler = None
        self._armed = False
        self._thread: threading.Thread | None = None

    def progress(self) -> None:
        """A row finished: restart the clock (and every pool has started: the row went through it)."""
        self._last = time.monotonic()
        self._started = True

    @property
    def fired(self) -> bool:
        """Whether the watchdog saw a stall."""
        return self._fired

    def message(self) -> str:
        """The one-line stall error."""
        return self._message()

    def _message(self) -> str:
        if self._not_started:
            stages = ", ".join(self._not_started)
            return (f"the {stages} pool had no started actor after {self.start_timeout_s:g} s "
                    "(ray.actor_start_timeout_s): an actor that cannot be placed, or a model that does not "
                    "load (check --model / --vae and the actor logs); the job was stopped -- raise "
                    "--set ray.actor_start_timeout_s=SECONDS for slow model downloads")
        return (f"no row finished for {self.timeout_s:g} s while {self.pending()} rows were pending "
                "(ray.stall_timeout_s); the job was stopped -- check the Ray dashboard / logs for a stuck "
                "or unplaceable stage, or raise --set ray.stall_timeout_s=SECONDS for very long clips")

    def _handler(self, signum, frame):  # noqa: ARG002 - signal handler signature
        if self._fired and not self._done.is_set():
            raise JobStalled(self._message())

    def _start_stalled(self) -> bool:
        """Whether a pool has not started within ``start_timeout_s`` (checked every
        ``check_every_s`` until every pool has started)."""
        if self._started:
            return False
        now = time.monotonic()
        late = now - self._t0 > self.start_timeout_s
        if not late and now - self._checked < self.check_every_s:
            return False
        self._checked = now
        missing = self.start_check()
        if not missing:  # all started, or nothing can be known: the stall clock remains
            self._started = True
            return False
        if late:
            self._not_started = list(missing)
        return late

    def _watch(self) -> None:
        sent = 0.0
        while not self._done.wait(self.poll_s):
            if self.on_poll is not None:
                try:
                    self.on_poll()
                except Exception as exc:  # noqa: BLE001 - a failed progress line must not end the watch
                    logger.warning("progress report failed (%s); no more progress lines", exc)
                    self.on_poll = None
            if not self._fired:
                stalled = self._start_stalled() or (
                    self.timeout_s > 0 and time.monotonic() - self._last > self.timeout_s and self.pending() > 0)
                if not stalled:
                    continue
                self._fired = True
                logger.error("%s", self._message())
            if not self._armed:  # not on the main thread: nothing can be interrupted
                if self.on_poll is None:
                    return
                continue
            if time.monotonic() - sent > 5.0:  # again later if something swallowed the first one
                sent = time.monotonic()
                os.kill(os.getpid(), signal.SIGUSR1)

    def __enter__(self) -> "StallWatchdog":
        watching = self.timeout_s > 0 or self.start_timeout_s > 0
        if not watching and self.on_poll is None:
            return self
        if watching and threading.current_thread() is threading.main_thread():
            self._old_handler = signal.signal(signal.SIGUSR1, self._handler)
            self._armed = True
        self._last = self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="m3ddm-stall-watchdog", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        if self._armed:
            signal.signal(signal.SIGUSR1, self._old_handler)


