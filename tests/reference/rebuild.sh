#!/usr/bin/env bash
# Rebuild the photo set (tests/data/photos/) and MediaPipe's reference detections
# (tests/data/reference_detections.json) from scratch. Needs PyPI for the first run only.
#
#   bash tests/reference/rebuild.sh
#
# MediaPipe 0.10.21 pins numpy<2, so it gets its own venv, .venv-mediapipe/ at the repo root. The pins
# below fix every package whose files or code reach the outputs: the sample photos (scikit-image,
# matplotlib), the JPEG/PNG encoder and decoder (OpenCV), the detector (mediapipe) and the Exif
# cross-check (Pillow). Other packages only need to import.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="$repo/.venv-mediapipe"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3

pins=(
  "mediapipe==0.10.21"
  "numpy==1.26.4"
  "protobuf==4.25.9"
  "opencv-contrib-python==4.11.0.86"
  "scikit-image==0.26.0"
  "matplotlib==3.11.2"
  "pillow==13.0.0"
)

if [ ! -x "$venv/bin/python" ]; then
  "$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), "need Python 3.11"'
  "$python" -m venv "$venv"
fi
# Cheap when already satisfied; puts a drifted venv back on the pins.
"$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"

# The three PASCAL VOC photos are committed in tests/data/dlib/; restore any missing one from the
# shared copy of dlib's face set (make_photos.py checks their sha256 either way).
dlib="$repo/tests/data/dlib"
shared="$repo/../shared/data/dlib-faces"
for stem in 2008_002506 2008_001322 2008_002470; do
  if [ ! -f "$dlib/$stem.jpg" ]; then
    cp "$shared/$stem.jpg" "$dlib/$stem.jpg"
    chmod 644 "$dlib/$stem.jpg"
  fi
done

cd "$repo"
"$venv/bin/python" tests/reference/make_photos.py
# MediaPipe's C++ side logs a few lines per graph to stderr before absl logging is set up (the
# environment variables cannot silence those); drop them so our summary table stays readable.
export GLOG_minloglevel=2 TF_CPP_MIN_LOG_LEVEL=2
"$venv/bin/python" tests/reference/make_references.py 2>&1 \
  | grep -v -E '^[WI][0-9]{4} |^WARNING: All log messages before absl|^INFO: Created TensorFlow Lite'

if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  echo "changes under tests/data (none = the rebuild reproduced the committed files):"
  git -C "$repo" status --short -- tests/data
fi
