"""inference_script.py end to end on real UC Merced images: single, batch, --rank, bad input, accelerate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from project_paths import ROOT

import inference_script

IMAGES = ["imgs/1.png", "imgs/101.png", "imgs/3.png"]


def _run(argv, capsys):
    code = inference_script.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_single_pair_prints_the_cosine(tiny_checkpoint_session, ucm_dir, capsys):
    code, out, _ = _run(["--checkpoint", str(tiny_checkpoint_session), "--image_path", str(ucm_dir / IMAGES[0]),
                         "--text", "a green farmland"], capsys)
    assert code == 0
    score = float(out.strip().splitlines()[-1].split(":")[1])
    assert -1.0 <= score <= 1.0


def test_batch_mode_keeps_records_and_adds_scores(tiny_checkpoint_session, tiny_scorer, ucm_dir, tmp_path, capsys):
    records = [{"image_path": image, "text": text, "id": n}
               for n, (image, text) in enumerate([(IMAGES[0], "farmland"), (IMAGES[1], "two planes"),
                                                  (IMAGES[0], "two planes")])]
    (tmp_path / "in.json").write_text(json.dumps(records))
    code, _, _ = _run(["--checkpoint", str(tiny_checkpoint_session), "--json_input", str(tmp_path / "in.json"),
                       "--json_output", str(tmp_path / "out.json"), "--image_root", str(ucm_dir)], capsys)
    assert code == 0
    results = json.loads((tmp_path / "out.json").read_text())
    assert [r["id"] for r in results] == [0, 1, 2]
    expected = tiny_scorer.score_pairs([(str(ucm_dir / r["image_path"]), r["text"]) for r in records])
    assert [r["similarity_score"] for r in results] == pytest.approx(expected, abs=1e-5)
    assert results[1]["similarity_score"] != results[2]["similarity_score"]


def test_rank_mode_sorts_each_images_captions(tiny_checkpoint_session, ucm_triplets, ucm_dir, tmp_path, capsys):
    items = [{"image": t["image"], "captions": [t["pos"], *t["negs"]]} for t in ucm_triplets[:3]]
    (tmp_path / "items.json").write_text(json.dumps(items))
    code, out, _ = _run(["--checkpoint", str(tiny_checkpoint_session), "--rank", "--json_input",
                         str(tmp_path / "items.json"), "--image_root", str(ucm_dir), "--batch_size", "4"], capsys)
    assert code == 0
    results = json.loads(out)
    for item, result in zip(items, results):
        scores = [c["score"] for c in result["captions"]]
        assert scores == sorted(scores, reverse=True)
        assert sorted(c["text"] for c in result["captions"]) == sorted(item["captions"])
        assert result["best"] == result["captions"][0]


@pytest.mark.parametrize(("records", "message"), [
    ([{"image_path": "imgs/1.png", "text": "ok"}, {"image_path": "imgs/missing.png", "text": "x"}],
     "record 1: image file not found: .*missing.png"),
    ([{"image_path": "imgs/1.png", "text": ""}], "record 0: field 'text' must be a non-empty string"),
    ([{"image_path": "imgs/1.png"}], "record 0: field 'text'"),
    (["not an object"], "record 0: expected an object"),
    ([{"image_path": "../../../etc/passwd", "text": "x"}], "record 0: .*outside the image root"),
    ({"image_path": "imgs/1.png"}, "expected a JSON list"),
])
def test_bad_input_names_the_record_and_exits_non_zero(tiny_checkpoint_session, ucm_dir, tmp_path, capsys,
                                                        records, message):
    import re

    (tmp_path / "bad.json").write_text(json.dumps(records))
    code, _, err = _run(["--checkpoint", str(tiny_checkpoint_session), "--json_input", str(tmp_path / "bad.json"),
                         "--image_root", str(ucm_dir)], capsys)
    assert code == inference_script.EXIT_BAD_INPUT
    assert re.search(message, err), err
    assert "bad.json" in err or "record" in err


def test_unreadable_image_is_named_not_scored_zero(tiny_checkpoint_session, tmp_path, capsys):
    (tmp_path / "ok.png").write_bytes((ROOT / "tests" / "conftest.py").read_bytes())  # not an image
    records = [{"image_path": "ok.png", "text": "x"}]
    (tmp_path / "in.json").write_text(json.dumps(records))
    code, out, err = _run(["--checkpoint", str(tiny_checkpoint_session), "--json_input", str(tmp_path / "in.json"),
                           "--image_root", str(tmp_path)], capsys)
    assert code == inference_script.EXIT_BAD_INPUT
    assert "record 0" in err and "ok.png" in err and "similarity_score" not in out


def test_invalid_json_is_named(tiny_checkpoint_session, tmp_path, capsys):
    (tmp_path / "broken.json").write_text("[{")
    code, _, err = _run(["--checkpoint", str(tiny_checkpoint_session), "--json_input",
                         str(tmp_path / "broken.json")], capsys)
    assert code == 2 and "broken.json: not valid JSON" in err


@pytest.mark.slow
def test_accelerate_two_processes_write_results_in_input_order(tiny_checkpoint_session, ucm_triplets, ucm_dir,
                                                                tmp_path):
    records = [{"image_path": t["image"], "text": text} for t in ucm_triplets[:4] for text in (t["pos"], t["negs"][0])]
    (tmp_path / "in.json").write_text(json.dumps(records))
    common = ["--checkpoint", str(tiny_checkpoint_session), "--json_input", str(tmp_path / "in.json"),
              "--image_root", str(ucm_dir)]
    # accelerate 1.15: `--cpu --num_processes 2` alone starts ONE process (it expects MPI for multi-CPU);
    # DDP over CPU processes is `--multi_gpu` with ACCELERATE_USE_CPU=1.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "1"}
    launched = subprocess.run([*launch, str(ROOT / "inference_script.py"), *common, "--json_output",
                               str(tmp_path / "two.json")], check=True, env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
    assert "process 0/2 scored 4 records" in launched.stderr and "process 1/2 scored 4 records" in launched.stderr
    subprocess.run([sys.executable, str(ROOT / "inference_script.py"), *common, "--json_output",
                    str(tmp_path / "one.json")], check=True, env=env, cwd=ROOT, capture_output=True, timeout=300)
    two = json.loads((tmp_path / "two.json").read_text())
    one = json.loads((tmp_path / "one.json").read_text())
    assert [r["text"] for r in two] == [r["text"] for r in records]
    assert [r["similarity_score"] for r in two] == pytest.approx([r["similarity_score"] for r in one], abs=1e-5)


@pytest.mark.slow
def test_accelerate_two_processes_stop_together_on_an_unreadable_image(tiny_checkpoint_session, ucm_dir, tmp_path):
    (tmp_path / "imgs").mkdir()
    for name in ("1.png", "101.png", "3.png"):
        (tmp_path / "imgs" / name).write_bytes((ucm_dir / "imgs" / name).read_bytes())
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    records = [{"image_path": f"imgs/{name}", "text": "x"} for name in ("1.png", "101.png", "3.png", "broken.png")]
    (tmp_path / "in.json").write_text(json.dumps(records))
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run([*launch, str(ROOT / "inference_script.py"), "--checkpoint", str(tiny_checkpoint_session),
                           "--json_input", str(tmp_path / "in.json"), "--image_root", str(tmp_path),
                           "--json_output", str(tmp_path / "out.json")],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)  # a hang fails here
    assert done.returncode != 0
    assert "record 3" in done.stderr and "broken.png" in done.stderr
    assert not (tmp_path / "out.json").exists()
