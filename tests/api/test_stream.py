"""Video mode over a real WebSocket: stable track ids, smoothing, per-frame errors, auth."""

from __future__ import annotations

import json
import time

import cv2
import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from blazeface_tools.testkit.servers import service_process
from tests.api.conftest import jpeg
from tests.conftest import DATA

pytestmark = pytest.mark.slow


def noisy_frames(name: str, count: int) -> list[bytes]:
    rng = np.random.default_rng(1)
    image = cv2.imread(str(DATA / "photos" / name)).astype(np.float32)
    frames = []
    for _ in range(count):
        noisy = np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)
        frames.append(cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes())
    return frames


def ws_url(http_url: str, query: str = "") -> str:
    return http_url.replace("http://", "ws://") + "/stream" + (f"?{query}" if query else "")


@pytest.mark.parametrize("smooth", ["false", "true"])
def test_track_ids_are_stable_across_frames(live, smooth: str) -> None:  # type: ignore[no-untyped-def]
    with connect(ws_url(live.url, f"model=full&smooth={smooth}")) as socket:
        ids_per_frame = []
        for index, frame in enumerate(noisy_frames("voc_2008_002506_three_faces.jpg", 8)):
            socket.send(frame)
            reply = json.loads(socket.recv(timeout=10))
            assert reply["frame"] == index and reply["model"] == "full"
            ids_per_frame.append(sorted(face["track_id"] for face in reply["faces"]))
        assert ids_per_frame == [[1, 2, 3]] * 8


def test_a_bad_frame_is_an_error_entry_and_the_stream_goes_on(live) -> None:  # type: ignore[no-untyped-def]
    good = noisy_frames("astronaut.jpg", 1)[0]
    with connect(ws_url(live.url)) as socket:
        socket.send(good)
        assert json.loads(socket.recv(timeout=10))["faces"][0]["track_id"] == 1
        socket.send(b"not an image")
        error = json.loads(socket.recv(timeout=10))
        assert error["frame"] == 1 and error["error"]["status"] == 400
        socket.send("text is not a frame")
        assert json.loads(socket.recv(timeout=10))["error"]["status"] == 422
        socket.send(good)
        reply = json.loads(socket.recv(timeout=10))
        assert reply["frame"] == 2 and reply["faces"][0]["track_id"] == 1


def test_stream_requires_the_key_when_auth_is_on(tmp_path, built_models) -> None:  # type: ignore[no-untyped-def]
    with service_process(tmp_path, API_KEYS="k1") as server:
        with pytest.raises(InvalidStatus) as refused, connect(ws_url(server.url)):
            pass
        assert refused.value.response.status_code == 401
        with connect(ws_url(server.url), additional_headers={"Authorization": "Bearer k1"}) as socket:
            socket.send(noisy_frames("astronaut.jpg", 1)[0])
            assert len(json.loads(socket.recv(timeout=10))["faces"]) == 1


def test_a_frame_the_service_cannot_take_now_is_an_error_entry_and_the_stream_goes_on(  # type: ignore[no-untyped-def]
    make_server, scripted
) -> None:
    """Overload, a deadline or the backend down drops that frame, as a video client would, and says
    so; the stream was closed (1011) before."""
    url = make_server(request_timeout_s=0.3)
    frame = jpeg()
    with connect(ws_url(url)) as socket:
        scripted.delay_s = 1.0
        socket.send(frame)
        error = json.loads(socket.recv(timeout=10))
        assert error["frame"] == 0 and error["error"]["status"] == 504
        scripted.delay_s = 0.0
        time.sleep(1.2)  # the late batch finishes
        socket.send(frame)
        assert json.loads(socket.recv(timeout=10))["frame"] == 1
