"""`m3ddm-ray eval` on a DAVIS-2017-layout folder built from real frames, with the tiny model and every
baseline, on the shared local Ray session (issue 6)."""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from m3ddm_ray.errors import InputError, ModelLoadError
from m3ddm_ray.evaluation.run import add_eval, config_from_args
from m3ddm_ray.video import read_frames

from conftest import DATA, GOLDEN

pytestmark = pytest.mark.ray

ROOT = Path(__file__).resolve().parent.parent
METHODS = ["m3ddm", "replicate", "reflect", "blur", "telea"]
SEQS = {"tree": ("tree_60.mp4", range(0, 18)), "megamind": ("megamind_20.mp4", range(1, 18))}


def eval_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="m3ddm-ray")
    add_eval(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["eval", *argv])


def tiny_flags(root, output, *extra):
    return ["--dataset", "davis2017", "--root", str(root), "--output", str(output),
            "--config", str(ROOT / "configs" / "tiny-cpu.yaml"),
            "--model", str(GOLDEN / "models" / "unet"), "--vae", str(GOLDEN / "models" / "vae"),
            "--steps", "2", "--canvas-size", "64", "--set", "eval.benchmark.size=64", *extra]


def write_davis(root: Path, seqs: dict[str, np.ndarray], ext: str = ".jpg") -> None:
    for name, frames in seqs.items():
        folder = root / "JPEGImages" / "480p" / name
        folder.mkdir(parents=True)
        for i, f in enumerate(frames):
            cv2.imwrite(str(folder / f"{i:05d}{ext}"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{n}\n" for n in seqs))


@pytest.fixture(scope="module")
def davis(tmp_path_factory):
    root = tmp_path_factory.mktemp("davis") / "DAVIS"
    write_davis(root, {name: read_frames(DATA / f, r)[0] for name, (f, r) in SEQS.items()})
    return root


@pytest.fixture(scope="module")
def eval_run(ray_session, davis, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "out"
    args = eval_args(*tiny_flags(davis, out, "--method", ",".join(METHODS),
                                 "--set", "eval.metrics.lpips_weights=random-init"))
    rc = args.func(args)
    return rc, out, config_from_args(args)


def ground_truth(davis: Path, seq: str, size: int = 64, n: int = 16) -> np.ndarray:
    """The protocol's ground truth computed here from the JPEG files (OpenCV decode, INTER_AREA)."""
    files = sorted((davis / "JPEGImages" / "480p" / seq).glob("*.jpg"))[:n]
    frames = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])


def sk_scores(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    psnr = [peak_signal_noise_ratio(g, p, data_range=255) for p, g in zip(pred, gt)]
    ssim = [structural_similarity(g, p, channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False) for p, g in zip(pred, gt)]
    return float(np.mean(psnr)), float(np.mean(ssim))


def test_every_clip_ratio_and_method_is_scored_with_a_summary_and_a_report(eval_run):
    rc, out, _ = eval_run
    assert rc == 0
    rows = pq.read_table(out / "per_clip.parquet").to_pylist()
    keys = sorted((r["clip_id"], r["ratio_label"], r["method"]) for r in rows)
    assert keys == sorted((c, lab, m) for c in SEQS for lab in ("0.25", "0.66") for m in METHODS)
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["frames"] == 16 and r["fps"] == 24.0 and (r["frame_height"], r["frame_width"]) == (64, 64)
        assert r["placement_exact"] and r["known_error"] == 0.0  # the input came back unchanged
        assert r["known_box"] == ("0,64,8,56" if r["ratio_label"] == "0.25" else "0,64,21,43")
        assert 0 < r["psnr"] < 60 and -1 <= r["ssim"] < 1 and r["lpips"] > 0 and r["bmse"] > 0
        impl = json.loads(r["metric_impl"])
        assert "skimage" in impl["psnr"] and "random-init" in impl["lpips"]
        if r["method"] == "m3ddm":
            assert r["seconds_unet"] > 0 and r["model"].endswith("unet") and r["config_hash"]
        else:
            assert r["model"] is None and r["seconds_method"] >= 0
    # the HTML page shows one strip image per row, each next to it on disk
    page = (out / "report" / "index.html").read_text()
    for r in rows:
        assert f"src='{r['image']}'" in page
        img = cv2.imread(str(out / "report" / r["image"]))
        assert img.shape == (18 + 4 * (128 + 4) - 4, 3 * 128 + 2 * 4, 3)  # 4 frames, 3 panels, 64 px x2
    # what the "input" panel shows: the known strip only
    img = cv2.cvtColor(cv2.imread(str(out / "report" / "img" / "tree_0.66_replicate.png")), cv2.COLOR_BGR2RGB)
    assert (img[18:18 + 128, :42] == 0).all() and img[18:18 + 128, 42:86].any()
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [(m["clip_id"], m["start"], m["num_frames"], len(m["frame_uris"])) for m in manifest] == [
        ("tree", 0, 16, 16), ("megamind", 0, 16, 16)]
    md = (out / "summary.md").read_text()
    assert "| method | ratio 0.25 PSNR↑ | ratio 0.25 SSIM↑ | ratio 0.25 LPIPS↓ | ratio 0.25 FVD↓ |" in md
    assert all(f"| {m} |" in md for m in METHODS)


def test_scores_equal_scikit_image_on_independently_built_outputs(eval_run, davis):
    _, out, _ = eval_run
    table = pq.read_table(out / "per_clip.parquet").to_pylist()
    rows = {(r["clip_id"], r["ratio_label"], r["method"]): r for r in table}
    for seq in SEQS:
        gt = ground_truth(davis, seq)
        for lab, (a, b) in (("0.25", (8, 56)), ("0.66", (21, 43))):
            strip = gt[:, :, a:b]
            for method, mode in (("replicate", "edge"), ("reflect", "reflect")):
                pred = np.pad(strip, ((0, 0), (0, 0), (a, 64 - b), (0, 0)), mode=mode)
                psnr, ssim = sk_scores(pred, gt)
                row = rows[(seq, lab, method)]
                assert row["psnr"] == pytest.approx(psnr, rel=1e-12)
                assert row["ssim"] == pytest.approx(ssim, rel=1e-9)


def test_m3ddm_rows_score_the_single_process_pipeline_output(eval_run, davis, tiny_unet, tiny_vae):
    from m3ddm_ray.distributed.config import job_settings
    from m3ddm_ray.pipeline import OutpaintPipeline

    _, out, (cfg, _) = eval_run
    row = [r for r in pq.read_table(out / "per_clip.parquet").to_pylist()
           if (r["clip_id"], r["ratio_label"], r["method"]) == ("tree", "0.66", "m3ddm")][0]
    gt = ground_truth(davis, "tree")
    pipe = OutpaintPipeline(tiny_unet, tiny_vae, job_settings(cfg))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a 1-CPU Ray actor (CPU kernels round differently with more threads)
    try:
        output = pipe.run_clip(np.ascontiguousarray(gt[:, :, 21:43]), 24.0, "1:1")[0]
    finally:
        torch.set_num_threads(threads)
    assert output.shape == gt.shape and np.array_equal(output[:, :, 21:43], gt[:, :, 21:43])
    psnr, ssim = sk_scores(output, gt)
    assert row["psnr"] == pytest.approx(psnr, rel=1e-9) and row["ssim"] == pytest.approx(ssim, rel=1e-9)


def test_summary_is_the_mean_over_clips_then_over_ratios(eval_run):
    _, out, _ = eval_run
    rows = pq.read_table(out / "per_clip.parquet").to_pylist()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"] == ["0.25", "0.66"] and summary["protocol"] == "benchmark"
    assert summary["columns"] == ["PSNR↑", "SSIM↑", "LPIPS↓", "FVD↓"]
    for m in METHODS:
        cells = summary["methods"][m]
        for key in ("psnr", "ssim", "lpips", "bmse"):
            per_ratio = [statistics.fmean(r[key] for r in rows if r["method"] == m and r["ratio_label"] == lab)
                         for lab in ("0.25", "0.66")]
            assert [cells["0.25"][key], cells["0.66"][key]] == per_ratio  # exactly, not approximately
            assert cells["mean"][key] == statistics.fmean(per_ratio)
        assert cells["mean"]["fvd"] == "nan"  # no FVD weights configured
    md = (out / "summary.md").read_text()
    rep = summary["methods"]["replicate"]
    assert f"| replicate | {rep['0.25']['psnr']:.2f} | {rep['0.25']['ssim']:.4f} |" in md
    assert f"{rep['mean']['psnr']:.2f} | {rep['mean']['ssim']:.4f} | {rep['mean']['lpips']:.4f} | – |" in md


def test_m3ddm_plus_protocol_perfect_reconstructions_fvd_and_a_broken_clip(ray_session, tmp_path):
    """M3DDM+ setting (16:9 frames, long side 64, crop 0.66): flat frames are continued exactly by the
    baselines: PSNR inf, SSIM 1, LPIPS 0, FVD ~0; a clip with an undecodable frame becomes error rows
    (exit code 1) without stopping the others."""
    root = tmp_path / "DAVIS"
    flat = {"grey": np.full((10, 48, 80, 3), 128, np.uint8), "green": np.full((10, 48, 80, 3), (20, 180, 40), np.uint8),
            "broken": np.full((10, 48, 80, 3), 60, np.uint8)}
    write_davis(root, flat, ".png")
    (root / "JPEGImages/480p/broken/00003.png").write_bytes(b"not a png")
    args = eval_args(*tiny_flags(root, tmp_path / "out", "--protocol", "m3ddm-plus", "--method", "replicate,blur",
                                 "--clip-len", "9", "--set", "eval.m3ddm_plus.output_size=64",
                                 "--set", "eval.m3ddm_plus.crop_ratios=[0.66]",
                                 "--set", "eval.metrics.lpips_weights=random-init",
                                 "--fvd-weights", "random-init"))
    assert args.func(args) == 1
    rows = pq.read_table(tmp_path / "out" / "per_clip.parquet").to_pylist()
    assert len(rows) == 6
    for r in rows:
        if r["clip_id"] == "broken":
            assert r["status"] == "error" and r["error"].startswith("prepare: ") and "00003.png" in r["error"]
            assert math.isnan(r["psnr"])
        else:
            assert r["status"] == "ok", r["error"]
            assert (r["protocol"], r["frame_height"], r["frame_width"], r["known_box"]) == (
                "m3ddm-plus", 32, 64, "0,32,21,43")  # 16:9 at 64 -> 36 -> 32 rows; cut floor(64*0.66/2) = 21
            assert r["placement_exact"] and r["target_ratio"] == "2:1"
            assert r["psnr"] == math.inf and r["ssim"] == 1.0 and r["lpips"] == 0.0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    for m in ("replicate", "blur"):
        cell = summary["methods"][m]["0.66"]
        assert cell["psnr"] == "inf" and cell["ssim"] == 1.0 and cell["clips"] == 2 and cell["errors"] == 1
        assert 0.0 <= cell["fvd"] < 1e-6  # generated set == real set
        assert summary["methods"][m]["mean"]["fvd"] == cell["fvd"]
    assert summary["fvd"]["sets"]["replicate 0.66"] == "2 clips"
    assert "prepare: " in (tmp_path / "out" / "report" / "index.html").read_text()


def test_invalid_input_fails_before_anything_runs(tmp_path):
    from m3ddm_ray.evaluation.run import run_eval

    (tmp_path / "JPEGImages" / "480p").mkdir(parents=True)
    cfg, ecfg = config_from_args(eval_args(*tiny_flags(tmp_path, tmp_path / "out")))
    with pytest.raises(InputError, match=r"ImageSets/2017/val\.txt not found"):
        run_eval(cfg, ecfg, str(tmp_path / "out"))
    with pytest.raises(InputError, match="unknown method 'gan'"):
        config_from_args(eval_args(*tiny_flags(tmp_path, tmp_path / "out", "--method", "gan")))
    with pytest.raises(InputError, match=r"unknown config key 'eval\.clip_length'"):
        config_from_args(eval_args(*tiny_flags(tmp_path, tmp_path / "out", "--set", "eval.clip_length=3")))
    write_davis(tmp_path / "ok", {"a": np.zeros((2, 8, 8, 3), np.uint8)})
    with pytest.raises(ModelLoadError, match=r"lpips-weights .*alex\.pth: file not found"):
        run_eval(*config_from_args(eval_args(*tiny_flags(tmp_path / "ok", tmp_path / "out", "--lpips-weights",
                                                         str(tmp_path / "alex.pth")))), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    # the shipped eval configs load (job keys validated by load_config, eval keys here)
    for name, protocol in (("davis-eval.yaml", "benchmark"), ("m3ddm-plus-eval.yaml", "m3ddm-plus")):
        cfg, ecfg = config_from_args(eval_args("--config", str(ROOT / "configs" / name), "--output", "x"))
        assert ecfg["protocol"] == protocol and cfg["output_size"] == "canvas" and cfg["canvas_size"] == 256
