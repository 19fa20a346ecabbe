"""Prometheus itself on deploy/: `promtool` checks every file under deploy/prometheus/ and runs the rule
unit tests (rules.test.yml); then a real Prometheus (Debian's package, from deploy/test-prereqs.sh)
scrapes a live API (WORKERS=2, BACKEND=triton) and the real CPU Triton behind it, and every PromQL
expression of the Grafana dashboard and of the alerts must return the series and labels it is written for.
The static checks beside it (test_monitoring.py) only parse names; here the names meet real series.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from blazeface_tools.testkit.corpus import base_image
from blazeface_tools.testkit.images import jpeg
from blazeface_tools.testkit.servers import free_port, service_process, wait_until_ready
from blazeface_tools.triton_cpu.server import Ports, TritonServer
from service.backends.breaker import CircuitOpen
from service.engine import Timing
from service.errors import DeadlineExceeded
from service.specs import MODELS
from tests.deploy.conftest import load_yaml, promql_metric_names
from tests.deploy.test_monitoring import PROMETHEUS, dashboard_panels, rules

ALERTS = [rule for rule in rules(PROMETHEUS / "rules.yml") if "alert" in rule]
DASHBOARD_TARGETS = [
    (f"{panel['title']}: {target.get('legendFormat', target['refId'])}", target["expr"])
    for panel in dashboard_panels()
    for target in panel["targets"]
]
# Short deadlines so a hung Triton shows within a second: 504 for the calls that time out, then 503 once
# the worker's breaker has opened after 3 of them.
API_SETTINGS = {
    "WORKERS": "2",
    "BACKEND": "triton",
    "TRITON_TIMEOUT_S": "0.4",
    "REQUEST_TIMEOUT_S": "1.0",
    "BREAKER_FAILURES": "3",
    "BREAKER_RESET_S": "1.0",
}
# Grafana's `$__rate_interval` is four scrape intervals; a window over the whole run instead lets every
# rate see all of this run's traffic, whenever it came.
DASHBOARD_VARIABLES = {"$__rate_interval": "5m"}
# Triton exports its GPU series from DCGM: none on a CPU machine (and the test server runs with
# --allow-gpu-metrics=false). Expressions on them must still parse and evaluate, with an empty result;
# their names are checked against Triton's metric list in test_monitoring.py.
NOT_ON_A_CPU = frozenset({"nv_gpu_utilization", "nv_gpu_memory_used_bytes"})
GOOD = jpeg(base_image())  # a real face: faces per image is above 0
BAD = GOOD[: len(GOOD) // 2]  # a truncated JPEG: 400 alone, a `rejected` entry in a batch


def installed(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: run `bash deploy/test-prereqs.sh` (installs Debian's prometheus)"
    return path


# --- promtool -------------------------------------------------------------------------------------------


def promtool_command(path: Path) -> list[str]:
    """The promtool check for a file under deploy/prometheus/, chosen by what it holds."""
    document = load_yaml(path)
    if "scrape_configs" in document:
        return ["check", "config"]  # checks its rule files too; never resolves the targets' hostnames
    if "groups" in document:
        return ["check", "rules"]
    if "tests" in document:
        return ["test", "rules"]
    raise AssertionError(f"{path.name}: neither a Prometheus config, rules nor rule tests")


@pytest.mark.parametrize(
    "path", sorted(p for p in PROMETHEUS.rglob("*") if p.is_file()), ids=lambda p: p.name
)
def test_promtool_accepts(path: Path) -> None:
    # From the file's folder: configs and rule tests name their rule files relative to it.
    result = subprocess.run(
        [installed("promtool"), *promtool_command(path), path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_tests_cover_every_alert_firing_and_quiet() -> None:
    cases = [
        case
        for test in load_yaml(PROMETHEUS / "rules.test.yml")["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for rule in rules(PROMETHEUS / "rules.yml"):
        name = rule.get("alert")
        assert name, f"recording rule {rule['record']}: give it promql_expr_test cases and a live check"
        outcomes = {bool(case["exp_alerts"]) for case in cases if case["alertname"] == name}
        assert outcomes == {True, False}, f"{name}: rules.test.yml needs a firing and a quiet case"


# --- a live Prometheus ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prometheus:
    url: str

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query at `at` (Unix seconds; default now): its result, failing on any error."""
        params = {"query": expr} if at is None else {"query": expr, "time": repr(at)}
        body = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        assert body["status"] == "success", (expr, body)
        assert body["data"]["resultType"] == "vector", expr
        return body["data"]["result"]

    def rules(self) -> list[dict[str, Any]]:
        body = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]


@dataclass(frozen=True)
class Run:
    prometheus: Prometheus
    healthy_at: float  # Unix seconds: healthy traffic scraped, before Triton hung


@contextlib.contextmanager
def prometheus_server(tmp: Path, targets: dict[str, str]) -> Iterator[Prometheus]:
    """deploy/prometheus/prometheus.yml with each job pointed at `targets` (job → host:port), scraping and
    evaluating the real rules.yml every second, on a free loopback port with a data dir of its own."""
    config = load_yaml(PROMETHEUS / "prometheus.yml")
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS / name) for name in config["rule_files"]]
    address = f"127.0.0.1:{free_port()}"
    targets = {**targets, "prometheus": address}
    assert {job["job_name"] for job in config["scrape_configs"]} == set(targets)
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                installed("prometheus"),
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address={address}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_until_ready(f"http://{address}", timeout_s=30, path="/-/ready")
        except TimeoutError:
            raise AssertionError("prometheus did not start:\n" + log_path.read_text()[-3000:]) from None
        yield Prometheus(f"http://{address}")
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def detect(url: str, image: bytes, model: str = "short", client: httpx.Client | None = None) -> int:
    # Without a client, a connection per request: the two workers share the load, and /metrics must
    # merge them.
    response = (client.post if client else httpx.post)(
        f"{url}/detect",
        params={"model": model},
        content=image,
        headers={"content-type": "application/octet-stream"},
        timeout=10,
    )
    return response.status_code


def healthy_round(url: str) -> int:
    """Good images on every model, a bad one, a batch holding both; returns the requests sent."""
    statuses = [detect(url, GOOD, model) for model in MODELS for _ in range(4)]
    statuses.append(detect(url, BAD))
    files = [("images", ("good.jpg", GOOD, "image/jpeg")), ("images", ("bad.jpg", BAD, "image/jpeg"))]
    statuses.append(httpx.post(f"{url}/detect/batch", files=files, timeout=10).status_code)
    assert statuses == [200] * (4 * len(MODELS)) + [400, 200]
    return len(statuses)


def hang_triton(triton: TritonServer, url: str, prometheus: Prometheus, seconds: float = 2.5) -> int:
    """SIGSTOPs Triton for `seconds` of traffic and more, which the API answers 504 (calls timing out) and
    503 (a breaker open), then waits until it answers 200 again; returns the requests sent. rate() counts
    only what a series gains after its first sample, and a 5xx series is born at its first 5xx: so the
    hang lasts until Prometheus has held a 5xx sample for `seconds` (a few 1 s scrapes) as well, however
    late a loaded machine scrapes."""
    statuses: list[int] = []
    until = time.monotonic() + seconds
    deadline = until + 20
    seen_at: float | None = None
    triton.pause()
    # One connection, so one worker: its breaker opens after BREAKER_FAILURES timeouts.
    with httpx.Client() as client:
        try:
            while seen_at is None or time.monotonic() < max(until, seen_at + seconds):
                assert time.monotonic() < deadline, "Prometheus never scraped a 5xx"
                statuses.append(detect(url, GOOD, client=client))
                time.sleep(0.05)
                if seen_at is None and prometheus.query('sum(blazeface_requests_total{status=~"5.."})'):
                    seen_at = time.monotonic()
        finally:
            triton.resume()
    assert {503, 504} <= set(statuses), statuses
    deadline = time.monotonic() + 15  # the breaker probes again after BREAKER_RESET_S
    while statuses[-1] != 200:
        assert time.monotonic() < deadline, statuses
        time.sleep(0.1)
        statuses.append(detect(url, GOOD))
    return len(statuses)


def wait_until_scraped(prometheus: Prometheus, since: float, detect_requests: int) -> float:
    """Waits until every target has been scraped after `since` and the API's merged counter holds all
    `detect_requests` (a worker counts a request just after answering it); returns the time then."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        scraped = prometheus.query("min(timestamp(up))")
        counted = prometheus.query('sum(blazeface_requests_total{route=~"/detect.*"})')
        scraped_since = scraped and float(scraped[0]["value"][1]) > since
        if scraped_since and counted and float(counted[0]["value"][1]) == detect_requests:
            return time.time()
        time.sleep(0.2)
    raise AssertionError(f"not scraped since {since}, or not {detect_requests} requests: {counted}")


@pytest.fixture(scope="module")
def run(built_models: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Triton, the API on it and Prometheus scraping both; healthy traffic, then Triton hung briefly."""
    tmp = tmp_path_factory.mktemp("prometheus")
    with contextlib.ExitStack() as stack:
        triton = stack.enter_context(
            TritonServer(
                models=[f"blazeface_{m}_cpu" for m in MODELS],
                ports=Ports.free(),
                log_path=tmp / "tritonserver.log",
            )
        )
        api = stack.enter_context(service_process(tmp, TRITON_URL=triton.grpc_url, **API_SETTINGS))
        # Each model's first call is the slowest; made before the first scrape, it stays out of every
        # rate (they count from a series' first sample), so out of the p99 the quiet checks read.
        sent = [detect(api.url, GOOD, model) for model in MODELS]
        assert sent == [200] * len(MODELS)
        targets = {
            "blazeface-api": api.url.removeprefix("http://"),
            "triton": f"127.0.0.1:{triton.ports.metrics}",
        }
        started = time.time()
        prometheus = stack.enter_context(prometheus_server(tmp, targets))
        requests = len(sent)
        # Prometheus applies its targets up to 5 s after it is ready: the traffic waits for a first sample.
        wait_until_scraped(prometheus, started, requests)
        for _ in range(3):  # across a few scrapes, so every counter rises between samples
            requests += healthy_round(api.url)
            time.sleep(1.0)
        healthy_at = wait_until_scraped(prometheus, time.time(), requests)
        requests += hang_triton(triton, api.url, prometheus)
        # Twice: a series born in the hang (503, CircuitOpen) needs two samples before rate() sees it.
        wait_until_scraped(prometheus, wait_until_scraped(prometheus, time.time(), requests), requests)
        yield Run(prometheus, healthy_at)


_AGGREGATION = re.compile(r"\b(?:sum|avg|min|max|count)\s*(?:by\s*\(([^)]*)\)\s*)?\(")
# An alert's condition: `<query> <comparison> <number>`.
_CONDITION = re.compile(r"(?P<query>.+?)\s*(?:==|!=|>=|<=|>|<)\s*[-+.\deE]+\s*", re.DOTALL)


def kept_labels(expr: str) -> set[str] | None:
    """The labels each result series has: the outermost aggregation's `by` list less the `le` that
    histogram_quantile consumes; None without aggregation (the series keep their own labels)."""
    match = _AGGREGATION.search(expr)
    if match is None:
        return None
    return {label.strip() for label in (match.group(1) or "").split(",") if label.strip()} - {"le"}


def expected_label_values(expr: str) -> dict[str, set[str]]:
    """What each label holds after this run's traffic."""
    return {
        # The API names models as specs.py does, Triton as triton_repo/ does.
        "model": {f"blazeface_{m}_cpu" for m in MODELS} if "nv_inference_" in expr else set(MODELS),
        "stage": {field.name for field in dataclasses.fields(Timing)} - {"total"},  # engine.py's stages
        "outcome": {"ok", "rejected"},
        "status": {"200", "400", "503", "504"},
        "kind": {DeadlineExceeded.__name__, CircuitOpen.__name__},
    }


def assert_data(expr: str, result: list[dict[str, Any]]) -> None:
    """Data, finite, with exactly the labels the expression keeps, holding the values this run made."""
    assert result, f"no data: {expr}"
    kept = kept_labels(expr)
    for sample in result:
        labels = set(sample["metric"]) - {"__name__"}
        value = float(sample["value"][1])
        assert math.isfinite(value) and value >= 0, (expr, sample)
        if kept is None:
            assert {"job", "instance"} <= labels, (expr, sample)
        else:
            assert labels == kept, (expr, sample)
    for label, values in expected_label_values(expr).items():
        if kept and label in kept:
            assert {sample["metric"][label] for sample in result} == values, (expr, label, result)


@pytest.mark.slow
@pytest.mark.parametrize("expr", [pytest.param(expr, id=name) for name, expr in DASHBOARD_TARGETS])
def test_dashboard_expression(run: Run, expr: str) -> None:
    for variable, value in DASHBOARD_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a dashboard variable this test does not substitute: {expr}"
    result = run.prometheus.query(expr)
    if promql_metric_names(expr) & NOT_ON_A_CPU:
        assert result == [], expr
    else:
        assert_data(expr, result)


@pytest.mark.slow
@pytest.mark.parametrize("rule", ALERTS, ids=lambda rule: rule["alert"])
def test_alert_expression(run: Run, rule: dict[str, Any]) -> None:
    """The query under the threshold returns its series; the condition holds for nothing (an empty
    result) while the run was healthy."""
    condition = _CONDITION.fullmatch(rule["expr"].strip())
    assert condition, f"{rule['alert']}: not `<query> <comparison> <number>`; extend this test"
    assert_data(condition["query"], run.prometheus.query(condition["query"]))
    assert run.prometheus.query(rule["expr"], at=run.healthy_at) == [], rule["alert"]


@pytest.mark.slow
def test_rules_evaluate_and_none_fires(run: Run) -> None:
    """Every rule evaluates without error; the 5xx of the hang make BlazefaceServerErrors pending (above
    its 5%), and nothing fires: no `for` has run out in so short a run."""
    deadline = time.monotonic() + 10  # rules evaluate each second, on their own clock
    while not run.prometheus.query('ALERTS{alertname="BlazefaceServerErrors", alertstate="pending"}'):
        assert time.monotonic() < deadline, run.prometheus.rules()
        time.sleep(0.2)
    evaluated = run.prometheus.rules()
    assert {rule["name"] for rule in evaluated} == {rule["alert"] for rule in ALERTS}
    for rule in evaluated:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
        assert rule["state"] != "firing", rule


@pytest.mark.slow
def test_every_series_read_exists(run: Run) -> None:
    """Each series name the dashboard and the rules read is one Prometheus holds (not just one that an
    expression happened to survive without)."""
    exprs = [expr for _, expr in DASHBOARD_TARGETS] + [rule["expr"] for rule in ALERTS]
    names = set().union(*(promql_metric_names(expr) for expr in exprs))
    held = run.prometheus.query(f'group by (__name__) ({{__name__=~"{"|".join(sorted(names))}"}})')
    assert {series["metric"]["__name__"] for series in held} == names - NOT_ON_A_CPU
