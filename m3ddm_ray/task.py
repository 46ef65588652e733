"""The three tasks of the masked video model -- outpainting, inpainting, extension -- as one
interface. Pure numpy / OpenCV, no torch.

(Over 500 lines on purpose: everything that differs between the three tasks is in this one module,
so that no other module needs to ask which task it runs.)

M3DDM (Fan et al. 2023, §3) is a masked 3D diffusion model: each frame's mask channel marks what
to generate. The tasks differ only in what the canvas, the masks and the frame bookkeeping are;
the window plan, sampler, guides and global frames are the outpainting ones
(:mod:`m3ddm_ray.prepare`, :mod:`m3ddm_ray.pipeline`). A :class:`Task` owns that difference:

* **geometry** (:meth:`Task.plan`): the ``S x S`` canvas placement of the source frame;
* **rows**: a clip has :meth:`Task.num_rows` working rows; row ``r`` reads source frame
  :meth:`Task.row_of` (a backward extension works on the reversed video), new rows read none;
* each row's **canvases and mask** (:meth:`Task.canvases`): outpainting keeps one broadcast
  mask (:attr:`Task.one_mask`) and never builds per-row mask arrays;
* the **global frames**' pixels (:meth:`Task.global_pixels`);
* **finalize** (:meth:`Task.finalize`): paste-back, crop or source-size composition;
* the **audio window** and the **piece order** of a split clip; **spec** for the config hash
  and the result row (:meth:`Task.spec`, :func:`from_spec`).

The tiled mode's working canvases (:func:`m3ddm_ray.tiled.working_canvases`) are these methods at a working
size ``S_w`` instead of ``S`` -- :meth:`Task.plan` (an outpainting's canvas planned again with its
ratio rule, the ``1:1`` plan otherwise), each row's canvases and mask (an inpainting's source masks
mapped onto the ``S_w`` canvas by :func:`canvas_masks`) -- then :meth:`Task.working_rows`: what is
generated at ``S_w`` (an outpainting's border; an inpainting's holes; an extension's new frames;
the ``1:1`` padding is known there, from the layout) and the start image. The union of the rows'
masks selects the tiles (a tile is left out only when no row generates a pixel in it).

Tasks:

* :class:`Outpaint` ``(ratio)``: the frame on the canvas planned for ``ratio``
  (:func:`geometry.plan_canvas`), the border generated, the output cropped to ``ratio``.
* :class:`Inpaint` ``(mask_source, dilate)``: the frame fitted on the square keeping its aspect
  ratio (the ``1:1`` plan: the long side fills the canvas, centred), the padding and the masked
  pixels generated; every output pixel outside the (dilated) mask is the source pixel exactly.
* :class:`Extend` ``(n, direction)``: ``n`` fully masked new rows after the ``T`` known ones
  (``backward``: the video reversed, extended forward and reversed back); the known frames are the
  source frames exactly, the source audio stays under them.

The padding of the ``1:1`` plan is generated (mask 1): the model was trained to fill such borders,
never to read black bars as known content, and it is cropped away at the end. docs/tasks.md
describes the tasks and the numbers they reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, NamedTuple, Sequence

import cv2
import numpy as np

from . import geometry
from .errors import InputError
from .masks.frames import (MaskArray, MaskUsage, canvas_masks, cell_align, check_mask_count, dilate_masks,  # noqa: F401
                           dilated_name, fit_mask_frames, inpaint_mask_frames, inpaint_masks)
from .rules import EXTEND_DIRECTIONS, TASKS

__all__ = ["Task", "Outpaint", "Inpaint", "Extend", "MaskArray", "MaskURI", "Output", "RATIO_FREE_TASKS",
           "from_spec", "spec_of_record", "task_name", "made_by", "inpaint_masks", "inpaint_mask_frames", "even_frames", "check_fps"]

#: The canvas plan of inpainting and extension: the frame fitted into the square, keeping its aspect ratio.
SQUARE = "1:1"


def check_fps(fps) -> float:
    """``fps`` as a float; raises InputError unless it is a positive finite number."""
    if not fps or not np.isfinite(fps) or fps <= 0:
        raise InputError(f"fps={fps!r} must be a positive number of frames per second")
    return float(fps)


def even_frames(frames: np.ndarray) -> np.ndarray:
    """``frames`` (``(N, H, W, ...)``) cropped to even ``H`` and ``W`` (H.264 yuv420p needs them);
    the same array when they are already even."""
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    return frames if (h, w) == tuple(frames.shape[1:3]) else np.ascontiguousarray(frames[:, :h, :w])


def place(frames: np.ndarray, geom: geometry.CanvasGeometry) -> np.ndarray:
    """uint8 ``(T, S, S, 3)``: each frame resized into ``geom.known_box`` of a zero canvas, exactly as
    :func:`geometry.make_canvases` does (float32 ``cv2.resize``, ``INTER_LINEAR``, truncating cast),
    without its TELEA fill."""
    s = geom.canvas_size
    rh, rw = geom.resized_hw
    y0, y1, x0, x1 = geom.known_box
    out = np.zeros((len(frames), s, s, 3), np.uint8)
    for i, f in enumerate(frames):
        out[i, y0:y1, x0:x1] = cv2.resize(f.astype(np.float32), (rw, rh))
    return out


def fill(masked: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """OpenCV TELEA fill (radius 5, as the outpainting canvases) of every frame's masked pixels; a
    frame without masked pixels is copied."""
    out = masked.copy()
    for i in range(len(masked)):
        if masks[i].any():
            out[i] = cv2.inpaint(masked[i], masks[i], 5, cv2.INPAINT_TELEA)
    return out


def to_source(canvases: np.ndarray, geom: geometry.CanvasGeometry) -> np.ndarray:
    """The frame rectangle of each canvas upscaled to the source size (OpenCV ``INTER_CUBIC``, as
    :func:`geometry.compose_source_resolution`): uint8 ``(N, H, W, 3)``."""
    y0, y1, x0, x1 = geom.known_box
    h, w = geom.source_hw
    return np.stack([cv2.resize(np.ascontiguousarray(c[y0:y1, x0:x1]), (w, h), interpolation=cv2.INTER_CUBIC)
                     for c in canvases])


class Output(NamedTuple):
    """What :meth:`Task.finalize` gives for some rows.

    Attributes:
        frames: uint8 ``(N, H', W', 3)`` output frames in time order.
        scored: uint8 ``(K, h, w, 3)`` the frames the quality numbers are taken over (outpainting:
            the composited canvases; inpainting: the output frames; extension: its new frames), or
            None (a passthrough).
        region: uint8 ``(h, w)`` 0/1 the generated region of ``scored`` (:func:`quality.quality_report`).
    """

    frames: np.ndarray
    scored: np.ndarray | None
    region: np.ndarray | None


class MaskURI:
    """A mask source known by its URI alone, not opened: enough for an inpainting's spec, audio
    window and piece order (the job's driver and join); reading it raises RuntimeError."""

    def __init__(self, uri: str):
        self.uri = str(uri)

    def _closed(self, *a, **k):
        raise RuntimeError(f"the mask source {self.uri} was not opened (from_spec without open_masks)")

    count = property(_closed)
    iter = read = _closed


class MaskPass:
    """The masks of one streaming pass over a task's frames, in order (:meth:`Task.mask_pass`).

    ``next(n)`` gives the fitted source masks uint8 ``(n, H, W)`` of the next ``n`` frames, or None
    for a task without source masks; ``finish()`` runs the checks gathered over the whole pass."""

    def next(self, n: int) -> np.ndarray | None:
        return None

    def finish(self) -> None:
        return None


@dataclass(frozen=True)
class Task:
    """What differs between the tasks (module docstring). Frozen; travels pickled with a clip.

    Working rows: a clip of ``total`` rows; ``known`` = :meth:`known_rows` of them read a source frame.
    """

    name: ClassVar[str] = ""
    #: One pixel mask for every row (outpainting): no per-row mask arrays are built.
    one_mask: ClassVar[bool] = False

    # -- geometry and rows
    def plan(self, h: int, w: int, canvas_size: int) -> geometry.CanvasGeometry:
        """The canvas placement of an ``(h, w)`` source (pixels) on the ``canvas_size`` square (the
        model's canvas ``S``, or the tiled mode's working size ``S_w``)."""
        return geometry.plan_canvas(h, w, SQUARE, canvas_size)

    def passthrough(self, h: int, w: int) -> bool:
        """Whether an ``(h, w)`` source needs no diffusion at all (it is already the output)."""
        return False

    def num_rows(self, t: int) -> int:
        """Working rows of a clip of ``t`` source frames."""
        return int(t)

    def known_rows(self, total: int) -> int:
        """Source frames ``T`` of a clip of ``total`` working rows."""
        return int(total)

    def row_of(self, frame: int, t: int) -> int:
        """The working row source frame ``frame`` (of ``t``) becomes."""
        return int(frame)

    def source_range(self, lo: int, hi: int, total: int, span: bool = False) -> tuple[int, int]:
        """Source frames ``[a, b)`` (time order) that working rows ``[lo, hi)`` read: their known
        rows' frames, and with ``span`` also those their canvases are built from. ``(a, a)``: none."""
        return lo, hi

    # -- canvases
    def mask_pass(self, t: int, hw: tuple[int, int]) -> MaskPass:
        """The source masks of a pass over ``t`` frames of size ``hw`` (none here)."""
        return MaskPass()

    def span_masks(self, lo: int, hi: int, hw: tuple[int, int]) -> np.ndarray | None:
        """uint8 ``(hi - lo, H, W)`` 0/1 fitted source masks of source frames ``[lo, hi)`` read by
        range (None: the task has no source masks)."""
        return None

    def canvases(self, frames: np.ndarray, masks: np.ndarray | None,
                 geom: geometry.CanvasGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(masked, inpainted, row masks)`` of known rows: uint8 ``(N, S, S, 3)`` twice and
        ``(N, S, S)`` 0/1 (None for a :attr:`one_mask` task) from their source frames ``frames``
        ``(N, H, W, 3)`` and fitted source masks ``masks`` ``(N, H, W)`` (or None)."""
        m, i = geometry.make_canvases(frames, geom)
        return m, i, None if self.one_mask else np.repeat(geometry.pixel_mask(geom)[None], len(frames), axis=0)

    def new_canvases(self, n: int, last_inpainted: np.ndarray | None,
                     geom: geometry.CanvasGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Canvases of ``n`` new rows (rows past :meth:`known_rows`; none but for an extension)."""
        raise RuntimeError(f"{self.name} clips have no new rows")

    def mask(self, geom: geometry.CanvasGeometry, union: np.ndarray | None) -> np.ndarray:
        """uint8 ``(S, S)``: the clip's mask -- every row's for a :attr:`one_mask` task, else the union
        of all its rows' masks, from ``union``: the union uint8 ``(H, W)`` of the fitted source masks
        of every frame (None for a task without source masks)."""
        raise NotImplementedError

    def global_pixels(self, frames: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
        """uint8 ``(N, H, W, 3)``: what the global frames show of source frames ``frames``."""
        return frames

    def working_rows(self, masked: np.ndarray, masks: np.ndarray | None, layout: np.ndarray,
                     geom: geometry.CanvasGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Rows of the tiled mode's working canvases (:func:`m3ddm_ray.tiled.working_canvases`): what is
        generated at the working size ``S_w`` and the start image, from the task's own rows at
        ``S_w`` and the whole-canvas run's result (the layout).

        Inpainting and extension (the ``1:1`` plan): the padding outside the frame's rectangle was
        generated by the layout and is cropped away at the end, so at ``S_w`` it is **known** and
        holds the layout's pixels; what is generated is the rows' own region inside the frame --
        every latent cell of the row's mask that holds a pixel of the frame's rectangle
        (:func:`cell_align`): an inpainting's holes, an extension's new frames, nothing in an
        extension's known rows. The start image (``inpainted``) is the layout where a row is
        generated and the known pixels elsewhere.

        Args:
            masked: uint8 ``(N, S_w, S_w, 3)`` the rows' masked canvases at ``S_w``
                (:meth:`canvases` / :meth:`new_canvases` of the plan ``geom``).
            masks: uint8 ``(N, S_w, S_w)`` 0/1 their masks, or None for a :attr:`one_mask` task.
            layout: uint8 ``(N, S_w, S_w, 3)`` the layout's composited canvases of the same rows,
                upsampled to ``S_w``.
            geom: the plan at ``S_w`` (:meth:`plan`).

        Returns:
            ``(masked, inpainted, masks)``: uint8 ``(N, S_w, S_w, 3)`` twice and the rows' masks
            ``(N, S_w, S_w)`` 0/1 (None for a :attr:`one_mask` task, whose mask is the plan's).
        """
        padding = geometry.pixel_mask(geom).astype(bool)
        gen = cell_align(np.where(padding, 0, masks).astype(np.uint8))
        known_padding = (padding & (gen == 0))[..., None]
        masked = np.where(known_padding, layout, masked) * (1 - gen)[..., None]
        return masked.astype(np.uint8), np.where(gen[..., None] == 1, layout, masked).astype(np.uint8), gen

    def working_mask(self, geom: geometry.CanvasGeometry, union: np.ndarray | None) -> np.ndarray:
        """uint8 ``(S_w, S_w)`` 0/1: what some row of the clip generates at the working size -- the
        union over every row of the masks :meth:`working_rows` gives (the tiles are chosen by it,
        the same for every segment of the clip). Inpainting and extension: :meth:`mask` of the plan
        ``geom`` at ``S_w`` without the padding, grown to whole latent cells (:func:`cell_align`
        and the canvas masks both commute with the union); ``union`` as for :meth:`mask`."""
        padding = geometry.pixel_mask(geom).astype(bool)
        return cell_align(np.where(padding, 0, self.mask(geom, union)).astype(np.uint8))

    # -- output
    def finalize(self, clip, generated: np.ndarray | None, source: np.ndarray | None, rows: Sequence[int],
                 settings) -> Output:
        """The output of working rows ``rows`` (ascending, contiguous) of ``clip``.

        Args:
            clip: the :class:`~m3ddm_ray.prepare.PreparedClip` (whole clip or segment slice).
            generated: uint8 ``(len(rows), S, S, 3)`` decoded canvases of ``rows``.
            source: uint8 ``(K, H, W, 3)`` source frames :meth:`source_range` of ``rows``, in time
                order, or None where :meth:`needs_source` says none are needed.
        """
        raise NotImplementedError

    def needs_source(self, settings) -> bool:
        """Whether :meth:`finalize` reads the source frames."""
        return True

    def audio_window(self, total: int, fps) -> tuple[float, float | None]:
        """``(delay_s, end_s)`` of the source audio in the output of ``total`` rows at ``fps``
        (``(0, None)``: the source audio as it is)."""
        return 0.0, None

    def piece_position(self, segment: int, num_segments: int) -> int:
        """Where segment ``segment``'s piece goes in the joined video."""
        return int(segment)

    def spec(self) -> dict[str, Any] | None:
        """The task's inputs for the config hash and the result row's ``task_options`` (None: outpaint)."""
        return None

    @property
    def ratio(self) -> geometry.Ratio | None:
        """The target ratio of an outpainting, else None."""
        return None

    @property
    def mask_count(self) -> int | None:
        """How many masks the task's mask source holds (None: no mask source)."""
        return None


# ------------------------------------------------------------------------------------------ outpaint
@dataclass(frozen=True)
class Outpaint(Task):
    """Outpainting to ``target`` (a :class:`geometry.Ratio`, or ``"9:16"``)."""

    target: Any = "9:16"
    name: ClassVar[str] = "outpaint"
    one_mask: ClassVar[bool] = True

    def __post_init__(self):
        object.__setattr__(self, "target", geometry.parse_ratio(self.target))

    @property
    def ratio(self) -> geometry.Ratio:
        return self.target

    def plan(self, h, w, canvas_size):
        return geometry.plan_canvas(h, w, self.target, canvas_size)

    def passthrough(self, h, w):
        return geometry.is_passthrough(h, w, self.target)

    def mask(self, geom, union):
        return geometry.pixel_mask(geom)

    def working_rows(self, masked, masks, layout, geom):
        """The border is the output: generated at ``S_w`` as at ``S`` (the plan's mask, ``masks``
        None); the start image is the layout in the border and the known pixels inside."""
        gen = geometry.pixel_mask(geom).astype(bool)[..., None]
        return masked, np.where(gen, layout, masked).astype(np.uint8), None

    def working_mask(self, geom, union):
        """The border: the plan's mask at ``S_w``, as :meth:`working_rows` generates in every row."""
        return geometry.pixel_mask(geom)

    def needs_source(self, settings):
        return settings.output_size == "source"

    def finalize(self, clip, generated, source, rows, settings):
        """Paste-back and crop: with ``output_size="canvas"`` the crop :func:`geometry.crop_box` of the
        composited canvas; with ``"source"`` the source-resolution composition
        (:func:`geometry.compose_source_resolution`). A passthrough clip gives the source frames
        cropped to even sides."""
        if clip.passthrough:
            if source is None:
                raise InputError("a passthrough clip needs source_frames")
            return Output(even_frames(np.ascontiguousarray(source)), None, None)
        composite = geometry.paste_back(generated, clip.known_canvases(rows), clip.mask,
                                        mode=settings.paste_mode)
        if settings.output_size == "source":
            if source is None:
                raise InputError("output_size='source' needs the source frames")
            out = geometry.compose_source_resolution(composite, source, clip.geom, self.target)
        else:
            y0, y1, x0, x1 = geometry.crop_box(clip.geom, self.target)
            out = np.ascontiguousarray(composite[:, y0:y1, x0:x1])
        return Output(out, composite, clip.mask)


# ------------------------------------------------------------------------------------------- inpaint
class _InpaintPass(MaskPass):
    """The mask source read in order with the frames: fitted, dilated, checks gathered."""

    def __init__(self, task: "Inpaint", t: int, hw: tuple[int, int]):
        self.task, self.t, self.hw, self.seen = task, t, hw, 0
        self.usage, self.usage_d = MaskUsage(), MaskUsage()
        src = task.mask_source
        check_mask_count(src.count, t, task.label)
        self.single = None
        self.it = None
        if src.count == 1:  # fitted and dilated once, repeated for every chunk
            one = fit_mask_frames(src.read(0, 1), hw, task.label)
            self.single = (one, dilate_masks(one, task.dilate) if task.dilate else one)
        else:
            self.it = src.iter()

    def next(self, n):
        if self.single is not None:
            raw, fitted = (np.repeat(m, n, axis=0) for m in self.single)
        else:
            got = [m for _, m in zip(range(n), self.it)]
            if len(got) != n:
                check_mask_count(self.seen + len(got), self.t, self.task.label)
            raw = fit_mask_frames(np.stack(got), self.hw, self.task.label)
            fitted = dilate_masks(raw, self.task.dilate) if self.task.dilate else raw
        self.seen += n
        self.usage.add(raw)
        self.usage_d.add(fitted)
        return fitted

    def finish(self):
        self.usage.check(self.task.label)
        if self.task.dilate:
            self.usage_d.check(dilated_name(self.task.label, self.task.dilate))


@dataclass(frozen=True)
class Inpaint(Task):
    """Inpainting where ``mask_source`` marks (1 = remove), grown by ``dilate`` pixels.

    Attributes:
        mask_source: a :class:`m3ddm_ray.video.MaskSource` (a folder of per-frame images, one image
            or a mask video; read in order in prepare, by ranges for a segment) or a
            :class:`MaskArray`; 1 mask or one per frame.
        dilate: pixels (>= 0).
        label: the mask source in error messages (default: ``mask_uri <uri>``).
    """

    mask_source: Any = None
    dilate: int = 0
    label: str = ""
    name: ClassVar[str] = "inpaint"

    def __post_init__(self):
        if self.mask_source is None:
            raise InputError("an inpainting needs a mask source (masks=...)")
        if isinstance(self.dilate, bool) or int(self.dilate) < 0:
            raise InputError(f"dilate={self.dilate!r}: the mask dilation must be an integer >= 0 (pixels)")
        object.__setattr__(self, "dilate", int(self.dilate))
        if not self.label:
            object.__setattr__(self, "label", f"mask_uri {self.mask_source.uri}")

    @property
    def mask_count(self) -> int:
        return int(self.mask_source.count)

    def mask_pass(self, t, hw):
        return _InpaintPass(self, t, hw)

    def mask(self, geom, union):
        return canvas_masks(union[None], geom)[0]  # the canvas mask of a union is the union of the canvas masks

    def span_masks(self, lo, hi, hw):
        """The fitted, dilated source masks of frames ``[lo, hi)`` by a range read of the mask source
        (the count and usability checks ran in prepare)."""
        fitted = inpaint_mask_frames(self.mask_source.read(lo, hi), hw, self.dilate, self.label)
        return np.repeat(fitted, hi - lo, axis=0) if len(fitted) == 1 and hi - lo > 1 else fitted

    def canvases(self, frames, masks, geom):
        """The frame placed on the square (:func:`place`), the canvas masks :func:`masks.canvas_masks`
        (the source mask resized conservatively into the frame's rectangle, grown to whole 8x8 latent
        cells, plus the padding) set to 0 in ``masked`` and TELEA-filled (radius 5) in ``inpainted``."""
        cm = canvas_masks(masks, geom)
        masked = place(frames, geom) * (1 - cm)[..., None]
        return masked, fill(masked, cm), cm

    def global_pixels(self, frames, masks):
        """The source frames with their masks' pixels set to 0: the object to remove is not shown
        as context (the training masks a global frame inside the clip with its frame's mask)."""
        return frames * (1 - masks)[..., None]

    def finalize(self, clip, generated, source, rows, settings):
        """The generated canvas composited with the known canvas pixels (per-row masks), its frame
        rectangle upscaled to ``(H, W)`` (``INTER_CUBIC``), taken only where the source mask is 1:
        the source pixel exactly everywhere else. Scored: the output with the union of its masks."""
        rows = [int(r) for r in rows]
        source = np.asarray(source)
        lo, hi = rows[0], rows[-1] + 1
        masks = self.span_masks(lo, hi, tuple(clip.geom.source_hw))
        if source.shape[:3] != (len(rows),) + tuple(clip.geom.source_hw):
            raise InputError(f"inpaint finalize: source frames {source.shape} must be (N, H, W, 3) with "
                             f"N = {len(rows)} and (H, W) = {clip.geom.source_hw}")
        composite = geometry.paste_back(generated, clip.known_canvases(rows), clip.masks_of(rows),
                                        mode=settings.paste_mode)
        out = np.where(masks[..., None] == 1, to_source(composite, clip.geom), source).astype(np.uint8)
        return Output(out, out, masks.max(axis=0))

    def spec(self):
        return {"task": self.name, "mask_uri": str(self.mask_source.uri), "dilate": self.dilate}


# -------------------------------------------------------------------------------------------- extend
def check_extend(n, direction) -> int:
    """``n`` as an int; raises InputError for ``n`` < 1 or a direction other than forward / backward."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"frames={n!r}: the number of new frames must be an integer >= 1")
    if direction not in EXTEND_DIRECTIONS:
        raise InputError(f"direction={direction!r}; use 'forward' (after the video) or 'backward' (before it)")
    return int(n)


@dataclass(frozen=True)
class Extend(Task):
    """Extension by ``n`` new frames after (``forward``) or before (``backward``) the video.

    Working order: ``forward`` keeps time as it is; ``backward`` reverses the known frames, extends
    that forward and reverses the output back (the known frames then come first in the plan, so the
    first windows start from known context). Known rows: the outpainting canvases of the ``1:1``
    plan and its border mask; new rows: mask all 1, ``masked`` all 0 and, as the diffusion start,
    the last known row's ``inpainted`` canvas. Global frames: over the known rows only.

    Guides: a known frame conditions the windows through its masked-video latent with latent mask 0
    inside the frame, in the two conditional branches of the guidance; its own final latent is
    stored and becomes the guide of the later windows that contain it, as in outpainting.
    """

    n: int = 1
    direction: str = "forward"
    name: ClassVar[str] = "extend"

    def __post_init__(self):
        object.__setattr__(self, "n", check_extend(self.n, self.direction))

    @property
    def backward(self) -> bool:
        return self.direction == "backward"

    def num_rows(self, t):
        return int(t) + self.n

    def known_rows(self, total):
        return int(total) - self.n

    def row_of(self, frame, t):
        return int(t) - 1 - int(frame) if self.backward else int(frame)

    def source_range(self, lo, hi, total, span=False):
        """Known rows among ``[lo, hi)`` -- with ``span`` and new rows among them, row ``T - 1`` too
        (their diffusion start is its canvas) -- as source frames in time order."""
        known = self.known_rows(total)
        if span:
            b = min(hi, known)
            a = min(lo, known - 1) if hi > known else lo
            lo, hi = (a, b) if b > a else (a, a)
        hi = min(hi, known)
        if hi <= lo:
            return 0, 0
        return (known - hi, known - lo) if self.backward else (lo, hi)

    def mask(self, geom, union):
        return np.ones((geom.canvas_size, geom.canvas_size), np.uint8)  # the new rows: all generated

    def new_canvases(self, n, last_inpainted, geom):
        """``masked`` all 0, ``inpainted`` the last known row's inpainted canvas (uint8 ``(S, S, 3)``),
        masks all 1: uint8 ``(n, S, S, 3)``, ``(n, S, S, 3)``, ``(n, S, S)``."""
        s = geom.canvas_size
        return (np.zeros((n, s, s, 3), np.uint8), np.repeat(np.asarray(last_inpainted, np.uint8)[None], n, axis=0),
                np.ones((n, s, s), np.uint8))

    def finalize(self, clip, generated, source, rows, settings):
        """Known rows are the source frames exactly, new rows the generated canvases' frame rectangles
        upscaled to ``(H, W)`` (``INTER_CUBIC``), in time order. Scored: the new frames, every pixel
        generated (None when ``rows`` holds none)."""
        rows = [int(r) for r in rows]
        known = self.known_rows(clip.num_frames)
        k = sum(r < known for r in rows)
        hw = tuple(clip.geom.source_hw)
        source = np.zeros((0,) + hw + (3,), np.uint8) if source is None else np.asarray(source)
        if len(generated) != len(rows) or len(source) != k or (k and source.shape[1:3] != hw):
            raise InputError(f"extend finalize: {len(generated)} generated canvases and source frames {source.shape} "
                             f"for {len(rows)} rows ({k} known) at {hw}")
        src = source[::-1] if self.backward else source
        parts = [np.asarray(src, np.uint8).reshape((k,) + hw + (3,))]
        if k < len(rows):
            parts.append(to_source(np.asarray(generated)[k:], clip.geom))
        out = np.concatenate(parts)
        new = list(range(k, len(rows)))
        if self.backward:
            out = np.ascontiguousarray(out[::-1])
            new = [len(rows) - 1 - i for i in new]
        if not new:
            return Output(out, None, None)
        return Output(out, out[sorted(new)], np.ones(hw, np.uint8))

    def audio_window(self, total, fps):
        """Under the known frames only: ``forward`` from 0 to ``T / fps``; ``backward`` delayed by
        ``n / fps`` seconds (``fps`` a float or Fraction, frames per second)."""
        known = self.known_rows(total)
        delay = float(self.n / fps) if self.backward else 0.0
        return delay, delay + float(known / fps)

    def piece_position(self, segment, num_segments):
        """Counted from the end for a backward extension (its working order is the video reversed)."""
        return int(num_segments) - 1 - int(segment) if self.backward else int(segment)

    def spec(self):
        return {"task": self.name, "frames": self.n, "direction": self.direction}


# ------------------------------------------------------------------------------ rows of the batch job
def task_name(row: Mapping[str, Any]) -> str:
    """A stage row's or result row's task (``outpaint`` for rows without one: no ``task``, None,
    or the NaN a Ray block may make of a None)."""
    task = row.get("task")
    return "outpaint" if task is None or task != task or not task else str(task)


def made_by(names: set[str]) -> str:
    """How a job summary says what its outputs' tasks ``names`` made: ``"outpainted"`` for
    outpaint rows only, else ``"made (extend, inpaint, ...)"``."""
    return "outpainted" if names == {"outpaint"} else "made (" + ", ".join(sorted(names)) + ")"


def spec_of_record(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The task inputs of a validated manifest record as a JSON-able dict, None for outpaint:
    ``{"task": "inpaint", "mask_uri": str, "dilate": int}`` or ``{"task": "extend", "frames": int,
    "direction": "forward" | "backward"}`` -- what :meth:`Task.spec` gives for the task it names."""
    task = record.get("task") or "outpaint"
    if task == "outpaint":
        return None
    if task == "inpaint":
        return {"task": task, "mask_uri": str(record["mask_uri"]), "dilate": int(record.get("mask_dilate") or 0)}
    if task == "extend":
        return {"task": task, "frames": int(record["extend_frames"]),
                "direction": str(record.get("extend_direction") or "forward")}
    raise ValueError(f"unknown task {task!r}; one of {TASKS}")  # the manifest validation rejects it earlier


#: Tasks whose rows have no target ratio (an older result table holds their name in ``ratio``).
RATIO_FREE_TASKS: tuple[str, ...] = ("inpaint", "extend")


def from_spec(spec: Mapping[str, Any] | None, ratio=None, open_masks: Callable[[str], Any] | None = None) -> Task:
    """The :class:`Task` of a :meth:`Task.spec` (None: :class:`Outpaint` to ``ratio``); an inpainting's
    mask source is opened with ``open_masks(mask_uri)`` (None: a :class:`MaskURI`, not opened).

    Raises:
        InputError / VideoError: as ``open_masks``. ValueError: an unknown task.
    """
    if spec is None:
        return Outpaint(ratio)
    if spec["task"] == "inpaint":
        uri = str(spec["mask_uri"])
        return Inpaint(MaskURI(uri) if open_masks is None else open_masks(uri), int(spec["dilate"]))
    if spec["task"] == "extend":
        return Extend(int(spec["frames"]), str(spec["direction"]))
    raise ValueError(f"unknown task {spec['task']!r}; one of {TASKS}")
