"""Evaluation protocols, baselines, dataset readers and the summary table (issue 6); no Ray, no model."""

from __future__ import annotations

import json
import math
import shutil
import statistics

import cv2
import fsspec
import numpy as np
import pytest

from m3ddm_ray import geometry
from m3ddm_ray.errors import InputError
from m3ddm_ray.evaluation import baselines, datasets, report
from m3ddm_ray.evaluation.protocols import (
    BenchmarkProtocol,
    M3DDMPlusProtocol,
    benchmark_known_span,
    m3ddm_plus_target_hw,
)
from m3ddm_ray.pipeline import OutpaintSettings, finalize_clip, prepare_clip
from m3ddm_ray.video import images, read_frames

from conftest import DATA

RNG = np.random.default_rng(0)


def _frames(t, h, w):
    return RNG.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


# --------------------------------------------------------------------------- protocol 1: benchmark
def test_benchmark_066_on_256_keeps_the_central_87_columns_and_the_pipeline_puts_them_there():
    case = {c.label: c for c in BenchmarkProtocol().cases(256)}["0.66"]
    assert case.frame_hw == (256, 256)
    assert case.known_box == (0, 256, 84, 171)  # columns 84..170: 87 columns, 84 generated left, 85 right
    m = case.mask()
    assert int((m[0] == 0).sum()) == 87 and m[:, :84].all() and m[:, 171:].all() and not m[:, 84:171].any()
    # a 256x87 strip at ratio 1:1 on a 256 canvas: columns 84..170, no resize, output = the whole frame
    g = geometry.plan_canvas(256, 87, "1:1", 256)
    assert (g.resized_hw, g.known_box) == ((256, 87), (0, 256, 84, 171))
    assert case.ratio == geometry.Ratio(1, 1) and case.geom == g and case.out_box == (0, 256, 0, 256)
    assert case.exact


def test_benchmark_025_keeps_192_columns_and_the_rounding_rule():
    case = {c.label: c for c in BenchmarkProtocol().cases(256)}["0.25"]
    assert case.known_box == (0, 256, 32, 224) and case.strip_hw == (256, 192) and case.exact
    # kept = floor(W * (1 - r) + 0.5), left = (W - kept) // 2
    assert benchmark_known_span(256, 0.66) == (84, 171)
    assert benchmark_known_span(256, 0.25) == (32, 224)
    assert benchmark_known_span(64, 0.66) == (21, 43)  # 21.76 -> 22 kept
    assert benchmark_known_span(100, 0.5) == (25, 75)
    assert benchmark_known_span(101, 0.5) == (25, 76)  # 50.5 -> 51 kept, odd generated: extra one on the right
    for bad in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(InputError):
            benchmark_known_span(256, bad)
    vert = BenchmarkProtocol(direction="vertical").cases(256)
    assert [c.known_box for c in vert] == [(32, 224, 0, 256), (84, 171, 0, 256)] and all(c.exact for c in vert)


def test_benchmark_ground_truth_is_an_area_resize_to_256():
    frames = _frames(2, 48, 85)
    gt = BenchmarkProtocol(size=32).ground_truth(frames)
    assert gt.shape == (2, 32, 32, 3)
    assert np.array_equal(gt[1], cv2.resize(frames[1], (32, 32), interpolation=cv2.INTER_AREA))


def test_the_unchanged_pipeline_places_the_strip_exactly_on_the_protocol_region():
    gt = _frames(2, 256, 256)
    settings = OutpaintSettings(canvas_size=256)
    for case in BenchmarkProtocol().cases(256) + M3DDMPlusProtocol(crop_axis="vertical").cases(256):
        gt_c = gt[:, :case.frame_hw[0], :case.frame_hw[1]].copy()
        strip = case.strip(gt_c)
        clip = prepare_clip(strip, 24.0, case.ratio, settings)
        assert clip.geom == case.geom
        y0, y1, x0, x1 = clip.geom.known_box
        assert np.array_equal(clip.masked[:, y0:y1, x0:x1], strip)
        noise = _frames(2, 256, 256)  # whatever the model painted
        out = finalize_clip(clip, noise, settings)
        assert out.shape[1:3] == case.frame_hw
        composed, known_error = case.compose(out, gt_c)
        assert known_error == 0.0  # the pipeline's known rectangle is exactly the protocol's region
        m = case.mask().astype(bool)
        assert np.array_equal(composed[:, ~m], gt_c[:, ~m]) and np.array_equal(composed[:, m], out[:, m])


def test_compose_resizes_when_the_canvas_differs_and_reports_known_region_errors():
    case = {c.label: c for c in BenchmarkProtocol().cases(64)}["0.66"]
    assert not case.exact and case.geom.resized_hw == (64, 21) and case.output_hw == (64, 64)
    gt = _frames(2, 256, 256)
    out = _frames(2, 64, 64)
    composed, err = case.compose(out, gt)
    up = cv2.resize(out[0], (256, 256), interpolation=cv2.INTER_CUBIC)
    assert composed.shape == gt.shape and np.array_equal(composed[0, :, :84], up[:, :84])
    assert np.array_equal(composed[:, :, 84:171], gt[:, :, 84:171]) and err > 0
    exact = {c.label: c for c in BenchmarkProtocol(size=64).cases(64)}["0.25"]
    g = _frames(1, 64, 64)
    bad = g.copy()
    bad[0, 10, 30] = g[0, 10, 30] ^ 0x40  # one known pixel off by 64 levels
    composed, err = exact.compose(bad, g)
    assert err == 64.0 and np.array_equal(composed, g)
    with pytest.raises(InputError):
        exact.compose(bad.astype(np.int16), g)


# --------------------------------------------------------------------------- protocol 2: M3DDM+
def test_m3ddm_plus_geometry_follows_the_published_script():
    assert m3ddm_plus_target_hw(256, "16:9") == (144, 256)
    assert m3ddm_plus_target_hw(256, "9:16") == (256, 144)
    assert m3ddm_plus_target_hw(256, "21:9") == (104, 256)  # round(109.7) = 110 -> floored to 104
    assert m3ddm_plus_target_hw(256, "4:3") == (192, 256)
    h = M3DDMPlusProtocol(crop_ratios=(0.25, 0.66)).cases(256)
    assert [c.known_box for c in h] == [(0, 144, 32, 224), (0, 144, 84, 172)]  # cut = floor(256 * r / 2)
    v = M3DDMPlusProtocol(crop_axis="vertical").cases(256)[0]
    assert v.known_box == (18, 126, 0, 256) and v.strip_hw == (108, 256)  # rows 18..125
    tall = M3DDMPlusProtocol(target_ratio="9:16").cases(256)[0]
    assert tall.known_box == (0, 256, 18, 126) and tall.ratio == geometry.Ratio(9, 16)
    for c in h + [v, tall] + M3DDMPlusProtocol(target_ratio="21:9", crop_axis="vertical").cases(256):
        assert c.exact, c.describe()
    assert str(M3DDMPlusProtocol(target_ratio="21:9").cases(256)[0].ratio) == "32:13"  # the frame's own ratio
    with pytest.raises(InputError):
        M3DDMPlusProtocol(crop_axis="diagonal")


def test_m3ddm_plus_ground_truth_covers_then_centre_crops():
    frames = _frames(2, 120, 120)  # square source at 16:9: scale 256/120, crop rows
    gt = M3DDMPlusProtocol().ground_truth(frames)
    big = cv2.resize(frames[1], (256, 256), interpolation=cv2.INTER_LINEAR)
    assert gt.shape == (2, 144, 256, 3) and np.array_equal(gt[1], big[56:200])
    wide = _frames(1, 480, 854)  # DAVIS 480p: scale 0.3 -> exactly 144 x 256
    assert np.array_equal(M3DDMPlusProtocol().ground_truth(wide)[0],
                          cv2.resize(wide[0], (256, 144), interpolation=cv2.INTER_LINEAR))


# --------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("method", list(baselines.BASELINES))
def test_baselines_keep_the_known_region_and_fill_the_rest(method):
    case = {c.label: c for c in BenchmarkProtocol(size=64).cases(64)}["0.66"]
    gt = _frames(3, 64, 64)
    strip = case.strip(gt)
    out = baselines.outpaint(method, strip, case.geom, case.ratio)
    assert out.shape == gt.shape and out.dtype == np.uint8
    assert np.array_equal(out[:, :, 21:43], strip)
    assert case.compose(out, gt)[1] == 0.0
    flat = np.full((2, 64, 22, 3), 77, np.uint8)  # a constant strip is continued as a constant
    fill = baselines.outpaint(method, flat, case.geom, case.ratio).astype(int)
    if method == "telea":  # OpenCV's TELEA drifts by a few levels even on a flat image
        assert np.abs(fill - 77).max() <= 6
    else:
        assert (fill == 77).all()


def test_baseline_fills_are_the_documented_ones():
    from m3ddm_ray.evaluation.config import METHODS

    assert METHODS == ("m3ddm", *baselines.BASELINES) == ("m3ddm", "replicate", "reflect", "blur", "telea")
    case = {c.label: c for c in BenchmarkProtocol(size=64).cases(64)}["0.66"]
    strip = _frames(2, 64, 22)
    rep = baselines.replicate(strip, case.geom)
    assert np.array_equal(rep[:, :, 0], strip[:, :, 0]) and np.array_equal(rep[:, :, 63], strip[:, :, -1])
    ref = baselines.reflect(strip, case.geom)
    for j in range(1, 21):  # mirror about the edge columns, edge not repeated
        assert np.array_equal(ref[:, :, 21 - j], strip[:, :, j])
    masked, inpainted = geometry.make_canvases(strip, case.geom)
    assert np.array_equal(baselines.place_on_canvas(strip, case.geom), masked)
    assert np.array_equal(baselines.telea(strip, case.geom), inpainted)  # the pipeline's own TELEA start
    bl = baselines.blur(strip, case.geom)
    border = bl[:, :, :21].astype(float)
    assert np.abs(np.diff(border, axis=2)).mean() < 0.25 * np.abs(np.diff(strip.astype(float), axis=2)).mean()
    # a strip scaled onto a smaller canvas is placed like make_canvases does (float resize, truncation)
    small = {c.label: c for c in BenchmarkProtocol(size=256).cases(64)}["0.25"]
    s256 = _frames(1, 256, 192)
    assert np.array_equal(baselines.place_on_canvas(s256, small.geom), geometry.make_canvases(s256, small.geom)[0])


# --------------------------------------------------------------------------- dataset readers
def _write_jpgs(folder, frames, names=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        name = names[i] if names else f"{i:05d}.jpg"
        cv2.imwrite(str(folder / name), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))


def test_davis2017_reader_and_its_errors(tmp_path):
    root = tmp_path / "DAVIS"
    _write_jpgs(root / "JPEGImages/480p/bear", _frames(3, 24, 40))
    _write_jpgs(root / "JPEGImages/480p/bmx-trees", _frames(12, 24, 40))
    (root / "ImageSets/2017").mkdir(parents=True)
    (root / "ImageSets/2017/val.txt").write_text("bmx-trees\nbear\n")
    vids = datasets.read_davis2017(root)
    assert [(v.name, v.num_frames, v.fps) for v in vids] == [("bmx-trees", 12, 24.0), ("bear", 3, 24.0)]
    assert vids[0].frames[-1].endswith("bmx-trees/00011.jpg")
    clips = datasets.make_clips(vids, clip_len=5, mode="all")
    assert [(c.clip_id, c.start, c.num_frames) for c in clips] == [
        ("bmx-trees-00000", 0, 5), ("bmx-trees-00005", 5, 5), ("bear-00000", 0, 3)]
    assert [(c.clip_id, c.num_frames) for c in datasets.make_clips(vids, 0)] == [("bmx-trees", 12), ("bear", 3)]
    assert [c.clip_id for c in datasets.make_clips(vids, 16, max_clips=1)] == ["bmx-trees"]
    loaded = datasets.load_clip(clips[1])
    assert loaded.shape == (5, 24, 40, 3)
    assert np.array_equal(loaded[0], cv2.cvtColor(cv2.imread(str(root / "JPEGImages/480p/bmx-trees/00005.jpg")),
                                                  cv2.COLOR_BGR2RGB))
    with pytest.raises(InputError, match=r"ImageSets/2017/train\.txt not found"):
        datasets.read_davis2017(root, split="train")
    (root / "ImageSets/2017/val.txt").write_text("bear\ncamel\n")
    with pytest.raises(InputError, match=r"'camel'.*JPEGImages/480p/camel is missing"):
        datasets.read_davis2017(root)
    with pytest.raises(InputError, match=r"nowhere not found"):
        datasets.read_davis2017(tmp_path / "nowhere")


def test_davis2016_reader_uses_the_listed_frames(tmp_path):
    root = tmp_path / "DAVIS16"
    _write_jpgs(root / "JPEGImages/480p/bear", _frames(4, 16, 24))
    _write_jpgs(root / "JPEGImages/480p/car", _frames(2, 16, 24))
    (root / "ImageSets/480p").mkdir(parents=True)
    lines = [f"/JPEGImages/480p/bear/{i:05d}.jpg /Annotations/480p/bear/{i:05d}.png" for i in range(3)]
    lines += [f"/JPEGImages/480p/car/{i:05d}.jpg /Annotations/480p/car/{i:05d}.png" for i in range(2)]
    (root / "ImageSets/480p/val.txt").write_text("\n".join(lines) + "\n")
    vids = datasets.read_davis2016(root)
    assert [(v.name, v.num_frames) for v in vids] == [("bear", 3), ("car", 2)]  # 3 listed, 4 on disk
    assert datasets.read_dataset("davis2016", root)[0].frames == vids[0].frames
    (root / "ImageSets/480p/val.txt").write_text(lines[0] + "\n/JPEGImages/480p/bear/00009.jpg /A/x.png\n")
    with pytest.raises(InputError, match=r"bear/00009\.jpg listed in .*val\.txt does not exist"):
        datasets.read_davis2016(root)
    (root / "ImageSets/480p/val.txt").write_text("garbage\n")
    with pytest.raises(InputError, match="line 1"):
        datasets.read_davis2016(root)
    with pytest.raises(InputError, match=r"ImageSets/480p/train\.txt not found"):
        datasets.read_davis2016(root, split="train")


def test_youtube_vos_reader_every_fifth_frame_at_6_fps(tmp_path):
    root = tmp_path / "ytvos"
    _write_jpgs(root / "valid/JPEGImages/0a49f5265b", _frames(3, 16, 24), ["00000.jpg", "00005.jpg", "00010.jpg"])
    _write_jpgs(root / "valid/JPEGImages/003234408d", _frames(2, 16, 24), ["00000.jpg", "00005.jpg"])
    vids = datasets.read_youtube_vos(root, "val")  # 'val' reads the 'valid' folder
    assert [(v.name, v.num_frames, v.fps, v.split) for v in vids] == [
        ("003234408d", 2, 6.0, "valid"), ("0a49f5265b", 3, 6.0, "valid")]
    assert [f.rsplit("/", 1)[-1] for f in vids[1].frames] == ["00000.jpg", "00005.jpg", "00010.jpg"]
    with pytest.raises(InputError, match=r"train/JPEGImages not found"):
        datasets.read_youtube_vos(root, "train")
    (root / "valid/JPEGImages/empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no image files"):
        datasets.read_youtube_vos(root, "valid")


def test_folder_reader_probes_videos(tmp_path):
    (tmp_path / "vids/sub").mkdir(parents=True)
    shutil.copy(DATA / "box_24.mp4", tmp_path / "vids/sub/box.mp4")
    shutil.copy(DATA / "megamind_20.mp4", tmp_path / "vids/mm.mp4")
    (tmp_path / "vids/notes.txt").write_text("not a video")
    vids = datasets.read_video_folder(tmp_path / "vids")
    assert [v.uri.rsplit("/", 1)[-1] for v in vids] == ["mm.mp4", "box.mp4"]
    clips = datasets.make_clips(vids, 16)
    assert [c.num_frames for c in clips] == [16, 16] and clips[0].frame_uris is None and clips[0].fps > 0
    frames = datasets.load_clip(clips[1])
    ref, _ = read_frames(tmp_path / "vids/sub/box.mp4", range(16))
    assert np.array_equal(frames, ref)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no videos found"):
        datasets.read_video_folder(tmp_path / "empty")
    with pytest.raises(InputError, match="folder not found"):
        datasets.read_video_folder(tmp_path / "missing")


def test_image_sequences_local_and_fsspec(tmp_path):
    folder = tmp_path / "seq"
    frames = _frames(3, 8, 10)
    for i, name in enumerate(["2.png", "10.png", "1.png"]):  # natural order: 1, 2, 10
        folder.mkdir(exist_ok=True)
        cv2.imwrite(str(folder / name), cv2.cvtColor(frames[i], cv2.COLOR_RGB2BGR))
    got, fps = images.read_image_sequence(folder)
    assert fps == images.DEFAULT_FPS and np.array_equal(got, frames[[2, 0, 1]])  # PNG: lossless
    (folder / "fps.txt").write_text("12.5\n")
    assert images.read_image_sequence(folder)[1] == 12.5
    assert images.read_image_sequence(folder, fps=30)[1] == 30.0
    assert images.is_image_sequence(folder) and not images.is_image_sequence(DATA / "tree_60.mp4")
    # what the main job's PrepareStage would use for a frame folder: streamed frames + a VideoInfo
    info = images.image_sequence_info(folder)
    assert (info.num_frames, info.width, info.height, info.fps, info.has_audio) == (3, 10, 8, 12.5, False)
    streamed = np.stack(list(images.iter_image_sequence(folder)))
    assert np.array_equal(streamed, got)
    clip = prepare_clip(streamed, info.fps, "1:1", OutpaintSettings(canvas_size=16))
    assert clip.num_frames == 3 and clip.geom.source_hw == (8, 10)
    (folder / "fps.txt").write_text("fast")
    with pytest.raises(InputError, match="fps.txt"):
        images.read_image_sequence(folder)
    cv2.imwrite(str(folder / "11.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match=r"11\.png: frame 3 is 4x4"):
        images.read_image_sequence(folder, fps=24)
    with pytest.raises(InputError, match="frame folder not found"):
        images.read_image_sequence(tmp_path / "missing")
    # fsspec: a DAVIS 2017 tree in memory://
    fs = fsspec.filesystem("memory")
    base = "memory://evaltest/DAVIS"
    for i, f in enumerate(frames):
        png = cv2.imencode(".png", cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1].tobytes()
        fs.pipe(f"{base}/JPEGImages/480p/cat/{i:05d}.png", png)
    fs.pipe(f"{base}/ImageSets/2017/val.txt", b"cat\n")
    vids = datasets.read_davis2017(base)
    assert vids[0].uri == f"{base}/JPEGImages/480p/cat" and vids[0].num_frames == 3
    assert np.array_equal(datasets.load_clip(datasets.make_clips(vids, 2)[0]), frames[:2])
    assert np.array_equal(images.read_image_sequence(vids[0].uri)[0], frames)


# --------------------------------------------------------------------------- summary table
def test_summary_reproduces_the_mean_over_ratios_and_the_published_column_order():
    rows = []
    for clip in ("a", "b", "c"):
        for lab in ("0.25", "0.66"):
            for m in ("m3ddm", "blur"):
                v = RNG.uniform(10, 40)
                rows.append({"clip_id": clip, "ratio_label": lab, "method": m, "status": "ok", "psnr": v,
                             "ssim": v / 50, "lpips": 1 / v, "bmse": v / 1000})
    rows.append({"clip_id": "d", "ratio_label": "0.66", "method": "blur", "status": "error", "psnr": float("nan"),
                 "ssim": float("nan"), "lpips": float("nan"), "bmse": float("nan")})
    s = report.summarize(rows, {("m3ddm", "0.25"): 10.0, ("m3ddm", "0.66"): 20.0})
    for m in ("m3ddm", "blur"):
        for lab in ("0.25", "0.66"):
            expect = statistics.fmean(r["psnr"] for r in rows if r["method"] == m and r["ratio_label"] == lab
                                      and r["status"] == "ok")
            assert s["methods"][m][lab]["psnr"] == expect and s["methods"][m][lab]["clips"] == 3
        assert s["methods"][m]["mean"]["ssim"] == statistics.fmean(
            [s["methods"][m]["0.25"]["ssim"], s["methods"][m]["0.66"]["ssim"]])
    assert s["methods"]["blur"]["0.66"]["errors"] == 1
    assert s["methods"]["m3ddm"]["mean"]["fvd"] == 15.0 and math.isnan(s["methods"]["blur"]["mean"]["fvd"])
    md = report.summary_markdown(s)
    header = [c.strip() for c in md.splitlines()[0].strip("|").split("|")]
    assert header == ["method", "ratio 0.25 PSNR↑", "ratio 0.25 SSIM↑", "ratio 0.25 LPIPS↓", "ratio 0.25 FVD↓",
                      "ratio 0.66 PSNR↑", "ratio 0.66 SSIM↑", "ratio 0.66 LPIPS↓", "ratio 0.66 FVD↓",
                      "mean PSNR↑", "mean SSIM↑", "mean LPIPS↓", "mean FVD↓"]
    perfect = report.summarize([{"method": "x", "ratio_label": "0.25", "status": "ok", "psnr": math.inf,
                                 "ssim": 1.0, "lpips": 0.0, "bmse": 0.0}])
    data = json.loads(report.summary_json(perfect, protocol="benchmark"))
    assert data["methods"]["x"]["0.25"]["psnr"] == "inf" and data["methods"]["x"]["mean"]["fvd"] == "nan"
