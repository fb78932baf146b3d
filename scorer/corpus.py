"""Streaming corpus jobs: rank or embed a JSONL / Parquet corpus into sharded Parquet, resumably.

The input is read as a stream (JSONL line by line, Parquet batch by batch) and cut into shards of
``shard_size`` records: shard ``i`` holds records ``i * shard_size ...``. Process ``r`` of ``N``
(``accelerate launch --num_processes N``) takes the shards with ``i % N == r``; only one shard's
records are held at a time, so memory stays flat however large the input.

Each finished shard is written atomically as ``<output_dir>/shard-00000.parquet`` (temporary file,
fsync, rename): its presence is the shard's done marker. A killed job started again with the same
arguments skips the finished shards and redoes only the rest; ``job.json`` records the settings and a
mismatch is refused. When every shard exists, the main process writes ``_done.json``.

Tasks and the columns they write (``record`` = the record's index in the input):

* ``rank``: input ``{"image", "captions": [...]}`` → record, image, best, best_score, margin,
  captions (list of {text, score}, best first);
* ``embed-image``: input ``{"image"}`` → record, image, key (sha256 of the file), embedding;
* ``embed-text``: input ``{"caption"}`` → record, caption, key (sha256 of the UTF-8 text), embedding.

Embedding shards load into a model version's embedding store with
``python -m scorer.corpus import-embeddings OUTPUT_DIR --cache_dir data/cache/embeddings``; rank shards
into the curation store with ``python -m curation.scores`` (see docs/formats.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from common.inputs import InputRecordError, record_image, text_field

logger = logging.getLogger(__name__)

TASKS = ("rank", "embed-image", "embed-text")
SHARD = "shard-{:05d}.parquet"


CorpusInputError = InputRecordError  # a bad record, named by file, record index and field


@dataclass(frozen=True)
class CorpusJob:
    input: Path
    output_dir: Path
    task: str = "rank"
    shard_size: int = 1000
    image_root: Path | None = None
    max_shards: int | None = None  # stop after writing this many shards (the rest on the next run)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"corpus task {self.task!r} is not one of {', '.join(TASKS)}")
        if self.shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {self.shard_size}")
        if not Path(self.input).is_file():
            raise FileNotFoundError(f"corpus input not found: {self.input}")


@dataclass
class JobReport:
    shards_written: int = 0
    shards_skipped: int = 0  # finished by an earlier run
    records: int = 0
    total_shards: int | None = None  # known once the input was read to its end
    seconds: float = 0.0  # time in run_job (model loading excluded)


# -- reading -----------------------------------------------------------------------------------------
def iter_shards(path: Path, shard_size: int, mine: Callable[[int], bool]) -> Iterator[tuple[int, list[dict]]]:
    """(shard number, its records) for the shards ``mine`` accepts, streamed; records carry ``_index``.

    The last item yielded is ``(n_shards, [])`` once the input is exhausted (an end marker).
    """
    parquet = Path(path).suffix == ".parquet"
    records = _iter_parquet(path, shard_size) if parquet else _iter_jsonl(path, shard_size, mine)
    shard, chunk, count = 0, [], 0
    for index, record in records:
        count = index + 1
        if index // shard_size != shard:
            if chunk:
                yield shard, chunk
            shard, chunk = index // shard_size, []
        if record is not None and mine(shard):
            chunk.append({**record, "_index": index})
    if chunk:
        yield shard, chunk
    yield -(-count // shard_size), []


def _iter_jsonl(path: Path, shard_size: int, mine: Callable[[int], bool]) -> Iterator[tuple[int, dict | None]]:
    with open(path, encoding="utf-8") as lines:
        index = 0
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if not mine(index // shard_size):  # another process's record: not even parsed
                yield index, None
            else:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise CorpusInputError(f"{path}: record {index} (line {number}): not valid JSON: {err}") from None
                if not isinstance(record, dict):
                    raise CorpusInputError(f"{path}: record {index} (line {number}): expected an object")
                yield index, record
            index += 1


def _iter_parquet(path: Path, shard_size: int) -> Iterator[tuple[int, dict]]:
    index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=shard_size):
        for record in batch.to_pylist():
            yield index, record
            index += 1


# -- one shard ---------------------------------------------------------------------------------------
def _rank_table(scorer, job: CorpusJob, records: list[dict]) -> pa.Table:
    items = []
    for record in records:
        where = f"{job.input}: record {record['_index']}"
        captions = record.get("captions")
        if not isinstance(captions, list) or not captions:
            raise CorpusInputError(f"{where}: field 'captions' must be a non-empty list of strings")
        for n, caption in enumerate(captions):
            text_field({"caption": caption}, "caption", f"{where}, caption {n}")
        items.append((record_image(record, "image", job.image_root, where), captions))
    ranked = _scored(scorer.rank, items, records)
    rows = [{"record": r["_index"], "image": r["image"], "best": x.best.text, "best_score": x.best.score,
             "margin": x.margin if len(x.captions) > 1 else None,
             "captions": [{"text": c.text, "score": c.score} for c in x.captions]} for r, x in zip(records, ranked)]
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("record", pa.int64()), ("image", pa.string()), ("best", pa.string()), ("best_score", pa.float64()),
        ("margin", pa.float64()),
        ("captions", pa.list_(pa.struct([("text", pa.string()), ("score", pa.float64())])))]))


def _embed_table(scorer, job: CorpusJob, records: list[dict]) -> pa.Table:
    from scorer.ranking import content_hash, image_key

    if job.task == "embed-image":
        field = "image"
        values = [record_image(r, "image", job.image_root, f"{job.input}: record {r['_index']}") for r in records]
        keys = [image_key(path) for path in values]
        vectors = _scored(scorer.embed_images, values, records)
    else:
        field = "caption"
        values = [text_field(r, "caption", f"{job.input}: record {r['_index']}") for r in records]
        keys = [content_hash(text.encode("utf-8")) for text in values]
        vectors = scorer.embed_texts(values)
    dim = vectors.shape[1]
    flat = pa.array(vectors.numpy().reshape(-1))
    return pa.table({"record": pa.array([r["_index"] for r in records], pa.int64()),
                     field: [r[field] for r in records], "key": keys,
                     "embedding": pa.FixedSizeListArray.from_arrays(flat, dim)})


def _scored(call, items: list, records: list[dict]):
    """Run the scorer; an unreadable image becomes an error naming the first record that holds it."""
    from scorer.images import ImageLoadError

    try:
        return call(items)
    except ImageLoadError as err:
        paths = [item[0] if isinstance(item, tuple) else item for item in items]
        index = next((r["_index"] for r, p in zip(records, paths) if p == err.path), "?")
        raise CorpusInputError(f"record {index}: {err}") from err


def write_shard(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` whole or not at all."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# -- the job -----------------------------------------------------------------------------------------
def _check_settings(job: CorpusJob, model_version: str) -> None:
    settings = {"task": job.task, "input": Path(job.input).name, "shard_size": job.shard_size,
                "model_version": model_version}
    marker = job.output_dir / "job.json"
    if marker.is_file():
        found = json.loads(marker.read_text(encoding="utf-8"))
        if found != settings:
            raise ValueError(f"{job.output_dir} holds a job with other settings {found}; this one is {settings}")
        return
    tmp = marker.with_name(f".job.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(settings, indent=2), encoding="utf-8")
    os.replace(tmp, marker)  # every process writes the same content: whichever lands last is the same


def run_job(job: CorpusJob, scorer, rank: int = 0, world: int = 1) -> JobReport:
    """Process this rank's unfinished shards; see the module docstring."""
    from tqdm.auto import tqdm

    start = time.perf_counter()
    job.output_dir.mkdir(parents=True, exist_ok=True)
    _check_settings(job, scorer.model_version)
    make = _rank_table if job.task == "rank" else _embed_table
    finished = {int(p.name[6:11]) for p in job.output_dir.glob("shard-*.parquet")}
    report = JobReport(shards_skipped=sum(1 for n in finished if n % world == rank))
    mine = lambda s: s % world == rank and s not in finished  # noqa: E731
    with tqdm(desc=f"{job.task} (process {rank}/{world})", unit="shard") as bar:
        for shard, records in iter_shards(job.input, job.shard_size, mine):
            if not records:
                report.total_shards = shard
                break
            if job.max_shards is not None and report.shards_written >= job.max_shards:
                logger.info("process %d: stopping after %d shards (max_shards)", rank, report.shards_written)
                break
            write_shard(make(scorer, job, records), job.output_dir / SHARD.format(shard))
            report.shards_written += 1
            report.records += len(records)
            bar.update()
    report.seconds = time.perf_counter() - start
    logger.info("process %d/%d: %s", rank, world, report)
    return report


def finish(job: CorpusJob, report: JobReport) -> bool:
    """Write ``_done.json`` when every shard exists (call on the main process after all have finished)."""
    if report.total_shards is None:
        return False
    shards = [job.output_dir / SHARD.format(n) for n in range(report.total_shards)]
    if not all(path.is_file() for path in shards):
        return False
    records = sum(pq.ParquetFile(path).metadata.num_rows for path in shards)
    done = {"shards": report.total_shards, "records": records,
            **{key: str(value) if isinstance(value, Path) else value for key, value in asdict(job).items()}}
    tmp = job.output_dir / f"._done.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(done, indent=2), encoding="utf-8")
    os.replace(tmp, job.output_dir / "_done.json")
    return True


def import_embeddings(output_dir: Path, cache_dir: Path, batch_rows: int = 65_536) -> int:
    """Append an embed job's shards to the model version's embedding store; return how many were new."""
    from scorer.embedding_store import EmbeddingStore

    settings = json.loads((Path(output_dir) / "job.json").read_text(encoding="utf-8"))
    if settings["task"] not in ("embed-image", "embed-text"):
        raise ValueError(f"{output_dir} holds a {settings['task']!r} job, not an embedding job")
    store = EmbeddingStore(Path(cache_dir) / settings["model_version"] / settings["task"].split("-")[1])
    added = 0
    for path in sorted(Path(output_dir).glob("shard-*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=["key", "embedding"]):
            dim = batch.schema.field("embedding").type.list_size
            vectors = batch.column("embedding").flatten().to_numpy().reshape(-1, dim)
            added += store.add(batch.column("key").to_pylist(), vectors)
    return added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scorer.corpus", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import-embeddings", help="load an embed job's shards into the embedding store")
    imp.add_argument("output_dir", type=Path)
    imp.add_argument("--cache_dir", type=Path, required=True, help="the app's embedding folder")
    args = parser.parse_args(argv)
    try:
        print(f"added {import_embeddings(args.output_dir, args.cache_dir)} embeddings to {args.cache_dir}")
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
