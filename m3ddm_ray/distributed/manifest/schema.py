"""Manifest columns, the validated row type and the error type (see :mod:`m3ddm_ray.distributed.manifest`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pyarrow as pa

from m3ddm_ray.errors import InputError

__all__ = [
    "ColumnSpec",
    "MANIFEST_COLUMNS",
    "MANIFEST_SCHEMA",
    "SAMPLER_OVERRIDE_COLUMNS",
    "TASK_COLUMNS",
    "MANIFEST_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "MAX_SEED",
    "ManifestProblem",
    "ManifestError",
    "ManifestRow",
]


@dataclass(frozen=True)
class ColumnSpec:
    """One accepted manifest column.

    Attributes:
        name: column name as written in the manifest.
        kind: value kind: ``"str"``, ``"ratios"``, ``"int"``, ``"float"`` or ``"choice"``.
        arrow_type: the pyarrow type the column has in :data:`MANIFEST_SCHEMA` (and in written
            Parquet files; ``target_ratios`` is written as a comma-separated string).
        required: whether every manifest must have the column.
        sampler_override: whether the column is a per-row sampler override (a job can restrict
            those with ``allowed_overrides``).
        doc: one-line description.
    """

    name: str
    kind: str
    arrow_type: pa.DataType
    required: bool = False
    sampler_override: bool = False
    doc: str = ""


_COLUMN_LIST = (
    ColumnSpec("video_uri", "str", pa.string(), required=True,
               doc="local path or fsspec URL of the input video"),
    ColumnSpec("clip_id", "str", pa.string(),
               doc="output name, [A-Za-z0-9._-]{1,128}; default derive_clip_id(video_uri)"),
    ColumnSpec("target_ratios", "ratios", pa.string(),
               doc='ratios like "9:16,1:1" (or a list of such strings); default: the job ratios'),
    ColumnSpec("output_prefix", "str", pa.string(),
               doc="relative sub-folder of the job output prefix for this row"),
    ColumnSpec("seed", "int", pa.int64(), sampler_override=True,
               doc="sampler seed, 0 <= seed < 2**63"),
    ColumnSpec("num_inference_steps", "int", pa.int64(), sampler_override=True,
               doc="number of denoising steps, 2..1000 (m3ddm_ray.rules)"),
    ColumnSpec("guidance_scale", "float", pa.float64(), sampler_override=True,
               doc="classifier-free guidance scale, finite and >= 0"),
    ColumnSpec("previous_guidance_scale", "float", pa.float64(), sampler_override=True,
               doc="guidance scale of the previous-window condition, finite and >= 0"),
    ColumnSpec("canvas_size", "int", pa.int64(), sampler_override=True,
               doc="model canvas side in pixels, a positive multiple of 8"),
    ColumnSpec("output_size", "choice", pa.string(), sampler_override=True,
               doc='"canvas" (model resolution) or "source" (scaled to the input resolution)'),
    # the task of the row (m3ddm_ray.rules.TASKS; docs/tasks.md) and its inputs
    ColumnSpec("task", "choice", pa.string(),
               doc='"outpaint" (default), "inpaint" (needs mask_uri) or "extend" (needs extend_frames)'),
    ColumnSpec("mask_uri", "str", pa.string(),
               doc="inpaint: per-frame mask images (folder), a mask video or one image; non-zero = remove"),
    ColumnSpec("mask_dilate", "int", pa.int64(),
               doc="inpaint: grow the masks by this many pixels first (>= 0; default 0)"),
    ColumnSpec("extend_frames", "int", pa.int64(),
               doc="extend: number of new frames (>= 1)"),
    ColumnSpec("extend_direction", "choice", pa.string(),
               doc='extend: "forward" (after the video, default) or "backward" (before it)'),
)

#: Columns that belong to one task only (column -> task).
TASK_COLUMNS: Mapping[str, str] = {"mask_uri": "inpaint", "mask_dilate": "inpaint",
                                   "extend_frames": "extend", "extend_direction": "extend"}

#: Accepted manifest columns, by name, in canonical order.
MANIFEST_COLUMNS: Mapping[str, ColumnSpec] = {c.name: c for c in _COLUMN_LIST}

#: Names of the per-row sampler override columns.
SAMPLER_OVERRIDE_COLUMNS: tuple[str, ...] = tuple(c.name for c in _COLUMN_LIST if c.sampler_override)

#: Arrow schema of :func:`rows_to_table` (and of written Parquet manifests, restricted to the
#: columns in use).
MANIFEST_SCHEMA: pa.Schema = pa.schema(
    [pa.field(c.name, c.arrow_type, nullable=not c.required) for c in _COLUMN_LIST]
)

#: Manifest file extensions and their format.
MANIFEST_EXTENSIONS: Mapping[str, str] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}

#: Default video extensions of :func:`manifest_from_prefix`.
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")

#: Largest accepted ``seed`` (torch generators take 64-bit seeds; Arrow stores int64).
MAX_SEED = 2**63 - 1

_MAX_REPORTED = 200


@dataclass(frozen=True)
class ManifestProblem:
    """One problem found in a manifest.

    Attributes:
        row: 1-based data row, or ``None`` for a problem of the whole manifest (a missing or
            unknown column).
        column: the column concerned, or ``None``.
        message: what is wrong and what would be accepted.
    """

    row: int | None
    column: str | None
    message: str

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return f"{', '.join(where)}: {self.message}" if where else self.message


class ManifestError(InputError):
    """A manifest has one or more problems; all of them are in :attr:`problems` and the message.

    Attributes:
        source: the manifest file (or ``"manifest"`` for in-memory records).
        problems: every problem found, in row order (whole-manifest problems first).
    """

    def __init__(self, source: str, problems: Sequence[ManifestProblem]):
        self.source = str(source)
        self.problems = list(problems)
        n = len(self.problems)
        lines = [f"{self.source}: {n} problem{'s' if n != 1 else ''} in manifest:"]
        lines += [f"  - {p}" for p in self.problems[:_MAX_REPORTED]]
        if n > _MAX_REPORTED:
            lines.append(f"  ... and {n - _MAX_REPORTED} more (see ManifestError.problems)")
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestRow:
    """One validated manifest row. ``None`` means "use the job default".

    Build rows with :func:`read_manifest`, :func:`validate_manifest` or
    :func:`manifest_from_prefix`; the constructor itself does not validate.

    Attributes:
        video_uri: local path or fsspec URL of the input video.
        clip_id: safe output name (``[A-Za-z0-9._-]``, at most 128 characters, never ``.``/``..``).
        target_ratios: normalised ratio strings (``("9:16", "1:1")``), without duplicates, or
            ``None`` for the job default.
        output_prefix: relative sub-folder (``"a/b"``, no leading/trailing ``/``) or ``None``.
        seed, num_inference_steps, guidance_scale, previous_guidance_scale, canvas_size,
        output_size: sampler overrides, or ``None``.
        task: ``"inpaint"`` or ``"extend"``; ``None`` is ``"outpaint"`` (see :attr:`task_name`).
        mask_uri: inpaint only: the mask source (:func:`m3ddm_ray.video.read_masks`), absolute or
            as written (relative local paths are resolved by the job's driver).
        mask_dilate: inpaint only: dilation in pixels, or ``None`` (0).
        extend_frames: extend only: new frames (>= 1).
        extend_direction: extend only: ``"forward"`` / ``"backward"``, or ``None`` (forward).
    """

    video_uri: str
    clip_id: str
    target_ratios: tuple[str, ...] | None = None
    output_prefix: str | None = None
    seed: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    previous_guidance_scale: float | None = None
    canvas_size: int | None = None
    output_size: str | None = None
    task: str | None = None
    mask_uri: str | None = None
    mask_dilate: int | None = None
    extend_frames: int | None = None
    extend_direction: str | None = None

    @property
    def task_name(self) -> str:
        """The row's task: ``"outpaint"``, ``"inpaint"`` or ``"extend"``."""
        return self.task or "outpaint"

    @property
    def sampler_overrides(self) -> dict[str, Any]:
        """The sampler overrides this row sets (name -> value), without the unset ones."""
        return {k: getattr(self, k) for k in SAMPLER_OVERRIDE_COLUMNS if getattr(self, k) is not None}

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict of the set fields; ``target_ratios`` as ``"9:16,1:1"``.

        Reading the record back with :func:`validate_manifest` gives an equal row.
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            out[f.name] = ",".join(v) if f.name == "target_ratios" else v
        return out
