"""Precision as a choice: one rule (resolve_dtype) for every load, and a bf16 scorer that ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from scorer import Scorer
from scorer.qwen2_5_vl import backbone
from scorer.qwen2_5_vl.backbone import resolve_dtype

CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {extra}\n\nprocessor\t: 1\nflags\t\t: fpu {extra}\n"


@pytest.fixture
def cpu_flags(monkeypatch, tmp_path):
    """Point resolve_dtype at a fake /proc/cpuinfo with the given extra flags."""
    def set_flags(extra: str) -> None:
        (tmp_path / "cpuinfo").write_text(CPUINFO.format(extra=extra))
        monkeypatch.setattr(backbone, "CPUINFO", str(tmp_path / "cpuinfo"))
    return set_flags


@pytest.mark.parametrize("flags, hidden, expected, reason", [
    ("amx_bf16 amx_tile", None, torch.bfloat16, "amx_bf16"),
    ("avx512_bf16", 2048, torch.bfloat16, "avx512_bf16"),
    ("avx512_bf16", 128, torch.float32, "small model"),
    ("", None, torch.float32, "no native bf16"),
])
def test_auto_on_the_cpu_follows_its_flags(cpu_flags, flags, hidden, expected, reason):
    cpu_flags(flags)
    for name in ("auto", None, "AUTO"):
        dtype, why = resolve_dtype(name, "cpu", hidden)
        assert dtype == expected and reason in why


@pytest.mark.parametrize("bf16_supported, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_cuda_follows_the_gpu(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_supported)
    assert resolve_dtype("auto", "cuda:0", hidden_size=128)[0] == expected  # size does not matter on a GPU


def test_explicit_names_short_torch_and_dtype(cpu_flags):
    cpu_flags("")
    for names, dtype in ((("bf16", "bfloat16", "torch.bfloat16", torch.bfloat16), torch.bfloat16),
                         (("fp16", "float16", "half", torch.float16), torch.float16),
                         (("fp32", "float32", "torch.float32", torch.float32), torch.float32)):
        for name in names:
            assert resolve_dtype(name, "cpu")[0] == dtype
    with pytest.raises(ValueError, match="unknown dtype 'int8'.*auto, bf16, fp16, fp32"):
        resolve_dtype("int8", "cpu")


def test_real_cpuinfo_is_read():
    flags = backbone.cpu_bf16_flags()
    assert set(flags) <= {"amx_bf16", "avx512_bf16"}
    assert backbone.cpu_bf16_flags("/nonexistent/cpuinfo") == []


def test_cpuinfo_flags_are_parsed(tmp_path):
    (tmp_path / "cpuinfo").write_text(CPUINFO.format(extra="avx512_bf16 amx_bf16"))
    assert backbone.cpu_bf16_flags(tmp_path / "cpuinfo") == ["amx_bf16", "avx512_bf16"]


def test_a_bf16_tiny_scorer_ranks(tiny_checkpoint_session, tmp_path, caplog):
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    with caplog.at_level("INFO", logger="scorer.qwen2_5_vl.backbone"):
        scorer = Scorer.from_checkpoint(tiny_checkpoint_session, device="cpu", dtype="bf16")
    assert "as bfloat16 (asked for bf16)" in caplog.text
    assert scorer.model.qwen.dtype == torch.bfloat16
    captions = ["a river", "two tennis courts", "farmland"]
    ranked = scorer.rank([(str(path), captions)])[0]
    scores = [caption.score for caption in ranked.captions]
    assert all(np.isfinite(scores)) and scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    fp32 = Scorer.from_checkpoint(tiny_checkpoint_session, device="cpu", dtype="fp32")
    expected = {c.text: c.score for c in fp32.rank([(str(path), captions)])[0].captions}
    assert {c.text: c.score for c in ranked.captions} == pytest.approx(expected, abs=0.05)  # bf16 rounding only
