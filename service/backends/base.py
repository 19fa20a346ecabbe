"""The backend protocol: the API and batcher never branch on which backend runs the model."""

from __future__ import annotations

import abc
from typing import NamedTuple

import numpy as np

from service.specs import ModelSpec


class ModelOutputs(NamedTuple):
    """A batch's outputs, as every backend returns them; `row(i)` is image i's. The fields are the graph's
    outputs, by name and in order (blazeface_tools/weights/tflite_to_onnx.py makes them): each image's
    `spec.top_k` best anchors by score, best first, so a backend ships K candidates, not every anchor."""

    scores: np.ndarray  # (B, K) float32: sigmoid of the logit clipped to ±score_clipping_thresh
    anchor_indices: np.ndarray  # (B, K) int32: the anchor of each candidate
    regressors: np.ndarray  # (B, K, num_coords) float32: that anchor's box and keypoint regressors

    def row(self, index: int) -> ModelOutputs:
        return ModelOutputs(*(output[index] for output in self))


def output_shapes(spec: ModelSpec) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Each output's dtype and shape for one image (no batch dimension), in `ModelOutputs` order: what
    the build checks the converted model for, and the Triton backend its configs and answers."""
    k, f32 = spec.top_k, np.dtype(np.float32)
    shapes = [(f32, (k,)), (np.dtype(np.int32), (k,)), (f32, (k, spec.decoder.num_coords))]
    return dict(zip(ModelOutputs._fields, shapes, strict=True))


class Backend(abc.ABC):
    """One inference engine serving every model.

    `infer` takes a uint8 batch of shape (B, S, S, 3) (S = the model's input size, RGB) and returns its
    `ModelOutputs`. Implementations translate their library's errors into
    `service.errors.BackendUnavailable` / `DeadlineExceeded`; the Triton backend also raises `Overloaded`
    (429) when Triton sheds load (the model's queue policy rejects the request).
    """

    name: str = "backend"

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open sessions or connections; called once from the app lifespan."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything `start` opened."""

    @abc.abstractmethod
    async def infer(self, model: str, batch: np.ndarray) -> ModelOutputs: ...

    @abc.abstractmethod
    async def ready(self) -> bool:
        """True when every model answers; never raises."""
