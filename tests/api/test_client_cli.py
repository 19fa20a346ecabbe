"""The Python client and the `blazeface detect` CLI against the real service."""

from __future__ import annotations

import asyncio
import json

import pytest

from blazeface_tools.cli import main
from blazeface_tools.client import ApiError, AsyncBlazefaceClient, BlazefaceClient
from service.api.schemas import DetectResponse, FaceOut, Problem
from tests.conftest import DATA

pytestmark = pytest.mark.slow
PHOTOS = DATA / "photos"


def test_client_detect_and_batch(live) -> None:  # type: ignore[no-untyped-def]
    with BlazefaceClient(live.url) as client:
        result = client.detect((PHOTOS / "voc_2008_002506_three_faces.jpg").read_bytes(), model="full")
        assert isinstance(result, DetectResponse)
        assert result.model == "full" and len(result.faces) == 3
        batch = client.detect_batch([(PHOTOS / "astronaut.jpg").read_bytes(), b"junk"])
        assert isinstance(batch[0], DetectResponse) and len(batch[0].faces) == 1
        assert isinstance(batch[1], Problem) and batch[1].status == 400
        with pytest.raises(ApiError) as error:
            client.detect(b"")
        assert isinstance(error.value.problem, Problem)
        assert error.value.status == 400 and error.value.problem.title
        request_id = error.value.problem.request_id
        assert request_id and f"(request_id {request_id})" in str(error.value)  # to find it in the logs
        assert client.retries == 0


async def test_async_client_detect_and_batch(live) -> None:  # type: ignore[no-untyped-def]
    photos = [
        (PHOTOS / name).read_bytes() for name in ("astronaut.jpg", "grace_hopper.jpg", "coffee_noface.jpg")
    ]
    async with AsyncBlazefaceClient(live.url, max_connections=2) as client:
        results = await asyncio.gather(*(client.detect(photo, model="full") for photo in photos))
        assert all(isinstance(result, DetectResponse) and result.model == "full" for result in results)
        assert [len(result.faces) for result in results] == [1, 1, 0]
        assert isinstance(results[0].faces[0], FaceOut) and results[0].faces[0].roi.size > 0
        batch = await client.detect_batch([photos[0], b"junk"])
        assert isinstance(batch[0], DetectResponse) and isinstance(batch[1], Problem)
        with pytest.raises(ApiError) as error:
            await client.detect(photos[0], model="huge")
        assert error.value.status == 422 and isinstance(error.value.problem, Problem)


def test_cli_prints_faces_and_fails_on_a_bad_file(live, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    photo = str(PHOTOS / "astronaut.jpg")
    assert main(["detect", photo, "--url", live.url]) == 0
    assert f"{photo}: 1 face(s)" in capsys.readouterr().out
    assert main(["detect", photo, "--url", live.url, "--json", "--model", "full"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["result"]["model"] == "full" and document["file"] == photo
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"nope")
    assert main(["detect", str(junk), str(tmp_path / "missing.jpg"), "--url", live.url]) == 1
    err = capsys.readouterr().err
    assert "400" in err and "missing.jpg" in err


def test_openapi_documents_every_route(live) -> None:  # type: ignore[no-untyped-def]
    import httpx

    assert httpx.get(f"{live.url}/docs").status_code == 200
    schema = httpx.get(f"{live.url}/openapi.json").json()
    assert {"/detect", "/detect/batch", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    body = schema["paths"]["/detect"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json", "application/octet-stream"} <= set(body)
