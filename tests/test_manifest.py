"""Tests of m3ddm_ray.distributed.manifest (pure: no Ray, no torch)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from m3ddm_ray.distributed.manifest import (
    MANIFEST_COLUMNS,
    MANIFEST_SCHEMA,
    SAMPLER_OVERRIDE_COLUMNS,
    ManifestError,
    ManifestRow,
    check_clip_id,
    check_output_prefix,
    derive_clip_id,
    manifest_from_prefix,
    read_manifest,
    rows_to_table,
    validate_manifest,
    write_manifest,
)
from m3ddm_ray.errors import InputError

REPO = Path(__file__).resolve().parents[1]
CLIP_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")


# ------------------------------------------------------------------------------------ helpers


@pytest.fixture
def mem_prefix():
    """A fresh memory:// folder, removed afterwards (the memory filesystem is process-global)."""
    root = f"memory://m3ddm-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    path = root[len("memory://"):]
    if fs.exists(path):
        fs.rm(path, recursive=True)


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list) -> Path:
    return write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def problems_of(excinfo) -> list[tuple]:
    return [(p.row, p.column) for p in excinfo.value.problems]


SAMPLE_ROWS = [
    ManifestRow(video_uri="s3://bucket/trees/tree_60.mp4", clip_id=derive_clip_id("s3://bucket/trees/tree_60.mp4")),
    ManifestRow(
        video_uri="/data/in/city, night.mov",  # comma: CSV must quote it
        clip_id="city_night",
        target_ratios=("9:16", "1:1"),
        output_prefix="shorts/2024",
        seed=1234,
        num_inference_steps=25,
        guidance_scale=7.5,
        previous_guidance_scale=1.25,
        canvas_size=256,
        output_size="source",
    ),
    ManifestRow(video_uri="gs://b/ünïcode clip.webm", clip_id="u.1", target_ratios=("16:9",), seed=0),
]


# ---------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ["m.parquet", "m.pq", "m.jsonl", "m.ndjson", "m.csv", "M.CSV"])
def test_round_trip_local(tmp_path, name):
    target = tmp_path / "sub" / name  # the folder does not exist yet
    write_manifest(SAMPLE_ROWS, target)
    assert read_manifest(target) == SAMPLE_ROWS
    # no temporary file is left next to the manifest
    assert sorted(p.name for p in target.parent.iterdir()) == [name]


@pytest.mark.parametrize("ext", ["parquet", "jsonl", "csv"])
def test_round_trip_memory(mem_prefix, ext):
    uri = f"{mem_prefix}/manifests/m.{ext}"
    write_manifest(SAMPLE_ROWS, uri)
    assert read_manifest(uri) == SAMPLE_ROWS
    fs = fsspec.filesystem("memory")
    assert [p.rsplit("/", 1)[-1] for p in fs.find(mem_prefix[len("memory://"):])] == [f"m.{ext}"]


def test_round_trip_accepts_mappings_and_writes_only_used_columns(tmp_path):
    target = tmp_path / "m.csv"
    write_manifest([{"video_uri": "a.mp4"}, {"video_uri": "b.mp4", "seed": 7}], target)
    header = target.read_text().splitlines()[0]
    assert header == "video_uri,clip_id,seed"
    rows = read_manifest(target)
    assert [r.clip_id for r in rows] == [derive_clip_id("a.mp4"), derive_clip_id("b.mp4")]
    assert [r.seed for r in rows] == [None, 7]


def test_parquet_written_with_schema_types(tmp_path):
    target = tmp_path / "m.parquet"
    write_manifest(SAMPLE_ROWS, target)
    schema = pq.read_schema(target)
    for name in schema.names:
        assert schema.field(name).type == MANIFEST_SCHEMA.field(name).type
    assert schema.field("seed").type == pa.int64()
    assert schema.field("guidance_scale").type == pa.float64()


def test_rows_to_table_has_every_column():
    table = rows_to_table(SAMPLE_ROWS)
    assert table.schema.names == list(MANIFEST_COLUMNS)
    assert table.column("target_ratios").to_pylist() == [None, "9:16,1:1", "16:9"]
    assert validate_manifest(table) == SAMPLE_ROWS


def test_write_replaces_existing_file_and_never_leaves_partial_file(tmp_path):
    target = tmp_path / "m.jsonl"
    write_manifest(SAMPLE_ROWS[:1], target)
    before = target.read_bytes()
    dup = [SAMPLE_ROWS[1], SAMPLE_ROWS[1]]
    with pytest.raises(ManifestError, match=r"row 2.*duplicate clip_id 'city_night'.*row 1"):
        write_manifest(dup, target)
    assert target.read_bytes() == before  # the bad write did not touch the old file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl"]
    write_manifest(SAMPLE_ROWS, target)
    assert read_manifest(target) == SAMPLE_ROWS


def test_parquet_from_other_tools(tmp_path):
    """List ratio columns, float ints with NaN (pandas) and a pandas index column are accepted."""
    table = pa.table(
        {
            "video_uri": ["a.mp4", "b.mp4"],
            "target_ratios": pa.array([["9:16", "1:1"], None], type=pa.list_(pa.string())),
            "seed": [3.0, float("nan")],
            "__index_level_0__": [10, 11],
        }
    )
    pq.write_table(table, tmp_path / "m.parquet")
    rows = read_manifest(tmp_path / "m.parquet", default_ratios="4:5")
    assert rows[0].target_ratios == ("9:16", "1:1")
    assert rows[1].target_ratios == ("4:5",)
    assert rows[0].seed == 3 and isinstance(rows[0].seed, int)
    assert rows[1].seed is None


def test_csv_values_are_text_and_blank_cells_are_defaults(tmp_path):
    path = write_text(
        tmp_path / "m.csv",
        "\ufeffvideo_uri, clip_id ,target_ratios,guidance_scale,output_size\n"
        'a.mp4,,"9:16, 1:1",7,Canvas\n'
        "\n"
        "b.mp4,007,,,\n",
    )
    rows = read_manifest(path)
    assert rows[0] == ManifestRow(
        video_uri="a.mp4",
        clip_id=derive_clip_id("a.mp4"),
        target_ratios=("9:16", "1:1"),
        guidance_scale=7.0,
        output_size="canvas",
    )
    assert rows[1].clip_id == "007"  # kept as text, not turned into 7
    assert rows[1].target_ratios is None and rows[1].guidance_scale is None


def test_jsonl_ratio_lists_defaults_and_overrides(tmp_path):
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"video_uri": "a.mp4", "target_ratios": ["9:16", "1:1,9:16"]},
            {"video_uri": "b.mp4", "target_ratios": None, "num_inference_steps": 10},
            {"video_uri": "c.mp4", "target_ratios": []},
        ],
    )
    rows = read_manifest(path, default_ratios=["16:9"])
    assert [r.target_ratios for r in rows] == [("9:16", "1:1"), ("16:9",), ("16:9",)]
    assert rows[1].sampler_overrides == {"num_inference_steps": 10}
    assert read_manifest(path)[1].target_ratios is None


def test_bad_default_ratios_is_an_input_error(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"video_uri": "a.mp4"}])
    with pytest.raises(InputError, match=r"default ratios.*'9:x'"):
        read_manifest(path, default_ratios="9:x")


# ---------------------------------------------------------------------------------- clip ids


def test_derived_clip_id_is_stable_and_readable():
    uri = "s3://bucket/trees/tree_60.mp4"
    expected_hash = hashlib.sha256(uri.encode()).hexdigest()[:12]
    assert derive_clip_id(uri) == f"tree_60-{expected_hash}"
    # a value computed once and written down: ids must not change between versions/machines
    assert derive_clip_id(uri) == "tree_60-740f9c458b76"
    code = "from m3ddm_ray.distributed.manifest import derive_clip_id as d; print(d('s3://bucket/trees/tree_60.mp4'))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "123"}, check=True)
    assert out.stdout.strip() == "tree_60-740f9c458b76"


def test_derived_clip_ids_are_unique_per_uri():
    uris = [
        "s3://b/a/video.mp4",
        "s3://b/b/video.mp4",
        "s3://b/a/video.mov",
        "/local/a/video.mp4",
        "file:///local/a/video.mp4",
    ] + [f"s3://b/clips/{i}/video.mp4" for i in range(2000)]
    ids = [derive_clip_id(u) for u in uris]
    assert len(set(ids)) == len(uris)
    assert all(i.startswith("video-") for i in ids)


@pytest.mark.parametrize(
    "uri, stem",
    [
        ("s3://b/x/..mp4", "clip"),
        ("/a/b/../../etc/passwd", "passwd"),
        ("C:\\videos\\My Clip (1).MP4", "My_Clip_1"),
        ("https://host/v/café vidéo.mov?sig=a/b&x=1#t=3", "cafe_video"),
        ("memory:///.hidden.mp4", "hidden"),
        ("s3://b/" + "x" * 500 + ".mp4", "x" * 64),
        ("s3://b/\x00evil.mp4", "evil"),
        ("s3://b/folder/", "folder"),
    ],
)
def test_derived_clip_ids_are_always_safe(uri, stem):
    cid = derive_clip_id(uri)
    assert check_clip_id(cid) is None
    assert CLIP_ID_RE.fullmatch(cid)
    assert cid.rsplit("-", 1)[0] == stem


def test_derive_clip_id_rejects_empty():
    with pytest.raises(InputError, match="non-empty"):
        derive_clip_id("  ")


# -------------------------------------------------------------------------------- validation


def test_missing_video_uri_column(tmp_path):
    path = write_text(tmp_path / "m.csv", "clip_id,seed\na,1\n")
    with pytest.raises(InputError, match=r"column 'video_uri': required column is missing"):
        read_manifest(path)


def test_empty_and_null_uris_name_their_rows(tmp_path):
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [{"video_uri": "a.mp4"}, {"video_uri": ""}, {"video_uri": None}, {"clip_id": "x"}, {"video_uri": 5}],
    )
    with pytest.raises(InputError, match=r"row 2, column 'video_uri': is empty") as e:
        read_manifest(path)
    assert problems_of(e) == [(2, "video_uri"), (3, "video_uri"), (4, "video_uri"), (5, "video_uri")]
    assert "row 5, column 'video_uri': expected a string, got int 5" in str(e.value)


def test_unknown_columns_are_named_with_the_accepted_ones(tmp_path):
    path = write_text(tmp_path / "m.csv", "video_uri,clipid,colour\na.mp4,x,red\n")
    with pytest.raises(InputError, match=r"unknown column 'clipid' \(did you mean 'clip_id'\?\)") as e:
        read_manifest(path)
    msg = str(e.value)
    assert "unknown column 'colour'" in msg
    assert "accepted columns: video_uri, clip_id, target_ratios, output_prefix, seed" in msg
    assert len(e.value.problems) == 2


def test_duplicate_explicit_clip_ids_name_both_rows(tmp_path):
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [{"video_uri": "a.mp4", "clip_id": "same"}, {"video_uri": "b.mp4"}, {"video_uri": "c.mp4", "clip_id": "same"}],
    )
    with pytest.raises(InputError, match=r"row 3, column 'clip_id': duplicate clip_id 'same' \(explicit\); row 1"):
        read_manifest(path)


def test_duplicate_derived_clip_ids_name_both_rows(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"video_uri": "s3://b/a.mp4"}, {"video_uri": "s3://b/c.mp4"},
                                              {"video_uri": " s3://b/a.mp4 "}])
    cid = derive_clip_id("s3://b/a.mp4")
    with pytest.raises(InputError, match=rf"row 3, column 'clip_id': duplicate clip_id '{cid}' "
                                         r"\(derived from video_uri\); row 1 already uses it"):
        read_manifest(path)


def test_explicit_clip_id_colliding_with_derived_one():
    cid = derive_clip_id("a.mp4")
    with pytest.raises(ManifestError, match=rf"row 2.*duplicate clip_id '{cid}' \(explicit\); row 1"):
        validate_manifest([{"video_uri": "a.mp4"}, {"video_uri": "b.mp4", "clip_id": cid}])


def test_same_video_twice_with_distinct_clip_ids_is_fine():
    rows = validate_manifest([{"video_uri": "a.mp4", "clip_id": "a1"}, {"video_uri": "a.mp4", "clip_id": "a2"}])
    assert [r.clip_id for r in rows] == ["a1", "a2"]


@pytest.mark.parametrize(
    "value, pattern",
    [
        ("9:0", r"invalid aspect ratio '9:0'"),
        ("16x9", r"invalid aspect ratio '16x9'"),
        ("9:16,", r"row 1, column 'target_ratios'"),
        (["9:16", 3], r"expected ratio strings like '9:16', got 3"),
        (916, r"expected a string like '9:16,1:1' or a list"),
    ],
)
def test_bad_ratios(value, pattern):
    with pytest.raises(InputError, match=pattern) as e:
        validate_manifest([{"video_uri": "a.mp4", "target_ratios": value}])
    assert problems_of(e) == [(1, "target_ratios")]


@pytest.mark.parametrize(
    "column, value, pattern",
    [
        ("seed", "abc", r"expected an integer, got 'abc'"),
        ("seed", 1.5, r"expected an integer, got 1.5"),
        ("seed", True, r"expected an integer, got True"),
        ("seed", -1, r"seed must be in 0\.\.2\*\*63-1, got -1"),
        ("seed", 2**63, r"seed must be in"),
        ("num_inference_steps", 0, r"num_inference_steps must be in 2\.\.1000 \(50 official\), got 0"),
        ("num_inference_steps", 1, r"num_inference_steps must be in 2\.\.1000 \(50 official\), got 1"),
        ("num_inference_steps", "2.5", r"expected an integer, got '2.5'"),
        ("num_inference_steps", [5], r"expected an integer, got list"),
        ("guidance_scale", "high", r"expected a number, got 'high'"),
        ("guidance_scale", float("inf"), r"expected a finite number"),
        ("guidance_scale", "nan", r"expected a finite number"),
        ("previous_guidance_scale", -0.5, r"previous_guidance_scale must be >= 0, got -0.5"),
        ("previous_guidance_scale", False, r"expected a number, got False"),
        ("canvas_size", 100, r"canvas_size must be a positive multiple of 8 \(e.g. 256\), got 100"),
        ("canvas_size", -256, r"canvas_size must be a positive multiple of 8 .*got -256"),
        ("canvas_size", "256px", r"expected an integer, got '256px'"),
        ("output_size", "big", r"output_size must be 'canvas' or 'source', got 'big'"),
        ("output_size", 1, r"expected a string, got int"),
    ],
)
def test_bad_override_values(column, value, pattern):
    with pytest.raises(InputError, match=rf"row 2, column '{column}': {pattern}") as e:
        validate_manifest([{"video_uri": "a.mp4"}, {"video_uri": "b.mp4", column: value}])
    assert problems_of(e) == [(2, column)]


def test_good_override_values_are_normalised():
    (row,) = validate_manifest([{
        "video_uri": "a.mp4", "seed": "42", "num_inference_steps": 50.0, "guidance_scale": 7,
        "previous_guidance_scale": "1.5", "canvas_size": " 512 ", "output_size": " SOURCE ",
    }])
    assert row.sampler_overrides == {
        "seed": 42, "num_inference_steps": 50, "guidance_scale": 7.0,
        "previous_guidance_scale": 1.5, "canvas_size": 512, "output_size": "source",
    }
    assert isinstance(row.guidance_scale, float) and isinstance(row.num_inference_steps, int)


def test_job_can_restrict_overrides():
    records = [{"video_uri": "a.mp4", "seed": 1}, {"video_uri": "b.mp4", "seed": None},
               {"video_uri": "c.mp4", "seed": 3, "guidance_scale": 2.0}]
    with pytest.raises(InputError, match=r"column 'seed': per-row 'seed' overrides are not allowed by this job "
                                         r"\(set in rows 1, 3\); allowed overrides: guidance_scale") as e:
        validate_manifest(records, allowed_overrides=["guidance_scale"])
    assert problems_of(e) == [(None, "seed")]
    rows = validate_manifest(records, allowed_overrides=SAMPLER_OVERRIDE_COLUMNS)
    assert [r.seed for r in rows] == [1, None, 3]
    with pytest.raises(InputError, match="unknown sampler override"):
        validate_manifest(records, allowed_overrides=["sed"])


def test_no_rows(tmp_path):
    path = write_text(tmp_path / "m.csv", "video_uri,clip_id\n")
    with pytest.raises(InputError, match="the manifest has no rows"):
        read_manifest(path)
    with pytest.raises(InputError, match="CSV manifest is empty"):
        read_manifest(write_text(tmp_path / "e.csv", ""))


def test_all_problems_are_reported_at_once(tmp_path):
    path = write_text(
        tmp_path / "m.csv",
        "video_uri,clip_id,target_ratios,seed,canvas_size,output_prefix,extra\n"
        "a.mp4,dup,9:16,1,256,ok/sub,\n"          # row 1: fine apart from the unknown column
        ",,,,,,\n"                                  # blank line: skipped, not a row
        ",x,,,,,\n"                                 # row 2: empty URI
        "b.mp4,dup,1:1,,,,\n"                       # row 3: duplicate of row 1
        "c.mp4,../../etc,2:0,seven,100,/abs,\n"     # row 4: five problems
        "d.mp4,d,,,,,,too,many\n",                  # row 5: too many fields
    )
    with pytest.raises(InputError) as e:
        read_manifest(path)
    assert isinstance(e.value, ManifestError)
    assert problems_of(e) == [
        (None, None),  # unknown column 'extra'
        (2, "video_uri"),
        (3, "clip_id"),
        (4, "clip_id"),
        (4, "target_ratios"),
        (4, "output_prefix"),
        (4, "seed"),
        (4, "canvas_size"),
        (5, None),
    ]
    msg = str(e.value)
    assert msg.startswith(f"{path}: 9 problems in manifest:")
    assert "row 3, column 'clip_id': duplicate clip_id 'dup' (explicit); row 1 already uses it" in msg
    assert "row 5: has 9 fields but the header has 7" in msg


def test_jsonl_bad_lines_are_reported_with_the_other_problems(tmp_path):
    path = write_text(
        tmp_path / "m.jsonl",
        '{"video_uri": "a.mp4"}\n\n{"video_uri": "b.mp4",\n[1, 2]\n{"video_uri": "c.mp4", "seed": -3}\n',
    )
    with pytest.raises(InputError) as e:
        read_manifest(path)
    msg = str(e.value)
    assert "row 2: line 3 is not valid JSON" in msg
    assert "row 3: line 4: expected a JSON object, got list" in msg
    assert "row 4, column 'seed': seed must be in 0..2**63-1, got -3" in msg


@pytest.mark.parametrize(
    "clip_id",
    ["../../etc", "../x", "/etc/passwd", "a/b", "a\\b", "x\x00y", ".", "..", "a" * 129, "has space", "é", "a:b"],
)
def test_unsafe_clip_ids_are_rejected(clip_id):
    with pytest.raises(InputError, match=r"row 1, column 'clip_id'") as e:
        validate_manifest([{"video_uri": "a.mp4", "clip_id": clip_id}])
    assert problems_of(e) == [(1, "clip_id")]
    assert check_clip_id(clip_id) is not None


@pytest.mark.parametrize("clip_id", ["a", "A.b-c_9", ".hidden", "x" * 128, "..."])
def test_safe_clip_ids_are_kept(clip_id):
    (row,) = validate_manifest([{"video_uri": "a.mp4", "clip_id": clip_id}])
    assert row.clip_id == clip_id


@pytest.mark.parametrize(
    "prefix, reason",
    [
        ("../../etc", "would escape the output prefix"),
        ("ok/../../etc", "relative path component '..'"),
        ("./x", "relative path component '.'"),
        ("/abs/dir", "absolute path"),
        ("s3://other-bucket/x", "URL or drive letter"),
        ("C:\\out", "backslash"),
        ("a\\..\\b", "backslash"),
        ("a\x00b", "NUL byte"),
        ("~/out", "home folder"),
        ("a//b", "empty path component"),
        ("a/b c", "characters outside"),
        ("x" * 513, "at most 512"),
    ],
)
def test_unsafe_output_prefixes_are_rejected(prefix, reason):
    with pytest.raises(InputError, match=rf"row 2, column 'output_prefix': .*{re.escape(reason)}") as e:
        validate_manifest([{"video_uri": "a.mp4"}, {"video_uri": "b.mp4", "output_prefix": prefix}])
    assert problems_of(e) == [(2, "output_prefix")]


@pytest.mark.parametrize("prefix, stored", [("shorts/2024/", "shorts/2024"), ("a.b/c-d_e", "a.b/c-d_e"), ("x", "x")])
def test_safe_output_prefixes_are_normalised(prefix, stored):
    (row,) = validate_manifest([{"video_uri": "a.mp4", "output_prefix": prefix}])
    assert row.output_prefix == stored
    assert check_output_prefix(prefix) is None


# ------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("name", ["m.json", "m.txt", "manifest", "m.parquet.bak"])
def test_unknown_extension(tmp_path, name):
    path = tmp_path / name
    path.write_text("{}")
    pattern = rf"{re.escape(name)}: unknown manifest format.*\.parquet, \.pq, \.jsonl, \.ndjson, \.csv"
    with pytest.raises(InputError, match=pattern):
        read_manifest(path)
    with pytest.raises(InputError, match=pattern):
        write_manifest(SAMPLE_ROWS, path)


def test_missing_and_corrupt_files(tmp_path, mem_prefix):
    with pytest.raises(InputError, match=r"nope\.csv: manifest not found"):
        read_manifest(tmp_path / "nope.csv")
    with pytest.raises(InputError, match=r"manifest not found"):
        read_manifest(f"{mem_prefix}/nope.jsonl")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"bad\.parquet: not a readable Parquet file"):
        read_manifest(tmp_path / "bad.parquet")
    (tmp_path / "latin.csv").write_bytes("video_uri\ncaf\xe9.mp4\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin\.csv: manifest is not UTF-8"):
        read_manifest(tmp_path / "latin.csv")


# ----------------------------------------------------------------------------- list a prefix


def make_tree(root: Path, files: list[str]) -> None:
    for rel in files:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")


TREE = [
    "b.mp4",
    "a.MOV",
    "notes.txt",
    "clip.mp4.part",
    "thumbs/a.jpg",
    "shows/s1/video.mp4",
    "shows/s2/video.mp4",
    "shows/s2/extra.webm",
    "._b.mp4",
    ".cache/c.mp4",
    "empty_dir/.keep",
]


def test_manifest_from_prefix_local(tmp_path):
    make_tree(tmp_path, TREE)
    rows = manifest_from_prefix(tmp_path)
    rels = [os.path.relpath(r.video_uri, tmp_path) for r in rows]
    assert rels == ["a.MOV", "b.mp4", "shows/s1/video.mp4", "shows/s2/extra.webm", "shows/s2/video.mp4"]
    assert all(os.path.isabs(r.video_uri) for r in rows)
    assert [r.clip_id for r in rows] == [derive_clip_id(r.video_uri) for r in rows]
    assert len({r.clip_id for r in rows}) == len(rows)  # the two video.mp4 differ
    assert all(r.target_ratios is None and r.sampler_overrides == {} for r in rows)
    assert manifest_from_prefix(str(tmp_path) + "/") == rows  # deterministic, trailing slash ok


def test_manifest_from_prefix_options(tmp_path):
    make_tree(tmp_path, TREE)
    top = manifest_from_prefix(tmp_path, recursive=False)
    assert [os.path.basename(r.video_uri) for r in top] == ["a.MOV", "b.mp4"]
    only_webm = manifest_from_prefix(tmp_path, extensions=["WEBM"])
    assert [os.path.relpath(r.video_uri, tmp_path) for r in only_webm] == ["shows/s2/extra.webm"]


def test_manifest_from_prefix_errors(tmp_path):
    make_tree(tmp_path, ["notes.txt", "sub/x.jpg"])
    with pytest.raises(InputError, match=r"no videos found \(recursive, extensions \.avi, \.m4v"):
        manifest_from_prefix(tmp_path)
    with pytest.raises(InputError, match=r"folder not found"):
        manifest_from_prefix(tmp_path / "missing")
    with pytest.raises(InputError, match=r"is a file, not a folder"):
        manifest_from_prefix(tmp_path / "notes.txt")


def test_manifest_from_prefix_memory_and_round_trip(mem_prefix):
    fs = fsspec.filesystem("memory")
    root = mem_prefix[len("memory://"):]
    for rel in ["in/z.mp4", "in/deep/a.mkv", "in/readme.md"]:
        fs.pipe(f"{root}/{rel}", b"x")
    rows = manifest_from_prefix(f"{mem_prefix}/in")
    assert [r.video_uri for r in rows] == [f"memory://{root}/in/deep/a.mkv", f"memory://{root}/in/z.mp4"]
    with fsspec.open(rows[0].video_uri, "rb") as f:  # the URIs are usable as they are
        assert f.read() == b"x"
    write_manifest(rows, f"{mem_prefix}/m.parquet")
    assert read_manifest(f"{mem_prefix}/m.parquet") == rows


# ------------------------------------------------------------------------------------ purity


def test_module_imports_neither_torch_nor_ray():
    # the manifest is a package (schema / naming / validation / io): import it, and only it
    code = (
        "import sys\n"
        "import m3ddm_ray.distributed.manifest as mod\n"
        "mod.validate_manifest([{'video_uri': 'a.mp4', 'target_ratios': '9:16'}])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray'))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_error_type_and_problem_fields():
    with pytest.raises(ManifestError) as e:
        validate_manifest([{"video_uri": "a.mp4", "seed": "x"}], source="jobs/m.csv")
    assert isinstance(e.value, InputError) and isinstance(e.value, ValueError)
    assert e.value.source == "jobs/m.csv"
    (p,) = e.value.problems
    assert (p.row, p.column) == (1, "seed") and "expected an integer" in p.message


def test_s3_round_trip_with_moto_server(monkeypatch):
    """Listing, writing and reading on S3 (a local moto server; no network, no credentials)."""
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="m3ddm-test")
        opts = {"client_kwargs": {"endpoint_url": endpoint}, "skip_instance_cache": True}
        fs = fsspec.filesystem("s3", **opts)
        for key in ["in/a/x.mp4", "in/y.MOV", "in/z.txt"]:
            fs.pipe(f"m3ddm-test/{key}", b"x")
        rows = manifest_from_prefix("s3://m3ddm-test/in/", storage_options=opts)
        assert [r.video_uri for r in rows] == ["s3://m3ddm-test/in/a/x.mp4", "s3://m3ddm-test/in/y.MOV"]
        for ext in ("parquet", "jsonl", "csv"):
            write_manifest(rows, f"s3://m3ddm-test/out/m.{ext}", storage_options=opts)
            assert read_manifest(f"s3://m3ddm-test/out/m.{ext}", storage_options=opts) == rows
        fs.invalidate_cache()
        assert sorted(fs.ls("m3ddm-test/out")) == [f"m3ddm-test/out/m.{e}" for e in ("csv", "jsonl", "parquet")]
    finally:
        server.stop()


@pytest.mark.parametrize("steps", [0, 1, 2, 50, 1000, 1001])
def test_manifest_and_sampler_accept_the_same_step_counts(steps):
    """One rule: a row the sampler would reject fails manifest validation (with its row number)."""
    from m3ddm_ray.sampling import SamplerSettings

    try:
        SamplerSettings(num_inference_steps=steps)
        sampler_ok = True
    except InputError:
        sampler_ok = False
    try:
        validate_manifest([{"video_uri": "a.mp4"}, {"video_uri": "b.mp4", "num_inference_steps": steps}])
        manifest_ok = True
    except ManifestError as e:
        assert [(p.row, p.column) for p in e.problems] == [(2, "num_inference_steps")]
        manifest_ok = False
    assert manifest_ok == sampler_ok == (2 <= steps <= 1000)


# ------------------------------------------------------------------------------------ task columns
def test_task_rows_parse_and_round_trip(tmp_path):
    rows = validate_manifest([
        {"video_uri": "a.mp4"},
        {"video_uri": "b.mp4", "task": "Inpaint", "mask_uri": " s3://m/b/ ", "mask_dilate": "3"},
        {"video_uri": "c.mp4", "task": "extend", "extend_frames": 8.0, "extend_direction": "BACKWARD"},
        {"video_uri": "d.mp4", "task": "outpaint", "target_ratios": "1:1"},
    ], default_ratios="9:16")
    assert [r.task_name for r in rows] == ["outpaint", "inpaint", "extend", "outpaint"]
    assert rows[0].task is None and rows[3].task is None  # outpaint is the default: stored as None
    assert (rows[1].mask_uri, rows[1].mask_dilate, rows[1].target_ratios) == ("s3://m/b/", 3, None)
    assert (rows[2].extend_frames, rows[2].extend_direction, rows[2].target_ratios) == (8, "backward", None)
    assert rows[0].target_ratios == ("9:16",)
    for ext in ("jsonl", "csv", "parquet"):
        write_manifest(rows, tmp_path / f"m.{ext}")
        assert read_manifest(str(tmp_path / f"m.{ext}"), default_ratios="9:16") == rows


@pytest.mark.parametrize("record, column, pattern", [
    ({"task": "paint"}, "task", "task must be 'outpaint' or 'inpaint' or 'extend'"),
    ({"task": "inpaint"}, "mask_uri", "is required for task 'inpaint'"),
    ({"task": "extend"}, "extend_frames", "is required for task 'extend'"),
    ({"task": "extend", "extend_frames": 0}, "extend_frames", "must be >= 1"),
    ({"task": "extend", "extend_frames": 2.5}, "extend_frames", "expected an integer"),
    ({"task": "extend", "extend_frames": 3, "extend_direction": "sideways"}, "extend_direction", "'forward' or"),
    ({"task": "inpaint", "mask_uri": "m", "mask_dilate": -1}, "mask_dilate", "must be >= 0 pixels"),
    ({"mask_uri": "m"}, "mask_uri", "applies to task 'inpaint' only; this row's task is 'outpaint'"),
    ({"task": "inpaint", "mask_uri": "m", "extend_frames": 3}, "extend_frames", "applies to task 'extend' only"),
    ({"task": "extend", "extend_frames": 3, "target_ratios": "1:1"}, "target_ratios", "extend keeps the source"),
    ({"task": "inpaint", "mask_uri": "m", "output_size": "canvas"}, "output_size", "inpaint keeps the source"),
])
def test_bad_task_columns_name_row_column_and_fix(record, column, pattern):
    with pytest.raises(ManifestError) as exc:
        validate_manifest([{"video_uri": "ok.mp4"}, dict(record, video_uri="v.mp4")])
    problems = [p for p in exc.value.problems if p.column == column]
    assert problems and all(p.row == 2 for p in problems), exc.value.problems
    assert any(pattern in p.message for p in problems), [p.message for p in problems]


def test_the_sample_tasks_manifest_is_valid_and_its_files_exist():
    # its paths are relative to the repository root, where `make sample-tasks` runs
    rows = read_manifest(str(REPO / "tests" / "data" / "tasks_manifest.jsonl"), default_ratios="9:16")
    assert [r.task_name for r in rows] == ["outpaint", "inpaint", "extend"]
    for r in rows:
        assert (REPO / r.video_uri).is_file() and (r.mask_uri is None or (REPO / r.mask_uri).is_file())
