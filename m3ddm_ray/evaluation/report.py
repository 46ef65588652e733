"""Evaluation outputs: the summary table (Markdown + JSON), side-by-side strip images and an HTML page.

The summary follows the column order of the published tables (M3DDM Table 1 and the follow-ups):
one row per method, for each case (mask ratio, mask motion or context / predict split) the task's
columns (:class:`Table`: outpainting ``PSNR↑ SSIM↑ LPIPS↓ FVD↓``, inpainting adds the temporal
consistency ``TC↓``), then, with several cases, the same columns as the mean over the cases. A cell is
the mean over the clips whose row is ``ok`` (:func:`statistics.fmean`, i.e. ``math.fsum / n``, so it
does not depend on row order); the "mean" cell is ``fmean`` of the per-case cells (NaN if any is
missing). FVD is computed once per (method, case) over all clips (it is a distance between two sets
of videos, not a per-clip number). Prediction adds one table per metric with a column per predicted
frame index ``t+1 .. t+p`` (ExtDM reports its metrics per index). Non-finite numbers are written to
JSON as the strings ``"inf"``, ``"-inf"``, ``"nan"`` (strict JSON has no such numbers).
"""

from __future__ import annotations

import html
import json
import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["TABLE_METRICS", "Table", "OUTPAINT_TABLE", "summarize", "summary_markdown", "summary_json",
           "decode_lists", "to_jsonable", "strip_image", "report_html"]

#: Metrics of the published outpainting table, in order, with the direction of "better".
TABLE_METRICS: tuple[tuple[str, str, str], ...] = (
    ("psnr", "PSNR", "↑"), ("ssim", "SSIM", "↑"), ("lpips", "LPIPS", "↓"), ("fvd", "FVD", "↓"),
)


@dataclass(frozen=True)
class Table:
    """What a task's summary shows.

    Attributes:
        columns: ``(key, name, arrow)`` per column of a case, FVD included.
        clip_metrics: per-clip columns averaged into every cell (FVD comes from the set of clips).
        per_index: ``(key, name, arrow)`` of per-predicted-frame lists (one table each).
        label_prefix: written before a case label in the header (``"ratio "``).
        notes: lines under the table.
    """

    columns: tuple[tuple[str, str, str], ...] = TABLE_METRICS
    clip_metrics: tuple[str, ...] = ("psnr", "ssim", "lpips", "bmse")
    per_index: tuple[tuple[str, str, str], ...] = ()
    label_prefix: str = "ratio "
    notes: tuple[str, ...] = ()


#: The outpainting table (M3DDM Table 1 and the follow-ups).
OUTPAINT_TABLE = Table()


def _mean(values: Sequence[float]) -> float:
    vals = list(values)
    if not vals or any(v is None or math.isnan(float(v)) for v in vals):
        return float("nan")
    return statistics.fmean(float(v) for v in vals)


def _per_index(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """Mean over ``rows`` of their per-index lists (all of one length; NaN entries stay NaN)."""
    arrays = [np.asarray(r[key], np.float64) for r in rows if r.get(key) is not None]
    return [float(v) for v in np.mean(np.stack(arrays), axis=0)] if arrays else []


def summarize(rows: Iterable[Mapping[str, Any]], fvd: Mapping[tuple[str, str], float] | None = None,
              methods: Sequence[str] | None = None, labels: Sequence[str] | None = None,
              table: Table = OUTPAINT_TABLE) -> dict:
    """The summary of per-clip rows (``method``, ``ratio_label``, ``status`` and the metric columns).

    Args:
        rows: per-clip result rows (per-index values as lists, :func:`decode_lists`).
        fvd: ``(method, label) -> FVD``; missing pairs are NaN.
        methods, labels: order of the table (default: order of first appearance).
        table: the task's :class:`Table`.

    Returns:
        ``{"columns": [...], "labels": [...], "methods": {method: {label: {metric: value, "clips": n,
        "errors": n[, per-index lists]}, "mean": {metric: value}}}}`` with ``metric`` in
        ``table.clip_metrics`` and ``fvd``.
    """
    rows = list(rows)
    methods = list(methods) if methods else list(dict.fromkeys(r["method"] for r in rows))
    labels = list(labels) if labels else list(dict.fromkeys(r["ratio_label"] for r in rows))
    fvd = dict(fvd or {})
    out: dict[str, Any] = {"columns": [f"{name}{arrow}" for _, name, arrow in table.columns], "labels": labels,
                           "methods": {}}
    for m in methods:
        entry: dict[str, Any] = {}
        for lab in labels:
            sel = [r for r in rows if r["method"] == m and r["ratio_label"] == lab]
            ok = [r for r in sel if r["status"] == "ok"]
            cell: dict[str, Any] = {k: (_mean([r[k] for r in ok]) if ok else float("nan")) for k in table.clip_metrics}
            cell["fvd"] = float(fvd.get((m, lab), float("nan")))
            cell["clips"], cell["errors"] = len(ok), len(sel) - len(ok)
            for k, _, _ in table.per_index:
                cell[k] = _per_index(ok, k)
            entry[lab] = cell
        entry["mean"] = {k: _mean([entry[lab][k] for lab in labels]) for k in (*table.clip_metrics, "fvd")}
        out["methods"][m] = entry
    return out


def _grid(head: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def summary_markdown(summary: Mapping[str, Any], title: str = "", table: Table = OUTPAINT_TABLE) -> str:
    """The Markdown tables of :func:`summarize` (module docstring)."""
    labels, methods = summary["labels"], summary["methods"]
    groups = [*labels, "mean"] if len(labels) > 1 else list(labels)
    name_of = {g: g if g == "mean" else table.label_prefix + g for g in groups}
    head = ["method"] + [(f"{name_of[g]} " if len(groups) > 1 else "") + f"{name}{arrow}"
                         for g in groups for _, name, arrow in table.columns]
    lines = [f"# {title}", ""] if title else []
    if len(groups) == 1:
        lines += [f"Case {name_of[groups[0]]}.", ""]
    lines += _grid(head, ([m] + [_fmt(entry[g][k], k) for g in groups for k, _, _ in table.columns]
                          for m, entry in methods.items()))
    lines += ["", *table.notes] if table.notes else []
    for lab in labels:
        for key, name, arrow in table.per_index:
            n = max((len(e[lab][key]) for e in methods.values()), default=0)
            if n:
                base = key.replace("_frames", "")
                lines += ["", f"{name}{arrow} per predicted frame index ({name_of[lab]}):", ""]
                lines += _grid(["method"] + [f"t+{i + 1}" for i in range(n)],
                               ([m] + [_fmt(v, base) for v in e[lab][key] + [float("nan")] * (n - len(e[lab][key]))]
                                for m, e in methods.items()))
    extra = [k for k in table.clip_metrics if k not in {c for c, _, _ in table.columns}]
    counts = []
    for m, entry in methods.items():
        per = ", ".join(f"{lab}: {entry[lab]['clips']} ok" + (f", {entry[lab]['errors']} errors" if entry[lab]['errors']
                                                              else "") for lab in labels)
        means = "".join(f"; {k.upper()} mean {_fmt(entry['mean'][k], k)}" for k in extra)
        counts.append(f"- {m}: {per}{means}")
    lines += ["", "Clips per cell (mean over clips; FVD over the set of clips; `–` = not computed):", *counts, ""]
    return "\n".join(lines)


def decode_lists(rows: Iterable[Mapping[str, Any]], keys: Sequence[str]) -> list[dict]:
    """Rows with the per-index JSON strings of the wire (``keys``) decoded to lists of floats ("nan" -> NaN)."""
    out = []
    for r in rows:
        r = dict(r)
        for key in keys:
            if isinstance(r.get(key), str) and r[key]:
                r[key] = [float(v) for v in json.loads(r[key])]
            elif not isinstance(r.get(key), list):
                r[key] = None
        out.append(r)
    return out


def _fmt(v: Any, key: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if key == "psnr":
        return f"{v:.2f}"
    if key in ("ssim", "lpips", "bmse"):
        return f"{v:.4f}"
    return f"{v:.2f}"


def to_jsonable(value: Any) -> Any:
    """Recursively make ``value`` strict-JSON safe (non-finite floats -> ``"inf"``/``"-inf"``/``"nan"``,
    numpy scalars -> Python, tuples -> lists)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def summary_json(summary: Mapping[str, Any], **meta: Any) -> str:
    """Strict JSON of the summary (:func:`summarize`) with ``meta`` (task, protocol, dataset, ...) at the top level."""
    data = {**meta, **summary}
    return json.dumps(to_jsonable(data), indent=2, allow_nan=False, ensure_ascii=False)


# --------------------------------------------------------------------------------------------------
# Images and HTML
# --------------------------------------------------------------------------------------------------


def strip_image(inputs: np.ndarray, outputs: np.ndarray, gts: np.ndarray, frame_ids: Sequence[int] | None = None,
                max_frames: int = 4, gap: int = 4, header: bool = True, min_width: int = 128) -> np.ndarray:
    """``uint8 (H', W', 3)`` RGB: one row per chosen frame, ``input | output | ground truth`` side by side.

    ``inputs`` is what the method saw, drawn at the ground-truth size (known region, black elsewhere).
    Frames: ``frame_ids`` or ``max_frames`` evenly spaced ones. Frames narrower than ``min_width``
    are enlarged by an integer factor (nearest neighbour: pixels stay visible as they are).
    """
    import cv2

    t, h, w = gts.shape[:3]
    if frame_ids is None:
        frame_ids = sorted({int(round(x)) for x in np.linspace(0, t - 1, min(max_frames, t))})
    k = max(1, -(-int(min_width) // w))
    ph, pw = h * k, w * k
    head = 18 if header else 0
    out = np.full((head + len(frame_ids) * (ph + gap) - gap, 3 * pw + 2 * gap, 3), 255, dtype=np.uint8)
    if header:
        for j, name in enumerate(("input", "output", "ground truth")):
            cv2.putText(out, name, (j * (pw + gap) + 2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    for i, f in enumerate(frame_ids):
        y = head + i * (ph + gap)
        for j, src in enumerate((inputs, outputs, gts)):
            panel = src[f] if k == 1 else np.repeat(np.repeat(src[f], k, axis=0), k, axis=1)
            out[y:y + ph, j * (pw + gap):j * (pw + gap) + pw] = panel
    return out


def report_html(rows: Sequence[Mapping[str, Any]], summary_md: str, title: str = "Outpainting evaluation",
                meta: Mapping[str, Any] | None = None) -> str:
    """A self-contained HTML page: the summary table, then per clip and mask ratio one strip image
    per method (``row["image"]``: path relative to the page) with its scores."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}"
        "td:first-child{text-align:left}figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}"
        "figcaption{font-size:small;max-width:40em}.err{color:#b00}img{image-rendering:pixelated}</style>",
        "</head><body>", f"<h1>{esc(title)}</h1>",
    ]
    if meta:
        text = {k: ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for k, v in meta.items()}
        parts.append("<p>" + "<br>".join(f"<b>{esc(k)}</b>: {esc(v)}" for k, v in text.items()) + "</p>")
    parts.append(_markdown_table_html(summary_md))
    parts.append("<p>Each image: rows are frames; columns are the input the method saw (known region), "
                 "the scored output (known region = ground truth) and the ground truth.</p>")
    clips = list(dict.fromkeys(r["clip_id"] for r in rows))
    for cid in clips:
        crow = [r for r in rows if r["clip_id"] == cid]
        parts.append(f"<h2 id='{esc(cid)}'>{esc(cid)}</h2>")
        for lab in dict.fromkeys(r["ratio_label"] for r in crow):
            parts.append(f"<h3>mask ratio {esc(str(lab))}</h3><div>")
            for r in (r for r in crow if r["ratio_label"] == lab):
                if r["status"] != "ok":
                    parts.append(f"<figure><figcaption class='err'><b>{esc(r['method'])}</b>: "
                                 f"{esc(str(r.get('error')))}</figcaption></figure>")
                    continue
                cap = (f"<b>{esc(r['method'])}</b> PSNR {_fmt(r['psnr'], 'psnr')} · SSIM {_fmt(r['ssim'], 'ssim')}"
                       f" · LPIPS {_fmt(r.get('lpips'), 'lpips')} · BMSE {_fmt(r.get('bmse'), 'bmse')}")
                img = f"<img src='{esc(r['image'])}' alt='{esc(cid)} {esc(r['method'])}'>" if r.get("image") else ""
                parts.append(f"<figure>{img}<figcaption>{cap}</figcaption></figure>")
            parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _markdown_table_html(md: str) -> str:
    rows = [ln for ln in md.splitlines() if ln.startswith("|") and not ln.startswith("|---")]
    if not rows:
        return ""
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in cells[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
