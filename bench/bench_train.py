"""Training throughput and peak memory: triplets/s per setting, ratio vs the first (baseline) setting.

    python bench/bench_train.py [--data_dir ../shared/data/ucm] [--steps 6] [--model tiny]

Each setting runs in its own process (peak memory is per process): ``train()`` for ``--steps`` steps on
the first 64 UC Merced triplets; the first step (warm-up, image decoding) is left out of the rate.
Peak memory: max RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [  # the first is the baseline
    {"batch_size": 8, "gradient_checkpointing": False},
    {"batch_size": 8, "gradient_checkpointing": True},
    {"batch_size": 32, "gradient_checkpointing": False},
    {"batch_size": 32, "gradient_checkpointing": True},
]


def run_one(setting: dict, data_dir: Path, steps: int, model: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    from trainer import TrainConfig, train

    raw = json.loads((data_dir / "triplets_train.json").read_text(encoding="utf-8"))[:64]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "t.json").write_text(json.dumps(raw))
        stamps: list[float] = []
        config = TrainConfig(model=model, train_backbone="full" if model == "tiny" else "lora",
                             max_pixels=50176, max_text_tokens=96, loss="infonce+focal_triplet",
                             train_file=str(Path(tmp) / "t.json"), image_root=str(data_dir),
                             output_dir=str(Path(tmp) / "out"), max_steps=steps, save_every=10_000,
                             log_every=10_000, cache_images=True, **setting)
        train(config, on_progress=lambda _: stamps.append(time.perf_counter()))
    seconds = stamps[-1] - stamps[0]  # steps 2..N
    if torch.cuda.is_available():
        peak = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB
    return {**setting, "triplets_per_s": (steps - 1) * setting["batch_size"] / seconds, "peak_gib": peak,
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=str(ROOT.parent / "shared" / "data" / "ucm"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one setting, print JSON
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(json.loads(args.one), Path(args.data_dir), args.steps, args.model)))
        return
    results = []
    for setting in SETTINGS:
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(setting), "--data_dir", args.data_dir,
                              "--steps", str(args.steps), "--model", args.model],
                             capture_output=True, text=True, check=True).stdout
        results.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
    base = results[0]["triplets_per_s"]
    print(f"{'batch':>5} {'grad ckpt':>9} {'triplets/s':>11} {'vs base':>8} {'peak GiB':>9}  device")
    for r in results:
        print(f"{r['batch_size']:>5} {str(r['gradient_checkpointing']):>9} {r['triplets_per_s']:>11.2f} "
              f"{r['triplets_per_s'] / base:>7.2f}x {r['peak_gib']:>9.2f}  {r['device']}")


if __name__ == "__main__":
    main()
