"""Triton Python-backend model: one BlazeFace ONNX graph run by ONNX Runtime on the CPU.

Shared by every `blazeface_*_cpu` model (the other model directories hold a symlink to this file):
everything model-specific — tensor names, dtypes, the ONNX file — comes from the model's
`config.pbtxt`, so there is nothing here to keep in step with the configs.

Config parameters:
    onnx_path             the ONNX file, relative to the model directory (required)
    intra_op_num_threads  ONNX Runtime intra-op threads; "0" (default) lets ONNX Runtime choose

`execute` runs all requests of one call as ONE ONNX Runtime batch (the dynamic batcher has already
grouped them) and splits the outputs back: one response per request, in order. An error is set on the
response of the request it belongs to; the others still get their outputs.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        # The Python backend passes the model's own directory as "model_repository".
        onnx_path = (Path(args["model_repository"]) / params["onnx_path"]).resolve()
        if not onnx_path.is_file():
            raise pb_utils.TritonModelException(f"{config['name']}: ONNX file not found: {onnx_path}")

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_num_threads", "0"))
        self._session = ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )

        self._inputs = [item["name"] for item in config["input"]]
        self._outputs = [
            (item["name"], pb_utils.triton_string_to_numpy(item["data_type"])) for item in config["output"]
        ]
        graph_inputs = {item.name for item in self._session.get_inputs()}
        graph_outputs = {item.name for item in self._session.get_outputs()}
        missing = (set(self._inputs) - graph_inputs) | ({name for name, _ in self._outputs} - graph_outputs)
        if missing:
            raise pb_utils.TritonModelException(
                f"{config['name']}: tensors {sorted(missing)} of config.pbtxt are not in {onnx_path}"
            )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        feeds: list[dict[str, np.ndarray]] = []
        owners: list[int] = []  # index into `requests` of each entry of `feeds`
        for index, request in enumerate(requests):
            feed = {}
            for name in self._inputs:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is None:
                    responses[index] = _error(f"missing input {name!r}")
                    break
                feed[name] = tensor.as_numpy()
            else:
                feeds.append(feed)
                owners.append(index)

        if feeds:
            try:
                for index, outputs in zip(owners, self._run_batched(feeds), strict=True):
                    responses[index] = self._response(outputs)
            except Exception:
                # The merged batch failed: run each request alone so only the bad one gets the error.
                for index, feed in zip(owners, feeds, strict=True):
                    try:
                        responses[index] = self._response(self._run(feed))
                    except Exception as exc:
                        responses[index] = _error(f"inference failed: {exc}")
        return responses

    def _run_batched(self, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        if len(feeds) == 1:
            return [self._run(feeds[0])]
        merged = {name: np.concatenate([feed[name] for feed in feeds]) for name in self._inputs}
        outputs = self._run(merged)
        # Split points along the batch axis: request i owns rows bounds[i]:bounds[i+1].
        bounds = np.cumsum([0] + [len(feed[self._inputs[0]]) for feed in feeds])
        return [[output[start:stop] for output in outputs] for start, stop in itertools.pairwise(bounds)]

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = [name for name, _ in self._outputs]
        results = self._session.run(names, feed)
        return [
            np.ascontiguousarray(result, dtype=dtype)
            for result, (_, dtype) in zip(results, self._outputs, strict=True)
        ]

    def _response(self, outputs: list[np.ndarray]) -> Any:
        # Row slices of C-contiguous arrays are contiguous, as pb_utils.Tensor requires.
        tensors = [
            pb_utils.Tensor(name, array) for (name, _), array in zip(self._outputs, outputs, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)


def _error(message: str) -> Any:
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))
