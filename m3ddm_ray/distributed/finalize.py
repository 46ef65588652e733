"""The finalize stage (CPU): paste-back, crop, H.264 with the source fps and audio -- or, for a
segment of a split clip, one video piece that :mod:`.join` joins with the others."""

from __future__ import annotations

import json
import pickle
import time
from typing import Any, Mapping

from .config import job_settings
from .rows import StageRow, check_row
from .stages import fail_row, _is_frame_folder, apply_retry_policy, has_audio, result_row, source_file


class FinalizeStage:
    """CPU: paste-back, crop (or source-resolution composition), H.264 with source fps and audio,
    atomic upload, no-reference quality numbers; returns the result row."""

    def __init__(self, cfg: Mapping[str, Any]):
        self.cfg = cfg

    def __call__(self, row: StageRow) -> StageRow:
        from .segments import SEGMENT_FIELDS, num_segments

        apply_retry_policy(self.cfg)
        t0 = time.perf_counter()
        pieces = num_segments(row) > 1
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
        from .task_rows import task_of

        clip = pickle.loads(row["clip"])
        if task_of(row) != "outpaint":
            return self._finalize_task(row, clip)
        settings = job_settings(self.cfg, json.loads(row["overrides"]))
        needs_source = clip.passthrough or settings.output_size == "source" or has_audio(row)
        if not needs_source or _is_frame_folder(row["video_uri"], self.cfg):
            return self._finalize_from(row, clip, settings, None)
        with source_file(row["video_uri"], self.cfg.get("storage_options")) as src:
            return self._finalize_from(row, clip, settings, src)

    def _source_frames(self, row: dict, src: str | None, frames=None):
        """Source frames (all, or the video frames ``frames``) for passthrough / source-size output."""
        from ..video import read_frames, read_image_sequence

        so = self.cfg.get("storage_options") or None
        if src is None:  # a frame folder: no single source file to download
            source, _ = read_image_sequence(row["video_uri"], storage_options=so)
            return source if frames is None else source[list(frames)]
        return read_frames(src, None if frames is None else list(frames))[0]

    def _finalize_from(self, row: dict, clip, settings, src: str | None) -> dict:
        from .. import quality
        from ..pipeline import finalize_frames, generated_array
        from ..video import write_video

        so = self.cfg.get("storage_options") or None
        extra: dict[str, Any] = {}
        if clip.passthrough and src is not None:
            from ..video import remux_video

            done = remux_video(src, row["output_uri"], storage_options=so, audio=has_audio(row))
            if done is not None:  # the source's own packets: no decode, no re-encode
                extra.update(output_height=int(done[0]), output_width=int(done[1]))
                return extra
        source = None
        if clip.passthrough or settings.output_size == "source":
            source = self._source_frames(row, src)
        if clip.passthrough:
            out, _ = finalize_frames(clip, None, settings, source)
        else:
            state = pickle.loads(row["state"])
            out, composite = finalize_frames(clip, generated_array(clip, state), settings, source)
            extra.update(quality.quality_report(composite, clip.mask))
            extra["seconds_unet"] = state.unet_seconds
        enc = self.cfg["encode"]
        audio = src if has_audio(row) else None
        write_video(row["output_uri"], out, row["fps"], audio_source=audio, crf=int(enc["crf"]),
                    preset=str(enc["preset"]), storage_options=so)
        extra.update(output_height=int(out.shape[1]), output_width=int(out.shape[2]))
        return extra

    def _read_source(self, row: dict, which: str = "out"):
        """``read(lo, hi)``: source frames ``[lo, hi)`` by a range decode (seek point ``which``)."""
        from .canvases import read_source_span

        return lambda lo, hi: read_source_span(row, self.cfg, lo, hi, which)

    def _finalize_task(self, row: dict, clip) -> dict:
        """An inpaint / extend output in one piece (:func:`.task_rows.task_output`), with the source
        audio (an extension's under its known frames only)."""
        from ..video import write_video
        from .task_rows import audio_window, task_output

        state = pickle.loads(row["state"])
        out, extra = task_output(row, self.cfg, clip, state, range(clip.num_frames), self._read_source(row))
        audio = None
        if has_audio(row) and not _is_frame_folder(row["video_uri"], self.cfg):
            audio = row["video_uri"]  # read with range requests, as the join does
        delay, end = audio_window(row)
        enc = self.cfg["encode"]
        write_video(row["output_uri"], out, row["fps"], audio_source=audio, crf=int(enc["crf"]),
                    preset=str(enc["preset"]), storage_options=self.cfg.get("storage_options") or None,
                    audio_delay_s=delay, audio_end_s=end)
        extra.update(output_height=int(out.shape[1]), output_width=int(out.shape[2]),
                     seconds_unet=state.unet_seconds)
        return extra

    def _piece(self, row: dict) -> dict:
        """One segment of a split clip: its output frames as one H.264 piece (no audio; the join
        adds it once), and the piece's quality numbers."""
        from .. import quality
        from ..pipeline import finalize_frames, generated_array
        from ..video import write_video
        from .segments import piece_uri
        from .task_rows import piece_position, task_of, task_output

        clip, state = pickle.loads(row["clip"]), pickle.loads(row["state"])
        settings = job_settings(self.cfg, json.loads(row["overrides"]))
        segment = clip.plan.segments()[int(row["segment"])]
        frames = segment.output_frames
        enc = self.cfg["encode"]
        if task_of(row) != "outpaint":
            out, extra = task_output(row, self.cfg, clip, state, frames, self._read_source(row))
            uri = piece_uri(row["output_uri"], piece_position(row), int(row["num_segments"]))
            write_video(uri, out, row["fps"], crf=int(enc["crf"]), preset=str(enc["preset"]),
                        storage_options=self.cfg.get("storage_options") or None)
            extra.update(piece_uri=uri, piece_frames=len(frames), seconds_unet=state.unet_seconds,
                         output_height=int(out.shape[1]), output_width=int(out.shape[2]))
            return extra
        source = None
        if settings.output_size == "source":  # only this piece's frames, by a range decode
            from .canvases import read_source_span

            source = read_source_span(row, self.cfg, frames[0], frames[-1] + 1, "out")
        out, composite = finalize_frames(clip, generated_array(clip, state, frames), settings, source, frames)
        uri = piece_uri(row["output_uri"], int(row["segment"]), int(row["num_segments"]))
        write_video(uri, out, row["fps"], crf=int(enc["crf"]), preset=str(enc["preset"]),
                    storage_options=self.cfg.get("storage_options") or None)
        extra = quality.quality_report(composite, clip.mask)
        extra.update(piece_uri=uri, piece_frames=len(frames), seconds_unet=state.unet_seconds,
                     output_height=int(out.shape[1]), output_width=int(out.shape[2]))
        return extra
