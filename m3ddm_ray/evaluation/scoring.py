"""Scoring of evaluation rows: the metric networks of the config, the scoring actor (every task) and FVD per set."""

from __future__ import annotations

import pickle
import time
from typing import Any, Mapping, Sequence

from ..distributed.config import job_settings
from .cases import eval_task, mask_key
from .rows import row_ground_truth

__all__ = ["RANDOM_INIT", "make_lpips", "make_fvd", "features", "write_report_png", "ScoreStage", "fvd_by_set"]


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


def features(extractor, clip) -> bytes:
    """Pickled float64 I3D features of one uint8 ``(T, H, W, 3)`` clip (``extractor``: :func:`make_fvd`)."""
    import numpy as np

    feats = np.asarray(extractor([clip]), dtype=np.float64)
    return pickle.dumps(feats[0], protocol=pickle.HIGHEST_PROTOCOL)


def write_report_png(output: str, so, row: Mapping[str, Any], img) -> str:
    """Write a row's side-by-side strip (uint8 ``(H, W, 3)`` RGB) as
    ``<output>/report/img/<clip>_<label>_<method>.png``, atomically; returns its path relative to
    the report."""
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

    ``m3ddm`` rows are finished from the fine stage's state, baseline rows are filled here
    (``inputs.finish`` / ``inputs.baseline`` of the task, :mod:`.cases`); then the task's scores,
    one side-by-side PNG per row and the I3D features of the output (and, once per clip, of the
    ground truth) when FVD is configured and the clip has the frames I3D needs.
    """

    def __init__(self, cfg: Mapping[str, Any], ecfg: Mapping[str, Any], output: str):
        self.cfg, self.ecfg, self.output = cfg, ecfg, output.rstrip("/")
        self.task = eval_task(ecfg, int(cfg["canvas_size"]))
        self.cases = {c.label: c for c in self.task.cases}
        metrics = ecfg["metrics"]
        self.lpips, self.fvd = make_lpips(metrics), make_fvd(metrics)
        self.ssim_window = str(metrics.get("ssim_window") or "gaussian")
        self.so = cfg.get("storage_options") or None

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        from ..distributed.stages import to_batch, to_rows

        return to_batch([self.score(row) for row in to_rows(batch)])

    def _output(self, row: dict, inputs):
        import numpy as np

        t0 = time.perf_counter()
        if row["method"] == "m3ddm":
            clip, state = pickle.loads(row["clip"]), pickle.loads(row["state"])
            row["seconds_unet"] = float(state.unet_seconds)
            return np.ascontiguousarray(inputs.finish(clip, state, job_settings(self.cfg)))
        out = inputs.baseline(row["method"], self.ecfg["baselines"])
        row["seconds_method"] = time.perf_counter() - t0
        return np.ascontiguousarray(out)

    def score(self, row: dict) -> dict:
        from ..distributed.rows import check_row
        from ..distributed.stages import fail_row
        from ..models.metric_nets.i3d import min_frames
        from .report import strip_image

        t0 = time.perf_counter()
        case = self.cases.get(row["ratio_label"])
        inputs = None
        if case is not None:
            row.update(self.task.columns(case))
        key = mask_key(row["uri"], row["start"])
        if row["status"] in ("pending", "baseline"):
            try:
                inputs = self.task.inputs(case, row_ground_truth(row, self.task, self.so), key)
                cols, scored = inputs.score(self._output(row, inputs), self.lpips, self.ssim_window)
                row.update(cols)
                img = strip_image(*inputs.panels(scored), max_frames=int(self.ecfg["report"].get("frames") or 4))
                row["image"] = write_report_png(self.output, self.so, row, img)
                fake = inputs.fvd_fake(scored)
                if self.fvd is not None and fake.shape[0] >= min_frames():  # else: no FVD for this set
                    row["fvd_fake"] = features(self.fvd, fake)
                row["status"] = "ok"
            except Exception as exc:  # noqa: BLE001
                row = fail_row(row, "score", exc, self.cfg)
        if self.fvd is not None and row.get("fvd_real_wanted"):
            try:  # the ground truth's features, once per clip (the real set of FVD)
                inputs = inputs or self.task.inputs(case, row_ground_truth(row, self.task, self.so), key)
                if inputs.real.shape[0] >= min_frames():
                    row["fvd_real"] = features(self.fvd, inputs.real)
            except Exception:  # noqa: BLE001 - the clip is then left out of the real set
                row["fvd_real"] = b""
        row["seconds_score"] = time.perf_counter() - t0
        row["clip"], row["state"] = b"", b""
        return check_row(row, "score", "eval")


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
