"""Average precision at an IoU threshold, VOC-style, with disjoint face-size buckets.

Definitions (each one a choice; the report prints them beside the numbers):

- **Matching** (PASCAL VOC's `voc_eval`): within an image, detections are taken by score, highest first
  (ties keep input order); each takes the ground truth it overlaps most (IoU, `pairwise_iou`, ties → the
  first ground truth). IoU ≥ `iou_threshold` (0.5) with a ground truth not yet taken → true positive, and
  that ground truth is taken; with one already taken → false positive (a duplicate; no fall-back to the
  second-best ground truth, as in VOC); below the threshold → false positive.
- **Ignored ground truth** (VOC's "difficult", WIDER's ignore regions): a detection whose best match is
  an ignored ground truth is dropped from that evaluation — neither true nor false positive — and ignored
  faces do not count as positives. Faces flagged `invalid` are ignored everywhere.
- **Size buckets** by the ground truth's box height in pixels: `easy` h ≥ 50, `medium` 25 ≤ h < 50,
  `hard` h < 25, plus `all`. Unlike WIDER's cumulative Easy ⊂ Medium ⊂ Hard settings these are disjoint:
  in bucket B every face outside B is an ignore region, so a detection of a large face is not a false
  positive in `hard`. A detection matching no face at all is a false positive in every bucket (WIDER does
  the same: it filters ground truth by setting, not detections).
- **AP**: area under the precision/recall curve over all detections of all images pooled by score, with
  VOC 2010+'s **all-points** interpolation (precision made monotone from the right, summed at each
  recall step); `interpolation="11point"` gives VOC 2007's mean over recall 0, 0.1, …, 1. The curve stops
  at the lowest score evaluated, so AP from detections cut at a score threshold is a lower bound of the
  model's. No positives → AP is NaN (undefined), no detections → 0.

    result = evaluate([ImageEval(gt_boxes, det_boxes, det_scores)])
    result["all"].ap
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np

from blazeface_tools.evaluation.wider import ImageAnnotation
from service.decoding.detections import pairwise_iou

if TYPE_CHECKING:  # the metric itself needs no model; only `detect_annotated` runs one
    from service.pipeline import Detector

Interpolation = Literal["all", "11point"]

TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 1, 0, -1


@dataclass(frozen=True)
class SizeBuckets:
    """Disjoint buckets by ground-truth box height in pixels: easy ≥ `easy_min`, hard < `hard_max`."""

    easy_min: float = 50.0
    hard_max: float = 25.0

    NAMES: ClassVar[tuple[str, ...]] = ("easy", "medium", "hard")

    def __post_init__(self) -> None:
        if not 0 < self.hard_max <= self.easy_min:
            raise ValueError(f"need 0 < hard_max <= easy_min, got {self.hard_max}, {self.easy_min}")

    def of(self, heights: np.ndarray) -> np.ndarray:
        """Bucket name per height: (N,) array of str."""
        h = np.asarray(heights, np.float64)
        return np.where(h >= self.easy_min, "easy", np.where(h >= self.hard_max, "medium", "hard"))

    def describe(self) -> dict[str, str]:
        return {
            "easy": f"h >= {self.easy_min:g} px",
            "medium": f"{self.hard_max:g} <= h < {self.easy_min:g} px",
            "hard": f"h < {self.hard_max:g} px",
        }


@dataclass(frozen=True)
class ImageEval:
    """One image: ground truth and detections, boxes `x1, y1, x2, y2` in the same pixels."""

    gt_boxes: np.ndarray  # (G, 4)
    det_boxes: np.ndarray  # (D, 4)
    det_scores: np.ndarray  # (D,)
    gt_invalid: np.ndarray | None = None  # (G,) bool: ignored in every bucket
    name: str = ""

    def __post_init__(self) -> None:
        for attr, shape in (("gt_boxes", (-1, 4)), ("det_boxes", (-1, 4))):
            object.__setattr__(self, attr, np.asarray(getattr(self, attr), np.float64).reshape(shape))
        object.__setattr__(self, "det_scores", np.asarray(self.det_scores, np.float64).reshape(-1))
        if self.det_scores.shape[0] != self.det_boxes.shape[0]:
            raise ValueError(f"{len(self.det_scores)} scores for {len(self.det_boxes)} boxes")
        invalid = np.zeros(len(self.gt_boxes), bool) if self.gt_invalid is None else self.gt_invalid
        invalid = np.asarray(invalid, bool).reshape(-1)
        if invalid.shape[0] != self.gt_boxes.shape[0]:
            raise ValueError(f"{len(invalid)} invalid flags for {len(self.gt_boxes)} ground-truth boxes")
        object.__setattr__(self, "gt_invalid", invalid)

    @property
    def invalid(self) -> np.ndarray:
        """(G,) bool, never None."""
        return np.zeros(len(self.gt_boxes), bool) if self.gt_invalid is None else self.gt_invalid


def match_image(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    gt_boxes: np.ndarray,
    gt_ignore: np.ndarray,
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """Label each detection TRUE_POSITIVE (1), FALSE_POSITIVE (0) or IGNORED (-1), in input order."""
    det_boxes = np.asarray(det_boxes, np.float64).reshape(-1, 4)
    labels = np.full(len(det_boxes), FALSE_POSITIVE, np.int8)
    if len(det_boxes) == 0 or len(gt_boxes) == 0:
        return labels
    overlaps = pairwise_iou(det_boxes, np.asarray(gt_boxes).reshape(-1, 4))
    taken = np.zeros(len(gt_boxes), bool)
    for d in np.argsort(-np.asarray(det_scores, np.float64), kind="stable"):
        g = int(np.argmax(overlaps[d]))
        if overlaps[d, g] < np.float32(iou_threshold):
            continue
        if gt_ignore[g]:
            labels[d] = IGNORED
        elif not taken[g]:
            taken[g] = True
            labels[d] = TRUE_POSITIVE
    return labels


def average_precision(
    scores: np.ndarray, labels: np.ndarray, num_positives: int, interpolation: Interpolation = "all"
) -> float:
    """AP of detections pooled over images: `labels` from `match_image` (IGNORED rows are dropped)."""
    if num_positives <= 0:
        return float("nan")
    scores = np.asarray(scores, np.float64)
    labels = np.asarray(labels)
    keep = labels != IGNORED
    order = np.argsort(-scores[keep], kind="stable")
    tp = (labels[keep][order] == TRUE_POSITIVE).astype(np.float64)
    if tp.size == 0:
        return 0.0
    tp_cum = np.cumsum(tp)
    recall = tp_cum / num_positives
    precision = tp_cum / np.arange(1, tp.size + 1)
    if interpolation == "11point":
        points = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]
        return float(np.mean(points))
    if interpolation != "all":
        raise ValueError(f"interpolation must be 'all' or '11point', not {interpolation!r}")
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # the precision envelope, monotone from the right
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


@dataclass(frozen=True)
class BucketResult:
    ap: float  # NaN where the bucket has no ground truth
    num_gt: int  # positives: faces in the bucket, not invalid
    true_positives: int
    false_positives: int
    ignored_detections: int
    recall: float  # at the lowest score evaluated
    precision: float  # at the lowest score evaluated

    def as_dict(self) -> dict[str, float | int | None]:
        def num(v: float) -> float | None:
            return None if np.isnan(v) else round(float(v), 4)

        return {
            "ap": num(self.ap),
            "num_gt": self.num_gt,
            "true_positives": self.true_positives,
            "false_positives": self.false_positives,
            "ignored_detections": self.ignored_detections,
            "recall": num(self.recall),
            "precision": num(self.precision),
        }


@dataclass(frozen=True)
class EvalConfig:
    iou_threshold: float = 0.5
    buckets: SizeBuckets = field(default_factory=SizeBuckets)
    interpolation: Interpolation = "all"


def evaluate(images: Sequence[ImageEval], config: EvalConfig | None = None) -> dict[str, BucketResult]:
    """AP and counts for `all` and each size bucket."""
    config = config or EvalConfig()
    out: dict[str, BucketResult] = {}
    for bucket in ("all", *config.buckets.NAMES):
        scores: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        positives = 0
        for image in images:
            ignore = image.invalid.copy()
            if bucket != "all":
                heights = image.gt_boxes[:, 3] - image.gt_boxes[:, 1]
                ignore |= config.buckets.of(heights) != bucket
            positives += int((~ignore).sum())
            scores.append(image.det_scores)
            labels.append(
                match_image(image.det_boxes, image.det_scores, image.gt_boxes, ignore, config.iou_threshold)
            )
        all_scores = np.concatenate(scores) if scores else np.zeros(0)
        all_labels = np.concatenate(labels) if labels else np.zeros(0, np.int8)
        tp = int((all_labels == TRUE_POSITIVE).sum())
        fp = int((all_labels == FALSE_POSITIVE).sum())
        out[bucket] = BucketResult(
            ap=average_precision(all_scores, all_labels, positives, config.interpolation),
            num_gt=positives,
            true_positives=tp,
            false_positives=fp,
            ignored_detections=int((all_labels == IGNORED).sum()),
            recall=tp / positives if positives else float("nan"),
            precision=tp / (tp + fp) if tp + fp else float("nan"),
        )
    return out


def detect_annotated(
    detector: Detector,
    annotations: Sequence[ImageAnnotation],
    images_dir: Path,
    *,
    model: str,
    preprocess: str = "exact",
    min_score: float | None = None,
    suppression: str = "blend",
) -> list[ImageEval]:
    """Run the detector on every annotated image; `min_score=None` is the model's own threshold."""
    out: list[ImageEval] = []
    for ann in annotations:
        data = (Path(images_dir) / ann.filename).read_bytes()
        faces = detector.detect(
            data, model=model, preprocess=preprocess, min_score=min_score, suppression=suppression
        )
        out.append(
            ImageEval(
                gt_boxes=ann.boxes_xyxy(),
                det_boxes=np.array([f.box for f in faces], np.float64).reshape(-1, 4),
                det_scores=np.array([f.score for f in faces], np.float64),
                gt_invalid=ann.invalid(),
                name=ann.filename,
            )
        )
    return out
