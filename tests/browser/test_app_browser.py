"""The app in a real browser: keyboard annotation, reload, two annotators at once, train and promote."""

from __future__ import annotations

import pytest
from pages import TIMEOUT_MS, image_id, text, wait_change

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def open_as(page, url: str, name: str) -> None:
    page.goto(url)
    page.wait_for_function("() => /done/.test(document.querySelector('#annotate-counters')?.innerText || '')",
                           timeout=TIMEOUT_MS)  # the page's load event has run
    box = page.locator("#annotator-name").locator("input, textarea").first
    box.fill(name)
    box.press("Enter")
    page.wait_for_function("() => /Image \\d+/.test(document.querySelector('#annotate-info')?.innerText || '')",
                           timeout=TIMEOUT_MS)
    box.press("Escape")  # leave the text box so that the keys reach the app


def press_and_wait(page, key: str, selector: str = "#annotate-status", pattern: str = "^saved") -> str:
    before = text(page, selector)
    page.keyboard.press(key)
    return wait_change(page, selector, before, pattern)


def annotate_one(page) -> int:
    """accept row 1, reject row 2, best = row 1, next image; returns the annotated image id."""
    current = image_id(page)
    assert press_and_wait(page, "a").startswith("saved: accept")
    assert press_and_wait(page, "x").startswith("saved: reject")
    assert press_and_wait(page, "1").startswith("saved: best")
    press_and_wait(page, "Space", "#annotate-info", r"Image \d+")
    return current


def verdicts(services, image: int, who: str) -> list[str]:
    from curation.decisions import history

    return [d.verdict for d in history(services.conn(), image) if d.annotator == who]


def test_keyboard_annotation_survives_a_reload(served, browser, shots):
    url, services = served
    page = browser.new_context(viewport={"width": 1400, "height": 950}).new_page()
    open_as(page, url, "kbd")
    done = [annotate_one(page) for _ in range(3)]
    page.screenshot(path=str(shots / "annotate-after-three.png"), full_page=True)
    assert len(set(done)) == 3
    for image in done:
        assert verdicts(services, image, "kbd") == ["accept", "reject", "best"]

    page.reload()
    page.wait_for_function("() => /mine \\*?\\*?3/.test(document.querySelector('#annotate-counters')?.innerText"
                           " || '')", timeout=TIMEOUT_MS)
    assert page.locator("#annotator-name").locator("input, textarea").first.input_value() == "kbd"
    assert "3 / 24" in text(page, "#annotate-counters")
    page.keyboard.press("Backspace")  # undo the last decision: its image comes back without the best mark
    page.wait_for_function(f"() => document.querySelector('#annotate-info')?.innerText.includes('Image {done[-1]}')",
                           timeout=TIMEOUT_MS)
    table = text(page, "#caption-table")
    assert "✓ accept" in table and "✗ reject" in table and "★ best" not in table
    page.screenshot(path=str(shots / "annotate-after-reload-undo.png"), full_page=True)
    assert verdicts(services, done[-1], "kbd") == ["accept", "reject", "best", "undo"]


def test_two_annotators_at_once_get_different_images_and_lose_nothing(served, browser):
    url, services = served
    pages = [browser.new_context().new_page() for _ in range(2)]
    names = ["left", "right"]
    for page, name in zip(pages, names):
        open_as(page, url, name)
    held = []
    for _ in range(3):
        held.append(tuple(image_id(page) for page in pages))
        before = [text(page, "#annotate-info") for page in pages]
        for page in pages:  # both press before either waits: the requests overlap
            page.keyboard.press("a")
        for page in pages:
            page.wait_for_function("() => document.querySelector('#annotate-status')?.innerText"
                                   ".startsWith('saved: accept')", timeout=TIMEOUT_MS)
        for page in pages:
            page.keyboard.press("Space")
        for page, old in zip(pages, before):
            wait_change(page, "#annotate-info", old, r"Image \d+")
    assert all(a != b for a, b in held), held
    for column, name in enumerate(names):
        for pair in held:
            assert verdicts(services, pair[column], name) == ["accept"]


def test_train_watch_progress_promote_and_see_the_ranking_change(served, browser, shots):
    url, services = served
    page = browser.new_context(viewport={"width": 1400, "height": 950}).new_page()
    open_as(page, url, "trainer-watcher")
    before = text(page, "#caption-table")
    page.get_by_role("tab", name="Train").click()
    steps = page.locator("#train-max-steps").locator("input").first
    steps.fill("3")
    page.locator("#train-auto-promote input[type=checkbox]").first.uncheck()  # promote by hand below
    page.click("#btn-train-start")
    seen = set()
    page.wait_for_function("() => /running|done/.test(document.querySelector('#train-status')?.innerText || '')",
                           timeout=TIMEOUT_MS)
    for _ in range(600):
        status = text(page, "#train-status")
        seen.add(status.split("·")[1].strip() if "·" in status else status)
        if "done" in status or "failed" in status:
            break
        page.wait_for_timeout(250)
    assert "done" in status, status
    assert len(seen) >= 2, seen  # the progress moved while we watched
    page.wait_for_timeout(1500)  # one more poll after "done"
    page.screenshot(path=str(shots / "train-done.png"), full_page=True)
    for plot, least in (("#train-loss-plot", 2), ("#train-accuracy-plot", 2)):  # every loss term; the accuracies
        lines = page.eval_on_selector_all(
            f"{plot} .mark-line path", "ps => ps.filter(p => (p.getAttribute('stroke') || 'none') !== 'none'"
            " && (p.getAttribute('d') || '').includes('L')).length")
        assert lines >= least, (plot, lines)
    assert "automatic promotion is off" in text(page, "#train-status")
    dashes = page.eval_on_selector_all("#train-accuracy-plot .mark-line path",
                                       "ps => ps.filter(p => (p.getAttribute('stroke') || 'none') !== 'none')"
                                       ".map(p => getComputedStyle(p).strokeDasharray)")
    assert len(set(dashes)) == len(dashes) >= 2, dashes  # coinciding curves stay visible
    finished = text(page, "#train-status")
    page.wait_for_timeout(2000)  # a finished run's time stops counting (and the tab polls once when opened)
    page.get_by_role("tab", name="Models").click()
    page.get_by_role("tab", name="Train").click()
    page.wait_for_timeout(1500)
    assert text(page, "#train-status").split("\n")[0] == finished.split("\n")[0]
    page.click("#btn-train-promote")
    page.wait_for_function("() => document.querySelector('#train-message')?.innerText.includes('promoted')",
                           timeout=TIMEOUT_MS)
    page.get_by_role("tab", name="Annotate").click()
    page.keyboard.press("j")  # any action re-ranks the open image with the active model
    after = wait_change(page, "#caption-table", before, "accept|reject|import")
    assert after != before
    page.screenshot(path=str(shots / "annotate-after-promote.png"), full_page=True)


def test_the_image_zooms_with_the_wheel_and_pans_by_dragging(served, browser, shots):
    url, _ = served
    page = browser.new_context(viewport={"width": 1400, "height": 950}).new_page()
    open_as(page, url, "zoomer")
    img = page.locator("#annotate-image img").first
    img.wait_for(timeout=TIMEOUT_MS)
    box = img.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, -600)
    page.wait_for_function("() => parseFloat(document.querySelector('#annotate-image img').dataset.zoom) > 2",
                           timeout=TIMEOUT_MS)
    before = img.evaluate("e => e.style.transform")
    page.mouse.down()
    page.mouse.move(cx + 80, cy + 40, steps=4)
    page.mouse.up()
    assert img.evaluate("e => e.style.transform") != before
    assert page.evaluate("() => window.scrollY") == 0  # the wheel zoomed instead of scrolling the page
    page.screenshot(path=str(shots / "annotate-zoomed.png"))
    img.dblclick()
    assert img.evaluate("e => e.dataset.zoom") == "1.000"
    page.mouse.wheel(0, -600)
    page.wait_for_function("() => parseFloat(document.querySelector('#annotate-image img').dataset.zoom) > 2",
                           timeout=TIMEOUT_MS)
    press_and_wait(page, "Space", "#annotate-info", r"Image \d+")  # the next image starts unzoomed
    page.wait_for_function("() => document.querySelector('#annotate-image img')?.dataset.zoom === '1.000'",
                           timeout=TIMEOUT_MS)


def test_a_chinese_browser_gets_the_chinese_interface(served, browser, shots):
    url, _ = served
    page = browser.new_context(locale="zh-CN", viewport={"width": 1400, "height": 950}).new_page()
    page.goto(url)
    page.get_by_role("tab", name="标注").wait_for(timeout=TIMEOUT_MS)
    assert page.get_by_role("tab", name="训练").count() == 1
    generate = page.get_by_role("button", name="生成候选描述")  # labels are translated as the page renders
    generate.wait_for(timeout=TIMEOUT_MS)
    assert generate.count() == 1
    page.wait_for_function("() => /已完成/.test(document.querySelector('#annotate-counters')?.innerText || '')",
                           timeout=TIMEOUT_MS)  # the handlers write Chinese too (Accept-Language: zh-CN)
    box = page.locator("#annotator-name").locator("input, textarea").first
    box.fill("韩梅梅")
    box.press("Enter")
    page.wait_for_function("() => /图像 \\d+/.test(document.querySelector('#annotate-info')?.innerText || '')",
                           timeout=TIMEOUT_MS)
    box.press("Escape")
    assert press_and_wait(page, "a", pattern="^已保存").startswith("已保存：接受")
    assert "✓ 接受" in text(page, "#caption-table")
    page.screenshot(path=str(shots / "annotate-zh.png"))
