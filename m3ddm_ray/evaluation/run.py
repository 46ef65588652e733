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

Configuration: the job config of ``m3ddm-ray outpaint`` (``configs/*.yaml``; model, VAE, sampler,
stage pools) plus an ``eval:`` section (:data:`EVAL_DEFAULTS`), both overridable with
``--set KEY.PATH=VALUE`` (``--set eval.clip_len=32``). The canvas output is always used
(``output_size: canvas``); the protocol decides the target ratio of every row.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..distributed.config import deep_merge
from ..errors import InputError, M3DDMError

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
    "run_eval",
    "add_eval_arguments",
    "add_eval",
    "cmd_eval",
]

#: Defaults of the ``eval:`` config section (configs/davis-eval.yaml shows every key).
EVAL_DEFAULTS: dict[str, Any] = {
    "dataset": None,            # davis2017 | davis2016 | youtube-vos | folder
    "root": None,
    "split": "val",
    "protocol": "benchmark",    # benchmark | m3ddm-plus
    "methods": ["m3ddm"],       # m3ddm | replicate | reflect | blur | telea
    "clip_len": 16,             # frames per clip; 0 = whole sequences
    "clips": "first",           # first: one clip per video; all: tile every video
    "max_clips": None,
    "benchmark": {"size": 256, "mask_ratios": [0.25, 0.66], "direction": "horizontal", "interpolation": "area"},
    "m3ddm_plus": {"output_size": 256, "target_ratio": "16:9", "crop_ratios": [0.25], "crop_axis": "horizontal",
                   "interpolation": "linear"},
    "metrics": {
        "lpips": "auto",            # auto (if the default weight files exist) | true | false
        "lpips_weights": None,      # LPIPS linear heads (lpips/weights/v0.1/alex.pth); random-init: tests only
        "lpips_backbone": None,     # torchvision AlexNet (alexnet-owt-7be5be79.pth); default: torch hub cache
        "fvd_weights": None,        # I3D checkpoint; FVD is computed only when set; random-init: tests only
        "fvd_kind": "videogpt",     # videogpt (i3d_pretrained_400.pt) | stylegan-v (i3d_torchscript.pt)
        "ssim_window": "gaussian",  # gaussian (common protocol) | uniform (skimage default, M3DDM+ script)
        "device": "cpu",
    },
    "baselines": {"blur_sigma": None, "telea_radius": 5},
    "report": {"frames": 4},
    "score": {"num_actors": 1, "num_cpus": 1, "num_gpus": 0, "batch_size": 1},
}

#: ``--method`` values (= ``baselines.METHODS``; kept here so that registering the command imports nothing heavy).
METHODS = ("m3ddm", "replicate", "reflect", "blur", "telea")

#: Columns of ``per_clip.parquet`` and their Arrow types (:func:`eval_schema`).
EVAL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("clip_id", "string"), ("sequence", "string"), ("dataset", "string"), ("split", "string"),
    ("uri", "string"), ("start", "int64"), ("frames", "int64"), ("fps", "float64"),
    ("protocol", "string"), ("mask_ratio", "float64"), ("ratio_label", "string"), ("method", "string"),
    ("status", "string"), ("error", "string"),
    ("psnr", "float64"), ("ssim", "float64"), ("lpips", "float64"), ("bmse", "float64"),
    ("psnr_generated", "float64"), ("mse", "float64"), ("bmse_gt", "float64"), ("metric_impl", "string"),
    ("known_error", "float64"), ("placement_exact", "bool_"),
    ("frame_height", "int64"), ("frame_width", "int64"), ("known_box", "string"),
    ("target_ratio", "string"), ("canvas_size", "int64"), ("image", "string"),
    ("seconds_prepare", "float64"), ("seconds_coarse", "float64"), ("seconds_fine", "float64"),
    ("seconds_method", "float64"), ("seconds_score", "float64"), ("seconds_unet", "float64"),
    ("model", "string"), ("vae", "string"), ("config_hash", "string"), ("settings", "string"),
)


def eval_schema():
    """Arrow schema of ``per_clip.parquet`` (one row per clip x mask ratio x method)."""
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in EVAL_COLUMNS])


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def _check_eval_keys(data: Mapping, ref: Mapping, where: str, prefix: str = "eval.") -> None:
    for key, value in data.items():
        if key not in ref:
            raise InputError(f"{where}: unknown config key {prefix + str(key)!r}; known keys at this level: "
                             f"{sorted(ref)}")
        if isinstance(ref[key], dict) and isinstance(value, Mapping):
            _check_eval_keys(value, ref[key], where, f"{prefix}{key}.")



def load_eval_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = (),
                     eval_flags: Mapping[str, Any] | None = None, **flags: Any) -> tuple[dict, dict]:
    """``(job config, eval config)`` from a YAML file with an optional ``eval:`` section.

    Precedence: defaults <- YAML <- ``--set`` overrides (``eval.*`` ones go to the eval config) <-
    command-line flags (``flags``: job keys as in :func:`m3ddm_ray.distributed.config.load_config`;
    ``eval_flags``: eval keys, dotted paths with ``__``). The job part goes through ``load_config``
    unchanged (its YAML keys are passed as overrides before the user's), so it is validated the same way.

    Raises:
        InputError: unreadable YAML, unknown keys (job or eval), malformed overrides.
    """

    from ..distributed.config import DEFAULTS, load_config, parse_override, read_yaml_mapping

    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_mapping(path)
    ecfg = copy.deepcopy(EVAL_DEFAULTS)
    eval_part = data.pop("eval", None) or {}
    if not isinstance(eval_part, Mapping):
        raise InputError(f"config {path}: 'eval' must be a mapping of keys")
    _check_eval_keys(eval_part, EVAL_DEFAULTS, f"config {path}")
    deep_merge(ecfg, eval_part)
    for key in data:
        if key not in DEFAULTS:
            raise InputError(f"config {path}: unknown config key {key!r}; known keys: {sorted(DEFAULTS) + ['eval']}")
    job_overrides = [f"{k}={json.dumps(v)}" for k, v in data.items()]
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] == "eval":
            nested: Any = value
            for k in reversed(keys[1:]):
                nested = {k: nested}
            if not isinstance(nested, Mapping):
                raise InputError(f"override {text!r}: give a key below eval, e.g. eval.clip_len=32")
            _check_eval_keys(nested, EVAL_DEFAULTS, "override")
            deep_merge(ecfg, nested)
        else:
            job_overrides.append(text)
    for name, value in (eval_flags or {}).items():
        if value is None:
            continue
        nested = value
        for k in reversed(name.split("__")):
            nested = {k: nested}
        _check_eval_keys(nested, EVAL_DEFAULTS, "flag")
        deep_merge(ecfg, nested)
    cfg = load_config(None, job_overrides, **flags)
    cfg["output_size"] = "canvas"  # the protocol scores the canvas crop
    return cfg, ecfg


def _methods(value: Any) -> list[str]:
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for item in items:
        for m in str(item).split(","):
            m = m.strip()
            if not m:
                continue
            if m not in METHODS:
                raise InputError(f"unknown method {m!r}; use one of {', '.join(METHODS)} (comma-separated for several)")
            if m not in out:
                out.append(m)
    if not out:
        raise InputError(f"no method given; use one of {', '.join(METHODS)}")
    return out


def build_protocol(ecfg: Mapping[str, Any]):
    """The protocol object of the eval config."""
    from .protocols import make_protocol

    name = ecfg["protocol"]
    options = ecfg["benchmark"] if name == "benchmark" else ecfg["m3ddm_plus"] if name == "m3ddm-plus" else {}
    return make_protocol(name, options)


# --------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------


def build_rows(cfg: Mapping[str, Any], ecfg: Mapping[str, Any], clips, cases) -> list[list[dict]]:
    """Pending rows grouped by clip: one per (mask ratio, method) of each clip."""
    from ..distributed.config import config_hash, job_settings

    methods = _methods(ecfg["methods"])
    settings = job_settings(cfg)
    chash = config_hash(cfg, settings)
    settings_json = json.dumps(settings.to_dict(), sort_keys=True)
    groups = []
    for clip in clips:
        record = json.dumps(clip.to_record())
        group = []
        for ci, case in enumerate(cases):
            for mi, method in enumerate(methods):
                model = method == "m3ddm"
                group.append({
                    "clip_id": clip.clip_id, "sequence": clip.sequence, "dataset": clip.dataset, "split": clip.split,
                    "uri": clip.uri, "video_uri": clip.uri, "start": clip.start, "frames": clip.num_frames,
                    "fps": clip.fps,
                    "protocol": case.protocol, "mask_ratio": case.mask_ratio, "ratio_label": case.label,
                    "method": method, "status": "pending" if model else "baseline", "error": None,
                    "record": record, "overrides": "{}", "clip": b"", "state": b"",
                    "fvd_real_wanted": ci == 0 and mi == 0,
                    "model": str(cfg["model"]) if model else None, "vae": str(cfg["vae"]) if model else None,
                    "config_hash": chash if model else None, "settings": settings_json if model else None,
                })
        groups.append(group)
    return groups


def _fail(row: dict, stage: str, exc: BaseException) -> dict:
    row["status"] = "error"
    row["error"] = f"{stage}: {exc}" if isinstance(exc, M3DDMError) else f"{stage}: {type(exc).__name__}: {exc}"
    row["traceback"] = traceback.format_exc(limit=8)
    row["clip"], row["state"] = b"", b""
    return row


def _ground_truth(row: Mapping[str, Any], protocol, storage_options):
    from .datasets import EvalClip, load_clip

    clip = EvalClip.from_record(json.loads(row["record"]))
    return protocol.ground_truth(load_clip(clip, storage_options))


def prepare_group(rows: list[dict], cfg: Mapping[str, Any], ecfg: Mapping[str, Any]) -> list[dict]:
    """CPU: decode a clip once, cut each mask ratio's strip, ``prepare_clip`` it for the ``m3ddm`` rows."""
    from ..distributed.config import job_settings
    from ..pipeline import prepare_clip

    t0 = time.perf_counter()
    so = cfg.get("storage_options") or None
    try:
        protocol = build_protocol(ecfg)
        cases = {c.label: c for c in protocol.cases(int(cfg["canvas_size"]))}
        gt = _ground_truth(rows[0], protocol, so)
        settings = job_settings(cfg)
        strips = {}
        for row in rows:
            if row["method"] == "m3ddm":
                case = cases[row["ratio_label"]]
                if case.label not in strips:
                    prepared = prepare_clip(case.strip(gt), float(row["fps"]), case.ratio, settings)
                    strips[case.label] = pickle.dumps(prepared, protocol=pickle.HIGHEST_PROTOCOL)
                row["clip"] = strips[case.label]
    except Exception as exc:  # noqa: BLE001 - one bad clip must not stop the job
        return [_fail(dict(r, seconds_prepare=time.perf_counter() - t0), "prepare", exc) for r in rows]
    return [dict(r, seconds_prepare=time.perf_counter() - t0) for r in rows]


# --------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------


RANDOM_INIT = "random-init"


def make_lpips(metrics: Mapping[str, Any]):
    """The LPIPS network of the eval config, or None when LPIPS is off.

    ``lpips: auto`` uses the default weight locations when both files are there (else None),
    ``true`` requires them (ModelLoadError naming the missing file), ``false`` turns LPIPS off.
    ``lpips_weights`` / ``lpips_backbone`` = ``random-init``: seeded random weights (tests only).
    """
    from ..errors import ModelLoadError
    from .metrics import LPIPS

    mode = str(metrics.get("lpips", "auto")).lower()
    if mode == "false":
        return None
    device = str(metrics.get("device") or "cpu")
    head, backbone = metrics.get("lpips_weights"), metrics.get("lpips_backbone")
    if RANDOM_INIT in (head, backbone):
        return LPIPS(device=device, random_init=True)
    try:
        return LPIPS(backbone, head, device)
    except ModelLoadError:
        if mode == "auto" and head is None and backbone is None:
            return None
        raise


def make_fvd(metrics: Mapping[str, Any]):
    """The I3D feature extractor of the eval config, or None when FVD is off (``fvd_weights`` unset).
    ``fvd_weights: random-init``: a seeded random I3D (tests only)."""
    from .metrics import FVDFeatureExtractor

    weights = metrics.get("fvd_weights")
    if not weights:
        return None
    kind, device = str(metrics.get("fvd_kind") or "videogpt"), str(metrics.get("device") or "cpu")
    if weights == RANDOM_INIT:
        return FVDFeatureExtractor(kind, None, device, random_init=True)
    return FVDFeatureExtractor(kind, str(weights), device)


def _features(extractor, clip) -> bytes:
    import numpy as np

    fn = getattr(extractor, "features", None) or extractor
    feats = np.asarray(fn([clip]), dtype=np.float64)
    return pickle.dumps(feats[0], protocol=pickle.HIGHEST_PROTOCOL)


class ScoreStage:
    """CPU (or GPU for LPIPS / I3D) actor: output frames of a row -> scores, strip image, I3D features.

    ``m3ddm`` rows: ``finalize_clip`` of the fine stage's canvases (paste-back + crop, as the main job).
    Baseline rows: :func:`m3ddm_ray.evaluation.baselines.outpaint` of the strip. Then
    ``MaskCase.compose`` (ground truth in the known region) and :class:`metrics.ClipScores`.
    """

    def __init__(self, cfg: Mapping[str, Any], ecfg: Mapping[str, Any], output: str):
        from .metrics import ClipScores

        self.cfg, self.ecfg, self.output = cfg, ecfg, output.rstrip("/")
        self.protocol = build_protocol(ecfg)
        self.cases = {c.label: c for c in self.protocol.cases(int(cfg["canvas_size"]))}
        metrics = ecfg["metrics"]
        self.scores = ClipScores(make_lpips(metrics), ssim_window=str(metrics.get("ssim_window") or "gaussian"))
        self.fvd = make_fvd(metrics)
        self.so = cfg.get("storage_options") or None

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        from ..distributed.stages import _batch, _rows

        return _batch([self.score(row) for row in _rows(batch)])

    def _output(self, row: dict, case, gt):
        import numpy as np

        from ..distributed.config import job_settings
        from ..pipeline import finalize_clip, generated_array
        from . import baselines

        if row["method"] == "m3ddm":
            clip, state = pickle.loads(row["clip"]), pickle.loads(row["state"])
            row["seconds_unet"] = float(state.unet_seconds)
            return finalize_clip(clip, generated_array(clip, state), job_settings(self.cfg))
        b = self.ecfg["baselines"]
        kw = {}
        if row["method"] == "blur" and b.get("blur_sigma") is not None:
            kw["sigma"] = float(b["blur_sigma"])
        if row["method"] == "telea":
            kw["radius"] = int(b.get("telea_radius") or 5)
        t0 = time.perf_counter()
        strip = case.strip(gt)
        canvas = baselines.BASELINES[row["method"]](strip, case.geom, **kw)
        from .. import geometry

        masked = baselines.place_on_canvas(strip, case.geom)
        composite = geometry.paste_back(canvas, masked, geometry.pixel_mask(case.geom), mode="round")
        y0, y1, x0, x1 = case.out_box
        row["seconds_method"] = time.perf_counter() - t0
        return np.ascontiguousarray(composite[:, y0:y1, x0:x1])

    def score(self, row: dict) -> dict:
        from .report import strip_image

        t0 = time.perf_counter()
        case = self.cases.get(row["ratio_label"])
        gt = None
        if row["status"] in ("pending", "baseline"):
            try:
                gt = _ground_truth(row, self.protocol, self.so)
                out = self._output(row, case, gt)
                composed, known_error = case.compose(out, gt)
                mask = case.mask()
                s = self.scores(composed, gt, mask)
                row.update({k: s[k] for k in ("psnr", "ssim", "lpips", "bmse", "psnr_generated", "mse", "bmse_gt")})
                impl = dict(s["metric_impl"])
                row["metric_impl"] = json.dumps(impl, sort_keys=True)
                row["known_error"] = known_error
                inputs = gt * (1 - mask)[None, :, :, None]
                img = strip_image(inputs, composed, gt, max_frames=int(self.ecfg["report"].get("frames") or 4))
                row["image"] = self._write_png(row, img)
                if self.fvd is not None:
                    row["fvd_fake"] = _features(self.fvd, composed)
                row["status"] = "ok"
            except Exception as exc:  # noqa: BLE001
                row = _fail(row, "score", exc)
        if self.fvd is not None and row.get("fvd_real_wanted"):
            try:  # the ground truth's features, once per clip (the real set of FVD)
                gt = gt if gt is not None else _ground_truth(row, self.protocol, self.so)
                row["fvd_real"] = _features(self.fvd, gt)
            except Exception:  # noqa: BLE001 - the clip is then left out of the real set
                row["fvd_real"] = b""
        if case is not None:
            row.update(placement_exact=case.exact, frame_height=case.frame_hw[0], frame_width=case.frame_hw[1],
                       known_box=",".join(map(str, case.known_box)), target_ratio=str(case.ratio),
                       canvas_size=case.canvas_size)
        row["seconds_score"] = time.perf_counter() - t0
        row["clip"], row["state"] = b"", b""
        return row

    def _write_png(self, row: Mapping[str, Any], img) -> str:
        import cv2

        from ..storage import atomic_write_bytes

        name = f"{row['clip_id']}_{row['ratio_label']}_{row['method']}.png"
        ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        if not ok:
            raise RuntimeError("PNG encoding failed")
        atomic_write_bytes(f"{self.output}/report/img/{name}", buf.tobytes(), self.so)
        return f"img/{name}"


# --------------------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------------------


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


def _clean(row: Mapping[str, Any], schema) -> dict:
    """A result row in ``schema``'s types; missing metric values are NaN."""
    from ..distributed.job import conform_row

    return conform_row(row, schema, missing_float=float("nan"))


def _fvd(results: Sequence[Mapping[str, Any]], methods: Sequence[str], labels: Sequence[str]) -> tuple[dict, dict]:
    """FVD per (method, label) over the clips with features; ``(values, notes)``."""
    import numpy as np

    from .metrics import frechet_distance

    real = {r["clip_id"]: pickle.loads(r["fvd_real"]) for r in results if r.get("fvd_real")}
    values, notes = {}, {}
    for m in methods:
        for lab in labels:
            sel = [r for r in results if r["method"] == m and r["ratio_label"] == lab and r["status"] == "ok"
                   and r.get("fvd_fake") and r["clip_id"] in real]
            if len(sel) < 2:
                values[(m, lab)] = float("nan")
                notes[f"{m} {lab}"] = f"{len(sel)} clip(s) with features; FVD needs at least 2"
                continue
            fake = np.stack([pickle.loads(r["fvd_fake"]) for r in sel])
            gt = np.stack([real[r["clip_id"]] for r in sel])
            values[(m, lab)] = frechet_distance(fake, gt)
            notes[f"{m} {lab}"] = f"{len(sel)} clips"
    return values, notes


def _pool(stage_cfg: Mapping[str, Any], device: str) -> dict[str, Any]:
    from ..distributed.job import _pool as job_pool

    return job_pool(stage_cfg, device)


def run_eval(cfg: Mapping[str, Any], ecfg: Mapping[str, Any], output: str) -> EvalResult:
    """Run the evaluation of ``ecfg['dataset']`` under ``ecfg['root']`` and write the outputs under ``output``.

    Raises:
        InputError: bad dataset layout, protocol, method or config (nothing has run yet).
        ModelLoadError: configured LPIPS / FVD weights that are missing or do not load.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray.data

    from ..distributed.job import absolute_uri, init_ray, resolve_paths
    from ..distributed.stages import CoarseStage, FineStage
    from ..storage import atomic_output, atomic_write_bytes
    from . import datasets, report

    t0 = time.perf_counter()
    if not ecfg.get("dataset") or not ecfg.get("root"):
        raise InputError("give the dataset (--dataset) and its folder (--root)")
    methods = _methods(ecfg["methods"])
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
    metrics = dict(ecfg["metrics"])
    for key in ("lpips_weights", "lpips_backbone", "fvd_weights"):
        if metrics.get(key) and metrics[key] != RANDOM_INIT and not Path(str(metrics[key])).is_file():
            from ..errors import ModelLoadError

            raise ModelLoadError(f"{key.replace('_', '-')} {metrics[key]}: file not found")
    # load the metric networks once here (CPU) so bad weights fail before any work, and settle
    # lpips=auto for every worker: on only when this machine found the weight files
    metrics["lpips"] = make_lpips({**metrics, "device": "cpu"}) is not None
    make_fvd({**metrics, "device": "cpu"})
    ecfg = {**ecfg, "metrics": metrics}
    groups = build_rows(cfg, ecfg, clips, cases)

    init_ray(cfg)
    device = str(cfg["device"])
    prep_cfg = cfg["stages"]["prepare"]
    items = [{"rows": pickle.dumps(g, protocol=pickle.HIGHEST_PROTOCOL)} for g in groups]

    def prepare(item: dict) -> list[dict]:
        return prepare_group(pickle.loads(item["rows"]), cfg, ecfg)

    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.flat_map(prepare, num_cpus=float(prep_cfg.get("num_cpus") or 1), concurrency=prep_cfg.get("concurrency"))
    if "m3ddm" in methods:
        for stage_cls, name in ((CoarseStage, "coarse"), (FineStage, "fine")):
            ds = ds.map_batches(stage_cls, fn_constructor_kwargs={"cfg": dict(cfg)}, batch_format="numpy",
                                **_pool(cfg["stages"][name], device))
    score_cfg = dict(ecfg["score"])
    score_device = str(metrics.get("device") or "cpu")
    ds = ds.map_batches(ScoreStage, fn_constructor_kwargs={"cfg": dict(cfg), "ecfg": dict(ecfg), "output": output},
                        batch_format="numpy", **_pool(score_cfg, "cpu" if score_device == "cpu" else device))
    results = ds.take_all()

    order = {m: i for i, m in enumerate(methods)}
    lab_order = {lab: i for i, lab in enumerate(labels)}
    results.sort(key=lambda r: (str(r["clip_id"]), lab_order.get(r["ratio_label"], 99), order.get(r["method"], 99)))
    fvd, fvd_notes = ({}, {})
    if any(r.get("fvd_real") for r in results):
        fvd, fvd_notes = _fvd(results, methods, labels)
    schema = eval_schema()
    table = pa.Table.from_pylist([_clean(r, schema) for r in results], schema=schema)
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
    page = report.report_html(rows, md, title, {k: meta[k] for k in ("dataset", "split", "protocol", "methods",
                                                                     "model", "steps", "canvas_size", "num_clips")})
    atomic_write_bytes(uris["report"], page.encode("utf-8"), so)
    return EvalResult(table, summary, uris, time.perf_counter() - t0, md)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def add_eval_arguments(p) -> None:
    """Arguments of ``m3ddm-ray eval``."""
    p.add_argument("--dataset", default=None, choices=["davis2017", "davis2016", "youtube-vos", "folder"],
                   help="dataset layout of --root")
    p.add_argument("--root", default=None, help="dataset folder: local path or fsspec URL")
    p.add_argument("--output", required=True, help="output prefix: local folder or fsspec URL")
    p.add_argument("--protocol", default=None, choices=["benchmark", "m3ddm-plus"],
                   help="benchmark: 256x256, mask ratios 0.25/0.66 (M3DDM and follow-ups); "
                        "m3ddm-plus: long side 256 at a ratio, crop and outpaint back (default: config, benchmark)")
    p.add_argument("--method", action="append", default=None, metavar="METHOD",
                   help=f"{' | '.join(METHODS)}; comma-separate or repeat for several (default: m3ddm)")
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
        "methods": _methods(args.method) if args.method else None,
        "metrics__lpips_weights": args.lpips_weights, "metrics__lpips_backbone": args.lpips_backbone,
        "metrics__fvd_weights": args.fvd_weights, "metrics__fvd_kind": args.fvd_kind,
    }
    if args.clip_len is not None and args.clip_len < 0:
        raise InputError(f"--clip-len {args.clip_len}: give a number of frames >= 1, or 0 for whole sequences")
    if args.max_clips is not None and args.max_clips < 1:
        raise InputError(f"--max-clips {args.max_clips}: must be >= 1")
    return load_eval_config(
        args.config, args.overrides, eval_flags, model=args.model, vae=args.vae, dtype=args.dtype, device=args.device,
        canvas_size=args.canvas_size, sampler__steps=args.steps, sampler__seed=args.seed, ray__address=args.address,
    )


def cmd_eval(args) -> int:
    """``m3ddm-ray eval``: run the evaluation, print the summary; 0 ok, 1 if some rows failed."""
    import contextlib

    cfg, ecfg = config_from_args(args)
    quiet = contextlib.nullcontext()
    with contextlib.suppress(Exception):
        from ..cli import _quiet_diffusers

        quiet = _quiet_diffusers()
    with quiet:
        result = run_eval(cfg, ecfg, args.output)
    print(result.summary_text())
    return 1 if result.counts().get("error") else 0
