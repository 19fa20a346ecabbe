"""Locust users for blazeface-serve: single images, batches, mixed models.

    bash loadtest/run_locust.sh                       # headless, loopback, bounded in time and users
    LOCUST_HOST=http://api:8000 locust -f loadtest/locustfile.py   # against compose (profile loadtest)

Photos are the committed reference photos (tests/data/photos), read once; only locust is needed, so this
file runs in the stock locust image too.
"""

from __future__ import annotations

import random
from pathlib import Path

from locust import HttpUser, between, tag, task

PHOTOS_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos"
PHOTOS = sorted(p.read_bytes() for p in PHOTOS_DIR.glob("*.jpg"))
if not PHOTOS:
    raise RuntimeError(f"no photos in {PHOTOS_DIR}")


def _post_image(user: HttpUser, model: str, name: str) -> None:
    with user.client.post(
        f"/detect?model={model}",
        data=random.choice(PHOTOS),
        headers={"Content-Type": "image/jpeg"},
        name=name,
        catch_response=True,
    ) as response:
        if response.status_code != 200:
            response.failure(f"{response.status_code}: {response.text[:200]}")
        elif "faces" not in response.json():
            response.failure("no faces field")


class SingleImageUser(HttpUser):
    """An app posting one photo at a time to the default (short-range) model."""

    weight = 3
    wait_time = between(0.0, 0.05)

    @tag("single")
    @task
    def detect(self) -> None:
        _post_image(self, "short", "/detect?model=short")


class BatchUser(HttpUser):
    """A backend job posting four photos per request to /detect/batch."""

    weight = 1
    wait_time = between(0.0, 0.1)

    @tag("batch")
    @task
    def detect_batch(self) -> None:
        files = [("images", (f"p{i}.jpg", random.choice(PHOTOS), "image/jpeg")) for i in range(4)]
        with self.client.post(
            "/detect/batch", files=files, name="/detect/batch", catch_response=True
        ) as response:
            if response.status_code != 200 or len(response.json().get("results", [])) != 4:
                response.failure(f"{response.status_code}: {response.text[:200]}")


class MixedModelUser(HttpUser):
    """Traffic split across both models, as a platform serving near and far cameras sees it."""

    weight = 2
    wait_time = between(0.0, 0.05)

    @tag("mixed")
    @task(2)
    def short(self) -> None:
        _post_image(self, "short", "/detect?model=short")

    @tag("mixed")
    @task(1)
    def full(self) -> None:
        _post_image(self, "full", "/detect?model=full")
