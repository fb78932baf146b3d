"""bench/bench_scale.py's logic at toy sizes (its figures are measured by running it, not here)."""

from __future__ import annotations

import math
import sys

from project_paths import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import bench_scale  # noqa: E402


def test_index_benchmark_checks_filters_and_recall_on_both_index_kinds(capsys):
    small = bench_scale.bench_index(1_500, 16, queries=10, encoder=None)
    large = bench_scale.bench_index(25_000, 16, queries=10, encoder=None)
    assert (small["kind"], small["recall_at_10"]) == ("flat", 1.0)
    assert large["kind"] == "ivf" and large["recall_at_10"] >= 0.8
    # the timings are reported (their size is the benchmark's business, not a unit test's: a flat build of
    # 1,500 vectors rounds to 0.0 s)
    assert all(math.isfinite(result[key]) and result[key] >= 0 for result in (small, large)
               for key in ("p50_ms", "build_s"))


def test_the_bulk_built_store_serves_the_queue(tmp_path):
    from curation.queue import next_image
    from curation.store import open_store

    bench_scale.bulk_build(tmp_path / "s.db", 30, 4)
    conn = open_store(tmp_path / "s.db")
    assert tuple(conn.execute("SELECT COUNT(*), COUNT(DISTINCT image_id) FROM captions").fetchone()) == (120, 30)
    assert next_image(conn, "ann") == 1


def test_browse_and_export_benchmarks_run_on_a_small_store(tmp_path):
    bench_scale.bulk_build(tmp_path / "s.db", 60, 3)
    browse = bench_scale.bench_browse(tmp_path / "s.db", 16, repeat=3)
    assert browse["class_filter_images"] == 3 and browse["cover_repeat_p50_ms"] >= 0
    export = bench_scale.bench_export(tmp_path / "s.db", tmp_path / "d.parquet")
    assert export["exported_rows"] == 180 and export["export_peak_rss_mib"] > 0
