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
from typing import Any, Mapping

import numpy as np

from m3ddm_ray.errors import InputError
from m3ddm_ray.masks.frames import binarize

from .images import _abs, _is_image, _kind, _read_bytes, list_image_sequence

__all__ = ["LOSSY_THRESHOLD", "read_masks", "decode_mask_image"]

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


def read_masks(uri: str | os.PathLike, storage_options: Mapping[str, Any] | None = None,
               threshold: float | None = None) -> np.ndarray:
    """Read a mask source: a folder of per-frame images, one image, or a mask video.

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
    uri = _abs(uri)
    kind = _kind(uri, storage_options)
    if kind is None:
        raise InputError(f"masks: {uri} not found; give a folder of per-frame mask images, one mask image "
                         f"or a mask video")
    if kind == "directory":
        files = list_image_sequence(uri, storage_options)
        out = None
        for i, f in enumerate(files):
            m = decode_mask_image(_read_bytes(f, storage_options), f,
                                  _image_threshold(f) if threshold is None else threshold)
            if out is None:
                out = np.empty((len(files),) + m.shape, np.uint8)
            elif m.shape != out.shape[1:]:
                raise InputError(f"{f}: mask {i} is {m.shape[1]}x{m.shape[0]} but mask 0 ({files[0]}) is "
                                 f"{out.shape[2]}x{out.shape[1]}; all masks of a folder must have one size")
            out[i] = m
        assert out is not None
        return out
    if _is_image(uri):
        th = _image_threshold(uri) if threshold is None else threshold
        return decode_mask_image(_read_bytes(uri, storage_options), uri, th)[None]
    from .readers import iter_frames

    th = LOSSY_THRESHOLD if threshold is None else threshold
    frames = [binarize(np.asarray(f, np.float32) @ _BT601, th)
              for f in iter_frames(uri, storage_options=dict(storage_options or {}))]
    if not frames:
        raise InputError(f"masks: the mask video {uri} has no frames")
    return np.stack(frames)
