"""The result table of the batch job: one Arrow schema, the one list of result columns.

One row per (clip, ratio); the columns are documented in the README. :data:`RESULT_COLUMNS` (the
order the stages fill) is derived from :data:`RESULT_SCHEMA`, so the two cannot disagree.
"""

from __future__ import annotations

import pyarrow as pa

from ..quality import REPORT_KEYS

__all__ = ["RESULT_SCHEMA", "RESULT_COLUMNS"]

#: Arrow schema of the result table (one row per (clip, ratio)).
RESULT_SCHEMA: pa.Schema = pa.schema([
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
