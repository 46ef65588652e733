"""The batch job on Ray Data: manifest -> prepare -> coarse pool -> fine pool -> finalize -> Parquet.

Runs on an embedded local Ray (no address), or joins a cluster (``--address`` / ``RAY_ADDRESS`` /
``ray.address`` in the config). The manifest is read and validated on the driver before any GPU work;
each manifest row becomes one row per target ratio, and every one of them ends in the result table
with its status (``ok``, ``error``, ``unchanged``) — a bad video never stops the job.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Any, Mapping

import pyarrow as pa

from ..quality import REPORT_KEYS
from .config import load_config
from .stages import RESULT_COLUMNS, CoarseStage, FinalizeStage, FineStage, PrepareStage, expand_manifest_row

#: Arrow schema of the result table (one row per (clip, ratio)); documented in the README.
RESULT_SCHEMA = pa.schema([
    ("clip_id", pa.string()), ("video_uri", pa.string()), ("ratio", pa.string()), ("output_uri", pa.string()),
    ("status", pa.string()), ("error", pa.string()), ("frames", pa.int64()), ("fps", pa.float64()),
    ("source_width", pa.int64()), ("source_height", pa.int64()), ("output_width", pa.int64()),
    ("output_height", pa.int64()),
    ("seconds_prepare", pa.float64()), ("seconds_coarse", pa.float64()), ("seconds_fine", pa.float64()),
    ("seconds_finalize", pa.float64()), ("seconds_unet", pa.float64()),
    ("model", pa.string()), ("vae", pa.string()), ("config_hash", pa.string()), ("settings", pa.string()),
    *[(key, pa.float64()) for key in REPORT_KEYS],
])
assert tuple(RESULT_SCHEMA.names) == RESULT_COLUMNS


@dataclass
class JobResult:
    """What :func:`run_job` returns: the result table and where it was written."""

    table: pa.Table
    results_uri: str
    seconds: float

    def counts(self) -> dict[str, int]:
        """Rows per status."""
        out: dict[str, int] = {}
        for s in self.table.column("status").to_pylist():
            out[s] = out.get(s, 0) + 1
        return out

    def summary(self) -> str:
        """Human summary: rows per status, frames per second, where the outputs are."""
        rows = self.table.to_pylist()
        frames = sum(r["frames"] or 0 for r in rows if r["status"] == "ok")
        c = self.counts()
        parts = ", ".join(f"{k} {c.get(k, 0)}" for k in ("ok", "unchanged", "skipped", "error"))
        lines = [f"{len(rows)} outputs (clip x ratio): {parts}",
                 f"{frames} frames outpainted in {self.seconds:.1f} s ({frames / max(self.seconds, 1e-9):.2f} frames/s)",
                 f"results: {self.results_uri}"]
        for r in rows:
            if r["status"] == "error":
                lines.append(f"  error {r['clip_id']} {r['ratio']}: {r['error']}")
        return "\n".join(lines)


def init_ray(cfg: Mapping[str, Any]):
    """Connect to ``cfg['ray']['address']`` (or ``RAY_ADDRESS``), or start an embedded local Ray.

    Reuses an already initialised Ray session (tests, notebooks).
    """
    import ray

    if ray.is_initialized():
        return ray
    rc = cfg.get("ray") or {}
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True}
    address = rc.get("address") or os.environ.get("RAY_ADDRESS")
    if address:
        kwargs["address"] = address
    else:  # "local": never attach by accident to a cluster someone started with `ray start`
        kwargs["address"] = "local"
        for key in ("num_cpus", "num_gpus"):
            if rc.get(key) is not None:
                kwargs[key] = rc[key]
    ray.init(**kwargs)
    return ray


def _pool(stage_cfg: Mapping[str, Any], device: str) -> dict[str, Any]:
    import ray.data

    gpus = float(stage_cfg.get("num_gpus") or 0)
    if str(device) == "cpu":
        gpus = 0.0
    return {
        "compute": ray.data.ActorPoolStrategy(size=int(stage_cfg.get("num_actors") or 1)),
        "num_gpus": gpus, "num_cpus": float(stage_cfg.get("num_cpus") or 1),
        "batch_size": int(stage_cfg.get("batch_size") or 1),
    }


def absolute_uri(uri: str) -> str:
    """Relative local paths -> absolute (Ray workers on other nodes do not share the driver's cwd)."""
    text = str(uri)
    if "://" in text or os.path.isabs(text):
        return text
    return os.path.abspath(text)


def resolve_paths(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``cfg`` whose local model/VAE folders are absolute (hub ids and URLs unchanged)."""
    out = dict(cfg)
    for key in ("model", "vae"):
        if os.path.exists(str(cfg[key])):
            out[key] = absolute_uri(cfg[key])
    return out


def build_rows(cfg: Mapping[str, Any], manifest_uri: str, output: str) -> list[dict]:
    """Read and validate the manifest (errors before any GPU work); one pending row per (clip, ratio).

    Relative local video paths and the output prefix are made absolute here, on the driver.
    """
    from .manifest import read_manifest

    so = cfg.get("storage_options") or None
    manifest = read_manifest(manifest_uri, so, default_ratios=cfg["ratios"])
    rows: list[dict] = []
    for m in manifest:
        record = dataclasses.asdict(m)
        record["video_uri"] = absolute_uri(record["video_uri"])
        rows.extend(expand_manifest_row(record, cfg, absolute_uri(output)))
    return rows


def _clean(row: Mapping[str, Any]) -> dict:
    """Coerce a result row to the schema's types (Ray's block formats may turn None into NaN)."""
    import math

    out = {}
    for field in RESULT_SCHEMA:
        v = row.get(field.name)
        if isinstance(v, float) and math.isnan(v) and not pa.types.is_floating(field.type):
            v = None
        if v is not None and pa.types.is_integer(field.type):
            v = int(v)
        elif v is not None and pa.types.is_floating(field.type):
            v = float(v)
        elif v is not None and pa.types.is_string(field.type):
            v = str(v)
        out[field.name] = v
    return out


def diffusion_dataset(cfg: Mapping[str, Any], rows: list[dict]):
    """The Ray Dataset up to the fine stage: clips -> prepare (CPU) -> coarse pool -> fine pool.

    Rows come out with ``clip`` and ``state`` (pickled) still attached; :func:`run_job` appends the
    finalize stage. Exposed separately so tests can compare the diffusion results with the
    single-process pipeline bit for bit.
    """
    import ray.data

    from .stages import group_by_clip

    init_ray(cfg)
    clips = [{"rows": json.dumps([{k: v for k, v in r.items() if k not in ("clip", "state")} for r in g])}
             for g in group_by_clip(rows)]
    device = str(cfg["device"])
    prep_cfg = cfg["stages"]["prepare"]

    def prepare(item: dict) -> list[dict]:
        group = [dict(r, clip=b"", state=b"") for r in json.loads(item["rows"])]
        return PrepareStage(cfg)(group)

    ds = ray.data.from_items(clips, override_num_blocks=max(1, len(clips)))
    ds = ds.flat_map(prepare, num_cpus=float(prep_cfg.get("num_cpus") or 1), concurrency=prep_cfg.get("concurrency"))
    for stage_cls, name in ((CoarseStage, "coarse"), (FineStage, "fine")):
        pool = _pool(cfg["stages"][name], device)
        ds = ds.map_batches(stage_cls, fn_constructor_kwargs={"cfg": dict(cfg)}, batch_format="numpy", **pool)
    return ds


def run_job(cfg: Mapping[str, Any], manifest_uri: str, output: str) -> JobResult:
    """Run the whole batch job and write ``<output>/results/results-<time>.parquet`` atomically.

    Raises:
        InputError: an invalid manifest or config (nothing has run yet).
    """
    import pyarrow.parquet as pq

    from ..storage import atomic_output

    t0 = time.perf_counter()
    cfg = resolve_paths(cfg)
    output = absolute_uri(output)
    rows = build_rows(cfg, manifest_uri, output)
    fin_cfg = cfg["stages"]["finalize"]

    def finalize(row: dict) -> dict:
        return FinalizeStage(cfg)(dict(row))

    ds = diffusion_dataset(cfg, rows)
    ds = ds.map(finalize, num_cpus=float(fin_cfg.get("num_cpus") or 1), concurrency=fin_cfg.get("concurrency"))
    results = ds.take_all()
    table = pa.Table.from_pylist([_clean(r) for r in results], schema=RESULT_SCHEMA)
    table = table.sort_by([("clip_id", "ascending"), ("ratio", "ascending")])
    results_uri = f"{output.rstrip('/')}/results/results-{time.strftime('%Y%m%dT%H%M%S')}.parquet"
    with atomic_output(results_uri, cfg.get("storage_options") or None, suffix=".parquet") as tmp:
        pq.write_table(table, tmp)
    return JobResult(table, results_uri, time.perf_counter() - t0)


# --------------------------------------------------------------------------- command line
def add_outpaint_arguments(p) -> None:
    """Arguments of ``m3ddm-ray outpaint`` / ``python -m pipelines.outpaint``."""
    p.add_argument("--manifest", required=True, help="Parquet / JSONL / CSV manifest (local path or fsspec URL)")
    p.add_argument("--output", required=True, help="output prefix: local folder or fsspec URL (s3://bucket/out)")
    p.add_argument("--config", default=None, help="YAML job config (see configs/); defaults: configs/default.yaml values")
    p.add_argument("--ratio", action="append", default=None, help="target ratio(s), e.g. 9:16 or 9:16,1:1 (repeatable)")
    p.add_argument("--model", default=None, help="M3DDM UNet: folder, fsspec URL or hub id")
    p.add_argument("--vae", default=None, help="SD 1.5 VAE: folder, fsspec URL or hub id")
    p.add_argument("--steps", type=int, default=None, help="PNDM steps (50 official)")
    p.add_argument("--canvas-size", type=int, default=None, help="square canvas side in pixels (256 official)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--dtype", default=None, choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--device", default=None, help="auto, cpu, cuda")
    p.add_argument("--output-size", default=None, choices=["canvas", "source"])
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or an embedded local Ray)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override any config key, e.g. --set stages.coarse.num_actors=2")


def run_from_args(args) -> int:
    """Run the batch job from parsed arguments; prints the summary. Returns 0, or 1 if any row failed."""
    from ..geometry import parse_ratios

    ratios = [str(r) for r in parse_ratios(",".join(args.ratio))] if args.ratio else None
    cfg = load_config(
        args.config, args.overrides, model=args.model, vae=args.vae, dtype=args.dtype, device=args.device,
        ratios=ratios, canvas_size=args.canvas_size, output_size=args.output_size,
        sampler__steps=args.steps, sampler__seed=args.seed, ray__address=args.address,
    )
    result = run_job(cfg, args.manifest, args.output)
    print(result.summary())
    return 1 if result.counts().get("error") else 0
