"""Prometheus config and rules, Grafana provisioning and dashboard: every series they read must exist,
either in service/metrics.py or among Triton's own metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import (
    COMPOSE_FILES,
    DEPLOY,
    KNOWN_METRICS,
    load_yaml,
    promql_metric_names,
    service_metric_names,
    unknown_metrics,
)

PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "blazeface.json"
# prometheus config → the compose file that runs it, and the jobs it must scrape there.
CONFIGS = {
    "prometheus.yml": (COMPOSE_FILES[0], {"blazeface-api": "api:8000", "triton": "triton:8002"}),
    "prometheus.cpu.yml": (COMPOSE_FILES[1], {"blazeface-api": "api:8000"}),
}


def rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in load_yaml(path)["groups"] for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    nested = [child for panel in panels for child in panel.get("panels", [])]
    return [panel for panel in panels + nested if panel["type"] != "row"]


def test_promql_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, stage) (rate(blazeface_stage_duration_seconds_bucket"
        '{route=~"/detect.*", stage!="x"}[$__rate_interval]))) / on (model) group_left sum(up) > 1e3'
    )
    assert promql_metric_names(expr) == {"blazeface_stage_duration_seconds_bucket", "up"}
    assert unknown_metrics("rate(blazeface_requests[5m])") == {"blazeface_requests"}  # no _total
    assert {"blazeface_requests_total", "blazeface_batch_size_bucket", "blazeface_queue_depth"} <= (
        service_metric_names()
    )


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_prometheus_config(name: str) -> None:
    compose_file, expected_jobs = CONFIGS[name]
    config = load_yaml(PROMETHEUS / name)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert len(jobs) == len(config["scrape_configs"]), "duplicate job_name"
    services = load_yaml(compose_file)["services"]
    for job_name, target in expected_jobs.items():
        job = jobs[job_name]
        assert job.get("metrics_path", "/metrics") == "/metrics"
        targets = [t for static in job["static_configs"] for t in static["targets"]]
        assert targets == [target]
        assert target.split(":")[0] in services, f"{target}: no such compose service"
    for rule_file in config.get("rule_files", []):
        assert (PROMETHEUS / rule_file).is_file(), rule_file


def test_rules_are_well_formed_and_read_known_series() -> None:
    for rule in rules(PROMETHEUS / "rules.yml"):
        assert ("alert" in rule) != ("record" in rule), rule
        assert rule["expr"].strip()
        assert not unknown_metrics(rule["expr"]), (rule.get("alert") or rule.get("record"), rule["expr"])
        if "alert" in rule:
            assert rule["annotations"]["summary"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}


def test_grafana_datasource_and_provider() -> None:
    (datasource,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = load_yaml(GRAFANA / "provisioning" / "dashboards" / "blazeface.yml")["providers"]
    # Where compose mounts deploy/grafana/dashboards.
    assert provider["options"]["path"] == "/etc/grafana/dashboards"
    for compose_file in COMPOSE_FILES:
        grafana = load_yaml(compose_file)["services"]["grafana"]
        assert any(v.endswith("grafana/dashboards:/etc/grafana/dashboards:ro") for v in grafana["volumes"])


def test_dashboard_panels_use_the_provisioned_datasource_and_known_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"]
    (datasource,) = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"]
    ids = [panel["id"] for panel in dashboard_panels()]
    assert len(ids) == len(set(ids)), "duplicate panel id"
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = promql_metric_names(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= KNOWN_METRICS, (panel["title"], names - KNOWN_METRICS)


def test_dashboard_covers_the_serving_signals() -> None:
    exprs = {panel["title"]: " ".join(t["expr"] for t in panel["targets"]) for panel in dashboard_panels()}
    everything = " ".join(exprs.values())
    required = {
        "request rate": "blazeface_requests_total",
        "request latency": "blazeface_request_duration_seconds_bucket",
        "stage latency": "blazeface_stage_duration_seconds_bucket",
        "batch size": "blazeface_batch_size_",
        "queue depth": "blazeface_queue_depth",
        "Triton queue time": "nv_inference_queue_duration_us",
        "Triton compute time": "nv_inference_compute_infer_duration_us",
        "GPU utilisation": "nv_gpu_utilization",
    }
    for signal, series in required.items():
        assert series in everything, signal
    latency = next(expr for title, expr in exprs.items() if "Request latency" in title)
    assert "histogram_quantile(0.50" in latency and "histogram_quantile(0.99" in latency
