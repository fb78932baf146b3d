"""Caption generation throughput (captions/s) of the local backbone at several batch sizes.

    python bench/bench_generate.py                                   # tiny on CPU, batch 1 vs 8
    python bench/bench_generate.py --real-size ../shared/reference/qwen2.5-vl-3b-instruct \\
        --device cuda --batch-sizes 1 16 --images 32                 # real-size 3B, random weights

Every caption is forced to ``--max-new-tokens`` tokens (random weights stop at random), so batch
sizes are compared on the same work. The ratio is against the first batch size, in the same run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from real_size import random_real_size_scorer  # noqa: E402  (bench/, beside this script)

from scorer.generation import GenerationSettings, LocalQwenGenerator  # noqa: E402


def load_model(args: argparse.Namespace):
    from scorer import new_scorer
    from scorer.qwen2_5_vl.backbone import pick_device, pick_dtype
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    if args.real_size:
        return random_real_size_scorer(args.real_size, str(device), dtype)
    return new_scorer(args.model, device=str(device), dtype=dtype)


def time_generation(generator: LocalQwenGenerator, images: list[Image.Image], n: int) -> float:
    sync = torch.cuda.synchronize if generator.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    captions = generator.generate_captions(images, n=n, style="detailed")
    sync()
    elapsed = time.perf_counter() - start
    assert sum(map(len, captions)) == n * len(images), "fewer captions than asked for"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--real-size", help="a Qwen2.5-VL config folder: random weights of that size")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--images", type=int, default=8, help="images per measurement")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--n", type=int, default=1, help="captions per image")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    torch.set_grad_enabled(False)
    model, processor = load_model(args)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (args.image_size, args.image_size, 3), dtype=np.uint8))
              for _ in range(args.images)]
    device = next(model.parameters()).device
    print(f"model {model.config.backbone} on {device} ({next(model.qwen.parameters()).dtype}); "
          f"{args.images} images {args.image_size}px, n={args.n}, {args.max_new_tokens} new tokens each")
    results = {}
    for batch_size in args.batch_sizes:
        settings = GenerationSettings(max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens,
                                      batch_size=batch_size, seed=0)
        generator = LocalQwenGenerator(model, processor, settings)
        time_generation(generator, images[:batch_size], args.n)  # warm-up
        best = min(time_generation(generator, images, args.n) for _ in range(args.repeats))
        results[batch_size] = args.images * args.n / best
    base = results[args.batch_sizes[0]]
    print(f"{'batch':>6} {'captions/s':>11} {'tokens/s':>10} {'ratio':>7}")
    for batch_size, rate in results.items():
        print(f"{batch_size:>6} {rate:>11.2f} {rate * args.max_new_tokens:>10.1f} {rate / base:>6.2f}x")


if __name__ == "__main__":
    main()
