"""Single-process outpainting of one video: frames in memory -> outpainted frames per ratio. No Ray.

(Just past 500 lines on purpose: the four steps of one video and the state they hand on read in
order in one file; the latent sources already live in :mod:`m3ddm_ray.latents`.)

The work for one (video, ratio) pair is split the way the Ray job runs it, so that the stages of
:mod:`m3ddm_ray.distributed` are thin adapters over these functions:

1. :func:`prepare_clip` (CPU, numpy/OpenCV + one torch resize): canvases, masks, global frames,
   window plan -> :class:`PreparedClip`.
2. :meth:`Outpainter.run_coarse` (GPU): encode the global frames, run the stride-15 keyframe pass
   -> :class:`ClipState` (global latents + stored keyframe latents).
3. :meth:`Outpainter.run_fine` (GPU): run the stride-5 / stride-1 passes with the stored latents as
   guide frames and decode the output frames -> generated canvases ``(T, S, S, 3)``.
4. :func:`finalize_clip` (CPU): paste the known pixels back, crop to the ratio (or compose at the
   source resolution) -> exactly ``T`` output frames.

:class:`OutpaintPipeline` chains the four for interactive use and the ``outpaint-video`` command.

Where the official script re-encodes each window's frames and the global frames with fresh VAE
posterior noise, production encodes each frame once per clip (:class:`~m3ddm_ray.latents.ClipLatents`).
The official per-window behaviour is available through the same seam
(:class:`~m3ddm_ray.latents.PerWindowLatents`) for parity tests with injected noise; both live in
:mod:`m3ddm_ray.latents` and are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from . import geometry
from .errors import InputError
from .plan import Segment, Window, WindowPlan, plan_windows
from .latents import ClipLatents, KeyedPosteriorNoise, PerWindowLatents, images_to_tensor  # noqa: F401 - re-exported
from .sampling import SamplerSettings, WindowInputs, decode_latents, make_scheduler, sample_windows, vae_factor  # noqa: F401
from .settings import OutpaintSettings  # noqa: F401 - re-exported (the settings live torch-free)


# --------------------------------------------------------------------------- 1. prepare (CPU)
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


@dataclass
class PreparedClip:
    """One (video, ratio) pair ready for diffusion; numpy only, so it travels between Ray stages.

    Attributes:
        ratio: target ratio.
        fps: source average frame rate (frames per second).
        geom: canvas placement (:class:`geometry.CanvasGeometry`).
        masked: uint8 ``(T, S, S, 3)`` canvases with the source pasted in, zeros elsewhere.
        inpainted: uint8 ``(T, S, S, 3)`` the same, holes filled by OpenCV TELEA (diffusion start).
        mask: uint8 ``(S, S)`` 1 = generate, 0 = known.
        global_frames: float32 ``(G, 3, S, S)`` in ``[-1, 1]``.
        strides: the pass strides used for the plan.
        passthrough: the source already has the target ratio: no diffusion, frames pass unchanged.
        first_frame: index of ``masked[0]`` in the video (0 for a whole clip; the first frame of a
            segment's span for :meth:`segment_slice`).
        total_frames: ``T`` of the whole video when ``masked`` holds only a span (None: all of it).
        segment: index of the segment (:meth:`WindowPlan.segments`) this slice was made for, or
            None for a whole clip.
        frame_ids: the video frames whose canvases ``masked`` / ``inpainted`` hold, in order, when
            they are not the contiguous span from ``first_frame`` (the coarse stage's keyframe
            canvases: :func:`prepare_clips` with ``segmented=True``); None otherwise.
        canvas_file: URI of a scratch file holding the canvases of ``frame_ids`` instead of
            ``masked`` / ``inpainted`` (which then have 0 rows; :mod:`m3ddm_ray.canvas_file`), read
            back with ``canvas_options`` (fsspec options); None: the arrays hold them.
        frame_masks: uint8 ``(N, S, S)`` 0/1, one pixel mask per row of ``masked`` / ``inpainted``
            (inpainting and extension, :mod:`m3ddm_ray.tasks`), or None: ``mask`` for every frame
            (outpainting; every code path is then exactly the one-mask path). With
            :attr:`canvas_file` it has 0 rows: the masks are in the file with the canvases.
        canvas_reversed: the first ``canvas_reversed`` positions of :attr:`canvas_file` are stored
            last first (a backward extension's known keyframes, decoded in time order, the reverse
            of its working order); 0: every position in order.

    A clip may travel without canvases (``masked`` with 0 rows, not a passthrough): a segment's
    :meth:`segment_shell`, whose canvases a CPU stage builds from a range decode of its span
    (:meth:`needs_canvases`, :func:`with_span_canvases`).
    """

    ratio: geometry.Ratio
    fps: float
    geom: geometry.CanvasGeometry
    masked: np.ndarray
    inpainted: np.ndarray
    mask: np.ndarray
    global_frames: np.ndarray
    strides: tuple[int, ...]
    passthrough: bool = False
    first_frame: int = 0
    total_frames: int | None = None
    segment: int | None = None
    frame_ids: tuple[int, ...] | None = None
    canvas_file: str | None = None
    canvas_options: dict | None = None
    frame_masks: np.ndarray | None = None
    canvas_reversed: int = 0

    @property
    def num_frames(self) -> int:
        """``T`` of the whole video (also for a segment slice)."""
        return int(self.total_frames if self.total_frames is not None else self.masked.shape[0])

    def rows(self, frames: Sequence[int]) -> list[int]:
        """Positions in ``masked`` / ``inpainted`` of video frames ``frames``.

        Raises:
            RuntimeError: a frame outside the span this clip (slice) holds.
        """
        if self.frame_ids is not None:
            held = np.asarray(self.frame_ids, dtype=np.int64)
            want = np.asarray([int(f) for f in frames], dtype=np.int64)
            pos = np.searchsorted(held, want)
            ok = (pos < len(held)) & (held[np.minimum(pos, len(held) - 1)] == want) if len(held) else pos < 0
            if not np.all(ok):
                raise RuntimeError(f"frames {want[~ok][:4].tolist()}... have no canvas here (this clip holds the "
                                   f"canvases of {len(held)} keyframes only)")
            return [int(p) for p in pos]
        lo, n = self.first_frame, int(self.masked.shape[0])
        out = [int(f) - lo for f in frames]
        if any(not 0 <= r < n for r in out):
            raise RuntimeError(f"frames {list(frames)[:4]}... are outside the held span [{lo}, {lo + n})")
        return out

    @property
    def needs_canvases(self) -> bool:
        """True for a :meth:`segment_shell` whose canvases are not built yet."""
        return self.segment is not None and not self.passthrough and self.masked.shape[0] == 0

    def canvases(self, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(masked, inpainted)`` uint8 ``(len(rows), S, S, 3)`` at positions ``rows`` (:meth:`rows`),
        from the arrays or from :attr:`canvas_file`."""
        if self.canvas_file is None:
            return self.masked[rows], self.inpainted[rows]
        return self._from_file(rows)[:2]

    def _from_file(self, rows: Sequence[int], masks_only: bool = False) -> tuple[np.ndarray, ...]:
        """``(masked, inpainted[, masks])`` of positions ``rows`` read from :attr:`canvas_file`
        (``masks_only``: ``(masks,)``, reading the mask bytes alone)."""
        from .canvas_file import read_canvas_rows

        k = int(self.canvas_reversed)
        pos = [k - 1 - int(r) if int(r) < k else int(r) for r in rows]
        return read_canvas_rows(self.canvas_file, pos, self.geom.canvas_size, self.canvas_options,
                                with_masks=self.frame_masks is not None, masks_only=masks_only)

    def segment_slice(self, segment: Segment) -> "PreparedClip":
        """This clip with canvases only for ``segment.frames`` (what a segment's fine work needs;
        the global frames stay behind: the fine stage reads their latents from the coarse state)."""
        lo, hi = segment.frame_range
        rows = self.rows(range(lo, hi))
        masked, inpainted = self.canvases(rows)
        fm = None if self.frame_masks is None else self.masks_of(range(lo, hi))
        return replace(self, masked=masked.copy(), inpainted=inpainted.copy(),
                       global_frames=self.global_frames[:0], first_frame=lo, total_frames=self.num_frames,
                       segment=segment.index, frame_ids=None, canvas_file=None, canvas_options=None,
                       frame_masks=None if fm is None else fm.copy(), canvas_reversed=0)

    def segment_shell(self, segment: Segment) -> "PreparedClip":
        """This clip for ``segment`` without any canvas: what a segment row carries from the coarse
        stage to the fine actor, which builds its canvases (:func:`with_span_canvases`). It carries
        no pixel mask either (``mask`` has shape ``(0, 0)``): an outpainting mask is a function of
        :attr:`geom` (:func:`geometry.pixel_mask`), rebuilt with the canvases -- so a shell is a few
        hundred bytes at any canvas size."""
        s = self.geom.canvas_size
        empty = np.zeros((0, s, s, 3), np.uint8)
        fm = None if self.frame_masks is None else self.frame_masks[:0]
        mask = self.mask if self.frame_masks is not None else np.zeros((0, 0), np.uint8)
        return replace(self, masked=empty, inpainted=empty, mask=mask, global_frames=self.global_frames[:0],
                       first_frame=segment.frame_range[0], total_frames=self.num_frames,
                       segment=segment.index, frame_ids=None, canvas_file=None, canvas_options=None,
                       frame_masks=fm, canvas_reversed=0)

    def masks_of(self, frames: Sequence[int]) -> np.ndarray:
        """uint8 ``(N, S, S)`` pixel masks of video frames ``frames`` (``mask`` repeated when there are
        no per-frame masks)."""
        if self.frame_masks is None:
            return np.repeat(self.mask[None], len(frames), axis=0)
        if self.canvas_file is not None:
            return self._from_file(self.rows(frames), masks_only=True)[0]
        return self.frame_masks[self.rows(frames)]

    @property
    def plan(self) -> WindowPlan:
        """The window plan (pure function of T, fps and strides; rebuilt where needed)."""
        return plan_windows(self.num_frames, self.fps, self.strides)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    from .quality import check_frames  # the one frame validator

    return check_frames(frames, "frames")


def canvas_frames(plan: WindowPlan) -> tuple[int, ...] | None:
    """Frames whose canvases the prepare stage keeps for a segmented run: those of the coarse
    windows when the fine work splits into several segments (each segment then builds its own
    from a range decode, :func:`with_span_canvases`), else None (all frames: one segment needs
    them all in one place anyway)."""
    if len(plan.segments()) <= 1:
        return None
    return tuple(sorted({f for w in plan.coarse for f in w.frame_ids}))


def with_span_canvases(clip: PreparedClip, frames: np.ndarray) -> PreparedClip:
    """A :meth:`PreparedClip.segment_shell` with the canvases of its span built from ``frames``.

    Args:
        frames: uint8 ``(N, H, W, 3)`` source frames ``first_frame .. first_frame + N - 1`` (the
            segment's :attr:`~m3ddm_ray.plan.Segment.frame_range`).

    Returns:
        The clip with ``masked`` / ``inpainted`` ``(N, S, S, 3)`` and ``mask`` ``(S, S)``, exactly
        what the whole clip's :func:`prepare_clips` makes for those frames (the canvases are per frame).

    Raises:
        RuntimeError: a clip with per-frame masks (inpainting, extension: their canvases are not
            the outpainting canvases; :mod:`m3ddm_ray.task_prepare` rebuilds theirs).
    """
    if clip.frame_masks is not None:
        raise RuntimeError("with_span_canvases builds outpainting canvases; a clip with per-frame masks "
                           "(m3ddm_ray.tasks) gets its span's canvases from task_prepare.inpaint_span / extend_span")
    masked, inpainted = geometry.make_canvases(_check_frames(frames), clip.geom)
    return replace(clip, masked=masked, inpainted=inpainted, mask=geometry.pixel_mask(clip.geom), frame_ids=None)


def prepare_clips(frames: Iterable[np.ndarray], num_frames: int, fps: float, ratios,
                  settings: OutpaintSettings = OutpaintSettings(), chunk: int = 32,
                  segmented: bool = False, sink: Callable | None = None) -> list[PreparedClip]:
    """CPU preparation of one video for several ratios in a single streaming pass.

    Canvases are built chunk by chunk and each global frame is resized as it goes by, so only
    canvas-resolution arrays are kept: memory is ``O(T * S^2)``, never the whole video at source
    resolution (official ``preprocess_frames_speed_square`` per frame; README §5.2-5.3). With
    ``segmented=True`` (the Ray job) only the coarse windows' canvases are kept when the clip
    splits into several segments (:func:`canvas_frames`, about ``T / 15`` frames), and the clips
    carry them in ``frame_ids`` order -- or, with ``sink``, hand them to ``sink(j, masked,
    inpainted)`` chunk by chunk (``j``: index of the ratio; positions in ``frame_ids`` order) and hold
    none (the job streams them to a scratch file, :mod:`m3ddm_ray.canvas_file`).

    Args:
        frames: iterable of uint8 ``(H, W, 3)`` RGB frames, in order (a list, an array or a decoder).
        num_frames: exact ``T`` (the global-frame positions depend on it).
        fps: source frame rate (> 0).
        ratios: ``"9:16,1:1"`` or a sequence of ratios.

    Returns:
        One :class:`PreparedClip` per ratio, in the order given.

    Raises:
        InputError: bad fps/ratios/settings, frames of another dtype/size, or a frame count that
            differs from ``num_frames``.
    """
    if not fps or not np.isfinite(fps) or fps <= 0:
        raise InputError(f"fps={fps!r} must be a positive number of frames per second")
    if num_frames < 1:
        raise InputError("the video has 0 frames; nothing to outpaint")
    rs = geometry.parse_ratios(ratios)
    gids = geometry.global_frame_ids(num_frames, settings.num_global_frames)
    strides = tuple(settings.strides) if settings.strides else tuple(plan_windows(num_frames, fps).strides)
    keep = canvas_frames(plan_windows(num_frames, fps, strides)) if segmented else None
    slot = None if keep is None else {f: k for k, f in enumerate(keep)}
    rows_held = num_frames if keep is None else (0 if sink is not None else len(keep))
    geoms, masked, inpainted, globals_ = None, None, None, {}
    buf: list[np.ndarray] = []
    seen = 0

    def flush():
        nonlocal seen
        arr = _check_frames(np.stack(buf))
        if slot is None:
            sel, dest = slice(None), slice(seen, seen + len(arr))
        else:
            sel = [i for i in range(len(arr)) if seen + i in slot]
            dest = [slot[seen + i] for i in sel]
        for j, g in enumerate(geoms):
            if g is not None and (slot is None or sel):
                m, i = geometry.make_canvases(arr[sel], g)
                if slot is not None and sink is not None:
                    sink(j, m, i)
                else:
                    masked[j][dest], inpainted[j][dest] = m, i
        for k, fid in enumerate(gids):
            if seen <= fid < seen + len(arr) and fid not in globals_:
                globals_[int(fid)] = make_global_frames(arr, [fid - seen], settings.canvas_size)[0]
        seen += len(arr)
        buf.clear()

    for frame in frames:
        if geoms is None:
            h, w = np.asarray(frame).shape[:2]
            geoms = [None if geometry.is_passthrough(h, w, r) else geometry.plan_canvas(h, w, r, settings.canvas_size)
                     for r in rs]
            s = settings.canvas_size
            masked = [np.zeros((rows_held, s, s, 3), np.uint8) if g else None for g in geoms]
            inpainted = [np.zeros((rows_held, s, s, 3), np.uint8) if g else None for g in geoms]
        if seen + len(buf) >= num_frames:
            raise InputError(f"the video has more frames than num_frames={num_frames}")
        buf.append(np.asarray(frame))
        if len(buf) == chunk:
            flush()
    if buf:
        flush()
    if seen != num_frames:
        raise InputError(f"got {seen} frames, expected num_frames={num_frames}")
    gf = np.stack([globals_[int(f)] for f in gids])
    out = []
    for j, r in enumerate(rs):
        g = geoms[j]
        if g is None:  # already at the target ratio: passthrough, nothing to diffuse
            empty = np.zeros((num_frames, 0, 0, 3), np.uint8)
            out.append(PreparedClip(r, float(fps), geometry.plan_canvas(h, w, r, settings.canvas_size), empty,
                                    empty, np.zeros((0, 0), np.uint8), np.zeros((0, 3, 0, 0), np.float32),
                                    strides, passthrough=True))
        else:
            out.append(PreparedClip(r, float(fps), g, masked[j], inpainted[j], geometry.pixel_mask(g), gf, strides,
                                    total_frames=None if keep is None else num_frames, frame_ids=keep))
    return out


def prepare_clip(frames: np.ndarray, fps: float, ratio, settings: OutpaintSettings = OutpaintSettings()) -> PreparedClip:
    """CPU preparation of one (video, ratio) pair held in memory; see :func:`prepare_clips`.

    Args:
        frames: uint8 ``(T, H, W, 3)`` RGB source frames.
        fps: source frame rate (> 0).
        ratio: target ratio (``"9:16"`` or :class:`geometry.Ratio`).

    Raises:
        InputError: bad frames, fps, ratio or settings.
    """
    frames = _check_frames(frames)
    return prepare_clips(frames, frames.shape[0], fps, [geometry.parse_ratio(ratio)], settings)[0]


# --------------------------------------------------------------------------- 2-3. diffusion (GPU)
@dataclass
class ClipState:
    """What the coarse stage hands to the fine stage (numpy, Ray-serialisable).

    Attributes:
        global_latents: float32 ``(G, 4, h, w)`` latents of the global frames.
        stored: frame index -> float32 ``(4, h, w)`` final latent (guide frames for later windows).
        generated: frame index -> uint8 ``(S, S, 3)`` decoded output canvas of that frame.
        windows_done: indices of the windows already run.
        unet_seconds: wall time spent in the diffusion loops.
    """

    global_latents: np.ndarray | None = None
    stored: dict[int, np.ndarray] = field(default_factory=dict)
    generated: dict[int, np.ndarray] = field(default_factory=dict)
    windows_done: list[int] = field(default_factory=list)
    unet_seconds: float = 0.0


def batch_windows(windows: Iterable[Window], max_batch: int) -> list[list[Window]]:
    """Split ``windows`` (in execution order) into consecutive groups that can be denoised as one UNet
    batch: the same pass, at most ``max_batch`` windows, and no window reading a stored latent of
    another window of its group (``Window.depends_on``). Running the groups in order gives the same
    stored latents as running the windows one by one (the first writer of a frame still wins).

    E.g. the official ``[15, 5, 1]`` plan: the stride-5 and stride-1 windows of a pass only read
    keyframes of earlier passes, so they batch freely; the ``[1]`` plan chains every window to the
    previous one (they overlap by a frame), so its groups have one window.
    """
    groups: list[list[Window]] = []
    for w in windows:
        g = groups[-1] if groups else None
        if (g is not None and len(g) < max_batch and g[0].pass_index == w.pass_index
                and not set(w.depends_on) & {x.index for x in g}):
            g.append(w)
        else:
            groups.append([w])
    return groups


class Outpainter:
    """Holds the UNet, the VAE and a scheduler; runs windows of prepared clips (one process, one device).

    A Ray actor keeps one ``Outpainter`` for its lifetime (the model stays loaded).
    """

    def __init__(self, unet, vae, settings: OutpaintSettings = OutpaintSettings(), scheduler_config=None):
        from .caching import TokenCache

        self.unet, self.vae, self.settings = unet, vae, settings
        self.scheduler = make_scheduler(scheduler_config, settings.sampler)
        self.tokens = TokenCache(settings.sampler.exact_caches)  # global-frame tokens once per clip

    @property
    def latent_factor(self) -> int:
        """Canvas side / latent side of this VAE (:func:`~m3ddm_ray.sampling.vae_factor`: 8 for SD's)."""
        return vae_factor(self.vae)

    def latents_for(self, clip: PreparedClip, state: ClipState) -> ClipLatents:
        """Production latent source for ``clip`` (posterior noise keyed per frame)."""
        s = self.settings
        noise = None if s.posterior == "mode" else KeyedPosteriorNoise(
            s.posterior_seed if s.posterior_seed is not None else s.sampler.seed)
        g = None if state.global_latents is None else torch.from_numpy(state.global_latents)
        latents = ClipLatents(self.vae, clip, noise, s.vae_batch_size, g)
        if g is None:
            state.global_latents = latents.global_latents().numpy()
        return latents

    def run_windows(
        self,
        clip: PreparedClip,
        windows: Iterable[Window],
        state: ClipState,
        latents=None,
        on_step: Callable[[int, int], None] | None = None,
        on_window: Callable[[Window, torch.Tensor], None] | None = None,
    ) -> ClipState:
        """Denoise ``windows`` (in order) and update ``state`` in place; returns it.

        After each window its final latents are stored for frames that have none yet (guide frames
        of later windows, golden README §5.7) and the positions whose image is an output frame
        (``plan.output_sources()``: the last window containing the frame, §5.9) are decoded.

        ``on_window(window, latents)`` is called after each window with its final latents
        ``(4, F, h, w)`` float32 (progress reporting, parity tests).

        Raises:
            RuntimeError: a window needs a guide latent that ``state`` does not have (stages run
                out of order).
        """
        import time

        plan = clip.plan
        owners = plan.output_sources()
        latents = latents if latents is not None else self.latents_for(clip, state)
        f_lat = self.latent_factor
        h = clip.geom.latent_side(f_lat)
        lmask = torch.from_numpy(geometry.latent_mask(clip.mask, f_lat).astype(np.float32))
        for group in batch_windows(windows, self.settings.sampler.max_batch):
            inputs = []
            for window in group:
                z_init, z_cond, z_uncond = latents.window_latents(window)
                tokens = self.tokens.tokens(self.unet, latents.global_latents(window))
                guides = {}
                for k in window.guide_positions:
                    frame = window.frame_ids[k]
                    if frame not in state.stored:
                        raise RuntimeError(f"window {window.index} needs the stored latent of frame {frame}; "
                                           f"run the earlier windows (coarse stage) first")
                    guides[k] = torch.from_numpy(state.stored[frame])
                f = len(window.frame_ids)
                if clip.frame_masks is None:
                    wmask = lmask.view(1, 1, 1, h, h).expand(1, 1, f, h, h)
                else:  # one latent mask per position (inpainting, extension)
                    per = geometry.latent_mask(clip.masks_of(window.frame_ids), f_lat).astype(np.float32)
                    wmask = torch.from_numpy(per).view(1, 1, f, h, h)
                inputs.append(WindowInputs(z_init, z_cond, z_uncond, wmask, guides, tokens, window.fps))
            t0 = time.perf_counter()
            xs = self.sample_group(clip, inputs, on_step)
            state.unet_seconds += time.perf_counter() - t0
            for window, x in zip(group, xs.float().cpu()):  # x: (4, F, h, w)
                for k, frame in enumerate(window.frame_ids):
                    if frame not in state.stored:
                        state.stored[frame] = x[:, k].numpy().copy()
                outs = [(frame, k) for frame, (wi, k) in enumerate(owners) if wi == window.index]
                if outs:
                    lat = torch.stack([x[:, k] for _, k in outs])
                    for (frame, _), img in zip(outs, self._decode(lat)):
                        state.generated[frame] = img
                state.windows_done.append(window.index)
                if on_window is not None:
                    on_window(window, x)
        return state

    def sample_group(self, clip: PreparedClip, inputs: list[WindowInputs], on_step=None) -> torch.Tensor:
        """Denoise one group of windows of ``clip``: :func:`~m3ddm_ray.sampling.sample_windows`
        (the seam :class:`m3ddm_ray.tiled.TiledOutpainter` fills with the fused tiles)."""
        return sample_windows(self.unet, self.scheduler, inputs, self.settings.sampler, on_step=on_step)

    def _decode(self, latents: torch.Tensor) -> list[np.ndarray]:
        bs = self.settings.vae_batch_size
        out = [decode_latents(self.vae, latents[i:i + bs]) for i in range(0, len(latents), bs)]
        return list(torch.cat(out).numpy())

    def run_coarse(self, clip: PreparedClip, **kw) -> ClipState:
        """Coarse stage: global-frame latents + the keyframe pass (``plan.coarse``, stride 15)."""
        state = ClipState()
        return self.run_windows(clip, clip.plan.coarse, state, **kw)

    def run_fine(self, clip: PreparedClip, state: ClipState, **kw) -> ClipState:
        """Fine stage: the remaining passes (``plan.fine``) guided by the coarse stage's latents; for
        a :meth:`PreparedClip.segment_slice`, only that segment's windows (:meth:`run_segment`)."""
        if clip.segment is not None:
            return self.run_segment(clip, clip.plan.segments()[clip.segment], state, **kw)
        return self.run_windows(clip, clip.plan.fine, state, **kw)

    def run_segment(self, clip: PreparedClip, segment: Segment, state: ClipState, **kw) -> ClipState:
        """Fine work of one segment (:meth:`WindowPlan.segments`): its windows, in order, guided by
        the coarse latents in ``state`` (:func:`segment_state`); ``clip`` may be the segment's
        :meth:`PreparedClip.segment_slice`. Afterwards ``state.generated`` holds exactly the output
        canvases of ``segment.output_frames``, equal to the whole-clip run's (posterior noise is
        keyed per frame, windows of a segment read only coarse latents and their own)."""
        windows = [clip.plan.windows[i] for i in segment.windows]
        return self.run_windows(clip, windows, state, **kw)


def segment_state(state: ClipState, segment: Segment) -> ClipState:
    """What one segment needs of the coarse stage's ``state``: the global-frame latents and the
    stored latents of ``segment.coarse_guides`` (a few frames, not the whole clip's)."""
    return ClipState(global_latents=state.global_latents,
                     stored={f: state.stored[f] for f in segment.coarse_guides},
                     windows_done=list(state.windows_done))


# --------------------------------------------------------------------------- 4. finalize (CPU)
def generated_array(clip: PreparedClip, state: ClipState, frames: Sequence[int] | None = None) -> np.ndarray:
    """Stack ``state.generated`` to uint8 ``(N, S, S, 3)`` for ``frames`` (default: all ``T``);
    raises RuntimeError if a frame is missing."""
    frames = list(range(clip.num_frames)) if frames is None else list(frames)
    missing = [f for f in frames if f not in state.generated]
    if missing:
        raise RuntimeError(f"no generated image for frames {missing[:5]}...; the fine stage did not finish")
    return np.stack([state.generated[f] for f in frames])


def finalize_clip(clip: PreparedClip, generated: np.ndarray | None, settings: OutpaintSettings = OutpaintSettings(),
                  source_frames: np.ndarray | None = None) -> np.ndarray:
    """Paste-back and crop: exactly ``T`` output frames for the clip's ratio.

    Args:
        generated: uint8 ``(T, S, S, 3)`` decoded canvases (ignored for a passthrough clip).
        source_frames: uint8 ``(T, H, W, 3)``; needed for ``output_size="source"`` and passthrough.

    Returns:
        uint8 ``(T, H', W', 3)``: with ``output_size="canvas"`` the crop :func:`geometry.crop_box` of
        the composited canvas; with ``"source"`` the source-resolution composition. A passthrough clip
        returns the source frames (cropped to even sizes for H.264).
    """
    return finalize_frames(clip, generated, settings, source_frames)[0]


def finalize_frames(clip: PreparedClip, generated: np.ndarray | None, settings: OutpaintSettings = OutpaintSettings(),
                    source_frames: np.ndarray | None = None, frames: Sequence[int] | None = None
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`finalize_clip` for the video frames ``frames`` (default: all ``T``; a segment's
    ``output_frames`` with a :meth:`PreparedClip.segment_slice`), also returning the composited
    canvases (for the quality numbers) -- the paste-back is done once.

    Args:
        generated: uint8 ``(N, S, S, 3)``, the decoded canvases of ``frames``.
        source_frames: uint8 ``(N, H, W, 3)`` source frames of ``frames`` (``output_size="source"``
            and passthrough).

    Returns:
        ``(output uint8 (N, H', W', 3), composite uint8 (N, S, S, 3) or None for a passthrough)``.
    """
    if clip.passthrough:
        if source_frames is None:
            raise InputError("a passthrough clip needs source_frames")
        h, w = source_frames.shape[1] // 2 * 2, source_frames.shape[2] // 2 * 2
        return np.ascontiguousarray(source_frames[:, :h, :w]), None
    masked = clip.masked if frames is None else clip.masked[clip.rows(frames)]
    mask = clip.mask
    if clip.frame_masks is not None:
        mask = clip.frame_masks if frames is None else clip.masks_of(frames)
    composite = geometry.paste_back(generated, masked, mask, mode=settings.paste_mode)
    if settings.output_size == "source":
        if source_frames is None:
            raise InputError("output_size='source' needs the source frames")
        return geometry.compose_source_resolution(composite, source_frames, clip.geom, clip.ratio), composite
    y0, y1, x0, x1 = geometry.crop_box(clip.geom, clip.ratio)
    return np.ascontiguousarray(composite[:, y0:y1, x0:x1]), composite


# --------------------------------------------------------------------------- the whole thing
class OutpaintPipeline:
    """Outpaint one video held in memory to one or more ratios, in this process.

    Example::

        pipe = OutpaintPipeline.from_pretrained()                   # released weights (hub / folders)
        outs = pipe(frames, fps=25.0, ratios="9:16,1:1")            # {"9:16": (T,H',W',3) uint8, ...}
    """

    def __init__(self, unet, vae, settings: OutpaintSettings = OutpaintSettings(), scheduler_config=None):
        self.settings = settings
        self.outpainter = Outpainter(unet, vae, settings, scheduler_config)

    @classmethod
    def from_pretrained(cls, unet: str | None = None, vae: str | None = None, *, dtype="auto", device="auto",
                        settings: OutpaintSettings = OutpaintSettings(), storage_options=None):
        """Load the UNet and VAE (folders, fsspec URLs or hub ids; defaults: the released weights)."""
        from .models.loading import DEFAULT_UNET, DEFAULT_VAE, load_unet, load_vae

        u = load_unet(unet or DEFAULT_UNET, dtype, device, storage_options=storage_options)
        v = load_vae(vae or DEFAULT_VAE, dtype, device, storage_options=storage_options)
        return cls(u, v, settings)

    def with_settings(self, **changes) -> "OutpaintPipeline":
        """A pipeline sharing the loaded models with some settings changed."""
        new = object.__new__(OutpaintPipeline)
        new.settings = replace(self.settings, **changes)
        new.outpainter = Outpainter(self.outpainter.unet, self.outpainter.vae, new.settings)
        return new

    def run_clip(self, frames: np.ndarray, fps: float, ratio, progress: bool = False) -> tuple[np.ndarray, PreparedClip, ClipState]:
        """Outpaint ``frames`` to one ratio; returns ``(output frames, prepared clip, diffusion state)``."""
        if self.settings.tiling.enabled and type(self) is OutpaintPipeline:
            raise InputError("tiling.working_size is set: run it with m3ddm_ray.tiled.TiledOutpaintPipeline "
                             "(the same interface), or set tiling.working_size=None")
        clip = prepare_clip(frames, fps, ratio, self.settings)
        state = ClipState()
        if not clip.passthrough:
            bar = _progress(clip, self.settings, progress)
            kw = {} if bar is None else {"on_step": lambda i, n: bar.update(1)}
            state = self.outpainter.run_coarse(clip, **kw)
            self.outpainter.run_fine(clip, state, **kw)
            if bar is not None:
                bar.close()
        gen = None if clip.passthrough else generated_array(clip, state)
        return finalize_clip(clip, gen, self.settings, frames), clip, state

    def __call__(self, frames: np.ndarray, fps: float, ratios="9:16", progress: bool = False) -> dict[str, np.ndarray]:
        """Outpaint to each ratio of ``ratios`` (``"9:16,1:1"`` or a list); returns ``{ratio: frames}``.

        Each value is uint8 ``(T, H', W', 3)``, exactly as many frames as the input.
        """
        return {str(r): self.run_clip(frames, fps, r, progress)[0] for r in geometry.parse_ratios(ratios)}


def _progress(clip: PreparedClip, settings: OutpaintSettings, enabled: bool):
    """A tqdm bar over all UNet steps of the clip (windows x steps), or None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    n_windows = len(clip.plan.windows)
    return tqdm(total=n_windows * settings.sampler.num_inference_steps, unit="step",
                desc=f"outpaint {clip.ratio} ({n_windows} windows)")
