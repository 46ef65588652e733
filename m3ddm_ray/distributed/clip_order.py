"""The order in which a job's clips enter the pipeline: the cheapest of the first few go first.

Why: the fine pool has nothing to do until the coarse pool has finished a first clip, and the coarse
pass of a clip (global frames + stride-15 keyframes, sequential) grows with its length. When a long
clip reaches the coarse pool first, every fine actor idles through its whole coarse pass -- on the
sample manifest, the slow runs of the Ray overhead measurement (docs/performance.md, "Ray
overhead"). Later clips do not matter: by then the coarse pool runs ahead of the fine pool.

The rule (``stages.prepare.cheapest_first: N``, default 8): among the first ``N`` pending clips in
manifest order, the clips are put in order of their estimated cost, cheapest first; clips after
the first ``N`` keep their manifest order. ``0`` keeps the manifest order. The estimate is the
source's size in bytes times the number of outputs (ratios) the clip makes: one metadata call per
clip for at most ``N`` clips, made on the driver in a few threads and bounded in time
(:data:`LOOKUP_TIMEOUT_S`), so a library of thousands of videos in object storage pays for ``N``
lookups, not thousands, and a store that does not answer cannot hold the job. A clip whose size
cannot be read (missing file, a folder of frames, a failing store) goes after the sized ones, in
manifest order; its prepare reports the real problem as an error row. Order never changes results (outputs are
keyed by clip, and the posterior noise by frame index).

Pure rules (:func:`start_order`, :func:`head_size`) are torch- and Ray-free; :func:`source_costs` does
the I/O; :func:`order_groups` is what the job calls.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Mapping, Sequence

from ..errors import InputError

#: Default of ``stages.prepare.cheapest_first``.
DEFAULT_CHEAPEST_FIRST = 8

#: Most metadata calls in flight at once on the driver.
MAX_LOOKUP_THREADS = 8

#: Seconds the driver waits for all the size lookups together; the clips not sized by then keep
#: their manifest order after the sized ones.
LOOKUP_TIMEOUT_S = 10.0


def head_size(cfg: Mapping[str, Any]) -> int:
    """``stages.prepare.cheapest_first`` of a job config: how many leading clips are reordered.

    Raises:
        InputError: the value is not an integer >= 0 (names the key and the fix).
    """
    value = (cfg.get("stages", {}).get("prepare") or {}).get("cheapest_first", DEFAULT_CHEAPEST_FIRST)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(f"stages.prepare.cheapest_first={value!r}: give an integer >= 0 (how many of the first "
                         f"clips are reordered cheapest first; 0 keeps the manifest order), e.g. "
                         f"--set stages.prepare.cheapest_first={DEFAULT_CHEAPEST_FIRST}")
    return value


def start_order(costs: Sequence[float | None], head: int) -> list[int]:
    """Indices of the clips in the order they should run.

    Args:
        costs: one estimated cost per clip in manifest order (any unit; None = unknown). Only the
            first ``head`` entries are looked at; later entries may be None.
        head: how many leading clips are reordered (>= 0).

    Returns:
        A permutation of ``range(len(costs))``: the first ``min(head, len(costs))`` indices sorted by
        cost ascending (stable: equal costs keep manifest order; unknown costs after known ones),
        then the remaining indices unchanged.
    """
    n = min(max(0, int(head)), len(costs))
    first = sorted(range(n), key=lambda i: (costs[i] is None, costs[i] if costs[i] is not None else 0, i))
    return first + list(range(n, len(costs)))


def _size_or_none(uri: str, storage_options: Mapping[str, Any] | None) -> int | None:
    from .. import storage

    try:
        fs, path = storage.url_to_fs(uri, dict(storage_options or {}))
        info = fs.info(path)
        return int(info["size"]) if info.get("type") == "file" and info.get("size") is not None else None
    except Exception:  # noqa: BLE001 - unknown size: the clip's prepare reports the real problem
        return None


def source_costs(groups: Sequence[Sequence[Mapping[str, Any]]], head: int,
                 storage_options: Mapping[str, Any] | None = None, *,
                 timeout_s: float | None = None) -> list[float | None]:
    """Estimated cost of each clip group (:func:`~.stages.group_by_clip`: the rows of one clip):
    source bytes x number of rows, for the first ``head`` groups; None for the others, for sources
    whose size cannot be read, and for lookups not answered within ``timeout_s`` (default
    :data:`LOOKUP_TIMEOUT_S`, all lookups together: a store that never answers delays the job by
    that much, never more). At most ``head`` metadata calls, :data:`MAX_LOOKUP_THREADS` at a time,
    in daemon threads (a stuck call is abandoned, it does not hold the process at exit)."""
    n = min(max(0, int(head)), len(groups))
    costs: list[float | None] = [None] * len(groups)
    if n == 0:
        return costs
    timeout_s = LOOKUP_TIMEOUT_S if timeout_s is None else float(timeout_s)
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for i in range(n):
        todo.put(i)
    sizes: dict[int, int | None] = {}
    done = threading.Condition()

    def work() -> None:
        while True:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            size = _size_or_none(str(groups[i][0]["video_uri"]), storage_options)
            with done:
                sizes[i] = size
                done.notify_all()

    for _ in range(min(MAX_LOOKUP_THREADS, n)):
        threading.Thread(target=work, name="clip-order-size", daemon=True).start()
    deadline = time.monotonic() + timeout_s
    with done:
        while len(sizes) < n and (left := deadline - time.monotonic()) > 0:
            done.wait(left)
        got = dict(sizes)
    for i, size in got.items():
        if size is not None:
            costs[i] = float(size) * len(groups[i])
    return costs


def order_groups(groups: Sequence[Sequence[Mapping[str, Any]]], cfg: Mapping[str, Any]) -> list:
    """``groups`` (one list of rows per clip, manifest order) in the order the job runs them:
    :func:`start_order` of :func:`source_costs` with :func:`head_size` from ``cfg``.

    Raises:
        InputError: a bad ``stages.prepare.cheapest_first`` (:func:`head_size`).
    """
    head = head_size(cfg)
    return [groups[i] for i in start_order(source_costs(groups, head, cfg.get("storage_options")), head)]
