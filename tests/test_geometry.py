"""Tests of m3ddm_ray.geometry against the golden data of the official implementation (README §5.2-§5.10)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from m3ddm_ray.errors import InputError
from m3ddm_ray.geometry import (
    CanvasGeometry,
    Ratio,
    compose_source_resolution,
    crop_box,
    global_frame_ids,
    is_passthrough,
    latent_mask,
    make_canvases,
    parse_ratio,
    parse_ratios,
    paste_back,
    pixel_mask,
    plan_canvas,
    source_resolution_layout,
)

GOLDEN = Path(__file__).parent / "data" / "golden"
CASES = {"case_short": "16:9", "case_hier": "9:16"}
S = 64


def _load(case: str, name: str):
    p = GOLDEN / case / name
    if name.endswith(".npz"):
        with np.load(p) as z:
            return {k: z[k] for k in z.files}
    return np.load(p)


@pytest.fixture(scope="module", params=sorted(CASES))
def golden(request):
    case = request.param
    frames = _load(case, "input_frames.npy")
    geom = plan_canvas(frames.shape[1], frames.shape[2], CASES[case], canvas_size=S)
    return {
        "case": case,
        "frames": frames,
        "geom": geom,
        "pre": _load(case, "preproc.npz"),
        "win": _load(case, "windows.npz"),
        "out_T": _load(case, "out_frames_T.npy"),
        "info": json.loads((GOLDEN / case / "run_info.json").read_text()),
    }


# ------------------------------------------------------------------------------------------------
# ratios
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,num,den",
    [("9:16", 9, 16), ("1:1", 1, 1), ("16:9", 16, 9), (" 4 : 3 ", 4, 3), ("18:32", 18, 32)],
)
def test_parse_ratio_valid(text, num, den):
    r = parse_ratio(text)
    assert (r.num, r.den) == (num, den)
    assert r == Ratio(num, den)
    assert r.value == num / den
    assert str(r) == f"{num}:{den}"
    assert r.slug == f"{num}x{den}"
    assert parse_ratio(r) is r


def test_ratio_is_frozen_and_hashable():
    r = Ratio(9, 16)
    with pytest.raises(AttributeError):
        r.num = 3  # type: ignore[misc]
    assert {r, Ratio(9, 16)} == {Ratio(9, 16)}


@pytest.mark.parametrize("bad", ["0:1", "9:0", "abc", "-9:16", "", "1.5:1", "16x9", "9:16:1", "9:", ":16"])
def test_parse_ratio_rejects(bad):
    with pytest.raises(InputError, match=r"W:H") as ei:
        parse_ratio(bad)
    assert repr(bad) in str(ei.value)


@pytest.mark.parametrize("bad", [None, 1.5, 16])
def test_parse_ratio_rejects_non_strings(bad):
    with pytest.raises(InputError, match="not a string"):
        parse_ratio(bad)


@pytest.mark.parametrize("num,den", [(0, 1), (1, 0), (-1, 2), (True, 1), (1.0, 2)])
def test_ratio_constructor_validates(num, den):
    with pytest.raises(InputError, match="positive integer"):
        Ratio(num, den)


def test_parse_ratios_forms():
    assert parse_ratios("16:9,9:16") == [Ratio(16, 9), Ratio(9, 16)]
    assert parse_ratios(" 16:9 , 9:16 ") == [Ratio(16, 9), Ratio(9, 16)]
    assert parse_ratios(["9:16", Ratio(1, 1), "16:9,9:16"]) == [Ratio(9, 16), Ratio(1, 1), Ratio(16, 9)]
    assert parse_ratios("9:16,1:1,9:16,1:1") == [Ratio(9, 16), Ratio(1, 1)]
    assert parse_ratios(Ratio(4, 3)) == [Ratio(4, 3)]
    assert parse_ratios(("1:1",)) == [Ratio(1, 1)]


@pytest.mark.parametrize("bad,pattern", [
    ("", "empty aspect ratio"),
    ([], "no aspect ratio given"),
    ("16:9,", "empty aspect ratio in '16:9,'"),
    ("16:9,abc", "invalid aspect ratio 'abc'"),
    (["9:16", "0:1"], "'0:1'"),
    (5, "neither a string nor a list"),
])
def test_parse_ratios_rejects(bad, pattern):
    with pytest.raises(InputError, match=pattern):
        parse_ratios(bad)


# ------------------------------------------------------------------------------------------------
# canvas plan against the golden cases (README §2, §5.2)
# ------------------------------------------------------------------------------------------------


def test_plan_canvas_golden_values():
    g = plan_canvas(64, 64, "16:9", canvas_size=64)
    assert g.canvas_size == 64 and g.source_hw == (64, 64) and g.ratio == Ratio(16, 9)
    assert g.target_hw == (64.0, 16 / 9 * 64)
    assert g.resized_hw == (36, 36) and g.pad == (14, 14)
    assert g.known_box == (14, 50, 14, 50)  # rows 14-49, cols 14-49 inclusive (README §2)
    assert g.latent_side(8) == 8 and g.latent_side(4) == 16 and not g.fills_canvas

    g = plan_canvas(64, 96, "9:16", canvas_size=64)
    assert g.target_hw == (96 / (9 / 16), 96.0)
    assert g.resized_hw == (24, 36) and g.pad == (20, 14)
    assert g.known_box == (20, 44, 14, 50)  # rows 20-43, cols 14-49 inclusive (README §2)


def test_plan_canvas_matches_run_info(golden):
    info = golden["info"]
    h, w = golden["frames"].shape[1:3]
    assert [w, h] == info["input"]["size_wh"]
    assert info["args"]["target_ratio_list"] == CASES[golden["case"]]
    assert info["args"]["max_size"] == golden["geom"].canvas_size


def test_plan_canvas_default_canvas_256():
    # 1280x720 (16:9) -> 9:16: max_h = 1280 * 16 / 9; mathematically rh = 81, but the official
    # float arithmetic gives 80.99999... and int() truncates it to 80
    g = plan_canvas(720, 1280, "9:16")
    assert g.canvas_size == 256
    assert g.max_dim == pytest.approx(1280 * 16 / 9)
    assert g.resized_hw == (int(256 / (1280 / (9 / 16)) * 720), int(256 / (1280 / (9 / 16)) * 1280))
    assert g.resized_hw == (80, 144)
    assert g.pad == (88, 56)


def test_plan_canvas_small_source_is_upscaled_not_crashing():
    # official: max_dim = 30 <= S -> float canvas side -> crash; here always S x S
    g = plan_canvas(20, 30, "1:1", canvas_size=64)
    assert g.max_dim == 30.0
    assert g.resized_hw == (int(64 / 30 * 20), 64) == (42, 64)
    assert g.pad == (11, 0)
    m = pixel_mask(g)
    assert m.shape == (64, 64) and int((m == 0).sum()) == 42 * 64


def test_plan_canvas_several_ratios_fit_all():
    g = plan_canvas(48, 64, "16:9,9:16", canvas_size=64)
    assert g.ratios == (Ratio(16, 9), Ratio(9, 16))
    assert g.target_hw == (64 / (9 / 16), 16 / 9 * 48)
    assert g.resized_hw == (27, 36)
    for r in g.ratios:
        y0, y1, x0, x1 = crop_box(g, r)
        ky0, ky1, kx0, kx1 = g.known_box
        assert y0 <= ky0 and ky1 <= y1 and x0 <= kx0 and kx1 <= x1


def test_plan_canvas_square_source_fills_canvas():
    g = plan_canvas(100, 100, "1:1", canvas_size=64)
    assert g.resized_hw == (64, 64) and g.pad == (0, 0) and g.fills_canvas
    assert not pixel_mask(g).any()


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(height=0, width=64, ratio="1:1"), r"height=0 must be a positive integer"),
    (dict(height=64, width=-5, ratio="1:1"), r"width=-5 must be a positive integer"),
    (dict(height=64.0, width=64, ratio="1:1"), r"height=64.0 must be a positive integer"),
    (dict(height=True, width=64, ratio="1:1"), r"height=True"),
    (dict(height=64, width=64, ratio="1:1", canvas_size=60), r"canvas_size=60 must be a positive multiple of 8"),
    (dict(height=64, width=64, ratio="1:1", canvas_size=0), r"canvas_size=0 must be a positive integer multiple of 8"),
    (dict(height=64, width=64, ratio="abc"), r"invalid aspect ratio 'abc'"),
    (dict(height=64, width=64, ratio="1000:1", canvas_size=64), r"too extreme"),
])
def test_plan_canvas_validation(kwargs, pattern):
    with pytest.raises(InputError, match=pattern):
        plan_canvas(**kwargs)


def test_plan_canvas_accepts_numpy_ints():
    g = plan_canvas(np.int64(64), np.int32(96), Ratio(9, 16), canvas_size=np.int64(64))
    assert g == plan_canvas(64, 96, "9:16", canvas_size=64)
    assert isinstance(g.source_hw[0], int) and isinstance(g.canvas_size, int)


# ------------------------------------------------------------------------------------------------
# masks and canvases (exact, README §3.2, §5.2, §5.4, §5.10)
# ------------------------------------------------------------------------------------------------


def test_pixel_mask_equals_golden(golden):
    m = pixel_mask(golden["geom"])
    assert m.dtype == np.uint8 and m.shape == (S, S)
    np.testing.assert_array_equal(m, golden["pre"]["mask"])
    # the mask given to the pipeline in every window
    i = 0
    while f"w{i}_mask" in golden["win"]:
        np.testing.assert_array_equal(golden["win"][f"w{i}_mask"][0, 0], m.astype(np.float32))
        i += 1
    assert i >= 3


def test_latent_mask_known_cells(golden):
    lm = latent_mask(pixel_mask(golden["geom"]), 8)
    assert lm.shape == (8, 8) and lm.dtype == np.uint8
    known = np.argwhere(lm == 0)
    rows, cols = sorted(set(known[:, 0])), sorted(set(known[:, 1]))
    if golden["case"] == "case_short":
        assert rows == [2, 3, 4, 5, 6] and cols == [2, 3, 4, 5, 6]
    else:
        assert rows == [3, 4, 5] and cols == [2, 3, 4, 5, 6]
    assert len(known) == len(rows) * len(cols)


def test_latent_mask_nearest_top_left_pixel():
    m = np.ones((16, 16), dtype=np.uint8)
    m[8, 8] = 0  # only the top-left pixel of cell (1, 1) is known
    m[1:8, 1:8] = 0  # most of cell (0, 0) known, but not its top-left pixel
    lm = latent_mask(m, 8)
    np.testing.assert_array_equal(lm, np.array([[1, 1], [1, 0]], dtype=np.uint8))
    assert latent_mask(np.zeros((2, 1, 32, 32), np.float32), factor=4).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("shape,factor,pattern", [
    ((60, 64), 8, r"\(60, 64\) cannot be sampled every 8"),
    ((64,), 8, "cannot be sampled"),
    ((64, 64), 0, "factor=0"),
])
def test_latent_mask_errors(shape, factor, pattern):
    with pytest.raises(InputError, match=pattern):
        latent_mask(np.ones(shape, np.uint8), factor=factor)


def test_make_canvases_equal_golden_exactly(golden):
    masked, inpainted = make_canvases(golden["frames"], golden["geom"])
    t = golden["frames"].shape[0]
    assert masked.shape == inpainted.shape == (t, S, S, 3)
    assert masked.dtype == inpainted.dtype == np.uint8
    np.testing.assert_array_equal(golden["pre"]["frame_ids"], np.arange(t))
    np.testing.assert_array_equal(masked, golden["pre"]["masked"])
    np.testing.assert_array_equal(inpainted, golden["pre"]["inpainted"])
    # the padding of the masked canvas is black, the inpainted one is not
    outside = pixel_mask(golden["geom"]) == 1
    assert not masked[:, outside].any()
    assert inpainted[:, outside].any()


def test_make_canvases_truncates_like_official():
    # a frame resized 2x in each direction: bilinear midpoints between 0 and 1 are 0.25/0.75 -> 0
    frame = np.zeros((1, 4, 4, 3), np.uint8)
    frame[0, :, 1::2] = 1
    g = plan_canvas(4, 4, "1:1", canvas_size=8)
    masked, inpainted = make_canvases(frame, g)
    assert g.fills_canvas
    np.testing.assert_array_equal(inpainted, masked)
    import cv2

    ref = cv2.resize(frame[0].astype(np.float32), (8, 8))
    assert ((ref > 0) & (ref < 1)).any()  # fractional values exist ...
    np.testing.assert_array_equal(masked[0], ref.astype(np.uint8))  # ... and are truncated


def test_make_canvases_rejects_bad_input(golden):
    g = golden["geom"]
    with pytest.raises(InputError, match="uint8 array"):
        make_canvases(golden["frames"].astype(np.float32), g)
    with pytest.raises(InputError, match="uint8 array"):
        make_canvases(golden["frames"][0], g)
    with pytest.raises(InputError, match="plan the canvas for this size"):
        make_canvases(golden["frames"][:, :-2], g)


def test_global_frame_ids_golden(golden):
    t = golden["frames"].shape[0]
    ids = global_frame_ids(t)
    assert ids.dtype == np.int64 and ids.shape == (16,)
    np.testing.assert_array_equal(ids, golden["win"]["global_frame_ids"])


def test_global_frame_ids_values_and_errors():
    assert global_frame_ids(32).tolist() == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 31]
    assert global_frame_ids(1).tolist() == [0] * 16
    assert global_frame_ids(5, n=4).tolist() == [0, 1, 2, 4]
    with pytest.raises(InputError, match="num_frames=0"):
        global_frame_ids(0)
    with pytest.raises(InputError, match="n=0"):
        global_frame_ids(10, n=0)


# ------------------------------------------------------------------------------------------------
# crops and pass-through
# ------------------------------------------------------------------------------------------------


def _official_center_crop(s: int, r: Ratio):
    """merge_frame_to_video_with_ratio on an s x s frame, as (y0, y1, x0, x1)."""
    if 1.0 > r.value:  # the square is too wide
        new_w = int(s * r.value)
        m = int((s - new_w) / 2)
        return (0, s, m, m + new_w)
    new_h = int(s / r.value)
    m = int((s - new_h) / 2)
    return (m, m + new_h, 0, s)


def test_crop_box_golden_cases(golden):
    g = golden["geom"]
    box = crop_box(g)
    assert box == _official_center_crop(64, g.ratio)
    assert box == ((14, 50, 0, 64) if golden["case"] == "case_short" else (0, 64, 14, 50))
    assert crop_box(g, str(g.ratio)) == box


def test_crop_box_property_many_geometries():
    ratios = ["16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "2:3", "5:4"]
    sizes = [(64, 64), (64, 96), (96, 64), (33, 47), (720, 1280), (1280, 720), (480, 854), (101, 37), (1, 5)]
    count = 0
    for (h, w), rs, s in itertools.product(sizes, ratios, (64, 256)):
        try:
            g = plan_canvas(h, w, rs, canvas_size=s)
        except InputError:
            continue
        r = g.ratio
        y0, y1, x0, x1 = crop_box(g)
        ch, cw = y1 - y0, x1 - x0
        ky0, ky1, kx0, kx1 = g.known_box
        assert 0 <= y0 < y1 <= s and 0 <= x0 < x1 <= s
        assert ch % 2 == 0 and cw % 2 == 0, (h, w, rs, s)
        assert y0 <= ky0 and ky1 <= y1 and x0 <= kx0 and kx1 <= x1, (h, w, rs, s)
        if r.num >= r.den:
            assert cw == s and abs(ch - s / r.value) <= 2, (h, w, rs, s, ch)
        else:
            assert ch == s and abs(cw - s * r.value) <= 2, (h, w, rs, s, cw)
        # centred on the known rectangle (within the one pixel of integer halving)
        assert abs((ky0 - y0) - (y1 - ky1)) <= 2 or y0 == 0 or y1 == s
        assert abs((kx0 - x0) - (x1 - kx1)) <= 2 or x0 == 0 or x1 == s
        count += 1
    assert count > 100


def test_crop_box_rejects_unplanned_ratio():
    g = plan_canvas(64, 128, "16:9", canvas_size=64)  # wide source: known rect is full width
    assert g.resized_hw == (32, 64)
    with pytest.raises(InputError, match=r"ratio 9:16 does not fit the canvas planned for 16:9"):
        crop_box(g, "9:16")
    with pytest.raises(InputError, match="invalid aspect ratio"):
        crop_box(g, "9-16")


@pytest.mark.parametrize("h,w,ratio,expected", [
    (1080, 1920, "16:9", True),
    (720, 1280, "16:9", True),
    (480, 854, "16:9", True),
    (481, 855, "16:9", True),
    (1920, 1080, "9:16", True),
    (64, 64, "1:1", True),
    (65, 64, "1:1", True),
    (68, 64, "1:1", False),
    (64, 96, "16:9", False),
    (1080, 1920, "9:16", False),
    (480, 640, "4:3", True),
    (480, 640, "16:9", False),
])
def test_is_passthrough(h, w, ratio, expected):
    assert is_passthrough(h, w, ratio) is expected


def test_is_passthrough_errors():
    with pytest.raises(InputError, match="height=0"):
        is_passthrough(0, 10, "1:1")
    with pytest.raises(InputError, match="'x'"):
        is_passthrough(10, 10, "x")


# ------------------------------------------------------------------------------------------------
# paste-back (README §5.8)
# ------------------------------------------------------------------------------------------------


def test_paste_back_official_known_region_equals_golden(golden):
    pre, out_t = golden["pre"], golden["out_T"]
    mask = pre["mask"]
    known = mask == 0
    # use a generated image unrelated to the golden one: the known region must not depend on it
    rng = np.random.default_rng(0)
    gen = rng.integers(0, 256, size=out_t.shape, dtype=np.uint8)
    res = paste_back(gen, pre["masked"], mask, mode="official")
    assert res.shape == out_t.shape and res.dtype == np.uint8
    np.testing.assert_array_equal(res[:, known], out_t[:, known])
    np.testing.assert_array_equal(res[:, ~known], gen[:, ~known])
    # with the golden frames as "generated", the whole composite is reproduced
    np.testing.assert_array_equal(paste_back(out_t, pre["masked"], mask, mode="official"), out_t)


def test_paste_back_official_loses_a_level_round_does_not(golden):
    pre = golden["pre"]
    known = pre["mask"] == 0
    gen = np.zeros_like(pre["masked"])
    off = paste_back(gen, pre["masked"], pre["mask"], mode="official")
    rnd = paste_back(gen, pre["masked"], pre["mask"])  # default "round"
    np.testing.assert_array_equal(rnd[:, known], pre["masked"][:, known])
    assert not rnd[:, ~known].any()
    diff = pre["masked"][:, known].astype(int) - off[:, known].astype(int)
    assert set(np.unique(diff)) == {0, 1}


def test_paste_back_official_levels():
    levels = np.arange(256, dtype=np.uint8)
    masked = np.broadcast_to(levels[None, None, :, None], (1, 256, 256, 3)).copy()
    mask = np.zeros((256, 256), np.uint8)
    out = paste_back(np.zeros_like(masked), masked, mask, mode="official")[0, 0, :, 0]
    changed = levels[out != levels]
    assert len(changed) == 63  # README §5.8
    np.testing.assert_array_equal(out[changed], changed - 1)


def test_paste_back_errors():
    a = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(InputError, match="mode='nearest'"):
        paste_back(a, a, np.zeros((8, 8)), mode="nearest")
    with pytest.raises(InputError, match="shapes do not match"):
        paste_back(a, a[:1], np.zeros((8, 8)))
    with pytest.raises(InputError, match="shapes do not match"):
        paste_back(a, a, np.zeros((4, 4)))


# ------------------------------------------------------------------------------------------------
# source-resolution composite
# ------------------------------------------------------------------------------------------------


def test_compose_source_resolution_golden(golden):
    g, src, out_t = golden["geom"], golden["frames"], golden["out_T"]
    res = compose_source_resolution(out_t, src, g)
    lay = source_resolution_layout(g)
    h, w = g.source_hw
    assert res.shape == (src.shape[0], *lay.out_hw, 3) and res.dtype == np.uint8
    oh, ow = lay.out_hw
    assert oh % 2 == 0 and ow % 2 == 0 and oh >= h and ow >= w
    assert abs(ow - oh * g.ratio.value) <= 1
    oy, ox = lay.offset
    np.testing.assert_array_equal(res[:, oy:oy + h, ox:ox + w], src)
    if golden["case"] == "case_short":
        assert lay.out_hw == (64, 114) and lay.offset == (0, 25) and lay.scale == 64 / 36
    else:
        assert lay.out_hw == (170, 96) and lay.offset == (53, 0) and lay.scale == 96 / 36


@pytest.mark.parametrize("h,w,ratio,s,interp", [
    (33, 47, "16:9", 64, "cubic"),
    (47, 33, "9:16", 64, "lanczos"),
    (101, 37, "1:1", 64, "cubic"),
    (120, 160, "16:9", 256, "lanczos"),
    (48, 64, "9:16", 64, "cubic"),
])
def test_compose_source_resolution_synthetic(h, w, ratio, s, interp):
    rng = np.random.default_rng(h * w)
    src = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    g = plan_canvas(h, w, ratio, canvas_size=s)
    canvas = np.full((2, s, s, 3), 77, np.uint8)  # constant border colour
    res = compose_source_resolution(canvas, src, g, ratio, interpolation=interp)
    lay = source_resolution_layout(g, ratio)
    oh, ow = lay.out_hw
    oy, ox = lay.offset
    r = parse_ratio(ratio)
    assert res.shape == (2, oh, ow, 3)
    assert oh % 2 == 0 and ow % 2 == 0 and oh >= h and ow >= w
    assert abs(ow - oh * r.value) <= 2 or abs(oh - ow / r.value) <= 2
    np.testing.assert_array_equal(res[:, oy:oy + h, ox:ox + w], src)
    outside = np.ones((oh, ow), bool)
    outside[oy:oy + h, ox:ox + w] = False
    if outside.any():
        assert (res[:, outside] == 77).all()


def test_compose_source_resolution_errors(golden):
    g, src, out_t = golden["geom"], golden["frames"], golden["out_T"]
    with pytest.raises(InputError, match="interpolation='area'"):
        compose_source_resolution(out_t, src, g, interpolation="area")
    with pytest.raises(InputError, match="canvas frames but"):
        compose_source_resolution(out_t[:2], src[:3], g)
    with pytest.raises(InputError, match="canvas frames"):
        compose_source_resolution(out_t[:, :32], src, g)


def test_canvas_geometry_is_frozen():
    g = plan_canvas(64, 64, "1:1", canvas_size=64)
    assert isinstance(g, CanvasGeometry)
    with pytest.raises(AttributeError):
        g.canvas_size = 128  # type: ignore[misc]
