"""Small fsspec helpers shared by every module that reads or writes files.

(Just over 500 lines on purpose: the retry policy and every fsspec helper that uses it share one
classification of transient errors; split, each half would need the other.)

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
local target, never a partial file under the target's name. Temporary names always start with ``.``
and never equal a final name, so a listing that looks for exact output names (the job's resume) can
never take one for an output.

Retries
-------
Remote uploads (:func:`atomic_output`, :func:`atomic_upload`, :func:`atomic_write_bytes`),
:func:`download` / :func:`local_copy` and :func:`list_files` retry *transient* storage errors
(:func:`is_transient`: time-outs, dropped connections, HTTP 5xx / throttling) with exponential backoff
and jitter, as set by :func:`set_retry_policy` (default :data:`DEFAULT_RETRY_POLICY`). "Not found",
"permission denied" and other errors that a second try cannot fix are raised at once. Every retried
operation is idempotent (a complete file is uploaded again under the same name).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterator, Sequence, TypeVar

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
    "RetryPolicy",
    "DEFAULT_RETRY_POLICY",
    "set_retry_policy",
    "get_retry_policy",
    "is_transient",
    "retry",
    "download",
    "local_copy",
    "list_files",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")


# --------------------------------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """How :func:`retry` retries transient errors.

    Attributes:
        attempts: total tries (1 = no retry).
        base_delay_s: wait before the 2nd try; doubled before each further one.
        max_delay_s: upper bound of one wait.
        jitter: each wait is multiplied by a random factor in ``[1 - jitter, 1]`` (spreads the retries
            of many workers that failed at the same moment).
    """

    attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    jitter: float = 0.5

    def __post_init__(self):
        if int(self.attempts) < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts!r}")
        if self.base_delay_s < 0 or self.max_delay_s < 0 or not 0 <= self.jitter <= 1:
            raise ValueError(f"RetryPolicy delays must be >= 0 and jitter in [0, 1], got {self!r}")

    @classmethod
    def from_config(cls, cfg: Any) -> "RetryPolicy":
        """From a mapping with any of ``storage_attempts``, ``storage_base_delay_s``,
        ``storage_max_delay_s`` (the job config's ``retries`` section); missing keys keep the defaults."""
        cfg = dict(cfg or {})
        d = DEFAULT_RETRY_POLICY
        return cls(attempts=int(cfg.get("storage_attempts", d.attempts)),
                   base_delay_s=float(cfg.get("storage_base_delay_s", d.base_delay_s)),
                   max_delay_s=float(cfg.get("storage_max_delay_s", d.max_delay_s)),
                   jitter=float(cfg.get("storage_jitter", d.jitter)))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        base = min(self.max_delay_s, self.base_delay_s * (2 ** (attempt - 1)))
        return base * (1.0 - self.jitter * random.random())


#: The policy used when none is given and :func:`set_retry_policy` was not called.
DEFAULT_RETRY_POLICY = RetryPolicy()
_policy = DEFAULT_RETRY_POLICY


def set_retry_policy(policy: RetryPolicy | None) -> RetryPolicy:
    """Set the process-wide policy of every retried operation (None: the default); returns the old one.

    Each process (each Ray worker) has its own; the batch job sets it from the config in every stage.
    """
    global _policy
    old = _policy
    _policy = policy or DEFAULT_RETRY_POLICY
    return old


def get_retry_policy() -> RetryPolicy:
    """The process-wide retry policy."""
    return _policy


# errno values a retry cannot fix (missing path, permissions, wrong kind of path, bad name, full disk)
_PERMANENT_ERRNOS = frozenset({
    errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.EINVAL,
    errno.ENAMETOOLONG, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTEMPTY, errno.ELOOP,
})
# class names (anywhere in the MRO) of network errors raised by botocore / aiohttp / urllib3 / fsspec
_TRANSIENT_NAMES = frozenset({
    "HTTPClientError", "ConnectionClosedError", "EndpointConnectionError", "ReadTimeoutError",
    "ConnectTimeoutError", "ProxyConnectionError", "ResponseStreamingError", "IncompleteReadError",
    "ClientPayloadError", "ClientConnectionError", "ServerDisconnectedError", "ServerTimeoutError",
    "IncompleteRead", "ProtocolError", "FSTimeoutError",
})
# S3 / GCS style error codes worth another try
_TRANSIENT_CODES = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "Throttling", "ThrottlingException",
    "RequestTimeout", "RequestTimeTooSkewed", "RequestLimitExceeded", "TooManyRequestsException",
    "500", "502", "503", "504",
})


def _client_error_transient(exc: BaseException) -> bool | None:
    """True/False for an error carrying an HTTP response (botocore ClientError), None otherwise."""
    resp = getattr(exc, "response", None)
    if not isinstance(resp, dict):
        return None
    code = str((resp.get("Error") or {}).get("Code") or "")
    status = (resp.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    if code in _TRANSIENT_CODES:
        return True
    if isinstance(status, int):
        return status >= 500 or status in (408, 429)
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether another try of the operation that raised ``exc`` may succeed.

    Never: ``FileNotFoundError``, ``PermissionError``, ``IsADirectoryError``, ``NotADirectoryError``,
    ``FileExistsError``, OS errors with such an errno (also disk full, read-only), HTTP 4xx responses
    other than 408/429, and anything that is not an I/O or network error (``ValueError``, bugs).
    Yes: ``TimeoutError``, ``ConnectionError``, other ``OSError`` (S3's 5xx become ``OSError(EIO /
    EBUSY / EREMOTEIO)`` in s3fs), HTTP 5xx / 408 / 429 / throttling codes, and the connection and
    time-out errors of botocore, aiohttp, urllib3 and fsspec.
    """
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                        FileExistsError)):
        return False
    verdict = _client_error_transient(exc)
    if verdict is not None:
        return verdict
    if isinstance(exc, OSError):
        cause = exc.__cause__
        if cause is not None and cause is not exc:
            verdict = _client_error_transient(cause)
            if verdict is not None:
                return verdict
        return exc.errno not in _PERMANENT_ERRNOS
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    return any(k.__name__ in _TRANSIENT_NAMES for k in type(exc).__mro__)


def retry(fn: Callable[..., T], *args: Any, what: str = "", policy: RetryPolicy | None = None,
          is_retryable: Callable[[BaseException], bool] = is_transient,
          sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, tried again after transient errors with exponential backoff.

    Args:
        fn: the operation; it must be safe to repeat.
        what: description for the log (``"upload s3://b/k"``).
        policy: attempts and delays (default: the process-wide :func:`get_retry_policy`).
        is_retryable: which exceptions are retried (default :func:`is_transient`).
        sleep: the wait function (tests pass a fake).

    Returns:
        what ``fn`` returns.

    Raises:
        the first non-retryable exception at once, or the last exception after ``policy.attempts``
        tries (its message is left unchanged; the number of tries is logged).
    """
    policy = policy or _policy
    attempt = 1
    while True:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if attempt >= policy.attempts or not is_retryable(exc):
                if attempt > 1:
                    logger.warning("%s failed after %d tries: %s", what or getattr(fn, "__name__", "operation"),
                                   attempt, _one_line(exc))
                raise
            wait = policy.delay(attempt)
            logger.warning("%s: transient error (try %d of %d), retrying in %.1f s: %s",
                           what or getattr(fn, "__name__", "operation"), attempt, policy.attempts, wait,
                           _one_line(exc))
        sleep(wait)
        attempt += 1


def _one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {text}"


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
        retry(fs.put_file, tmp, path, what=f"upload {uri}")
    finally:
        _remove_quietly(tmp)


def atomic_upload(
    local_file: str | os.PathLike, uri: str | os.PathLike, storage_options: dict[str, Any] | None = None
) -> None:
    """Publish the existing local file ``local_file`` at ``uri`` atomically; ``local_file`` is kept.

    Local target: copied next to the target, then renamed over it. Remote target: one
    ``fs.put_file`` upload (retried on transient errors).
    """
    local_file = os.fspath(local_file)
    target = local_path(uri, storage_options)
    if target is None:
        fs, path = url_to_fs(uri, storage_options)
        retry(fs.put_file, local_file, path, what=f"upload {uri}")
        return
    import shutil

    with atomic_output(uri, storage_options) as tmp:
        shutil.copyfile(local_file, tmp)


def atomic_write_bytes(uri: str | os.PathLike, data: bytes, storage_options: dict[str, Any] | None = None) -> None:
    """Write ``data`` to ``uri`` atomically: all of it becomes visible at once, or nothing changes.

    Local target: temporary file + :func:`os.replace`. Remote target: one ``fs.pipe_file`` request
    (retried on transient errors).
    """
    target = local_path(uri, storage_options)
    if target is None:
        fs, path = url_to_fs(uri, storage_options)
        retry(fs.pipe_file, path, bytes(data), what=f"upload {uri}")
        return
    with atomic_output(uri, storage_options) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


# --------------------------------------------------------------------------------------------------
# Downloads and listings (retried)
# --------------------------------------------------------------------------------------------------


def download(uri: str | os.PathLike, local_file: str | os.PathLike,
             storage_options: dict[str, Any] | None = None) -> None:
    """Copy the remote (or local) file ``uri`` to ``local_file``, retrying transient errors.

    Raises:
        FileNotFoundError, PermissionError, IsADirectoryError: at once (``uri`` names a folder: the
            latter); other errors after the retries.
    """
    fs, path = url_to_fs(uri, storage_options)
    info = retry(fs.info, path, what=f"stat {uri}")
    if info.get("type") == "directory":
        raise IsADirectoryError(errno.EISDIR, "is a directory", os.fspath(uri))
    retry(fs.get_file, path, os.fspath(local_file), what=f"download {uri}")


@contextlib.contextmanager
def local_copy(uri: str | os.PathLike, storage_options: dict[str, Any] | None = None, *,
               directory: str | None = None) -> Iterator[str]:
    """Yield a local path holding the content of ``uri``: the file itself when it is local, else a
    temporary download (retried, see :func:`download`) that is deleted when the block exits.

    The temporary file keeps the extension of ``uri`` (some demuxers look at it).
    """
    path = local_path(uri, storage_options)
    if path is not None:
        yield path
        return
    name = os.path.basename(os.fspath(uri).rstrip("/")) or "download"
    ext = os.path.splitext(name)[1][:16]
    tmp = _new_local_temp(directory or tempfile.gettempdir(), "m3ddm-src", ext)
    try:
        download(uri, tmp, storage_options)
        yield tmp
    finally:
        _remove_quietly(tmp)


def consecutive_runs(values: Sequence[int]) -> list[tuple[int, int]]:
    """``(start, count)`` of every run of consecutive integers in ascending ``values``: what one
    ranged read each can fetch from a file of fixed-size records (``[3, 4, 5, 9]`` -> ``[(0, 3),
    (3, 1)]``; ``start`` indexes ``values``)."""
    out: list[tuple[int, int]] = []
    k = 0
    while k < len(values):
        j = k
        while j + 1 < len(values) and int(values[j + 1]) == int(values[j]) + 1:
            j += 1
        out.append((k, j - k + 1))
        k = j + 1
    return out


def remove_tree(uri: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> None:
    """Delete the file or folder / prefix ``uri`` with everything under it; no error if it is not
    there or cannot be deleted (scratch data: a left-over is harmless, a failed job is worse)."""
    with contextlib.suppress(Exception):
        fs, root = url_to_fs(uri, storage_options)
        if fs.exists(root):
            fs.rm(root, recursive=True)


def list_files(uri: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> list[str]:
    """Every file under the folder / prefix ``uri`` (recursive, one ``fs.find``), as paths *relative
    to* ``uri`` with ``/`` separators, sorted. A prefix that does not exist gives ``[]``.
    Transient errors are retried.
    """
    fs, root = url_to_fs(uri, storage_options)
    with contextlib.suppress(Exception):  # object-store filesystems cache listings per instance
        fs.invalidate_cache(root)
    try:
        found = retry(fs.find, root, what=f"list {uri}")
    except FileNotFoundError:
        return []
    base = root.rstrip("/")
    if isinstance(fs, LocalFileSystem):
        base = base.replace(os.sep, "/")
    out = []
    for p in found:
        p = str(p).replace(os.sep, "/") if isinstance(fs, LocalFileSystem) else str(p)
        if p.startswith(base + "/"):
            out.append(p[len(base) + 1:])
    return sorted(out)
