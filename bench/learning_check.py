"""Learning check: does training on real data make the tiny random scorer better on unseen images?

    python bench/learning_check.py [--data_dir ../shared/data/ucm] [--config configs/tiny_ucm.yaml]
                                   [--output_dir runs/learning_check] [--train_args "--loss infonce"]
                                   [--folds 5 [--only_folds 0,1]]

Single split (default): splits ``triplets_train.json`` by image (80 % / 20 %, fixed seed), evaluates the
untrained model (``--model tiny`` with the recipe's pixel budget and seed) on the held-out 20 %, trains
with exactly ``python train.py --config CONFIG --train_file F --image_root D --output_dir O`` (plus
``--train_args``), evaluates ``O/last`` on the same images, and prints global/local/hard accuracy (and
rank accuracy, MRR) before and after, each also with a mismatched image (the text-only control: what the
captions alone give away).

``--folds K``: K-fold cross-validation by image, stratified by the records' ``class`` (each fold holds
the same number of images of every class, ±1), seeded; each fold is held out once while the recipe
trains on the other K − 1, and the table gives mean ± std (sample std over folds) of every metric.
``--only_folds`` runs a subset (for screening); the summary then covers those folds only. A fold whose
``OUTPUT_DIR/foldK/learning_check.json`` was written by the same recipe text, ``--train_args`` and held-out
images is reused, not retrained (so a screen on some folds can be completed later); ``--reevaluate``
scores such a fold's checkpoint again with the current evaluator (after a change of protocol).
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scorer.checkpoint import load_checkpoint, new_scorer  # noqa: E402
from trainer.config import TrainConfig, load_yaml  # noqa: E402
from trainer.evaluate import TripletEvaluator  # noqa: E402
from trainer.model_setup import fresh_scorer_config  # noqa: E402
from trainer.records import load_records  # noqa: E402

METRICS = ("global_accuracy", "local_accuracy", "hard_accuracy", "rank_accuracy", "mrr")


def split_by_image(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    images = sorted({record["image"] for record in records})
    random.Random(seed).shuffle(images)
    train_images = set(images[: round(fraction * len(images))])
    return ([r for r in records if r["image"] in train_images], [r for r in records if r["image"] not in train_images])


def image_classes(records: list[dict]) -> dict[str, str]:
    """Image → its records' ``class`` ("" where a record has none); an image with two classes is an error."""
    classes: dict[str, str] = {}
    for index, record in enumerate(records):
        if "image" not in record:
            raise ValueError(f"record {index}: no 'image' field")
        label = str(record.get("class", ""))
        if classes.setdefault(record["image"], label) != label:
            raise ValueError(f"record {index} (class): image {record['image']!r} is both "
                             f"{classes[record['image']]!r} and {label!r}")
    return classes


def fold_split(records: list[dict], k: int, seed: int) -> list[list[str]]:
    """K disjoint folds of images covering every image once, stratified by class and seeded.

    Each class's images (sorted, then shuffled with ``random.Random(seed)``) are dealt round-robin to the
    folds, the dealing carrying on from class to class, so every fold holds each class's images ±1 and
    the folds' sizes differ by at most one. → the images of each fold, sorted.
    """
    if k < 2:
        raise ValueError(f"--folds must be at least 2, got {k}")
    by_class: dict[str, list[str]] = defaultdict(list)
    for image, label in sorted(image_classes(records).items()):
        by_class[label].append(image)
    n_images = sum(len(images) for images in by_class.values())
    if n_images < k:
        raise ValueError(f"{k} folds need at least {k} distinct images, the records have {n_images}")
    rng = random.Random(seed)
    folds: list[list[str]] = [[] for _ in range(k)]
    slot = 0
    for label in sorted(by_class):
        images = by_class[label]
        rng.shuffle(images)
        for image in images:
            folds[slot % k].append(image)
            slot += 1
    return [sorted(fold) for fold in folds]


def evaluate(model, processor, records, image_root: Path) -> dict[str, dict[str, float]]:
    return {"matched": TripletEvaluator(records, image_root, seed=0)(model, processor),
            "mismatched": TripletEvaluator(records, image_root, seed=0, mismatch_images=True)(model, processor)}


def evaluate_untrained(test_records, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    recipe = TrainConfig.from_dict(load_yaml(args.config))
    model, processor = new_scorer("tiny", fresh_scorer_config(recipe), device="cpu", dtype="float32",
                                  seed=recipe.seed)
    return evaluate(model, processor, test_records, Path(args.data_dir))


def reevaluate(out: Path, result: dict, args: argparse.Namespace) -> dict:
    """A finished fold scored again by the current evaluator (untrained and ``out/run/last``), not retrained."""
    test_records = load_records(out / "test.json", Path(args.data_dir))
    model, processor = load_checkpoint(out / "run" / "last", device="cpu")
    result = {**result, "untrained": evaluate_untrained(test_records, args),
              "trained": evaluate(model, processor, test_records, Path(args.data_dir))}
    (out / "learning_check.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def run_split(train_raw: list[dict], test_raw: list[dict], out: Path, args: argparse.Namespace) -> dict:
    """Evaluate untrained, train the recipe on ``train_raw``, evaluate ``out/run/last`` on ``test_raw``."""
    data_dir = Path(args.data_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_file, test_file = out / "train.json", out / "test.json"
    train_file.write_text(json.dumps(train_raw), encoding="utf-8")
    test_file.write_text(json.dumps(test_raw), encoding="utf-8")
    test_records = load_records(test_file, data_dir)
    print(f"{out.name}: {len(train_raw)} train, {len(test_raw)} held-out records", flush=True)

    before = evaluate_untrained(test_records, args)

    command = [sys.executable, str(ROOT / "train.py"), "--config", args.config, "--train_file", str(train_file),
               "--image_root", str(data_dir), "--output_dir", str(out / "run"), *shlex.split(args.train_args)]
    print("$", " ".join(shlex.quote(part) for part in command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    train_seconds = time.perf_counter() - start
    model, processor = load_checkpoint(out / "run" / "last", device="cpu")
    after = evaluate(model, processor, test_records, data_dir)
    result = {"train_seconds": train_seconds, "train_args": args.train_args, "config": args.config,
              "config_text": Path(args.config).read_text(encoding="utf-8"),
              "test_images": sorted({r["image"] for r in test_raw}), "untrained": before, "trained": after,
              "n_train": len(train_raw), "n_test": len(test_raw)}
    (out / "learning_check.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def reusable(out: Path, test_raw: list[dict], args: argparse.Namespace) -> dict | None:
    """The fold's earlier result if the same recipe text, train args and held-out images made it."""
    path = out / "learning_check.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text(encoding="utf-8"))
    same = (result.get("config_text") == Path(args.config).read_text(encoding="utf-8")
            and result.get("train_args") == args.train_args
            and result.get("test_images") == sorted({r["image"] for r in test_raw}))
    return result if same else None


def print_split(result: dict) -> None:
    before, after = result["untrained"], result["trained"]
    seconds = result["train_seconds"]
    print(f"\ntraining wall time: {seconds:.0f} s ({seconds / 60:.1f} min)")
    print(f"{'metric':<18} {'untrained':>10} {'trained':>10} {'untrained*':>11} {'trained*':>10}")
    for name in METRICS:
        row = [before["matched"], after["matched"], before["mismatched"], after["mismatched"]]
        print(f"{name:<18} " + " ".join(f"{r.get(name, float('nan')):>10.3f}" for r in row))
    print("* text-only control: each caption scored against a mismatched image")


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def summarize(results: list[dict]) -> dict:
    """Per-fold results → {state: {"matched"|"mismatched": {metric: {"mean", "std"}}}, "train_seconds": ...}."""
    summary: dict = {"train_seconds": mean_std([r["train_seconds"] for r in results])}
    for state in ("untrained", "trained"):
        summary[state] = {kind: {name: mean_std([r[state][kind][name] for r in results]) for name in METRICS}
                          for kind in ("matched", "mismatched")}
    return summary


def print_summary(summary: dict, folds: list[int]) -> None:
    seconds = summary["train_seconds"]
    print(f"\nfolds {folds}: training wall time {seconds['mean']:.0f} ± {seconds['std']:.0f} s per fold")
    print(f"{'metric':<16} {'untrained':>13} {'trained':>13} {'trained*':>13} {'gap':>7}")
    for name in METRICS:
        cells = [summary["untrained"]["matched"][name], summary["trained"]["matched"][name],
                 summary["trained"]["mismatched"][name]]
        gap = cells[1]["mean"] - cells[2]["mean"]
        print(f"{name:<16} " + " ".join(f"{c['mean']:>6.3f}±{c['std']:.3f}" for c in cells) + f" {gap:>+7.3f}")
    print("mean ± sample std over folds; * text-only control (mismatched image); gap = trained − trained*")


def run_folds(raw: list[dict], args: argparse.Namespace) -> None:
    out = Path(args.output_dir)
    folds = fold_split(raw, args.folds, args.seed)
    chosen = list(range(args.folds)) if not args.only_folds else [int(f) for f in args.only_folds.split(",")]
    if any(not 0 <= f < args.folds for f in chosen):
        raise ValueError(f"--only_folds {args.only_folds!r}: folds are numbered 0..{args.folds - 1}")
    results = []
    for f in chosen:
        held_out = set(folds[f])
        train_raw = [r for r in raw if r["image"] not in held_out]
        test_raw = [r for r in raw if r["image"] in held_out]
        earlier = reusable(out / f"fold{f}", test_raw, args)
        if earlier is not None:
            print(f"fold{f}: reusing {out / f'fold{f}' / 'learning_check.json'}")
            if args.reevaluate:
                earlier = reevaluate(out / f"fold{f}", earlier, args)
        results.append(earlier or run_split(train_raw, test_raw, out / f"fold{f}", args))
        print_split(results[-1])
    summary = summarize(results)
    print_summary(summary, chosen)
    report = {"folds": args.folds, "seed": args.seed, "chosen": chosen, "config": args.config,
              "config_text": Path(args.config).read_text(encoding="utf-8"), "train_args": args.train_args,
              "summary": summary, "per_fold": results}
    (out / "cross_validation.json").write_text(json.dumps(report, indent=2), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data" / "ucm"))
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny_ucm.yaml"))
    parser.add_argument("--output_dir", default=str(ROOT / "runs" / "learning_check"))
    parser.add_argument("--train_args", default="", help="extra train.py flags, e.g. '--loss infonce'")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image split (or of the folds)")
    parser.add_argument("--folds", type=int, default=0, help="K-fold cross-validation by image (K ≥ 2)")
    parser.add_argument("--only_folds", default="", help="with --folds: run only these folds, e.g. '0,1'")
    parser.add_argument("--reevaluate", action="store_true",
                        help="with --folds: score reused folds' checkpoints again with the current evaluator")
    args = parser.parse_args()
    raw = json.loads((Path(args.data_dir) / "triplets_train.json").read_text(encoding="utf-8"))
    if args.folds:
        run_folds(raw, args)
        return
    train_raw, test_raw = split_by_image(raw, 0.8, args.seed)
    print(f"split by image (seed {args.seed})")
    print_split(run_split(train_raw, test_raw, Path(args.output_dir), args))


if __name__ == "__main__":
    main()
