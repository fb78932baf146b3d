"""Evaluation: the original project's triplet protocol, per-image caption ranking, Karpathy retrieval.

``python -m trainer.evaluate --checkpoint DIR --data F --image_root D --output M.json``

Triplet files (seed or README format), for each record with image embedding x and caption scores
s(c) = <x, y_c> (cosine; the original's "distance smaller" is the same order for unit vectors) and the
negative groups of ``trainer.negatives`` (the ones training uses):

* ``global_accuracy``: s(pos) > s(the "random" caption: another image's positive, drawn with a fixed seed);
* ``local_accuracy``: s(pos) > s(o) for every o in the "other" group ``negs[1:]`` (counted per pair);
* ``hard_accuracy``: s(pos) > s(the "hard" caption ``negs[0]``; README format: the ``negative``);
* ``rank_accuracy`` / ``mrr``: the positive among {pos} ∪ negs — ranked first / 1 / its rank;
* ``mean_accuracy``: mean of the three accuracies that apply — the primary metric.

This is the original Remote_Scorer trainer's ``validate_epoch``. Karpathy files (UCM-Captions, RSICD, ...):
image↔text retrieval R@1/5/10 both ways and their mean ``mean_recall`` (primary metric), as
CLIP_benchmark's ``recall_at_k``. Everywhere a tie counts AGAINST the truth: a positive that scores
exactly as a negative (an identical caption of another image, say) is not ranked above it.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from common.paths import resolve_inside
from scorer.model import DualEncoder
from scorer.qwen2_5_vl.processing import DualEncoderProcessor
from scorer.ranking import EmbeddingCache, ProgressCallback, Scorer
from trainer.negatives import negative_groups, random_other_caption
from trainer.records import TripletRecord, load_records

logger = logging.getLogger(__name__)

RECALL_KS = (1, 5, 10)


@contextmanager
def progress_bar(desc: str, enabled: bool) -> Iterator[ProgressCallback | None]:
    """A tqdm bar on stderr fed by ``Scorer.embed_*``'s ``on_progress(done, total)`` (once per batch); None if off."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    with tqdm(desc=desc, unit="item", file=sys.stderr, dynamic_ncols=True) as bar:
        def update(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield update


def mismatched_images(records: Sequence[TripletRecord]) -> list[str]:
    """For the text-only control: each record's anchor is another image (distinct images shifted by half)."""
    images = sorted({record.image for record in records})
    if len(images) < 2:
        raise ValueError("the mismatched-image control needs at least two distinct images")
    shifted = {image: images[(k + len(images) // 2) % len(images)] for k, image in enumerate(images)}
    return [shifted[record.image] for record in records]


def triplet_metrics(records: Sequence[TripletRecord], image_emb: dict[str, torch.Tensor],
                    text_emb: dict[str, torch.Tensor], seed: int = 0,
                    anchors: Sequence[str] | None = None) -> dict[str, float]:
    """Pure function over embeddings (unit vectors keyed by image path / caption text).

    ``anchors`` replaces each record's image (the text-only control uses :func:`mismatched_images`).
    """
    anchors = anchors or [record.image for record in records]
    hits: dict[str, list[bool]] = {"global": [], "local": [], "hard": [], "rank": []}
    reciprocal = []
    for i, record in enumerate(records):
        x = image_emb[anchors[i]].float()

        def score(text: str, x=x) -> float:
            return float(x @ text_emb[text].float())

        s_pos = score(record.positive)
        groups = negative_groups(record, random_other_caption(records, record, random.Random(f"{seed}/eval/{i}")))
        for metric, group in (("global", "random"), ("hard", "hard"), ("local", "other")):
            hits[metric] += [s_pos > score(negative) for negative in groups[group]]  # a tie is a miss
        candidates = [c for c in dict.fromkeys(record.negatives) if c != record.positive]
        if candidates:
            above = sum(score(c) >= s_pos for c in candidates)  # ties rank above the positive
            hits["rank"].append(above == 0)
            reciprocal.append(1.0 / (1 + above))
    metrics = {f"{name}_accuracy": sum(v) / len(v) for name, v in hits.items() if v}
    if reciprocal:
        metrics["mrr"] = sum(reciprocal) / len(reciprocal)
    accuracies = [metrics[f"{name}_accuracy"] for name in ("global", "local", "hard") if hits[name]]
    metrics["mean_accuracy"] = sum(accuracies) / len(accuracies) if accuracies else float("nan")
    metrics["n_records"] = float(len(records))
    return metrics


def retrieval_metrics(image_emb: torch.Tensor, text_emb: torch.Tensor, text_image: torch.Tensor) -> dict[str, float]:
    """(n, d) images, (m, d) texts, text_image (m,) = row of each text's image → R@K both ways, mean_recall.

    A query's rank is the number of wrong candidates scoring at least as high as its best true one, so
    a tie counts against the truth (CLIP_benchmark's ``recall_at_k`` with ``torch.topk``, whose order
    among exact ties is unspecified, made deterministic and pessimistic). Image → text: the true
    candidates are the image's own captions; text → image: its one image.
    """
    scores = image_emb.float() @ text_emb.float().T  # (n, m)
    own = text_image[None, :] == torch.arange(len(image_emb), device=text_image.device)[:, None]  # (n, m)
    best_own = scores.masked_fill(~own, float("-inf")).max(dim=1).values  # (n,)
    i2t_rank = ((scores >= best_own[:, None]) & ~own).sum(1)  # (n,)
    own_score = scores[text_image, torch.arange(len(text_emb))]  # (m,)
    t2i_rank = ((scores >= own_score[None, :]) & ~own).sum(0)  # (m,)
    metrics = {}
    for k in RECALL_KS:
        metrics[f"i2t_r{k}"] = float((i2t_rank < k).float().mean())
        metrics[f"t2i_r{k}"] = float((t2i_rank < k).float().mean())
    metrics["mean_recall"] = sum(metrics.values()) / len(metrics)
    return metrics


class TripletEvaluator:
    """The original triplet protocol on a triplet file or record list."""

    primary_metric = "mean_accuracy"
    metric_names = ("mean_accuracy", "global_accuracy", "local_accuracy", "hard_accuracy", "rank_accuracy", "mrr")

    def __init__(self, records: Sequence[TripletRecord], image_root: str | Path, seed: int = 0,
                 mismatch_images: bool = False):
        self.records = list(records)
        self.image_root = Path(image_root)
        self.seed = seed
        self.anchors = mismatched_images(self.records) if mismatch_images else None

    def __call__(self, model: DualEncoder, processor: DualEncoderProcessor, batch_size: int = 32,
                 progress: bool = False) -> dict[str, float]:
        """``progress``: tqdm bars (stderr) over the image and caption batches."""
        scorer = Scorer(model, processor, "evaluation", batch_size=batch_size, cache=EmbeddingCache())
        images = sorted({record.image for record in self.records})
        texts = list(dict.fromkeys(t for r in self.records for t in (r.positive, *r.negatives)))
        with progress_bar("evaluate: images", progress) as on_progress:
            image_emb = scorer.embed_images([resolve_inside(self.image_root, image) for image in images], on_progress)
        with progress_bar("evaluate: captions", progress) as on_progress:
            text_emb = scorer.embed_texts(texts, on_progress)
        return triplet_metrics(self.records, dict(zip(images, image_emb)), dict(zip(texts, text_emb)),
                               self.seed, self.anchors)


def read_karpathy(path: str | Path, split: str | None = "test",
                  image_template: str = "{filename}") -> list[tuple[str, list[str]]]:
    """Karpathy JSON → [(image path relative to the image root, [sentences])] of one split (None: all).

    ``image_template`` maps the file name, e.g. ``"imgs/{stem}.png"`` for ../shared/data/ucm.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a Karpathy JSON object with \"images\", got {type(data).__name__}")
    items = []
    for index, image in enumerate(data.get("images", [])):
        if split and image.get("split") != split:
            continue
        filename = image.get("filename")
        sentences = [s.get("raw", "").strip() for s in image.get("sentences", [])]
        sentences = [s for s in sentences if s]
        if not filename or not sentences:
            raise ValueError(f"{path}: image {index} has no filename or no sentences")
        items.append((image_template.format(filename=filename, stem=Path(filename).stem), sentences))
    if not items:
        raise ValueError(f"{path}: no images in split {split!r}")
    return items


class KarpathyEvaluator:
    """Image↔text retrieval over the images of one split and all their sentences."""

    primary_metric = "mean_recall"
    metric_names = ("mean_recall", *(f"{way}_r{k}" for way in ("i2t", "t2i") for k in RECALL_KS))

    def __init__(self, items: Sequence[tuple[str, list[str]]], image_root: str | Path):
        self.items = list(items)
        self.image_root = Path(image_root)

    def __call__(self, model: DualEncoder, processor: DualEncoderProcessor, batch_size: int = 32,
                 progress: bool = False) -> dict[str, float]:
        """``progress``: tqdm bars (stderr) over the image and sentence batches."""
        scorer = Scorer(model, processor, "evaluation", batch_size=batch_size, cache=EmbeddingCache())
        with progress_bar("evaluate: images", progress) as on_progress:
            image_emb = scorer.embed_images([resolve_inside(self.image_root, image) for image, _ in self.items],
                                            on_progress)
        texts = [text for _, sentences in self.items for text in sentences]
        owner = torch.tensor([n for n, (_, sentences) in enumerate(self.items) for _ in sentences])
        with progress_bar("evaluate: sentences", progress) as on_progress:
            text_emb = scorer.embed_texts(texts, on_progress)
        metrics = retrieval_metrics(image_emb, text_emb, owner)
        metrics["n_images"], metrics["n_texts"] = float(len(self.items)), float(len(texts))
        return metrics


def build_evaluator(data: str | Path, image_root: str | Path, seed: int = 0, mismatch_images: bool = False,
                    split: str | None = "test", image_template: str = "{filename}", skip_missing: bool = False):
    """A Karpathy file (a JSON object with "images") or a triplet file → its evaluator."""
    path = Path(data)
    head = path.read_text(encoding="utf-8").lstrip()[:1] if path.is_file() else ""
    if head == "{" and path.suffix != ".jsonl":
        items = read_karpathy(path, split, image_template)
        missing = [image for image, _ in items if not resolve_inside(image_root, image).is_file()]
        if missing and not skip_missing:
            raise FileNotFoundError(f"{len(missing)} of {len(items)} images of {path} are missing under "
                                    f"{image_root}, e.g. {missing[:3]} (check --image_template or --skip_missing)")
        if missing:
            logger.warning("leaving out %d images missing under %s", len(missing), image_root)
        return KarpathyEvaluator([item for item in items if item[0] not in set(missing)], image_root)
    records = load_records(path, image_root, on_invalid="skip" if skip_missing else "error")
    return TripletEvaluator(records, image_root, seed, mismatch_images)


def format_table(metrics: dict[str, float], primary: str) -> str:
    lines = [f"{'metric':<18} {'value':>8}", "-" * 27]
    for name, value in metrics.items():
        shown = f"{value:8.0f}" if name.startswith("n_") else f"{value:8.4f}"
        lines.append(f"{name + (' *' if name == primary else ''):<18} {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description="Evaluate a scorer checkpoint on triplets or a Karpathy file.")
    parser.add_argument("--checkpoint", required=True, help="scorer checkpoint directory")
    parser.add_argument("--data", required=True, help="triplet file (seed/README format) or Karpathy JSON")
    parser.add_argument("--image_root", required=True, help="image paths in --data are relative to this")
    parser.add_argument("--output", help="write the metrics to this JSON file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random other-image negatives")
    parser.add_argument("--mismatched_images", action="store_true", help="text-only control: wrong image per record")
    parser.add_argument("--split", default="test", help="Karpathy split ('all' for every image)")
    parser.add_argument("--image_template", default="{filename}",
                        help="Karpathy file name → image path, e.g. imgs/{stem}.png")
    parser.add_argument("--skip_missing", action="store_true", help="leave out records/images whose file is missing")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="auto", choices=("auto", "bf16", "fp16", "fp32"),
                        help="weights' precision (auto: bf16 on a bf16 GPU or a CPU with AMX/AVX512-BF16)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from scorer.checkpoint import load_checkpoint

    evaluator = build_evaluator(args.data, args.image_root, args.seed, args.mismatched_images,
                                None if args.split == "all" else args.split, args.image_template, args.skip_missing)
    model, processor = load_checkpoint(args.checkpoint, device=args.device, dtype=args.dtype)
    metrics = evaluator(model, processor, args.batch_size, progress=True)
    print(format_table(metrics, evaluator.primary_metric))
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"primary_metric": evaluator.primary_metric, **metrics}, indent=2), encoding="utf-8")
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
