"""The Triton backend's configuration: its settings (`TritonSettings`), and the start-up check that each
model Triton serves fits them and service/specs.py.

    settings = TritonSettings(url="triton:8001", model_suffix="_trt", max_batch=32)
    await check_model(client, settings, "short", timeout)   # ModelMismatch when the model does not fit

`check_model` reads the model's config from Triton (`get_model_config`) and raises `ModelMismatch`,
naming the setting, when MAX_BATCH is over the model's max_batch_size or a tensor's dtype or dims differ
from service/specs.py (`expected_tensors`, which tests/triton also compares the model repository's
config.pbtxt files with). The library errors of the call pass through untranslated: `TritonBackend`
decides what no answer means (at start: check later; on a call: `translate_error`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from service.backends.base import ModelOutputs, output_shapes
from service.errors import BackendUnavailable
from service.settings import Settings
from service.specs import ModelSpec, get_spec

if TYPE_CHECKING:
    import tritonclient.grpc.aio as triton

INPUT = "image"
OUTPUTS = ModelOutputs._fields
_TRITON_TYPES = {np.dtype(np.float32): mc.TYPE_FP32, np.dtype(np.int32): mc.TYPE_INT32}

_SETTING_DEFAULTS = Settings.model_fields


@dataclass(frozen=True)
class TritonSettings:
    """Where Triton is and how to talk to it.

    TritonSettings()                                         # localhost, the CPU models
    TritonSettings(url="triton:8001", model_suffix="_trt")   # production TensorRT models
    TritonSettings(timeout_s=0.25, use_shared_memory=True)   # Triton on this host
    """

    # Defaults are the service settings' own (one source: TRITON_URL, TRITON_MODEL_SUFFIX, ...).
    url: str = _SETTING_DEFAULTS["triton_url"].default  # gRPC host:port
    # Triton model name = f"blazeface_{model}{model_suffix}"
    model_suffix: str = _SETTING_DEFAULTS["triton_model_suffix"].default
    timeout_s: float = _SETTING_DEFAULTS["triton_timeout_s"].default  # per call; past it → DeadlineExceeded
    ready_timeout_s: float = 0.5  # per readiness probe
    use_shared_memory: bool = _SETTING_DEFAULTS["triton_shared_memory"].default  # only on Triton's host
    # The largest batch `infer` is given (MAX_BATCH): `start()` checks it against each model's
    # max_batch_size; a shared-memory region holds this many images.
    max_batch: int = 64
    shm_max_regions: int = 16  # regions per model (= shared-memory calls in flight); more: socket

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError("url must not be empty")
        for field in ("timeout_s", "ready_timeout_s"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field} must be > 0")
        for field in ("max_batch", "shm_max_regions"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1")

    def model_name(self, model: str) -> str:
        return f"blazeface_{get_spec(model).name}{self.model_suffix}"


class ModelMismatch(BackendUnavailable):
    """Triton's model does not fit the service's settings or specs: `start()` raises it, so the service
    does not start; found later (Triton did not answer at start), the model's calls fail with it (503)."""


def expected_tensors(spec: ModelSpec) -> dict[str, tuple[int, list[int]]]:
    """Tensor name -> (Triton data type, dims without the batch dimension), from the model's spec."""
    size = spec.input_size
    outputs = {
        name: (_TRITON_TYPES[dtype], list(shape)) for name, (dtype, shape) in output_shapes(spec).items()
    }
    return {INPUT: (mc.TYPE_UINT8, [size, size, 3]), **outputs}


def config_problems(config: mc.ModelConfig, spec: ModelSpec, max_batch: int) -> list[str]:
    """What in a model's Triton config disagrees with the service: MAX_BATCH, tensor dtypes and dims."""
    problems = []
    if max_batch > config.max_batch_size:  # 0: no batch dimension at all
        problems.append(
            f"MAX_BATCH={max_batch} is over its max_batch_size {config.max_batch_size} "
            f"(set MAX_BATCH to at most {config.max_batch_size})"
        )
    served = {
        tensor.name: (tensor.data_type, list(tensor.dims)) for tensor in [*config.input, *config.output]
    }
    for name, wanted in expected_tensors(spec).items():
        got = served.get(name)
        if got is None:
            problems.append(f"it has no tensor {name!r}")
        elif got != wanted:
            problems.append(f"{name} is {_describe(*got)}, service/specs.py has {_describe(*wanted)}")
    return problems


def _describe(data_type: int, dims: list[int]) -> str:
    return f"{mc.DataType.Name(data_type)} {dims}"


async def check_model(
    client: triton.InferenceServerClient, settings: TritonSettings, model: str, timeout: float
) -> None:
    """Compare the model's config on Triton with the settings and specs (library errors pass)."""
    name = settings.model_name(model)
    response = await client.get_model_config(name, client_timeout=timeout)
    problems = config_problems(response.config, get_spec(model), settings.max_batch)
    if problems:
        raise ModelMismatch(
            f"Triton model {name} at {settings.url} does not fit this service: "
            f"{'; '.join(problems)}. Check MAX_BATCH, TRITON_MODEL_SUFFIX "
            f"({settings.model_suffix!r}) and the model repository"
        )
