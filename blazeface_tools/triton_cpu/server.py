"""Run a real `tritonserver` on a CPU-only machine: the binary inside the `nvidia-pytriton` wheel.

Used by `deploy/triton-cpu.sh`, the Triton tests and the benchmarks; production runs NVIDIA's Triton
container instead. The recipe (ARCHITECTURE.md §7, mirroring `pytriton/triton.py`):

1. copy the wheel's `pytriton/tritonserver/` to a writable place, without `python_backend_stubs/`, and put
   the stub built for this Python (`python_backend_stubs/3.X/triton_python_backend_stub`) into the copy's
   `backends/python/`;
2. `LD_LIBRARY_PATH=<site-packages>/nvidia_pytriton.libs` — the binary's RPATH is relative to
   site-packages, so the copy cannot find its libraries otherwise;
3. the stub embeds an interpreter that ignores PYTHONPATH and finds its packages from the first `python3`
   on PATH, so the model environment's `bin/` goes first on PATH.

The model environment is a venv of its own, not the service's: Triton 2.51's stub (pybind11 2.10) sends
zero-byte outputs when numpy >= 2 is imported (fixed upstream in python_backend PR #384, Triton 24.11), so
the models run with numpy < 2 and the same onnxruntime version as the embedded backend.

Both the server copy and the model venv are built once into a cache directory ($BLAZEFACE_TRITON_CACHE,
default ~/.cache/blazeface-serve) under a file lock, so parallel test runs share them.

Stopping: SIGTERM shuts Triton down cleanly. A SIGKILL (a crash, or `kill()` in fault tests) while
requests are in flight orphans the Python-backend stubs (they deadlock, parent = init) and leaks their
`/dev/shm/triton_python_backend_shm_region_*`; `stop()`/`kill()` end those stubs by PID and remove the
regions. Stubs are found by their command line, which names the server's PID and the region.

    server = TritonServer(ports=Ports.free())
    server.start()          # returns once every model is ready
    ...                     # gRPC at server.grpc_url
    server.stop()
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from blazeface_tools import TRITON_REPO
from service.specs import MODELS

DEFAULT_MODELS: tuple[str, ...] = tuple(f"blazeface_{name}_cpu" for name in MODELS)
STUB_NAME = "triton_python_backend_stub"
SHM_DIR = Path("/dev/shm")
PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


class TritonServerError(RuntimeError):
    """The server could not be prepared, did not start, or died while starting."""


@dataclass(frozen=True)
class Ports:
    http: int = 8010  # not Triton's usual 8000: that is the API's own default port on the same host
    grpc: int = 8001
    metrics: int = 8002

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> Ports:
        """Three ports free right now (the OS picks them; hold all three so they differ)."""
        with contextlib.ExitStack() as stack:
            sockets = [stack.enter_context(socket.socket()) for _ in range(3)]
            for sock in sockets:
                sock.bind((host, 0))
            http, grpc, metrics = (sock.getsockname()[1] for sock in sockets)
        return cls(http=http, grpc=grpc, metrics=metrics)


# --- installation -----------------------------------------------------------------------------------


def cache_root() -> Path:
    explicit = os.environ.get("BLAZEFACE_TRITON_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "blazeface-serve"


def pytriton_paths() -> tuple[Path, Path]:
    """(the wheel's `tritonserver/` folder, its `nvidia_pytriton.libs/`), without importing pytriton
    (its package imports dependencies we do not install)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonServerError("nvidia-pytriton is not installed (pip install --no-deps nvidia-pytriton)")
    package = Path(next(iter(spec.submodule_search_locations)))
    return package / "tritonserver", package.parent / "nvidia_pytriton.libs"


def model_env_requirements() -> tuple[str, ...]:
    # Same onnxruntime as the embedded backend, so both serve bit-identical outputs.
    return ("numpy>=1.26,<2", f"onnxruntime=={importlib.metadata.version('onnxruntime')}")


@contextlib.contextmanager
def _cache_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prepare_server_dir(root: Path | None = None) -> Path:
    """The writable server copy with this Python's stub (recipe step 1); built once per wheel version."""
    root = root or cache_root()
    source, _ = pytriton_paths()
    version = importlib.metadata.version("nvidia-pytriton")
    target = root / f"tritonserver-{version}-py{PY_VERSION}"
    marker = target / ".complete"
    with _cache_lock(root):
        if not marker.exists():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(
                source, target, ignore=shutil.ignore_patterns("python_backend_stubs", "__pycache__")
            )
            stub = source / "python_backend_stubs" / PY_VERSION / STUB_NAME
            if not stub.is_file():
                raise TritonServerError(f"nvidia-pytriton {version} has no stub for Python {PY_VERSION}")
            shutil.copy2(stub, target / "backends" / "python" / STUB_NAME)
            marker.write_text(version)
    return target


def ensure_model_env(path: Path | None = None, requirements: Sequence[str] | None = None) -> Path:
    """A venv for the Python-backend models (see the module docstring for why not the service's own).

    Created with this interpreter (the stub must match its minor version) and rebuilt when the
    requirements change. Needs pip to reach an index the first time.
    """
    wanted = "\n".join(requirements or model_env_requirements())
    path = path or cache_root() / f"model-env-py{PY_VERSION}"
    marker = path / ".requirements"
    with _cache_lock(path.parent):
        if marker.exists() and marker.read_text() == wanted:
            return path
        # Venvs cannot be moved (absolute paths in scripts), so build in place; the marker goes last.
        shutil.rmtree(path, ignore_errors=True)
        base_python = getattr(sys, "_base_executable", sys.executable)
        pip = [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        try:
            subprocess.run([base_python, "-m", "venv", str(path)], check=True)
            subprocess.run([*pip, *wanted.splitlines()], check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise TritonServerError(f"could not build the Triton model environment at {path}: {exc}") from exc
        marker.write_text(wanted)
    return path


# --- orphaned stubs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stub:
    pid: int
    shm_region: str  # file name under /dev/shm


def _stubs_of(server_pid: int) -> list[_Stub]:
    """Python-backend stubs started by `server_pid`, alive or orphaned.

    The stub's argv is `stub model.py <shm region> <default size> <growth> <parent pid> …`; matching the
    parent PID there (not the PPID) still finds stubs after the server died and init adopted them.
    """
    stubs = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # exited meanwhile, or not ours to read
            continue
        if len(argv) > 5 and argv[0].endswith(STUB_NAME.encode()) and argv[5] == str(server_pid).encode():
            stubs.append(_Stub(pid=int(entry.name), shm_region=argv[2].decode().lstrip("/")))
    return stubs


def _state(pid: int) -> str | None:
    """The process state letter from /proc (R, S, T, Z, …), None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _running(pid: int) -> bool:
    # Zombies count as gone: init on some machines never reaps what we kill.
    return _state(pid) not in ("Z", None)


# --- the server ---------------------------------------------------------------------------------------


class TritonServer:
    """One `tritonserver` process on loopback serving `models` from `model_repository`."""

    def __init__(
        self,
        *,
        model_repository: Path = TRITON_REPO,
        models: Sequence[str] = DEFAULT_MODELS,
        host: str = "127.0.0.1",
        ports: Ports | None = None,
        model_env: Path | None = None,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.models = tuple(models)
        self.host = host
        self.ports = ports or Ports()
        self.log_path = log_path
        self._model_env = model_env
        self._extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        self._stubs: list[_Stub] = []  # seen while the server ran; cleaned up after it ends

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ports.http}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports.metrics}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self, server_dir: Path) -> list[str]:
        args = [
            str(server_dir / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={server_dir / 'backends'}",
            f"--cache-directory={server_dir / 'caches'}",
            f"--http-address={self.host}",
            f"--http-port={self.ports.http}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.ports.metrics}",
            "--allow-gpu-metrics=false",  # no DCGM here; saves its start-up attempt
            "--model-control-mode=explicit",
        ]
        args += [f"--load-model={model}" for model in self.models]
        return args + list(self._extra_args)

    def start(self, timeout_s: float = 60.0) -> float:
        """Launch and block until the server and every model are ready; returns the seconds it took."""
        if self.running():
            raise TritonServerError(f"tritonserver already running (pid {self.pid})")
        server_dir = prepare_server_dir()
        model_env = ensure_model_env(self._model_env)
        _, libs = pytriton_paths()
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(model_env / "bin"), env.get("PATH", "")])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
        env["VIRTUAL_ENV"] = str(model_env)
        env.pop("PYTHONHOME", None)

        # Without a log file Triton logs to our stdout (the CLI under a process manager).
        log = open(self.log_path, "ab") if self.log_path is not None else None  # noqa: SIM115
        began = time.monotonic()
        try:
            # Own session: a Ctrl-C meant for the caller is not delivered to Triton behind its back.
            self._process = subprocess.Popen(
                self.command(server_dir),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if log is not None:
                log.close()
        try:
            self._wait_ready(began + timeout_s)
        except BaseException:
            self.stop()
            raise
        self._stubs = _stubs_of(self._process.pid)
        return time.monotonic() - began

    def ready(self, timeout_s: float = 0.5) -> bool:
        """Server ready and every model ready (HTTP health endpoints); never raises."""
        paths = ["/v2/health/ready", *(f"/v2/models/{model}/ready" for model in self.models)]
        for path in paths:
            try:
                with urllib.request.urlopen(self.http_url + path, timeout=timeout_s) as response:
                    if response.status != 200:
                        return False
            except (OSError, urllib.error.URLError):
                return False
        return True

    def _wait_ready(self, deadline: float) -> None:
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise TritonServerError(
                    f"tritonserver exited with {self._process.returncode} while starting{self._log_tail()}"
                )
            if self.ready():
                return
            time.sleep(0.1)
        raise TritonServerError(f"tritonserver not ready after the start timeout{self._log_tail()}")

    def _log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- tritonserver log (tail) ---\n" + "\n".join(tail)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`; then end orphaned stubs and remove their regions."""
        process = self._process
        if process is not None and process.poll() is None:
            self._stubs += _stubs_of(process.pid)
            process.terminate()
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)  # a paused server would never see the SIGTERM
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._cleanup()

    def kill(self) -> None:
        """SIGKILL the server alone, as a crash would, then clean up what it orphaned (fault tests)."""
        process = self._process
        if process is not None and process.poll() is None:
            self._stubs += _stubs_of(process.pid)
            process.kill()
            process.wait()
        self._cleanup()

    def pause(self) -> None:
        """SIGSTOP the server: it keeps its sockets but answers nothing (a hung server)."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGSTOP)
        # The signal lands asynchronously; return only once every thread is stopped.
        deadline = time.monotonic() + 1.0
        while _state(self._process.pid) not in ("T", None) and time.monotonic() < deadline:
            time.sleep(0.005)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def _cleanup(self, timeout_s: float = 5.0) -> None:
        if self._process is None:
            return
        # Kill only what still runs as our server's stub: a PID seen earlier could have been reused.
        alive = _stubs_of(self._process.pid)
        stubs = {stub.pid: stub for stub in [*self._stubs, *alive]}
        for stub in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stub.pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout_s
        while any(_running(pid) for pid in stubs) and time.monotonic() < deadline:
            time.sleep(0.02)
        for stub in stubs.values():
            (SHM_DIR / stub.shm_region).unlink(missing_ok=True)
        self._stubs = []

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
