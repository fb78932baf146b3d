"""The curation loop: what runs between the app's tabs and the engines (scorer, trainer, curation).

Public API::

    from loop import AppConfig, Services, TrainForm, GenerateForm
    services = Services(AppConfig(data_dir=Path("data/app"), image_root=Path("data/ucm")))
    services.start_background()                    # score the queue under the active model
    run_id = services.training.start(TrainForm(max_steps=20))
    services.training.snapshot()                   # RunSnapshot: progress, evaluation, promotion
    services.generation.start(GenerateForm(n=3))   # batch candidate captions, imported when done
    add_hard_negatives(services, image_id, caption_id, n=3)

Modules: :mod:`loop.services` (shared state: store connections, the active model, activate/rollback),
:mod:`loop.registry` (the model the app starts with), :mod:`loop.queue_scorer`, :mod:`loop.generation`,
:mod:`loop.training` (runs in a process, :mod:`loop.train_worker`), :mod:`loop.promotion`,
:mod:`loop.backbones` (LoRA or full fine-tune). No gradio here, and no UI text: the UI formats what
these return.
"""

from loop.backbones import LoraDefault, lora_default, resolve_lora_rank
from loop.generation import (
    SCOPES,
    AddedCaptions,
    GenerateForm,
    GenerationSnapshot,
    add_generated_captions,
    add_hard_negatives,
)
from loop.promotion import AppliedPromotion, Promotion, decide_promotion
from loop.services import AppConfig, Services
from loop.training import RunSnapshot, TrainForm, split_by_image

__all__ = [
    "SCOPES", "AddedCaptions", "AppConfig", "AppliedPromotion", "GenerateForm", "GenerationSnapshot", "LoraDefault",
    "Promotion", "RunSnapshot", "Services", "TrainForm", "add_generated_captions", "add_hard_negatives",
    "decide_promotion", "lora_default", "resolve_lora_rank", "split_by_image",
]
