"""The app's actions through its HTTP API (gradio_client), against the app served on a free local port.

The app runs on the demo scenes (assets/demo) with the tiny scorer; each test module gets its own
data directory, so the store starts with the 24 demo images and their imported captions.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import queue
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from app_server import free_port, serve_app

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_checkpoint_session):
    root = tmp_path_factory.mktemp("app-images") / "demo"
    shutil.copytree(DEMO, root)  # a copy, so that tests may add images
    with serve_app(tmp_path_factory.mktemp("app-data"), root, tiny_checkpoint_session, max_new_tokens=8) as server:
        yield server


@pytest.fixture
def client(served):
    return gradio_client.Client(served[0], verbose=False)


def start(client, annotator: str) -> tuple:
    """``/start`` also returns the name it saved in the browser; the rest is the Annotate view."""
    return client.predict(annotator, api_name="/start")[1:]


def table_rows(output: tuple) -> list[list]:
    return output[2]["data"]


def image_id_of(output: tuple) -> int:
    return int(output[1].split("**Image ")[1].split("**")[0])


def history(services, image_id: int):
    from curation.decisions import history as log

    return log(services.conn(), image_id)


def test_next_image_is_ranked_by_the_active_model(client, served):
    _, services = served
    out = start(client, "ranker")
    rows = table_rows(out)
    scores = [row[3] for row in rows]
    assert len(rows) >= 4 and scores == sorted(scores, reverse=True)
    from curation.store import get_image

    image = get_image(services.conn(), image_id_of(out))
    scorer, _ = services.scorer()
    expected = scorer.score_pairs([(str(services.image_root / image.path), row[2]) for row in rows])
    assert scores == pytest.approx(expected, abs=1e-3)
    assert Path(out[0]).is_file()  # the displayed image was served


def unlabelled_free_images(services) -> list[int]:
    conn = services.conn()
    leased = {row[0] for row in conn.execute("SELECT image_id FROM leases")}
    from curation.views import ImageFilter, list_images

    return [row.id for row in list_images(conn, ImageFilter(status="unlabelled")) if row.id not in leased]


def test_background_scoring_puts_the_most_uncertain_image_first(client, served):
    _, services = served
    assert services.queue_scorer.wait(120)
    from curation.views import image_captions

    _, model_id = services.scorer()
    margins = {}
    for image_id in unlabelled_free_images(services):
        scores = sorted((c.score for c in image_captions(services.conn(), image_id, model_id)), reverse=True)
        assert None not in scores, f"image {image_id} was not scored in the background"
        margins[image_id] = scores[0] - scores[1]
    assert len(margins) >= 20
    out = start(client, "uncertain-first")
    assert image_id_of(out) == min(margins, key=lambda i: (margins[i], i))
    second = image_id_of(client.predict("uncertain-first", api_name="/skip"))
    del margins[image_id_of(out)]
    assert second == min(margins, key=lambda i: (margins[i], i))


def test_decisions_are_in_the_store_when_the_page_shows_them(client, served):
    _, services = served
    out = start(client, "alice")
    image_id, first, third = image_id_of(out), table_rows(out)[0][2], table_rows(out)[2][2]
    out = client.predict("alice", api_name="/accept")
    assert table_rows(out)[0][5] == "✓ accept" and table_rows(out)[1][0] == "▶"  # selection moved down
    out = client.predict("alice", api_name="/reject")
    out = client.predict("alice", api_name="/best_3")
    log = history(services, image_id)
    assert [(d.verdict, d.annotator) for d in log] == [("accept", "alice"), ("reject", "alice"), ("best", "alice")]
    from curation.views import image_captions

    text_of = {c.id: c.text for c in image_captions(services.conn(), image_id)}
    assert text_of[log[0].caption_id] == first and text_of[log[2].caption_id] == third
    assert "mine **1**" in out[3]


def test_a_verdict_lands_on_the_caption_shown_at_that_row_when_the_ranking_changed(client, served):
    _, services = served
    from curation.queue import record_scores
    from curation.store import add_caption
    from curation.views import image_captions

    out = start(client, "steady")
    image_id, shown = image_id_of(out), [row[2] for row in table_rows(out)]
    conn = services.conn()  # meanwhile another annotator adds a caption that the model ranks first
    added = add_caption(conn, image_id, "A caption someone else added meanwhile.", "human", author="other")
    record_scores(conn, services.scorer()[1], [(image_id, added, 1.0)])
    out = client.predict("steady", api_name="/accept")  # row 1 as the page showed it
    now = [row[2] for row in table_rows(out)]
    assert now[0] == "A caption someone else added meanwhile." and now[1:] == shown  # the page shows the change
    out = client.predict("steady", api_name="/best_3")  # row 3 of the page as it shows it now
    text_of = {c.id: c.text for c in image_captions(conn, image_id)}
    assert [(d.verdict, text_of[d.caption_id]) for d in history(services, image_id)] == [
        ("accept", shown[0]), ("best", now[2])]


def test_undo_cancels_the_latest_decision(client, served):
    _, services = served
    out = start(client, "ursula")
    image_id = image_id_of(out)
    client.predict("ursula", api_name="/accept")
    out = client.predict("ursula", api_name="/undo")
    assert out[4].startswith("undone: accept")
    assert all(row[5] == "" for row in table_rows(out))
    assert [d.verdict for d in history(services, image_id)] == ["accept", "undo"]
    out = client.predict("ursula", api_name="/undo")
    assert "nothing left to undo" in out[4]


def test_edit_and_add_make_human_captions(client, served):
    _, services = served
    out = start(client, "edith")
    image_id, old = image_id_of(out), table_rows(out)[0][2]
    out = client.predict("edith", old + " Edited.", api_name="/edit")
    out = client.predict("edith", "A caption Edith wrote.", api_name="/add_caption")
    texts = {row[2]: row[4] for row in table_rows(out)}
    assert texts[old + " Edited."] == "human" and texts["A caption Edith wrote."] == "human"
    assert texts[old] == "import"  # the edited caption stays
    assert [d.verdict for d in history(services, image_id)] == ["edit"]
    with pytest.raises(gradio_client.exceptions.AppError, match="empty"):
        client.predict("edith", "   ", api_name="/add_caption")


def test_two_annotators_never_hold_the_same_image(served):
    url, _ = served
    one, two = gradio_client.Client(url, verbose=False), gradio_client.Client(url, verbose=False)
    held = [(image_id_of(start(one, "p1")), image_id_of(start(two, "p2")))]
    for _ in range(3):
        mine = image_id_of(one.predict("p1", api_name="/skip"))
        held.append((mine, image_id_of(two.predict("p2", api_name="/skip"))))
    assert all(a != b for a, b in held), held
    assert len({a for a, _ in held}) == 4  # skipped images are not offered again to the one who skipped


def test_a_name_is_required_before_deciding(client):
    with pytest.raises(gradio_client.exceptions.AppError, match="name"):
        client.predict("", api_name="/accept")


def test_a_chinese_request_gets_chinese_handler_text(served):
    zh = gradio_client.Client(served[0], verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
    out = start(zh, "李雷")
    assert out[1].startswith("**图像 ") and "已完成 **" in out[3] and "我的 **0**" in out[3]
    assert table_rows(out) and list(out[2]["headers"][2:]) == ["描述", "分数", "来源", "我的判定"]
    out = zh.predict("李雷", api_name="/accept")
    assert out[4].startswith("已保存：接受") and table_rows(out)[0][5] == "✓ 接受" and "我的 **1**" in out[3]
    with pytest.raises(gradio_client.exceptions.AppError, match="请先输入你的名字"):
        zh.predict("", api_name="/accept")
    assert start(gradio_client.Client(served[0], verbose=False), "lilei-en")[1].startswith("**Image ")


def test_search_ranks_images_by_text_and_filters(client):
    table, gallery = client.predict("buildings with red roofs", "(any)", "(any)", "(any)", "(any)",
                                    api_name="/search")
    scores = [row[5] for row in table["data"]]
    assert len(scores) == 24 and scores == sorted(scores, reverse=True)
    assert len(gallery) == 24
    table, _ = client.predict("", "farmland", "(any)", "(any)", "(any)", api_name="/search")
    assert table["data"] and {row[2] for row in table["data"]} == {"farmland"}
    table, _ = client.predict("", "(any)", "(any)", "alice", "(any)", api_name="/search")
    assert len(table["data"]) == 1  # alice decided one image


def test_import_upload_and_export_every_format(client, served, tmp_path):
    _, services = served
    upload = tmp_path / "more.json"
    upload.write_text(json.dumps([{"image_name": "imgs/scene_05.png", "positive": "five roofs, a river",
                                   "negative": "no river at all"},
                                  {"image_name": "../outside.png", "positive": "a", "negative": "b"}]))
    summary, skipped = client.predict("triplets", "", gradio_client.handle_file(str(upload)), api_name="/import")
    assert "captions +2" in summary and "1 skipped" in summary
    assert "outside" in skipped["data"][0][1] or ".." in skipped["data"][0][1]
    summary, _ = client.predict("seed-triplets", "triplets.json", None, api_name="/import")
    assert "images +0 (24 present)" in summary  # re-import from the server is idempotent
    with pytest.raises(gradio_client.exceptions.AppError, match="outside"):
        client.predict("seed-triplets", "../../etc/passwd", None, api_name="/import")
    from ui.data import FILE_EXPORTS

    for kind in FILE_EXPORTS:
        path, summary = client.predict(kind, False, api_name="/export")
        assert Path(path).is_file() and Path(path).stat().st_size > 0, kind
        assert f"{kind}:" in summary
    path, summary = client.predict("triplets", False, api_name="/export")
    assert len(json.loads(Path(path).read_text())) == int(summary.split(": ")[1].split(" ")[0])


def test_generate_candidates_for_the_open_image(client, served):
    _, services = served
    out = start(client, "writer")
    image_id, before = image_id_of(out), {row[2] for row in table_rows(out)}
    out = client.predict("writer", 2, api_name="/generate")
    rows = table_rows(out)
    new = [row for row in rows if row[2] not in before]
    source = f"model:{services.backbone_name()}"
    assert out[4].startswith("generated") and 1 <= len(new) <= 2 and {row[4] for row in new} == {source}
    scores = [row[3] for row in rows]
    assert scores == sorted(scores, reverse=True)  # the new captions are ranked with the others
    from curation.views import image_captions

    stored = {c.text: c for c in image_captions(services.conn(), image_id)}
    assert all(stored[row[2]].source == source and stored[row[2]].author.startswith("local:") for row in new)


def test_moving_the_selection_sends_the_table_but_not_the_image_again(client, served):
    _, services = served
    from ui.annotate import select

    out = start(client, "mover")
    assert Path(out[0]).is_file()
    moved = client.predict("mover", api_name="/select_down")
    assert table_rows(moved)[1][0] == "▶" and moved[5] == table_rows(out)[1][2]  # the edit box follows
    assert moved[0] == {"__type__": "update"}  # gr.skip(): no image sent, the page keeps the one it shows
    view = select(services, "mover", {**out_state(services, "mover")}, delta=1)
    assert view.image is None and view.outputs()[1] == gr_skip()


def out_state(services, who: str) -> dict:
    """A session state on the image ``who`` holds (as the page would have it)."""
    from curation.queue import next_image

    return {"image_id": next_image(services.conn(), who), "selected": 0, "skipped": [], "caption_ids": []}


def gr_skip():
    import gradio as gr

    return gr.skip()


def test_hard_negatives_of_the_selected_caption_become_candidates(client, served):
    _, services = served
    from curation.views import image_captions

    out = start(client, "negator")
    image_id, source_text = image_id_of(out), table_rows(out)[0][2]
    before = {row[2] for row in table_rows(out)}
    out = client.predict("negator", 2, api_name="/hard_negatives")
    assert out[4].startswith("added ") and "hard negative" in out[4]
    new = [row for row in table_rows(out) if row[2] not in before]
    assert 1 <= len(new) <= 2 and all(row[4].startswith("hard-negative:") for row in new)
    scores = [row[3] for row in table_rows(out)]
    assert scores == sorted(scores, reverse=True)  # ranked with the others
    stored = {c.text: c for c in image_captions(services.conn(), image_id)}
    for row in new:
        assert row[2] != source_text and stored[row[2]].author in ("rule", f"llm:local:{services.backbone_name()}")
        kinds = row[4].split(":", 1)[1].split("+")
        from scorer.generation import EDIT_KINDS

        assert kinds and set(kinds) <= set(EDIT_KINDS)

    caption = next(c for c in image_captions(services.conn(), image_id) if c.text == source_text)
    record = client.predict(image_id, caption.id, 1, api_name="/add_hard_negatives")  # the same, by ids
    assert len(record["added"]) <= 1 and record["image_id"] == image_id
    by_id = {c["id"]: c for c in record["captions"]}
    assert all(by_id[i]["source"].startswith("hard-negative:") for i in record["added"])
    with pytest.raises(gradio_client.exceptions.AppError, match="has no caption"):
        client.predict(image_id, 10**6, 1, api_name="/add_hard_negatives")


def test_batch_generation_runs_in_the_background_and_imports_its_captions(client, served):
    _, services = served
    todo = unlabelled_free_images(services)
    message = client.predict("unlabelled", 1, "short", "en", api_name="/generate_start")
    assert "started" in message
    deadline = time.time() + 120
    while time.time() < deadline:
        percent, status = client.predict(api_name="/generate_poll")
        if "**done**" in status or "**failed**" in status:
            break
        time.sleep(0.5)
    assert "**done**" in status and percent == 100, status
    from curation.views import image_captions

    source = f"model:{services.backbone_name()}"
    generated = {i for i in todo if any(c.source == source for c in image_captions(services.conn(), i))}
    assert generated == set(todo)
    lines = Path(services.generation.snapshot().output).read_text(encoding="utf-8").splitlines()
    assert lines and all(json.loads(line)["source"] == source for line in lines)
    assert services.queue_scorer.wait(120)  # the new captions are scored for the queue too
    _, model_id = services.scorer()
    assert all(c.score is not None for i in todo for c in image_captions(services.conn(), i, model_id))


def test_a_16_bit_image_is_shown_stretched(client, served, tmp_path):
    _, services = served
    from PIL import Image

    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 3000) + 100  # dark raw values of a 16-bit SAR tile
    Image.fromarray(ramp).save(services.image_root / "sar16.tif")
    upload = tmp_path / "sar.jsonl"
    upload.write_text(json.dumps({"image": "sar16.tif", "caption": "a radar tile"}) + "\n")
    client.predict("jsonl", "", gradio_client.handle_file(str(upload)), api_name="/import")
    from curation.store import find_image
    from ui.annotate import open_image

    image_id = find_image(services.conn(), "sar16.tif")
    record = client.predict("viewer", image_id, api_name="/open_image")
    assert record["image"] == "sar16.tif" and [c["text"] for c in record["captions"]] == ["a radar tile"]
    view = open_image(services, "viewer", None, image_id)  # what the Annotate tab shows (from Browse)
    shown = np.asarray(view.image.convert("RGB"))
    assert shown.shape[:2] == (64, 64) and shown.min() < 30 and shown.max() > 220  # stretched to the full range


def poll_generation(client, timeout: float = 120.0) -> tuple[float, str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        percent, status = client.predict(api_name="/generate_poll")
        if any(f"**{end}**" in status for end in ("done", "failed", "cancelled")):
            return percent, status
        time.sleep(0.5)
    raise AssertionError(f"generation did not end: {status}")


def test_an_image_that_cannot_be_shown_is_skipped_and_named(client, served):
    _, services = served
    from curation.queue import next_image
    from curation.store import get_image

    conn = services.conn()
    broken = next_image(conn, "unlucky")  # the image the queue gives this annotator first...
    rel = get_image(conn, broken).path
    path = services.image_path(rel)
    away = path.with_name(path.name + ".away")
    path.rename(away)  # ...is deleted from the image root
    try:
        out = start(client, "unlucky")
        assert image_id_of(out) != broken
        assert f"skipped image {broken}" in out[4] and rel in out[4]  # never a silent skip
        assert conn.execute("SELECT 1 FROM leases WHERE image_id = ?", (broken,)).fetchone() is None
        assert image_id_of(client.predict("unlucky", api_name="/skip")) != broken
    finally:
        away.rename(path)


def copy_of_a_demo_image(services, name: str) -> str:
    shutil.copy(services.image_root / "imgs" / "scene_01.png", services.image_root / "imgs" / name)
    return f"imgs/{name}"


def test_a_bad_stored_path_is_recorded_and_the_rest_is_scored(served):
    _, services = served
    from curation.store import add_caption, add_image, transaction
    from curation.views import image_captions

    conn, scorer = services.conn(), services.queue_scorer
    assert scorer.wait(120)
    bad = add_image(conn, copy_of_a_demo_image(services, "bad_path.png"))
    good = add_image(conn, copy_of_a_demo_image(services, "good_path.png"))
    for image_id in (bad, good):
        add_caption(conn, image_id, f"A caption of image {image_id}.", "import")
    with transaction(conn):  # a path that escapes the image root, as an old or hand-edited store may hold
        conn.execute("UPDATE images SET path = '../outside.png' WHERE id = ?", (bad,))
    try:
        scorer.start()
        assert scorer.wait(120)
        assert "outside" in scorer.failed[bad]
        assert all(c.score is not None for c in image_captions(conn, good, services.scorer()[1]))
    finally:
        with transaction(conn):
            conn.execute("UPDATE images SET path = 'imgs/bad_path.png' WHERE id = ?", (bad,))


def test_batch_generation_skips_an_unreadable_image_and_imports_the_rest(client, served):
    _, services = served
    from curation.store import add_caption, add_image
    from curation.views import image_captions

    corrupt = add_image(services.conn(), copy_of_a_demo_image(services, "corrupt.png"))
    add_caption(services.conn(), corrupt, "A scene whose file gets damaged.", "import")
    (services.image_root / "imgs" / "corrupt.png").write_bytes(b"not a png at all")
    try:
        from curation.views import ImageFilter, list_images

        todo = {row.id for row in list_images(services.conn(), ImageFilter(status="unlabelled"))} - {corrupt}
        assert "started" in client.predict("unlabelled", 1, "short", "en", api_name="/generate_start")
        percent, status = poll_generation(client)
        assert "**done**" in status and percent == 100, status
        assert "imgs/corrupt.png" in status and "imgs/corrupt.png" in services.generation.snapshot().skipped
        output = Path(services.generation.snapshot().output).read_text(encoding="utf-8").splitlines()
        written = {json.loads(line)["image"] for line in output}
        from curation.store import get_image

        assert written == {get_image(services.conn(), i).path for i in todo}  # every other image got captions
        source = f"model:{services.backbone_name()}"
        assert all(any(c.source == source for c in image_captions(services.conn(), i)) for i in todo)
    finally:
        copy_of_a_demo_image(services, "corrupt.png")


def finished_process():
    process = mp.get_context("spawn").Process(target=time.sleep, args=(0,))
    process.start()
    process.join()
    return process


def watched_job(services):
    """A run as the app lists it, whose training process has already ended."""
    from curation.models import add_training_run, update_training_run
    from loop.training import Job

    _, active = services.scorer()
    run_id = add_training_run(services.conn(), {"form": {}, "parent_model": active, "active_model": active})
    update_training_run(services.conn(), run_id, "running", {})
    job = Job(run_id=run_id, parent_model_id=active, active_model_id=active, auto_promote=False,
              process=finished_process(), stop_event=mp.get_context("spawn").Event())
    services.training.jobs[run_id] = job
    return job


class LateResult(queue.Queue):
    """The child's last event lands just after the monitor's timed ``get`` gave up."""

    def __init__(self, event: dict):
        super().__init__()
        self.late = event

    def get(self, block: bool = True, timeout: float | None = None):
        if self.late is not None:
            self.put(self.late)
            self.late = None
            raise queue.Empty
        return super().get(block, timeout)


def test_the_monitor_reads_a_result_that_arrives_as_the_process_ends(served):
    _, services = served
    from curation.models import get_training_run

    job = watched_job(services)
    services.training._monitor(job, LateResult({"event": "done", "checkpoint": "unused", "metrics": {"steps": 1},
                                                "cancelled": True}))
    assert job.status == "cancelled" and get_training_run(services.conn(), job.run_id).status == "cancelled"


def test_a_failure_while_recording_a_run_marks_it_failed_and_frees_the_slot(served):
    _, services = served
    from curation.models import get_training_run

    job = watched_job(services)
    events = queue.Queue()  # a finished run without its held-out evaluation: registering it fails
    events.put({"event": "done", "checkpoint": "unused", "metrics": {}, "cancelled": False})
    services.training._monitor(job, events)
    run = get_training_run(services.conn(), job.run_id)
    assert job.status == "failed" and run.status == "failed"
    assert "KeyError: 'evaluation'" in job.result["error"] and "KeyError" in run.metrics["error"]
    assert services.training.running() is None  # a new run may start


def linger_on_return(name: str, seconds: float):
    """A thread trace that holds every ``name`` frame for ``seconds`` as it returns (the thread stays alive)."""
    def trace(frame, event, arg):
        if event != "call" or frame.f_code.co_name != name:
            return None

        def local(frame, event, arg):
            if event == "return":
                time.sleep(seconds)
            return local
        return local
    return trace


def test_a_rescan_asked_for_as_the_scorer_thread_ends_is_not_lost(served):
    scorer = served[1].queue_scorer
    assert scorer.wait(120)
    time.sleep(0.2)  # the last scan's thread has ended
    threading.settrace(linger_on_return("_run", 0.5))  # widen the scorer thread's way out
    try:
        scorer.start()
        assert scorer.wait(10)  # its scan is over; the thread is on its way out
        scorer.start()  # e.g. an import or a promotion asks for a rescan just then
        assert scorer.wait(10), "the rescan asked for as the thread ended was lost"
    finally:
        threading.settrace(None)


def test_the_start_from_choices_follow_new_model_versions(served, tiny_checkpoint):
    _, services = served
    import gradio as gr

    from curation.models import add_model_version
    from ui.train import empty_shown, lora_field, poll, refresh_form

    first = poll(services, empty_shown())
    assert first[7]["choices"] and first[8]["bases"]
    assert poll(services, first[8])[7] == gr.skip()  # nothing new: the dropdown is left alone
    new = add_model_version(services.conn(), str(tiny_checkpoint), provenance={"kind": "checkpoint"})
    assert f"v{new}" in poll(services, first[8])[7]["choices"]  # e.g. a run ended
    assert f"v{new}" in refresh_form(services)[0]["choices"]  # the Train tab selected
    assert lora_field(services, f"v{new}")["value"] == 0 and "tiny" in lora_field(services, f"v{new}")["info"]


def running_blocks(port: int, timeout: float = 60.0):
    from gradio.blocks import Blocks

    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [b for b in Blocks.get_instances() if b.is_running and b.server_port == port]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no app is running on port {port}")


def test_python_app_py_scores_the_queue_at_launch_and_close_stops_the_scorer(tmp_path, tiny_checkpoint_session):
    import app
    from loop import AppConfig, Services

    services = Services(AppConfig(data_dir=tmp_path, image_root=DEMO, checkpoint=tiny_checkpoint_session,
                                  max_pixels=64 * 64))
    app.import_demo_if_empty(services)
    port = free_port()
    server = threading.Thread(target=app.launch, args=(services,), kwargs={"port": port, "quiet": True},
                              daemon=True)
    server.start()  # block=True, as `python app.py` runs it: launch returns only when the server closes
    try:
        scorer, deadline = services.queue_scorer, time.time() + 60
        while scorer.scored_images < 24 and time.time() < deadline:
            time.sleep(0.2)
        assert scorer.scored_images >= 24 and not scorer.pending(services.scorer()[1])  # with no request made
    finally:
        running_blocks(port).close()
        server.join(10)
        services.close()
    assert not server.is_alive() and not services.queue_scorer.running()
    services.queue_scorer.start()  # after close nothing starts it again
    assert not services.queue_scorer.running()


def _wait_for(client, status: str, timeout: float = 240.0) -> tuple:
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = client.predict(api_name="/train_poll")
        if f"**{status}**" in out[1]:
            return out
        assert "**failed**" not in out[1], out[4]
        time.sleep(1.0)
    raise AssertionError(f"training did not reach {status!r}: {out[1]}\n{out[4]}")


def train_args(steps: int, auto_promote: bool) -> tuple:
    return ("active model", "infonce+focal_triplet", 1.0, steps, 1e-3, 0, "all", 0.2, auto_promote)


def train(client, steps: int, auto_promote: bool) -> str:
    return client.predict(*train_args(steps, auto_promote), api_name="/train_start")


def train_twice_at_once(url: str, steps: int) -> list[str]:
    """Two browsers press Start at the same moment: the start messages, or the errors."""
    clients = [gradio_client.Client(url, verbose=False) for _ in range(2)]
    jobs = [c.submit(*train_args(steps, True), api_name="/train_start") for c in clients]
    answers = []
    for job in jobs:
        try:
            answers.append(job.result())
        except gradio_client.exceptions.AppError as error:
            answers.append(str(error))
    return answers


def held_out(out: tuple) -> dict[str, tuple[float, float]]:
    """The poll's evaluation table: metric → (active, new); the deciding metric is marked with a star."""
    return {row[0]: (row[1], row[2]) for row in out[5]["data"]}


@pytest.mark.slow
def test_train_cancel_then_auto_promote_then_promote_by_hand_and_roll_back(client, served):
    _, services = served
    from curation.models import active_model, get_model_version, list_training_runs

    before_model = active_model(services.conn()).id
    probe = start(client, "prober")
    probe_id, before_scores = image_id_of(probe), {row[2]: row[3] for row in table_rows(probe)}

    answers = train_twice_at_once(served[0], 200)  # only one run at a time, even when asked at once
    assert sorted("started" in a for a in answers) == [False, True] and any("still running" in a for a in answers)
    _wait_for(client, "running", 60)
    assert "cancel requested" in client.predict(api_name="/train_cancel")
    _wait_for(client, "cancelled")
    assert list_training_runs(services.conn())[-1].status == "cancelled"

    # a few steps at a high rate: the tiny model beats the untrained one on the held-out image, and the
    # watcher promotes it on its own, recording the decision and both numbers of the deciding metric
    train(client, 4, auto_promote=True)
    out = _wait_for(client, "done")
    active, new = held_out(out)["mean_accuracy *"]
    assert out[0] == 100 and new > active, held_out(out)
    new_model = active_model(services.conn()).id
    assert new_model != before_model and f"auto-promoted: v{new_model} is now active" in out[1]
    assert f"mean_accuracy {new:.4f} > {active:.4f} of v{before_model}" in out[1]
    promotion = get_model_version(services.conn(), new_model).provenance["promotion"]
    assert promotion["auto_promoted"] and promotion["metric"] == "mean_accuracy"
    assert (round(promotion["new"], 4), round(promotion["active"], 4)) == (new, active)
    assert list_training_runs(services.conn())[-1].metrics["promotion"]["promoted"] is True
    after = client.predict("prober", probe_id, api_name="/open_image")
    after_scores = {c["text"]: round(c["score"], 4) for c in after["captions"]}
    assert after_scores.keys() == before_scores.keys() and after_scores != before_scores
    assert after["model_version"] == new_model

    train(client, 2, auto_promote=False)  # left for the Promote button, and the status line says why
    out = _wait_for(client, "done")
    assert active_model(services.conn()).id == new_model and "automatic promotion is off" in out[1]
    active, new = held_out(out)["mean_accuracy *"]
    assert f"mean_accuracy {new:.4f} (new) vs {active:.4f} (active v{new_model})" in out[1]
    message = client.predict(api_name="/train_promote")
    by_hand = active_model(services.conn()).id
    assert by_hand not in (before_model, new_model) and f"v{by_hand}" in message
    assert get_model_version(services.conn(), by_hand).provenance["promotion"]["auto_promoted"] is False

    table, message = client.predict(before_model, api_name="/rollback")
    assert active_model(services.conn()).id == before_model and f"v{before_model}" in message
