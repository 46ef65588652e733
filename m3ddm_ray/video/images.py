"""Frame folders read like videos: one image file per frame, local or on any fsspec filesystem.

A folder's frames are its image files (:data:`IMAGE_EXTENSIONS`, case-insensitive) sorted by name
with digit runs compared as numbers (``00000.jpg, 00001.jpg, ...``; ``2.png`` before ``10.png``),
decoded with OpenCV to ``uint8 (H, W, 3)`` RGB. The frame rate comes from the caller, else from a
``fps.txt`` file in the folder, else :data:`DEFAULT_FPS`. Every problem is an
:class:`~m3ddm_ray.errors.InputError` naming the file or folder.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from m3ddm_ray import storage
from m3ddm_ray.errors import InputError

from .encode import fps_to_fraction
from .source import VideoInfo

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_FPS",
    "FPS_FILE",
    "is_image_sequence",
    "list_image_sequence",
    "read_images",
    "read_image_sequence",
    "iter_image_sequence",
    "image_sequence_info",
]

#: File extensions read as frames of an image sequence (case-insensitive).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: Frame rate of a frame folder without ``fps.txt`` when none is given (DAVIS's 24 fps).
DEFAULT_FPS = 24.0
#: Optional file in a frame folder holding its frame rate (one number).
FPS_FILE = "fps.txt"

_NUM = re.compile(r"(\d+)")


# --------------------------------------------------------------------------------------------------
# fsspec helpers (local paths stay plain absolute paths; URLs keep the caller's spelling)
# --------------------------------------------------------------------------------------------------


def _is_url(uri: str) -> bool:
    return "://" in uri or "::" in uri


def abs_uri(uri: str | os.PathLike) -> str:
    text = os.fspath(uri)
    return text if _is_url(text) else os.path.abspath(os.path.expanduser(text))


def join_uri(uri: str, *parts: str) -> str:
    parts = tuple(p.strip("/") for p in parts if p and p.strip("/"))
    if not parts:
        return uri
    if _is_url(uri):
        return uri.rstrip("/") + "/" + "/".join(parts)
    return os.path.join(uri, *parts)


def _fs(uri: str, storage_options: Mapping[str, Any] | None):

    try:
        return storage.url_to_fs(uri, dict(storage_options or {}))
    except ImportError as exc:
        raise InputError(f"{uri}: no filesystem for this URL ({exc}); install the fsspec backend") from exc


def path_kind(uri: str, storage_options) -> str | None:
    """``"file"``, ``"directory"`` or None (missing)."""
    fs, path = _fs(uri, storage_options)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        return None
    kind = info.get("type")
    if kind == "directory":
        return "directory"
    if kind == "file":
        return "file"
    return "directory" if fs.isdir(path) else "file"


def list_dir(uri: str, storage_options) -> list[tuple[str, str]]:
    """``(name, "file"|"directory")`` of the entries of folder ``uri`` (hidden names skipped)."""
    fs, path = _fs(uri, storage_options)
    out = []
    for entry in fs.ls(path, detail=True):
        name = str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        if not name or name.startswith("."):
            continue
        out.append((name, "directory" if entry.get("type") == "directory" else "file"))
    return out


def read_bytes(uri: str, storage_options) -> bytes:
    fs, path = _fs(uri, storage_options)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise InputError(f"{uri}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{uri}: is a folder, expected a file") from None


def _natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers: ``2.jpg`` < ``10.jpg``, ``00005.jpg`` < ``00010.jpg``."""
    return tuple((0, int(p), p) if p.isdigit() else (1, 0, p) for p in _NUM.split(name) if p)


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def require_kind(uri: str, kind: str, storage_options, what: str, hint: str) -> None:
    got = path_kind(uri, storage_options)
    if got is None:
        raise InputError(f"{what}: {uri} not found; {hint}")
    if got != kind:
        raise InputError(f"{what}: {uri} is a {got}, expected a {kind}; {hint}")


# --------------------------------------------------------------------------------------------------
# Image sequences
# --------------------------------------------------------------------------------------------------


def is_image_sequence(uri: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> bool:
    """True when ``uri`` is a folder (local or fsspec) holding at least one image file."""
    uri = os.fspath(uri)
    try:
        if path_kind(uri, storage_options) != "directory":
            return False
        return any(kind == "file" and is_image(name) for name, kind in list_dir(uri, storage_options))
    except (OSError, InputError):
        return False


def list_image_sequence(uri: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """URIs of the image files of folder ``uri`` in frame order (natural sort of the names).

    Raises:
        InputError: the folder does not exist, is a file, or holds no image.
    """
    uri = abs_uri(uri)
    got = path_kind(uri, storage_options)
    if got is None:
        raise InputError(f"{uri}: frame folder not found")
    if got != "directory":
        raise InputError(f"{uri}: is a file, expected a folder of frames ({', '.join(IMAGE_EXTENSIONS)})")
    names = sorted((n for n, k in list_dir(uri, storage_options) if k == "file" and is_image(n)), key=_natural_key)
    if not names:
        raise InputError(f"{uri}: no image files in this folder (expected {', '.join(IMAGE_EXTENSIONS)})")
    return [join_uri(uri, n) for n in names]


def _decode(uri: str, storage_options) -> np.ndarray:
    import cv2

    data = np.frombuffer(read_bytes(uri, storage_options), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise InputError(f"{uri}: not an image OpenCV can decode (empty or damaged file)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_images(uris: Sequence[str], storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """Decode images to one ``uint8 (T, H, W, 3)`` RGB array (OpenCV; grey images become RGB).

    Raises:
        InputError: no URI, a missing or undecodable file, or images of different sizes.
    """
    if not len(uris):
        raise InputError("read_images: no image files given")
    out: np.ndarray | None = None
    for i, uri in enumerate(uris):
        img = _decode(uri, storage_options)
        if out is None:
            out = np.empty((len(uris),) + img.shape, dtype=np.uint8)
        elif img.shape != out.shape[1:]:
            raise InputError(
                f"{uri}: frame {i} is {img.shape[1]}x{img.shape[0]} but frame 0 ({uris[0]}) is "
                f"{out.shape[2]}x{out.shape[1]}; all frames of a sequence must have one size"
            )
        out[i] = img
    assert out is not None
    return out


def _folder_fps(uri: str, storage_options) -> float | None:
    fps_uri = join_uri(uri, FPS_FILE)
    if path_kind(fps_uri, storage_options) != "file":
        return None
    text = read_bytes(fps_uri, storage_options).decode("utf-8", "replace").strip()
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"{fps_uri}: {text!r} is not a frame rate; write one positive number (e.g. 24)")
    return value


def read_image_sequence(
    uri: str | os.PathLike,
    fps: float | None = None,
    storage_options: Mapping[str, Any] | None = None,
    start: int = 0,
    stop: int | None = None,
) -> tuple[np.ndarray, float]:
    """Decode a folder of frames (local path or fsspec URL) like a video.

    Args:
        uri: folder holding one image per frame; frames are ordered by file name, digit runs compared
            as numbers (``00000.jpg, 00001.jpg, ...``; ``2.png`` before ``10.png``).
        fps: frame rate; None: the number in ``<uri>/fps.txt`` if present, else :data:`DEFAULT_FPS`.
        start, stop: frame range ``[start, stop)`` (``stop=None``: to the end).

    Returns:
        ``(frames, fps)``: ``uint8 (T, H, W, 3)`` RGB and the frame rate.

    Raises:
        InputError: missing folder, no images, undecodable or differently sized images, a bad
            ``fps.txt``, an empty frame range.
    """
    uri = abs_uri(uri)
    frames = list_image_sequence(uri, storage_options)
    picked = frames[start:stop]
    if not picked:
        raise InputError(f"{uri}: frames [{start}, {stop}) are empty; the folder has {len(frames)} frames")
    rate = float(fps) if fps is not None else (_folder_fps(uri, storage_options) or DEFAULT_FPS)
    return read_images(picked, storage_options), rate


def iter_image_sequence(uri: str | os.PathLike, storage_options: Mapping[str, Any] | None = None,
                        start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Decode the frames of a frame folder one at a time (bounded memory, like ``video.iter_frames``).

    Yields:
        ``uint8 (H, W, 3)`` RGB frames ``[start, stop)`` in frame order.

    Raises:
        InputError: missing folder, no images, an undecodable image, a frame of another size.
    """
    frames = list_image_sequence(uri, storage_options)[start:stop]
    first: tuple[int, ...] | None = None
    for i, f in enumerate(frames):
        img = _decode(f, storage_options)
        if first is None:
            first = img.shape
        elif img.shape != first:
            raise InputError(f"{f}: frame {start + i} is {img.shape[1]}x{img.shape[0]} but frame {start} "
                             f"is {first[1]}x{first[0]}; all frames of a sequence must have one size")
        yield img


def image_sequence_info(uri: str | os.PathLike, fps: float | None = None,
                        storage_options: Mapping[str, Any] | None = None):
    """:class:`m3ddm_ray.video.VideoInfo` of a frame folder (lists it, decodes the first frame only):
    exact frame count, frame rate as :func:`read_image_sequence` decides it, no audio, no rotation.

    Raises:
        InputError: as :func:`list_image_sequence`, an undecodable first frame, a bad ``fps.txt``.
    """

    uri = abs_uri(uri)
    frames = list_image_sequence(uri, storage_options)
    h, w = _decode(frames[0], storage_options).shape[:2]
    rate = float(fps) if fps is not None else (_folder_fps(uri, storage_options) or DEFAULT_FPS)
    frac: Fraction = fps_to_fraction(rate)
    ext = frames[0].rsplit(".", 1)[-1].lower()
    return VideoInfo(uri=uri, width=int(w), height=int(h), num_frames=len(frames), num_frames_exact=True,
                     fps=float(frac), frame_rate=frac, duration_s=len(frames) / float(frac), rotation=0,
                     has_audio=False, video_codec=ext, audio_codec=None, container_format="image-sequence")
