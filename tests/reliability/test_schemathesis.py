"""Property-based fuzzing from the service's own OpenAPI document (Schemathesis), against a real server.

Every operation in /openapi.json gets schema-valid and schema-invalid requests (both generation modes);
the answer must never be a 5xx, and its status code, content type, headers and body must be ones the
schema declares. Bounded: EXAMPLES per operation and mode (CI runs this; raise it locally to dig).

Not checked: that a schema-valid request is accepted. The schema can say "a JPEG, as bytes", not "a
decodable JPEG", so random bytes are rightly refused with 400 (and the corpus test covers real images).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (  # registered lazily, looked up by name
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from blazeface_tools.testkit.servers import app_in_thread, service_process
from service.api.app import create_app
from service.settings import Settings
from tests.api.conftest import ScriptedBackend

pytestmark = pytest.mark.slow

EXAMPLES = 150
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def service_url(tmp_path_factory: pytest.TempPathFactory, built_models: None) -> Iterator[str]:
    # Small limits keep generated bodies cheap; the batch limit is within what the schema allows.
    env = {"MAX_BODY_BYTES": str(2 * 1024 * 1024), "MAX_PIXELS": "20000000", "MAX_BATCH_IMAGES": "8"}
    with service_process(tmp_path_factory.mktemp("schemathesis"), **env) as server:
        yield server.url


@pytest.fixture(scope="module")
def down_url() -> Iterator[str]:
    """The same app over a backend that is down: the 503 paths (and /readyz's 503 body) get fuzzed too."""
    backend = ScriptedBackend()
    backend.down = True
    with app_in_thread(create_app(Settings(max_body_bytes=2 * 1024 * 1024), backend=backend)) as url:
        yield url


# The document is built from the app at import (no server needed to parametrize); the first test pins
# it to what the running service serves at /openapi.json. (schemathesis.pytest.from_fixture, the lazy
# loader, reads pytest's private `Node._nodeid`, which pytest 9 removed.)
OPENAPI = create_app(Settings()).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


def test_the_fuzzed_document_is_the_served_one(service_url: str) -> None:
    assert httpx.get(f"{service_url}/openapi.json").json() == orjson.loads(orjson.dumps(OPENAPI))


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_openapi_conformance(case: schemathesis.Case, service_url: str) -> None:
    case.call_and_validate(base_url=service_url, checks=CHECKS, timeout=30)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES // 4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
def test_openapi_conformance_with_the_backend_down(case: schemathesis.Case, down_url: str) -> None:
    # 503 is the documented answer here, so "no 5xx" gives way to "only declared statuses" (still on).
    checks = [check for check in CHECKS if check is not not_a_server_error]
    case.call_and_validate(base_url=down_url, checks=checks, timeout=30)
