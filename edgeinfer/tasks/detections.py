"""The detector result: boxes in original-image pixels, with scores, classes and optional keypoints/angles.

Field names follow ``supervision.Detections`` (``xyxy``, ``confidence``, ``class_id``), so handing
results to other tools is one call (:meth:`Detections.to_supervision`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np


def _readonly(a: np.ndarray | None, dtype: Any, shape_tail: tuple[int, ...]) -> np.ndarray | None:
    if a is None:
        return None
    a = np.ascontiguousarray(a, dtype=dtype)
    if a.shape[1:] != shape_tail and shape_tail != (-1,):
        a = a.reshape((-1, *shape_tail))
    a.flags.writeable = False
    return a


def corners(xywhr: np.ndarray) -> np.ndarray:
    """The four corners (N, 4, 2) of rotated boxes (N, 5) centre x, y, width, height, angle (radians)."""
    x, y, w, h, r = (xywhr[:, i:i + 1] for i in range(5))
    cos, sin = np.cos(r), np.sin(r)
    v1 = np.concatenate([w / 2 * cos, w / 2 * sin], 1)
    v2 = np.concatenate([-h / 2 * sin, h / 2 * cos], 1)
    c = np.concatenate([x, y], 1)
    return np.stack([c + v1 + v2, c + v1 - v2, c - v1 - v2, c - v1 + v2], 1).astype(np.float32)


@dataclass(frozen=True, eq=False)
class Detections:
    """Detected objects of one image, highest confidence first.

    ``xyxy`` (N, 4) float32 corners in original-image pixels; ``confidence`` (N,) float32; ``class_id``
    (N,) int64; ``keypoints`` (N, K, 2 or 3) float32 x, y [, visibility] in original-image pixels, or None;
    ``xywhr`` (N, 5) float32 rotated boxes (centre, size, angle in radians), or None; ``mask`` (N, H, W)
    bool instance masks in the original frame, or None. ``labels`` are the class names of the model
    (index = class id).
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    keypoints: np.ndarray | None = None
    xywhr: np.ndarray | None = None
    labels: Sequence[str] | None = None
    mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.confidence)
        object.__setattr__(self, "xyxy", _readonly(self.xyxy, np.float32, (4,)))
        object.__setattr__(self, "confidence", _readonly(self.confidence, np.float32, ()))
        object.__setattr__(self, "class_id", _readonly(self.class_id, np.int64, ()))
        if self.keypoints is not None:
            k = np.asarray(self.keypoints, dtype=np.float32)
            object.__setattr__(self, "keypoints", _readonly(k, np.float32, k.shape[1:]))
        if self.xywhr is not None:
            object.__setattr__(self, "xywhr", _readonly(self.xywhr, np.float32, (5,)))
        if self.mask is not None:
            m = np.asarray(self.mask, dtype=bool)
            object.__setattr__(self, "mask", _readonly(m, bool, m.shape[1:]))
        for name in ("xyxy", "class_id", "keypoints", "xywhr", "mask"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(f"Detections.{name} has {len(v)} rows, confidence has {n}.")

    @classmethod
    def empty(cls, *, labels: Sequence[str] | None = None, keypoint_shape: tuple[int, int] | None = None,
              rotated: bool = False) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros(0), labels=labels,
                   keypoints=None if keypoint_shape is None else np.zeros((0, *keypoint_shape)),
                   xywhr=np.zeros((0, 5)) if rotated else None)

    def __len__(self) -> int:
        return len(self.confidence)

    def __getitem__(self, index: Any) -> "Detections":
        """A subset: an int, a slice, an index array or a boolean mask (``d[d.confidence > 0.5]``)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return Detections(self.xyxy[index], self.confidence[index], self.class_id[index],
                          keypoints=pick(self.keypoints), xywhr=pick(self.xywhr), labels=self.labels,
                          mask=pick(self.mask))

    @property
    def class_name(self) -> list[str]:
        """The label of each detection (its class id as text when the model has no labels)."""
        names = self.labels
        return [names[c] if names is not None and 0 <= c < len(names) else str(int(c)) for c in self.class_id]

    @property
    def xyxyxyxy(self) -> np.ndarray | None:
        """The four corners (N, 4, 2) of each rotated box, or None for axis-aligned detections."""
        return None if self.xywhr is None else corners(self.xywhr)

    @property
    def polygons(self) -> list[list[np.ndarray]] | None:
        """Each mask's outlines (OpenCV's outer contours, (K, 2) float32 x, y in original-image pixels)."""
        if self.mask is None:
            return None
        out = []
        for m in self.mask:
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            out.append([c.reshape(-1, 2).astype(np.float32) for c in contours])
        return out

    def instance_map(self) -> np.ndarray:
        """(H, W) int32: 1 + the index of the detection whose mask covers each pixel, 0 where none does (where
        masks overlap, the more confident detection, which comes first, wins)."""
        if self.mask is None:
            raise ValueError("instance_map: these detections have no masks (not a segment model).")
        out = np.zeros(self.mask.shape[1:], np.int32)
        for i in range(len(self) - 1, -1, -1):  # least confident first, so the most confident is painted last
            out[self.mask[i]] = i + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: one entry per detection; a mask is given as its area in pixels and its polygons."""
        polygons = self.polygons
        rows = []
        for i, name in enumerate(self.class_name):
            row: dict[str, Any] = {"label": name, "class_id": int(self.class_id[i]),
                                   "confidence": float(self.confidence[i]),
                                   "xyxy": [float(v) for v in self.xyxy[i]]}
            if self.keypoints is not None:
                row["keypoints"] = self.keypoints[i].tolist()
            if self.xywhr is not None:
                row["xywhr"] = [float(v) for v in self.xywhr[i]]
            if polygons is not None:
                row["area"] = int(self.mask[i].sum())
                row["polygons"] = [p.tolist() for p in polygons[i]]
            rows.append(row)
        return {"detections": rows}

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per box (CSV/JSONL): label, class_id, confidence, x1, y1, x2, y2 [, angle, keypoints]."""
        out = []
        for d in self.to_dict()["detections"]:
            row = {"label": d["label"], "class_id": d["class_id"], "confidence": d["confidence"],
                   **dict(zip(("x1", "y1", "x2", "y2"), d["xyxy"]))}
            if "xywhr" in d:
                row.update(dict(zip(("cx", "cy", "w", "h", "angle"), d["xywhr"])))
            if "keypoints" in d:
                row["keypoints"] = d["keypoints"]
            if "area" in d:
                row["area"] = d["area"]
            out.append(row)
        return out

    def to_supervision(self) -> Any:
        """The same detections as a ``supervision.Detections`` (needs ``pip install supervision``)."""
        import supervision as sv

        data: dict[str, Any] = {"class_name": np.array(self.class_name)}
        if self.xywhr is not None:
            data["xyxyxyxy"] = self.xyxyxyxy
        return sv.Detections(xyxy=self.xyxy.copy(), confidence=self.confidence.copy(),
                             class_id=self.class_id.copy(), data=data,
                             mask=None if self.mask is None else self.mask.copy())

    def __repr__(self) -> str:
        extra = ", keypoints" if self.keypoints is not None else ""
        extra += ", rotated" if self.xywhr is not None else ""
        extra += ", masks" if self.mask is not None else ""
        return f"Detections(n={len(self)}, classes={sorted(set(self.class_name))}{extra})"
