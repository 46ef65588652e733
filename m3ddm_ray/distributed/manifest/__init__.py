"""Job manifests: which videos to outpaint, under which clip ids, to which ratios.

A manifest is a table with one row per video. It is read from Parquet (``.parquet``/``.pq``),
JSON Lines (``.jsonl``/``.ndjson``) or CSV (``.csv``) -- the format is chosen by the file
extension -- from a local path or any fsspec URL (``s3://``, ``gs://``, ``memory://``...).

Columns (see :data:`MANIFEST_COLUMNS`; every column except ``video_uri`` is optional):

* ``video_uri`` -- str, required: local path or fsspec URL of the input video.
* ``clip_id`` -- str, ``[A-Za-z0-9._-]{1,128}``, not ``.``/``..``: output name of the clip;
  default :func:`derive_clip_id` of ``video_uri`` (``tree_60-3f2a9c1b04d7``).
* ``target_ratios`` -- str ``"9:16,1:1"`` or list of str: ratios to outpaint to; default: the
  job's ratios.
* ``output_prefix`` -- str: relative sub-folder of the job's output prefix for this row
  (``"shorts/2024"``); it can never point outside the job's output prefix.
* sampler overrides (a job may allow only some, see ``allowed_overrides``):
  ``seed`` (int, 0 <= seed < 2**63), ``num_inference_steps`` (int, 2..1000),
  ``guidance_scale`` and ``previous_guidance_scale`` (float, finite, >= 0),
  ``canvas_size`` (int, a positive multiple of 8), ``output_size`` (``"canvas"`` | ``"source"``).
* the task (docs/tasks.md): ``task`` (``"outpaint"`` default | ``"inpaint"`` | ``"extend"``);
  ``mask_uri`` (str, required for inpaint: a folder of per-frame mask images, a mask video or one
  image) and ``mask_dilate`` (int >= 0, pixels); ``extend_frames`` (int >= 1, required for extend)
  and ``extend_direction`` (``"forward"`` default | ``"backward"``). A task's columns on a row of
  another task are an error, as are ``target_ratios`` / ``output_size`` on inpaint / extend rows
  (those keep the source size; one output per clip).

Missing values -- a JSON ``null`` or absent key, an empty CSV cell, a Parquet null, a float NaN
(pandas' null), an empty string or an empty ratio list -- mean "use the default".
Numeric overrides also accept their text form (``"42"``, ``"7.5"``) since CSV has no types;
integers accept integral floats (``42.0``, what pandas writes for an int column with nulls);
booleans are never numbers.

Row numbers in messages are 1-based data rows: the CSV header and blank JSONL/CSV lines are not
counted. All problems of a manifest are gathered and raised together as one
:class:`ManifestError` (a subclass of :class:`~m3ddm_ray.errors.InputError`).

``video_uri`` is kept exactly as written (after trimming surrounding white space): relative
local paths are relative to the working directory of the process that reads the videos, not to
the manifest.

Numeric limits that the sampler also checks (``num_inference_steps``, ``canvas_size``,
``output_size``) are the rules of :mod:`m3ddm_ray.rules`, so a row the sampler would reject fails
here, with its row number, before the job starts.

This package is pure: pyarrow, fsspec (through :mod:`m3ddm_ray.storage`) and the standard library
only (no torch, no Ray). Modules, one job each (import everything from
``m3ddm_ray.distributed.manifest``):

* :mod:`.schema` -- the columns (:data:`MANIFEST_COLUMNS`, :data:`MANIFEST_SCHEMA`),
  :class:`ManifestRow`, :class:`ManifestProblem` / :class:`ManifestError`;
* :mod:`.naming` -- path safety of clip ids and output prefixes, :func:`derive_clip_id`;
* :mod:`.validation` -- value coercion and whole-manifest validation (:func:`validate_manifest`);
* :mod:`.io` -- reading Parquet / JSONL / CSV, listing a prefix, atomic writing.
"""

from .io import manifest_from_prefix, read_manifest, rows_to_table, write_manifest
from .naming import MAX_CLIP_ID_LENGTH, MAX_OUTPUT_PREFIX_LENGTH, check_clip_id, check_output_prefix, derive_clip_id
from .schema import (
    MANIFEST_COLUMNS,
    MANIFEST_EXTENSIONS,
    MANIFEST_SCHEMA,
    SAMPLER_OVERRIDE_COLUMNS,
    TASK_COLUMNS,
    VIDEO_EXTENSIONS,
    ColumnSpec,
    ManifestError,
    ManifestProblem,
    ManifestRow,
)
from .validation import validate_manifest

__all__ = [
    "ColumnSpec",
    "MANIFEST_COLUMNS",
    "MANIFEST_SCHEMA",
    "SAMPLER_OVERRIDE_COLUMNS",
    "TASK_COLUMNS",
    "MANIFEST_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "MAX_CLIP_ID_LENGTH",
    "MAX_OUTPUT_PREFIX_LENGTH",
    "ManifestProblem",
    "ManifestError",
    "ManifestRow",
    "derive_clip_id",
    "check_clip_id",
    "check_output_prefix",
    "read_manifest",
    "validate_manifest",
    "manifest_from_prefix",
    "write_manifest",
    "rows_to_table",
]
