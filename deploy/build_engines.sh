#!/usr/bin/env bash
# Build the TensorRT fp16 engines triton_repo/blazeface_{short,full,back}_trt/1/model_smXY.plan from the ONNX
# models, for the GPU this runs on (XY: its compute capability, the file its _trt config's
# cc_model_filenames names), and make the ONNX Runtime engine-cache folders of the _onnx models.
#
# Runs INSIDE NVIDIA's TensorRT container of the same release as the Triton container that serves the
# plans: an engine only loads on the TensorRT version (and GPU kind) it was built with. Pairing used
# here: nvcr.io/nvidia/tensorrt:24.10-py3 (TensorRT 10.5) with nvcr.io/nvidia/tritonserver:24.10-py3
# (Triton 2.51, the same server version as the CPU test server in nvidia-pytriton 0.7.0). Change both
# tags together.
#
#   docker run --rm --gpus all -v "$PWD:/workspace" -w /workspace \
#       nvcr.io/nvidia/tensorrt:24.10-py3 deploy/build_engines.sh [--force]
#
# The ONNX files must exist first (`python -m blazeface_tools.weights build`). Each plan has a stamp beside
# it (model_smXY.plan.stamp: TensorRT version, GPU, compute capability, ONNX sha256, batch profile); a plan
# is rebuilt when its stamp disagrees with this container, GPU, model or profile, or with --force (FORCE=1).
# Plans of other compute capabilities are left alone, so GPU kinds sharing one volume keep theirs. Batch
# profile: MIN_BATCH..MAX_BATCH, tuned for OPT_BATCH; they must match max_batch_size in the _trt configs and
# the _onnx configs' trt_profile_*_shapes (tests/triton/test_configs.py checks it).
set -euo pipefail

MIN_BATCH=1
# = MAX_BATCH: with no preferred_batch_size Triton's batcher sends the largest batch it has, so under load,
# where throughput counts, batches are full; tune the kernels for that.
OPT_BATCH=64
MAX_BATCH=64
# model name -> square input size (service/specs.py)
declare -A INPUT_SIZE=([short]=128 [full]=192 [back]=256)

force="${FORCE:-0}"
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        -h | --help)
            sed -n '2,20p' "$0"
            exit 0
            ;;
        *)
            echo "unknown argument: $arg" >&2
            exit 2
            ;;
    esac
done

die() {
    echo "$*" >&2
    exit 1
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
trtexec="$(command -v trtexec || true)"
if [[ -z "$trtexec" && -x /usr/src/tensorrt/bin/trtexec ]]; then
    trtexec=/usr/src/tensorrt/bin/trtexec  # where NVIDIA's containers keep it
fi
[[ -n "$trtexec" ]] || die "trtexec not found: run this inside nvcr.io/nvidia/tensorrt (see the header)"

# trtexec's first line names its library: "&&&& RUNNING TensorRT.trtexec [TensorRT v100500] # ...".
tensorrt="$({ "$trtexec" --help 2>&1 || true; } | sed -nE 's/.*\[TensorRT (v[0-9]+)\].*/\1/p;T;q')"
[[ -n "$tensorrt" ]] || die "could not read the TensorRT version from '$trtexec --help'"
# The GPU trtexec builds on (its device 0 is nvidia-smi's 0 in PCI order).
export CUDA_DEVICE_ORDER=PCI_BUS_ID
gpu_line="$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader -i 0)" ||
    die "nvidia-smi could not name the GPU and its compute capability (no GPU, or a driver older than R510)"
gpu="${gpu_line%,*}"
cc="${gpu_line##*, }"
echo "TensorRT $tensorrt, GPU 0: $gpu (compute capability $cc)"

# trtexec's shape syntax for the NHWC input: shape BATCH SIZE -> image:BATCHxSIZExSIZEx3
shape() { echo "image:${1}x${2}x${2}x3"; }

# The plan file a _trt config names for compute capability $2 (its cc_model_filenames line).
plan_file() {
    sed -nE "s/.*\{ *key: *\"${2//./\\.}\", *value: *\"([^\"]+)\" *\}.*/\1/p" "$1"
}

# The stamp of what an engine from ONNX $1 depends on, but the GPU's name: a plan runs on any GPU of its
# compute capability (TensorRT warns when the model differs), and Triton can only pick plans by compute
# capability, so rebuilding per name would have pods on two such GPUs rebuild each other's plan forever.
stamp() {
    printf 'tensorrt=%s\ncompute_capability=%s\nonnx_sha256=%s\nprofile=%s/%s/%s\n' \
        "$tensorrt" "$cc" "$(sha256sum "$1" | cut -d ' ' -f 1)" "$MIN_BATCH" "$OPT_BATCH" "$MAX_BATCH"
}

for model in short full back; do
    size="${INPUT_SIZE[$model]}"
    onnx="$repo_root/triton_repo/blazeface_${model}_onnx/1/model.onnx"
    config="$repo_root/triton_repo/blazeface_${model}_trt/config.pbtxt"
    [[ -f "$onnx" ]] || die "missing $onnx: run 'python -m blazeface_tools.weights build' first"
    name="$(plan_file "$config" "$cc")"
    [[ -n "$name" ]] || die "$gpu has compute capability $cc, which cc_model_filenames in $config does not" \
        "list: add a line for it there and in the other _trt configs"
    plan="$repo_root/triton_repo/blazeface_${model}_trt/1/$name"
    want="$(stamp "$onnx")"

    # ONNX Runtime's engine cache of the _onnx model (trt_engine_cache_path in its config): its engine
    # names carry the compute capability, not TensorRT's version or the model, so empty it when those
    # change. World-writable (sticky): Triton runs as its own user, not this script's.
    cache="$repo_root/triton_repo/blazeface_${model}_onnx/trt_cache"
    mkdir -p "$cache"
    chmod 1777 "$cache"
    cache_stamp="$(grep -v '^compute_capability=' <<<"$want")"
    if [[ "$(cat "$cache/.stamp" 2>/dev/null)" != "$cache_stamp" ]]; then
        find "$cache" -mindepth 1 -delete
        echo "$cache_stamp" >"$cache/.stamp"
    fi

    if [[ -f "$plan" && "$force" != 1 ]]; then
        built="$(cat "$plan.stamp" 2>/dev/null || true)"
        if [[ "$(grep -v '^gpu=' <<<"$built")" == "$want" ]]; then
            built_on="$(sed -n 's/^gpu=//p' <<<"$built")"
            if [[ "$built_on" != "$gpu" ]]; then
                echo "warning: $plan was built on $built_on, not $gpu (same compute capability $cc):" \
                    "kept; --force rebuilds it for this GPU" >&2
            fi
            echo "keeping $plan (--force to rebuild)"
            continue
        fi
        echo "rebuilding $plan: its stamp differs from this build:"
        diff <(grep -v '^gpu=' <<<"$built") <(echo "$want") || true
    fi
    mkdir -p "$(dirname "$plan")"
    # The plan of an older version of this script, one for every GPU: never loaded now (Triton takes the
    # cc_model_filenames file), so it only misleads.
    rm -f "$(dirname "$plan")/model.plan"
    # Build into a temporary file so a failed build never leaves a truncated plan for Triton to load.
    tmp="$(mktemp "${plan}.XXXXXX")"
    trap 'rm -f "$tmp"' EXIT
    echo "building $plan (batch ${MIN_BATCH}..${MAX_BATCH}, opt ${OPT_BATCH}, fp16, on $gpu)"
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
    printf '%s\ngpu=%s\n' "$want" "$gpu" >"$plan.stamp"
done
