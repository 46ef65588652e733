"""The coarse stage's latents of a long clip in one scratch file, read back per segment with ranged reads.

After the coarse stage a long clip splits into segments (:meth:`m3ddm_ray.plan.WindowPlan.segments`).
Each segment's fine windows read the clip's global-frame latents and the stored latents of a few
keyframes (:attr:`~m3ddm_ray.plan.Segment.coarse_guides`). Sent inside every segment row, the
global latents alone would be ``G x 4 x h x w`` float32 per segment (256 KiB at the released 256
canvas), and the coarse stage emits all segments of a clip at once: the object store would hold
``segments x 256 KiB`` -- linear in video length. So the coarse actor writes the clip's latents once
to a scratch file next to the output (any fsspec URL; deleted with the output's other scratch data
by the join), and a segment row carries only the file's URI. The fine actor reads the global
latents and its guides' latents back (:func:`read_segment_latents`): a few ranged reads, whatever
the video length.

Layout (little-endian; no compression, the reads are ranged):

* bytes ``0..8``: the magic ``b"M3DDMCL1"``; bytes ``8..16``: ``uint64`` length ``L`` of the JSON header;
* ``L`` bytes: ``{"version": 1, "global_shape": [G, 4, h, w], "latent_shape": [4, h, w],
  "global_order": [...], "latent_order": [...], "frames": [sorted frame indices of the stored
  latents]}``;
* the global latents, float32, ``G * 4 * h * w`` values;
* the stored latents, float32, ``4 * h * w`` values each, in ``frames`` order.

Memory layout is kept: an array is written as its axes permuted by ``*_order`` (its axes from the
largest stride down) in C order, and read back as that permutation undone -- so the fine actor's
arrays have the strides the coarse actor's had. It matters: the VAE hands back the global latents
in a non-C layout, and a convolution over the same values in another layout rounds differently,
which would break the bit-for-bit equality of a segmented run with the whole-clip run.

numpy only (no torch): the stages call it on CPU arrays.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Mapping, Sequence

import numpy as np

from . import storage

__all__ = ["write_coarse_latents", "read_segment_latents"]

_VERSION = 1
_MAGIC = b"M3DDMCL1"
_MAX_HEADER = 1 << 26  # 64 MiB of JSON: millions of keyframes; anything longer is not our file


def _order(a: np.ndarray) -> list[int]:
    """Axes of ``a`` from the largest stride down (ties in axis order): the permutation whose
    transpose of ``a`` is C-contiguous when ``a`` is dense."""
    return [int(i) for i in sorted(range(a.ndim), key=lambda i: (-abs(a.strides[i]), i))]


def _restore(flat: np.ndarray, shape: tuple, order: Sequence[int]) -> np.ndarray:
    """The array of ``shape`` whose ``order`` permutation was written in C order as ``flat``."""
    permuted = flat.reshape([shape[i] for i in order])
    return permuted.transpose(np.argsort(order))


def write_coarse_latents(uri: str, global_latents: np.ndarray, stored: Mapping[int, np.ndarray],
                         storage_options: dict[str, Any] | None = None) -> int:
    """Write a clip's coarse latents to ``uri`` (parent folders made); returns the bytes written.

    Args:
        global_latents: float32 ``(G, 4, h, w)`` latents of the global frames (× 0.18215 scaled, as
            the VAE encode gives them).
        stored: frame index -> float32 ``(4, h, w)`` final latent of that frame after the coarse
            pass (``ClipState.stored``).

    Raises:
        ValueError: arrays of mixed shapes, or a latent shape that differs from the global latents'.
    """
    g = np.asarray(global_latents, dtype=np.float32)
    if g.ndim != 4:
        raise ValueError(f"global latents of shape {g.shape}, expected (G, 4, h, w)")
    frames = sorted(int(f) for f in stored)
    shape = tuple(g.shape[1:])
    for f in frames:
        if tuple(np.shape(stored[f])) != shape:
            raise ValueError(f"the stored latent of frame {f} has shape {np.shape(stored[f])}, expected {shape}")
    gorder = _order(g)
    lorder = _order(np.asarray(stored[frames[0]], dtype=np.float32)) if frames else list(range(len(shape)))
    header = json.dumps({"version": _VERSION, "global_shape": list(g.shape), "latent_shape": list(shape),
                         "global_order": gorder, "latent_order": lorder, "frames": frames}).encode()
    fs, path = storage.url_to_fs(uri, storage_options)
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    n = 0
    with fs.open(path, "wb") as f:
        for chunk in (_MAGIC, struct.pack("<Q", len(header)), header, np.ascontiguousarray(g.transpose(gorder)).tobytes()):
            f.write(chunk)
            n += len(chunk)
        for fr in frames:
            data = np.ascontiguousarray(np.asarray(stored[fr], dtype=np.float32).transpose(lorder)).tobytes()
            f.write(data)
            n += len(data)
    return n


def read_segment_latents(uri: str, frames: Sequence[int], storage_options: dict[str, Any] | None = None
                         ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """The global latents and the stored latents of ``frames`` from a file :func:`write_coarse_latents`
    wrote: ``(float32 (G, 4, h, w), {frame: float32 (4, h, w)})``, equal to what was written in
    values and strides. Runs of consecutive stored frames are read with one ranged read each.

    Raises:
        RuntimeError: the file is not such a file, is cut short, or holds no latent for one of
            ``frames`` (it was written for another plan).
    """
    fs, path = storage.url_to_fs(uri, storage_options)
    with fs.open(path, "rb") as f:
        head = f.read(16)
        if len(head) != 16 or head[:8] != _MAGIC:
            raise RuntimeError(f"{uri}: not a coarse-latents file (no {_MAGIC!r} header)")
        (n,) = struct.unpack("<Q", head[8:])
        if n > _MAX_HEADER:
            raise RuntimeError(f"{uri}: not a coarse-latents file (a header of {n} bytes)")
        try:
            meta = json.loads(f.read(n))
            gshape, lshape, held = tuple(meta["global_shape"]), tuple(meta["latent_shape"]), meta["frames"]
            gorder, lorder = list(meta["global_order"]), list(meta["latent_order"])
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"{uri}: not a coarse-latents file ({exc})") from None
        if meta.get("version") != _VERSION:
            raise RuntimeError(f"{uri}: coarse-latents file version {meta.get('version')}, expected {_VERSION}")
        base = 16 + n
        gbytes = int(np.prod(gshape)) * 4
        lbytes = int(np.prod(lshape)) * 4

        def read_exact(offset: int, size: int, what: str) -> bytes:
            f.seek(offset)
            data = f.read(size)
            if len(data) != size:
                raise RuntimeError(f"{uri}: cut short while reading {what}")
            return data

        global_latents = _restore(np.frombuffer(read_exact(base, gbytes, "the global latents"), np.float32).copy(),
                                  gshape, gorder)
        pos = {int(fr): k for k, fr in enumerate(held)}
        want = sorted({int(fr) for fr in frames})
        missing = [fr for fr in want if fr not in pos]
        if missing:
            raise RuntimeError(f"{uri}: no coarse latent for frames {missing[:4]} (the file holds {len(held)} "
                               f"keyframes of another plan)")
        out: dict[int, np.ndarray] = {}
        for k, count in storage.consecutive_runs([pos[fr] for fr in want]):
            first, last = want[k], want[k + count - 1]
            data = read_exact(base + gbytes + pos[first] * lbytes, count * lbytes, f"keyframes {first}..{last}")
            block = np.frombuffer(data, np.float32).reshape(count, -1)
            for i in range(count):
                out[want[k + i]] = _restore(block[i].copy(), lshape, lorder)
    return global_latents, out
