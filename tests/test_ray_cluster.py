"""The same command joins an already running two-node Ray cluster through ``--address``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest

from m3ddm_ray.distributed.job import run_job

from conftest import DATA
from test_ray_job import CLIPS, manifest, tiny_cfg

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = DATA.parent.parent
COMPARED = ["clip_id", "ratio", "status", "error", "frames", "fps", "source_width", "source_height",
            "output_width", "output_height", "config_hash", "settings"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], env: dict) -> subprocess.Popen:
    # --block keeps `ray start` in the foreground; its own process group lets us stop just this node
    return subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
                             *args], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def _wait_for_nodes(address: str, n: int, env: dict, timeout: float = 90) -> None:
    code = ("import ray,sys; ray.init(address=sys.argv[1]); "
            "print(sum(1 for x in ray.nodes() if x['Alive']))")
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run([sys.executable, "-c", code, address], env=env, capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(2)
    raise AssertionError(f"the test cluster at {address} did not reach {n} nodes")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = _start(["--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                   f"--temp-dir={tmp_path_factory.mktemp('ray')}"], env)
    worker = None
    try:
        _wait_for_nodes(address, 1, env)
        worker = _start([f"--address={address}", "--num-cpus=2"], env)
        _wait_for_nodes(address, 2, env)
        yield address, env
    finally:
        for proc in (worker, head):
            if proc is not None:
                _stop(proc)


def test_job_joins_a_running_cluster_and_gives_the_same_table(cluster, ray_session, tmp_path):
    address, env = cluster
    uri = manifest(tmp_path, [{"video_uri": str(DATA / f), "clip_id": c} for c, f in CLIPS[:2]])
    cmd = [sys.executable, "-m", "m3ddm_ray", "outpaint", "--config", str(ROOT / "configs" / "tiny-cpu.yaml"),
           "--manifest", uri, "--output", str(tmp_path / "cluster"), "--address", address,
           "--model", str(DATA / "golden" / "models" / "unet"), "--vae", str(DATA / "golden" / "models" / "vae"),
           "--steps", "2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "4 outputs (clip x ratio): ok 4" in proc.stdout
    (results,) = list((tmp_path / "cluster" / "results").glob("results-*.parquet"))
    remote = pq.read_table(results).sort_by([("clip_id", "ascending"), ("ratio", "ascending")])

    local = run_job(tiny_cfg(), uri, str(tmp_path / "local")).table
    assert remote.select(COMPARED).to_pylist() == local.select(COMPARED).to_pylist()
    rel = lambda t, root: [u.removeprefix(str(root)) for u in t.column("output_uri").to_pylist()]  # noqa: E731
    assert rel(remote, tmp_path / "cluster") == rel(local, tmp_path / "local")
