"""Faults without a server: login throttle and roles, a training process that outlives its app, runs left
running, a store that could not write, messages that name the item without server paths, train.py's exit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from loop.access import FREE_FAILURES, MAX_LOCK_S, Access, AccessDeniedError, Account, LoginThrottle

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def access_with_clock() -> tuple[Access, Clock]:
    clock = Clock()
    accounts = [Account("alice", "s3cret"), Account("root", "pw", "admin"), Account("rev", "r", "reviewer")]
    return Access(accounts, LoginThrottle(clock=clock)), clock


def test_failed_logins_lock_the_user_and_the_address_with_a_doubling_delay():
    access, clock = access_with_clock()
    for _ in range(FREE_FAILURES):
        assert not access.login("alice", "guess", "10.0.0.1")
    assert not access.login("alice", "s3cret", "10.0.0.2")  # locked: even the right password is refused
    clock.now += 1.01  # 1 s after the 5th failure
    assert access.login("alice", "s3cret", "10.0.0.2")  # the success clears the user's count
    keys = ["user:alice", "addr:10.0.0.1"]
    for n in range(50):  # 50 guesses as fast as the lock allows: refused ones are never checked
        assert not access.login("alice", f"guess{n}", "10.0.0.1")
        clock.now += 0.1
    assert access.throttle.failures["user:alice"] < 10
    for n in range(10):  # each guess once its lock ended: the delay doubles up to the cap
        clock.now += access.throttle.wait_s(keys) + 0.01
        assert not access.login("alice", f"more{n}", "10.0.0.1")
    assert access.throttle.wait_s(["user:alice"]) == MAX_LOCK_S
    checked = []
    access.accounts["alice"] = type("Spy", (), {"password": property(lambda s: checked.append(1) or "x")})()
    access.login("alice", "x", "10.0.0.3")
    assert not checked  # while locked the password is not even compared
    assert not access.login("root", "pw", "10.0.0.1")  # the guessing address is locked for every user
    assert access.login("root", "pw", "10.0.0.9")


def test_roles_allow_admin_actions_to_admins_only_and_everything_without_accounts():
    access, _ = access_with_clock()
    for action in ("import", "train", "promote", "rollback", "delete"):
        access.require("root", action)
        for user in ("alice", "rev"):
            with pytest.raises(AccessDeniedError, match=f"{action} needs the admin role; {user} is"):
                access.require(user, action)
    for action in ("hide", "resolve"):  # cleanup and review: reviewers and admins
        access.require("root", action)
        access.require("rev", action)
        with pytest.raises(AccessDeniedError, match=f"{action} needs the reviewer or admin role; alice is"):
            access.require("alice", action)
    access.require("alice", "annotate")
    with pytest.raises(AccessDeniedError, match="not logged in"):
        access.require(None, "train")
    open_app = Access()
    assert not open_app.enabled and open_app.role(None) == "admin"
    open_app.require(None, "train")
    with pytest.raises(ValueError, match="role 'boss' is not one of"):
        Account("x", "y", "boss")


def test_what_a_browser_sees_names_the_item_without_server_paths(tmp_path):
    from ui.common import public_text, publish_roots, storage_message

    images, data = tmp_path / "images", tmp_path / "data"
    publish_roots(images, data)
    text = (f"image {images}/scenes/a.png cannot be read: symlink to /etc/secret/key.pem; "
            f"store {data}/store.sqlite; 3/4 done")
    shown = public_text(text)
    assert "scenes/a.png" in shown and str(tmp_path) not in shown and "/etc" not in shown
    assert "…/key.pem" in shown and "data/store.sqlite" in shown and "3/4 done" in shown
    import sqlite3

    assert storage_message(sqlite3.OperationalError("database or disk is full")).startswith("disk full")
    assert storage_message(OSError(28, "No space left on device")).startswith("disk full")
    assert "read-only" in storage_message(sqlite3.OperationalError("attempt to write a readonly database"))


def test_a_store_connection_that_failed_to_write_is_reopened(tmp_path):
    """Read-only, then writable again: the next write succeeds without a restart."""
    from curation.store import add_image, transaction
    from loop.services import Services

    services = Services.__new__(Services)  # only the store part: no model
    services.config = type("Config", (), {"db_path": tmp_path / "store.sqlite"})()
    services.read_only, services._local = False, __import__("threading").local()
    add_image(services.conn(), "a.png")
    first = services.conn()
    with pytest.raises(__import__("sqlite3").OperationalError):
        with transaction(first):  # what a read-only folder or a full disk does to a write
            first.execute("INSERT INTO images(path, created_at) VALUES ('b.png', 'now')")
            raise __import__("sqlite3").OperationalError("attempt to write a readonly database")
    assert first.failed_write
    second = services.conn()
    assert second is not first and not second.failed_write
    add_image(second, "c.png")
    assert [r[0] for r in second.execute("SELECT path FROM images ORDER BY id")] == ["a.png", "c.png"]


READ_ONLY_THEN_WRITABLE = """
import subprocess, sqlite3, sys, threading
from pathlib import Path
from curation.store import add_image
from loop.services import Services

folder = Path(sys.argv[1])
def remount(mode):  # root ignores file modes: a read-only bind mount binds root too (EROFS)
    subprocess.run(["mount", "-o", f"remount,{mode},bind", str(folder), str(folder)], check=True)

services = Services.__new__(Services)  # only the store part: no model
services.config = type("Config", (), {"db_path": folder / "store.sqlite"})()
services.read_only, services._local = False, threading.local()
add_image(services.conn(), "a.png")
services.close_conn()  # the kernel refuses to remount a folder read-only while a file in it is open for writing
remount("ro")
failed = 0
for n in range(3):
    try:
        add_image(services.conn(), f"ro{n}.png")
    except sqlite3.OperationalError:
        failed += 1
remount("rw")
for n in range(20):  # every later write succeeds, on the same Services: no restart
    add_image(services.conn(), f"w{n}.png")
print(failed, services.conn().execute("SELECT count(*) FROM images").fetchone()[0])
"""


def test_a_read_only_folder_then_writable_again_without_a_restart(tmp_path):
    """The folder turns read-only under a running app, then writable again: later writes all succeed."""
    folder = tmp_path / "data"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to bind-mount the folder read-only (file modes cannot be flipped mid-test here)")
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("no unshare/mount: cannot make a folder read-only for root")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind '{folder}' '{folder}'"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")
    script = tmp_path / "read_only_then_writable.py"
    script.write_text(READ_ONLY_THEN_WRITABLE)
    done = subprocess.run(["unshare", "-m", "sh", "-c",
                           f"mount --bind '{folder}' '{folder}' && exec '{sys.executable}' '{script}' '{folder}'"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    failed, count = map(int, done.stdout.split())
    assert failed == 3  # the check is real: while read-only every write failed
    assert count == 21  # a.png + the 20 written after the folder became writable again


def ended(process: psutil.Process, timeout: float) -> bool:
    """Whether ``process`` ends within ``timeout`` s (a zombie, waiting to be reaped, holds nothing: ended)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


MIDDLE = textwrap.dedent("""
    import multiprocessing as mp, sys, time
    from loop.train_worker import watch_parent

    def child(parent_pid, lifeline):
        watch_parent(parent_pid, lifeline, poll_s=0.2)
        time.sleep(120)

    if __name__ == "__main__":
        context = mp.get_context(sys.argv[1])
        lifeline, keep = context.Pipe(duplex=False)
        import os
        process = context.Process(target=child, args=(os.getpid(), lifeline), daemon=True)
        process.start()
        lifeline.close()
        print(process.pid, flush=True)
        time.sleep(120)
""")


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_a_training_process_exits_when_its_app_is_killed(tmp_path, method):
    """PR_SET_PDEATHSIG alone would not do: the watchdog works for every start method."""
    script = tmp_path / "middle.py"
    script.write_text(MIDDLE)
    app = subprocess.Popen([sys.executable, str(script), method], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        child = psutil.Process(int(app.stdout.readline()))
        time.sleep(1.0)
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        app.send_signal(signal.SIGKILL)
        app.wait(10)
        assert ended(child, 10), f"the {method} child outlived its app"
    finally:
        app.kill()


def test_runs_left_running_are_marked_interrupted_and_their_process_ended(tmp_path):
    from curation.models import add_training_run, get_training_run, update_training_run
    from curation.store import open_store
    from loop.training import TrainingJobs, process_identity

    conn = open_store(tmp_path / "store.sqlite")
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        alive = add_training_run(conn, {})
        update_training_run(conn, alive, "running", {"process": process_identity(orphan.pid)})
        recycled = add_training_run(conn, {})  # its pid now names another process: never killed
        update_training_run(conn, recycled, "running", {"process": {"pid": os.getpid(), "create_time": 1.0}})
        done = add_training_run(conn, {})
        update_training_run(conn, done, "done")
        jobs = TrainingJobs(type("S", (), {"conn": lambda self: conn})())
        assert jobs.recover_interrupted() == [alive, recycled]
        assert orphan.wait(10) is not None
        assert get_training_run(conn, alive).status == "interrupted"
        assert get_training_run(conn, alive).metrics["interrupted"] == {"process_ended": True}
        assert get_training_run(conn, recycled).metrics["interrupted"] == {"process_ended": False}
        assert get_training_run(conn, done).status == "done"
        assert jobs.snapshot().status == "done" and jobs.snapshot(alive).status == "interrupted"
    finally:
        orphan.kill()


def test_train_py_reports_bad_input_in_one_line_and_exits_2(tmp_path):
    missing = tmp_path / "none.json"
    result = subprocess.run([sys.executable, "train.py", "--config", "configs/tiny_ucm.yaml", "--train_file",
                             str(missing), "--image_root", str(tmp_path), "--output_dir", str(tmp_path / "o")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: ") and "none.json" in last
