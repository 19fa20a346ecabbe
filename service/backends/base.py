"""The backend protocol: the API and batcher never branch on which backend runs the model."""

from __future__ import annotations

import abc

import numpy as np


class Backend(abc.ABC):
    """One inference engine serving both models.

    `infer` takes a uint8 batch of shape (B, S, S, 3) (S = the model's input size, RGB) and returns
    `(regressors, logits)` of shapes (B, A, 16) and (B, A, 1), float32. Implementations translate their
    library's errors into `service.errors.BackendUnavailable` / `DeadlineExceeded`; the Triton backend
    also raises `Overloaded` (429) when Triton sheds load (the model's queue policy rejects the request).
    """

    name: str = "backend"

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open sessions or connections; called once from the app lifespan."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release everything `start` opened."""

    @abc.abstractmethod
    async def infer(self, model: str, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    @abc.abstractmethod
    async def ready(self) -> bool:
        """True when every model answers; never raises."""
