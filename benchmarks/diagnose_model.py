"""Why a trained model paints what it paints: the four held-out diagnostics of
:mod:`m3ddm_ray.training.diagnostics` for any UNet + VAE folder and canvas (docs/training.md, *Diagnostics*).

1. ε-MSE per window position (full condition) at ``--timesteps``;
2. x0 error on KNOWN and BORDER latent cells with the full condition, the masked-video condition
   dropped, the global frames dropped and both dropped, at ``--x0-timesteps``, and the ratios
   dropped / full (a model that reads its condition: clearly > 1 on border cells);
3. the VAE ceiling: border PSNR of ``decode(encode(gt))`` against TELEA / replicate / reflect / blur,
   per horizontal mask ratio of the benchmark protocol;
4. known-cell condition fidelity: MSE of the masked canvas's latents against the clean latents on
   known cells, relative to the clean latents' variance (a good VAE: <= 5 %);
5. colour source: when the condition shows one flat colour and the noisy latent another, the share of
   the way from the noisy latent's colour to the condition's that the predicted x0 goes, on known and
   border cells, at ``--colour-timesteps`` (1 = the condition, 0 = the noise; ``--colour-seeds 0`` skips it).

(1, 2) use ``--examples`` training examples (``sample_example``, seed ``--seed``, one source per
held-out video, mask policy ``--mask``: ``m3ddm_plus`` or a horizontal ratio such as ``0.25``);
(3, 4) the first 16 frames of every held-out video resized to the canvas.

Usage::

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diagnose_model.py \\
        --unet tests/data/trained/unet --vae tests/data/trained/vae --canvas 64 --examples 28 --json diag.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from _common import ROOT, machine_info, print_table, write_json  # noqa: E402


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--unet", default=str(ROOT / "tests" / "data" / "trained" / "unet"))
    ap.add_argument("--vae", default=str(ROOT / "tests" / "data" / "trained" / "vae"))
    ap.add_argument("--canvas", type=int, default=64)
    ap.add_argument("--root", default=str(ROOT / "tests" / "data" / "heldout"), help="held-out videos")
    ap.add_argument("--examples", type=int, default=28, help="training examples for diagnostics 1 and 2")
    ap.add_argument("--mask", default="m3ddm_plus", help="mask policy of the examples, or a horizontal ratio")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timesteps", default="100,300,500,700,900", help="diagnostic 1")
    ap.add_argument("--x0-timesteps", default="500,700,900", help="diagnostic 2")
    ap.add_argument("--ratios", default="0.25,0.66", help="diagnostics 3 and 4")
    ap.add_argument("--max-clips", type=int, default=None, help="diagnostics 3 and 4")
    ap.add_argument("--colour-timesteps", default="999,901,801,601", help="diagnostic 5")
    ap.add_argument("--colour-seeds", type=int, default=3, help="diagnostic 5: noise draws per pair (0: skip)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from m3ddm_ray.models.loading import load_unet, load_vae
    from m3ddm_ray.training import diagnostics as dg
    from m3ddm_ray.training.colour_source import colour_source

    t0 = time.perf_counter()
    unet, vae = load_unet(args.unet, "fp32", args.device).eval(), load_vae(args.vae, "fp32", args.device).eval()
    ratios = [float(r) for r in args.ratios.split(",")]
    examples = dg.heldout_examples(dg.heldout_sources(args.root), args.examples, args.canvas,
                                   dg.mask_policy(args.mask), args.seed)
    cond = dg.condition_diagnostics(unet, vae, examples, _ints(args.timesteps), _ints(args.x0_timesteps), args.batch)
    clips = dg.heldout_clips(args.root, args.canvas, 16, args.max_clips)
    ceiling = dg.vae_ceiling(vae, clips, ratios)
    fidelity = dg.condition_fidelity(vae, clips, ratios)
    colour = (colour_source(unet, vae, timesteps=_ints(args.colour_timesteps), seeds=args.colour_seeds,
                               canvas=args.canvas) if args.colour_seeds else [])
    wall = time.perf_counter() - t0

    title = (f"model {args.unet} + {args.vae}, canvas {args.canvas} (latent factor {cond['latent_factor']}), "
             f"{cond['examples']} examples ({args.mask}, seed {args.seed}), {len(clips)} clips of {args.root}")
    print(title)
    pos = cond["eps_per_position"]
    rows = [[f"t={t}"] + pos["per_t"][t] for t in pos["per_t"]]
    if rows:
        rows.append(["mean"] + pos["mean"])
        print_table(["ε-MSE"] + [f"p{k}" for k in range(len(pos["mean"]))], rows,
                    title="1. ε-MSE per window position (full condition)")
    x0 = cond["x0"]
    ts = [str(t) for t in x0["timesteps"]]
    rows = []
    for v in x0["variants"]:
        for r in x0["regions"]:
            rows.append([v, r] + [x0["mse"][v][r][t] for t in ts] + [x0["ratio_to_full"][v][r][t] for t in ts]
                        + [x0["ratio_mean_t"][v][r]])
    print_table(["variant", "region"] + [f"x0-MSE t={t}" for t in ts] + [f"ratio t={t}" for t in ts] + ["ratio mean"],
                rows, title=f"2. x0 error by condition (known cells {cond['cells']['known']}, border cells "
                            f"{cond['cells']['border']}); ratio = variant / full")
    print_table(["variant"] + [f"ε-MSE t={t}" for t in ts], [[v] + [cond["eps_mse"][v][t] for t in ts]
                                                             for v in x0["variants"]])
    labels = [k for k in ceiling if isinstance(ceiling[k], dict)]
    methods = ["vae"] + [m for m in dg.FILLERS]
    print_table(["ratio"] + [f"{m} border PSNR" for m in methods] + ["vae − best filler"],
                [[k] + [ceiling[k][m] for m in methods] + [ceiling[k]["vae_minus_best_filler"]] for k in labels],
                title=f"3. VAE ceiling (dB; VAE whole-frame PSNR {ceiling['vae_whole_frame']:.2f} dB)")
    print_table(["ratio", "known-cell MSE", "clean var", "relative (%)"],
                [[k, fidelity[k]["known_mse"], fidelity[k]["clean_var"], 100 * fidelity[k]["relative"]]
                 for k in labels], title="4. known-cell condition fidelity (target <= 5 %)")
    if colour:
        print_table(["condition", "noisy latent", "t", "known share", "± (seeds)", "border share", "± (seeds)"],
                    [[tuple(r["condition"]), tuple(r["noisy"]), r["t"], r["known"], r["known_std"], r["border"],
                      r["border_std"]] for r in colour],
                    title="5. colour source: share of the condition's colour in the predicted x0 "
                          "(1 = condition, 0 = noise)")
    print(f"\nwall {wall:.1f} s (smoke number on a shared machine)")
    write_json(args.json, {"machine": machine_info(), "args": vars(args), "wall_s": wall,
                           "condition": cond, "vae_ceiling": ceiling, "condition_fidelity": fidelity,
                           "colour_source": colour})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
