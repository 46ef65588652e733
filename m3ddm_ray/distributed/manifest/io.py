"""Manifest files: reading Parquet / JSON Lines / CSV, listing the videos of a prefix, atomic writing.

Every file access goes through :mod:`m3ddm_ray.storage` (fsspec, retries, atomic publish).
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa

from m3ddm_ray import storage
from m3ddm_ray.errors import InputError

from .schema import MANIFEST_COLUMNS, MANIFEST_EXTENSIONS, MANIFEST_SCHEMA, VIDEO_EXTENSIONS, ManifestError, ManifestProblem, ManifestRow
from .validation import validate_records, validate_manifest

__all__ = ["read_manifest", "manifest_from_prefix", "write_manifest", "rows_to_table"]


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
        with storage.open_uri(uri, "rb", dict(storage_options or {})) as f:
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
    return validate_records(rows, columns, problems, source=uri, default_ratios=default_ratios,
                     allowed_overrides=allowed_overrides)


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
    fs, root = storage.url_to_fs(prefix, dict(storage_options or {}))
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
    Published with :func:`m3ddm_ray.storage.atomic_output`: local files through a hidden
    temporary file renamed over the target, remote files written locally and uploaded in one
    ``put`` (retried on transient errors).

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

    with storage.atomic_output(uri, dict(storage_options or {}), suffix=os.path.splitext(uri)[1]) as tmp:
        _write_local(fmt, checked, records, columns, tmp)


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
