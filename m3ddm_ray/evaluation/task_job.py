"""The ``inpaint`` / ``extend`` evaluation job (``m3ddm-ray eval --task inpaint|extend``).

The same Ray wiring as the outpaint evaluation (:func:`.run.eval_dataset`): one item per clip ->
:func:`.task_rows.prepare_task_group` (CPU) -> the outpaint job's coarse and fine actor pools
(``m3ddm`` rows only; without ``m3ddm`` no model is loaded) -> :class:`.task_scoring.TaskScoreStage`.
The driver gathers the rows, computes FVD per (method, case) when ``metrics.fvd_weights`` is set,
and writes, as the outpaint evaluation::

    <output>/per_clip.parquet     one row per clip x case x method (rows.eval_schema(), `task` column set)
    <output>/summary.md|.json     the task's tables (task_report)
    <output>/report/index.html    the tables + per clip input | output | ground truth strips
    <output>/manifest.parquet     the clips

Protocols (docs/tasks.md): inpainting with synthetic object masks (``eval.mask_motion``,
``eval.mask_area``, seeded per clip id), scored by whole-frame PSNR / SSIM / LPIPS and the temporal
consistency in the hole; prediction as ExtDM (``eval.context`` known frames, ``eval.predict``
predicted; PSNR / SSIM / LPIPS per predicted frame index, FVD over the context + prediction clips).
For ``extend`` every clip is cut to ``context + predict`` frames; a shorter video gives error rows
that say so.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

__all__ = ["run_task_eval"]


def run_task_eval(cfg: Mapping[str, Any], ecfg: Mapping[str, Any], spec: Mapping[str, Any], output: str,
                  t0: float | None = None):
    """Run the task evaluation of ``spec`` (:func:`.config.check_task_settings`); returns an
    :class:`.run.EvalResult`.

    Raises:
        InputError: bad dataset, settings, or clips that would be several plan segments (nothing ran).
        ModelLoadError: configured LPIPS / FVD weights that are missing or do not load.
    """
    import pyarrow as pa

    from ..distributed.job import absolute_uri, resolve_paths
    from . import datasets
    from .engine import _clean, run_rows, settle_metrics, write_outputs
    from .rows import eval_schema
    from .task_report import rows_with_lists, summarize_task, task_markdown
    from .task_rows import build_task_rows, task_cases

    t0 = time.perf_counter() if t0 is None else t0
    task, methods = spec["task"], list(spec["methods"])
    cfg = resolve_paths(cfg) if "m3ddm" in methods else dict(cfg)
    output = absolute_uri(output).rstrip("/")
    so = cfg.get("storage_options") or None
    cases = task_cases(spec)
    labels = [c.label for c in cases]
    videos = datasets.read_dataset(str(ecfg["dataset"]), str(ecfg["root"]), str(ecfg.get("split") or "val"), so)
    clip_len = cases[0].clip_len if task == "extend" else ecfg.get("clip_len")
    clips = datasets.make_clips(videos, int(clip_len) if clip_len else None, str(ecfg.get("clips") or "first"),
                                ecfg.get("max_clips"), so)
    ecfg = settle_metrics(ecfg)
    metrics = ecfg["metrics"]
    groups = build_task_rows(cfg, spec, clips, cases)

    cfg, ecfg, results, fvd, fvd_notes = run_rows(cfg, ecfg, groups, methods, labels, output, spec)
    by_label = {c.label: c for c in cases}
    filled = []
    for r in rows_with_lists(results):  # every row names its task and case, error rows too
        c = by_label.get(r["ratio_label"])
        filled.append(dict(r, task=task, mask_motion=c.motion if c else None, context=c.context if c else None,
                           predict=c.predict if c else None))
    schema = eval_schema()
    table = pa.Table.from_pylist([_clean(r, schema) for r in filled], schema=schema)
    rows = table.to_pylist()
    summary = summarize_task(task, rows, fvd, methods, labels)
    meta = {
        "task": task, "dataset": ecfg["dataset"], "root": str(ecfg["root"]), "split": ecfg.get("split"),
        "settings": {k: v for k, v in spec.items() if k not in ("task", "methods")},
        "clip_len": clip_len, "clips_mode": ecfg.get("clips"), "num_clips": len(clips), "methods": methods,
        "model": str(cfg["model"]), "vae": str(cfg["vae"]), "steps": cfg["sampler"]["steps"],
        "seed": cfg["sampler"].get("seed"), "canvas_size": cfg["canvas_size"],
        "lpips": "computed" if metrics["lpips"] else "not computed (no LPIPS weights found; --lpips-weights)",
        "fvd": ({"kind": metrics.get("fvd_kind"), "weights": metrics.get("fvd_weights"),
                 "sets": fvd_notes} if fvd else "not computed"),
    }
    what = "inpainting (synthetic object masks)" if task == "inpaint" else "prediction (ExtDM protocol)"
    title = f"{ecfg['dataset']} {ecfg.get('split') or ''} — {what}"
    md = task_markdown(summary, title)
    return write_outputs(output, so, table, clips, summary, md, title, meta,
                         ("task", "dataset", "split", "methods", "model", "steps", "canvas_size", "num_clips"), t0)
