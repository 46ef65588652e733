"""Window plan of the official M3DDM inference: which frames each 16-frame window denoises, in what
order, with which fps argument, and which positions are conditioned on stored ("guide") latents.

Pure Python / numpy. Follows official ``src/inference.py`` ``main()`` as recorded in
``tests/data/golden/README.md`` §5.1 (window loop), §5.7 (guide frames) and §5.9 (output files);
reproduces ``windows.npz`` of both golden cases exactly.

Official schedule (``T`` frames, ``W`` = window size 16)::

    strides = [1] if T < 50 else [15, 5, 1]
    for stride in strides:                       # coarse (keyframe) passes first, stride 1 last
        idx = list(range(T))[::stride]
        for start in range(0, T // stride - 1, W - 1):       # windows overlap by one position
            sel = idx[start:start + W] + [T - 1] * ...       # padded with the video's last frame
            run the window on frames sel with fps argument avg_fps // stride
            for k in 0..W-1: store latent k for frame sel[k] unless that frame already has one

Deviation: for ``T == 1`` the official stride-1 loop is ``range(0, 0, 15)`` (empty) and the video would
get no window at all. Here a pass whose loop is empty gets a single window at ``start = 0`` when it is
the final (stride-1) pass, so every frame is covered for every ``T >= 1``. For ``T >= 2`` the plan is
unchanged (the stride-1 loop is never empty then). Empty *coarse* passes (possible only with custom
strides) stay empty, as in the official loop.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping, Optional, Sequence, Tuple, Union

from m3ddm_ray.errors import InputError

__all__ = ["NO_SOURCE", "strides_for", "Window", "Segment", "WindowPlan", "plan_windows"]

#: ``guide_from`` entry of a position that is not a guide.
NO_SOURCE: Tuple[int, int] = (-1, -1)


def strides_for(num_frames: int) -> list[int]:
    """Official stride schedule: ``[1]`` if ``T < 50`` else ``[15, 5, 1]`` (README §5.1).

    Args:
        num_frames: ``T >= 1``.

    Raises:
        InputError: if ``num_frames`` is not a positive integer.
    """
    t = _pos_int("num_frames", num_frames)
    return [1] if t < 50 else [15, 5, 1]


@dataclass(frozen=True)
class Window:
    """One 16-frame denoising window (one pipeline call of the official code).

    Attributes:
        index: position in execution order (0-based over all passes).
        stride: frame stride of the pass (15, 5 or 1 in the official schedule).
        frame_ids: input frame index of each window position (length ``window_size``), padded with
            ``T - 1`` (golden ``w{i}_frame_ids``).
        sample_id: ``frame_ids[0]``; first number of the official output file names.
        fps: fps argument of the pipeline, ``avg_fps // stride`` (Python float floor division; the
            UNet later truncates it to int64).
        guide_flags: per position, True if the frame already had a stored latent when the window
            starts (golden ``w{i}_guide_flags``).
        guide_from: per position, ``(window, position)`` whose final latent was stored for that frame,
            ``(-1, -1)`` where the flag is False (golden ``w{i}_guide_from``).
        pass_index: index of the pass in ``WindowPlan.strides``.
        start: ``start`` of the official loop (index into the pass's strided frame list).
    """

    index: int
    stride: int
    frame_ids: Tuple[int, ...]
    sample_id: int
    fps: float
    guide_flags: Tuple[bool, ...]
    guide_from: Tuple[Tuple[int, int], ...]
    pass_index: int = 0
    start: int = 0

    @property
    def n_guides(self) -> int:
        """Number of guide positions (golden ``w{i}_n_guides``)."""
        return sum(self.guide_flags)

    @property
    def guide_positions(self) -> Tuple[int, ...]:
        """Positions whose frame already has a stored latent."""
        return tuple(k for k, g in enumerate(self.guide_flags) if g)

    @property
    def depends_on(self) -> Tuple[int, ...]:
        """Sorted indices of the earlier windows whose stored latents this window reads."""
        return tuple(sorted({w for w, _ in self.guide_from if w >= 0}))

    @property
    def output_names(self) -> Tuple[int, ...]:
        """Official output file numbers ``sample_id + k * stride`` per position (README §5.9); may
        exceed ``T - 1`` for padded positions (the official output-length bug)."""
        return tuple(self.sample_id + k * self.stride for k in range(len(self.frame_ids)))


@dataclass(frozen=True)
class Segment:
    """An independent piece of a clip's fine work: windows that read latents only from the coarse
    pass and from each other (see :meth:`WindowPlan.segments`).

    Attributes:
        index: position among the clip's segments (ordered by first window).
        windows: indices of its windows, in execution order.
        frames: sorted frames its windows cover (whose canvases / latents it needs).
        output_frames: sorted frames whose output image this segment makes (their
            :meth:`WindowPlan.output_sources` window is one of ``windows``).
        coarse_guides: sorted frames whose coarse-pass latent its windows read as guides.
    """

    index: int
    windows: Tuple[int, ...]
    frames: Tuple[int, ...]
    output_frames: Tuple[int, ...]
    coarse_guides: Tuple[int, ...]

    @property
    def frame_range(self) -> Tuple[int, int]:
        """``(first, last + 1)`` of :attr:`frames`: the span of the source to decode."""
        return (self.frames[0], self.frames[-1] + 1)


@dataclass(frozen=True)
class WindowPlan:
    """All windows of one video, in execution order, with the latent store they imply.

    Attributes:
        num_frames: ``T``.
        fps: average fps of the video (float, > 0).
        strides: stride of each pass, ending with 1.
        window_size: frames per window (16).
        windows: every window in execution order (``windows[i].index == i``).
        store_map: read-only mapping frame -> ``(window, position)`` that first stored its latent
            (README §5.7); covers every frame 0..T-1.

    Properties: ``coarse`` (windows of the first pass when there is more than one stride, i.e. the
    stride-15 keyframe pass; empty for ``strides == (1,)``), ``fine`` (all other windows).
    """

    num_frames: int
    fps: float
    strides: Tuple[int, ...]
    window_size: int
    windows: Tuple[Window, ...]
    store_map: Mapping[int, Tuple[int, int]]

    @property
    def coarse(self) -> Tuple[Window, ...]:
        """Windows of the first pass if there are several passes, else ``()``."""
        if len(self.strides) < 2:
            return ()
        return tuple(w for w in self.windows if w.pass_index == 0)

    @property
    def fine(self) -> Tuple[Window, ...]:
        """All windows not in :attr:`coarse`."""
        n = len(self.coarse)
        return self.windows[n:]

    def windows_of_pass(self, pass_index: int) -> Tuple[Window, ...]:
        """Windows of pass ``pass_index`` (stride ``strides[pass_index]``)."""
        return tuple(w for w in self.windows if w.pass_index == pass_index)

    def frames_stored_by(self, windows: Iterable[Union[Window, int]]) -> Tuple[int, ...]:
        """Sorted frames whose stored latent comes from one of ``windows`` (Window objects or indices).

        E.g. ``plan.frames_stored_by(plan.coarse)`` = the keyframes the coarse pass provides.
        """
        ids = {w.index if isinstance(w, Window) else int(w) for w in windows}
        return tuple(sorted(f for f, (w, _) in self.store_map.items() if w in ids))

    def windows_containing(self, frame: int) -> Tuple[int, ...]:
        """Indices of the windows (execution order) that contain ``frame`` at some position."""
        return tuple(w.index for w in self.windows if frame in w.frame_ids)

    def segments(self) -> Tuple[Segment, ...]:
        """The fine windows split into independent segments (connected components of the "reads a
        latent stored by" relation among fine windows).

        Rule: two fine windows are in one segment when one reads a guide latent the other stored
        (``guide_from``), transitively. So a segment's windows need only the coarse pass's latents
        and their own, may run in any order relative to other segments (in execution order
        inside), and give exactly the latents of the whole-clip run. Every frame's output image
        comes from the last window containing it (official output rule,
        :meth:`output_sources`), which lies in exactly one segment: :attr:`Segment.output_frames`
        partition the frames whose output window is fine.

        Segments are ordered by their output frames, each a run of consecutive frames (the job
        encodes each as one video piece and joins them); a plan whose groups would not make
        consecutive runs is one segment.

        With the official plan (``[15, 5, 1]``, ``T >= 50``) each segment is one stride-5 window
        (frames ``[75 s, 75 s + 75]``, keyframes at both ends) plus the stride-1 windows inside
        it; with ``strides == (1,)`` consecutive windows share a stored frame and the whole clip
        is one segment; other strides get whatever independent groups exist.
        """
        fine = self.fine
        if not fine:
            return ()
        coarse_ids = {w.index for w in self.coarse}
        parent = {w.index: w.index for w in fine}

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for w in fine:
            for src in w.depends_on:
                if src not in coarse_ids:
                    a, b = root(w.index), root(src)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
        groups: dict[int, list[Window]] = {}
        for w in fine:
            groups.setdefault(root(w.index), []).append(w)
        owner_of = {}
        for frame, (wi, _) in enumerate(self.output_sources()):
            owner_of.setdefault(wi, []).append(frame)

        def build(n: int, ws: list[Window]) -> Segment:
            frames = sorted({f for w in ws for f in w.frame_ids})
            outputs = sorted(f for w in ws for f in owner_of.get(w.index, ()))
            guides = sorted({w.frame_ids[k] for w in ws for k in w.guide_positions
                             if w.guide_from[k][0] in coarse_ids})
            return Segment(n, tuple(w.index for w in ws), tuple(frames), tuple(outputs), tuple(guides))

        segs = [build(0, groups[key]) for key in groups]
        # the job joins the segments' outputs as consecutive video pieces: each segment must make a
        # non-empty run of consecutive frames. Plans where that fails (possible with custom strides)
        # are one segment.
        if any(not s.output_frames or s.output_frames[-1] - s.output_frames[0] + 1 != len(s.output_frames)
               for s in segs):
            return (build(0, list(fine)),)
        segs.sort(key=lambda s: s.output_frames[0])
        return tuple(build(n, groups[root(s.windows[0])]) for n, s in enumerate(segs))

    def output_sources(self) -> Tuple[Tuple[int, int], ...]:
        """Per frame ``0..T-1``, the ``(window, position)`` whose composite is the official output frame.

        Simulates the official file writes (README §5.9): window ``i`` writes position ``k`` to file
        ``sample_id + k * stride`` and later windows overwrite earlier files; names ``>= T`` (padding
        junk) are ignored. For overlap frames this is the *next* window, where the frame was a guide.
        """
        src = [NO_SOURCE] * self.num_frames
        for w in self.windows:
            for k, name in enumerate(w.output_names):
                if name < self.num_frames:
                    src[name] = (w.index, k)
        return tuple(src)


def _pos_int(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
        raise InputError(f"{name}={v!r} must be a positive integer")
    return int(v)


def plan_windows(
    num_frames: int,
    fps: float,
    strides: Optional[Sequence[int]] = None,
    window_size: int = 16,
) -> WindowPlan:
    """Build the official window plan (README §5.1, §5.7), with the ``T == 1`` fix described in the
    module docstring.

    Args:
        num_frames: ``T >= 1``, number of decoded frames.
        fps: average frame rate (> 0, finite), e.g. decord's ``get_avg_fps()``; each window gets
            ``float(fps) // stride``.
        strides: pass strides, positive integers ending with 1; ``None`` = :func:`strides_for`.
        window_size: frames per window (>= 2; 16 for the released model).

    Returns:
        The :class:`WindowPlan`; every frame ``0..T-1`` is in at least one window and in ``store_map``.

    Raises:
        InputError: ``num_frames`` not a positive integer, ``fps`` not a finite number > 0,
            ``strides`` empty / not positive integers / not ending with 1, ``window_size < 2``.
    """
    t = _pos_int("num_frames", num_frames)
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"fps={fps!r} must be a finite number > 0 (frames per second of the video)")
    fps = float(fps)
    ws = _pos_int("window_size", window_size)
    if ws < 2:
        raise InputError(f"window_size={window_size!r} must be >= 2 (16 for the released model)")
    if strides is None:
        strides_t = tuple(strides_for(t))
    else:
        if isinstance(strides, (str, bytes)):
            raise InputError(f"strides={strides!r} must be a list of positive integers ending with 1")
        strides_t = tuple(strides)
        if not strides_t or any(
            isinstance(s, bool) or not isinstance(s, numbers.Integral) or s <= 0 for s in strides_t
        ) or strides_t[-1] != 1:
            raise InputError(
                f"strides={list(strides)!r} must be a non-empty list of positive integers ending "
                f"with 1, e.g. [15, 5, 1] or [1]"
            )
        strides_t = tuple(int(s) for s in strides_t)

    stored: dict[int, Tuple[int, int]] = {}
    windows: list[Window] = []
    last_pass = len(strides_t) - 1
    for p, stride in enumerate(strides_t):
        idx = list(range(t))[::stride]
        starts = list(range(0, t // stride - 1, ws - 1))
        if not starts and p == last_pass:
            starts = [0]  # deviation: T == 1 would otherwise get no window at all
        for start in starts:
            sel = idx[start:start + ws]
            sel = sel + [t - 1] * (ws - len(sel))
            i = len(windows)
            flags = tuple(f in stored for f in sel)
            gfrom = tuple(stored[f] if f in stored else NO_SOURCE for f in sel)
            windows.append(
                Window(
                    index=i,
                    stride=stride,
                    frame_ids=tuple(sel),
                    sample_id=sel[0],
                    fps=fps // stride,
                    guide_flags=flags,
                    guide_from=gfrom,
                    pass_index=p,
                    start=start,
                )
            )
            for k, f in enumerate(sel):
                if f not in stored:
                    stored[f] = (i, k)
    return WindowPlan(
        num_frames=t,
        fps=fps,
        strides=strides_t,
        window_size=ws,
        windows=tuple(windows),
        store_map=MappingProxyType(dict(sorted(stored.items()))),
    )
