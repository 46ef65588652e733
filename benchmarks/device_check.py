"""One GPU device check: the CUDA paths of the sampler proven and the GPU figures recorded, in one call.

Run once per GPU session (one process, under 8 minutes; ``docs/performance.md``, "GPU device check").
Everything is synthetic (frames, latents, random weights of the released architecture), so nothing
needs Ray, PyAV or a download; the only package carried to the device is diffusers.

Correctness (gating: the exit code is 0 only when every gating check passed):

* models: the shipped small model (``tests/data/trained``: UNet + VAE, 64 canvas, latents 8x8) and
  the released architecture (``tests/data/golden/full_config.json``, random weights built on the
  device, 256 canvas, latents 32x32), one 16-frame window with 16 global frames;
* ``precision``: fp16 / bf16 weights and fp16 / bf16 autocast against fp32 on the same device
  (TF32 off): largest |Δ| of the UNet's first ε (3 guidance branches) and of the final latents after
  :data:`STEPS` PNDM steps of :func:`m3ddm_ray.sampling.sample_windows`, all values finite;
* ``sdpa``: ``sdpa_backend`` flash / efficient against math (fp16 weights); cudnn is recorded, not gated;
* ``channels_last``: ``channels_last=True`` against the default memory format (fp16 weights);
* ``batched``: ``max_batch=3`` (three windows, one UNet batch of 9 rows) against one by one;
* ``vae``: the small VAE in fp16 against fp32 (encode, decode);
* ``compile`` (gated only when it compiled): ``compile_backend="inductor"`` against eager, in its own
  time box; a compile that does not finish in time is skipped with the reason.

Tolerances are relative: ``max|a - b| / max|b|`` (:data:`TOLERANCES`).

Figures (released architecture, random weights, fp16 weights as ``dtype: auto`` on CUDA):

* frames/s per GPU at the 256 canvas for the default (PNDM 50) and ``fast`` (PNDM 20) presets: the
  real :class:`m3ddm_ray.pipeline.Outpainter` (VAE encode, tokens, batched windows, VAE decode) on a
  synthetic 300-frame 16:9 clip outpainted to 9:16, run at 2 and 4 steps; the time is extrapolated
  linearly in the step count to the preset's steps (``figures.fps_method`` says so);
  ``max_batch`` is sized to memory: the UNet batch (of 1, 2, 4, ... windows) with the most rows/s
  whose peak memory stays under 70 % of the card;
* share of the dense bf16 peak inside one UNet call at that batch (FLOPs from
  :class:`torch.utils.flop_counter.FlopCounterMode` / time / the card's peak, :data:`PEAK_TFLOPS`;
  null for a card not in the table), for fp16 and bf16 weights;
* peak memory (``torch.cuda.max_memory_allocated``) per section and overall;
* training examples/s of the small model: :func:`m3ddm_ray.training.objective.build_inputs` (VAE
  encode of synthetic clips) + :func:`~m3ddm_ray.training.objective.loss_fn` forward and backward +
  AdamW step, bf16 autocast on CUDA.

Every section has a time box; a section that fails or runs out of time records its error in the JSON
(written after every section) and the script goes on.

``--smoke``: the same code on the CPU in seconds (golden tiny models, the tiny config in place of
the released one, a 50-frame clip); CUDA-only checks are skipped with the reason
(``tests/test_device_check.py``). ``--imports-only``: import what the check needs and stop (used to
prove the import chain holds no ``ray`` / ``av``).

Output: JSON at ``--json`` (default ``$OUT/device_check.json`` when ``OUT`` is set) and one line on
stdout starting with ``device_check:``.

Usage::

    python3 benchmarks/device_check.py [--json PATH] [--budget-s 420]
    python3 benchmarks/device_check.py --smoke [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import signal
import sys
import time
import traceback
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DATA = ROOT / "tests" / "data"
TRAINED = DATA / "trained"
GOLDEN = DATA / "golden"

#: Scheduler steps of the correctness runs (final latents compared after this many PNDM steps;
#: ``--smoke``: 2).
STEPS = 4
#: Relative tolerances ``max|a - b| / max|b|`` of the gating checks.
TOLERANCES = {"fp16": 0.05, "bf16": 0.1, "sdpa": 0.02, "channels_last": 0.02, "batched": 0.02,
              "compile": 0.03, "vae_fp16": 0.05}
#: Dense (no sparsity) bf16 / fp16 tensor-core peaks in TFLOP/s, by a part of the device name
#: (first match wins; NVIDIA data sheets). Cards not listed get a null share.
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("A100", 312.0))
#: Stable Diffusion 1.5 VAE architecture (``vae/config.json`` of the SD 1.5 release), for random
#: weights in the throughput run.
SD15_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
            "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4, "norm_num_groups": 32, "act_fn": "silu",
            "sample_size": 512, "scaling_factor": 0.18215}
GATING = ("small_model", "released_model")


# --------------------------------------------------------------------------- imports
def import_project() -> dict[str, Any]:
    """Import torch and every project module the check uses; returns them by short name.

    None of them imports ``ray`` or ``av`` (``--imports-only`` under an import blocker proves it)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from m3ddm_ray import runtime, sampling
    from m3ddm_ray.distributed.config import job_settings, load_config
    from m3ddm_ray.models import loading
    from m3ddm_ray.pipeline import Outpainter, batch_windows, prepare_clip
    from m3ddm_ray.plan import plan_windows
    from m3ddm_ray.training import objective
    from m3ddm_ray.training.loop import set_train_mode

    return dict(torch=torch, FlopCounterMode=FlopCounterMode, runtime=runtime, sampling=sampling,
                job_settings=job_settings, load_config=load_config, loading=loading, Outpainter=Outpainter,
                batch_windows=batch_windows, prepare_clip=prepare_clip, plan_windows=plan_windows,
                objective=objective, set_train_mode=set_train_mode)


# --------------------------------------------------------------------------- time boxes
class SectionTimeout(Exception):
    """A section ran past its time box."""


@contextlib.contextmanager
def time_box(seconds: float):
    """Raise :class:`SectionTimeout` in the main thread after ``seconds`` (SIGALRM; Unix)."""

    def on_alarm(signum, frame):
        raise SectionTimeout(f"time box of {seconds:.0f} s reached")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(float(seconds), 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Check:
    """The run: settings, the JSON report, the shared models, the overall time budget."""

    def __init__(self, args, mods):
        self.args, self.m = args, mods
        torch = mods["torch"]
        self.smoke = args.smoke
        self.steps = 2 if args.smoke else STEPS
        self.device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
        self.cuda = self.device.type == "cuda"
        self.t0 = time.monotonic()
        self.models: dict[str, Any] = {}
        self.report: dict[str, Any] = {"schema": 1, "mode": "smoke" if self.smoke else "device",
                                       "sections": {}, "correctness": {}, "figures": {}}

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.t0)

    def sync(self) -> None:
        if self.cuda:
            self.m["torch"].cuda.synchronize()

    def write(self) -> None:
        if self.args.json:
            Path(self.args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(self.args.json).write_text(json.dumps(self.report, indent=2, default=_json_default,
                                                       allow_nan=False))

    def section(self, name: str, fn: Callable[[], dict], limit_s: float, min_s: float = 5.0) -> dict:
        """Run ``fn`` in a time box of ``min(limit_s, budget left)``; record its result or its error
        under ``sections[name]`` (``status``: ok / skipped / failed / timeout) and write the JSON."""
        torch = self.m["torch"]
        left = self.left()
        if left < min_s:
            entry = {"status": "skipped", "reason": f"budget: {left:.0f} s left, the section needs {min_s:.0f} s"}
        else:
            if self.cuda:
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            try:
                with time_box(min(limit_s, left)):
                    result = fn()
                entry = {"status": "ok", **result}
            except SectionTimeout as exc:
                entry = {"status": "timeout", "error": str(exc)}
            except Exception as exc:  # noqa: BLE001 - every error is a finding; the next section runs
                entry = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                         "traceback": traceback.format_exc(limit=-8)}
            entry["seconds"] = round(time.perf_counter() - t0, 3)
            if self.cuda:
                entry["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
                self.report["figures"]["peak_memory_gib"] = max(
                    self.report["figures"].get("peak_memory_gib") or 0.0, entry["peak_memory_gib"])
        self.report["sections"][name] = _finite(entry)
        print(f"[{name}] {entry['status']} {entry.get('seconds', 0):.1f} s"
              + (f": {entry.get('error') or entry.get('reason')}" if entry["status"] != "ok" else ""),
              file=sys.stderr, flush=True)
        self.write()
        return entry


def _json_default(x):
    return str(x)


def _finite(obj):
    """``obj`` with NaN / inf floats replaced by their names (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- environment
def environment(c: Check) -> dict:
    """Versions, the device, its peak, the float settings of the fp32 reference."""
    torch = c.m["torch"]
    out: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                           "cpus": os.cpu_count()}
    for name in ("torch", "diffusers", "huggingface_hub", "numpy", "safetensors", "opencv-python-headless"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["device"] = str(c.device)
    out["cuda"] = torch.version.cuda
    if c.cuda:
        props = torch.cuda.get_device_properties(0)
        out.update(name=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2**30, 2), multiprocessors=props.multi_processor_count)
        out["peak_bf16_tflops"] = next((p for key, p in PEAK_TFLOPS if key in props.name), None)
        # the fp32 reference is full fp32: no TF32 in matmuls or convolutions
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    else:
        out.update(name=platform.processor() or "cpu", peak_bf16_tflops=None)
    out["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    c.report["device"] = out["name"]
    c.report["figures"]["peak_bf16_tflops"] = out["peak_bf16_tflops"]
    return out


# --------------------------------------------------------------------------- synthetic inputs
def synthetic_windows(c: Check, unet, h: int, n: int, seed: int = 0) -> list:
    """``n`` windows of 16 frames at latent side ``h``: random latents, the left 3/8 of every frame to
    generate, a guide latent at position 0, global tokens of 16 random global latents (CPU float32)."""
    torch, sampling = c.m["torch"], c.m["sampling"]
    out = []
    for k in range(n):
        g = torch.Generator().manual_seed(seed + k)
        z = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
        mask = torch.zeros(1, 1, 16, h, h)
        mask[..., : max(1, 3 * h // 8)] = 1
        gl = z(16, 4, h, h) * 0.5
        with torch.no_grad():
            tokens = unet.encode_global_frames(torch.cat([torch.zeros_like(gl), gl]).to(unet.device), 2)
        out.append(sampling.WindowInputs(z(1, 4, 16, h, h) * 0.8, z(1, 4, 16, h, h) * 0.8, z(1, 4, 16, h, h) * 0.1,
                                         mask, {0: z(4, h, h)}, tokens.float().cpu(), 24.0))
    return out


def synthetic_frames(t: int, h: int = 144, w: int = 256):
    """uint8 ``(T, H, W, 3)`` moving gradients and a square (a 16:9 clip)."""
    import numpy as np

    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        img = np.stack([(xx * 2 + 3 * i) % 256, (yy * 3 + 2 * i) % 256, (xx + yy + 5 * i) % 256], -1)
        x0 = int((w - 32) * (0.5 + 0.5 * math.sin(i / 10)))
        img[h // 3: h // 3 + 32, x0:x0 + 32] = 255
        frames[i] = img
    return frames


class FirstEps:
    """Wraps the UNet for the sampler and keeps the ε ``(3W, 4, F, h, w)`` of its first call (float32, CPU)."""

    def __init__(self, unet):
        import torch

        class _Wrap(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner, self.first = inner, None

            device = property(lambda self: self.inner.device)
            dtype = property(lambda self: self.inner.dtype)

            def forward(self, sample, t, **kw):
                out = self.inner(sample, t, **kw)
                if self.first is None:
                    self.first = out.sample.float().cpu()
                return out

        self.module = _Wrap(unet)


def run_windows(c: Check, unet, inputs: list, **settings) -> tuple:
    """``(first ε, final latents (W, 4, F, h, w))`` of :func:`sample_windows` with ``settings``."""
    sampling = c.m["sampling"]
    s = sampling.SamplerSettings(num_inference_steps=c.steps, **settings)
    wrap = FirstEps(unet).module
    x = sampling.sample_windows(wrap, sampling.make_scheduler(None, s), inputs, s)
    c.sync()
    return wrap.first, x.float().cpu()


def compare(a, b) -> dict:
    """``max|a - b|``, relative to ``max|b|``, and whether both are finite."""
    d = (a.float() - b.float()).abs().max().item()
    scale = b.float().abs().max().item()
    return {"max_abs": d, "rel": d / max(scale, 1e-12), "finite": bool(a.isfinite().all() and b.isfinite().all())}


def judged(name: str, tol_key: str, eps: dict | None, lat: dict) -> dict:
    """A check entry: both comparisons, the tolerance, passed = finite and within tolerance."""
    tol = TOLERANCES[tol_key]
    parts = [p for p in (eps, lat) if p is not None]
    ok = all(p["finite"] and p["rel"] <= tol for p in parts)
    return {"check": name, "eps": eps, "latents": lat, "tol_rel": tol, "passed": ok}


def cast(unet, dtype):
    """A copy of ``unet`` in ``dtype`` (``torch.nn.Module.to``: diffusers' ``to`` warns on casts)."""
    import torch

    return torch.nn.Module.to(copy.deepcopy(unet), dtype=dtype)


# --------------------------------------------------------------------------- correctness
def correctness_suite(c: Check, unet32, h: int, key: str) -> dict:
    """Every gating comparison for one model (fp32 ``unet32`` on the device); keeps the fp16 / bf16
    copies in ``c.models[key]`` for later sections."""
    torch = c.m["torch"]
    inputs = synthetic_windows(c, unet32, h, 2 if c.smoke else 3)
    one = inputs[:1]
    checks, skipped = [], {}
    eps32, lat32 = run_windows(c, unet32, one)
    checks.append({"check": "fp32_finite", "passed": bool(eps32.isfinite().all() and lat32.isfinite().all()),
                   "eps_max": eps32.abs().max().item(), "latents_max": lat32.abs().max().item()})
    auto = c.m["loading"].resolve_dtype("auto", c.device)  # what dtype: auto runs (fp16 on CUDA)
    models = {"fp32": unet32}
    for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        if name == "fp16" and not c.cuda:
            skipped["fp16_weights"] = skipped["autocast_fp16"] = "fp16 is CUDA-only (sampler.autocast=fp16 is refused on the CPU)"
            continue
        models[name] = cast(unet32, dtype)
        e, x = run_windows(c, models[name], one)
        checks.append(judged(f"{name}_weights", name, compare(e, eps32), compare(x, lat32)))
        e, x = run_windows(c, unet32, one, autocast=name)
        checks.append(judged(f"autocast_{name}", name, compare(e, eps32), compare(x, lat32)))
    base = models["fp16"] if auto == torch.float16 else unet32
    ref_e, ref_x = run_windows(c, base, one, sdpa_backend="math")
    for backend in ("flash", "efficient", "cudnn"):
        if not c.cuda:
            skipped[f"sdpa_{backend}"] = "CUDA-only SDPA backend"
            continue
        try:
            e, x = run_windows(c, base, one, sdpa_backend=backend)
        except Exception as exc:  # noqa: BLE001 - a backend without a kernel for these shapes
            entry = {"check": f"sdpa_{backend}", "passed": False, "error": f"{type(exc).__name__}: {exc}"}
        else:
            entry = judged(f"sdpa_{backend}", "sdpa", compare(e, ref_e), compare(x, ref_x))
        if backend == "cudnn":
            entry["gated"] = False
        checks.append(entry)
    auto_e, auto_x = (eps32, lat32) if base is unet32 else run_windows(c, base, one)
    if not c.cuda:  # auto vs math at least runs the switch
        checks.append(judged("sdpa_auto", "sdpa", compare(auto_e, ref_e), compare(auto_x, ref_x)))
    cl = copy.deepcopy(base)  # the conversion is in place
    e, x = run_windows(c, cl, one, channels_last=True)
    conv = next(p for p in cl.parameters() if p.dim() == 5)
    entry = judged("channels_last", "channels_last", compare(e, auto_e), compare(x, auto_x))
    entry["weights_channels_last"] = conv.is_contiguous(memory_format=torch.channels_last_3d)
    entry["passed"] = entry["passed"] and entry["weights_channels_last"]
    checks.append(entry)
    del cl
    _, batched = run_windows(c, base, inputs, max_batch=len(inputs))
    ones = torch.cat([run_windows(c, base, [inp])[1] for inp in inputs])
    checks.append(judged("batched_windows", "batched", None, compare(batched, ones)))
    for ch in checks:
        ch.setdefault("gated", True)
    c.models[key] = {"fp32": unet32, "auto": base, "bf16": models.get("bf16"), "h": h, "inputs": one}
    failed = [ch["check"] for ch in checks if ch["gated"] and not ch["passed"]]
    return {"latent_side": h, "steps": c.steps, "checks": checks, "skipped": skipped, "failed": failed,
            "passed": not failed}


def small_model(c: Check) -> dict:
    """The shipped small model (smoke: the golden tiny models), 64 canvas; its VAE in fp16 too."""
    torch, loading, sampling = c.m["torch"], c.m["loading"], c.m["sampling"]
    root = GOLDEN / "models" if c.smoke else TRAINED
    unet = loading.load_unet(root / "unet", "fp32", c.device)
    vae = loading.load_vae(root / "vae", "fp32", c.device)
    out = correctness_suite(c, unet, 8, "small")
    out["model"] = str(root.relative_to(ROOT))
    frames = torch.from_numpy(synthetic_frames(8, 64, 64)).permute(0, 3, 1, 2).float() / 127.5 - 1
    z32 = sampling.encode_images(vae, frames, None)
    img32 = sampling.decode_latents(vae, z32)
    c.models["small"]["vae"] = vae
    if c.cuda:
        vae16 = torch.nn.Module.to(copy.deepcopy(vae), dtype=torch.float16)
        z16 = sampling.encode_images(vae16, frames, None)
        img16 = sampling.decode_latents(vae16, z32)
        entry = judged("vae_fp16", "vae_fp16", compare(z16, z32), compare(img16.float(), img32.float()))
        entry["decode_max_levels"] = int((img16.int() - img32.int()).abs().max())
        entry["gated"] = True
        out["checks"].append(entry)
        if not entry["passed"]:
            out["failed"].append("vae_fp16")
            out["passed"] = False
    else:
        out["skipped"]["vae_fp16"] = "fp16 VAE is CUDA-only"
    return out


def build_released(c: Check):
    """The released architecture with random weights on the device, fp32 (smoke: the tiny config)."""
    torch, loading = c.m["torch"], c.m["loading"]
    cfg = loading.tiny_unet_config() if c.smoke else json.loads((GOLDEN / "full_config.json").read_text())
    torch.manual_seed(0)
    with torch.device(c.device):
        unet = loading.unet_from_config(cfg, "full_config.json")
    return unet.eval().requires_grad_(False)


def released_model(c: Check) -> dict:
    """Correctness of the released architecture at the 256 canvas (smoke: tiny config, 64 canvas)."""
    unet = build_released(c)
    out = correctness_suite(c, unet, 8 if c.smoke else 32, "released")
    out["model"] = "tiny_unet_config (random)" if c.smoke else "tests/data/golden/full_config.json (random)"
    out["parameters"] = sum(p.numel() for p in unet.parameters())
    return out


# --------------------------------------------------------------------------- figures
def _unet_call(c: Check, unet, rows: int, h: int, ntok: int):
    """A function running one UNet call of ``rows`` rows (as the sampler's), and its inputs."""
    torch = c.m["torch"]
    sample = torch.randn(rows, 9, 16, h, h, device=c.device, dtype=unet.dtype)
    ctx = torch.randn(rows, ntok, unet.config.cross_attention_dim, device=c.device, dtype=unet.dtype)
    t = torch.tensor(500, device=c.device)

    def call():
        with torch.no_grad():
            return unet(sample, t, fps=24.0, global_tokens=ctx).sample

    return call


def time_calls(c: Check, fn, repeats: int, warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` synchronised runs."""
    for _ in range(warmup):
        fn()
    c.sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        c.sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def unet_share(c: Check, unet, windows: int, h: int, ntok: int, repeats: int) -> dict:
    """FLOPs of one UNet call of ``3 * windows`` rows, its time, TFLOP/s and share of the peak."""
    FlopCounterMode = c.m["FlopCounterMode"]
    call = _unet_call(c, unet, 3 * windows, h, ntok)
    with FlopCounterMode(display=False) as fc:
        call()
    flops = int(fc.get_total_flops())
    sec = time_calls(c, call, repeats, 0 if c.smoke else 1)  # the counted call warmed it up
    peak = c.report["figures"].get("peak_bf16_tflops")
    tflops = flops / sec / 1e12
    return {"windows": windows, "rows": 3 * windows, "dtype": str(unet.dtype), "tflop_per_call": flops / 1e12,
            "seconds_per_call": sec, "tflops": tflops, "share_of_peak": tflops / peak if peak else None}


def size_batch(c: Check, unet, h: int, ntok: int, candidates: list[int]) -> tuple[int, list]:
    """The windows per UNet batch with the most rows/s whose peak memory stays under 70 % of the card
    (every candidate on the CPU); returns it and the probe table."""
    torch = c.m["torch"]
    limit = 0.7 * torch.cuda.get_device_properties(0).total_memory if c.cuda else None
    table, best = [], (0.0, candidates[0])
    for w in candidates:
        try:
            if c.cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            sec = time_calls(c, _unet_call(c, unet, 3 * w, h, ntok), 1 if c.smoke else 2, 0 if c.smoke else 1)
        except torch.cuda.OutOfMemoryError:
            table.append({"windows": w, "error": "out of memory"})
            break
        peak = torch.cuda.max_memory_allocated() if c.cuda else None
        table.append({"windows": w, "seconds_per_call": sec, "rows_per_s": 3 * w / sec,
                      "peak_memory_gib": peak / 2**30 if peak else None})
        if limit and peak > limit:
            table[-1]["over_limit"] = True
            break
        if 3 * w / sec > best[0] * 1.03:  # a larger batch must gain more than 3 %
            best = (3 * w / sec, w)
    return best[1], table


def throughput(c: Check) -> dict:
    """Frames/s per GPU of the default and fast presets (extrapolated in steps), share of peak."""
    torch, m = c.m["torch"], c.m
    rel = c.models.get("released") or {}
    unet = rel.get("auto")
    if unet is None:  # the correctness section failed before building its copies
        unet = cast(build_released(c), m["loading"].resolve_dtype("auto", c.device))
    for k in ("fp32",):  # free the fp32 reference: the batch probe wants the memory
        rel.pop(k, None)
    if c.cuda:
        torch.cuda.empty_cache()
    canvas, t_frames = (64, 50) if c.smoke else (256, 300)
    h = canvas // 8
    ntok = 16 * (math.ceil(h / 2) - 2) ** 2
    presets = {"default": m["job_settings"](m["load_config"](canvas_size=canvas)),
               "fast": m["job_settings"](m["load_config"](preset="fast", canvas_size=canvas))}
    plan = m["plan_windows"](t_frames, 25.0)
    largest = max(len(g) for g in m["batch_windows"](plan.windows, 10**6))
    candidates = [w for w in ((1, 2) if c.smoke else (1, 2, 4, 8, 16, 32)) if w <= largest]
    windows, probe = size_batch(c, unet, h, ntok, candidates)
    if c.smoke:
        vae = c.models["small"]["vae"]
    else:
        from diffusers import AutoencoderKL

        torch.manual_seed(0)
        with torch.device(c.device):
            vae = AutoencoderKL(**SD15_VAE)
        vae = torch.nn.Module.to(vae, dtype=unet.dtype).eval().requires_grad_(False)
    base = presets["default"]
    t0 = time.perf_counter()
    clip = m["prepare_clip"](synthetic_frames(t_frames), 25.0, "9:16", base)
    prepare_s = time.perf_counter() - t0
    runs = {}
    k1, k2 = (2, 3) if c.smoke else (2, 4)
    for steps in (k1, k2) if c.smoke else (k1, k1, k2):  # the first run warms up (kernels, allocator)
        s = replace(base, sampler=replace(base.sampler, num_inference_steps=steps, max_batch=windows))
        op = m["Outpainter"](unet, vae, s)
        c.sync()
        t0 = time.perf_counter()
        state = op.run_coarse(clip)
        op.run_fine(clip, state)
        c.sync()
        runs[steps] = {"seconds": time.perf_counter() - t0, "unet_seconds": state.unet_seconds,
                       "frames_out": len(state.generated)}
    if runs[k2]["frames_out"] != t_frames:
        raise RuntimeError(f"the pipeline made {runs[k2]['frames_out']} of {t_frames} frames")
    per_step = (runs[k2]["seconds"] - runs[k1]["seconds"]) / (k2 - k1)
    fixed = runs[k1]["seconds"] - k1 * per_step
    out = {"canvas": canvas, "frames": t_frames, "windows": len(plan.windows), "strides": list(plan.strides),
           "max_batch": windows, "batch_probe": probe, "model_dtype": str(unet.dtype),
           "prepare_cpu_seconds": prepare_s, "measured_runs": runs, "seconds_per_step_all_windows": per_step,
           "seconds_fixed": fixed, "presets": {}}
    for name, settings in presets.items():
        steps = settings.sampler.num_inference_steps
        total = fixed + steps * per_step
        fps = t_frames / total if per_step > 0 and total > 0 else None  # None: the two runs contradict
        out["presets"][name] = {"scheduler": settings.sampler.scheduler, "steps": steps,
                                "exact_caches": settings.sampler.exact_caches, "seconds_per_clip": total,
                                "frames_per_s": fps}
        c.report["figures"][f"fps_{name}"] = fps
    c.report["figures"]["fps_method"] = (
        f"Outpainter coarse+fine on a synthetic {t_frames}-frame 16:9 clip to 9:16 at canvas {canvas}, "
        f"{out['model_dtype']} weights, max_batch {windows}, run at {k1} and {k2} steps; seconds extrapolated "
        f"linearly to the preset's steps; CPU prepare not included")
    c.report["figures"]["max_batch"] = windows
    shares = {}
    repeats = 1 if c.smoke else 5
    shares[str(unet.dtype).replace("torch.float", "fp").replace("torch.bfloat", "bf")] = unet_share(c, unet, windows, h, ntok, repeats)
    bf16 = rel.get("bf16")
    if bf16 is not None:
        shares["bf16"] = unet_share(c, bf16, windows, h, ntok, repeats)
    out["unet_calls"] = shares
    for key, v in shares.items():
        c.report["figures"][f"share_of_peak_{key}"] = v["share_of_peak"]
        c.report["figures"][f"tflops_{key}"] = v["tflops"]
    return out


def training(c: Check) -> dict:
    """Training examples/s of the small model: build_inputs + loss forward/backward + AdamW step."""
    import numpy as np

    torch, objective = c.m["torch"], c.m["objective"]
    small = c.models.get("small")
    root = GOLDEN / "models" if c.smoke else TRAINED
    if small is None:
        unet = c.m["loading"].load_unet(root / "unet", "fp32", c.device)
        vae = c.m["loading"].load_vae(root / "vae", "fp32", c.device)
    else:
        unet, vae = small["fp32"], small["vae"]
    unet = copy.deepcopy(unet).float().requires_grad_(True)
    c.m["set_train_mode"](unet)
    batch, steps = (2, 2) if c.smoke else (16, 10)
    amp = torch.bfloat16 if c.cuda else None
    frames = synthetic_frames(16, 64, 64)
    mask = np.zeros((16, 64, 64), np.uint8)
    mask[:, :, :24] = 1
    rows = [{"frames": frames, "mask": mask, "global_frames": frames[::-1].copy(), "fps": np.int64(24),
             "seed": np.int64(i)} for i in range(batch)]
    data = objective.numpy_batch(rows)
    settings = objective.ObjectiveSettings()
    noise_sched = objective.make_noise_scheduler()
    black = objective.black_canvas_latent(vae, 64)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    losses, inputs_s = [], 0.0

    def step():
        nonlocal inputs_s
        t0 = time.perf_counter()
        inputs = objective.build_inputs(vae, data, settings, noise_sched, black, c.device)
        c.sync()
        inputs_s += time.perf_counter() - t0
        with torch.autocast(c.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = objective.loss_fn(unet, inputs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))

    step()  # warm-up
    c.sync()
    inputs_s = 0.0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    c.sync()
    sec = time.perf_counter() - t0
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"non-finite training loss: {losses}")
    c.report["figures"]["train_examples_per_s"] = batch * steps / sec
    return {"model": str(root.relative_to(ROOT)), "batch": batch, "steps": steps,
            "autocast": "bf16" if amp else "off", "seconds_per_step": sec / steps,
            "build_inputs_seconds_per_step": inputs_s / steps, "examples_per_s": batch * steps / sec,
            "losses": losses, "losses_note": "warm-up step first; every step trains on the same batch"}


def compile_check(c: Check, key: str) -> dict:
    """``compile_backend="inductor"`` on the fp16 model against eager: final latents, compile time,
    time of a compiled run after the first. Skipped on the CPU smoke run (minutes to compile there)."""
    if c.smoke:
        return {"status": "skipped", "reason": "--smoke: torch.compile takes minutes on the CPU"}
    model = c.models.get(key)
    if model is None:
        return {"status": "skipped", "reason": f"no {key} model (its correctness section failed)"}
    unet, inputs = model["auto"], model["inputs"]
    sampling = c.m["sampling"]
    s_eager = sampling.SamplerSettings(num_inference_steps=c.steps)
    s_comp = replace(s_eager, compile_backend="inductor")

    def run(s):
        c.sync()
        t0 = time.perf_counter()
        x = sampling.sample_windows(unet, sampling.make_scheduler(None, s), inputs, s)
        c.sync()
        return x.float().cpu(), time.perf_counter() - t0

    ref, _ = run(s_eager)
    _, eager_s = run(s_eager)
    out, first_s = run(s_comp)
    out2, again_s = run(s_comp)
    entry = judged("compile", "compile", None, compare(out, ref))
    entry.update(gated=True, first_run_seconds=first_s, compiled_run_seconds=again_s, eager_run_seconds=eager_s,
                 repeat_equal=bool((out2 - out).abs().max().item() == 0))
    return {"checks": [entry], "passed": entry["passed"], "failed": [] if entry["passed"] else ["compile"]}


# --------------------------------------------------------------------------- main
def summarize(c: Check) -> bool:
    """Fill ``correctness`` (gating sections and checks) and ``summary``; True when all gating passed."""
    secs = c.report["sections"]
    failed, gating = [], list(GATING)
    for name in GATING:
        sec = secs.get(name, {})
        if sec.get("status") != "ok":
            failed.append(f"{name} ({sec.get('status', 'not run')})")
        failed += [f"{name}.{f}" for f in sec.get("failed", [])]
    for name in ("compile_small", "compile_released"):
        sec = secs.get(name, {})
        if sec.get("status") == "ok":
            gating.append(name)
            failed += [f"{name}.{f}" for f in sec.get("failed", [])]
    passed = not failed
    c.report["correctness"] = {"passed": passed, "gating_sections": gating, "failed": failed,
                               "tolerances_rel": TOLERANCES}
    f = c.report["figures"]

    def num(key, fmt):
        v = f.get(key)
        return "null" if v is None else format(v, fmt)

    line = (f"device_check: correctness={'passed' if passed else 'FAILED'} device={c.report.get('device')!r} "
            f"fps_default={num('fps_default', '.2f')} fps_fast={num('fps_fast', '.2f')} "
            f"max_batch={f.get('max_batch')} share_of_bf16_peak={num('share_of_peak_bf16', '.3f')} "
            f"share_fp16={num('share_of_peak_fp16', '.3f')} peak_mem_gib={num('peak_memory_gib', '.1f')} "
            f"train_ex_s={num('train_examples_per_s', '.1f')} "
            f"sections={','.join(k + ':' + v['status'] for k, v in secs.items())} json={c.args.json}")
    c.report["summary"] = line
    return passed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="report path (default $OUT/device_check.json when OUT is set)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, seconds (the CI smoke test)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="time budget of all sections in seconds (default 420; --smoke 120)")
    ap.add_argument("--imports-only", action="store_true", help="import what the check uses and stop")
    args = ap.parse_args(argv)
    if args.json is None and os.environ.get("OUT"):
        args.json = str(Path(os.environ["OUT"]) / "device_check.json")
    if args.budget_s is None:
        args.budget_s = 120.0 if args.smoke else 420.0
    mods = import_project()
    if args.imports_only:
        print("device_check: imports ok (" + ", ".join(sorted(m for m in sys.modules if m.startswith("m3ddm_ray"))) + ")")
        return 0
    c = Check(args, mods)
    c.section("environment", lambda: environment(c), 60, 0)
    c.section("small_model", lambda: small_model(c), 90)
    c.section("released_model", lambda: released_model(c), 120)
    c.section("throughput", lambda: throughput(c), 150, 30)
    c.section("training", lambda: training(c), 60, 10)
    c.section("compile_small", lambda: compile_check(c, "small"), 90, 30)
    c.section("compile_released", lambda: compile_check(c, "released"), 240, 60)
    c.report["total_seconds"] = round(time.monotonic() - c.t0, 2)
    passed = summarize(c)
    c.report = _finite(c.report)
    c.write()
    print(c.report["summary"], flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
