"""One open video: container access over fsspec with errors mapped to VideoError, stream facts and
the strict sequential decoder that every reader uses (damaged-input policy: see :mod:`m3ddm_ray.video`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterator

import av
import numpy as np

from m3ddm_ray import storage
from m3ddm_ray.errors import VideoError

__all__ = ["VideoInfo"]

# Containers whose stored frame count comes from a per-sample table (exact for a healthy file).
_SAMPLE_TABLE_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2")


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


def av_reason(e: BaseException) -> str:
    """Short text of a PyAV/OS error without errno numbers or file-object reprs."""
    if isinstance(e, av.FFmpegError):
        return str(e.strerror or type(e).__name__)
    if isinstance(e, OSError) and e.strerror:
        return str(e.strerror)
    return str(e) or type(e).__name__


@contextlib.contextmanager
def open_container(uri: str, storage_options: dict[str, Any] | None, what: str = "") -> Iterator[Any]:
    """Open ``uri`` through fsspec and yield an ``av`` input container; map every failure to VideoError.

    ``what`` prefixes reasons (``"audio source: "``).
    """
    try:
        fs, path = storage.url_to_fs(uri, storage_options)
    except ImportError as e:
        raise VideoError(uri, f"{what}no filesystem for this URL ({e}); install the fsspec backend") from e
    except Exception as e:  # bad URL, bad storage_options
        raise VideoError(uri, f"{what}cannot access storage ({av_reason(e)}); check the URL and storage_options") from e

    def fail_access(e: BaseException) -> VideoError:
        if isinstance(e, FileNotFoundError):
            return VideoError(uri, f"{what}file not found; check the path or URL")
        if isinstance(e, PermissionError):
            return VideoError(uri, f"{what}permission denied; check file permissions or storage credentials")
        if isinstance(e, IsADirectoryError):
            return VideoError(uri, f"{what}is a directory, not a video file; give the path of a file")
        return VideoError(uri, f"{what}cannot read the file ({av_reason(e)})")

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
                f"{what}not a media file, or a format FFmpeg cannot read ({av_reason(e)}); "
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


def codec_name(stream: Any) -> str:
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


def rotation_cw(frame: Any, vs: Any) -> int:
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


class VideoSource:
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
                    problem, cause = av_reason(e), e
                    break
                for frame in decoded:
                    n = self._count(frame, n)
                    yield frame
        except av.FFmpegError as e:  # the demuxer itself failed
            problem, cause = av_reason(e), e
        if problem is None and self.header_trusted and packets < self.num_frames:
            problem = f"the file holds only {packets} of the {self.num_frames} frames its index lists"
        if problem is None:
            try:
                rest = self.vs.codec_context.decode(None)  # end of stream: drain the decoder
            except av.FFmpegError as e:
                problem, cause, rest = av_reason(e), e, []
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
            self.rotation = rotation_cw(frame, self.vs)
        self.decoded = n + 1
        return n + 1

    def to_rgb(self, frame: Any) -> np.ndarray:
        """``(H, W, 3) uint8`` RGB array of ``frame`` in display orientation."""
        try:
            arr = frame.to_ndarray(format="rgb24")
        except (av.FFmpegError, ValueError) as e:
            raise VideoError(self.uri, f"cannot convert frame {self.decoded - 1} to RGB ({av_reason(e)})") from e
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
            video_codec=codec_name(self.vs),
            audio_codec=codec_name(self.audio[0]) if self.audio else None,
            container_format=self.format_name,
        )


def uri_str(uri: str | os.PathLike) -> str:
    return os.fspath(uri) if not isinstance(uri, str) else uri
