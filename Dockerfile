# blazeface-serve: the HTTP service (embedded ONNX Runtime or a Triton client), weights built in the image.
#
#   docker build -t blazeface-serve:0.1.0 .
#   docker run --rm -p 8080:8000 --read-only --tmpfs /tmp blazeface-serve:0.1.0
#
# Stages: `deps` (the package and its runtime dependencies, with the `triton` extra, installed into
# /opt/venv), `weights` (adds the build extra and converts the pinned MediaPipe .tflite files to ONNX),
# `runtime` (the venv and the model repository, found through MODEL_REPOSITORY; non-root).
# Read-only root filesystem: the only writes are to /tmp (PROMETHEUS_MULTIPROC_DIR is created there when
# WORKERS > 1), so mount a tmpfs or an emptyDir on /tmp. See deploy/README.md.

# Pinned tag; add @sha256:<digest> where your registry policy requires digests.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
# /opt/venv comes first on PATH once the RUN below creates it.
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# constraints.tx[t]: the glob lets the build run whether or not the repository has a constraints file.
COPY pyproject.toml constraints.tx[t] ./
COPY service/ service/
COPY blazeface_tools/ blazeface_tools/
# A regular (non-editable) install: the runtime stage needs neither /src nor PYTHONPATH. The package is
# local and constraints.txt pins every dependency, which hadolint's DL3013 cannot see.
# hadolint ignore=DL3013
RUN python -m venv /opt/venv \
    && if [ -f constraints.txt ]; then set -- -c constraints.txt; fi \
    && pip install --no-cache-dir "$@" ".[triton]"

FROM deps AS weights
# The build extra (onnx, tflite) goes into this stage's copy of the venv only; `runtime` copies `deps`'.
# hadolint ignore=DL3013
RUN if [ -f constraints.txt ]; then set -- -c constraints.txt; fi \
    && pip install --no-cache-dir "$@" ".[build]"
COPY triton_repo/ triton_repo/
# Downloads the pinned mediapipe wheel (sha256-checked) and writes triton_repo/blazeface_*_onnx/1/model.onnx
# (run from /src, whose blazeface_tools writes into the triton_repo/ beside it).
RUN python -m blazeface_tools.weights build

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="blazeface-serve" \
      org.opencontainers.image.description="BlazeFace face detection over HTTP" \
      org.opencontainers.image.licenses="Apache-2.0"
# /repo: mount point for the compose `weights` job; owned by the app user so a fresh named volume mounted
# there is too (Docker copies the mount point's owner into a new volume).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin app \
    && install -d -o app -g app /repo
COPY --from=deps /opt/venv /opt/venv
COPY --from=weights /src/triton_repo /app/triton_repo
# Shipped so the compose `weights` job and the Kubernetes `model-repo` init container hand it to TensorRT.
COPY deploy/build_engines.sh /app/deploy/build_engines.sh
ENV PATH=/opt/venv/bin:$PATH \
    MODEL_REPOSITORY=/app/triton_repo \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    WORKERS=1
WORKDIR /app
# Numeric, so Kubernetes' runAsNonRoot can verify it without a runAsUser.
USER 10001:10001
EXPOSE 8000
# Liveness only (/readyz also needs the backend); python because the slim image has no curl.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=4)"]
# `python -m service` starts uvicorn with WORKERS processes on HOST:PORT (service/__main__.py).
CMD ["python", "-m", "service"]
