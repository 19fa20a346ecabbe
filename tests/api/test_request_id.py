"""Request ids: taken from X-Request-ID or made, echoed in the header and in problem+json, and on the
log lines of the request (`service/logs.py`)."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from blazeface_tools.testkit.servers import service_process
from service.logs import JsonFormatter, RequestIdFilter, TextFormatter, current_request_id
from tests.api.conftest import ScriptedBackend, jpeg

MADE = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def service_log() -> Iterator[io.StringIO]:
    """What the `service` loggers write while the test runs, as the JSON lines LOG_FORMAT=json makes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("service")
    logger.addHandler(handler)
    old_level, logger.level = logger.level, logging.INFO
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


def log_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_given_id_is_echoed_in_the_header_and_the_problem(server: str) -> None:
    response = httpx.post(
        f"{server}/detect",
        content=b"not an image",
        headers={"content-type": "image/jpeg", "X-Request-ID": "order-42/attempt-1"},
    )
    assert response.status_code == 400
    assert response.headers["x-request-id"] == "order-42/attempt-1"
    assert response.json()["request_id"] == "order-42/attempt-1"


def test_an_id_is_made_when_none_is_given(server: str) -> None:
    ok = httpx.post(f"{server}/detect", content=jpeg(), headers={"content-type": "image/jpeg"})
    assert ok.status_code == 200 and MADE.fullmatch(ok.headers["x-request-id"])
    missing = httpx.get(f"{server}/nowhere")
    assert missing.status_code == 404
    assert MADE.fullmatch(missing.headers["x-request-id"])
    assert missing.json()["request_id"] == missing.headers["x-request-id"] != ok.headers["x-request-id"]


@pytest.mark.parametrize("unusable", ["x" * 129, "has space", "tab\there", "ünïcode"])
def test_an_unusable_id_is_replaced(server: str, unusable: str) -> None:
    response = httpx.get(f"{server}/healthz", headers={"X-Request-ID": unusable.encode()})
    assert response.status_code == 200 and MADE.fullmatch(response.headers["x-request-id"])


def test_answers_given_before_the_body_carry_the_id(server: str) -> None:
    # BodyLimitMiddleware's own 413, answered from the declared length before anything is read.
    response = httpx.post(
        f"{server}/detect",
        content=b"x" * (300 * 1024),
        headers={"content-type": "image/jpeg", "X-Request-ID": "big-1"},
    )
    assert response.status_code == 413
    assert response.headers["x-request-id"] == response.json()["request_id"] == "big-1"


def test_a_5xx_is_logged_once_with_the_id_the_client_got(
    server: str, scripted: ScriptedBackend, service_log: io.StringIO
) -> None:
    scripted.down = True
    response = httpx.post(f"{server}/detect", content=jpeg(), headers={"content-type": "image/jpeg"})
    assert response.status_code == 503
    request_id = response.json()["request_id"]
    assert response.headers["x-request-id"] == request_id
    logged = [line for line in log_lines(service_log) if line["level"] == "WARNING"]
    assert len(logged) == 1
    assert logged[0]["request_id"] == request_id
    assert logged[0]["logger"] == "service.api.problems"
    assert "503 on POST /detect" in logged[0]["message"] and "scripted outage" in logged[0]["message"]


def test_the_access_log_has_one_line_per_request_with_its_id(make_server, service_log: io.StringIO) -> None:  # type: ignore[no-untyped-def]
    url = make_server(access_log=True)
    for index in range(3):
        httpx.get(f"{url}/healthz", headers={"X-Request-ID": f"probe-{index}"})
    lines = [line for line in log_lines(service_log) if line["logger"] == "service.api.observability"]
    # Besides ours, the server fixture's readiness polls (with ids made for them).
    ours = [line["request_id"] for line in lines if not MADE.fullmatch(line["request_id"])]
    assert ours == ["probe-0", "probe-1", "probe-2"]
    for line in lines:
        assert (line["method"], line["path"], line["status"]) == ("GET", "/healthz", 200)
        assert line["duration_ms"] >= 0


def test_no_access_log_by_default(server: str, service_log: io.StringIO) -> None:
    httpx.get(f"{server}/healthz")
    assert log_lines(service_log) == []


def test_the_stream_handshake_carries_the_id(make_server) -> None:  # type: ignore[no-untyped-def]
    url = make_server(api_keys=["k1"]).replace("http://", "ws://") + "/stream"
    with pytest.raises(InvalidStatus) as refused, connect(url, additional_headers={"X-Request-ID": "ws-1"}):
        pass
    denial = refused.value.response
    assert denial.status_code == 401
    assert denial.headers["x-request-id"] == "ws-1" and json.loads(denial.body)["request_id"] == "ws-1"
    with connect(url, additional_headers={"Authorization": "Bearer k1", "X-Request-ID": "ws-2"}) as socket:
        assert socket.response.headers["x-request-id"] == "ws-2"


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord({"name": "service.test", "levelname": "INFO", "msg": message, **extra})
    RequestIdFilter().filter(made)
    return made


def test_json_lines_carry_the_context_id_extras_and_tracebacks() -> None:
    token = current_request_id.set("abc")
    try:
        line = json.loads(JsonFormatter().format(record("hello %s", args=("you",), status=503)))
    finally:
        current_request_id.reset(token)
    assert line["message"] == "hello you" and line["request_id"] == "abc" and line["status"] == 503
    assert line["level"] == "INFO" and line["logger"] == "service.test" and line["ts"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = json.loads(JsonFormatter().format(record("failed", exc_info=sys.exc_info())))
    assert "request_id" not in failed  # outside a request
    assert "ValueError: boom" in failed["exc_info"] and "Traceback" in failed["exc_info"]


def test_text_lines_name_the_id_when_there_is_one() -> None:
    token = current_request_id.set("abc")
    try:
        inside = TextFormatter().format(record("inside"))
    finally:
        current_request_id.reset(token)
    assert inside.endswith("service.test: inside [request_id=abc]")
    assert TextFormatter().format(record("outside")).endswith("service.test: outside")


def test_text_lines_cannot_be_forged_by_what_a_client_sent() -> None:
    # A path arrives percent-decoded: GET /x%0a<a line of its own> would otherwise start one.
    forged = "/x\n2026-12-03 12:00:00,000 ERROR service.api.app: forged\r\u2028\x85\x1b[31m é"
    line = TextFormatter().format(record("GET %s 404", args=(forged,)))
    assert line.endswith(
        r"GET /x\n2026-12-03 12:00:00,000 ERROR service.api.app: forged\r\u2028\x85\x1b[31m é 404"
    )
    assert len(line.splitlines()) == 1


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_log_config_formats_every_logger_on_stderr(log_format: str) -> None:
    # In a fresh interpreter: dictConfig replaces the root logger's handlers (pytest's among them).
    program = (
        "import logging, logging.config\n"
        "from service.logs import log_config\n"
        f"logging.config.dictConfig(log_config({log_format!r}))\n"
        "logging.getLogger('service.x').info('ours')\n"
        "logging.getLogger('uvicorn.error').warning('theirs')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    lines = done.stderr.splitlines()
    assert len(lines) == 2
    if log_format == "json":
        assert [json.loads(line)["message"] for line in lines] == ["ours", "theirs"]
    else:
        assert lines[0].endswith("INFO service.x: ours") and lines[1].endswith(
            "WARNING uvicorn.error: theirs"
        )


@pytest.mark.slow
def test_python_m_service_logs_json_lines_a_failing_request_can_be_found_by(tmp_path, built_models) -> None:  # type: ignore[no-untyped-def]
    with service_process(tmp_path, LOG_FORMAT="json", ACCESS_LOG="true", WORKERS="2") as server:
        response = httpx.post(
            f"{server.url}/detect",
            content=b"\xff\xd8 not really a jpeg",
            headers={"content-type": "image/jpeg", "X-Request-ID": "find-me-7"},
        )
        assert response.status_code == 400 and response.json()["request_id"] == "find-me-7"
        server.stop()
        lines = [json.loads(line) for line in server.log().splitlines()]  # every line is JSON
    assert len({line["pid"] for line in lines if "Started server process" in line["message"]}) == 2
    (found,) = [line for line in lines if line.get("request_id") == "find-me-7"]
    assert (found["method"], found["path"], found["status"]) == ("POST", "/detect", 400)
