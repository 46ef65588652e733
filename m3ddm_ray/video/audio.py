"""Audio remux: the first audio stream of a source file moved into an encoded MP4, interleaved."""

from __future__ import annotations

import io
from collections import deque
from typing import Any

import av

from .source import codec_name, open_container, uri_str

# Audio codecs copied into MP4 unchanged; any other codec is re-encoded to AAC.
_MP4_AUDIO_COPY = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})


class AudioFeed:
    """Moves the first audio stream of ``audio_source`` into the output, interleaved with the video.

    Packets are copied unchanged when the codec can go into MP4 (:data:`_MP4_AUDIO_COPY`, checked by
    writing a test header), otherwise decoded and re-encoded to AAC. Timestamps are shifted so the
    source's first video frame (or, in an audio-only source, time 0) lines up with output frame 0.
    """

    def __init__(self, container: Any, uri: str):
        self.uri = uri
        self.container = container
        self.ain = container.streams.audio[0]
        self.codec = codec_name(self.ain)
        vids = [s for s in container.streams.video if not (int(s.disposition) & int(av.stream.Disposition.attached_pic))]
        self.offset_s = 0.0
        self.limit_s: float | None = None  # output time after which write_video drops audio (None: none)
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


def open_audio_feed(stack: Any, audio_source: Any, storage_options: dict | None) -> "AudioFeed | None":
    """The :class:`AudioFeed` of ``audio_source``'s first audio stream (None: no source given, or a
    source without audio); the container is closed by ``stack`` (a ``contextlib.ExitStack``).

    Raises:
        VideoError: the audio source cannot be opened (named as the audio source).
    """
    if audio_source is None:
        return None
    asrc = uri_str(audio_source)
    acont = stack.enter_context(open_container(asrc, storage_options, what="audio source: "))
    return AudioFeed(acont, asrc) if acont.streams.audio else None
