"""The README documents what the code has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from service.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [name.upper() for name in Settings.model_fields if f"`{name.upper()}`" not in README]
    assert not missing, f"README's settings table lacks {missing}"


def test_readme_starts_with_the_two_commands() -> None:
    head = README[:1200]
    assert "make serve" in head and "make test" in head
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "make test" in ci


ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = (ROOT / "ARCHITECTURE.md").read_text()
CITED = re.compile(r"ARCHITECTURE\.md §(\d+)")


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    paths = [ROOT / name for name in listed.stdout.splitlines()]
    return [p for p in paths if p.suffix in {".py", ".md", ".sh", ".pbtxt", ".toml", ".yml", ".yaml"}]


def test_every_architecture_citation_names_a_section() -> None:
    sections = set(re.findall(r"^## (\d+)\.", ARCHITECTURE, re.MULTILINE))
    cited = {
        (path.relative_to(ROOT).as_posix(), number)
        for path in tracked_text_files()
        if path.exists()
        for number in CITED.findall(path.read_text(errors="replace"))
    }
    assert cited, "nothing cites ARCHITECTURE.md"
    assert not [(path, n) for path, n in cited if n not in sections]


def test_no_reference_to_documents_outside_the_repository() -> None:
    stale = [
        path.relative_to(ROOT).as_posix()
        for path in tracked_text_files()
        if path.exists() and re.search(r"DESIGN(\.md| §)", path.read_text(errors="replace"))
    ]
    assert not stale
