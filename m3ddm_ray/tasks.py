"""Video inpainting and video extension (prediction) through the outpainting model, one process, no Ray.

M3DDM is a masked 3D diffusion model: its mask channel can mark any region of any frame, so the
same UNet, sampler and window plan do two more tasks once the mask is per frame
(:attr:`m3ddm_ray.pipeline.PreparedClip.frame_masks`):

* **inpaint** (:func:`prepare_inpaint` / :func:`finalize_inpaint`): a per-frame pixel mask marks
  what to remove; the output has the source size and frame count, and every pixel outside the mask
  is the source pixel exactly.
* **extend** (:func:`prepare_extend` / :func:`finalize_extend`): ``n`` fully masked frames after
  (``forward``) or before (``backward``) the ``T`` known ones; the output has ``T + n`` frames, the
  known ones exactly the source frames.

Canvas (both tasks): the frame keeps its aspect ratio on the ``S x S`` canvas, placed as for an
outpainting to ``1:1`` (:func:`geometry.plan_canvas` with ``"1:1"``: the long side fills the canvas,
centred). The padding outside the frame is **generated** (mask 1, the outpainting border of that
plan): the model was trained to fill such borders, never to read black bars as known content, and
the padding is cropped away at the end. Only the frame's rectangle goes back to the output.

Steps, as for outpainting (:mod:`m3ddm_ray.pipeline`): ``prepare_*`` (CPU) -> :func:`generate`
(``Outpainter.run_coarse`` + ``run_fine``: the same windows, guides and global frames) ->
``finalize_*`` (CPU). The CLI commands ``m3ddm-ray inpaint`` / ``extend`` chain them
(:func:`run_inpaint`, :func:`run_extend`); docs/tasks.md describes both.
"""

from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np

from . import geometry
from .errors import InputError
from .masks.frames import canvas_masks, dilate_masks, fit_mask_frames, fit_masks
from .pipeline import OutpaintSettings, Outpainter, PreparedClip, generated_array, make_global_frames
from .plan import plan_windows
from .rules import EXTEND_DIRECTIONS

__all__ = ["DIRECTIONS", "inpaint_masks", "inpaint_mask_frames", "inpaint_canvases", "hidden_frames",
           "dilated_name", "extend_new_canvases", "prepare_inpaint", "finalize_inpaint", "prepare_extend",
           "finalize_extend", "extend_known_span", "extend_frames", "extend_audio_window", "even_frames",
           "generate", "run_inpaint", "run_extend"]

#: Directions of :func:`prepare_extend` (the rule lives in :mod:`m3ddm_ray.rules`).
DIRECTIONS = EXTEND_DIRECTIONS

#: The canvas plan of both tasks: the frame fitted into the square, keeping its aspect ratio.
_SQUARE = "1:1"


def _frames(frames) -> np.ndarray:
    from .quality import check_frames

    return check_frames(frames, "frames")


def _fps(fps) -> float:
    if not fps or not np.isfinite(fps) or fps <= 0:
        raise InputError(f"fps={fps!r} must be a positive number of frames per second")
    return float(fps)


def _strides(settings: OutpaintSettings, num_frames: int, fps: float) -> tuple[int, ...]:
    return tuple(settings.strides) if settings.strides else tuple(plan_windows(num_frames, fps).strides)


def _place(frames: np.ndarray, geom: geometry.CanvasGeometry) -> np.ndarray:
    """uint8 ``(T, S, S, 3)``: each frame resized into ``geom.known_box`` of a zero canvas, exactly as
    :func:`geometry.make_canvases` does (float32 ``cv2.resize``, ``INTER_LINEAR``, truncating cast),
    without its TELEA fill (the tasks fill their own masks)."""
    s = geom.canvas_size
    rh, rw = geom.resized_hw
    y0, y1, x0, x1 = geom.known_box
    out = np.zeros((len(frames), s, s, 3), np.uint8)
    for i, f in enumerate(frames):
        out[i, y0:y1, x0:x1] = cv2.resize(f.astype(np.float32), (rw, rh))
    return out


def _fill(masked: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """OpenCV TELEA fill (radius 5, as the outpainting canvases) of every frame's masked pixels; a
    frame without masked pixels is copied."""
    out = masked.copy()
    for i in range(len(masked)):
        if masks[i].any():
            out[i] = cv2.inpaint(masked[i], masks[i], 5, cv2.INPAINT_TELEA)
    return out


def _to_source(canvases: np.ndarray, geom: geometry.CanvasGeometry) -> np.ndarray:
    """The frame rectangle of each canvas upscaled to the source size (OpenCV ``INTER_CUBIC``, as
    :func:`geometry.compose_source_resolution`): uint8 ``(N, H, W, 3)``."""
    y0, y1, x0, x1 = geom.known_box
    h, w = geom.source_hw
    return np.stack([cv2.resize(np.ascontiguousarray(c[y0:y1, x0:x1]), (w, h), interpolation=cv2.INTER_CUBIC)
                     for c in canvases])


# --------------------------------------------------------------------------- inpaint
def inpaint_masks(masks: np.ndarray, num_frames: int, hw: tuple[int, int], dilate: int = 0,
                  name: str = "masks") -> np.ndarray:
    """The source-resolution masks of an inpainting: :func:`masks.fit_masks` (count, size, empty,
    all-ones), then :func:`masks.dilate_masks` by ``dilate`` pixels, checked again.

    Args:
        masks: uint8 ``(T', H', W')`` 0/1 from :func:`m3ddm_ray.video.read_masks` (``T'`` = 1 or T).
        num_frames: ``T``; hw: ``(H, W)`` of the video in pixels; dilate: pixels (>= 0).
        name: the mask source in error messages.

    Returns:
        uint8 ``(T, H, W)`` 0/1, 1 = remove / generate.

    Raises:
        InputError: as :func:`masks.fit_masks` (also when the dilation leaves no pixel known).
    """
    fitted = fit_masks(masks, num_frames, hw, name)
    if dilate:
        fitted = fit_masks(dilate_masks(fitted, dilate), num_frames, hw, dilated_name(name, dilate))
    return fitted


def dilated_name(name: str, dilate: int) -> str:
    """How the masks are named in errors once dilated."""
    return f"{name} dilated by {dilate} px"


def inpaint_mask_frames(masks: np.ndarray, hw: tuple[int, int], dilate: int = 0, name: str = "masks") -> np.ndarray:
    """:func:`inpaint_masks` of a run of masks (a range of a long video's, or its single mask): the
    size rule and the dilation, not the count or usability checks (the caller gathers those over
    the whole video, :class:`m3ddm_ray.masks.MaskUsage`). Per frame, so a range of the result is
    the result of the range.

    Args:
        masks: uint8 ``(N, H', W')`` 0/1; hw: ``(H, W)`` of the video; dilate: pixels (>= 0).

    Returns:
        uint8 ``(N, H, W)`` 0/1.

    Raises:
        InputError: masks of another aspect ratio (named ``name``).
    """
    fitted = fit_mask_frames(masks, hw, name)
    return dilate_masks(fitted, dilate) if dilate else fitted


def inpaint_canvases(frames: np.ndarray, masks: np.ndarray,
                     geom: geometry.CanvasGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The canvases of inpainting frames, frame by frame (so a span's are the whole clip's rows):
    ``(masked, inpainted, canvas masks)`` -- see :func:`prepare_inpaint`.

    Args:
        frames: uint8 ``(N, H, W, 3)``; masks: uint8 ``(N, H, W)`` 0/1 fitted (:func:`inpaint_masks`).

    Returns:
        uint8 ``(N, S, S, 3)``, ``(N, S, S, 3)``, ``(N, S, S)``.
    """
    cm = canvas_masks(masks, geom)
    masked = _place(frames, geom) * (1 - cm)[..., None]
    return masked, _fill(masked, cm), cm


def hidden_frames(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """uint8 ``(N, H, W, 3)``: ``frames`` with their fitted masks' pixels set to 0 (an inpainting's
    global frames do not show the object to remove)."""
    return frames * (1 - masks)[..., None]


def prepare_inpaint(frames: np.ndarray, masks: np.ndarray, fps: float,
                    settings: OutpaintSettings = OutpaintSettings(), name: str = "masks") -> PreparedClip:
    """CPU preparation of an inpainting: canvases, per-frame canvas masks, global frames, plan.

    * canvas: the frame fitted on the square keeping its aspect ratio (module docstring); the canvas
      mask of frame ``t`` is :func:`masks.canvas_masks`: the source mask resized conservatively into
      the frame's rectangle and grown to whole 8x8 latent cells, plus the padding (generated);
    * ``masked``: the placed frame with the canvas mask's pixels set to 0; ``inpainted``: those pixels
      filled by OpenCV TELEA (radius 5), the diffusion start, as outpainting does for its border;
    * global frames: the source frames with the source mask's pixels set to 0, squashed to ``S x S``
      (:func:`pipeline.make_global_frames`): the object to remove is not shown as context, as the
      training masks a global frame inside the clip with its frame's mask
      (:func:`masks.mask_global_frames`);
    * window plan: the outpainting plan of ``T`` frames (settings' strides or the official rule).

    Args:
        frames: uint8 ``(T, H, W, 3)`` RGB source frames.
        masks: uint8 ``(T, H, W)`` 0/1, 1 = remove (:func:`inpaint_masks`; a single mask or masks of
            the same aspect ratio are fitted here too).
        fps: source frame rate (> 0).
        name: the mask source in error messages.

    Returns:
        :class:`PreparedClip` with ``frame_masks`` uint8 ``(T, S, S)``, ``mask`` their union and
        ``ratio`` 1:1 (the canvas plan).

    Raises:
        InputError: bad frames, fps or masks (count, size, empty, all ones).
    """
    frames = _frames(frames)
    fps = _fps(fps)
    t, h, w = frames.shape[:3]
    masks = fit_masks(masks, t, (h, w), name)
    geom = geometry.plan_canvas(h, w, _SQUARE, settings.canvas_size)
    masked, inpainted, cm = inpaint_canvases(frames, masks, geom)
    gids = geometry.global_frame_ids(t, settings.num_global_frames)
    gf = make_global_frames(hidden_frames(frames[gids], masks[gids]), list(range(len(gids))), settings.canvas_size)
    return PreparedClip(geom.ratio, fps, geom, masked, inpainted, cm.max(axis=0), gf,
                        _strides(settings, t, fps), frame_masks=cm)


def finalize_inpaint(clip: PreparedClip, generated: np.ndarray, source_frames: np.ndarray, masks: np.ndarray,
                     settings: OutpaintSettings = OutpaintSettings(),
                     frames: Sequence[int] | None = None) -> np.ndarray:
    """Inpainted frames at the source size: the source wherever ``masks`` is 0, exactly.

    The generated canvas is composited with the known canvas pixels (``geometry.paste_back`` with
    the per-frame canvas masks), its frame rectangle upscaled to ``(H, W)`` (``INTER_CUBIC``), and
    only the pixels where the source mask is 1 are taken from it.

    Args:
        clip: from :func:`prepare_inpaint` (or a segment slice of it).
        generated: uint8 ``(N, S, S, 3)`` decoded canvases of ``frames``.
        source_frames: uint8 ``(N, H, W, 3)``; masks: uint8 ``(N, H, W)`` 0/1, the ones given to
            :func:`prepare_inpaint` (rows of ``frames``).
        frames: video frame indices of the rows (default: all ``T``).

    Returns:
        uint8 ``(N, H, W, 3)``.

    Raises:
        InputError: shapes that do not match.
    """
    rows = list(range(clip.num_frames)) if frames is None else list(frames)
    source_frames, masks = np.asarray(source_frames), np.asarray(masks)
    if source_frames.shape[:3] != (len(rows),) + tuple(clip.geom.source_hw) or masks.shape != source_frames.shape[:3]:
        raise InputError(f"finalize_inpaint: source frames {source_frames.shape} and masks {masks.shape} must be "
                         f"(N, H, W, 3) and (N, H, W) with N = {len(rows)} and (H, W) = {clip.geom.source_hw}")
    composite = geometry.paste_back(generated, clip.masked[clip.rows(rows)], clip.masks_of(rows),
                                    mode=settings.paste_mode)
    up = _to_source(composite, clip.geom)
    return np.where(masks[..., None] == 1, up, source_frames).astype(np.uint8)


# --------------------------------------------------------------------------- extend
def _check_extend(n, direction) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"frames={n!r}: the number of new frames must be an integer >= 1")
    if direction not in DIRECTIONS:
        raise InputError(f"direction={direction!r}; use 'forward' (after the video) or 'backward' (before it)")
    return int(n)


def prepare_extend(frames: np.ndarray, fps: float, n: int, direction: str = "forward",
                   settings: OutpaintSettings = OutpaintSettings()) -> PreparedClip:
    """CPU preparation of a video extension by ``n`` frames: ``T + n`` canvases, masks, plan.

    Working order: ``forward`` keeps time as it is and appends ``n`` new frames; ``backward``
    reverses the known frames first, extends that forward and :func:`finalize_extend` reverses the
    result back (the model and plan have no notion of direction beyond the fps condition, and the
    known frames then come first in the plan, so the first windows start from known context).

    * known frames (rows ``0..T-1``): the outpainting canvases of the ``1:1`` plan
      (:func:`geometry.make_canvases`: frame pasted, padding TELEA-filled) and its mask (0 inside
      the frame, 1 on the padding);
    * new frames (rows ``T..T+n-1``): mask all 1, ``masked`` all 0 and, as the diffusion start,
      the last known frame's ``inpainted`` canvas (a last-frame copy, the simplest prediction);
    * window plan: :func:`plan_windows` over ``T + n`` frames (settings' strides or the official
      rule for ``T + n``). Each pass starts at row 0 (known) and consecutive windows share a frame,
      so every window holds known frames or a guide latent chained from them;
    * global frames: :func:`geometry.global_frame_ids` over the ``T`` known frames only.

    Guides: a known frame conditions the windows through its masked-video latent (its VAE encode)
    with latent mask 0 inside the frame, in the two conditional branches of the guidance. That is
    the channel the outpainting known region uses. The official guide frames
    (:func:`sampling.build_condition`) differ in two ways: their latent is a *stored final* latent of
    an earlier window, and it replaces the condition in all three branches (mask 0 also in the
    unconditional one). Both still apply here: a known frame's own final latent is stored and
    becomes the guide of the later windows that contain it, exactly as in outpainting.

    Args:
        frames: uint8 ``(T, H, W, 3)`` RGB known frames, in time order.
        fps: source frame rate (> 0); the output keeps it.
        n: number of new frames (>= 1).
        direction: ``"forward"`` or ``"backward"``.

    Returns:
        :class:`PreparedClip` of ``T + n`` frames with ``frame_masks`` uint8 ``(T + n, S, S)``.

    Raises:
        InputError: bad frames, fps, ``n`` or direction.
    """
    frames = _frames(frames)
    fps = _fps(fps)
    n = _check_extend(n, direction)
    if direction == "backward":
        frames = frames[::-1]
    t, h, w = frames.shape[:3]
    s = settings.canvas_size
    geom = geometry.plan_canvas(h, w, _SQUARE, s)
    known_masked, known_inpainted = geometry.make_canvases(frames, geom)
    new_m, new_i, new_fm = extend_new_canvases(n, known_inpainted[-1], geom)
    masked = np.concatenate([known_masked, new_m])
    inpainted = np.concatenate([known_inpainted, new_i])
    fm = np.concatenate([np.repeat(geometry.pixel_mask(geom)[None], t, axis=0), new_fm])
    gids = geometry.global_frame_ids(t, settings.num_global_frames)
    gf = make_global_frames(frames, gids, s)
    return PreparedClip(geom.ratio, fps, geom, masked, inpainted, fm.max(axis=0), gf,
                        _strides(settings, t + n, fps), frame_masks=fm)


def extend_new_canvases(n: int, last_inpainted: np.ndarray,
                        geom: geometry.CanvasGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The canvases of ``n`` new frames of an extension (:func:`prepare_extend`): ``masked`` all 0,
    ``inpainted`` the last known frame's inpainted canvas ``last_inpainted`` (uint8 ``(S, S, 3)``,
    working order), masks all 1. Returns uint8 ``(n, S, S, 3)``, ``(n, S, S, 3)``, ``(n, S, S)``."""
    s = geom.canvas_size
    return (np.zeros((n, s, s, 3), np.uint8), np.repeat(np.asarray(last_inpainted, np.uint8)[None], n, axis=0),
            np.ones((n, s, s), np.uint8))


def extend_known_span(rows: Sequence[int], known: int, direction: str = "forward") -> tuple[int, int]:
    """The source frames ``[lo, hi)`` (time order) that the working rows ``rows`` of an extension
    show: rows below ``known`` are known frames (``forward``: row ``r`` is source frame ``r``;
    ``backward``: ``known - 1 - r``), the others are new. ``(0, 0)`` when ``rows`` holds no known
    frame. ``rows``: ascending, contiguous (a whole clip, or a segment's ``output_frames``)."""
    k = [int(r) for r in rows if int(r) < known]
    if not k:
        return 0, 0
    lo, hi = k[0], k[-1] + 1
    return (known - hi, known - lo) if direction == "backward" else (lo, hi)


def extend_frames(clip: PreparedClip, generated: np.ndarray, source_span: np.ndarray, rows: Sequence[int],
                  known: int, direction: str = "forward") -> np.ndarray:
    """Output frames of the working rows ``rows`` of an extension, in time order, at the source size.

    Known rows are the source frames exactly; new rows are the generated canvases' frame
    rectangles upscaled to ``(H, W)`` (``INTER_CUBIC``). ``backward`` reverses the rows back into
    time order (:func:`prepare_extend` works on the reversed video).

    Args:
        clip: from :func:`prepare_extend` (or a segment slice of it).
        generated: uint8 ``(len(rows), S, S, 3)`` decoded canvases of ``rows`` (the known rows' are
            not used).
        source_span: uint8 ``(K, H, W, 3)`` the source frames :func:`extend_known_span` names, in
            time order (``K`` = rows below ``known``).
        rows: working rows, ascending and contiguous.
        known: ``T``, the number of known frames.

    Returns:
        uint8 ``(len(rows), H, W, 3)``.

    Raises:
        InputError: shapes that do not match, a bad direction.
    """
    rows = [int(r) for r in rows]
    _check_extend(max(clip.num_frames - known, 1), direction)
    k = sum(r < known for r in rows)
    source_span = np.asarray(source_span)
    if len(generated) != len(rows) or len(source_span) != k or (
            k and source_span.shape[1:3] != tuple(clip.geom.source_hw)):
        raise InputError(f"extend_frames: {len(generated)} generated canvases and source frames {source_span.shape} "
                         f"for {len(rows)} rows ({k} known) at {clip.geom.source_hw}")
    src = source_span[::-1] if direction == "backward" else source_span
    parts = [np.asarray(src, np.uint8).reshape((k,) + tuple(clip.geom.source_hw) + (3,))]
    if k < len(rows):
        parts.append(_to_source(np.asarray(generated)[k:], clip.geom))
    out = np.concatenate(parts)
    return np.ascontiguousarray(out[::-1]) if direction == "backward" else out


def finalize_extend(clip: PreparedClip, generated: np.ndarray, source_frames: np.ndarray,
                    direction: str = "forward") -> np.ndarray:
    """The extended video at the source size: ``T + n`` frames, the known ones exactly the source.

    New frames are the generated canvases' frame rectangles upscaled to ``(H, W)`` (``INTER_CUBIC``).
    ``forward``: ``[source frames, new frames]``; ``backward``: ``[new frames, source frames]``, new
    frames in time order (the working order of :func:`prepare_extend` reversed back).

    Args:
        clip: from :func:`prepare_extend`.
        generated: uint8 ``(T + n, S, S, 3)`` decoded canvases (only rows ``T..`` are used).
        source_frames: uint8 ``(T, H, W, 3)`` the known frames in time order.
        direction: as given to :func:`prepare_extend`.

    Returns:
        uint8 ``(T + n, H, W, 3)``.

    Raises:
        InputError: shapes that do not match, a bad direction.
    """
    source_frames = _frames(source_frames)
    t = source_frames.shape[0]
    total = clip.num_frames
    _check_extend(max(total - t, 0), direction)
    if generated.shape[0] != total or source_frames.shape[1:3] != tuple(clip.geom.source_hw):
        raise InputError(f"finalize_extend: {generated.shape[0]} generated canvases and source frames "
                         f"{source_frames.shape} for a clip of {total} frames at {clip.geom.source_hw}")
    return extend_frames(clip, generated, source_frames, range(total), t, direction)


def extend_audio_window(known: int, n: int, fps, direction: str = "forward") -> tuple[float, float]:
    """``(delay_s, end_s)``: where the source audio sits in an extended video of ``known + n``
    frames at ``fps`` (float or Fraction, frames per second): under the known frames only --
    ``forward`` from 0 to ``known / fps``; ``backward`` delayed by ``n / fps`` seconds."""
    delay = float(n / fps) if direction == "backward" else 0.0
    return delay, delay + float(known / fps)


def even_frames(frames: np.ndarray) -> np.ndarray:
    """``frames`` (``(N, H, W, ...)``) cropped to even ``H`` and ``W`` (H.264 yuv420p needs them);
    the same array when they are already even."""
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    return frames if (h, w) == tuple(frames.shape[1:3]) else np.ascontiguousarray(frames[:, :h, :w])


# --------------------------------------------------------------------------- diffusion and whole runs
def generate(outpainter: Outpainter, clip: PreparedClip,
             on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
    """All windows of ``clip`` (coarse then fine, as outpainting) -> uint8 ``(N, S, S, 3)`` decoded
    canvases of every frame."""
    kw = {} if on_step is None else {"on_step": on_step}
    state = outpainter.run_coarse(clip, **kw)
    outpainter.run_fine(clip, state, **kw)
    return generated_array(clip, state)


def run_inpaint(outpainter: Outpainter, frames: np.ndarray, masks: np.ndarray, fps: float, dilate: int = 0,
                name: str = "masks", on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Inpaint ``frames`` (uint8 ``(T, H, W, 3)``) where ``masks`` (read mask source, 1 = remove)
    says; returns uint8 ``(T, H, W, 3)``, the source pixels exactly outside the (dilated) mask."""
    frames = _frames(frames)
    fitted = inpaint_masks(masks, frames.shape[0], frames.shape[1:3], dilate, name)
    clip = prepare_inpaint(frames, fitted, fps, outpainter.settings, name)
    return finalize_inpaint(clip, generate(outpainter, clip, on_step), frames, fitted, outpainter.settings)


def run_extend(outpainter: Outpainter, frames: np.ndarray, fps: float, n: int, direction: str = "forward",
               on_step: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Extend ``frames`` by ``n`` frames; returns uint8 ``(T + n, H, W, 3)``."""
    frames = _frames(frames)
    clip = prepare_extend(frames, fps, n, direction, outpainter.settings)
    return finalize_extend(clip, generate(outpainter, clip, on_step), frames, direction)
