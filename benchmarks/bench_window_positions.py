"""Where in a 16-frame window the trained model fails: per-position ε-MSE of the UNet on held-out clips
(docs/training.md, point 4 of "Evaluation on the held-out clips").

Inputs are those the sampler builds for the evaluation protocol (the same pieces as
``bench_fast_quality.py``: benchmark protocol at the 64 canvas, 7 held-out clips x mask ratios 0.25 /
0.66, one 16-frame window each, no guide frames): the masked-video condition, latent mask and
global-frame tokens of :class:`~m3ddm_ray.latents.ClipLatents` (posterior sample, as a job runs).
The target is known here: ``x_t = sqrt(ab_t) z0 + sqrt(1 - ab_t) ε`` with ``z0`` the posterior mean
latents of the ground-truth canvases (= the 64 x 64 ground-truth frames: the placement is exact)
and a fixed ``ε`` per row. For each variant the script reports ``mean((ε̂ - ε)^2)`` per window
position (over rows, channels, latent pixels and the timesteps ``--timesteps``), for the
conditional branch with global context (``cc``) and for the guided ε of inference (w 2, w_g 4):

* ``inference``: what the sampler gives the UNet;
* ``cond = posterior mean``: masked-video latents from the posterior mean (as training encodes them);
* ``globals = masked canvases``: global-frame latents from the masked canvases of the clip (training
  builds them from the same crop as the clip and masks the in-clip ones; here all 16 global frames
  are in the clip) instead of the raw frames squashed to the canvas;
* ``guides at 0, 1``: positions 0 and 1 get the ground-truth latent with mask 0 (guide frames);
* ``fps 1`` / ``fps 5``: other values of the fps condition (the clips' own: 25);
* ``frames reversed``: the window in reverse order (position 0 gets the clip's last frame); errors
  are still listed by window position;
* ``temporal positions + 1``: the frame-position embedding of the temporal attention computed for
  positions 1..16 instead of 0..15;
* ``extra leading frame``: the UNet gets 17 frames, a copy of position 0 in front (noisy latent,
  condition and mask), and the errors of the last 16 are listed.

Then the same per-position ε-MSE on **training** examples (``sample_example`` on the held-out videos,
M3DDM+ masks, ``objective.build_inputs`` without dropouts, one random timestep each), plain and with
the extra leading frame: the training distribution, not the inference conditioning.

Usage::

    PYTHONPATH=$PWD OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_window_positions.py [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _common import ROOT, machine_info, print_table, write_json  # noqa: E402


@contextlib.contextmanager
def shifted_positions(on: bool):
    """The temporal attention's frame-position sinusoid computed at positions + 1 (while ``on``)."""
    import m3ddm_ray.models.layers as layers

    orig = layers.sinusoidal_embedding
    if on:
        layers.sinusoidal_embedding = lambda pos, dim, **kw: orig(pos + 1, dim, **kw)
    try:
        yield
    finally:
        layers.sinusoidal_embedding = orig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "tiny-cpu.yaml"))
    ap.add_argument("--root", default=str(ROOT / "tests" / "data" / "heldout"))
    ap.add_argument("--timesteps", default="100,300,500,700,900")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-examples", type=int, default=64)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from m3ddm_ray import caching, geometry
    from m3ddm_ray.distributed.config import job_settings
    from m3ddm_ray.evaluation import datasets
    from m3ddm_ray.evaluation.config import build_protocol, load_eval_config
    from m3ddm_ray.evaluation.cases import eval_task
    from m3ddm_ray.evaluation.rows import build_rows, prepare_group, row_ground_truth
    from m3ddm_ray.models.loading import load_unet, load_vae
    from m3ddm_ray.pipeline import ClipState, Outpainter
    from m3ddm_ray.sampling import build_condition, encode_images, WindowInputs
    from m3ddm_ray.latents import images_to_tensor
    from m3ddm_ray.training.objective import make_noise_scheduler

    root = str(Path(args.root).resolve())
    cfg, ecfg = load_eval_config(args.config, ["canvas_size=64", "eval.benchmark.size=64", "eval.methods=m3ddm",
                                               "eval.dataset=folder", f"eval.root={root}"])
    model, vae_path = str((ROOT / cfg["model"]).resolve()), str((ROOT / cfg["vae"]).resolve())
    unet, vae = load_unet(model, "fp32", "cpu"), load_vae(vae_path, "fp32", "cpu")
    protocol = build_protocol(ecfg)
    cases = {c.label: c for c in protocol.cases(64)}
    clips = datasets.make_clips(datasets.read_dataset("folder", root, "val", None), int(ecfg["clip_len"]),
                                str(ecfg["clips"]), ecfg["max_clips"], None)
    rows = [r for g in build_rows(cfg, ecfg, clips, list(cases.values())) for r in prepare_group(g, cfg, ecfg)]
    settings = job_settings(cfg)
    op = Outpainter(unet, vae, settings)
    sched = make_noise_scheduler()
    ts = [int(t) for t in args.timesteps.split(",")]
    w, wg = settings.sampler.guidance_scale, settings.sampler.previous_guidance_scale

    items = []  # per row: everything the variants need
    for i, r in enumerate(rows):
        clip = pickle.loads(r["clip"])
        gt = row_ground_truth(r, eval_task(ecfg, 64), None)
        assert gt.shape[1:3] == (64, 64) and cases[r["ratio_label"]].exact
        known = clip.mask == 0
        assert np.array_equal(clip.masked[:, known], gt[:, known]), "ground-truth canvas != frame"
        lat = op.latents_for(clip, ClipState())
        window = clip.plan.windows[0]
        z_init, z_cond, z_uncond = lat.window_latents(window)
        h = clip.geom.latent_side(op.latent_factor)
        lmask = torch.from_numpy(geometry.latent_mask(clip.mask, op.latent_factor).astype(np.float32)).view(1, 1, 1, h, h)
        lmask = lmask.expand(1, 1, 16, h, h)
        z0 = encode_images(vae, images_to_tensor(gt), None)  # (16, 4, h, w) posterior mean
        z0 = z0.permute(1, 0, 2, 3)[None]
        zc_mean = encode_images(vae, images_to_tensor(clip.masked), None).permute(1, 0, 2, 3)[None]
        g_raw = lat.global_latents()
        g_masked = encode_images(vae, images_to_tensor(clip.masked), lat._noise("global", list(range(16))))
        eps = torch.randn(z0.shape, generator=torch.Generator().manual_seed(1000 + i))
        items.append(dict(z0=z0, z_cond=z_cond, zc_mean=zc_mean, z_uncond=z_uncond, lmask=lmask, g_raw=g_raw,
                          g_masked=g_masked, eps=eps, fps=window.fps))

    def per_position(variant: str) -> tuple[np.ndarray, np.ndarray]:
        cc_err, g_err = np.zeros(16), np.zeros(16)
        n = 0
        for it in items:
            z0, zc, zu, m, eps = it["z0"], it["z_cond"], it["z_uncond"], it["lmask"], it["eps"]
            g, fps, guides = it["g_raw"], it["fps"], {}
            if variant == "cond = posterior mean":
                zc = it["zc_mean"]
            elif variant == "globals = masked canvases":
                g = it["g_masked"]
            elif variant == "guides at 0, 1":
                guides = {0: z0[0, :, 0], 1: z0[0, :, 1]}
            elif variant.startswith("fps "):
                fps = float(variant.split()[1])
            elif variant == "frames reversed":
                flip = lambda x: x.flip(2)  # noqa: E731
                z0, zc, eps = flip(z0), flip(zc), flip(eps)
            lead = 1 if variant == "extra leading frame" else 0
            tokens = caching.context_tokens(unet, g)
            inp = WindowInputs(z0, zc, zu, m, guides, tokens, fps)
            cu, cc = build_condition(inp)
            cond = torch.cat([cu, cc, cc])
            ctx = torch.cat([tokens[0:1], tokens[0:1], tokens[1:2]])
            for t in ts:
                tt = torch.tensor([t])
                xt = sched.add_noise(z0, eps, tt)
                x_in = torch.cat([xt.expand(3, -1, -1, -1, -1), cond], 1)
                x_in = torch.cat([x_in[:, :, :1]] * lead + [x_in], 2)
                with shifted_positions(variant == "temporal positions + 1"), torch.no_grad():
                    e = unet(x_in, t, fps=fps, global_tokens=ctx).sample.float()[:, :, lead:]
                guided = e[0] + w * (e[1] - e[0]) + wg * (e[2] - e[1])
                err = lambda p: ((p - eps[0]) ** 2).mean(dim=(0, 2, 3)).numpy()  # noqa: E731  (F,)
                e_cc, e_g = err(e[2]), err(guided)
                cc_err += e_cc
                g_err += e_g
                n += 1
        return cc_err / n, g_err / n

    variants = ["inference", "cond = posterior mean", "globals = masked canvases", "guides at 0, 1", "fps 1", "fps 5",
                "frames reversed", "temporal positions + 1", "extra leading frame"]
    out, table = {}, []
    for v in variants:
        cc, g = per_position(v)
        out[v] = {"cc": cc.tolist(), "guided": g.tolist()}
        print(v, "cc", np.round(cc, 3).tolist(), "guided", np.round(g, 3).tolist(), flush=True)
        table.append([v, "cc"] + [float(x) for x in cc] + [float(cc[3:].mean())])
        table.append([v, "guided"] + [float(x) for x in g] + [float(g[3:].mean())])
    # training examples: the training distribution (no inference conditioning involved)
    from m3ddm_ray.masks import make_policy
    from m3ddm_ray.training.objective import ObjectiveSettings, black_canvas_latent, build_inputs, numpy_batch
    from m3ddm_ray.training.sources import ClipSettings, Source, sample_example

    held = [Source("video", str(p)) for p in sorted(Path(root).glob("*.mp4"))]
    cs, pol, black = ClipSettings(), make_policy("m3ddm_plus"), black_canvas_latent(vae, 64)
    exs = [build_inputs(vae, numpy_batch([sample_example(held[i % len(held)], 777 + i, cs, pol)]),
                        ObjectiveSettings(0.0, 0.0), sched, black, "cpu") for i in range(args.train_examples)]
    train_out = {}
    for lead in (0, 1):
        err = np.zeros(16)
        for inp in exs:
            s_in = torch.cat([inp["sample"][:, :, :1]] * lead + [inp["sample"]], 2)
            with torch.no_grad():
                p = unet(s_in, inp["timesteps"], encoder_hidden_states=inp["global_latents"], fps=inp["fps"]).sample
            err += ((p[:, :, lead:] - inp["noise"]) ** 2).mean(dim=(0, 1, 3, 4)).numpy()
        err /= len(exs)
        name = "training examples" + (", extra leading frame" if lead else "")
        train_out[name] = err.tolist()
        print(name, np.round(err, 3).tolist(), flush=True)
        table.append([name, "cond+global"] + [float(x) for x in err] + [float(err[3:].mean())])
    print(json.dumps(machine_info()))
    print_table(["variant", "branch"] + [f"p{k}" for k in range(16)] + ["mean p3-15"], table,
                title=f"ε-MSE per window position, {len(items)} rows x t in {ts}, model {cfg['model']}")
    write_json(args.json, {"machine": machine_info(), "timesteps": ts, "rows": len(items), "variants": out,
                           "training_examples": {"n": len(exs), "per_position": train_out}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
