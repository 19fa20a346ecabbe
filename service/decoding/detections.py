"""The detections container and what both suppression algorithms share: IoU and the score order.

IoU follows `OverlapSimilarity(INTERSECTION_OVER_UNION, ...)` in MediaPipe's
`mediapipe/calculators/util/non_max_suppression_calculator.cc`, with `Rectangle_f` from
`mediapipe/framework/deps/rectangle.h`: no overlap (touching edges included) gives 0, and so does a
union of zero area (two degenerate boxes), never a division by zero. Computed in float32 like theirs, so
a pair whose IoU rounds to exactly the threshold compares the same way.

Score order follows the same file's `GetIndexedScores`: `std::sort` of (index, score) pairs by
`score >` over the detections in anchor order. `std::sort` is not stable, and which of two tied
detections heads a group changes the result (counts too, on crowded ties), so `score_order` reproduces
libstdc++'s `std::sort` (the mediapipe 0.10.21 wheel links libstdc++), step for step, whenever it matters.
Both were checked against that wheel's NonMaxSuppressionCalculator, random and adversarial ties included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.specs import KEYPOINT_NAMES


@dataclass(frozen=True, eq=False)
class Detections:
    """N detections as a struct of arrays (one row per face), in the order the producer left them.

    Coordinates are whatever space the producer says: normalised model input after decoding, original
    image pixels after `service.imaging.letterbox.to_image_pixels`.

    - `scores`: (N,) float32, probabilities (after the sigmoid)
    - `boxes`: (N, 4) float32, `xmin, ymin, xmax, ymax`
    - `keypoints`: (N, K, 2) float32, `x, y`, K = 6 in `KEYPOINT_NAMES` order
    """

    scores: np.ndarray
    boxes: np.ndarray
    keypoints: np.ndarray

    def __post_init__(self) -> None:
        n = self.scores.shape[0] if self.scores.ndim == 1 else -1
        if (
            n < 0
            or self.boxes.shape != (n, 4)
            or self.keypoints.ndim != 3
            or self.keypoints.shape[0] != n
            or self.keypoints.shape[2] != 2
        ):
            raise ValueError(
                "inconsistent detection arrays: scores "
                f"{self.scores.shape}, boxes {self.boxes.shape}, keypoints {self.keypoints.shape}"
            )

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls, num_keypoints: int = len(KEYPOINT_NAMES)) -> Detections:
        return cls(
            scores=np.zeros((0,), np.float32),
            boxes=np.zeros((0, 4), np.float32),
            keypoints=np.zeros((0, num_keypoints, 2), np.float32),
        )

    def take(self, indices: np.ndarray | list[int]) -> Detections:
        """The detections at `indices` (integer positions), in that order."""
        idx = np.asarray(indices, dtype=np.intp)
        return Detections(self.scores[idx], self.boxes[idx], self.keypoints[idx])


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one `xmin, ymin, xmax, ymax` box with each of `boxes` (N, 4) -> (N,) float32."""
    return pairwise_iou(np.asarray(box, np.float32).reshape(1, 4), boxes)[0]


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` (M, 4) with every box of `b` (N, 4) -> (M, N) float32.

    `[i, j]` is computed as MediaPipe computes `OverlapSimilarity(b[j], a[i])`: `area(b[j]) + area(a[i])
    - intersection` in float32 (addition commutes exactly, so the argument order does not matter).
    """
    a = np.asarray(a, np.float32)[:, None, :]
    b = np.asarray(b, np.float32)[None, :, :]
    inter_w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    inter_h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    # An inverted box also lands here (its own extent bounds the overlap), like MediaPipe's IsEmpty().
    inter = np.where((inter_w >= 0) & (inter_h >= 0), inter_w * inter_h, np.float32(0))
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_b + area_a - inter
    # NaN unions fail `> 0` too, so a NaN box overlaps nothing (MediaPipe's `normalization > 0.0f`).
    out = np.zeros(union.shape, np.float32)
    np.divide(inter, union, out=out, where=union > 0)
    return out


class Overlaps:
    """IoU rows for a suppression loop: one matrix up front when that is small, else row by row.

    Both loops ask for "IoU of detection i with these others" a few times per face; numpy's per-call
    overhead dominates at BlazeFace's usual 5-50 candidates, so one (N, N) matrix is cheaper. The service
    passes at most a model's top_k (100); other callers of `blend` and `nms` may pass thousands, where N^2
    would cost memory: then go by rows.
    """

    MATRIX_MAX = 256  # 256^2 float32 = 256 KiB

    def __init__(self, boxes: np.ndarray) -> None:
        self._boxes = np.asarray(boxes, np.float32)
        n = self._boxes.shape[0]
        self._matrix = pairwise_iou(self._boxes, self._boxes) if n <= self.MATRIX_MAX else None

    def row(self, i: int, others: np.ndarray) -> np.ndarray:
        """IoU of detection `i` with each detection in `others` (indices)."""
        if self._matrix is not None:
            return self._matrix[i, others]
        return iou(self._boxes[i], self._boxes[others])


# libstdc++'s std::sort (bits/stl_algo.h; the wheel was built against GCC 8.5's): introsort down to runs of
# 16, then one insertion-sort pass; heapsort for a run that exhausts the depth limit 2*floor(log2(n)).
_THRESHOLD = 16


def score_order(scores: np.ndarray) -> np.ndarray:
    """Indices by score, highest first, with ties ordered exactly as MediaPipe orders them.

    Distinct scores have one order; so do ties among at most 16 detections (std::sort then is an insertion
    sort, which is stable). Only the rest, ties among more than 16, needs the step-by-step emulation.
    """
    scores = np.asarray(scores, np.float32)
    order = np.argsort(-scores, kind="stable")
    if order.size <= _THRESHOLD:
        return order
    ranked = scores[order]
    # NaN breaks std::sort's contract (undefined behaviour there); decode never produces one.
    if not bool((ranked[1:] == ranked[:-1]).any()) or bool(np.isnan(ranked).any()):
        return order
    return np.asarray(_std_sort_descending(scores.tolist()), np.intp)


def _std_sort_descending(score: list[float]) -> list[int]:
    """`std::sort` of the indices 0..n-1 with `comp(a, b) = score[a] > score[b]`."""
    v = list(range(len(score)))

    def comp(a: int, b: int) -> bool:
        return score[v[a]] > score[v[b]]

    def swap(a: int, b: int) -> None:
        v[a], v[b] = v[b], v[a]

    def introsort_loop(first: int, last: int, depth: int) -> None:
        while last - first > _THRESHOLD:
            if depth == 0:
                heap_sort(first, last)
                return
            depth -= 1
            # __unguarded_partition_pivot: median of (first+1, mid, last-1) moved to first, then Hoare.
            a, b, c = first + 1, first + (last - first) // 2, last - 1
            if comp(a, b):
                swap(first, b if comp(b, c) else c if comp(a, c) else a)
            else:
                swap(first, a if comp(a, c) else c if comp(b, c) else b)
            lo, hi = first + 1, last
            while True:
                while comp(lo, first):
                    lo += 1
                hi -= 1
                while comp(first, hi):
                    hi -= 1
                if lo >= hi:
                    break
                swap(lo, hi)
                lo += 1
            introsort_loop(lo, last, depth)
            last = lo

    def linear_insert(i: int) -> None:
        # __insertion_sort / __unguarded_linear_insert: shift left past strictly better neighbours only
        val = v[i]
        while i > 0 and score[val] > score[v[i - 1]]:
            v[i] = v[i - 1]
            i -= 1
        v[i] = val

    def heap_sort(first: int, last: int) -> None:
        # __partial_sort(first, last, last): __make_heap then __sort_heap.
        n = last - first

        def adjust_heap(hole: int, length: int, val: int) -> None:
            top, child = hole, hole
            while child < (length - 1) // 2:
                child = 2 * (child + 1)
                if score[v[first + child]] > score[v[first + child - 1]]:
                    child -= 1
                v[first + hole] = v[first + child]
                hole = child
            if length % 2 == 0 and child == (length - 2) // 2:
                child = 2 * (child + 1)
                v[first + hole] = v[first + child - 1]
                hole = child - 1
            parent = (hole - 1) // 2
            while hole > top and score[v[first + parent]] > score[val]:
                v[first + hole] = v[first + parent]
                hole = parent
                parent = (hole - 1) // 2
            v[first + hole] = val

        for parent in range((n - 2) // 2, -1, -1):
            adjust_heap(parent, n, v[first + parent])
        for end in range(n - 1, 0, -1):
            val = v[first + end]
            v[first + end] = v[first]
            adjust_heap(0, end, val)

    n = len(v)
    if n:
        introsort_loop(0, n, 2 * (n.bit_length() - 1))
        # __final_insertion_sort: guarded over the first 16, unguarded after (the minimum is in front).
        for i in range(1, n):
            linear_insert(i)
    return v
