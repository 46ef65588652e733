"""Reading decoded frames: streamed (:func:`iter_frames`) or into one array (:func:`read_frames`)."""

from __future__ import annotations

import numbers
import os
from typing import Any, Iterator, Sequence

import numpy as np

from m3ddm_ray.errors import InputError, VideoError

from .source import VideoInfo, open_container, VideoSource, uri_str

__all__ = ["iter_frames", "read_frames"]


def _check_index(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {value!r}")
    return int(value)


def iter_frames(
    uri: str | os.PathLike,
    start: int = 0,
    stop: int | None = None,
    step: int = 1,
    storage_options: dict[str, Any] | None = None,
    index: Any = None,
) -> Iterator[np.ndarray]:
    """Decode frames ``start, start+step, ...`` (below ``stop``) one at a time, in bounded memory.

    Decoding is sequential from the first frame (frames before ``start`` are decoded but not
    converted); decoding stops as soon as ``stop`` is reached. Like ``range`` slicing, indices past
    the end of the video are simply not produced (no error).

    Args:
        uri: local path or fsspec URL.
        start: first frame index (>= 0).
        stop: exclusive end index, or None for the end of the video.
        step: keep every ``step``-th frame (>= 1).
        storage_options: fsspec filesystem options.
        index: optional :class:`~.spans.FrameIndex` that records the pts and key-frame flag of
            every decoded frame (also those before ``start``), for later span reads.

    Yields:
        ``np.ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``, RGB, display orientation; a new
        array each time.

    Raises:
        InputError: bad ``start``/``stop``/``step`` (raised at the first ``next()``).
        VideoError: as :func:`probe`; on damage after some frames were yielded, the error comes when
            the broken frame is reached (the frames already yielded were good).
    """
    start = _check_index(start, "start")
    step = _check_index(step, "step")
    if stop is not None:
        stop = _check_index(stop, "stop")
    if start < 0 or step < 1 or (stop is not None and stop < 0):
        raise InputError(
            f"iter_frames({uri!s}): need start >= 0, step >= 1 and stop >= 0 or None; "
            f"got start={start}, stop={stop}, step={step}"
        )
    uri = uri_str(uri)
    if stop is not None and stop <= start:
        return
    with open_container(uri, storage_options) as container:
        src = VideoSource(container, uri)
        frames = src.frames()
        try:
            for i, frame in enumerate(frames):
                if stop is not None and i >= stop:
                    break
                if index is not None:
                    index.add(frame)
                if i >= start and (i - start) % step == 0:
                    yield src.to_rgb(frame)
        finally:
            frames.close()


def read_frames(
    uri: str | os.PathLike,
    indices: range | Sequence[int] | np.ndarray | None = None,
    storage_options: dict[str, Any] | None = None,
) -> tuple[np.ndarray, VideoInfo]:
    """Decode the requested frames into one array; frames that are not requested are never kept.

    Args:
        uri: local path or fsspec URL.
        indices: None for every frame; or a ``range`` / sequence / 1-D integer array of frame
            indices (>= 0, any order, repeats allowed; the output follows this order).
        storage_options: fsspec filesystem options.

    Returns:
        ``(frames, info)``: ``frames`` is ``np.ndarray`` ``(T, H, W, 3)`` ``uint8`` RGB in display
        orientation, ``T = len(indices)`` (or the number of frames when ``indices`` is None);
        ``info`` is the :class:`VideoInfo`, with an exact ``num_frames`` when the whole stream was
        decoded (always the case for ``indices=None``).

    Raises:
        InputError: an index is negative, not an integer, or past the last frame (the message gives
            the number of frames); an empty ``indices``.
        VideoError: as :func:`probe`, and damage before the last requested frame.
    """
    uri = uri_str(uri)
    if indices is None:
        return _read_all(uri, storage_options)

    if isinstance(indices, range):
        req = np.asarray(indices, dtype=np.int64)
    else:
        arr = np.asarray(indices)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise InputError(f"read_frames({uri}): indices must be a 1-D sequence of integers, got {indices!r}")
        req = arr.astype(np.int64)
    if req.size == 0:
        raise InputError(f"read_frames({uri}): indices is empty; give at least one frame index or None for all")
    if req.min() < 0:
        raise InputError(f"read_frames({uri}): frame index {int(req.min())} is negative; indices start at 0")

    wanted, inverse = np.unique(req, return_inverse=True)  # sorted unique indices
    slot = {int(v): k for k, v in enumerate(wanted)}
    last = int(wanted[-1])
    buf: np.ndarray | None = None
    with open_container(uri, storage_options) as container:
        src = VideoSource(container, uri)
        frames = src.frames()
        try:
            for i, frame in enumerate(frames):
                k = slot.get(i)
                if k is not None:
                    rgb = src.to_rgb(frame)
                    if buf is None:
                        buf = np.empty((len(wanted),) + rgb.shape, dtype=np.uint8)
                    elif rgb.shape != buf.shape[1:]:
                        raise VideoError(
                            uri, f"frame size changes mid-stream at frame {i} ({buf.shape[2]}x{buf.shape[1]} -> "
                            f"{rgb.shape[1]}x{rgb.shape[0]}); re-encode the video to a constant size"
                        )
                    buf[k] = rgb
                if i >= last:
                    break
        finally:
            frames.close()
        if src.decoded <= last:
            raise InputError(
                f"read_frames({uri}): frame index {last} is out of range; the video has {src.decoded} frames "
                f"(valid indices 0..{src.decoded - 1})"
            )
        info = src.info()
    assert buf is not None
    if len(wanted) == len(req) and np.array_equal(wanted, req):
        return buf, info
    return buf[inverse.reshape(-1)], info


def _read_all(uri: str, storage_options: dict[str, Any] | None) -> tuple[np.ndarray, VideoInfo]:
    buf: np.ndarray | None = None
    n = 0
    with open_container(uri, storage_options) as container:
        src = VideoSource(container, uri)
        for frame in src.frames():
            rgb = src.to_rgb(frame)
            if buf is None:
                # preallocate from the header estimate; grow by 1.5x if it was too small
                buf = np.empty((max(src.num_frames, 1),) + rgb.shape, dtype=np.uint8)
            elif rgb.shape != buf.shape[1:]:
                raise VideoError(
                    uri, f"frame size changes mid-stream at frame {n} ({buf.shape[2]}x{buf.shape[1]} -> "
                    f"{rgb.shape[1]}x{rgb.shape[0]}); re-encode the video to a constant size"
                )
            if n == len(buf):
                bigger = np.empty((max(n + 1, int(n * 1.5)),) + buf.shape[1:], dtype=np.uint8)
                bigger[:n] = buf
                buf = bigger
            buf[n] = rgb
            n += 1
        info = src.info()
    assert buf is not None
    if n < len(buf):
        # do not keep a much larger buffer alive behind a view
        buf = buf[:n] if n >= 0.9 * len(buf) else buf[:n].copy()
    return buf, info
