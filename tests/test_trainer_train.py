"""Training end to end with the tiny backbone on the repository's demo triplets (assets/demo, so a fresh
clone runs them): learns, saves, resumes, DDP, LoRA, heads only with cached text features, accumulation."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from scorer import load_checkpoint
from trainer import TrainConfig, parse_config, train
from trainer.checkpoints import load_trainer_state

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"
FAST = dict(model="tiny", train_backbone="full", freeze_token_embeddings=True, max_pixels=12544,
            max_text_tokens=32, batch_size=4, log_every=1, save_every=1000, seed=0)


@pytest.fixture
def demo_root() -> Path:
    """The image root of the demo triplets."""
    return DEMO


@pytest.fixture
def demo_small(tmp_path) -> Path:
    """8 seed triplets of 8 demo images (each with hard, short and two other negatives)."""
    path = tmp_path / "train.json"
    path.write_text(json.dumps(json.loads((DEMO / "triplets.json").read_text())[:8]))
    return path


def test_a_few_steps_lower_the_loss_and_write_a_loadable_checkpoint(demo_small, demo_root, tmp_path):
    losses: list[float] = []
    config = TrainConfig(**dict(FAST, batch_size=8), train_file=str(demo_small), image_root=str(demo_root),
                         output_dir=str(tmp_path / "run"), max_steps=6, lr=1e-3, warmup_steps=0,
                         loss="infonce+focal_triplet")
    checkpoint, metrics = train(config, on_progress=lambda m: losses.append(m["loss"]))
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert metrics["step"] == 6 and "focal_hard_loss" in metrics and "infonce_i2t_loss" in metrics
    assert checkpoint == tmp_path / "run" / "best" and checkpoint.is_dir()
    model, processor = load_checkpoint(tmp_path / "run" / "last")
    with torch.no_grad():
        text = model.encode_texts(**processor.texts(["a field"]))
    assert text.shape == (1, 128)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert list((tmp_path / "run" / "tensorboard").iterdir())


def test_stop_then_resume_ends_like_an_uninterrupted_run(demo_small, demo_root, tmp_path):
    common = dict(FAST, train_file=str(demo_small), image_root=str(demo_root), max_steps=3, lr=1e-3,
                  loss="infonce+focal_triplet")
    train(TrainConfig(**common, output_dir=str(tmp_path / "straight")))

    stop = threading.Event()
    _, first = train(TrainConfig(**common, output_dir=str(tmp_path / "stopped")),
                     on_progress=lambda m: stop.set() if m["step"] == 1 else None, stop_event=stop)
    assert first["stopped"] and first["step"] == 1
    assert load_trainer_state(tmp_path / "stopped" / "last")["step"] == 1
    _, resumed = train(TrainConfig(**common, output_dir=str(tmp_path / "stopped"), resume=True))
    assert resumed["step"] == 3 and not resumed["stopped"]

    a, b = (load_trainer_state(tmp_path / name / "last") for name in ("straight", "stopped"))
    assert a["step"] == b["step"] == 3
    assert a["scheduler"] == b["scheduler"]
    state_a, state_b = a["optimizer"]["state"], b["optimizer"]["state"]
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(state_a[key][name], state_b[key][name], rtol=0, atol=1e-6)
    heads_a = load_checkpoint(tmp_path / "straight" / "last")[0].heads_state_dict()
    heads_b = load_checkpoint(tmp_path / "stopped" / "last")[0].heads_state_dict()
    for key in heads_a:
        torch.testing.assert_close(heads_a[key], heads_b[key], rtol=0, atol=1e-6)


def test_a_stop_before_the_first_evaluation_still_returns_a_best_checkpoint(demo_small, demo_root, tmp_path):
    stop = threading.Event()
    stop.set()  # stop after the first step; the first evaluation would come at step 5
    checkpoint, metrics = train(TrainConfig(**FAST, train_file=str(demo_small), val_file=str(demo_small),
                                            image_root=str(demo_root), output_dir=str(tmp_path / "run"),
                                            max_steps=5, eval_every=5), stop_event=stop)
    assert metrics["stopped"] and metrics["step"] == 1 and not any(k.startswith("val/") for k in metrics)
    assert checkpoint == tmp_path / "run" / "best" and load_trainer_state(tmp_path / "run" / "last")["step"] == 1
    assert not (checkpoint / "trainer_state.pt").exists()  # the optimizer state lives in last only
    heads_best, heads_last = checkpoint / "heads.safetensors", tmp_path / "run" / "last" / "heads.safetensors"
    assert heads_best.stat().st_ino == heads_last.stat().st_ino  # best links last's files: no second copy
    load_checkpoint(checkpoint)


def test_a_best_metric_the_evaluator_does_not_report_is_refused_before_training(demo_small, demo_root, tmp_path):
    config = TrainConfig(**FAST, train_file=str(demo_small), val_file=str(demo_small), image_root=str(demo_root),
                         output_dir=str(tmp_path / "run"), max_steps=1, best_metric="mean_acuracy")
    with pytest.raises(ValueError, match=r"'mean_acuracy'.*mean_accuracy, global_accuracy"):
        train(config)
    assert not (tmp_path / "run").exists()


def test_yaml_recipe_and_command_line_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: tiny\nlr: 0.01\nloss: infonce\nloss_weights: {infonce: 2.0}\n")
    config = parse_config(["--config", str(recipe), "--lr", "0.5", "--max_steps", "3", "--augment",
                           "--focal_term_weights", "random=1,hard=1,other=0"])
    assert (config.lr, config.max_steps, config.augment, config.loss_weights) == (0.5, 3, True, {"infonce": 2.0})
    assert config.focal_term_weights == {"random": 1.0, "hard": 1.0, "other": 0.0}
    recipe.write_text("learning_rate: 0.1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        parse_config(["--config", str(recipe)])


@pytest.mark.slow
def test_accelerate_two_processes_end_with_identical_weights(demo_small, demo_root, tmp_path):
    """DDP (gloo) on CPU. accelerate 1.15 runs ``--cpu --num_processes 2`` as ONE process unless mpirun is
    set up, so the two local CPU processes are launched through its torchrun path with ACCELERATE_USE_CPU."""
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(ROOT / "train.py"), "--model", "tiny", "--train_backbone", "full", "--freeze_token_embeddings",
               "--max_pixels", "12544", "--max_text_tokens", "32", "--batch_size", "2", "--max_steps", "2",
               "--train_file", str(demo_small), "--image_root", str(demo_root), "--output_dir", str(out)]
    env = dict(os.environ, ACCELERATE_USE_CPU="1", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    hashes = json.loads((out / "replica_hashes.json").read_text())
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    assert load_trainer_state(out / "last")["step"] == 2
    assert "2 steps (2 per epoch)" in result.stderr  # 8 records / (2 per process × 2 processes)
    assert "contrastive losses over the global batch of 2 processes" in result.stderr


def test_ranks_skip_a_micro_batch_together_when_one_rank_cannot_read_it():
    import torch

    from trainer.loop import agreed_usable

    class TwoRanks:
        """Rank 0 of two; the other rank's votes are fixed."""

        num_processes = 2
        device = torch.device("cpu")

        def __init__(self, other: list[bool]):
            self.other = torch.tensor([float(v) for v in other])

        def reduce(self, tensor, reduction):
            assert reduction == "sum"
            return tensor + self.other

    assert agreed_usable(TwoRanks([True, False, True]), [True, True, False]) == [True, False, False]
    single = type("One", (), {"num_processes": 1})()
    assert agreed_usable(single, [True, False]) == [True, False]


@pytest.mark.slow
def test_lora_with_the_3b_recipe_on_the_tiny_backbone(demo_small, demo_root, tmp_path):
    """configs/ucm_3b_lora.yaml as it is (LoRA r16 on both towers, grad_accum 2, gradient checkpointing,
    augmentation), only the backbone, image size and run length made tiny."""
    from trainer.config import load_yaml

    recipe = load_yaml(ROOT / "configs" / "ucm_3b_lora.yaml")
    config = TrainConfig.from_dict(dict(recipe, model="tiny", max_pixels=12544, max_text_tokens=32, batch_size=4,
                                        max_steps=2, train_file=str(demo_small), image_root=str(demo_root),
                                        output_dir=str(tmp_path / "run")))
    assert (config.train_backbone, config.grad_accum, config.gradient_checkpointing) == ("lora", 2, True)
    _, metrics = train(config)
    assert metrics["step"] == 2 and math.isfinite(metrics["loss"])
    trainable = load_trainer_state(tmp_path / "run" / "last")["trainable"]
    backbone = [name for name in trainable if name.startswith("backbone.")]
    assert backbone and all("lora_" in name for name in backbone)
    assert any(".visual." in name for name in backbone) and any("language_model" in name for name in backbone)
    model, _ = load_checkpoint(tmp_path / "run" / "last")
    assert model.has_lora
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # peft starts B at zero: it was trained


def _initial(config: TrainConfig):
    """The model train() starts from (seeded), before any step."""
    from trainer.model_setup import build_model

    return build_model(config, torch.device("cpu"))[0]


def _heads_after(config: TrainConfig) -> dict[str, torch.Tensor]:
    train(config)
    return load_checkpoint(Path(config.output_dir) / "last")[0].heads_state_dict()


@pytest.mark.slow
def test_heads_only_with_cached_text_features_trains_as_recomputing_them(demo_small, demo_root, tmp_path,
                                                                         monkeypatch, caplog):
    common = dict(FAST, train_backbone="none", train_file=str(demo_small), image_root=str(demo_root), max_steps=2,
                  lr=1e-3, warmup_steps=0)
    with caplog.at_level("INFO", logger="trainer.loop"):
        cached = _heads_after(TrainConfig(**common, output_dir=str(tmp_path / "cached")))
    assert "text features cached" in caplog.text
    import trainer.loop

    monkeypatch.setattr(trainer.loop, "text_tower_frozen", lambda model: False)  # run the frozen text tower
    caplog.clear()
    with caplog.at_level("INFO", logger="trainer.loop"):
        recomputed = _heads_after(TrainConfig(**common, output_dir=str(tmp_path / "recomputed")))
    assert "text features recomputed" in caplog.text
    initial = _initial(TrainConfig(**common)).heads_state_dict()
    assert any(not torch.equal(cached[key], initial[key]) for key in cached)  # the heads were trained
    for key in cached:
        torch.testing.assert_close(cached[key], recomputed[key], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_two_accumulated_micro_batches_equal_one_batch_twice_the_size(demo_small, demo_root, tmp_path, monkeypatch):
    """The focal triplet loss is a mean over triplets, so 2 × 4 accumulated = 8 at once (the contrastive
    losses are not: their in-batch negatives depend on the micro-batch, as in open_clip). The heads'
    dropout is off: its masks would differ between the two layouts."""
    import trainer.model_setup

    fresh = trainer.model_setup.fresh_scorer_config

    def without_dropout(config):
        scorer_config = fresh(config)
        scorer_config.head_dropout = 0.0
        return scorer_config

    monkeypatch.setattr(trainer.model_setup, "fresh_scorer_config", without_dropout)
    common = dict(FAST, train_file=str(demo_small), image_root=str(demo_root), max_steps=1, lr=1e-3, warmup_steps=0,
                  loss="focal_triplet")
    train(TrainConfig(**dict(common, batch_size=4), grad_accum=2, output_dir=str(tmp_path / "accumulated")))
    train(TrainConfig(**dict(common, batch_size=8), grad_accum=1, output_dir=str(tmp_path / "whole")))
    accumulated, whole = (dict(load_checkpoint(tmp_path / name / "last")[0].named_parameters())
                          for name in ("accumulated", "whole"))
    initial = dict(_initial(TrainConfig(**common)).named_parameters())
    assert accumulated.keys() == whole.keys()
    moved = [name for name in whole if not torch.equal(whole[name], initial[name])]
    assert len(moved) > 10  # one AdamW step moved the trained weights
    for name in whole:
        torch.testing.assert_close(accumulated[name], whole[name], rtol=1e-4, atol=1e-5, msg=name)


def test_frozen_vision_blocks_stay_fixed_while_the_merger_and_the_text_tower_train(demo_small, demo_root, tmp_path):
    config = TrainConfig(**FAST, freeze_vision_blocks=True, train_file=str(demo_small), image_root=str(demo_root),
                         output_dir=str(tmp_path / "run"), max_steps=2, lr=1e-3, warmup_steps=0)
    before = {name: value.clone() for name, value in _initial(config).state_dict().items()}
    train(config)
    after = load_checkpoint(tmp_path / "run" / "last")[0].state_dict()

    def changed(part: str) -> bool:
        names = [name for name in before if part in name]
        assert names, part
        return any(not torch.equal(before[name], after[name]) for name in names)

    assert not changed("visual.blocks.") and not changed("visual.patch_embed.")
    assert changed("visual.merger.") and changed("language_model.layers.")
