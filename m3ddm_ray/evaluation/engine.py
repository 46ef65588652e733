"""The building blocks of the evaluation jobs (outpaint protocol in :mod:`.run`, inpaint / extend in
:mod:`.task_job`): the result type, the Ray dataset of clips -> prepare -> model pools -> scoring,
error rows for what Ray did not return, and the metric settings. One module so that both jobs use
them without importing each other."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .rows import prepare_group
from .scoring import RANDOM_INIT, ScoreStage, make_fvd, make_lpips

__all__ = ["EvalResult", "eval_dataset", "run_rows", "settle_metrics", "write_outputs"]


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


def eval_dataset(cfg: Mapping[str, Any], ecfg: Mapping[str, Any], groups: Sequence[list[dict]],
                 methods: Sequence[str], output: str, spec: Mapping[str, Any] | None = None):
    """The Ray Dataset of the evaluation: one item per clip -> prepare (CPU ``flat_map``) -> the outpaint
    job's coarse and fine actor pools (``m3ddm`` only) -> the scoring pool.

    Every pool and task stage is built like the outpaint job's (:func:`~m3ddm_ray.distributed.job.
    map_on_actor_pool`, :func:`~m3ddm_ray.distributed.job.map_on_task_pool`), with its retry limits
    (``retries.*``): a clip that kills its actor every time ends as error rows instead of being
    retried forever. ``spec`` (:func:`.config.check_task_settings`) of an ``inpaint`` / ``extend``
    evaluation swaps the prepare function and the scoring actor for those of :mod:`.task_rows` /
    :mod:`.task_scoring`; the model pools are the same.
    """
    import ray.data

    from ..distributed.job import map_on_actor_pool, map_on_task_pool
    from ..distributed.stages import CoarseStage, FineStage

    device = str(cfg["device"])
    prep_cfg = cfg["stages"]["prepare"]
    items = [{"rows": pickle.dumps(list(g), protocol=pickle.HIGHEST_PROTOCOL)} for g in groups]

    task = spec is not None and spec["task"] != "outpaint"

    def prepare(item: dict) -> list[dict]:
        if task:
            from .task_rows import prepare_task_group

            return prepare_task_group(pickle.loads(item["rows"]), cfg, spec)
        return prepare_group(pickle.loads(item["rows"]), cfg, ecfg)

    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = map_on_task_pool(ds.flat_map, prepare, cfg, prep_cfg)
    if "m3ddm" in methods:
        for stage_cls, name in ((CoarseStage, "coarse"), (FineStage, "fine")):
            ds = map_on_actor_pool(ds, stage_cls, cfg, cfg["stages"][name], device,
                                   fn_constructor_kwargs={"cfg": dict(cfg), "schema": "eval"})
    score_device = str(ecfg["metrics"].get("device") or "cpu")
    score_cls, kwargs = ScoreStage, {"cfg": dict(cfg), "ecfg": dict(ecfg), "output": output}
    if task:
        from .task_scoring import TaskScoreStage

        score_cls, kwargs = TaskScoreStage, {**kwargs, "spec": dict(spec)}
    return map_on_actor_pool(ds, score_cls, cfg, dict(ecfg["score"]), "cpu" if score_device == "cpu" else device,
                             fn_constructor_kwargs=kwargs)


def _lost_rows(groups: Sequence[list[dict]], results: Sequence[Mapping[str, Any]], failure: BaseException,
               cfg: Mapping[str, Any]) -> list[dict]:
    """Error rows for the rows Ray did not return before it gave up (message redacted, as the job's)."""
    from ..distributed.stages import redact

    got = {(r["clip_id"], r["ratio_label"], r["method"]) for r in results}
    first_line = (str(failure).strip().splitlines() or [""])[0][:300]
    msg = redact(f"{type(failure).__name__}: {first_line}", cfg)
    return [dict(r, status="error", clip=b"", state=b"",
                 error=f"eval: {r['uri']}: the Ray execution failed before this row finished ({msg})")
            for g in groups for r in g if (r["clip_id"], r["ratio_label"], r["method"]) not in got]


def settle_metrics(ecfg: Mapping[str, Any]) -> dict:
    """``ecfg`` with ``metrics.lpips`` settled to True / False: the metric networks are loaded once
    here (CPU) so bad weights fail before any work, and ``lpips: auto`` is on for every worker only
    when this machine found the weight files.

    Raises:
        ModelLoadError: a configured weight file that is missing or does not load.
    """
    metrics = dict(ecfg["metrics"])
    for key in ("lpips_weights", "lpips_backbone", "fvd_weights"):
        if metrics.get(key) and metrics[key] != RANDOM_INIT and not Path(str(metrics[key])).is_file():
            from ..errors import ModelLoadError

            raise ModelLoadError(f"{key.replace('_', '-')} {metrics[key]}: file not found")
    metrics["lpips"] = make_lpips({**metrics, "device": "cpu"}) is not None
    make_fvd({**metrics, "device": "cpu"})
    return {**ecfg, "metrics": metrics}




def run_rows(cfg: Mapping[str, Any], ecfg: Mapping[str, Any], groups: Sequence[list[dict]], methods: Sequence[str],
             labels: Sequence[str], output: str, spec: Mapping[str, Any] | None = None):
    """Run the evaluation rows on Ray, as both eval jobs do: start / join Ray, place every pool before
    any work (the scoring pool counts; no finalize here), run :func:`eval_dataset`, turn the rows Ray
    did not return into error rows, sort by (clip, case label, method) and compute FVD per set
    when the rows carry I3D features. When the output is a log, not a terminal, one progress line
    every ``ray.progress_interval_s`` and one at the end, as the outpaint job
    (:class:`~m3ddm_ray.distributed.collect.ProgressLog`).

    Returns:
        ``(cfg, ecfg, results, fvd, fvd_notes)``: the resolved configs, the result rows, FVD per
        (method, label) and the notes on each FVD set.

    Raises:
        ResourceError: a pool cannot be placed.
    """
    from ..distributed.job import ProgressLog, collect_rows, init_ray, resolve_runtime, set_progress_output
    from .scoring import fvd_by_set

    init_ray(cfg)
    actors = (("coarse", "fine") if "m3ddm" in methods else ()) + ("score",)
    cfg, _ = resolve_runtime({**cfg, "stages": {**cfg["stages"], "score": dict(ecfg["score"])}},
                             actors=actors, tasks=("prepare",))
    ecfg = {**ecfg, "score": cfg["stages"]["score"]}
    task = spec is not None and spec["task"] != "outpaint"
    pools = {"coarse": "CoarseStage", "fine": "FineStage"} if "m3ddm" in methods else {}
    pools["score"] = "TaskScoreStage" if task else "ScoreStage"  # watched until they start
    set_progress_output()  # before the dataset is built: it keeps the context it was created with
    total = sum(map(len, groups))
    progress = ProgressLog.for_job(cfg, total)
    results, failure = collect_rows(eval_dataset(cfg, ecfg, groups, methods, output, spec), cfg,
                                    total, pools=pools, progress=progress)
    progress.finish()
    if failure is not None:
        results += _lost_rows(groups, results, failure, cfg)
    order = {m: i for i, m in enumerate(methods)}
    lab_order = {lab: i for i, lab in enumerate(labels)}
    results.sort(key=lambda r: (str(r["clip_id"]), lab_order.get(r["ratio_label"], 99), order.get(r["method"], 99)))
    fvd, fvd_notes = ({}, {})
    if any(r.get("fvd_real") for r in results):
        fvd, fvd_notes = fvd_by_set(results, methods, labels)
    return cfg, ecfg, results, fvd, fvd_notes


def write_outputs(output: str, so, table, clips, summary: Mapping[str, Any], md: str, title: str,
                  meta: Mapping[str, Any], report_keys: Sequence[str], t0: float) -> "EvalResult":
    """Publish an evaluation's outputs under ``output``, each atomically: ``per_clip.parquet``
    (``table``), ``manifest.parquet`` (the clips), ``summary.md`` (``md``), ``summary.json``
    (``summary`` + ``meta``) and ``report/index.html`` (``meta``'s ``report_keys`` in its header).
    Returns the :class:`EvalResult` (wall time from ``t0``, ``time.perf_counter`` seconds)."""
    import time

    import pyarrow.parquet as pq

    from ..storage import atomic_output, atomic_write_bytes
    from . import datasets, report

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
    page = report.report_html(table.to_pylist(), md, title, {k: meta[k] for k in report_keys})
    atomic_write_bytes(uris["report"], page.encode("utf-8"), so)
    return EvalResult(table, summary, uris, time.perf_counter() - t0, md)
