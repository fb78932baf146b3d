"""``python -m scorer.write_tiny_checkpoint OUT_DIR``: an untrained scorer checkpoint on the tiny offline backbone.

The backbone lands in ``OUT_DIR/backbone`` (full weights, tokenizer, processor), loadable with the
same ``from_pretrained`` calls as ``Qwen/Qwen2.5-VL-3B-Instruct``.
"""

from __future__ import annotations

import argparse
import time

from scorer.checkpoint import new_scorer, save_checkpoint
from scorer.qwen2_5_vl.tiny import tiny_scorer_config

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="directory to write the checkpoint to (replaced atomically)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the projection heads")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model, processor = new_scorer("tiny", tiny_scorer_config(), device="cpu", dtype="float32", seed=args.seed)
    out = save_checkpoint(model, processor, args.out_dir, save_backbone=True)
    print(f"wrote tiny scorer checkpoint to {out} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
