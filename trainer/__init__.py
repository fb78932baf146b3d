"""Retraining the scorer on caption triplets: losses, data, the loop, evaluation.

Public API::

    from trainer import TrainConfig, train
    checkpoint_dir, metrics = train(TrainConfig(train_file="triplets.json", image_root="data"),
                                    on_progress=print, stop_event=threading.Event())

Command line: ``python train.py --config configs/tiny_ucm.yaml ...`` (also under ``accelerate launch``),
``python -m trainer.evaluate --checkpoint DIR --data F --image_root D --output M.json``.
"""

from trainer.config import TrainConfig, parse_config
from trainer.loop import train
from trainer.records import DataValidationError, TripletRecord, TripletSource, ValidationReport, validate_records

__all__ = ["DataValidationError", "TrainConfig", "TripletRecord", "TripletSource", "ValidationReport",
           "parse_config", "train", "validate_records"]
