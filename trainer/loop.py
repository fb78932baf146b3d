"""The training loop, top to bottom (nanoGPT style) on accelerate: one process, DDP across GPUs/machines.

    train(config, on_progress=None, stop_event=None) -> (checkpoint_dir, metrics)

One optimizer step = ``grad_accum`` micro-batches of ``batch_size`` triplets per process, bf16 autocast
on GPU over fp32 trainable weights, gradient clipping, AdamW with linear warmup + cosine decay. Under
DDP the contrastive losses see every process's micro-batch (``contrastive_gather``, trainer.distributed).
Checkpoints go to OUTPUT_DIR/last every ``save_every`` steps, at the end and on a stop; OUTPUT_DIR/best
holds the best by ``best_metric`` on the validation set — a copy of last when there is no validation set, or
when no evaluation has chosen one (a stop before the first evaluation). ``best_metric`` must be one of
``TripletEvaluator.metric_names`` (checked before any work).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from trainer.checkpoints import copy_checkpoint, load_trainer_state, rng_state, save_training_checkpoint, set_rng_state
from trainer.config import TrainConfig
from trainer.data import TripletCollator, TripletDataset, epoch_batches
from trainer.evaluate import TripletEvaluator
from trainer.losses import FocalTripletLoss, Objective, parse_loss_spec
from trainer.model_setup import (
    TextFeatureCache,
    TrainingModule,
    build_model,
    param_groups,
    set_trainable,
    text_tower_frozen,
    trainable_names,
)
from trainer.records import TripletRecord, load_records

logger = logging.getLogger(__name__)

ProgressFn = Callable[[dict], None]


def lr_factor(step: int, warmup: int, max_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate at ``step``: linear warmup, then cosine down to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_accelerator(config: TrainConfig):
    from accelerate import Accelerator

    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(mixed_precision=precision)


def micro_batches(dataset: TripletDataset, collator: TripletCollator, config: TrainConfig, accelerator,
                  start: int) -> Iterator:
    """Endless micro-batches from global micro-batch number ``start`` on (epochs follow each other)."""
    plan = partial(epoch_batches, len(dataset), config.batch_size, seed=config.seed,
                   num_processes=accelerator.num_processes, process_index=accelerator.process_index)
    epoch, offset = divmod(start, len(plan(epoch=0)))
    while True:
        # generator=: the loader must not draw from the global RNG, or a resumed run would diverge
        loader = DataLoader(dataset, batch_sampler=plan(epoch=epoch)[offset:], collate_fn=collator,
                            num_workers=config.num_workers, generator=torch.Generator())
        yield from loader
        epoch, offset = epoch + 1, 0


def agreed_usable(accelerator, usable: list[bool]) -> list[bool]:
    """A micro-batch is used only where it is usable on every process.

    DDP's gradient sync and the contrastive gather are collective: a rank that skipped a micro-batch
    (all its images unreadable) while the others ran it would leave them waiting forever.
    """
    if accelerator.num_processes == 1:
        return usable
    votes = accelerator.reduce(torch.tensor([float(u) for u in usable], device=accelerator.device), "sum")
    return [int(v) == accelerator.num_processes for v in votes.tolist()]


def train_step(module, objective: Objective, batches: Iterator, optimizer, scheduler, accelerator,
               config: TrainConfig, text_cache: TextFeatureCache | None) -> dict[str, float]:
    """One optimizer step over ``grad_accum`` micro-batches → averaged loss parts (and grad norm)."""
    totals: dict[str, float] = defaultdict(float)
    model = accelerator.unwrap_model(module).model
    micro_batches = [next(batches) for _ in range(config.grad_accum)]  # None: every image was unreadable
    usable = agreed_usable(accelerator, [batch is not None for batch in micro_batches])
    last = max((i for i, ok in enumerate(usable) if ok), default=-1)  # gradients sync on this one
    for micro, batch in enumerate(micro_batches):
        totals["skipped_images"] += config.batch_size if batch is None else batch.skipped
        if not usable[micro]:
            totals["skipped_micro_batches"] += 1
            continue
        batch = batch.to(accelerator.device)
        hidden = text_cache(model, batch.texts, batch.input_ids, batch.attention_mask) if text_cache else None
        sync = accelerator.no_sync(module) if micro < last else nullcontext()
        with sync, accelerator.autocast():
            image_emb, text_emb, logit_scale, logit_bias = module(
                batch.pixel_values, batch.image_grid_thw, batch.input_ids, batch.attention_mask, hidden)
            parts = objective(image_emb, text_emb, batch, logit_scale, logit_bias)
            accelerator.backward(parts["loss"] / config.grad_accum)
        for name, value in parts.items():
            totals[name] += float(value.detach()) / config.grad_accum
    totals["grad_norm"] = float(accelerator.clip_grad_norm_(module.parameters(), config.max_grad_norm))
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return dict(totals)


class RunLog:
    """TensorBoard + metrics.jsonl + tqdm, on the main process only."""

    def __init__(self, out: Path, enabled: bool, start: int, total: int):
        self.enabled = enabled
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter
        from tqdm.auto import tqdm

        out.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(out / "tensorboard"))
        self.jsonl = (out / "metrics.jsonl").open("a", encoding="utf-8")
        self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)

    def log(self, split: str, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self.writer.add_scalar(f"{split}/{name}", value, step)
        self.jsonl.write(json.dumps({"split": split, "step": step, **values}) + "\n")
        self.jsonl.flush()
        if split == "train":
            self.bar.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}")

    def advance(self) -> None:
        if self.enabled:
            self.bar.update(1)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.writer.close()
            self.jsonl.close()


def train(config: TrainConfig, on_progress: ProgressFn | None = None, stop_event=None) -> tuple[Path, dict]:
    """Train as ``config`` says; return (the best checkpoint directory, the final metrics).

    ``on_progress`` gets a dict after every step ({"step", "max_steps", "loss", "lr", <loss parts>}, and
    "val/<metric>" after an evaluation). Setting ``stop_event`` (threading or multiprocessing Event)
    stops after the current step with a checkpoint; earlier checkpoints are never half-overwritten.
    The returned ``best`` always exists: when no evaluation chose one, it is a copy of ``last``.
    """
    from accelerate.utils import set_seed

    _check_config(config)
    accelerator = make_accelerator(config)
    set_seed(config.seed)
    out = Path(config.output_dir)
    resume_from = _resume_dir(config, out)
    records, evaluator = _load_data(config)
    model, processor = build_model(config, accelerator.device, resume_from)
    objective = _objective(config, accelerator.num_processes)
    dataset = TripletDataset(records, config.image_root, processor, config.seed, config.augment, config.cache_images)
    collator = TripletCollator(processor, with_negatives=objective.uses_negatives)
    text_cache = _prepare_model(model, config, objective)
    steps_per_epoch, max_steps, warmup = _step_counts(config, len(dataset), accelerator.num_processes)
    optimizer, scheduler = _optimizer(model, config, warmup, max_steps)
    module, optimizer = accelerator.prepare(TrainingModule(model), optimizer)
    model.train()
    state = _resume(resume_from, model, optimizer, scheduler)
    _log_setup(len(records), max_steps, steps_per_epoch, model, text_cache, objective, accelerator.num_processes)

    run_log = RunLog(out, accelerator.is_main_process, state["step"], max_steps)
    batches = micro_batches(dataset, collator, config, accelerator, state["step"] * config.grad_accum)
    eval_every = config.eval_every or steps_per_epoch
    throughput = Throughput(config.batch_size * config.grad_accum * accelerator.num_processes)
    metrics: dict[str, float] = {}
    stopped = False
    while state["step"] < max_steps and not stopped:
        lr = scheduler.get_last_lr()[0]
        parts = train_step(module, objective, batches, optimizer, scheduler, accelerator, config, text_cache)
        state["step"] += 1
        step = state["step"]
        state["skipped_images"] += int(parts.pop("skipped_images"))
        throughput.step()
        metrics = {"step": step, "max_steps": max_steps, "lr": lr, "epoch": step / steps_per_epoch, **parts}
        if step % config.log_every == 0 or step == max_steps:
            metrics["triplets_per_s"] = throughput.rate()
            run_log.log("train", step, metrics)
        run_log.advance()
        evaluate_now = evaluator is not None and (step % eval_every == 0 or step == max_steps)
        if evaluate_now:
            metrics.update(_evaluate(evaluator, model, processor, config, accelerator, run_log, step))
        if on_progress is not None and accelerator.is_main_process:
            on_progress(dict(metrics))
        # a stop asked for during this step (or by on_progress) ends the run here, with a checkpoint
        stopped = stop_event is not None and stop_event.is_set() and step < max_steps
        if evaluate_now or step % config.save_every == 0 or step == max_steps or stopped:
            _checkpoint(out, model, processor, optimizer, scheduler, state, config, metrics, accelerator,
                        validated=evaluator is not None, score=metrics.get(f"val/{config.best_metric}"))
    run_log.close()
    _ensure_best(out, accelerator)
    metrics.update(skipped_images=state["skipped_images"], stopped=stopped)
    if state["skipped_images"]:
        logger.warning("%d training images could not be read and were skipped", state["skipped_images"])
    if accelerator.num_processes > 1:
        metrics["replicas_identical"] = _check_replicas(model, accelerator, out)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out / "best", metrics


# -- setup ------------------------------------------------------------------------------------------------
def _check_config(config: TrainConfig) -> None:
    """What only the loop can check, before any work: a training file, a ``best_metric`` the evaluator reports."""
    if not config.train_file:
        raise ValueError("train_file is required")
    if config.val_file and config.best_metric not in TripletEvaluator.metric_names:
        raise ValueError(f"best_metric {config.best_metric!r} is not a validation metric; "
                         f"choose one of {', '.join(TripletEvaluator.metric_names)}")


def _resume_dir(config: TrainConfig, out: Path) -> Path | None:
    """OUTPUT_DIR/last when resuming (it must exist), else None."""
    if not config.resume:
        return None
    resume_from = out / "last"
    if not resume_from.is_dir():
        raise FileNotFoundError(f"--resume: no checkpoint to resume from at {resume_from}")
    return resume_from


def _load_data(config: TrainConfig) -> tuple[list[TripletRecord], TripletEvaluator | None]:
    """→ (training records, the validation evaluator or None)."""
    records = load_records(config.train_file, config.image_root, config.on_invalid)
    if not config.val_file:
        return records, None
    val_root = config.val_image_root or config.image_root
    return records, TripletEvaluator(load_records(config.val_file, val_root, config.on_invalid), val_root, config.seed)


def _objective(config: TrainConfig, num_processes: int) -> Objective:
    return Objective(parse_loss_spec(config.loss, config.loss_weights),
                     FocalTripletLoss(config.focal_margin, config.focal_gamma, config.focal_term_weights),
                     config.contrastive_negatives, gather=config.contrastive_gather and num_processes > 1)


def _prepare_model(model, config: TrainConfig, objective: Objective) -> TextFeatureCache | None:
    """Choose the trainable parameters, gradient checkpointing → a text feature cache if the text tower is frozen."""
    set_trainable(model, config, objective.uses_logit_scale, objective.uses_logit_bias)
    if config.gradient_checkpointing:
        model.qwen.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return TextFeatureCache() if text_tower_frozen(model) else None


def _step_counts(config: TrainConfig, n_records: int, num_processes: int) -> tuple[int, int, int]:
    """→ (optimizer steps per epoch, max_steps, warmup steps)."""
    micro_per_epoch = len(epoch_batches(n_records, config.batch_size, 0, config.seed, num_processes))
    steps_per_epoch = max(1, micro_per_epoch // config.grad_accum)
    max_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    warmup = config.warmup_steps if config.warmup_steps is not None else int(config.warmup_ratio * max_steps)
    return steps_per_epoch, max_steps, max(0, warmup)


def _optimizer(model, config: TrainConfig, warmup: int, max_steps: int):
    """AdamW over the parameter groups, and its warmup + cosine schedule → (optimizer, scheduler)."""
    optimizer = torch.optim.AdamW(param_groups(model, config), betas=(0.9, 0.98), eps=1e-6)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, partial(lr_factor, warmup=warmup, max_steps=max_steps, min_ratio=config.min_lr_ratio))
    return optimizer, scheduler


def _resume(resume_from: Path | None, model, optimizer, scheduler) -> dict:
    """The loop's state ({"step", "best", "skipped_images"}); when resuming, read back with the optimizer,
    scheduler and RNG states from ``resume_from``."""
    state = {"step": 0, "best": None, "skipped_images": 0}
    if resume_from is None:
        return state
    saved = load_trainer_state(resume_from)
    if saved["trainable"] != trainable_names(model):
        raise ValueError(f"{resume_from}: the trainable parameters differ from this config's; "
                         f"resume with the config the run was started with")
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    state.update(step=saved["step"], best=saved["best"], skipped_images=saved["skipped_images"])
    logger.info("resumed from %s at step %d", resume_from, state["step"])
    return state


def _log_setup(n_records: int, max_steps: int, steps_per_epoch: int, model, text_cache: TextFeatureCache | None,
               objective: Objective, num_processes: int) -> None:
    logger.info("training %d records, %d steps (%d per epoch), %d trainable parameters, text features %s",
                n_records, max_steps, steps_per_epoch, sum(p.numel() for p in model.parameters() if p.requires_grad),
                "cached" if text_cache else "recomputed")
    if objective.gather:
        logger.info("contrastive losses over the global batch of %d processes", num_processes)


class Throughput:
    """Triplets per second over the steps since the last :meth:`rate`."""

    def __init__(self, triplets_per_step: int):
        self.triplets_per_step = triplets_per_step
        self.start, self.steps = time.perf_counter(), 0

    def step(self) -> None:
        self.steps += 1

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        rate = self.steps * self.triplets_per_step / max(elapsed, 1e-9)
        self.start, self.steps = time.perf_counter(), 0
        return rate


# -- during and after the loop ----------------------------------------------------------------------------
def _evaluate(evaluator: TripletEvaluator, model, processor, config: TrainConfig, accelerator, run_log: RunLog,
              step: int) -> dict[str, float]:
    """Validation on the main process (the others wait) → {"val/<metric>": value}."""
    values: dict[str, float] = {}
    if accelerator.is_main_process:
        with accelerator.autocast():
            values = evaluator(model, processor, config.eval_batch_size)
        model.train()
        run_log.log("val", step, values)
        logger.info("step %d validation: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    accelerator.wait_for_everyone()
    return {f"val/{name}": value for name, value in values.items()}


def _checkpoint(out: Path, model, processor, optimizer, scheduler, state: dict, config: TrainConfig,
                metrics: dict, accelerator, validated: bool, score: float | None) -> None:
    """Write OUTPUT_DIR/last; copy it to OUTPUT_DIR/best when ``score`` (this step's validation metric, None
    if not evaluated now) beats the best so far — or always, when there is no validation set."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        improved = not validated or (score is not None and (state["best"] is None or score > state["best"]))
        if validated and improved:
            state["best"] = score
        trainer_state = {"step": state["step"], "best": state["best"], "skipped_images": state["skipped_images"],
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "rng": rng_state(), "trainable": trainable_names(model)}
        last = save_training_checkpoint(out / "last", model, processor, trainer_state, config.to_dict(), metrics,
                                        save_backbone=config.train_backbone == "full")
        if improved:
            copy_checkpoint(last, out / "best")
    accelerator.wait_for_everyone()


def _ensure_best(out: Path, accelerator) -> None:
    """OUTPUT_DIR/best = a copy of last when no evaluation wrote it (a stop before the first evaluation, or a
    ``best_metric`` this validation data does not produce), so the directory train() returns always exists."""
    if accelerator.is_main_process and not (out / "best").is_dir():
        logger.warning("no validation result chose a best checkpoint: %s is a copy of %s", out / "best", out / "last")
        copy_checkpoint(out / "last", out / "best")
    accelerator.wait_for_everyone()


def _check_replicas(model, accelerator, out: Path) -> bool:
    """DDP sanity check: every process hashes its trainable weights; OUTPUT_DIR/replica_hashes.json lists them."""
    from accelerate.utils import gather_object

    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            digest.update(name.encode())
            digest.update(parameter.detach().float().cpu().numpy().tobytes())
    hashes = gather_object([digest.hexdigest()])
    identical = len(set(hashes)) == 1
    if accelerator.is_main_process:
        (out / "replica_hashes.json").write_text(json.dumps(hashes, indent=2), encoding="utf-8")
        if not identical:
            logger.error("the processes ended with different weights: %s", hashes)
    return identical
