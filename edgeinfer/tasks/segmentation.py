"""Semantic segmentation: per-pixel classes in the original frame, from a model's class logits.

The reference post-processing of the training tools (Hugging Face's ``post_process_semantic_segmentation``,
torchvision's evaluation) upsamples the logits bilinearly (``align_corners=False``) to the frame's size and
takes the argmax over classes. Doing that literally costs classes x frame pixels floats (150 classes at
1080p: 1.2 GB). :func:`class_map` gives the same map without it: where the four logit vectors a pixel
blends share their argmax class, every convex blend of them has that argmax too, so only the pixels on
class boundaries need the blended vectors; there it computes exactly the reference's weighted sum.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from edgeinfer.pipeline import ops
from edgeinfer.pipeline.images import check_size
from edgeinfer.errors import ImageError, ModelError
from edgeinfer.spec import REEXPORT, expect
from edgeinfer.tasks import gates
from edgeinfer.tasks.base import Evidence, Findings, Task, draw_text, finding
from edgeinfer.tasks.classification import to_probabilities


def _axis(n_out: int, n_src: int, scale: float, offset: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps along one axis: output pixel i samples source coordinate (i + 0.5) * scale + offset
    - 0.5, clamped below at 0 as torch's ``upsample_bilinear2d`` does; returns (i0, i1, weight of i1)."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * scale + offset - 0.5
    src = np.maximum(src, 0.0).astype(np.float32)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_src - 1)
    i1 = np.minimum(i0 + 1, n_src - 1)
    return i0, i1, (src - i0).astype(np.float32)


def frame_to_logits(chain: Sequence[ops.Placement], orig_hw: tuple[int, int], input_hw: tuple[int, int],
                    logits_hw: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Per axis (y, x): the scale and offset taking frame pixel-edge coordinates to logit-grid coordinates,
    composed from the geometric steps (frame -> model input) and the model's output stride."""
    sy, sx, oy, ox = 1.0, 1.0, 0.0, 0.0
    for pl in chain:  # input = frame * scale + offset, step by step
        sx, ox = sx * pl.scale[0], ox * pl.scale[0] + pl.offset[0]
        sy, oy = sy * pl.scale[1], oy * pl.scale[1] + pl.offset[1]
    ky, kx = logits_hw[0] / input_hw[0], logits_hw[1] / input_hw[1]
    if not chain:  # no geometric step: the model input is the frame itself
        sy, sx = input_hw[0] / orig_hw[0], input_hw[1] / orig_hw[1]
    return (sy * ky, sx * kx), (oy * ky, ox * kx)


def class_map(logits: np.ndarray, orig_hw: tuple[int, int], scale: tuple[float, float],
              offset: tuple[float, float]) -> np.ndarray:
    """argmax over classes of the bilinearly resampled (C, h, w) ``logits`` at every pixel of an ``orig_hw``
    frame (int32 map), the frame pixel (r, c) sampling logit coordinates ((r + .5) * scale + offset - .5)."""
    c, lh, lw = logits.shape
    h0, w0 = orig_hw
    y0, y1, wy = _axis(h0, lh, scale[0], offset[0])
    x0, x1, wx = _axis(w0, lw, scale[1], offset[1])
    low = np.argmax(logits, axis=0).astype(np.int32)
    left, right = low[:, x0], low[:, x1]  # (h, w0): the argmax of the two columns each pixel blends
    split = left != right
    out = left[y0]
    # a pixel needs the blend unless its four logit vectors share their argmax
    mixed = split[y0] | split[y1] | (out != left[y1])
    if not mixed.any():
        return out
    # torch's order: (1 - wx) * left + wx * right along each logit row, then (1 - wy) * top + wy * bottom;
    # channels last, so each gather takes whole class vectors
    hwc = np.ascontiguousarray(logits.transpose(1, 2, 0), dtype=np.float32)
    fx = wx[None, :, None]
    across = hwc[:, x0] * (1 - fx) + hwc[:, x1] * fx  # (h, w0, C): every logit row resampled along x
    if mixed.mean() > 0.25:  # boundaries everywhere: blend whole bands of rows
        band = max(1, (1 << 22) // max(1, w0 * c))
        for r in range(0, h0, band):
            fy = wy[r:r + band, None, None]
            out[r:r + band] = np.argmax(across[y0[r:r + band]] * (1 - fy) + across[y1[r:r + band]] * fy, axis=2)
        return out
    rows, cols = np.nonzero(mixed)
    fy = wy[rows, None]
    out[rows, cols] = np.argmax(across[y0[rows], cols] * (1 - fy) + across[y1[rows], cols] * fy, axis=1)
    return out


def palette(n: int) -> np.ndarray:
    """n distinct BGR colours (the Pascal VOC colour map, which segmentation tools draw with)."""
    ids = np.arange(n)
    out = np.zeros((n, 3), np.int64)
    for bit in range(8):
        for ch in range(3):
            out[:, ch] |= ((ids >> (3 * bit + ch)) & 1) << (7 - bit)
    return out[:, ::-1].astype(np.uint8)  # RGB -> BGR


def label_png(labels: np.ndarray) -> bytes:
    """A map of non-negative integer labels (H, W) as a lossless PNG: 8-bit grey when they fit, else 16-bit."""
    m = np.asarray(labels)
    top = int(m.max(initial=0))
    if m.ndim != 2 or (m.size and (int(m.min()) < 0 or top > 65535)):
        raise ImageError(f"label map: expected (H, W) ids in [0, 65535] for a PNG, found shape {m.shape}"
                         f"{f', range [{m.min()}, {top}]' if m.size else ''}.")
    ok, buf = cv2.imencode(".png", m.astype(np.uint8 if top < 256 else np.uint16))
    if not ok:
        raise ImageError("label map: OpenCV could not encode it as PNG.")
    return buf.tobytes()


def save_label_png(labels: np.ndarray, path: str | os.PathLike) -> Path:
    """Write :func:`label_png` to ``path`` atomically: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(label_png(labels))
    os.replace(tmp, path)
    return path


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Per-pixel classes of one image, in its own pixels.

    ``class_map`` (H, W) int32 class ids of the original frame; ``labels`` the model's class names (index =
    class id); ``scores`` (C, h, w) float32 class probabilities at the model's output resolution when asked
    for (``scores=True``), else None.
    """

    class_map: np.ndarray
    labels: Sequence[str] | None = None
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        m = np.ascontiguousarray(self.class_map, dtype=np.int32)
        if m.ndim != 2:
            raise ValueError(f"class_map: expected (H, W), found shape {m.shape}.")
        m.flags.writeable = False
        object.__setattr__(self, "class_map", m)
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.class_map.shape)

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if self.labels is not None and 0 <= class_id < len(self.labels) else str(class_id)

    def areas(self) -> dict[int, int]:
        """Pixels per class present, largest first."""
        counts = np.bincount(self.class_map.reshape(-1))
        present = np.nonzero(counts)[0]
        return {int(i): int(counts[i]) for i in sorted(present, key=lambda i: (-counts[i], i))}

    def mask(self, class_id: int) -> np.ndarray:
        """(H, W) bool: the pixels of one class."""
        return self.class_map == class_id

    def png(self) -> bytes:
        """The class map as a lossless PNG (see :func:`label_png`)."""
        return label_png(self.class_map)

    def save_png(self, path: str | os.PathLike) -> Path:
        """Write :meth:`png` to ``path`` atomically (a temporary file renamed into place)."""
        return save_label_png(self.class_map, path)

    @staticmethod
    def read_png(data: bytes | str | os.PathLike, labels: Sequence[str] | None = None) -> "Segmentation":
        """A segmentation back from :meth:`png` bytes or a file written by :meth:`save_png`."""
        raw = Path(data).read_bytes() if isinstance(data, (str, os.PathLike)) else data
        check_size(raw, source="class map PNG")
        m = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)
        if m is None or m.ndim != 2:
            raise ImageError("class map PNG: expected a single-channel PNG written by Segmentation.png().")
        return Segmentation(m, labels=labels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the frame size, each class present with its area (pixels and fraction), and the map
        itself as a base64 PNG (8-bit grey, or 16-bit beyond 256 classes; lossless: pixel value = class id)."""
        total = max(self.class_map.size, 1)
        return {
            "size": list(self.shape),
            "classes": [{"class_id": i, "label": self.label(i), "area": a, "fraction": round(a / total, 6)}
                        for i, a in self.areas().items()],
            "class_map_png": base64.b64encode(self.png()).decode("ascii"),
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per class present (CSV/JSONL tables)."""
        total = max(self.class_map.size, 1)
        return [{"class_id": i, "label": self.label(i), "area": a, "fraction": round(a / total, 6)}
                for i, a in self.areas().items()]

    def overlay(self, frame: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """``frame`` (BGR, the image's size) with each class tinted in its colour, class 0 left as it is."""
        if frame.shape[:2] != self.shape:
            raise ImageError(f"overlay: expected a frame of {self.shape}, found {frame.shape[:2]}.")
        tinted = palette(int(self.class_map.max(initial=0)) + 1)[self.class_map]
        blended = cv2.addWeighted(frame, 1 - alpha, tinted, alpha, 0)
        np.copyto(frame, blended, where=(self.class_map != 0)[..., None])
        return frame

    def __repr__(self) -> str:
        top = ", ".join(f"{self.label(i)} {a / max(self.class_map.size, 1):.0%}" for i, a in list(self.areas().items())[:4])
        return f"Segmentation({self.shape[0]}x{self.shape[1]}: {top})"


# -- the task entry ---------------------------------------------------------------------------------------
def _finish(spec: Any, outputs: Sequence[np.ndarray], prepared: Any, *, scores: bool = False,
            **_: Any) -> list[Segmentation]:
    logits = outputs[0]
    if logits.ndim != 4 or (spec.labels is not None and logits.shape[1] != len(spec.labels)):
        raise ModelError(f"output {spec.output.name!r}: expected class logits (B, C, h, w)"
                         f"{'' if spec.labels is None else f' with C = {len(spec.labels)} labels'}, found "
                         f"{logits.shape}.")
    steps = [(s.op, s.params) for s in spec.steps]
    out = []
    for raw, hw in zip(logits, prepared.sizes):
        scale, offset = frame_to_logits(ops.placements(steps, *hw), hw, prepared.input_hw, raw.shape[1:])
        probs = to_probabilities(raw.reshape(raw.shape[0], -1).T, spec.output.kind).T.reshape(raw.shape) \
            if scores else None
        out.append(Segmentation(class_map(raw, hw, scale, offset), labels=spec.labels, scores=probs))
    return out


def _validate(spec: Any) -> None:
    crops = [s.op for s in spec.steps if s.op == "center_crop"]
    expect(not crops, "steps", "no centre crop for a semantic segmenter (its class map must cover the whole frame; "
           "the reference post-processing resizes the logits to the frame)", crops,
           "Export the segmenter with its evaluation transform, which resizes without cropping.")


def _summary(seg: Segmentation) -> str:
    total = max(seg.class_map.size, 1)
    items = list(seg.areas().items())
    more = f"; ... {len(items) - 6} more" if len(items) > 6 else ""
    return "; ".join(f"{seg.label(i)} {a / total:.1%}" for i, a in items[:6]) + more


def _draw(frame: np.ndarray, seg: Segmentation, avoid: Sequence[Sequence[float]] = ()) -> np.ndarray:
    seg.overlay(frame)
    draw_text(frame, [_summary(seg)])
    return frame


def _checks(spec: Any, evidence: Evidence, measured: dict[str, Any]) -> Findings:
    results = evidence.results
    classes = [np.unique(seg.class_map) for seg, _ in results]
    if len(results) >= 2 and all(len(c) == 1 for c in classes) and len({int(c[0]) for c in classes}) == 1:
        only = int(classes[0][0])
        name = results[0][0].label(only)
        return [finding(
            "class_map_constant", "error", f"every pixel of all {len(results)} images is class {only} ({name}): "
            "the model sees nothing it can segment.", "Compare the preprocessing with the training transform "
            "(normalisation, size), make sure the export read the main output (not an auxiliary head) and that "
            "BatchNorm statistics are real (model.eval(); recalibrate after short training).", class_id=only,
            images=len(results))]
    return []


def _confidence(spec: Any, outputs: Sequence[np.ndarray]) -> np.ndarray:
    """Each image's mean over its output pixels of the top class probability."""
    logits = outputs[0]
    flat = logits.reshape(logits.shape[0], logits.shape[1], -1).transpose(0, 2, 1)  # (N, pixels, C)
    return np.asarray([to_probabilities(f, spec.output.kind).max(axis=1).mean(dtype=np.float64) for f in flat])


# the self-test records each class's mean logit over the map: the whole map would not fit in a spec
TASK = Task("semantic_segmentation", Segmentation, _finish, _draw, Segmentation.rows,
            ("class_id", "label", "area", "fraction"), _summary, ("logits", "probabilities"),
            validate=_validate, dense=True, kind_of=lambda raw: "logits",
            selftest=lambda raw: raw[0].mean(axis=(1, 2)), mask=lambda seg: seg.class_map, checks=_checks,
            gate=gates.semantic_segmentation, confidence=_confidence,
            sample=lambda spec, outputs, result: {"class_map": result.class_map,
                                                  **({} if outputs is None else {"logits": outputs[0][0]})})
