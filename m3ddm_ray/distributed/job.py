"""The batch job on Ray Data: manifest -> prepare -> coarse pool -> fine pool -> finalize -> Parquet.

Runs on an embedded local Ray (no address), or joins a cluster (``--address`` / ``RAY_ADDRESS`` /
``ray.address`` in the config). The manifest is read and validated on the driver before any GPU work;
each manifest row becomes one row per target ratio, and every one of them ends in the result table
with its status (``ok``, ``error``, ``unchanged``, ``skipped``) — a bad video never stops the job.

Before anything starts, the driver lists the output prefix once and marks rows that an earlier run
already finished as ``skipped`` (:mod:`.resume`); when no row is left, Ray is not even started. Model
actors that die are restarted and their batches retried (``retries.actor_*``); tasks likewise
(``retries.task_max_retries``). If Ray gives up anyway, the rows it did not return become ``error``
rows and the result table is still written.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

import pyarrow as pa

from . import clip_order, resume
from .collect import (  # noqa: F401 - re-exported (eval job, tests)
    JobStalled,
    ProgressLog,
    StallWatchdog,
    collect_rows,
    set_progress_output,
    stall_timeout,
)
from .config import load_config, with_weights
from .resources import MODEL_STAGES, ResourcePlan, local_gpu_count, plan_pools
from .finalize import FinalizeStage
from .progress import output_frames
from .ray_args import (  # noqa: F401 - RETRY_DEFAULTS and the pool builders re-exported (eval job, tests)
    RETRY_DEFAULTS,
    as_float,
    stage_fault_args,
    with_fault_args,
    map_on_actor_pool,
    map_on_task_pool,
    task_pool,
)
from .results import RESULT_SCHEMA, row_identity, row_label
from .stages import (
    CoarseStage,
    FineStage,
    PrepareStage,
    apply_retry_policy,
    expand_manifest_row,
    redact,
    result_row,
)

logger = logging.getLogger(__name__)


def status_counts(table: pa.Table) -> dict[str, int]:
    """Rows per value of the ``status`` column of a result table."""
    out: dict[str, int] = {}
    for s in table.column("status").to_pylist():
        out[s] = out.get(s, 0) + 1
    return out


@dataclass
class JobResult:
    """What :func:`run_job` returns: the result table and where it was written."""

    table: pa.Table
    results_uri: str
    seconds: float
    notes: list[str] = dataclasses.field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Rows per status."""
        return status_counts(self.table)

    def summary(self) -> str:
        """Human summary: rows per status, frames per second, where the outputs are."""
        rows = self.table.to_pylist()
        frames = sum(output_frames(r) for r in rows)
        c = self.counts()
        parts = ", ".join(f"{k} {c.get(k, 0)}" for k in ("ok", "unchanged", "skipped", "error"))
        from ..task import made_by, task_name

        done = made_by({task_name(r) for r in rows})
        lines = [f"{len(rows)} outputs (clip x ratio): {parts}",
                 f"{frames} frames {done} in {self.seconds:.1f} s wall time "
                 f"({frames / max(self.seconds, 1e-9):.2f} frames/s)",
                 *self.notes,
                 f"results: {self.results_uri}"]
        for r in rows:
            if r["status"] == "error":
                lines.append(f"  error {r['clip_id']} {row_label(r)}: {r['error']}")
        return "\n".join(lines)


def init_ray(cfg: Mapping[str, Any]):
    """Connect to ``cfg['ray']['address']`` (or ``RAY_ADDRESS``), or start an embedded local Ray.

    Reuses an already initialised Ray session (tests, notebooks).
    """
    import ray

    if ray.is_initialized():
        return ray
    rc = cfg.get("ray") or {}
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True}
    address = rc.get("address") or os.environ.get("RAY_ADDRESS")
    if address:
        kwargs["address"] = address
    else:  # "local": never attach by accident to a cluster someone started with `ray start`
        kwargs["address"] = "local"
        for key in ("num_cpus", "num_gpus"):
            if rc.get(key) is not None:
                kwargs[key] = rc[key]
    ray.init(**kwargs)
    return ray


def cluster_resources(cfg: Mapping[str, Any]) -> dict[str, float]:
    """Total CPUs / GPUs the job will run on, without starting Ray when it would run embedded.

    A running Ray session or a cluster address: ``ray.cluster_resources()`` (connecting first).
    An embedded local Ray (not started yet): ``ray.num_cpus`` / ``ray.num_gpus`` of the config, else
    this machine's CPU count and GPUs (:func:`~.resources.local_gpu_count`) -- what Ray would detect.
    """
    import ray

    rc = cfg.get("ray") or {}
    if ray.is_initialized() or rc.get("address") or os.environ.get("RAY_ADDRESS"):
        if not ray.is_initialized():
            init_ray(cfg)
        total = ray.cluster_resources()
        return {"CPU": float(total.get("CPU", 0)), "GPU": float(total.get("GPU", 0))}
    cpus = rc.get("num_cpus") if rc.get("num_cpus") is not None else (os.cpu_count() or 1)
    gpus = rc.get("num_gpus") if rc.get("num_gpus") is not None else local_gpu_count()
    return {"CPU": float(cpus), "GPU": float(gpus)}


def resolve_runtime(cfg: Mapping[str, Any], cluster: Mapping[str, float] | None = None, **pools
                    ) -> tuple[dict[str, Any], ResourcePlan]:
    """A copy of ``cfg`` with ``device`` / ``dtype`` resolved and every stage's ``num_cpus`` /
    ``num_gpus`` a number that fits ``cluster`` (default: :func:`cluster_resources`), and the plan.
    ``pools`` (``actors=``, ``tasks=``) name the job's stages for :func:`~.resources.plan_pools`.

    Idempotent: resolving a resolved config changes nothing.

    Raises:
        ResourceError: a pool cannot be placed (one line: stage, ask, cluster, fix).
    """
    cluster = cluster if cluster is not None else cluster_resources(cfg)
    rc = cfg.get("ray") or {}
    plan = plan_pools(cfg["stages"], cfg["device"], cfg["dtype"], cluster,
                      autoscaling=bool(rc.get("autoscaling")), **pools)
    out = dict(cfg, device=plan.device, dtype=plan.dtype)
    out["stages"] = {name: dict(stage) for name, stage in cfg["stages"].items()}
    for name, ask in plan.asks.items():
        out["stages"].setdefault(name, {})["num_cpus"] = ask.num_cpus
        if "concurrency" in out["stages"][name]:
            out["stages"][name]["concurrency"] = ask.concurrency
        if name in MODEL_STAGES or name in pools.get("actors", ()):
            out["stages"][name]["num_gpus"] = ask.num_gpus
    return out, plan


def absolute_uri(uri: str) -> str:
    """Relative local paths -> absolute (Ray workers on other nodes do not share the driver's cwd)."""
    text = str(uri)
    if "://" in text or os.path.isabs(text):
        return text
    return os.path.abspath(text)


def resolve_paths(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``cfg`` whose local model/VAE folders are absolute, with their weights identity
    resolved once and hub ids pinned to the commit it names (:func:`.config.with_weights`).

    Raises:
        InputError / ModelLoadError: a model or VAE whose weights cannot be identified (named, with the fix).
    """
    out = dict(cfg)
    for key in ("model", "vae"):
        if os.path.exists(str(cfg[key])):
            out[key] = absolute_uri(cfg[key])
    return with_weights(out)


def build_rows(cfg: Mapping[str, Any], manifest_uri: str, output: str) -> list[dict]:
    """Read and validate the manifest (errors before any GPU work); one pending row per (clip, ratio).

    Relative local video paths and the output prefix are made absolute here, on the driver.
    """
    from .manifest import read_manifest

    so = cfg.get("storage_options") or None
    cfg = with_weights(cfg)  # once, not per row (a no-op after resolve_paths)
    manifest = read_manifest(manifest_uri, so, default_ratios=cfg["ratios"])
    rows: list[dict] = []
    for m in manifest:
        record = dataclasses.asdict(m)
        record["video_uri"] = absolute_uri(record["video_uri"])
        if record.get("mask_uri"):
            record["mask_uri"] = absolute_uri(record["mask_uri"])
        rows.extend(expand_manifest_row(record, cfg, absolute_uri(output)))
    return rows


def conform_row(row: Mapping[str, Any], schema: pa.Schema = RESULT_SCHEMA, *,
                missing_float: float | None = None) -> dict:
    """Coerce a result row to ``schema``'s types, column by column.

    Ray's block formats may turn None into NaN and ints into numpy scalars on the way; a NaN in a
    non-float column becomes None, and a missing float becomes ``missing_float`` (None or NaN).
    """
    import math

    out = {}
    for field in schema:
        v = row.get(field.name)
        if isinstance(v, float) and math.isnan(v) and not pa.types.is_floating(field.type):
            v = None
        if v is None:
            v = missing_float if pa.types.is_floating(field.type) else None
        elif pa.types.is_integer(field.type):
            v = int(v)
        elif pa.types.is_floating(field.type):
            v = float(v)
        elif pa.types.is_boolean(field.type):
            v = bool(v)
        elif pa.types.is_string(field.type):
            v = str(v)
        out[field.name] = v
    return out


def diffusion_dataset(cfg: Mapping[str, Any], rows: list[dict]):
    """The Ray Dataset up to the fine stage: clips -> prepare (CPU) -> coarse pool -> one row per
    segment -> fine pool (which first builds the segment's canvases from a range decode).

    Rows come out with ``clip`` and ``state`` (pickled) still attached; :func:`run_job` appends the
    finalize stage. Exposed separately so tests can compare the diffusion results with the
    single-process pipeline bit for bit.
    """
    import ray.data

    from .stages import group_by_clip

    init_ray(cfg)
    cfg, _ = resolve_runtime(cfg)
    _set_execution_context(cfg)
    # the cheapest of the first clips go first, so the fine pool gets work early (.clip_order)
    clips = [{"rows": json.dumps([{k: v for k, v in r.items() if k not in ("clip", "state")} for r in g])}
             for g in clip_order.order_groups(list(group_by_clip(rows)), cfg)]
    device = str(cfg["device"])
    prep_cfg = cfg["stages"]["prepare"]

    def prepare(item: dict) -> list[dict]:
        group = [dict(r, clip=b"", state=b"") for r in json.loads(item["rows"])]
        return PrepareStage(cfg)(group)

    ds = ray.data.from_items(clips, override_num_blocks=max(1, len(clips)))
    ds = map_on_task_pool(ds.flat_map, prepare, cfg, prep_cfg)
    ds = map_on_actor_pool(ds, CoarseStage, cfg, cfg["stages"]["coarse"], device, fn_constructor_kwargs={"cfg": dict(cfg)})
    # one segment per block (streaming, no barrier): each segment is its own fine task, so the
    # segments of one clip spread over the fine actors, and a dead actor re-runs only its segment
    ds = ds.repartition(target_num_rows_per_block=1)
    # a fine actor builds its segment's canvases from a range decode of the span (.canvases)
    return map_on_actor_pool(ds, FineStage, cfg, cfg["stages"]["fine"], device, fn_constructor_kwargs={"cfg": dict(cfg)})


def run_job(cfg: Mapping[str, Any], manifest_uri: str, output: str, *, mode: str = "resume") -> JobResult:
    """Run the whole batch job and write ``<output>/results/results-<time>.parquet`` atomically.

    Args:
        mode: ``"resume"`` (default: rows an earlier run finished are ``skipped``), ``"overwrite"``
            (recompute everything) or ``"retry-errors"`` (run only rows whose last result is
            ``error``); see :mod:`m3ddm_ray.distributed.resume`.

    When no row is left to compute, Ray is not started at all; the result table (all ``skipped``)
    is still written.

    Raises:
        InputError: an invalid manifest or config (nothing has run yet).
    """
    import pyarrow.parquet as pq

    from ..errors import InputError
    from ..storage import atomic_output

    if mode not in resume.MODES:
        raise InputError(f"mode {mode!r}: use one of {', '.join(resume.MODES)}")
    t0 = time.perf_counter()
    cfg, plan = resolve_runtime(resolve_paths(cfg))  # fails fast: every pool must fit the cluster
    clip_order.head_size(cfg)  # a bad stages.prepare.cheapest_first fails here, before any work
    apply_retry_policy(cfg)
    so = cfg.get("storage_options") or None
    output = absolute_uri(output)
    rows = build_rows(cfg, manifest_uri, output)
    rows, state = resume.pending_rows(rows, output, so, mode)
    pending = [r for r in rows if r["status"] == "pending"]
    done = [result_row(r, cfg) for r in rows if r["status"] != "pending"]
    notes = [_resume_note(mode, output, state, len(rows), len(rows) - len(pending))]
    notes += [f"  ignored unreadable result table {redact(p, cfg)}" for p in state.problems]
    notes += list(plan.notes)

    results: list[dict] = []
    if pending:
        results, failure = _run_dataset(cfg, pending)
        if failure is not None:
            got = {row_identity(r) for r in results}
            lost = [r for r in pending if row_identity(r) not in got]
            first_line = (str(failure).strip().splitlines() or [""])[0][:300]
            msg = redact(f"{type(failure).__name__}: {first_line}", cfg)
            notes.append(f"Ray execution failed ({msg}); {len(lost)} unfinished rows are 'error' -- re-run to resume")
            for r in lost:
                results.append(result_row(dict(r, status="error", output_uri=None, error=(
                    f"job: {r['video_uri']}: the Ray execution failed before this row finished ({msg}); "
                    "re-run the job to resume")), cfg))
    busy: dict[str, float] = {}
    for r in results:  # per fine actor: did every actor get work (segments of long clips spread)?
        for actor, secs in (r.get("fine_busy") or {}).items():
            busy[actor] = busy.get(actor, 0.0) + float(secs)
    if busy:
        notes.append("fine actors busy: " + ", ".join(f"{a} {s:.1f} s" for a, s in sorted(busy.items())))
    table = pa.Table.from_pylist([conform_row(r) for r in done + results], schema=RESULT_SCHEMA)
    table = table.sort_by([("clip_id", "ascending"), ("ratio", "ascending")])
    results_uri = f"{output.rstrip('/')}/{resume.RESULTS_DIR}/{resume.results_file_name()}"
    with atomic_output(results_uri, so, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return JobResult(table, results_uri, time.perf_counter() - t0, notes)


def _run_dataset(cfg: Mapping[str, Any], pending: list[dict]) -> tuple[list[dict], BaseException | None]:
    """Run the Ray pipeline over ``pending``; returns the result rows it produced and the exception
    that stopped it (None when it finished).

    A watchdog (:class:`~.collect.StallWatchdog`, ``ray.stall_timeout_s``) ends the run with
    :class:`JobStalled` when no row finishes for that long while rows are still pending; the rows
    that finished are kept, the others become ``error`` rows in :func:`run_job`. When the output is
    a log, not a terminal, one progress line every ``ray.progress_interval_s`` and one at the end
    (:class:`~.collect.ProgressLog`).
    """
    fin_cfg = cfg["stages"]["finalize"]

    def finalize(row: dict) -> dict:
        return FinalizeStage(cfg)(dict(row))

    import ray

    from .segments import PieceCollector

    ds = diffusion_dataset(cfg, pending)
    fin_cpus = as_float(fin_cfg.get("num_cpus"), 1.0)
    ds = map_on_task_pool(ds.map, finalize, cfg, fin_cfg)
    join = ray.remote(_assemble).options(num_cpus=fin_cpus, **stage_fault_args(cfg, actors=False))
    collector = PieceCollector(lambda group: join.remote(group, dict(cfg)))
    pools = {"coarse": CoarseStage.__name__, "fine": FineStage.__name__}  # watched until they start
    progress = ProgressLog.for_job(cfg, len(pending))
    results, failure = collect_rows(ds, cfg, len(pending), on_row=collector.add, pools=pools, progress=progress)
    refs = collector.take_futures()  # the joins of segmented clips still running
    timeout = stall_timeout(cfg)
    while refs:  # bounded like the rows: no join result for `stall_timeout_s` -> the rest are errors
        ready, refs = ray.wait(refs, num_returns=1, timeout=timeout)
        if not ready:
            failure = failure or JobStalled(f"{len(refs)} joins of video pieces gave no result for "
                                            f"{timeout:g} s (ray.stall_timeout_s)")
            for ref in refs:
                ray.cancel(ref, force=True)
            break
        try:
            results.append(ray.get(ready[0]))
            progress.finished(results[-1:])
            progress.tick()
        except Exception as exc:  # noqa: BLE001 - that output's row becomes an error row in run_job
            failure = failure or exc
    progress.finish()
    return results, failure


def _assemble(pieces: list[dict], cfg: Mapping[str, Any]) -> dict:
    """Ray task: join one output's pieces (:func:`.join.assemble`)."""
    from .join import assemble

    apply_retry_policy(cfg)
    return assemble(pieces, cfg)


def _set_execution_context(cfg: Mapping[str, Any]) -> None:
    """Ray Data settings of the job's execution:

    * the actor pools start in the background (``wait_for_min_actors_s = -1``): with a positive
      value Ray Data starts the operators one after the other, each waiting until its actors have
      loaded the model, and no prepare task runs meanwhile -- 4.5 s of a 12 s job here
      (docs/performance.md §3). A pool whose actors do not start within
      ``ray.actor_start_timeout_s`` still fails the job: the driver's watchdog checks the actor
      table (:func:`~.collect.pools_not_started`);
    * no per-operator resource reservation: :func:`~.resources.plan_pools` already sized every
      stage to fit the cluster together, and Ray Data's even split of half the CPUs over the
      operators would hold back the finalize tasks (1 CPU) while a slow prepare task runs --
      finished clips would then wait for the slow one;
    * Ray Data's progress bars in a terminal, one line per ``ray.progress_interval_s`` in a log
      (:func:`~.collect.set_progress_output`).
    """
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.wait_for_min_actors_s = -1
    ctx.op_resource_reservation_enabled = False
    set_progress_output()


def _resume_note(mode: str, output: str, state: "resume.OutputState", total: int, skipped: int) -> str:
    if mode == "overwrite":
        return f"overwrite: {total} rows recomputed (no resume)"
    return (f"{mode}: {skipped} of {total} rows skipped (listed {output} once: {len(state.files)} files, "
            f"{len(state.results_files)} earlier result tables, {state.seconds:.2f} s)")


# --------------------------------------------------------------------------- command line
def add_model_arguments(p) -> None:
    """Model, sampler and cluster flags shared by ``m3ddm-ray outpaint`` and ``m3ddm-ray eval``."""
    p.add_argument("--model", default=None, help="M3DDM UNet: folder, fsspec URL, hub id or ID@REVISION "
                                                  "(hub id pinned to a branch, tag or commit)")
    p.add_argument("--vae", default=None, help="SD 1.5 VAE: folder, fsspec URL, hub id or ID@REVISION")
    p.add_argument("--steps", type=int, default=None, help="PNDM steps (50 official)")
    p.add_argument("--canvas-size", type=int, default=None, help="square canvas side in pixels (256 official)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--dtype", default=None, choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--device", default=None, help="auto, cpu, cuda")
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or an embedded local Ray)")


def add_outpaint_arguments(p) -> None:
    """Arguments of ``m3ddm-ray outpaint`` / ``python -m pipelines.outpaint``."""
    p.add_argument("--manifest", required=True, help="Parquet / JSONL / CSV manifest (local path or fsspec URL)")
    p.add_argument("--output", required=True, help="output prefix: local folder or fsspec URL (s3://bucket/out)")
    p.add_argument("--config", default=None, help="YAML job config (see configs/); defaults: configs/default.yaml values")
    p.add_argument("--ratio", action="append", default=None, help="target ratio(s), e.g. 9:16 or 9:16,1:1 (repeatable)")
    add_model_arguments(p)
    p.add_argument("--output-size", default=None, choices=["canvas", "source"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any config key, e.g. --set stages.coarse.num_actors=2")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--overwrite", action="store_true",
                   help="recompute every row, even those an earlier run finished (default: resume, skip them)")
    g.add_argument("--retry-errors", action="store_true",
                   help="run only the rows whose last result is 'error'; skip everything else")


def run_from_args(args) -> int:
    """Run the batch job from parsed arguments; prints the summary. Returns 0, or 1 if any row failed."""
    from ..geometry import parse_ratios

    ratios = [str(r) for r in parse_ratios(",".join(args.ratio))] if args.ratio else None
    cfg = load_config(
        args.config, args.overrides, model=args.model, vae=args.vae, dtype=args.dtype, device=args.device,
        ratios=ratios, canvas_size=args.canvas_size, output_size=args.output_size,
        sampler__steps=args.steps, sampler__seed=args.seed, ray__address=args.address,
    )
    mode = "overwrite" if getattr(args, "overwrite", False) else (
        "retry-errors" if getattr(args, "retry_errors", False) else "resume")
    result = run_job(cfg, args.manifest, args.output, mode=mode)
    print(result.summary())
    return 1 if result.counts().get("error") else 0
