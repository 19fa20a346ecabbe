"""The wheel serves outside the checkout: built, installed into a fresh venv in a temp dir, started
there with MODEL_REPOSITORY, and asked to find a face. Its core install carries no Triton client."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from blazeface_tools import CHECKOUT, TRITON_REPO
from blazeface_tools.testkit.servers import free_port, service_process
from tests.conftest import DATA

pytestmark = pytest.mark.slow


def run(*command: str | Path, cwd: Path, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=timeout_s
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, built_models: None) -> Path:
    """The venv's python, with only the wheel and its core dependencies installed."""
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy, so the build leaves nothing (build/, *.egg-info) in the checkout.
    source = root / "source"
    for name in ("service", "blazeface_tools"):
        shutil.copytree(CHECKOUT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CHECKOUT / "pyproject.toml", source)
    built = run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", source, "-w", root / "w", cwd=root)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (root / "w").glob("blazeface_serve-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "service/api/static/index.html" in names  # the demo page ships with the package
    assert not any(name.startswith(("tests/", "loadtest/", "triton_repo/")) for name in names)
    venv = root / "v"
    assert run(sys.executable, "-m", "venv", venv, cwd=root).returncode == 0
    python = venv / "bin" / "python"
    pip = run(python, "-m", "pip", "install", "-q", "-c", CHECKOUT / "constraints.txt", wheel, cwd=root)
    assert pip.returncode == 0, pip.stderr[-3000:]
    return python


def test_core_install_has_no_triton_client(installed: Path) -> None:
    probe = run(installed, "-c", "import tritonclient", cwd=installed.parents[2])
    assert probe.returncode != 0 and "No module named 'tritonclient'" in probe.stderr


def test_serves_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    where = run(installed, "-c", "import service; print(service.__file__)", cwd=tmp_path)
    assert not where.stdout.strip().startswith(str(CHECKOUT)), "imported the checkout, not the wheel"
    with service_process(
        tmp_path, python=str(installed), cwd=tmp_path, MODEL_REPOSITORY=str(TRITON_REPO)
    ) as server:
        photo = (DATA / "photos" / "grace_hopper.jpg").read_bytes()
        response = httpx.post(
            server.url + "/detect", content=photo, headers={"content-type": "image/jpeg"}, timeout=30
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["faces"]) == 1
        assert httpx.get(server.url + "/", timeout=10).status_code == 200


def test_without_model_repository_it_names_the_setting(installed: Path, tmp_path: Path) -> None:
    env_port = str(free_port())
    started = subprocess.run(
        [str(installed), "-m", "service"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PORT": env_port, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "MODEL_REPOSITORY" in started.stdout + started.stderr
