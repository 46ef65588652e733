"""The result table of the batch job: one Arrow schema, the one list of result columns, and what
names a row.

One row per output: (clip, target ratio) for an outpaint row, (clip, task) for an inpaint / extend
row. ``task`` holds ``outpaint`` | ``inpaint`` | ``extend``; ``ratio`` holds the target ratio of an
outpaint row (``"9:16"``) and is null for the others. The columns are documented in the README.
:data:`RESULT_COLUMNS` (the order the stages fill) is derived from :data:`RESULT_SCHEMA`, so the two
cannot disagree. :func:`row_identity` is the one rule for which output a row is (stage rows and
result rows alike); :func:`row_label` is how the summary and the output names spell it.
"""

from __future__ import annotations

from typing import Any, Mapping

import pyarrow as pa

from ..quality import REPORT_KEYS
from .rows import is_missing
from ..task import task_name

__all__ = ["RESULT_SCHEMA", "RESULT_COLUMNS", "row_ratio", "row_identity", "row_label"]

#: Arrow schema of the result table (one row per output: (clip, ratio) or (clip, task)).
RESULT_SCHEMA: pa.Schema = pa.schema([
    # ratio: an outpaint row's target ratio ("9:16"); null for inpaint / extend rows (see "task")
    ("clip_id", pa.string()), ("video_uri", pa.string()), ("ratio", pa.string()), ("output_uri", pa.string()),
    ("status", pa.string()), ("error", pa.string()), ("frames", pa.int64()), ("fps", pa.float64()),
    ("source_width", pa.int64()), ("source_height", pa.int64()), ("output_width", pa.int64()),
    ("output_height", pa.int64()),
    ("seconds_prepare", pa.float64()), ("seconds_coarse", pa.float64()), ("seconds_fine", pa.float64()),
    ("seconds_finalize", pa.float64()), ("seconds_unet", pa.float64()),
    ("model", pa.string()), ("vae", pa.string()), ("config_hash", pa.string()), ("settings", pa.string()),
    *[(key, pa.float64()) for key in REPORT_KEYS],  # no-reference quality numbers (m3ddm_ray.quality)
    ("previous_result", pa.string()),  # results file of the earlier verdict this run relied on (resume)
    # the task (docs/tasks.md): outpaint rows have task "outpaint" and no options
    ("task", pa.string()), ("task_options", pa.string()), ("mask_uri", pa.string()), ("output_frames", pa.int64()),
])

#: Result-table columns, in order.
RESULT_COLUMNS: tuple[str, ...] = tuple(RESULT_SCHEMA.names)


def row_ratio(row: Mapping[str, Any]) -> str | None:
    """The row's target ratio string (``"9:16"``), or None for an inpaint / extend row (a missing
    value: None, or the NaN a Ray block may turn it into)."""
    value = row.get("ratio")
    return None if is_missing(value) else str(value)


def row_identity(row: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """``(clip_id, task, ratio)``: which output of the job a stage row or result row is, e.g.
    ``("c", "outpaint", "9:16")`` or ``("c", "inpaint", None)``; a row without ``task`` is an
    outpaint row. Reads the current schema only (an older result table's rows are normalised first:
    :func:`m3ddm_ray.distributed.resume.normalise_result`)."""
    return str(row["clip_id"]), task_name(row), row_ratio(row)


def row_label(row: Mapping[str, Any]) -> str:
    """How the row's output is named: its ratio for an outpaint row (``"9:16"``), else its task
    (``"inpaint"``, ``"extend"``) -- in the job summary and in the output file name."""
    _, task, ratio = row_identity(row)
    return task if ratio is None else ratio
