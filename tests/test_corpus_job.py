"""Streaming corpus jobs: sharded Parquet output, resume after a kill, split across processes, bad records."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from project_paths import ROOT

from scorer.corpus import CorpusInputError, CorpusJob, finish, import_embeddings, run_job
from scorer.embedding_store import EmbeddingStore

DEMO = ROOT / "assets" / "demo"
WORDS = ["a river", "green fields", "many houses", "a runway", "dense trees", "a parking lot", "a beach"]


def _images() -> list[str]:
    return sorted(f"imgs/{p.name}" for p in (DEMO / "imgs").glob("*.png"))


def _corpus(folder, n: int = 10, suffix: str = ".jsonl"):
    images = _images()
    records = [{"image": images[i % len(images)], "captions": [WORDS[(i + j) % len(WORDS)] for j in range(3)],
                "caption": WORDS[i % len(WORDS)] + f" {i}"} for i in range(n)]
    path = folder / f"corpus{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path, row_group_size=4)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path, records


def _shards(folder) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted(folder.glob("shard-*.parquet"))])


def _job(path, out, **kw) -> CorpusJob:
    return CorpusJob(path, out, image_root=DEMO, shard_size=3, **kw)


def test_a_killed_job_resumes_to_the_same_output_as_an_uninterrupted_run(tiny_scorer, tmp_path):
    path, records = _corpus(tmp_path)
    whole = run_job(_job(path, tmp_path / "whole"), tiny_scorer)
    assert whole.shards_written == 4 and whole.total_shards == 4
    assert finish(_job(path, tmp_path / "whole"), whole)
    killed = run_job(_job(path, tmp_path / "killed", max_shards=2), tiny_scorer)  # "killed" after 2 shards
    assert killed.shards_written == 2 and not finish(_job(path, tmp_path / "killed"), killed)
    (tmp_path / "killed" / ".shard-00002.parquet.4242.tmp").write_bytes(b"half a file")  # died mid-write
    resumed = run_job(_job(path, tmp_path / "killed"), tiny_scorer)
    assert (resumed.shards_skipped, resumed.shards_written) == (2, 2)
    assert finish(_job(path, tmp_path / "killed"), resumed)
    assert _shards(tmp_path / "killed").equals(_shards(tmp_path / "whole"))
    table = _shards(tmp_path / "whole").to_pylist()
    assert [row["record"] for row in table] == list(range(10))
    expected = tiny_scorer.rank([(str(DEMO / r["image"]), r["captions"]) for r in records])
    for row, ranked in zip(table, expected):
        assert [c["text"] for c in row["captions"]] == [c.text for c in ranked.captions]
        assert row["best_score"] == pytest.approx(ranked.best.score, abs=1e-5)
        assert row["margin"] == pytest.approx(ranked.margin, abs=1e-5)
    assert json.loads((tmp_path / "whole" / "_done.json").read_text())["records"] == 10


def test_processes_split_the_shards_and_parquet_input_gives_the_same_output(tiny_scorer, tmp_path):
    jsonl, _ = _corpus(tmp_path)
    parquet, _ = _corpus(tmp_path, suffix=".parquet")
    one = run_job(_job(jsonl, tmp_path / "one"), tiny_scorer)
    first = run_job(_job(parquet, tmp_path / "two"), tiny_scorer, rank=0, world=2)
    second = run_job(_job(parquet, tmp_path / "two"), tiny_scorer, rank=1, world=2)
    assert (first.shards_written, second.shards_written) == (2, 2) and one.shards_written == 4
    assert sorted(p.name for p in (tmp_path / "two").glob("shard-*")) == [f"shard-0000{n}.parquet" for n in range(4)]
    left, right = _shards(tmp_path / "one"), _shards(tmp_path / "two")
    assert left.column("record").equals(right.column("record"))
    assert left.column("best").equals(right.column("best"))
    np.testing.assert_allclose(left.column("best_score").to_numpy(), right.column("best_score").to_numpy(), atol=1e-6)


def test_a_bad_record_is_named_and_the_finished_shards_are_kept(tiny_scorer, tmp_path):
    path, records = _corpus(tmp_path)
    records[7]["captions"] = []
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    with pytest.raises(CorpusInputError, match=r"corpus.jsonl: record 7: field 'captions'"):
        run_job(_job(path, tmp_path / "out"), tiny_scorer)
    assert len(list((tmp_path / "out").glob("shard-*.parquet"))) == 2  # shards 0 and 1 are done
    with pytest.raises(ValueError, match="other settings"):
        run_job(CorpusJob(path, tmp_path / "out", image_root=DEMO, shard_size=5), tiny_scorer)
    path.write_text('{"image": "imgs/scene_01.png", "captions": ["x"]}\n{not json\n', encoding="utf-8")
    with pytest.raises(CorpusInputError, match=r"record 1 \(line 2\): not valid JSON"):
        run_job(_job(path, tmp_path / "again"), tiny_scorer)


@pytest.mark.parametrize("kind", ["image", "text"])
def test_embedding_shards_load_into_the_model_versions_store(tiny_scorer, tmp_path, kind):
    path, records = _corpus(tmp_path, n=7)
    job = _job(path, tmp_path / "emb", task=f"embed-{kind}")
    run_job(job, tiny_scorer)
    assert import_embeddings(job.output_dir, tmp_path / "cache") == (len(_images()[:7]) if kind == "image" else 7)
    store = EmbeddingStore(tmp_path / "cache" / tiny_scorer.model_version / kind)
    table = _shards(job.output_dir)
    stored = store.vectors(store.lookup(table.column("key").to_pylist()))
    if kind == "image":
        expected = tiny_scorer.embed_images([str(DEMO / r["image"]) for r in records])
    else:
        expected = tiny_scorer.embed_texts([r["caption"] for r in records])
    np.testing.assert_allclose(stored, expected.numpy(), atol=1e-5)
    assert import_embeddings(job.output_dir, tmp_path / "cache") == 0  # idempotent


@pytest.mark.slow
def test_accelerate_two_cpu_processes_write_what_one_writes(tiny_checkpoint_session, tmp_path):
    path, _ = _corpus(tmp_path, n=8)
    common = ["--checkpoint", str(tiny_checkpoint_session), "--rank", "--input", str(path), "--image_root", str(DEMO),
              "--shard_size", "2", "--device", "cpu"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "1"}
    two = subprocess.run([*launch, str(ROOT / "inference_script.py"), *common, "--output_dir", str(tmp_path / "two")],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "process 0/2 wrote 2 shards" in two.stderr and "process 1/2 wrote 2 shards" in two.stderr
    subprocess.run([sys.executable, str(ROOT / "inference_script.py"), *common, "--output_dir", str(tmp_path / "one")],
                   check=True, env=env, cwd=ROOT, capture_output=True, timeout=300)
    left, right = _shards(tmp_path / "one"), _shards(tmp_path / "two")
    assert left.column("best").equals(right.column("best"))
    np.testing.assert_allclose(left.column("best_score").to_numpy(), right.column("best_score").to_numpy(), atol=1e-5)
    assert (tmp_path / "two" / "_done.json").is_file()


def test_rank_shards_import_into_the_curation_store_as_scores(tiny_scorer, tmp_path):
    from curation.importers import ImportOptions, import_file
    from curation.models import add_model_version
    from curation.queue import queue_model
    from curation.scores import import_scores
    from curation.store import open_store

    path, records = _corpus(tmp_path, n=6)
    lines = [{"image": r["image"], "caption": c, "source": "model:test"} for r in records[:5] for c in r["captions"]]
    (tmp_path / "store.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    conn = open_store(tmp_path / "store.db")
    import_file(conn, "jsonl", tmp_path / "store.jsonl", ImportOptions(image_root=DEMO))
    run_job(_job(path, tmp_path / "ranked"), tiny_scorer)
    version = add_model_version(conn, "corpus-job")
    report = import_scores(conn, tmp_path / "ranked", version)
    assert (report.rows, report.scores) == (6, 15)
    assert report.skipped == [f"shard-00001.parquet record 5: image {records[5]['image']!r} is not in the store"]
    stored = dict(conn.execute("SELECT c.text || '@' || i.path, s.score FROM scores s JOIN captions c ON c.id ="
                               " s.caption_id JOIN images i ON i.id = s.image_id").fetchall())
    for row in _shards(tmp_path / "ranked").to_pylist()[:5]:
        for caption in row["captions"]:
            assert stored[f"{caption['text']}@{row['image']}"] == pytest.approx(caption["score"])
    assert queue_model(conn) == version  # the imported margins now order the queue
