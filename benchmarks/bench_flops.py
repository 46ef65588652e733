"""UNet FLOPs per output frame of a whole clip: official computation vs the default vs every fast
setting (issue 10 item 3). Machine-independent; nothing is timed.

Counted with :class:`torch.utils.flop_counter.FlopCounterMode` on the ``meta`` device (no weights,
no memory) for the released architecture (``tests/data/golden/full_config.json``) at the 256 canvas
(latents 32 x 32, 16-frame windows, 16 global frames = 3136 context tokens), then put together over
the window plan of a 300-frame clip (``plan_windows(300, 25)``: 26 windows, padded windows
included, as the official code runs them). Counted pieces (one FlopCounterMode each):

* ``call(B)``: one UNet forward at batch ``B`` with precomputed global tokens;
* ``kv(B)``: the ``to_k``/``to_v`` projections of every cross-attention layer at batch ``B``
  (saved on steps 2..n of a window by the exact K/V cache);
* ``per_frame_kv``: the extra ``to_k``/``to_v`` work of the official attention, which repeats the
  context for each of the 16 frames (``(B*F, S, C)`` instead of ``(B, S, C)``);
* ``enc(N)``: the global-frame encoder on ``N`` latents (official: 4 x 16 per UNet call; before
  this work: 2 x 16 per window; with the exact caches: 16 per clip and stage, zeros once per model);
* ``shallow(B)``: a DeepCache shallow step; ``tgate(B)``: a call whose cross-attention outputs are
  reused (T-GATE after the gate step).

A setting's FLOPs per frame = windows x (its per-window sum) / 300 frames. Batching windows
(``max_batch``) does not change FLOPs (the same rows, fewer calls); it is not a row.

Usage::

    .venv/bin/python benchmarks/bench_flops.py [--frames 300] [--fps 25] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from _common import GOLDEN, machine_info, print_table, write_json  # noqa: E402

T_FRAMES, LATENT, G = 16, 32, 16


def count(fn) -> int:
    """FLOPs of ``fn()`` (FlopCounterMode: 2 per multiply-add of matmuls / convolutions / attention)."""
    with FlopCounterMode(display=False) as fc:
        with torch.no_grad():
            fn()
    return int(fc.get_total_flops())


def build_unet():
    from m3ddm_ray.models.loading import unet_from_config

    cfg = json.loads((GOLDEN / "full_config.json").read_text())
    with torch.device("meta"):
        unet = unet_from_config(cfg, "full_config.json")
    return unet.eval()


def pieces(unet) -> dict[str, int]:
    """Every counted piece (see the module docstring) for the released config."""
    from m3ddm_ray import caching

    dev = torch.device("meta")
    ntok = G * (math.ceil(LATENT / 2) - 2) ** 2
    ctx_dim = unet.config.cross_attention_dim

    def sample(b):
        return torch.empty(b, 9, T_FRAMES, LATENT, LATENT, device=dev)

    def tokens(b):
        return torch.empty(b, ntok, ctx_dim, device=dev)

    out = {"tokens": ntok}
    for b in (3, 4):
        out[f"call{b}"] = count(lambda: unet(sample(b), 500, fps=25, global_tokens=tokens(b)))
    attn2 = caching.cross_attentions(unet)
    kv = lambda b: sum(count(lambda: (a.to_k(tokens(b)), a.to_v(tokens(b)))) for a in attn2)  # noqa: E731
    out["kv3"] = kv(3)
    out["kv4"] = kv(4)
    out["per_frame_kv4"] = kv(4 * T_FRAMES) - out["kv4"]
    for n in (G, 2 * G, 4 * G):
        out[f"enc{n}"] = count(lambda: unet.encode_global_frames(torch.empty(n, 4, LATENT, LATENT, device=dev), n // G))
    store: dict = {}
    ctx = tokens(3)
    with caching.attention_caches(unet, True):  # shallow steps also reuse their layers' K/V
        with torch.no_grad():
            caching.unet_forward_deepcache(unet, sample(3), 500, 25, ctx, store, True)
        out["shallow3"] = count(lambda: caching.unet_forward_deepcache(unet, sample(3), 500, 25, ctx, store, False))
    gate = caching.TGate(1)
    with caching.attention_caches(unet, True, gate):
        with torch.no_grad():
            unet(sample(3), 500, fps=25, global_tokens=tokens(3))  # records the outputs
        gate.reuse = True
        out["tgate3"] = count(lambda: unet(sample(3), 500, fps=25, global_tokens=tokens(3)))
    return out


def window_flops(p: dict, steps: int, *, official=False, exact=True, deepcache=0, tgate=0) -> tuple[float, int]:
    """(UNet FLOPs of one window, UNet calls of one window) for one setting."""
    if official:  # 4 branches, per-frame context, global encoder inside every call
        return steps * (p["call4"] + p["per_frame_kv4"] + p["enc64"]), steps
    total = 0.0
    for i in range(steps):
        full = deepcache <= 1 or i % deepcache == 0
        gated = tgate > 0 and i >= tgate
        if not full:
            total += p["shallow3"]  # no K/V in the reused deep blocks; shallow cross-attn K/V below
        elif gated:
            total += p["tgate3"]
        else:
            total += p["call3"] - (p["kv3"] if (exact and i > 0) else 0)
    total += 0 if exact else p["enc32"]  # exact: tokens once per clip (added per clip below)
    return total, steps


SETTINGS = [
    # (label, scheduler, steps, kwargs)
    ("official code (PNDM 50, 4 branches, per-frame context, encoder per call)", "pndm", 50, dict(official=True)),
    ("before issue 10 (PNDM 50, 3 branches, tokens per window, K/V per step)", "pndm", 50, dict(exact=False)),
    ("default now (PNDM 50 + exact caches)", "pndm", 50, {}),
    ("PNDM 50 + DeepCache N=3", "pndm", 50, dict(deepcache=3)),
    ("PNDM 50 + T-GATE k=25", "pndm", 50, dict(tgate=25)),
    ("--preset fast: PNDM 20 + exact caches", "pndm", 20, {}),
    ("PNDM 10 + exact caches", "pndm", 10, {}),
    ("DPM-Solver++ 2M 25 + exact caches", "dpm", 25, {}),
    ("DPM-Solver++ 2M 20 + exact caches (the fast preset before the quality check)", "dpm", 20, {}),
    ("DPM-Solver++ 2M 10 + exact caches", "dpm", 10, {}),
    ("DPM-Solver++ 2M 20 + DeepCache N=2", "dpm", 20, dict(deepcache=2)),
    ("DPM-Solver++ 2M 20 + DeepCache N=3", "dpm", 20, dict(deepcache=3)),
    ("DPM-Solver++ 2M 20 + DeepCache N=5", "dpm", 20, dict(deepcache=5)),
    ("DPM-Solver++ 2M 20 + T-GATE k=10", "dpm", 20, dict(tgate=10)),
    ("DPM-Solver++ 2M 20 + DeepCache N=3 + T-GATE k=10", "dpm", 20, dict(deepcache=3, tgate=10)),
    ("UniPC 15 + exact caches", "unipc", 15, {}),
    ("UniPC 10 + DeepCache N=2", "unipc", 10, dict(deepcache=2)),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from m3ddm_ray.plan import plan_windows

    plan = plan_windows(args.frames, args.fps)
    n_win = len(plan.windows)
    unet = build_unet()
    p = pieces(unet)
    print_table(["piece", "GFLOP"], [[k, v / 1e9] for k, v in p.items() if k != "tokens"],
                title=f"Counted pieces (released config, 256 canvas, {p['tokens']} context tokens)")
    base = None
    rows, raw = [], []
    for label, _, steps, kw in SETTINGS:
        per_win, calls = window_flops(p, steps, **kw)
        total = n_win * per_win + (p["enc16"] * 2 if (kw.get("exact", True) and not kw.get("official")) else 0)
        per_frame = total / args.frames
        if label.startswith("before issue 10"):
            base = per_frame
        raw.append(dict(label=label, steps=steps, unet_calls_per_frame=n_win * calls / args.frames,
                        tflop_per_frame=per_frame / 1e12, **kw))
    for r in raw:
        r["x_vs_before"] = base / (r["tflop_per_frame"] * 1e12)
        rows.append([r["label"], r["steps"], r["unet_calls_per_frame"], r["tflop_per_frame"], r["x_vs_before"]])
    print_table(["setting", "steps", "UNet calls / frame", "TFLOP / frame", "x fewer than before"], rows,
                title=f"UNet FLOPs per output frame, {args.frames}-frame clip ({n_win} windows, strides "
                      f"{list(plan.strides)}), released config at 256")
    write_json(args.json, {"machine": machine_info(), "frames": args.frames, "windows": n_win, "pieces": p,
                           "rows": raw})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
