"""The curation loop without a browser: promotion, the LoRA default, the split, the import rules of the rooms."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from loop import AppliedPromotion, decide_promotion

ROOT = Path(__file__).resolve().parents[1]


def evaluation(new: float, active: float, metric: str = "mean_accuracy") -> dict:
    return {"primary_metric": metric, "new": {metric: new, "global_accuracy": 0.1},
            "active": {metric: active, "global_accuracy": 0.9}}


def test_a_strictly_better_primary_metric_is_promoted_and_recorded_with_both_numbers():
    decision = decide_promotion(evaluation(0.75, 0.625), auto=True, compared_with=3, current_active=3)
    assert decision.promote and decision.reason == "better"
    record = decision.record()
    assert record["auto_promoted"] is True and record["metric"] == "mean_accuracy"
    assert (record["new"], record["active"], record["compared_with"]) == (0.75, 0.625, 3)
    applied = AppliedPromotion(decision, promoted=True).record()
    assert applied == {**record, "promoted": True}  # what the run's metrics keep
    assert AppliedPromotion(decision, error="OSError: disk full").record()["error"] == "OSError: disk full"


def test_only_the_primary_metric_decides():
    metrics = {"primary_metric": "mean_recall", "new": {"mean_recall": 0.4, "mean_accuracy": 0.9},
               "active": {"mean_recall": 0.6, "mean_accuracy": 0.1}}
    decision = decide_promotion(metrics, auto=True, compared_with=1, current_active=1)
    assert not decision.promote and (decision.metric, decision.new, decision.active) == ("mean_recall", 0.4, 0.6)


@pytest.mark.parametrize(("new", "active", "auto", "current", "reason"), [
    (0.6, 0.6, True, 1, "not_better"),  # a tie keeps the active model
    (0.5, 0.6, True, 1, "not_better"),
    (0.9, 0.6, False, 1, "off"),
    (0.9, 0.6, True, 2, "active_changed"),  # someone promoted or rolled back during the run
    (float("nan"), 0.6, True, 1, "missing"),  # no held-out triplet could be evaluated
])
def test_no_promotion_unless_on_better_and_compared_with_the_active_model(new, active, auto, current, reason):
    decision = decide_promotion(evaluation(new, active), auto=auto, compared_with=1, current_active=current)
    assert not decision.promote and decision.reason == reason
    assert decision.record()["auto_promoted"] is False and AppliedPromotion(decision).record()["promoted"] is False


def test_an_evaluation_without_a_primary_metric_is_refused():
    with pytest.raises(ValueError, match="primary metric"):
        decide_promotion({"new": {}, "active": {}}, auto=True, compared_with=1, current_active=1)


def test_a_run_uses_lora_unless_the_backbone_is_the_tiny_one(tiny_checkpoint_session, tmp_path):
    from loop.backbones import LORA_RANK, LoraDefault, lora_default, resolve_lora_rank
    from scorer import load_checkpoint, save_checkpoint
    from scorer.checkpoint import CONFIG_FILE
    from scorer.config import LoraSettings, ScorerConfig

    assert lora_default(tiny_checkpoint_session) == LoraDefault(0, "tiny")  # random weights: fine-tune all
    assert resolve_lora_rank(None, tiny_checkpoint_session) == 0
    real = tmp_path / "real"  # a 3B scorer: its config decides, no weights are read
    real.mkdir()
    ScorerConfig(backbone="Qwen/Qwen2.5-VL-3B-Instruct").save(real / CONFIG_FILE)
    assert lora_default(real) == LoraDefault(LORA_RANK, "lora") and resolve_lora_rank(None, real) == LORA_RANK
    assert resolve_lora_rank(0, real) == 0  # the user may still ask for a full fine-tune

    model, processor = load_checkpoint(tiny_checkpoint_session)
    model.apply_lora(LoraSettings(r=4))
    adapted = save_checkpoint(model, processor, tmp_path / "adapted")
    assert lora_default(adapted) == LoraDefault(4, "adapters")  # a promoted LoRA model goes on with LoRA
    assert resolve_lora_rank(None, adapted) == 4
    with pytest.raises(ValueError, match="has LoRA adapters"):
        resolve_lora_rank(0, adapted)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code (``from a.b import c`` gives ``a.b``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def importing(folder: str, roots: set[str]) -> dict[str, set[str]]:
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        hits = {name for name in imported_modules(path) if name.split(".")[0] in roots}
        if hits:
            found[str(path.relative_to(ROOT))] = hits
    return found


def test_ui_only_wires_widgets_and_the_loop_knows_no_gradio():
    assert len(list((ROOT / "ui").glob("*.py"))) >= 7 and len(list((ROOT / "loop").glob("*.py"))) >= 7
    assert importing("ui", {"multiprocessing", "trainer", "sqlite3"}) == {}
    assert importing("loop", {"gradio", "gradio_client", "ui"}) == {}
    assert "multiprocessing" in imported_modules(ROOT / "loop" / "training.py")  # the parser sees imports


def test_the_split_keeps_every_triplet_of_an_image_on_one_side_and_holds_one_out():
    from loop import split_by_image

    records = [{"image_name": f"img{i % 7}.png", "positive": f"p{i}", "negative": f"n{i}"} for i in range(40)]
    train, val = split_by_image(records, 0.3)
    assert len(train) + len(val) == 40 and train and val
    assert not {r["image_name"] for r in train} & {r["image_name"] for r in val}
    assert split_by_image(records, 0.3) == (train, val)  # deterministic
    one_image = [{"image_name": "a.png", "positive": "p", "negative": "n"}, {"image_name": "b.png", "positive": "p",
                                                                          "negative": "n"}]
    train, val = split_by_image(one_image, 0.01)  # a tiny store still holds one image out
    assert len(train) == 1 and len(val) == 1


def test_the_scorer_reads_a_checkpoint_s_backbone_and_adapters_from_its_config(tmp_path):
    import json

    from scorer.checkpoint import CONFIG_FILE, ORIGINAL_CONFIG_FILE, CheckpointInfo, read_checkpoint_info
    from scorer.config import LoraSettings, ScorerConfig

    ours = tmp_path / "ours"
    (ours / "backbone").mkdir(parents=True)
    ScorerConfig(backbone="backbone", lora=LoraSettings(r=8)).save(ours / CONFIG_FILE)
    assert read_checkpoint_info(ours) == CheckpointInfo(str(ours / "backbone"), 8, original=False)
    original = tmp_path / "original"
    original.mkdir()
    (original / ORIGINAL_CONFIG_FILE).write_text(json.dumps({"model_path": "/models/qwen", "use_lora": True,
                                                             "lora_r": 32}))
    assert read_checkpoint_info(original) == CheckpointInfo("/models/qwen", None, original=True)  # no adapter file
    (original / "adapter_model.safetensors").write_bytes(b"")
    assert read_checkpoint_info(original).lora_rank == 32
    with pytest.raises(FileNotFoundError, match="not a scorer checkpoint"):
        read_checkpoint_info(tmp_path)


def test_one_place_chooses_tiny_or_default_heads(tiny_checkpoint_session):
    from scorer.checkpoint import read_checkpoint_info
    from scorer.config import ScorerConfig, default_scorer_config

    tiny = default_scorer_config("tiny")
    assert (tiny.backbone, tiny.embed_dim, tiny.head_hidden_dim) == ("tiny", 128, 256)
    real = default_scorer_config("Qwen/Qwen2.5-VL-3B-Instruct")
    assert (real.embed_dim, real.head_hidden_dim) == (ScorerConfig().embed_dim, ScorerConfig().head_hidden_dim)
    saved_tiny = read_checkpoint_info(tiny_checkpoint_session).backbone  # the tiny build saved in a checkpoint
    assert saved_tiny != "tiny" and Path(saved_tiny).is_dir()
    config = default_scorer_config(saved_tiny)
    assert (config.embed_dim, config.backbone) == (128, saved_tiny)
