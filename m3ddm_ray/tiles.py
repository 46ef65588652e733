"""Spatial tiles: overlapping canvas-size tiles over a larger working frame, and their fusion (pure numpy).

(About 850 lines on purpose: every tile rule -- settings, placement, masks, fusion weights, groups and units,
fuse and split -- in one pure module, property-tested as one contract.)

The model denoises ``S × S`` canvases (``S`` = the canvas size). A frame at a larger *working*
resolution is covered by overlapping ``S × S`` tiles that are denoised together; after every
denoising step the tiles' latents are fused into one frame latent, where overlapping tiles are
averaged, and cut into tiles again (MultiDiffusion, Bar-Tal et al. 2023, arXiv 2302.08113, §3:
the fused value is the closed-form weighted least-squares solution ``Σ w_i x_i / Σ w_i``;
Follow-Your-Canvas, arXiv 2409.01055: the spatial windows of its outpainting). This module holds
the rules only: the tiling settings, where the tiles go (:func:`plan_tiles`), their masks
(:func:`tile_mask`, :func:`tile_latent_mask`), the fusion weights (:func:`fusion_weights`),
:func:`fuse` / :func:`split` in numpy and the layout start (:func:`layout_skip`). The fused sampler
and the torch twins are in :mod:`m3ddm_ray.sampling_tiles`; the tiled run of a clip in
:mod:`m3ddm_ray.tiled`.

Conventions (those of :mod:`m3ddm_ray.geometry`): pixel boxes are half-open ``(y0, y1, x0, x1)``;
masks are ``uint8`` with 1 = generate, 0 = known; ``factor`` is the VAE's spatial downsampling
(:func:`m3ddm_ray.sampling.vae_factor`), so a tile of ``T`` pixels is ``T // factor`` latent cells.

Nothing here imports torch; every function is deterministic.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import NamedTuple, Sequence, Tuple

import numpy as np

from .errors import InputError
from .geometry import latent_mask
from .rules import canvas_size_problem

__all__ = [
    "FUSION_KINDS",
    "TilingSettings",
    "Tile",
    "axis_starts",
    "plan_tiles",
    "tile_mask",
    "tile_latent_mask",
    "FusionWeights",
    "fusion_weights",
    "fuse_boxes",
    "fuse",
    "split_boxes",
    "split",
    "layout_skip",
    "tile_cuts",
    "tile_groups",
    "group_plan",
    "work_units",
    "unit_weights",
]

#: Kinds of fusion weights (:func:`fusion_weights`).
FUSION_KINDS: tuple[str, ...] = ("uniform", "linear")


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_overlap(overlap: int, tile_size: int, factor: int, name: str = "overlap") -> None:
    """The overlap rule, in one place: ``0 <= overlap < tile_size`` and a multiple of ``factor``."""
    if not _is_int(overlap) or overlap < 0:
        raise InputError(f"{name}={overlap!r} must be an integer >= 0 (pixels shared by neighbouring tiles)")
    if overlap >= tile_size:
        raise InputError(f"{name}={overlap} pixels is not smaller than the tile size {tile_size}; "
                         f"use an overlap in 0..{tile_size - factor} (a multiple of {factor})")
    if overlap % factor:
        raise InputError(f"{name}={overlap} pixels is not a multiple of the VAE's downsampling factor "
                         f"{factor}, so tiles would leave the latent grid; use e.g. "
                         f"{overlap // factor * factor} or {(overlap // factor + 1) * factor}")


def _check_factor(factor) -> int:
    if not _is_int(factor) or factor <= 0:
        raise InputError(f"factor={factor!r} must be a positive integer (the VAE's spatial downsampling)")
    return int(factor)


def _check_tile_size(tile_size, factor: int) -> int:
    if not _is_int(tile_size) or tile_size <= 0 or tile_size % factor:
        raise InputError(f"tile_size={tile_size!r} must be a positive multiple of the VAE's downsampling "
                         f"factor {factor} (the canvas size)")
    return int(tile_size)


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TilingSettings:
    """Settings of the tiled mode (``tiling:`` in a config; :mod:`m3ddm_ray.tiled` runs it).

    Attributes:
        working_size: side in pixels of the square working frame that the tiles cover, a positive
            multiple of 8 and at least the canvas size; ``None`` = tiling off (the default).
        overlap: pixels shared by neighbouring tiles along each axis (the minimum; see
            :func:`plan_tiles`), ``0 <= overlap < canvas size`` and a multiple of the VAE's
            downsampling factor (both checked by :meth:`check_for`, which knows them).
        layout_strength: how strongly the upsampled low-resolution layout is re-noised before the
            tiled denoising, as a fraction of the denoising schedule in ``(0, 1]`` (an img2img
            strength: ``1`` = from the noisiest timestep).

    Raises:
        InputError: a value of the wrong type or out of range; the message names the setting and
            the fix.
    """

    working_size: int | None = None
    overlap: int = 32
    layout_strength: float = 0.6

    def __post_init__(self) -> None:
        ws = self.working_size
        if ws is not None:
            if not _is_int(ws) or canvas_size_problem(int(ws)):
                raise InputError(f"tiling.working_size={ws!r} must be None (tiling off) or a positive "
                                 f"multiple of 8 at least the canvas size, e.g. 512")
            object.__setattr__(self, "working_size", int(ws))
        if not _is_int(self.overlap) or self.overlap < 0:
            raise InputError(f"tiling.overlap={self.overlap!r} must be an integer >= 0 (pixels shared "
                             f"by neighbouring tiles), e.g. 32")
        object.__setattr__(self, "overlap", int(self.overlap))
        ls = self.layout_strength
        if (isinstance(ls, bool) or not isinstance(ls, numbers.Real) or not math.isfinite(ls)
                or not 0.0 < ls <= 1.0):
            raise InputError(f"tiling.layout_strength={ls!r} must be a number in (0, 1] (the fraction "
                             f"of the schedule run on the re-noised layout; 1 = from pure noise)")
        object.__setattr__(self, "layout_strength", float(ls))

    @property
    def enabled(self) -> bool:
        """True when a working size is set."""
        return self.working_size is not None

    def check_for(self, canvas_size: int, factor: int) -> "TilingSettings":
        """Check the rules that need the model: the canvas size (= the tile size) and the VAE factor.

        Args:
            canvas_size: the model canvas side in pixels (the tile size).
            factor: the VAE's spatial downsampling (:func:`m3ddm_ray.sampling.vae_factor`).

        Returns:
            ``self``, unchanged.

        Raises:
            InputError: ``working_size`` smaller than the canvas or not a multiple of ``factor``;
                ``overlap`` not smaller than the canvas or not a multiple of ``factor``.
        """
        f = _check_factor(factor)
        t = _check_tile_size(canvas_size, f)
        _check_overlap(self.overlap, t, f, "tiling.overlap")
        ws = self.working_size
        if ws is not None:
            if ws < t:
                raise InputError(f"tiling.working_size={ws} is smaller than the canvas size {t}; use "
                                 f"None (tiling off) or a size >= {t}")
            if ws % f:
                raise InputError(f"tiling.working_size={ws} is not a multiple of the VAE's downsampling "
                                 f"factor {f}; use e.g. {-(-ws // f) * f}")
        return self


# --------------------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """One square tile of a working frame (pixels of the working resolution).

    Attributes:
        index: position in the plan (0, 1, ... in the order :func:`plan_tiles` returns them).
        y0, x0: top-left pixel in the working frame, multiples of the VAE factor.
        size: side in pixels (the canvas size).
    """

    index: int
    y0: int
    x0: int
    size: int

    @property
    def box(self) -> Tuple[int, int, int, int]:
        """Half-open pixel box ``(y0, y1, x0, x1)`` of the tile in the working frame."""
        return (self.y0, self.y0 + self.size, self.x0, self.x0 + self.size)

    def latent_box(self, factor: int) -> Tuple[int, int, int, int]:
        """Half-open box of the tile on the frame's latent grid: the pixel box divided by ``factor``.

        Raises:
            InputError: ``factor`` does not divide the tile's start and size.
        """
        f = _check_factor(factor)
        if self.y0 % f or self.x0 % f or self.size % f:
            raise InputError(f"tile {self.index} at (y0={self.y0}, x0={self.x0}) of size {self.size} is "
                             f"not on the latent grid of factor {f}; plan the tiles with factor={f}")
        return (self.y0 // f, (self.y0 + self.size) // f, self.x0 // f, (self.x0 + self.size) // f)


def axis_starts(length: int, tile_size: int, overlap: int, factor: int) -> Tuple[int, ...]:
    """Tile starts along one axis: the fewest tiles with at least ``overlap`` pixels of overlap,
    spread evenly on the latent grid.

    Rule, with ``L = length``, ``T = tile_size``, ``o = overlap``, ``f = factor`` (all multiples of
    ``f``): ``n = 1`` if ``L == T``, else ``n = ceil((L - o) / (T - o))`` (the fewest tiles whose
    overlaps are all ``>= o``); start ``k`` is ``f · floor(k · D / (n - 1) + 1/2)`` with
    ``D = (L - T) / f`` in latent cells (computed in integers), so the first start is 0 and the last
    ``L - T``. Consecutive starts differ by ``ceil`` or ``floor`` of ``D / (n - 1)`` cells, which is at
    most ``(T - o) / f`` and at least 1, so neighbouring tiles overlap by at least ``o`` pixels (exactly
    ``o`` when ``L - o`` is a multiple of ``T - o``; otherwise the extra overlap is shared out evenly,
    the overlaps differing by at most ``f`` pixels) and no two tiles start at the same place.

    Args:
        length: ``L``, the frame's side along the axis in pixels.
        tile_size: ``T`` in pixels.
        overlap: ``o`` in pixels.
        factor: ``f``, the VAE's spatial downsampling.

    Returns:
        The starts in increasing order, pixels.

    Raises:
        InputError: ``L < T``, or a value that is not a multiple of ``f`` (see :func:`plan_tiles`).
    """
    f = _check_factor(factor)
    t = _check_tile_size(tile_size, f)
    _check_overlap(overlap, t, f)
    if not _is_int(length) or length <= 0 or length % f:
        raise InputError(f"frame side {length!r} must be a positive multiple of the VAE's downsampling "
                         f"factor {f}")
    if length < t:
        raise InputError(f"the working frame's side {length} is smaller than the tile size {t}; use a "
                         f"working size >= the canvas size")
    if length == t:
        return (0,)
    n = -(-(length - overlap) // (t - overlap))
    d = (length - t) // f
    return tuple(f * ((2 * k * d + (n - 1)) // (2 * (n - 1))) for k in range(n))


def _check_box(known_box, frame_hw: Tuple[int, int]) -> Tuple[int, int, int, int]:
    h, w = frame_hw
    try:
        y0, y1, x0, x1 = known_box
    except (TypeError, ValueError):
        raise InputError(f"known_box={known_box!r} must be four integers (y0, y1, x0, x1)") from None
    if not all(_is_int(v) for v in (y0, y1, x0, x1)) or not (0 <= y0 <= y1 <= h and 0 <= x0 <= x1 <= w):
        raise InputError(f"known_box={known_box!r} must be a half-open box (y0, y1, x0, x1) with "
                         f"0 <= y0 <= y1 <= {h} and 0 <= x0 <= x1 <= {w} (the frame's {h}x{w} pixels)")
    return int(y0), int(y1), int(x0), int(x1)


def _check_frame_hw(frame_hw, factor: int, what: str = "frame_hw") -> Tuple[int, int]:
    try:
        h, w = frame_hw
    except (TypeError, ValueError):
        raise InputError(f"{what}={frame_hw!r} must be two integers (height, width)") from None
    if not (_is_int(h) and _is_int(w)) or h <= 0 or w <= 0 or h % factor or w % factor:
        kind = "integers" if factor == 1 else f"multiples of the VAE's downsampling factor {factor}"
        raise InputError(f"{what}={frame_hw!r} must be two positive {kind} (height, width)")
    return int(h), int(w)


def plan_tiles(
    frame_hw: Tuple[int, int],
    known_box: Tuple[int, int, int, int],
    tile_size: int,
    overlap: int,
    factor: int,
    *,
    generated: np.ndarray | None = None,
) -> Tuple[Tile, ...]:
    """Square tiles that cover every generated pixel of a working frame.

    The tile grid is the product of :func:`axis_starts` along the height and along the width (the
    fewest tiles per axis with at least ``overlap`` pixels of overlap between neighbours, spread
    evenly, first at 0 and last flush with the frame's far side, every start a multiple of
    ``factor``). Tiles are listed row-major (by ``y0``, then ``x0``); a tile with no pixel to
    generate is left out and the rest are numbered ``0, 1, ...``. A tile has no pixel to generate
    when it lies wholly inside ``known_box``, or, with ``generated`` given, when it holds no 1 of
    ``generated`` (a clip whose rows have masks of their own: the union of its rows' masks, so a
    tile is kept when any frame generates a pixel in it). The known box is the special case
    ``generated`` = 1 outside the box (:func:`m3ddm_ray.geometry.pixel_mask`). A frame equal to one
    tile gives the single tile ``(0, 0)`` (when it has a pixel to generate); a frame with nothing to
    generate (``known_box`` = the whole frame, or ``generated`` all 0) gives no tile.

    Guarantees (``tests/test_tiles.py``): every pixel outside ``known_box`` (and, with
    ``generated``, every 1 of it) is in a tile, hence every latent cell holding such a pixel is
    too; no tile leaves the frame; two tiles that are neighbours along an axis (consecutive starts)
    overlap by ``>= overlap`` pixels along it, exactly ``overlap`` when ``side - overlap`` is a
    multiple of ``tile_size - overlap``.

    Args:
        frame_hw: ``(H, W)`` of the working frame in pixels, multiples of ``factor``, each
            ``>= tile_size``.
        known_box: half-open ``(y0, y1, x0, x1)`` of the known rectangle in the working frame (may be
            empty).
        tile_size: the tile side in pixels (the model canvas size), a multiple of ``factor``.
        overlap: minimum overlap in pixels, ``0 <= overlap < tile_size``, a multiple of ``factor``.
        factor: the VAE's spatial downsampling (:func:`m3ddm_ray.sampling.vae_factor`).
        generated: optional uint8 / bool ``(H, W)`` 0/1 mask of the working frame, 1 = generated in
            some frame of the clip (e.g. :attr:`m3ddm_ray.prepare.PreparedClip.mask` of a working
            clip); pass ``known_box=(0, 0, 0, 0)`` to select the tiles by this mask alone.

    Returns:
        The tiles, row-major, ``index`` = position.

    Raises:
        InputError: a side smaller than the tile, sizes off the latent grid, a bad overlap, a
            known box outside the frame, or a ``generated`` mask of another shape than the frame.
    """
    f = _check_factor(factor)
    t = _check_tile_size(tile_size, f)
    _check_overlap(overlap, t, f)
    h, w = _check_frame_hw(frame_hw, f)
    if h < t or w < t:
        raise InputError(f"the working frame ({h}x{w} pixels, HxW) is smaller than a tile ({t}x{t}) "
                         f"along {'its height' if h < t else 'its width'}; use a working size >= the "
                         f"canvas size {t}")
    ky0, ky1, kx0, kx1 = _check_box(known_box, (h, w))
    gen = None
    if generated is not None:
        gen = np.asarray(generated)
        if gen.shape != (h, w):
            raise InputError(f"generated mask of shape {gen.shape} does not match the working frame "
                             f"({h}, {w}); give the (H, W) union mask of the frame's rows")
    tiles: list[Tile] = []
    for y0 in axis_starts(h, t, overlap, f):
        for x0 in axis_starts(w, t, overlap, f):
            inside_known = ky0 <= y0 and y0 + t <= ky1 and kx0 <= x0 and x0 + t <= kx1
            if gen is not None and not inside_known:
                inside_known = not gen[y0:y0 + t, x0:x0 + t].any()
            if not inside_known:
                tiles.append(Tile(index=len(tiles), y0=y0, x0=x0, size=t))
    return tuple(tiles)


# --------------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------------


def tile_mask(frame_mask: np.ndarray, tile: Tile) -> np.ndarray:
    """The tile's crop of a working-frame pixel mask.

    Args:
        frame_mask: ``(..., H, W)`` mask of the working frame (usually ``uint8``, 1 = generate).
        tile: a tile of that frame.

    Returns:
        ``(..., T, T)`` copy of the crop, same dtype.

    Raises:
        InputError: the mask has fewer than 2 dims or the tile leaves it.
    """
    return _crop(np.asarray(frame_mask), tile.box, "frame_mask", tile.index).copy()


def tile_latent_mask(frame_mask: np.ndarray, tile: Tile, factor: int) -> np.ndarray:
    """The tile's latent mask: :func:`m3ddm_ray.geometry.latent_mask` of :func:`tile_mask`.

    Because tiles start on the latent grid this equals the tile's crop of the frame's latent mask.

    Args:
        frame_mask: ``(..., H, W)`` pixel mask of the working frame.
        tile: a tile of that frame.
        factor: the VAE's spatial downsampling.

    Returns:
        ``(..., T // factor, T // factor)``, same dtype.

    Raises:
        InputError: as :func:`tile_mask` and :func:`m3ddm_ray.geometry.latent_mask`.
    """
    return latent_mask(tile_mask(frame_mask, tile), factor)


def _crop(a: np.ndarray, box: Tuple[int, int, int, int], what: str, index: int) -> np.ndarray:
    y0, y1, x0, x1 = box
    if a.ndim < 2 or y1 > a.shape[-2] or x1 > a.shape[-1]:
        raise InputError(f"tile {index} (box {box}) does not fit {what} of shape {a.shape}; plan the "
                         f"tiles for this frame")
    return a[..., y0:y1, x0:x1]


# --------------------------------------------------------------------------------------------------
# Fusion
# --------------------------------------------------------------------------------------------------


class FusionWeights(NamedTuple):
    """Fusion weights of a tile plan at latent resolution (:func:`fusion_weights`).

    Attributes:
        per_tile: ``float32 (n_tiles, t, t)``, ``t = T // factor``, every value in ``(0, 1]``.
        normaliser: ``float32 (H // factor, W // factor)``: ``Σ_i w_i`` placed at each tile's latent
            box; ``> 0`` exactly on the covered cells, ``0`` elsewhere.
    """

    per_tile: np.ndarray
    normaliser: np.ndarray


def _ramp_widths(starts: Sequence[int], size: int) -> dict[int, Tuple[int, int]]:
    """start -> (overlap with the previous start, overlap with the next), in the starts' unit."""
    s = sorted(set(starts))
    out = {}
    for k, a in enumerate(s):
        lo = max(0, s[k - 1] + size - a) if k > 0 else 0
        hi = max(0, a + size - s[k + 1]) if k + 1 < len(s) else 0
        out[a] = (lo, hi)
    return out


def _ramp(t: int, lo: int, hi: int) -> np.ndarray:
    """``a(u) = min(1, (u + 1/2) / lo, (t - u - 1/2) / hi)`` for ``u = 0 .. t-1`` (a term is left out
    when its width is 0), float64."""
    u = np.arange(t, dtype=np.float64) + 0.5
    a = np.ones(t)
    if lo:
        a = np.minimum(a, u / lo)
    if hi:
        a = np.minimum(a, (t - u) / hi)
    return a


def fusion_weights(
    tiles: Sequence[Tile], frame_hw: Tuple[int, int], factor: int, kind: str = "uniform"
) -> FusionWeights:
    """Per-tile fusion weights at latent resolution and their sum over the frame.

    The fused value of a latent cell is ``Σ_i w_i x_i / Σ_i w_i`` over the tiles that cover it
    (the closed-form MultiDiffusion step); :func:`fuse` computes it.

    * ``"uniform"``: ``w_i = 1``, the plain MultiDiffusion average.
    * ``"linear"`` (feathering): ``w_i(y, x) = a_y(y) · a_x(x)`` in the tile's latent cells
      ``y, x = 0 .. t-1``, with ``a(u) = min(1, (u + ½) / r_lo, (t - u - ½) / r_hi)``, where
      ``r_lo`` / ``r_hi`` are the overlaps in latent cells with the previous / next tile start along
      that axis among all the tiles' starts (a term is dropped when its overlap is 0: at the frame's
      border, or past a row or column of skipped tiles). Where exactly two tiles overlap along an
      axis, by ``r`` cells, their two ramps sum to 1 there, so seams blend linearly; each factor is
      at least ``½ / r``, so every weight is ``> 0``.

    Args:
        tiles: the plan (:func:`plan_tiles`), all the same size.
        frame_hw: ``(H, W)`` of the working frame in pixels.
        factor: the VAE's spatial downsampling.
        kind: ``"uniform"`` or ``"linear"``.

    Returns:
        :class:`FusionWeights` ``(per_tile float32 (n, t, t), normaliser float32 (H/f, W/f))``; an
        empty plan gives ``per_tile`` of shape ``(0, 0, 0)`` and a zero normaliser.

    Raises:
        InputError: an unknown kind, tiles of different sizes, off the latent grid or outside the frame.
    """
    if kind not in FUSION_KINDS:
        raise InputError(f"fusion kind={kind!r} is not known; use one of {', '.join(FUSION_KINDS)}")
    f = _check_factor(factor)
    h, w = _check_frame_hw(frame_hw, f)
    tiles = tuple(tiles)
    size = _tile_side(tiles, f)
    t = size // f
    boxes = _latent_boxes(tiles, f, (h // f, w // f))
    per_tile = np.ones((len(tiles), t, t), dtype=np.float32)
    if kind == "linear" and tiles:
        ry = _ramp_widths([tl.y0 // f for tl in tiles], t)
        rx = _ramp_widths([tl.x0 // f for tl in tiles], t)
        for i, tl in enumerate(tiles):
            ay = _ramp(t, *ry[tl.y0 // f])
            ax = _ramp(t, *rx[tl.x0 // f])
            per_tile[i] = np.outer(ay, ax).astype(np.float32)
    normaliser = np.zeros((h // f, w // f), dtype=np.float32)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        normaliser[y0:y1, x0:x1] += per_tile[i]
    return FusionWeights(per_tile=per_tile, normaliser=normaliser)


def _tile_side(tiles: Sequence[Tile], factor: int) -> int:
    sizes = {tl.size for tl in tiles}
    if len(sizes) > 1:
        raise InputError(f"tiles of different sizes {sorted(sizes)}; one plan has one tile size")
    if not sizes:
        return 0  # no tile: the per-tile arrays are (0, ..., 0, 0)
    return _check_tile_size(sizes.pop(), factor)


def _latent_boxes(tiles: Sequence[Tile], factor: int, grid_hw: Tuple[int, int]) -> list:
    """Every tile's latent box, checked to lie on the grid and inside ``grid_hw`` (latent cells)."""
    boxes = []
    for tl in tiles:
        if tl.y0 < 0 or tl.x0 < 0:
            raise InputError(f"tile {tl.index} starts at a negative position ({tl.y0}, {tl.x0})")
        box = tl.latent_box(factor)
        if box[1] > grid_hw[0] or box[3] > grid_hw[1]:
            raise InputError(f"tile {tl.index} (latent box {box}) leaves the {grid_hw[0]}x{grid_hw[1]} "
                             f"latent frame; plan the tiles for this frame")
        boxes.append(box)
    return boxes


def _fuse_factor(tiles: Sequence[Tile], t: int) -> int:
    """The downsampling factor that makes tiles of ``tiles[0].size`` pixels ``t`` cells wide."""
    if not tiles:
        return 1
    size = tiles[0].size
    if t <= 0 or size % t:
        raise InputError(f"tile values {t} cells wide do not divide the tile size {size} pixels; give "
                         f"values at the latent resolution of the plan")
    return size // t


def fuse_boxes(
    values_shape: Tuple[int, ...],
    tiles: Sequence[Tile],
    frame_latent_hw: Tuple[int, int],
    weights_shape: Tuple[int, ...],
    normaliser_shape: Tuple[int, ...],
) -> list:
    """The checks of :func:`fuse` (shared with :func:`m3ddm_ray.sampling_tiles.fuse`): the tiles'
    latent boxes for tile values of ``values_shape`` ``(n_tiles, ..., t, t)``.

    The factor is ``tile size // t``.

    Returns:
        One half-open latent box ``(y0, y1, x0, x1)`` per tile.

    Raises:
        InputError: shapes that do not match the plan, tiles off the grid or outside the frame.
    """
    shape, w_shape, n_shape = tuple(values_shape), tuple(weights_shape), tuple(normaliser_shape)
    tiles = tuple(tiles)
    if len(shape) < 3 or shape[0] != len(tiles) or shape[-1] != shape[-2]:
        raise InputError(f"tile values of shape {tuple(shape)} must be (n_tiles={len(tiles)}, ..., t, t)")
    f = _fuse_factor(tiles, shape[-1])
    gh, gw = _check_frame_hw(frame_latent_hw, 1, "frame_latent_hw")
    if tuple(w_shape) != (len(tiles), shape[-2], shape[-1]) or tuple(n_shape) != (gh, gw):
        raise InputError(f"fusion weights of shapes {tuple(w_shape)} / {tuple(n_shape)} do not match "
                         f"{len(tiles)} tiles of {shape[-1]} cells on a {gh}x{gw} latent frame; compute "
                         f"them with fusion_weights for this plan")
    return _latent_boxes(tiles, f, (gh, gw))


def fuse(
    tile_values: np.ndarray,
    tiles: Sequence[Tile],
    frame_latent_hw: Tuple[int, int],
    weights: FusionWeights,
) -> np.ndarray:
    """Fuse per-tile latents into one frame latent: ``Σ_i w_i x_i / Σ_i w_i`` on every covered cell.

    Computed as ``r + Σ_i w_i (x_i - r) / Σ_i w_i`` with ``r`` the value of the first tile (in plan
    order) covering the cell (and ``r`` itself where the weighted sum of differences is 0): the same
    number mathematically, and ``r`` bit for bit wherever the covering tiles agree, so fusing the
    crops of one frame (``fuse(split(x))``) or a single tile returns the input's bits. Uncovered cells
    are 0. The factor is ``tile size // t``.

    Args:
        tile_values: ``(n_tiles, ..., t, t)`` floating array (any leading dims, e.g. ``(n, B, C, F, t, t)``).
        tiles: the plan, ``n_tiles`` tiles.
        frame_latent_hw: ``(h, w)`` of the frame's latent grid (cells).
        weights: :func:`fusion_weights` of the same plan and frame (or any pair
            ``(per_tile, normaliser)`` of those shapes).

    Returns:
        ``(..., h, w)`` array of the values' dtype (the weights are cast to it).

    Raises:
        InputError: shapes that do not match the plan, a non-floating dtype.
    """
    x = np.asarray(tile_values)
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"tile values have dtype {x.dtype}; fuse needs a floating dtype")
    per_tile, norm = (np.asarray(a) for a in weights)
    boxes = fuse_boxes(x.shape, tiles, frame_latent_hw, per_tile.shape, norm.shape)
    gh, gw = int(frame_latent_hw[0]), int(frame_latent_hw[1])
    per_tile, norm = per_tile.astype(x.dtype), norm.astype(x.dtype)
    ref = np.zeros(x.shape[1:-2] + (gh, gw), dtype=x.dtype)
    for i in reversed(range(len(boxes))):  # the first covering tile is written last
        y0, y1, x0, x1 = boxes[i]
        ref[..., y0:y1, x0:x1] = x[i]
    acc = np.zeros_like(ref)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        acc[..., y0:y1, x0:x1] += per_tile[i] * (x[i] - ref[..., y0:y1, x0:x1])
    safe = np.where(norm > 0, norm, np.ones_like(norm))  # acc and ref are 0 where norm is 0
    return np.where(acc != 0, ref + acc / safe, ref)


def split_boxes(frame_shape: Tuple[int, ...], tiles: Sequence[Tile], factor: int) -> Tuple[int, list]:
    """The checks of :func:`split` (shared with :func:`m3ddm_ray.sampling_tiles.split`).

    Args:
        frame_shape: shape ``(..., h, w)`` of the frame values.
        tiles: the plan.
        factor: pixels per cell of the frame values.

    Returns:
        ``(t, boxes)``: the tile side in cells and one half-open box ``(y0, y1, x0, x1)`` per tile.

    Raises:
        InputError: fewer than 2 dims, tiles of several sizes, off the grid or outside the frame.
    """
    f = _check_factor(factor)
    tiles = tuple(tiles)
    if len(frame_shape) < 2:
        raise InputError(f"frame values of shape {tuple(frame_shape)} must be (..., h, w)")
    t = _tile_side(tiles, f) // f
    return t, _latent_boxes(tiles, f, tuple(frame_shape[-2:]))


def split(frame_values: np.ndarray, tiles: Sequence[Tile], factor: int) -> np.ndarray:
    """Cut a frame latent into the tiles' latents (the inverse of :func:`fuse` on covered cells).

    Args:
        frame_values: ``(..., h, w)`` array on the frame's latent grid (``factor = 1`` for pixels).
        tiles: the plan.
        factor: pixels per latent cell of ``frame_values`` (the VAE's downsampling).

    Returns:
        ``(n_tiles, ..., T // factor, T // factor)`` copy, same dtype (``(0, ..., 0, 0)`` for an
        empty plan).

    Raises:
        InputError: a tile off the grid or outside the frame.
    """
    a = np.asarray(frame_values)
    t, boxes = split_boxes(a.shape, tiles, factor)
    out = np.empty((len(boxes),) + a.shape[:-2] + (t, t), dtype=a.dtype)
    for i, (y0, y1, x0, x1) in enumerate(boxes):
        out[i] = a[..., y0:y1, x0:x1]
    return out


def layout_skip(num_inference_steps: int, layout_strength: float) -> int:
    """Steps of the schedule left out when the tiles start from the re-noised layout (an img2img
    start): ``n - max(1, floor(strength · n + 1/2))``, so ``strength = 1`` leaves none out (the
    noisiest start) and any strength runs at least one step.

    Args:
        num_inference_steps: ``n >= 1``.
        layout_strength: in ``(0, 1]`` (:class:`TilingSettings`).

    Returns:
        The number of steps skipped, ``0 .. n - 1``.

    Raises:
        InputError: ``n < 1`` or a strength outside ``(0, 1]``.
    """
    n = num_inference_steps
    if not _is_int(n) or n < 1:
        raise InputError(f"num_inference_steps={n!r} must be a positive integer")
    ls = layout_strength
    if isinstance(ls, bool) or not isinstance(ls, numbers.Real) or not 0.0 < ls <= 1.0:
        raise InputError(f"tiling.layout_strength={ls!r} must be a number in (0, 1]")
    return int(n - max(1, math.floor(ls * n + 0.5)))


def tile_cuts(tiles: Sequence[Tile], frame_hw: Tuple[int, int]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The rows and columns where a tile edge lies inside the frame (the places a seam can show).

    Args:
        tiles: a plan (pixels).
        frame_hw: ``(H, W)`` of the frame in pixels.

    Returns:
        ``(rows, cols)``: sorted distinct ``y0`` / ``y0 + size`` (``x0`` / ``x0 + size``) of the
        tiles strictly between 0 and ``H`` (``W``); a boundary at ``c`` lies between pixels ``c - 1``
        and ``c`` (:func:`m3ddm_ray.quality.tile_seam_ratio`).
    """
    h, w = (int(v) for v in frame_hw)
    ys = sorted({e for t in tiles for e in (t.y0, t.y0 + t.size) if 0 < e < h})
    xs = sorted({e for t in tiles for e in (t.x0, t.x0 + t.size) if 0 < e < w})
    return tuple(ys), tuple(xs)


# --------------------------------------------------------------------------------------------------
# Groups
# --------------------------------------------------------------------------------------------------


def _overlap(a: Tile, b: Tile) -> bool:
    ay0, ay1, ax0, ax1 = a.box
    by0, by1, bx0, bx1 = b.box
    return ay0 < by1 and by0 < ay1 and ax0 < bx1 and bx0 < ax1


def tile_groups(tiles: Sequence[Tile]) -> Tuple[Tuple[int, ...], ...]:
    """The connected components of the tiles' overlap graph (two tiles are joined when their boxes
    share a pixel): fusion couples only overlapping tiles, so tiles of different groups never
    exchange a value and each group can be denoised on its own (:func:`group_plan`). E.g. a 16:9
    source outpainted to 1:1 at twice the canvas or more: the middle rows of tiles lie wholly in the
    source band and are left out, and the top band and the bottom band are two groups.

    Args:
        tiles: a plan (:func:`plan_tiles`).

    Returns:
        The groups as ascending positions in ``tiles``, ordered by their first position; every
        position is in exactly one group (no tile: no group).
    """
    tiles = tuple(tiles)
    parent = list(range(len(tiles)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(tiles)):
        for j in range(i + 1, len(tiles)):
            if _overlap(tiles[i], tiles[j]):
                a, b = root(i), root(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(tiles)):
        groups.setdefault(root(i), []).append(i)
    return tuple(tuple(g) for _, g in sorted(groups.items()))


def _positions(positions: Sequence[int], tiles: Tuple[Tile, ...], what: str) -> list[int]:
    """``positions`` as ints, checked non-empty and inside the plan of ``tiles`` (InputError naming ``what``)."""
    out = [int(i) for i in positions]
    if not out or any(not 0 <= i < len(tiles) for i in out):
        raise InputError(f"tile {what} {out!r} must be non-empty positions in the plan of {len(tiles)} tiles")
    return out


def group_plan(
    tiles: Sequence[Tile], weights: FusionWeights, group: Sequence[int], factor: int
) -> Tuple[Tuple[int, int, int, int], Tuple[Tile, ...], FusionWeights]:
    """One tile group as a plan of its own, on the latent box that covers its tiles.

    Args:
        tiles: the whole plan (pixels of the working frame).
        weights: :func:`fusion_weights` of the whole plan (a tile's ramps depend on all the plan's
            starts, so the group keeps the whole plan's weights, not its own).
        group: positions in ``tiles`` (one of :func:`tile_groups`).
        factor: the VAE's spatial downsampling.

    Returns:
        ``(box, group_tiles, group_weights)``: ``box`` the half-open latent box ``(y0, y1, x0, x1)``
        covering the group's tiles; ``group_tiles`` the group's tiles moved into the box (pixels,
        renumbered ``0 ..``, in plan order); ``group_weights`` their rows of ``per_tile`` and the
        box's crop of ``normaliser`` (equal to the group's own sum: no other tile covers its cells).

    Raises:
        InputError: an empty group, or a position outside the plan.
    """
    f = _check_factor(factor)
    tiles = tuple(tiles)
    group = _positions(group, tiles, "group")
    boxes = [tiles[i].latent_box(f) for i in group]
    box = (min(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes), max(b[3] for b in boxes))
    moved = tuple(Tile(index=k, y0=tiles[i].y0 - box[0] * f, x0=tiles[i].x0 - box[2] * f, size=tiles[i].size)
                  for k, i in enumerate(group))
    per_tile, norm = (np.asarray(a) for a in weights)
    return box, moved, FusionWeights(per_tile=per_tile[group].copy(),
                                     normaliser=norm[box[0]:box[1], box[2]:box[3]].copy())


def _boxes_meet(a: Tuple[int, int, int, int], b: Tuple[int, int, int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def work_units(tiles: Sequence[Tile], factor: int) -> Tuple[Tuple[Tuple[int, ...], Tuple[int, int, int, int]], ...]:
    """The units of work of a plan: its tile groups (:func:`tile_groups`), merged while two latent
    boxes meet, so that every latent cell lies in at most one unit's box (an L-shaped group's box can
    reach into another's; those two then run as one unit). Each unit can be encoded, denoised and
    decoded on its own box, and its box's pixels pasted onto the frame without touching another's.
    E.g. a 16:9 source outpainted to 1:1 at twice the canvas: the source band spans the width, the
    middle row of tiles lies wholly in it, and the top and the bottom band are two units.

    Args:
        tiles: a plan (:func:`plan_tiles`).
        factor: the VAE's spatial downsampling.

    Returns:
        ``((positions, box), ...)``: ascending positions in ``tiles`` and the half-open latent box
        ``(y0, y1, x0, x1)`` covering them; units ordered by their first position, boxes pairwise
        disjoint, every position in exactly one unit (no tile: no unit).

    Raises:
        InputError: a tile off the latent grid of ``factor``.
    """
    f = _check_factor(factor)
    tiles = tuple(tiles)
    units = []
    for g in tile_groups(tiles):
        boxes = [tiles[i].latent_box(f) for i in g]
        units.append((list(g), (min(b[0] for b in boxes), max(b[1] for b in boxes),
                                min(b[2] for b in boxes), max(b[3] for b in boxes))))
    merged = True
    while merged:
        merged = False
        for i in range(len(units)):
            for j in range(i + 1, len(units)):
                (gi, bi), (gj, bj) = units[i], units[j]
                if _boxes_meet(bi, bj):
                    box = (min(bi[0], bj[0]), max(bi[1], bj[1]), min(bi[2], bj[2]), max(bi[3], bj[3]))
                    units[i] = (sorted(gi + gj), box)
                    del units[j]
                    merged = True
                    break
            if merged:
                break
    units.sort(key=lambda u: u[0][0])
    return tuple((tuple(g), box) for g, box in units)


def unit_weights(tiles: Sequence[Tile], weights: FusionWeights, unit: Sequence[int],
                 factor: int) -> Tuple[Tuple[Tile, ...], FusionWeights]:
    """One unit's tiles (frame coordinates, plan order) and fusion weights on the whole frame's latent grid.

    Args:
        tiles: the whole plan.
        weights: :func:`fusion_weights` of the whole plan (the unit keeps its tiles' rows of
            ``per_tile``: a tile's ramps depend on all the plan's starts).
        unit: positions in ``tiles`` (one of :func:`work_units`).
        factor: the VAE's spatial downsampling.

    Returns:
        ``(unit_tiles, unit_weights)``: the unit's tiles renumbered ``0 ..``; ``per_tile`` their rows,
        ``normaliser`` the plan's on the cells the unit's tiles cover and 0 elsewhere (so the cells of
        other units count as uncovered: :func:`m3ddm_ray.sampling_tiles.sample_tiled_windows` keeps
        their clean latent).

    Raises:
        InputError: an empty unit, or a position outside the plan.
    """
    f = _check_factor(factor)
    tiles = tuple(tiles)
    unit = _positions(unit, tiles, "unit")
    per_tile, norm = (np.asarray(a) for a in weights)
    covered = np.zeros(norm.shape, bool)
    for i in unit:
        y0, y1, x0, x1 = tiles[i].latent_box(f)
        covered[y0:y1, x0:x1] = True
    moved = tuple(replace(tiles[i], index=k) for k, i in enumerate(unit))
    return moved, FusionWeights(per_tile=per_tile[unit].copy(),
                                normaliser=np.where(covered, norm, 0).astype(norm.dtype))
