"""Reading a mask source (inpainting masks) into ``uint8 (T, H, W)`` 0/1, 1 = generate (remove).

Three kinds of source, local paths or fsspec URLs:

* **a folder of per-frame images**, ordered like a frame folder (natural sort of the names,
  :func:`m3ddm_ray.video.list_image_sequence`), e.g. DAVIS ``Annotations/480p/<seq>/00000.png``.
  Palette PNGs are read as palette *indices* (DAVIS object labels): any non-zero label = 1. Grey
  images: any non-zero level = 1; colour images: any non-zero channel = 1 (alpha is ignored).
* **one image file**: one mask for every frame (``T == 1``; :func:`m3ddm_ray.masks.fit_masks`
  repeats it).
* **a mask video** (any file that is not an image): a pixel is 1 where the decoded BT.601 luma is
  above :data:`LOSSY_THRESHOLD` levels, which absorbs codec noise around black (an H.264 "black"
  decodes to 0..~10 levels, white to ~235..255).

JPEG images are lossy too, so they get the same threshold; lossless images (PNG, BMP, TIFF, WebP)
use "any non-zero". Images are decoded with Pillow (palette indices stay indices). Every problem is
an :class:`~m3ddm_ray.errors.InputError` (or a :class:`~m3ddm_ray.errors.VideoError` for a mask
video that cannot be decoded) naming the file.
"""

from __future__ import annotations

import io
import os
from typing import Any, Iterator, Mapping

import numpy as np

from m3ddm_ray.errors import InputError
from m3ddm_ray.masks.frames import binarize

from .images import abs_uri, is_image, path_kind, read_bytes, list_image_sequence

__all__ = ["LOSSY_THRESHOLD", "MaskSource", "open_masks", "read_masks", "decode_mask_image"]

#: Levels (0..255) at or below which a lossy source (mask video, JPEG) counts as 0 (known).
LOSSY_THRESHOLD = 32

_LOSSY_IMAGES = (".jpg", ".jpeg")
_BT601 = np.array([0.299, 0.587, 0.114], np.float32)


def decode_mask_image(data: bytes, name: str, threshold: float = 0) -> np.ndarray:
    """Decode one mask image to ``uint8 (H, W)`` 0/1 (rules in the module docstring).

    Args:
        data: the file's bytes (PNG, BMP, TIFF, WebP, JPEG, ...).
        name: the file's URI, for error messages.
        threshold: values at or below it are 0.

    Raises:
        InputError: empty or undecodable data.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            mode = img.mode
            if mode in ("P", "PA"):
                arr = np.asarray(img.getchannel(0) if mode == "PA" else img)  # palette indices
            elif mode in ("RGBA", "LA"):
                arr = np.asarray(img.convert("RGB" if mode == "RGBA" else "L"))
            elif mode in ("RGB", "L", "1", "I", "I;16", "F"):
                arr = np.asarray(img)
            else:
                arr = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{name}: not a mask image that can be decoded ({exc}); give PNG/BMP/TIFF/JPEG "
                         f"files") from None
    m = binarize(arr, threshold)
    return m.max(axis=2) if m.ndim == 3 else m


def _image_threshold(uri: str) -> float:
    return LOSSY_THRESHOLD if uri.lower().endswith(_LOSSY_IMAGES) else 0


class MaskSource:
    """An opened mask source (folder, one image or a mask video) read in order or by ranges, so a long
    video's masks are never all in memory (the batch job reads a segment's masks, not the video's).

    Attributes:
        uri: the source; kind: ``"directory"``, ``"image"`` or ``"video"``.
        count: number of masks (1 for one image; the frame count of a mask video).

    Build with :func:`open_masks`.
    """

    def __init__(self, uri: str, kind: str, count: int, files: list[str], threshold: float | None,
                 storage_options: Mapping[str, Any] | None):
        self.uri, self.kind, self.count, self.files = uri, kind, int(count), files
        self._threshold, self._so = threshold, storage_options

    def _th(self, name: str) -> float:
        if self._threshold is not None:
            return self._threshold
        return LOSSY_THRESHOLD if self.kind == "video" else _image_threshold(name)

    def iter(self, lo: int = 0, hi: int | None = None) -> Iterator[np.ndarray]:
        """Masks ``lo .. hi - 1`` (default: all), each ``uint8 (H, W)`` 0/1. A folder's masks are
        checked to share one size (against mask ``lo``). A mask video is decoded from its start
        (frames before ``lo`` are not converted: memory stays one frame; time grows with ``hi``).

        Raises:
            InputError: an undecodable image, images of different sizes, a mask video with no
                frames. VideoError: a mask video that cannot be decoded.
        """
        hi = self.count if hi is None else min(int(hi), self.count)
        if self.kind == "image":
            if lo < hi:
                yield decode_mask_image(read_bytes(self.uri, self._so), self.uri, self._th(self.uri))
            return
        if self.kind == "directory":
            first = None
            for i in range(lo, hi):
                f = self.files[i]
                m = decode_mask_image(read_bytes(f, self._so), f, self._th(f))
                if first is None:
                    first = m.shape
                elif m.shape != first:
                    raise InputError(f"{f}: mask {i} is {m.shape[1]}x{m.shape[0]} but mask {lo} "
                                     f"({self.files[lo]}) is {first[1]}x{first[0]}; all masks of a folder "
                                     f"must have one size")
                yield m
            return
        from .readers import iter_frames

        th = self._th(self.uri)
        for f in iter_frames(self.uri, lo, hi, storage_options=dict(self._so or {})):
            yield binarize(np.asarray(f, np.float32) @ _BT601, th)

    def read(self, lo: int, hi: int) -> np.ndarray:
        """``uint8 (n, H, W)`` 0/1: masks ``lo .. hi - 1`` -- or, for a single mask (``count == 1``),
        that one mask ``(1, H, W)`` whatever the range (it stands for every frame).

        Raises:
            InputError: as :meth:`iter`, and a range past the last mask (the source changed since it
                was first read).
        """
        if self.count == 1:
            lo, hi = 0, 1
        out = list(self.iter(lo, hi))
        if len(out) != hi - lo:
            raise InputError(f"masks: {self.uri} holds {lo + len(out)} masks, masks [{lo}, {hi}) were asked; "
                             f"was the mask source replaced while the job ran? re-run the job")
        return np.stack(out)


def _kind_of(uri: str, storage_options) -> tuple[str, list[str]]:
    """``(kind, files)`` of a mask source: ``directory`` (its image files in order), ``image``
    (``[uri]``) or ``video`` (``[]``).

    Raises:
        InputError: a missing source or an empty folder.
    """
    uri = abs_uri(uri)
    kind = path_kind(uri, storage_options)
    if kind is None:
        raise InputError(f"masks: {uri} not found; give a folder of per-frame mask images, one mask image "
                         f"or a mask video")
    if kind == "directory":
        return "directory", list_image_sequence(uri, storage_options)
    return ("image", [uri]) if is_image(uri) else ("video", [])


def open_masks(uri: str | os.PathLike, storage_options: Mapping[str, Any] | None = None,
               threshold: float | None = None, video_count: int | None = None) -> MaskSource:
    """Open a mask source without reading its masks (a folder is listed; a mask video's frames are
    counted by a decode without RGB conversion).

    Args:
        uri: local path or fsspec URL; storage_options: fsspec options.
        threshold: override of the 0 / :data:`LOSSY_THRESHOLD` threshold (levels 0..255 or labels).
        video_count: a mask video's frame count when already known (not counted again).

    Raises:
        InputError: a missing source, an empty folder, a mask video without frames. VideoError: a
            mask video that cannot be decoded.
    """
    uri = abs_uri(uri)
    kind, files = _kind_of(uri, storage_options)
    if kind != "video":
        return MaskSource(uri, kind, len(files), files, threshold, storage_options)
    from .probing import count_frames

    n = int(video_count) if video_count else count_frames(uri, dict(storage_options or {}))
    if n < 1:
        raise InputError(f"masks: the mask video {uri} has no frames")
    return MaskSource(uri, "video", n, [], threshold, storage_options)


def read_masks(uri: str | os.PathLike, storage_options: Mapping[str, Any] | None = None,
               threshold: float | None = None) -> np.ndarray:
    """Read a whole mask source: a folder of per-frame images, one image, or a mask video
    (:func:`open_masks` + :meth:`MaskSource.read`; the batch job reads ranges instead).

    Args:
        uri: local path or fsspec URL.
        storage_options: fsspec options.
        threshold: override of the 0 / :data:`LOSSY_THRESHOLD` threshold (levels 0..255 or labels).

    Returns:
        ``uint8 (T, H, W)`` 0/1, 1 = generate; ``T == 1`` for a single image. Not yet checked
        against a video (count, size, empty): :func:`m3ddm_ray.masks.fit_masks` does that.

    Raises:
        InputError: missing source, an empty folder, an undecodable image, images of different
            sizes. VideoError: a mask video that cannot be decoded.
    """
    src = open_masks(uri, storage_options, threshold)
    return src.read(0, src.count)
