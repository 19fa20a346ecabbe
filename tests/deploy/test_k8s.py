"""deploy/k8s: kustomize overlays render, every object validates against the Kubernetes schemas, and the
pieces fit: selectors, probes, security contexts, HPA metrics served by the adapter rules."""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.specs import MODELS
from tests.deploy.conftest import (
    COMPOSE_FILES,
    K8S,
    KNOWN_METRICS,
    ROOT,
    image_is_pinned,
    kustomization_files,
    kustomize_patch_paths,
    kustomize_resource_files,
    load_yaml,
    load_yaml_all,
    onnx_engine_caches,
    pod_specs,
    promql_metric_names,
    setting_env_names,
    tool,
)

OVERLAYS = ("cpu", "gpu")
# The oldest release these manifests target (autoscaling/v2 and policy/v1 are GA there) and the newest the
# installed kubernetes-validate knows.
K8S_VERSIONS = ("1.28.0", kubernetes_validate.utils.latest_version())
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
ADAPTER = K8S / "prometheus-adapter" / "values.yaml"


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def find(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod.get("initContainers", []) + pod["containers"]


def argv(container: dict[str, Any]) -> list[str]:
    return container.get("command", []) + container.get("args", [])


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def validate_crd(doc: dict[str, Any]) -> None:
    """kubernetes-validate has no schema for CRDs: check what the Prometheus Operator requires."""
    assert doc["metadata"]["name"]
    spec = doc["spec"]
    assert spec["selector"]["matchLabels"], "a ServiceMonitor without a selector matches nothing"
    assert spec["endpoints"], "no endpoints"
    for endpoint in spec["endpoints"]:
        assert "port" in endpoint or "targetPort" in endpoint
        assert endpoint.get("path", "/metrics").startswith("/")
        assert re.fullmatch(r"\d+[smh]", endpoint.get("interval", "30s"))


# --- files and kustomizations --------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", kustomization_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_kustomization_references_exist(kustomization: Path) -> None:
    spec = load_yaml(kustomization)
    for entry in spec.get("resources", []) + spec.get("components", []):
        target = kustomization.parent / entry
        assert target.is_file() or (target / "kustomization.yaml").is_file(), entry
    for patch in kustomize_patch_paths(kustomization):
        assert patch.is_file(), patch


def test_every_manifest_is_used_by_a_kustomization() -> None:
    used: set[Path] = set()
    for kustomization in kustomization_files():
        used |= set(kustomize_resource_files(kustomization)) | kustomize_patch_paths(kustomization)
    manifests = {p.resolve() for folder in ("base", "overlays") for p in (K8S / folder).rglob("*.yaml")}
    manifests -= {p.resolve() for p in kustomization_files()}
    assert manifests <= used, f"not in any kustomization: {sorted(map(str, manifests - used))}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_raw_manifests_validate(version: str) -> None:
    """Each resource file on its own, so this runs even without kubectl."""
    patches = set().union(*(kustomize_patch_paths(k) for k in kustomization_files()))
    files = {f for k in kustomization_files() for f in kustomize_resource_files(k)} - patches
    assert files
    for path in sorted(files):
        for doc in load_yaml_all(path):
            if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
                validate_crd(doc)
            else:
                kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_overlay_validates(overlay: str, version: str) -> None:
    docs = rendered(overlay)
    for doc in docs:
        assert doc["metadata"].get("namespace", "blazeface") == "blazeface"
        if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
            validate_crd(doc)
        else:
            kubernetes_validate.validate(doc, version, strict=True)


# --- how the pieces fit --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_and_targets_resolve(overlay: str) -> None:
    docs = rendered(overlay)
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    services = [d for d in docs if d["kind"] == "Service"]
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert labels_match(selector, pod_labels(deployment))
    for service in services:
        pods = [d for d in deployments if labels_match(service["spec"]["selector"], pod_labels(d))]
        assert pods, f"Service {service['metadata']['name']} selects no Deployment"
        port_names = {p["name"] for c in pod_specs(pods[0])[0]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, (service["metadata"]["name"], port)
    for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        matched = [s for s in services if labels_match(selector, s["metadata"]["labels"])]
        assert matched, f"ServiceMonitor {monitor['metadata']['name']} selects no Service"
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in {p["name"] for s in matched for p in s["spec"]["ports"]}
    for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        find(docs, ref["kind"], ref["name"])
    for pdb in (d for d in docs if d["kind"] == "PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(labels_match(selector, pod_labels(d)) for d in deployments)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(overlay: str) -> None:
    for doc in rendered(overlay):
        for pod in pod_specs(doc):
            pod_context = pod.get("securityContext", {})
            assert pod_context.get("runAsNonRoot") is True, doc["metadata"]["name"]
            assert pod.get("automountServiceAccountToken") is False
            for container in containers(pod):
                context = {**pod_context, **container.get("securityContext", {})}
                name = f"{doc['metadata']['name']}/{container['name']}"
                assert context.get("runAsUser", 1) != 0, name
                assert context.get("readOnlyRootFilesystem") is True, name
                assert context.get("allowPrivilegeEscalation") is False, name
                assert context.get("capabilities", {}).get("drop") == ["ALL"], name
                assert image_is_pinned(container["image"]), name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_probes_env_and_backend(overlay: str) -> None:
    docs = rendered(overlay)
    pod = pod_specs(find(docs, "Deployment", "blazeface-api"))[0]
    (api,) = pod["containers"]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = env_of(api)
    assert set(env) <= setting_env_names(), set(env) - setting_env_names()
    assert any(m["mountPath"] == "/tmp" for m in api["volumeMounts"])  # read-only root: /tmp is writable
    if overlay == "gpu":
        assert env["BACKEND"] == "triton"
        assert env["TRITON_MODEL_SUFFIX"] == "_trt"
        host, port = env["TRITON_URL"].split(":")
        service = find(docs, "Service", host)
        assert int(port) in {p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"}
    else:
        assert env["BACKEND"] == "onnx"
        assert not any(d["metadata"]["name"].startswith("blazeface-triton") for d in docs)


def test_triton_deployment() -> None:
    docs = rendered("gpu")
    pod = pod_specs(find(docs, "Deployment", "blazeface-triton"))[0]
    (triton,) = pod["containers"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    command = argv(triton)
    assert command[0] == "tritonserver"
    assert "--model-control-mode=explicit" in command
    models = [arg.split("=", 1)[1] for arg in command if arg.startswith("--load-model=")]
    assert sorted(models) == sorted(f"blazeface_{name}_trt" for name in MODELS)
    # The model repository: a PVC the init containers fill, read-only for Triton.
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
    find(docs, "PersistentVolumeClaim", claim)
    (mount,) = [m for m in triton["volumeMounts"] if m["name"] == "models" and "subPath" not in m]
    assert mount["readOnly"] is True
    assert f"--model-repository={mount['mountPath']}/triton_repo" in command
    init = {c["name"]: c for c in pod["initContainers"]}
    assert init["engine"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert f"{mount['mountPath']}/deploy/build_engines.sh" in " ".join(argv(init["engine"]))
    # NVIDIA's entrypoint must run first in their images: only `args` may be set.
    assert "command" not in init["engine"] and "command" not in triton


def test_onnx_engine_cache_is_writable_on_the_model_volume() -> None:
    """Each _onnx engine cache is a writable mount of its own folder of the model volume (the rest of the
    repository stays read-only for Triton), and the engine job runs the script that makes the folders."""
    pod = pod_specs(find(rendered("gpu"), "Deployment", "blazeface-triton"))[0]
    (triton,) = pod["containers"]
    command = argv(triton)
    (repository,) = [a.split("=", 1)[1] for a in command if a.startswith("--model-repository=")]
    root = PurePosixPath(repository).parent  # the volume's root is mounted at /repo
    for model, folder in onnx_engine_caches().items():
        assert folder == PurePosixPath(repository) / model / "trt_cache", model
        (mount,) = [m for m in triton["volumeMounts"] if PurePosixPath(m["mountPath"]) == folder]
        assert mount["name"] == "models" and not mount.get("readOnly", False), model
        assert PurePosixPath(mount["subPath"]) == folder.relative_to(root), model


def test_images_match_compose() -> None:
    """One Triton/TensorRT release and one API image everywhere."""
    compose = load_yaml(COMPOSE_FILES[0])["services"]
    pod = pod_specs(find(rendered("gpu"), "Deployment", "blazeface-triton"))[0]
    images = {c["name"]: c["image"] for c in containers(pod)}
    assert images["triton"] == compose["triton"]["image"]
    assert images["engine"] == compose["engine"]["image"]
    assert images["model-repo"] == compose["api"]["image"]


def test_hpa_metrics_are_served_by_the_adapter() -> None:
    adapter_rules = load_yaml(ADAPTER)["rules"]["custom"]
    served = {rule["name"]["as"] for rule in adapter_rules}
    for rule in adapter_rules:
        series = re.match(r"[A-Za-z_:][\w:]*", rule["seriesQuery"].strip("'\""))
        assert series and series.group(0) in KNOWN_METRICS, rule["seriesQuery"]
        assert promql_metric_names(rule["metricsQuery"]) <= KNOWN_METRICS, rule["metricsQuery"]
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
    hpas = [d for d in rendered("gpu") if d["kind"] == "HorizontalPodAutoscaler"]
    assert {h["metadata"]["name"] for h in hpas} == {"blazeface-api", "blazeface-triton"}
    for hpa in hpas:
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                assert metric["pods"]["metric"]["name"] in served, metric
    api_metrics = find(rendered("gpu"), "HorizontalPodAutoscaler", "blazeface-api")["spec"]["metrics"]
    assert {m["type"] for m in api_metrics} == {"Resource", "Pods"}
    pod_metrics = {m["pods"]["metric"]["name"] for m in api_metrics if m["type"] == "Pods"}
    assert pod_metrics == {"blazeface_queue_depth"}


def test_readme_documents_the_overlays() -> None:
    readme = (K8S / "README.md").read_text(encoding="utf-8")
    for overlay in OVERLAYS:
        assert f"kubectl apply -k deploy/k8s/overlays/{overlay}" in readme
    assert "prometheus-adapter" in readme
    assert (ROOT / "deploy" / "README.md").is_file()
