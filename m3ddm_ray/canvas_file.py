"""Canvases kept in a scratch file instead of memory: the coarse stage's keyframe canvases of a long clip.

A long clip's coarse pass needs the canvases of about ``T / 15`` frames (its keyframes). Held in
a row they would grow with the video (a 10-minute, 30 fps video has 1,200 keyframes: 460 MB of
canvases at the released 256 canvas), in the prepare task, the object store and the coarse actor.
So the prepare stage streams them into one scratch file next to the output (any fsspec URL: on a
cluster the output prefix is the storage every node shares) as they are built, and the coarse
actor reads each window's 16 keyframes back with one ranged read. The file is deleted with the
output's other scratch data once the video is joined.

Layout: no header; position ``p`` (the ``p``-th frame of the clip's ``frame_ids``) holds the masked
canvas then the inpainted canvas, uint8 ``(2, S, S, 3)``, at byte ``p * 2 * S * S * 3``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import storage

__all__ = ["CanvasFileWriter", "read_canvas_rows"]


def _row_bytes(canvas_size: int) -> int:
    return 2 * canvas_size * canvas_size * 3


class CanvasFileWriter:
    """Append ``(masked, inpainted)`` canvases, position after position, to ``uri`` (streamed: a
    local file, or an object-store multipart upload). Use as a context manager."""

    def __init__(self, uri: str, canvas_size: int, storage_options: dict[str, Any] | None = None):
        fs, path = storage.url_to_fs(uri, storage_options)
        parent = path.rsplit("/", 1)[0]
        if parent:
            fs.makedirs(parent, exist_ok=True)
        self.uri, self.size, self.rows = uri, int(canvas_size), 0
        self._f = fs.open(path, "wb")

    def append(self, masked: np.ndarray, inpainted: np.ndarray) -> None:
        """Write the next positions: ``masked`` and ``inpainted`` uint8 ``(N, S, S, 3)``."""
        s = self.size
        if masked.shape != inpainted.shape or masked.shape[1:] != (s, s, 3) or masked.dtype != np.uint8:
            raise ValueError(f"canvases of shape {masked.shape} / {inpainted.shape}, expected (N, {s}, {s}, 3) uint8")
        self._f.write(np.ascontiguousarray(np.stack([masked, inpainted], axis=1)).tobytes())
        self.rows += len(masked)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "CanvasFileWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_canvas_rows(uri: str, rows: Sequence[int], canvas_size: int,
                     storage_options: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The canvases at positions ``rows`` (any order) of a file :class:`CanvasFileWriter` wrote:
    ``(masked, inpainted)``, uint8 ``(len(rows), S, S, 3)`` each. Consecutive positions are read
    with one ranged read each.

    Raises:
        RuntimeError: a position past the end of the file (the file is not the one the rows were
            planned for).
    """
    s, nb = int(canvas_size), _row_bytes(int(canvas_size))
    rows = [int(r) for r in rows]
    out = np.empty((len(rows), 2, s, s, 3), np.uint8)
    order = sorted(range(len(rows)), key=lambda k: rows[k])
    ascending = [rows[k] for k in order]
    fs, path = storage.url_to_fs(uri, storage_options)
    with fs.open(path, "rb") as f:
        for k, n in storage.consecutive_runs(ascending):
            first = ascending[k]
            f.seek(first * nb)
            data = f.read(n * nb)
            if len(data) != n * nb:
                raise RuntimeError(f"{uri}: canvases {first}..{first + n - 1} asked, the file holds "
                                   f"{(first * nb + len(data)) // nb}")
            block = np.frombuffer(data, np.uint8).reshape(n, 2, s, s, 3)
            for i in range(n):
                out[order[k + i]] = block[i]
    return out[:, 0], out[:, 1]
