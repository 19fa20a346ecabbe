# blazeface-serve: the HTTP service (embedded ONNX Runtime or a Triton client), weights built in the image.
#
#   docker build -t blazeface-serve:0.1.0 .
#   docker run --rm -p 8080:8000 --read-only --tmpfs /tmp blazeface-serve:0.1.0
#
# Stages: `deps` (runtime dependencies in /opt/venv), `weights` (adds the build extra and converts the
# pinned MediaPipe .tflite files to ONNX), `runtime` (the venv, the code and the ONNX; non-root).
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
# The dependency lists come from pyproject.toml, but the package itself is not installed: the code runs
# from /app so that service/model/specs.py finds triton_repo/ beside it (REPO_ROOT).
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies']), file=open('requirements.txt', 'w')); \
print('\n'.join(p['optional-dependencies']['build']), file=open('requirements-build.txt', 'w'))" \
    && python -m venv /opt/venv \
    && if [ -f constraints.txt ]; then set -- -c constraints.txt; fi \
    && pip install --no-cache-dir "$@" -r requirements.txt

FROM deps AS weights
# The build extra (onnx, tflite) goes into this stage's copy of the venv only; `runtime` copies `deps`'.
RUN if [ -f constraints.txt ]; then set -- -c constraints.txt; fi \
    && pip install --no-cache-dir "$@" -r requirements-build.txt
WORKDIR /app
COPY service/ service/
COPY triton_repo/ triton_repo/
# Downloads the pinned mediapipe wheel (sha256-checked) and writes triton_repo/blazeface_*_onnx/1/model.onnx.
RUN python -m service.model build \
    && python -m compileall -q service

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
COPY --from=weights /app/service /app/service
COPY --from=weights /app/triton_repo /app/triton_repo
# Shipped so the compose `weights` job and the Kubernetes `model-repo` init container hand it to TensorRT.
COPY deploy/build_engines.sh /app/deploy/build_engines.sh
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
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
