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
  ``seed`` (int, 0 <= seed < 2**63), ``num_inference_steps`` (int, 1..1000),
  ``guidance_scale`` and ``previous_guidance_scale`` (float, finite, >= 0),
  ``canvas_size`` (int, a positive multiple of 8), ``output_size`` (``"canvas"`` | ``"source"``).

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

This module is pure: it needs pyarrow, fsspec and the standard library only (no torch, no Ray).
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import hashlib
import io
import json
import math
import os
import re
import tempfile
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import fsspec
import pyarrow as pa

from m3ddm_ray.errors import InputError

__all__ = [
    "ColumnSpec",
    "MANIFEST_COLUMNS",
    "MANIFEST_SCHEMA",
    "SAMPLER_OVERRIDE_COLUMNS",
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


# --------------------------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------------------------


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
               doc="number of denoising steps, 1..1000"),
    ColumnSpec("guidance_scale", "float", pa.float64(), sampler_override=True,
               doc="classifier-free guidance scale, finite and >= 0"),
    ColumnSpec("previous_guidance_scale", "float", pa.float64(), sampler_override=True,
               doc="guidance scale of the previous-window condition, finite and >= 0"),
    ColumnSpec("canvas_size", "int", pa.int64(), sampler_override=True,
               doc="model canvas side in pixels, a positive multiple of 8"),
    ColumnSpec("output_size", "choice", pa.string(), sampler_override=True,
               doc='"canvas" (model resolution) or "source" (scaled to the input resolution)'),
)

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

MAX_CLIP_ID_LENGTH = 128
MAX_OUTPUT_PREFIX_LENGTH = 512
MAX_SEED = 2**63 - 1
MAX_INFERENCE_STEPS = 1000
OUTPUT_SIZES = ("canvas", "source")

_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")
_STEM_MAX = 64
_HASH_HEX = 12
_MAX_REPORTED = 200


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Clip ids and output prefixes
# --------------------------------------------------------------------------------------------


def derive_clip_id(uri: str) -> str:
    """The default clip id of a video: ``<sanitised stem>-<12 hex digits>``.

    The stem is the file name without its extension, folded to ASCII, with every run of
    characters outside ``[A-Za-z0-9._-]`` replaced by ``_``, leading/trailing ``._-`` removed and
    cut to 64 characters (``"clip"`` if nothing is left). The hash is the SHA-256 of the full URI
    string (UTF-8), so two videos with the same file name in different folders get different
    ids, and the id of a URI is the same on every run and machine. Example:
    ``derive_clip_id("s3://bucket/trees/tree_60.mp4") -> "tree_60-<hash>"``.

    The URI is hashed exactly as given: ``"/a/b.mp4"`` and ``"file:///a/b.mp4"`` differ.

    Raises:
        InputError: ``uri`` is not a non-empty string.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise InputError(f"cannot derive a clip id from {uri!r}: expected a non-empty URI string")
    digest = hashlib.sha256(uri.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX]
    return f"{_uri_stem(uri)}-{digest}"


def _uri_stem(uri: str) -> str:
    path = uri
    if re.match(r"(?i)https?://", path):
        path = re.split(r"[?#]", path, maxsplit=1)[0]
    path = path.rstrip("/\\")
    name = re.split(r"[/\\]", path)[-1]
    dot = name.rfind(".")
    if dot > 0:
        name = name[:dot]
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:_STEM_MAX].rstrip("._-")
    return name or "clip"


def _describe_unsafe(value: str) -> str | None:
    """Why ``value`` is not a safe single path component, or None if it is."""
    if "\x00" in value:
        return "contains a NUL byte"
    if "/" in value or "\\" in value:
        return "contains a path separator ('/' or '\\') and would escape the output prefix"
    if value in (".", ".."):
        return f"is the relative path reference '{value}' and would escape the output prefix"
    if not _SAFE_NAME.fullmatch(value):
        bad = sorted(set(_UNSAFE_CHARS.findall(value)))
        shown = ", ".join(repr(c) for c in bad[:8])
        return f"contains characters outside [A-Za-z0-9._-]: {shown}"
    return None


def check_clip_id(clip_id: str) -> str | None:
    """Why ``clip_id`` is not an acceptable clip id, or ``None`` if it is.

    Accepted: 1 to 128 characters from ``[A-Za-z0-9._-]``, not ``.`` or ``..``; so a clip id is
    always one plain path component that stays inside the output prefix.
    """
    if not isinstance(clip_id, str):
        return f"expected a string, got {type(clip_id).__name__}"
    if clip_id == "":
        return "is empty"
    why = _describe_unsafe(clip_id)
    if why:
        return why
    if len(clip_id) > MAX_CLIP_ID_LENGTH:
        return f"is {len(clip_id)} characters long (at most {MAX_CLIP_ID_LENGTH})"
    return None


def check_output_prefix(prefix: str) -> str | None:
    """Why ``prefix`` is not an acceptable ``output_prefix``, or ``None`` if it is.

    Accepted: a relative path of ``/``-separated components from ``[A-Za-z0-9._-]`` (no
    ``.``/``..`` component, no empty component), at most 512 characters; a trailing ``/`` is
    allowed. Absolute paths, URLs, ``~``, backslashes and NUL bytes are rejected: the value is a
    sub-folder of the job's output prefix and must stay inside it.
    """
    if not isinstance(prefix, str):
        return f"expected a string, got {type(prefix).__name__}"
    if "\x00" in prefix:
        return "contains a NUL byte"
    if "\\" in prefix:
        return "contains a backslash; use '/' between folders"
    if prefix.startswith("/"):
        return "is an absolute path and would escape the output prefix; use a relative path"
    if ":" in prefix:
        return ("contains ':' (a URL or drive letter) and would escape the output prefix; "
                "use a relative path like 'shorts/2024'")
    if prefix.startswith("~"):
        return "starts with '~' (a home folder); use a relative path"
    if len(prefix) > MAX_OUTPUT_PREFIX_LENGTH:
        return f"is {len(prefix)} characters long (at most {MAX_OUTPUT_PREFIX_LENGTH})"
    parts = prefix.rstrip("/").split("/")
    for part in parts:
        if part == "":
            return "contains an empty path component ('//')"
        if part in (".", ".."):
            return (f"contains the relative path component '{part}' and would escape the "
                    "output prefix")
        why = _describe_unsafe(part)
        if why:
            return why
    return None


# --------------------------------------------------------------------------------------------
# Value parsing
# --------------------------------------------------------------------------------------------


class _Bad(Exception):
    """Internal: a value problem (message only; row/column are added by the caller)."""


def _is_missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    if isinstance(v, str) and not v.strip():
        return True
    if isinstance(v, (list, tuple)) and len(v) == 0:
        return True
    return False


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _as_int(v: Any) -> int:
    if isinstance(v, bool):
        raise _Bad(f"expected an integer, got {_short(v)}")
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        if v.is_integer():
            return int(v)
        raise _Bad(f"expected an integer, got {_short(v)}")
    if isinstance(v, str):
        s = v.strip()
        try:
            return int(s)
        except ValueError:
            pass
        try:
            f = float(s)
        except ValueError:
            f = math.nan
        if math.isfinite(f) and f.is_integer():
            return int(f)
        raise _Bad(f"expected an integer, got {_short(v)}")
    raise _Bad(f"expected an integer, got {type(v).__name__} {_short(v)}")


def _as_float(v: Any) -> float:
    if isinstance(v, bool):
        raise _Bad(f"expected a number, got {_short(v)}")
    if isinstance(v, (int, float)):
        f = float(v)
    elif isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            raise _Bad(f"expected a number, got {_short(v)}") from None
    else:
        raise _Bad(f"expected a number, got {type(v).__name__} {_short(v)}")
    if not math.isfinite(f):
        raise _Bad(f"expected a finite number, got {_short(v)}")
    return f


def _as_str(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(f"expected a string, got {type(v).__name__} {_short(v)}")
    return v.strip()


def _parse_override(name: str, v: Any) -> Any:
    if name == "seed":
        x = _as_int(v)
        if not 0 <= x <= MAX_SEED:
            raise _Bad(f"seed must be in 0..2**63-1, got {x}")
        return x
    if name == "num_inference_steps":
        x = _as_int(v)
        if not 1 <= x <= MAX_INFERENCE_STEPS:
            raise _Bad(f"num_inference_steps must be in 1..{MAX_INFERENCE_STEPS}, got {x}")
        return x
    if name in ("guidance_scale", "previous_guidance_scale"):
        x = _as_float(v)
        if x < 0:
            raise _Bad(f"{name} must be >= 0, got {x}")
        return x
    if name == "canvas_size":
        x = _as_int(v)
        if x <= 0 or x % 8:
            raise _Bad(f"canvas_size must be a positive multiple of 8 (e.g. 256), got {x}")
        return x
    if name == "output_size":
        s = _as_str(v).lower()
        if s not in OUTPUT_SIZES:
            raise _Bad(f"output_size must be 'canvas' or 'source', got {_short(v)}")
        return s
    raise AssertionError(name)  # pragma: no cover


def _parse_ratio_value(v: Any) -> tuple[str, ...]:
    from m3ddm_ray.geometry import parse_ratios  # lazy: keeps this module import-light

    if isinstance(v, str):
        parts = [v]
    elif isinstance(v, (list, tuple)):
        parts = list(v)
        for p in parts:
            if not isinstance(p, str):
                raise _Bad(f"expected ratio strings like '9:16', got {_short(p)} in {_short(v)}")
    else:
        raise _Bad(f"expected a string like '9:16,1:1' or a list of such strings, "
                   f"got {type(v).__name__} {_short(v)}")
    out: list[str] = []
    for p in parts:
        if not p.strip():
            raise _Bad(f"empty ratio in {_short(v)}")
        try:
            ratios = parse_ratios(p)
        except InputError as e:
            raise _Bad(str(e)) from None
        for r in ratios:
            s = str(r)
            if s not in out:
                out.append(s)
    if not out:
        raise _Bad(f"no ratio in {_short(v)}")
    return tuple(out)


def _parse_default_ratios(default_ratios: Any) -> tuple[str, ...] | None:
    """The job's ratios (a string, a list of strings or Ratio objects) as ratio strings."""
    if default_ratios is None:
        return None
    from m3ddm_ray.geometry import parse_ratios

    try:
        ratios = parse_ratios(default_ratios)
    except InputError as e:
        raise InputError(f"bad default ratios {_short(default_ratios)}: {e}") from None
    return tuple(dict.fromkeys(str(r) for r in ratios))


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def validate_manifest(
    records: pa.Table | Sequence[Mapping[str, Any]],
    *,
    source: str = "manifest",
    default_ratios: str | Sequence[str] | None = None,
    allowed_overrides: Iterable[str] | None = None,
) -> list[ManifestRow]:
    """Check manifest records and turn them into :class:`ManifestRow` objects.

    Args:
        records: a pyarrow Table, or a sequence of mappings (column -> value), one per row.
        source: name used in messages (the manifest file).
        default_ratios: the job's ratios (``"9:16,1:1"``, a list of strings or ``Ratio``); filled into rows without
            ``target_ratios``. ``None`` leaves those rows at ``target_ratios=None``.
        allowed_overrides: the sampler override columns this job lets rows set (a subset of
            :data:`SAMPLER_OVERRIDE_COLUMNS`); ``None`` allows all of them.

    Returns:
        the rows, in manifest order.

    Raises:
        ManifestError: (an :class:`~m3ddm_ray.errors.InputError`) listing every problem with its
            1-based row and column: no rows, missing ``video_uri`` column, empty/null/non-string
            URIs, unknown columns (named, with the accepted ones), overrides the job does not
            allow, duplicate clip ids (explicit or derived; both rows named), bad ratios, bad
            override values, and ``clip_id``/``output_prefix`` values that are unsafe as paths.
        InputError: ``default_ratios`` or ``allowed_overrides`` is itself invalid.
    """
    if isinstance(records, pa.Table):
        columns = list(records.column_names)
        rows = list(enumerate(records.to_pylist(), start=1))
    else:
        columns = []
        seen: set[str] = set()
        rows = []
        for i, rec in enumerate(records, start=1):
            rows.append((i, rec))
            if isinstance(rec, Mapping):
                for k in rec:
                    if k not in seen:
                        seen.add(k)
                        columns.append(k)
    return _validate(rows, columns, [], source=source, default_ratios=default_ratios,
                     allowed_overrides=allowed_overrides)


def _validate(
    rows: list[tuple[int, Any]],
    columns: list[str],
    problems: list[ManifestProblem],
    *,
    source: str,
    default_ratios: Any,
    allowed_overrides: Iterable[str] | None,
) -> list[ManifestRow]:
    default = _parse_default_ratios(default_ratios)
    if allowed_overrides is None:
        allowed = set(SAMPLER_OVERRIDE_COLUMNS)
    else:
        allowed = set(allowed_overrides)
        unknown = sorted(allowed - set(SAMPLER_OVERRIDE_COLUMNS))
        if unknown:
            raise InputError(f"unknown sampler override(s) {unknown} in allowed_overrides; "
                             f"known: {', '.join(SAMPLER_OVERRIDE_COLUMNS)}")

    head: list[ManifestProblem] = []
    columns = [c for c in columns if not (isinstance(c, str) and _PANDAS_INDEX.fullmatch(c))]
    if not rows:
        head.append(ManifestProblem(None, None, "the manifest has no rows"))
    has_uri = "video_uri" in columns
    if not has_uri:
        head.append(ManifestProblem(
            None, "video_uri",
            "required column is missing (every row needs the URI of its video)"))
    unknown_cols = [c for c in columns if c not in MANIFEST_COLUMNS]
    for c in unknown_cols:
        hint = difflib.get_close_matches(str(c), list(MANIFEST_COLUMNS), n=1)
        msg = f"unknown column {str(c)!r}"
        if hint:
            msg += f" (did you mean {hint[0]!r}?)"
        msg += f"; accepted columns: {', '.join(MANIFEST_COLUMNS)}"
        head.append(ManifestProblem(None, None, msg))

    # Overrides the job does not allow: one problem per column, naming the rows that set it.
    disallowed = [c for c in SAMPLER_OVERRIDE_COLUMNS if c in columns and c not in allowed]
    for c in disallowed:
        used = [n for n, rec in rows if isinstance(rec, Mapping) and not _is_missing(rec.get(c))]
        if used:
            shown = ", ".join(str(n) for n in used[:10]) + (" ..." if len(used) > 10 else "")
            head.append(ManifestProblem(
                None, c,
                f"per-row {c!r} overrides are not allowed by this job (set in rows {shown}); "
                f"allowed overrides: {', '.join(sorted(allowed)) or 'none'}"))

    out: list[tuple[int, ManifestRow, bool]] = []
    body: list[ManifestProblem] = []
    for n, rec in rows:
        if not isinstance(rec, Mapping):
            body.append(ManifestProblem(n, None, f"expected a mapping of column -> value, "
                                                 f"got {type(rec).__name__}"))
            continue
        row_problems: list[ManifestProblem] = []

        def bad(col: str, msg: str) -> None:
            row_problems.append(ManifestProblem(n, col, msg))  # noqa: B023

        uri = None
        if has_uri:
            v = rec.get("video_uri")
            if _is_missing(v):
                bad("video_uri", "is empty; every row needs the URI of its video")
            elif not isinstance(v, str):
                bad("video_uri", f"expected a string, got {type(v).__name__} {_short(v)}")
            elif "\x00" in v:
                bad("video_uri", "contains a NUL byte")
            else:
                uri = v.strip()

        clip_id = None
        derived = False
        v = rec.get("clip_id")
        if not _is_missing(v):
            if not isinstance(v, str):
                bad("clip_id", f"expected a string, got {type(v).__name__} {_short(v)}")
            else:
                why = check_clip_id(v.strip())
                if why:
                    bad("clip_id", f"{_short(v)} {why}; use 1-{MAX_CLIP_ID_LENGTH} characters "
                                   "from [A-Za-z0-9._-], not '.' or '..'")
                else:
                    clip_id = v.strip()
        elif uri is not None:
            clip_id = derive_clip_id(uri)
            derived = True

        ratios = default
        v = rec.get("target_ratios")
        if not _is_missing(v):
            try:
                ratios = _parse_ratio_value(v)
            except _Bad as e:
                bad("target_ratios", str(e))

        prefix = None
        v = rec.get("output_prefix")
        if not _is_missing(v):
            if not isinstance(v, str):
                bad("output_prefix", f"expected a string, got {type(v).__name__} {_short(v)}")
            else:
                why = check_output_prefix(v.strip())
                if why:
                    bad("output_prefix", f"{_short(v)} {why}")
                else:
                    prefix = v.strip().rstrip("/")

        overrides: dict[str, Any] = {}
        for c in SAMPLER_OVERRIDE_COLUMNS:
            v = rec.get(c)
            if c not in allowed or _is_missing(v):
                continue
            try:
                overrides[c] = _parse_override(c, v)
            except _Bad as e:
                bad(c, str(e))

        body.extend(row_problems)
        if not row_problems and uri is not None and clip_id is not None:
            row = ManifestRow(video_uri=uri, clip_id=clip_id, target_ratios=ratios,
                              output_prefix=prefix, **overrides)
            out.append((n, row, derived))
        elif clip_id is not None:
            # a row with problems still takes part in the duplicate check (all problems at once)
            out.append((n, _IdOnly(clip_id), derived))  # type: ignore[arg-type]

    # Duplicate clip ids (explicit or derived): every later row names the first one.
    first: dict[str, int] = {}
    for n, row, derived in out:
        cid = row.clip_id
        if cid in first:
            how = "derived from video_uri" if derived else "explicit"
            body.append(ManifestProblem(
                n, "clip_id",
                f"duplicate clip_id {cid!r} ({how}); row {first[cid]} already uses it -- "
                "give the rows distinct clip_id values"))
        else:
            first[cid] = n

    order = {c: i for i, c in enumerate(MANIFEST_COLUMNS)}
    problems = head + sorted(
        list(problems) + body,
        key=lambda p: (p.row is not None, p.row or 0, order.get(p.column, -1)),  # type: ignore[arg-type]
    )
    if problems:
        raise ManifestError(source, problems)
    return [row for _, row, _ in out]


@dataclass(frozen=True)
class _IdOnly:
    """Internal stand-in for a row that has problems but a usable clip id."""

    clip_id: str


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _format_of(uri: str) -> str:
    name = str(uri).rstrip("/").rsplit("/", 1)[-1].lower()
    for ext, fmt in MANIFEST_EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    raise InputError(
        f"{uri}: unknown manifest format; the file name must end in one of "
        f"{', '.join(MANIFEST_EXTENSIONS)} (Parquet, JSON Lines or CSV)")


def _read_bytes(uri: str, storage_options: Mapping[str, Any] | None) -> bytes:
    try:
        with fsspec.open(uri, "rb", **dict(storage_options or {})) as f:
            return f.read()
    except FileNotFoundError:
        raise InputError(f"{uri}: manifest not found") from None
    except IsADirectoryError:
        raise InputError(f"{uri}: is a folder, not a manifest file "
                         "(use manifest_from_prefix to list the videos of a folder)") from None
    except PermissionError as e:
        raise InputError(f"{uri}: cannot read manifest: permission denied ({e})") from None


def _decode(uri: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{uri}: manifest is not UTF-8 text ({e})") from None


def _records_jsonl(uri: str, text: str):
    rows: list[tuple[int, Any]] = []
    columns: list[str] = []
    seen: set[str] = set()
    problems: list[ManifestProblem] = []
    n = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        n += 1
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(ManifestProblem(n, None, f"line {lineno} is not valid JSON ({e.msg})"))
            continue
        if not isinstance(rec, dict):
            problems.append(ManifestProblem(
                n, None, f"line {lineno}: expected a JSON object, got {type(rec).__name__}"))
            continue
        for k in rec:
            if k not in seen:
                seen.add(k)
                columns.append(k)
        rows.append((n, rec))
    return rows, columns, problems


def _records_csv(uri: str, text: str):
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[tuple[int, Any]] = []
    problems: list[ManifestProblem] = []
    n = 0
    for fields in reader:
        if not fields or all(not f.strip() for f in fields):
            continue
        if header is None:
            header = [h.strip() for h in fields]
            dups = sorted({h for h in header if header.count(h) > 1})
            for d in dups:
                problems.append(ManifestProblem(None, d, "appears more than once in the header"))
            if any(h == "" for h in header):
                problems.append(ManifestProblem(None, None, "the header has an empty column name"))
            continue
        n += 1
        if len(fields) > len(header):
            problems.append(ManifestProblem(
                n, None, f"has {len(fields)} fields but the header has {len(header)} "
                         "(quote values that contain commas, e.g. \"9:16,1:1\")"))
            continue
        rows.append((n, {h: f for h, f in zip(header, fields) if h}))
    if header is None:
        raise InputError(f"{uri}: CSV manifest is empty (expected a header line with at least "
                         "a 'video_uri' column)")
    return rows, [h for h in header if h], problems


def _records_parquet(uri: str, data: bytes):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as e:
        raise InputError(f"{uri}: not a readable Parquet file ({e})") from None
    return list(enumerate(table.to_pylist(), start=1)), list(table.column_names), []


def read_manifest(
    uri: str | os.PathLike,
    storage_options: Mapping[str, Any] | None = None,
    default_ratios: str | Sequence[str] | None = None,
    *,
    allowed_overrides: Iterable[str] | None = None,
) -> list[ManifestRow]:
    """Read and validate a manifest file.

    Args:
        uri: local path or fsspec URL ending in ``.parquet``/``.pq``, ``.jsonl``/``.ndjson`` or
            ``.csv`` (case-insensitive).
        storage_options: passed to fsspec (e.g. ``{"anon": True}`` for S3).
        default_ratios: the job's ratios, filled into rows without ``target_ratios``.
        allowed_overrides: see :func:`validate_manifest`.

    Returns:
        the rows, in file order.

    Raises:
        InputError: unknown extension (names the file and the accepted ones), file not found,
            not UTF-8 / not Parquet, empty CSV.
        ManifestError: (an InputError) every content problem at once, see
            :func:`validate_manifest`; JSONL lines that are not JSON objects and CSV rows with
            too many fields are reported there too.
    """
    uri = os.fspath(uri)
    fmt = _format_of(uri)
    data = _read_bytes(uri, storage_options)
    if fmt == "parquet":
        rows, columns, problems = _records_parquet(uri, data)
    elif fmt == "jsonl":
        rows, columns, problems = _records_jsonl(uri, _decode(uri, data))
    else:
        rows, columns, problems = _records_csv(uri, _decode(uri, data))
    if problems and not rows:
        raise ManifestError(uri, problems)
    return _validate(rows, columns, problems, source=uri, default_ratios=default_ratios,
                     allowed_overrides=allowed_overrides)


# --------------------------------------------------------------------------------------------
# Listing a prefix
# --------------------------------------------------------------------------------------------


def manifest_from_prefix(
    prefix: str | os.PathLike,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    storage_options: Mapping[str, Any] | None = None,
    recursive: bool = True,
) -> list[ManifestRow]:
    """A manifest of every video under a local folder or fsspec prefix.

    Files are matched by extension (case-insensitive; ``"mp4"`` and ``".mp4"`` both work).
    Hidden files and folders (name starting with ``.``, e.g. macOS ``._clip.mp4``) are skipped.
    Rows are sorted by URI; clip ids are :func:`derive_clip_id` of the URI, so listing the same
    prefix again gives the same rows. Local files are returned as absolute paths, remote ones as
    URLs spelled like ``prefix`` (``s3://bucket/videos/a/b.mp4``). ``target_ratios`` and the
    overrides are left unset.

    Args:
        prefix: local folder or fsspec URL of a folder.
        extensions: video file extensions to keep.
        storage_options: passed to fsspec.
        recursive: also list sub-folders.

    Raises:
        InputError: the prefix does not exist or is not a folder, ``extensions`` is empty, or no
            video was found (the message names the prefix and the extensions).
        ManifestError: two listed videos derive the same clip id (practically never).
    """
    prefix = os.fspath(prefix)
    exts = tuple(sorted({("." + e.lstrip(".")).lower() for e in extensions if e.strip(".")}))
    if not exts:
        raise InputError("manifest_from_prefix: no video extensions given")
    fs, root = fsspec.core.url_to_fs(prefix, **dict(storage_options or {}))
    local = _is_local(fs)
    try:
        is_dir = fs.isdir(root)
    except FileNotFoundError:
        is_dir = False
    if not is_dir:
        if fs.exists(root):
            raise InputError(f"{prefix}: is a file, not a folder of videos")
        raise InputError(f"{prefix}: folder not found")
    if recursive:
        paths = fs.find(root)
    else:
        paths = [e["name"] for e in fs.ls(root, detail=True) if e.get("type") == "file"]
    base = root.rstrip("/")
    uris: list[str] = []
    for p in paths:
        rel = p[len(base):].lstrip("/") if p.startswith(base) else p.rsplit("/", 1)[-1]
        if any(part.startswith(".") for part in rel.split("/") if part):
            continue
        if not p.lower().endswith(exts):
            continue
        if local:
            uris.append(p)
        elif p.startswith(base + "/"):
            uris.append(prefix.rstrip("/") + "/" + rel)  # keeps the caller's spelling of the URL
        else:
            uris.append(fs.unstrip_protocol(p))
    uris.sort()
    if not uris:
        raise InputError(f"{prefix}: no videos found ({'recursive' if recursive else 'top level only'}"
                         f", extensions {', '.join(exts)})")
    return validate_manifest([{"video_uri": u} for u in uris], source=prefix)


def _is_local(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def rows_to_table(rows: Sequence[ManifestRow], columns: Sequence[str] | None = None) -> pa.Table:
    """The rows as a pyarrow Table with :data:`MANIFEST_SCHEMA` types (all columns by default).

    ``target_ratios`` becomes a ``"9:16,1:1"`` string column; unset values are nulls.
    """
    cols = list(columns) if columns is not None else list(MANIFEST_COLUMNS)
    records = [r.to_record() for r in rows]
    arrays = [pa.array([rec.get(c) for rec in records], type=MANIFEST_COLUMNS[c].arrow_type)
              for c in cols]
    return pa.Table.from_arrays(arrays, schema=pa.schema([MANIFEST_SCHEMA.field(c) for c in cols]))


def _used_columns(records: Sequence[Mapping[str, Any]]) -> list[str]:
    used = {k for rec in records for k in rec}
    return [c for c in MANIFEST_COLUMNS if c in ("video_uri", "clip_id") or c in used]


def write_manifest(
    rows: Sequence[ManifestRow | Mapping[str, Any]],
    uri: str | os.PathLike,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Write rows as Parquet, JSONL or CSV (by extension), never leaving a partial file.

    Rows are validated first (mappings go through :func:`validate_manifest`), so whatever is
    written reads back with :func:`read_manifest` into equal rows. Only the columns some row
    sets are written (``video_uri`` and ``clip_id`` always; derived clip ids are written out).
    Local files are written to a hidden temporary file in the target folder and renamed over
    the target; remote files are written locally first and uploaded in one ``put``.

    Raises:
        InputError: unknown extension.
        ManifestError: the rows are not a valid manifest (no rows, duplicate clip ids...).
    """
    uri = os.fspath(uri)
    fmt = _format_of(uri)
    records = [r.to_record() if isinstance(r, ManifestRow) else r for r in rows]
    checked = validate_manifest(records, source=uri)
    records = [r.to_record() for r in checked]
    columns = _used_columns(records)

    fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    if _is_local(fs):
        folder = os.path.dirname(path) or "."
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
        try:
            _write_local(fmt, checked, records, columns, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return
    fd, tmp = tempfile.mkstemp(prefix="m3ddm-manifest-", suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        _write_local(fmt, checked, records, columns, tmp)
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            try:
                fs.makedirs(parent, exist_ok=True)
            except Exception:  # object stores have no folders; put() works without them
                pass
        fs.put_file(tmp, path)
    finally:
        os.remove(tmp)


def _write_local(fmt: str, rows: Sequence[ManifestRow], records: Sequence[Mapping[str, Any]],
                 columns: Sequence[str], path: str) -> None:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(rows_to_table(rows, columns), path)
    elif fmt == "jsonl":
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    else:
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(columns)
            for rec in records:
                w.writerow(["" if rec.get(c) is None else _csv_text(rec[c]) for c in columns])


def _csv_text(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)
