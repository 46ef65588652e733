"""Scheduled ETL runs that survive crashes: resume, incremental manifests, retries, faults, secrets.

Pure parts (resume decisions, retry helper, time-outs, OOM fallback) run without Ray; the fault
tests run the real Ray job with the tiny model (2 steps, 64 px canvas).
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from m3ddm_ray import cli, storage
from m3ddm_ray.distributed import job, resume, stages
from m3ddm_ray.distributed.job import RESULT_SCHEMA, build_rows, run_job
from m3ddm_ray.distributed.stages import RESULT_COLUMNS

from conftest import DATA
from test_ray_job import manifest, tiny_cfg

REPO = DATA.parent.parent


# --------------------------------------------------------------------------- helpers
class FaultyS3:
    """A moto S3 server on 127.0.0.1 behind a WSGI wrapper that injects faults by object key.

    * ``deny(prefix)``: GET / HEAD of keys under ``bucket/prefix`` answer 403 AccessDenied (what an
      object without read permission gives; root can read any local file, so this is how "permission
      denied" is tested);
    * ``fail_puts(prefix, times)``: the first ``times`` PUTs of each key under it answer 503
      ServiceUnavailable (a transient error; pair it with ``config_kwargs={"retries":
      {"max_attempts": 1}}`` so that botocore does not hide it, and our retry layer must act).

    Every request is logged as ``(method, key, status)``. Moto's state is process-wide, so each
    user takes its own bucket.
    """

    def __init__(self):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        self._app = DomainDispatcherApplication(create_backend_app)
        self.log: list[tuple[str, str, int]] = []
        self.denied: list[str] = []
        self.put_faults: dict[str, int] = {}
        self._failed = Counter()
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._wsgi, True, request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host}:{port}"

    def options(self, secret: str = "etl-secret", **extra) -> dict:
        return {"key": "etl-key", "secret": secret,
                "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}, **extra}

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="x",
                     aws_secret_access_key="x").create_bucket(Bucket=name)

    def deny(self, prefix: str) -> None:
        self.denied.append(prefix)

    def fail_puts(self, prefix: str, times: int = 1) -> None:
        self.put_faults[prefix] = times

    def puts(self, key: str) -> list[int]:
        """Statuses of the PUTs of ``key``, in order."""
        return [st for m, k, st in self.log if m == "PUT" and k == key]

    def _error(self, start_response, status: str, code: str, method: str):
        body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>injected {code}</Message></Error>").encode()
        start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
        return [b"" if method == "HEAD" else body]

    def _wsgi(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        key = unquote(environ.get("PATH_INFO", "")).lstrip("/")
        if method in ("GET", "HEAD") and any(key.startswith(p) for p in self.denied):
            self.log.append((method, key, 403))
            return self._error(start_response, "403 Forbidden", "AccessDenied", method)
        if method == "PUT" and "?" not in key:
            with self._lock:
                limit = next((n for p, n in self.put_faults.items() if key.startswith(p)), 0)
                fail = self._failed[key] < limit
                if fail:
                    self._failed[key] += 1
            if fail:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                if length:
                    environ["wsgi.input"].read(length)  # consume the upload, then refuse it
                self.log.append((method, key, 503))
                return self._error(start_response, "503 Service Unavailable", "ServiceUnavailable", method)
        seen: list[int] = []

        def recording_start_response(status, headers, exc_info=None):
            seen.append(int(status.split()[0]))
            return start_response(status, headers, exc_info)

        out = self._app(environ, recording_start_response)
        self.log.append((method, key, seen[0] if seen else 0))
        return out

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def faulty_s3():
    pytest.importorskip("moto.server")
    pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    server = FaultyS3()
    yield server
    server.close()


def _no_ray(monkeypatch):
    """Make any attempt to start Ray or load a model fail loudly."""
    import ray

    from m3ddm_ray.models import loading

    def boom(*a, **k):
        raise AssertionError("Ray / a model was started for a run with nothing to compute")

    monkeypatch.setattr(job, "init_ray", boom)
    monkeypatch.setattr(ray, "init", boom)
    monkeypatch.setattr(loading, "load_unet", boom)
    monkeypatch.setattr(loading, "load_vae", boom)


def _videos(folder: Path) -> list[str]:
    """Published (non-hidden) mp4 files under ``folder``, relative."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.mp4") if not p.name.startswith("."))


def _results_files(out: Path) -> list[Path]:
    return sorted(p for p in (out / "results").glob("results-*.parquet")) if (out / "results").exists() else []


# --------------------------------------------------------------------------- resume decisions (pure)
def _row(cid, ratio="9:16", h="abc", out="/o"):
    return {"clip_id": cid, "ratio": ratio, "config_hash": h, "status": "pending", "video_uri": f"/v/{cid}.mp4",
            "output_uri": stages.output_key(out, cid, ratio, h)}


def test_decide_table_of_the_three_modes():
    out = "/o"
    rows = {name: _row(name) for name in ("ok_out", "orphan", "err_out", "err", "ok_gone", "new", "unch")}
    files = {resume.relative_to(out, rows[n]["output_uri"]) for n in ("ok_out", "orphan", "err_out", "unch")}
    earlier = [("/o/results/results-1.parquet", [
        {"clip_id": "ok_out", "ratio": "9:16", "config_hash": "abc", "status": "error"},
        {"clip_id": "err_out", "ratio": "9:16", "config_hash": "abc", "status": "ok"},
        {"clip_id": "ok_gone", "ratio": "9:16", "config_hash": "abc", "status": "ok"},
        {"clip_id": "unch", "ratio": "9:16", "config_hash": "abc", "status": "unchanged"},
    ]), ("/o/results/results-2.parquet", [
        {"clip_id": "ok_out", "ratio": "9:16", "config_hash": "abc", "status": "ok"},       # later row wins
        {"clip_id": "err_out", "ratio": "9:16", "config_hash": "abc", "status": "error"},
        {"clip_id": "err", "ratio": "9:16", "config_hash": "abc", "status": "error"},
        {"clip_id": "unch", "ratio": "9:16", "config_hash": "abc", "status": "skipped"},   # transparent
    ])]
    state = resume.OutputState(files=frozenset(files), results=resume.last_results(earlier))
    want = {  # name: (resume, retry-errors, overwrite)
        "ok_out": ("skipped", "skipped", "pending"),
        "orphan": ("skipped", "skipped", "pending"),
        "err_out": ("pending", "pending", "pending"),
        "err": ("pending", "pending", "pending"),
        "ok_gone": ("pending", "skipped", "pending"),
        "new": ("pending", "skipped", "pending"),
        "unch": ("skipped", "skipped", "pending"),
    }
    for name, expected in want.items():
        got = tuple(resume.decide(rows[name], state, out, m)[0] for m in ("resume", "retry-errors", "overwrite"))
        assert got == expected, name
    assert resume.decide(rows["unch"], state, out)[1] == "/o/results/results-1.parquet"  # skipped row ignored
    assert resume.decide(rows["orphan"], state, out)[1] is None
    assert resume.decide(rows["ok_out"], state, out, "overwrite")[1] is None
    planned = {r["clip_id"]: r for r in resume.plan_rows(list(rows.values()), state, out, "retry-errors")}
    assert planned["new"]["output_uri"] is None and planned["ok_out"]["output_uri"] == rows["ok_out"]["output_uri"]


def test_resume_keys_rows_by_task_and_ratio_and_reads_older_tables_where_ratio_held_the_task():
    out = "/o"

    def task_row(cid, task):
        return {"clip_id": cid, "task": task, "ratio": None, "config_hash": "abc", "status": "pending",
                "video_uri": f"/v/{cid}.mp4", "output_uri": stages.output_key(out, cid, task, "abc")}

    inp, ext = task_row("i", "inpaint"), task_row("e", "extend")
    assert inp["output_uri"] == "/o/i/i_inpaint_abc.mp4"
    older = [  # an older table: ratio holds the task name (with or without a task value)
        {"clip_id": "i", "task": "inpaint", "ratio": "inpaint", "config_hash": "abc", "status": "ok"},
        {"clip_id": "e", "task": None, "ratio": "extend", "config_hash": "abc", "status": "error"},
        {"clip_id": "o", "ratio": "9:16", "config_hash": "abc", "status": "ok"},  # a table without `task`
    ]
    assert [(r["task"], r["ratio"]) for r in map(resume.normalise_result, older)] == [
        ("inpaint", None), ("extend", None), ("outpaint", "9:16")]
    assert resume.normalise_result(older[0]) == dict(older[0], ratio=None)  # the other columns stay
    assert resume.result_key(older[0]) == resume.result_key(inp) == ("i", "inpaint", None, "abc")
    assert resume.result_key(dict(inp, ratio=float("nan"))) == ("i", "inpaint", None, "abc")  # None via Ray
    assert resume.result_key(older[2]) == resume.result_key(_row("o")) == ("o", "outpaint", "9:16", "abc")
    state = resume.OutputState(files=frozenset(resume.relative_to(out, r["output_uri"]) for r in (inp, ext)),
                               results=resume.last_results([("/o/results/results-1.parquet", older)]))
    assert resume.decide(inp, state, out) == ("skipped", "/o/results/results-1.parquet")
    assert resume.decide(ext, state, out) == ("pending", "/o/results/results-1.parquet")  # an older error
    assert resume.decide(ext, state, out, "retry-errors")[0] == "pending"
    # an outpaint row of the same clip and hash never takes the inpaint row's verdict
    same = _row("i")
    assert resume.result_key(same) == ("i", "outpaint", "9:16", "abc")
    assert resume.decide(same, state, out) == ("pending", None)
    # the summary names a task row by its task, an outpaint row by its ratio
    table = pa.Table.from_pylist([job.conform_row(dict(r, status="error", error="prepare: bad", output_uri=None))
                                  for r in (inp, same)], schema=RESULT_SCHEMA)
    summary = job.JobResult(table, "/o/results/r.parquet", 1.0).summary()
    assert "  error i inpaint: prepare: bad" in summary and "  error i 9:16: prepare: bad" in summary


def test_other_config_hash_or_temp_names_never_count_as_done():
    out = "/o"
    row = _row("c")
    final = resume.relative_to(out, row["output_uri"])
    folder, name = final.rsplit("/", 1)
    temps = {f"{folder}/.{name}.0123456789ab.tmp.mp4", f"{folder}/{name}.part"}  # what a killed writer leaves
    state = resume.OutputState(files=frozenset(temps | {final.replace("_abc", "_def")}), results=resume.last_results(
        [("r", [{"clip_id": "c", "ratio": "9:16", "config_hash": "def", "status": "ok"}])]))
    assert resume.decide(row, state, out) == ("pending", None)
    assert not resume.is_results_file("results/.results-20250101T000000.000000Z-abcdef.parquet.1234.tmp.parquet")
    assert not resume.is_results_file("clip/results-x.parquet") and not resume.is_results_file("results/x.parquet")
    assert resume.is_results_file("results/" + resume.results_file_name())
    names = [resume.results_file_name() for _ in range(50)]
    assert len(set(names)) == 50 and names == sorted(names, key=lambda n: n[:32])  # sortable by time


def test_scan_output_lists_once_and_ignores_unreadable_tables(tmp_path, monkeypatch):
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    (out / "c").mkdir()
    (out / "c" / "c_9x16_abc.mp4").write_bytes(b"x")
    t = pa.table({"clip_id": ["c"], "ratio": ["9:16"], "config_hash": ["abc"], "status": ["ok"]})
    pq.write_table(t, out / "results" / "results-20250101T000000.000000Z-aaaaaa.parquet")
    (out / "results" / "results-20250102T000000.000000Z-bbbbbb.parquet").write_bytes(b"garbage")
    calls = []
    real = storage.list_files
    monkeypatch.setattr(storage, "list_files", lambda *a, **k: calls.append(a) or real(*a, **k))
    state = resume.scan_output(str(out))
    assert len(calls) == 1
    assert state.results[("c", "outpaint", "9:16", "abc")].status == "ok"  # a table without `task`: outpaint
    assert len(state.problems) == 1 and "bbbbbb" in state.problems[0]
    assert "c/c_9x16_abc.mp4" in state.files


# --------------------------------------------------------------------------- storage retries (pure)
def test_retry_backs_off_on_transient_errors_only():
    policy = storage.RetryPolicy(attempts=4, base_delay_s=0.1, max_delay_s=0.25, jitter=0.0)
    waits: list[float] = []
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] < 3:
            raise OSError(errno.EBUSY, "SlowDown")
        return "done"

    assert storage.retry(flaky, policy=policy, sleep=waits.append) == "done"
    assert calls["n"] == 3 and waits == [0.1, 0.2]
    for permanent in (FileNotFoundError("k"), PermissionError("k"), OSError(errno.ENOSPC, "full"), ValueError("x")):
        n = {"c": 0}

        def fail(exc=permanent):
            n["c"] += 1
            raise exc

        with pytest.raises(type(permanent)):
            storage.retry(fail, policy=policy, sleep=waits.append)
        assert n["c"] == 1, permanent
    n = {"c": 0}

    def always():
        n["c"] += 1
        raise ConnectionResetError("reset")

    waits.clear()
    with pytest.raises(ConnectionResetError):
        storage.retry(always, policy=policy, sleep=waits.append)
    assert n["c"] == 4 and waits == [0.1, 0.2, 0.25]  # capped at max_delay_s


def test_is_transient_reads_http_status_of_client_errors():
    botocore = pytest.importorskip("botocore.exceptions")

    def client_error(code, status):
        return botocore.ClientError({"Error": {"Code": code, "Message": "m"},
                                     "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")

    assert storage.is_transient(client_error("SlowDown", 503))
    assert storage.is_transient(client_error("Whatever", 500))
    assert not storage.is_transient(client_error("AccessDenied", 403))
    assert not storage.is_transient(client_error("InvalidArgument", 400))
    wrapped = OSError(errno.EIO, "boom")
    wrapped.__cause__ = client_error("InvalidBucketName", 400)
    assert not storage.is_transient(wrapped)  # s3fs wraps unknown 4xx codes in OSError(EIO)
    assert storage.is_transient(botocore.EndpointConnectionError(endpoint_url="http://x"))
    assert storage.is_transient(TimeoutError()) and not storage.is_transient(RuntimeError("bug"))


def test_atomic_upload_retries_a_failed_put_and_publishes_once(monkeypatch):
    import fsspec

    fs = fsspec.filesystem("memory")
    real = type(fs).put_file
    calls = []

    def flaky_put(self, lpath, rpath, *a, **k):
        calls.append(rpath)
        if len(calls) == 1:
            raise OSError(errno.EBUSY, "503 SlowDown (injected)")
        return real(self, lpath, rpath, *a, **k)

    monkeypatch.setattr(type(fs), "put_file", flaky_put)
    old = storage.set_retry_policy(storage.RetryPolicy(attempts=3, base_delay_s=0.0))
    try:
        with storage.atomic_output("memory://etl/unit/a.bin") as tmp:
            Path(tmp).write_bytes(b"payload")
    finally:
        storage.set_retry_policy(old)
    assert len(calls) == 2 and fs.cat_file("/etl/unit/a.bin") == b"payload"


# --------------------------------------------------------------------------- prepare time-out, OOM (no Ray)
def test_hung_decode_is_abandoned_after_the_timeout(monkeypatch):
    from m3ddm_ray import video

    release = threading.Event()

    def hang(*a, **k):
        release.wait(60)  # a decode stuck in a read that never returns
        raise RuntimeError("released")

    monkeypatch.setattr(video, "probe", hang)
    cfg = tiny_cfg(ratios=["9:16", "1:1"])
    cfg["stages"]["prepare"]["prepare_timeout_s"] = 0.5
    uri = str(DATA / "megamind_20.mp4")
    rows = stages.expand_manifest_row({"clip_id": "hang", "video_uri": uri}, cfg, "/tmp/never")
    t0 = time.perf_counter()
    out = stages.PrepareStage(cfg)(rows)
    took = time.perf_counter() - t0
    release.set()
    assert took < 5
    assert [r["status"] for r in out] == ["error", "error"]
    assert out[0]["error"].startswith(f"prepare: {uri}: timed out after 0.5 s"), out[0]["error"]


def test_timeout_cancels_a_slow_decode_between_frames():
    produced = []

    def slow(cancel):
        for i in range(100):
            for _ in stages._until_cancelled(iter([i]), cancel):
                produced.append(i)
            time.sleep(0.05)
        return "finished"

    with pytest.raises(stages.PrepareTimeout, match="timed out after 0.2 s"):
        stages.run_with_timeout(slow, 0.2, "decode")
    time.sleep(1.0)
    n = len(produced)
    time.sleep(0.5)
    assert len(produced) == n < 100  # the abandoned thread stopped at the next frame
    assert stages.run_with_timeout(lambda cancel: 7, 5) == 7 and stages.run_with_timeout(lambda c: 8, None) == 8


@pytest.fixture
def fine_row():
    """A pending row as the coarse stage hands it on (clip and state are opaque to the OOM logic; the
    clip holds its canvases already)."""
    import pickle
    import types

    cfg = tiny_cfg(ratios=["9:16"])
    (row,) = stages.expand_manifest_row({"clip_id": "m", "video_uri": str(DATA / "megamind_20.mp4")}, cfg, "/tmp/x")
    row.update(clip=pickle.dumps(types.SimpleNamespace(needs_canvases=False)), state=pickle.dumps({"stored": {}}))
    return cfg, row


def _fine_with(monkeypatch, cfg, row, behaviour):
    """Run FineStage on ``row`` with Outpainter.run_fine replaced by ``behaviour(call_no)`` (raise or
    return); records the vae_batch_size of each call's settings and the cache frees."""
    from m3ddm_ray.pipeline import Outpainter

    seen: list[int] = []

    def patched(self, clip, state):
        seen.append(self.settings.vae_batch_size)
        behaviour(len(seen))
        return dict(state, done_with=self.settings.vae_batch_size)

    frees = []
    monkeypatch.setattr(Outpainter, "run_fine", patched)
    monkeypatch.setattr(stages, "_free_accelerator_memory", lambda: frees.append(1))
    (out,) = stages.to_rows(stages.FineStage(cfg, (None, None))(stages.to_batch([dict(row)])))
    return out, seen, frees


def test_cuda_oom_retries_once_with_half_the_vae_batch(monkeypatch, fine_row):
    import pickle

    import torch

    cfg, row = fine_row

    def oom_once(n):
        if n == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    out, seen, frees = _fine_with(monkeypatch, cfg, row, oom_once)
    assert out["status"] == "pending" and out["error"] is None
    assert seen == [16, 8] and frees == [1]
    assert json.loads(out["settings"])["vae_batch_size"] == 8  # the result row says what really ran
    assert pickle.loads(out["state"])["done_with"] == 8


def test_repeated_oom_is_an_error_row_and_other_errors_are_not_retried(monkeypatch, fine_row):
    cfg, row = fine_row

    def always_oom(n):
        raise RuntimeError("CUDA error: out of memory")

    out, seen, frees = _fine_with(monkeypatch, cfg, row, always_oom)
    assert seen == [16, 8] and frees == [1, 1] and out["status"] == "error"
    assert out["error"].startswith(f"fine: {row['video_uri']}: out of memory, also after a retry with vae_batch_size=8")

    def bug(n):
        raise RuntimeError("shape mismatch")

    out, seen, frees = _fine_with(monkeypatch, cfg, row, bug)
    assert seen == [16] and frees == [] and "shape mismatch" in out["error"]
    assert stages.is_out_of_memory(RuntimeError("CUDA out of memory")) and not stages.is_out_of_memory(ValueError("out of memory"))


# --------------------------------------------------------------------------- resume through the job
def test_resumed_run_over_100_done_rows_starts_no_ray(tmp_path, monkeypatch):
    """100 manifest rows pointing to copies of a tiny clip, fake outputs, an earlier table saying ok."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(100):
        shutil.copyfile(DATA / "megamind_20.mp4", videos / f"v{i:03d}.mp4")
    uri = manifest(tmp_path, [{"video_uri": str(videos / f"v{i:03d}.mp4"), "clip_id": f"c{i:03d}"} for i in range(100)])
    cfg = tiny_cfg(ratios=["9:16"])
    out = str(tmp_path / "out")
    _done(cfg, build_rows(cfg, uri, out), "ok", "results-20250101T000000.000000Z-000000.parquet")
    _no_ray(monkeypatch)
    t0 = time.perf_counter()
    result = run_job(cfg, uri, out)
    took = time.perf_counter() - t0
    print(result.summary())
    print(f"resumed run over 100 done rows: {took:.2f} s")
    assert result.counts() == {"skipped": 100}
    assert set(result.table.column("previous_result").to_pylist()) == {
        f"{out}/results/results-20250101T000000.000000Z-000000.parquet"}
    assert took < 30
    written = pq.read_table(result.results_uri)
    assert written.schema == RESULT_SCHEMA and written.num_rows == 100
    assert "100 of 100 rows skipped" in result.summary() and "wall time" in result.summary()


def _done(cfg, rows, status="ok", name="results-20250102T000000.000000Z-000001.parquet", fake_outputs=True):
    """Fake outputs for ``rows`` and a results table saying ``status`` for them."""
    for r in rows:
        if fake_outputs:
            Path(r["output_uri"]).parent.mkdir(parents=True, exist_ok=True)
            Path(r["output_uri"]).write_bytes(b"fake")
    folder = Path(rows[0]["output_uri"]).parent.parent / "results"
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([job.conform_row(stages.result_row(dict(r, status=status), cfg)) for r in rows],
                                 schema=RESULT_SCHEMA)
    pq.write_table(table, folder / name)


def test_manifest_only_new(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(4):
        shutil.copyfile(DATA / "box_24.mp4", videos / f"v{i:03d}.mp4")
    cfg = tiny_cfg(ratios=["9:16"])
    out = str(tmp_path / "out")
    sets = ["--set", f"model={cfg['model']}", "--set", f"vae={cfg['vae']}", "--set", "sampler.steps=2"]
    config = ["--config", str(REPO / "configs/tiny-cpu.yaml")]
    full = str(tmp_path / "full.jsonl")
    assert cli.main(["manifest", str(videos), "--out", full, "--ratio", "9:16", *config, *sets]) == 0
    job_rows = build_rows(cfg, full, out)  # what `outpaint` would run, with the derived clip ids
    _done(cfg, job_rows[:2], "ok", "results-20250102T000000.000000Z-000001.parquet")
    _done(cfg, job_rows[2:3], "error", "results-20250102T000000.000000Z-000002.parquet", fake_outputs=False)
    new = tmp_path / "new.jsonl"
    args = ["manifest", str(videos), "--out", str(new), "--only-new", "--output", out, "--ratio", "9:16",
            *config, *sets]
    assert cli.main(args) == 0
    got = [json.loads(line) for line in new.read_text().splitlines()]
    assert [Path(r["video_uri"]).name for r in got] == ["v002.mp4", "v003.mp4"]  # v002 failed, v003 never ran
    assert [r["clip_id"] for r in got] == [r["clip_id"] for r in job_rows[2:]]
    assert "2 of 4 videos are new" in capsys.readouterr().out
    # another config hash: nothing is done for it
    assert cli.main(args[:-1] + ["sampler.steps=3"]) == 0
    assert len(new.read_text().splitlines()) == 4
    # everything done: nothing written, exit 0
    _done(cfg, job_rows[2:], "ok", "results-20250103T000000.000000Z-000003.parquet")
    new.unlink()
    capsys.readouterr()
    assert cli.main(args) == 0
    assert not new.exists() and "0 of 4 videos are new" in capsys.readouterr().out
    assert cli.main(["manifest", str(videos), "--out", str(new), "--only-new"]) == cli.EXIT_ERROR  # no --output


# --------------------------------------------------------------------------- (1) kill the whole job, re-run
KILL_CLIPS = [("k0", "megamind_20.mp4"), ("k1", "box_24.mp4"), ("k2", "megamind_20.mp4"), ("k3", "box_24.mp4")]


@pytest.fixture(scope="module")
def killed_then_resumed(ray_session, tmp_path_factory):
    """Run the CLI in a subprocess, SIGKILL it (its whole process group: driver and Ray) right after the
    first output video appears, then run the same command again (in this process)."""
    tmp = tmp_path_factory.mktemp("kill")
    uri = manifest(tmp, [{"video_uri": str(DATA / f), "clip_id": c} for c, f in KILL_CLIPS])
    out = tmp / "out"
    argv = ["outpaint", "--config", str(REPO / "configs/tiny-cpu.yaml"), "--manifest", uri, "--output", str(out),
            "--ratio", "9:16", "--steps", "2", "--model", str(DATA / "golden/models/unet"),
            "--vae", str(DATA / "golden/models/vae"), "--set", "stages.fine.batch_size=1"]
    env = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    log = open(tmp / "killed.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "m3ddm_ray", *argv], cwd=str(REPO), env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 600
    try:
        while not (out.exists() and _videos(out)):
            assert proc.poll() is None, f"the job ended before any output: {(tmp / 'killed.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no output after 600 s"
            time.sleep(0.05)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started: driver + its embedded Ray
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
        log.close()
    after_kill = _videos(out)
    mtimes = {v: (out / v).stat().st_mtime_ns for v in after_kill}
    assert not _results_files(out), "the killed run must not have written a result table"
    t0 = time.perf_counter()
    stdout = io.StringIO()
    old = sys.stdout
    sys.stdout = stdout
    try:
        code = cli.main(argv)
    finally:
        sys.stdout = old
    return {"out": out, "argv": argv, "after_kill": after_kill, "mtimes": mtimes, "code": code,
            "stdout": stdout.getvalue(), "seconds": time.perf_counter() - t0}


def test_killed_job_resumes_and_every_row_is_done_exactly_once(killed_then_resumed):
    k = killed_then_resumed
    out, after_kill = k["out"], k["after_kill"]
    assert 1 <= len(after_kill) < len(KILL_CLIPS), f"kill came too late to test anything: {after_kill}"
    assert k["code"] == 0, k["stdout"]
    (results,) = _results_files(out)
    table = pq.read_table(results).to_pylist()
    assert sorted(r["clip_id"] for r in table) == [c for c, _ in KILL_CLIPS]  # every row exactly once
    done_before = {v.split("/")[0] for v in after_kill}
    for r in table:
        want = "skipped" if r["clip_id"] in done_before else "ok"
        assert r["status"] == want, r
        assert r["previous_result"] is None  # the killed run left no table: outputs trusted as they are
        assert Path(r["output_uri"]).is_file()
    assert sum(r["status"] == "ok" for r in table) == len(KILL_CLIPS) - len(after_kill)
    assert len(_videos(out)) == len(KILL_CLIPS)  # one video per row, no duplicates
    for v, mtime in k["mtimes"].items():
        assert (out / v).stat().st_mtime_ns == mtime, f"{v} was rewritten"
    assert "wall time" in k["stdout"] and f"{len(after_kill)} of 4 rows skipped" in k["stdout"]


def test_third_run_skips_everything_without_starting_ray(killed_then_resumed, monkeypatch, capsys):
    k = killed_then_resumed
    _no_ray(monkeypatch)
    t0 = time.perf_counter()
    assert cli.main(k["argv"]) == 0
    took = time.perf_counter() - t0
    text = capsys.readouterr().out
    print(text, f"\nthird run: {took:.2f} s (the resumed second run took {k['seconds']:.1f} s)")
    newest = _results_files(k["out"])[-1]
    table = pq.read_table(newest).to_pylist()
    assert [r["status"] for r in table] == ["skipped"] * 4
    second = _results_files(k["out"])[0]
    # rows computed by the 2nd run point to its table; rows it skipped have no decisive earlier row
    for r in table:
        assert r["previous_result"] == (None if r["clip_id"] in {v.split("/")[0] for v in k["after_kill"]}
                                        else str(second))
    assert "4 of 4 rows skipped" in text and "wall time" in text


# --------------------------------------------------------------------------- (2) a model actor dies mid-batch
def _dies_once_after_first_row(stage_cls, marker: Path):
    """A subclass of the model stage ``stage_cls`` whose first actor to finish a row creates
    ``marker`` and kills its own process (``os._exit``), mid-batch when the batch has more rows.
    Fires once per marker file. Defined locally so that Ray pickles it by value into the actors;
    the production stage has no fault hook."""

    class DiesOnce(stage_cls):
        def __call__(self, batch):
            self._batch_len = len(next(iter(batch.values())))
            return super().__call__(batch)

        def run_oom_safe(self, row):
            row = super().run_oom_safe(row)
            try:
                fd = os.open(str(marker), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return row
            os.write(fd, f"{os.getpid()} {self.stage} row 1 of {self._batch_len}\n".encode())
            os.close(fd)
            os._exit(1)

    return DiesOnce


def test_fine_actor_killed_mid_batch_is_restarted_and_rows_are_done_once(ray_session, tmp_path, monkeypatch):
    marker = tmp_path / "fine-killed"
    entries = [{"video_uri": str(DATA / "megamind_20.mp4"), "clip_id": "a"}]  # 2 ratios: one 2-row batch
    cfg = tiny_cfg()
    cfg["stages"]["coarse"]["batch_size"] = cfg["stages"]["fine"]["batch_size"] = 2
    monkeypatch.setattr(job, "FineStage", _dies_once_after_first_row(stages.FineStage, marker))
    result = run_job(cfg, manifest(tmp_path, entries), str(tmp_path / "out"))
    assert marker.exists(), "the fault was not injected"
    pid, stage, where = marker.read_text().split(" ", 2)
    assert stage == "fine" and "of 2" in where  # it died after the first row of a 2-row batch
    rows = result.table.to_pylist()
    assert sorted((r["clip_id"], r["ratio"]) for r in rows) == [("a", "1:1"), ("a", "9:16")]
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    assert len(_videos(tmp_path / "out")) == 2


# --------------------------------------------------------------------------- (4) S3: transient PUT failures, secrets
SECRET = "sEcReT-9f8e7d6c5b4a-never-print-me"


@pytest.fixture(scope="module")
def s3_run(ray_session, faulty_s3, tmp_path_factory):
    import fsspec

    tmp = tmp_path_factory.mktemp("s3etl")
    faulty_s3.create_bucket("etl")
    opts = faulty_s3.options(secret=SECRET, config_kwargs={"retries": {"max_attempts": 1}})
    fs = fsspec.filesystem("s3", **opts)
    fs.put_file(str(DATA / "megamind_20.mp4"), "etl/videos/megamind_20.mp4")
    fs.put_file(str(DATA / "box_24.mp4"), "etl/videos/box_24.mp4")
    entries = [{"video_uri": "s3://etl/videos/megamind_20.mp4", "clip_id": "m"},
               {"video_uri": "s3://etl/videos/box_24.mp4", "clip_id": "b"},
               {"video_uri": "s3://etl/videos/missing.mp4", "clip_id": "gone"}]
    faulty_s3.fail_puts("etl/out/", times=1)  # the first PUT of every output (videos and results) fails
    cfg = tiny_cfg(ratios=["9:16"], storage_options=opts)
    cfg["retries"] = {"storage_attempts": 3, "storage_base_delay_s": 0.05}
    result = run_job(cfg, manifest(tmp, entries), "s3://etl/out")
    return result, fs, opts, cfg, manifest(tmp, entries[:2], "done.jsonl")


def test_transient_put_failures_are_retried_and_every_output_written_once(s3_run, faulty_s3):
    result, fs, *_ = s3_run
    rows = {r["clip_id"]: r for r in result.table.to_pylist()}
    assert rows["m"]["status"] == rows["b"]["status"] == "ok", [r["error"] for r in rows.values()]
    assert rows["gone"]["status"] == "error" and "s3://etl/videos/missing.mp4" in rows["gone"]["error"]
    assert "file not found" in rows["gone"]["error"]
    keys = [rows[c]["output_uri"].removeprefix("s3://") for c in ("m", "b")]
    keys.append(result.results_uri.removeprefix("s3://"))
    for key in keys:
        assert faulty_s3.puts(key) == [503, 200], (key, faulty_s3.puts(key))  # failed once, written once
    listed = fs.find("etl/out")
    assert sorted(k for k in listed if k.endswith(".mp4")) == sorted(keys[:2])
    assert not [k for k in listed if k.rsplit("/", 1)[-1].startswith(".")]


def test_credentials_never_reach_results_or_summary(s3_run, capsys):
    result, fs, opts, *_ = s3_run
    assert opts["secret"] == SECRET
    summary = result.summary()
    print(summary)
    printed = capsys.readouterr().out
    assert "error gone" in summary  # the summary does carry error details...
    blob = fs.cat_file(result.results_uri.removeprefix("s3://"))
    for where, text in (("summary", summary), ("printed", printed), ("table", json.dumps(result.table.to_pylist(), default=str)),
                        ("parquet", blob.decode("latin-1"))):
        assert SECRET not in text, where  # ...but never the secret
        assert "etl-key" not in text, where


def test_resume_on_s3_lists_the_bucket_and_skips_without_ray(s3_run, faulty_s3, monkeypatch):
    first, fs, _, cfg, done_manifest = s3_run
    _no_ray(monkeypatch)
    before = len(faulty_s3.log)
    again = run_job(cfg, done_manifest, "s3://etl/out")
    assert again.counts() == {"skipped": 2}
    assert set(again.table.column("previous_result").to_pylist()) == {first.results_uri}
    assert set(again.table.column("output_uri").to_pylist()) == {
        r["output_uri"] for r in first.table.to_pylist() if r["status"] == "ok"}
    gets = [k for m, k, _ in faulty_s3.log[before:] if m == "GET" and k.startswith("etl/") and "/videos/" in k]
    assert gets == []  # no video was read: nothing was decoded


def test_redact_hides_credential_values_of_storage_options():
    cfg = {"storage_options": {"key": "AKIAEXAMPLE", "secret": SECRET, "anon": False,
                               "client_kwargs": {"endpoint_url": "http://h:1", "region_name": "us-east-1",
                                                 "aws_session_token": "tok-123456"}}}
    text = stages.redact(f"boom with {SECRET}, AKIAEXAMPLE and tok-123456 at http://h:1 in us-east-1", cfg)
    assert SECRET not in text and "AKIAEXAMPLE" not in text and "tok-123456" not in text
    assert "http://h:1" in text and "us-east-1" in text


def test_result_columns_only_grow_at_the_end():
    # round 1 ended with previous_result; the task columns (issue 11) come after it
    i = RESULT_COLUMNS.index("previous_result")
    assert RESULT_SCHEMA.field("previous_result").type == pa.string()
    assert RESULT_COLUMNS[i + 1:] == ("task", "task_options", "mask_uri", "output_frames")


def test_overwrite_and_retry_errors_flags_are_exclusive(capsys):
    assert cli.main(["outpaint", "--manifest", "m.jsonl", "--output", "o", "--overwrite", "--retry-errors"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_actor_pools_and_tasks_get_bounded_restart_and_retry_limits():
    calls = []

    def fake_map_batches(fn, **kwargs):
        calls.append(kwargs)
        return "ds"

    cfg = {"retries": {"actor_max_task_retries": 5}}
    assert job.with_fault_args(fake_map_batches, object, job.stage_fault_args(cfg, actors=True), batch_size=2) == "ds"
    assert calls[-1] == {"batch_size": 2, "max_restarts": -1, "max_task_retries": 5}
    job.with_fault_args(fake_map_batches, object, job.stage_fault_args({}, actors=False))
    assert calls[-1] == {"max_retries": 3}

    def old_ray(fn, **kwargs):  # a Ray that no longer takes generic remote args
        if "max_retries" in kwargs:
            raise TypeError("map() got an unexpected keyword argument 'max_retries'")
        calls.append(kwargs)
        return "ds"

    assert job.with_fault_args(old_ray, object, {"max_retries": 3}, num_cpus=1.0) == "ds"
    assert calls[-1] == {"num_cpus": 1.0}


def test_when_ray_gives_up_unfinished_rows_become_errors_and_the_table_is_written(tmp_path, monkeypatch):
    uri = manifest(tmp_path, [{"video_uri": str(DATA / "megamind_20.mp4"), "clip_id": c} for c in ("a", "b", "c")])
    cfg = tiny_cfg(ratios=["9:16"], storage_options={"secret": SECRET})

    def partial(cfg, pending):  # Ray returned one row, then its retries ran out
        first = stages.result_row(dict(pending[0], status="ok"), cfg)
        return [first], RuntimeError(f"Task failed 4 times: worker died (creds {SECRET})")

    monkeypatch.setattr(job, "_run_dataset", partial)
    result = run_job(cfg, uri, str(tmp_path / "out"))
    rows = {r["clip_id"]: r for r in result.table.to_pylist()}
    assert [rows[c]["status"] for c in "abc"] == ["ok", "error", "error"]
    assert rows["b"]["error"].startswith(f"job: {DATA / 'megamind_20.mp4'}: the Ray execution failed")
    assert "re-run the job to resume" in rows["b"]["error"] and SECRET not in rows["b"]["error"]
    assert "2 unfinished rows" in result.summary() and Path(result.results_uri).is_file()


def test_retry_defaults_have_one_home_and_storage_jitter_is_a_config_key():
    from m3ddm_ray.distributed.config import DEFAULTS, load_config

    cfg = load_config(None, ["retries.storage_jitter=0.25", "retries.storage_attempts=7"])
    policy = storage.RetryPolicy.from_config(cfg["retries"])
    assert (policy.jitter, policy.attempts) == (0.25, 7)
    d = storage.DEFAULT_RETRY_POLICY
    assert storage.RetryPolicy.from_config(load_config()["retries"]) == d
    assert job.RETRY_DEFAULTS is DEFAULTS["retries"]
    assert [DEFAULTS["retries"][k] for k in ("storage_attempts", "storage_base_delay_s", "storage_max_delay_s",
                                             "storage_jitter")] == [d.attempts, d.base_delay_s, d.max_delay_s, d.jitter]


def test_task_pool_is_a_bounded_task_pool_or_left_to_ray_data():
    import ray.data

    from m3ddm_ray.distributed import job

    pool = job.task_pool(3)["compute"]
    assert isinstance(pool, ray.data.TaskPoolStrategy) and pool.size == 3
    assert job.task_pool(None) == {} and job.task_pool("auto") == {}
