"""Path safety of manifest names: clip ids and output prefixes stay inside the job's output prefix.

Pure standard library. :func:`check_clip_id` / :func:`check_output_prefix` return the reason a value
is unsafe (or None); the manifest validation and the stage that builds output keys both call them.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from m3ddm_ray.errors import InputError

__all__ = ["MAX_CLIP_ID_LENGTH", "MAX_OUTPUT_PREFIX_LENGTH", "derive_clip_id", "check_clip_id", "check_output_prefix"]

MAX_CLIP_ID_LENGTH = 128
MAX_OUTPUT_PREFIX_LENGTH = 512

_SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_STEM_MAX = 64
_HASH_HEX = 12


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
