"""Command line interface: ``m3ddm-ray <command> ...`` (also ``python -m m3ddm_ray``).

Commands are registered in :data:`COMMANDS`: each entry is a function that adds one subparser and
sets ``func`` (the command, ``args -> exit code``) as its default. Add a command by writing its
``add_<name>(subparsers)`` / ``cmd_<name>(args)`` pair and appending the first to :data:`COMMANDS`.

(Just over 500 lines on purpose: the single-process commands and their shared argument groups in
one file, each command a short add/cmd pair; training and evaluation keep their own modules.)

Every error raised on purpose (:class:`~m3ddm_ray.errors.M3DDMError`: bad input, unreadable video,
missing model, ...) is printed as a single ``error: ...`` line on stderr and gives exit code 2.
Defaults shown by ``--help`` come from the modules that own them (the model hub ids from
:mod:`m3ddm_ray.models.loading`, the official sampler settings from :mod:`m3ddm_ray.sampling`);
the rest (PyAV, the pipeline) is imported when a command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import posixpath
import sys
import time
from typing import Callable, Sequence

from .errors import InputError, M3DDMError

#: Exit code of every handled error (the same as argparse's usage errors).
EXIT_ERROR = 2


# --------------------------------------------------------------------------- argument types
def _int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in ``lo..hi`` (``hi=None``: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"{value} must be {bound}")
        return value

    return parse


class _Given(argparse.Action):
    """Store the value and remember that the flag was given (``<dest>_given``), so a preset can
    supply the value of a flag left at its default."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


# --------------------------------------------------------------------------- outpaint-video
def add_outpaint_video(subparsers) -> None:
    p = subparsers.add_parser(
        "outpaint-video",
        help="outpaint one video to one or more aspect ratios in this process (no Ray)",
        description="Outpaint one video to new aspect ratios with M3DDM, in this process. "
                    "INPUT and --out may be local paths or fsspec URLs (s3://, gs://, memory://...).",
    )
    p.add_argument("input", metavar="INPUT", help="source video (path or fsspec URL)")
    p.add_argument("--ratio", action="append", required=True, metavar="W:H",
                   help="target aspect ratio, e.g. 9:16; repeat or comma-separate for several (9:16,1:1)")
    p.add_argument("--out", required=True, metavar="OUT",
                   help="output .mp4 for one ratio; a folder/prefix for several (files <stem>_<W>x<H>.mp4); "
                        "'{ratio}' in OUT is replaced by W x H (e.g. out_{ratio}.mp4)")
    add_model_arguments(p)
    p.add_argument("--output-size", choices=("canvas", "source"), default="canvas",
                   help="canvas: crop of the canvas; source: known region at the source resolution "
                        "(default: %(default)s)")
    add_tiling_arguments(p, "use with --output-size source; ")
    add_encode_arguments(p)
    add_sampler_arguments(p, "--sampler-preset")  # --preset is x264's here
    p.set_defaults(func=cmd_outpaint_video)


def add_model_arguments(p) -> None:
    """The model and sampler flags shared by ``outpaint-video``, ``inpaint`` and ``extend``."""
    from .models.loading import DEFAULT_UNET, DEFAULT_VAE
    from .sampling import OFFICIAL_SEED, SamplerSettings

    official = SamplerSettings()
    p.add_argument("--model", default=DEFAULT_UNET,
                   help=f"M3DDM UNet: folder, fsspec URL, hub id, or hub id pinned to a branch / tag / commit as "
                        f"ID@REVISION (default: {DEFAULT_UNET})")
    p.add_argument("--vae", default=DEFAULT_VAE,
                   help=f"Stable Diffusion 1.5 VAE: folder, fsspec URL, hub id or ID@REVISION (default: {DEFAULT_VAE})")
    p.add_argument("--steps", type=_int_in(2), default=official.num_inference_steps, action=_Given,
                   help="denoising steps per window (default: %(default)s, or the sampler preset's)")
    p.add_argument("--guidance-scale", type=float, default=official.guidance_scale,
                   help="weight of the masked-video condition (default: %(default)s)")
    p.add_argument("--previous-guidance-scale", type=float, default=official.previous_guidance_scale,
                   help="weight of the global-frame context (default: %(default)s)")
    p.add_argument("--canvas-size", type=_int_in(8), default=256,
                   help="side of the square working canvas, multiple of 8 (default: %(default)s)")
    p.add_argument("--seed", type=int, default=OFFICIAL_SEED, help="diffusion seed (default: %(default)s)")
    p.add_argument("--dtype", choices=("auto", "fp32", "fp16", "bf16"), default="auto",
                   help="model precision; auto = fp16 on CUDA, fp32 on CPU (default: %(default)s)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = cuda when available (default: %(default)s)")


def add_tiling_arguments(p, hint: str = "") -> None:
    """The tiled mode's flags (``tiling.*`` of a config), shared by ``outpaint-video``, ``inpaint`` and ``extend``."""
    p.add_argument("--working-size", type=_int_in(8), default=None, metavar="PX",
                   help="generate the new pixels on a PX x PX canvas by overlapping canvas-size tiles fused at "
                        f"every step, over the whole-canvas result as layout (docs/tiling.md; {hint}default: off)")
    p.add_argument("--tile-overlap", type=_int_in(0), default=32, metavar="PX",
                   help="pixels shared by neighbouring tiles, a multiple of the VAE factor (default: %(default)s)")
    p.add_argument("--layout-strength", type=float, default=0.6,
                   help="fraction of the schedule the tiles run on the re-noised layout, in (0, 1] "
                        "(default: %(default)s)")


def add_encode_arguments(p) -> None:
    """x264 and progress flags shared by the single-video commands."""
    p.add_argument("--crf", type=_int_in(0, 51), default=18, help="x264 quality, 0..51 (default: %(default)s)")
    p.add_argument("--preset", default="medium", metavar="PRESET",
                   help="x264 speed preset, ultrafast..veryslow (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_outpaint_video(args: argparse.Namespace) -> int:
    from . import geometry, video
    from .pipeline import finalize_clip, prepare_clip
    from .tiled import TiledOutpaintPipeline

    # everything cheap is checked before the models are loaded or the video is decoded
    ratios = geometry.parse_ratios(args.ratio)
    outputs = output_uris(args.out, args.input, ratios)
    if args.preset not in video.X264_PRESETS:
        raise InputError(f"--preset {args.preset!r} is not an x264 preset; use one of {', '.join(video.X264_PRESETS)}")
    settings = video_settings(args)
    info = video.probe(args.input)
    unchanged = {r for r in ratios if geometry.is_passthrough(info.height, info.width, r)}
    pipe = None
    if len(unchanged) < len(ratios):  # load the models only when some ratio needs diffusion
        _check_device(args.device)
        pipe = TiledOutpaintPipeline.from_pretrained(args.model, args.vae, dtype=args.dtype, device=args.device,
                                                     settings=settings)  # the loaders keep diffusers quiet themselves
    frames, info = video.read_frames(args.input)

    for ratio, uri in zip(ratios, outputs):
        t0 = time.perf_counter()
        if ratio in unchanged:
            out = finalize_clip(prepare_clip(frames, info.fps, ratio, settings), None, settings, frames)
        else:
            out = pipe.run_clip(frames, info.fps, ratio, progress=not args.no_progress)[0]
        video.write_video(uri, out, info.frame_rate, audio_source=args.input, crf=args.crf, preset=args.preset)
        note = f"  unchanged (already {ratio})" if ratio in unchanged else ""
        print(f"{uri}  {len(out)} frames  {out.shape[2]}x{out.shape[1]}  {time.perf_counter() - t0:.1f} s{note}",
              flush=True)
    return 0


# --------------------------------------------------------------------------- inpaint / extend
def add_inpaint(subparsers) -> None:
    p = subparsers.add_parser(
        "inpaint",
        help="remove masked regions from one video (per-frame masks) in this process (no Ray)",
        description="Video inpainting with M3DDM, in this process: every pixel where a mask is non-zero is "
                    "generated anew, every other pixel is the source pixel exactly; the output has the source "
                    "size, frame count, fps and audio. See docs/tasks.md.",
    )
    p.add_argument("input", metavar="INPUT", help="source video or frame folder (path or fsspec URL)")
    p.add_argument("--masks", required=True, metavar="MASKS",
                   help="a folder of per-frame mask images (DAVIS Annotations layout: non-zero label = remove), "
                        "a mask video (bright pixels = remove) or one image for all frames; see docs/tasks.md")
    p.add_argument("--out", required=True, metavar="OUT", help="output .mp4 (path or fsspec URL)")
    p.add_argument("--dilate", type=_int_in(0), default=0, metavar="PX",
                   help="grow the masks by PX pixels before inpainting (default: %(default)s)")
    add_model_arguments(p)
    add_tiling_arguments(p)
    add_encode_arguments(p)
    add_sampler_arguments(p, "--sampler-preset")
    p.set_defaults(func=cmd_inpaint)


def add_extend(subparsers) -> None:
    p = subparsers.add_parser(
        "extend",
        help="add N generated frames after (or before) one video in this process (no Ray)",
        description="Video extension (prediction) with M3DDM, in this process: the known frames condition N fully "
                    "masked new frames; the output has T+N frames at the source size and fps, the known frames "
                    "unchanged and the source audio under them. See docs/tasks.md.",
    )
    p.add_argument("input", metavar="INPUT", help="source video or frame folder (path or fsspec URL)")
    p.add_argument("--frames", type=_int_in(1), required=True, metavar="N", help="number of new frames")
    p.add_argument("--direction", choices=("forward", "backward"), default="forward",
                   help="forward: new frames after the video; backward: before it (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="OUT", help="output .mp4 (path or fsspec URL)")
    add_model_arguments(p)
    add_tiling_arguments(p)
    add_encode_arguments(p)
    add_sampler_arguments(p, "--sampler-preset")
    p.set_defaults(func=cmd_extend)


def _task_pipeline(args: argparse.Namespace):
    """Settings check, then the models (loaded once every cheap check has passed): a
    :class:`~m3ddm_ray.tiled.TiledOutpaintPipeline` (tiled when ``--working-size`` is given)."""
    from .tiled import TiledOutpaintPipeline

    _check_device(args.device)
    return TiledOutpaintPipeline.from_pretrained(args.model, args.vae, dtype=args.dtype, device=args.device,
                                                 settings=video_settings(args))


def _probe_input(uri: str):
    """:class:`VideoInfo` of a task's INPUT: a video, or a frame folder (e.g. DAVIS ``JPEGImages/480p/<seq>``)."""
    from . import video

    return video.image_sequence_info(uri) if video.is_image_sequence(uri) else video.probe(uri)


def _read_input(uri: str):
    """``(frames, info, audio source or None)`` of a task's INPUT (video or frame folder)."""
    from . import video

    if video.is_image_sequence(uri):
        info = video.image_sequence_info(uri)
        return video.read_image_sequence(uri, info.fps)[0], info, None
    frames, info = video.read_frames(uri)
    return frames, info, uri


def _even(frames):
    """Frames cropped to even sides (H.264 yuv420p, :func:`task.even_frames`); returns ``(frames, note)``."""
    from .task import even_frames

    out = even_frames(frames)
    if out.shape[1:3] == frames.shape[1:3]:
        return frames, ""
    return out, f"  (cropped to even {out.shape[2]}x{out.shape[1]} for H.264)"


def _task_progress(args: argparse.Namespace, clip_frames: int, fps: float, strides, settings, desc: str):
    if args.no_progress:
        return None
    from tqdm.auto import tqdm

    from .plan import plan_windows

    n = len(plan_windows(clip_frames, fps, strides or None).windows)
    return tqdm(total=n * settings.sampler.num_inference_steps, unit="step", desc=f"{desc} ({n} windows)")


def _run_task(args: argparse.Namespace, pipe, frames, fps: float, task, desc: str):
    """Prepare, generate (with a progress bar unless ``--no-progress``) and finalize ``task``; the
    tiled run when ``--working-size`` is given (:meth:`m3ddm_ray.tiled.TiledOutpaintPipeline.run_task`)."""
    from . import pipeline

    if pipe.settings.tiling.enabled:
        return pipe.run_task(frames, fps, task, progress=not args.no_progress)
    outpainter = pipe.outpainter
    clip = pipeline.prepare_task(frames, fps, task, outpainter.settings)
    bar = _task_progress(args, clip.num_frames, fps, clip.strides, outpainter.settings, desc)
    gen = pipeline.generate(outpainter, clip, None if bar is None else (lambda i, n: bar.update(1)))
    if bar is not None:
        bar.close()
    a, b = task.source_range(0, clip.num_frames, clip.num_frames)
    return pipeline.finalize_clip(clip, gen, outpainter.settings, frames[a:b])


def cmd_inpaint(args: argparse.Namespace) -> int:
    from . import video
    from .task import Inpaint, MaskArray, inpaint_masks

    if args.preset not in video.X264_PRESETS:
        raise InputError(f"--preset {args.preset!r} is not an x264 preset; use one of {', '.join(video.X264_PRESETS)}")
    video_settings(args)  # bad flags fail first
    info = _probe_input(args.input)
    raw = video.read_masks(args.masks)
    name = f"--masks {args.masks}"
    # count / size / empty / all-ones are checked before the models load (the frame count is exact for MP4)
    if info.num_frames_exact:
        inpaint_masks(raw, info.num_frames, (info.height, info.width), args.dilate, name)
    pipe = _task_pipeline(args)
    frames, info, audio = _read_input(args.input)
    t0 = time.perf_counter()
    fitted = inpaint_masks(raw, len(frames), frames.shape[1:3], args.dilate, name)
    task = Inpaint(MaskArray(raw, args.masks), args.dilate, name)
    out, note = _even(_run_task(args, pipe, frames, info.fps, task, "inpaint"))
    video.write_video(args.out, out, info.frame_rate, audio_source=audio, crf=args.crf, preset=args.preset)
    print(f"{args.out}  {len(out)} frames  {out.shape[2]}x{out.shape[1]}  {int(fitted.sum())} pixels inpainted  "
          f"{time.perf_counter() - t0:.1f} s{note}", flush=True)
    return 0


def cmd_extend(args: argparse.Namespace) -> int:
    from . import video
    from .task import Extend

    if args.preset not in video.X264_PRESETS:
        raise InputError(f"--preset {args.preset!r} is not an x264 preset; use one of {', '.join(video.X264_PRESETS)}")
    video_settings(args)  # bad flags fail first
    task = Extend(args.frames, args.direction)
    _probe_input(args.input)
    pipe = _task_pipeline(args)
    frames, info, audio = _read_input(args.input)
    t0 = time.perf_counter()
    out, note = _even(_run_task(args, pipe, frames, info.fps, task, f"extend {args.direction}"))
    t = len(frames)
    # the source audio stays under the known frames: delayed by N frames backwards, cut at their end
    start, end = task.audio_window(t + args.frames, info.frame_rate)
    video.write_video(args.out, out, info.frame_rate, audio_source=audio, crf=args.crf, preset=args.preset,
                      audio_delay_s=start, audio_end_s=end)
    print(f"{args.out}  {len(out)} frames ({t} known + {args.frames} new, {args.direction})  "
          f"{out.shape[2]}x{out.shape[1]}  {time.perf_counter() - t0:.1f} s{note}", flush=True)
    return 0


def video_settings(args: argparse.Namespace):
    """:class:`OutpaintSettings` of ``outpaint-video``: the sampler preset / scheduler flags first, then
    the explicit flags (``--steps`` only when given, so a preset's step count survives)."""
    from .distributed.config import job_settings, load_config
    from .pipeline import OutpaintSettings
    from .tiles import TilingSettings

    sampler = job_settings(load_config(overrides=sampler_overrides(args))).sampler
    steps = args.steps if getattr(args, "steps_given", False) else sampler.num_inference_steps
    return OutpaintSettings(
        sampler=dataclasses.replace(sampler, num_inference_steps=steps, guidance_scale=args.guidance_scale,
                                    previous_guidance_scale=args.previous_guidance_scale, seed=args.seed),
        canvas_size=args.canvas_size,
        output_size=getattr(args, "output_size", "canvas"),
        tiling=TilingSettings(working_size=getattr(args, "working_size", None),
                              overlap=getattr(args, "tile_overlap", 32),
                              layout_strength=getattr(args, "layout_strength", 0.6)),
    )


def output_uris(out: str, input_uri: str, ratios: Sequence) -> list[str]:
    """Output path/URL of each ratio.

    * ``{ratio}`` in ``out`` is replaced by the ratio's slug (``9x16``), for any number of ratios;
    * one ratio: ``out`` is the file, unless it ends with ``/`` or is an existing local folder;
    * several ratios (or a folder): ``out/<input stem>_<slug>.mp4``.

    Raises:
        InputError: several ratios with an ``out`` that names a single ``.mp4`` file.
    """
    if "{ratio}" in out:
        return [out.replace("{ratio}", r.slug) for r in ratios]
    is_url = "://" in out
    folder = out.endswith("/") or (not is_url and os.path.isdir(out))
    if len(ratios) == 1 and not folder:
        return [out]
    if not folder and (out.lower().endswith(".mp4") or (not is_url and os.path.isfile(out))):
        raise InputError(
            f"--out {out} names one file but {len(ratios)} ratios were given "
            f"({','.join(map(str, ratios))}); give a folder, or put {{ratio}} in the name (e.g. clip_{{ratio}}.mp4)"
        )
    stem = posixpath.splitext(posixpath.basename(input_uri.replace(os.sep, "/").rstrip("/")))[0] or "video"
    join = (lambda name: out.rstrip("/") + "/" + name) if is_url else (lambda name: os.path.join(out, name))
    return [join(f"{stem}_{r.slug}.mp4") for r in ratios]


def _check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available here; use --device cpu or auto")


# --------------------------------------------------------------------------- registry and main
# --------------------------------------------------------------------------- outpaint (Ray batch job)
def add_outpaint(subparsers) -> None:
    from .distributed.job import add_outpaint_arguments

    p = subparsers.add_parser(
        "outpaint",
        help="outpaint every video of a manifest on Ray Data (embedded local Ray or a cluster)",
        description="The batch job: manifest -> prepare -> coarse actor pool -> fine actor pool -> finalize "
                    "-> videos + one Parquet row per (clip, ratio). Exit code 0: all rows ok/unchanged; "
                    "1: some rows are 'error' (all rows are in the table); 2: invalid input, nothing ran.",
    )
    add_outpaint_arguments(p)
    add_sampler_arguments(p)
    p.set_defaults(func=cmd_outpaint)


def add_sampler_arguments(p, preset_flag: str = "--preset") -> None:
    """``--scheduler NAME`` and a sampler-preset flag (``--preset fast``; see ``distributed.config.PRESETS``)."""
    from .distributed.config import PRESETS
    from .schedulers import SCHEDULERS

    p.add_argument("--scheduler", default=None, choices=SCHEDULERS,
                   help="diffusion scheduler (default pndm-official: the official PNDM path)")
    p.add_argument(preset_flag, dest="sampler_preset", default=None, choices=sorted(PRESETS),
                   help="named sampler preset, e.g. fast = the official PNDM path at 20 steps with the exact caches "
                        "(2.5x fewer UNet FLOPs; docs/performance.md)")


def sampler_overrides(args: argparse.Namespace) -> list[str]:
    """``KEY=VALUE`` config overrides of :func:`add_sampler_arguments`' flags."""
    out = [f"preset={args.sampler_preset}"] if getattr(args, "sampler_preset", None) else []
    return out + ([f"sampler.scheduler={args.scheduler}"] if getattr(args, "scheduler", None) else [])


def cmd_outpaint(args: argparse.Namespace) -> int:
    from .distributed.job import run_from_args

    args.overrides = sampler_overrides(args) + list(args.overrides)  # explicit --set wins
    return run_from_args(args)


# --------------------------------------------------------------------------- manifest
def add_manifest(subparsers) -> None:
    p = subparsers.add_parser(
        "manifest",
        help="write a manifest of every video under a folder or fsspec prefix",
        description="List the videos under PREFIX (recursively, sorted, stable clip ids) and write a "
                    "Parquet / JSONL / CSV manifest (by the extension of --out) for `m3ddm-ray outpaint`. "
                    "With --only-new, only the videos the job would still compute: those without an "
                    "ok/unchanged output for the same config under --output (for scheduled runs).",
    )
    p.add_argument("prefix", metavar="PREFIX", help="local folder or fsspec URL (s3://bucket/videos)")
    p.add_argument("--out", required=True, help="manifest to write: .parquet, .jsonl or .csv (path or URL)")
    p.add_argument("--ratio", default=None, help="target_ratios to put in every row, e.g. 9:16,1:1")
    p.add_argument("--only-new", action="store_true",
                   help="keep only videos with some (clip, ratio) not yet done under --output (same config "
                        "hash); writes nothing (exit 0) when there is none")
    p.add_argument("--output", default=None, metavar="OUTPUT_PREFIX",
                   help="output prefix of the job (required with --only-new)")
    p.add_argument("--config", default=None,
                   help="YAML job config of the job (its storage_options, and with --only-new its model, "
                        "settings and ratios, which decide the config hash)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config key, as for `m3ddm-ray outpaint`")
    p.set_defaults(func=cmd_manifest)


def cmd_manifest(args: argparse.Namespace) -> int:
    import dataclasses

    from .distributed.config import load_config
    from .distributed.manifest import manifest_from_prefix, write_manifest
    from .geometry import parse_ratios

    if args.only_new and not args.output:
        raise InputError("--only-new needs --output OUTPUT_PREFIX (the job's output prefix)")
    cfg = load_config(args.config, args.overrides)
    so = cfg.get("storage_options") or None
    rows = manifest_from_prefix(args.prefix, storage_options=so)
    if args.ratio:
        ratios = tuple(str(r) for r in parse_ratios(args.ratio))
        rows = [dataclasses.replace(r, target_ratios=ratios) for r in rows]
    total = len(rows)
    if args.only_new:
        from .distributed.job import absolute_uri, resolve_paths
        from .distributed.manifest import validate_manifest
        from .distributed.resume import pending_rows
        from .distributed.stages import expand_manifest_row

        cfg = resolve_paths(cfg)
        output = absolute_uri(args.output)
        # the rows exactly as the job will see them (job ratios filled in the same way)
        as_job = validate_manifest([r.to_record() for r in rows], source=args.prefix, default_ratios=cfg["ratios"])
        expanded = [expand_manifest_row(dataclasses.asdict(r), cfg, output) for r in as_job]
        planned, _ = pending_rows([x for group in expanded for x in group], output, so)
        todo = {x["clip_id"] for x in planned if x["status"] == "pending"}
        rows = [r for r in rows if r.clip_id in todo]
        if not rows:
            print(f"0 of {total} videos are new under {args.output}; nothing written to {args.out}")
            return 0
        write_manifest(rows, args.out, so)
        print(f"{len(rows)} of {total} videos are new -> {args.out}")
        return 0
    write_manifest(rows, args.out, so)
    print(f"{len(rows)} videos -> {args.out}")
    return 0


from .evaluation.run import add_eval  # noqa: E402  (evaluation on DAVIS / YouTube-VOS)

def add_train(subparsers) -> None:
    """Register ``m3ddm-ray train`` (its module is imported only here, not at start-up)."""
    from .training.cli import add_train as add

    add(subparsers)


def add_refit_vae(subparsers) -> None:
    """Register ``m3ddm-ray refit-vae`` (its module is imported only here, not at start-up)."""
    from .training.cli import add_refit_vae as add

    add(subparsers)


#: Subcommand registration functions, in the order ``--help`` lists them.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_outpaint_video, add_inpaint, add_extend, add_outpaint,
                                                                  add_manifest, add_eval, add_train, add_refit_vae]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="m3ddm-ray",
                                     description="Video outpainting (aspect-ratio change) with M3DDM.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 2 error, 130 interrupted)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors (argparse already printed them)
        return e.code if isinstance(e.code, int) else EXIT_ERROR
    try:
        return int(args.func(args) or 0)
    except M3DDMError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
