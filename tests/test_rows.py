"""The one schema of rows between the job's stages (m3ddm_ray.distributed.rows)."""

from __future__ import annotations

import json

import pytest

from m3ddm_ray.distributed.results import RESULT_COLUMNS
from m3ddm_ray.distributed.rows import EVAL_FIELDS, JOB_FIELDS, StageRow, check_row, describe
from m3ddm_ray.distributed.stages import fail_row, expand_manifest_row
from m3ddm_ray.evaluation.rows import EVAL_COLUMNS

from test_ray_job import tiny_cfg


def test_every_result_and_eval_column_is_declared():
    assert set(RESULT_COLUMNS) <= set(JOB_FIELDS)
    assert {name for name, _ in EVAL_COLUMNS} <= set(JOB_FIELDS) | set(EVAL_FIELDS)
    assert set(StageRow.__annotations__) == set(JOB_FIELDS)


def test_driver_rows_and_error_rows_pass_the_check():
    cfg = tiny_cfg(ratios=["9:16", "1:1"])
    rows = expand_manifest_row({"clip_id": "a", "video_uri": "/x/a.mp4"}, cfg, "/out")
    assert [r["ratio"] for r in rows] == ["9:16", "1:1"] and all(r["status"] == "pending" for r in rows)
    json.loads(rows[0]["settings"])
    try:
        raise ValueError("boom")
    except ValueError as exc:
        err = fail_row(dict(rows[0]), "fine", exc, cfg)
    assert check_row(err, "fine") is err and err["clip"] == b"" and err["error"] == "fine: /x/a.mp4: ValueError: boom"


def test_undeclared_fields_and_wrong_types_are_named():
    with pytest.raises(RuntimeError, match=r"fine: row field 'segmnet' is not in the job row schema"):
        check_row({"status": "pending", "segmnet": 1}, "fine")
    with pytest.raises(RuntimeError, match=r"prepare: row field 'frames' is str, the schema says int"):
        check_row({"frames": "60"}, "prepare")
    with pytest.raises(RuntimeError, match=r"row field 'num_segments' is bool"):
        check_row({"num_segments": True}, "coarse")
    check_row({"segment": 2.0}, "fine")  # a column Ray turned to float (ints with missing values)
    with pytest.raises(RuntimeError, match=r"row field 'segment' is float"):
        check_row({"segment": 2.5}, "fine")
    with pytest.raises(RuntimeError, match=r"not in the job row schema"):
        check_row({"method": "telea"}, "score")  # an eval field is not a job field
    check_row({"method": "telea", "psnr": 21.5, "fps": 15, "error": float("nan")}, "score", "eval")  # int for float, NaN = missing


def test_describe_lists_every_field():
    table = describe()
    assert table.count("\n") == len(JOB_FIELDS) + 1 and "| `seek` | str | coarse |" in table
