"""Server-side latency of the app's handlers (called directly, no browser or HTTP).

``python bench/bench_app.py [--images 20] [--decisions 40]`` prints:

1. "next image → ranked captions" (``ui.annotate.load_next``) for images with 20 captions each, on the
   tiny scorer with a cold embedding cache (every image and caption is new), beside the bare
   ``Scorer.rank`` on the same inputs (baseline: what the model alone costs). Goal: ≤ 150 ms p50.
   Then the same first view in a fresh store whose queue the background scorer (``QueueScorer``) has
   already scored: what an annotator gets once the app has been up for a moment.
   Then "selection move" (``ui.annotate.select``, ↑/↓ or a click on the table): the table is rendered again
   from stored scores, the image is not read nor sent (``gr.skip()``).
2. the latency of a decision (``ui.annotate.decide``: write, re-read, render) with no training and while
   a training run is in progress in its background process. Goal: ≤ 300 ms p95.
3. in Chromium (headless, Playwright; skipped when absent or with ``--no-browser``): key press (space) → the
   next image's ranked captions rendered, on the app served locally with a queue the background scorer has
   scored, p50 over ``--images`` images, beside the server-side figure of the same first view; the line
   ``browser_next_image_p50_ms=<n>``. Goal: ≤ 150 ms on a quiet machine.

It works in a temporary data directory on the demo scenes (assets/demo); nothing else is touched.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("REMOTE_SCORER_CACHE", str(ROOT / ".cache" / "remote_scorer"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(name: str, seconds: list[float]) -> str:
    ms = [1000 * s for s in seconds]
    return (f"{name:<44} n={len(ms):3d}  p50 {statistics.median(ms):7.1f} ms  p95 {percentile(ms, 0.95):7.1f} ms"
            f"  max {max(ms):7.1f} ms")


def setup(work: Path):
    import app
    from curation.store import add_caption
    from curation.views import image_captions, list_images
    from loop import AppConfig, Services
    from scorer.write_tiny_checkpoint import main as write_tiny

    write_tiny([str(work / "tiny")])
    services = Services(AppConfig(data_dir=work / "data", image_root=app.DEMO_IMAGES, checkpoint=work / "tiny",
                                  max_pixels=64 * 64))
    app.import_demo_if_empty(services)
    conn = services.conn()
    for image in list_images(conn):  # 20 captions per image, each text unique to its image
        have = len(image_captions(conn, image.id))
        for n in range(20 - have):
            add_caption(conn, image.id, f"scene {image.id}: variant {n} with {n % 5} buildings and a road", "bench")
    return services


def bench_next_image(services, count: int) -> tuple[list[float], list[float]]:
    from curation.store import get_image
    from curation.views import image_captions
    from scorer import Scorer
    from scorer.ranking import EmbeddingCache
    from ui.annotate import load_next, skip

    scorer, _ = services.scorer()
    bare = Scorer(scorer.model, scorer.processor, scorer.model_version + "-baseline", cache=EmbeddingCache())
    state, handler, baseline = None, [], []
    for _ in range(count):
        start = time.perf_counter()
        view = load_next(services, "bench", state) if state is None else skip(services, "bench", state)
        handler.append(time.perf_counter() - start)
        state = view.state
        image = get_image(services.conn(), state["image_id"])
        texts = [row.text for row in image_captions(services.conn(), image.id)]
        assert len(texts) == 20, (image.id, len(texts))
        start = time.perf_counter()
        bare.rank([(str(services.image_path(image.path)), texts)])
        baseline.append(time.perf_counter() - start)
    return handler, baseline


def bench_first_view_prescored(work: Path, count: int) -> tuple[list[float], float]:
    """First views (``load_next`` then ``skip``) in a fresh store after the queue scorer has run; also its time."""
    from ui.annotate import load_next, skip

    services = setup(work)
    start = time.perf_counter()
    services.queue_scorer.start()
    assert services.queue_scorer.wait(600), "the queue scorer did not finish"
    scan = time.perf_counter() - start
    assert not services.queue_scorer.failed, services.queue_scorer.failed
    state, times = None, []
    for _ in range(count):
        start = time.perf_counter()
        view = load_next(services, "bench", state) if state is None else skip(services, "bench", state)
        times.append(time.perf_counter() - start)
        state = view.state
    services.close()
    return times, scan


def bench_revisit(services) -> list[float]:
    """``open_image`` on images already ranked: what a pre-scored queue costs per image."""
    from curation.views import list_images
    from ui.annotate import open_image

    times = []
    for image in [row for row in list_images(services.conn()) if row.n_captions == 20][:20]:
        start = time.perf_counter()
        open_image(services, "bench", None, image.id)
        times.append(time.perf_counter() - start)
    return times


def bench_selection_move(services, count: int) -> list[float]:
    """``count`` moves of the selection (down, then up at the end of the list) on one open image."""
    from ui.annotate import load_next, select

    state, times, delta = load_next(services, "mover", None).state, [], 1
    assert state["image_id"] is not None and len(state["caption_ids"]) == 20, state
    for _ in range(count):
        if not 0 <= state["selected"] + delta < len(state["caption_ids"]):
            delta = -delta
        start = time.perf_counter()
        view = select(services, "mover", state, delta=delta)
        times.append(time.perf_counter() - start)
        assert view.image is None, "a selection move must not load the image"
        state = view.state
    return times


def bench_decisions(services, count: int, who: str, pause: float = 0.1) -> list[float]:
    """``count`` decisions, ``pause`` seconds apart (an annotator's pace, compressed)."""
    from ui.annotate import decide, load_next, skip

    state, times = load_next(services, who, None).state, []
    for n in range(count):
        time.sleep(pause)
        start = time.perf_counter()
        decide(services, who, state, "accept" if n % 2 == 0 else "reject", row=n % 5)
        times.append(time.perf_counter() - start)
        if n % 5 == 4:
            state = skip(services, who, state).state
    return times


NEXT_RENDERED = """() => { window.__rendered = new Promise(resolve => {
  const before = document.querySelector('#annotate-info').innerText;
  const done = () => { const info = document.querySelector('#annotate-info')?.innerText || '';
    return info !== before && /Image \\d+/.test(info) && !document.querySelector('.progress-text, .eta-bar')
      && document.querySelectorAll('#caption-table [role=row][data-index]').length >= 20; };
  const seen = new MutationObserver(() => {
    if (done()) { seen.disconnect(); resolve(performance.now() - window.__t0); } });
  seen.observe(document.body, {childList: true, subtree: true, characterData: true});
}); }"""


def bench_browser_next_image(work: Path, count: int) -> tuple[list[float], list[float]] | None:
    """(browser seconds, server-side seconds) of key press → next image's ranked captions rendered."""
    import shutil

    import app
    from tests.app_server import free_port

    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        print("browser: skipped (no chromium or playwright)")
        return None
    services = setup(work)
    services.queue_scorer.start()
    assert services.queue_scorer.wait(600), "the queue scorer did not finish"
    server_side = []
    port = free_port()
    demo = app.launch(services, port=port, block=False, quiet=True)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
    times = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=args)
            page = browser.new_page(viewport={"width": 1400, "height": 950})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("() => /done/.test(document.querySelector('#annotate-counters')?.innerText||'')")
            box = page.locator("#annotator-name").locator("input, textarea").first
            box.fill("browser-bench")
            box.press("Enter")
            page.wait_for_function("() => /Image \\d+/.test(document.querySelector('#annotate-info')?.innerText||'')"
                                   " && !document.querySelector('.progress-text, .eta-bar')")
            page.evaluate("() => document.addEventListener('keydown', () => { window.__t0 = performance.now(); },"
                          " true)")
            for _ in range(count + 1):  # the first is a warm-up
                page.evaluate(NEXT_RENDERED)
                page.keyboard.press("Space")
                times.append(page.evaluate("() => window.__rendered") / 1000)
            browser.close()
        server_side = bench_first_view_prescored(work / "server-side", count)[0]
    finally:
        demo.close()
        services.close()
    return times[1:], server_side


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="images for 'next image → ranked captions'")
    parser.add_argument("--decisions", type=int, default=40, help="decisions per condition")
    parser.add_argument("--train-steps", type=int, default=60, help="steps of the background training run")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium measurement")
    parser.add_argument("--browser-only", action="store_true", help="only the Chromium measurement")
    args = parser.parse_args(argv)
    from loop import TrainForm

    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_browser:
            measured = bench_browser_next_image(Path(tmp) / "browser", args.images)
            if measured is not None:
                browser, server_side = measured
                print(summary("key press → next image rendered (Chromium)", browser))
                print(summary("same first view, server side (handler)", server_side))
                print(f"browser_next_image_p50_ms={1000 * statistics.median(browser):.0f}")
        if args.browser_only:
            return
        services = setup(Path(tmp))
        handler, baseline = bench_next_image(services, args.images)
        print(summary("next image → 20 ranked captions (handler)", handler))
        print(summary("bare Scorer.rank, same inputs (baseline)", baseline))
        print(f"handler / baseline (p50): {statistics.median(handler) / statistics.median(baseline):.2f}")
        warm = bench_revisit(services)
        print(summary("same images again, scores stored (handler)", warm))
        print(summary("selection move, image not resent (handler)", bench_selection_move(services, args.decisions)))
        prescored, scan = bench_first_view_prescored(Path(tmp) / "prescored", args.images)
        print(summary("first view after the queue scorer ran (handler)", prescored))
        print(f"queue scorer: {scan:.1f} s for the 24 demo images × 20 captions; "
              f"cold / pre-scored first view (p50): {statistics.median(handler) / statistics.median(prescored):.1f}")

        idle = bench_decisions(services, args.decisions, "idle-annotator")
        print(summary("decision, no training", idle))
        services.training.start(TrainForm(max_steps=args.train_steps, lr=1e-4, batch_size=8, max_pixels=64 * 64,
                                          auto_promote=False))
        while not (snap := services.training.snapshot()).progress:  # wait for the first step
            assert snap.status == "running", snap.log[-5:]
            time.sleep(0.2)
        busy = bench_decisions(services, args.decisions, "busy-annotator")
        still = services.training.snapshot()
        print(summary("decision, training run in progress", busy))
        step = still.progress[-1].get("step")
        print(f"training was {still.status} at step {step} when the last decision ended")
        print(f"busy / idle (p95): {percentile(busy, 0.95) / percentile(idle, 0.95):.2f}")
        services.close()


if __name__ == "__main__":
    main()
