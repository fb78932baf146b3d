"""bench/bench_scale.py's logic at toy sizes (its figures are measured by running it, not here)."""

from __future__ import annotations

import sys

from project_paths import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import bench_scale  # noqa: E402


def test_index_benchmark_checks_filters_and_recall_on_both_index_kinds(capsys):
    small = bench_scale.bench_index(1_500, 16, queries=10, encoder=None)
    large = bench_scale.bench_index(25_000, 16, queries=10, encoder=None)
    assert (small["kind"], small["recall_at_10"]) == ("flat", 1.0)
    assert large["kind"] == "ivf" and large["recall_at_10"] >= 0.8
    assert all(result["p50_ms"] > 0 and result["build_s"] > 0 for result in (small, large))


def test_the_store_input_is_cut_into_parts_that_keep_every_line(tmp_path):
    source = tmp_path / "captions.jsonl"
    source.write_text("".join(f'{{"n": {n}}}\n' for n in range(45)))
    parts = bench_scale.split_lines(source, 20)
    assert [p.name for p in parts] == ["part_000.jsonl", "part_001.jsonl", "part_002.jsonl"]
    assert "".join(p.read_text() for p in parts) == "".join(f'{{"n": {n}}}\n' for n in range(45))
