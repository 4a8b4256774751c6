"""The Ray Data engine on a local 2-CPU Ray gives the same rows as the local engine; from a manifest it
reads the rows with ``ray.data.read_parquet``, and parts hold up to ``--rows-per-part`` rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from magtok.pipeline import DatasetOptions, ReadOptions, tokenize_dataset

from .conftest import GOOD_IDS, rows_of

ray = pytest.importorskip("ray")


def _parts(folder) -> list[Path]:
    return sorted(Path(folder).glob("part-*.parquet"))


def test_ray_engine_equals_local_engine(videos, tiny_model, tmp_path, cli, monkeypatch):
    read = ReadOptions(size=(16, 16), max_frames=9)
    local = tmp_path / "local"
    tokenize_dataset(videos, local, tiny_model, read, options=DatasetOptions(window_frames=5, batch_size=4))
    manifest = tmp_path / "m.parquet"
    assert cli("manifest", videos, "-o", manifest, "-q")[0] == 0
    out = tmp_path / "ray"
    common = ("--model", tiny_model, "--out", out, "--engine", "ray", "--ray-cpus", "2", "--window-frames", "5",
              "--size", "16", "16", "--max-frames", "9", "-q")
    # from the manifest: the workers read it (no from_items), 4 inputs in batches of 3 -> one part, not two
    import ray.data
    monkeypatch.setattr(ray.data, "from_items", lambda *a, **k: pytest.fail("manifest rows not read by Ray"))
    code, _, err = cli("tokenize-dataset", manifest, *common, "--batch-size", "3", "--limit", "4",
                       "--rows-per-part", "1000")
    monkeypatch.undo()
    assert code == 1, err                                       # broken.mp4 (a probe error in the manifest)
    assert "broken.mp4: cannot read" in err and "4 inputs tokenized" in err, err
    assert not ray.is_initialized()                             # the Ray magtok started is stopped
    parts = _parts(out)
    assert len(parts) == 1 and len({r["source"] for r in pq.read_table(parts[0]).to_pylist()}) == 4
    # the rest from the folder (work items): rows_per_part=2 splits them into parts of whole sources
    code, _, err = cli("tokenize-dataset", videos, *common, "--batch-size", "3", "--rows-per-part", "2")
    assert code == 1 and "3 inputs tokenized" in err and "1 failed earlier and skipped" in err, err
    new = [p for p in _parts(out) if p not in parts]
    per_part = [set(pq.read_table(p).column("source").to_pylist()) for p in new]
    assert len(new) >= 2 and sum(len(s) for s in per_part) == len(set().union(*per_part)) == 3   # never split
    assert all(pq.read_metadata(p).num_rows <= 3 for p in new)          # < 2 rows, then one more source
    a, b = rows_of(out), rows_of(local)
    assert sorted({r["source"] for r in a.values()}) == GOOD_IDS
    assert {k: v["codes"] for k, v in a.items()} == {k: v["codes"] for k, v in b.items()}
    assert {k: (v["frame_start"], v["frame_end"]) for k, v in a.items()} == \
        {k: (v["frame_start"], v["frame_end"]) for k, v in b.items()}
    # resuming on the Ray engine skips everything done and the recorded failure
    code, _, err = cli("tokenize-dataset", videos, *common)
    assert code == 1 and "0 inputs tokenized (0 rows), 7 already present" in err


def test_ray_report_lists_the_parts_its_write_tasks_wrote(videos, tiny_model, tmp_path):
    out = tmp_path / "ray"
    report = tokenize_dataset(videos, out, tiny_model, ReadOptions(size=(16, 16), max_frames=9),
                              options=DatasetOptions(engine="ray", ray_cpus=2, window_frames=5, batch_size=2,
                                                     rows_per_part=2))
    assert report.added == len(GOOD_IDS) and len(report.parts) >= 2
    assert sorted(Path(p).name for p in report.parts) == [p.name for p in _parts(out)]
