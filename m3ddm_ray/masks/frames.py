"""Per-frame masks of a video (inpainting, extension): validation, dilation, resizing, canvas placement.

Pure numpy + OpenCV, no torch, no I/O (reading mask files is :mod:`m3ddm_ray.video.masks`).

Conventions (those of :mod:`m3ddm_ray.geometry`): a per-frame mask is ``uint8 (T, H, W)`` with
values 0/1, **1 = generate** (remove, paint anew), 0 = known (kept exactly). Sizes are in pixels.

Rules chosen here (and documented in docs/tasks.md):

* **Conservative resizing** (:func:`resize_masks`): a pixel of the resized mask is 1 when its area
  overlaps the area of any 1-pixel of the original (an "any" pool over the footprint), so shrinking
  never drops a thin stroke and enlarging never shrinks the region; it is a superset of the
  nearest-neighbour resize.
* **Size mismatch** (:func:`fit_masks`): masks of another size than the frames are resized only when
  they have the frames' aspect ratio to within one pixel (e.g. DAVIS 854x480 annotations on a
  1920x1080 video); any other size is an error, because stretching a mask would move it off the
  object it marks.
* **Count**: exactly one mask per frame, or a single mask used for every frame.
* **Unusable masks**: no pixel to generate in any frame (nothing to do) and every pixel of every
  frame to generate (nothing known to inpaint from) are errors.
"""

from __future__ import annotations

import numbers
from typing import Iterator, Tuple

import cv2
import numpy as np

from ..errors import InputError
from ..geometry import CanvasGeometry, pixel_mask

__all__ = ["binarize", "dilate_masks", "resize_masks", "cell_align", "check_mask_count", "fit_mask_frames",
           "MaskUsage", "fit_masks", "canvas_masks", "inpaint_masks", "inpaint_mask_frames", "dilated_name",
           "MaskArray"]


def _pos_or_zero(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
        raise InputError(f"{name}={v!r} must be an integer >= 0 (pixels)")
    return int(v)


def _check_stack(masks, name: str) -> np.ndarray:
    m = np.asarray(masks)
    if m.ndim != 3 or m.shape[0] < 1 or m.shape[1] < 1 or m.shape[2] < 1:
        raise InputError(f"{name} must be an array (T, H, W) with T, H, W >= 1, got shape {m.shape}")
    if m.dtype != np.uint8 and m.dtype != np.bool_:
        raise InputError(f"{name} has dtype {m.dtype}; expected uint8 (values 0/1) or bool")
    if m.dtype == np.uint8 and int(m.max()) > 1:
        raise InputError(f"{name} has values up to {int(m.max())}; expected only 0 and 1 (binarize it first)")
    return m.astype(np.uint8, copy=False)


def binarize(values: np.ndarray, threshold: float = 0) -> np.ndarray:
    """``uint8`` 0/1 array, 1 where ``values > threshold`` (same shape).

    Args:
        values: any numeric array, e.g. palette indices, grey levels or luma (levels 0..255).
        threshold: values at or below it are 0 (known); 0 means "any non-zero value = generate".
    """
    return (np.asarray(values) > threshold).astype(np.uint8)


def dilate_masks(masks: np.ndarray, pixels: int) -> np.ndarray:
    """Grow every frame's mask by ``pixels`` (a disc of radius ``pixels``, OpenCV ``dilate``).

    Args:
        masks: ``uint8 (T, H, W)`` 0/1.
        pixels: radius in pixels (>= 0; 0 returns a copy).

    Returns:
        ``uint8 (T, H, W)`` 0/1; every pixel within Euclidean distance ``pixels`` of a 1 is 1
        (the disc is OpenCV's ``MORPH_ELLIPSE`` of side ``2 * pixels + 1``).

    Raises:
        InputError: ``pixels`` negative or not an integer; ``masks`` not ``(T, H, W)`` 0/1.
    """
    px = _pos_or_zero("dilation", pixels)
    m = _check_stack(masks, "masks")
    if px == 0:
        return m.copy()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return np.stack([cv2.dilate(f, kernel) for f in m]).astype(np.uint8)


def _any_pool_axis(m: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Resize ``m`` along ``axis`` to ``n_out`` with the "any overlap" rule (exact, integer maths)."""
    n_in = m.shape[axis]
    i = np.arange(n_out)
    lo = (i * n_in) // n_out  # first source index overlapping [i*n_in/n_out, (i+1)*n_in/n_out)
    hi = -((-(i + 1) * n_in) // n_out)  # ceil: one past the last overlapping source index
    cs = np.cumsum(np.moveaxis(m, axis, 0).astype(np.int64), axis=0)
    cs = np.concatenate([np.zeros((1,) + cs.shape[1:], np.int64), cs])
    out = (cs[hi] - cs[lo]) > 0
    return np.moveaxis(out, 0, axis)


def resize_masks(masks: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """Resize ``(T, H, W)`` masks to ``hw = (h, w)`` keeping "any non-zero = generate" conservative.

    Output pixel ``(y, x)`` covers the source area ``[y*H/h, (y+1)*H/h) x [x*W/w, (x+1)*W/w)``; it
    is 1 when any source 1-pixel overlaps that area. Exact integer arithmetic (no interpolation).

    Returns:
        ``uint8 (T, h, w)`` 0/1, a superset of the nearest-neighbour resize.

    Raises:
        InputError: bad masks or a non-positive size.
    """
    m = _check_stack(masks, "masks")
    h, w = (int(v) for v in hw)
    if h < 1 or w < 1:
        raise InputError(f"resize_masks: size {hw} must be two positive integers (H, W)")
    if (h, w) == m.shape[1:]:
        return m.copy()
    return _any_pool_axis(_any_pool_axis(m, 1, h), 2, w).astype(np.uint8)


def cell_align(masks: np.ndarray, cell: int = 8) -> np.ndarray:
    """Grow masks ``(..., S, S)`` to whole ``cell x cell`` blocks: a block with any 1 becomes all 1.

    Used on the canvas so the latent mask (:func:`m3ddm_ray.geometry.latent_mask`, which samples
    the top-left pixel of each 8x8 cell) marks every cell holding a pixel to generate, and the
    pixel mask of the paste-back equals the latent mask upsampled.

    Raises:
        InputError: the last two sides are not multiples of ``cell``.
    """
    m = np.asarray(masks)
    s0, s1 = m.shape[-2:]
    if s0 % cell or s1 % cell:
        raise InputError(f"mask of shape {m.shape} cannot be aligned to {cell}-pixel cells; sides must be multiples")
    blocks = m.reshape(m.shape[:-2] + (s0 // cell, cell, s1 // cell, cell)).max(axis=(-3, -1))
    return np.repeat(np.repeat(blocks, cell, axis=-2), cell, axis=-1).astype(m.dtype)


def _same_aspect(mh: int, mw: int, h: int, w: int) -> bool:
    """True when ``mh x mw`` has the aspect ratio of ``h x w`` to within one pixel."""
    return abs(mw - mh * w / h) <= 1 or abs(mh - mw * h / w) <= 1


def check_mask_count(count: int, num_frames: int, name: str = "masks") -> None:
    """The count rule of :func:`fit_masks`: one mask per frame or a single mask for all.

    Raises:
        InputError: ``count`` other than 1 or ``num_frames`` (the message names ``name``).
    """
    if int(count) not in (1, int(num_frames)):
        raise InputError(f"{name}: {int(count)} masks for a video of {int(num_frames)} frames; give one mask per "
                         f"frame (the same count, in frame order) or a single mask for all frames")


def fit_mask_frames(masks: np.ndarray, hw: Tuple[int, int], name: str = "masks") -> np.ndarray:
    """The size rule of :func:`fit_masks` on any run of masks (no count or usability check: a
    range of a long video's masks, :class:`MaskUsage` gathers those checks).

    Args:
        masks: ``uint8 (N, H', W')`` 0/1 (or bool); hw: ``(H, W)`` of the video in pixels.

    Returns:
        ``uint8 (N, H, W)`` 0/1, a fresh array (resized with :func:`resize_masks` when ``H' x W'``
        has the video's aspect ratio to one pixel).

    Raises:
        InputError: masks of another aspect ratio, or not ``(N, H, W)`` 0/1.
    """
    m = _check_stack(masks, name)
    h, w = (int(v) for v in hw)
    mh, mw = m.shape[1:]
    if (mh, mw) != (h, w):
        if not _same_aspect(mh, mw, h, w):
            raise InputError(f"{name}: masks are {mw}x{mh} (WxH) but the video is {w}x{h}; give masks of the "
                             f"video's size (or of its aspect ratio, which are resized)")
        return resize_masks(m, (h, w))
    return m.copy()


class MaskUsage:
    """The usability rule of :func:`fit_masks` gathered over masks seen run by run: at least one
    pixel to generate, and at least one pixel known, over all frames."""

    def __init__(self) -> None:
        self.any, self.all = False, True

    def add(self, masks: np.ndarray) -> None:
        """Count ``uint8 (N, H, W)`` 0/1 fitted masks in."""
        if len(masks):
            self.any = self.any or bool(masks.any())
            self.all = self.all and bool(masks.all())

    def check(self, name: str = "masks") -> None:
        """Raises InputError: no pixel marked in any frame, or every pixel of every frame."""
        if not self.any:
            raise InputError(f"{name}: the masks mark no pixel (all 0); mark the region to remove with non-zero "
                             f"values (1 = generate)")
        if self.all:
            raise InputError(f"{name}: the masks mark every pixel of every frame (all 1), so nothing is known to "
                             f"inpaint from; leave some pixels 0 (known)")


def fit_masks(masks: np.ndarray, num_frames: int, hw: Tuple[int, int], name: str = "masks") -> np.ndarray:
    """Check per-frame masks against the video and bring them to its frame count and size
    (:func:`check_mask_count`, :func:`fit_mask_frames`, :class:`MaskUsage`).

    Args:
        masks: ``uint8 (T', H', W')`` 0/1 (or bool): one mask per frame (``T' == num_frames``) or one
            mask for every frame (``T' == 1``).
        num_frames: ``T`` of the video (>= 1).
        hw: ``(H, W)`` of the video's frames in pixels.
        name: what the masks are called in error messages (e.g. the ``--masks`` URI).

    Returns:
        ``uint8 (T, H, W)`` 0/1 (a fresh array). Masks of another size with the same aspect ratio
        (to one pixel) are resized with :func:`resize_masks`.

    Raises:
        InputError: a count other than 1 or ``T``; a size of another aspect ratio; no pixel to
            generate in any frame; every pixel of every frame to generate. Each message names
            ``name`` and the fix.
    """
    m = _check_stack(masks, name)
    t = int(num_frames)
    check_mask_count(m.shape[0], t, name)
    m = fit_mask_frames(m, hw, name)
    if m.shape[0] == 1 and t > 1:
        m = np.repeat(m, t, axis=0)
    usage = MaskUsage()
    usage.add(m)
    usage.check(name)
    return m


def canvas_masks(masks: np.ndarray, geom: CanvasGeometry) -> np.ndarray:
    """Source-resolution masks mapped onto the square canvas of ``geom``.

    The frame's rectangle (``geom.known_box``) takes the masks resized to ``geom.resized_hw`` with
    :func:`resize_masks` and grown to whole 8x8 latent cells (:func:`cell_align`); the padding
    outside the frame is 1 (generate), exactly the outpainting mask :func:`geometry.pixel_mask`
    (it is cropped away at the end, and the model was trained to fill such borders).

    Args:
        masks: ``uint8 (T, H, W)`` 0/1 with ``(H, W) == geom.source_hw``.

    Returns:
        ``uint8 (T, S, S)`` 0/1.

    Raises:
        InputError: masks of another size than the plan's source.
    """
    m = _check_stack(masks, "masks")
    if m.shape[1:] != tuple(geom.source_hw):
        raise InputError(f"masks are {m.shape[2]}x{m.shape[1]} (WxH) but the canvas was planned for "
                         f"{geom.source_hw[1]}x{geom.source_hw[0]}; fit them first (fit_masks)")
    s = geom.canvas_size
    y0, y1, x0, x1 = geom.known_box
    obj = np.zeros((m.shape[0], s, s), np.uint8)
    obj[:, y0:y1, x0:x1] = resize_masks(m, geom.resized_hw)
    return np.maximum(cell_align(obj), pixel_mask(geom)[None]).astype(np.uint8)


def dilated_name(name: str, dilate: int) -> str:
    """How the masks are named in errors once dilated."""
    return f"{name} dilated by {dilate} px"


def inpaint_masks(masks: np.ndarray, num_frames: int, hw: Tuple[int, int], dilate: int = 0,
                  name: str = "masks") -> np.ndarray:
    """The source-resolution masks of an inpainting: :func:`fit_masks` (count, size, empty,
    all-ones), then :func:`dilate_masks` by ``dilate`` pixels, checked again.

    Args:
        masks: uint8 ``(T', H', W')`` 0/1 (``T'`` = 1 or T); num_frames: ``T``; hw: ``(H, W)`` of the
            video in pixels; dilate: pixels (>= 0); name: the mask source in error messages.

    Returns:
        uint8 ``(T, H, W)`` 0/1, 1 = remove / generate.

    Raises:
        InputError: as :func:`fit_masks` (also when the dilation leaves no pixel known).
    """
    fitted = fit_masks(masks, num_frames, hw, name)
    if dilate:
        fitted = fit_masks(dilate_masks(fitted, dilate), num_frames, hw, dilated_name(name, dilate))
    return fitted


def inpaint_mask_frames(masks: np.ndarray, hw: Tuple[int, int], dilate: int = 0, name: str = "masks") -> np.ndarray:
    """:func:`inpaint_masks` of a run of masks, per frame: the size rule and the dilation, not the
    count or usability checks (gathered over the whole video, :class:`MaskUsage`).

    Args:
        masks: uint8 ``(N, H', W')`` 0/1; hw: ``(H, W)`` of the video; dilate: pixels (>= 0).

    Returns:
        uint8 ``(N, H, W)`` 0/1.

    Raises:
        InputError: masks of another aspect ratio (named ``name``).
    """
    fitted = fit_mask_frames(masks, hw, name)
    return dilate_masks(fitted, dilate) if dilate else fitted


class MaskArray:
    """A mask source held in memory: the same reading interface as
    :class:`m3ddm_ray.video.MaskSource` (``uri``, ``count``, :meth:`iter`, :meth:`read`).

    Args:
        masks: uint8 ``(T', H', W')`` 0/1, one mask per frame or one for every frame (``T' == 1``).
        uri: what the masks are called in result rows.
    """

    def __init__(self, masks: np.ndarray, uri: str = "masks"):
        self.masks = np.asarray(masks)
        if self.masks.ndim == 2:
            self.masks = self.masks[None]
        self.uri, self.count = uri, int(len(self.masks))

    def iter(self, lo: int = 0, hi: int | None = None) -> Iterator[np.ndarray]:
        """Masks ``lo .. hi - 1`` (default: all), each ``(H', W')``."""
        yield from self.masks[lo:hi]

    def read(self, lo: int, hi: int) -> np.ndarray:
        """``(hi - lo, H', W')`` masks, or the single mask ``(1, H', W')`` whatever the range."""
        return self.masks[:1] if self.count == 1 else self.masks[lo:hi]
