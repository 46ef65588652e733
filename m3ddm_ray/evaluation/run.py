"""The evaluation job: dataset -> task and protocol -> method (M3DDM on Ray actor pools, or a baseline) -> scores.

``m3ddm-ray eval --dataset davis2017 --root PATH --output PREFIX [--task outpaint|inpaint|extend]``
runs on the batch job's Ray Data machinery (:mod:`m3ddm_ray.distributed.job`): one item per clip ->
:func:`.rows.prepare_group` (CPU) -> the job's :class:`~m3ddm_ray.distributed.stages.CoarseStage` /
:class:`~m3ddm_ray.distributed.stages.FineStage` pools for the ``m3ddm`` rows -> the scoring pool
(:class:`.scoring.ScoreStage`); the driver computes FVD per (method, case) and writes
``per_clip.parquet``, ``summary.md|.json``, ``report/index.html`` and ``manifest.parquet``. What
differs between the tasks is in :mod:`.cases`; the protocols, outputs and configuration are described
in docs/evaluation.md and docs/tasks.md. Error rows and retry limits are the batch job's
(:func:`m3ddm_ray.distributed.stages.fail_row`, :func:`m3ddm_ray.distributed.job.map_on_actor_pool`).
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import InputError
from . import datasets, report
from .cases import eval_task
from .config import TASK_METHODS, TASKS, check_task_settings, load_eval_config
from .protocols import PROTOCOLS
from .rows import build_rows, eval_schema, prepare_group
from .scoring import RANDOM_INIT, ScoreStage, fvd_by_set, make_fvd, make_lpips

__all__ = ["EvalResult", "eval_dataset", "run_rows", "settle_metrics", "write_outputs", "run_eval",
           "add_eval_arguments", "add_eval", "config_from_args", "cmd_eval"]


@dataclass
class EvalResult:
    """What :func:`run_eval` returns."""

    table: Any  # pyarrow.Table
    summary: dict
    uris: dict[str, str]
    seconds: float
    markdown: str = ""

    def counts(self) -> dict[str, int]:
        """Rows per status."""
        from ..distributed.job import status_counts

        return status_counts(self.table)

    def summary_text(self) -> str:
        rows = self.table.to_pylist()
        c = self.counts()
        lines = [f"{len(rows)} rows (clip x mask ratio x method): ok {c.get('ok', 0)}, error {c.get('error', 0)} "
                 f"in {self.seconds:.1f} s"]
        lines += [f"  error {r['clip_id']} {r['ratio_label']} {r['method']}: {r['error']}"
                  for r in rows if r["status"] == "error"]
        lines.append(self.markdown)
        lines += [f"{k}: {v}" for k, v in self.uris.items()]
        return "\n".join(ln for ln in lines if ln)


def eval_dataset(cfg: Mapping[str, Any], ecfg: Mapping[str, Any], groups: Sequence[list[dict]],
                 methods: Sequence[str], output: str):
    """The Ray Dataset of the evaluation: one item per clip -> prepare (CPU ``flat_map``) -> the outpaint
    job's coarse and fine actor pools (``m3ddm`` only) -> the scoring pool.

    Every pool and task stage is built like the outpaint job's (:func:`~m3ddm_ray.distributed.job.
    map_on_actor_pool`, :func:`~m3ddm_ray.distributed.job.map_on_task_pool`), with its retry limits
    (``retries.*``): a clip that kills its actor every time ends as error rows instead of being
    retried forever. The task (:mod:`.cases`) is read from ``ecfg`` by the stages themselves.
    """
    import ray.data

    from ..distributed.job import map_on_actor_pool, map_on_task_pool
    from ..distributed.stages import CoarseStage, FineStage

    device = str(cfg["device"])
    prep_cfg = cfg["stages"]["prepare"]
    items = [{"rows": pickle.dumps(list(g), protocol=pickle.HIGHEST_PROTOCOL)} for g in groups]

    def prepare(item: dict) -> list[dict]:
        return prepare_group(pickle.loads(item["rows"]), cfg, ecfg)

    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = map_on_task_pool(ds.flat_map, prepare, cfg, prep_cfg)
    if "m3ddm" in methods:
        for stage_cls, name in ((CoarseStage, "coarse"), (FineStage, "fine")):
            ds = map_on_actor_pool(ds, stage_cls, cfg, cfg["stages"][name], device,
                                   fn_constructor_kwargs={"cfg": dict(cfg), "schema": "eval"})
    score_device = str(ecfg["metrics"].get("device") or "cpu")
    return map_on_actor_pool(ds, ScoreStage, cfg, dict(ecfg["score"]), "cpu" if score_device == "cpu" else device,
                             fn_constructor_kwargs={"cfg": dict(cfg), "ecfg": dict(ecfg), "output": output})


def _lost_rows(groups: Sequence[list[dict]], results: Sequence[Mapping[str, Any]], failure: BaseException,
               cfg: Mapping[str, Any]) -> list[dict]:
    """Error rows for the rows Ray did not return before it gave up (message redacted, as the job's)."""
    from ..distributed.stages import redact

    got = {(r["clip_id"], r["ratio_label"], r["method"]) for r in results}
    first_line = (str(failure).strip().splitlines() or [""])[0][:300]
    msg = redact(f"{type(failure).__name__}: {first_line}", cfg)
    return [dict(r, status="error", clip=b"", state=b"",
                 error=f"eval: {r['uri']}: the Ray execution failed before this row finished ({msg})")
            for g in groups for r in g if (r["clip_id"], r["ratio_label"], r["method"]) not in got]


def settle_metrics(ecfg: Mapping[str, Any]) -> dict:
    """``ecfg`` with ``metrics.lpips`` settled to True / False: the metric networks are loaded once
    here (CPU) so bad weights fail before any work, and ``lpips: auto`` is on for every worker only
    when this machine found the weight files.

    Raises:
        ModelLoadError: a configured weight file that is missing or does not load.
    """
    metrics = dict(ecfg["metrics"])
    for key in ("lpips_weights", "lpips_backbone", "fvd_weights"):
        if metrics.get(key) and metrics[key] != RANDOM_INIT and not Path(str(metrics[key])).is_file():
            from ..errors import ModelLoadError

            raise ModelLoadError(f"{key.replace('_', '-')} {metrics[key]}: file not found")
    metrics["lpips"] = make_lpips({**metrics, "device": "cpu"}) is not None
    make_fvd({**metrics, "device": "cpu"})
    return {**ecfg, "metrics": metrics}


def run_rows(cfg: Mapping[str, Any], ecfg: Mapping[str, Any], groups: Sequence[list[dict]], methods: Sequence[str],
             labels: Sequence[str], output: str):
    """Run the evaluation rows on Ray: start / join Ray, place every pool before
    any work (the scoring pool counts; no finalize here), run :func:`eval_dataset`, turn the rows Ray
    did not return into error rows, sort by (clip, case label, method) and compute FVD per set
    when the rows carry I3D features. When the output is a log, not a terminal, one progress line
    every ``ray.progress_interval_s`` and one at the end, as the outpaint job
    (:class:`~m3ddm_ray.distributed.collect.ProgressLog`).

    Returns:
        ``(cfg, ecfg, results, fvd, fvd_notes)``: the resolved configs, the result rows, FVD per
        (method, label) and the notes on each FVD set.

    Raises:
        ResourceError: a pool cannot be placed.
    """
    from ..distributed.job import ProgressLog, collect_rows, init_ray, resolve_runtime, set_progress_output
    init_ray(cfg)
    actors = (("coarse", "fine") if "m3ddm" in methods else ()) + ("score",)
    cfg, _ = resolve_runtime({**cfg, "stages": {**cfg["stages"], "score": dict(ecfg["score"])}},
                             actors=actors, tasks=("prepare",))
    ecfg = {**ecfg, "score": cfg["stages"]["score"]}
    pools = {"coarse": "CoarseStage", "fine": "FineStage"} if "m3ddm" in methods else {}
    pools["score"] = "ScoreStage"  # watched until they start
    set_progress_output()  # before the dataset is built: it keeps the context it was created with
    total = sum(map(len, groups))
    progress = ProgressLog.for_job(cfg, total)
    results, failure = collect_rows(eval_dataset(cfg, ecfg, groups, methods, output), cfg,
                                    total, pools=pools, progress=progress)
    progress.finish()
    if failure is not None:
        results += _lost_rows(groups, results, failure, cfg)
    order = {m: i for i, m in enumerate(methods)}
    lab_order = {lab: i for i, lab in enumerate(labels)}
    results.sort(key=lambda r: (str(r["clip_id"]), lab_order.get(r["ratio_label"], 99), order.get(r["method"], 99)))
    fvd, fvd_notes = ({}, {})
    if any(r.get("fvd_real") for r in results):
        fvd, fvd_notes = fvd_by_set(results, methods, labels)
    return cfg, ecfg, results, fvd, fvd_notes


def write_outputs(output: str, so, table, clips, summary: Mapping[str, Any], md: str, title: str,
                  meta: Mapping[str, Any], report_keys: Sequence[str], t0: float) -> "EvalResult":
    """Publish an evaluation's outputs under ``output``, each atomically: ``per_clip.parquet``
    (``table``), ``manifest.parquet`` (the clips), ``summary.md`` (``md``), ``summary.json``
    (``summary`` + ``meta``) and ``report/index.html`` (``meta``'s ``report_keys`` in its header).
    Returns the :class:`EvalResult` (wall time from ``t0``, ``time.perf_counter`` seconds)."""
    import pyarrow.parquet as pq

    from ..storage import atomic_output, atomic_write_bytes

    uris = {
        "per_clip": f"{output}/per_clip.parquet", "summary_md": f"{output}/summary.md",
        "summary_json": f"{output}/summary.json", "report": f"{output}/report/index.html",
        "manifest": f"{output}/manifest.parquet",
    }
    with atomic_output(uris["per_clip"], so, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    with atomic_output(uris["manifest"], so, suffix=".parquet") as tmp:
        pq.write_table(datasets.clips_to_table(clips), tmp)
    atomic_write_bytes(uris["summary_md"], md.encode("utf-8"), so)
    atomic_write_bytes(uris["summary_json"], report.summary_json(summary, **meta).encode("utf-8"), so)
    page = report.report_html(table.to_pylist(), md, title, {k: meta[k] for k in report_keys})
    atomic_write_bytes(uris["report"], page.encode("utf-8"), so)
    return EvalResult(table, summary, uris, time.perf_counter() - t0, md)


# --------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------


def run_eval(cfg: Mapping[str, Any], ecfg: Mapping[str, Any], output: str) -> EvalResult:
    """Run the evaluation of ``ecfg['dataset']`` under ``ecfg['root']`` and write the outputs under ``output``.

    Raises:
        InputError: bad dataset layout, task, protocol, method or config, or inpaint / extend clips
            that would be several plan segments (nothing has run yet).
        ModelLoadError: configured LPIPS / FVD weights that are missing or do not load.
    """
    import pyarrow as pa

    from ..distributed.job import absolute_uri, conform_row, resolve_paths

    t0 = time.perf_counter()
    if not ecfg.get("dataset") or not ecfg.get("root"):
        raise InputError("give the dataset (--dataset) and its folder (--root)")
    task = eval_task(ecfg, int(cfg["canvas_size"]))
    methods = task.methods
    cfg = resolve_paths(cfg) if "m3ddm" in methods else dict(cfg)
    output = absolute_uri(output).rstrip("/")
    so = cfg.get("storage_options") or None
    labels = [c.label for c in task.cases]
    videos = datasets.read_dataset(str(ecfg["dataset"]), str(ecfg["root"]), str(ecfg.get("split") or "val"), so)
    clip_len = task.clip_len(ecfg)
    clips = datasets.make_clips(videos, int(clip_len) if clip_len else None, str(ecfg.get("clips") or "first"),
                                ecfg.get("max_clips"), so)
    ecfg = settle_metrics(ecfg)
    metrics = ecfg["metrics"]
    groups = build_rows(cfg, ecfg, clips)

    cfg, ecfg, results, fvd, fvd_notes = run_rows(cfg, ecfg, groups, methods, labels, output)
    by_label = {c.label: c for c in task.cases}
    per_index = [k for k, _, _ in task.table.per_index]
    filled = [dict(r, **task.columns(by_label[r["ratio_label"]])) if r["ratio_label"] in by_label else r
              for r in report.decode_lists(results, per_index)]  # every row names its task and case, lost rows too
    schema = eval_schema()
    table = pa.Table.from_pylist([conform_row(r, schema, missing_float=float("nan")) for r in filled], schema=schema)
    summary = report.summarize(table.to_pylist(), fvd, methods, labels, task.table)
    meta = {
        "task": task.task, "dataset": ecfg["dataset"], "root": str(ecfg["root"]), "split": ecfg.get("split"),
        "protocol": task.name, **task.meta(), "clip_len": clip_len, "clips_mode": ecfg.get("clips"),
        "num_clips": len(clips), "methods": methods, "model": str(cfg["model"]), "vae": str(cfg["vae"]),
        "steps": cfg["sampler"]["steps"], "seed": cfg["sampler"].get("seed"), "canvas_size": cfg["canvas_size"],
        "lpips": "computed" if metrics["lpips"] else "not computed (no LPIPS weights found; --lpips-weights)",
        "fvd": ({"kind": metrics.get("fvd_kind"), "weights": metrics.get("fvd_weights"),
                 "sets": fvd_notes} if fvd else "not computed"),
    }
    title = f"{ecfg['dataset']} {ecfg.get('split') or ''} — {task.title}"
    md = report.summary_markdown(summary, title, task.table)
    return write_outputs(output, so, table, clips, summary, md, title, meta,
                         ("task", "dataset", "split", "protocol", "methods", "model", "steps", "canvas_size",
                          "num_clips"), t0)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def add_eval_arguments(p) -> None:
    """Arguments of ``m3ddm-ray eval``."""
    p.add_argument("--dataset", default=None, choices=list(datasets.DATASETS),
                   help="dataset layout of --root")
    p.add_argument("--root", default=None, help="dataset folder: local path or fsspec URL")
    p.add_argument("--output", required=True, help="output prefix: local folder or fsspec URL")
    p.add_argument("--task", default=None, choices=list(TASKS),
                   help="outpaint (default: the protocols below); inpaint: synthetic object masks over known frames "
                        "(eval.mask_motion, eval.mask_area); extend: condition on eval.context frames, predict "
                        "eval.predict (ExtDM); docs/tasks.md")
    p.add_argument("--protocol", default=None, choices=list(PROTOCOLS),
                   help="benchmark: 256x256, mask ratios 0.25/0.66 (M3DDM and follow-ups); "
                        "m3ddm-plus: long side 256 at a ratio, crop and outpaint back (default: config, benchmark)")
    p.add_argument("--method", action="append", default=None, metavar="METHOD",
                   help="; ".join(f"{t}: {' | '.join(ms)}" for t, ms in TASK_METHODS.items())
                   + "; comma-separate or repeat for several (default: m3ddm for outpaint, the model and every "
                     "baseline for inpaint / extend)")
    p.add_argument("--split", default=None, help="dataset split (default: val; YouTube-VOS: valid)")
    p.add_argument("--clip-len", type=int, default=None, help="frames per clip, 0 = whole sequences (default: 16)")
    p.add_argument("--clips", default=None, choices=["first", "all"],
                   help="first: one clip per video (default); all: consecutive clips covering every video")
    p.add_argument("--max-clips", type=int, default=None, help="evaluate only the first N clips")
    p.add_argument("--lpips-weights", default=None, help="LPIPS linear heads (lpips/weights/v0.1/alex.pth)")
    p.add_argument("--lpips-backbone", default=None,
                   help="torchvision AlexNet weights (alexnet-owt-7be5be79.pth; default: the torch hub cache)")
    p.add_argument("--fvd-weights", default=None, help="I3D checkpoint; FVD is computed only when given")
    p.add_argument("--fvd-kind", default=None, choices=["videogpt", "stylegan-v"],
                   help="videogpt: i3d_pretrained_400.pt; stylegan-v: i3d_torchscript.pt (default: videogpt)")
    p.add_argument("--config", default=None,
                   help="YAML job config with an optional eval: section (configs/*-eval.yaml)")
    from ..distributed.job import add_model_arguments

    add_model_arguments(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any config key, e.g. --set eval.clip_len=32 --set stages.coarse.num_actors=2")


def add_eval(subparsers) -> None:
    """Register ``m3ddm-ray eval``."""
    p = subparsers.add_parser(
        "eval",
        help="evaluate outpainting on DAVIS / YouTube-VOS / a folder with the published protocols",
        description="Evaluation job on Ray: dataset -> protocol (known strip of the ground truth) -> method "
                    "(M3DDM or a baseline) -> PSNR / SSIM / LPIPS / BMSE per clip, FVD per set -> per-clip "
                    "Parquet, summary table (Markdown + JSON) and an HTML report. Exit code 0: all rows ok; "
                    "1: some rows are 'error'; 2: invalid input, nothing ran.",
    )
    add_eval_arguments(p)
    p.set_defaults(func=cmd_eval)


def config_from_args(args) -> tuple[dict, dict]:
    """``(job config, eval config)`` of parsed ``eval`` arguments."""
    eval_flags = {
        "dataset": args.dataset, "root": args.root, "protocol": args.protocol, "split": args.split,
        "clip_len": args.clip_len, "clips": args.clips, "max_clips": args.max_clips,
        "task": args.task,
        "methods": [m for item in args.method for m in str(item).split(",") if m.strip()] if args.method else None,
        "metrics__lpips_weights": args.lpips_weights, "metrics__lpips_backbone": args.lpips_backbone,
        "metrics__fvd_weights": args.fvd_weights, "metrics__fvd_kind": args.fvd_kind,
    }
    if args.clip_len is not None and args.clip_len < 0:
        raise InputError(f"--clip-len {args.clip_len}: give a number of frames >= 1, or 0 for whole sequences")
    if args.max_clips is not None and args.max_clips < 1:
        raise InputError(f"--max-clips {args.max_clips}: must be >= 1")
    cfg, ecfg = load_eval_config(
        args.config, args.overrides, eval_flags, model=args.model, vae=args.vae, dtype=args.dtype, device=args.device,
        canvas_size=args.canvas_size, sampler__steps=args.steps, sampler__seed=args.seed, ray__address=args.address,
    )
    check_task_settings(ecfg)  # task, methods and task keys: a clear error before anything loads
    return cfg, ecfg


def cmd_eval(args) -> int:
    """``m3ddm-ray eval``: run the evaluation, print the summary; 0 ok, 1 if some rows failed."""
    cfg, ecfg = config_from_args(args)
    result = run_eval(cfg, ecfg, args.output)  # the model loaders keep third-party warnings quiet themselves
    print(result.summary_text())
    return 1 if result.counts().get("error") else 0
