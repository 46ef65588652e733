"""Where the stages read a clip's source: a local path of a (possibly remote) video, and whether a
manifest URI names a folder of frames. Errors name the input URI, never a temporary copy."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

from .. import storage
from ..errors import VideoError
from .manifest import VIDEO_EXTENSIONS


def is_frame_folder(uri: str, cfg: Mapping[str, Any]) -> bool:
    """True when a manifest URI names a folder of frames rather than a video file (one listing call,
    skipped for names with a video extension)."""
    from ..video import is_image_sequence

    if str(uri).lower().endswith(tuple(VIDEO_EXTENSIONS)):
        return False
    return is_image_sequence(uri, cfg.get("storage_options") or None)


@contextlib.contextmanager
def source_file(uri: str, storage_options: Mapping[str, Any] | None) -> Iterator[str]:
    """A local path of the video ``uri`` (remote: a temporary download with retries, deleted after).

    Errors are :class:`VideoError` naming ``uri`` (never the temporary path), with the same reasons
    as :mod:`m3ddm_ray.video` gives for files it opens itself.
    """
    so = dict(storage_options or {})
    stack = contextlib.ExitStack()
    try:
        path = stack.enter_context(storage.local_copy(uri, so))
    except FileNotFoundError as e:
        raise VideoError(uri, "file not found; check the path or URL") from e
    except PermissionError as e:
        raise VideoError(uri, "permission denied; check file permissions or storage credentials") from e
    except IsADirectoryError as e:
        raise VideoError(uri, "is a directory, not a video file; give the path of a file") from e
    except Exception as e:
        tries = storage.get_retry_policy().attempts
        raise VideoError(uri, f"cannot download the file ({type(e).__name__}: {e}; {tries} tries)") from e
    with stack:
        try:
            yield path
        except VideoError as e:
            if e.uri != uri:  # errors about the temporary copy name the real input
                raise VideoError(uri, e.reason) from e
            raise
