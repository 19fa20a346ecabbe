"""loadtest/gpu_check.py's CPU side, without torch: arguments, the table and JSON it writes, and the clean
stop when torch or a CUDA device is missing. (The measurements themselves need a GPU.)"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from blazeface_tools.testkit.servers import REPO
from loadtest import gpu_check
from loadtest.gpu_check import CopyRow, DecodeRow, Report


def test_importing_it_does_not_import_torch() -> None:
    """torch is imported by load_torch() alone, so the CPU parts run (and are tested) without it."""
    check = "import sys, loadtest.gpu_check; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True, cwd=REPO)


def test_arguments() -> None:
    args = gpu_check.parse_args([])
    assert (args.seconds, args.decode_batch, args.batch, args.repeats) == (3.0, 16, 64, 50)
    assert args.out == gpu_check.RESULTS
    args = gpu_check.parse_args(
        ["--seconds", "0.5", "--decode-batch", "8", "--batch", "16", "--out", "x.json"]
    )
    assert (args.seconds, args.decode_batch, args.batch, args.out) == (0.5, 8, 16, Path("x.json"))
    for bad in (["--seconds", "0"], ["--batch", "-1"], ["--decode-batch", "0"]):
        with pytest.raises(SystemExit) as info:
            gpu_check.parse_args(bad)
        assert info.value.code == 2


def fake_import(modules: dict[str, object]):  # type: ignore[no-untyped-def]
    def import_module(name: str) -> ModuleType:
        if name not in modules:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return modules[name]  # type: ignore[return-value]

    return import_module


def test_missing_torch_or_gpu_is_a_reason_not_an_error() -> None:
    assert "torch is not installed" in gpu_check.load_torch(fake_import({}))
    assert "torchvision is not installed" in gpu_check.load_torch(fake_import({"torch": object()}))
    cpu_only = SimpleNamespace(
        __version__="2.5.1+cpu",
        version=SimpleNamespace(cuda=None),
        cuda=SimpleNamespace(is_available=lambda: False),
    )
    reason = gpu_check.load_torch(fake_import({"torch": cpu_only, "torchvision": object()}))
    assert reason == "no CUDA device visible to torch 2.5.1+cpu (CUDA build: None)"


def test_without_torch_main_says_why_and_exits_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed here")
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--out", str(out)]) == gpu_check.NOT_MEASURED
    assert "GPU check not run: torch is not installed" in capsys.readouterr().err
    assert json.loads(out.read_text()) == {
        "measured": False,
        "reason": "torch is not installed: pip install torch torchvision (CUDA wheels)",
        "machine": {},
        "decode": [],
        "copies": [],
    }


def test_table_and_json_of_a_measured_report(tmp_path: Path) -> None:
    report = Report(
        measured=True,
        machine={"gpu": "NVIDIA H200"},
        decode=[DecodeRow("1280x720", 210, 180.5, 2400.0, 9100.0)],
        copies=[
            CopyRow("short", 64, "pageable", 1.2, 2.5, 2.62, 1.56),
            CopyRow("short", 64, "pinned", 0.3, 0.6, 10.49, 6.5),
        ],
    )
    table = gpu_check.render_table(report)
    assert table.splitlines()[0] == "GPU: NVIDIA H200"
    assert "| 1280x720 | 210 | 180.5 | 2400.0 | 9100.0 |" in table
    assert "| short | 64 | pinned | 0.300 | 0.600 | 10.49 | 6.50 |" in table
    out = tmp_path / "results" / "gpu_check.json"
    gpu_check.write_report(report, out)
    written = json.loads(out.read_text())
    assert written["decode"][0]["gpu_batched_images_per_s"] == 9100.0
    assert [row["memory"] for row in written["copies"]] == ["pageable", "pinned"]


def test_rate_counts_items_per_second() -> None:
    calls: list[int] = []

    def work() -> int:
        calls.append(1)
        return 3

    per_second = gpu_check.rate(work, 0.01)
    assert len(calls) >= 2 and per_second > 0  # a warm-up call, then the timed ones
