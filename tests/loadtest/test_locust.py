"""The Locust file really loads the service: a short headless run with no failures."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from blazeface_tools.testkit.servers import REPO

pytestmark = pytest.mark.slow


def test_headless_locust_run_has_requests_and_no_failures(live, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    locust = Path(sys.executable).with_name("locust")
    command = [str(locust), "-f", str(REPO / "loadtest" / "locustfile.py"), "--headless", "--host", live.url]
    command += [
        "--users",
        "3",
        "--spawn-rate",
        "3",
        "--run-time",
        "4s",
        "--csv",
        str(tmp_path / "run"),
        "--only-summary",
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    with (tmp_path / "run_stats.csv").open() as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    assert int(rows["Aggregated"]["Request Count"]) > 10
    assert int(rows["Aggregated"]["Failure Count"]) == 0
