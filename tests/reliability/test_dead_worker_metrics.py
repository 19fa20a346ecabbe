"""A worker SIGKILLed with a full queue must not leave its queue depth in the merged metrics.

`WORKERS=2` merges the workers' files in `PROMETHEUS_MULTIPROC_DIR`; a worker killed outright never runs
its shutdown, so its last `blazeface_queue_depth` stayed in the sum for good (the HPA scales on it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from blazeface_tools.testkit.images import jpeg
from blazeface_tools.testkit.servers import REPO, ServiceProcess, service_process

# MAX_BATCH=1: one backend call per image, so a /detect/batch of 32 small images (cheap to decode, each a
# full-model inference) fills the queue in one go; 6 clients keep both workers' queues full.
ENV = {"WORKERS": "2", "MAX_BATCH": "1", "MAX_QUEUE": "128", "ORT_THREADS": "1"}
CLIENTS = 6
IMAGES_PER_REQUEST = 32
KILL_AT_DEPTH = 16


def batch_files() -> list[tuple[str, tuple[str, bytes, str]]]:
    rng = np.random.default_rng(7)
    image = jpeg(cv2.resize(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8), (96, 96)))
    return [("images", (f"{i}.jpg", image, "image/jpeg")) for i in range(IMAGES_PER_REQUEST)]


def keep_posting(url: str, stop: threading.Event) -> None:
    files = batch_files()
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):  # the killed worker's connections break
                client.post(f"{url}/detect/batch?model=full", files=files)


def workers(server: ServiceProcess) -> list[int]:
    """The supervisor's children that serve (uvicorn spawns them; multiprocessing adds a tracker)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == server.process.pid and b"spawn_main" in cmdline:
            pids.append(int(stat.parent.name))
    return pids


def metrics_dir(pid: int) -> Path:
    """The folder `python -m service` made for the workers' files (in their environment, not its own)."""
    for variable in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        name, _, value = variable.partition(b"=")
        if name == b"PROMETHEUS_MULTIPROC_DIR":
            return Path(value.decode())
    raise AssertionError(f"worker {pid} has no PROMETHEUS_MULTIPROC_DIR")


def own_queue_depth(directory: Path, pid: int) -> float:
    """One worker's current depth summed over models, read from its own gauge file."""
    path = directory / f"gauge_livesum_{pid}.db"
    # A worker creates its file, then sizes it: until then (missing or empty) it has recorded nothing.
    if not path.exists() or path.stat().st_size < 8:
        return 0.0
    values = MmapedDict.read_all_values_from_file(str(path))
    return sum(value for key, value, _, _ in values if "blazeface_queue_depth" in key)


def merged_queue_depth(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "blazeface_queue_depth"
    )


@pytest.mark.slow
def test_a_killed_workers_queue_depth_leaves_the_merged_view(tmp_path: Path, built_models: None) -> None:
    with service_process(tmp_path, **ENV) as server:
        deadline = time.monotonic() + 30
        while len(pids := workers(server)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(pids) == 2, pids
        directory = metrics_dir(pids[0])
        stop = threading.Event()
        clients = [threading.Thread(target=keep_posting, args=(server.url, stop)) for _ in range(CLIENTS)]
        for client in clients:
            client.start()
        try:
            # Kill a worker at a moment its own queue is not empty.
            depth, victim = 0.0, 0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and depth < KILL_AT_DEPTH:
                depth, victim = max((own_queue_depth(directory, pid), pid) for pid in pids)
            assert depth >= KILL_AT_DEPTH, "the queues never filled: nothing to test"
            os.kill(victim, signal.SIGKILL)
        finally:
            stop.set()
            for client in clients:
                client.join(60)
        # The survivor drains its own queue; the dead worker's value must go with it.
        deadline = time.monotonic() + 30
        while (merged := merged_queue_depth(server.url)) and time.monotonic() < deadline:
            time.sleep(0.2)
        print(f"\nkilled worker {victim} at queue depth {depth:.0f}; merged depth after drain {merged:.0f}")
        assert merged == 0


# A supervisor with workers: one asleep (live), one that exited and was reaped (dead), one that exited
# unreaped (a zombie), and the worker that renders. The unrelated live PID stands for a dead worker's PID
# reused by another process.
SUPERVISOR = """
import json, os, subprocess, sys
directory, unrelated = sys.argv[1], int(sys.argv[2])
python = sys.executable
live = subprocess.Popen([python, "-c", "import time; time.sleep(60)"])
dead = subprocess.Popen([python, "-c", "pass"])
dead.wait()
zombie = subprocess.Popen([python, "-c", "pass"])
os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # wait for its exit, leave it unreaped
for pid in (live.pid, dead.pid, zombie.pid, unrelated):
    open(os.path.join(directory, f"gauge_livesum_{pid}.db"), "w").close()
renderer = subprocess.run([python, "-c", '''
import os, pathlib, sys
from service.metrics import _forget_dead_workers
open(os.path.join(sys.argv[1], f"gauge_livesum_{os.getpid()}.db"), "w").close()
print(os.getpid())
_forget_dead_workers(pathlib.Path(sys.argv[1]))
''', directory], capture_output=True, text=True, check=True)
live.kill()
print(json.dumps({"live": live.pid, "renderer": int(renderer.stdout)}))
"""


def test_only_the_files_of_live_sibling_workers_are_kept(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path), str(os.getpid())],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    pids = json.loads(run.stdout)
    kept = {int(path.stem.rsplit("_", 1)[1]) for path in tmp_path.glob("gauge_livesum_*.db")}
    assert kept == {pids["live"], pids["renderer"]}
