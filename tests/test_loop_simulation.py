"""bench/loop_simulation.py: the queue's strategies, the learning-curve area, and a quick run on the demo set."""

from __future__ import annotations

import importlib
import json
import math
import sys
from pathlib import Path

import pytest

from curation.importers import ImportOptions, import_file
from curation.queue import QueueOptions, next_image
from curation.store import open_store

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"


def load_simulation():
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))  # the simulation's spawned workers import it by name
    return importlib.import_module("loop_simulation")


def demo_store(path: Path):
    conn = open_store(path)
    import_file(conn, "seed-triplets", DEMO / "triplets.json", ImportOptions(image_root=DEMO))
    return conn


def handed_out(conn, options: QueueOptions, annotator: str, n: int) -> list[int]:
    ids = []
    for _ in range(n):
        ids.append(next_image(conn, annotator, options))
        conn.execute("DELETE FROM leases")  # as if the image was passed over: the order alone decides
        conn.commit()
    return ids


def test_random_order_follows_its_seed_and_differs_from_the_id_order(tmp_path):
    conn = demo_store(tmp_path / "a.sqlite")
    ids = sorted(row[0] for row in conn.execute("SELECT id FROM images"))
    first = [next_image(conn, f"a{n}", QueueOptions(order="random", seed=1)) for n in range(len(ids))]
    assert sorted(first) == ids and first != ids  # every image once, not in id order
    again = demo_store(tmp_path / "b.sqlite")
    assert [next_image(again, f"a{n}", QueueOptions(order="random", seed=1)) for n in range(5)] == first[:5]
    other = demo_store(tmp_path / "c.sqlite")
    assert [next_image(other, f"a{n}", QueueOptions(order="random", seed=2)) for n in range(5)] != first[:5]


def test_unknown_queue_order_is_refused_by_name():
    with pytest.raises(ValueError, match="'smallest'"):
        QueueOptions(order="smallest")


def test_area_under_the_curve_is_the_mean_accuracy_over_decisions():
    sim = load_simulation()
    points = [{"decisions": 0, "rank_accuracy": 0.2}, {"decisions": 10, "rank_accuracy": 0.4},
              {"decisions": 30, "rank_accuracy": 0.4}]
    assert sim.auc(points) == pytest.approx((10 * 0.3 + 20 * 0.4) / 30)


@pytest.mark.slow
def test_quick_simulation_runs_on_the_demo_scenes(tmp_path):
    sim = load_simulation()
    cfg = sim.parse_args(["--quick", "--data_dir", str(DEMO), "--triplets", "triplets.json", "--out_dir",
                          str(tmp_path), "--strategies", "uncertainty", "random", "--rounds", "1", "--k", "4",
                          "--epochs", "1"])
    ratio = sim.run(cfg)
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    for strategy in ("uncertainty", "random"):
        curve = results["runs"][strategy]["0"]
        assert [p["images"] for p in curve] == [0, 4]
        assert curve[1]["decisions"] == 4 * 6  # per image: accept + best on the positive, 4 rejections
        assert all(0.0 <= p["rank_accuracy"] <= 1.0 for p in curve)
    area = {s: results["summary"][s]["auc"][0] for s in ("uncertainty", "random")}
    expected = sim.auc_ratio(area["uncertainty"], area["random"])
    assert ratio == pytest.approx(expected, nan_ok=True)
    assert (tmp_path / "loop_simulation.md").is_file() and (tmp_path / "loop_simulation.png").stat().st_size > 0


def test_the_area_ratio_is_inf_or_nan_when_random_never_leaves_zero():
    sim = load_simulation()
    assert sim.auc_ratio(0.5, 0.25) == 2.0
    assert sim.auc_ratio(0.5, 0.0) == float("inf")
    assert math.isnan(sim.auc_ratio(0.0, 0.0))
