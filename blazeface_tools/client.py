"""A small Python client for the HTTP API.

with BlazefaceClient("http://127.0.0.1:8000") as client:
    result = client.detect(open("photo.jpg", "rb").read(), model="full")
    print(len(result["faces"]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx


class ApiError(Exception):
    """A problem+json answer from the service."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")
        self.status = status
        self.problem = problem


class BlazefaceClient:
    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, timeout: float = 30.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def __enter__(self) -> BlazefaceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def detect(self, image: bytes, **options: Any) -> dict[str, Any]:
        """Options: model, min_score, max_faces, suppression, preprocess (see the API docs)."""
        response = self._http.post(
            "/detect",
            content=image,
            params=_params(options),
            headers={"Content-Type": "application/octet-stream"},
        )
        return _json(response)

    def detect_batch(self, images: Sequence[bytes], **options: Any) -> list[dict[str, Any]]:
        files = [("images", (f"image{i}", data, "application/octet-stream")) for i, data in enumerate(images)]
        return _json(self._http.post("/detect/batch", files=files, params=_params(options)))["results"]


def _params(options: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in options.items() if value is not None}


def _json(response: httpx.Response) -> Any:
    if response.is_error:
        try:
            problem = response.json()
        except ValueError:
            problem = {"title": response.reason_phrase, "detail": response.text[:200]}
        raise ApiError(response.status_code, problem)
    return response.json()
