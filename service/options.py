"""Per-request detection options, validated once wherever they come from (query, JSON, Python)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from service.decoding import Suppression
from service.errors import InvalidOption
from service.imaging import Preprocess
from service.specs import MODELS, ModelSpec


@dataclass(frozen=True)
class DetectOptions:
    """Example: ``DetectOptions(model="full", min_score=0.7, max_faces=5)``.

    `min_score=None` means the model's own MediaPipe threshold (0.5 short, 0.6 full).
    """

    model: str = "short"
    min_score: float | None = None
    suppression: Suppression = Suppression.BLEND
    max_faces: int | None = None
    preprocess: Preprocess = Preprocess.FAST

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise InvalidOption(f"model must be one of {sorted(MODELS)}, not {self.model!r}")
        if self.min_score is not None and not (
            math.isfinite(self.min_score) and 0.0 <= self.min_score <= 1.0
        ):
            raise InvalidOption("min_score must be between 0 and 1")
        if self.max_faces is not None and self.max_faces < 1:
            raise InvalidOption("max_faces must be at least 1")
        for field, enum in (("suppression", Suppression), ("preprocess", Preprocess)):
            value = getattr(self, field)
            try:
                object.__setattr__(self, field, enum(value))
            except ValueError:
                allowed = [member.value for member in enum]
                raise InvalidOption(f"{field} must be one of {allowed}, not {value!r}") from None

    @property
    def spec(self) -> ModelSpec:
        return MODELS[self.model]

    @property
    def score_threshold(self) -> float:
        return self.spec.decoder.min_score_thresh if self.min_score is None else self.min_score
