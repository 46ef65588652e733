"""The start order of a job's clips (m3ddm_ray.distributed.clip_order): pure rule, size lookups, config."""

from __future__ import annotations

import itertools
import random

import pytest

from m3ddm_ray.distributed import clip_order
from m3ddm_ray.distributed.config import DEFAULTS, load_config
from m3ddm_ray.errors import InputError


def test_start_order_sorts_only_the_head():
    costs = [50.0, 10.0, 30.0, 5.0, 1.0]
    assert clip_order.start_order(costs, 3) == [1, 2, 0, 3, 4]
    assert clip_order.start_order(costs, 5) == [4, 3, 1, 2, 0]
    assert clip_order.start_order(costs, 0) == [0, 1, 2, 3, 4]
    assert clip_order.start_order(costs, 99) == [4, 3, 1, 2, 0]
    assert clip_order.start_order([], 8) == []


def test_start_order_unknown_last_and_stable():
    costs = [None, 7.0, 7.0, None, 3.0]
    assert clip_order.start_order(costs, 5) == [4, 1, 2, 0, 3]


def test_start_order_is_a_permutation_for_random_inputs():
    rng = random.Random(0)
    for n, head in itertools.product(range(0, 12), range(0, 14)):
        costs = [rng.choice([None, rng.random(), 1.0]) for _ in range(n)]
        order = clip_order.start_order(costs, head)
        assert sorted(order) == list(range(n))
        k = min(head, n)
        assert order[k:] == list(range(k, n))
        known = [costs[i] for i in order[:k] if costs[i] is not None]
        assert known == sorted(known)
        # unknown costs come after every known one inside the head
        flags = [costs[i] is None for i in order[:k]]
        assert flags == sorted(flags)


def test_head_size_default_and_errors():
    assert clip_order.head_size(DEFAULTS) == clip_order.DEFAULT_CHEAPEST_FIRST == 8
    assert clip_order.head_size(load_config(overrides=["stages.prepare.cheapest_first=0"])) == 0
    assert clip_order.head_size({"stages": {}}) == 8
    for bad in ("-1", "2.5", "many", "true"):
        with pytest.raises(InputError, match=r"stages\.prepare\.cheapest_first=.*integer >= 0"):
            clip_order.head_size(load_config(overrides=[f"stages.prepare.cheapest_first={bad}"]))


def _group(uri, n):
    return [{"video_uri": uri, "clip_id": "c", "ratio": f"r{i}"} for i in range(n)]


def test_source_costs_bytes_times_outputs(tmp_path):
    small, big = tmp_path / "small.mp4", tmp_path / "big.mp4"
    small.write_bytes(b"x" * 100)
    big.write_bytes(b"x" * 1000)
    folder = tmp_path / "frames"
    folder.mkdir()
    (folder / "00001.png").write_bytes(b"x" * 10)
    groups = [_group(str(big), 1), _group(str(small), 2), _group(str(tmp_path / "missing.mp4"), 1),
              _group(str(folder), 1), _group(str(small), 1)]
    assert clip_order.source_costs(groups, 4) == [1000.0, 200.0, None, None, None]
    assert clip_order.source_costs(groups, 0) == [None] * 5
    assert clip_order.source_costs(groups, 9)[4] == 100.0


def test_source_costs_on_an_fsspec_url():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/clip_order/a.mp4", b"x" * 300)
    fs.pipe("/clip_order/b.mp4", b"x" * 30)
    groups = [_group("memory://clip_order/a.mp4", 1), _group("memory://clip_order/b.mp4", 1)]
    assert clip_order.source_costs(groups, 8) == [300.0, 30.0]


def test_order_groups_on_the_sample_manifest_puts_the_long_clip_last():
    """The sample's first clip is tree (60 frames, 2 ratios); it goes after the 20-frame clips."""
    from pathlib import Path

    from m3ddm_ray.distributed.job import build_rows
    from m3ddm_ray.distributed.stages import group_by_clip

    data = Path(__file__).parent / "data"
    cfg = load_config(data.parent.parent / "configs" / "tiny-cpu.yaml")
    rows = build_rows(cfg, str(data / "sample_manifest.jsonl"), "/tmp/unused-output")
    groups = list(group_by_clip(rows))
    assert [g[0]["clip_id"] for g in groups] == ["tree", "megamind", "with_audio"]
    ordered = clip_order.order_groups(groups, cfg)
    assert [g[0]["clip_id"] for g in ordered] == ["megamind", "with_audio", "tree"]
    assert [len(g) for g in ordered] == [2, 1, 2]
    cfg["stages"]["prepare"]["cheapest_first"] = 0
    assert [g[0]["clip_id"] for g in clip_order.order_groups(groups, cfg)] == ["tree", "megamind", "with_audio"]


def test_source_costs_do_not_wait_for_a_store_that_never_answers(tmp_path):
    """An HTTP source whose server accepts the connection and never replies: its size is unknown
    once the lookup time is up, the other clips are sized, and the call returns in time."""
    import socket
    import time

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)  # connections wait in the backlog, nothing ever answers
    try:
        ok = tmp_path / "ok.mp4"
        ok.write_bytes(b"x" * 50)
        silent = f"http://127.0.0.1:{srv.getsockname()[1]}/stuck.mp4"
        groups = [_group(silent, 1), _group(str(ok), 1)]
        t0 = time.perf_counter()
        costs = clip_order.source_costs(groups, 8, timeout_s=1.5)
        took = time.perf_counter() - t0
        assert costs == [None, 50.0]
        assert 1.4 < took < 5, took
        assert clip_order.start_order(costs, 8) == [1, 0]
    finally:
        srv.close()
