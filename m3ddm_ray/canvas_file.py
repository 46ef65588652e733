"""Canvases kept in a scratch file instead of memory: the coarse stage's keyframe canvases of a long clip.

A long clip's coarse pass needs the canvases of about ``T / 15`` frames (its keyframes). Held in
a row they would grow with the video (a 10-minute, 30 fps video has 1,200 keyframes: 460 MB of
canvases at the released 256 canvas), in the prepare task, the object store and the coarse actor.
So the prepare stage streams them into one scratch file next to the output (any fsspec URL: on a
cluster the output prefix is the storage every node shares) as they are built, and the coarse
actor reads each window's 16 keyframes back with one ranged read. The file is deleted with the
output's other scratch data once the video is joined.

Layout: no header; position ``p`` (the ``p``-th frame of the clip's ``frame_ids``) holds the masked
canvas then the inpainted canvas, uint8 ``(2, S, S, 3)``, at byte ``p * 2 * S * S * 3``. A task
clip's file (inpainting, extension: one pixel mask per frame) also holds each position's canvas
mask, uint8 ``(S, S)`` after the two canvases (``with_masks``: ``7 * S * S`` bytes a position).
The writer appends in the order positions come; a clip whose positions arrive in another order
(a backward extension decodes its known frames in time order, the reverse of its working order)
says where each one is with :attr:`~m3ddm_ray.prepare.PreparedClip.file_order`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import storage

__all__ = ["CanvasFileWriter", "read_canvas_rows"]


def _row_bytes(canvas_size: int, with_masks: bool = False) -> int:
    return (7 if with_masks else 6) * canvas_size * canvas_size


class CanvasFileWriter:
    """Append ``(masked, inpainted)`` canvases (and, ``with_masks``, their pixel masks), position after
    position, to ``uri`` (streamed: a local file, or an object-store multipart upload). Use as a
    context manager."""

    def __init__(self, uri: str, canvas_size: int, storage_options: dict[str, Any] | None = None,
                 with_masks: bool = False):
        fs, path = storage.url_to_fs(uri, storage_options)
        parent = path.rsplit("/", 1)[0]
        if parent:
            fs.makedirs(parent, exist_ok=True)
        self.uri, self.size, self.rows, self.with_masks = uri, int(canvas_size), 0, bool(with_masks)
        self._f = fs.open(path, "wb")

    def append(self, masked: np.ndarray, inpainted: np.ndarray, masks: np.ndarray | None = None) -> None:
        """Write the next positions: ``masked`` and ``inpainted`` uint8 ``(N, S, S, 3)``; ``masks``
        uint8 ``(N, S, S)`` exactly when the file was opened ``with_masks``.

        Raises:
            ValueError: arrays of another shape or dtype, masks given or missing against ``with_masks``.
        """
        s = self.size
        if masked.shape != inpainted.shape or masked.shape[1:] != (s, s, 3) or masked.dtype != np.uint8:
            raise ValueError(f"canvases of shape {masked.shape} / {inpainted.shape}, expected (N, {s}, {s}, 3) uint8")
        if (masks is not None) != self.with_masks or (
                masks is not None and (masks.shape != masked.shape[:3] or masks.dtype != np.uint8)):
            raise ValueError(f"masks {None if masks is None else masks.shape} for a file "
                             f"{'with' if self.with_masks else 'without'} masks, expected ({len(masked)}, {s}, {s}) uint8")
        pair = np.stack([masked, inpainted], axis=1).reshape(len(masked), -1)
        if masks is not None:
            pair = np.concatenate([pair, masks.reshape(len(masks), -1)], axis=1)
        self._f.write(np.ascontiguousarray(pair).tobytes())
        self.rows += len(masked)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "CanvasFileWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_canvas_rows(uri: str, rows: Sequence[int], canvas_size: int,
                     storage_options: dict[str, Any] | None = None,
                     with_masks: bool = False, masks_only: bool = False) -> tuple[np.ndarray, ...]:
    """The canvases at positions ``rows`` (any order) of a file :class:`CanvasFileWriter` wrote:
    ``(masked, inpainted)``, uint8 ``(len(rows), S, S, 3)`` each, and with ``with_masks`` (a file
    written so) their masks uint8 ``(len(rows), S, S)`` third. Consecutive positions are read with
    one ranged read each. ``masks_only`` (a file ``with_masks``): ``(masks,)`` alone, reading only
    each position's ``S * S`` mask bytes (a seventh of a position).

    Raises:
        RuntimeError: a position past the end of the file (the file is not the one the rows were
            planned for).
        ValueError: ``masks_only`` for a file without masks.
    """
    if masks_only and not with_masks:
        raise ValueError(f"{uri}: masks_only for a canvas file without masks")
    s, nb = int(canvas_size), _row_bytes(int(canvas_size), with_masks)
    skip = 6 * s * s if masks_only else 0  # bytes of each position not read
    rows = [int(r) for r in rows]
    out = np.empty((len(rows), nb - skip), np.uint8)
    order = sorted(range(len(rows)), key=lambda k: rows[k])
    ascending = [rows[k] for k in order]
    fs, path = storage.url_to_fs(uri, storage_options)

    def short(first: int, asked: int):
        return RuntimeError(f"{uri}: canvases {first}..{first + asked - 1} asked, the file holds "
                            f"{fs.size(path) // nb}")

    with fs.open(path, "rb") as f:
        for k, n in storage.consecutive_runs(ascending):
            first = ascending[k]
            if masks_only:  # the mask bytes of each position, one after the other
                for i in range(n):
                    f.seek((first + i) * nb + skip)
                    data = f.read(nb - skip)
                    if len(data) != nb - skip:
                        raise short(first + i, 1)
                    out[order[k + i]] = np.frombuffer(data, np.uint8)
                continue
            f.seek(first * nb)
            data = f.read(n * nb)
            if len(data) != n * nb:
                raise short(first, n)
            block = np.frombuffer(data, np.uint8).reshape(n, nb)
            for i in range(n):
                out[order[k + i]] = block[i]
    if masks_only:
        return (out.reshape(len(rows), s, s),)
    pair = out[:, :6 * s * s].reshape(len(rows), 2, s, s, 3)
    if with_masks:
        return pair[:, 0], pair[:, 1], out[:, 6 * s * s:].reshape(len(rows), s, s)
    return pair[:, 0], pair[:, 1]
