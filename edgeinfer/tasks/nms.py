"""Non-maximum suppression on the device, with numpy: axis-aligned boxes and rotated boxes.

The semantics are the training tool's (Ultralytics 8.4, which calls torchvision's ``nms`` for boxes and
its own ``nms_rotated`` for oriented boxes), not a look-alike:

- boxes: greedy, in descending score order; a box is dropped when its IoU with an already *kept* box is
  strictly greater than the threshold. Areas and intersections use continuous coordinates (no +1).
  Classes are kept apart by offsetting every box by ``class * max_wh`` (Ultralytics' trick).
- rotated boxes: the probabilistic IoU of the boxes' Gaussians (``probiou``), and "fast NMS": a box is
  dropped when any *higher-scored* box, kept or not, overlaps it by more than the threshold.
"""

from __future__ import annotations

import cv2
import numpy as np


def _order(scores: np.ndarray) -> np.ndarray:
    # Highest first; equal scores keep their input order (OpenCV's NMS sorts stably too).
    return np.argsort(-scores, kind="stable")


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the boxes (N, 4) xyxy kept by greedy NMS, highest score first.

    OpenCV's ``dnn.NMSBoxes`` runs the loop in C++ with torchvision's rule (a box survives when its IoU
    with every kept box is at most the threshold; continuous coordinates, stable score order). It computes
    in double precision where torchvision uses float32: only an IoU within ~1e-7 of the threshold could
    decide differently.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    b = boxes.astype(np.float64)
    xywh = np.concatenate([b[:, :2], b[:, 2:4] - b[:, :2]], axis=1)
    # Candidates arrive above a confidence threshold >= 0, so none is lost to OpenCV's "score > 0" filter.
    kept = cv2.dnn.NMSBoxes(xywh, scores.astype(np.float32), 0.0, float(iou))
    return np.asarray(kept, dtype=np.int64).reshape(-1)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, *, max_wh: float,
                agnostic: bool = False) -> np.ndarray:
    """Per-class NMS, highest score first, exactly as one pass over class-offset boxes would give it.

    The boxes are offset by ``class * max_wh`` in float32 first -- Ultralytics' trick, whose rounding of
    far-offset coordinates (0.06 px at class 79) is part of its result -- and then suppressed class by
    class: boxes of different classes can never overlap, and per-class groups keep the loop short.
    """
    if agnostic or len(boxes) == 0:
        return nms(boxes, scores, iou)
    shifted = boxes.astype(np.float32) + classes.astype(np.float32)[:, None] * np.float32(max_wh)
    by_class = np.argsort(classes, kind="stable")
    groups = np.split(by_class, np.flatnonzero(np.diff(classes[by_class])) + 1)
    kept = np.sort(np.concatenate([g[nms(shifted[g], scores[g], iou)] for g in groups]))
    return kept[_order(scores[kept])]  # one score order over all classes, ties in input order as torchvision


def _covariance(xywhr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (a, b, c) entries of each rotated box's Gaussian covariance [[a, c], [c, b]]."""
    w, h, r = xywhr[:, 2], xywhr[:, 3], xywhr[:, 4]
    a, b = w * w / 12, h * h / 12
    cos, sin = np.cos(r), np.sin(r)
    cos2, sin2 = cos * cos, sin * sin
    return a * cos2 + b * sin2, a * sin2 + b * cos2, (a - b) * cos * sin


def probiou(b1: np.ndarray, b2: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Probabilistic IoU of every pair of rotated boxes (N, 5) x (M, 5) in xywhr: an (N, M) matrix."""
    b1, b2 = b1.astype(np.float32), b2.astype(np.float32)
    x1, y1 = b1[:, 0:1], b1[:, 1:2]
    x2, y2 = b2[None, :, 0], b2[None, :, 1]
    a1, bb1, c1 = (v[:, None] for v in _covariance(b1))
    a2, bb2, c2 = (v[None, :] for v in _covariance(b2))
    den = (a1 + a2) * (bb1 + bb2) - (c1 + c2) ** 2 + eps
    t1 = ((a1 + a2) * (y1 - y2) ** 2 + (bb1 + bb2) * (x1 - x2) ** 2) / den * 0.25
    t2 = ((c1 + c2) * (x2 - x1) * (y1 - y2)) / den * 0.5
    det1 = np.clip(a1 * bb1 - c1 ** 2, 0, None)
    det2 = np.clip(a2 * bb2 - c2 ** 2, 0, None)
    t3 = np.log(((a1 + a2) * (bb1 + bb2) - (c1 + c2) ** 2) / (4 * np.sqrt(det1 * det2) + eps) + eps) * 0.5
    bd = np.clip(t1 + t2 + t3, eps, 100.0)
    hd = np.sqrt(1.0 - np.exp(-bd) + eps)
    return (1 - hd).astype(np.float32)


def nms_rotated(xywhr: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of the rotated boxes kept by probiou fast-NMS, highest score first."""
    if len(xywhr) == 0:
        return np.zeros(0, dtype=np.int64)
    order = _order(scores)
    ious = np.triu(probiou(xywhr[order], xywhr[order]), k=1)
    return order[~(ious > np.float32(iou)).any(axis=0)]  # strictly above suppresses; NaN never does
