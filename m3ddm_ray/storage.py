"""Small fsspec helpers shared by every module that reads or writes files.

A *URI* here is either a local path (absolute or relative, ``~`` is expanded) or any URL that
fsspec understands: ``file://``, ``memory://``, ``s3://``, ``gs://``, ... ``storage_options`` is
passed to the filesystem constructor unchanged (credentials, endpoint, ...).

Atomic publishing
-----------------
Outputs are never written in place. :func:`atomic_output` hands out a *local* temporary path; only
when the ``with`` block finishes without an exception is the file published:

* local target: the temporary file lives in the target's own directory (same filesystem), is
  fsync'ed and then renamed over the target with :func:`os.replace` (atomic on POSIX);
* remote target: the temporary file lives in the local temp directory and is uploaded with a single
  ``fs.put_file`` call. On object stores (S3, GCS, ...) an object only becomes visible when its
  upload completes, so readers see either the old object or the complete new one. Filesystems that
  are not object stores (e.g. SFTP) give no such guarantee.

On any failure (including ``KeyboardInterrupt``) the temporary file is deleted and the target is left
as it was. A process killed with SIGKILL can leave a hidden ``.<name>.<random>.tmp`` file next to a
local target, never a partial file under the target's name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from typing import IO, Any, Iterator

import fsspec
from fsspec.core import url_to_fs as _fsspec_url_to_fs
from fsspec.implementations.local import LocalFileSystem

__all__ = [
    "url_to_fs",
    "local_path",
    "is_local",
    "open_uri",
    "exists",
    "size",
    "atomic_output",
    "atomic_upload",
    "atomic_write_bytes",
]


def _expand(uri: str | os.PathLike) -> str:
    uri = os.fspath(uri)
    if "://" not in uri and "::" not in uri:
        uri = os.path.expanduser(uri)
    return uri


def url_to_fs(uri: str | os.PathLike, storage_options: dict[str, Any] | None = None):
    """Return ``(fs, path)`` for ``uri``: the fsspec filesystem and the path inside it.

    Local paths and ``file://`` URLs give a :class:`LocalFileSystem` and an absolute path.
    """
    return _fsspec_url_to_fs(_expand(uri), **(storage_options or {}))


def local_path(uri: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> str | None:
    """Absolute local path of ``uri`` when it is on the local disk (plain path or ``file://``), else None."""
    uri = _expand(uri)
    if "://" not in uri and "::" not in uri:
        return os.path.abspath(uri)
    fs, path = url_to_fs(uri, storage_options)
    if isinstance(fs, LocalFileSystem):
        return os.path.abspath(path)
    return None


def is_local(uri: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> bool:
    """True when ``uri`` names a file on the local disk."""
    return local_path(uri, storage_options) is not None


def open_uri(uri: str | os.PathLike, mode: str = "rb", storage_options: dict[str, Any] | None = None) -> IO:
    """Open ``uri`` with fsspec and return the (already opened) file object; use it in a ``with``.

    Errors are the filesystem's own (``FileNotFoundError``, ``PermissionError``, ...). Writing with
    this function is *not* atomic; use :func:`atomic_output` / :func:`atomic_write_bytes` for outputs.
    """
    return fsspec.open(_expand(uri), mode, **(storage_options or {})).open()


def exists(uri: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> bool:
    """True when ``uri`` exists (file or directory)."""
    fs, path = url_to_fs(uri, storage_options)
    return fs.exists(path)


def size(uri: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> int:
    """Size of the file ``uri`` in bytes. Raises ``FileNotFoundError`` when it does not exist."""
    fs, path = url_to_fs(uri, storage_options)
    return int(fs.size(path))


def _new_local_temp(directory: str, name: str, suffix: str = "") -> str:
    """Create an empty file ``<directory>/.<name>.<random>.tmp<suffix>`` and return its path.

    Created with mode 0o666 minus the umask, like a normal ``open(path, "w")`` (``mkstemp`` would
    give 0o600, which would then be the permissions of the published file).
    """
    for _ in range(100):
        path = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path
    raise FileExistsError(f"could not create a temporary file in {directory}")  # pragma: no cover


def _fsync_file(path: str) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _remove_quietly(path: str | None) -> None:
    if path:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def atomic_output(
    uri: str | os.PathLike, storage_options: dict[str, Any] | None = None, *, suffix: str = ""
) -> Iterator[str]:
    """Context manager yielding a local temporary path that is published to ``uri`` on success.

    Write the complete file to the yielded path inside the ``with`` block (the path exists as an
    empty file; overwrite it). On normal exit it is published atomically (see the module doc); on an
    exception it is deleted, the target is untouched and the exception propagates. Parent
    directories of a local target are created. ``suffix`` is appended to the temporary name, for
    writers that pick the format from the file extension.

    Example::

        with atomic_output("s3://bucket/out/part-0.parquet") as tmp:
            pyarrow.parquet.write_table(table, tmp)
    """
    target = local_path(uri, storage_options)
    if target is not None:
        directory = os.path.dirname(target) or "."
        os.makedirs(directory, exist_ok=True)
        tmp = _new_local_temp(directory, os.path.basename(target), suffix)
        try:
            yield tmp
            _fsync_file(tmp)
            os.replace(tmp, target)
        except BaseException:
            _remove_quietly(tmp)
            raise
        _fsync_dir(directory)
        return

    fs, path = url_to_fs(uri, storage_options)
    tmp = _new_local_temp(tempfile.gettempdir(), os.path.basename(path.rstrip("/")) or "upload", suffix)
    try:
        yield tmp
        fs.put_file(tmp, path)
    finally:
        _remove_quietly(tmp)


def atomic_upload(
    local_file: str | os.PathLike, uri: str | os.PathLike, storage_options: dict[str, Any] | None = None
) -> None:
    """Publish the existing local file ``local_file`` at ``uri`` atomically; ``local_file`` is kept.

    Local target: copied next to the target, then renamed over it. Remote target: one
    ``fs.put_file`` upload.
    """
    local_file = os.fspath(local_file)
    target = local_path(uri, storage_options)
    if target is None:
        fs, path = url_to_fs(uri, storage_options)
        fs.put_file(local_file, path)
        return
    import shutil

    with atomic_output(uri, storage_options) as tmp:
        shutil.copyfile(local_file, tmp)


def atomic_write_bytes(uri: str | os.PathLike, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``data`` to ``uri`` atomically: all of it becomes visible at once, or nothing changes.

    Local target: temporary file + :func:`os.replace`. Remote target: one ``fs.pipe_file`` request.
    """
    target = local_path(uri, storage_options)
    if target is None:
        fs, path = url_to_fs(uri, storage_options)
        fs.pipe_file(path, bytes(data))
        return
    with atomic_output(uri, storage_options) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
