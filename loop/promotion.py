"""Whether a finished run's model replaces the active one: the held-out primary metric decides.

The training process evaluates the new checkpoint and the active model on the same held-out triplets
(:mod:`loop.training`) and reports ``{"primary_metric": name, "new": {...}, "active": {...}}``, the metrics
as the trainer's evaluator returns them (higher is better). :func:`decide_promotion` turns that into a
:class:`Promotion`; the watcher thread applies it (an :class:`AppliedPromotion`), so the decision is made
with no browser open. The UI turns both into text.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

REASONS = ("better", "not_better", "off", "active_changed", "missing")


@dataclass(frozen=True)
class Promotion:
    """The decision on one run: ``promote`` only for ``reason == "better"``.

    ``new`` and ``active`` are the held-out ``metric`` of the new model and of model version
    ``compared_with`` (the active one when the run started); ``current_active`` is the active version
    when the run ended.
    """

    promote: bool
    reason: str
    metric: str
    new: float | None
    active: float | None
    compared_with: int
    current_active: int

    def record(self) -> dict:
        """What the store keeps (model-version provenance and the run's metrics)."""
        return {"auto_promoted": self.promote, "rule": f"held-out {self.metric} strictly higher than the active "
                                                       "model's", **asdict(self)}


@dataclass(frozen=True)
class AppliedPromotion:
    """A decision as the watcher applied it: ``promoted`` once the new model is active; ``error`` why not."""

    decision: Promotion
    promoted: bool = False
    error: str | None = None

    def record(self) -> dict:
        """The decision's record with ``promoted`` (and ``error``), as the run's metrics keep it."""
        return {**self.decision.record(), "promoted": self.promoted, **({"error": self.error} if self.error else {})}


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def decide_promotion(evaluation: dict, auto: bool, compared_with: int, current_active: int) -> Promotion:
    """Promote when ``auto`` is on, the active model is still the one compared with, and the new model's
    primary metric is strictly higher than the active one's (a tie keeps the active model)."""
    metric = evaluation.get("primary_metric")
    if not metric:
        raise ValueError("the held-out evaluation names no primary metric")
    new = _number(evaluation.get("new", {}).get(metric))
    active = _number(evaluation.get("active", {}).get(metric))
    if new is None or active is None:
        reason = "missing"
    elif current_active != compared_with:
        reason = "active_changed"
    elif not auto:
        reason = "off"
    else:
        reason = "better" if new > active else "not_better"
    return Promotion(reason == "better", reason, metric, new, active, compared_with, current_active)
