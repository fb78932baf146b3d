"""The app's decisions as plain functions: automatic promotion, and the language of handler text."""

from __future__ import annotations

import inspect
import string

import gradio as gr
import pytest

from ui.common import EN, ZH, accepted_language, language, localized, say
from ui.promotion import decide_promotion, promotion_text


def evaluation(new: float, active: float, metric: str = "mean_accuracy") -> dict:
    return {"primary_metric": metric, "new": {metric: new, "global_accuracy": 0.1},
            "active": {metric: active, "global_accuracy": 0.9}}


def test_a_strictly_better_primary_metric_is_promoted_and_recorded_with_both_numbers():
    decision = decide_promotion(evaluation(0.75, 0.625), auto=True, compared_with=3, current_active=3)
    assert decision.promote and decision.reason == "better"
    record = decision.record()
    assert record["auto_promoted"] is True and record["metric"] == "mean_accuracy"
    assert (record["new"], record["active"], record["compared_with"]) == (0.75, 0.625, 3)
    text = promotion_text({**record, "promoted": True}, 7)
    assert "v7" in text and "0.7500" in text and "0.6250" in text and "mean_accuracy" in text


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
    text = promotion_text({**decision.record(), "promoted": False}, 5)
    assert text.startswith(("not promoted", "automatic promotion is off"))


def test_an_evaluation_without_a_primary_metric_is_refused():
    with pytest.raises(ValueError, match="primary metric"):
        decide_promotion({"new": {}, "active": {}}, auto=True, compared_with=1, current_active=1)


@pytest.mark.parametrize(("header", "expected"), [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh"), ("en-US,en;q=0.9,zh-CN;q=0.8", "en"), ("fr-FR,zh-TW;q=0.5", "zh"),
    ("zh;q=0.2,en;q=0.7", "en"), ("zh;q=0", "en"), ("", "en"), (None, "en"), ("de", "en"),
])
def test_the_language_is_the_best_supported_one_of_accept_language(header, expected):
    assert accepted_language(header) == expected


def test_every_text_has_a_chinese_version_with_the_same_placeholders():
    fields = {key: {f for _, f, _, _ in string.Formatter().parse(text) if f} for key, text in EN.items()}
    assert set(ZH) == set(EN)
    assert {key: {f for _, f, _, _ in string.Formatter().parse(ZH[key]) if f} for key in EN} == fields


class FakeRequest:
    def __init__(self, accept_language: str):
        self.headers = {"accept-language": accept_language}


def test_a_localized_handler_writes_in_the_request_language_and_keeps_gradio_parameters():
    def handler(who: str, evt: gr.SelectData) -> str:
        return say("opened_image", id=who)

    wrapped = localized(handler)
    names = list(inspect.signature(wrapped).parameters)
    assert names == ["ui_request", "who", "evt"]  # gradio injects the request first, the event data third
    assert wrapped(FakeRequest("zh-CN"), "3", None) == "已打开图像 3"
    assert wrapped(FakeRequest("en-GB"), "3", None) == "opened image 3"
    assert say("opened_image", id=3) == "opened image 3"  # outside a request: English
    with language("zh"):
        assert say("no_image_open") == "未打开图像。"


def test_unscored_captions_rank_last_and_the_scored_ones_best_first():
    from curation.views import CaptionRow
    from ui.annotate import best_first

    scores = [0.1, float("nan"), 0.5, float("nan"), 0.3, -0.2]
    rows = [CaptionRow(id=n, text=f"caption {n}", source="import", author=None, created_at="") for n in range(6)]
    ranked = best_first(list(zip(rows, scores)))
    assert [row.id for row, _ in ranked] == [2, 4, 0, 5, 1, 3]  # NaN last, in the store's order


def test_a_run_uses_lora_unless_the_backbone_is_the_tiny_one(tiny_checkpoint_session, tmp_path):
    from scorer import load_checkpoint, save_checkpoint
    from scorer.checkpoint import CONFIG_FILE
    from scorer.config import LoraSettings, ScorerConfig
    from ui.backbones import LORA_RANK, LoraDefault, lora_default, resolve_lora_rank

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
