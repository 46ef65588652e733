"""Video metadata: :func:`probe` (header facts + first decoded frame) and :func:`count_frames`."""

from __future__ import annotations

import os
from typing import Any

from .source import VideoInfo, open_container, VideoSource, uri_str

__all__ = ["probe", "count_frames"]


def probe(uri: str | os.PathLike, storage_options: dict[str, Any] | None = None, *, count_frames: bool = False) -> VideoInfo:
    """Read a video's metadata and decode its first frame (for the rotation and to check it decodes).

    Args:
        uri: local path or fsspec URL.
        storage_options: fsspec filesystem options.
        count_frames: decode the whole stream to count frames exactly (``num_frames_exact=True``);
            slow for long videos. Damaged streams then raise like :func:`read_frames`.

    Returns:
        :class:`VideoInfo`.

    Raises:
        VideoError: file not found, permission denied, empty file, not a media file, no video stream,
            no decodable frame, undecodable first frame (and, with ``count_frames``, damage later on).
    """
    uri = uri_str(uri)
    with open_container(uri, storage_options) as container:
        src = VideoSource(container, uri)
        frames = src.frames()
        try:
            for _ in frames:
                if not count_frames:
                    break
        finally:
            frames.close()
        return src.info()


def count_frames(uri: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> int:
    """Exact number of frames, counted by decoding the whole video stream (no RGB conversion).

    Raises:
        VideoError: as :func:`probe`, and when decoding fails part-way (damaged or truncated file).
    """
    return probe(uri, storage_options, count_frames=True).num_frames
