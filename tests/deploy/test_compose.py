"""docker-compose.yml and deploy/compose.cpu.yml: the Compose Specification's schema, then what a user's
first `docker compose up` relies on: files that exist, start order, GPU, Triton/TensorRT pairing."""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest

from service.specs import MODELS
from tests.deploy.conftest import (
    COMPOSE_FILES,
    DEPLOY,
    ROOT,
    dockerfile_instructions,
    image_is_pinned,
    load_yaml,
    onnx_engine_caches,
    require_file,
    setting_env_names,
)

SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text(encoding="utf-8"))
GPU_FILE, CPU_FILE = COMPOSE_FILES
GPU = load_yaml(GPU_FILE)
CPU = load_yaml(CPU_FILE)


def interpolate(value: str) -> str:
    """`${VAR:-default}` → default, as Compose does when VAR is unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: interpolate(str(value)) for key, value in env.items()}


def bind_mounts(service: dict[str, Any], compose_file: Path) -> dict[PurePosixPath, Path]:
    """Container path → host path of each bind mount (short syntax), relative paths resolved."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts[PurePosixPath(target)] = (compose_file.parent / source).resolve()
    return mounts


def host_path(service: dict[str, Any], compose_file: Path, container_path: str) -> Path:
    """The host file a container path reads through the service's bind mounts."""
    path = PurePosixPath(container_path)
    if not path.is_absolute():
        path = PurePosixPath(service.get("working_dir", "/")) / path
    for target, source in bind_mounts(service, compose_file).items():
        if path == target or target in path.parents:
            return source / path.relative_to(target)
    raise AssertionError(f"{container_path} is not on a bind mount")


def flag(command: list[str], name: str) -> list[str]:
    return [arg.split("=", 1)[1] for arg in command if arg.startswith(f"{name}=")]


def gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_matches_compose_specification_schema(path: Path) -> None:
    # The vendored schema says draft-07 (without the '#' jsonschema looks for), so name the draft.
    validator = jsonschema.Draft7Validator(SCHEMA)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(load_yaml(path))]
    assert not errors, errors


def test_schema_rejects_a_misspelt_key() -> None:
    broken = load_yaml(GPU_FILE)
    broken["services"]["api"]["read_olny"] = True
    assert not jsonschema.Draft7Validator(SCHEMA).is_valid(broken)


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_images_pinned_and_build_contexts_exist(path: Path) -> None:
    doc = load_yaml(path)
    stages = {i.stage for i in dockerfile_instructions() if i.keyword == "FROM"}
    for name, service in doc["services"].items():
        assert image_is_pinned(service["image"]), f"{name}: {service['image']}"
        if "build" in service:
            context = (path.parent / service["build"]["context"]).resolve()
            assert context == ROOT, f"{name}: build context {context}"
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file()
            assert service["build"]["target"] in stages


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_bind_mounts_and_volumes_exist(path: Path) -> None:
    doc = load_yaml(path)
    declared = set(doc.get("volumes", {}))
    for name, service in doc["services"].items():
        for target, source in bind_mounts(service, path).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} is not declared"


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_depends_on_names_services(path: Path) -> None:
    doc = load_yaml(path)
    for name, service in doc["services"].items():
        for dependency in service.get("depends_on", []):
            assert dependency in doc["services"], f"{name} depends on unknown {dependency}"


def test_gpu_start_order() -> None:
    services = GPU["services"]
    assert services["engine"]["depends_on"] == {"weights": {"condition": "service_completed_successfully"}}
    assert services["triton"]["depends_on"] == {"engine": {"condition": "service_completed_successfully"}}
    assert services["api"]["depends_on"] == {"triton": {"condition": "service_healthy"}}
    assert services["locust"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_gpu_reservations() -> None:
    services = GPU["services"]
    for name in ("engine", "triton"):
        (device,) = gpu_devices(services[name])
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"], name
    for name in ("weights", "api", "prometheus", "grafana", "locust"):
        assert not gpu_devices(services[name]), name


def test_triton_and_tensorrt_come_from_one_release() -> None:
    services = GPU["services"]
    triton, engine = services["triton"]["image"], services["engine"]["image"]
    triton_match = re.fullmatch(r"nvcr\.io/nvidia/tritonserver:(\d\d\.\d\d)-py3", triton)
    engine_match = re.fullmatch(r"nvcr\.io/nvidia/tensorrt:(\d\d\.\d\d)-py3", engine)
    assert triton_match and engine_match, (triton, engine)
    assert triton_match.group(1) == engine_match.group(1)
    # deploy/build_engines.sh documents the same pairing.
    script = (DEPLOY / "build_engines.sh").read_text(encoding="utf-8")
    assert triton in script and engine in script


def test_model_repository_handoff() -> None:
    """weights copies the image's repo into the volume, engine builds there, Triton serves it."""
    services = GPU["services"]
    copy = services["weights"]["command"]
    assert copy[:2] == ["cp", "-R"] and copy[-1] == "/repo/"
    assert "models:/repo" in services["weights"]["volumes"]
    assert "models:/repo" in services["engine"]["volumes"]
    assert "models:/repo" in services["triton"]["volumes"]  # writable: test_onnx_engine_cache_is_writable
    # The image ships what the weights job copies.
    runtime = [i for i in dockerfile_instructions() if i.stage == "runtime"]
    copied = {i.args.split()[-1] for i in runtime if i.keyword == "COPY"}
    for source in copy[2:-1]:
        assert any(c.startswith(source) for c in copied), f"the image has no {source}"
    assert "/app/deploy/build_engines.sh" in copied
    assert "/repo/deploy/build_engines.sh" in " ".join(services["engine"]["command"])
    assert services["engine"]["environment"]["FORCE"].startswith("${FORCE_ENGINES")


def test_triton_service() -> None:
    triton = GPU["services"]["triton"]
    command = triton["command"]
    assert command[0] == "tritonserver"
    assert flag(command, "--model-repository") == ["/repo/triton_repo"]
    assert flag(command, "--model-control-mode") == ["explicit"]
    models = flag(command, "--load-model")
    assert sorted(models) == sorted(f"blazeface_{name}_trt" for name in MODELS)
    for model in models:
        assert (ROOT / "triton_repo" / model / "config.pbtxt").is_file(), model
    published = {port.rsplit(":", 1)[-1] for port in triton["ports"]}
    assert published == {"8000", "8001", "8002"}
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert triton["user"].split(":")[0] != "0"


def test_onnx_engine_cache_is_writable_on_the_model_volume() -> None:
    """The _onnx models' engine cache lies under Triton's model repository, on the `models` volume,
    mounted writable (not the container's /tmp: lost on restart)."""
    triton = GPU["services"]["triton"]
    (repository,) = flag(triton["command"], "--model-repository")
    volume_mounts = [v.split(":") for v in triton["volumes"]]
    for model, cache in onnx_engine_caches().items():
        assert cache == PurePosixPath(repository) / model / "trt_cache", model
        mount = max((m for m in volume_mounts if cache.is_relative_to(m[1])), key=lambda m: len(m[1]))
        assert mount[0] == "models" and mount[2:] != ["ro"], (model, mount)


def test_api_service_talks_to_triton() -> None:
    api = GPU["services"]["api"]
    env = environment(api)
    assert env["BACKEND"] == "triton"
    assert env["TRITON_URL"] == "triton:8001"
    assert env["TRITON_MODEL_SUFFIX"] == "_trt"
    assert int(env["WORKERS"]) >= 1


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_api_container_hardening_and_settings(path: Path) -> None:
    api = load_yaml(path)["services"]["api"]
    assert api["read_only"] is True
    assert any(t.split(":")[0] == "/tmp" for t in api["tmpfs"])  # PROMETHEUS_MULTIPROC_DIR, tempfile
    assert int(api["user"].split(":")[0]) != 0
    assert api["cap_drop"] == ["ALL"]
    unknown = set(environment(api)) - setting_env_names()
    assert not unknown, f"not settings in service/settings.py: {unknown}"
    assert any(port.endswith(":8000") for port in api["ports"])


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_prometheus_and_grafana_read_existing_config(path: Path) -> None:
    services = load_yaml(path)["services"]
    prometheus = services["prometheus"]
    (config,) = flag(prometheus["command"], "--config.file")
    assert host_path(prometheus, path, config).is_file()
    grafana = services["grafana"]
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(grafana, path, home).is_file()
    assert host_path(grafana, path, "/etc/grafana/provisioning/datasources").is_dir()
    assert host_path(grafana, path, "/etc/grafana/provisioning/dashboards").is_dir()


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_locust_profile_and_locustfile(path: Path) -> None:
    locust = load_yaml(path)["services"]["locust"]
    assert locust["profiles"] == ["loadtest"]
    env = environment(locust)
    assert env["LOCUST_HOST"] == "http://api:8000"
    locustfile = host_path(locust, path, env["LOCUST_LOCUSTFILE"])
    assert locustfile == ROOT / "loadtest" / "locustfile.py"
    require_file(locustfile, "the load-test step writes it")


def test_cpu_variant_runs_the_embedded_backend_without_gpu() -> None:
    services = CPU["services"]
    assert environment(services["api"])["BACKEND"] == "onnx"
    assert not {"triton", "engine", "weights"} & set(services)
    assert not any(gpu_devices(service) for service in services.values())
    assert CPU["name"] != GPU["name"]  # two projects: their volumes and containers never mix
