"""Evaluation rows are as safe as job rows (issue 13, item 5): one ``fail_row`` with credential redaction,
and eval pools built with the job's retry limits. No Ray needed: the rows and stages are called
directly, and the Dataset wiring is checked against a recording stand-in for ``ray.data``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from m3ddm_ray.distributed import stages
from m3ddm_ray.evaluation import engine
from m3ddm_ray.evaluation import rows as eval_rows
from m3ddm_ray.evaluation import run
from m3ddm_ray.evaluation.datasets import EvalClip

from conftest import GOLDEN

ROOT = Path(__file__).resolve().parent.parent
SECRET = "sEcReT-eval-5a4b3c2d1e-never-print-me"


def _configs(tmp_path, *extra):
    parser = argparse.ArgumentParser(prog="m3ddm-ray")
    run.add_eval(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([
        "eval", "--dataset", "folder", "--root", str(tmp_path), "--output", str(tmp_path / "out"),
        "--config", str(ROOT / "configs" / "tiny-cpu.yaml"),
        "--model", str(GOLDEN / "models" / "unet"), "--vae", str(GOLDEN / "models" / "vae"),
        "--steps", "2", "--canvas-size", "64", "--set", "eval.benchmark.size=64",
        "--set", "eval.metrics.lpips=false", *extra])
    cfg, ecfg = run.config_from_args(args)
    cfg["storage_options"] = {"secret": SECRET}  # what a credential in the config looks like
    return cfg, ecfg


def _rows_of_a_missing_clip(tmp_path, cfg, ecfg, methods):
    uri = str(tmp_path / SECRET / "missing.mp4")  # the secret also shows up in the error text
    clip = EvalClip("c0", "folder", "val", "c0", uri, None, 0, 16, 24.0)
    cases = run.build_protocol(ecfg).cases(int(cfg["canvas_size"]))
    (group,) = run.build_rows(cfg, {**ecfg, "methods": methods}, [clip], cases)
    return group, uri


def test_eval_prepare_errors_redact_credentials_like_job_rows(tmp_path):
    cfg, ecfg = _configs(tmp_path)
    group, uri = _rows_of_a_missing_clip(tmp_path, cfg, ecfg, ["m3ddm"])
    out = eval_rows.prepare_group(group, cfg, ecfg)
    assert [r["status"] for r in out] == ["error"] * len(group) and len(group) == 2  # two mask ratios
    for r in out:
        assert r["error"].startswith("prepare: ") and "missing.mp4" in r["error"]
        assert SECRET not in r["error"] and SECRET not in r["traceback"] and "***" in r["error"]
        assert r["clip"] == b"" and r["state"] == b""
    # the very same rule as the outpaint job's error rows
    job_row = stages.fail_row({"video_uri": uri}, "prepare", FileNotFoundError(uri), cfg)
    assert SECRET not in job_row["error"] and "***" in job_row["error"]


def test_eval_score_errors_redact_credentials_like_job_rows(tmp_path):
    cfg, ecfg = _configs(tmp_path)
    group, _ = _rows_of_a_missing_clip(tmp_path, cfg, ecfg, ["replicate"])
    scorer = run.ScoreStage(cfg, {**ecfg, "methods": ["replicate"]}, str(tmp_path / "out"))
    out = [scorer.score(dict(r)) for r in group]
    assert [r["status"] for r in out] == ["error"] * 2
    for r in out:
        assert r["error"].startswith("score: ") and "missing.mp4" in r["error"]
        assert SECRET not in r["error"] and SECRET not in r["traceback"] and "***" in r["error"]


class _RecordingDataset:
    """Stands in for a Ray Dataset: records every transformation and its keyword arguments."""

    def __init__(self, calls):
        self.calls = calls

    def _record(self, name):
        def method(fn, **kwargs):
            self.calls.append((name, fn, kwargs))
            return self
        return method

    def __getattr__(self, name):
        if name in ("flat_map", "map_batches", "map"):
            return self._record(name)
        raise AttributeError(name)


@pytest.mark.parametrize("methods", [["replicate"], ["m3ddm", "replicate"]])
def test_eval_pools_and_tasks_carry_the_job_retry_limits(tmp_path, monkeypatch, methods):
    import ray.data

    cfg, ecfg = _configs(tmp_path, "--set", "retries.actor_max_task_retries=2", "--set", "retries.task_max_retries=5")
    group, _ = _rows_of_a_missing_clip(tmp_path, cfg, ecfg, methods)
    calls: list = []
    monkeypatch.setattr(ray.data, "from_items", lambda items, **kw: _RecordingDataset(calls))
    run.eval_dataset(cfg, {**ecfg, "methods": methods}, [group], methods, str(tmp_path / "out"))
    names = [(name, getattr(fn, "__name__", "")) for name, fn, _ in calls]
    expected = [("flat_map", "prepare")]
    if "m3ddm" in methods:
        expected += [("map_batches", "CoarseStage"), ("map_batches", "FineStage")]
    expected += [("map_batches", "ScoreStage")]
    assert names == expected
    prepare_kwargs = calls[0][2]
    assert prepare_kwargs["max_retries"] == 5
    for _, _, kwargs in calls[1:]:  # every actor pool: restarted actors, but a bounded number of retries
        assert (kwargs["max_restarts"], kwargs["max_task_retries"]) == (-1, 2)
        assert kwargs["batch_format"] == "numpy" and "compute" in kwargs


def _score_dies_on(clip_id: str):
    """A ScoreStage whose actor process dies (``os._exit``) on every row of ``clip_id``: a poison
    clip. Local class, so Ray pickles it by value into the actors."""

    class Poisoned(run.ScoreStage):
        def score(self, row):
            import os

            if row["clip_id"] == clip_id:
                os._exit(1)
            return super().score(row)

    return Poisoned


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_a_clip_that_kills_its_score_actor_ends_as_error_rows(ray_session, tmp_path, monkeypatch):
    """Without retry limits on the eval pools this ran forever; now Ray gives up after
    ``retries.actor_max_task_retries`` and the rows it did not return are error rows."""
    import json

    import numpy as np
    import pyarrow.parquet as pq

    from test_eval_job import eval_args, tiny_flags, write_davis

    root = tmp_path / "DAVIS"
    write_davis(root, {"grey": np.full((9, 32, 48, 3), 128, np.uint8),
                       "poison": np.full((9, 32, 48, 3), 60, np.uint8)}, ".png")
    args = eval_args(*tiny_flags(root, tmp_path / "out", "--method", "replicate", "--clip-len", "9",
                                 "--set", "eval.metrics.lpips=false", "--set", "retries.actor_max_task_retries=1"))
    monkeypatch.setattr(engine, "ScoreStage", _score_dies_on("poison"))  # eval_dataset's scoring pool
    assert args.func(args) == 1
    rows = pq.read_table(tmp_path / "out" / "per_clip.parquet").to_pylist()
    assert sorted((r["clip_id"], r["ratio_label"]) for r in rows) == [
        ("grey", "0.25"), ("grey", "0.66"), ("poison", "0.25"), ("poison", "0.66")]
    for r in rows:
        if r["clip_id"] == "poison":
            assert r["status"] == "error" and "the Ray execution failed" in r["error"], r["error"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["methods"]["replicate"]
