"""Scoring of evaluation rows: the metric networks of the config, the scoring actor and FVD per set."""

from __future__ import annotations

import json
import pickle
import time
from typing import Any, Mapping, Sequence

from ..distributed.config import job_settings
from .config import build_protocol
from .rows import _ground_truth

__all__ = ["RANDOM_INIT", "make_lpips", "make_fvd", "ScoreStage", "fvd_by_set"]


RANDOM_INIT = "random-init"


def make_lpips(metrics: Mapping[str, Any]):
    """The LPIPS network of the eval config, or None when LPIPS is off.

    ``lpips: auto`` uses the default weight locations when both files are there (else None),
    ``true`` requires them (ModelLoadError naming the missing file), ``false`` turns LPIPS off.
    ``lpips_weights`` / ``lpips_backbone`` = ``random-init``: seeded random weights (tests only).
    """
    from ..errors import ModelLoadError
    from .metrics import LPIPS

    mode = str(metrics.get("lpips", "auto")).lower()
    if mode == "false":
        return None
    device = str(metrics.get("device") or "cpu")
    head, backbone = metrics.get("lpips_weights"), metrics.get("lpips_backbone")
    if RANDOM_INIT in (head, backbone):
        return LPIPS(device=device, random_init=True)
    try:
        return LPIPS(backbone, head, device)
    except ModelLoadError:
        if mode == "auto" and head is None and backbone is None:
            return None
        raise


def make_fvd(metrics: Mapping[str, Any]):
    """The I3D feature extractor of the eval config, or None when FVD is off (``fvd_weights`` unset).
    ``fvd_weights: random-init``: a seeded random I3D (tests only)."""
    from .metrics import FVDFeatureExtractor

    weights = metrics.get("fvd_weights")
    if not weights:
        return None
    kind, device = str(metrics.get("fvd_kind") or "videogpt"), str(metrics.get("device") or "cpu")
    if weights == RANDOM_INIT:
        return FVDFeatureExtractor(kind, None, device, random_init=True)
    return FVDFeatureExtractor(kind, str(weights), device)


def _features(extractor, clip) -> bytes:
    import numpy as np

    fn = getattr(extractor, "features", None) or extractor
    feats = np.asarray(fn([clip]), dtype=np.float64)
    return pickle.dumps(feats[0], protocol=pickle.HIGHEST_PROTOCOL)


def write_report_png(output: str, so, row: Mapping[str, Any], img) -> str:
    """Write a row's side-by-side strip (uint8 ``(H, W, 3)`` RGB) as
    ``<output>/report/img/<clip>_<label>_<method>.png``, atomically; returns its path relative to
    the report. Used by both scoring stages (outpaint protocol and tasks)."""
    import cv2

    from ..storage import atomic_write_bytes

    name = f"{row['clip_id']}_{row['ratio_label']}_{row['method']}.png"
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    atomic_write_bytes(f"{output}/report/img/{name}", buf.tobytes(), so)
    return f"img/{name}"


class ScoreStage:
    """CPU (or GPU for LPIPS / I3D) actor: output frames of a row -> scores, strip image, I3D features.

    ``m3ddm`` rows: ``finalize_clip`` of the fine stage's canvases (paste-back + crop, as the main job).
    Baseline rows: :func:`m3ddm_ray.evaluation.baselines.outpaint` of the strip. Then
    ``MaskCase.compose`` (ground truth in the known region) and :class:`metrics.ClipScores`.
    """

    def __init__(self, cfg: Mapping[str, Any], ecfg: Mapping[str, Any], output: str):
        from .metrics import ClipScores

        self.cfg, self.ecfg, self.output = cfg, ecfg, output.rstrip("/")
        self.protocol = build_protocol(ecfg)
        self.cases = {c.label: c for c in self.protocol.cases(int(cfg["canvas_size"]))}
        metrics = ecfg["metrics"]
        self.scores = ClipScores(make_lpips(metrics), ssim_window=str(metrics.get("ssim_window") or "gaussian"))
        self.fvd = make_fvd(metrics)
        self.so = cfg.get("storage_options") or None

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        from ..distributed.stages import to_batch, from_batch

        return to_batch([self.score(row) for row in from_batch(batch)])

    def _output(self, row: dict, case, gt):
        import numpy as np

        from ..pipeline import finalize_clip, generated_array
        from . import baselines

        if row["method"] == "m3ddm":
            clip, state = pickle.loads(row["clip"]), pickle.loads(row["state"])
            row["seconds_unet"] = float(state.unet_seconds)
            return finalize_clip(clip, generated_array(clip, state), job_settings(self.cfg))
        b = self.ecfg["baselines"]
        kw = {}
        if row["method"] == "blur" and b.get("blur_sigma") is not None:
            kw["sigma"] = float(b["blur_sigma"])
        if row["method"] == "telea":
            kw["radius"] = int(b.get("telea_radius") or 5)
        t0 = time.perf_counter()
        strip = case.strip(gt)
        canvas = baselines.BASELINES[row["method"]](strip, case.geom, **kw)
        from .. import geometry

        masked = baselines.place_on_canvas(strip, case.geom)
        composite = geometry.paste_back(canvas, masked, geometry.pixel_mask(case.geom), mode="round")
        y0, y1, x0, x1 = case.out_box
        row["seconds_method"] = time.perf_counter() - t0
        return np.ascontiguousarray(composite[:, y0:y1, x0:x1])

    def score(self, row: dict) -> dict:
        from ..distributed.stages import fail_row
        from .report import strip_image

        t0 = time.perf_counter()
        case = self.cases.get(row["ratio_label"])
        gt = None
        if row["status"] in ("pending", "baseline"):
            try:
                gt = _ground_truth(row, self.protocol, self.so)
                out = self._output(row, case, gt)
                composed, known_error = case.compose(out, gt)
                mask = case.mask()
                s = self.scores(composed, gt, mask)
                row.update({k: s[k] for k in ("psnr", "ssim", "lpips", "bmse", "psnr_generated", "mse", "bmse_gt")})
                impl = dict(s["metric_impl"])
                row["metric_impl"] = json.dumps(impl, sort_keys=True)
                row["known_error"] = known_error
                inputs = gt * (1 - mask)[None, :, :, None]
                img = strip_image(inputs, composed, gt, max_frames=int(self.ecfg["report"].get("frames") or 4))
                row["image"] = self._write_png(row, img)
                if self.fvd is not None:
                    row["fvd_fake"] = _features(self.fvd, composed)
                row["status"] = "ok"
            except Exception as exc:  # noqa: BLE001
                row = fail_row(row, "score", exc, self.cfg)
        if self.fvd is not None and row.get("fvd_real_wanted"):
            try:  # the ground truth's features, once per clip (the real set of FVD)
                gt = gt if gt is not None else _ground_truth(row, self.protocol, self.so)
                row["fvd_real"] = _features(self.fvd, gt)
            except Exception:  # noqa: BLE001 - the clip is then left out of the real set
                row["fvd_real"] = b""
        if case is not None:
            row.update(placement_exact=case.exact, frame_height=case.frame_hw[0], frame_width=case.frame_hw[1],
                       known_box=",".join(map(str, case.known_box)), target_ratio=str(case.ratio),
                       canvas_size=case.canvas_size)
        row["seconds_score"] = time.perf_counter() - t0
        row["clip"], row["state"] = b"", b""
        from ..distributed.rows import check_row

        return check_row(row, "score", "eval")

    def _write_png(self, row: Mapping[str, Any], img) -> str:
        return write_report_png(self.output, self.so, row, img)


def fvd_by_set(results: Sequence[Mapping[str, Any]], methods: Sequence[str], labels: Sequence[str]) -> tuple[dict, dict]:
    """FVD per (method, label) over the clips with features; ``(values, notes)``."""
    import numpy as np

    from .metrics import frechet_distance

    real = {r["clip_id"]: pickle.loads(r["fvd_real"]) for r in results if r.get("fvd_real")}
    values, notes = {}, {}
    for m in methods:
        for lab in labels:
            sel = [r for r in results if r["method"] == m and r["ratio_label"] == lab and r["status"] == "ok"
                   and r.get("fvd_fake") and r["clip_id"] in real]
            if len(sel) < 2:
                values[(m, lab)] = float("nan")
                notes[f"{m} {lab}"] = f"{len(sel)} clip(s) with features; FVD needs at least 2"
                continue
            fake = np.stack([pickle.loads(r["fvd_fake"]) for r in sel])
            gt = np.stack([real[r["clip_id"]] for r in sel])
            values[(m, lab)] = frechet_distance(fake, gt)
            notes[f"{m} {lab}"] = f"{len(sel)} clips"
    return values, notes
