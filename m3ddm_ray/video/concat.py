"""Joining video pieces losslessly: the H.264 packets of each piece are remuxed one after the other
into one MP4 (no decode, no re-encode), and the source's audio is muxed once over the whole.

How production encoders spread one long video over many machines: each piece is encoded on its
own with the same settings (:func:`~m3ddm_ray.video.encode.write_video`; every piece starts with
a keyframe), then the pieces are concatenated at the packet level. Timestamps of piece ``k`` are
shifted by the frames of the pieces before it, so the result plays at the pieces' common frame
rate with exactly the sum of their frames.
"""

from __future__ import annotations

import contextlib
from fractions import Fraction
from typing import Any, Sequence

import av

from m3ddm_ray import storage
from m3ddm_ray.errors import InputError, VideoError

from .audio import AudioFeed, open_audio_feed
from .encode import clamp_time
from .source import open_container, av_reason, uri_str


def _piece_rate(stream: Any, uri: str) -> Fraction:
    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    if not rate:
        raise VideoError(uri, "a piece without a frame rate cannot be joined")
    return Fraction(rate)


def concat_videos(pieces: Sequence[str], uri: str, *, audio_source: str | None = None,
                  storage_options: dict[str, Any] | None = None, trim_audio: bool = True,
                  audio_delay_s: float = 0.0, audio_end_s: float | None = None) -> int:
    """Join the H.264 MP4 ``pieces`` (in order) into one MP4 at ``uri``, atomically; returns its
    number of frames.

    Args:
        pieces: local paths or fsspec URLs of MP4s made by :func:`write_video` with the same size,
            frame rate and encoder settings (checked: size, codec and rate must agree).
        uri: output path or fsspec URL; nothing appears there unless the whole join succeeds.
        audio_source: optional file whose first audio stream is muxed over the joined video, as
            :func:`write_video` does (copied when MP4 takes the codec, else AAC; aligned to the
            source's first video frame; with ``trim_audio`` cut at the end of the video).
        storage_options: fsspec options for every URI.
        audio_delay_s, audio_end_s: as :func:`write_video`: seconds by which the (copied) source
            audio starts later, and the output time after which audio is dropped (an extended
            video keeps its audio under the known frames only).

    Raises:
        InputError: no pieces.
        VideoError: a piece cannot be read, has no video, or does not match the first piece; the
            audio source cannot be read; writing or uploading failed.
    """
    uri = uri_str(uri)
    if not pieces:
        raise InputError(f"concat_videos({uri}): no pieces to join")
    try:
        with storage.atomic_output(uri, storage_options, suffix=".mp4") as tmp, contextlib.ExitStack() as stack:
            out = stack.enter_context(av.open(tmp, mode="w", format="mp4", options={"movflags": "+faststart"}))
            feed = open_audio_feed(stack, audio_source, storage_options)
            if feed is not None:
                feed.limit_s = audio_end_s
                if audio_delay_s and feed.copy:
                    feed.offset_s -= float(audio_delay_s)
            return _join(pieces, out, feed, storage_options, uri, trim_audio)
    except (av.FFmpegError, OSError) as e:
        raise VideoError(uri, f"joining the pieces failed ({av_reason(e)}); check free space and write access") from e


def _decode_delay(piece: str, storage_options: dict[str, Any] | None) -> Fraction:
    """Seconds the first packet's decode time stamp lies before the first frame's (the encoder's
    B-frame reorder delay; 0 for a piece without B-frames, e.g. a very short one)."""
    with open_container(piece, storage_options, what="piece: ") as cont:
        if not cont.streams.video:
            raise VideoError(piece, "no video stream in this piece")
        ins = cont.streams.video[0]
        for pkt in cont.demux(ins):
            if pkt.dts is not None:
                return max(Fraction(0), -Fraction(pkt.dts) * ins.time_base)
    return Fraction(0)


def _join(pieces: Sequence[str], out: Any, feed: AudioFeed | None, storage_options: dict[str, Any] | None,
          uri: str, trim_audio: bool) -> int:
    # Decode time stamps: pieces can have different reorder delays (a short piece gets no
    # B-frames). Every piece's DTS is moved back to the largest delay, so the joined DTS run on
    # frame after frame without a gap (a gap would show as a lower average frame rate).
    delays = [_decode_delay(uri_str(p), storage_options) for p in pieces]
    delay = max(delays)
    vs = None
    first: tuple[int, int, str, Fraction] | None = None
    frames = 0
    for n, piece in enumerate(pieces):
        piece = uri_str(piece)
        with open_container(piece, storage_options, what="piece: ") as cont:
            if not cont.streams.video:
                raise VideoError(piece, "no video stream in this piece")
            ins = cont.streams.video[0]
            rate = _piece_rate(ins, piece)
            key = (ins.codec_context.width, ins.codec_context.height, ins.codec_context.name, rate)
            if first is None:
                first = key
                vs = out.add_stream_from_template(ins)
                if feed is not None:
                    feed.add_to(out)
            elif key != first:
                raise VideoError(piece, f"piece {n} is {key[0]}x{key[1]} {key[2]} at {key[3]} fps, the first "
                                        f"piece {first[0]}x{first[1]} {first[2]} at {first[3]} fps; cannot join")
            tb = ins.time_base
            shift = int(round(Fraction(frames, 1) / rate / tb))  # this piece starts after `frames` frames
            dts_shift = shift - int(round((delay - delays[n]) / tb))
            count = 0
            for pkt in cont.demux(ins):
                if pkt.dts is None and pkt.pts is None:
                    continue  # the demuxer's final empty packet
                if pkt.pts is not None:
                    pkt.pts += shift
                if pkt.dts is not None:
                    pkt.dts += dts_shift
                pkt.stream = vs
                out.mux(pkt)
                count += 1
                if feed is not None:
                    feed.feed_until(out, clamp_time(float(Fraction(frames + count, 1) / rate), feed.limit_s))
            frames += count
    if feed is not None:
        feed.finish(out, clamp_time(float(Fraction(frames, 1) / first[3]) if trim_audio else None, feed.limit_s))
    return frames


#: Video codecs an MP4 takes as they are (a passthrough is remuxed only for these).
REMUX_CODECS = ("h264", "hevc", "av1", "vp9", "mpeg4")


def remux_video(source: str, uri: str, *, storage_options: dict[str, Any] | None = None,
                audio: bool = True) -> tuple[int, int] | None:
    """Copy ``source``'s video packets (and its first audio stream) into an MP4 at ``uri``,
    atomically: a passthrough output (the source already has the target ratio) without a decode or
    a re-encode.

    Only done when the copy is exactly what a decode + encode would show: an MP4/MOV or Matroska
    source, a codec of :data:`REMUX_CODECS`, even width and height (H.264 output sizes), no display
    rotation, video starting at time 0. Otherwise nothing is written and None is returned (the
    caller decodes and encodes instead).

    Returns:
        ``(height, width)`` of the written video, or None.

    Raises:
        VideoError: the source passed the checks but the copy could not be written or uploaded.
    """
    from .probing import probe

    src = uri_str(source)
    try:
        info = probe(src, storage_options)
    except VideoError:
        return None
    fmt = set((info.container_format or "").split(","))
    if (info.video_codec not in REMUX_CODECS or info.rotation or info.width % 2 or info.height % 2
            or not fmt & {"mov", "mp4", "matroska", "webm"}):
        return None
    with open_container(src, storage_options) as cont:
        vs = cont.streams.video[0] if cont.streams.video else None
        if vs is None or (vs.start_time not in (None, 0)) or not (vs.average_rate or vs.base_rate):
            return None
    concat_videos([src], uri, audio_source=src if audio else None, storage_options=storage_options)
    return info.height, info.width
