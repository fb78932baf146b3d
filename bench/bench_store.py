"""Benchmark the curation store on a synthetic dataset (default 100,000 images × 20 captions).

Measures, and prints:
* import time of the candidate captions as JSON Lines (one row per caption), and of the same data as
  a seed-triplets file (positive + 19 negatives per image, so also ~1.9 M triplets);
* ``record_scores`` time for one model over every caption;
* ``next_image`` latency (p50 / p99) for an annotator who decides each image handed out, with and
  without class balance;
* export times (triplets, seed-triplets, best-captions, csv, parquet) and the database size.

Goals on the project machine (2 cores): import ≤ 2 min, next image ≤ 20 ms, export ≤ 1 min.

    python bench/bench_store.py                  # full size
    python bench/bench_store.py --images 2000    # quick
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.decisions import record_decision  # noqa: E402
from curation.exporters import export_file  # noqa: E402
from curation.importers import ImportOptions, import_file  # noqa: E402
from curation.models import add_model_version, set_active_model  # noqa: E402
from curation.queue import QueueOptions, next_image, record_scores  # noqa: E402
from curation.store import open_store  # noqa: E402

WORDS = (
    "field road river house tree roof car lane park pool court farm dense sparse green grey white "
    "large small many few left right north south parallel curved"
).split()
T = TypeVar("T")
CLASSES = [f"class{k:02d}" for k in range(21)]


def caption(rng: random.Random, i: int, j: int) -> str:
    return f"image {i} caption {j}: " + " ".join(rng.choices(WORDS, k=14))


def write_inputs(folder: Path, images: int, per_image: int, seed: int) -> tuple[Path, Path]:
    rng = random.Random(seed)
    jsonl, seed_file = folder / "captions.jsonl", folder / "seed.json"
    with open(jsonl, "w") as lines, open(seed_file, "w") as seeds:
        seeds.write("[")
        for i in range(images):
            texts = [caption(rng, i, j) for j in range(per_image)]
            image = f"{CLASSES[i % len(CLASSES)]}/{i:06d}.png"
            for text in texts:
                lines.write(json.dumps({"image": image, "caption": text, "source": "model:bench"}) + "\n")
            record = {"image": image, "pos": texts[0], "negs": texts[1:], "class": CLASSES[i % len(CLASSES)]}
            seeds.write(("," if i else "") + "\n" + json.dumps(record))
        seeds.write("\n]\n")
    return jsonl, seed_file


def timed(label: str, func: Callable[..., T], *args: object, **kwargs: object) -> tuple[T, float]:
    start = time.perf_counter()
    result = func(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"{label:<44} {seconds:8.2f} s", flush=True)
    return result, seconds


def bench_queue(
    conn: sqlite3.Connection, annotator: str, opts: QueueOptions, queries: int
) -> tuple[float, float]:
    latencies = []
    for _ in range(queries):
        start = time.perf_counter()
        image_id = next_image(conn, annotator, opts)
        latencies.append((time.perf_counter() - start) * 1000)
        if image_id is None:
            break
        caption_id = conn.execute(
            "SELECT id FROM captions WHERE image_id = ? LIMIT 1", (image_id,)
        ).fetchone()[0]
        record_decision(conn, image_id, caption_id, "best", annotator)
    latencies.sort()
    return statistics.median(latencies), latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--captions", type=int, default=20, help="captions per image")
    parser.add_argument("--queries", type=int, default=500, help="next_image calls per measurement")
    parser.add_argument("--workdir", type=Path, help="folder for inputs and databases (default: a temp dir)")
    args = parser.parse_args()
    folder = args.workdir or Path(tempfile.mkdtemp(prefix="bench_store_"))
    folder.mkdir(parents=True, exist_ok=True)
    total = args.images * args.captions
    print(f"{args.images} images × {args.captions} captions = {total} captions in {folder}")
    (jsonl, seed_file), _ = timed("generate inputs", write_inputs, folder, args.images, args.captions, 0)
    opts = ImportOptions(image_root=folder, check_files=False)  # synthetic paths: no image files

    conn = open_store(folder / "jsonl.db")
    report, import_jsonl = timed("import jsonl (captions)", import_file, conn, "jsonl", jsonl, opts)
    print(f"  {report.summary()}")
    conn.close()
    conn = open_store(folder / "seed.db")
    report, import_seed = timed(
        "import seed-triplets (captions + triplets)", import_file, conn, "seed-triplets", seed_file, opts
    )
    print(f"  {report.summary()}")

    rng = random.Random(1)
    model = add_model_version(conn, "bench-model")
    rows = conn.execute("SELECT image_id, id FROM captions").fetchall()
    timed(
        "record_scores (every caption)", record_scores, conn, model, [(i, c, rng.random()) for i, c in rows]
    )
    timed("set_active_model", set_active_model, conn, model)
    p50, p99 = bench_queue(conn, "ann", QueueOptions(), args.queries)
    print(f"{'next_image p50 / p99':<44} {p50:8.2f} / {p99:.2f} ms")
    bp50, bp99 = bench_queue(conn, "bob", QueueOptions(class_balance=True), args.queries)
    print(f"{'next_image class_balance p50 / p99':<44} {bp50:8.2f} / {bp99:.2f} ms")

    exports = {}
    for kind, name in (
        ("triplets", "triplets.jsonl"),
        ("seed-triplets", "seed_out.json"),
        ("best-captions", "best.csv"),
        ("csv", "captions.csv"),
        ("parquet", "captions.parquet"),
    ):
        report, exports[kind] = timed(f"export {kind}", export_file, conn, kind, folder / name)
        print(f"  {report.records} records")
    conn.close()
    size = sum(p.stat().st_size for p in folder.glob("seed.db*")) / 2**20
    print(f"{'database size (seed.db, with scores)':<44} {size:8.1f} MiB")
    print(
        json.dumps(
            {
                "images": args.images,
                "captions": total,
                "import_jsonl_s": round(import_jsonl, 2),
                "import_seed_s": round(import_seed, 2),
                "next_p50_ms": round(p50, 2),
                "next_p99_ms": round(p99, 2),
                "next_balanced_p50_ms": round(bp50, 2),
                "next_balanced_p99_ms": round(bp99, 2),
                "export_s": {k: round(v, 2) for k, v in exports.items()},
                "db_mib": round(size, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
