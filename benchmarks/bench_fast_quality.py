"""Quality of each fast sampler setting against the ground truth of the held-out clips.

Single process, no Ray: the evaluation job's own pieces run in a loop (:func:`load_eval_config`,
:func:`datasets.read_dataset` / :func:`make_clips`, :func:`build_rows`, :func:`prepare_group`, the
coarse + fine passes of :class:`~m3ddm_ray.pipeline.Outpainter` as the model stages run them, and
:meth:`ScoreStage.score`), so the numbers are those ``m3ddm-ray eval`` writes for the same config.
Protocol (docs/training.md "Evaluation on the held-out clips")::

    m3ddm-ray eval --dataset folder --root tests/data/heldout --config configs/tiny-cpu.yaml \\
        --canvas-size 64 --set eval.benchmark.size=64 --method m3ddm

i.e. the benchmark protocol at the model's 64 canvas: 16-frame clips, horizontal mask ratios 0.25
and 0.66; 7 clips x 2 ratios = 14 rows per setting, each one 16-frame window ([1] plan).

For every (setting, seed): PSNR / SSIM / BMSE against the ground truth (mean over the 14 rows), the
deviation from the default (PNDM 50) output of the **same seed** (PSNR of the composed frames over
the generated pixels, ``ClipScores.psnr_generated`` with the default's frames as reference, mean
over rows), UNet calls per frame on these clips, and wall seconds of the sampling loops. FLOPs per
output frame come from ``bench_flops.py`` (released config, 256 canvas, 300-frame plan), counted
here with the same functions.

The seeds matter: a diffusion output is a sample. The default runs with every ``--seeds`` seed, so
the seed-to-seed spread of its mean PSNR is measured; every other setting runs with the same seeds
and its difference to the default is paired per seed (same seed = same initial noise tensor).

Usage::

    PYTHONPATH=$PWD OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_fast_quality.py \\
        [--seeds 6,7,8] [--only LABEL,...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from _common import ROOT, machine_info, print_table, write_json  # noqa: E402

DEFAULT = "default: PNDM 50"
#: (label, sampler overrides, bench_flops scheduler kind + kwargs)
SETTINGS = [
    (DEFAULT, {}, dict()),
    ("--preset fast", {"preset": "fast"}, dict(fast=True)),
    ("PNDM 10 (configs/tiny-cpu.yaml)", {"sampler.steps": 10}, {}),
    ("PNDM 20", {"sampler.steps": 20}, {}),
    ("DPM-Solver++ 2M 10", {"sampler.scheduler": "dpmsolver++", "sampler.steps": 10}, {}),
    ("DPM-Solver++ 2M 15", {"sampler.scheduler": "dpmsolver++", "sampler.steps": 15}, {}),
    ("DPM-Solver++ 2M 20", {"sampler.scheduler": "dpmsolver++", "sampler.steps": 20}, {}),
    ("DPM-Solver++ 2M 25", {"sampler.scheduler": "dpmsolver++", "sampler.steps": 25}, {}),
    ("DPM-Solver++ 2M 20, leading spacing", {"sampler.scheduler": "dpmsolver++", "sampler.steps": 20,
                                             "sampler.timestep_spacing": "leading"}, {}),
    ("DPM-Solver++ 2M 15 Karras", {"sampler.scheduler": "dpmsolver++", "sampler.steps": 15,
                                           "sampler.karras_sigmas": True}, {}),
    ("DPM-Solver++ 2M 20 Karras", {"sampler.scheduler": "dpmsolver++", "sampler.steps": 20,
                                           "sampler.karras_sigmas": True}, {}),
    ("UniPC 20", {"sampler.scheduler": "unipc", "sampler.steps": 20}, {}),
    ("DDIM 20", {"sampler.scheduler": "ddim", "sampler.steps": 20}, {}),
    ("DDIM 50", {"sampler.scheduler": "ddim", "sampler.steps": 50}, {}),
    ("fast + DeepCache N=2", {"preset": "fast", "sampler.deepcache_interval": 2}, dict(fast=True, deepcache=2)),
    ("fast + DeepCache N=3", {"preset": "fast", "sampler.deepcache_interval": 3}, dict(fast=True, deepcache=3)),
    ("fast + T-GATE k=10", {"preset": "fast", "sampler.tgate_step": 10}, dict(fast=True, tgate=10)),
]


def load_configs(label_overrides: dict, seed: int, config: str, root: str):
    from m3ddm_ray.evaluation.config import load_eval_config

    from m3ddm_ray.distributed.config import PRESETS

    ov = ["canvas_size=64", "eval.benchmark.size=64", "eval.methods=m3ddm", "eval.dataset=folder",
          f"eval.root={root}", "sampler.steps=50", f"sampler.seed={seed}"]
    for k, v in label_overrides.items():
        if k == "preset":  # the preset's keys as overrides: the YAML's sampler.steps would win over a preset
            ov += [f"sampler.{pk}={json.dumps(pv)}" for pk, pv in PRESETS[v]["sampler"].items()]
        else:
            ov.append(f"{k}={v}")
    return load_eval_config(config, ov)


def flops_per_frame(kw: dict, steps: int, cache: dict) -> float:
    """TFLOP per output frame at the released config (bench_flops' counting, 300 frames at 25 fps)."""
    import bench_flops
    from m3ddm_ray.plan import plan_windows

    if "pieces" not in cache:
        cache["pieces"] = bench_flops.pieces(bench_flops.build_unet())
        cache["windows"] = len(plan_windows(300, 25.0).windows)
    kw = {k: v for k, v in kw.items() if k != "fast"}
    per_win, _ = bench_flops.window_flops(cache["pieces"], steps, **kw)
    return (cache["windows"] * per_win + 2 * cache["pieces"]["enc16"]) / 300 / 1e12


def print_tables(results: list, seeds: list, model: str, machines: list) -> None:
    """The one table (means over seeds, paired difference to the default per seed) and the per-seed rows."""
    base = {r["seed"]: r for r in results if r["label"] == DEFAULT}
    labels = list(dict.fromkeys(r["label"] for r in results))
    table = []
    for label in labels:
        rs = [r for r in results if r["label"] == label]
        d = [r["psnr"] - base[r["seed"]]["psnr"] for r in rs]
        ps = [r["psnr"] for r in rs]
        tf = rs[0].get("tflop_per_frame", float("nan"))
        tf0 = base[seeds[0]].get("tflop_per_frame", float("nan"))
        name = label + (f" (= {rs[0]['same_as']})" if rs[0].get("same_as") else "")
        table.append([
            name, rs[0]["steps"], statistics.fmean(ps), (max(ps) - min(ps)) if len(ps) > 1 else float("nan"),
            statistics.fmean(d), min(d), max(d),
            statistics.fmean(r["ssim"] for r in rs), statistics.fmean(r["bmse"] for r in rs),
            statistics.fmean(r["dev"] for r in rs) if label != DEFAULT else float("nan"),
            rs[0]["calls_per_frame"], tf, tf0 / tf, statistics.median(r["wall_s"] for r in rs),
        ])
    for m in machines:
        print(json.dumps(m))
    print_table(["setting", "steps", "PSNR vs GT (mean over seeds)", "PSNR range over seeds",
                 "ΔPSNR vs default, same seed (mean)", "Δ min", "Δ max", "SSIM", "BMSE",
                 "PSNR vs default output (dB)", "UNet calls / frame (these clips)", "TFLOP / frame (released, 300 f)",
                 "× fewer FLOPs than default", "wall s (median over seeds)"], table,
                title=f"14 rows (7 held-out clips x 2 mask ratios) per run, seeds {seeds}, model {model}")
    per_seed = [[r["label"], r["seed"], r["psnr"], r["ssim"], r["bmse"], r["dev"], r["wall_s"]] for r in results]
    print_table(["setting", "seed", "PSNR", "SSIM", "BMSE", "PSNR vs default output", "wall s"], per_seed,
                title="per seed")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "tiny-cpu.yaml"))
    ap.add_argument("--root", default=str(ROOT / "tests" / "data" / "heldout"))
    ap.add_argument("--seeds", default="6,7,8")
    ap.add_argument("--only", default=None, help="comma-separated labels (the default always runs)")
    ap.add_argument("--no-flops", action="store_true", help="skip the FLOP count (meta device, a few s)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--json", default=None)
    ap.add_argument("--merge", nargs="+", default=None,
                    help="only print the table of earlier --json files (e.g. seeds run in separate processes)")
    args = ap.parse_args(argv)
    if args.merge:
        runs = [json.loads(Path(f).read_text()) for f in args.merge]
        results = [r for run in runs for r in run["results"]]
        print_tables(results, sorted({r["seed"] for r in results}), runs[0]["model"],
                     [r["machine"] for r in runs])
        return 0
    import torch

    torch.set_num_threads(args.threads)

    from m3ddm_ray.distributed.config import job_settings
    from m3ddm_ray.evaluation import datasets
    from m3ddm_ray.evaluation.config import build_protocol
    from m3ddm_ray.evaluation.metrics import ClipScores
    from m3ddm_ray.evaluation.cases import eval_task
    from m3ddm_ray.evaluation.rows import build_rows, prepare_group, row_ground_truth
    from m3ddm_ray.evaluation.scoring import ScoreStage
    from m3ddm_ray.models.loading import load_unet, load_vae
    from m3ddm_ray.pipeline import Outpainter, finalize_clip, generated_array

    seeds = [int(s) for s in args.seeds.split(",")]
    settings = SETTINGS
    if args.only:
        want = {s.strip() for s in args.only.split(",")}
        settings = [s for s in SETTINGS if s[0] == DEFAULT or s[0] in want]

    cfg0, ecfg0 = load_configs({}, seeds[0], args.config, args.root)
    root = str(Path(args.root).resolve())
    model, vae = str((ROOT / cfg0["model"]).resolve()), str((ROOT / cfg0["vae"]).resolve())
    unet_m = load_unet(model, "fp32", "cpu")
    vae_m = load_vae(vae, "fp32", "cpu")
    protocol = build_protocol(ecfg0)
    cases = {c.label: c for c in protocol.cases(64)}
    videos = datasets.read_dataset("folder", root, "val", None)
    clips = datasets.make_clips(videos, int(ecfg0["clip_len"]), str(ecfg0["clips"]), ecfg0["max_clips"], None)
    groups = build_rows(cfg0, ecfg0, clips, list(cases.values()))
    prepared = [r for g in groups for r in prepare_group(g, cfg0, ecfg0)]  # sampler settings do not enter
    gts = {r["clip_id"]: row_ground_truth(r, eval_task(ecfg0, 64), None) for r in prepared}
    scores = ClipScores(None)
    out_dir = tempfile.mkdtemp(prefix="bench_fast_quality_")
    print(f"{len(clips)} clips x {len(cases)} mask ratios = {len(prepared)} rows per setting; seeds {seeds}",
          flush=True)

    reference: dict = {}  # (seed, clip, ratio) -> default composed frames
    results = []
    flop_cache: dict = {}
    done: dict = {}  # (sampler settings, seed) -> result: a setting equal to an earlier one is not rerun
    for label, overrides, fkw in settings:
        for seed in seeds:
            cfg, ecfg = load_configs(overrides, seed, args.config, args.root)
            cfg = dict(cfg, model=model, vae=vae)
            s = job_settings(cfg)
            if (s.sampler, seed) in done:
                same = done[(s.sampler, seed)]
                results.append(dict(same, label=label, same_as=same["label"]))
                print(f"{label} seed {seed}: same settings as {same['label']}", flush=True)
                continue
            scorer = ScoreStage(cfg, ecfg, out_dir)
            rows, t_unet, t_wall, windows = [], 0.0, 0.0, 0
            for r in prepared:
                row = dict(r)
                clip = pickle.loads(row["clip"])
                t0 = time.perf_counter()
                op = Outpainter(unet_m, vae_m, s)
                state = op.run_fine(clip, op.run_coarse(clip))
                t_wall += time.perf_counter() - t0
                t_unet += float(state.unet_seconds)
                windows += len(clip.plan.windows)
                row["state"] = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
                case = cases[row["ratio_label"]]
                gt = gts[row["clip_id"]]
                composed, _ = case.compose(finalize_clip(clip, generated_array(clip, state), s), gt)
                scored = scorer.score(row)
                assert scored["status"] == "ok", scored.get("error")
                key = (seed, row["clip_id"], row["ratio_label"])
                if label == DEFAULT:
                    reference[key] = composed
                    dev = float("inf")
                else:
                    dev = scores(composed, reference[key], case.mask())["psnr_generated"]
                rows.append({k: scored[k] for k in ("clip_id", "ratio_label", "psnr", "ssim", "bmse",
                                                    "psnr_generated")} | {"dev": dev})
            frames = sum(pickle.loads(r["clip"]).num_frames for r in prepared)
            res = {
                "label": label, "seed": seed, "steps": s.sampler.num_inference_steps,
                "scheduler": s.sampler.scheduler, "spacing": s.sampler.timestep_spacing,
                "deepcache": s.sampler.deepcache_interval, "tgate": s.sampler.tgate_step,
                "psnr": statistics.fmean(x["psnr"] for x in rows), "ssim": statistics.fmean(x["ssim"] for x in rows),
                "bmse": statistics.fmean(x["bmse"] for x in rows),
                "psnr_generated": statistics.fmean(x["psnr_generated"] for x in rows),
                "dev": statistics.fmean(x["dev"] for x in rows) if label != DEFAULT else float("inf"),
                "calls_per_frame": windows * s.sampler.num_inference_steps / frames,
                "unet_s": t_unet, "wall_s": t_wall, "rows": rows,
            }
            results.append(res)
            done[(s.sampler, seed)] = res
            print(f"{label} seed {seed}: PSNR {res['psnr']:.3f} SSIM {res['ssim']:.4f} BMSE {res['bmse']:.4f} "
                  f"dev {res['dev']:.2f} dB wall {t_wall:.1f} s", flush=True)
        if not args.no_flops:
            fk = dict(fkw)
            steps = results[-1]["steps"]
            for r in results[-len(seeds):]:
                r["tflop_per_frame"] = flops_per_frame(fk, steps, flop_cache)

    print_tables(results, seeds, cfg0["model"], [machine_info()])
    write_json(args.json, {"machine": machine_info(), "seeds": seeds, "model": model, "vae": vae,
                           "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
