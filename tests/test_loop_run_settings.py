"""The Train tab's defaults follow the model and the device, and the time estimate says what it is based on."""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import pytest

from loop import run_settings
from loop.run_settings import default_settings, estimate_time

GIB = 1024**3
REFERENCE_3B = {"model_type": "qwen2_5_vl", "hidden_size": 2048, "num_hidden_layers": 36, "intermediate_size": 11008,
                "num_attention_heads": 16, "num_key_value_heads": 2,
                "vision_config": {"hidden_size": 1280, "depth": 32, "intermediate_size": 3420, "out_hidden_size": 2048}}


def fake_services(available: int, device: str = "cpu") -> SimpleNamespace:
    config = SimpleNamespace(dtype="bf16", device=device)
    return SimpleNamespace(config=config, scorer_bytes=lambda: 7 * GIB,
                           training=SimpleNamespace(jobs={}, snapshot=lambda run_id=None: None))


@pytest.fixture
def real_checkpoint(tmp_path, monkeypatch):
    """A scorer checkpoint on a backbone folder of the 3B's shape (config.json, a safetensors header only)."""
    backbone = tmp_path / "backbone-3b"
    backbone.mkdir()
    (backbone / "config.json").write_text(json.dumps(REFERENCE_3B), encoding="utf-8")
    header = json.dumps({"w": {"dtype": "BF16", "shape": [3_754_622_976], "data_offsets": [0, 0]}}).encode()
    (backbone / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    checkpoint = tmp_path / "scorer"
    checkpoint.mkdir()
    (checkpoint / "scorer_config.json").write_text(json.dumps({"backbone": str(backbone)}), encoding="utf-8")
    return str(checkpoint)


def test_a_real_model_gets_the_recipe_batch_where_it_fits_and_a_smaller_one_with_more_accumulation_where_not(
        real_checkpoint, monkeypatch):
    monkeypatch.setattr(run_settings, "available_bytes", lambda device=None: 200 * GIB)
    roomy = default_settings(fake_services(200 * GIB), real_checkpoint)
    assert (roomy.batch_size, roomy.grad_accum, roomy.gradient_checkpointing) == (16, 2, True)  # ucm_3b_lora.yaml
    assert roomy.evaluations == 2 and roomy.max_held_out == run_settings.CPU_HELD_OUT  # a CPU evaluates little
    monkeypatch.setattr(run_settings, "available_bytes", lambda device=None: int(5.5 * GIB))  # + 7 GiB scorer
    tight = default_settings(fake_services(int(5.5 * GIB)), real_checkpoint)
    assert (tight.batch_size, tight.grad_accum) == (8, 4)  # halved until it fits; the effective batch is kept


def test_the_tiny_backbone_gets_the_demo_settings(tiny_checkpoint_session):
    settings = default_settings(fake_services(8 * GIB), str(tiny_checkpoint_session))
    assert (settings.batch_size, settings.gradient_checkpointing, settings.evaluations) == (8, False, 10)


def test_the_estimate_uses_the_last_measured_rate_or_says_it_is_assumed(real_checkpoint):
    services = fake_services(8 * GIB)
    assumed = estimate_time(services, real_checkpoint, 2, 1, steps=10, evaluations=2, held_out=32)
    assert assumed.basis.startswith("assumed") and assumed.seconds_per_step == 2 * 13.0
    assert assumed.total_seconds == 10 * 26.0 + 3 * 32 * 3.0
    done = SimpleNamespace(status="done", progress=[{"step": 1, "triplets_per_s": 0.25}])
    services.training = SimpleNamespace(jobs={1: None}, snapshot=lambda run_id=None: done)
    measured = estimate_time(services, real_checkpoint, 2, 1, steps=10, evaluations=2, held_out=32)
    assert measured.basis.startswith("measured") and measured.seconds_per_step == 8.0


