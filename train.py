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

BAD_INPUT_EXIT = 2


def main(argv: list[str] | None = None) -> None:
    """Train; bad input (a missing or malformed file, a wrong option) is one line ``train.py: ...`` on
    stderr and exit status 2 (the log keeps the traceback at debug level)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = parse_config(argv)
        checkpoint, metrics = train(config)
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:
        logging.getLogger("train").debug("bad input", exc_info=True)
        message = " ".join(str(error).split())  # one line
        print(f"train.py: {message}", file=sys.stderr)
        raise SystemExit(BAD_INPUT_EXIT) from None
    print(f"checkpoint: {checkpoint}")
    print(json.dumps({k: v for k, v in metrics.items()}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
