"""Benchmark the corpus-scale pieces: search index, the store at 1 M images, the streaming corpus job.

Measures, and prints:
* per index size (10k, 100k, 1M synthetic unit vectors, clustered, d = the tiny scorer's embed_dim =
  768, the real 3B scorer's head dim too): index build time (incremental adds of 50k) and resident
  memory, search p50/p99 for k = 48 without and with the query's encoding (tiny model), filtered search
  p50 (10 % of ids allowed), recall@10 against exact search;
* ``next_image`` p50/p99 and one export (best-captions) with 1M images × 20 captions in the store
  (built once with bench_store's code in ``--store-dir`` and reused);
* on that store, the Browse tab's reads (``browse``): a ``list_images`` page, the filter values, and a
  search without / with a class filter, query encoding excluded, over an index of synthetic vectors
  under the store's image ids; and (``export``) the decisions-parquet export of every caption in a
  child process: time and peak resident memory;
* the corpus job (``inference_script.py --embed text``): records/s with 2 CPU processes vs 1, and peak
  resident memory of a rank job at 10k vs 100k records.

Goals (2 cores): search p50 ≤ 20 ms at 100k and ≤ 50 ms at 1M; next_image ≤ 20 ms at 1M; corpus-job
memory at 100k within 1.2× of 10k; 2 processes ≥ 1.6× one. The last line is ``search_p50_ms_1m=<n>``.

    python bench/bench_scale.py            # full size (about half an hour with a fresh store)
    python bench/bench_scale.py --quick    # small sizes, < 2 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scorer.search_index import SearchIndex  # noqa: E402

CHUNK = 50_000
CENTERS = 2000


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def clustered(n: int, dim: int, seed: int, start: int = 0):
    """Chunks of unit vectors around CENTERS fixed centres; the same (seed, start) gives the same chunk."""
    centers = np.random.default_rng(12345).standard_normal((CENTERS, dim)).astype(np.float32)
    for first in range(start, start + n, CHUNK):
        rng = np.random.default_rng([seed, first])
        count = min(CHUNK, start + n - first)
        x = centers[rng.integers(0, CENTERS, count)] + rng.standard_normal((count, dim)).astype(np.float32) * 0.7
        yield first, x / np.linalg.norm(x, axis=1, keepdims=True)


def percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.99 * len(samples)))]


def exact_top(queries: np.ndarray, n: int, dim: int, k: int) -> list[set[int]]:
    best = np.full((len(queries), k), -np.inf, dtype=np.float32), np.zeros((len(queries), k), dtype=np.int64)
    for first, x in clustered(n, dim, seed=0):
        scores = np.concatenate([best[0], queries @ x.T], axis=1)
        ids = np.concatenate([best[1], np.broadcast_to(np.arange(first, first + len(x)), (len(queries), len(x)))], 1)
        top = np.argsort(-scores, axis=1)[:, :k]
        best = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
    return [set(row.tolist()) for row in best[1]]


def bench_index(n: int, dim: int, queries: int, encoder) -> dict:
    before = rss_mib()
    index, start = SearchIndex(dim), time.perf_counter()
    for first, x in clustered(n, dim, seed=0):
        index.add(np.arange(first, first + len(x)), x)
    build = time.perf_counter() - start
    memory = rss_mib() - before
    query_vectors = next(clustered(queries, dim, seed=1))[1]
    plain = []
    for q in query_vectors:
        t = time.perf_counter()
        index.search(q, 48)
        plain.append((time.perf_counter() - t) * 1000)
    allowed = set(range(0, n, 10))
    filtered = []
    for q in query_vectors[:20]:
        t = time.perf_counter()
        hits = index.search(q, 48, allowed)[0]
        filtered.append((time.perf_counter() - t) * 1000)
        assert all(h.id % 10 == 0 for h in hits)
    truth = exact_top(query_vectors[:20], n, dim, 10)
    found = [{h.id for h in index.search(q, 10)[0]} for q in query_vectors[:20]]
    recall = float(np.mean([len(f & t) / 10 for f, t in zip(found, truth)]))
    encoded = []
    for i in range(min(queries, 30) if encoder else 0):
        t = time.perf_counter()
        vector = encoder([f"query {n} {i}: a river between green fields and {i % 7} houses"]).numpy()
        index.search(vector, 48)
        encoded.append((time.perf_counter() - t) * 1000)
    p50, p99 = percentiles(plain)
    e50, e99 = percentiles(encoded) if encoded else (float("nan"), float("nan"))
    result = {"n": n, "kind": index.kind, "build_s": round(build, 2), "index_mib": round(memory, 1),
              "p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "filtered_p50_ms": round(percentiles(filtered)[0], 2),
              "with_encoding_p50_ms": round(e50, 2), "with_encoding_p99_ms": round(e99, 2),
              "recall_at_10": round(recall, 3)}
    print(json.dumps(result), flush=True)
    return result


def bulk_build(path: Path, images: int, per_image: int) -> None:
    """A store of ``images`` × ``per_image`` captions written straight into the schema in one transaction.

    bench_store.py builds through the JSONL importer (validation, per-row checks): here, with other jobs
    loading the machine (load 8-9), that ran at 2M rows per 225 s, 38 min for 20M rows, so the store is
    bulk-inserted instead; the queue and exports read the same tables either way.
    """
    from bench_store import CLASSES, WORDS

    from curation.store import now_iso, open_store, transaction

    conn, stamp, words = open_store(path), now_iso(), len(WORDS)
    with transaction(conn):
        conn.executemany("INSERT INTO images(id, path, class, created_at) VALUES (?, ?, ?, ?)",
                         ((i + 1, f"{CLASSES[i % 21]}/{i:07d}.png", CLASSES[i % 21], stamp) for i in range(images)))
        conn.executemany(
            "INSERT INTO captions(image_id, text, source, created_at) VALUES (?, ?, 'model:bench', ?)",
            ((i + 1, f"image {i} caption {j}: {WORDS[(i + j) % words]} {WORDS[(i * 7 + j) % words]}"
              f" {WORDS[(i * 13 + j * 3) % words]}", stamp) for i in range(images) for j in range(per_image)))
    conn.close()


def bench_store(images: int, store_dir: Path, queries: int) -> dict:
    from bench_store import bench_queue

    from curation.exporters import export_file
    from curation.queue import QueueOptions
    from curation.store import open_store

    db = store_dir / f"scale_{images}.db"
    build = None
    if not db.is_file():
        store_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        bulk_build(store_dir / "building.db", images, 20)
        (store_dir / "building.db").rename(db)
        build = time.perf_counter() - start
    conn = open_store(db)
    n_images, n_captions = conn.execute("SELECT (SELECT COUNT(*) FROM images),"
                                        " (SELECT COUNT(*) FROM captions)").fetchone()
    p50, p99 = bench_queue(conn, f"bench-{time.time_ns()}", QueueOptions(), queries)
    start = time.perf_counter()
    report = export_file(conn, "best-captions", store_dir / "best.csv")
    export = time.perf_counter() - start
    conn.close()
    result = {"images": n_images, "captions": n_captions, "build_s": build and round(build, 1),
              "next_image_p50_ms": round(p50, 2), "next_image_p99_ms": round(p99, 2),
              "export_best_captions_s": round(export, 1), "exported": report.records}
    print(json.dumps(result), flush=True)
    return result


EXPORT_CHILD = ("import resource, sys, time; sys.path.insert(0, {root!r}); from curation.exporters import export_file;"
                " from curation.store import open_store; conn = open_store({db!r}); t = time.perf_counter();"
                " report = export_file(conn, 'decisions-parquet', {out!r});"
                " print('EXPORT', report.records, time.perf_counter() - t,"
                " resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")


def bench_export(db: Path, out: Path) -> dict:
    """decisions-parquet of every caption, in a child process: seconds, rows and peak resident MiB."""
    done = subprocess.run([sys.executable, "-c", EXPORT_CHILD.format(root=str(ROOT), db=str(db), out=str(out))],
                          capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"export failed: {done.stderr[-2000:]}")
    _, rows, seconds, kib = done.stdout.split()[-4:]
    out.unlink()
    return {"export_decisions_parquet_s": round(float(seconds), 1), "exported_rows": int(rows),
            "export_peak_rss_mib": round(int(kib) / 1024)}


def timed(fn, repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return percentiles(samples)


def bench_browse(db: Path, dim: int, repeat: int) -> dict:
    """The Browse tab's reads at the store's size: a list_images page, the filter values, and a search
    without / with a class filter, query encoding excluded (an index of synthetic vectors under the
    store's image ids stands in for the embeddings the corpus job computes)."""
    from types import SimpleNamespace

    from curation.store import open_store
    from curation.views import ImageFilter, filter_values, image_ids, list_images
    from loop.search import cover, ranked
    from scorer.search_index import CorpusSearch

    conn = open_store(db)
    n = conn.execute("SELECT max(id) FROM images").fetchone()[0]
    rng = np.random.default_rng(0)
    result = {}
    page = ImageFilter(limit=48)
    result["list_page_p50_ms"], result["list_page_p99_ms"] = timed(lambda: list_images(conn, page), repeat)
    offsets = iter(rng.integers(0, n - 48, repeat).tolist())
    result["list_page_random_offset_p50_ms"] = timed(
        lambda: list_images(conn, ImageFilter(limit=48, offset=next(offsets))), repeat)[0]
    cls = conn.execute("SELECT class FROM class_counts ORDER BY class LIMIT 1").fetchone()[0]
    result["list_page_class_p50_ms"] = timed(lambda: list_images(conn, ImageFilter(cls=cls, limit=48)), repeat)[0]
    result["filter_values_first_ms"] = timed(lambda: filter_values(conn), 1)[0]  # reads every caption's source
    result["filter_values_p50_ms"] = timed(lambda: filter_values(conn), repeat)[0]
    scorer = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(embed_dim=dim)))
    index = CorpusSearch(scorer, "image")
    start = time.perf_counter()
    for first, x in clustered(n, dim, seed=0):
        index.index.add(np.arange(first + 1, first + 1 + len(x)), x)
    result["index_build_s"] = round(time.perf_counter() - start, 1)
    result["cover_first_ms"] = timed(lambda: cover(conn, index, str), 1)[0]  # lists every image once
    result["cover_repeat_p50_ms"] = timed(lambda: cover(conn, index, str), repeat)[0]
    queries = iter(next(clustered(2 * repeat, dim, seed=1))[1])
    flt = ImageFilter(cls=cls)
    result["search_p50_ms"], result["search_p99_ms"] = timed(
        lambda: (cover(conn, index, str), ranked(conn, index, next(queries)[None], ImageFilter(), 48)), repeat)

    def filtered():
        allowed = image_ids(conn, flt)
        cover(conn, index, str, allowed)
        return ranked(conn, index, next(queries)[None], flt, 48, allowed)

    result["search_class_filter_p50_ms"], result["search_class_filter_p99_ms"] = timed(filtered, repeat)
    result["class_filter_images"] = len(image_ids(conn, flt))
    conn.close()
    result = {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}
    print(json.dumps(result), flush=True)
    return result


def corpus_inputs(folder: Path, records: int, unique_text: bool) -> Path:
    images = sorted(f"imgs/{p.name}" for p in (ROOT / "assets" / "demo" / "imgs").glob("*.png"))
    words = "river road field house tree roof car lane park pool court farm dense sparse green".split()
    path = folder / f"corpus_{records}_{int(unique_text)}.jsonl"
    with open(path, "w", encoding="utf-8") as out:
        for i in range(records):
            caption = f"{words[i % 15]} {words[(i // 15) % 15]} {i}" if unique_text else words[i % 15]
            out.write(json.dumps({"image": images[i % len(images)], "caption": caption,
                                  "captions": [words[(i + j) % 15] for j in range(3)]}) + "\n")
    return path


RSS_CHILD = ("import resource, sys; sys.path.insert(0, {root!r}); import inference_script;"
             " code = inference_script.main(sys.argv[1:]);"
             " print('MAXRSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)")


def run_job(checkpoint: Path, argv: list[str], processes: int, threads: str | None = None) -> tuple[float, float, str]:
    """Wall seconds of one corpus job run, (one process) its peak resident memory in MiB, its log.

    accelerate launch gives each of its processes one OpenMP thread; one process alone uses every core
    unless ``threads`` says otherwise."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = threads
    if processes > 1:
        env["ACCELERATE_USE_CPU"] = "1"
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(ROOT / "inference_script.py")]
    else:
        cmd = [sys.executable, "-c", RSS_CHILD.format(root=str(ROOT))]
    start = time.perf_counter()
    done = subprocess.run([*cmd, "--checkpoint", str(checkpoint), "--device", "cpu", *argv], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"corpus job failed: {done.stderr[-2000:]}")
    peak = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("MAXRSS_KIB")]
    return wall, int(peak[0]) / 1024 if peak else float("nan"), done.stderr


def bench_corpus(checkpoint: Path, folder: Path, throughput_records: int, memory_records: tuple[int, int]) -> dict:
    demo = str(ROOT / "assets" / "demo")
    text = corpus_inputs(folder, throughput_records, unique_text=True)
    walls, seconds = {}, {}
    for run, processes, threads in (("1", 1, None), ("1_thread", 1, "1"), ("2", 2, None)):
        out = folder / f"embed_{run}"
        walls[run], _, log = run_job(checkpoint, ["--embed", "text", "--input", str(text), "--output_dir",
                                                  str(out), "--shard_size", "500"], processes, threads)
        # the slowest process's time in the job itself, model loading and process start excluded
        seconds[run] = max(float(t) for t in re.findall(r"records\) in ([0-9.]+) s", log))
    memory = {}
    for records in memory_records:
        path = corpus_inputs(folder, records, unique_text=False)
        # a fresh child each time: ru_maxrss of children is the largest so far, so run the small one first
        _, memory[records], _ = run_job(checkpoint, ["--rank", "--input", str(path), "--image_root", demo,
                                                  "--output_dir", str(folder / f"rank_{records}")], 1)
    small, large = memory_records
    result = {"records": throughput_records, **{f"wall_s_{run}": round(wall, 1) for run, wall in walls.items()},
              **{f"job_s_{run}": round(sec, 2) for run, sec in seconds.items()},
              **{f"records_per_s_{run}": round(throughput_records / sec, 1) for run, sec in seconds.items()},
              "speedup": round(seconds["1"] / seconds["2"], 2),
              "speedup_vs_1_thread": round(seconds["1_thread"] / seconds["2"], 2),
              f"rss_mib_{small}": round(memory[small]), f"rss_mib_{large}": round(memory[large]),
              "rss_ratio": round(memory[large] / memory[small], 3)}
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: the logic, not the figures")
    parser.add_argument("--store-dir", type=Path, help="store folder, reused (default: /tmp/bench_scale_store;"
                        " with --quick a temporary folder)")
    parser.add_argument("--dim", type=int, help="index dim (default: the tiny scorer's; 768 = the real 3B head;"
                        " no query encoding then)")
    parser.add_argument("--sizes", type=int, nargs="*", help="index sizes (default 10k 100k 1M)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["index", "store", "browse", "export", "corpus"])
    args = parser.parse_args()
    sizes = args.sizes or ([2_000, 30_000] if args.quick else [10_000, 100_000, 1_000_000])
    store_images = 2_000 if args.quick else 1_000_000
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from scorer import Scorer
    from scorer.write_tiny_checkpoint import main as write_tiny

    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    store_dir = args.store_dir or (work / "store" if args.quick else Path(tempfile.gettempdir()) / "bench_scale_store")
    write_tiny([str(work / "tiny")])
    scorer = Scorer.from_checkpoint(work / "tiny", device="cpu")
    dim = scorer.model.config.embed_dim
    print(f"load average {os.getloadavg()}; tiny scorer dim {dim}; index dim {args.dim or dim}"
          " (the real 3B scorer's head dim is 768: ScorerConfig.embed_dim)")
    results = {}
    if "index" not in args.skip:
        encoder = scorer.embed_texts if not args.dim or args.dim == dim else None
        results["index"] = [bench_index(n, args.dim or dim, 200, encoder) for n in sizes]
    if "store" not in args.skip:
        results["store"] = bench_store(store_images, store_dir, 50 if args.quick else 200)
    db = store_dir / f"scale_{store_images}.db"
    if "browse" not in args.skip:
        if not db.is_file():
            bench_store(store_images, store_dir, 5)  # builds the store
        results["browse"] = bench_browse(db, dim, 10 if args.quick else 50)
    if "export" not in args.skip:
        if not db.is_file():
            bench_store(store_images, store_dir, 5)
        results["export"] = bench_export(db, store_dir / "decisions.parquet")
        print(json.dumps(results["export"]), flush=True)
    if "corpus" not in args.skip:
        counts = (100, 1000) if args.quick else (10_000, 100_000)
        results["corpus"] = bench_corpus(work / "tiny", work, 100 if args.quick else 20_000, counts)
    print(json.dumps(results))
    if "index" in results:
        print(f"search_p50_ms_{'1m' if not args.quick else str(sizes[-1])}={results['index'][-1]['p50_ms']}")


if __name__ == "__main__":
    main()
