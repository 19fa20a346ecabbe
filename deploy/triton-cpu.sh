#!/usr/bin/env bash
# Serve the CPU models (blazeface_{short,full,back}_cpu) with a real Triton on a machine without a GPU: the
# tritonserver binary shipped in the nvidia-pytriton wheel, supervised by blazeface_tools/triton_cpu/server.py
# (ARCHITECTURE.md §7). Loopback ports 8010 (HTTP; 8000 is the API's), 8001 (gRPC), 8002 (metrics) unless told otherwise:
#
#   deploy/triton-cpu.sh                                  # foreground; Ctrl-C / SIGTERM stops it cleanly
#   deploy/triton-cpu.sh --grpc-port 9001 --host 0.0.0.0  # any option of `python -m blazeface_tools.triton_cpu`
#
# PYTHON picks the interpreter (default: the repository's .venv). The first run installs nvidia-pytriton
# (--no-deps: only its binaries are used), builds the ONNX models if missing, and builds the models'
# own venv with numpy<2 under ~/.cache/blazeface-serve (blazeface_tools/triton_cpu/server.py says why).
set -euo pipefail

PYTRITON_VERSION=0.7.0

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
python="${PYTHON:-$repo_root/.venv/bin/python}"

if ! "$python" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("pytriton") is None)'; then
    "$python" -m pip install --no-deps "nvidia-pytriton==${PYTRITON_VERSION}"
fi
"$python" -m service.model build  # no-op when the ONNX files are current
exec "$python" -m blazeface_tools.triton_cpu "$@"
