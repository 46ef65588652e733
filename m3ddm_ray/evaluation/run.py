"""The evaluation job: dataset -> protocol -> method (M3DDM on Ray actor pools, or a baseline) -> scores.

``m3ddm-ray eval --dataset davis2017 --root PATH --output PREFIX`` runs on the same Ray Data machinery
as ``m3ddm-ray outpaint`` (:mod:`m3ddm_ray.distributed.job`): one item per clip, a CPU ``flat_map``
that decodes the clip once and prepares one row per (mask ratio, method), the main job's
:class:`~m3ddm_ray.distributed.stages.CoarseStage` / :class:`~m3ddm_ray.distributed.stages.FineStage`
actor pools for the ``m3ddm`` rows (baseline rows pass through them untouched; without ``m3ddm`` the
pools are not created and no model is loaded), then a scoring actor pool (:class:`ScoreStage`: the
baseline fill, paste-back, the protocol's composition, PSNR / SSIM / LPIPS / BMSE, I3D features when
FVD weights are configured, and one side-by-side PNG per row). The driver gathers the rows, computes
FVD once per (method, mask ratio) and writes::

    <output>/per_clip.parquet     one row per clip x mask ratio x method (eval_schema())
    <output>/summary.md|.json     the published table: per ratio PSNR SSIM LPIPS FVD, then the mean
    <output>/report/index.html    summary + per clip input | output | ground truth strips
    <output>/report/img/*.png
    <output>/manifest.parquet     the evaluation manifest (clips, frame files, frame ranges)

Modules: :mod:`.config` (the ``eval:`` section), :mod:`.rows` (columns, pending rows, CPU
preparation), :mod:`.scoring` (metric networks, :class:`ScoreStage`, FVD per set) and this one (the
Ray wiring, the job, the command line). Error rows and retry limits are the outpaint job's
(:func:`m3ddm_ray.distributed.stages.fail_row`, :func:`m3ddm_ray.distributed.job.map_on_actor_pool`).

Configuration: the job config of ``m3ddm-ray outpaint`` (``configs/*.yaml``; model, VAE, sampler,
stage pools) plus an ``eval:`` section (:data:`EVAL_DEFAULTS`), both overridable with
``--set KEY.PATH=VALUE`` (``--set eval.clip_len=32``). The canvas output is always used
(``output_size: canvas``); the protocol decides the target ratio of every row.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from ..errors import InputError
from .config import EVAL_DEFAULTS, METHODS, TASKS, build_protocol, check_task_settings, load_eval_config
from .engine import EvalResult, _clean, eval_dataset, run_rows, settle_metrics, write_outputs
from .rows import EVAL_COLUMNS, build_rows, eval_schema
from .scoring import ScoreStage

__all__ = [
    "EVAL_DEFAULTS",
    "EVAL_COLUMNS",
    "eval_schema",
    "METHODS",
    "EvalResult",
    "load_eval_config",
    "build_protocol",
    "build_rows",
    "ScoreStage",
    "eval_dataset",
    "run_eval",
    "add_eval_arguments",
    "add_eval",
    "cmd_eval",
]


# --------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------


def run_eval(cfg: Mapping[str, Any], ecfg: Mapping[str, Any], output: str) -> EvalResult:
    """Run the evaluation of ``ecfg['dataset']`` under ``ecfg['root']`` and write the outputs under ``output``.

    Raises:
        InputError: bad dataset layout, protocol, method or config (nothing has run yet).
        ModelLoadError: configured LPIPS / FVD weights that are missing or do not load.
    """
    import pyarrow as pa

    from ..distributed.job import absolute_uri, resolve_paths
    from . import datasets, report

    t0 = time.perf_counter()
    if not ecfg.get("dataset") or not ecfg.get("root"):
        raise InputError("give the dataset (--dataset) and its folder (--root)")
    spec = check_task_settings(ecfg)
    if spec["task"] != "outpaint":
        from .task_job import run_task_eval

        return run_task_eval(cfg, ecfg, spec, output, t0)
    methods = spec["methods"]
    cfg = resolve_paths(cfg) if "m3ddm" in methods else dict(cfg)
    output = absolute_uri(output).rstrip("/")
    so = cfg.get("storage_options") or None
    protocol = build_protocol(ecfg)
    cases = protocol.cases(int(cfg["canvas_size"]))
    labels = [c.label for c in cases]
    videos = datasets.read_dataset(str(ecfg["dataset"]), str(ecfg["root"]), str(ecfg.get("split") or "val"), so)
    clip_len = ecfg.get("clip_len")
    clips = datasets.make_clips(videos, int(clip_len) if clip_len else None, str(ecfg.get("clips") or "first"),
                                ecfg.get("max_clips"), so)
    ecfg = settle_metrics(ecfg)
    metrics = ecfg["metrics"]
    groups = build_rows(cfg, ecfg, clips, cases)

    cfg, ecfg, results, fvd, fvd_notes = run_rows(cfg, ecfg, groups, methods, labels, output)
    schema = eval_schema()
    table = pa.Table.from_pylist([_clean(dict(r, task="outpaint"), schema) for r in results], schema=schema)
    rows = table.to_pylist()
    summary = report.summarize(rows, fvd, methods, labels)
    meta = {
        "dataset": ecfg["dataset"], "root": str(ecfg["root"]), "split": ecfg.get("split"),
        "protocol": protocol.name, "protocol_options": {k: v for k, v in vars(protocol).items() if k != "name"},
        "cases": [c.describe() for c in cases], "clip_len": clip_len, "clips_mode": ecfg.get("clips"),
        "num_clips": len(clips), "methods": methods, "model": str(cfg["model"]), "vae": str(cfg["vae"]),
        "steps": cfg["sampler"]["steps"], "canvas_size": cfg["canvas_size"],
        "lpips": "computed" if metrics["lpips"] else "not computed (no LPIPS weights found; --lpips-weights)",
        "fvd": ({"kind": metrics.get("fvd_kind"), "weights": metrics.get("fvd_weights"),
                 "sets": fvd_notes} if fvd else "not computed"),
    }
    title = f"{ecfg['dataset']} {ecfg.get('split') or ''} — {protocol.name} protocol"
    md = report.summary_markdown(summary, title)
    return write_outputs(output, so, table, clips, summary, md, title, meta,
                         ("dataset", "split", "protocol", "methods", "model", "steps", "canvas_size", "num_clips"), t0)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def add_eval_arguments(p) -> None:
    """Arguments of ``m3ddm-ray eval``."""
    p.add_argument("--dataset", default=None, choices=["davis2017", "davis2016", "youtube-vos", "folder"],
                   help="dataset layout of --root")
    p.add_argument("--root", default=None, help="dataset folder: local path or fsspec URL")
    p.add_argument("--output", required=True, help="output prefix: local folder or fsspec URL")
    p.add_argument("--task", default=None, choices=list(TASKS),
                   help="outpaint (default: the protocols below); inpaint: synthetic object masks over known frames "
                        "(eval.mask_motion, eval.mask_area); extend: condition on eval.context frames, predict "
                        "eval.predict (ExtDM); docs/tasks.md")
    p.add_argument("--protocol", default=None, choices=["benchmark", "m3ddm-plus"],
                   help="benchmark: 256x256, mask ratios 0.25/0.66 (M3DDM and follow-ups); "
                        "m3ddm-plus: long side 256 at a ratio, crop and outpaint back (default: config, benchmark)")
    p.add_argument("--method", action="append", default=None, metavar="METHOD",
                   help=f"outpaint: {' | '.join(METHODS)}; inpaint: m3ddm | telea | nearest_known; extend: m3ddm | "
                        "last_frame; comma-separate or repeat for several (default: m3ddm for outpaint, the model "
                        "and every baseline for inpaint / extend)")
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
