#!/usr/bin/env bash
# System packages the test suite needs beyond the venv: Debian's Chromium for the demo-page test.
# Idempotent; CI runs it as root on a fresh machine (`make test`).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is missing: run 'sudo apt-get install -y chromium' (needed by tests/api/test_demo_page.py)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
