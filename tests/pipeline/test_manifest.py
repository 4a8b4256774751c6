"""`magtok manifest`: parallel probing into Parquet; tokenize-dataset from a manifest walks and probes nothing."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from magtok.pipeline import DatasetOptions, ReadOptions, build_manifest, tokenize_dataset

from .conftest import GOOD_IDS, rows_of


def test_manifest_cli(videos, tmp_path, cli):
    out = tmp_path / "m.parquet"
    code, _, err = cli("manifest", videos, "-o", out, "--workers", "3", "-q")
    assert code == 0, err
    assert "8 files, 7 readable, 1 with errors" in err
    t = pq.read_table(out).to_pylist()
    rows = {r["id"]: r for r in t}
    assert sorted(rows) == sorted(GOOD_IDS + ["broken.mp4"])
    assert rows["bikes-0.mp4"]["frames"] == 13 and rows["bikes-0.mp4"]["fps"] == 25.0
    assert (rows["bikes-0.mp4"]["height"], rows["bikes-0.mp4"]["width"]) == (48, 64)
    assert rows["coffee.png"]["kind"] == "image" and rows["coffee.png"]["frames"] == 1
    assert "not a readable video" in rows["broken.mp4"]["error"] and rows["bikes-0.mp4"]["error"] is None
    assert rows["bikes-0.mp4"]["path"] == str(videos / "bikes-0.mp4")
    code, _, err = cli("manifest", videos, "-o", out, "-q")
    assert code == 2 and "exists" in err and "--overwrite" in err
    assert cli("manifest", videos, "-o", out, "--overwrite", "-q")[0] == 0
    code, _, err = cli("manifest", videos, "-o", tmp_path / "no" / "m.parquet", "-q")
    assert code == 2 and "does not exist" in err
    code, _, err = cli("manifest", tmp_path / "missing", "-o", tmp_path / "x.parquet", "-q")
    assert code == 2 and "does not exist" in err


def test_tokenize_from_manifest_probes_nothing(videos, tiny_model, tmp_path, monkeypatch, cli):
    m = tmp_path / "m.parquet"
    assert cli("manifest", videos, "-o", m, "-q")[0] == 0
    import magtok.data.video as V
    monkeypatch.setattr(V, "probe_video", lambda *a, **k: pytest.fail("probed again"))
    import magtok.data as D
    monkeypatch.setattr(D, "probe_video", lambda *a, **k: pytest.fail("probed again"))
    read = ReadOptions(size=(16, 16), max_frames=9)
    rep = tokenize_dataset(m, tmp_path / "a", tiny_model, read)
    assert rep.added == 7 and list(rep.failed) == ["broken.mp4"]
    monkeypatch.undo()
    rep2 = tokenize_dataset(videos, tmp_path / "b", tiny_model, read)
    assert {k: v["codes"] for k, v in rows_of(tmp_path / "a").items()} == \
        {k: v["codes"] for k, v in rows_of(tmp_path / "b").items()}
    assert rep2.added == 7


def test_list_file_urls_and_bad_manifests(videos, tmp_path, cli, tiny_model):
    import fsspec
    fs = fsspec.filesystem("memory")
    fs.pipe("/mf/clip.mp4", (videos / "bikes-0.mp4").read_bytes())
    lst = tmp_path / "list.txt"
    lst.write_text(f"# inputs\n{videos / 'coffee.png'}\nmemory:///mf/clip.mp4\n{tmp_path / 'gone.mp4'}\n")
    t = build_manifest(lst, workers=2).to_pylist()
    assert [r["frames"] for r in t[:2]] == [1, 13] and "no such file" in t[2]["error"]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    code, _, err = cli("tokenize-dataset", bad, "--model", tiny_model, "--out", tmp_path / "o", "-q")
    assert code == 2 and "not a readable Parquet manifest" in err
    pq.write_table(__import__("pyarrow").table({"x": [1]}), tmp_path / "nopath.parquet")
    code, _, err = cli("tokenize-dataset", tmp_path / "nopath.parquet", "--model", tiny_model, "--out",
                       tmp_path / "o", "-q")
    assert code == 2 and "no 'path' column" in err
