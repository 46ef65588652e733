"""Exception types of m3ddm-ray.

Every error a user can trigger names the input it is about and, where there is one, the fix.
Batch stages catch :class:`M3DDMError` (and any other exception) per clip and turn it into an
``error`` row; nothing here is allowed to take a whole job down.
"""

from __future__ import annotations


class M3DDMError(Exception):
    """Base class of all errors raised on purpose by m3ddm-ray."""


class InputError(M3DDMError, ValueError):
    """Bad user input: a ratio string, a manifest row, an option value.

    The message names the offending value and what would be accepted instead.
    """


class VideoError(M3DDMError):
    """A video could not be read or written.

    Attributes:
        uri: the local path or fsspec URL of the video.
        reason: a short human-readable reason (``"file not found"``, ``"no video stream"``, ...).
    """

    def __init__(self, uri: str, reason: str):
        self.uri = str(uri)
        self.reason = reason
        super().__init__(f"{self.uri}: {reason}")


class ModelLoadError(M3DDMError):
    """A model folder, file or hub id could not be loaded; the message says which and why."""
