"""Helpers shared by the Triton backend tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnxruntime as ort

from blazeface_tools import TRITON_REPO
from service.backends.base import ModelOutputs
from service.backends.triton import TritonBackend
from service.backends.triton_shm import SHM_DIR
from service.specs import MODELS, get_spec

T = TypeVar("T")


def run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    """Each test runs in its own event loop (grpc.aio channels belong to the loop that made them)."""

    async def main() -> T:
        return await coro_fn()

    return asyncio.run(main())


def images(model: str, batch: int, seed: int = 0) -> np.ndarray:
    size = get_spec(model).input_size
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)


def assert_matches(
    sessions: dict[str, ort.InferenceSession],
    model: str,
    batch: np.ndarray,
    got: ModelOutputs,
) -> None:
    assert isinstance(got, ModelOutputs)
    expected = sessions[model].run(list(ModelOutputs._fields), {"image": batch})
    for name, value, reference in zip(ModelOutputs._fields, got, expected, strict=True):
        assert value.shape == reference.shape and value.dtype == reference.dtype, name
        np.testing.assert_allclose(value, reference, rtol=0, atol=1e-5, err_msg=name)


def cpu_repository(target: Path, edit: Callable[[str], str]) -> Path:
    """A model repository at `target` with the CPU models, their configs passed through `edit`; the ONNX
    and model.py are links to triton_repo's."""
    for model in MODELS:
        onnx = f"blazeface_{model}_onnx"
        (target / onnx).symlink_to(TRITON_REPO / onnx)  # the CPU configs' onnx_path points there
        source, copy = TRITON_REPO / f"blazeface_{model}_cpu", target / f"blazeface_{model}_cpu"
        (copy / "1").mkdir(parents=True)
        (copy / "1" / "model.py").symlink_to((source / "1" / "model.py").resolve())
        (copy / "config.pbtxt").write_text(edit((source / "config.pbtxt").read_text()))
    return target


def our_regions(backend: TritonBackend) -> list[Path]:
    """The backend's shared-memory objects in /dev/shm."""
    return sorted(SHM_DIR.glob(backend._prefix + "-*"))
