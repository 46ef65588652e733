"""Inpainting and prediction on the held-out clips: a small trained model vs the baselines, one process.

The same protocol, cases and scores as ``m3ddm-ray eval --task inpaint|extend`` (the clip ids,
the seeded synthetic masks, the ground truth, the baselines and the scores of
:mod:`m3ddm_ray.evaluation.cases` are the job's), without Ray: for each clip of ``--root`` (default ``tests/data/heldout``, ``folder``
dataset), its first ``--frames`` frames:

* inpainting: a synthetic object mask (``stationary`` and ``moving``, area ``--area``, seed =
  ``cases.clip_mask_seed`` of ``<video name>@<start>``), methods ``m3ddm`` (``pipeline.run_inpaint``'s steps),
  ``telea`` (per frame), ``nearest_known`` (copy from the nearest frame where the pixel is known);
  whole-frame PSNR / SSIM, the PSNR in the hole, and the temporal consistency in the hole (levels;
  lower is better);
* prediction (ExtDM-style): condition on the first ``c`` frames, predict ``p``; methods ``m3ddm``
  (``pipeline.run_extend``'s steps) and ``last_frame``; PSNR / SSIM per predicted frame index.

The model runs once per seed of ``--seeds``; its rows are averaged over seeds and clips, the
baselines (deterministic) over clips. LPIPS is computed when the default LPIPS weight files exist
(``evaluation.scoring.make_lpips`` with ``lpips: auto``), else reported as not computed.

Usage::

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_tasks.py --model tests/data/trained \\
        [--frames 16] [--context 8] [--predict 8] [--steps 10] [--seeds 0,1,2] [--guidance 2]
        [--global-guidance 4] [--clips N] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import DATA, print_table, write_json  # noqa: E402

from m3ddm_ray import pipeline  # noqa: E402
from m3ddm_ray.evaluation import datasets  # noqa: E402
from m3ddm_ray.evaluation.scoring import make_lpips  # noqa: E402
from m3ddm_ray.evaluation.cases import ExtendTask, InpaintTask, mask_key, score_inpaint, score_prediction  # noqa: E402
from m3ddm_ray.pipeline import OutpaintPipeline, OutpaintSettings  # noqa: E402
from m3ddm_ray.sampling import SamplerSettings  # noqa: E402

TRAINED = DATA / "trained"


def _model_run(pipe, case, inp, fps: float) -> np.ndarray:
    """The model's output of one case: inpaint uint8 ``(T, H, W, 3)``, extend the ``p`` new frames."""
    if case.context is None:
        return pipeline.run_inpaint(pipe.outpainter, inp.frames, inp.masks, fps)
    return pipeline.run_extend(pipe.outpainter, inp.context, fps, case.predict)[case.context:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(TRAINED), help="folder with unet/ and vae/ (default: tests/data/trained)")
    p.add_argument("--vae", default=None,
                   help="VAE folder (default: MODEL/vae if it exists, else tests/data/trained/vae: a fine-tune keeps "
                        "the frozen VAE it started from)")
    p.add_argument("--root", default=str(DATA / "heldout"), help="folder of clips (folder dataset)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--context", type=int, default=8)
    p.add_argument("--predict", type=int, default=8)
    p.add_argument("--area", type=float, default=0.1, help="inpainting mask area fraction")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--seeds", default="0", help="comma-separated sampler seeds of the model")
    p.add_argument("--guidance", type=float, default=2.0, help="w, masked-video condition (official 2)")
    p.add_argument("--global-guidance", type=float, default=4.0,
                   help="w_g, global frames (official 4; configs/tiny-cpu.yaml runs the shipped model at 1)")
    p.add_argument("--clips", type=int, default=0, help="only the first N clips (0: all)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    model = Path(args.model)
    vae = Path(args.vae) if args.vae else (model / "vae" if (model / "vae").is_dir() else TRAINED / "vae")
    print(f"model {model / 'unet'}, vae {vae}", flush=True)

    pipes = {s: OutpaintPipeline.from_pretrained(
        str(model / "unet"), str(vae), dtype="fp32", device="cpu",
        settings=OutpaintSettings(sampler=SamplerSettings(num_inference_steps=args.steps, seed=s, guidance_scale=args.guidance,
                                                  previous_guidance_scale=args.global_guidance), canvas_size=64))
        for s in seeds}
    lpips = make_lpips({"lpips": "auto"})
    common = {"methods": None, "frame_size": None}
    inpaint = InpaintTask(dict(common, methods=["telea", "nearest_known"], mask_motion=["stationary", "moving"],
                               mask_area=args.area, mask_seed=0), {}, 64)
    extend = ExtendTask(dict(common, methods=["last_frame"], context=args.context, predict=args.predict), {}, 64)
    clips = datasets.make_clips(datasets.read_dataset("folder", args.root), None, "first", args.clips or None)
    cases = [(inpaint, c) for c in inpaint.cases] + [(extend, c) for c in extend.cases]
    scores: dict[tuple[str, str], list[dict]] = {}
    per_row: list[dict] = []  # one per clip x case x method (x seed for the model), for paired comparisons
    t0 = time.perf_counter()
    for clip in clips:
        gt = datasets.load_clip(clip)[:args.frames]
        for task, case in cases:
            clip_inputs = task.inputs(case, gt, mask_key(clip.uri, clip.start))
            inp = clip_inputs.inp
            score = score_inpaint if task is inpaint else score_prediction
            outs = [("m3ddm", s, _model_run(pipes[s], case, inp, clip.fps)) for s in seeds]
            outs += [(m, None, clip_inputs.baseline(m, {})) for m in task.methods]
            for name, seed, out in outs:
                sc = score(out, inp, lpips)
                scores.setdefault((case.label, name), []).append(sc)
                per_row.append({"clip": clip.clip_id, "case": case.label, "method": name, "seed": seed,
                                **{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in sc.items()}})
        print(f"{clip.clip_id}: done ({time.perf_counter() - t0:.0f} s)", flush=True)

    def mean(rows, key):
        return float(np.mean([r[key] for r in rows]))

    inpaint = [[lab, name, f"{mean(r, 'psnr'):.2f}", f"{mean(r, 'ssim'):.4f}", f"{mean(r, 'psnr_generated'):.2f}",
                f"{np.nanmean([x['temporal'] for x in r]):.2f}", f"{mean(r, 'lpips'):.4f}"]
               for (lab, name), r in scores.items() if lab in ("stationary", "moving")]
    print_table(["mask", "method", "PSNR dB", "SSIM", "hole PSNR dB", "TC (levels)", "LPIPS"], inpaint)
    pred = []
    for (lab, name), r in scores.items():
        if lab in ("stationary", "moving"):
            continue
        ps = np.mean([x["psnr_frames"] for x in r], axis=0)
        ss = np.mean([x["ssim_frames"] for x in r], axis=0)
        pred.append([name, f"{mean(r, 'psnr'):.2f} / {mean(r, 'ssim'):.3f}"] +
                    [f"{a:.2f} / {b:.3f}" for a, b in zip(ps, ss)])
    print_table(["method", "mean PSNR/SSIM"] + [f"t+{k + 1}" for k in range(args.predict)], pred)
    elapsed = time.perf_counter() - t0
    print(f"{len(clips)} clips, seeds {seeds}, {args.steps} steps, {elapsed:.0f} s; LPIPS "
          f"{'computed' if lpips is not None else 'not computed (no weights)'}")
    if args.json:
        write_json(args.json, {"inpaint": inpaint, "prediction": pred, "clips": [c.clip_id for c in clips],
                               "args": vars(args), "vae": str(vae), "seconds": elapsed,
                               "rows": per_row})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
