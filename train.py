"""``python train.py --config configs/tiny_ucm.yaml --train_file F --image_root D --output_dir O``

Also ``accelerate launch --config_file configs/accelerate/ddp.yaml train.py ...`` (or ``--multi_gpu
--num_processes N``) for DDP across GPUs or machines; DDP is the one distributed mode the trainer supports
and tests. Every TrainConfig field is a flag (``python train.py --help``).
"""

from __future__ import annotations

import json
import logging
import sys

from trainer import parse_config, train


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = parse_config(argv)
    checkpoint, metrics = train(config)
    print(f"checkpoint: {checkpoint}")
    print(json.dumps({k: v for k, v in metrics.items()}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
