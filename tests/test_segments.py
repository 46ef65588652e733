"""The segment rule of the window plan (pure): independent pieces of a clip's fine work."""

from __future__ import annotations

import os

import pytest

from m3ddm_ray.plan import plan_windows

ALL_T = list(range(1, 700)) + list(range(700, 2000, 7)) + [1999]


def check_segments(plan):
    segs = plan.segments()
    coarse = {w.index for w in plan.coarse}
    fine = [w.index for w in plan.fine]
    member = {}
    for s in segs:
        assert list(s.windows) == sorted(s.windows)  # execution order inside a segment
        for wi in s.windows:
            assert wi not in member, "a window in two segments"
            member[wi] = s.index
    assert sorted(member) == fine  # every fine window in exactly one segment
    for s in segs:
        for wi in s.windows:
            w = plan.windows[wi]
            for src in w.depends_on:  # reads latents of the coarse pass or of its own segment only
                assert src in coarse or member[src] == s.index
            assert set(w.frame_ids) <= set(s.frames)
        assert s.frames == tuple(sorted({f for wi in s.windows for f in plan.windows[wi].frame_ids}))
        assert set(s.coarse_guides) <= set(plan.frames_stored_by(plan.coarse))
    # output frames: a partition of all frames, each made by its official "last window" owner
    owners = plan.output_sources()
    outs = [f for s in segs for f in s.output_frames]
    assert outs == list(range(plan.num_frames))  # consecutive runs, in segment order: pieces join in order
    for s in segs:
        for f in s.output_frames:
            assert member[owners[f][0]] == s.index
    return segs


@pytest.mark.parametrize("fps", [25.0, 29.97])
def test_official_plan_every_t_segments_are_independent_and_cover_every_frame_once(fps):
    for t in ALL_T:
        plan = plan_windows(t, fps)
        segs = check_segments(plan)
        if t < 50:  # strides [1]: consecutive windows share a stored frame -> one segment
            assert len(segs) == 1 and segs[0].windows == tuple(w.index for w in plan.windows)
            continue
        stride5 = [w.index for w in plan.windows_of_pass(1)]
        with5 = [s for s in segs if any(plan.windows[wi].stride == 5 for wi in s.windows)]
        assert len(with5) == len(stride5)  # one stride-5 window per segment + its stride-1 windows ...
        for s, w5 in zip(with5, stride5):
            assert [wi for wi in s.windows if plan.windows[wi].stride == 5] == [w5]
            assert all(plan.windows[wi].stride == 1 for wi in s.windows if wi != w5)
            w = plan.windows[w5]
            lo, hi = s.frame_range
            assert lo == w.frame_ids[0] == 75 * with5.index(s) and hi == max(w.frame_ids) + 1
            assert hi - lo <= 76
        for s in segs:  # ... and tail stride-1 windows whose guides all come from the coarse pass
            if s not in with5:
                assert all(plan.windows[wi].stride == 1 and set(plan.windows[wi].depends_on) <= {
                    w.index for w in plan.coarse} for wi in s.windows)


def test_segment_spans_of_the_issue_examples():
    spans = {t: [s.frame_range for s in plan_windows(t, 25.0).segments()] for t in (60, 76, 151, 152, 226, 301)}
    assert spans[60] == [(0, 60)]
    assert spans[76] == [(0, 76)]
    assert spans[151] == [(0, 76), (75, 151)]
    assert spans[152] == [(0, 76), (75, 151), (150, 152)]
    assert spans[301] == [(0, 76), (75, 151), (150, 226), (225, 301)]
    # boundary frame 75 is made by the later segment (the official last window containing it)
    segs = plan_windows(151, 25.0).segments()
    assert 75 in segs[1].output_frames and 75 not in segs[0].output_frames


@pytest.mark.parametrize("strides", [(1,), (7, 1), (10, 3, 1), (15, 1), (30, 5, 1), (4, 2, 1)])
def test_custom_strides_get_provably_independent_groups(strides):
    for t in list(range(1, 260)) + [499, 1000]:
        check_segments(plan_windows(t, 24.0, strides))
    assert len(plan_windows(300, 24.0, (1,)).segments()) == 1


def test_a_padded_last_window_stays_in_its_segment():
    plan = plan_windows(152, 25.0)
    last = plan.segments()[-1]
    padded = [plan.windows[wi] for wi in last.windows if plan.windows[wi].frame_ids[-1] == 151
              and plan.windows[wi].frame_ids.count(151) > 1]
    assert padded  # the tail window repeats frame T-1
    assert last.output_frames == (150, 151)


def test_unit_rows_are_collected_per_segment_and_unit():
    import pickle

    from m3ddm_ray.distributed.segments import PieceCollector, split_units, unit_uri
    from m3ddm_ray.pipeline import ClipState

    state = pickle.dumps(ClipState(unet_seconds=2.5))
    seg_rows = [{"clip_id": "c", "video_uri": "v", "ratio": "1:1", "task": "outpaint", "segment": s,
                 "num_segments": 2, "state": state} for s in (0, 1)]
    rows = split_units(seg_rows, 2)
    assert [(r["segment"], r["tile_group"], r["num_groups"]) for r in rows] == [(0, 0, 2), (0, 1, 2), (1, 0, 2), (1, 1, 2)]
    assert [pickle.loads(r["state"]).unet_seconds for r in rows] == [2.5, 0.0, 2.5, 2.5]  # the coarse pass once
    assert split_units(seg_rows, 1) is seg_rows
    submitted = []
    collector = PieceCollector(submitted.append)
    for r in rows[:3] + [dict(rows[1])]:  # a unit seen twice does not complete the output
        assert collector.add(r) == []
    assert submitted == []
    collector.add(rows[3])
    assert len(submitted) == 1 and len(submitted[0]) == 5
    assert unit_uri("o/c.mp4", 1, 0, 2) == "o/c.mp4.parts/00001-unit-000-of-002.npz"


def test_clear_units_removes_only_the_unit_files_of_an_earlier_run(tmp_path):
    from m3ddm_ray.distributed.segments import clear_units, pieces_folder, piece_uri, unit_uri

    out = str(tmp_path / "clip_9x16_abc.mp4")
    keep = [piece_uri(out, 0, 2), f"{pieces_folder(out)}/keyframe-canvases.u8", f"{pieces_folder(out)}/coarse-latents.bin"]
    stale = [unit_uri(out, 0, 0, 2), unit_uri(out, 1, 1, 2)]
    (tmp_path / "clip_9x16_abc.mp4.parts").mkdir()
    for uri in keep + stale:
        with open(uri, "wb") as fh:
            fh.write(b"x")
    clear_units(out)
    assert [os.path.exists(u) for u in keep + stale] == [True, True, True, False, False]
    clear_units(str(tmp_path / "never_run.mp4"))  # no pieces folder: nothing to do
