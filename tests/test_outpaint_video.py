"""The ``m3ddm-ray outpaint-video`` command (m3ddm_ray.cli) end to end, with the tiny golden models.

Runs are kept small (``--steps 2 --canvas-size 64``); the two diffusion runs of ``tree_60.mp4``
(60 frames: stride-15 coarse pass, stride-5 and stride-1 fine passes, 6 windows) are shared by the
tests of a module fixture.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import uuid
from fractions import Fraction

import av
import fsspec
import numpy as np
import pytest

from m3ddm_ray import geometry, storage, video
from m3ddm_ray.cli import main, output_uris
from m3ddm_ray.errors import InputError
from m3ddm_ray.pipeline import OutpaintPipeline, OutpaintSettings, Outpainter
from m3ddm_ray.sampling import SamplerSettings

from conftest import DATA, GOLDEN

UNET = str(GOLDEN / "models" / "unet")
VAE = str(GOLDEN / "models" / "vae")
FAST = ["--model", UNET, "--vae", VAE, "--steps", "2", "--canvas-size", "64", "--dtype", "fp32",
        "--device", "cpu", "--preset", "ultrafast"]
SETTINGS = OutpaintSettings(sampler=SamplerSettings(num_inference_steps=2), canvas_size=64)


def data(name: str) -> str:
    return str(DATA / name)


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 brightness, rounded to uint8."""
    y = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.round(y).astype(np.uint8)


def audio_duration(uri: str) -> float:
    with storage.open_uri(uri) as f, av.open(f) as c:
        s = c.streams.audio[0]
        return float(s.duration * s.time_base)


def run_cli(argv: list[str], spy_writes: bool = False) -> dict:
    """``main(argv)`` with stdout/stderr captured; with ``spy_writes`` also the frames handed to
    ``write_video`` (before encoding), keyed by output URI."""
    out, err, written = io.StringIO(), io.StringIO(), {}
    real_write = video.write_video

    def spy(uri, frames, fps, **kw):
        written[str(uri)] = np.array(frames, copy=True)
        return real_write(uri, frames, fps, **kw)

    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        if spy_writes:
            mp.setattr(video, "write_video", spy)
        rc = main(argv)
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(), "written": written}


def expected_hw(height: int, width: int, ratio: str, canvas: int = 64) -> tuple[int, int]:
    y0, y1, x0, x1 = geometry.crop_box(geometry.plan_canvas(height, width, ratio, canvas))
    return y1 - y0, x1 - x0


# ------------------------------------------------------------------------------------------------
# tree_60.mp4 -> 9:16, 1:1 (and 4:3, which it already is), one CLI call
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree_run(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("tree")
    res = run_cli(["outpaint-video", data("tree_60.mp4"), "--ratio", "9:16,1:1", "--ratio", "4:3",
                   "--out", str(outdir), "--no-progress", *FAST], spy_writes=True)
    assert res["rc"] == 0, res["stderr"]
    res["outputs"] = {r: str(outdir / f"tree_60_{r.replace(':', 'x')}.mp4") for r in ("9:16", "1:1", "4:3")}
    return res


@pytest.mark.parametrize("ratio", ["9:16", "1:1"])
def test_tree_outputs_decode_with_all_frames_right_size_and_rate(tree_run, ratio):
    uri = tree_run["outputs"][ratio]
    src = video.probe(data("tree_60.mp4"))
    info = video.probe(uri, count_frames=True)
    frames, _ = video.read_frames(uri)
    h, w = expected_hw(120, 160, ratio)
    assert frames.shape == (60, h, w, 3)
    assert (info.num_frames, info.height, info.width) == (60, h, w)
    assert info.frame_rate == src.frame_rate == Fraction(15)
    assert not info.has_audio  # the source has none
    # one line per output: path, frames, size, seconds
    line = next(ln for ln in tree_run["stdout"].splitlines() if ln.startswith(uri))
    assert f"60 frames  {w}x{h}" in line and line.rstrip().endswith(" s")
    assert "unchanged" not in line


def test_tree_sizes_follow_the_ratio(tree_run):
    (h916, w916), (h11, w11) = (tree_run["written"][tree_run["outputs"][r]].shape[1:3] for r in ("9:16", "1:1"))
    assert (h916, w916) == (64, 36) and abs(w916 / h916 - 9 / 16) < 0.01
    assert (h11, w11) == (64, 64)


def test_tree_known_region_is_the_source(tree_run):
    """The centre of the 1:1 output is the (resized) source, the generated border is not."""
    src, _ = video.read_frames(data("tree_60.mp4"))
    out = tree_run["written"][tree_run["outputs"]["1:1"]]
    geom = geometry.plan_canvas(120, 160, "1:1", 64)
    masked, _ = geometry.make_canvases(src, geom)
    y0, y1, x0, x1 = geom.known_box
    assert (y0, y1, x0, x1) == (8, 56, 0, 64)
    assert np.array_equal(out[:, y0:y1, x0:x1], masked[:, y0:y1, x0:x1])


def test_tree_passthrough_ratio_in_the_same_call(tree_run):
    uri = tree_run["outputs"]["4:3"]
    line = next(ln for ln in tree_run["stdout"].splitlines() if ln.startswith(uri))
    assert "unchanged" in line and "160x120" in line
    src, _ = video.read_frames(data("tree_60.mp4"))
    assert np.array_equal(tree_run["written"][uri], src)
    assert len(tree_run["stdout"].splitlines()) == 3


def test_in_process_pipeline_gives_the_frames_the_cli_wrote(tree_run, tiny_unet, tiny_vae):
    frames, info = video.read_frames(data("tree_60.mp4"))
    outs = OutpaintPipeline(tiny_unet, tiny_vae, SETTINGS)(frames, info.fps, "9:16")
    assert list(outs) == ["9:16"]
    uri = tree_run["outputs"]["9:16"]
    assert np.array_equal(outs["9:16"], tree_run["written"][uri])  # exact, before encoding
    decoded, _ = video.read_frames(uri)
    want = outs["9:16"]
    assert decoded.shape == want.shape
    # H.264 yuv420p is lossy and keeps one colour sample per 2x2 pixels: on the tiny random model's
    # noisy output (and a 36x64 frame) that alone costs ~8 RGB levels, so compare brightness
    assert mae(luma(decoded), luma(want)) < 3


def test_in_process_runs_are_deterministic_and_seeded(tiny_unet, tiny_vae):
    frames, info = video.read_frames(data("with_audio_20.mp4"), range(8))  # one 8-frame window
    pipe = OutpaintPipeline(tiny_unet, tiny_vae, SETTINGS)
    a = pipe(frames, info.fps, "9:16")["9:16"]
    b = pipe(frames, info.fps, "9:16")["9:16"]
    c = pipe.with_settings(sampler=SamplerSettings(num_inference_steps=2, seed=7))(frames, info.fps, "9:16")["9:16"]
    assert a.shape == (8,) + expected_hw(118, 160, "9:16") + (3,)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


# ------------------------------------------------------------------------------------------------
# with_audio_20.mp4 -> 9:16 at the source resolution, with audio, {ratio} in --out, progress bar
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("audio")
    res = run_cli(["outpaint-video", data("with_audio_20.mp4"), "--ratio", "9:16",
                   "--out", str(outdir / "clip_{ratio}.mp4"), "--output-size", "source", *FAST])
    assert res["rc"] == 0, res["stderr"]
    res["uri"] = str(outdir / "clip_9x16.mp4")
    return res


def test_audio_is_kept(audio_run):
    src = data("with_audio_20.mp4")
    info = video.probe(audio_run["uri"])
    assert info.has_audio and info.audio_codec == video.probe(src).audio_codec == "aac"
    assert audio_duration(audio_run["uri"]) == pytest.approx(audio_duration(src), abs=0.05)
    assert info.frame_rate == Fraction(15)
    assert "outpaint 9:16" in audio_run["stderr"]  # the progress bar (no --no-progress here)
    assert audio_run["stdout"].startswith(audio_run["uri"] + "  20 frames  ")


def test_output_size_source_keeps_the_source_resolution(audio_run):
    frames, info = video.read_frames(audio_run["uri"])
    src, _ = video.read_frames(data("with_audio_20.mp4"))
    assert frames.shape[0] == 20
    h, w = frames.shape[1:3]
    assert h >= 118 and w >= 160 and h % 2 == 0 and w % 2 == 0
    assert abs(w / h - 9 / 16) < 0.01
    assert (h, w) > expected_hw(118, 160, "9:16")  # larger than the 64-pixel canvas crop
    # the source frames sit unscaled in the output (up to the H.264 round trip)
    lay = geometry.source_resolution_layout(geometry.plan_canvas(118, 160, "9:16", 64))
    assert lay.out_hw == (h, w)
    oy, ox = lay.offset
    assert mae(frames[:, oy:oy + 118, ox:ox + 160], src) < 3


def test_working_size_runs_the_tiled_mode_with_the_same_output_size_and_audio(tmp_path, audio_run):
    uri = str(tmp_path / "tiled.mp4")
    res = run_cli(["outpaint-video", data("with_audio_20.mp4"), "--ratio", "9:16", "--out", uri,
                   "--output-size", "source", "--working-size", "128", "--tile-overlap", "16", *FAST])
    assert res["rc"] == 0, res["stderr"]
    tiled, whole = video.probe(uri), video.probe(audio_run["uri"])
    assert (tiled.num_frames, tiled.width, tiled.height, tiled.frame_rate, tiled.has_audio) == \
        (20, whole.width, whole.height, Fraction(15), True)
    frames, _ = video.read_frames(uri)
    src, _ = video.read_frames(data("with_audio_20.mp4"))
    # the source pasted at its own resolution, where the working canvas (128) places it
    oy, ox = geometry.source_resolution_layout(geometry.plan_canvas(118, 160, "9:16", 128)).offset
    assert mae(frames[:, oy:oy + 118, ox:ox + 160], src) < 3
    assert mae(frames, video.read_frames(audio_run["uri"])[0]) > 0.5  # the border was generated again


# ------------------------------------------------------------------------------------------------
# passthrough: no models, no diffusion
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def no_diffusion(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("diffusion must not run for a clip already at the target ratio")

    monkeypatch.setattr(Outpainter, "run_windows", fail)
    monkeypatch.setattr(OutpaintPipeline, "from_pretrained", classmethod(fail))


def test_passthrough_runs_no_diffusion(tmp_path, capsys, no_diffusion):
    out = tmp_path / "same.mp4"
    rc = main(["outpaint-video", data("tree_60.mp4"), "--ratio", "4:3", "--out", str(out),
               "--model", str(tmp_path / "no-such-model"), "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert cap.out.strip().startswith(f"{out}  60 frames  160x120  ") and "unchanged" in cap.out
    frames, info = video.read_frames(out)
    src, _ = video.read_frames(data("tree_60.mp4"))
    assert frames.shape == src.shape == (60, 120, 160, 3)
    assert mae(frames, src) < 3
    assert info.frame_rate == Fraction(15)


def test_passthrough_crops_odd_sizes_to_even(tmp_path, capsys, no_diffusion):
    """A 161x121 source is 4:3 once cropped to the even 160x120 that H.264 needs."""
    odd = str(tmp_path / "odd.mkv")
    tree, _ = video.read_frames(data("tree_60.mp4"), range(5))
    src = np.pad(tree, ((0, 0), (0, 1), (0, 1), (0, 0)), constant_values=255)  # white last row and column
    with av.open(odd, "w") as c:  # lossless FFV1, which allows odd sizes
        s = c.add_stream("ffv1", rate=15)
        s.width, s.height, s.pix_fmt = 161, 121, "yuv444p"
        for f in src:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    out = tmp_path / "o.mp4"
    rc = main(["outpaint-video", odd, "--ratio", "4:3", "--out", str(out), "--crf", "0", "--no-progress"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "160x120" in cap.out and "unchanged" in cap.out
    frames, _ = video.read_frames(out)
    assert frames.shape == (5, 120, 160, 3)
    decoded_src, _ = video.read_frames(odd)
    assert decoded_src.shape == (5, 121, 161, 3)
    assert mae(frames, decoded_src[:, :120, :160]) < 3  # the top-left even crop, not a resize


def test_passthrough_with_fsspec_urls(capsys, no_diffusion):
    root = f"memory://cli-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    try:
        with open(data("tree_60.mp4"), "rb") as f:
            storage.atomic_write_bytes(f"{root}/in/tree.mp4", f.read())
        rc = main(["outpaint-video", f"{root}/in/tree.mp4", "--ratio", "4:3", "--out", f"{root}/out/",
                   "--no-progress"])
        cap = capsys.readouterr()
        assert rc == 0, cap.err
        uri = f"{root}/out/tree_4x3.mp4"
        assert cap.out.startswith(uri + "  60 frames  160x120")
        assert video.probe(uri, count_frames=True).num_frames == 60
    finally:
        fs.rm(root[len("memory://"):], recursive=True)


# ------------------------------------------------------------------------------------------------
# errors: one line on stderr, exit code 2, no traceback
# ------------------------------------------------------------------------------------------------


def _check_error(capsys, argv, *needles):
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 2
    assert cap.out == ""
    err = cap.err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in cap.err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize("name, reason", [
    ("tree_60_truncated.mp4", "damaged or truncated"),
    ("tree_60_corrupt.mp4", "damaged or truncated"),
    ("not_a_video.mp4", "not a media file"),
    ("audio_only.m4a", "no video stream"),
])
def test_bad_input_files(tmp_path, capsys, name, reason):
    _check_error(capsys, ["outpaint-video", data(name), "--ratio", "9:16", "--out", str(tmp_path / "o.mp4"), *FAST],
                 data(name), reason)
    assert not (tmp_path / "o.mp4").exists()


def test_empty_missing_and_directory_inputs(tmp_path, capsys):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for src, reason in [(empty, "empty file"), (tmp_path / "missing.mp4", "file not found"),
                        (tmp_path, "is a directory")]:
        _check_error(capsys, ["outpaint-video", str(src), "--ratio", "9:16", "--out", str(tmp_path / "o.mp4"),
                              *FAST], str(src), reason)


@pytest.mark.parametrize("ratio, reason", [("abc", "invalid aspect ratio 'abc'"), ("0:1", "'0:1'"),
                                           ("9:16,", "empty aspect ratio")])
def test_bad_ratio(tmp_path, capsys, ratio, reason):
    _check_error(capsys, ["outpaint-video", data("tree_60.mp4"), "--ratio", ratio, "--out", str(tmp_path / "o.mp4"),
                          *FAST], reason, "W:H")


def test_missing_model_folder(tmp_path, capsys):
    missing = str(tmp_path / "no-such-model")
    args = ["outpaint-video", data("with_audio_20.mp4"), "--ratio", "9:16", "--out", str(tmp_path / "o.mp4")]
    _check_error(capsys, args + [*FAST, "--model", missing], missing, "no such folder")
    _check_error(capsys, args + [*FAST, "--vae", missing], missing, "no such folder")
    assert not (tmp_path / "o.mp4").exists()


def test_several_ratios_need_a_folder_or_placeholder(tmp_path, capsys):
    _check_error(capsys, ["outpaint-video", data("tree_60.mp4"), "--ratio", "9:16,1:1",
                          "--out", str(tmp_path / "o.mp4"), *FAST], "o.mp4", "{ratio}")


def test_bad_options_are_usage_errors(tmp_path, capsys):
    base = ["outpaint-video", data("tree_60.mp4"), "--ratio", "9:16", "--out", str(tmp_path / "o.mp4")]
    for extra in (["--steps", "1"], ["--crf", "60"], ["--dtype", "fp64"], ["--output-size", "big"]):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert "usage:" in err and extra[0] in err and "Traceback" not in err
    _check_error(capsys, base + ["--preset", "warp"], "'warp'", "x264 preset")
    _check_error(capsys, base + ["--canvas-size", "60"], "canvas_size=60", "multiple of 8")


# ------------------------------------------------------------------------------------------------
# naming, defaults, module entry point
# ------------------------------------------------------------------------------------------------


def test_output_uris():
    r = geometry.parse_ratios("9:16,1:1")
    assert output_uris("out.mp4", "/v/clip.mp4", r[:1]) == ["out.mp4"]
    assert output_uris("d", "/v/clip.mp4", r) == [os.path.join("d", "clip_9x16.mp4"), os.path.join("d", "clip_1x1.mp4")]
    assert output_uris("s3://b/p/", "s3://a/x/clip.mov", r[:1]) == ["s3://b/p/clip_9x16.mp4"]
    assert output_uris("s3://b/p", "s3://a/x/clip.mov", r) == ["s3://b/p/clip_9x16.mp4", "s3://b/p/clip_1x1.mp4"]
    assert output_uris("o/{ratio}/c.mp4", "clip.mp4", r) == ["o/9x16/c.mp4", "o/1x1/c.mp4"]
    with pytest.raises(InputError, match="2 ratios"):
        output_uris("s3://b/out.mp4", "clip.mp4", r)


def test_defaults_are_the_released_weights_and_official_settings():
    from m3ddm_ray.cli import build_parser
    from m3ddm_ray.models.loading import DEFAULT_UNET, DEFAULT_VAE

    a = build_parser().parse_args(["outpaint-video", "in.mp4", "--ratio", "9:16", "--out", "o.mp4"])
    assert (a.model, a.vae) == (DEFAULT_UNET, DEFAULT_VAE)
    assert (a.steps, a.guidance_scale, a.previous_guidance_scale, a.seed, a.canvas_size) == (50, 2.0, 4.0, 6, 256)
    assert (a.dtype, a.device, a.output_size, a.crf, a.preset, a.no_progress) == (
        "auto", "auto", "canvas", 18, "medium", False)


def test_python_dash_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "m3ddm_ray", "outpaint-video", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--ratio" in res.stdout and "--output-size" in res.stdout


def test_manifest_command_lists_a_folder(tmp_path, capsys):
    import shutil

    from m3ddm_ray.cli import main
    from m3ddm_ray.distributed.manifest import read_manifest

    (tmp_path / "videos" / "sub").mkdir(parents=True)
    shutil.copy(DATA / "tree_60.mp4", tmp_path / "videos" / "b.mp4")
    shutil.copy(DATA / "box_24.mp4", tmp_path / "videos" / "sub" / "a.mp4")
    (tmp_path / "videos" / "notes.txt").write_text("not a video")
    out = tmp_path / "m.parquet"
    assert main(["manifest", str(tmp_path / "videos"), "--out", str(out), "--ratio", "9:16,1:1"]) == 0
    assert "2 videos" in capsys.readouterr().out
    rows = read_manifest(str(out))
    assert [os.path.basename(r.video_uri) for r in rows] == ["b.mp4", "a.mp4"]
    assert all(r.target_ratios == ("9:16", "1:1") for r in rows)
    assert main(["manifest", str(tmp_path / "nothing"), "--out", str(out)]) == 2
