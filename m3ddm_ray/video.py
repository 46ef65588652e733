"""Video input/output with PyAV (FFmpeg) over fsspec: probe, decode to RGB arrays, encode to H.264 MP4.

Conventions used throughout:

* A *URI* is a local path or any fsspec URL (``file://``, ``memory://``, ``s3://``, ...);
  ``storage_options`` is passed to the fsspec filesystem unchanged.
* A *frame* is a ``numpy.ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``, RGB, C-contiguous, in
  *display orientation*: when the container carries a rotation (display matrix or legacy ``rotate``
  tag) decoded frames are rotated accordingly, and ``H, W`` are the display height and width.
  Non-square pixels (sample aspect ratio) are not corrected.
* *Frame index* ``i`` is the ``i``-th frame the decoder outputs, in presentation order, counting from
  0. Frames are not resampled onto a constant-rate grid: a stream with dropped or variable-duration
  frames yields fewer frames than ``duration_s * fps`` (``tree.avi`` of the project's sample set stores
  444 frame slots at 15 fps but only 68 coded frames; it decodes to 68 frames).
* Times are in seconds, rates in frames per second.

Error policy: every failure a user can cause is raised as :class:`~m3ddm_ray.errors.VideoError`
(``uri`` + ``reason``) or, for bad arguments, :class:`~m3ddm_ray.errors.InputError`; raw PyAV/FFmpeg
exceptions never escape (they are kept as ``__cause__`` for debugging).

Damaged input policy (strict): the read fails with a ``VideoError`` naming the index of the first
frame that could not be produced, never silently returns fewer frames, when

* the demuxer flags a packet as incomplete or corrupt (a file cut in the middle of a packet),
* the decoder or demuxer reports an error part-way (garbage in the compressed data),
* an MP4/MOV whose index is trusted (see :class:`VideoInfo`) ends before all listed frames.

The frames handed out by :func:`iter_frames` before the error are good and in order (the decoder is
not drained after a break, because frames it still holds may belong further ahead). How many come
out before the break depends on the decoder's reorder and threading delay. Limits: damage the decoder
conceals by itself (painted-over macroblocks) is not detected; an AVI cut exactly at a packet boundary
just ends early (AVI headers also count dropped-frame slots, so their frame count cannot be checked).

Encoding uses the first H.264 encoder that opens, in the order :data:`H264_ENCODERS` (``libx264``,
which the PyAV wheels from PyPI bundle; then ``libopenh264``, which has no CRF mode and is driven by a
bit rate instead).
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import numbers
import os
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterable, Iterator, Sequence

import av
import numpy as np

from m3ddm_ray import storage
from m3ddm_ray.errors import InputError, VideoError

__all__ = [
    "VideoInfo",
    "probe",
    "iter_frames",
    "read_frames",
    "count_frames",
    "write_video",
    "fps_to_fraction",
    "h264_encoder",
    "H264_ENCODERS",
    "X264_PRESETS",
]

#: H.264 encoders tried by :func:`h264_encoder`, in order.
H264_ENCODERS: tuple[str, ...] = ("libx264", "h264", "libopenh264")

#: Valid ``preset`` values of :func:`write_video` (libx264's presets).
X264_PRESETS: tuple[str, ...] = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)

# Audio codecs copied into MP4 unchanged; any other codec is re-encoded to AAC.
_MP4_AUDIO_COPY = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})

# Containers whose stored frame count comes from a per-sample table (exact for a healthy file).
_SAMPLE_TABLE_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2")

# FFmpeg's AVCOL_* values for BT.601 (SMPTE 170M), limited range: what libswscale's default
# RGB -> YUV conversion produces, written into the H.264 stream so that players decode it the same way.
_AVCOL_SMPTE170M = 6
_AVCOL_RANGE_MPEG = 1


# --------------------------------------------------------------------------------------------------
# VideoInfo and probing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video.

    Attributes:
        uri: the URI as given.
        width, height: display size in pixels, after rotation (a portrait phone video stored as
            1920x1080 with rotation 90 has ``width=1080, height=1920``).
        num_frames: number of frames; exact only when ``num_frames_exact`` is True, else an estimate.
        num_frames_exact: True when ``num_frames`` was counted by decoding, or read from an MP4/MOV
            sample table whose count agrees with the stream duration. False for estimates: AVI headers
            (they count dropped-frame slots too), containers without a count (``duration_s * fps``),
            and MP4 files whose edit list hides frames. Use :func:`count_frames` (or
            ``probe(..., count_frames=True)``) for an exact count.
        fps: frame rate in frames per second (float) = ``float(frame_rate)``.
        frame_rate: the same rate as an exact fraction. It is the stream's average frame rate, except
            that the stream's nominal rate (e.g. ``30000/1001``) is used when the two agree to 0.1 %
            (the average carries rounding from the container's duration). Pass it to
            :func:`write_video` to keep the rate exact.
        duration_s: duration of the video stream in seconds (container duration when the stream has
            none; ``num_frames / fps`` as a last resort).
        rotation: clockwise rotation in degrees (0, 90, 180 or 270) applied to decoded frames to show
            them upright; same sign as the legacy ``rotate`` tag (ffprobe shows the display-matrix
            rotation with the opposite sign). Frames returned by this module are already rotated.
        has_audio: whether the file has at least one audio stream.
        video_codec: FFmpeg codec name of the video stream (``"h264"``, ``"mpeg4"``, ``"cinepak"``...).
        audio_codec: codec name of the first audio stream (``"aac"``, ``"mp3"``, ``"ac3"``...) or None.
        container_format: FFmpeg demuxer name (``"avi"``, ``"mov,mp4,m4a,3gp,3g2,mj2"``...).
    """

    uri: str
    width: int
    height: int
    num_frames: int
    num_frames_exact: bool
    fps: float
    frame_rate: Fraction
    duration_s: float
    rotation: int
    has_audio: bool
    video_codec: str
    audio_codec: str | None
    container_format: str


def _reason(e: BaseException) -> str:
    """Short text of a PyAV/OS error without errno numbers or file-object reprs."""
    if isinstance(e, av.FFmpegError):
        return str(e.strerror or type(e).__name__)
    if isinstance(e, OSError) and e.strerror:
        return str(e.strerror)
    return str(e) or type(e).__name__


@contextlib.contextmanager
def _open_container(uri: str, storage_options: dict[str, Any] | None, what: str = "") -> Iterator[Any]:
    """Open ``uri`` through fsspec and yield an ``av`` input container; map every failure to VideoError.

    ``what`` prefixes reasons (``"audio source: "``).
    """
    try:
        fs, path = storage.url_to_fs(uri, storage_options)
    except ImportError as e:
        raise VideoError(uri, f"{what}no filesystem for this URL ({e}); install the fsspec backend") from e
    except Exception as e:  # bad URL, bad storage_options
        raise VideoError(uri, f"{what}cannot access storage ({_reason(e)}); check the URL and storage_options") from e

    def fail_access(e: BaseException) -> VideoError:
        if isinstance(e, FileNotFoundError):
            return VideoError(uri, f"{what}file not found; check the path or URL")
        if isinstance(e, PermissionError):
            return VideoError(uri, f"{what}permission denied; check file permissions or storage credentials")
        if isinstance(e, IsADirectoryError):
            return VideoError(uri, f"{what}is a directory, not a video file; give the path of a file")
        return VideoError(uri, f"{what}cannot read the file ({_reason(e)})")

    try:
        meta = fs.info(path)
    except Exception as e:
        raise fail_access(e) from e
    if meta.get("type") == "directory":
        raise VideoError(uri, f"{what}is a directory, not a video file; give the path of a file")
    if meta.get("size") == 0:
        raise VideoError(uri, f"{what}empty file (0 bytes); re-create or re-upload it")
    try:
        fobj = fs.open(path, "rb")
    except Exception as e:
        raise fail_access(e) from e
    try:
        try:
            container = av.open(fobj, mode="r")
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VideoError(
                uri,
                f"{what}not a media file, or a format FFmpeg cannot read ({_reason(e)}); "
                "check that the file is a video and re-encode it if needed",
            ) from e
        try:
            yield container
        finally:
            with contextlib.suppress(Exception):
                container.close()
    finally:
        with contextlib.suppress(Exception):
            fobj.close()


def _video_stream(container: Any, uri: str) -> Any:
    """First real video stream (cover-art pictures in audio files are not video)."""
    for s in container.streams.video:
        if not (int(s.disposition) & int(av.stream.Disposition.attached_pic)):
            return s
    kinds = sorted({s.type for s in container.streams})
    found = f"it has only {', '.join(kinds)} streams" if kinds else "it has no streams"
    raise VideoError(uri, f"no video stream ({found}); give a video file")


def _codec_name(stream: Any) -> str:
    cc = stream.codec_context
    try:
        return cc.codec.canonical_name
    except Exception:  # no decoder available for it
        return cc.name or "unknown"


def _frame_rate(vs: Any) -> Fraction | None:
    avg = vs.average_rate
    nominal = vs.guessed_rate or vs.base_rate
    avg = Fraction(avg) if avg else None
    nominal = Fraction(nominal) if nominal else None
    if avg and nominal and abs(nominal - avg) <= Fraction(1, 1000) * avg:
        return nominal
    return avg or nominal


def _rotation_cw(frame: Any, vs: Any) -> int:
    """Clockwise display rotation (0/90/180/270) from the frame's display matrix or the rotate tag."""
    ccw = 0
    with contextlib.suppress(Exception):
        ccw = int(frame.rotation)
    if ccw:
        return int(round(-ccw / 90.0)) % 4 * 90
    tag = (vs.metadata or {}).get("rotate")
    if tag:
        with contextlib.suppress(ValueError):
            return int(round(float(tag) / 90.0)) % 4 * 90
    return 0


class _Source:
    """One open video: static stream facts plus a strict sequential frame decoder."""

    def __init__(self, container: Any, uri: str):
        self.uri = uri
        self.container = container
        self.vs = vs = _video_stream(container, uri)
        with contextlib.suppress(Exception):
            vs.thread_type = "AUTO"
        rate = _frame_rate(vs)
        duration = None
        if vs.duration and vs.time_base:
            duration = float(vs.duration * vs.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        header_frames = int(vs.frames or 0)
        if rate is None:
            if header_frames and duration:
                rate = Fraction(header_frames / duration).limit_denominator(1001)
            else:
                raise VideoError(uri, "unknown frame rate (the container stores none); re-mux or re-encode the video")
        self.frame_rate = rate
        if header_frames > 0:
            self.num_frames = header_frames
        else:
            self.num_frames = max(int(round((duration or 0.0) * float(rate))), 0)
        fmt = container.format.name or ""
        self.header_trusted = bool(
            header_frames > 0
            and duration
            and any(name in fmt.split(",") for name in _SAMPLE_TABLE_FORMATS)
            and abs(header_frames - duration * float(rate)) < 0.5
        )
        self.duration_s = duration if duration else self.num_frames / float(rate)
        self.audio = [s for s in container.streams.audio]
        self.format_name = fmt
        self.rotation: int | None = None  # known after the first frame
        self.decoded = 0  # frames output so far
        self.reached_end = False

    def frames(self) -> Iterator[Any]:
        """Yield decoded ``av.VideoFrame`` objects in order; strict about errors (see module doc).

        When the data breaks (a packet the demuxer flags as incomplete or corrupt, a decoder or
        demuxer error, or an MP4 that ends before the frames its sample table lists) VideoError names
        the index of the first frame that was not produced. The decoder is not drained then: frames
        it still holds are not in a reliable order once later packets are missing, so only the frames
        already yielded (all in correct display order) count as good.
        """
        n = 0
        packets = 0
        problem: str | None = None
        cause: BaseException | None = None
        try:
            for packet in self.container.demux(self.vs):
                if packet.size == 0:  # PyAV's end-of-stream marker (or an empty packet): drained below
                    continue
                if packet.is_corrupt:
                    problem = f"incomplete or corrupt data at byte {packet.pos}"
                    break
                packets += 1
                try:
                    decoded = packet.decode()
                except av.FFmpegError as e:
                    problem, cause = _reason(e), e
                    break
                for frame in decoded:
                    n = self._count(frame, n)
                    yield frame
        except av.FFmpegError as e:  # the demuxer itself failed
            problem, cause = _reason(e), e
        if problem is None and self.header_trusted and packets < self.num_frames:
            problem = f"the file holds only {packets} of the {self.num_frames} frames its index lists"
        if problem is None:
            try:
                rest = self.vs.codec_context.decode(None)  # end of stream: drain the decoder
            except av.FFmpegError as e:
                problem, cause, rest = _reason(e), e, []
            for frame in rest:
                n = self._count(frame, n)
                yield frame
        if problem is not None:
            if n == 0:
                raise VideoError(
                    self.uri,
                    f"cannot decode the video stream ({problem}); the file is damaged or its codec is unsupported, re-encode it",
                ) from cause
            raise VideoError(
                self.uri,
                f"damaged or truncated video: decoding broke at frame {n} ({problem}); frames 0..{n - 1} decoded fine; "
                "re-encode or re-download the source",
            ) from cause
        self.reached_end = True
        if n == 0:
            raise VideoError(self.uri, "no decodable video frames (the video stream is empty); give a video with at least one frame")

    def _count(self, frame: Any, n: int) -> int:
        if n == 0:
            self.rotation = _rotation_cw(frame, self.vs)
        self.decoded = n + 1
        return n + 1

    def to_rgb(self, frame: Any) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB array of ``frame`` in display orientation."""
        try:
            arr = frame.to_ndarray(format="rgb24")
        except (av.FFmpegError, ValueError) as e:
            raise VideoError(self.uri, f"cannot convert frame {self.decoded - 1} to RGB ({_reason(e)})") from e
        k = (self.rotation or 0) // 90
        if k:
            arr = np.ascontiguousarray(np.rot90(arr, k=-k))
        return arr

    def info(self) -> VideoInfo:
        """VideoInfo; exact frame count once the whole stream has been decoded."""
        rot = self.rotation or 0
        cc = self.vs.codec_context
        w, h = int(cc.width or 0), int(cc.height or 0)
        if rot in (90, 270):
            w, h = h, w
        exact = self.header_trusted
        num = self.num_frames
        if self.reached_end:
            num, exact = self.decoded, True
        return VideoInfo(
            uri=self.uri,
            width=w,
            height=h,
            num_frames=num,
            num_frames_exact=exact,
            fps=float(self.frame_rate),
            frame_rate=self.frame_rate,
            duration_s=float(self.duration_s),
            rotation=rot,
            has_audio=bool(self.audio),
            video_codec=_codec_name(self.vs),
            audio_codec=_codec_name(self.audio[0]) if self.audio else None,
            container_format=self.format_name,
        )


def _uri_str(uri: str | os.PathLike) -> str:
    return os.fspath(uri) if not isinstance(uri, str) else uri


def probe(uri: str | os.PathLike, storage_options: dict[str, Any] | None = None, *, count_frames: bool = False) -> VideoInfo:
    """Read a video's metadata and decode its first frame (for the rotation and to check it decodes).

    Args:
        uri: local path or fsspec URL.
        storage_options: fsspec filesystem options.
        count_frames: decode the whole stream to count frames exactly (``num_frames_exact=True``);
            slow for long videos. Damaged streams then raise like :func:`read_frames`.

    Returns:
        :class:`VideoInfo`.

    Raises:
        VideoError: file not found, permission denied, empty file, not a media file, no video stream,
            no decodable frame, undecodable first frame (and, with ``count_frames``, damage later on).
    """
    uri = _uri_str(uri)
    with _open_container(uri, storage_options) as container:
        src = _Source(container, uri)
        frames = src.frames()
        try:
            for _ in frames:
                if not count_frames:
                    break
        finally:
            frames.close()
        return src.info()


def count_frames(uri: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> int:
    """Exact number of frames, counted by decoding the whole video stream (no RGB conversion).

    Raises:
        VideoError: as :func:`probe`, and when decoding fails part-way (damaged or truncated file).
    """
    return probe(uri, storage_options, count_frames=True).num_frames


# --------------------------------------------------------------------------------------------------
# Reading frames
# --------------------------------------------------------------------------------------------------


def _check_index(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {value!r}")
    return int(value)


def iter_frames(
    uri: str | os.PathLike,
    start: int = 0,
    stop: int | None = None,
    step: int = 1,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[np.ndarray]:
    """Decode frames ``start, start+step, ...`` (below ``stop``) one at a time, in bounded memory.

    Decoding is sequential from the first frame (frames before ``start`` are decoded but not
    converted); decoding stops as soon as ``stop`` is reached. Like ``range`` slicing, indices past
    the end of the video are simply not produced (no error).

    Args:
        uri: local path or fsspec URL.
        start: first frame index (>= 0).
        stop: exclusive end index, or None for the end of the video.
        step: keep every ``step``-th frame (>= 1).
        storage_options: fsspec filesystem options.

    Yields:
        ``np.ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``, RGB, display orientation; a new
        array each time.

    Raises:
        InputError: bad ``start``/``stop``/``step`` (raised at the first ``next()``).
        VideoError: as :func:`probe`; on damage after some frames were yielded, the error comes when
            the broken frame is reached (the frames already yielded were good).
    """
    start = _check_index(start, "start")
    step = _check_index(step, "step")
    if stop is not None:
        stop = _check_index(stop, "stop")
    if start < 0 or step < 1 or (stop is not None and stop < 0):
        raise InputError(
            f"iter_frames({uri!s}): need start >= 0, step >= 1 and stop >= 0 or None; "
            f"got start={start}, stop={stop}, step={step}"
        )
    uri = _uri_str(uri)
    if stop is not None and stop <= start:
        return
    with _open_container(uri, storage_options) as container:
        src = _Source(container, uri)
        frames = src.frames()
        try:
            for i, frame in enumerate(frames):
                if stop is not None and i >= stop:
                    break
                if i >= start and (i - start) % step == 0:
                    yield src.to_rgb(frame)
        finally:
            frames.close()


def read_frames(
    uri: str | os.PathLike,
    indices: range | Sequence[int] | np.ndarray | None = None,
    storage_options: dict[str, Any] | None = None,
) -> tuple[np.ndarray, VideoInfo]:
    """Decode the requested frames into one array; frames that are not requested are never kept.

    Args:
        uri: local path or fsspec URL.
        indices: None for every frame; or a ``range`` / sequence / 1-D integer array of frame
            indices (>= 0, any order, repeats allowed; the output follows this order).
        storage_options: fsspec filesystem options.

    Returns:
        ``(frames, info)``: ``frames`` is ``np.ndarray`` ``(T, H, W, 3)`` ``uint8`` RGB in display
        orientation, ``T = len(indices)`` (or the number of frames when ``indices`` is None);
        ``info`` is the :class:`VideoInfo`, with an exact ``num_frames`` when the whole stream was
        decoded (always the case for ``indices=None``).

    Raises:
        InputError: an index is negative, not an integer, or past the last frame (the message gives
            the number of frames); an empty ``indices``.
        VideoError: as :func:`probe`, and damage before the last requested frame.
    """
    uri = _uri_str(uri)
    if indices is None:
        return _read_all(uri, storage_options)

    if isinstance(indices, range):
        req = np.asarray(indices, dtype=np.int64)
    else:
        arr = np.asarray(indices)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise InputError(f"read_frames({uri}): indices must be a 1-D sequence of integers, got {indices!r}")
        req = arr.astype(np.int64)
    if req.size == 0:
        raise InputError(f"read_frames({uri}): indices is empty; give at least one frame index or None for all")
    if req.min() < 0:
        raise InputError(f"read_frames({uri}): frame index {int(req.min())} is negative; indices start at 0")

    wanted, inverse = np.unique(req, return_inverse=True)  # sorted unique indices
    slot = {int(v): k for k, v in enumerate(wanted)}
    last = int(wanted[-1])
    buf: np.ndarray | None = None
    with _open_container(uri, storage_options) as container:
        src = _Source(container, uri)
        frames = src.frames()
        try:
            for i, frame in enumerate(frames):
                k = slot.get(i)
                if k is not None:
                    rgb = src.to_rgb(frame)
                    if buf is None:
                        buf = np.empty((len(wanted),) + rgb.shape, dtype=np.uint8)
                    elif rgb.shape != buf.shape[1:]:
                        raise VideoError(
                            uri, f"frame size changes mid-stream at frame {i} ({buf.shape[2]}x{buf.shape[1]} -> "
                            f"{rgb.shape[1]}x{rgb.shape[0]}); re-encode the video to a constant size"
                        )
                    buf[k] = rgb
                if i >= last:
                    break
        finally:
            frames.close()
        if src.decoded <= last:
            raise InputError(
                f"read_frames({uri}): frame index {last} is out of range; the video has {src.decoded} frames "
                f"(valid indices 0..{src.decoded - 1})"
            )
        info = src.info()
    assert buf is not None
    if len(wanted) == len(req) and np.array_equal(wanted, req):
        return buf, info
    return buf[inverse.reshape(-1)], info


def _read_all(uri: str, storage_options: dict[str, Any] | None) -> tuple[np.ndarray, VideoInfo]:
    buf: np.ndarray | None = None
    n = 0
    with _open_container(uri, storage_options) as container:
        src = _Source(container, uri)
        for frame in src.frames():
            rgb = src.to_rgb(frame)
            if buf is None:
                # preallocate from the header estimate; grow by 1.5x if it was too small
                buf = np.empty((max(src.num_frames, 1),) + rgb.shape, dtype=np.uint8)
            elif rgb.shape != buf.shape[1:]:
                raise VideoError(
                    uri, f"frame size changes mid-stream at frame {n} ({buf.shape[2]}x{buf.shape[1]} -> "
                    f"{rgb.shape[1]}x{rgb.shape[0]}); re-encode the video to a constant size"
                )
            if n == len(buf):
                bigger = np.empty((max(n + 1, int(n * 1.5)),) + buf.shape[1:], dtype=np.uint8)
                bigger[:n] = buf
                buf = bigger
            buf[n] = rgb
            n += 1
        info = src.info()
    assert buf is not None
    if n < len(buf):
        # do not keep a much larger buffer alive behind a view
        buf = buf[:n] if n >= 0.9 * len(buf) else buf[:n].copy()
    return buf, info


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def fps_to_fraction(fps: float | int | Fraction) -> Fraction:
    """Exact frame rate for the encoder time base.

    A ``Fraction`` (e.g. :attr:`VideoInfo.frame_rate`) is used as is. A float within 0.01 % of an
    integer becomes that integer (``14.999925 -> 15``); within 0.01 % of ``N*1000/1001`` it becomes
    that NTSC rate (``29.97 -> 30000/1001``, ``23.976 -> 24000/1001``); otherwise the closest fraction
    with denominator <= 1001 (``12.5 -> 25/2``).

    Raises:
        InputError: not a number, not finite, <= 0 or > 1000.
    """
    if isinstance(fps, bool) or not isinstance(fps, (numbers.Real, Fraction)):
        raise InputError(f"fps must be a positive number, got {fps!r}")
    if isinstance(fps, Fraction) or isinstance(fps, numbers.Integral):
        rate = Fraction(fps)
    else:
        f = float(fps)
        if not math.isfinite(f) or f <= 0:
            raise InputError(f"fps must be a positive finite number, got {fps!r}")
        n = round(f)
        if n > 0 and abs(f - n) <= 1e-4 * f:
            rate = Fraction(n)
        else:
            k = round(f * 1.001)
            if k > 0 and abs(f - k * 1000 / 1001) <= 1e-4 * f:
                rate = Fraction(k * 1000, 1001)
            else:
                rate = Fraction(f).limit_denominator(1001)
    if rate <= 0 or rate > 1000:
        raise InputError(f"fps must be in (0, 1000], got {fps!r}")
    return rate


@functools.lru_cache(maxsize=None)
def h264_encoder() -> str | None:
    """Name of the H.264 encoder :func:`write_video` uses: the first of :data:`H264_ENCODERS` that opens.

    ``"h264"`` is FFmpeg's alias for its default H.264 encoder and is reported under its real name.
    With the PyAV wheels from PyPI this is ``"libx264"``. None when no H.264 encoder works.
    """
    for name in H264_ENCODERS:
        if name not in av.codecs_available:
            continue
        try:
            ctx = av.CodecContext.create(name, "w")
            ctx.width, ctx.height, ctx.pix_fmt = 64, 64, "yuv420p"
            ctx.time_base = Fraction(1, 25)
            ctx.framerate = Fraction(25)
            ctx.open()
            real = ctx.codec.name
            with contextlib.suppress(Exception):
                ctx.close()
            return real
        except Exception:
            continue
    return None


class _FramesIterError(Exception):
    """Carries an exception raised by the caller's ``frames`` iterator through write_video's handlers."""

    def __init__(self, exc: Exception):
        super().__init__(repr(exc))
        self.exc = exc


def _guarded(it: Iterator[Any]) -> Iterator[Any]:
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as e:
            raise _FramesIterError(e) from e
        yield item


def _check_frame(arr: Any, i: int, uri: str, size: tuple[int, int] | None) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise InputError(f"write_video({uri}): frame {i} is a {type(arr).__name__}, expected a numpy array (H, W, 3) uint8")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"write_video({uri}): frame {i} has shape {arr.shape}, expected (H, W, 3) RGB")
    if arr.dtype != np.uint8:
        raise InputError(
            f"write_video({uri}): frame {i} has dtype {arr.dtype}, expected uint8; convert with np.clip(x, 0, 255).astype(np.uint8)"
        )
    h, w = arr.shape[:2]
    if size is None:
        if h < 2 or w < 2 or h % 2 or w % 2:
            raise InputError(
                f"write_video({uri}): frame size {w}x{h} (WxH) must have an even width and height for H.264 yuv420p; "
                f"crop or pad the frames to {w - w % 2 or 2}x{h - h % 2 or 2} or {w + w % 2}x{h + h % 2}"
            )
    elif (h, w) != size:
        raise InputError(
            f"write_video({uri}): frame {i} is {w}x{h} but frame 0 is {size[1]}x{size[0]}; all frames must have the same size"
        )
    return np.ascontiguousarray(arr)


class _AudioFeed:
    """Moves the first audio stream of ``audio_source`` into the output, interleaved with the video.

    Packets are copied unchanged when the codec can go into MP4 (:data:`_MP4_AUDIO_COPY`, checked by
    writing a test header), otherwise decoded and re-encoded to AAC. Timestamps are shifted so the
    source's first video frame (or, in an audio-only source, time 0) lines up with output frame 0.
    """

    def __init__(self, container: Any, uri: str):
        self.uri = uri
        self.container = container
        self.ain = container.streams.audio[0]
        self.codec = _codec_name(self.ain)
        vids = [s for s in container.streams.video if not (int(s.disposition) & int(av.stream.Disposition.attached_pic))]
        self.offset_s = 0.0
        if vids and vids[0].start_time is not None and vids[0].time_base:
            self.offset_s = float(vids[0].start_time * vids[0].time_base)
        self.copy = self.codec in _MP4_AUDIO_COPY and self._can_copy()
        self.out_stream: Any = None
        self.encoder: Any = None
        self._packets = container.demux(self.ain)
        self._pending: deque[tuple[float, Any]] = deque()  # (start time s, packet-or-frame)
        self._exhausted = False

    def _can_copy(self) -> bool:
        try:
            with av.open(io.BytesIO(), "w", format="mp4") as probe_out:
                probe_out.add_stream_from_template(self.ain)
                probe_out.start_encoding()
            return True
        except Exception:
            return False

    def add_to(self, out: Any) -> None:
        if self.copy:
            self.out_stream = out.add_stream_from_template(self.ain)
        else:
            cc = self.ain.codec_context
            rate = int(cc.sample_rate or 48000)
            if rate not in (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350):
                rate = 48000
            layout = "mono" if (cc.layout and cc.layout.nb_channels == 1) else "stereo"
            self.out_stream = out.add_stream("aac", rate=rate, layout=layout)
            self.out_stream.bit_rate = 192_000

    def _next_items(self) -> bool:
        """Read one source packet into ``_pending``; False at the end."""
        if self._exhausted:
            return False
        try:
            pkt = next(self._packets)
        except StopIteration:
            self._exhausted = True
            return False
        if self.copy:
            if pkt.dts is None or pkt.size == 0:
                return True
            t = float((pkt.pts if pkt.pts is not None else pkt.dts) * pkt.time_base) - self.offset_s
            self._pending.append((t, pkt))
        else:
            for fr in pkt.decode():  # the final empty packet flushes the decoder
                if fr.pts is None:
                    continue
                t = float(fr.pts * fr.time_base) - self.offset_s
                self._pending.append((t, fr))
        return True

    def _mux(self, out: Any, item: Any) -> None:
        if self.copy:
            shift = int(round(self.offset_s / self.ain.time_base)) if self.offset_s else 0
            if item.pts is not None:
                item.pts -= shift
            item.dts -= shift
            item.stream = self.out_stream
            out.mux(item)
        else:
            t = float(item.pts * item.time_base) - self.offset_s
            if t < 0:
                return
            item.pts = None
            for p in self.out_stream.encode(item):
                out.mux(p)

    def feed_until(self, out: Any, t_end: float | None) -> None:
        """Mux every item that starts before ``t_end`` seconds (all when None), in source order."""
        while True:
            while self._pending:
                t, item = self._pending[0]
                if t_end is not None and t >= t_end:
                    return
                self._pending.popleft()
                self._mux(out, item)
            if not self._next_items():
                return

    def finish(self, out: Any, video_end: float | None) -> None:
        """Mux the rest; with ``video_end`` drop items starting at or after it. Flush an encoder."""
        self.feed_until(out, video_end)
        self._pending.clear()
        if not self.copy:
            for p in self.out_stream.encode(None):
                out.mux(p)


def write_video(
    uri: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float | Fraction,
    *,
    audio_source: str | os.PathLike | None = None,
    crf: int = 18,
    preset: str = "medium",
    storage_options: dict[str, Any] | None = None,
    trim_audio: bool = True,
) -> None:
    """Encode RGB frames to an H.264 / yuv420p MP4 at ``uri``, atomically.

    The file is written to a local temporary file and published only when complete (``os.replace``
    for local targets, one fsspec ``put_file`` for remote ones; see :mod:`m3ddm_ray.storage`): if
    anything fails, including the ``frames`` iterator raising, nothing appears at ``uri`` and a file
    already there is kept. Parent directories of local targets are created. Frames are streamed: an
    iterator is consumed one frame at a time.

    Args:
        uri: output path or fsspec URL (the content is MP4 whatever the extension).
        frames: ``np.ndarray`` ``(T, H, W, 3)`` ``uint8`` RGB, or an iterable of ``(H, W, 3)`` ``uint8``
            arrays of one size. ``H`` and ``W`` must be even (yuv420p); no padding is done.
        fps: frame rate; a float is turned into an exact fraction by :func:`fps_to_fraction`
            (``29.97 -> 30000/1001``, ``15.0 -> 15``); a ``Fraction`` is used as is.
        audio_source: optional URI of a file whose first audio stream is put into the output:
            copied packet for packet when the codec fits in MP4 (AAC, MP3, AC-3, E-AC-3, ALAC, Opus,
            FLAC), otherwise re-encoded to AAC 192 kb/s. A source without audio gives a silent output.
            Timestamps are aligned so the source's first video frame matches output frame 0.
        crf: x264 constant rate factor, 0 (lossless) .. 51; lower is better quality.
        preset: x264 speed preset, one of :data:`X264_PRESETS`.
        storage_options: fsspec options for ``uri`` and ``audio_source``.
        trim_audio: drop audio that starts at or after the end of the video (True), so an output made
            from part of the source is not followed by a frozen last frame.

    Raises:
        InputError: bad ``fps``/``crf``/``preset``; no frames; a frame that is not ``(H, W, 3) uint8``;
            odd width or height; frames of different sizes.
        VideoError: the audio source cannot be read; the encoder or muxer failed; the upload failed.
        Exceptions raised by the ``frames`` iterator propagate unchanged (nothing is written).
    """
    uri = _uri_str(uri)
    rate = fps_to_fraction(fps)
    if isinstance(crf, bool) or not isinstance(crf, numbers.Integral) or not 0 <= int(crf) <= 51:
        raise InputError(f"write_video({uri}): crf must be an integer in 0..51, got {crf!r}")
    if preset not in X264_PRESETS:
        raise InputError(f"write_video({uri}): preset {preset!r} is not an x264 preset; use one of {', '.join(X264_PRESETS)}")
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4:
            raise InputError(f"write_video({uri}): frames array has shape {frames.shape}, expected (T, H, W, 3)")
        if len(frames) == 0:
            raise InputError(f"write_video({uri}): no frames to write; give at least one frame")
        _check_frame(frames[0], 0, uri, None)
        frame_iter: Iterator[Any] = iter(frames)
    else:
        frame_iter = iter(frames)
    encoder = h264_encoder()
    if encoder is None:
        raise VideoError(
            uri, f"no working H.264 encoder ({', '.join(H264_ENCODERS)}) in PyAV's FFmpeg; install the PyAV wheel from PyPI, which bundles libx264"
        )

    try:
        with storage.atomic_output(uri, storage_options, suffix=".mp4") as tmp, contextlib.ExitStack() as stack:
            feed = None
            if audio_source is not None:
                asrc = _uri_str(audio_source)
                acont = stack.enter_context(_open_container(asrc, storage_options, what="audio source: "))
                if acont.streams.audio:
                    feed = _AudioFeed(acont, asrc)
            _encode(tmp, _guarded(frame_iter), rate, uri, encoder, int(crf), preset, feed, trim_audio)
    except _FramesIterError as e:
        raise e.exc from None  # the caller's own exception, with its own traceback
    except (av.FFmpegError, OSError) as e:
        raise VideoError(uri, f"writing the video failed ({_reason(e)}); check free space and write access") from e


def _encode(
    tmp: str,
    frame_iter: Iterator[Any],
    rate: Fraction,
    uri: str,
    encoder: str,
    crf: int,
    preset: str,
    feed: _AudioFeed | None,
    trim_audio: bool,
) -> None:
    out = av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart"})
    ok = False
    try:
        first = next(frame_iter, None)
        if first is None:
            raise InputError(f"write_video({uri}): no frames to write; give at least one frame")
        first = _check_frame(first, 0, uri, None)
        h, w = first.shape[:2]
        vs = out.add_stream(encoder, rate=rate)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        cc = vs.codec_context
        cc.time_base = 1 / rate
        if encoder != "libx264":
            cc.bit_rate = max(int(w * h * float(rate) * 0.15), 200_000)
        else:
            vs.options = {"crf": str(crf), "preset": preset}
        cc.colorspace = cc.color_primaries = cc.color_trc = _AVCOL_SMPTE170M
        cc.color_range = _AVCOL_RANGE_MPEG
        if feed is not None:
            feed.add_to(out)

        i = 0
        arr: Any = first
        while True:
            vf = av.VideoFrame.from_ndarray(arr, format="rgb24")
            vf.pts = i
            for p in vs.encode(vf):
                out.mux(p)
            i += 1
            if feed is not None:
                feed.feed_until(out, float(i / rate))
            nxt = next(frame_iter, None)
            if nxt is None:
                break
            arr = _check_frame(nxt, i, uri, (h, w))
        for p in vs.encode(None):
            out.mux(p)
        if feed is not None:
            feed.finish(out, float(i / rate) if trim_audio else None)
        ok = True
    finally:
        if ok:
            out.close()
        else:
            with contextlib.suppress(Exception):
                out.close()
