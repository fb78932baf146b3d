"""Dataset, batch plan and collator: triplet records → batches of distinct images and distinct captions.

A batch encodes each image once and each caption text once (identical captions of different images
are one column, so the contrastive losses never treat a caption as a negative of itself); the
triplets refer to rows of those two sets by index (:class:`TripletBatch`).

Everything random here — the order of an epoch, each record's "random other image caption", the
augmentation — is drawn from (seed, epoch, record), so a resumed run sees exactly the batches an
uninterrupted one would have seen.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from common.paths import resolve_inside
from scorer.images import ImageLoadError
from scorer.qwen2_5_vl.processing import DualEncoderProcessor
from trainer.attribute_negatives import attribute_negatives
from trainer.augment import (
    AUGMENT_DIRECTIONS,
    draw_transform,
    mentions_directions,
    random_resized_crop,
    rewrite_record,
)
from trainer.negatives import NEGATIVE_GROUPS, negative_groups, random_other_caption
from trainer.records import TripletRecord

logger = logging.getLogger(__name__)

Key = tuple[int, int]  # (epoch, record index)


def epoch_batches(n_records: int, batch_size: int, epoch: int, seed: int,
                  num_processes: int = 1, process_index: int = 0) -> list[list[Key]]:
    """This process's batches of one epoch: a seeded permutation cut into global batches of
    ``batch_size × num_processes`` (the last, incomplete one is dropped; a dataset smaller than one
    global batch is cycled), each process taking its own slice so every process runs the same number
    of steps."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_records, generator=generator).tolist()
    global_batch = batch_size * num_processes
    while len(order) < global_batch:
        order += order[: global_batch - len(order)]
    batches = []
    for start in range(0, len(order) - global_batch + 1, global_batch):
        mine = order[start + process_index * batch_size: start + (process_index + 1) * batch_size]
        batches.append([(epoch, index) for index in mine])
    return batches


def augment(image: Image.Image, record: TripletRecord, rng: random.Random,
            directions: str = "swap") -> tuple[Image.Image, TripletRecord]:
    """Remote-sensing tiles have no up: a random element of the dihedral group (flips, 90° turns).

    ``rng`` should be keyed by the image (not the record): records of one image in a batch share one
    encoded image, so they must share its transform.

    ``directions`` says what happens to captions that name a direction (left, top, north, ...):
    "swap" rewrites the positive and every negative as the image moved (``trainer.augment``), "skip"
    leaves such a record's image unturned, "ignore" turns the image and leaves the captions (then wrong).
    """
    if directions not in AUGMENT_DIRECTIONS:
        raise ValueError(f"augment_directions must be one of {AUGMENT_DIRECTIONS}, got {directions!r}")
    transform = draw_transform(rng)
    if directions == "skip" and mentions_directions(record):
        return image, record
    if directions == "swap":
        record = rewrite_record(record, transform)
    return transform.apply(image), record


class TripletDataset(Dataset):
    """Items keyed by (epoch, record index): the loaded image (or the error), captions by role.

    ``crop_scale`` < 1 (with ``augment_images``) adds random resized crops of at least that share of the
    area. ``attribute_negatives`` > 0 adds that many attribute-swapped positives per item
    (``trainer.attribute_negatives``), the "swapped" group of the batch.
    """

    def __init__(self, records: Sequence[TripletRecord], image_root: str | Path, processor: DualEncoderProcessor,
                 seed: int = 0, augment_images: bool = False, cache_images: bool = False,
                 augment_directions: str = "swap", attribute_negatives: int = 0, crop_scale: float = 1.0):
        self.records = list(records)
        self.image_root = Path(image_root)
        self.processor = processor
        self.seed = seed
        self.augment_images = augment_images
        self.augment_directions = augment_directions
        self.attribute_negatives = attribute_negatives
        self.crop_scale = crop_scale
        self.cache: dict[str, Image.Image] | None = {} if cache_images else None

    def __len__(self) -> int:
        return len(self.records)

    def load(self, relative: str) -> Image.Image:
        if self.cache is not None and relative in self.cache:
            return self.cache[relative]
        image = self.processor.load_images([resolve_inside(self.image_root, relative)])[0]
        if self.cache is not None:
            self.cache[relative] = image
        return image

    def __getitem__(self, key: Key) -> dict:
        epoch, index = key
        record = self.records[index]
        rng = random.Random(f"{self.seed}/{epoch}/{index}")
        item = {"index": index, "record": record, "random": random_other_caption(self.records, record, rng),
                "image": None}
        try:
            image = self.load(record.image)
        except (ImageLoadError, OSError) as err:
            item["error"] = f"record {index}: {err}"
            return item
        item["image"] = image
        if self.augment_images:
            per_image = random.Random(f"{self.seed}/{epoch}/{record.image}")
            item["image"], item["record"] = augment(image, record, per_image, self.augment_directions)
            crop_draws = random.Random(f"{self.seed}/{epoch}/{record.image}/crop")  # its own stream: turns unchanged
            item["image"] = random_resized_crop(item["image"], self.crop_scale, crop_draws)
        if self.attribute_negatives:
            # drawn from the positive as augmented, so a swapped caption never contradicts the turn
            item["swapped"] = attribute_negatives(item["record"].positive, self.attribute_negatives,
                                                  random.Random(f"{self.seed}/{epoch}/{index}/swap"))
        return item


@dataclass
class TripletBatch:
    """Distinct images and distinct captions of a batch, and the triplets as indices into them.

    ``image_index``/``positive_index`` (B,): each triplet's image row and positive caption row;
    ``negatives`` = {"random"|"hard"|"other": (caption rows (k,), triplet rows (k,))}, the groups of
    ``trainer.negatives``, and "swapped" when the dataset draws attribute negatives (training only).
    """

    pixel_values: torch.Tensor  # (n_patches, C·T·P·P)
    image_grid_thw: torch.Tensor  # (n_images, 3)
    input_ids: torch.Tensor  # (n_texts, seq)
    attention_mask: torch.Tensor  # (n_texts, seq)
    texts: list[str]  # the distinct captions, in row order
    images: list[str]  # the distinct images' paths (relative to the image root), in row order
    image_index: torch.Tensor  # (B,)
    positive_index: torch.Tensor  # (B,)
    negatives: dict[str, tuple[torch.Tensor, torch.Tensor]]
    skipped: int = 0  # items dropped because their image could not be read

    def __len__(self) -> int:
        return len(self.image_index)

    def to(self, device: torch.device | str) -> TripletBatch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device)
        moved["negatives"] = {k: (a.to(device), b.to(device)) for k, (a, b) in self.negatives.items()}
        return TripletBatch(**moved)

    def positive_mask(self, n_images: int, n_texts: int) -> torch.Tensor:
        """(n_images, n_texts) bool: caption j is a positive of image i."""
        mask = torch.zeros(n_images, n_texts, dtype=torch.bool, device=self.image_index.device)
        mask[self.image_index, self.positive_index] = True
        return mask


class TripletCollator:
    """Items → :class:`TripletBatch`; items whose image failed to load are dropped with a warning.

    ``with_negatives=False`` leaves the negative captions out (a positives-only contrastive loss needs
    none, and every caption in the batch is run through the text tower).
    """

    def __init__(self, processor: DualEncoderProcessor, with_negatives: bool = True):
        self.processor = processor
        self.with_negatives = with_negatives

    def __call__(self, items: list[dict]) -> TripletBatch | None:
        good = [item for item in items if item["image"] is not None]
        for item in items:
            if item["image"] is None:
                logger.warning("skipping an unreadable image: %s", item.get("error"))
        if not good:
            return None
        images: dict[str, int] = {}
        texts: dict[str, int] = {}
        image_index, positive_index = [], []
        pairs: dict[str, tuple[list[int], list[int]]] = {group: ([], []) for group in NEGATIVE_GROUPS}
        pil_images = []
        for row, item in enumerate(good):
            record: TripletRecord = item["record"]
            if record.image not in images:
                images[record.image] = len(images)
                pil_images.append(item["image"])
            image_index.append(images[record.image])
            positive_index.append(texts.setdefault(record.positive, len(texts)))
            groups = negative_groups(record, item["random"]) if self.with_negatives else {}
            if self.with_negatives and item.get("swapped"):
                groups["swapped"] = item["swapped"]
            for group, captions in groups.items():
                caption_rows, owners = pairs.setdefault(group, ([], []))
                for caption in captions:
                    caption_rows.append(texts.setdefault(caption, len(texts)))
                    owners.append(row)
        pixels = self.processor.pixels(pil_images)
        tokens = self.processor.texts(list(texts))
        return TripletBatch(
            pixel_values=pixels["pixel_values"], image_grid_thw=pixels["image_grid_thw"],
            input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], texts=list(texts),
            images=list(images),
            image_index=torch.tensor(image_index), positive_index=torch.tensor(positive_index),
            negatives={group: (torch.tensor(index, dtype=torch.long), torch.tensor(owner, dtype=torch.long))
                       for group, (index, owner) in pairs.items()},
            skipped=len(items) - len(good),
        )
