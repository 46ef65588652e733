"""Decoding one span of frames ``[lo, hi)`` of a video without decoding it from the start.

The job decodes a source once from end to end (the prepare stage) and records, per frame in
presentation order, its presentation time stamp (pts) and whether it is a key frame
(:class:`FrameIndex`). From that index each segment of the clip gets a small :class:`SeekPoint`:
the last key frame at or before the segment's first frame, and the pts expected at both ends of
the span. :func:`read_span` seeks to that key frame, decodes forward counting frames from it, and
checks the pts of the first and last frame of the span against the recorded ones; whatever does
not match (no pts, a demuxer that seeks elsewhere, a decode error, a stream that ends early) falls
back to the strict sequential decode from the first frame (:func:`~.readers.iter_frames`), which
is always right and raises the usual errors. So a span read is exactly the frames a whole decode
gives, only cheaper.

Open GOPs: frames that display before the key frame but are decoded after it ("leading" frames,
referencing the previous GOP) have a pts below the key frame's and are skipped; frames from the
key frame on depend only on it and later frames, so they decode exactly as in a whole pass.

Frame folders (image sequences) need no index: a span is a slice of the sorted file list.
"""

from __future__ import annotations

import contextlib
import logging
import os
from array import array
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import av
import numpy as np

from m3ddm_ray.errors import InputError, VideoError

from .readers import iter_frames
from .source import open_container, rotation_cw, VideoSource, uri_str

__all__ = ["FrameIndex", "SeekPoint", "read_span", "read_image_span"]

logger = logging.getLogger(__name__)

_NO_PTS = -(2 ** 63)


@dataclass(frozen=True)
class SeekPoint:
    """Where to start decoding for a span of frames (all JSON-able ints).

    Attributes:
        key_index: frame index of the last key frame at or before the span's first frame.
        key_pts: its pts (stream time base).
        first_pts, last_pts: pts recorded for the span's first and last frame (checked on read).
    """

    key_index: int
    key_pts: int
    first_pts: int
    last_pts: int

    def to_dict(self) -> dict[str, int]:
        """Plain dict (travels in job rows as JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "SeekPoint | None":
        """The inverse of :meth:`to_dict`; None for None."""
        return None if not d else cls(int(d["key_index"]), int(d["key_pts"]), int(d["first_pts"]),
                                      int(d["last_pts"]))


class FrameIndex:
    """pts and key-frame flag of every decoded frame, in presentation order (16 bytes per frame
    and key frame: 18,000 frames take ~300 KiB). Filled by :func:`~.readers.iter_frames` through
    its ``index`` argument."""

    def __init__(self) -> None:
        self.pts = array("q")
        self.keys = array("q")  # indices of key frames with a pts

    def __len__(self) -> int:
        return len(self.pts)

    def add(self, frame: Any) -> None:
        """Record the next frame the decoder output (an ``av.VideoFrame``)."""
        pts = frame.pts
        i = len(self.pts)
        self.pts.append(_NO_PTS if pts is None else int(pts))
        if pts is not None and bool(getattr(frame, "key_frame", False)):
            self.keys.append(i)

    def seek_point(self, lo: int, hi: int) -> SeekPoint | None:
        """The :class:`SeekPoint` of frames ``[lo, hi)``; None when a seek cannot help (the span
        starts in the first GOP, or the needed pts are missing): read from the start then."""
        if not 0 <= lo < hi <= len(self.pts):
            raise InputError(f"span [{lo}, {hi}) is outside the {len(self.pts)} indexed frames")
        import bisect

        k = bisect.bisect_right(self.keys, lo) - 1
        if k < 0 or self.keys[k] == 0:
            return None
        key = int(self.keys[k])
        pts = (self.pts[key], self.pts[lo], self.pts[hi - 1])
        if _NO_PTS in pts:
            return None
        return SeekPoint(key, *(int(p) for p in pts))


class _Mismatch(Exception):
    """The seek path did not land where the index says: use the sequential path."""


def read_span(uri: str | os.PathLike, lo: int, hi: int, seek: SeekPoint | None = None,
              storage_options: dict[str, Any] | None = None) -> np.ndarray:
    """Frames ``lo .. hi - 1`` of a video, as the whole sequential decode gives them.

    Args:
        uri: local path or fsspec URL (remote files are read with range requests, not downloaded).
        lo, hi: the span, ``0 <= lo < hi``.
        seek: from :meth:`FrameIndex.seek_point` of a decode pass over the same file; None decodes
            from the first frame (always correct, slower for late spans).
        storage_options: fsspec options.

    Returns:
        uint8 ``(hi - lo, H, W, 3)`` RGB in display orientation.

    Raises:
        InputError: a bad span.
        VideoError: the video has fewer than ``hi`` frames; as :func:`~.readers.iter_frames`
            (damage, unreadable file).
    """
    uri = uri_str(uri)
    if not 0 <= lo < hi:
        raise InputError(f"read_span({uri}): need 0 <= lo < hi, got lo={lo}, hi={hi}")
    if seek is not None and seek.key_index <= lo:
        try:
            return _seek_read(uri, lo, hi, seek, storage_options)
        except _Mismatch as why:
            logger.info("%s: seek to frame %d did not match the index (%s); decoding from the start",
                        uri, seek.key_index, why)
    frames = list(iter_frames(uri, lo, hi, storage_options=storage_options))
    if len(frames) != hi - lo:
        raise VideoError(uri, f"frames [{lo}, {hi}) asked, but the video ends before frame {lo + len(frames)}; "
                              "was the source replaced while the job ran? re-run the job")
    return np.stack(frames)


def _seek_read(uri: str, lo: int, hi: int, seek: SeekPoint, storage_options) -> np.ndarray:
    out: list[np.ndarray] = []
    with open_container(uri, storage_options) as container:
        src = VideoSource(container, uri)
        vs = src.vs
        try:
            container.seek(seek.key_pts, stream=vs, backward=True, any_frame=False)
            idx, last = None, None
            for packet in container.demux(vs):
                for frame in packet.decode():
                    pts = frame.pts
                    if pts is None:
                        raise _Mismatch("a frame without pts")
                    if pts < seek.key_pts:
                        continue  # leading frames of an open GOP (they belong to the span before)
                    if idx is None:
                        if pts != seek.key_pts:
                            raise _Mismatch(f"landed at pts {pts}, not the key frame's {seek.key_pts}")
                        idx = seek.key_index
                        src.rotation = rotation_cw(frame, vs)
                    elif pts <= last:
                        raise _Mismatch("pts not increasing")
                    else:
                        idx += 1
                    last = pts
                    if idx == lo and pts != seek.first_pts:
                        raise _Mismatch(f"frame {lo} has pts {pts}, the index says {seek.first_pts}")
                    if idx >= lo:
                        out.append(src.to_rgb(frame))
                    if idx == hi - 1:
                        if pts != seek.last_pts:
                            raise _Mismatch(f"frame {hi - 1} has pts {pts}, the index says {seek.last_pts}")
                        return np.stack(out)
        except av.FFmpegError as e:
            raise _Mismatch(f"decode error after the seek ({e})") from e
        finally:
            with contextlib.suppress(Exception):
                vs.codec_context.flush_buffers()
    raise _Mismatch("the stream ended before the span did")


def read_image_span(uri: str | os.PathLike, lo: int, hi: int,
                    storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """Frames ``lo .. hi - 1`` of a frame folder (:func:`~.images.list_image_sequence` order):
    uint8 ``(hi - lo, H, W, 3)``. Raises InputError for a span past the last image."""
    from .images import list_image_sequence, read_images

    files = list_image_sequence(uri, storage_options)
    if not 0 <= lo < hi <= len(files):
        raise InputError(f"frames [{lo}, {hi}) asked of {uri}, which holds {len(files)} images")
    return read_images(files[lo:hi], storage_options)
