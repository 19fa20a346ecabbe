"""One options model for every transport: the same 422 for the same invalid value wherever it is sent,
null as the service default, and an OpenAPI document that carries the model's bounds and enums."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from blazeface_tools.testkit.servers import app_in_thread
from service.api.app import create_app
from service.settings import Settings
from service.specs import MODELS
from tests.api.conftest import ScriptedBackend, jpeg
from tests.conftest import DATA

OPTIONS = ("model", "min_score", "max_faces", "suppression", "preprocess")
EXPECTED = {
    "model": "model must be one of short, full, back",
    "min_score": "min_score must be a number, at least 0 and at most 1",
    "max_faces": "max_faces must be an integer, at least 1 and at most 1000",
    "suppression": "suppression must be one of blend, nms",
    "preprocess": "preprocess must be one of exact, fast",
}
# (option, value as JSON carries it); text transports send the string, or the JSON text of anything else.
INVALID: list[tuple[str, Any]] = [
    ("model", "huge"),
    ("model", "x" * 2000),
    ("model", ["short"]),
    ("model", 1),
    ("min_score", -0.1),
    ("min_score", 1.5),
    ("min_score", float("nan")),
    ("min_score", "abc"),
    ("max_faces", 0),
    ("max_faces", 5000),
    ("max_faces", 1.5),
    ("max_faces", "abc"),
    ("suppression", "soft"),
    ("preprocess", "magic"),
]


def as_text(value: Any) -> str:
    # NaN as Python writes it ("nan"); JSON's own spelling, NaN, goes in the JSON body.
    return value if isinstance(value, str) else str(value) if isinstance(value, float) else json.dumps(value)


def ws_url(http_url: str, params: dict[str, str]) -> str:
    return http_url.replace("http://", "ws://") + "/stream?" + str(httpx.QueryParams(params))


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    # Non-default service defaults, so "null means the service default" is told from the model's own.
    settings = Settings(default_model="full", preprocess="exact", max_body_bytes=256 * 1024)
    with app_in_thread(create_app(settings, backend=ScriptedBackend())) as served:
        yield served


def without_request_id(headers: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The problem less its `request_id`, which differs per request (and must match the header)."""
    assert body.pop("request_id") == headers["x-request-id"]
    return body


def problem(response: httpx.Response) -> tuple[int, dict[str, Any]]:
    assert response.headers["content-type"] == "application/problem+json", response.text
    return response.status_code, without_request_id(response.headers, response.json())


def via_query(url: str, name: str, value: Any) -> tuple[int, dict[str, Any]]:
    image = {"content": jpeg(), "headers": {"content-type": "image/jpeg"}}
    return problem(httpx.post(f"{url}/detect", params={name: as_text(value)}, **image))


def via_json(url: str, name: str, value: Any) -> tuple[int, dict[str, Any]]:
    body = json.dumps({"image": base64.b64encode(jpeg()).decode(), name: value})  # NaN stays NaN
    return problem(httpx.post(f"{url}/detect", content=body, headers={"content-type": "application/json"}))


def via_form(url: str, name: str, value: Any) -> tuple[int, dict[str, Any]]:
    files = {"image": ("a.jpg", jpeg(), "image/jpeg")}
    return problem(httpx.post(f"{url}/detect", files=files, data={name: as_text(value)}))


def via_batch_form(url: str, name: str, value: Any) -> tuple[int, dict[str, Any]]:
    files = [("images", ("a.jpg", jpeg(), "image/jpeg"))]
    return problem(httpx.post(f"{url}/detect/batch", files=files, data={name: as_text(value)}))


def via_stream(url: str, name: str, value: Any) -> tuple[int, dict[str, Any]]:
    return stream_refusal(ws_url(url, {name: as_text(value)}))


def stream_refusal(stream_url: str) -> tuple[int, dict[str, Any]]:
    with pytest.raises(InvalidStatus) as refused, connect(stream_url):
        pass
    response = refused.value.response
    assert response.headers["content-type"] == "application/problem+json"
    return response.status_code, without_request_id(response.headers, json.loads(response.body))


TRANSPORTS: dict[str, Callable[[str, str, Any], tuple[int, dict[str, Any]]]] = {
    "query": via_query,
    "json": via_json,
    "form": via_form,
    "batch-form": via_batch_form,
    "stream": via_stream,
}


@pytest.mark.parametrize(("name", "value"), INVALID, ids=lambda v: str(v)[:12])
def test_an_invalid_option_is_the_same_422_whatever_the_transport(url: str, name: str, value: Any) -> None:
    answers = {transport: send(url, name, value) for transport, send in TRANSPORTS.items()}
    expected = {
        "type": "https://blazeface-serve.dev/problems/invalid-option",
        "title": "Invalid option",
        "status": 422,
        "detail": EXPECTED[name],
    }
    assert answers == dict.fromkeys(TRANSPORTS, (422, expected))


def test_an_unknown_key_is_refused_in_a_body_and_ignored_in_a_query(url: str) -> None:
    _, body = via_json(url, "x" * 100, 1)
    assert body["detail"] == "unknown option (100 characters)"  # a long name is not echoed
    assert via_form(url, "colour", "red")[1]["detail"] == "unknown option 'colour'"
    image = {"content": jpeg(), "headers": {"content-type": "image/jpeg"}}
    assert httpx.post(f"{url}/detect?cache=123", **image).status_code == 200
    with connect(ws_url(url, {"cache": "123"})) as socket:
        socket.send(jpeg())
        assert json.loads(socket.recv(timeout=10))["model"] == "full"


JSON = {"content-type": "application/json"}
TWICE = {"model": "short", "min_score": 0.5, "max_faces": 2, "suppression": "nms", "preprocess": "exact"}


def test_an_error_explains_five_problems_and_counts_the_rest(url: str) -> None:
    files = {"image": ("a.jpg", jpeg(), "image/jpeg")}
    fields = {f"f{i}": "1" for i in range(12)}  # a form holds at most 16 fields
    detail = problem(httpx.post(f"{url}/detect", files=files, data=fields))[1]["detail"]
    assert detail == "; ".join([*(f"unknown option 'f{i}'" for i in range(5)), "and 7 more"])
    status, body = problem(httpx.post(f"{url}/detect", files=files, data={f"f{i}": "1" for i in range(17)}))
    assert (status, body["detail"]) == (422, "a form holds at most 16 text fields (the options)")


def test_a_json_body_with_more_members_than_a_request_has_is_refused_unparsed(url: str) -> None:
    image = base64.b64encode(jpeg()).decode()
    many = json.dumps({"image": image, **{f"k{i}": [0, 0] for i in range(20)}})
    status, body = problem(httpx.post(f"{url}/detect", content=many, headers=JSON))
    assert (status, body["detail"]) == (
        422,
        "the JSON body has more members or items than a detection request",
    )
    every_option = json.dumps({"image": "data:image/jpeg;base64," + image, **TWICE})  # the most a request has
    assert httpx.post(f"{url}/detect", content=every_option, headers=JSON).status_code == 200


@pytest.mark.parametrize("name", OPTIONS)
def test_an_option_given_twice_is_refused_by_every_text_transport(url: str, name: str) -> None:
    """Which of two values was meant would be a guess, so neither is taken."""
    twice = [(name, as_text(TWICE[name]))] * 2
    fields = [(key, (None, value)) for key, value in twice]
    image = ("a.jpg", jpeg(), "image/jpeg")
    member = f"{json.dumps(name)}: {json.dumps(TWICE[name])}"
    document = f'{{{member}, "image": "{base64.b64encode(jpeg()).decode()}", {member}}}'
    answers = {
        "query": problem(
            httpx.post(f"{url}/detect", params=twice, content=jpeg(), headers={"content-type": "image/jpeg"})
        ),
        "form": problem(httpx.post(f"{url}/detect", files=[("image", image), *fields])),
        "batch-form": problem(httpx.post(f"{url}/detect/batch", files=[("images", image), *fields])),
        "stream": stream_refusal(f"{ws_url(url, {})}{httpx.QueryParams(twice)}"),
        "json": problem(httpx.post(f"{url}/detect", content=document, headers=JSON)),
    }
    for transport, (status, body) in answers.items():
        where = {"json": "JSON body", "form": "multipart body", "batch-form": "multipart body"}.get(
            transport, "query string"
        )
        assert (status, body["detail"]) == (422, f"{name} is given more than once in the {where}"), transport


@pytest.mark.parametrize(
    ("document", "detail"),
    [
        ('{"image": "", "image": ""}', "image is given"),
        ('{"image": "", "cache": 1, "cache": 2}', "a key is given"),
        ('{"image": "", "model": {"a": 1, "a": 2}}', "a key is given"),
        ('{"image": "", "mod\\u0065l": "full", "model": "full"}', "model is given"),
    ],
)
def test_any_key_given_twice_in_json_is_refused_however_spelled(url: str, document: str, detail: str) -> None:
    """Escapes do not hide a repeat: keys are compared as the parser reads them."""
    response = httpx.post(f"{url}/detect", content=document, headers=JSON)
    assert problem(response)[0] == 422
    assert response.json()["detail"] == f"{detail} more than once in the JSON body"


def test_a_repeated_key_that_is_no_option_is_still_ignored_in_a_query(url: str) -> None:
    image = {"content": jpeg(), "headers": {"content-type": "image/jpeg"}}
    assert httpx.post(f"{url}/detect", params=[("cache", "1"), ("cache", "2")], **image).status_code == 200
    assert stream_refusal(f"{ws_url(url, {})}smooth=true&smooth=false")[0] == 422  # /stream's own option


def test_a_bad_key_on_the_stream_is_the_http_401(make_server) -> None:  # type: ignore[no-untyped-def]
    keyed = make_server(api_keys=["k1"])
    http = httpx.post(f"{keyed}/detect", content=jpeg(), headers={"content-type": "image/jpeg"})
    with pytest.raises(InvalidStatus) as refused, connect(ws_url(keyed, {})):
        pass
    response = refused.value.response
    stream_problem = without_request_id(response.headers, json.loads(response.body))
    assert (response.status_code, stream_problem) == (401, without_request_id(http.headers, http.json()))
    assert response.headers["www-authenticate"] == http.headers["www-authenticate"] == "Bearer"


def test_body_options_override_the_query_and_null_asks_for_the_service_default(url: str) -> None:
    image = base64.b64encode(jpeg()).decode()

    def model(query: str, **body: object) -> str:
        return httpx.post(f"{url}/detect{query}", json={"image": image, **body}).json()["model"]

    assert model("") == "full"  # the server's DEFAULT_MODEL
    assert model("?model=short") == "short"
    assert model("?model=short", model="full") == "full"
    assert model("?model=short", model=None) == "full"
    form = {"files": {"image": ("a.jpg", jpeg(), "image/jpeg")}, "data": {"model": "full"}}
    assert httpx.post(f"{url}/detect?model=short", **form).json()["model"] == "full"


@pytest.mark.slow
def test_null_for_every_option_in_json_is_the_no_option_result(live) -> None:  # type: ignore[no-untyped-def]
    photo = (DATA / "photos" / "voc_2008_002506_three_faces.jpg").read_bytes()
    image = base64.b64encode(photo).decode()

    def detect(**body: object) -> dict[str, Any]:
        response = httpx.post(f"{live.url}/detect", json={"image": image, **body}, timeout=30)
        assert response.status_code == 200, response.text
        return {key: value for key, value in response.json().items() if key != "timing_ms"}

    plain = detect()
    assert len(plain["faces"]) == 3
    assert detect(**dict.fromkeys(OPTIONS)) == plain
    assert detect(min_score=0.99, max_faces=1) != plain  # the options do change the answer


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A property's schema without its null alternative and with `$ref`s followed."""
    if "anyOf" in schema:
        (schema,) = (choice for choice in schema["anyOf"] if choice.get("type") != "null")
    if "$ref" in schema:
        return resolve(document, document["components"]["schemas"][schema["$ref"].rpartition("/")[2]])
    return schema


def bounds(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    keys = ("type", "enum", "minimum", "maximum")
    return {key: value for key, value in resolve(document, schema).items() if key in keys}


def test_the_openapi_document_carries_the_models_bounds_and_enums(url: str) -> None:
    expected = {
        "model": {"type": "string", "enum": list(MODELS)},
        "min_score": {"type": "number", "minimum": 0, "maximum": 1},
        "max_faces": {"type": "integer", "minimum": 1, "maximum": 1000},
        "suppression": {"type": "string", "enum": ["blend", "nms"]},
        "preprocess": {"type": "string", "enum": ["exact", "fast"]},
    }
    document = httpx.get(f"{url}/openapi.json").json()
    for path in ("/detect", "/detect/batch"):
        operation = document["paths"][path]["post"]
        query = {param["name"]: param for param in operation["parameters"] if param["in"] == "query"}
        assert {name: bounds(document, param["schema"]) for name, param in query.items()} == expected
        assert not any(param["required"] for param in query.values())
    bodies = [  # (path, media type, image field, its type)
        ("/detect", "application/json", "image", "string"),
        ("/detect", "multipart/form-data", "image", "string"),
        ("/detect/batch", "multipart/form-data", "images", "array"),
    ]
    for path, media, image_field, image_type in bodies:
        body = document["paths"][path]["post"]["requestBody"]["content"][media]["schema"]
        assert body["additionalProperties"] is False and body["required"] == [image_field]
        properties = body["properties"]
        assert bounds(document, properties.pop(image_field)) == {"type": image_type}
        assert {name: bounds(document, schema) for name, schema in properties.items()} == expected
        assert all({"type": "null"} in schema["anyOf"] for schema in properties.values())  # the default
