#!/usr/bin/env bash
# What the test suite needs beyond `pip install -e .[build,test]`; idempotent, run by `make test`.
#  - Debian's Chromium, for the demo-page test (tests/api/test_demo_page.py);
#  - nvidia-pytriton's real tritonserver binary (tests/triton), installed with --no-deps: it pins
#    numpy<2, which the service does not need; the models inside Triton run in their own numpy<2 env
#    that blazeface_tools/triton_cpu/server.py builds.
#  - Debian's Prometheus (server and promtool), for tests/deploy/test_prometheus.py.
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
# The package starts its service on install where an init system runs; the tests never use it (they
# start their own server on free loopback ports with a data dir of their own), so a temporary
# policy-rc.d (exit 101: "do not start", honoured by invoke-rc.d and deb-systemd-invoke) keeps it from
# starting; a host's own policy-rc.d is left alone. --no-install-recommends leaves out
# prometheus-node-exporter, another service.
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "prometheus is missing: run 'sudo apt-get install -y prometheus' (needed by tests/deploy/test_prometheus.py)" >&2
    exit 1
  fi
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if ! .venv/bin/python -c "import pytriton" 2>/dev/null; then
  .venv/bin/pip install -q --no-deps "nvidia-pytriton==0.7.0"
fi
