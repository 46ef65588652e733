"""Tests of m3ddm_ray.plan against the golden window records (README §2, §3.1, §5.1, §5.7, §5.9)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from m3ddm_ray.errors import InputError
from m3ddm_ray.plan import NO_SOURCE, Window, WindowPlan, plan_windows, strides_for

GOLDEN = Path(__file__).parent / "data" / "golden"
CASES = {"case_short": (32, 24.0), "case_hier": (64, 15.0)}

# README §2: (start, stride, fps arg, guides) per window
README_TABLE = {
    "case_short": [(0, 1, 24.0, 0), (15, 1, 24.0, 1), (30, 1, 24.0, 1)],
    "case_hier": [
        (0, 15, 1.0, 0), (0, 5, 3.0, 8), (0, 1, 15.0, 4), (15, 1, 15.0, 4),
        (30, 1, 15.0, 4), (45, 1, 15.0, 4), (60, 1, 15.0, 14),
    ],
}


def _windows_npz(case: str) -> dict:
    with np.load(GOLDEN / case / "windows.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    name = request.param
    t, fps = CASES[name]
    info = json.loads((GOLDEN / name / "run_info.json").read_text())
    assert info["decoded_input"]["frames"] == t and info["decoded_input"]["avg_fps"] == fps
    return name, plan_windows(t, fps), _windows_npz(name)


def test_strides_for():
    assert strides_for(1) == [1]
    assert strides_for(49) == [1]
    assert strides_for(50) == [15, 5, 1]
    assert strides_for(1000) == [15, 5, 1]
    with pytest.raises(InputError, match="num_frames=0"):
        strides_for(0)


def test_plan_equals_golden_windows_exactly(case):
    name, plan, w = case
    n = len([k for k in w if re.fullmatch(r"w\d+_frame_ids", k)])
    assert len(plan.windows) == n == len(README_TABLE[name])
    for i, win in enumerate(plan.windows):
        assert isinstance(win, Window) and win.index == i
        assert win.frame_ids == tuple(w[f"w{i}_frame_ids"].tolist())
        assert len(win.frame_ids) == 16
        assert win.sample_id == int(w[f"w{i}_sample_id"])
        assert win.stride == int(w[f"w{i}_stride"])
        assert isinstance(win.fps, float) and win.fps == float(w[f"w{i}_fps"])
        assert win.n_guides == int(w[f"w{i}_n_guides"])
        assert win.guide_flags == tuple(bool(x) for x in w[f"w{i}_guide_flags"])
        assert win.guide_from == tuple(tuple(int(v) for v in row) for row in w[f"w{i}_guide_from"])


def test_plan_equals_readme_table(case):
    name, plan, _ = case
    got = [(win.start, win.stride, win.fps, win.n_guides) for win in plan.windows]
    assert got == README_TABLE[name]


def test_passes_and_store_map_golden():
    short = plan_windows(32, 24.0)
    assert short.strides == (1,)
    assert short.coarse == () and [w.index for w in short.fine] == [0, 1, 2]
    assert short.store_map[31] == (2, 1)  # padded repeats take the first position's latent
    assert short.store_map[15] == (0, 15) and short.store_map[30] == (1, 15)

    hier = plan_windows(64, 15.0)
    assert hier.strides == (15, 5, 1)
    assert [w.index for w in hier.coarse] == [0]
    assert [w.index for w in hier.fine] == [1, 2, 3, 4, 5, 6]
    assert [w.index for w in hier.windows_of_pass(1)] == [1]
    assert hier.store_map[63] == (0, 5)  # README §5.7
    assert hier.frames_stored_by(hier.coarse) == (0, 15, 30, 45, 60, 63)
    assert hier.frames_stored_by([1]) == (5, 10, 20, 25, 35, 40, 50, 55)
    assert sorted(hier.store_map) == list(range(64))
    assert hier.windows[6].depends_on == (0,)
    assert hier.windows[3].depends_on == (0, 1)
    assert hier.windows_containing(63) == (0, 1, 6)


def test_output_sources_follow_official_file_overwrites():
    hier = plan_windows(64, 15.0)
    src = hier.output_sources()
    assert len(src) == 64
    assert src[15] == (3, 0) and src[30] == (4, 0) and src[60] == (6, 0)  # next window wins
    assert src[14] == (2, 14) and src[63] == (6, 3) and src[0] == (2, 0)
    assert hier.windows[0].output_names[:6] == (0, 15, 30, 45, 60, 75)
    short = plan_windows(32, 24.0)
    assert short.output_sources()[31] == (2, 1)
    assert max(max(w.output_names) for w in short.windows) == 45  # f0045 (README §2: N = 46)


def test_fps_is_python_float_floor_division():
    plan = plan_windows(64, 29.966)
    assert [w.fps for w in plan.windows[:3]] == [1.0, 5.0, 29.0]  # README §5.1
    plan = plan_windows(60, 10)
    assert plan.fps == 10.0 and plan.windows[0].fps == 0.0 and isinstance(plan.windows[0].fps, float)


def test_single_frame_video_gets_one_window():
    plan = plan_windows(1, 24.0)
    assert len(plan.windows) == 1
    w = plan.windows[0]
    assert w.frame_ids == (0,) * 16 and w.sample_id == 0 and w.stride == 1
    assert w.guide_flags == (False,) * 16 and w.guide_from == (NO_SOURCE,) * 16
    assert dict(plan.store_map) == {0: (0, 0)}
    assert plan.output_sources() == ((0, 0),)


def test_two_frame_video_is_official():
    plan = plan_windows(2, 30.0)
    assert [w.frame_ids for w in plan.windows] == [(0, 1) + (1,) * 14]


def _official_loop(t: int, strides, ws: int = 16):
    """README §5.1 literally (frame lists only); returns [] where the official code runs no window."""
    out = []
    for stride in strides:
        idx = list(range(t))[::stride]
        for start in range(0, t // stride - 1, ws - 1):
            sel = idx[start:start + ws]
            out.append((stride, sel + [t - 1] * (ws - len(sel))))
    return out


def test_property_every_frame_covered_for_T_1_to_400():
    for t in range(1, 401):
        plan = plan_windows(t, 24.0)
        assert plan.num_frames == t and plan.strides == tuple(strides_for(t))
        covered = set()
        stored: dict[int, tuple[int, int]] = {}
        for i, w in enumerate(plan.windows):
            assert w.index == i and len(w.frame_ids) == 16 and w.sample_id == w.frame_ids[0]
            assert all(0 <= f < t for f in w.frame_ids)
            assert w.fps == 24.0 // w.stride
            real = [f for f in w.frame_ids if f != t - 1]
            assert real == sorted(real) and all(b - a == w.stride for a, b in zip(real, real[1:]))
            for k, f in enumerate(w.frame_ids):
                assert w.guide_flags[k] == (f in stored)
                assert w.guide_from[k] == stored.get(f, NO_SOURCE)
                if w.guide_flags[k]:
                    src_w, src_p = w.guide_from[k]
                    assert src_w < i and plan.windows[src_w].frame_ids[src_p] == f
            for k, f in enumerate(w.frame_ids):
                stored.setdefault(f, (i, k))
            covered.update(w.frame_ids)
        assert covered == set(range(t)), t
        assert dict(plan.store_map) == stored
        assert all(s != NO_SOURCE for s in plan.output_sources()), t
        # identical to the official loop wherever the official loop produces windows
        official = _official_loop(t, strides_for(t))
        if t >= 2:
            assert [(w.stride, list(w.frame_ids)) for w in plan.windows] == official, t
        else:
            assert official == []


def test_custom_strides_and_window_size():
    plan = plan_windows(20, 10.0, strides=[15, 5, 1])
    assert plan.coarse == ()  # official loop: range(0, 20 // 15 - 1, 15) is empty
    assert [w.stride for w in plan.windows] == [5, 1, 1]
    plan = plan_windows(10, 10.0, strides=[3, 1], window_size=4)
    assert [w.frame_ids for w in plan.coarse] == [(0, 3, 6, 9)]
    assert [w.frame_ids for w in plan.fine] == [(0, 1, 2, 3), (3, 4, 5, 6), (6, 7, 8, 9)]
    assert plan.fine[1].guide_flags == (True, False, False, True)
    for t in range(1, 60):
        for strides in ([1], [2, 1], [7, 3, 1], [30, 1]):
            for ws in (2, 3, 16):
                p = plan_windows(t, 5.0, strides=strides, window_size=ws)
                assert set().union(*(w.frame_ids for w in p.windows)) == set(range(t))


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(num_frames=0, fps=24.0), r"num_frames=0 must be a positive integer"),
    (dict(num_frames=-3, fps=24.0), r"num_frames=-3"),
    (dict(num_frames=2.5, fps=24.0), r"num_frames=2.5"),
    (dict(num_frames=True, fps=24.0), r"num_frames=True"),
    (dict(num_frames=10, fps=0), r"fps=0 must be a finite number > 0"),
    (dict(num_frames=10, fps=-1.0), r"fps=-1.0"),
    (dict(num_frames=10, fps=math.nan), r"fps=nan"),
    (dict(num_frames=10, fps=math.inf), r"fps=inf"),
    (dict(num_frames=10, fps="24"), r"fps='24'"),
    (dict(num_frames=10, fps=24.0, strides=[]), r"strides=\[\] must be a non-empty list"),
    (dict(num_frames=10, fps=24.0, strides=[15, 5]), r"ending with 1"),
    (dict(num_frames=10, fps=24.0, strides=[0, 1]), r"strides=\[0, 1\]"),
    (dict(num_frames=10, fps=24.0, strides=[1.5, 1]), r"positive integers"),
    (dict(num_frames=10, fps=24.0, strides="1"), r"strides='1'"),
    (dict(num_frames=10, fps=24.0, window_size=1), r"window_size=1 must be >= 2"),
    (dict(num_frames=10, fps=24.0, window_size=0), r"window_size=0 must be a positive integer"),
])
def test_plan_windows_validation(kwargs, pattern):
    with pytest.raises(InputError, match=pattern):
        plan_windows(**kwargs)


def test_plan_is_immutable():
    plan = plan_windows(32, 24.0)
    assert isinstance(plan, WindowPlan)
    with pytest.raises(AttributeError):
        plan.windows[0].stride = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.store_map[0] = (9, 9)  # type: ignore[index]
    assert plan == plan_windows(32, 24.0)
