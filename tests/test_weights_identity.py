"""Output names follow the weights, not the model URI (m3ddm_ray.models.identity, config_hash)."""

from __future__ import annotations

import datetime
import os
import re
import shutil
from pathlib import Path

import fsspec
import pytest

from m3ddm_ray.distributed.config import WEIGHTS_KEY, config_hash, load_config, with_weights
from m3ddm_ray.errors import InputError, ModelLoadError
from m3ddm_ray.models import identity, loading
from m3ddm_ray.models.identity import file_stamp, hub_commit, weights_identity
from m3ddm_ray.models.sources import split_revision

from conftest import DATA, GOLDEN

SAFE, BIN = "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"
SHA1, SHA2 = "a" * 40, "b" * 40


def models(tmp_path: Path) -> tuple[Path, Path]:
    """tmp_path copies of the golden UNet and VAE folders (mtimes kept)."""
    unet, vae = tmp_path / "models" / "unet", tmp_path / "models" / "vae"
    shutil.copytree(GOLDEN / "models" / "unet", unet)
    shutil.copytree(GOLDEN / "models" / "vae", vae)
    return unet, vae


def stamp(path: Path) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime": st.st_mtime}


def tiny_cfg(unet: Path, vae: Path, **overrides):
    cfg = load_config(DATA.parent.parent / "configs" / "tiny-cpu.yaml",
                      ["sampler.steps=2", "ratios=['9:16']"], model=str(unet), vae=str(vae))
    cfg.update(overrides)
    return cfg


# --------------------------------------------------------------------------- local folders
def test_local_identity_is_size_and_mtime_of_config_and_the_weights_the_loader_reads(tmp_path):
    unet, vae = models(tmp_path)
    assert weights_identity(unet, "unet") == {"files": {"config.json": stamp(unet / "config.json"),
                                                       SAFE: stamp(unet / SAFE)}}  # safetensors first, as loaded
    (unet / SAFE).unlink()
    assert weights_identity(unet, "unet") == {"files": {"config.json": stamp(unet / "config.json"),
                                                       BIN: stamp(unet / BIN)}}
    # a Stable Diffusion folder: the VAE in vae/ (the loader's rule); a folder holding unet/ likewise
    assert weights_identity(tmp_path / "models", "vae") == weights_identity(vae, "vae")
    assert weights_identity(tmp_path / "models", "unet") == weights_identity(unet, "unet")


def test_new_weights_at_the_same_path_change_the_hash_same_weights_keep_it(tmp_path):
    unet, vae = models(tmp_path)
    cfg = tiny_cfg(unet, vae)
    before = config_hash(cfg)
    assert config_hash(dict(cfg)) == before  # nothing changed: same name
    # the same files copied with their times (cp -p, rsync -a) to another folder: same weights, same name
    other = tmp_path / "other_run"
    shutil.copytree(unet.parent, other)
    assert config_hash(tiny_cfg(other / "unet", other / "vae")) == before
    # new weights of the same size at the same path: a new name
    data = bytearray((unet / SAFE).read_bytes())
    data[-1] ^= 0xFF
    (unet / SAFE).write_bytes(bytes(data))
    st = os.stat(unet / SAFE)
    os.utime(unet / SAFE, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert os.stat(unet / SAFE).st_size == os.stat(other / "unet" / SAFE).st_size
    assert config_hash(cfg) != before
    # for local files the modification time is the identity: a touched copy of the same bytes is new
    touched = config_hash(tiny_cfg(other / "unet", other / "vae"))
    os.utime(other / "vae" / BIN, ns=(0, 1_000_000_000))
    assert config_hash(tiny_cfg(other / "unet", other / "vae")) != touched


def test_missing_weights_are_errors_naming_the_folder(tmp_path):
    unet, _ = models(tmp_path)
    for name in (SAFE, BIN):
        (unet / name).unlink()
    with pytest.raises(ModelLoadError, match=re.escape(f"{unet}: no weights; expected {SAFE} or {BIN}")):
        weights_identity(unet, "unet")
    with pytest.raises(ModelLoadError, match=r"no config\.json in this folder"):
        weights_identity(tmp_path, "unet")
    with pytest.raises(ModelLoadError, match=r"nope/unet/: no such folder, and not an fsspec URL or a hub id"):
        weights_identity("nope/unet/", "unet")


# --------------------------------------------------------------------------- fsspec, metadata only
def test_fsspec_identity_uses_fs_info_and_never_reads_a_file(tmp_path, monkeypatch):
    fs = fsspec.filesystem("memory")
    base = "/identity-test/sd"
    fs.pipe(f"{base}/vae/config.json", (GOLDEN / "models" / "vae" / "config.json").read_bytes())
    fs.pipe(f"{base}/vae/{BIN}", b"\0" * 1000)
    t0 = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    for name in ("config.json", BIN):
        fs.store[f"{base}/vae/{name}"].created = t0
    calls = []
    real_info = type(fs).info

    def info(self, path, **kw):
        calls.append(path)
        return real_info(self, path, **kw)

    def no_read(*a, **k):
        raise AssertionError("a model file was read")

    monkeypatch.setattr(type(fs), "info", info)
    for method in ("_open", "open", "cat", "cat_file", "get_file", "get"):
        monkeypatch.setattr(type(fs), method, no_read)
    got = weights_identity(f"memory://{base}", "vae")  # the SD folder: its vae/ is found by fs.info
    size = len((GOLDEN / "models" / "vae" / "config.json").read_bytes())
    assert got == {"files": {"config.json": {"size": size, "mtime": "2025-01-02T03:04:05+00:00"},
                             BIN: {"size": 1000, "mtime": "2025-01-02T03:04:05+00:00"}}}
    assert len(calls) == 4  # config.json at the root and in vae/, both weight names; each asked once
    fs.store[f"{base}/vae/{BIN}"].created = t0 + datetime.timedelta(seconds=1)  # replaced in place
    assert weights_identity(f"memory://{base}/vae", "vae")["files"][BIN]["mtime"] == "2025-01-02T03:04:06+00:00"


def test_file_stamp_prefers_the_etag_over_the_modification_time():
    when = datetime.datetime(2025, 1, 2, tzinfo=datetime.timezone.utc)
    # S3: a re-upload of the same bytes (same ETag, new LastModified) keeps the identity
    assert file_stamp({"size": 7, "ETag": '"9a0364b9"', "LastModified": when}, "s3://b/w") == {
        "size": 7, "etag": '"9a0364b9"'}
    assert file_stamp({"size": 7, "etag": "CJ2", "updated": "2025-01-02T00:00:00Z"}, "gs://b/w") == {
        "size": 7, "etag": "CJ2"}
    assert file_stamp({"size": 7, "LastModified": when}, "s3://b/w") == {"size": 7, "mtime": "2025-01-02T00:00:00+00:00"}
    with pytest.raises(ModelLoadError, match=r"^x://b/w: the filesystem reports neither an ETag nor a modification"):
        file_stamp({"size": 7, "type": "file"}, "x://b/w")


def test_fsspec_model_cache_is_renewed_when_the_remote_weights_change(tmp_path, monkeypatch):
    monkeypatch.setenv("M3DDM_RAY_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    base = "/identity-test/renew"
    fs.pipe(f"{base}/config.json", b"{}")
    fs.pipe(f"{base}/{SAFE}", b"old-weights")
    local = loading.resolve_model_dir(f"memory://{base}")
    assert (local / SAFE).read_bytes() == b"old-weights"
    fs.pipe(f"{base}/{SAFE}", b"new-weights")  # same size, same URL
    fs.store[f"{base}/{SAFE}"].created = datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc)
    assert (loading.resolve_model_dir(f"memory://{base}") / SAFE).read_bytes() == b"new-weights"


# --------------------------------------------------------------------------- ID@REVISION
def test_revision_pins_are_parsed_and_bad_ones_named(tmp_path):
    assert split_revision("org/name@main") == ("org/name", "main")
    assert split_revision(f"org/name@{SHA1}") == ("org/name", SHA1)
    assert split_revision("org/name@refs/pr/3") == ("org/name", "refs/pr/3")
    assert split_revision("org/name") == ("org/name", None)
    assert split_revision("s3://user@bucket/m") == ("s3://user@bucket/m", None)
    folder = tmp_path / "m@v2"
    folder.mkdir()
    assert split_revision(str(folder)) == (str(folder), None)  # an existing path is a path
    for bad in ("org/name@", "org/name@../x", "./m@v2", "just-a-name@v1"):
        with pytest.raises(InputError, match=rf"model source '{re.escape(bad)}'.*ID@REVISION"):
            split_revision(bad)


def test_pins_reach_the_hub_as_revision(monkeypatch):
    seen = []
    monkeypatch.setattr(loading, "_fetch_from_hub", lambda repo, sub, rev: seen.append((repo, sub, rev)) or Path("x"))
    loading.resolve_model_dir("org/unet@v1.0")
    loading.resolve_model_dir("org/unet", revision="main")
    assert seen == [("org/unet", None, "v1.0"), ("org/unet", None, "main")]
    with pytest.raises(InputError, match=r"org/unet@v1.0: pinned to revision 'v1.0' but revision='v2'"):
        loading.resolve_model_dir("org/unet@v1.0", revision="v2")
    with pytest.raises(ModelLoadError):  # the VAE of a pinned SD repo: vae/ subfolder, same revision
        loading.load_vae(f"org/sd@{SHA2}", "fp32", "cpu")
    assert seen[-1] == ("org/sd", "vae", SHA2)


def test_a_commit_pin_is_the_identity_and_changes_the_hash():
    a = load_config(model=f"org/unet@{SHA1}", vae=f"org/sd@{SHA2}", device="cpu")
    b = load_config(model=f"org/unet@{SHA2}", vae=f"org/sd@{SHA2}", device="cpu")
    assert with_weights(a)[WEIGHTS_KEY]["model"] == {"hub": "org/unet", "subfolder": None, "commit": SHA1}
    assert with_weights(a)[WEIGHTS_KEY]["vae"] == {"hub": "org/sd", "subfolder": "vae", "commit": SHA2}
    assert config_hash(a) != config_hash(b)
    assert config_hash(a) == config_hash(with_weights(a))


# --------------------------------------------------------------------------- hub ids, offline cache
def fake_hf_cache(root: Path, repo: str, refs: dict[str, str], files=("config.json", "vae/config.json")) -> None:
    """The huggingface_hub cache layout: models--org--name/{refs/<ref>, snapshots/<sha>/...}."""
    folder = root / ("models--" + repo.replace("/", "--"))
    for ref, sha in refs.items():
        (folder / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(sha)
        for name in files:
            (folder / "snapshots" / sha / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / "snapshots" / sha / name).write_text("{}")


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*a, **k):
        raise AssertionError("the hub was asked while offline")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", no_network)
    fake_hf_cache(tmp_path / "hub", "org/unet", {"main": SHA1, "v2": SHA2})
    fake_hf_cache(tmp_path / "hub", "org/sd", {"main": SHA2})
    return tmp_path / "hub"


def test_hub_id_offline_resolves_through_the_local_cache(offline_cache):
    assert weights_identity("org/unet", "unet") == {"hub": "org/unet", "subfolder": None, "commit": SHA1}
    assert weights_identity("org/unet@v2", "unet")["commit"] == SHA2
    assert weights_identity("org/sd", "vae") == {"hub": "org/sd", "subfolder": "vae", "commit": SHA2}
    cfg = load_config(model="org/unet", vae="org/sd", device="cpu")
    resolved = with_weights(cfg)
    assert (resolved["model"], resolved["vae"]) == (f"org/unet@{SHA1}", f"org/sd@{SHA2}")  # actors load these
    assert config_hash(cfg) == config_hash(resolved) == config_hash(load_config(model=f"org/unet@{SHA1}",
                                                                                   vae="org/sd", device="cpu"))
    # main moved to another commit in the cache: another name
    (offline_cache / "models--org--unet" / "refs" / "main").write_text(SHA2)
    assert config_hash(cfg) != config_hash(resolved) == config_hash(with_weights(resolved))


def test_unresolvable_hub_id_is_an_error_naming_the_model_and_the_fix(offline_cache):
    with pytest.raises(ModelLoadError, match=r"^org/missing: cannot tell which commit .*HF_HUB_OFFLINE is set.*"
                                             r"Pin it as org/missing@<40-hex commit>.*--local-dir DIR"):
        config_hash(load_config(model="org/missing", vae="org/sd", device="cpu"))
    with pytest.raises(ModelLoadError, match=r"^org/unet@v9: cannot tell which commit"):
        hub_commit("org/unet", "v9")
    fake_hf_cache(offline_cache, "org/unetonly", {"main": SHA1}, files=("config.json",))
    with pytest.raises(ModelLoadError, match=r"^org/unetonly: cannot tell"):  # no vae/config.json in that snapshot
        weights_identity("org/unetonly", "vae")


def test_online_the_hub_answers_and_a_failure_falls_back_to_the_cache(offline_cache, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants as hc

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    asked = []

    class Info:
        sha = "c" * 40

    def model_info(self, repo_id, revision=None, timeout=None):
        asked.append((repo_id, revision))
        if repo_id == "org/unet":
            raise OSError("no network")
        return Info()

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    assert hub_commit("org/other", "v3") == "c" * 40
    assert hub_commit("org/unet") == SHA1  # the hub did not answer: the cache's refs/main
    assert asked == [("org/other", "v3"), ("org/unet", None)]
    assert identity.hub_commit("org/unet", SHA2) == SHA2 and len(asked) == 2  # a commit pin asks nobody


# --------------------------------------------------------------------------- once per job
def test_identity_is_resolved_once_per_job_not_per_row(tmp_path, monkeypatch):
    from m3ddm_ray.distributed.job import build_rows, resolve_paths

    unet, vae = models(tmp_path)
    calls = []
    real = identity.weights_identity
    monkeypatch.setattr(identity, "weights_identity", lambda *a, **k: calls.append(a[:2]) or real(*a, **k))
    cfg = tiny_cfg(unet, vae, ratios=["9:16", "1:1"])
    rows = build_rows(cfg, str(DATA / "sample_manifest.jsonl"), str(tmp_path / "out"))
    assert len(rows) == 5 and {r["config_hash"] for r in rows} == {config_hash(cfg)}
    assert calls[:2] == [(str(unet), "unet"), (str(vae), "vae")] and len(calls) == 4  # build_rows + the check
    calls.clear()
    build_rows(resolve_paths(cfg), str(DATA / "sample_manifest.jsonl"), str(tmp_path / "out"))
    assert len(calls) == 2


# --------------------------------------------------------------------------- the job
@pytest.mark.ray
def test_job_recomputes_after_new_weights_and_skips_the_same_weights(ray_session, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.torch import load_file, save_file

    from m3ddm_ray.distributed import job, stages
    from m3ddm_ray.distributed.manifest import validate_manifest, write_manifest
    from m3ddm_ray.distributed.results import RESULT_SCHEMA
    from m3ddm_ray.video import read_frames

    unet, vae = models(tmp_path)
    out = tmp_path / "out"
    uri = str(tmp_path / "m.jsonl")
    write_manifest(validate_manifest([{"video_uri": str(DATA / "megamind_20.mp4"), "clip_id": "m"}]), uri)
    cfg = tiny_cfg(unet, vae)
    # an output and result row of the same clip under a hash without weights identity (an older run)
    (old,) = job.build_rows(cfg, uri, str(out))
    old = dict(old, config_hash="5efce53f9856", output_uri=str(out / "m" / "m_9x16_5efce53f9856.mp4"))
    Path(old["output_uri"]).parent.mkdir(parents=True)
    Path(old["output_uri"]).write_bytes(b"older model")
    (out / "results").mkdir()
    pq.write_table(pa.Table.from_pylist([job.conform_row(stages.result_row(dict(old, status="ok"), cfg))],
                                        schema=RESULT_SCHEMA), out / "results" / "results-20250101T000000.000000Z-0.parquet")

    first = job.run_job(cfg, uri, str(out))
    assert first.counts() == {"ok": 1}, first.summary()  # recomputed once under the new name
    assert not any("ignored unreadable" in n for n in first.notes)  # the older table was read
    first_uri = first.table.column("output_uri")[0].as_py()
    assert first_uri != old["output_uri"] and Path(old["output_uri"]).read_bytes() == b"older model"

    again = job.run_job(cfg, uri, str(out))  # same weights: nothing to do
    assert again.counts() == {"skipped": 1} and again.table.column("output_uri")[0].as_py() == first_uri
    copy = tmp_path / "copy"
    shutil.copytree(unet.parent, copy)  # the same files, times kept, another folder
    moved = job.run_job(tiny_cfg(copy / "unet", copy / "vae"), uri, str(out))
    assert moved.counts() == {"skipped": 1} and moved.table.column("output_uri")[0].as_py() == first_uri

    state = load_file(str(unet / SAFE))
    state["conv_out.spatial_conv.weight"] = state["conv_out.spatial_conv.weight"] * 0.5
    save_file(state, str(unet / SAFE))  # new weights, same size, same path
    st = os.stat(unet / SAFE)
    os.utime(unet / SAFE, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    new = job.run_job(cfg, uri, str(out))
    assert new.counts() == {"ok": 1}, new.summary()
    new_uri = new.table.column("output_uri")[0].as_py()
    assert new_uri != first_uri and Path(first_uri).exists()
    a, _ = read_frames(first_uri)
    b, _ = read_frames(new_uri)
    assert a.shape == b.shape and (a != b).any()  # the new weights painted it
