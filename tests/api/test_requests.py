"""Every input form, batch, options, errors as problem+json, auth, overload, deadline, backend down."""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib

import httpx
import pytest

from tests.api.conftest import jpeg, png

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert set(body) == {"type", "title", "status", "detail", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in body["detail"] and "/work" not in body["detail"]
    return body


def png_header_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def test_every_input_form_gives_the_same_answer(server: str) -> None:
    image = jpeg()
    forms = [
        httpx.post(f"{server}/detect", files={"image": ("a.jpg", image, "image/jpeg")}),
        httpx.post(f"{server}/detect", content=image, headers={"content-type": "image/jpeg"}),
        httpx.post(f"{server}/detect", content=image, headers={"content-type": "application/octet-stream"}),
        httpx.post(f"{server}/detect", json={"image": base64.b64encode(image).decode()}),
    ]
    for response in forms:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "short"
        assert body["image"] == {"width": 64, "height": 48}
        assert body["faces"] == []
        assert set(body["timing_ms"]) == {"decode", "queue", "inference", "postprocess", "total"}
        timing = response.headers["server-timing"]
        assert all(f"{stage};dur=" in timing for stage in body["timing_ms"])


def test_options_from_query_and_json(server: str) -> None:
    image = base64.b64encode(png()).decode()
    assert (
        httpx.post(
            f"{server}/detect?model=full", content=png(), headers={"content-type": "image/png"}
        ).json()["model"]
        == "full"
    )
    assert httpx.post(f"{server}/detect", json={"image": image, "model": "full"}).json()["model"] == "full"


def test_batch_keeps_order_and_isolates_a_bad_image(server: str) -> None:
    files = [
        ("images", ("a.jpg", jpeg(64, 48), "image/jpeg")),
        ("images", ("b.bin", b"not an image", "application/octet-stream")),
        ("images", ("c.png", png(40, 30), "image/png")),
    ]
    response = httpx.post(f"{server}/detect/batch", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r.get("image") for r in results] == [
        {"width": 64, "height": 48},
        None,
        {"width": 40, "height": 30},
    ]
    assert results[1]["status"] == 400


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"content": b"", "headers": {"content-type": "image/jpeg"}}, 400),
        ({"content": b"\xff\xd8\xff\xe0 truncated", "headers": {"content-type": "image/jpeg"}}, 400),
        ({"content": b"GIF89a" + b"\0" * 20, "headers": {"content-type": "image/gif"}}, 415),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
        ({"content": jpeg(), "headers": {"content-type": "application/octet-streamfoo"}}, 415),
        ({"content": jpeg(), "headers": {"content-type": "image/"}}, 415),
        ({"content": png_header_claiming(50_000, 50_000), "headers": {"content-type": "image/png"}}, 413),
        ({"json": {"image": "%%% not base64 %%%"}}, 400),
        ({"json": {"picture": "abc"}}, 422),
        ({"json": ["image"]}, 422),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
        ({"files": {"photo": ("a.jpg", b"x", "image/jpeg")}}, 422),
    ],
)
def test_bad_input_is_a_problem(server: str, kwargs: dict, status: int) -> None:
    assert_problem(httpx.post(f"{server}/detect", **kwargs), status)
    assert httpx.get(f"{server}/healthz").status_code == 200


def test_a_content_coding_on_any_header_line_is_refused(server: str) -> None:
    image = jpeg()

    def post(*codings: str) -> httpx.Response:
        headers = [("content-type", "image/jpeg"), *(("content-encoding", c) for c in codings)]
        return httpx.post(f"{server}/detect", content=image, headers=headers)

    assert (
        post().status_code == post("identity").status_code == post("Identity", "identity").status_code == 200
    )
    for codings in (("gzip",), ("identity, gzip",), ("identity", "gzip"), ("",)):
        assert_problem(post(*codings), 415)


@pytest.mark.parametrize(
    "query",
    [
        "model=huge",
        "min_score=1.5",
        "min_score=-0.1",
        "min_score=nan",
        "max_faces=0",
        "suppression=soft",
        "preprocess=magic",
    ],
)
def test_bad_options_are_422(server: str, query: str) -> None:
    body = assert_problem(
        httpx.post(f"{server}/detect?{query}", content=jpeg(), headers={"content-type": "image/jpeg"}), 422
    )
    assert query.split("=")[0] in body["detail"]


def test_body_over_limit_is_413_from_the_declared_length(server: str) -> None:
    response = httpx.post(f"{server}/detect", content=b"\0" * 300_000, headers={"content-type": "image/jpeg"})
    assert_problem(response, 413)


def test_streamed_body_over_limit_is_413_before_it_ends(server: str) -> None:
    sent = 0

    def chunks():  # no Content-Length: chunked transfer, counted as it streams
        nonlocal sent
        for _ in range(100):
            sent += 16_384
            yield b"\0" * 16_384

    response = httpx.post(f"{server}/detect", content=chunks(), headers={"content-type": "image/jpeg"})
    assert_problem(response, 413)
    assert httpx.get(f"{server}/healthz").status_code == 200


def test_unknown_path_and_method_are_problems(server: str) -> None:
    assert_problem(httpx.get(f"{server}/nope"), 404)
    assert_problem(httpx.get(f"{server}/detect"), 405)


def test_auth(make_server) -> None:  # type: ignore[no-untyped-def]
    url = make_server(api_keys=["old-key", "new-key"])
    image = {"content": jpeg(), "headers": {"content-type": "image/jpeg"}}
    assert_problem(httpx.post(f"{url}/detect", **image), 401)
    wrong = {"content": jpeg(), "headers": {"content-type": "image/jpeg", "authorization": "Bearer nope"}}
    assert_problem(httpx.post(f"{url}/detect", **wrong), 401)
    for key in ("old-key", "new-key"):  # both keys work during a rotation
        ok = {"content": jpeg(), "headers": {"content-type": "image/jpeg", "authorization": f"Bearer {key}"}}
        assert httpx.post(f"{url}/detect", **ok).status_code == 200
    for open_path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(url + open_path).status_code == 200


def test_overload_is_429_with_retry_after(make_server, scripted) -> None:  # type: ignore[no-untyped-def]
    scripted.delay_s = 0.3
    url = make_server(max_batch=1, max_queue=2, max_wait_us=0)

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=10) as client:
            return await asyncio.gather(
                *(
                    client.post(f"{url}/detect", content=jpeg(), headers={"content-type": "image/jpeg"})
                    for _ in range(8)
                )
            )

    responses = asyncio.run(flood())
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 429 in statuses, statuses
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert_problem(refused, 429)


def test_deadline_is_504(make_server, scripted) -> None:  # type: ignore[no-untyped-def]
    scripted.delay_s = 2.0
    url = make_server(request_timeout_s=0.3)
    response = httpx.post(f"{url}/detect", content=jpeg(), headers={"content-type": "image/jpeg"}, timeout=5)
    assert_problem(response, 504)


def test_backend_down_is_503_and_not_ready(server: str, scripted) -> None:  # type: ignore[no-untyped-def]
    scripted.down = True
    assert_problem(
        httpx.post(f"{server}/detect", content=jpeg(), headers={"content-type": "image/jpeg"}), 503
    )
    assert httpx.get(f"{server}/readyz").status_code == 503
    scripted.down = False
    assert httpx.get(f"{server}/readyz").status_code == 200


def test_cors_is_off_by_default_and_on_for_listed_origins(make_server) -> None:  # type: ignore[no-untyped-def]
    preflight = {
        "origin": "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    closed = make_server()
    response = httpx.options(f"{closed}/detect", headers=preflight)
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in httpx.get(f"{closed}/healthz", headers=preflight).headers

    opened = make_server(cors_origins=["https://app.example"])
    response = httpx.options(f"{opened}/detect", headers=preflight)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://app.example"
    other = httpx.options(f"{opened}/detect", headers={**preflight, "origin": "https://evil.example"})
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"
    assert_problem(other, 400)
    assert other.json()["detail"] == "Disallowed CORS origin"
