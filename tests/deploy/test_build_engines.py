"""deploy/build_engines.sh run for real, with stand-ins for the two NVIDIA tools it calls (no GPU here):
`trtexec` names its TensorRT version and writes a file where --saveEngine says, `nvidia-smi` names a GPU.
What is checked is the script's own logic: one stamped plan per compute capability, rebuilt when the
stamp disagrees, kept otherwise; the ONNX Runtime cache folders; a clear stop on an unlisted GPU."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from service.specs import MODELS
from tests.deploy.conftest import DEPLOY, ROOT, onnx_engine_caches

TRTEXEC = """#!/usr/bin/env bash
echo "&&&& RUNNING TensorRT.trtexec [TensorRT $FAKE_TENSORRT] # trtexec $*"
for arg in "$@"; do
    case "$arg" in --saveEngine=*) echo "plan: $*" >"${arg#--saveEngine=}" && echo "$*" >>"$FAKE_LOG" ;; esac
done
"""
NVIDIA_SMI = """#!/usr/bin/env bash
echo "$FAKE_GPU"
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The script and the triton_repo files it reads, in a fresh folder; ONNX stand-ins."""
    root = tmp_path / "checkout"
    (root / "deploy").mkdir(parents=True)
    shutil.copy2(DEPLOY / "build_engines.sh", root / "deploy")
    for model in MODELS:
        (root / "triton_repo" / f"blazeface_{model}_onnx" / "1").mkdir(parents=True)
        (root / "triton_repo" / f"blazeface_{model}_onnx" / "1" / "model.onnx").write_text(f"onnx {model}")
        (root / "triton_repo" / f"blazeface_{model}_trt").mkdir()
        shutil.copy2(
            ROOT / "triton_repo" / f"blazeface_{model}_trt" / "config.pbtxt",
            root / "triton_repo" / f"blazeface_{model}_trt",
        )
    tools = tmp_path / "bin"
    tools.mkdir()
    for name, text in (("trtexec", TRTEXEC), ("nvidia-smi", NVIDIA_SMI)):
        (tools / name).write_text(text)
        (tools / name).chmod(0o755)
    return root


def build(
    checkout: Path, gpu: str = "NVIDIA L4, 8.9", tensorrt: str = "v100500", args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{checkout.parent / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "FAKE_GPU": gpu,
        "FAKE_TENSORRT": tensorrt,
        "FAKE_LOG": str(checkout.parent / "trtexec.log"),
    }
    env.pop("FORCE", None)
    script = checkout / "deploy" / "build_engines.sh"
    return subprocess.run(["bash", str(script), *args], env=env, capture_output=True, text=True, timeout=60)


def builds(checkout: Path) -> int:
    """trtexec builds so far."""
    log = checkout.parent / "trtexec.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def plan(checkout: Path, model: str, sm: str) -> Path:
    return checkout / "triton_repo" / f"blazeface_{model}_trt" / "1" / f"model_sm{sm}.plan"


def stamp(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in Path(f"{path}.stamp").read_text().splitlines())


def test_builds_a_stamped_plan_per_model_named_by_the_config(checkout: Path) -> None:
    result = build(checkout)
    assert result.returncode == 0, result.stderr
    assert builds(checkout) == len(MODELS)
    for model in MODELS:
        config = text_format.Parse(
            (ROOT / "triton_repo" / f"blazeface_{model}_trt" / "config.pbtxt").read_text(), mc.ModelConfig()
        )
        built = plan(checkout, model, "89")
        assert built.name == config.cc_model_filenames["8.9"] and built.is_file()
        assert stamp(built) == {
            "tensorrt": "v100500",
            "compute_capability": "8.9",
            "onnx_sha256": stamp(built)["onnx_sha256"],
            "profile": "1/64/64",
            "gpu": "NVIDIA L4",
        }
        assert re.fullmatch(r"[0-9a-f]{64}", stamp(built)["onnx_sha256"])
        size = MODELS[model].input_size
        assert f"--maxShapes=image:64x{size}x{size}x3" in built.read_text()
        # Nothing else: no temporary file left.
        assert sorted(p.name for p in built.parent.iterdir()) == [built.name, f"{built.name}.stamp"]


def test_keeps_plans_while_their_stamps_match(checkout: Path) -> None:
    build(checkout)
    result = build(checkout)
    assert result.returncode == 0 and builds(checkout) == len(MODELS)
    assert result.stdout.count("keeping") == len(MODELS)
    # Another GPU of the same compute capability runs the plan: kept, with a warning.
    result = build(checkout, gpu="NVIDIA L40S, 8.9")
    assert builds(checkout) == len(MODELS)
    assert "built on NVIDIA L4, not NVIDIA L40S" in result.stderr
    # --force rebuilds whatever the stamps say.
    assert build(checkout, args=("--force",)).returncode == 0
    assert builds(checkout) == 2 * len(MODELS)


@pytest.mark.parametrize("change", ["tensorrt", "onnx", "no stamp"])
def test_rebuilds_when_the_stamp_disagrees(checkout: Path, change: str) -> None:
    build(checkout)
    tensorrt = "v100500"
    if change == "tensorrt":
        tensorrt = "v100600"
    elif change == "onnx":
        for model in MODELS:
            (checkout / "triton_repo" / f"blazeface_{model}_onnx" / "1" / "model.onnx").write_text("new")
    else:  # a plan from before stamps
        for model in MODELS:
            Path(f"{plan(checkout, model, '89')}.stamp").unlink()
    result = build(checkout, tensorrt=tensorrt)
    assert result.returncode == 0, result.stderr
    assert builds(checkout) == 2 * len(MODELS) and result.stdout.count("rebuilding") == len(MODELS)
    assert stamp(plan(checkout, "short", "89"))["tensorrt"] == tensorrt


def test_plans_of_other_gpu_kinds_share_the_folder(checkout: Path) -> None:
    build(checkout)
    legacy = plan(checkout, "short", "89").with_name("model.plan")
    legacy.write_text("from an older script")
    assert build(checkout, gpu="NVIDIA H200, 9.0").returncode == 0
    assert builds(checkout) == 2 * len(MODELS)
    for model in MODELS:
        assert stamp(plan(checkout, model, "89"))["gpu"] == "NVIDIA L4"
        assert stamp(plan(checkout, model, "90"))["gpu"] == "NVIDIA H200"
    assert not legacy.exists()  # never loaded now; removed so it misleads no one


def test_an_unlisted_gpu_stops_with_a_message(checkout: Path) -> None:
    result = build(checkout, gpu="Tesla V100-SXM2-16GB, 7.0")
    assert result.returncode == 1
    assert "compute capability 7.0" in result.stderr and "cc_model_filenames" in result.stderr
    assert builds(checkout) == 0


def test_onnx_runtime_cache_folders(checkout: Path) -> None:
    """Made where the _onnx configs point (relative to the repository), writable by Triton's own user,
    and emptied when TensorRT changes (its engine names carry only the compute capability)."""
    build(checkout)
    for model, cache in onnx_engine_caches().items():
        folder = checkout / "triton_repo" / model / "trt_cache"
        assert cache.parts[-3:] == folder.parts[-3:]  # triton_repo/<model>/trt_cache
        assert stat.S_IMODE(folder.stat().st_mode) == 0o1777
        (folder / "engine_sm89.engine").write_text("cached")
    cached = [
        checkout / "triton_repo" / model / "trt_cache" / "engine_sm89.engine"
        for model in onnx_engine_caches()
    ]
    build(checkout)
    assert all(path.exists() for path in cached)
    build(checkout, tensorrt="v100600")
    assert not any(path.exists() for path in cached)
