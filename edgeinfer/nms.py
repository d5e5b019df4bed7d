"""Non-maximum suppression on the device, with numpy: axis-aligned boxes and rotated boxes.

The semantics are the training tool's (Ultralytics 8.4, which calls torchvision's ``nms`` for boxes and
its own ``nms_rotated`` for oriented boxes), not a look-alike:

- boxes: greedy, in descending score order; a box is dropped when its IoU with an already *kept* box is
  strictly greater than the threshold. Areas and intersections use continuous coordinates (no +1).
  Classes are kept apart by offsetting every box by ``class * max_wh`` (Ultralytics' trick), so one
  suppression pass serves all classes.
- rotated boxes: the probabilistic IoU of the boxes' Gaussians (``probiou``), and "fast NMS": a box is
  dropped when any *higher-scored* box, kept or not, overlaps it at the threshold or more.
"""

from __future__ import annotations

import numpy as np


def _order(scores: np.ndarray) -> np.ndarray:
    # torch's descending sort on the CPU is stable for ties; mergesort on the negated scores is too.
    return np.argsort(-scores, kind="stable")


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, *, limit: int | None = None) -> np.ndarray:
    """Indices of the boxes (N, 4) xyxy kept by greedy NMS, highest score first; at most ``limit``."""
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    b = boxes.astype(np.float32, copy=False)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = _order(scores)
    keep = []
    cap = n if limit is None else int(limit)
    while order.size and len(keep) < cap:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), np.float32(0))
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), np.float32(0))
        inter = w * h
        union = areas[i] + areas[rest] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = inter / union
        order = rest[~(overlap > np.float32(iou))]  # NaN (zero-area pairs) never suppresses
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, *, max_wh: float,
                agnostic: bool = False, limit: int | None = None) -> np.ndarray:
    """Per-class NMS as one pass over class-offset boxes (``agnostic`` ignores classes)."""
    if agnostic or len(boxes) == 0:
        return nms(boxes, scores, iou, limit=limit)
    offset = classes.astype(np.float32)[:, None] * np.float32(max_wh)
    return nms(boxes.astype(np.float32) + offset, scores, iou, limit=limit)


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
    return order[ious.max(axis=0) < iou]
