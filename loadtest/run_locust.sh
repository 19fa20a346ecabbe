#!/usr/bin/env bash
# Headless Locust run against a service on this machine: bounded users and time, loopback only.
#   bash loadtest/run_locust.sh [USERS] [SECONDS]     (defaults 16 users, 60 s)
# Starts `python -m service` (WORKERS = cores) unless LOCUST_HOST is set to a running one on loopback.
# Writes loadtest/results/locust_{stats,failures,exceptions,stats_history}.csv and locust.html.
set -euo pipefail
cd "$(dirname "$0")/.."
users="${1:-16}"
seconds="${2:-60}"
venv_bin="${VENV_BIN:-.venv/bin}"
mkdir -p loadtest/results
host="${LOCUST_HOST:-}"
server_pid=""
if [ -z "$host" ]; then
  port="${PORT:-8765}"
  host="http://127.0.0.1:${port}"
  HOST=127.0.0.1 PORT="$port" WORKERS="${WORKERS:-$(nproc)}" "$venv_bin/python" -m service \
    > loadtest/results/locust-service.log 2>&1 &
  server_pid=$!
  trap 'kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do
    curl -sf "$host/readyz" >/dev/null 2>&1 && break
    sleep 0.2
  done
fi
case "$host" in
  http://127.*|http://localhost*|http://\[::1\]*) ;;
  *) echo "refusing a non-loopback target: $host" >&2; exit 2 ;;
esac
"$venv_bin/locust" -f loadtest/locustfile.py --headless --host "$host" \
  --users "$users" --spawn-rate "$users" --run-time "${seconds}s" --stop-timeout 10 \
  --csv loadtest/results/locust --html loadtest/results/locust.html --only-summary
