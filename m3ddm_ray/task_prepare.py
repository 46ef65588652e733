"""Inpainting and extension of long videos in bounded memory: one streaming pass in prepare, the
canvases of a segment's span rebuilt where the segment runs (the batch job's task clips).

:func:`m3ddm_ray.tasks.prepare_inpaint` / :func:`~m3ddm_ray.tasks.prepare_extend` hold every
frame's canvases and masks: right for one process and short clips, linear in length in a job. A
task clip that splits into several segments (:meth:`m3ddm_ray.plan.WindowPlan.segments`) goes the
outpainting way instead (:func:`m3ddm_ray.pipeline.prepare_clips` with a ``sink``):

* :func:`stream_inpaint` / :func:`stream_extend`: one pass over the source frames (and, for an
  inpainting, the mask source, :class:`m3ddm_ray.video.MaskSource`) in chunks; only the coarse
  windows' frames (about ``T / 15``) get canvases, handed to ``sink(masked, inpainted, masks)`` in
  the order they come (the job writes them to the clip's canvas file with their masks,
  :mod:`m3ddm_ray.canvas_file`); the global frames and the union mask are gathered as frames go
  by; the mask checks (count, size, empty, all ones -- :mod:`m3ddm_ray.masks.frames`) are the
  in-memory ones, gathered over the pass. The clip returned holds no canvas (``frame_ids``: the
  keyframes; the caller sets ``canvas_file``).
* :func:`inpaint_span` / :func:`extend_span`: a segment shell's canvases from its span's source
  frames (a range decode) and, for an inpainting, its span's masks (a range read): exactly the
  rows the in-memory preparation makes, since every canvas is a function of its own frame (and,
  for new frames of an extension, of the last known frame's canvas).
* :func:`extend_span_rows`: which known working rows an extension's span is built from.

Working order of a backward extension: row ``r < T`` is source frame ``T - 1 - r``, so its known
keyframes reach the sink last first: the clip says so with ``canvas_reversed`` (the count of
those positions).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterable, Iterator

import numpy as np

from . import geometry
from .masks.frames import MaskUsage, canvas_masks, check_mask_count, dilate_masks, fit_mask_frames
from .pipeline import PreparedClip, canvas_frames, make_global_frames
from .plan import plan_windows
from .quality import check_frames
from .tasks import (_SQUARE, _check_extend, _fps, _strides, dilated_name, extend_new_canvases, hidden_frames,
                    inpaint_canvases, inpaint_mask_frames)

__all__ = ["task_keyframes", "stream_inpaint", "stream_extend", "inpaint_span", "extend_span", "extend_span_rows"]

#: ``sink(masked, inpainted, masks)``: uint8 ``(N, S, S, 3)``, ``(N, S, S, 3)``, ``(N, S, S)``.
Sink = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


def task_keyframes(total: int, fps: float, settings) -> tuple[int, ...] | None:
    """The working rows whose canvases a streamed task clip keeps (the coarse windows' frames), or
    None when its plan over ``total`` rows has one segment (the in-memory preparation then)."""
    return canvas_frames(plan_windows(total, fps, _strides(settings, total, fps)))


def _chunks(frames: Iterable[np.ndarray], chunk: int) -> Iterator[np.ndarray]:
    buf: list[np.ndarray] = []
    for f in frames:
        buf.append(np.asarray(f))
        if len(buf) == chunk:
            yield check_frames(np.stack(buf), "frames")
            buf = []
    if buf:
        yield check_frames(np.stack(buf), "frames")


def _count(seen: int, expected: int) -> None:
    from .errors import InputError

    if seen != expected:
        raise InputError(f"got {seen} frames, expected num_frames={expected}")


def _pass(frames: Iterable[np.ndarray], num_frames: int, canvas_size: int,
          chunk: int) -> Iterator[tuple[int, np.ndarray, geometry.CanvasGeometry]]:
    """``(index of the chunk's first frame, uint8 (n, H, W, 3) chunk, canvas plan)`` over the
    frames; raises InputError when they are not exactly ``num_frames``."""
    seen, geom = 0, None
    for arr in _chunks(frames, chunk):
        if geom is None:
            geom = geometry.plan_canvas(arr.shape[1], arr.shape[2], _SQUARE, canvas_size)
        if seen + len(arr) > num_frames:
            _count(seen + len(arr), num_frames)
        yield seen, arr, geom
        seen += len(arr)
    _count(seen, num_frames)


def stream_inpaint(frames: Iterable[np.ndarray], num_frames: int, fps: float, masks, settings, dilate: int,
                   sink: Sink, name: str = "masks", chunk: int = 32) -> PreparedClip:
    """:func:`m3ddm_ray.tasks.prepare_inpaint` of a long video in one streaming pass.

    Args:
        frames: uint8 ``(H, W, 3)`` RGB frames in order (a decoder); num_frames: their exact ``T``.
        fps: frames per second (> 0).
        masks: the :class:`m3ddm_ray.video.MaskSource` (1 or ``T`` masks), read in the same pass.
        settings: :class:`~m3ddm_ray.settings.OutpaintSettings`; dilate: pixels (>= 0).
        sink: receives the keyframes' canvases and canvas masks in working order.
        name: the mask source in error messages.

    Returns:
        A :class:`PreparedClip` of ``T`` rows holding no canvas: ``frame_ids`` the keyframes
        (:func:`task_keyframes`), ``frame_masks`` with 0 rows, ``mask`` the union of the canvas
        masks, the global frames of the hidden source frames.

    Raises:
        InputError: bad fps, frames, a mask count other than 1 or ``T``, masks of another aspect
            ratio, masks (dilated or not) that mark nothing or everything -- as the in-memory path.
        RuntimeError: a plan with one segment (use :func:`m3ddm_ray.tasks.prepare_inpaint`).
    """
    fps = _fps(fps)
    t = int(num_frames)
    keep = task_keyframes(t, fps, settings)
    if keep is None:
        raise RuntimeError(f"a clip of {t} frames has one segment; prepare it in memory (tasks.prepare_inpaint)")
    check_mask_count(masks.count, t, name)
    slot = set(keep)
    gids = [int(g) for g in geometry.global_frame_ids(t, settings.num_global_frames)]
    usage, usage_d = MaskUsage(), MaskUsage()
    geom, union, single, mask_iter = None, None, None, None
    globals_: dict[int, np.ndarray] = {}
    for seen, arr, geom in _pass(frames, t, settings.canvas_size, chunk):
        n = len(arr)
        if single is None and mask_iter is None:
            if masks.count == 1:  # fitted and dilated once, repeated for every chunk
                one = fit_mask_frames(masks.read(0, 1), geom.source_hw, name)
                single = (one, dilate_masks(one, dilate) if dilate else one)
            else:
                mask_iter = masks.iter()
        if single is not None:
            raw, fitted = (np.repeat(m, n, axis=0) for m in single)
        else:
            got = [m for _, m in zip(range(n), mask_iter)]
            if len(got) != n:
                check_mask_count(seen + len(got), t, name)
            raw = fit_mask_frames(np.stack(got), geom.source_hw, name)
            fitted = dilate_masks(raw, dilate) if dilate else raw
        usage.add(raw)
        usage_d.add(fitted)
        u = fitted.max(axis=0)
        union = u if union is None else np.maximum(union, u)
        sel = [i for i in range(n) if seen + i in slot]
        if sel:
            sink(*inpaint_canvases(arr[sel], fitted[sel], geom))
        for g in gids:
            if seen <= g < seen + n and g not in globals_:
                hidden = hidden_frames(arr[g - seen:g - seen + 1], fitted[g - seen:g - seen + 1])
                globals_[g] = make_global_frames(hidden, [0], settings.canvas_size)[0]
    usage.check(name)
    if dilate:
        usage_d.check(dilated_name(name, dilate))
    s = settings.canvas_size
    empty = np.zeros((0, s, s, 3), np.uint8)
    return PreparedClip(geom.ratio, fps, geom, empty, empty, canvas_masks(union[None], geom)[0],
                        np.stack([globals_[g] for g in gids]), _strides(settings, t, fps), total_frames=t,
                        frame_ids=keep, frame_masks=np.zeros((0, s, s), np.uint8))


def stream_extend(frames: Iterable[np.ndarray], num_frames: int, fps: float, n: int, direction: str, settings,
                  sink: Sink, chunk: int = 32) -> PreparedClip:
    """:func:`m3ddm_ray.tasks.prepare_extend` of a long video in one streaming pass (frames in time
    order, whatever the direction).

    Args:
        frames: uint8 ``(H, W, 3)`` RGB known frames in time order; num_frames: their exact ``T``.
        fps: frames per second (> 0); n: new frames (>= 1); direction: ``forward`` / ``backward``.
        settings: :class:`~m3ddm_ray.settings.OutpaintSettings`.
        sink: receives the keyframes' canvases and masks: a forward extension's in working order;
            a backward one's known keyframes last first (time order), then its new ones in order.

    Returns:
        A :class:`PreparedClip` of ``T + n`` rows holding no canvas (``frame_ids``: keyframes;
        ``canvas_reversed``: the known keyframes of a backward extension, else 0).

    Raises:
        InputError: bad fps, frames, ``n`` or direction. RuntimeError: a plan with one segment.
    """
    fps = _fps(fps)
    n = _check_extend(n, direction)
    t = int(num_frames)
    total = t + n
    keep = task_keyframes(total, fps, settings)
    if keep is None:
        raise RuntimeError(f"a clip of {total} rows has one segment; prepare it in memory (tasks.prepare_extend)")
    back = direction == "backward"
    slot = set(keep)
    gids = [int(g) for g in geometry.global_frame_ids(t, settings.num_global_frames)]
    geom, border, last = None, None, None
    globals_: dict[int, np.ndarray] = {}
    for seen, arr, geom in _pass(frames, t, settings.canvas_size, chunk):
        k = len(arr)
        if border is None:
            border = geometry.pixel_mask(geom)
        work = [t - 1 - (seen + i) if back else seen + i for i in range(k)]  # working row of each frame
        sel = [i for i in range(k) if work[i] in slot]
        if sel:
            m, i_ = geometry.make_canvases(arr[sel], geom)
            sink(m, i_, np.repeat(border[None], len(sel), axis=0))
        for i, w in enumerate(work):
            if w in gids and w not in globals_:
                globals_[w] = make_global_frames(arr[i:i + 1], [0], settings.canvas_size)[0]
            if w == t - 1:  # the last known frame in working order: the new frames' diffusion start
                last = arr[i:i + 1].copy()
    last_inpainted = geometry.make_canvases(last, geom)[1][0]
    new = [r for r in keep if r >= t]
    if new:
        sink(*extend_new_canvases(len(new), last_inpainted, geom))
    s = settings.canvas_size
    empty = np.zeros((0, s, s, 3), np.uint8)
    known_keys = sum(r < t for r in keep)
    return PreparedClip(geom.ratio, fps, geom, empty, empty, np.ones((s, s), np.uint8),
                        np.stack([globals_[g] for g in gids]), _strides(settings, total, fps),
                        total_frames=total, frame_ids=keep, frame_masks=np.zeros((0, s, s), np.uint8),
                        canvas_reversed=known_keys if back else 0)


def inpaint_span(clip: PreparedClip, frames: np.ndarray, raw_masks: np.ndarray, dilate: int,
                 name: str = "masks") -> PreparedClip:
    """A segment shell (:meth:`PreparedClip.segment_shell`) of a streamed inpainting with the
    canvases of its span.

    Args:
        frames: uint8 ``(N, H, W, 3)`` source frames of the span (``first_frame ..``).
        raw_masks: uint8 ``(N, H', W')`` the mask source's masks of the span, or its single mask
            ``(1, H', W')`` (:meth:`m3ddm_ray.video.MaskSource.read`); dilate: pixels.

    Returns:
        The clip with ``masked`` / ``inpainted`` ``(N, S, S, 3)`` and ``frame_masks`` ``(N, S, S)``.
    """
    frames = check_frames(frames, "frames")
    fitted = inpaint_mask_frames(raw_masks, clip.geom.source_hw, dilate, name)
    if len(fitted) == 1 and len(frames) > 1:
        fitted = np.repeat(fitted, len(frames), axis=0)
    masked, inpainted, cm = inpaint_canvases(frames, fitted, clip.geom)
    return replace(clip, masked=masked, inpainted=inpainted, frame_masks=cm, frame_ids=None)


def extend_span_rows(lo: int, hi: int, known: int) -> tuple[int, int]:
    """``(a, b)``: the known working rows the canvases of span ``[lo, hi)`` of an extension by
    ``known`` known frames are built from -- the span's known rows, and row ``known - 1`` too when
    the span holds new rows (their diffusion start is that frame's canvas). ``(a, a)``: none."""
    b = min(hi, known)
    a = min(lo, known - 1) if hi > known else lo
    return (a, b) if b > a else (a, a)


def extend_span(clip: PreparedClip, frames: np.ndarray, known: int, direction: str) -> PreparedClip:
    """A segment shell of a streamed extension with the canvases of its span ``[lo, hi)``.

    Args:
        frames: uint8 ``(b - a, H, W, 3)`` the source frames of working rows
            :func:`extend_span_rows` ``(a, b)``, in **time order** (as a range decode gives them).
        known: ``T``; direction: ``forward`` / ``backward``.

    Returns:
        The clip with ``masked`` / ``inpainted`` ``(hi - lo, S, S, 3)`` and ``frame_masks``.
    """
    from .errors import InputError

    lo, hi = clip.plan.segments()[clip.segment].frame_range
    a, b = extend_span_rows(lo, hi, known)
    frames = np.asarray(frames)
    if len(frames) != b - a:
        raise InputError(f"extend_span: {len(frames)} source frames for known rows [{a}, {b})")
    parts_m, parts_i, parts_f = [], [], []
    last = None
    if b > a:
        work = check_frames(frames, "frames")[::-1] if direction == "backward" else check_frames(frames, "frames")
        m, i_ = geometry.make_canvases(np.ascontiguousarray(work), clip.geom)
        last = i_[-1]
        keep = slice(lo - a, b - a)
        parts_m.append(m[keep])
        parts_i.append(i_[keep])
        parts_f.append(np.repeat(geometry.pixel_mask(clip.geom)[None], b - lo if b > lo else 0, axis=0))
    if hi > known:
        m, i_, f = extend_new_canvases(hi - max(lo, known), last, clip.geom)
        parts_m.append(m)
        parts_i.append(i_)
        parts_f.append(f)
    return replace(clip, masked=np.concatenate(parts_m), inpainted=np.concatenate(parts_i), frame_masks=np.concatenate(parts_f),
                   frame_ids=None)
