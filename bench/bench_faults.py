"""Benchmark: no confirmed decision is lost when the app is killed (SIGKILL) twice during a training run.

``python bench/bench_faults.py [--annotators 8] [--decisions 100] [--kills 2]``

Starts ``python app.py`` (tiny model) on a fresh store of ``--copies`` copies of the demo scenes, starts a long training
run, and lets ``--annotators`` API clients (gradio_client, one thread each) accept or reject captions until
each has ``--decisions`` confirmed decisions (an answer came back). The app is killed with SIGKILL
``--kills`` times at even intervals and restarted; clients retry after a failed call. At the end it
compares the confirmed decisions with the store, prints confirmed, stored and lost decisions, whether a
training process outlived a killed app, and ``PRAGMA integrity_check``; the last line is ``lost=<n>``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


DEMO = ROOT / "assets" / "demo"


def build_store(work: Path, copies: int) -> Path:
    """An image root of ``copies`` copies of the demo scenes, imported into ``work/data``; returns the root."""
    from curation.importers import ImportOptions, import_file
    from curation.store import open_store

    images, records = work / "images", json.loads((DEMO / "triplets.json").read_text(encoding="utf-8"))
    for n in range(copies):
        shutil.copytree(DEMO / "imgs", images / f"set{n}" / "imgs")
    triplets = [{**r, "image": f"set{n}/{r['image']}"} for n in range(copies) for r in records]
    (work / "triplets.json").write_text(json.dumps(triplets), encoding="utf-8")
    (work / "data").mkdir()
    conn = open_store(work / "data" / "store.sqlite")
    import_file(conn, "seed-triplets", work / "triplets.json", ImportOptions(image_root=images))
    conn.close()
    return images


def start_app(work: Path, port: int, checkpoint: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "app.py", "--checkpoint", str(checkpoint), "--image-root",
                             str(work / "images"), "--data-dir", str(work / "data"), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(work / "app.log", "ab"))


def connect(url: str, timeout: float = 300.0):
    import gradio_client

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return gradio_client.Client(url, verbose=False)
        except Exception:  # noqa: BLE001 - the app is (re)starting
            time.sleep(1.0)
    raise RuntimeError(f"the app at {url} did not come up in {timeout:.0f} s")


def shown(view: tuple) -> tuple[int | None, str | None, bool]:
    """(image id, text of the selected caption, whether it is the last row) of an Annotate view."""
    info, rows = view[1], view[2]["data"]
    if "**Image " not in info or not rows:
        return None, None, True
    image_id = int(info.split("**Image ")[1].split("**")[0])
    selected = next((n for n, row in enumerate(rows) if row[0] == "▶"), 0)
    return image_id, rows[selected][2], selected == len(rows) - 1


def annotator(url: str, name: str, wanted: int, confirmed: list, progress: tqdm, stop: threading.Event) -> None:
    """Decide until ``wanted`` decisions are confirmed (an answer came back): (annotator, image, caption, verdict)."""
    client, view, mine = None, None, 0
    while mine < wanted and not stop.is_set():
        try:
            client = client or connect(url)
            if view is None:
                view = client.predict(name, api_name="/start")[1:]
            image_id, text, last = shown(view)
            if image_id is None:
                return  # the queue is empty for this annotator
            verdict = "accept" if mine % 3 else "reject"
            view = client.predict(name, api_name=f"/{verdict}")
            confirmed.append((name, image_id, text, verdict))
            mine += 1
            progress.update(1)
            if last:
                view = client.predict(name, api_name="/skip")
        except Exception:  # noqa: BLE001 - the app was killed: reconnect and carry on
            client, view = None, None
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--decisions", type=int, default=100)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--copies", type=int, default=10, help="copies of the 24 demo scenes in the store")
    parser.add_argument("--checkpoint", type=Path, help="scorer checkpoint (default: a fresh tiny one)")
    args = parser.parse_args()
    os.environ.setdefault("REMOTE_SCORER_CACHE", str(ROOT / ".cache" / "remote_scorer"))
    import psutil
    from app_server import free_port

    work = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    checkpoint = args.checkpoint
    if checkpoint is None:
        from scorer import new_scorer, save_checkpoint

        model, processor = new_scorer("tiny", dtype="float32")
        checkpoint = work / "tiny"
        save_checkpoint(model, processor, checkpoint, save_backbone=True)
    build_store(work, args.copies)
    data, port = work / "data", free_port()
    url = f"http://127.0.0.1:{port}/"
    server = start_app(work, port, checkpoint)
    train_args = ("active model", "infonce+focal_triplet", 1.0, 100_000, 1e-4, 0, "all", 0.2, False)
    connect(url).predict(*train_args, api_name="/train_start")
    confirmed: list[tuple[str, int, str, str]] = []
    total = args.annotators * args.decisions
    stop, started = threading.Event(), time.time()
    with tqdm(total=total, desc="confirmed decisions") as progress:
        threads = [threading.Thread(target=annotator, args=(url, f"bench{n}", args.decisions, confirmed, progress,
                                                            stop), daemon=True) for n in range(args.annotators)]
        for thread in threads:
            thread.start()
        kills, orphans = 0, 0
        while any(t.is_alive() for t in threads) and time.time() - started < 1800:
            if kills < args.kills and len(confirmed) >= total * (kills + 1) / (args.kills + 1):
                children = psutil.Process(server.pid).children(recursive=True)
                server.send_signal(signal.SIGKILL)
                server.wait()
                kills += 1
                time.sleep(10)  # the training child must be gone by now
                orphans += sum(1 for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE)
                server = start_app(work, port, checkpoint)
                connect(url).predict(*train_args, api_name="/train_start")  # training goes on after the restart
            time.sleep(0.5)
        stop.set()
    server.send_signal(signal.SIGKILL)
    server.wait()
    conn = sqlite3.connect(data / "store.sqlite")
    stored = set(conn.execute("SELECT d.annotator, d.image_id, c.text, d.verdict FROM decisions d"
                              " JOIN captions c ON c.id = d.caption_id WHERE d.verdict != 'undo'"))
    lost = [c for c in confirmed if c not in stored]
    runs = conn.execute("SELECT status, count(*) FROM training_runs GROUP BY status").fetchall()
    print(f"annotators={args.annotators} decisions each={args.decisions} kills={kills} "
          f"seconds={time.time() - started:.0f}")
    print(f"confirmed={len(confirmed)} stored={len(stored)} (distinct) training runs={dict(runs)} "
          f"orphan training processes={orphans}")
    print(f"integrity_check={conn.execute('PRAGMA integrity_check').fetchone()[0]}")
    print(f"lost={len(lost)}")


if __name__ == "__main__":
    main()
