"""Static checks of triton_repo/: every config.pbtxt parses into Triton's ModelConfig protobuf and agrees
with the ONNX files, the model specs, the engine build script, the Triton backend's settings and the API's
Triton sizing; and the backend's own check of a served config (`config_problems`) on these files."""

from __future__ import annotations

import re
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from blazeface_tools import CHECKOUT as REPO_ROOT
from blazeface_tools import TRITON_REPO
from service.backends.triton_config import INPUT, TritonSettings, config_problems, expected_tensors
from service.settings import TRITON_IMAGES_IN_FLIGHT, Settings, triton_inflight_batches
from service.specs import MODELS

KINDS = ("cpu", "onnx", "trt")
ONNX_TO_TRITON = {
    onnx.TensorProto.UINT8: mc.TYPE_UINT8,
    onnx.TensorProto.FLOAT: mc.TYPE_FP32,
    onnx.TensorProto.INT32: mc.TYPE_INT32,
}


def load_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def config_io(config: mc.ModelConfig) -> dict[str, tuple[int, list[int]]]:
    return {tensor.name: (tensor.data_type, list(tensor.dims)) for tensor in [*config.input, *config.output]}


def engine_profile() -> dict[str, int]:
    """MIN/OPT/MAX_BATCH as deploy/build_engines.sh sets them."""
    script = (REPO_ROOT / "deploy" / "build_engines.sh").read_text()
    return {
        name: int(value)
        for name, value in re.findall(r"^(MIN_BATCH|OPT_BATCH|MAX_BATCH)=(\d+)$", script, re.M)
    }


def config_of(model: str, kind: str) -> mc.ModelConfig:
    return load_config(TRITON_REPO / f"blazeface_{model}_{kind}" / "config.pbtxt")


CONFIGS = sorted(TRITON_REPO.glob("*/config.pbtxt"))
PAIRS = [(model, kind) for model in MODELS for kind in KINDS]
GPU_KINDS = ("trt", "onnx")


def test_repository_holds_exactly_the_expected_models() -> None:
    assert {path.parent.name for path in CONFIGS} == {f"blazeface_{m}_{k}" for m, k in PAIRS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.parent.name)
def test_config_parses_and_is_named_after_its_directory(path: Path) -> None:
    config = load_config(path)
    assert config.name == path.parent.name
    assert config.max_batch_size > 0  # batch dimension implicit: dims below exclude it


@pytest.mark.parametrize(("model", "kind"), PAIRS)
def test_io_matches_spec(model: str, kind: str) -> None:
    assert config_io(config_of(model, kind)) == expected_tensors(MODELS[model])


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
        assert config_io(config_of(model, kind)) == onnx_io, kind


@pytest.mark.parametrize("model", MODELS)
def test_batch_limits_agree(model: str) -> None:
    """One max batch everywhere: configs, the TensorRT profile and the backend's shared-memory regions."""
    profile = engine_profile()
    assert set(profile) == {"MIN_BATCH", "OPT_BATCH", "MAX_BATCH"}
    # No preferred_batch_size: under load Triton sends full batches, so the engines are tuned for them.
    assert profile["MIN_BATCH"] == 1 and profile["OPT_BATCH"] == profile["MAX_BATCH"]
    for kind in KINDS:
        config = config_of(model, kind)
        assert config.max_batch_size == profile["MAX_BATCH"] == TritonSettings().max_batch, kind
        assert config.HasField("dynamic_batching"), kind


@pytest.mark.parametrize("model", MODELS)
def test_gpu_configs_are_fed_and_shed_load(model: str) -> None:
    """Both GPU variants: several instances, no preferred batch size, and a queue policy that rejects
    (the API's 429) instead of queueing without bound; the same policy in both."""
    policies = []
    for kind in GPU_KINDS:
        config = config_of(model, kind)
        (group,) = config.instance_group
        assert group.kind == mc.ModelInstanceGroup.KIND_GPU and group.count >= 2, kind
        batching = config.dynamic_batching
        assert list(batching.preferred_batch_size) == [], kind
        policy = batching.default_queue_policy
        assert policy.timeout_action == mc.ModelQueuePolicy.REJECT, kind
        assert 0 < policy.default_timeout_microseconds <= 1_000_000, kind
        assert policy.max_queue_size > 0, kind
        policies.append(policy)
    assert policies[0] == policies[1]


def test_api_sizing_matches_the_gpu_configs() -> None:
    """TRITON_IMAGES_IN_FLIGHT (the BACKEND=triton default of MAX_INFLIGHT_BATCHES) is 2 batches per
    instance of every GPU config; an explicit MAX_INFLIGHT_BATCHES wins."""
    for model, kind in [(m, k) for m in MODELS for k in GPU_KINDS]:
        config = config_of(model, kind)
        (group,) = config.instance_group
        assert 2 * config.max_batch_size * group.count == TRITON_IMAGES_IN_FLIGHT, (model, kind)
    assert Settings(backend="triton").max_inflight_batches == 16 == triton_inflight_batches(16)
    assert Settings(backend="triton", max_batch=64).max_inflight_batches == 4
    assert Settings(backend="triton", max_batch=100).max_inflight_batches == 3  # rounded up
    assert Settings(backend="triton", max_inflight_batches=1).max_inflight_batches == 1
    assert Settings(backend="onnx").max_inflight_batches == 1


def test_api_sizing_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BACKEND", "triton")
    assert Settings().max_inflight_batches == 16
    monkeypatch.setenv("MAX_INFLIGHT_BATCHES", "2")
    assert Settings().max_inflight_batches == 2


@pytest.mark.parametrize("model", MODELS)
def test_tensorrt_config(model: str) -> None:
    config = config_of(model, "trt")
    assert config.platform == "tensorrt_plan"
    assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 10_000
    # One plan per compute capability, named after it (deploy/build_engines.sh writes the named file).
    plans = dict(config.cc_model_filenames)
    assert plans and all(re.fullmatch(r"\d+\.\d", cc) for cc in plans)
    assert plans == {cc: f"model_sm{cc.replace('.', '')}.plan" for cc in plans}
    assert plans == dict(config_of("short", "trt").cc_model_filenames)  # one list for every model
    assert "9.0" in plans  # H100/H200, the GPU checked in loadtest/gpu_check.py


@pytest.mark.parametrize("model", MODELS)
def test_onnx_gpu_config(model: str) -> None:
    config = config_of(model, "onnx")
    assert config.backend == "onnxruntime"
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    parameters = dict(accelerator.parameters)
    assert parameters["precision_mode"] == "FP16"
    # One TensorRT profile for every batch Triton may send: the plans' profile.
    size, profile = MODELS[model].input_size, engine_profile()
    for bound, batch in [("min", "MIN_BATCH"), ("opt", "OPT_BATCH"), ("max", "MAX_BATCH")]:
        assert parameters[f"trt_profile_{bound}_shapes"] == f"{INPUT}:{profile[batch]}x{size}x{size}x3"
    # The engine cache beside the model on the repository volume (tests/deploy checks it is writable).
    assert parameters["trt_engine_cache_enable"] == "1"
    assert parameters["trt_engine_cache_path"] == f"/repo/triton_repo/{config.name}/trt_cache"


@pytest.mark.parametrize(("model", "kind"), PAIRS)
def test_backend_accepts_every_shipped_config(model: str, kind: str) -> None:
    """What `TritonBackend.start()` checks a served config for, here on the files themselves."""
    config = config_of(model, kind)
    assert config_problems(config, MODELS[model], config.max_batch_size) == []


def test_backend_names_what_disagrees() -> None:
    config = config_of("short", "cpu")
    (problem,) = config_problems(config, MODELS["short"], 65)
    assert "MAX_BATCH=65" in problem and "max_batch_size 64" in problem
    wrong = mc.ModelConfig()
    wrong.CopyFrom(config)
    wrong.input[0].data_type = mc.TYPE_FP32
    wrong.output[1].data_type = mc.TYPE_INT64
    del wrong.output[2].dims[:]
    wrong.output[2].dims.extend([896, 16])  # every anchor's, as before the graph chose candidates
    assert config_problems(wrong, MODELS["short"], 16) == [
        "image is TYPE_FP32 [128, 128, 3], service/specs.py has TYPE_UINT8 [128, 128, 3]",
        "anchor_indices is TYPE_INT64 [100], service/specs.py has TYPE_INT32 [100]",
        "regressors is TYPE_FP32 [896, 16], service/specs.py has TYPE_FP32 [100, 16]",
    ]
    # The other model's config behind this model's name.
    problems = config_problems(config_of("full", "cpu"), MODELS["short"], 16)
    assert problems == ["image is TYPE_UINT8 [192, 192, 3], service/specs.py has TYPE_UINT8 [128, 128, 3]"]
    del wrong.output[0:1]
    assert "it has no tensor 'scores'" in config_problems(wrong, MODELS["short"], 16)


@pytest.mark.parametrize("model", MODELS)
def test_cpu_config(model: str) -> None:
    directory = TRITON_REPO / f"blazeface_{model}_cpu"
    config = config_of(model, "cpu")
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
