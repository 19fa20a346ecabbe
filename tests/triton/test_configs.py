"""Static checks of triton_repo/: every config.pbtxt parses into Triton's ModelConfig protobuf and agrees
with the ONNX files, the model specs, the engine build script and the Triton backend's settings."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from blazeface_tools import CHECKOUT as REPO_ROOT
from blazeface_tools import TRITON_REPO
from service.backends.triton import INPUT, OUTPUTS, TritonSettings
from service.specs import MODELS, ModelSpec

KINDS = ("cpu", "onnx", "trt")
ONNX_TO_TRITON = {onnx.TensorProto.UINT8: mc.TYPE_UINT8, onnx.TensorProto.FLOAT: mc.TYPE_FP32}


def load_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def expected_io(spec: ModelSpec) -> dict[str, tuple[int, list[int]]]:
    """Tensor name -> (Triton dtype, dims without the batch dimension), from the spec."""
    size, anchors = spec.input_size, spec.decoder.num_boxes
    return {
        INPUT: (mc.TYPE_UINT8, [size, size, 3]),
        OUTPUTS[0]: (mc.TYPE_FP32, [anchors, spec.decoder.num_coords]),
        OUTPUTS[1]: (mc.TYPE_FP32, [anchors, 1]),
    }


def config_io(config: mc.ModelConfig) -> dict[str, tuple[int, list[int]]]:
    return {tensor.name: (tensor.data_type, list(tensor.dims)) for tensor in [*config.input, *config.output]}


def engine_profile() -> dict[str, int]:
    """MIN/OPT/MAX_BATCH as deploy/build_engines.sh sets them."""
    script = (REPO_ROOT / "deploy" / "build_engines.sh").read_text()
    return {
        name: int(value)
        for name, value in re.findall(r"^(MIN_BATCH|OPT_BATCH|MAX_BATCH)=(\d+)$", script, re.M)
    }


CONFIGS = sorted(TRITON_REPO.glob("*/config.pbtxt"))
PAIRS = [(model, kind) for model in MODELS for kind in KINDS]


def test_repository_holds_exactly_the_expected_models() -> None:
    assert {path.parent.name for path in CONFIGS} == {f"blazeface_{m}_{k}" for m, k in PAIRS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.parent.name)
def test_config_parses_and_is_named_after_its_directory(path: Path) -> None:
    config = load_config(path)
    assert config.name == path.parent.name
    assert config.max_batch_size > 0  # batch dimension implicit: dims below exclude it


@pytest.mark.parametrize(("model", "kind"), PAIRS)
def test_io_matches_spec(model: str, kind: str) -> None:
    config = load_config(TRITON_REPO / f"blazeface_{model}_{kind}" / "config.pbtxt")
    assert config_io(config) == expected_io(MODELS[model])


@pytest.mark.parametrize("model", MODELS)
def test_io_matches_onnx(model: str, onnx_paths: dict[str, Path]) -> None:
    graph = onnx.load(str(onnx_paths[model])).graph
    onnx_io = {}
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param, f"{value.name}: the batch dimension must be symbolic"
        onnx_io[value.name] = (
            ONNX_TO_TRITON[value.type.tensor_type.elem_type],
            [d.dim_value for d in dims[1:]],
        )
    for kind in KINDS:
        config = load_config(TRITON_REPO / f"blazeface_{model}_{kind}" / "config.pbtxt")
        assert config_io(config) == onnx_io, kind


@pytest.mark.parametrize("model", MODELS)
def test_batch_limits_agree(model: str) -> None:
    """One max batch everywhere: configs, the TensorRT profile and the backend's shared-memory regions."""
    profile = engine_profile()
    assert set(profile) == {"MIN_BATCH", "OPT_BATCH", "MAX_BATCH"}
    for kind in KINDS:
        config = load_config(TRITON_REPO / f"blazeface_{model}_{kind}" / "config.pbtxt")
        assert config.max_batch_size == profile["MAX_BATCH"] == TritonSettings().shm_max_batch, kind
        assert config.HasField("dynamic_batching"), kind


@pytest.mark.parametrize("model", MODELS)
def test_tensorrt_config(model: str) -> None:
    config = load_config(TRITON_REPO / f"blazeface_{model}_trt" / "config.pbtxt")
    assert config.platform == "tensorrt_plan"
    assert [group.kind for group in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert list(config.dynamic_batching.preferred_batch_size) == [engine_profile()["OPT_BATCH"]]
    assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 10_000


@pytest.mark.parametrize("model", MODELS)
def test_onnx_gpu_config(model: str) -> None:
    config = load_config(TRITON_REPO / f"blazeface_{model}_onnx" / "config.pbtxt")
    assert config.backend == "onnxruntime"
    assert [group.kind for group in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"


@pytest.mark.parametrize("model", MODELS)
def test_cpu_config(model: str) -> None:
    directory = TRITON_REPO / f"blazeface_{model}_cpu"
    config = load_config(directory / "config.pbtxt")
    assert config.backend == "python"
    assert [group.kind for group in config.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000  # measured, ARCHITECTURE.md §7
    onnx_path = (directory / config.parameters["onnx_path"].string_value).resolve()
    assert onnx_path == MODELS[model].onnx_path(TRITON_REPO).resolve()


def test_cpu_models_share_one_model_py() -> None:
    """No duplicated model code: every CPU model's model.py resolves to the same file."""
    files = {(TRITON_REPO / f"blazeface_{m}_cpu" / "1" / "model.py").resolve() for m in MODELS}
    assert len(files) == 1
    (model_py,) = files
    compile(model_py.read_text(), str(model_py), "exec")  # importing needs Triton's stub
