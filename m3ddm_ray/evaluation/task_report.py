"""Summary tables of the ``inpaint`` / ``extend`` evaluation (Markdown + JSON).

A cell is the mean over the clips whose row is ``ok`` (``statistics.fmean``; NaN when a value is
missing, e.g. LPIPS without weights); FVD comes from the set of clips (:func:`.scoring.fvd_by_set`).

* inpaint: one row per method; per mask motion ``PSNR↑ SSIM↑ LPIPS↓ TC↓ FVD↓`` (TC = temporal
  consistency in the hole, levels), then the mean over the motions;
* extend: one row per method, ``PSNR↑ SSIM↑ LPIPS↓`` averaged over the predicted frames and FVD of
  the ``c + p`` clips; then one table per metric with a column per predicted frame index ``t+1 ..
  t+p`` (ExtDM reports its metrics per index).
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .report import _fmt, _mean

__all__ = ["summarize_task", "task_markdown"]

_INPAINT_METRICS = (("psnr", "PSNR", "↑"), ("ssim", "SSIM", "↑"), ("lpips", "LPIPS", "↓"),
                    ("temporal", "TC", "↓"), ("fvd", "FVD", "↓"))
_EXTEND_METRICS = (("psnr", "PSNR", "↑"), ("ssim", "SSIM", "↑"), ("lpips", "LPIPS", "↓"), ("fvd", "FVD", "↓"))
_PER_INDEX = (("psnr_frames", "PSNR", "↑"), ("ssim_frames", "SSIM", "↑"), ("lpips_frames", "LPIPS", "↓"))


def _per_index(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """Mean over ``rows`` of their per-index lists (all of one length; NaN entries stay NaN)."""
    arrays = [np.asarray(r[key], np.float64) for r in rows if r.get(key) is not None]
    if not arrays:
        return []
    return [float(v) for v in np.mean(np.stack(arrays), axis=0)]


def summarize_task(task: str, rows: Iterable[Mapping[str, Any]], fvd: Mapping[tuple[str, str], float] | None,
                   methods: Sequence[str], labels: Sequence[str]) -> dict:
    """``{"task", "columns", "labels", "methods": {method: {label: {metric: value, "clips", "errors"[, per-index
    lists]}, "mean": {metric: value}}}}``; ``rows`` have the task columns (per-index values as lists)."""
    rows = list(rows)
    metrics = [k for k, _, _ in (_INPAINT_METRICS if task == "inpaint" else _EXTEND_METRICS) if k != "fvd"]
    table = _INPAINT_METRICS if task == "inpaint" else _EXTEND_METRICS
    out: dict[str, Any] = {"task": task, "columns": [f"{name}{arrow}" for _, name, arrow in table],
                           "labels": list(labels), "methods": {}}
    for m in methods:
        entry: dict[str, Any] = {}
        for lab in labels:
            sel = [r for r in rows if r["method"] == m and r["ratio_label"] == lab]
            ok = [r for r in sel if r["status"] == "ok"]
            cell: dict[str, Any] = {k: (_mean([r[k] for r in ok]) if ok else float("nan")) for k in metrics}
            cell["fvd"] = float((fvd or {}).get((m, lab), float("nan")))
            cell["clips"], cell["errors"] = len(ok), len(sel) - len(ok)
            if task == "extend":
                for k, _, _ in _PER_INDEX:
                    cell[k] = _per_index(ok, k)
            entry[lab] = cell
        entry["mean"] = {k: _mean([entry[lab][k] for lab in labels]) for k in (*metrics, "fvd")}
        out["methods"][m] = entry
    return out


def _fmt_any(v: Any, key: str) -> str:
    if key == "temporal" and isinstance(v, float) and math.isfinite(v):
        return f"{v:.2f}"
    return _fmt(v, key)


def task_markdown(summary: Mapping[str, Any], title: str = "") -> str:
    """The Markdown tables of :func:`summarize_task` (module docstring)."""
    task, labels = summary["task"], summary["labels"]
    lines = [f"# {title}", ""] if title else []
    if task == "inpaint":
        groups = [*labels, "mean"] if len(labels) > 1 else list(labels)
        head = ["method"] + [f"{g} {name}{arrow}" for g in groups for _, name, arrow in _INPAINT_METRICS]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        for m, entry in summary["methods"].items():
            cells = [m] + [_fmt_any(entry[g][k], k) for g in groups for k, _, _ in _INPAINT_METRICS]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "TC: temporal consistency in the hole (mean |Δoutput − Δtruth| between consecutive frames, "
                      "levels; lower is better). Whole-frame PSNR / SSIM / LPIPS, mean over frames, then clips."]
    else:
        lab = labels[0]
        head = ["method"] + [f"{name}{arrow}" for _, name, arrow in _EXTEND_METRICS]
        lines += [f"Case {lab}: means over the predicted frames, then clips; FVD over the context + predicted clips.",
                  "", "| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        for m, entry in summary["methods"].items():
            lines.append("| " + " | ".join([m] + [_fmt(entry[lab][k], k) for k, _, _ in _EXTEND_METRICS]) + " |")
        for key, name, arrow in _PER_INDEX:
            n = max((len(e[lab][key]) for e in summary["methods"].values()), default=0)
            if not n:
                continue
            head = ["method"] + [f"t+{i + 1}" for i in range(n)]
            lines += ["", f"{name}{arrow} per predicted frame index:", "",
                      "| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * n) + "|"]
            base = key.replace("_frames", "")
            for m, entry in summary["methods"].items():
                vals = entry[lab][key] + [float("nan")] * (n - len(entry[lab][key]))
                lines.append("| " + " | ".join([m] + [_fmt(v, base) for v in vals]) + " |")
    counts = []
    for m, entry in summary["methods"].items():
        per = ", ".join(f"{lab}: {entry[lab]['clips']} ok" + (f", {entry[lab]['errors']} errors"
                                                              if entry[lab]["errors"] else "") for lab in labels)
        counts.append(f"- {m}: {per}")
    lines += ["", "Clips per cell (`–` = not computed):", *counts, ""]
    return "\n".join(lines)


def rows_with_lists(rows: Iterable[Mapping[str, Any]]) -> list[dict]:
    """Rows with the per-index JSON strings of the wire decoded to lists of floats (NaN for "nan")."""
    out = []
    for r in rows:
        r = dict(r)
        for key, _, _ in _PER_INDEX:
            if isinstance(r.get(key), str) and r[key]:
                r[key] = [float(v) for v in json.loads(r[key])]
            elif not isinstance(r.get(key), list):
                r[key] = None
        out.append(r)
    return out
