"""The key test: our detections on real photos equal MediaPipe 0.10.21's own graph's (for `back`, its
generic FaceDetection subgraph given the options of MediaPipe's last back-camera graph).

References come from `tests/reference/make_references.py` (MediaPipe in its own venv); the pass mark per
model is every reference face matched at IoU ≥ 0.9, |score diff| ≤ 0.05, keypoints within 3% of the box
size, and no extra faces. `preprocess=exact` is the mode that reproduces MediaPipe's input tensor, and
it is also held to what it achieves (EXACT_*): a warp that moved some samples by 1/32 pixel met the pass
mark but not those.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from service.postprocess import Face
from service.specs import MODELS
from tests.conftest import DATA
from tests.parity import match_faces, passes

PHOTOS = DATA / "photos"
# The references are rounded to 1e-6 (scores) and 1e-4 px; ONNX Runtime and LiteRT differ by ~1e-6.
EXACT_MIN_IOU = 0.9999
EXACT_MAX_DIFF = 1e-5  # |score difference|, and keypoint error as a fraction of the box size
# Faces `fast` finds beyond MediaPipe's, by (model, photo): the 2×2 grid's cut half face, which the back
# model scores 0.636 on MediaPipe's pixels (under its 0.65) and 0.713 on the DCT-scaled decode.
FAST_EXTRA = {("back", "grid_2x2_head_crops_1024.jpg"): 1}


def as_reference_dicts(faces: list[Face]) -> list[dict[str, Any]]:
    return [{"score": f.score, "box": list(f.box), "keypoints": f.keypoints} for f in faces]


@pytest.mark.parametrize("model", list(MODELS))
def test_detections_equal_mediapipe(detector, references, model: str) -> None:  # type: ignore[no-untyped-def]
    worst_iou, worst_score, worst_keypoint, faces, failures = 1.0, 0.0, 0.0, 0, []
    for name, photo in references["photos"].items():
        data = (PHOTOS / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == photo["sha256"], f"{name} is not the referenced file"
        ours = detector.detect(data, model=model, preprocess="exact")
        matches, missing, extra = match_faces(as_reference_dicts(ours), photo["detections"][model])
        faces += len(matches)
        for match in matches:
            worst_iou = min(worst_iou, match.iou)
            worst_score = max(worst_score, match.score_diff)
            worst_keypoint = max(worst_keypoint, match.keypoint_error)
        if not passes(matches, missing, extra):
            failures.append(f"{name}: missing {missing}, extra {extra}, {matches}")
    print(
        f"\n{model}: {faces} faces matched; min IoU {worst_iou:.4f}, max |score diff| {worst_score:.2e}, "
        f"max keypoint error {worst_keypoint:.2e} of box size"
    )
    assert not failures, "\n".join(failures)
    assert worst_iou >= EXACT_MIN_IOU and max(worst_score, worst_keypoint) <= EXACT_MAX_DIFF
    assert faces > 20  # the set really exercises the model


@pytest.mark.parametrize("model", list(MODELS))
def test_fast_preprocessing_finds_the_same_faces(detector, references, model: str) -> None:  # type: ignore[no-untyped-def]
    """The default mode decodes JPEGs DCT-scaled, so pixels (and scores) move a little, but the faces
    found must be MediaPipe's: none missing, none extra but FAST_EXTRA's, boxes close (README
    "Preprocessing")."""
    for name, photo in references["photos"].items():
        ours = detector.detect((PHOTOS / name).read_bytes(), model=model, preprocess="fast")
        matches, missing, extra = match_faces(as_reference_dicts(ours), photo["detections"][model])
        assert (missing, extra) == (0, FAST_EXTRA.get((model, name), 0)), name
        assert all(m.iou >= 0.8 and m.score_diff <= 0.08 for m in matches), (name, matches)
