"""Aspect ratios, the square outpainting canvas, masks, crops and paste-back (pure numpy + OpenCV).

(About 680 lines on purpose: every rule of the official canvas geometry -- ratios, placement,
masks, canvases, crops, paste-back -- in one file, checked line by line against the golden data;
splitting it would spread one parity contract over several modules.)

This module reproduces the canvas geometry of the official M3DDM inference
(``src/inference.py``: ``get_max_target_size``, ``preprocess_frames_speed_square``, the paste-back in
``main()`` and ``merge_frame_to_video_with_ratio``) as recorded in the golden data
(``tests/data/golden/README.md`` §5.2, §5.3, §5.8, §5.10), and adds what a batch system needs on top:
ratio parsing, even-sized crops for H.264, a pass-through test and an optional output at the source
resolution.

Conventions used throughout:

* images are RGB, ``uint8``, channels last: a video is ``(T, H, W, 3)``, a canvas ``(T, S, S, 3)``;
* ``S`` (``canvas_size``) is the side of the square canvas in pixels (256 in the official code),
  always a positive multiple of 8 so that the VAE latent side is ``S // 8``;
* masks are ``uint8`` with **1 = generate** and **0 = known** (the official convention);
* boxes are half-open pixel ranges ``(y0, y1, x0, x1)``: rows ``y0 .. y1-1``, columns ``x0 .. x1-1``.

Nothing here imports torch; every function is deterministic.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import cv2
import numpy as np

from m3ddm_ray.errors import InputError
from m3ddm_ray.rules import canvas_size_problem

__all__ = [
    "Ratio",
    "RatioLike",
    "parse_ratio",
    "parse_ratios",
    "CanvasGeometry",
    "plan_canvas",
    "pixel_mask",
    "latent_mask",
    "make_canvases",
    "global_frame_ids",
    "crop_box",
    "is_passthrough",
    "paste_back",
    "SourceLayout",
    "source_resolution_layout",
    "compose_source_resolution",
]

_RATIO_FORM = "'W:H' with two positive integers, e.g. '9:16', '1:1' or '16:9'"
_RATIO_RE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


# --------------------------------------------------------------------------------------------------
# Ratios
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    """A target aspect ratio ``num:den`` = width : height, both positive integers.

    The ratio is kept exactly as written (``18:32`` is not reduced to ``9:16``) so that output
    names follow what the user asked for.

    Attributes:
        num: width part (> 0).
        den: height part (> 0).

    Raises:
        InputError: if ``num`` or ``den`` is not a positive integer.
    """

    num: int
    den: int

    def __post_init__(self) -> None:
        for name, v in (("num", self.num), ("den", self.den)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
                raise InputError(
                    f"Ratio {name}={v!r} is not a positive integer; a ratio is {_RATIO_FORM}"
                )
        object.__setattr__(self, "num", int(self.num))
        object.__setattr__(self, "den", int(self.den))

    @property
    def value(self) -> float:
        """Width / height as a float, computed like the official ``float(a) / float(b)``."""
        return self.num / self.den

    @property
    def slug(self) -> str:
        """File-name safe form, e.g. ``"9x16"``."""
        return f"{self.num}x{self.den}"

    def __str__(self) -> str:
        return f"{self.num}:{self.den}"


RatioLike = Union[str, Ratio]


def parse_ratio(s: RatioLike) -> Ratio:
    """Parse one aspect ratio.

    Args:
        s: a :class:`Ratio` (returned unchanged) or a string ``"W:H"`` of two positive integers
            (spaces around the numbers are allowed), e.g. ``"9:16"``.

    Returns:
        The :class:`Ratio`.

    Raises:
        InputError: for anything else (``""``, ``"abc"``, ``"0:1"``, ``"9:0"``, ``"-9:16"``,
            ``"1.5:1"``, ``"16x9"``, non-strings); the message quotes the bad value and the accepted
            form.
    """
    if isinstance(s, Ratio):
        return s
    if not isinstance(s, str):
        raise InputError(f"aspect ratio {s!r} is not a string; expected {_RATIO_FORM}")
    m = _RATIO_RE.match(s)
    if m is None:
        raise InputError(f"invalid aspect ratio {s!r}; expected {_RATIO_FORM}")
    num, den = int(m.group(1)), int(m.group(2))
    if num <= 0 or den <= 0:
        raise InputError(f"invalid aspect ratio {s!r}: both parts must be > 0; expected {_RATIO_FORM}")
    return Ratio(num, den)


def parse_ratios(s: Union[RatioLike, Sequence[RatioLike]]) -> list[Ratio]:
    """Parse a list of aspect ratios.

    Args:
        s: a comma-separated string (``"16:9,9:16"``, like the official ``--target_ratio_list``),
            a single :class:`Ratio`, or a sequence of strings / :class:`Ratio` (each string may itself
            be comma-separated).

    Returns:
        The ratios in input order, duplicates (same ``num`` and ``den``) removed, first kept.

    Raises:
        InputError: if the input is empty, an element is empty (``"16:9,"``) or any element is not a
            valid ratio (see :func:`parse_ratio`).
    """
    if isinstance(s, (str, Ratio)):
        items: list = [s]
    else:
        try:
            items = list(s)
        except TypeError:
            raise InputError(
                f"aspect ratios {s!r} are neither a string nor a list; expected e.g. '16:9,9:16'"
            ) from None
    parsed: list[Ratio] = []
    for item in items:
        if isinstance(item, str):
            parts = item.split(",")
            for part in parts:
                if not part.strip():
                    raise InputError(
                        f"empty aspect ratio in {item!r}; expected a comma-separated list of "
                        f"{_RATIO_FORM}"
                    )
                parsed.append(parse_ratio(part))
        else:
            parsed.append(parse_ratio(item))
    if not parsed:
        raise InputError(f"no aspect ratio given ({s!r}); expected at least one {_RATIO_FORM}")
    out: list[Ratio] = []
    for r in parsed:
        if r not in out:
            out.append(r)
    return out


# --------------------------------------------------------------------------------------------------
# Canvas
# --------------------------------------------------------------------------------------------------


def _check_pos_int(name: str, v, fix: str = "") -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
        raise InputError(f"{name}={v!r} must be a positive integer{fix}")
    return int(v)


@dataclass(frozen=True)
class CanvasGeometry:
    """Placement of a source frame on the square outpainting canvas (all pixel units).

    Attributes:
        canvas_size: ``S``, side of the square canvas (positive multiple of 8).
        source_hw: ``(H, W)`` of the input frames.
        ratios: the target ratios the canvas was planned for (``ratio`` is the first one).
        target_hw: ``(max_h, max_w)`` floats of official ``get_max_target_size``: the smallest
            size containing the source and every target ratio (README §5.2).
        max_dim: ``max(target_hw)`` (float).
        resized_hw: ``(rh, rw)``, size of the resized source frame on the canvas (ints, 1..S).
        pad: ``(top, left)`` = ``((S - rh) // 2, (S - rw) // 2)``.

    Derived: ``ratio``, ``known_box`` ``(y0, y1, x0, x1)`` half-open, ``latent_side(factor)``
    (``S // factor`` for a VAE that downsamples by ``factor``), ``fills_canvas`` (no padding at all).
    """

    canvas_size: int
    source_hw: Tuple[int, int]
    ratios: Tuple[Ratio, ...]
    target_hw: Tuple[float, float]
    max_dim: float
    resized_hw: Tuple[int, int]
    pad: Tuple[int, int]

    @property
    def ratio(self) -> Ratio:
        """The first (usually only) target ratio of the plan."""
        return self.ratios[0]

    @property
    def known_box(self) -> Tuple[int, int, int, int]:
        """Half-open box ``(y0, y1, x0, x1)`` of the known (pasted source) rectangle on the canvas."""
        top, left = self.pad
        rh, rw = self.resized_hw
        return (top, top + rh, left, left + rw)

    def latent_side(self, factor: int) -> int:
        """Latent side ``S // factor`` for a VAE that downsamples by ``factor`` (8 for SD's VAE;
        :func:`m3ddm_ray.sampling.vae_factor`).

        Raises:
            InputError: ``factor`` is not a positive integer dividing ``S``.
        """
        f = _check_pos_int("factor", factor)
        if self.canvas_size % f:
            raise InputError(f"canvas_size={self.canvas_size} is not a multiple of the VAE's downsampling "
                             f"factor {f}; choose a canvas size divisible by {f}")
        return self.canvas_size // f

    @property
    def fills_canvas(self) -> bool:
        """True when the resized frame covers the whole canvas (mask all zeros, nothing to inpaint)."""
        return self.resized_hw == (self.canvas_size, self.canvas_size)


def plan_canvas(
    height: int,
    width: int,
    ratio: Union[RatioLike, Sequence[RatioLike]],
    canvas_size: int = 256,
) -> CanvasGeometry:
    """Plan where a ``height × width`` frame goes on the ``S × S`` canvas for the target ratio(s).

    Follows official ``get_max_target_size`` + ``preprocess_frames_speed_square`` (README §5.2):
    with ``r = num / den`` and ``cur = W / H``, start from ``(max_h, max_w) = (H, W)``; per ratio, if
    ``cur < r`` then ``max_w = max(max_w, r * H)`` else ``max_h = max(max_h, W / r)``;
    ``max_dim = max(max_h, max_w)``; ``rw = int(S / max_dim * W)``, ``rh = int(S / max_dim * H)``
    (truncated, capped at ``S``); ``pad = ((S - rh) // 2, (S - rw) // 2)``. Several ratios give one
    canvas that fits all of them, as the official code does for a ratio list.

    Deviation: the official code uses a canvas of side ``max_dim`` when ``max_dim <= S`` (a float
    whenever padding is needed, which crashes in ``np.zeros``; a non-multiple of 8 otherwise). Here
    the canvas is always ``S × S``; the same formula then scales the frame *up* to the canvas.

    Args:
        height, width: source frame size in pixels (positive ints).
        ratio: one ratio (``"16:9"`` or :class:`Ratio`) or several (``"16:9,9:16"`` / a list).
        canvas_size: ``S``, a positive multiple of 8 (256 in the official model).

    Returns:
        The :class:`CanvasGeometry`.

    Raises:
        InputError: non-positive / non-integer sizes, ``canvas_size`` not a positive multiple of 8,
            an invalid ratio, or a ratio so extreme that the frame would shrink to 0 pixels.
    """
    h = _check_pos_int("height", height)
    w = _check_pos_int("width", width)
    s = _check_pos_int("canvas_size", canvas_size, " multiple of 8, e.g. 256")
    if canvas_size_problem(s):
        raise InputError(f"canvas_size={canvas_size!r} {canvas_size_problem(s)}")
    ratios = tuple(parse_ratios(ratio))

    cur = w / h
    max_h, max_w = h, w
    for r in ratios:
        rv = r.value
        if cur < rv:
            max_w = max(max_w, rv * h)
        else:
            max_h = max(max_h, w / rv)
    max_dim = max(max_h, max_w)
    rw = min(int(s / max_dim * w), s)
    rh = min(int(s / max_dim * h), s)
    if rw < 1 or rh < 1:
        raise InputError(
            f"ratio(s) {','.join(map(str, ratios))} are too extreme for a {h}x{w} (HxW) frame on a "
            f"{s}x{s} canvas: the frame would be {rh}x{rw} pixels; use a less extreme ratio or a "
            f"larger canvas_size"
        )
    return CanvasGeometry(
        canvas_size=s,
        source_hw=(h, w),
        ratios=ratios,
        target_hw=(float(max_h), float(max_w)),
        max_dim=float(max_dim),
        resized_hw=(rh, rw),
        pad=((s - rh) // 2, (s - rw) // 2),
    )


def pixel_mask(geom: CanvasGeometry) -> np.ndarray:
    """Pixel mask of the canvas.

    Args:
        geom: the canvas plan.

    Returns:
        ``uint8 (S, S)``: 1 = generate, 0 = known (the pasted rectangle ``geom.known_box``), like the
        official ``mask`` (``preproc.npz/mask``, README §3.2, §5.2).
    """
    s = geom.canvas_size
    m = np.ones((s, s), dtype=np.uint8)
    y0, y1, x0, x1 = geom.known_box
    m[y0:y1, x0:x1] = 0
    return m


def latent_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour downsampling of a pixel mask to the latent grid.

    ``out[i, j] = mask[factor*i, factor*j]`` (the official nearest resize; README §5.4, §5.10: a latent
    cell is "known" when its top-left pixel is known, even if most of it is not).

    Args:
        mask: ``(..., S, S)`` array (any dtype, usually ``uint8`` 0/1), ``S`` divisible by ``factor``.
        factor: spatial downsampling of the VAE (8 for SD's; :func:`m3ddm_ray.sampling.vae_factor`).

    Returns:
        ``(..., S // factor, S // factor)`` array of the same dtype.

    Raises:
        InputError: if ``mask`` has fewer than 2 dims or its last two dims are not multiples of
            ``factor``, or ``factor`` is not a positive integer.
    """
    f = _check_pos_int("factor", factor)
    mask = np.asarray(mask)
    if mask.ndim < 2 or mask.shape[-1] % f or mask.shape[-2] % f:
        raise InputError(
            f"mask of shape {mask.shape} cannot be sampled every {f} pixels; its last two dims must "
            f"be multiples of {f}"
        )
    return np.ascontiguousarray(mask[..., ::f, ::f])


def _check_video(name: str, frames, hw: Tuple[int, int] | None = None) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise InputError(
            f"{name} must be a uint8 array (T, H, W, 3) with T >= 1, got {frames.dtype} {frames.shape}"
        )
    if hw is not None and tuple(frames.shape[1:3]) != tuple(hw):
        raise InputError(
            f"{name} have size {frames.shape[1]}x{frames.shape[2]} (HxW) but {hw[0]}x{hw[1]} was "
            f"expected; plan the canvas for this size"
        )
    return frames


def make_canvases(frames: np.ndarray, geom: CanvasGeometry) -> Tuple[np.ndarray, np.ndarray]:
    """Build the masked and the inpainted canvases of every frame (official preprocessing).

    Per frame (official ``preprocess_frames_speed_square``, README §5.2): ``cv2.resize`` of the frame
    as **float32** HWC to ``(rw, rh)`` with the default ``INTER_LINEAR`` (no antialias); pasted at
    ``geom.pad`` into a zero ``uint8`` canvas (the float values are **truncated**); then
    ``cv2.inpaint(masked, mask, 5, cv2.INPAINT_TELEA)`` on the RGB canvas. When the frame fills the
    canvas there is nothing to inpaint and ``inpainted`` is a copy of ``masked``. Exact with
    OpenCV 4.11 (``preproc.npz`` ``masked`` / ``inpainted``).

    Args:
        frames: ``uint8 (T, H, W, 3)`` RGB, ``(H, W) == geom.source_hw``.
        geom: the canvas plan.

    Returns:
        ``(masked, inpainted)``, both ``uint8 (T, S, S, 3)``.

    Raises:
        InputError: wrong dtype, rank, channel count or frame size.
    """
    frames = _check_video("frames", frames, geom.source_hw)
    s = geom.canvas_size
    rh, rw = geom.resized_hw
    y0, y1, x0, x1 = geom.known_box
    mask = pixel_mask(geom)
    t = frames.shape[0]
    masked = np.zeros((t, s, s, 3), dtype=np.uint8)
    inpainted = np.empty((t, s, s, 3), dtype=np.uint8)
    for i in range(t):
        resized = cv2.resize(frames[i].astype(np.float32), (rw, rh))
        masked[i, y0:y1, x0:x1] = resized  # float -> uint8 assignment truncates, as in the official code
        if geom.fills_canvas:
            inpainted[i] = masked[i]
        else:
            inpainted[i] = cv2.inpaint(masked[i], mask, 5, cv2.INPAINT_TELEA)
    return masked, inpainted


def global_frame_ids(num_frames: int, n: int = 16) -> np.ndarray:
    """Indices of the global (whole-video context) frames.

    ``np.linspace(0, T - 1, n, dtype=int)`` (official ``main()``, README §5.3); with ``T < n`` some
    indices repeat.

    Args:
        num_frames: ``T >= 1``, number of frames of the video.
        n: number of global frames (16 for the released model).

    Returns:
        ``int64 (n,)``, non-decreasing, from 0 to ``T - 1``.

    Raises:
        InputError: if ``num_frames`` or ``n`` is not a positive integer.
    """
    t = _check_pos_int("num_frames", num_frames)
    k = _check_pos_int("n", n)
    return np.linspace(0, t - 1, k, dtype=int).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Output crops
# --------------------------------------------------------------------------------------------------


def _even_round(x: float) -> int:
    """Nearest even integer (halves go up)."""
    return 2 * int(math.floor(x / 2.0 + 0.5))


def _even_ceil(n: int) -> int:
    return n + (n % 2)


def crop_box(geom: CanvasGeometry, ratio: RatioLike | None = None) -> Tuple[int, int, int, int]:
    """Box of the square canvas that is kept for the output at ``ratio``.

    Choice (documented deviation from the official centre crop of ``merge_frame_to_video_with_ratio``,
    which uses ``int()`` sizes and may give odd sizes):

    * the long side of the ratio takes the full canvas (``S``: width for ``num >= den``, else height);
    * the short side is ``S / r`` (or ``S * r``) rounded to the nearest **even** integer (H.264 yuv420p
      needs even sizes), enlarged to the known rectangle's size rounded up to even if that is larger
      (it differs by at most a pixel from rounding), never more than ``S``;
    * the box is centred on the known rectangle (``start = known_start - (extent - known_extent) // 2``)
      and shifted back inside the canvas if needed, so it always contains the known rectangle. Because
      the official padding is centred, this equals the official centre crop whenever the official
      sizes are even (both golden cases).

    Args:
        geom: the canvas plan.
        ratio: target ratio; ``None`` means ``geom.ratio``. It must fit the plan: a ratio whose box
            cannot contain the known rectangle (e.g. ``9:16`` on a canvas planned only for ``16:9``
            from a wide source) is rejected.

    Returns:
        ``(y0, y1, x0, x1)`` half-open, with ``y1 - y0`` and ``x1 - x0`` even and ``>= 2``.

    Raises:
        InputError: invalid ratio, or the known rectangle does not fit in a box of that ratio.
    """
    r = geom.ratio if ratio is None else parse_ratio(ratio)
    s = geom.canvas_size
    rh, rw = geom.resized_hw
    top, left = geom.pad
    rv = r.value
    if r.num >= r.den:
        cw, exact_h = s, s / rv
        if rh > exact_h + 1:
            raise _ratio_not_planned(geom, r)
        ch = min(s, max(2, _even_round(exact_h), _even_ceil(rh)))
    else:
        ch, exact_w = s, s * rv
        if rw > exact_w + 1:
            raise _ratio_not_planned(geom, r)
        cw = min(s, max(2, _even_round(exact_w), _even_ceil(rw)))
    y0 = min(max(top - (ch - rh) // 2, 0), s - ch)
    x0 = min(max(left - (cw - rw) // 2, 0), s - cw)
    return (y0, y0 + ch, x0, x0 + cw)


def _ratio_not_planned(geom: CanvasGeometry, r: Ratio) -> InputError:
    rh, rw = geom.resized_hw
    planned = ",".join(map(str, geom.ratios))
    return InputError(
        f"ratio {r} does not fit the canvas planned for {planned}: the known {rh}x{rw} (HxW) "
        f"rectangle does not fit in a {r} box; plan the canvas with every output ratio, e.g. "
        f"plan_canvas(..., '{planned},{r}')"
    )


def is_passthrough(height: int, width: int, ratio: RatioLike) -> bool:
    """True when the source already has the target ratio, so no outpainting is needed.

    Both sides are first rounded down to even (what an H.264 yuv420p output would keep); the source
    passes when either side is within one pixel of the size the ratio implies from the other side
    (``|W_e - H_e * r| <= 1`` or ``|H_e - W_e / r| <= 1``). E.g. 1920×1080, 854×480 and 1280×720 are
    16:9; 64×64 is 1:1; 96×64 is not 16:9.

    Args:
        height, width: source size in pixels (positive ints).
        ratio: target ratio.

    Raises:
        InputError: invalid size or ratio.
    """
    h = _check_pos_int("height", height)
    w = _check_pos_int("width", width)
    r = parse_ratio(ratio)
    he, we = max(h - h % 2, 1), max(w - w % 2, 1)
    return abs(we - he * r.value) <= 1 or abs(he - we / r.value) <= 1


# --------------------------------------------------------------------------------------------------
# Paste-back and source-resolution output
# --------------------------------------------------------------------------------------------------


def paste_back(
    generated: np.ndarray,
    masked: np.ndarray,
    mask: np.ndarray,
    mode: str = "round",
) -> np.ndarray:
    """Put the known pixels back into generated canvases.

    Modes:

    * ``"round"`` (default): known pixels (``mask == 0``) are exactly the ``masked`` canvas values,
      generated pixels (``mask == 1``) are ``generated``.
    * ``"official"``: bit-exact official composite (README §5.8), computed in float32:
      ``m = (masked / 255 - 0.5) / 0.5``; ``out = ((m / 2 + 0.5) * 255 * (1 - mask) + generated * mask)``
      cast to ``uint8`` by truncation. The round trip turns 63 of the 256 levels into ``v - 1`` in the
      known region; this matches ``out_frames_T.npy`` exactly there.

    Args:
        generated: ``uint8 (T, S, S, 3)`` decoded frames.
        masked: ``uint8 (T, S, S, 3)`` masked canvases (:func:`make_canvases`).
        mask: ``(S, S)`` pixel mask, 1 = generate, 0 = known (any numeric dtype, values 0/1), or
            ``(T, S, S)``: one mask per frame (inpainting, extension).
        mode: ``"round"`` or ``"official"``.

    Returns:
        ``uint8 (T, S, S, 3)``.

    Raises:
        InputError: unknown mode, dtype/shape mismatch.
    """
    if mode not in ("round", "official"):
        raise InputError(f"paste_back mode={mode!r} is not supported; use 'round' or 'official'")
    generated = _check_video("generated frames", generated)
    masked = _check_video("masked canvases", masked)
    mask = np.asarray(mask)
    if generated.shape != masked.shape or mask.shape not in (generated.shape[1:3], generated.shape[:3]):
        raise InputError(
            f"paste_back shapes do not match: generated {generated.shape}, masked {masked.shape}, "
            f"mask {mask.shape}; expected (T, S, S, 3), (T, S, S, 3), (S, S) or (T, S, S)"
        )
    per_frame = mask.ndim == 3
    if mode == "round":
        keep = (mask == 0)[..., None] if per_frame else (mask == 0)[None, :, :, None]
        return np.where(keep, masked, generated).astype(np.uint8)
    m = mask.astype(np.float32)[..., None] if per_frame else mask.astype(np.float32)[None, :, :, None]
    norm = (masked.astype(np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)
    known = ((norm / np.float32(2.0)) + np.float32(0.5)) * np.float32(255.0) * (np.float32(1.0) - m)
    out = known + generated.astype(np.float32) * m
    return out.astype(np.uint8)


@dataclass(frozen=True)
class SourceLayout:
    """Layout of the source-resolution output (:func:`source_resolution_layout`).

    Attributes:
        box: ``(y0, y1, x0, x1)`` canvas crop (:func:`crop_box`) that is upscaled.
        out_hw: ``(H', W')`` output size in pixels, both even, ``>= (H, W)``.
        offset: ``(oy, ox)`` top-left of the exact source frame in the output.
        scale: output pixels per canvas pixel along the tight side (``H / rh`` or ``W / rw``).
    """

    box: Tuple[int, int, int, int]
    out_hw: Tuple[int, int]
    offset: Tuple[int, int]
    scale: float


def source_resolution_layout(geom: CanvasGeometry, ratio: RatioLike | None = None) -> SourceLayout:
    """Size and placement of the source-resolution output at ``ratio`` (no pixels involved).

    Not part of the official code (which only writes the ``S``-pixel canvas crop). Rules:

    1. ``box = crop_box(geom, ratio)``; the *tight* side is the one where the box is closest to the
       known rectangle (``box_h / rh <= box_w / rw`` → height); the scale is ``s = H / rh`` for the
       height, else ``s = W / rw``.
    2. Output size: tight side = ``box_side * s`` rounded to even and at least the source side
       rounded up to even; other side = tight side × ratio (or ÷ ratio) rounded to even and at least
       the source side rounded up to even. Both sides are even; the aspect equals the ratio to within
       about one pixel of rounding (more only when the source side forces a minimum).
    3. The source frame goes at ``round((known_start - box_start) * s)``, clamped inside the output.

    Args:
        geom: the canvas plan.
        ratio: target ratio (``None`` = ``geom.ratio``).

    Returns:
        :class:`SourceLayout`.

    Raises:
        InputError: invalid ratio or a ratio that does not fit the plan (see :func:`crop_box`).
    """
    r = geom.ratio if ratio is None else parse_ratio(ratio)
    box = crop_box(geom, r)
    y0, y1, x0, x1 = box
    ch, cw = y1 - y0, x1 - x0
    h, w = geom.source_hw
    rh, rw = geom.resized_hw
    top, left = geom.pad
    min_h, min_w = _even_ceil(h), _even_ceil(w)
    if ch * rw <= cw * rh:  # height is the tight side
        scale = h / rh
        out_h = max(min_h, _even_round(ch * scale))
        out_w = max(min_w, _even_round(out_h * r.value))
    else:
        scale = w / rw
        out_w = max(min_w, _even_round(cw * scale))
        out_h = max(min_h, _even_round(out_w / r.value))
    oy = min(max(int(round((top - y0) * scale)), 0), out_h - h)
    ox = min(max(int(round((left - x0) * scale)), 0), out_w - w)
    return SourceLayout(box=box, out_hw=(out_h, out_w), offset=(oy, ox), scale=float(scale))


def compose_source_resolution(
    canvas_frames: np.ndarray,
    source_frames: np.ndarray,
    geom: CanvasGeometry,
    ratio: RatioLike | None = None,
    interpolation: str = "cubic",
) -> np.ndarray:
    """Output at ``ratio`` whose known region keeps the source frames' full resolution.

    Not part of the official code. Layout from :func:`source_resolution_layout`; the canvas crop is
    upscaled to the output size with OpenCV (``INTER_CUBIC`` or ``INTER_LANCZOS4`` on uint8, i.e.
    rounded and clipped to 0..255), then every source frame is pasted unchanged at the layout offset.

    Args:
        canvas_frames: ``uint8 (T, S, S, 3)`` outpainted canvases.
        source_frames: ``uint8 (T, H, W, 3)`` original frames, ``(H, W) == geom.source_hw``.
        geom: the canvas plan.
        ratio: target ratio (``None`` = ``geom.ratio``).
        interpolation: ``"cubic"`` or ``"lanczos"``.

    Returns:
        ``uint8 (T, H', W', 3)`` with ``(H', W') = layout.out_hw`` (even, ``>= (H, W)``); the source
        pixels are exact at ``layout.offset``.

    Raises:
        InputError: bad shapes, frame counts that differ, unknown interpolation, or a ratio that does
            not fit the plan (see :func:`crop_box`).
    """
    interp = {"cubic": cv2.INTER_CUBIC, "lanczos": cv2.INTER_LANCZOS4}.get(interpolation)
    if interp is None:
        raise InputError(f"interpolation={interpolation!r} is not supported; use 'cubic' or 'lanczos'")
    s = geom.canvas_size
    canvas_frames = _check_video("canvas frames", canvas_frames, (s, s))
    source_frames = _check_video("source frames", source_frames, geom.source_hw)
    if canvas_frames.shape[0] != source_frames.shape[0]:
        raise InputError(
            f"{canvas_frames.shape[0]} canvas frames but {source_frames.shape[0]} source frames; "
            f"give one canvas per source frame"
        )
    lay = source_resolution_layout(geom, ratio)
    y0, y1, x0, x1 = lay.box
    out_h, out_w = lay.out_hw
    oy, ox = lay.offset
    h, w = geom.source_hw
    t = canvas_frames.shape[0]
    out = np.empty((t, out_h, out_w, 3), dtype=np.uint8)
    for i in range(t):
        crop = np.ascontiguousarray(canvas_frames[i, y0:y1, x0:x1])
        out[i] = cv2.resize(crop, (out_w, out_h), interpolation=interp)
        out[i, oy:oy + h, ox:ox + w] = source_frames[i]
    return out
