"""The embedded backend: ONNX Runtime in this process, on the CPU (the default)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.backends.base import Backend, ModelOutputs
from service.errors import BackendUnavailable
from service.specs import MODELS


def make_session(path: Path, threads: int = 1, spin: bool = False) -> ort.InferenceSession:
    """An ORT session tuned for small CPU batches (threads measured in loadtest/bench_model.py)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spin:
        # Spinning pool threads steal the core that decodes the next image: measured slower when the
        # API shares its cores with inference.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxBackend(Backend):
    """Both models in-process. `run` is the synchronous call; `infer` runs it off the event loop."""

    name = "onnx"

    def __init__(self, model_repository: Path, threads: int = 1) -> None:
        self._model_repository = model_repository
        self._threads = threads
        self._sessions: dict[str, ort.InferenceSession] = {}
        # One thread per model: ORT already parallelises inside a call, and a private pool keeps
        # inference from queueing behind decode work in the default executor.
        self._executor: ThreadPoolExecutor | None = None

    def load(self) -> None:
        for name, spec in MODELS.items():
            if name not in self._sessions:
                path = spec.onnx_path(self._model_repository)
                if not path.exists():
                    raise BackendUnavailable(
                        f"model file missing: {path}; set MODEL_REPOSITORY to a folder holding "
                        "blazeface_{short,full}_onnx/1/model.onnx, or build them in a checkout with "
                        "`python -m blazeface_tools.weights build`"
                    )
                self._sessions[name] = make_session(path, self._threads)
                # The first run allocates ORT's buffers; pay it here, not in a user's request.
                self.run(name, np.zeros((1, spec.input_size, spec.input_size, 3), np.uint8))

    def run(self, model: str, batch: np.ndarray) -> ModelOutputs:
        session = self._sessions.get(model)
        if session is None:
            raise BackendUnavailable(f"model {model!r} is not loaded")
        try:
            outputs = session.run(list(ModelOutputs._fields), {"image": batch})
        except Exception as exc:  # ORT raises its own RuntimeError subclasses (Fail, InvalidArgument, ...)
            raise BackendUnavailable(f"ONNX Runtime failed: {type(exc).__name__}") from exc
        return ModelOutputs(*outputs)

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=len(MODELS), thread_name_prefix="ort")
        await asyncio.get_running_loop().run_in_executor(self._executor, self.load)

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._sessions.clear()

    async def infer(self, model: str, batch: np.ndarray) -> ModelOutputs:
        if self._executor is None:
            raise BackendUnavailable("backend is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.run, model, batch)

    async def ready(self) -> bool:
        return self._executor is not None and all(name in self._sessions for name in MODELS)
