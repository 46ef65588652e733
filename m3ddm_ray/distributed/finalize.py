"""The finalize stage (CPU): paste-back, crop, H.264 with the source fps and audio -- or, for a
segment of a split clip, one video piece that :mod:`.join` joins with the others. A tiled segment
split into units (:func:`.segments.split_units`): each unit's finalize leaves its box's pixels next to
the output (:func:`.segments.unit_uri`), and the one that finds every unit of its segment there
assembles them (:func:`m3ddm_ray.tiled.assemble_units`) and encodes the segment's piece."""

from __future__ import annotations

import json
import pickle
import time
from typing import Any, Mapping

from .config import job_settings
from .rows import StageRow, check_row
from .stages import fail_row, is_frame_folder, apply_retry_policy, has_audio, result_row, source_file


class FinalizeStage:
    """CPU: paste-back, crop (or source-resolution composition), H.264 with source fps and audio,
    atomic upload, no-reference quality numbers; returns the result row."""

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = cfg

    def __call__(self, row: StageRow) -> StageRow:
        from .segments import SEGMENT_FIELDS, num_groups, num_segments

        apply_retry_policy(self.cfg)
        t0 = time.perf_counter()
        pieces = num_segments(row) > 1 or num_groups(row) > 1
        if row["status"] in ("pending", "unchanged"):
            try:
                row.update(self._piece(row) if pieces else self._finalize(row))
                if not pieces:
                    row["status"] = "ok" if row["status"] == "pending" else "unchanged"
            except Exception as exc:  # noqa: BLE001
                row = fail_row(row, "finalize", exc, self.cfg)
        row["seconds_finalize"] = time.perf_counter() - t0
        out = result_row(row, self.cfg)
        out["fine_actor"] = row.get("fine_actor")  # for the driver's busy-seconds note (not a column)
        if pieces:  # the driver joins the pieces (segments.assemble): keep what it needs
            out.update({k: row.get(k) for k in SEGMENT_FIELDS})
            out["status"] = row["status"]
        return check_row(out, "finalize")

    def _finalize(self, row: dict) -> dict:
        clip = pickle.loads(row["clip"])
        settings = job_settings(self.cfg, json.loads(row["overrides"]))
        if clip.passthrough:
            return self._passthrough(row, clip, settings)
        return self._output(row, clip, settings, list(range(clip.num_frames)))

    def _passthrough(self, row: dict, clip, settings) -> dict:
        """A source already at the output's shape: its own packets remuxed when possible, else its
        frames cropped to even sides and encoded."""
        from ..video import read_frames, read_image_sequence, remux_video, write_video

        so = self.cfg.get("storage_options") or None
        enc = self.cfg["encode"]
        if is_frame_folder(row["video_uri"], self.cfg):  # a folder of images: no single file to remux
            source, _ = read_image_sequence(row["video_uri"], storage_options=so)
            out = clip.task.finalize(clip, None, source, [], settings).frames
            write_video(row["output_uri"], out, row["fps"], crf=int(enc["crf"]), preset=str(enc["preset"]),
                        storage_options=so)
            return {"output_height": int(out.shape[1]), "output_width": int(out.shape[2])}
        with source_file(row["video_uri"], self.cfg.get("storage_options")) as src:
            done = remux_video(src, row["output_uri"], storage_options=so, audio=has_audio(row))
            if done is not None:  # the source's own packets: no decode, no re-encode
                return {"output_height": int(done[0]), "output_width": int(done[1])}
            out = clip.task.finalize(clip, None, read_frames(src)[0], [], settings).frames
            write_video(row["output_uri"], out, row["fps"], audio_source=src if has_audio(row) else None,
                        crf=int(enc["crf"]), preset=str(enc["preset"]), storage_options=so)
        return {"output_height": int(out.shape[1]), "output_width": int(out.shape[2])}

    def _read_source(self, row: dict, which: str = "out"):
        """``read(lo, hi)``: source frames ``[lo, hi)`` by a range decode (seek point ``which``)."""
        from .canvases import read_source_span

        return lambda lo, hi: read_source_span(row, self.cfg, lo, hi, which)

    def _output(self, row: dict, clip, settings, frames: list[int], piece: bool = False,
                generated=None) -> dict:
        """The output of rows ``frames`` (:meth:`m3ddm_ray.task.Task.finalize`) cropped to even sides,
        its quality numbers, written as the output video with the source audio (in the task's audio
        window) -- or, with ``piece``, as one segment's piece without audio (the join adds it).
        ``generated``: uint8 ``(N, S, S, 3)`` canvases of ``frames`` (default: the row's state's)."""
        from .. import quality
        from ..pipeline import finalize_frames, generated_array
        from ..task import even_frames
        from ..video import fps_to_fraction, write_video
        from .segments import piece_uri

        task = clip.task
        state = pickle.loads(row["state"])
        a, b = task.source_range(frames[0], frames[-1] + 1, clip.num_frames)
        source = self._read_source(row)(a, b) if task.needs_source(settings) and b > a else None
        if generated is None:
            generated = generated_array(clip, state, frames)
        fin = finalize_frames(clip, generated, settings, source, frames)
        out = even_frames(fin.frames)
        if fin.scored is None:
            extra: dict[str, Any] = {k: float("nan") for k in quality.REPORT_KEYS}
        else:
            extra = quality.quality_report(even_frames(fin.scored), even_frames(fin.region[None])[0])
        enc = self.cfg["encode"]
        so = self.cfg.get("storage_options") or None
        if piece:
            n = int(row["num_segments"])
            uri = piece_uri(row["output_uri"], task.piece_position(int(row["segment"]), n), n)
            write_video(uri, out, row["fps"], crf=int(enc["crf"]), preset=str(enc["preset"]), storage_options=so)
            extra.update(piece_uri=uri, piece_frames=len(frames))
        else:
            audio = None
            if has_audio(row) and not is_frame_folder(row["video_uri"], self.cfg):
                audio = row["video_uri"]  # read with range requests, as the join does
            delay, end = task.audio_window(clip.num_frames, fps_to_fraction(float(row["fps"])))
            write_video(row["output_uri"], out, row["fps"], audio_source=audio, crf=int(enc["crf"]),
                        preset=str(enc["preset"]), storage_options=so, audio_delay_s=delay, audio_end_s=end)
        extra.update(output_height=int(out.shape[1]), output_width=int(out.shape[2]), seconds_unet=state.unet_seconds)
        return extra

    def _piece(self, row: dict) -> dict:
        """One segment of a split clip: its output frames as one H.264 piece (no audio; the join
        adds it once), and the piece's quality numbers."""
        from .segments import num_groups

        clip = pickle.loads(row["clip"])
        settings = job_settings(self.cfg, json.loads(row["overrides"]))
        frames = list(clip.plan.segments()[int(row["segment"])].output_frames)
        if num_groups(row) > 1:
            return self._unit(row, clip, settings, frames)
        return self._output(row, clip, settings, frames, piece=True)

    def _unit(self, row: dict, clip, settings, frames: list[int]) -> dict:
        """One unit of a tiled segment: its box's pixels of ``frames`` left at its
        :func:`.segments.unit_uri`; when every unit of the segment has left its pixels, they are
        assembled onto the working clip's known canvases and the segment's piece is encoded (two
        units finishing at once may both encode it: the same bytes, uploaded atomically)."""
        import io

        import numpy as np

        from .. import storage
        from ..tiled import assemble_units, unit_pixels
        from .segments import num_groups, tile_group, unit_uri

        so = self.cfg.get("storage_options") or None
        seg, n = int(row["segment"]), num_groups(row)
        state = pickle.loads(row["state"])
        box, px = unit_pixels(clip, state, frames)
        buf = io.BytesIO()
        np.savez(buf, box=np.asarray(box if box is not None else (-1, -1, -1, -1)), pixels=px)
        mine = unit_uri(row["output_uri"], seg, tile_group(row), n)
        storage.atomic_write_bytes(mine, buf.getvalue(), so)
        done = {"unit_uri": mine, "seconds_unet": state.unet_seconds}
        uris = [unit_uri(row["output_uri"], seg, u, n) for u in range(n)]
        if not all(storage.exists(u, so) for u in uris):
            return done  # a later unit of this segment assembles it
        parts = []
        for uri in uris:
            with storage.open_uri(uri, "rb", so) as fh:
                data = np.load(io.BytesIO(fh.read()))
                b = tuple(int(v) for v in data["box"])
                parts.append((None if b[0] < 0 else b, data["pixels"]))
        generated = assemble_units(clip.known_canvases(frames), parts)
        return dict(self._output(row, clip, settings, frames, piece=True, generated=generated), unit_uri=mine)
