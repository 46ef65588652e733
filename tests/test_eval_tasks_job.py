"""`m3ddm-ray eval --task inpaint|extend` (issue 11, item 5): the Ray evaluation job on two held-out
clips with the random golden tiny model (canvas 64, 2 steps), the task baselines scored through the
same harness, and the settings' errors."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from m3ddm_ray.errors import InputError
from m3ddm_ray.evaluation.config import check_task_settings, parse_methods
from m3ddm_ray.evaluation.rows import EVAL_COLUMNS
from m3ddm_ray.evaluation.run import add_eval, config_from_args
from m3ddm_ray.evaluation.baselines import inpaint_baseline, last_frame_copy, nearest_known_inpaint, telea_inpaint
from m3ddm_ray.evaluation.cases import check_one_segment, clip_mask_seed, mask_key, score_inpaint, score_prediction
from m3ddm_ray.evaluation.protocols import inpaint_case, prediction_case, resize_frames
from m3ddm_ray.video import read_frames

from conftest import DATA, GOLDEN

ROOT = Path(__file__).resolve().parent.parent
CLIPS = ("chelsea_0.mp4", "box_24.mp4")  # 32 and 24 frames, 128x128


def eval_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="m3ddm-ray")
    add_eval(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["eval", *argv])


def task_flags(root, output, *extra):
    return ["--dataset", "folder", "--root", str(root), "--output", str(output),
            "--config", str(ROOT / "configs" / "tiny-cpu.yaml"),
            "--model", str(GOLDEN / "models" / "unet"), "--vae", str(GOLDEN / "models" / "vae"),
            "--steps", "2", "--canvas-size", "64", "--set", "eval.frame_size=[64,64]",
            "--set", "eval.metrics.lpips_weights=random-init", *extra]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks") / "clips"
    root.mkdir()
    for name in CLIPS:
        shutil.copy(DATA / "heldout" / name, root / name)
    return root


def clip_ids(out: Path) -> dict[str, str]:
    """clip id -> video file name, from the evaluation manifest."""
    return {m["clip_id"]: Path(m["uri"]).name for m in pq.read_table(out / "manifest.parquet").to_pylist()}


def ground_truth(name: str, n: int) -> np.ndarray:
    frames, _ = read_frames(str(DATA / "heldout" / name), range(n))
    return resize_frames(frames, (64, 64), "area")


# ----------------------------------------------------------------------------------------------- inpaint
@pytest.fixture(scope="module")
def inpaint_run(ray_session, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("inpaint") / "out"
    args = eval_args("--task", "inpaint", *task_flags(folder, out, "--set", "eval.clip_len=9",
                                                     "--set", "eval.metrics.fvd_weights=random-init"))
    return args.func(args), out


@pytest.mark.ray
def test_inpaint_rows_columns_and_summary(inpaint_run):
    rc, out = inpaint_run
    assert rc == 0
    table = pq.read_table(out / "per_clip.parquet")
    assert table.column_names == [name for name, _ in EVAL_COLUMNS]
    rows = table.to_pylist()
    ids = clip_ids(out)
    methods = ("m3ddm", "telea", "nearest_known")
    assert sorted((r["clip_id"], r["ratio_label"], r["method"]) for r in rows) == sorted(
        (c, m, meth) for c in ids for m in ("stationary", "moving") for meth in methods)  # 2 x 2 x 3 = 12
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["task"] == "inpaint" and r["protocol"] == "inpaint" and r["mask_motion"] == r["ratio_label"]
        assert r["mask_ratio"] == 0.1 and r["frames"] == 9 and (r["frame_height"], r["frame_width"]) == (64, 64)
        assert 5 < r["psnr"] < 60 and 0 < r["ssim"] < 1 and r["lpips"] > 0 and r["temporal"] >= 0
        assert r["psnr_frames"] is None and r["context"] is None
        assert (out / "report" / r["image"]).is_file()
        if r["method"] == "m3ddm":
            assert r["seconds_unet"] > 0 and r["config_hash"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == "inpaint" and summary["labels"] == ["stationary", "moving"]
    assert summary["columns"] == ["PSNR↑", "SSIM↑", "LPIPS↓", "TC↓", "FVD↓"]
    for m in methods:
        for lab in ("stationary", "moving"):
            cell = summary["methods"][m][lab]
            assert cell["clips"] == 2 and cell["errors"] == 0 and np.isfinite(cell["fvd"])
            sel = [r["psnr"] for r in rows if r["method"] == m and r["ratio_label"] == lab]
            assert cell["psnr"] == pytest.approx(np.mean(sel))
    md = (out / "summary.md").read_text()
    assert "| method | stationary PSNR↑ | stationary SSIM↑ | stationary LPIPS↓ | stationary TC↓ |" in md


@pytest.mark.ray
def test_inpaint_baselines_scored_as_computed_independently(inpaint_run):
    """The job's baseline rows equal TELEA / nearest-known run here on the same seeded masks."""
    _, out = inpaint_run
    rows = pq.read_table(out / "per_clip.parquet").to_pylist()
    for cid, name in clip_ids(out).items():
        gt = ground_truth(name, 9)
        for motion in ("stationary", "moving"):
            case = inpaint_case(gt, motion, 0.1, clip_mask_seed(f"{Path(name).stem}@0", 0))
            hidden = (gt * (1 - case.masks)[..., None]).astype(np.uint8)
            for method, fn in (("telea", telea_inpaint), ("nearest_known", nearest_known_inpaint)):
                s = score_inpaint(fn(hidden, case.masks), case)
                row = next(r for r in rows if (r["clip_id"], r["ratio_label"], r["method"]) == (cid, motion, method))
                assert row["psnr"] == pytest.approx(s["psnr"], abs=1e-9)
                assert row["ssim"] == pytest.approx(s["ssim"], abs=1e-9)
                assert row["temporal"] == pytest.approx(s["temporal"], abs=1e-9)
    # a stationary mask hides the same pixels in every frame: nearest-known falls back to TELEA
    # everywhere; a moving one uncovers pixels that nearest-known copies from other frames
    by = {(r["clip_id"], r["ratio_label"], r["method"]): r for r in rows}
    for cid in clip_ids(out):
        st = [by[(cid, "stationary", m)] for m in ("telea", "nearest_known")]
        mv = [by[(cid, "moving", m)] for m in ("telea", "nearest_known")]
        assert (st[0]["psnr"], st[0]["temporal"]) == (st[1]["psnr"], st[1]["temporal"])
        assert mv[0]["psnr"] != mv[1]["psnr"]


# ----------------------------------------------------------------------------------------------- extend
@pytest.fixture(scope="module")
def extend_run(ray_session, folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("extend") / "out"
    args = eval_args("--task", "extend", *task_flags(folder, out, "--set", "eval.context=4",
                                                    "--set", "eval.predict=3"))
    return args.func(args), out


@pytest.mark.ray
def test_extend_rows_per_index_scores_and_baseline(extend_run):
    rc, out = extend_run
    assert rc == 0
    rows = pq.read_table(out / "per_clip.parquet").to_pylist()
    ids = clip_ids(out)
    assert sorted((r["clip_id"], r["method"]) for r in rows) == sorted(
        (c, m) for c in ids for m in ("m3ddm", "last_frame"))  # 2 clips x 1 case x 2 methods
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert (r["task"], r["ratio_label"], r["context"], r["predict"], r["frames"]) == ("extend", "c4p3", 4, 3, 7)
        assert r["mask_ratio"] == pytest.approx(3 / 7)
        assert len(r["psnr_frames"]) == len(r["ssim_frames"]) == len(r["lpips_frames"]) == 3
        assert r["psnr"] == pytest.approx(np.mean(r["psnr_frames"]))
        assert all(v > 0 for v in r["lpips_frames"]) or r["method"] == "last_frame"
        assert np.isnan(r["temporal"]) and r["mask_motion"] is None
    for cid, name in ids.items():
        case = prediction_case(ground_truth(name, 7), 4, 3)
        s = score_prediction(last_frame_copy(case.context, 3), case)
        row = next(r for r in rows if r["clip_id"] == cid and r["method"] == "last_frame")
        np.testing.assert_allclose(row["psnr_frames"], s["psnr_frames"], rtol=0, atol=1e-9)
        np.testing.assert_allclose(row["ssim_frames"], s["ssim_frames"], rtol=0, atol=1e-9)
    summary = json.loads((out / "summary.json").read_text())
    cell = summary["methods"]["last_frame"]["c4p3"]
    assert cell["clips"] == 2 and len(cell["psnr_frames"]) == 3 and summary["fvd"] == "not computed"
    np.testing.assert_allclose(cell["psnr_frames"], np.mean([r["psnr_frames"] for r in rows
                                                             if r["method"] == "last_frame"], axis=0))
    md = (out / "summary.md").read_text()
    assert "| method | t+1 | t+2 | t+3 |" in md and "| last_frame |" in md and "| m3ddm |" in md


@pytest.mark.ray
def test_extend_clip_shorter_than_context_plus_predict_is_an_error_row(ray_session, folder, tmp_path):
    """box_24 has 24 frames, chelsea_0 32: context 20 + predict 8 = 28 fits only chelsea (baseline only:
    no model is loaded)."""
    args = eval_args("--task", "extend", *task_flags(folder, tmp_path / "out", "--method", "last_frame",
                                                    "--set", "eval.context=20", "--set", "eval.predict=8",
                                                    "--set", "eval.frame_size=[32,32]"))
    assert args.func(args) == 1
    rows = {clip_ids(tmp_path / "out")[r["clip_id"]]: r for r in pq.read_table(tmp_path / "out" / "per_clip.parquet").to_pylist()}
    assert rows["chelsea_0.mp4"]["status"] == "ok" and len(rows["chelsea_0.mp4"]["psnr_frames"]) == 8
    assert rows["box_24.mp4"]["status"] == "error" and "needs 28" in rows["box_24.mp4"]["error"]
    assert rows["box_24.mp4"]["task"] == "extend"


# ----------------------------------------------------------------------------------------------- settings
def test_task_defaults_and_outpaint_unchanged(tmp_path):
    cfg, ecfg = config_from_args(eval_args(*task_flags(tmp_path, tmp_path / "out")))
    assert ecfg["task"] == "outpaint" and check_task_settings(ecfg) == {"task": "outpaint", "methods": ["m3ddm"]}
    _, ecfg = config_from_args(eval_args("--task", "inpaint", *task_flags(tmp_path, tmp_path / "out")))
    spec = check_task_settings(ecfg)
    assert spec["methods"] == ["m3ddm", "telea", "nearest_known"] and spec["mask_motion"] == ["stationary", "moving"]
    assert spec["frame_size"] == (64, 64) and spec["mask_area"] == 0.1
    _, ecfg = config_from_args(eval_args(*task_flags(tmp_path, tmp_path / "out", "--set", "eval.task=extend",
                                                     "--method", "last_frame")))
    assert check_task_settings(ecfg) == {"task": "extend", "methods": ["last_frame"], "frame_size": (64, 64),
                                         "context": 8, "predict": 8}


@pytest.mark.parametrize("extra, match", [
    (["--set", "eval.task=paint"], "eval task 'paint'; use one of outpaint, inpaint, extend"),
    (["--task", "inpaint", "--method", "replicate"], r"unknown method 'replicate' for --task inpaint \('replicate' is a "
                                                     r"method of --task outpaint\); use one of m3ddm, telea, nearest_known"),
    (["--task", "extend", "--method", "telea"], "unknown method 'telea' for --task extend"),
    (["--method", "last_frame"], "unknown method 'last_frame' for --task outpaint"),
    (["--task", "inpaint", "--set", "eval.mask_motion=[jumping]"], "eval.mask_motion=.*stationary, moving"),
    (["--task", "inpaint", "--set", "eval.mask_motion=[]"], "eval.mask_motion"),
    (["--task", "inpaint", "--set", "eval.mask_area=0.7"], r"eval.mask_area=0.7 must be a fraction .* \(0, 0.5\]"),
    (["--task", "inpaint", "--set", "eval.mask_area=0"], "eval.mask_area=0"),
    (["--task", "inpaint", "--set", "eval.mask_seed=-1"], "eval.mask_seed=-1 must be an integer >= 0"),
    (["--task", "extend", "--set", "eval.context=0"], "eval.context=0 must be an integer >= 1"),
    (["--task", "extend", "--set", "eval.predict=2.5"], "eval.predict=2.5 must be an integer >= 1"),
    (["--task", "extend", "--set", "eval.frame_size=[16,64]"], r"eval.frame_size=\[16, 64\] must be null or \[height"),
    (["--task", "inpaint", "--set", "eval.mask_moton=[moving]"], "unknown config key 'eval.mask_moton'"),
])
def test_bad_task_settings_are_clear_input_errors(tmp_path, extra, match):
    with pytest.raises(InputError, match=match):
        config_from_args(eval_args(*task_flags(tmp_path, tmp_path / "out"), *extra))


def test_cli_task_choices():
    with pytest.raises(SystemExit):
        eval_args("--task", "paint", "--output", "x")


def test_clips_of_several_segments_are_refused():
    check_one_segment(49, 24.0, None, "clip a")  # stride [1] below 50 frames: one segment
    with pytest.raises(InputError, match=r"clip a: 100 frames make 2 segments .* eval.clip_len"):
        check_one_segment(100, 24.0, None, "clip a")


def test_mask_seed_is_per_clip_name_and_start_not_location():
    assert mask_key("/a/b/chelsea_0.mp4", 0) == mask_key("s3://bkt/x/chelsea_0.mp4", 0) == "chelsea_0@0"
    assert mask_key("/data/DAVIS/JPEGImages/480p/bear/", 16) == "bear@16"
    assert clip_mask_seed("tree@0") == clip_mask_seed("tree@0") != clip_mask_seed("tree@16")
    assert clip_mask_seed("tree@0", 1) == (clip_mask_seed("tree@0") + 1) % 2 ** 31
    assert parse_methods(None, "extend") == ["m3ddm", "last_frame"]


def test_baselines_never_see_the_hidden_pixels():
    gt = np.random.default_rng(0).integers(0, 256, (4, 40, 40, 3), dtype=np.uint8)
    case = inpaint_case(gt, "stationary", 0.2, seed=1)
    poisoned = inpaint_case(np.where(case.masks[..., None] == 1, 255, gt).astype(np.uint8), "stationary", 0.2, seed=1)
    for method in ("telea", "nearest_known"):
        np.testing.assert_array_equal(inpaint_baseline(method, case.frames, case.masks),
                                      inpaint_baseline(method, poisoned.frames, poisoned.masks))
