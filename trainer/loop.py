"""The training loop, top to bottom (nanoGPT style) on accelerate: one process, DDP across GPUs/machines.

    train(config, on_progress=None, stop_event=None) -> (checkpoint_dir, metrics)

One optimizer step = ``grad_accum`` micro-batches of ``batch_size`` triplets per process, bf16 autocast
on GPU over fp32 trainable weights (``backward`` outside the autocast block), gradient clipping, AdamW,
then the learned temperature clamped on the parameter to [0, ln 100] (open_clip), then transformers'
linear warmup + cosine decay to ``lr × min_lr_ratio``. Under DDP the contrastive losses see every
process's micro-batch (``contrastive_gather``, trainer.distributed).

The loss parts stay on the device, summed over the steps since the last log; they are read to the CPU
once per ``log_every`` steps and logged as their mean (TensorBoard through accelerate's tracker, and
OUTPUT_DIR/metrics.jsonl: one ``{"split": "train"|"val", "step": N, <metric>: value}`` object a line).
Checkpoints go to OUTPUT_DIR/last every ``save_every`` steps, after each evaluation, at the end and on a
stop; OUTPUT_DIR/best holds the best by ``best_metric`` on the validation set (evaluated on the main
process) — a copy of last when there is no validation set, or when no evaluation has chosen one (a stop
before the first evaluation). ``best_metric`` must be one of ``TripletEvaluator.metric_names`` (checked
before any work).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from trainer.checkpoints import copy_checkpoint, load_trainer_state, rng_state, save_training_checkpoint, set_rng_state
from trainer.config import TrainConfig
from trainer.data import TripletCollator, TripletDataset, epoch_batches
from trainer.evaluate import TripletEvaluator
from trainer.losses import DEFAULT_TERM_WEIGHTS, FocalTripletLoss, Objective, parse_loss_spec
from trainer.losses.contrastive import MAX_LOGIT_SCALE
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
from trainer.tracking import RunningLoss, Throughput, hparams, log_metrics

logger = logging.getLogger(__name__)

ProgressFn = Callable[[dict], None]


@dataclass
class LoopState:
    """What the loop carries from step to step; saved in trainer_state.pt and read back on resume."""

    step: int = 0
    best: float | None = None  # the best validation ``best_metric`` so far
    skipped_images: int = 0
    stopped: bool = False

    def improves(self, score: float | None) -> bool:
        """Whether ``score`` (None: not evaluated at this step) beats the best so far."""
        return score is not None and (self.best is None or score > self.best)


def make_accelerator(config: TrainConfig):
    from accelerate import Accelerator

    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return Accelerator(mixed_precision=precision, log_with="tensorboard", project_dir=config.output_dir)


def make_scheduler(optimizer, warmup: int, max_steps: int, min_lr_ratio: float):
    """transformers' linear warmup (0 → lr over ``warmup`` steps) then cosine decay to ``lr × min_lr_ratio``."""
    from transformers import get_cosine_with_min_lr_schedule_with_warmup

    return get_cosine_with_min_lr_schedule_with_warmup(optimizer, warmup, max_steps, min_lr_rate=min_lr_ratio)


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


def forward_backward(module, objective: Objective, micro_batches: list, accelerator, config: TrainConfig,
                     text_cache: TextFeatureCache | None) -> tuple[dict[str, torch.Tensor], int]:
    """Gradients of ``grad_accum`` micro-batches (None: every image unreadable) → (loss parts averaged
    over them, on the device; images skipped)."""
    model = accelerator.unwrap_model(module).model
    usable = agreed_usable(accelerator, [batch is not None for batch in micro_batches])
    last = max((i for i, ok in enumerate(usable) if ok), default=-1)  # gradients sync on this one
    totals: dict[str, torch.Tensor] = {}
    skipped_images, skipped_micro = 0, 0
    for micro, batch in enumerate(micro_batches):
        skipped_images += config.batch_size if batch is None else batch.skipped
        if not usable[micro]:
            skipped_micro += 1
            continue
        batch = batch.to(accelerator.device)
        hidden = text_cache(model, batch.texts, batch.input_ids, batch.attention_mask) if text_cache else None
        with accelerator.no_sync(module) if micro < last else nullcontext():
            with accelerator.autocast():
                image_emb, text_emb, logit_scale, logit_bias = module(
                    batch.pixel_values, batch.image_grid_thw, batch.input_ids, batch.attention_mask, hidden)
                parts = objective(image_emb, text_emb, batch, logit_scale, logit_bias)
            accelerator.backward(parts["loss"] / config.grad_accum)
        for name, value in parts.items():
            totals[name] = totals.get(name, 0) + value.detach().float() / config.grad_accum
    totals["skipped_micro_batches"] = torch.tensor(float(skipped_micro), device=accelerator.device)
    return totals, skipped_images


def optimizer_step(module, model, optimizer, scheduler, accelerator, max_grad_norm: float) -> torch.Tensor:
    """Clip, step, clamp the temperature, advance the schedule → the gradient norm before clipping."""
    grad_norm = accelerator.clip_grad_norm_(module.parameters(), max_grad_norm)
    optimizer.step()
    clamp_temperature(model)
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm


@torch.no_grad()
def clamp_temperature(model) -> None:
    """open_clip: ``logit_scale`` clamped in place after the step, never inside the loss (where the clamp
    would zero its gradient and a temperature that reached the cap could never come down again)."""
    model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)


def train(config: TrainConfig, on_progress: ProgressFn | None = None, stop_event=None) -> tuple[Path, dict]:
    """Train as ``config`` says; return (the best checkpoint directory, the final metrics).

    ``on_progress`` gets a dict after every step: {"step", "max_steps", "lr", "epoch"}, plus the loss
    parts ("loss", "<name>_loss", "grad_norm", ...: means since the last log) on a log step, and
    "val/<metric>" after an evaluation. Setting ``stop_event`` (threading or multiprocessing Event)
    stops after the current step with a checkpoint; earlier checkpoints are never half-overwritten.
    The returned ``best`` always exists: when no evaluation chose one, it is a copy of ``last``.
    The returned metrics hold the latest value of each.
    """
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    _check_config(config)
    accelerator = make_accelerator(config)
    set_seed(config.seed)
    out = Path(config.output_dir)
    resume_from = _resume_dir(config, out)
    records, evaluator = _load_data(config)
    model, processor = build_model(config, accelerator.device, resume_from)
    objective = _objective(config, accelerator.num_processes)
    dataset = TripletDataset(records, config.image_root, processor, config.seed, config.augment, config.cache_images,
                             config.augment_directions, config.attribute_negatives, config.augment_crop_scale)
    collator = TripletCollator(processor, with_negatives=objective.uses_negatives)
    text_cache = _prepare_model(model, config, objective)
    steps_per_epoch, max_steps, warmup = _step_counts(config, len(dataset), accelerator.num_processes)
    optimizer = torch.optim.AdamW(param_groups(model, config), betas=(0.9, 0.98), eps=1e-6)
    scheduler = make_scheduler(optimizer, warmup, max_steps, config.min_lr_ratio)
    module, optimizer = accelerator.prepare(TrainingModule(model), optimizer)
    model.train()
    state = _resume(resume_from, model, optimizer, scheduler)
    _log_setup(len(records), max_steps, steps_per_epoch, model, text_cache, objective, accelerator.num_processes)
    accelerator.init_trackers("tensorboard", config=hparams(config))

    batches = micro_batches(dataset, collator, config, accelerator, state.step * config.grad_accum)
    eval_every = config.eval_every or steps_per_epoch
    running, throughput = RunningLoss(), Throughput(config.batch_size * config.grad_accum * accelerator.num_processes)
    bar = tqdm(total=max_steps, initial=state.step, desc="train", unit="step", dynamic_ncols=True,
               disable=not accelerator.is_main_process)
    metrics: dict[str, float] = {}
    if evaluator is not None and config.eval_at_start and state.step == 0:  # the model it starts from, same weights
        start = {"step": 0, "max_steps": max_steps, **_evaluate(evaluator, model, processor, config, accelerator,
                                                                out, 0)}
        if on_progress is not None and accelerator.is_main_process:
            on_progress(start)
    while state.step < max_steps and not state.stopped:
        lr = scheduler.get_last_lr()[0]
        parts, skipped = forward_backward(module, objective, [next(batches) for _ in range(config.grad_accum)],
                                          accelerator, config, text_cache)
        parts["grad_norm"] = optimizer_step(module, model, optimizer, scheduler, accelerator, config.max_grad_norm)
        running.add(parts)
        throughput.step()
        state.step += 1
        state.skipped_images += skipped
        step = state.step
        row = {"step": step, "max_steps": max_steps, "lr": lr, "epoch": step / steps_per_epoch}
        if step % config.log_every == 0 or step == max_steps:
            row.update(running.read(), triplets_per_s=throughput.rate())
            log_metrics(accelerator, out, "train", step, row)
            bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4f}", lr=f"{lr:.2e}")
        bar.update(1)
        evaluate_now = evaluator is not None and (step % eval_every == 0 or step == max_steps)
        if evaluate_now:
            row.update(_evaluate(evaluator, model, processor, config, accelerator, out, step))
        metrics.update(row)
        if on_progress is not None and accelerator.is_main_process:
            on_progress(dict(row))
        # a stop asked for during this step (or by on_progress) ends the run here, with a checkpoint
        state.stopped = stop_event is not None and stop_event.is_set() and step < max_steps
        if evaluate_now or step % config.save_every == 0 or step == max_steps or state.stopped:
            score = row.get(f"val/{config.best_metric}")
            new_best = evaluator is None or state.improves(score)
            if evaluator is not None and new_best:
                state.best = score
            _save(out, model, processor, optimizer, scheduler, state, config, metrics, accelerator, new_best)
    bar.close()
    _ensure_best(out, accelerator)
    metrics.update(skipped_images=state.skipped_images, stopped=state.stopped)
    if state.skipped_images:
        logger.warning("%d training images could not be read and were skipped", state.skipped_images)
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
    # the attribute negatives are edits of the positive, as the hard negative is: its weight unless set
    term_weights = {"swapped": config.focal_term_weights.get("hard", DEFAULT_TERM_WEIGHTS["hard"]),
                    **config.focal_term_weights}
    return Objective(parse_loss_spec(config.loss, config.loss_weights),
                     FocalTripletLoss(config.focal_margin, config.focal_gamma, term_weights),
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


def _resume(resume_from: Path | None, model, optimizer, scheduler) -> LoopState:
    """A fresh state; when resuming, the saved one, with the optimizer, scheduler and RNG states."""
    if resume_from is None:
        return LoopState()
    saved = load_trainer_state(resume_from)
    if saved["trainable"] != trainable_names(model):
        raise ValueError(f"{resume_from}: the trainable parameters differ from this config's; "
                         f"resume with the config the run was started with")
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    set_rng_state(saved["rng"])
    state = LoopState(step=saved["step"], best=saved["best"], skipped_images=saved["skipped_images"])
    logger.info("resumed from %s at step %d", resume_from, state.step)
    return state


def _log_setup(n_records: int, max_steps: int, steps_per_epoch: int, model, text_cache: TextFeatureCache | None,
               objective: Objective, num_processes: int) -> None:
    logger.info("training %d records, %d steps (%d per epoch), %d trainable parameters, text features %s",
                n_records, max_steps, steps_per_epoch, sum(p.numel() for p in model.parameters() if p.requires_grad),
                "cached" if text_cache else "recomputed")
    if objective.gather:
        logger.info("contrastive losses over the global batch of %d processes", num_processes)


# -- during and after the loop ----------------------------------------------------------------------------
def _evaluate(evaluator: TripletEvaluator, model, processor, config: TrainConfig, accelerator, out: Path,
              step: int) -> dict[str, float]:
    """Validation on the main process (the others wait) → {"val/<metric>": value}."""
    values: dict[str, float] = {}
    if accelerator.is_main_process:
        with accelerator.autocast():
            values = evaluator(model, processor, config.eval_batch_size)
        model.train()
        log_metrics(accelerator, out, "val", step, values)
        logger.info("step %d validation: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
    accelerator.wait_for_everyone()
    return {f"val/{name}": value for name, value in values.items()}


def _save(out: Path, model, processor, optimizer, scheduler, state: LoopState, config: TrainConfig,
          metrics: dict, accelerator, copy_to_best: bool) -> None:
    """Write OUTPUT_DIR/last (on the main process); copy it to OUTPUT_DIR/best when ``copy_to_best``."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        trainer_state = {"step": state.step, "best": state.best, "skipped_images": state.skipped_images,
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "rng": rng_state(), "trainable": trainable_names(model)}
        last = save_training_checkpoint(out / "last", model, processor, trainer_state, config.to_dict(), metrics,
                                        save_backbone=config.train_backbone == "full")
        if copy_to_best:
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
