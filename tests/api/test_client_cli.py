"""The Python client and the `blazeface detect` CLI against the real service."""

from __future__ import annotations

import json

import pytest

from blazeface_tools.cli import main
from blazeface_tools.client import ApiError, BlazefaceClient
from tests.conftest import DATA

pytestmark = pytest.mark.slow
PHOTOS = DATA / "photos"


def test_client_detect_and_batch(live) -> None:  # type: ignore[no-untyped-def]
    with BlazefaceClient(live.url) as client:
        result = client.detect((PHOTOS / "voc_2008_002506_three_faces.jpg").read_bytes(), model="full")
        assert result["model"] == "full" and len(result["faces"]) == 3
        batch = client.detect_batch([(PHOTOS / "astronaut.jpg").read_bytes(), b"junk"])
        assert len(batch[0]["faces"]) == 1 and batch[1]["status"] == 400
        with pytest.raises(ApiError) as error:
            client.detect(b"")
        assert error.value.status == 400 and error.value.problem["title"]


def test_cli_prints_faces_and_fails_on_a_bad_file(live, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    photo = str(PHOTOS / "astronaut.jpg")
    assert main(["detect", photo, "--url", live.url]) == 0
    assert f"{photo}: 1 face(s)" in capsys.readouterr().out
    assert main(["detect", photo, "--url", live.url, "--json", "--model", "full"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["model"] == "full" and document["file"] == photo
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
