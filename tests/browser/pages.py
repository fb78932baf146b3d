"""Helpers the browser tests share: open the app as an annotator, press keys and wait for the page."""

from __future__ import annotations

import re

TIMEOUT_MS = 30_000


def text(page, selector: str) -> str:
    return page.locator(selector).first.inner_text()


def wait_change(page, selector: str, before: str, pattern: str = ".", timeout: int = TIMEOUT_MS) -> str:
    """Wait until the element's text differs from ``before``, matches ``pattern``, and no request is pending."""
    page.wait_for_function("([sel, before, pattern]) => { const e = document.querySelector(sel);"
                           " return e !== null && e.innerText !== before && new RegExp(pattern).test(e.innerText)"
                           " && document.querySelector('.progress-text, .eta-bar') === null; }",
                           arg=[selector, before, pattern], timeout=timeout)
    return text(page, selector)


def idle(page) -> None:
    """Wait until no request of the page is pending (gradio shows a timer over the outputs meanwhile)."""
    page.wait_for_function("() => document.querySelector('.progress-text, .eta-bar') === null", timeout=TIMEOUT_MS)


def image_id(page) -> int:
    match = re.search(r"(?:Image|图像) (\d+)", text(page, "#annotate-info"))
    assert match, text(page, "#annotate-info")
    return int(match.group(1))


def name_box(page):
    return page.locator("#annotator-name").locator("input, textarea").first


def open_as(page, url: str, name: str, escape: bool = True) -> None:
    page.goto(url)
    page.wait_for_function("() => /done|已完成/.test(document.querySelector('#annotate-counters')?.innerText || '')",
                           timeout=TIMEOUT_MS)  # the page's load event has run
    box = name_box(page)
    box.fill(name)
    box.press("Enter")
    page.wait_for_function("() => /(Image|图像) \\d+/.test(document.querySelector('#annotate-info')?.innerText"
                           " || '')", timeout=TIMEOUT_MS)
    if escape:
        box.press("Escape")  # leave the text box so that the keys reach the app
    page.wait_for_timeout(200)
    idle(page)


def press_and_wait(page, key: str, selector: str = "#annotate-status", pattern: str = "^saved") -> str:
    idle(page)
    before = text(page, selector)
    page.keyboard.press(key)
    return wait_change(page, selector, before, pattern)


def selected_row(page) -> dict:
    """The ▶ row of the caption table: its number and caption text."""
    return page.evaluate("() => { const row = [...document.querySelectorAll('#caption-table [role=row][data-index]')]"
                         ".find(r => r.querySelector('[role=gridcell]')?.innerText.trim() === '▶');"
                         " const cells = row ? [...row.querySelectorAll('[role=gridcell]')]"
                         ".map(c => c.innerText.trim()) : []; return {number: cells[1], caption: cells[2]}; }")


SELECTED_NUMBER = ("() => [...document.querySelectorAll('#caption-table [role=row][data-index]')]"
                   ".find(r => r.querySelector('[role=gridcell]')?.innerText.trim() === '▶')"
                   "?.querySelectorAll('[role=gridcell]')[1]?.innerText.trim()")


def move_selection(page, key: str = "j") -> str:
    """Press ``key`` (j / k) and wait until the ▶ moved; returns the selected row's number."""
    before = page.evaluate(SELECTED_NUMBER)
    page.keyboard.press(key)
    page.wait_for_function(f"() => {{ const n = ({SELECTED_NUMBER})(); return n && n !== {before!r}; }}",
                           timeout=TIMEOUT_MS)
    return page.evaluate(SELECTED_NUMBER)
