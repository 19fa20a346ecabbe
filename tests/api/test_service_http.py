"""The real service (`python -m service`, embedded ONNX Runtime) over HTTP on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from blazeface_tools.testkit.servers import ServiceProcess, service_process
from service.specs import MODELS
from tests.conftest import DATA

pytestmark = pytest.mark.slow
PHOTOS = DATA / "photos"


def post(url: str, path: Path, model: str) -> httpx.Response:
    return httpx.post(
        f"{url}/detect",
        params={"model": model, "preprocess": "exact"},
        content=path.read_bytes(),
        headers={"content-type": "application/octet-stream"},
        timeout=30,
    )


@pytest.mark.parametrize("model", list(MODELS))
def test_http_detections_equal_the_in_process_pipeline(
    live: ServiceProcess, detector, references, model: str
) -> None:  # type: ignore[no-untyped-def]
    for name in references["photos"]:
        response = post(live.url, PHOTOS / name, model)
        assert response.status_code == 200, (name, response.text)
        body = response.json()
        expected = detector.detect((PHOTOS / name).read_bytes(), model=model, preprocess="exact")
        assert len(body["faces"]) == len(expected), name
        for got, want in zip(body["faces"], expected, strict=True):
            assert got["score"] == pytest.approx(want.score, abs=1e-6)
            assert [got["box"][k] for k in ("x1", "y1", "x2", "y2")] == pytest.approx(want.box, abs=1e-3)
            for key, (x, y) in want.keypoints.items():
                assert (got["keypoints"][key]["x"], got["keypoints"][key]["y"]) == pytest.approx(
                    (x, y), abs=1e-3
                )
            assert got["roll_degrees"] == pytest.approx(want.roll_degrees, abs=1e-3)
            assert got["roi"]["size"] == pytest.approx(want.roi.size, abs=1e-3)


def test_faces_are_sorted_and_in_original_pixels(live: ServiceProcess) -> None:
    body = post(live.url, PHOTOS / "voc_2008_002506_12mp_4000x3000.jpg", "short").json()
    assert body["image"] == {"width": 4000, "height": 3000}
    scores = [face["score"] for face in body["faces"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    for face in body["faces"]:
        box = face["box"]
        assert 0 <= box["x1"] < box["x2"] <= 4000 and 0 <= box["y1"] < box["y2"] <= 3000


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_move_with_traffic_under_two_workers(tmp_path: Path, built_models: None) -> None:
    with service_process(tmp_path, WORKERS="2") as server:
        photo = (PHOTOS / "astronaut.jpg").read_bytes()

        async def traffic() -> list[int]:
            async with httpx.AsyncClient(timeout=30) as client:
                responses = await asyncio.gather(
                    *(
                        client.post(
                            f"{server.url}/detect", content=photo, headers={"content-type": "image/jpeg"}
                        )
                        for _ in range(24)
                    )
                )
                return [r.status_code for r in responses]

        assert asyncio.run(traffic()) == [200] * 24
        httpx.post(f"{server.url}/detect", content=b"junk", headers={"content-type": "image/jpeg"})
        for _ in range(6):  # several scrapes land on both workers; each must show the merged totals
            samples = scrape(server.url)
            assert samples[("blazeface_requests_total", (("route", "/detect"), ("status", "200")))] == 24
            assert samples[("blazeface_requests_total", (("route", "/detect"), ("status", "400")))] == 1
            assert samples[("blazeface_faces_per_image_count", (("model", "short"),))] == 24
            assert samples[("blazeface_faces_per_image_sum", (("model", "short"),))] == 24
            assert samples[("blazeface_batch_size_sum", (("model", "short"),))] == 24
            for stage in ("decode", "queue", "inference", "postprocess"):
                assert samples[("blazeface_stage_duration_seconds_count", (("stage", stage),))] == 24
            assert ("blazeface_queue_depth", (("model", "short"),)) in samples
