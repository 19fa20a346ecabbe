"""The in-process pipeline: image bytes → faces, synchronously, on ONNX Runtime.

    detector = Detector()
    faces = detector.detect(open("photo.jpg", "rb").read(), model="full")

The HTTP service runs the same steps (`preprocess`, then `faces_from_tensors`) around its micro-batcher.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.backends.onnx import OnnxBackend
from service.imaging import preprocess
from service.options import DetectOptions
from service.postprocess import Face, faces_from_tensors
from service.settings import Settings, checkout_model_repository

# The same decoded-size limit as the HTTP service's default (MAX_PIXELS).
DEFAULT_MAX_PIXELS: int = Settings.model_fields["max_pixels"].default


class Detector:
    """Both BlazeFace models in this process; `detect_many` runs one ORT batch for all images."""

    def __init__(
        self, threads: int = 1, max_pixels: int = DEFAULT_MAX_PIXELS, model_repository: Path | None = None
    ) -> None:
        self._backend = OnnxBackend(model_repository or checkout_model_repository(), threads)
        self._backend.load()
        self._max_pixels = max_pixels

    def detect(self, image: bytes, **options: object) -> list[Face]:
        """Options as `DetectOptions`: model, min_score, suppression, max_faces, preprocess."""
        return self.detect_many([image], **options)[0]

    def detect_many(self, images: Sequence[bytes], **options: object) -> list[list[Face]]:
        opts = DetectOptions.model_validate(options)
        if not images:
            return []
        prepared = [
            preprocess(data, opts.spec.input_size, opts.preprocess, max_pixels=self._max_pixels)
            for data in images
        ]
        batch = np.stack([tensor for tensor, _ in prepared])
        outputs = self._backend.run(opts.model, batch)
        return [
            faces_from_tensors(outputs.row(i), letterbox, opts) for i, (_, letterbox) in enumerate(prepared)
        ]
