"""``python app.py`` options: safe defaults, --demo, and the auth file."""

from __future__ import annotations

import pytest

import app


def test_defaults_listen_on_localhost_and_demo_uses_the_shipped_scenes():
    args = app.parse_args(["--demo"])
    assert args.host == "127.0.0.1" and args.port == 7860 and args.model == "tiny"
    assert args.image_root == app.DEMO_IMAGES and args.data_dir == app.DEMO_DATA
    assert (app.DEMO_IMAGES / "triplets.json").is_file()


def test_an_image_root_is_required_outside_the_demo():
    with pytest.raises(SystemExit):
        app.parse_args([])


def test_auth_accounts_and_roles_come_from_the_flag_and_the_file(tmp_path):
    from loop.access import Account

    users = tmp_path / "users.txt"
    users.write_text("# annotators\nann:secret\n\nbob:pa:ss\nrev:r:reviewer\ncarol:c:x:admin\n")
    args = app.parse_args(["--image-root", str(tmp_path), "--auth", "boss:x", "--auth-file", str(users)])
    assert sorted(app.read_auth(args).accounts.values(), key=lambda a: a.user) == [
        Account("ann", "secret", "annotator"), Account("bob", "pa:ss", "annotator"),  # no role: annotator
        Account("boss", "x", "admin"), Account("carol", "c:x", "admin"), Account("rev", "r", "reviewer")]
    assert app.read_auth(app.parse_args(["--image-root", str(tmp_path)])) is None  # no auth: open app
    users.write_text("ann:secret\nann:other\n")
    with pytest.raises(ValueError, match="'ann' is listed twice"):
        app.read_auth(app.parse_args(["--image-root", str(tmp_path), "--auth-file", str(users)]))
    users.write_text("# annotators\n\nann:secret\nno-colon\n")
    with pytest.raises(ValueError, match=r"users\.txt:4: auth entry is not USER:PASS"):  # FILE:line
        app.read_auth(app.parse_args(["--image-root", str(tmp_path), "--auth-file", str(users)]))
    with pytest.raises(ValueError, match="^--auth: auth entry"):
        app.read_auth(app.parse_args(["--image-root", str(tmp_path), "--auth", "admin"]))


def test_a_bad_auth_file_fails_before_the_app_is_built(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("ann:secret\n:nouser\n")
    data = tmp_path / "data"
    with pytest.raises(SystemExit, match=r"^app\.py: .*users\.txt:2"):  # one line, no traceback
        app.main(["--image-root", str(tmp_path), "--data-dir", str(data), "--auth-file", str(users)])
    assert not data.exists()  # no store opened, no model loaded
    with pytest.raises(SystemExit, match="--auth-file"):
        app.main(["--image-root", str(tmp_path), "--data-dir", str(data), "--auth-file", str(tmp_path / "none")])
    assert not data.exists()


def test_the_generation_length_defaults_to_the_library_s(tmp_path):
    from loop import GenerateForm
    from scorer.generation import GenerationSettings

    default = GenerationSettings().max_new_tokens
    assert app.app_config(app.parse_args(["--demo"])).max_new_tokens == default
    assert GenerateForm().max_new_tokens == default
    assert app.app_config(app.parse_args(["--demo", "--max-new-tokens", "7"])).max_new_tokens == 7
