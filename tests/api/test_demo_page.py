"""The demo page in a real headless Chromium: pick a photo, see boxes and keypoints drawn."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import DATA

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BOX_COLOUR = (0x00, 0xE5, 0xFF)


def test_demo_page_draws_faces(live, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            # The flags this sandboxed, offline machine needs (no GPU, no background network).
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 900, "height": 800})
            page.goto(live.url + "/")
            page.set_input_files("#file", str(DATA / "photos" / "voc_2008_002506_three_faces.jpg"))
            page.wait_for_function("document.body.dataset.faces !== undefined", timeout=20_000)
            assert page.evaluate("document.body.dataset.faces") == "3"
            assert "3 face(s)" in page.inner_text("#status")
            # Count canvas pixels in the box colour: three boxes' outlines must be there.
            boxed = page.evaluate(
                """([r, g, b]) => {
                    const c = document.getElementById('canvas');
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let n = 0;
                    for (let i = 0; i < d.length; i += 4)
                        if (d[i] === r && d[i + 1] === g && d[i + 2] === b) n++;
                    return n;
                }""",
                list(BOX_COLOUR),
            )
            assert boxed > 3 * 4 * 80  # three boxes, four sides of ≥ 80 px each
            shot = tmp_path / "demo.png"  # kept by pytest for a look after the run
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
