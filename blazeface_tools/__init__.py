"""Everything around the runtime `service` package: the weight build, evaluations, the CPU Triton
supervisor, the HTTP client and `blazeface` CLI, and the test kit shared by tests/ and loadtest/."""

from __future__ import annotations

from pathlib import Path

# The tools run from a checkout: they read and write its model repository, test data and results.
CHECKOUT = Path(__file__).resolve().parents[1]
TRITON_REPO = CHECKOUT / "triton_repo"
