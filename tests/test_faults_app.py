"""Faults against a served app: identity and roles with --auth, SIGKILL of the app while it trains."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from app_server import free_port

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"

gradio_client = pytest.importorskip("gradio_client")
AppError = gradio_client.exceptions.AppError


@pytest.fixture(scope="module")
def served_with_auth(tmp_path_factory, tiny_checkpoint_session):
    import app
    from loop import AppConfig, Services
    from loop.access import Access, Account

    root = tmp_path_factory.mktemp("auth-images") / "demo"
    shutil.copytree(DEMO, root)
    access = Access([Account("alice", "s3cret"), Account("bob", "b0b"), Account("root", "adm1n", "admin")])
    services = Services(AppConfig(data_dir=tmp_path_factory.mktemp("auth-data"), image_root=root,
                                  checkpoint=tiny_checkpoint_session, max_pixels=64 * 64), access)
    app.import_demo_if_empty(services)
    port = free_port()
    demo = app.launch(services, port=port, block=False, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", services
    finally:
        services.close()
        demo.close()


def decisions_by(services, annotator: str) -> int:
    return services.conn().execute("SELECT count(*) FROM decisions WHERE annotator = ?", (annotator,)).fetchone()[0]


def test_logged_in_as_alice_nothing_can_be_decided_or_undone_as_bob(served_with_auth):
    url, services = served_with_auth
    bob = gradio_client.Client(url, auth=("bob", "b0b"), verbose=False)
    bob.predict("bob", api_name="/start")
    bob.predict("bob", api_name="/accept")
    bobs = decisions_by(services, "bob")
    assert bobs == 1
    alice = gradio_client.Client(url, auth=("alice", "s3cret"), verbose=False)
    out = alice.predict("bob", api_name="/start")  # the name she gives is ignored
    alice.predict("bob", api_name="/accept")
    alice.predict("bob", api_name="/reject")
    assert decisions_by(services, "alice") == 2 and decisions_by(services, "bob") == bobs
    alice.predict("bob", api_name="/undo")  # undoes her own latest, never bob's
    undone = services.conn().execute("SELECT d.annotator FROM decisions u JOIN decisions d ON u.undoes = d.id"
                                     " WHERE u.verdict = 'undo'").fetchall()
    assert [row[0] for row in undone] == ["alice"]
    assert "mine **0**" in str(out[4])  # her counters, not bob's (he has one decision)
    leases = dict(services.conn().execute("SELECT image_id, annotator FROM leases").fetchall())
    assert "alice" in leases.values()


def test_with_roles_an_annotator_cannot_import_train_promote_or_roll_back(served_with_auth):
    url, services = served_with_auth
    alice = gradio_client.Client(url, auth=("alice", "s3cret"), verbose=False)
    calls = {"/import": ("seed-triplets", "triplets.json", None),
             "/train_start": ("active model", "infonce+focal_triplet", 1.0, 2, 1e-3, 0, "all", 0.2, True),
             "/train_cancel": (), "/train_promote": (), "/rollback": (1,), "/generate_start": ("unlabelled", 1,
                                                                                              "detailed", "en")}
    runs = services.conn().execute("SELECT count(*) FROM training_runs").fetchone()[0]
    for api, args in calls.items():
        with pytest.raises(AppError, match="needs the admin role; alice is annotator"):
            alice.predict(*args, api_name=api)
    assert services.conn().execute("SELECT count(*) FROM training_runs").fetchone()[0] == runs
    admin = gradio_client.Client(url, auth=("root", "adm1n"), verbose=False)
    summary, _ = admin.predict("seed-triplets", "triplets.json", None, api_name="/import")
    assert "skipped" in summary or "added" in summary or "images" in summary


def test_wrong_passwords_are_throttled_per_user_and_client_address(served_with_auth):
    url, services = served_with_auth
    import httpx

    answers = [httpx.post(f"{url}login", data={"username": "bob", "password": f"guess{n}"}).status_code
               for n in range(8)]
    assert set(answers) == {400}
    ok = httpx.post(f"{url}login", data={"username": "bob", "password": "b0b"})
    assert ok.status_code == 400  # locked for a while: the right password is refused too
    throttle = services.access.throttle
    assert throttle.failures["addr:127.0.0.1"] >= 5 and throttle.failures["user:bob"] >= 5
    throttle.failures.clear()  # the other tests log in from the same address
    throttle.locked_until.clear()


def test_errors_shown_to_a_browser_have_no_server_paths(served_with_auth):
    url, services = served_with_auth
    admin = gradio_client.Client(url, auth=("root", "adm1n"), verbose=False)
    with pytest.raises(AppError) as error:
        admin.predict("seed-triplets", "nothing/here.json", None, api_name="/import")
    assert "nothing/here.json" in str(error.value) and str(services.image_root) not in str(error.value)


def wait_for_process(db: Path, timeout: float) -> dict:
    from curation.models import list_training_runs
    from curation.store import open_store

    deadline = time.time() + timeout
    while time.time() < deadline:
        conn = open_store(db, read_only=True) if db.exists() else None
        runs = list_training_runs(conn) if conn else []
        if runs and runs[-1].status == "running" and "process" in runs[-1].metrics:
            conn.close()
            return runs[-1].metrics["process"]
        if conn:
            conn.close()
        time.sleep(0.5)
    raise AssertionError("no training run started")


@pytest.mark.slow
def test_sigkill_of_the_app_while_training_leaves_no_process_and_an_interrupted_run(tmp_path,
                                                                                    tiny_checkpoint_session):
    from curation.models import list_training_runs
    from loop import AppConfig, Services

    data, port = tmp_path / "data", free_port()
    server = subprocess.Popen([sys.executable, "app.py", "--demo", "--no-demo-training",  # this test starts its run
                               "--checkpoint", str(tiny_checkpoint_session), "--data-dir", str(data),
                               "--port", str(port)], cwd=ROOT, env={**os.environ},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = None
        deadline = time.time() + 180
        while client is None and time.time() < deadline:
            try:
                client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(1.0)
        client.predict("active model", "infonce+focal_triplet", 1.0, 5000, 1e-3, 0, "all", 0.2, False,
                       api_name="/train_start")
        identity = wait_for_process(data / "store.sqlite", 120)
        child = psutil.Process(identity["pid"])
        assert child.create_time() == pytest.approx(identity["create_time"], abs=0.01)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        from test_faults import ended

        assert ended(child, 10), "the training process outlived the app"
    finally:
        server.kill()
    services = Services(AppConfig(data_dir=data, image_root=DEMO, checkpoint=tiny_checkpoint_session))
    try:
        run = list_training_runs(services.conn())[-1]
        assert run.status == "interrupted" and services.training.snapshot().status == "interrupted"
    finally:
        services.close()
