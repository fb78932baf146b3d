"""bench/device_check.py, the one script the GPU machine runs, works end to end: at tiny size on CPU."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from project_paths import ROOT

TRAIN_SETTINGS = [f"train_b{batch}_gc{gc}" for batch in (8, 32) for gc in (0, 1)]
EXPECTED = (
    ["matmul_tflops", "build_seconds", "caption_tokens_mean"]
    + [f"rank_b{batch}_{kind}_per_s" for batch in (1, 16, 64) for kind in ("images", "captions")]
    + ["per_pair_seconds", "batched_seconds", "ratio_vs_per_pair"]
    + [f"generate_b{batch}_{kind}_per_s" for batch in (1, 16) for kind in ("tokens", "captions")]
    + [f"{setting}_{figure}" for setting in TRAIN_SETTINGS
       for figure in ("triplets_per_s", "peak_gib", "tflops", "mfu_datasheet", "mfu_measured")]
    + ["total_wall_s"]
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_check")
    process = subprocess.run([sys.executable, str(ROOT / "bench" / "device_check.py"), "--tiny", "--device", "cpu",
                              "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    summary = process.stdout.split("---- all figures ----")[-1]
    figures = dict(line.split("=", 1) for line in summary.splitlines() if "=" in line)
    return figures, (out / "device_check.md").read_text(encoding="utf-8"), process.stdout


@pytest.mark.slow
def test_every_figure_is_printed_as_a_positive_finite_number(tiny_run):
    figures, _, stdout = tiny_run
    assert "failed" not in stdout and "skipped" not in stdout, stdout[-3000:]
    assert sorted(figures) == sorted(EXPECTED)
    for key in EXPECTED:
        value = float(figures[key])
        assert math.isfinite(value) and value > 0, f"{key}={figures[key]}"


@pytest.mark.slow
def test_mfu_is_below_the_measured_matmul_rate(tiny_run):
    """A FLOP count off by orders of magnitude (a wrong token count, the embeddings counted as matmuls)
    would put the model above what the machine's plain matmul reaches."""
    figures, _, _ = tiny_run
    for setting in TRAIN_SETTINGS:
        assert float(figures[f"{setting}_mfu_measured"]) < 1.0
        assert float(figures[f"{setting}_tflops"]) < float(figures["matmul_tflops"])


@pytest.mark.slow
def test_the_markdown_table_holds_every_figure(tiny_run):
    figures, table, _ = tiny_run
    assert table.startswith("device_check: CPU")
    for key, value in figures.items():
        assert f"| `{key}` | {value} |" in table
