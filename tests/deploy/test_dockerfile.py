"""The Dockerfile and .dockerignore: lint, stages, non-root user, healthcheck, what reaches the context."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from blazeface_tools.testkit.servers import free_port, service_process
from tests.deploy.conftest import (
    ROOT,
    dockerfile_instructions,
    dockerignore_includes,
    dockerignore_patterns,
    image_is_pinned,
    setting_env_names,
    tool,
)

INSTRUCTIONS = dockerfile_instructions()
FINAL_STAGE = INSTRUCTIONS[-1].stage


def in_stage(stage: str, keyword: str) -> list[str]:
    return [i.args for i in INSTRUCTIONS if i.stage == stage and i.keyword == keyword]


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_images_are_pinned_slim_python_311() -> None:
    pairs = (i.args.split("=", 1) for i in INSTRUCTIONS if i.keyword == "ARG" and "=" in i.args)
    image = {name.strip(): value.strip() for name, value in pairs}["PYTHON_IMAGE"]
    assert image_is_pinned(image)
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image
    for source in (i.args.split()[0] for i in INSTRUCTIONS if i.keyword == "FROM"):
        # Every FROM is the pinned ARG or an earlier stage, never a floating tag.
        assert source == "${PYTHON_IMAGE}" or source in {i.stage for i in INSTRUCTIONS}, source


def test_runtime_stage_is_last_and_takes_the_runtime_venv_only() -> None:
    assert FINAL_STAGE == "runtime"
    copies = in_stage("runtime", "COPY")
    assert any(c.startswith("--from=deps /opt/venv ") for c in copies), copies
    # The build extra (onnx, tflite) is installed in `weights` only; runtime takes only the ONNX from there.
    assert not any("--from=weights /opt/venv" in c for c in copies)
    assert all(".[build]" not in run for run in in_stage("deps", "RUN"))
    assert any(".[build]" in run for run in in_stage("weights", "RUN"))
    assert any("blazeface_tools.weights build" in run for run in in_stage("weights", "RUN"))
    # The package is installed into the venv, not run from a source tree: no PYTHONPATH, models by setting.
    assert any(".[triton]" in run for run in in_stage("deps", "RUN"))
    env = " ".join(in_stage("runtime", "ENV"))
    assert "PYTHONPATH" not in env and "MODEL_REPOSITORY=/app/triton_repo" in env


def test_runs_as_numeric_non_root_user() -> None:
    users = in_stage("runtime", "USER")
    assert users, "the runtime stage sets no USER"
    uid = users[-1].split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can check it without a runAsUser.
    assert uid.isdigit() and int(uid) != 0, users[-1]


def test_healthcheck_probes_healthz_with_python() -> None:
    (check,) = in_stage("runtime", "HEALTHCHECK")
    assert "/healthz" in check
    assert '"python"' in check or "python " in check  # the slim image has no curl
    assert "curl" not in check and "wget" not in check


def healthcheck_command() -> list[str]:
    (check,) = in_stage("runtime", "HEALTHCHECK")
    return json.loads(check.split(" CMD ", 1)[1])


@pytest.mark.slow
def test_healthcheck_command_against_the_real_service(tmp_path: Path) -> None:
    """The image's exact HEALTHCHECK, run against `python -m service` started as the image starts it."""
    command = healthcheck_command()
    assert command[0] == "python"
    # TMPDIR stands in for the image's tmpfs /tmp: with WORKERS > 1 the metrics directory goes there.
    with service_process(tmp_path, WORKERS="2", TMPDIR=str(tmp_path)) as server:
        env = {**os.environ, "PORT": server.url.rsplit(":", 1)[1]}
        healthy = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30)
        assert healthy.returncode == 0, healthy.stderr
        assert list(tmp_path.glob("blazeface-metrics-*"))
    env = {**os.environ, "PORT": str(free_port())}
    down = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30)
    assert down.returncode != 0


def test_environment_and_command() -> None:
    env = " ".join(in_stage("runtime", "ENV"))
    assert "HOST=0.0.0.0" in env
    assert "WORKERS=" in env
    python_env = {"PATH", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
    for name in re.findall(r"\b([A-Z][A-Z_]+)=", env):
        assert name in setting_env_names() | python_env, f"ENV {name} is not a setting"
    assert in_stage("runtime", "CMD")[-1] == '["python", "-m", "service"]'
    assert in_stage("runtime", "EXPOSE") == ["8000"]


@pytest.mark.parametrize("stage", ["deps", "weights", "runtime"])
def test_copy_sources_exist_and_reach_the_context(stage: str) -> None:
    patterns = dockerignore_patterns()
    for args in in_stage(stage, "COPY"):
        words = [w for w in args.split() if not w.startswith("--")]
        if any(w.startswith("--from=") for w in args.split()):
            continue
        for source in words[:-1]:
            matches = glob.glob(source.rstrip("/"), root_dir=ROOT)
            if "[" in source and not matches:
                continue  # an optional file (constraints.tx[t])
            assert matches, f"COPY {source}: nothing in the repository"
            for match in matches:
                assert dockerignore_includes(match, patterns), f"{match} is excluded by .dockerignore"


@pytest.mark.parametrize(
    ("path", "included"),
    [
        ("pyproject.toml", True),
        ("service/api/app.py", True),
        ("triton_repo/blazeface_short_trt/config.pbtxt", True),
        ("deploy/build_engines.sh", True),
        # Built inside the image, never from the host's copies.
        ("triton_repo/blazeface_short_onnx/1/model.onnx", False),
        ("triton_repo/blazeface_full_trt/1/model_sm89.plan", False),
        ("triton_repo/blazeface_full_trt/1/model_sm89.plan.stamp", False),
        ("triton_repo/blazeface_full_onnx/trt_cache/.stamp", False),
        ("service/__pycache__/settings.cpython-311.pyc", False),
        ("weights/cache/mediapipe.whl", False),
        (".venv/bin/python", False),
        (".git/HEAD", False),
        ("tests/deploy/conftest.py", False),
        ("deploy/k8s/base/kustomization.yaml", False),
    ],
)
def test_dockerignore(path: str, included: bool) -> None:
    assert dockerignore_includes(path, dockerignore_patterns()) is included
