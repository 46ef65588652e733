"""No-reference quality numbers of one outpainted video (numpy + OpenCV, no model weights).

(About 580 lines on purpose: every no-reference measure of an output -- flicker, seam strength,
tile seams, generated-region statistics -- over the same input checks, luma and mask helpers and one
chunked accumulator.)

After outpainting, every (clip, ratio) output is a stack of composited canvas frames (the known
source pixels pasted back, the generated border elsewhere) plus the pixel mask that says which is
which (:func:`m3ddm_ray.geometry.pixel_mask`). The functions here turn that pair into a handful of
floats that go into the result row of the Parquet table, so that bad outputs (a flickering border,
a visible seam, a black or blown-out border) can be found by sorting a column instead of watching
videos.

Conventions (the same as :mod:`m3ddm_ray.geometry`):

* ``frames`` is an RGB ``uint8`` array ``(T, H, W, 3)`` with ``T >= 1`` (on the canvas ``H == W ==
  S``, but any ``H, W >= 1`` is accepted);
* ``mask`` is ``(H, W)`` of dtype ``uint8`` (or ``bool``) with values ``{0, 1}``: **1 = generated**,
  **0 = known**;
* every measure works on luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601 weights, computed in
  ``float32`` without rounding, range ``[0, 255]``); differences are in uint8 levels (0 .. 255);
* a value that cannot be measured (an empty region, no border, a single frame where a temporal
  ratio is asked for) is ``float('nan')``, never an exception, so a column stays numeric.

Cost: one pass over the frames, ``O(T * H * W)``: frames are converted to luma in chunks of
``chunk_frames`` (default :data:`DEFAULT_CHUNK_FRAMES`), masked sums run per frame in OpenCV, so peak
extra memory is about ``chunk_frames * H * W * 20`` bytes (float32 RGB copy, luma, generated pixels)
whatever ``T`` is (~40 MB for 32 frames of 256 x 256). A 256 x 256 x 300-frame report takes well
under a second on one CPU core (``benchmarks/bench_quality.py``). Nothing here imports torch or Ray.

The package's frame and mask validators (:func:`check_frames`, :func:`check_mask`) live here too, so
every layer above checks frames one way; with them the module is just past 500 lines, all of it one
job (validated frames + mask -> the quality numbers).
"""

from __future__ import annotations

import math
import numbers
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from m3ddm_ray.errors import InputError

__all__ = [
    "LUMA_WEIGHTS",
    "FLICKER_EPS",
    "SEAM_EPS",
    "SATURATION_LEVELS",
    "DEFAULT_CHUNK_FRAMES",
    "REPORT_KEYS",
    "check_frames",
    "check_mask",
    "luma",
    "temporal_flicker",
    "flicker_ratio",
    "seam_strength",
    "TILE_SEAM_EPS",
    "tile_seam_ratio",
    "generated_stats",
    "quality_report",
]

#: BT.601 luma weights applied to ``(R, G, B)``.
LUMA_WEIGHTS: Tuple[float, float, float] = (0.299, 0.587, 0.114)

#: Added to the known-region flicker (uint8 levels) before dividing in :func:`flicker_ratio`. Half a
#: level: far below what is visible, so a static known region next to a static (or imperceptibly
#: noisy) border gives a ratio near 0 instead of a division blow-up.
FLICKER_EPS: float = 0.5

#: Added to the texture baseline (uint8 levels) before dividing in :func:`seam_strength`; half a level,
#: for the same reason as :data:`FLICKER_EPS` (a perfectly flat known region).
SEAM_EPS: float = 0.5

#: Added to the off-boundary gradient energy (squared uint8 levels) in :func:`tile_seam_ratio`:
#: (half a level)², for a flat border.
TILE_SEAM_EPS: float = 0.25

#: A generated pixel counts as saturated when its luma is ``<= SATURATION_LEVELS`` or
#: ``>= 255 - SATURATION_LEVELS``.
SATURATION_LEVELS: float = 2.0

#: Frames converted to luma at a time.
DEFAULT_CHUNK_FRAMES: int = 32

#: Keys of :func:`quality_report`, in order.
REPORT_KEYS: Tuple[str, ...] = (
    "q_flicker_generated",
    "q_flicker_known",
    "q_flicker_ratio",
    "q_seam_strength",
    "q_generated_mean",
    "q_generated_std",
    "q_generated_saturated_frac",
)

_NAN = float("nan")


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def check_frames(frames, name: str = "frames") -> np.ndarray:
    """``frames`` as a uint8 ``(T, H, W, 3)`` array with T, H, W >= 1; InputError naming ``name`` otherwise."""
    arr = np.asarray(frames)
    if arr.dtype != np.uint8:
        raise InputError(f"{name} has dtype {arr.dtype}; expected uint8 RGB frames (T, H, W, 3)")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(f"{name} has shape {arr.shape}; expected (T, H, W, 3) RGB frames")
    if min(arr.shape[:3]) < 1:
        raise InputError(f"{name} has shape {arr.shape}; T, H and W must all be >= 1")
    return arr


def check_mask(mask, hw: Tuple[int, int], name: str = "mask") -> np.ndarray:
    """``mask`` (uint8 0/1 or bool, ``(H, W)`` = ``hw``) as a C-contiguous bool array; InputError naming
    ``name`` otherwise. 1 / True = generated pixel."""
    arr = np.asarray(mask)
    if arr.dtype != np.bool_ and arr.dtype != np.uint8:
        raise InputError(f"{name} has dtype {arr.dtype}; expected uint8 (values 0/1) or bool")
    if arr.shape != tuple(hw):
        raise InputError(
            f"{name} has shape {arr.shape}; expected (H, W) = {tuple(hw)}, the frames' height and width"
        )
    if arr.dtype == np.uint8:
        if arr.size and int(arr.max()) > 1:
            raise InputError(f"{name} has values up to {int(arr.max())}; expected only 0 and 1")
        arr = arr.astype(bool)
    return np.ascontiguousarray(arr)


def _check_pos_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
        raise InputError(f"{name}={v!r} must be a positive integer")
    return int(v)


# --------------------------------------------------------------------------------------------------
# Luma
# --------------------------------------------------------------------------------------------------


def luma(frames: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB frames.

    Args:
        frames: ``uint8 (..., 3)`` RGB (e.g. ``(T, H, W, 3)``).

    Returns:
        ``float32 (...)`` luma in ``[0, 255]`` (float, not rounded to integer levels).

    Raises:
        InputError: if ``frames`` is not ``uint8`` or its last axis is not 3.
    """
    arr = np.asarray(frames)
    if arr.dtype != np.uint8 or arr.ndim < 1 or arr.shape[-1] != 3:
        raise InputError(
            f"frames has dtype {arr.dtype} and shape {arr.shape}; expected uint8 (..., 3) RGB"
        )
    if arr.size == 0:
        return np.zeros(arr.shape[:-1], dtype=np.float32)
    # cv2.transform maps each 3-channel pixel through the 1x3 matrix (one multi-threaded pass).
    flat = np.ascontiguousarray(arr.reshape(-1, 1, 3), dtype=np.float32)
    y = cv2.transform(flat, _LUMA_MATRIX)
    return y.reshape(arr.shape[:-1])


_LUMA_MATRIX = np.array([LUMA_WEIGHTS], dtype=np.float32)


def _luma_chunks(frames: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
    for t0 in range(0, frames.shape[0], chunk):
        yield luma(frames[t0 : t0 + chunk])


# --------------------------------------------------------------------------------------------------
# One-pass accumulator
# --------------------------------------------------------------------------------------------------


def _pair_offsets(hw: Tuple[int, int], width: int) -> List[Tuple[int, int]]:
    """``(dy, dx)`` offsets of the pixel pairs used by the seam measure: 1..width along each axis."""
    h, w = hw
    offs = []
    for d in range(1, width + 1):
        if d < w:
            offs.append((0, d))
        if d < h:
            offs.append((d, 0))
    return offs


def _pairs(a: np.ndarray, dy: int, dx: int) -> Tuple[np.ndarray, np.ndarray]:
    """The two ends ``(p, p + (dy, dx))`` of every in-bounds pair, as views of the last two axes."""
    h, w = a.shape[-2:]
    return a[..., : h - dy, : w - dx], a[..., dy:, dx:]


def _masked_sum(img: np.ndarray, mask_u8: np.ndarray, count: int) -> float:
    """Sum of a single-channel float image over ``mask_u8 != 0`` (``count`` = number of such pixels)."""
    return cv2.mean(img, mask=mask_u8)[0] * count


class _Accumulator:
    """Sums needed by every measure, gathered in one chunked pass over the luma frames.

    ``regions`` is a list of bool ``(H, W)`` masks whose temporal flicker is wanted; ``mask`` (bool,
    True = generated) is needed for the seam and the generated-region statistics. Masked reductions
    run per frame in OpenCV (double accumulators); the sparse border pairs and the generated-pixel
    statistics are vectorised over a chunk in numpy.
    """

    def __init__(
        self,
        hw: Tuple[int, int],
        regions: List[np.ndarray],
        mask: Optional[np.ndarray] = None,
        seam_width: Optional[int] = None,
        gen_stats: bool = False,
    ):
        self.hw = hw
        self.n_frames = 0
        # Temporal flicker.
        self.regions = [(r.astype(np.uint8), int(r.sum())) for r in regions]
        self.flicker_sum = [0.0] * len(regions)
        self.n_diffs = 0  # frame-to-frame differences seen so far
        self.prev: Optional[np.ndarray] = None  # last luma frame of the previous chunk

        # Seam: sparse cross-border pairs as flat index arrays, known-pair masks per offset.
        self.seam = seam_width is not None and mask is not None
        if self.seam:
            known = ~mask
            flat = np.arange(hw[0] * hw[1], dtype=np.intp).reshape(hw)
            ia, ib, self.known_pairs = [], [], []
            for dy, dx in _pair_offsets(hw, seam_width):
                m0, m1 = _pairs(mask, dy, dx)
                f0, f1 = _pairs(flat, dy, dx)
                cross = m0 != m1
                ia.append(f0[cross])
                ib.append(f1[cross])
                k0, k1 = _pairs(known, dy, dx)
                kp = k0 & k1
                count = int(kp.sum())
                if count:
                    self.known_pairs.append(((dy, dx), kp.astype(np.uint8), count))
            self.cross_a = np.concatenate(ia) if ia else np.zeros(0, np.intp)
            self.cross_b = np.concatenate(ib) if ib else np.zeros(0, np.intp)
            self.cross_sum = 0.0
            self.known_pair_sum = 0.0
            self.known_pair_count = sum(c for _, _, c in self.known_pairs)

        # Generated-region statistics (parallel mean / variance merge in float64).
        self.gen_stats = gen_stats and mask is not None
        if self.gen_stats:
            self.gen_idx = np.flatnonzero(mask.reshape(-1))
            self.gen_n = 0
            self.gen_mean = 0.0
            self.gen_m2 = 0.0
            self.gen_saturated = 0

    def add(self, y: np.ndarray) -> None:
        """Add one chunk of luma frames ``float32 (n, H, W)``."""
        n = y.shape[0]
        flat = y.reshape(n, -1)
        self.n_frames += n

        if self.regions:
            prev = self.prev
            for t in range(n):
                if prev is not None:
                    d = cv2.absdiff(y[t], prev)
                    for i, (r, count) in enumerate(self.regions):
                        if count:
                            self.flicker_sum[i] += _masked_sum(d, r, count)
                    self.n_diffs += 1
                prev = y[t]
            self.prev = y[-1].copy()

        if self.seam:
            if self.cross_a.size:
                cross = np.abs(flat[:, self.cross_a] - flat[:, self.cross_b])
                self.cross_sum += float(cross.sum(dtype=np.float64))
            for t in range(n):
                for (dy, dx), kp, count in self.known_pairs:
                    a, b = _pairs(y[t], dy, dx)
                    self.known_pair_sum += _masked_sum(cv2.absdiff(a, b), kp, count)

        if self.gen_stats and self.gen_idx.size:
            v = flat[:, self.gen_idx]
            nb = v.size
            mb = float(v.mean(dtype=np.float64))
            m2b = float(np.square(v - np.float32(mb), dtype=np.float64).sum())
            na = self.gen_n
            delta = mb - self.gen_mean
            tot = na + nb
            self.gen_mean += delta * nb / tot
            self.gen_m2 += m2b + delta * delta * na * nb / tot
            self.gen_n = tot
            lo, hi = SATURATION_LEVELS, 255.0 - SATURATION_LEVELS
            self.gen_saturated += int(np.count_nonzero((v <= lo) | (v >= hi)))

    # ---- results ---------------------------------------------------------------------------------

    def flicker(self, i: int) -> float:
        count = self.regions[i][1]
        if count == 0:
            return _NAN
        if self.n_diffs == 0:
            return 0.0
        return float(self.flicker_sum[i] / (self.n_diffs * count))

    def seam_value(self) -> float:
        if self.cross_a.size == 0 or self.known_pair_count == 0:
            return _NAN
        cross_mean = self.cross_sum / (self.cross_a.size * self.n_frames)
        base_mean = self.known_pair_sum / (self.known_pair_count * self.n_frames)
        return float(cross_mean / (base_mean + SEAM_EPS))

    def generated(self) -> Dict[str, float]:
        if self.gen_n == 0:
            return {"mean": _NAN, "std": _NAN, "saturated_frac": _NAN}
        return {
            "mean": float(self.gen_mean),
            "std": float(math.sqrt(max(self.gen_m2 / self.gen_n, 0.0))),
            "saturated_frac": float(self.gen_saturated / self.gen_n),
        }


def _run(frames: np.ndarray, acc: _Accumulator, chunk_frames: int) -> _Accumulator:
    chunk = _check_pos_int("chunk_frames", chunk_frames)
    for y in _luma_chunks(frames, chunk):
        acc.add(y)
    return acc


def _ratio(num: float, den: float) -> float:
    if math.isnan(num) or math.isnan(den):
        return _NAN
    return float(num / (den + FLICKER_EPS))


# --------------------------------------------------------------------------------------------------
# Public measures
# --------------------------------------------------------------------------------------------------


def temporal_flicker(
    frames: np.ndarray, region_mask: np.ndarray, *, chunk_frames: int = DEFAULT_CHUNK_FRAMES
) -> float:
    """Mean absolute frame-to-frame luma change inside a region.

    ``mean over t = 1..T-1 and pixels p in the region of |Y[t, p] - Y[t-1, p]|``.

    Args:
        frames: ``uint8 (T, H, W, 3)`` RGB, ``T >= 1``.
        region_mask: ``(H, W)`` ``uint8`` (0/1) or ``bool``; 1 / True = pixel belongs to the region.
        chunk_frames: frames converted to luma at a time (memory bound, does not change the result
            beyond float rounding).

    Returns:
        Flicker in uint8 luma levels, ``[0, 255]``: 0 = the region is perfectly static; higher =
        more change between consecutive frames (motion or flicker). ``0.0`` when ``T == 1``; NaN when
        the region is empty.

    Raises:
        InputError: ``frames`` not ``uint8 (T, H, W, 3)``; ``region_mask`` not ``uint8``/``bool``,
            not ``(H, W)`` or with values other than 0/1; ``chunk_frames`` not a positive integer.
    """
    frames = check_frames(frames)
    hw = frames.shape[1:3]
    region = check_mask(region_mask, hw, "region_mask")
    acc = _run(frames, _Accumulator(hw, [region]), chunk_frames)
    return acc.flicker(0)


def flicker_ratio(
    frames: np.ndarray, mask: np.ndarray, *, chunk_frames: int = DEFAULT_CHUNK_FRAMES
) -> float:
    """Temporal flicker of the generated region relative to the known region.

    ``temporal_flicker(frames, mask == 1) / (temporal_flicker(frames, mask == 0) + FLICKER_EPS)`` with
    :data:`FLICKER_EPS` = 0.5 luma level (keeps the ratio finite for a static known region).

    Args:
        frames: ``uint8 (T, H, W, 3)`` RGB composited canvas frames.
        mask: ``(H, W)`` ``uint8`` (0/1) or ``bool``, 1 = generated, 0 = known.
        chunk_frames: frames converted to luma at a time.

    Returns:
        Dimensionless ratio ``>= 0``. About 1: the generated border changes as much as the real
        content; well above 1 (say > 3): the border flickers or boils; below 1: the border is
        steadier than the content (or both are static, which gives ~0). NaN when either region is
        empty (mask all 0 or all 1) or ``T == 1`` (nothing temporal to compare).

    Raises:
        InputError: as :func:`temporal_flicker`, naming ``mask``.
    """
    frames = check_frames(frames)
    hw = frames.shape[1:3]
    m = check_mask(mask, hw, "mask")
    acc = _run(frames, _Accumulator(hw, [m, ~m]), chunk_frames)
    if acc.n_diffs == 0:
        return _NAN
    return _ratio(acc.flicker(0), acc.flicker(1))


def seam_strength(
    frames: np.ndarray, mask: np.ndarray, width: int = 2, *, chunk_frames: int = DEFAULT_CHUNK_FRAMES
) -> float:
    """How visible the known/generated boundary is, relative to the known content's own texture.

    Pixel pairs ``(p, p + d)`` are taken along rows and columns for every offset ``d = 1 .. width``.
    The numerator is the mean ``|Y(p) - Y(p + d)|`` over the pairs with one end known and the other
    generated (the pairs straddling the mask border, i.e. the band of ``width`` pixels on each side);
    the denominator is the same mean over the pairs with both ends known (the texture baseline at the
    same distances) plus :data:`SEAM_EPS` = 0.5 luma level. Both are averaged over all frames.

    Args:
        frames: ``uint8 (T, H, W, 3)`` RGB composited canvas frames.
        mask: ``(H, W)`` ``uint8`` (0/1) or ``bool``, 1 = generated, 0 = known.
        width: largest pair distance in pixels (positive integer); 1 = direct neighbours only.
        chunk_frames: frames converted to luma at a time.

    Returns:
        Dimensionless ratio ``>= 0``: about 1 = the content continues across the border as smoothly
        as it varies inside the known region (no visible seam); well above 1 = a visible edge along
        the border (e.g. a black or mismatched border). NaN when there is no border (mask all 0 or all
        1) or no pair of known pixels at these distances to form a baseline.

    Raises:
        InputError: bad ``frames`` / ``mask`` (see :func:`flicker_ratio`), ``width`` or
            ``chunk_frames`` not a positive integer.
    """
    frames = check_frames(frames)
    hw = frames.shape[1:3]
    m = check_mask(mask, hw, "mask")
    w = _check_pos_int("width", width)
    acc = _run(frames, _Accumulator(hw, [], mask=m, seam_width=w), chunk_frames)
    return acc.seam_value()


def tile_seam_ratio(frames: np.ndarray, mask: np.ndarray, cuts_y, cuts_x) -> float:
    """How visible tile boundaries are inside the generated region: gradient energy across the
    boundaries against the gradient energy elsewhere in the border.

    A boundary at column ``c`` lies between columns ``c - 1`` and ``c`` (at row ``r``: between rows
    ``r - 1`` and ``r``). With ``Y`` the luma, the *across* energy is the mean of
    ``(Y[.., c] - Y[.., c - 1])²`` over every frame, every cut column ``c`` in ``cuts_x`` and every
    row where both pixels are generated, pooled with the same along rows for ``cuts_y``; the
    *elsewhere* energy is the same mean over every other horizontally or vertically adjacent pair
    of generated pixels. The ratio is ``across / (elsewhere + TILE_SEAM_EPS)``.

    Args:
        frames: ``uint8 (T, H, W, 3)`` RGB frames (the composited working canvases).
        mask: ``(H, W)`` 0/1 or bool, 1 = generated.
        cuts_y, cuts_x: boundary rows / columns in pixels, each in ``1 .. H-1`` / ``1 .. W-1``
            (:func:`m3ddm_ray.tiles.tile_cuts`).

    Returns:
        Dimensionless ratio ``>= 0``: about 1 = the boundaries are as smooth as the rest of the
        border (no seam); well above 1 = visible seams. NaN when no generated pair lies across a
        boundary or none elsewhere.

    Raises:
        InputError: bad frames / mask, or a cut outside ``1 .. side - 1``.
    """
    frames = check_frames(frames)
    h, w = frames.shape[1:3]
    m = check_mask(mask, (h, w), "mask")
    cy, cx = sorted({int(c) for c in cuts_y}), sorted({int(c) for c in cuts_x})
    for name, cuts, side in (("cuts_y", cy, h), ("cuts_x", cx, w)):
        if any(not 1 <= c <= side - 1 for c in cuts):
            raise InputError(f"{name}={cuts} must lie in 1..{side - 1} (a boundary between two pixels)")
    y = luma(frames).astype(np.float64)
    dx = (y[:, :, 1:] - y[:, :, :-1]) ** 2  # pair (c - 1, c) at index c - 1
    dy = (y[:, 1:, :] - y[:, :-1, :]) ** 2
    vx = m[:, 1:] & m[:, :-1]
    vy = m[1:, :] & m[:-1, :]
    at_x = np.zeros_like(vx)
    at_x[:, [c - 1 for c in cx]] = True
    at_y = np.zeros_like(vy)
    at_y[[c - 1 for c in cy], :] = True
    across_n = int((vx & at_x).sum() + (vy & at_y).sum())
    other_n = int((vx & ~at_x).sum() + (vy & ~at_y).sum())
    if across_n == 0 or other_n == 0:
        return _NAN
    across = (dx[:, vx & at_x].sum() + dy[:, vy & at_y].sum()) / (across_n * len(y))
    other = (dx[:, vx & ~at_x].sum() + dy[:, vy & ~at_y].sum()) / (other_n * len(y))
    return float(across / (other + TILE_SEAM_EPS))


def generated_stats(
    frames: np.ndarray, mask: np.ndarray, *, chunk_frames: int = DEFAULT_CHUNK_FRAMES
) -> Dict[str, float]:
    """Luma statistics of the generated region over all frames.

    Args:
        frames: ``uint8 (T, H, W, 3)`` RGB composited canvas frames.
        mask: ``(H, W)`` ``uint8`` (0/1) or ``bool``, 1 = generated, 0 = known.
        chunk_frames: frames converted to luma at a time.

    Returns:
        ``{"mean": float, "std": float, "saturated_frac": float}``:

        * ``mean``: mean luma of the generated pixels, uint8 levels ``[0, 255]``;
        * ``std``: population standard deviation of that luma over all generated pixels of all
          frames, levels ``[0, 127.5]``; near 0 = a flat (featureless) border;
        * ``saturated_frac``: fraction ``[0, 1]`` of generated pixel-frames whose luma is within
          :data:`SATURATION_LEVELS` (2) levels of 0 or 255; near 1 = black or blown-out border.

        All three are NaN when the generated region is empty (mask all 0).

    Raises:
        InputError: bad ``frames`` / ``mask`` (see :func:`flicker_ratio`).
    """
    frames = check_frames(frames)
    hw = frames.shape[1:3]
    m = check_mask(mask, hw, "mask")
    acc = _run(frames, _Accumulator(hw, [], mask=m, gen_stats=True), chunk_frames)
    return acc.generated()


def quality_report(
    frames: np.ndarray,
    mask: np.ndarray,
    *,
    seam_width: int = 2,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
) -> Dict[str, float]:
    """All quality numbers of one output video, in one pass, as Parquet-ready floats.

    Args:
        frames: ``uint8 (T, H, W, 3)`` RGB composited canvas frames (known pixels pasted back).
        mask: ``(H, W)`` ``uint8`` (0/1) or ``bool``, 1 = generated, 0 = known
            (:func:`m3ddm_ray.geometry.pixel_mask`).
        seam_width: ``width`` of :func:`seam_strength`.
        chunk_frames: frames converted to luma at a time.

    Returns:
        A dict with exactly the keys :data:`REPORT_KEYS`, every value a Python ``float`` (NaN where
        not measurable):

        * ``q_flicker_generated``: :func:`temporal_flicker` of the generated region, luma levels
          ``[0, 255]`` (0 for ``T == 1``; NaN if mask all 0);
        * ``q_flicker_known``: :func:`temporal_flicker` of the known region, luma levels (NaN if
          mask all 1);
        * ``q_flicker_ratio``: :func:`flicker_ratio`; ~1 fine, >> 1 flickering border (NaN if a
          region is empty or ``T == 1``);
        * ``q_seam_strength``: :func:`seam_strength`; ~1 no seam, >> 1 visible seam (NaN without a
          border);
        * ``q_generated_mean``: mean luma of the generated region, levels ``[0, 255]``;
        * ``q_generated_std``: std of that luma, levels; ~0 = flat border;
        * ``q_generated_saturated_frac``: fraction ``[0, 1]`` of generated pixel-frames within 2
          levels of 0 or 255; ~1 = black / blown-out border.

        The last three are NaN when the mask is all 0 (nothing generated).

    Raises:
        InputError: bad ``frames`` / ``mask`` (see :func:`flicker_ratio`), ``seam_width`` or
            ``chunk_frames`` not a positive integer.
    """
    frames = check_frames(frames)
    hw = frames.shape[1:3]
    m = check_mask(mask, hw, "mask")
    w = _check_pos_int("seam_width", seam_width)
    acc = _Accumulator(hw, [m, ~m], mask=m, seam_width=w, gen_stats=True)
    _run(frames, acc, chunk_frames)
    f_gen, f_known = acc.flicker(0), acc.flicker(1)
    gen = acc.generated()
    report = {
        "q_flicker_generated": f_gen,
        "q_flicker_known": f_known,
        "q_flicker_ratio": _ratio(f_gen, f_known) if acc.n_diffs else _NAN,
        "q_seam_strength": acc.seam_value(),
        "q_generated_mean": gen["mean"],
        "q_generated_std": gen["std"],
        "q_generated_saturated_frac": gen["saturated_frac"],
    }
    return {k: float(v) for k, v in report.items()}
