"""The annotator's workflow in a real browser (issue 10): the keys act on the caption the annotator sees,
the keyboard covers every action, near-duplicates are marked, items can be hidden and restored."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from pages import (
    TIMEOUT_MS,
    image_id,
    move_selection,
    name_box,
    open_as,
    press_and_wait,
    selected_row,
    text,
    wait_change,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def last_decision(services, who: str):
    from curation.decisions import history
    from curation.store import get_image  # noqa: F401 - the store is open

    rows = services.conn().execute("SELECT image_id FROM decisions WHERE annotator = ? ORDER BY id DESC LIMIT 1",
                                   (who,)).fetchone()
    return history(services.conn(), rows[0])[-1] if rows else None


def caption_text(services, caption_id: int) -> str:
    return services.conn().execute("SELECT text FROM captions WHERE id = ?", (caption_id,)).fetchone()[0]


def test_keys_act_on_the_caption_the_annotator_sees(served, browser, shots):
    url, services = served
    page = browser.new_context(viewport={"width": 1400, "height": 950}).new_page()
    open_as(page, url, "erin", escape=False)  # Enter in the name box: the keys go to the captions
    assert page.evaluate("() => document.activeElement.closest('#caption-table') !== null")
    status = press_and_wait(page, "a")
    assert status.startswith("saved: accept · row 1 “") and name_box(page).input_value() == "erin"
    assert last_decision(services, "erin").verdict == "accept"

    page.keyboard.press("e")  # edit row 2 (the selection moved down): Enter saves, the new caption is selected
    box = page.locator("#edit-box textarea").first
    assert page.evaluate("() => document.activeElement.closest('#edit-box') !== null")
    old = box.input_value()
    box.press("End")
    page.keyboard.type(" near the river")
    before = text(page, "#annotate-status")
    page.keyboard.press("Enter")
    status = wait_change(page, "#annotate-status", before, "^saved: edit")
    assert selected_row(page)["caption"] == f"{old} near the river", status
    assert press_and_wait(page, "a").startswith("saved: accept")
    decision = last_decision(services, "erin")
    assert decision.verdict == "accept" and caption_text(services, decision.caption_id) == f"{old} near the river"

    page.keyboard.press("e")  # Esc cancels an edit: the box is restored, nothing is saved
    page.keyboard.type(" zzz")
    page.keyboard.press("Escape")
    assert "zzz" not in box.input_value() and page.evaluate("() => !document.activeElement.closest('#edit-box')")
    assert last_decision(services, "erin").caption_id == decision.caption_id

    page.keyboard.press("c")  # add a caption one word away from the selected one: Shift+Enter, then Enter
    reference = selected_row(page)["caption"]
    words = reference.split()
    near = " ".join([*words[:-1], "lighter"])
    page.keyboard.type(near)
    page.keyboard.press("Shift+Enter")
    assert "\n" in page.locator("#add-box textarea").first.input_value()
    page.keyboard.press("Backspace")
    before = text(page, "#annotate-status")
    page.keyboard.press("Enter")
    wait_change(page, "#annotate-status", before, "^saved: new caption")
    assert selected_row(page)["caption"] == near  # the added caption is selected
    marks = page.eval_on_selector_all("#caption-table mark", "ms => ms.map(m => m.innerText)")
    assert words[-1] in marks, marks  # the one word the other caption differs by is highlighted
    page.screenshot(path=str(shots / "annotate-diff.png"), full_page=True)


def test_previous_accept_advances_and_long_tables(served, browser, shots):
    url, services = served
    page = browser.new_context(viewport={"width": 1400, "height": 800}).new_page()
    open_as(page, url, "paula")
    first = image_id(page)
    press_and_wait(page, "Space", "#annotate-info", r"Image \d+")
    second = image_id(page)
    assert second != first
    press_and_wait(page, "p", "#annotate-info", rf"Image {first}\b")
    page.locator("#accept-advances input").first.check()  # a checkbox with the focus takes no keys
    status = press_and_wait(page, "a", "#annotate-info", rf"Image (?!{first}\b)\d+")
    assert image_id(page) != first and text(page, "#annotate-status").startswith("saved: accept"), status

    from curation.store import add_caption  # a long list of long captions: the selection stays in view

    current = image_id(page)
    for n in range(12):
        add_caption(services.conn(), current, f"caption {n} " + "a long description of the scene " * 8, "import")
    page.locator("#accept-advances input").first.uncheck()
    for n in range(2, 16):
        assert move_selection(page, "j") == str(n)
    page.wait_for_timeout(300)  # the scroll follows the render
    visible = page.evaluate("() => { const row = [...document.querySelectorAll('#caption-table [role=row]')]"
                            ".find(r => r.querySelector('[role=gridcell]')?.innerText.trim() === '▶');"
                            " const r = row.getBoundingClientRect();"
                            " return r.top >= 0 && r.bottom <= innerHeight + 2; }")
    page.screenshot(path=str(shots / "annotate-long-table.png"), full_page=False)
    assert visible


def test_keys_can_be_rebound_and_stay_rebound(served, browser):
    url, services = served
    context = browser.new_context(viewport={"width": 1400, "height": 950})
    page = context.new_page()
    open_as(page, url, "remy")
    page.keyboard.press("?")  # the settings panel opens
    binding = page.locator("#key-settings .key-binding[data-action=accept]")
    binding.wait_for(timeout=TIMEOUT_MS)
    help_text = text(page, "#keys-help")
    for key in ("j/k", "**", "p", "Enter", "Shift+Enter", "Esc", "h", "H", "?"):
        assert key.strip("*") in help_text
    binding.click()
    page.keyboard.press("y")
    assert binding.inner_text() == "y"
    assert press_and_wait(page, "y").startswith("saved: accept")
    page.reload()
    page.wait_for_function("() => /Image \\d+/.test(document.querySelector('#annotate-info')?.innerText || '')",
                           timeout=TIMEOUT_MS)
    assert press_and_wait(page, "y").startswith("saved: accept")  # kept in this browser
    before = text(page, "#annotate-status")
    page.keyboard.press("a")  # no longer bound
    page.wait_for_timeout(800)
    assert text(page, "#annotate-status") == before
    page.keyboard.press("?")
    page.locator("#key-settings .key-reset").click()
    assert page.locator("#key-settings .key-binding[data-action=accept]").inner_text() == "a"


def test_hide_then_restore_leaves_hidden_items_out_of_search_and_exports(served, browser, shots):
    url, services = served
    from curation.store import get_image
    from ui.browse import search
    from ui.data import export_data

    page = browser.new_context(viewport={"width": 1400, "height": 950}).new_page()
    open_as(page, url, "hilda")
    caption, image = selected_row(page)["caption"], image_id(page)
    path = get_image(services.conn(), image).path
    status = press_and_wait(page, "h", pattern="^hidden")
    assert status.startswith("hidden: row 1 “") and caption not in text(page, "#caption-table")
    hidden_caption = services.conn().execute("SELECT id FROM captions WHERE image_id = ? AND text = ? AND hidden = 1",
                                             (image, caption)).fetchone()[0]
    exported = pd.read_csv(export_data(services, "decisions-csv", False)[0])
    assert len(exported[exported["image"] == path]) and not len(
        exported[(exported["image"] == path) & (exported["caption"] == caption)])
    status = press_and_wait(page, "H", pattern="^hidden: image")
    assert f"hidden: image {image}" in status and image_id(page) != image
    assert image not in search(services, "")[2]
    exported = pd.read_csv(export_data(services, "decisions-csv", False)[0])
    assert path not in set(exported["image"])

    page.get_by_role("tab", name="Browse / search").click()
    page.locator("#hidden-panel").get_by_text("Hidden images and captions").click()
    page.locator("#hidden-table [role=gridcell]", has_text=path).first.wait_for(timeout=TIMEOUT_MS)
    for item in (f"caption {hidden_caption}", f"image {image}"):
        page.locator("#hidden-choice input").first.click()
        page.get_by_role("option", name=item, exact=False).first.click()
        before = text(page, "#hidden-message")
        page.click("#btn-restore")
        assert wait_change(page, "#hidden-message", before, "^restored").startswith(f"restored: {item}")
    page.screenshot(path=str(shots / "browse-hidden-restored.png"), full_page=True)
    assert image in search(services, "")[2]
    assert services.conn().execute("SELECT hidden FROM captions WHERE id = ?", (hidden_caption,)).fetchone()[0] == 0


def test_a_reviewer_resolves_a_disagreement_and_the_triplets_follow(served, browser, shots):
    url, services = served
    from curation.decisions import record_decision
    from curation.triplets import TripletFilter, list_triplets
    from curation.views import image_captions

    conn = services.conn()
    image = conn.execute("SELECT id FROM images WHERE hidden = 0 ORDER BY id DESC LIMIT 1").fetchone()[0]
    first, second = [c.id for c in image_captions(conn, image)][:2]
    for who, verdicts in (("ann1", ("accept", "reject")), ("ann2", ("reject", "accept"))):
        for caption, verdict in zip((first, second), verdicts):
            record_decision(conn, image, caption, verdict, who)
    page = browser.new_context(viewport={"width": 1400, "height": 950}).new_page()
    open_as(page, url, "rita")
    page.get_by_role("tab", name="Review").click()
    items = page.locator("#review-items")
    items.locator("[role=gridcell]", has_text="annotators disagree").first.wait_for(timeout=TIMEOUT_MS)
    assert "κ" in text(page, "#review-agreement") and "ann1" in text(page, "#review-progress")
    items.locator("[role=gridcell]", has_text=f"{image} · ").first.click()
    page.locator("#review-captions table").wait_for(timeout=TIMEOUT_MS)
    assert "ann1" in text(page, "#review-captions") and "ann2" in text(page, "#review-captions")
    page.locator("#review-verdict").get_by_text("reject").click()
    page.click("#btn-resolve")
    message = wait_change(page, "#review-message", "", "^resolved")
    page.screenshot(path=str(shots / "review-resolved.png"), full_page=True)
    resolved = int(message.split("caption ")[1].split(" ")[0])
    assert resolved in (first, second)
    triplets = [t for t in list_triplets(conn, TripletFilter(human_only=True)) if t.image_id == image]
    assert triplets and all(t.positive_id != resolved for t in triplets)  # the triplets follow the reviewer
    assert any(t.negative_id == resolved for t in triplets)


ZH_TABS = ["标注", "浏览 / 搜索", "审核", "数据", "训练", "模型"]


def english_ui_strings() -> list[str]:
    """The English UI texts that have a Chinese translation (placeholders cut off), longest first."""
    from ui.strings import EN, ZH

    texts = set()
    for key, value in EN.items():
        if ZH.get(key, value) == value:
            continue  # the same in both (a proper name, a symbol)
        head = value.split("{")[0].strip(" *:·(")
        if len(head) >= 5 and any(c.isalpha() for c in head):
            texts.add(head)
    return sorted(texts, key=len, reverse=True)


def test_a_chinese_browser_sees_no_english_ui_text(served, browser, shots):
    url, _ = served
    page = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 950}).new_page()
    open_as(page, url, "李雷")
    seen = {}
    for tab in ZH_TABS:
        page.get_by_role("tab", name=tab, exact=True).click()
        page.wait_for_timeout(1200)  # the tab's refresh
        if tab == "训练":  # its first poll (the timer's first tick)
            page.wait_for_function("() => /训练|任务/.test(document.querySelector('#train-status')?.innerText || '')",
                                   timeout=TIMEOUT_MS)
            page.wait_for_timeout(500)
        seen[tab] = page.locator(".gradio-container").first.inner_text()
    page.get_by_role("tab", name="标注", exact=True).click()
    page.keyboard.press("?")
    page.locator("#key-settings .key-binding").first.wait_for(timeout=TIMEOUT_MS)
    seen["keys"] = text(page, "#key-settings-panel")
    page.screenshot(path=str(shots / "zh-annotate-keys.png"), full_page=True)
    english = [(where, s) for s in english_ui_strings() for where, shown in seen.items()
               if re.search(rf"(?<![\w./-]){re.escape(s)}(?![\w./-])", shown)]  # not inside a name or path
    assert not english, english
    for word in ("active model", "human only", "Error", "Previous image", "Hidden images"):
        assert all(word not in shown for shown in seen.values()), word
    fonts = page.evaluate("() => getComputedStyle(document.querySelector('.gradio-container')).fontFamily")
    assert "Noto Sans CJK SC" in fonts and "Microsoft YaHei" in fonts


def test_an_idle_browser_sends_no_requests(served, browser):
    url, _ = served
    page = browser.new_context(viewport={"width": 1400, "height": 950}).new_page()
    open_as(page, url, "idle")
    for tab in ("Train", "Data", "Annotate"):  # opening a tab polls once, then its timer stops (no job runs)
        page.get_by_role("tab", name=tab, exact=True).click()
        page.wait_for_timeout(1500)
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.wait_for_timeout(4000)
    assert requests == []
