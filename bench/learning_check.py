"""Learning check: does training on real data make the tiny random scorer better on unseen images?

    python bench/learning_check.py [--data_dir ../shared/data/ucm] [--config configs/tiny_ucm.yaml]
                                   [--output_dir runs/learning_check] [--train_args "--loss infonce"]

Splits ``triplets_train.json`` by image (80 % / 20 %, fixed seed), evaluates the untrained model
(``--model tiny`` with the recipe's pixel budget and seed) on the held-out 20 %, trains with exactly
``python train.py --config CONFIG --train_file F --image_root D --output_dir O`` (plus ``--train_args``),
evaluates ``O/last`` on the same images, and prints global/local/hard accuracy before and after, each
also with a mismatched image (the text-only control: what the captions alone give away).
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import subprocess
import sys
import time
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


def evaluate(model, processor, records, image_root: Path) -> dict[str, dict[str, float]]:
    return {"matched": TripletEvaluator(records, image_root, seed=0)(model, processor),
            "mismatched": TripletEvaluator(records, image_root, seed=0, mismatch_images=True)(model, processor)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data" / "ucm"))
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny_ucm.yaml"))
    parser.add_argument("--output_dir", default=str(ROOT / "runs" / "learning_check"))
    parser.add_argument("--train_args", default="", help="extra train.py flags, e.g. '--loss infonce'")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image split")
    args = parser.parse_args()
    data_dir, out = Path(args.data_dir), Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw = json.loads((data_dir / "triplets_train.json").read_text(encoding="utf-8"))
    train_raw, test_raw = split_by_image(raw, 0.8, args.seed)
    train_file, test_file = out / "train.json", out / "test.json"
    train_file.write_text(json.dumps(train_raw), encoding="utf-8")
    test_file.write_text(json.dumps(test_raw), encoding="utf-8")
    test_records = load_records(test_file, data_dir)
    print(f"split by image (seed {args.seed}): {len(train_raw)} train, {len(test_raw)} held-out records")

    recipe = TrainConfig.from_dict(load_yaml(args.config))
    model, processor = new_scorer("tiny", fresh_scorer_config(recipe), device="cpu", dtype="float32",
                                  seed=recipe.seed)
    before = evaluate(model, processor, test_records, data_dir)

    command = [sys.executable, str(ROOT / "train.py"), "--config", args.config, "--train_file", str(train_file),
               "--image_root", str(data_dir), "--output_dir", str(out / "run"), *shlex.split(args.train_args)]
    print("$", " ".join(shlex.quote(part) for part in command), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    train_seconds = time.perf_counter() - start
    model, processor = load_checkpoint(out / "run" / "last", device="cpu")
    after = evaluate(model, processor, test_records, data_dir)

    print(f"\ntraining wall time: {train_seconds:.0f} s ({train_seconds / 60:.1f} min)")
    print(f"{'metric':<18} {'untrained':>10} {'trained':>10} {'untrained*':>11} {'trained*':>10}")
    for name in METRICS:
        row = [before["matched"], after["matched"], before["mismatched"], after["mismatched"]]
        print(f"{name:<18} " + " ".join(f"{r.get(name, float('nan')):>10.3f}" for r in row))
    print("* text-only control: each caption scored against a mismatched image")
    result = {"train_seconds": train_seconds, "train_args": args.train_args, "config": args.config,
              "untrained": before, "trained": after, "n_train": len(train_raw), "n_test": len(test_raw)}
    (out / "learning_check.json").write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
