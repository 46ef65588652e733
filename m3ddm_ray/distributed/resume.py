"""Resume: which rows of a job are already done, before any Ray or model work.

Outputs live under deterministic names (:func:`~m3ddm_ray.distributed.stages.output_key`: clip id,
ratio or task and the hash of everything that changes pixels), are published atomically (a file
under a final name is always complete) and every run writes ``<output>/results/results-<time>.parquet``.
The driver lists the output prefix **once** (:func:`scan_output`: one ``fs.find``), reads the earlier
result files found there (four or five columns each) and decides per row with :func:`decide`. A row's key
is :func:`result_key`, ``(clip_id, task, ratio, config_hash)`` (``ratio`` None for inpaint / extend
rows), so an inpaint row never matches an outpaint row of the same clip:

==============================================  ===========  ===============  ============
earlier state of the row's key                  default      ``retry-errors``  ``overwrite``
==============================================  ===========  ===============  ============
output exists, last result ``ok``/``unchanged``  skipped      skipped          run
output exists, no result row (run killed)       skipped      skipped          run
output exists, last result ``error``            run          run              run
no output, last result ``error``                run          run              run
no output, last result ``ok``/``unchanged``     run          skipped          run
no output, no result row (new row)              run          skipped          run
==============================================  ===========  ===============  ============

"Last result" is the last row for the key that is not ``skipped`` (a skipped row only repeats an
earlier verdict), in the order of the result file names (UTC time stamps). An output without any
result row comes from a run that was killed before it wrote its table; atomic publishing makes it a
complete output of the same configuration, so it is trusted. Temporary files never match: only
exact output names count, and temporary names start with ``.``.

Older result tables are read too: :func:`normalise_result` (the one rule, applied to every earlier
row) turns a row whose ``ratio`` holds a task name (``inpaint`` / ``extend``) into ``task`` = that
name, ``ratio`` = None, and a row without ``task`` into an outpaint row.

Everything except :func:`scan_output` (which does the listing and the reads) is pure and works on
plain rows (dicts with ``clip_id``, ``task``, ``ratio``, ``config_hash``, ``output_uri``, ``status``).
"""

from __future__ import annotations

import concurrent.futures
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import pyarrow as pa

from .. import storage
from .results import row_identity, row_ratio
from ..task import RATIO_FREE_TASKS, task_name

logger = logging.getLogger(__name__)

#: Job modes: ``resume`` (default), ``overwrite`` (``--overwrite``), ``retry-errors`` (``--retry-errors``).
MODES = ("resume", "overwrite", "retry-errors")
#: Earlier statuses that make an existing output count as done.
DONE_STATUSES = ("ok", "unchanged")
#: Folder of the result tables under the output prefix.
RESULTS_DIR = "results"
#: Columns read from earlier result tables (a table without them is not a result table).
KEY_COLUMNS = ("clip_id", "ratio", "config_hash", "status")
#: Columns read when a table has them (a table without ``task`` holds outpaint rows only).
OPTIONAL_KEY_COLUMNS = ("task",)

_RESULTS_FILE = re.compile(r"results-[A-Za-z0-9._-]+\.parquet")

#: ``(clip_id, task, ratio or None, config_hash)``: :func:`result_key`.
Key = tuple[str, str, str | None, str]


@dataclass(frozen=True)
class PriorResult:
    """The last decisive (non-``skipped``) earlier result of one :data:`Key`."""

    status: str
    results_uri: str


@dataclass
class OutputState:
    """What one listing of the output prefix found.

    Attributes:
        files: paths of every file under the prefix, relative to it (``clip/clip_9x16_<hash>.mp4``).
        results: last decisive earlier result per :data:`Key` (clip_id, task, ratio, config_hash).
        results_files: URIs of the result tables read, oldest first.
        problems: result tables that could not be read (ignored; named in the job summary).
        seconds: time spent listing and reading.
    """

    files: frozenset[str] = frozenset()
    results: dict[Key, PriorResult] = field(default_factory=dict)
    results_files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


# --------------------------------------------------------------------------- names
def results_file_name(now: datetime | None = None) -> str:
    """``results-20250102T030405.123456Z-1a2b3c.parquet``: UTC time to the microsecond (file names
    sort in run order) and a random tag (two runs started in the same microsecond never collide)."""
    now = now or datetime.now(timezone.utc)
    return f"results-{now.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')}-{uuid.uuid4().hex[:6]}.parquet"


def is_results_file(rel: str) -> bool:
    """Whether ``rel`` (relative to the output prefix) is a published result table.

    Only ``results/results-*.parquet``; hidden names (temporary files start with ``.``) never match.
    """
    parts = rel.split("/")
    return len(parts) == 2 and parts[0] == RESULTS_DIR and bool(_RESULTS_FILE.fullmatch(parts[1]))


def relative_to(output: str, uri: str) -> str | None:
    """``uri`` relative to the output prefix ``output`` (None when it is not inside it)."""
    base = str(output).rstrip("/") + "/"
    return uri[len(base):] if uri and uri.startswith(base) else None


def join(output: str, rel: str) -> str:
    return str(output).rstrip("/") + "/" + rel


# --------------------------------------------------------------------------- pure logic
def normalise_result(row: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a result row (or stage row) with ``task`` and ``ratio`` as the result table holds
    them: ``task`` one of ``outpaint`` | ``inpaint`` | ``extend``, ``ratio`` the target ratio of an
    outpaint row and None for the others.

    The rule for older result tables: a row whose ``ratio`` is a task name (``"inpaint"``,
    ``"extend"``: :data:`RATIO_FREE_TASKS`) becomes ``task`` = that name, ``ratio`` = None; a row
    without ``task`` (a table with no such column) is an outpaint row: the older
    ``{"ratio": "inpaint", "task": "inpaint"}`` -> ``{"ratio": None, "task": "inpaint"}``,
    ``{"ratio": "9:16"}`` -> ``{"ratio": "9:16", "task": "outpaint"}``. A row in the current schema
    keeps its values.
    """
    out = dict(row)
    task, ratio = task_name(row), row_ratio(row)
    if ratio in RATIO_FREE_TASKS:
        task, ratio = ratio, None
    out["task"], out["ratio"] = task, ratio
    return out


def result_key(row: Mapping[str, Any]) -> Key:
    """``(clip_id, task, ratio, config_hash)`` of a result row or stage row, in either table format
    (:func:`normalise_result`): ``("c", "outpaint", "9:16", "3f2a...")``, ``("c", "inpaint", None,
    "9b1c...")``."""
    clip_id, task, ratio = row_identity(normalise_result(row))
    return clip_id, task, ratio, str(row.get("config_hash"))


def last_results(tables: Iterable[tuple[str, pa.Table | Sequence[Mapping[str, Any]]]]) -> dict[Key, PriorResult]:
    """Last decisive result per key from ``(results_uri, table)`` pairs given oldest first.

    Rows with status ``skipped`` are ignored; within one table a later row wins. Rows of older
    tables are keyed like current ones (:func:`result_key`).
    """
    out: dict[Key, PriorResult] = {}
    for uri, table in tables:
        rows = table.to_pylist() if isinstance(table, pa.Table) else table
        for r in rows:
            status = r.get("status")
            if not status or status == "skipped":
                continue
            out[result_key(r)] = PriorResult(str(status), uri)
    return out


def decide(row: Mapping[str, Any], state: OutputState, output: str, mode: str = "resume") -> tuple[str, str | None]:
    """``("pending" | "skipped", previous_result)`` for one row (see the table in the module doc).

    ``previous_result`` is the results file holding the last decisive earlier result of the row's key
    (None when there is none, and always under ``overwrite``).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; use one of {MODES}")
    if mode == "overwrite":
        return "pending", None
    prior = state.results.get(result_key(row))
    previous = prior.results_uri if prior else None
    rel = relative_to(output, row["output_uri"])
    exists = rel is not None and rel in state.files
    if mode == "retry-errors":
        return ("pending" if prior is not None and prior.status == "error" else "skipped"), previous
    if exists and (prior is None or prior.status in DONE_STATUSES):
        return "skipped", previous
    return "pending", previous


def plan_rows(rows: Sequence[dict], state: OutputState, output: str, mode: str = "resume") -> list[dict]:
    """Copies of the pending ``rows`` with ``status`` (``pending`` / ``skipped``) and
    ``previous_result`` set; a skipped row whose output is missing gets ``output_uri=None``."""
    out = []
    for row in rows:
        if row.get("status", "pending") != "pending":
            out.append(dict(row))
            continue
        status, previous = decide(row, state, output, mode)
        new = dict(row, status=status, previous_result=previous)
        if status == "skipped":
            rel = relative_to(output, row["output_uri"])
            if rel is None or rel not in state.files:
                new["output_uri"] = None
        out.append(new)
    return out


# --------------------------------------------------------------------------- I/O
def _read_keys(uri: str, storage_options: Mapping[str, Any] | None) -> pa.Table:
    import pyarrow.parquet as pq

    def read() -> pa.Table:
        with storage.open_uri(uri, "rb", dict(storage_options or {})) as f:
            table = pq.read_table(f)
        missing = [c for c in KEY_COLUMNS if c not in table.column_names]
        if missing:
            raise ValueError(f"not a result table (no column {', '.join(missing)})")
        return table.select(list(KEY_COLUMNS) + [c for c in OPTIONAL_KEY_COLUMNS if c in table.column_names])

    return storage.retry(read, what=f"read {uri}")


def scan_output(output: str, storage_options: Mapping[str, Any] | None = None, *, threads: int = 8) -> OutputState:
    """List ``output`` once and read every result table under ``<output>/results/``.

    Unreadable result tables are skipped and named in :attr:`OutputState.problems` (a damaged file
    must not block every later run); storage errors of the listing itself propagate.
    """
    t0 = time.perf_counter()
    so = dict(storage_options or {})
    files = storage.list_files(output, so)
    names = sorted(f for f in files if is_results_file(f))
    uris = [join(output, n) for n in names]
    tables: list[tuple[str, pa.Table]] = []
    problems: list[str] = []
    if uris:
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(threads, len(uris)))) as pool:
            futures = [pool.submit(_read_keys, u, so) for u in uris]
            for uri, fut in zip(uris, futures):
                try:
                    tables.append((uri, fut.result()))
                except Exception as exc:  # noqa: BLE001 - reported, not fatal
                    problems.append(f"{uri}: {type(exc).__name__}: {exc}")
                    logger.warning("ignoring unreadable result table %s: %s", uri, exc)
    return OutputState(files=frozenset(files), results=last_results(tables),
                       results_files=[u for u, _ in tables], problems=problems,
                       seconds=time.perf_counter() - t0)


def pending_rows(rows: Sequence[dict], output: str, storage_options: Mapping[str, Any] | None = None,
                 mode: str = "resume") -> tuple[list[dict], OutputState]:
    """:func:`scan_output` + :func:`plan_rows` (no listing at all under ``overwrite``)."""
    state = OutputState() if mode == "overwrite" else scan_output(output, storage_options)
    return plan_rows(rows, state, output, mode), state
