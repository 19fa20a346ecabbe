#!/usr/bin/env bash
# What the test suite needs beyond `pip install -e .[build,test]`; idempotent, run by `make test`.
#  - Debian's Chromium, for the demo-page test (tests/api/test_demo_page.py);
#  - nvidia-pytriton's real tritonserver binary (tests/triton), installed with --no-deps: it pins
#    numpy<2, which the service does not need; the models inside Triton run in their own numpy<2 env
#    that blazeface_tools/triton_cpu/server.py builds.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is missing: run 'sudo apt-get install -y chromium' (needed by tests/api/test_demo_page.py)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if ! .venv/bin/python -c "import pytriton" 2>/dev/null; then
  .venv/bin/pip install -q --no-deps "nvidia-pytriton==0.7.0"
fi
