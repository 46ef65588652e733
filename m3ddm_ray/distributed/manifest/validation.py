"""Manifest validation: scalar coercion of every value and the whole-manifest checks, all problems at once.

Rows are ``(row number, mapping)`` pairs; the readers of :mod:`.io` and :func:`validate_manifest`
(in-memory records) both end in :func:`validate_records`. Sampler limits come from :mod:`m3ddm_ray.rules`.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa

from m3ddm_ray.errors import InputError
from m3ddm_ray.rules import (
    EXTEND_DIRECTIONS,
    OUTPUT_SIZES,
    TASKS,
    canvas_size_problem,
    dilate_problem,
    extend_frames_problem,
    inference_steps_problem,
)

from .naming import MAX_CLIP_ID_LENGTH, check_clip_id, check_output_prefix, derive_clip_id
from .schema import (
    MANIFEST_COLUMNS,
    MAX_SEED,
    SAMPLER_OVERRIDE_COLUMNS,
    TASK_COLUMNS,
    ManifestError,
    ManifestProblem,
    ManifestRow,
)

__all__ = ["validate_manifest"]

_PANDAS_INDEX = re.compile(r"__index_level_\d+__")

#: Integer overrides whose limits are the settings' own rules (one definition, in m3ddm_ray.rules).
_SHARED_INT_RULES = {"num_inference_steps": inference_steps_problem, "canvas_size": canvas_size_problem}
#: Integer task columns and their rules (m3ddm_ray.rules).
_TASK_INT_RULES = {"mask_dilate": dilate_problem, "extend_frames": extend_frames_problem}


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


def _checked_int(name: str, v: Any, rule) -> int:
    """``v`` as an int that ``rule`` (:mod:`m3ddm_ray.rules`) accepts; else _Bad naming ``name``."""
    x = _as_int(v)
    why = rule(x)
    if why:
        raise _Bad(f"{name} {why}, got {x}")
    return x


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


def _safe_name(v: Any, check, hint: str = "") -> str:
    """``v`` stripped, when it is a string that ``check`` (:mod:`.naming`) accepts; else _Bad."""
    text = _as_str(v)
    why = check(text)
    if why:
        raise _Bad(f"{_short(v)} {why}{hint}")
    return text


def _parse_override(name: str, v: Any) -> Any:
    if name == "seed":
        x = _as_int(v)
        if not 0 <= x <= MAX_SEED:
            raise _Bad(f"seed must be in 0..2**63-1, got {x}")
        return x
    if name in _SHARED_INT_RULES:  # the sampler's / the pipeline's own rule (m3ddm_ray.rules)
        return _checked_int(name, v, _SHARED_INT_RULES[name])
    if name in ("guidance_scale", "previous_guidance_scale"):
        x = _as_float(v)
        if x < 0:
            raise _Bad(f"{name} must be >= 0, got {x}")
        return x
    if name == "output_size":
        s = _as_str(v).lower()
        if s not in OUTPUT_SIZES:
            raise _Bad(f"output_size must be {' or '.join(map(repr, OUTPUT_SIZES))}, got {_short(v)}")
        return s
    raise AssertionError(name)  # pragma: no cover


def _as_choice(v: Any, name: str, choices: Sequence[str]) -> str:
    s = _as_str(v).lower()
    if s not in choices:
        raise _Bad(f"{name} must be {' or '.join(map(repr, choices))}, got {_short(v)}")
    return s


def _parse_task_value(name: str, v: Any) -> Any:
    """A task column's value (:data:`TASK_COLUMNS` and ``task``), coerced and checked."""
    if name == "task":
        return _as_choice(v, "task", TASKS)
    if name == "mask_uri":
        text = _as_str(v)
        if "\x00" in text:
            raise _Bad("contains a NUL byte")
        return text
    if name in _TASK_INT_RULES:
        return _checked_int(name, v, _TASK_INT_RULES[name])
    if name == "extend_direction":
        return _as_choice(v, "extend_direction", EXTEND_DIRECTIONS)
    raise AssertionError(name)  # pragma: no cover


def _task_fields(rec: Mapping[str, Any], bad) -> dict[str, Any]:
    """The row's task and task columns (``task`` None for outpaint); problems go to ``bad``.

    Rules: inpaint needs ``mask_uri``, extend needs ``extend_frames``; a task's columns on a row of
    another task, and ``target_ratios`` / ``output_size`` on inpaint / extend rows, are problems
    (rather than silently ignored values)."""
    out: dict[str, Any] = {}
    for col in ("task", *TASK_COLUMNS):
        v = rec.get(col)
        if _is_missing(v):
            continue
        try:
            out[col] = _parse_task_value(col, v)
        except _Bad as e:
            bad(col, str(e))
    if "task" not in out and not _is_missing(rec.get("task")):
        return {}  # a bad task value: its columns cannot be judged
    task = out.get("task", "outpaint")
    for col, owner in TASK_COLUMNS.items():
        if not _is_missing(rec.get(col)) and owner != task:
            bad(col, f"applies to task {owner!r} only; this row's task is {task!r} "
                     f"(set task={owner} or remove the value)")
    if task == "inpaint" and _is_missing(rec.get("mask_uri")):
        bad("mask_uri", "is required for task 'inpaint': a folder of per-frame mask images (e.g. DAVIS "
                        "Annotations/480p/<seq>), a mask video, or one image for all frames")
    if task == "extend" and _is_missing(rec.get("extend_frames")):
        bad("extend_frames", "is required for task 'extend': the number of new frames (>= 1)")
    if task != "outpaint":
        for col in ("target_ratios", "output_size"):
            if not _is_missing(rec.get(col)):
                bad(col, f"applies to task 'outpaint' only; {task} keeps the source frame size "
                         "(one output per clip) -- remove the value")
    out["task"] = None if task == "outpaint" else task
    return out


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
    return validate_records(rows, columns, [], source=source, default_ratios=default_ratios,
                     allowed_overrides=allowed_overrides)


def validate_records(
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
            try:
                clip_id = _safe_name(v, check_clip_id, f"; use 1-{MAX_CLIP_ID_LENGTH} characters "
                                                       "from [A-Za-z0-9._-], not '.' or '..'")
            except _Bad as e:
                bad("clip_id", str(e))
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
            try:
                prefix = _safe_name(v, check_output_prefix).rstrip("/")
            except _Bad as e:
                bad("output_prefix", str(e))

        task = _task_fields(rec, bad)
        if task.get("task") is not None:
            ratios = None  # one output per clip at the source size; no ratio
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
                              output_prefix=prefix, **overrides, **task)
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
