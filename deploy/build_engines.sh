#!/usr/bin/env bash
# Build the TensorRT fp16 engines triton_repo/blazeface_{short,full}_trt/1/model.plan from the ONNX models.
#
# Runs INSIDE NVIDIA's TensorRT container of the same release as the Triton container that serves the
# plans: an engine only loads on the TensorRT version (and GPU model) it was built with. Pairing used
# here: nvcr.io/nvidia/tensorrt:24.10-py3 (TensorRT 10.5) with nvcr.io/nvidia/tritonserver:24.10-py3
# (Triton 2.51, the same server version as the CPU test server in nvidia-pytriton 0.7.0). Change both
# tags together.
#
#   docker run --rm --gpus all -v "$PWD:/workspace" -w /workspace \
#       nvcr.io/nvidia/tensorrt:24.10-py3 deploy/build_engines.sh [--force]
#
# The ONNX files must exist first (`python -m blazeface_tools.weights build`). An existing plan is kept unless
# --force (or FORCE=1) is given. Batch profile: MIN_BATCH..MAX_BATCH, tuned for OPT_BATCH; these must match
# max_batch_size and preferred_batch_size in the _trt configs (tests/triton/test_configs.py checks it).
set -euo pipefail

MIN_BATCH=1
OPT_BATCH=32
MAX_BATCH=64
# model name -> square input size (blazeface_tools/weights/specs.py)
declare -A INPUT_SIZE=([short]=128 [full]=192)

force="${FORCE:-0}"
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help)
            sed -n '2,17p' "$0"
            exit 0
            ;;
        *)
            echo "unknown argument: $arg" >&2
            exit 2
            ;;
    esac
done

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
trtexec="$(command -v trtexec || true)"
if [[ -z "$trtexec" && -x /usr/src/tensorrt/bin/trtexec ]]; then
    trtexec=/usr/src/tensorrt/bin/trtexec  # where NVIDIA's containers keep it
fi
if [[ -z "$trtexec" ]]; then
    echo "trtexec not found: run this inside nvcr.io/nvidia/tensorrt (see the header)" >&2
    exit 1
fi

# trtexec's shape syntax for the NHWC input: shape BATCH SIZE -> image:BATCHxSIZExSIZEx3
shape() { echo "image:${1}x${2}x${2}x3"; }

for model in short full; do
    size="${INPUT_SIZE[$model]}"
    onnx="$repo_root/triton_repo/blazeface_${model}_onnx/1/model.onnx"
    plan="$repo_root/triton_repo/blazeface_${model}_trt/1/model.plan"
    if [[ ! -f "$onnx" ]]; then
        echo "missing $onnx: run 'python -m blazeface_tools.weights build' first" >&2
        exit 1
    fi
    if [[ -f "$plan" && "$force" != 1 ]]; then
        echo "keeping $plan (--force to rebuild)"
        continue
    fi
    mkdir -p "$(dirname "$plan")"
    # Build into a temporary file so a failed build never leaves a truncated plan for Triton to load.
    tmp="$(mktemp "${plan}.XXXXXX")"
    trap 'rm -f "$tmp"' EXIT
    echo "building $plan (batch ${MIN_BATCH}..${MAX_BATCH}, opt ${OPT_BATCH}, fp16)"
    "$trtexec" \
        --onnx="$onnx" \
        --fp16 \
        --minShapes="$(shape "$MIN_BATCH" "$size")" \
        --optShapes="$(shape "$OPT_BATCH" "$size")" \
        --maxShapes="$(shape "$MAX_BATCH" "$size")" \
        --skipInference \
        --saveEngine="$tmp"
    mv -f "$tmp" "$plan"
    trap - EXIT
done
