"""CPU preparation of a video for diffusion, for every task: one streaming pass over its frames.

A :class:`~m3ddm_ray.task.Task` (:class:`~m3ddm_ray.task.Outpaint`, :class:`~m3ddm_ray.task.Inpaint`,
:class:`~m3ddm_ray.task.Extend`) says what a row's canvas and mask are; this module runs it:

* :func:`prepare`: one pass over the source frames (a list, an array or a decoder), in chunks,
  for one or several tasks of the same video (e.g. several target ratios). Each row's canvases
  are built as its frame goes by, the global frames are resized as they go by, an inpainting's
  mask source is read in the same pass, and the mask checks are gathered over it. Memory is the
  canvases kept: every row's (a clip held in memory), or with ``segmented=True`` only the coarse
  windows' rows when the clip splits into several segments (:func:`canvas_frames`, about
  ``T / 15``) -- in arrays, or handed to a ``sink`` chunk by chunk (the batch job writes them to a
  scratch file, :mod:`m3ddm_ray.canvas_file`). The in-memory preparation is this same pass fed
  from an array.
* :func:`span_canvases`: a segment's canvases rebuilt from a range decode of its span (and, for
  an inpainting, a range read of its masks) -- exactly the rows the whole pass makes, since every
  canvas is a function of its own frame (and, for an extension's new rows, of the last known row).

:class:`PreparedClip` is what travels between the stages; what it holds is a named state
(:class:`Holds`), never read from array shapes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from . import geometry
from .errors import InputError
from .plan import Segment, WindowPlan, plan_windows
from .quality import check_frames
from .settings import OutpaintSettings
from .task import MaskArray, Outpaint, Task, check_fps

__all__ = ["Holds", "PreparedClip", "make_global_frames", "canvas_frames", "prepare", "prepare_clips",
           "prepare_clip", "prepare_task", "span_canvases", "MaskArray"]


def make_global_frames(frames: np.ndarray, ids: Sequence[int], canvas_size: int) -> np.ndarray:
    """The global frames (M3DDM §3.3, golden README §5.3): raw frames ``ids`` squashed to ``S×S``.

    Args:
        frames: uint8 ``(T, H, W, 3)`` decoded input (not masked, not padded).
        ids: frame indices (:func:`geometry.global_frame_ids`).

    Returns:
        float32 ``(G, 3, S, S)`` in ``[-1, 1]``: bilinear resize with antialias of ``frames / 255``,
        then ``(x - 0.5) / 0.5`` (torchvision ``Resize`` + ``Normalize`` of the official code).
    """
    x = torch.from_numpy(np.ascontiguousarray(frames[np.asarray(ids)])).permute(0, 3, 1, 2).float() / 255.0
    x = torch.nn.functional.interpolate(x, size=(canvas_size, canvas_size), mode="bilinear",
                                        align_corners=False, antialias=True)
    return ((x - 0.5) / 0.5).numpy()


class Holds(enum.Enum):
    """Which canvases a :class:`PreparedClip` holds."""

    CLIP = "clip"                  # every row's, in the arrays (row r at position r)
    KEYFRAMES = "keyframes"        # the rows ``frame_ids`` (coarse windows), in the arrays
    FILE = "file"                  # the rows ``frame_ids``, in the scratch file ``canvas_file``
    SPAN = "span"                  # a segment's span, rows ``first_frame ..``, in the arrays
    SHELL = "shell"                # a segment's, not built yet (:func:`span_canvases`)
    PASSTHROUGH = "passthrough"    # none: the source is already the output


@dataclass
class PreparedClip:
    """One (video, task) pair ready for diffusion; numpy only, so it travels between Ray stages.

    Attributes:
        task: the :class:`~m3ddm_ray.task.Task`.
        fps: source average frame rate (frames per second).
        geom: canvas placement (:class:`geometry.CanvasGeometry`).
        masked: uint8 ``(N, S, S, 3)`` canvases with the known pixels, zeros where generated.
        inpainted: uint8 ``(N, S, S, 3)`` the same, holes filled by OpenCV TELEA (diffusion start).
        mask: uint8 ``(S, S)`` 1 = generate: every row's mask of a one-mask task (outpainting;
            ``(0, 0)`` in a :attr:`Holds.SHELL` clip, rebuilt with its canvases), else the union of
            all rows' masks (:meth:`~m3ddm_ray.task.Task.mask`).
        global_frames: float32 ``(G, 3, S, S)`` in ``[-1, 1]`` (0 rows in a segment's clip).
        strides: the pass strides used for the plan.
        total_frames: ``T`` working rows of the whole clip.
        holds: what the arrays / the file hold (:class:`Holds`).
        first_frame: the row of ``masked[0]`` for :attr:`Holds.SPAN` / :attr:`Holds.SHELL`, else 0.
        segment: index of the segment (:meth:`WindowPlan.segments`) of a span or shell, else None.
        frame_ids: the rows held by :attr:`Holds.KEYFRAMES` / :attr:`Holds.FILE`, ascending.
        canvas_file: URI of the scratch file of :attr:`Holds.FILE`, read with ``canvas_options``
            (fsspec options).
        frame_masks: uint8 ``(N, S, S)`` 0/1, one mask per held row, for a task without one mask
            (0 rows with :attr:`Holds.FILE`: the masks are in the file); None for a one-mask task.
        file_order: position in :attr:`canvas_file` of each of ``frame_ids`` when they were written
            in another order (a backward extension's known rows arrive last first), else None.
        source_union: uint8 ``(H, W)`` 0/1, the union of every frame's fitted source mask (a task with
            source masks: inpainting), else None: what the tiled mode chooses its tiles by at any
            working size (:meth:`m3ddm_ray.task.Task.working_mask`).
    """

    task: Task
    fps: float
    geom: geometry.CanvasGeometry
    masked: np.ndarray
    inpainted: np.ndarray
    mask: np.ndarray
    global_frames: np.ndarray
    strides: tuple[int, ...]
    total_frames: int
    holds: Holds = Holds.CLIP
    first_frame: int = 0
    segment: int | None = None
    frame_ids: tuple[int, ...] | None = None
    canvas_file: str | None = None
    canvas_options: dict | None = None
    frame_masks: np.ndarray | None = None
    file_order: tuple[int, ...] | None = None
    source_union: np.ndarray | None = None

    @property
    def ratio(self) -> geometry.Ratio:
        """The outpainting ratio, or the canvas plan's (``1:1`` for inpainting and extension)."""
        return self.task.ratio or self.geom.ratio

    @property
    def passthrough(self) -> bool:
        """The source already is the output: no diffusion."""
        return self.holds is Holds.PASSTHROUGH

    @property
    def needs_canvases(self) -> bool:
        """True for a :meth:`segment_shell` whose canvases are not built yet."""
        return self.holds is Holds.SHELL

    @property
    def keyframes_only(self) -> bool:
        """Only the coarse windows' rows are held (the clip splits into several segments)."""
        return self.holds in (Holds.KEYFRAMES, Holds.FILE)

    @property
    def num_frames(self) -> int:
        """``T`` working rows of the whole clip (also for a segment's)."""
        return int(self.total_frames)

    @property
    def plan(self) -> WindowPlan:
        """The window plan (pure function of T, fps and strides; rebuilt where needed)."""
        return plan_windows(self.num_frames, self.fps, self.strides)

    def rows(self, frames: Sequence[int]) -> list[int]:
        """Positions in ``masked`` / ``inpainted`` (or the file) of rows ``frames``.

        Raises:
            RuntimeError: a row this clip does not hold.
        """
        if self.keyframes_only:
            held = np.asarray(self.frame_ids, dtype=np.int64)
            want = np.asarray([int(f) for f in frames], dtype=np.int64)
            pos = np.searchsorted(held, want)
            ok = (pos < len(held)) & (held[np.minimum(pos, len(held) - 1)] == want) if len(held) else pos < 0
            if not np.all(ok):
                raise RuntimeError(f"frames {want[~ok][:4].tolist()}... have no canvas here (this clip holds the "
                                   f"canvases of {len(held)} keyframes only)")
            return [int(p) for p in pos]
        if self.holds in (Holds.SHELL, Holds.PASSTHROUGH):
            raise RuntimeError(f"a {self.holds.value} clip holds no canvas")
        lo, n = self.first_frame, int(self.masked.shape[0])
        out = [int(f) - lo for f in frames]
        if any(not 0 <= r < n for r in out):
            raise RuntimeError(f"frames {list(frames)[:4]}... are outside the held span [{lo}, {lo + n})")
        return out

    def canvases(self, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(masked, inpainted)`` uint8 ``(len(rows), S, S, 3)`` at positions ``rows`` (:meth:`rows`),
        from the arrays or from :attr:`canvas_file`."""
        if self.holds is not Holds.FILE:
            return self.masked[rows], self.inpainted[rows]
        return self.read_file(rows)[:2]

    def known_canvases(self, frames: Sequence[int]) -> np.ndarray:
        """uint8 ``(N, S, S, 3)`` masked canvases of rows ``frames`` (what finalize pastes onto; the
        inpainted ones may have been left behind)."""
        rows = self.rows(frames)
        return self.read_file(rows)[0] if self.holds is Holds.FILE else self.masked[rows]

    def read_file(self, rows: Sequence[int], masks_only: bool = False) -> tuple[np.ndarray, ...]:
        """``(masked, inpainted[, masks])`` of positions ``rows`` read from :attr:`canvas_file`
        (``masks_only``: ``(masks,)``, reading the mask bytes alone)."""
        from .canvas_file import read_canvas_rows

        pos = [int(r) for r in rows] if self.file_order is None else [self.file_order[int(r)] for r in rows]
        return read_canvas_rows(self.canvas_file, pos, self.geom.canvas_size, self.canvas_options,
                                with_masks=not self.task.one_mask, masks_only=masks_only)

    def masks_of(self, frames: Sequence[int]) -> np.ndarray:
        """uint8 ``(N, S, S)`` pixel masks of rows ``frames`` (``mask`` repeated for a one-mask task)."""
        if self.task.one_mask:
            return np.repeat(self.mask[None], len(frames), axis=0)
        if self.holds is Holds.FILE:
            return self.read_file(self.rows(frames), masks_only=True)[0]
        return self.frame_masks[self.rows(frames)]

    def window_masks(self, frames: Sequence[int]) -> np.ndarray | None:
        """uint8 ``(F, S, S)`` masks of a window's rows, or None when every row has :attr:`mask`."""
        return None if self.task.one_mask else self.masks_of(frames)

    def in_file(self, uri: str, options: dict | None) -> "PreparedClip":
        """This keyframes clip with its canvases in the scratch file ``uri`` (fsspec ``options``)."""
        return replace(self, holds=Holds.FILE, canvas_file=uri, canvas_options=options)

    def segment_slice(self, segment: Segment) -> "PreparedClip":
        """This clip with canvases only for ``segment.frames`` (what a segment's fine work needs;
        the global frames stay behind: the fine stage reads their latents from the coarse state)."""
        lo, hi = segment.frame_range
        masked, inpainted = self.canvases(self.rows(range(lo, hi)))
        fm = None if self.task.one_mask else self.masks_of(range(lo, hi)).copy()
        return replace(self, masked=masked.copy(), inpainted=inpainted.copy(), global_frames=self.global_frames[:0],
                       holds=Holds.SPAN, first_frame=lo, segment=segment.index, frame_ids=None, canvas_file=None,
                       canvas_options=None, frame_masks=fm, file_order=None)

    def segment_shell(self, segment: Segment) -> "PreparedClip":
        """This clip for ``segment`` without any canvas: what a segment row carries from the coarse
        stage to the fine actor, which builds its canvases (:func:`span_canvases`). A one-mask
        task's shell carries no pixel mask either (``mask`` ``(0, 0)``: it is a function of
        :attr:`geom`), so a shell is a few hundred bytes at any canvas size."""
        s = self.geom.canvas_size
        empty = np.zeros((0, s, s, 3), np.uint8)
        fm = None if self.task.one_mask else np.zeros((0, s, s), np.uint8)
        mask = np.zeros((0, 0), np.uint8) if self.task.one_mask else self.mask
        return replace(self, masked=empty, inpainted=empty, mask=mask, global_frames=self.global_frames[:0],
                       holds=Holds.SHELL, first_frame=segment.frame_range[0], segment=segment.index,
                       frame_ids=None, canvas_file=None, canvas_options=None, frame_masks=fm, file_order=None)


def canvas_frames(plan: WindowPlan) -> tuple[int, ...] | None:
    """Rows whose canvases a segmented preparation keeps: those of the coarse windows when the fine
    work splits into several segments (each segment then builds its own from a range decode,
    :func:`span_canvases`), else None (all rows: one segment needs them all in one place anyway)."""
    if len(plan.segments()) <= 1:
        return None
    return tuple(sorted({f for w in plan.coarse for f in w.frame_ids}))


def _strides(settings: OutpaintSettings, total: int, fps: float) -> tuple[int, ...]:
    return tuple(settings.strides) if settings.strides else tuple(plan_windows(total, fps).strides)


class _Build:
    """One task's share of the pass: its canvases (arrays or sink), masks, global frames."""

    def __init__(self, j: int, task: Task, t: int, fps: float, settings: OutpaintSettings, h: int, w: int,
                 segmented: bool, sink: Callable | None):
        s = settings.canvas_size
        self.j, self.task, self.t, self.sink, self.s = j, task, t, sink, s
        self.total = task.num_rows(t)
        self.strides = _strides(settings, self.total, fps)
        self.skip = task.passthrough(h, w)
        self.geom = task.plan(h, w, s)
        self.keep = canvas_frames(plan_windows(self.total, fps, self.strides)) if segmented else None
        self.slot = None if self.keep is None else {f: k for k, f in enumerate(self.keep)}
        held = 0 if self.skip else (self.total if self.keep is None else (0 if sink is not None else len(self.keep)))
        self.masked = np.zeros((held, s, s, 3), np.uint8)
        self.inpainted = np.zeros((held, s, s, 3), np.uint8)
        self.frame_masks = None if task.one_mask else np.zeros((held, s, s), np.uint8)
        self.union = None
        self.arrived: list[int] = []
        self.gids = [int(g) for g in geometry.global_frame_ids(t, settings.num_global_frames)]
        self.globals: dict[int, np.ndarray] = {}
        self.last = None
        self.masks = None if self.skip else task.mask_pass(t, (h, w))

    def store(self, rows: list[int], m: np.ndarray, i: np.ndarray, f: np.ndarray | None) -> None:
        if self.sink is not None and self.slot is not None:
            self.sink(self.j, m, i, f)
            self.arrived.extend(rows)
            return
        dest = rows if self.slot is None else [self.slot[r] for r in rows]
        self.masked[dest], self.inpainted[dest] = m, i
        if f is not None:
            self.frame_masks[dest] = f

    def chunk(self, seen: int, arr: np.ndarray) -> None:
        if self.skip:
            return
        masks = self.masks.next(len(arr))
        if masks is not None:
            u = masks.max(axis=0)
            self.union = u if self.union is None else np.maximum(self.union, u)
        rows = [self.task.row_of(seen + k, self.t) for k in range(len(arr))]
        sel = [k for k, r in enumerate(rows) if self.slot is None or r in self.slot]
        if sel:
            self.store([rows[k] for k in sel], *self.task.canvases(arr[sel], None if masks is None else masks[sel],
                                                                   self.geom))
        for k, r in enumerate(rows):
            if r in self.gids and r not in self.globals:
                px = self.task.global_pixels(arr[k:k + 1], None if masks is None else masks[k:k + 1])
                self.globals[r] = make_global_frames(px, [0], self.s)[0]
            if r == self.t - 1 and self.total > self.t:  # the last known row: the new rows' diffusion start
                self.last = arr[k:k + 1].copy()

    def clip(self, fps: float) -> PreparedClip:
        if self.skip:  # already at the target: passthrough, nothing to diffuse
            empty = np.zeros((self.total, 0, 0, 3), np.uint8)
            return PreparedClip(self.task, fps, self.geom, empty, empty, np.zeros((0, 0), np.uint8),
                                np.zeros((0, 3, 0, 0), np.float32), self.strides, self.total, Holds.PASSTHROUGH)
        self.masks.finish()
        new = [r for r in range(self.t, self.total) if self.slot is None or r in self.slot]
        if new:
            last = self.task.canvases(self.last, None, self.geom)[1][0]
            self.store(new, *self.task.new_canvases(len(new), last, self.geom))
        order = None
        if self.arrived and self.arrived != sorted(self.arrived):
            pos = {r: p for p, r in enumerate(self.arrived)}
            order = tuple(pos[r] for r in self.keep)
        holds = Holds.CLIP if self.keep is None else Holds.KEYFRAMES
        gf = np.stack([self.globals[g] for g in self.gids])
        return PreparedClip(self.task, fps, self.geom, self.masked, self.inpainted,
                            self.task.mask(self.geom, self.union), gf, self.strides, self.total, holds,
                            frame_ids=self.keep, frame_masks=self.frame_masks, file_order=order,
                            source_union=self.union)


def prepare(frames: Iterable[np.ndarray], num_frames: int, fps: float, tasks: Sequence[Task],
            settings: OutpaintSettings = OutpaintSettings(), chunk: int = 32, segmented: bool = False,
            sink: Callable | None = None) -> list[PreparedClip]:
    """CPU preparation of one video for several tasks in a single streaming pass (module docstring).

    Args:
        frames: iterable of uint8 ``(H, W, 3)`` RGB frames in time order (a list, an array or a decoder).
        num_frames: exact ``T`` (the global-frame positions depend on it).
        fps: source frame rate (> 0).
        tasks: the :class:`~m3ddm_ray.task.Task` of each clip to make.
        settings: canvas size, global frames, strides.
        segmented: keep only the coarse windows' rows of a clip that splits into several segments
            (:func:`canvas_frames`).
        sink: with ``segmented``, ``sink(j, masked, inpainted, masks)`` receives those rows' canvases
            chunk by chunk (``j``: index of the task; ``masks`` None for a one-mask task) and the
            clips hold none (the caller stores them, then :meth:`PreparedClip.in_file`).

    Returns:
        One :class:`PreparedClip` per task, in the order given.

    Raises:
        InputError: bad fps, frames of another dtype/size, a frame count other than ``num_frames``,
            or a task's inputs that do not fit the video (an inpainting's masks: count, size,
            empty, all ones -- the message names the mask source).
    """
    fps = check_fps(fps)
    if num_frames < 1:
        raise InputError("the video has 0 frames; nothing to outpaint")
    t = int(num_frames)
    builds: list[_Build] | None = None
    buf: list[np.ndarray] = []
    seen = 0

    def flush():
        nonlocal seen
        arr = check_frames(np.stack(buf), "frames")
        for b in builds:
            b.chunk(seen, arr)
        seen += len(arr)
        buf.clear()

    for frame in frames:
        if builds is None:
            h, w = np.asarray(frame).shape[:2]
            builds = [_Build(j, task, t, fps, settings, h, w, segmented, sink) for j, task in enumerate(tasks)]
        if seen + len(buf) >= t:
            raise InputError(f"the video has more frames than num_frames={t}")
        buf.append(np.asarray(frame))
        if len(buf) == chunk:
            flush()
    if buf:
        flush()
    if seen != t:
        raise InputError(f"got {seen} frames, expected num_frames={t}")
    return [b.clip(fps) for b in builds]


def prepare_clips(frames: Iterable[np.ndarray], num_frames: int, fps: float, ratios,
                  settings: OutpaintSettings = OutpaintSettings(), chunk: int = 32,
                  segmented: bool = False, sink: Callable | None = None) -> list[PreparedClip]:
    """:func:`prepare` of outpaintings to ``ratios`` (``"9:16,1:1"`` or a sequence of ratios)."""
    tasks = [Outpaint(r) for r in geometry.parse_ratios(ratios)]
    return prepare(frames, num_frames, fps, tasks, settings, chunk, segmented, sink)


def prepare_task(frames: np.ndarray, fps: float, task: Task,
                 settings: OutpaintSettings = OutpaintSettings()) -> PreparedClip:
    """:func:`prepare` of one task of a video held in memory.

    Args:
        frames: uint8 ``(T, H, W, 3)`` RGB source frames.

    Raises:
        InputError: bad frames, fps, settings or task inputs.
    """
    frames = check_frames(frames, "frames")
    return prepare(frames, frames.shape[0], fps, [task], settings)[0]


def prepare_clip(frames: np.ndarray, fps: float, ratio,
                 settings: OutpaintSettings = OutpaintSettings()) -> PreparedClip:
    """:func:`prepare_task` of an outpainting to ``ratio`` (``"9:16"`` or :class:`geometry.Ratio`)."""
    return prepare_task(frames, fps, Outpaint(geometry.parse_ratio(ratio)), settings)


def span_canvases(clip: PreparedClip, read_source: Callable[[int, int], np.ndarray]) -> PreparedClip:
    """A :meth:`PreparedClip.segment_shell` with the canvases of its span built.

    Args:
        read_source: ``read_source(a, b) -> uint8 (b - a, H, W, 3)`` source frames ``[a, b)`` in time
            order (a range decode); called once with the task's :meth:`~m3ddm_ray.task.Task.source_range`.

    Returns:
        The clip (:attr:`Holds.SPAN`) with ``masked`` / ``inpainted`` ``(N, S, S, 3)`` (and the
        masks), exactly what the whole clip's :func:`prepare` makes for those rows.

    Raises:
        RuntimeError: ``clip`` is not a shell. InputError: frames or masks that do not fit.
    """
    if not clip.needs_canvases:
        raise RuntimeError(f"span_canvases needs a segment shell, not a {clip.holds.value} clip")
    task, total = clip.task, clip.num_frames
    t = task.known_rows(total)
    lo, hi = clip.plan.segments()[clip.segment].frame_range
    a, b = task.source_range(lo, hi, total, span=True)
    h, w = clip.geom.source_hw
    frames = np.zeros((0, h, w, 3), np.uint8)
    if b > a:
        frames = check_frames(read_source(a, b), "frames")
        if len(frames) != b - a:
            raise InputError(f"span canvases: {len(frames)} source frames for frames [{a}, {b})")
    s = clip.geom.canvas_size
    parts_m, parts_i, parts_f = [np.zeros((0, s, s, 3), np.uint8)], [np.zeros((0, s, s, 3), np.uint8)], []
    last = None
    if b > a:
        masks = task.span_masks(a, b, (h, w))
        rows = [task.row_of(a + k, t) for k in range(b - a)]
        order = sorted(range(b - a), key=lambda k: rows[k])
        m, i_, f = task.canvases(np.ascontiguousarray(frames[order]),
                                 None if masks is None else masks[order], clip.geom)
        rows = [rows[k] for k in order]
        if rows[-1] == t - 1:
            last = i_[-1]
        keep = [k for k, r in enumerate(rows) if lo <= r < hi]
        parts_m.append(m[keep])
        parts_i.append(i_[keep])
        if f is not None:
            parts_f.append(f[keep])
    if hi > t:
        m, i_, f = task.new_canvases(hi - max(lo, t), last, clip.geom)
        parts_m.append(m)
        parts_i.append(i_)
        parts_f.append(f)
    fm = None if task.one_mask else np.concatenate(parts_f or [np.zeros((0, s, s), np.uint8)])
    mask = task.mask(clip.geom, None) if task.one_mask else clip.mask
    return replace(clip, masked=np.concatenate(parts_m), inpainted=np.concatenate(parts_i), frame_masks=fm,
                   mask=mask, holds=Holds.SPAN, frame_ids=None)
