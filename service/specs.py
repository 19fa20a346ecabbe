"""Per-model numbers, as data (MediaPipe keeps them in `face_detection_*_common.pbtxt`).

Every field mirrors an option of MediaPipe's `SsdAnchorsCalculator` or
`TensorsToDetectionsCalculator`; the values are those of MediaPipe 0.10.21's face-detection graphs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ModelName = Literal["short", "full"]

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
    tflite_member: str  # path of the .tflite inside the mediapipe wheel
    input_size: int
    anchors: AnchorOptions
    decoder: DecoderOptions
    min_suppression_iou: float = 0.3  # NonMaxSuppressionCalculator, WEIGHTED, IoU

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

MODELS: dict[str, ModelSpec] = {"short": SHORT, "full": FULL}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}") from None
