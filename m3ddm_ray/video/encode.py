"""Encoding RGB frames to H.264 / yuv420p MP4 (atomic publish, optional audio from a source file).

Encoding uses the first H.264 encoder that opens, in the order :data:`H264_ENCODERS` (``libx264``,
which the PyAV wheels from PyPI bundle; then ``libopenh264``, which has no CRF mode and is driven by a
bit rate instead).
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import os
from fractions import Fraction
from typing import Any, Iterable, Iterator

import av
import numpy as np

from m3ddm_ray import storage
from m3ddm_ray.errors import InputError, VideoError

from .audio import AudioFeed, open_audio_feed
from .source import av_reason, uri_str

__all__ = ["write_video", "fps_to_fraction", "h264_encoder", "H264_ENCODERS", "X264_PRESETS"]

#: H.264 encoders tried by :func:`h264_encoder`, in order.
H264_ENCODERS: tuple[str, ...] = ("libx264", "h264", "libopenh264")

#: Valid ``preset`` values of :func:`write_video` (libx264's presets).
X264_PRESETS: tuple[str, ...] = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
)

# FFmpeg's AVCOL_* values for BT.601 (SMPTE 170M), limited range: what libswscale's default
# RGB -> YUV conversion produces, written into the H.264 stream so that players decode it the same way.
_AVCOL_SMPTE170M = 6
_AVCOL_RANGE_MPEG = 1


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
    audio_delay_s: float = 0.0,
    audio_end_s: float | None = None,
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
        audio_delay_s: seconds (>= 0) by which the source audio starts later in the output (a video
            extended backwards: the source's audio under its own frames). Applied to copied audio;
            re-encoded audio (codecs MP4 cannot hold) is not delayed.
        audio_end_s: drop audio that starts at or after this output time in seconds (None: no cut
            besides ``trim_audio``), e.g. the end of the known span of an extended video.

    Raises:
        InputError: bad ``fps``/``crf``/``preset``; no frames; a frame that is not ``(H, W, 3) uint8``;
            odd width or height; frames of different sizes.
        VideoError: the audio source cannot be read; the encoder or muxer failed; the upload failed.
        Exceptions raised by the ``frames`` iterator propagate unchanged (nothing is written).
    """
    uri = uri_str(uri)
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
            feed = open_audio_feed(stack, audio_source, storage_options)
            if feed is not None:
                feed.limit_s = audio_end_s
                if audio_delay_s and feed.copy:
                    feed.offset_s -= float(audio_delay_s)
            _encode(tmp, _guarded(frame_iter), rate, uri, encoder, int(crf), preset, feed, trim_audio)
    except _FramesIterError as e:
        raise e.exc from None  # the caller's own exception, with its own traceback
    except (av.FFmpegError, OSError) as e:
        raise VideoError(uri, f"writing the video failed ({av_reason(e)}); check free space and write access") from e


def clamp_time(t: float | None, limit: float | None) -> float | None:
    """``min(t, limit)`` where None means no bound."""
    if limit is None:
        return t
    return limit if t is None else min(t, limit)


def _encode(
    tmp: str,
    frame_iter: Iterator[Any],
    rate: Fraction,
    uri: str,
    encoder: str,
    crf: int,
    preset: str,
    feed: AudioFeed | None,
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
                feed.feed_until(out, clamp_time(float(i / rate), feed.limit_s))
            nxt = next(frame_iter, None)
            if nxt is None:
                break
            arr = _check_frame(nxt, i, uri, (h, w))
        for p in vs.encode(None):
            out.mux(p)
        if feed is not None:
            feed.finish(out, clamp_time(float(i / rate) if trim_audio else None, feed.limit_s))
        ok = True
    finally:
        if ok:
            out.close()
        else:
            with contextlib.suppress(Exception):
                out.close()
