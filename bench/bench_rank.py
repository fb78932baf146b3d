"""Benchmark: batched + cached ranking against the original per-pair scoring, on the same model.

    python bench/bench_rank.py [--model tiny] [--images 50] [--captions 20] [--real-size]

50 UC Merced images × 20 candidate captions each (the image's own positive and negatives, its
UCM-Captions sentences, and captions of other images). Baseline: the original project's scoring,
one forward per (image, caption) pair. Ours: each image once, each distinct caption once, batched,
captions in length order, then a re-rank after editing one caption (served from the cache).
The last line is ``ratio_vs_per_pair=<number>``.

``--real-size`` instead times the real Qwen2.5-VL-3B towers (random weights, bf16) per image and per
caption, from ../shared/reference/qwen2.5-vl-3b-instruct/config.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
UCM = ROOT.parent / "shared" / "data" / "ucm"
REFERENCE_3B = ROOT.parent / "shared" / "reference" / "qwen2.5-vl-3b-instruct"


def build_items(n_images: int, n_captions: int) -> list[tuple[str, list[str]]]:
    records = json.loads((UCM / "triplets_train.json").read_text(encoding="utf-8"))
    rng = random.Random(0)
    pool = [text for r in records for text in [r["pos"], *r["negs"]]]
    items = []
    for record in records[:n_images]:
        captions = list(dict.fromkeys([record["pos"], *record["negs"]]))
        while len(captions) < n_captions:
            candidate = rng.choice(pool)
            if candidate not in captions:
                captions.append(candidate)
        items.append((str(UCM / record["image"]), captions[:n_captions]))
    return items


def per_pair(scorer, items) -> float:
    """The original project's ``SimilarityScorer.score``: one image and one caption per forward, nothing
    reused, the caption through the full processor call as it did (``processor(text=[...])``, same token
    ids as the bare tokenizer). Its 512×512 upscaling of every image is left out: same inputs both sides."""
    model, processor = scorer.model, scorer.processor
    start = time.perf_counter()
    with torch.inference_mode():
        for image, captions in items:
            for caption in captions:
                image_emb = model.encode_images(**processor.images([image]))
                text = processor.processor(text=[caption], padding=True, truncation=True, return_tensors="pt")
                text_emb = model.encode_texts(input_ids=text["input_ids"], attention_mask=text["attention_mask"])
                float(image_emb[0] @ text_emb[0])
    return time.perf_counter() - start


def batched(scorer, items) -> tuple[float, float]:
    from scorer.ranking import EmbeddingCache

    scorer.cache = EmbeddingCache()
    start = time.perf_counter()
    scorer.rank(items)
    full = time.perf_counter() - start
    image, captions = items[0]
    edited = [(image, [captions[0] + " (edited)", *captions[1:]])]
    start = time.perf_counter()
    scorer.rank(edited)
    return full, time.perf_counter() - start


def real_size_towers(repeats: int = 3) -> None:
    """Per-image and per-caption time of the real 3B towers in bf16 on this machine's CPU."""
    from PIL import Image
    from real_size import random_real_size_scorer  # bench/, beside this script

    start = time.perf_counter()
    model, processor = random_real_size_scorer(REFERENCE_3B, "cpu", torch.bfloat16, max_pixels=12845056)
    print(f"real-size 3B built with random bf16 weights in {time.perf_counter() - start:.0f} s")
    image = str(UCM / "imgs" / "1.png") if UCM.is_dir() else Image.new("RGB", (256, 256))
    caption = ("A residential area with many red-roofed houses arranged in rows, green trees along the roads "
               "and several cars parked in front of the houses.")
    with torch.inference_mode():
        for name, encode in (("image (256×256, 81 tokens)", lambda: model.encode_images(**processor.images([image]))),
                             ("caption (~30 tokens)", lambda: model.encode_texts(**processor.texts([caption])))):
            encode()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                encode()
                times.append(time.perf_counter() - start)
            print(f"real-size 3B bf16 CPU per {name}: {statistics.median(times):.2f} s (median of {repeats})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--captions", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--real-size", action="store_true", help="time the real 3B towers on CPU instead")
    args = parser.parse_args()
    if args.real_size:
        real_size_towers()
        return
    if not (UCM / "triplets_train.json").is_file():
        sys.exit(f"UC Merced data not found at {UCM}")
    from scorer import Scorer, new_scorer

    torch.set_num_threads(torch.get_num_threads())
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    model, processor = new_scorer(args.model, device="cpu", dtype="float32")
    scorer = Scorer(model, processor, "bench", batch_size=args.batch_size)
    items = build_items(args.images, args.captions)
    pairs = sum(len(captions) for _, captions in items)
    distinct = len({c for _, captions in items for c in captions})
    print(f"{len(items)} images × {args.captions} captions = {pairs} pairs, {distinct} distinct captions")
    batched(scorer, items[:2])  # warm-up
    per_pair(scorer, items[:1])
    ours, rerank = batched(scorer, items)
    baseline = per_pair(scorer, items)
    print(f"per_pair_seconds={baseline:.2f} ({pairs / baseline:.1f} pairs/s)")
    print(f"batched_cached_seconds={ours:.2f} ({pairs / ours:.1f} pairs/s)")
    print(f"rerank_after_one_edit_seconds={rerank:.3f}")
    print(f"ratio_vs_per_pair={baseline / ours:.1f}")


if __name__ == "__main__":
    main()
