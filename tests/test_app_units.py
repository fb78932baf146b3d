"""The app's handlers as plain functions: the language of handler text, the status line of a promotion."""

from __future__ import annotations

import inspect
import string

import gradio as gr
import pytest

from ui.common import accepted_language, language, localized, say
from ui.strings import EN, ZH


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


def test_the_promotion_line_names_the_new_version_the_metric_and_both_numbers():
    from loop import AppliedPromotion, decide_promotion
    from ui.train import promotion_text

    decision = decide_promotion({"primary_metric": "mean_accuracy", "new": {"mean_accuracy": 0.75},
                                 "active": {"mean_accuracy": 0.625}}, auto=True, compared_with=3, current_active=3)
    text = promotion_text(AppliedPromotion(decision, promoted=True), 7)
    assert "v7" in text and "0.7500" in text and "0.6250" in text and "mean_accuracy" in text and "v3" in text
    assert promotion_text(AppliedPromotion(decision, error="OSError: disk full"), 7) == (
        "automatic promotion failed: OSError: disk full")
    for auto, current, start in ((True, 4, "not promoted: the active model changed"),
                                 (False, 3, "automatic promotion is off")):
        other = decide_promotion({"primary_metric": "mean_accuracy", "new": {"mean_accuracy": 0.75},
                                  "active": {"mean_accuracy": 0.625}}, auto=auto, compared_with=3,
                                 current_active=current)
        assert promotion_text(AppliedPromotion(other), 7).startswith(start)
    with language("zh"):
        assert promotion_text(AppliedPromotion(decision, promoted=True), 7).startswith("已自动提升：v7")


def test_the_word_diff_marks_the_one_word_a_near_duplicate_differs_by():
    from ui.captions import word_diff

    assert word_diff("a darker roof & two roads", "a lighter roof & two roads") == \
        "a <mark>darker</mark> roof &amp; two roads"
    assert word_diff("rocky cliffs by the sea", "sandy beach by the sea") == "<mark>rocky cliffs</mark> by the sea"
    assert word_diff("same words here", "same words here") == "same words here"
    assert word_diff("a forest", "three red buildings beside a wide river") == "a forest"  # unrelated: plain


def test_status_lines_name_the_row_and_first_words_not_the_id():
    from ui.captions import caption_ref

    text = "an aerial view of two buildings with red roofs and a river"
    assert caption_ref([7, 42], {42: text}, 42) == "row 2 “an aerial view of two buildings …”"
    with language("zh"):
        assert caption_ref([42], {42: "a b"}, 42) == "第 1 行“a b”"


def test_the_selection_follows_its_caption_when_the_table_re_sorts():
    from curation.views import CaptionRow
    from ui.captions import caption_table

    rows = [CaptionRow(id=n, text=f"caption {n}", source="import", author=None, created_at="") for n in range(3)]
    ranked = [(rows[2], 0.9), (rows[0], 0.5), (rows[1], 0.1)]  # caption 2 (new, edited) ranked first
    table = caption_table(ranked, "who", selected=0)
    assert table.iloc[0, 0] == "▶" and table.iloc[0, 2] == "caption 2"
    assert "<mark>" in table.iloc[1, 2]  # the others are diffed against the selected one


def test_metric_names_are_chinese_in_a_chinese_request_and_unchanged_in_english():
    from ui.common import metric_label

    assert metric_label("val/hard_accuracy") == "val/hard_accuracy"
    with language("zh"):
        assert metric_label("val/hard_accuracy") == "验证/困难_准确率"
        assert metric_label("infonce_loss") == "infonce_损失"  # a loss's proper name stays


def test_every_export_kind_is_described_in_both_languages():
    from curation.exporters import EXPORTS

    for kind in EXPORTS:
        assert f"**{kind}**" in EN["export_kinds_help"] and f"**{kind}**" in ZH["export_kinds_help"], kind
