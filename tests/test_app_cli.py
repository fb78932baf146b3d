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


def test_auth_pairs_come_from_the_flag_and_the_file(tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("# annotators\nann:secret\n\nbob:pa:ss\n")
    args = app.parse_args(["--image-root", str(tmp_path), "--auth", "admin:x", "--auth-file", str(users)])
    assert app.read_auth(args) == [("admin", "x"), ("ann", "secret"), ("bob", "pa:ss")]
    users.write_text("no-colon\n")
    with pytest.raises(ValueError, match="entry 1"):
        app.read_auth(app.parse_args(["--image-root", str(tmp_path), "--auth-file", str(users)]))
